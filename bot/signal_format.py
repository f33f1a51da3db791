"""The webhook signal format: TradersPost's published JSON (emulators/specs/
traderspost-webhook-openapi.json), parsed into a typed ``Signal`` or refused with a TradersPost
style ``(messageCode, message)``.

Pure: no I/O, no clock, no strategy settings (the webhook checks those: allowed tickers, the
hook's maximum quantity, signal age). Rules:

- Every field of the format is validated; a field Tradecord does not act on yet (options) is
  refused with its own code instead of being dropped into a different order.
- Fields outside the format are ignored, as TradersPost does.
- Numbers may come as JSON numbers or as numeric strings, because TradingView placeholders are
  often quoted (``"quantity": "{{strategy.order.contracts}}"``).
- ``sentiment`` takes TradingView's ``long``/``short`` as ``bullish``/``bearish`` (the
  contract's own example sends ``long``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from adapters import symbols
from adapters.models import AssetClass, OrderType, TimeInForce

MAX_BODY_BYTES = 16 * 1024
MAX_EXTRAS_DEPTH = 16
MAX_NUMBER = Decimal(10) ** 12  # no quantity or price is this large; refuses 1e999 and friends
MAX_DECIMALS = 8


class Action(StrEnum):
    BUY = "buy"
    SELL = "sell"
    EXIT = "exit"
    CANCEL = "cancel"
    ADD = "add"


class Sentiment(StrEnum):
    BULLISH = "bullish"
    BEARISH = "bearish"
    FLAT = "flat"


class QuantityType(StrEnum):
    FIXED_QUANTITY = "fixed_quantity"
    DOLLAR_AMOUNT = "dollar_amount"
    PERCENT_OF_EQUITY = "percent_of_equity"
    PERCENT_OF_POSITION = "percent_of_position"
    # Dollars to lose if the stop loss fills: units = amount / (entry - stop) (an entry's only).
    RISK_DOLLAR_AMOUNT = "risk_dollar_amount"


class StopLossType(StrEnum):
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


SENTIMENT_WORDS = {
    "bullish": Sentiment.BULLISH,
    "long": Sentiment.BULLISH,
    "bearish": Sentiment.BEARISH,
    "short": Sentiment.BEARISH,
    "flat": Sentiment.FLAT,
}
ORDER_TYPES = {"market", "limit", "stop", "stop_limit", "trailing_stop"}
TIME_IN_FORCE = {"day", "gtc", "opg", "cls", "ioc", "fok"}
QUANTITY_TYPES = {q.value for q in QuantityType}
OPTION_FIELDS = (
    "optionType",
    "intrinsicValue",
    "expiration",
    "strikeCount",
    "strikesAway",
    "strikePrice",
)
_OPTION_TICKER = re.compile(r"^[A-Z]{1,6}\s*\d{6}\s*[CP]\s*\d+(\.\d+)?$")
_EXCHANGE_PREFIX = re.compile(r"^[A-Z0-9_]{1,20}:")
_CONTINUOUS = re.compile(r"^[A-Z0-9]{1,4}[12]!$")
_EXPIRATION = re.compile(r"^(\d{4}-\d{2}-\d{2}|\+\s*\d{1,3}\s*(day|week|month|year)s?)$", re.I)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a body is not a signal: a TradersPost-style code and a message saying what to fix."""

    code: str
    message: str


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.refusal = Refusal(code, message)


@dataclass(frozen=True, slots=True)
class TakeProfit:
    limit_price: Decimal | None = None
    percent: Decimal | None = None
    amount: Decimal | None = None


@dataclass(frozen=True, slots=True)
class StopLoss:
    type: StopLossType = StopLossType.STOP
    stop_price: Decimal | None = None
    percent: Decimal | None = None
    amount: Decimal | None = None
    limit_price: Decimal | None = None
    trail_amount: Decimal | None = None  # type trailing_stop: one of these two
    trail_percent: Decimal | None = None
    # The signal named its type. Unnamed, the subscription's stop-loss type applies ("type:
    # if provided, overrides the stop loss type configured in strategy subscription settings").
    typed: bool = True


@dataclass(frozen=True, slots=True)
class Signal:
    ticker: str  # normalized: upper case, without TradingView's "EXCHANGE:" prefix
    action: Action
    sentiment: Sentiment | None = None
    quantity: Decimal | None = None
    quantity_type: QuantityType | None = None
    order_type: OrderType | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    price: Decimal | None = None
    signal_price: Decimal | None = None
    take_profit: TakeProfit | None = None
    stop_loss: StopLoss | None = None
    trail_amount: Decimal | None = None  # orderType trailing_stop: one of these two
    trail_percent: Decimal | None = None
    cancel: bool | None = None
    time: datetime | None = None
    test: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)
    extended_hours: bool = False  # may fill before the open and after the close
    ignore_trading_windows: bool = False  # enter even outside the subscription's windows

    @property
    def reference_price(self) -> Decimal | None:
        """The sender's market price, in the contract's order: signalPrice, then price."""
        return self.signal_price if self.signal_price is not None else self.price

    @property
    def effective_quantity_type(self) -> QuantityType | None:
        """``fixed_quantity`` when a quantity comes without a type (the contract's default)."""
        if self.quantity is None:
            return None
        return self.quantity_type or QuantityType.FIXED_QUANTITY

    def to_record(self) -> dict[str, Any]:
        """Canonical JSON-safe form for storage (decimals as strings; extras are not kept here:
        the raw body is stored as received)."""

        def num(d: Decimal | None) -> str | None:
            return None if d is None else format(d, "f")

        record: dict[str, Any] = {
            "ticker": self.ticker,
            "action": self.action.value,
            "sentiment": self.sentiment.value if self.sentiment else None,
            "quantity": num(self.quantity),
            "quantityType": self.quantity_type.value if self.quantity_type else None,
            "orderType": self.order_type.value if self.order_type else None,
            "limitPrice": num(self.limit_price),
            "stopPrice": num(self.stop_price),
            "trailAmount": num(self.trail_amount),
            "trailPercent": num(self.trail_percent),
            "timeInForce": self.time_in_force.value if self.time_in_force else None,
            "price": num(self.price),
            "signalPrice": num(self.signal_price),
            "cancel": self.cancel,
            "time": self.time.isoformat() if self.time else None,
            "test": self.test,
            "takeProfit": None,
            "stopLoss": None,
            "extendedHours": True if self.extended_hours else None,
            "ignoreTradingWindows": True if self.ignore_trading_windows else None,
        }
        if self.take_profit:
            tp = self.take_profit
            record["takeProfit"] = {
                "limitPrice": num(tp.limit_price),
                "percent": num(tp.percent),
                "amount": num(tp.amount),
            }
        if self.stop_loss:
            sl = self.stop_loss
            record["stopLoss"] = {
                "type": sl.type.value if sl.typed else None,
                "stopPrice": num(sl.stop_price),
                "percent": num(sl.percent),
                "amount": num(sl.amount),
                "limitPrice": num(sl.limit_price),
                "trailAmount": num(sl.trail_amount),
                "trailPercent": num(sl.trail_percent),
            }
        return record

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> Signal:
        def num(v: Any) -> Decimal | None:
            return None if v is None else Decimal(v)

        tp = r.get("takeProfit")
        sl = r.get("stopLoss")
        return cls(
            ticker=r["ticker"],
            action=Action(r["action"]),
            sentiment=Sentiment(r["sentiment"]) if r.get("sentiment") else None,
            quantity=num(r.get("quantity")),
            quantity_type=QuantityType(r["quantityType"]) if r.get("quantityType") else None,
            order_type=OrderType(r["orderType"]) if r.get("orderType") else None,
            limit_price=num(r.get("limitPrice")),
            stop_price=num(r.get("stopPrice")),
            trail_amount=num(r.get("trailAmount")),
            trail_percent=num(r.get("trailPercent")),
            time_in_force=TimeInForce(r["timeInForce"]) if r.get("timeInForce") else None,
            price=num(r.get("price")),
            signal_price=num(r.get("signalPrice")),
            take_profit=TakeProfit(
                num(tp.get("limitPrice")), num(tp.get("percent")), num(tp.get("amount"))
            )
            if tp
            else None,
            stop_loss=StopLoss(
                StopLossType(sl.get("type") or StopLossType.STOP),
                num(sl.get("stopPrice")),
                num(sl.get("percent")),
                num(sl.get("amount")),
                num(sl.get("limitPrice")),
                num(sl.get("trailAmount")),
                num(sl.get("trailPercent")),
                typed=sl.get("type") is not None,
            )
            if sl
            else None,
            cancel=r.get("cancel"),
            time=datetime.fromisoformat(r["time"]) if r.get("time") else None,
            test=bool(r.get("test")),
            extended_hours=r.get("extendedHours") is True,
            ignore_trading_windows=r.get("ignoreTradingWindows") is True,
        )

    def echo(self, record: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the webhook answers as ``payload``: the canonical fields that were sent, with
        numbers as JSON numbers, and the sender's extras."""
        out: dict[str, Any] = {}
        for key, value in (record or self.to_record()).items():
            if value is None or (key == "test" and not value):
                continue
            out[key] = _record_numbers(value)
        if self.extras:
            out["extras"] = _json_value(self.extras)
        return out


_NUMERIC = re.compile(r"^\d+(\.\d+)?$")


def _record_numbers(value: Any) -> Any:
    """Canonical record values back to JSON numbers (they were validated, so they are small)."""
    if isinstance(value, str) and _NUMERIC.match(value):
        return _number(Decimal(value))
    if isinstance(value, dict):
        return {k: _record_numbers(v) for k, v in value.items() if v is not None}
    return value


def _json_value(value: Any) -> Any:
    """The sender's extras as parsed, with decimals as JSON numbers (depth is bounded)."""
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def _number(d: Decimal) -> int | float | str:
    # Huge or odd values stay text: an int of 5,000 digits or a float of inf is no JSON number.
    if d.is_finite() and d.adjusted() < 15:  # abs() of 1E+1000000 would overflow
        return int(d) if d == d.to_integral_value() else float(d)
    return str(d)


# -- parsing ---------------------------------------------------------------------------------


def parse(body: bytes) -> Signal | Refusal:
    """A raw webhook body (at most ``MAX_BODY_BYTES``; the caller enforces that while reading)."""
    if not body.strip():
        return Refusal(
            "empty-json",
            "Your trade signal was empty. Send a JSON object with at least ticker and action, "
            'for example {"ticker": "AAPL", "action": "buy"}.',
        )
    try:
        text = body.decode("utf-8-sig")
        obj = _DECODER.decode(text)
    except ArithmeticError:  # valid JSON, like 1e99999999999999999999, but no number we can hold
        return Refusal(
            "invalid-payload",
            "A number in the signal is too large or too small to read. Send plain numbers, "
            "like 10 or 199.87.",
        )
    except (ValueError, RecursionError):
        return Refusal(
            "malformed-json",
            "The JSON payload could not be parsed. Check for trailing commas, unquoted text "
            "and smart quotes, and that TradingView placeholders produce valid JSON.",
        )
    return parse_object(obj)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads with these options builds a decoder and its scanner on every call,
# 40% of the decoding time of a typical signal.
_DECODER = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants)


def parse_object(obj: Any) -> Signal | Refusal:
    try:
        return _parse(obj)
    except _Refused as e:
        return e.refusal


def _parse(obj: Any) -> Signal:
    if not isinstance(obj, dict):
        raise _Refused(
            "invalid-payload",
            "The payload must be a JSON object with at least the ticker and action fields.",
        )
    if not obj:
        raise _Refused(
            "empty-json",
            "Your trade signal was an empty JSON object. Add at least ticker and action.",
        )
    if obj.get("ticker") is None or obj.get("action") is None:
        raise _Refused(
            "invalid-payload",
            "The payload is invalid. Both the action and ticker fields are required.",
        )
    action = _action(obj["action"])
    ticker = _ticker(obj["ticker"], continuous=True)
    _refuse_unsupported(obj)
    sentiment = _sentiment(obj.get("sentiment"), action)

    order_type = _order_type(obj.get("orderType"))
    limit_price = _price(obj, "limitPrice", "invalid-limit-price")
    stop_price = _price(obj, "stopPrice", "invalid-stop-price")
    effective = order_type or OrderType.MARKET
    if limit_price is not None and effective not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        raise _Refused(
            "invalid-limit-price",
            "limitPrice applies to orderType limit or "
            "stop_limit. Add the orderType, or remove "
            "limitPrice for a market order.",
        )
    if stop_price is not None and effective not in (OrderType.STOP, OrderType.STOP_LIMIT):
        raise _Refused(
            "invalid-stop-price",
            "stopPrice applies to orderType stop or stop_limit. "
            "Add the orderType, or remove stopPrice.",
        )
    trail_amount = _price(obj, "trailAmount", "invalid-trailing-stop")
    trail_percent = _price(obj, "trailPercent", "invalid-trailing-stop")
    if effective is OrderType.TRAILING_STOP:
        if (trail_amount is None) == (trail_percent is None):
            raise _Refused(
                "invalid-trailing-stop",
                "A trailing_stop order needs trailAmount or trailPercent: exactly one of the two.",
            )
        if trail_percent is not None and trail_percent >= 100:
            raise _Refused("invalid-trailing-stop", "trailPercent must be less than 100.")
    elif trail_amount is not None or trail_percent is not None:
        raise _Refused(
            "invalid-trailing-stop",
            "trailAmount and trailPercent apply to orderType trailing_stop. Add the orderType, "
            "or remove them.",
        )
    tif = _time_in_force(obj.get("timeInForce"))

    quantity, quantity_type = _quantity(obj, action)
    price = _price(obj, "price", "invalid-price")
    signal_price = _price(obj, "signalPrice", "invalid-signal-price")
    take_profit = _take_profit(obj.get("takeProfit"))
    stop_loss = _stop_loss(obj.get("stopLoss"))
    if quantity_type is QuantityType.RISK_DOLLAR_AMOUNT and stop_loss is None:
        raise _Refused(
            "invalid-stop-loss-value-required",
            "quantityType risk_dollar_amount sizes the entry by its distance to the stop loss: "
            "send stopLoss with stopPrice, percent or amount.",
        )
    # "Only applicable for stocks": one alert template shared with crypto and futures tickers
    # carries it for them too, and is not refused for it.
    extended = (
        _extended_hours(obj)
        and action is not Action.CANCEL
        and symbols.asset_class_of(ticker) is AssetClass.EQUITY
    )
    if extended:
        _check_extended_hours(ticker, effective, tif, take_profit or stop_loss)
    if tif in (TimeInForce.OPG, TimeInForce.CLS) and action is not Action.CANCEL:
        _check_auction(ticker, effective, tif, take_profit or stop_loss, extended)
    return Signal(
        ticker=ticker,
        action=action,
        sentiment=sentiment,
        quantity=quantity,
        quantity_type=quantity_type,
        order_type=order_type,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_amount=trail_amount,
        trail_percent=trail_percent,
        time_in_force=tif,
        price=price,
        signal_price=signal_price,
        take_profit=take_profit,
        stop_loss=stop_loss,
        cancel=_bool(obj.get("cancel"), "invalid-cancel", "cancel"),
        time=_time(obj.get("time")),
        test=bool(_bool(obj.get("test"), "invalid-test", "test")),
        extras=_extras(obj.get("extras")),
        extended_hours=extended,
        ignore_trading_windows=_ignores_windows(obj),
    )


def _check_extended_hours(
    ticker: str, order_type: OrderType, tif: TimeInForce | None, bracket: object
) -> None:
    """What an extended-hours order can be at every broker: the exchanges take only stock
    limit orders before the open and after the close, for the day's sessions."""
    if order_type is not OrderType.LIMIT:
        raise _Refused(
            "invalid-extended-hours",
            "Extended-hours orders must be limit orders: before the open and after the close "
            "the exchanges take no market or stop orders. Send orderType limit (with a "
            "limitPrice, or none to trade at the market price when the signal is processed).",
        )
    if tif not in (None, TimeInForce.DAY):
        raise _Refused(
            "invalid-extended-hours",
            "Extended-hours orders are day orders: send timeInForce day, or leave it out.",
        )
    if bracket:
        raise _Refused(
            "invalid-extended-hours",
            "takeProfit/stopLoss cannot be sent with extendedHours: the stop loss would be a "
            "stop order, which works in regular hours only. Remove one or the other.",
        )


def _check_auction(
    ticker: str, order_type: OrderType, tif: TimeInForce, bracket: object, extended: bool
) -> None:
    """What an auction order (opg, cls) can be at every broker: a stock market or limit order
    for the opening or closing auction alone."""
    which = "opening" if tif is TimeInForce.OPG else "closing"
    asset = symbols.asset_class_of(ticker)
    if asset is not AssetClass.EQUITY:
        kind = "crypto" if asset is AssetClass.CRYPTO else "a future"
        raise _Refused(
            "invalid-time-in-force",
            f"timeInForce {tif} trades in a stock exchange's {which} auction; {ticker} is "
            f"{kind}. Send day or gtc.",
        )
    if order_type not in (OrderType.MARKET, OrderType.LIMIT):
        raise _Refused(
            "invalid-time-in-force",
            f"timeInForce {tif} takes a market or limit order (the {which} auction's price), "
            f"not {order_type.value}.",
        )
    if bracket:
        raise _Refused(
            "invalid-time-in-force",
            f"takeProfit/stopLoss cannot ride on a timeInForce {tif} order. Remove one or the "
            "other.",
        )
    if extended:
        raise _Refused(
            "invalid-time-in-force",
            f"A timeInForce {tif} order trades in the {which} auction only: remove extendedHours.",
        )


def _action(value: Any) -> Action:
    if isinstance(value, str):
        try:
            return Action(value.strip().lower())
        except ValueError:
            pass  # not an action name: the refusal below says which are
    raise _Refused(
        "invalid-action",
        "The provided action is invalid. The action field must be "
        "one of the following values: buy, sell, exit, cancel, or "
        "add.",
    )


def normalize_ticker(value: str) -> str:
    """The ticker as Tradecord writes it; ``ValueError`` (with advice) if it cannot be one."""
    try:
        return _ticker(value)
    except _Refused as e:
        raise ValueError(e.refusal.message) from None


def _ticker(value: Any, *, continuous: bool = False) -> str:
    """``continuous``: a continuous future (``NQ1!``) means today's contract; elsewhere (a
    strategy's allowed tickers, kept for months) it is refused, as it would not roll."""
    if not isinstance(value, str):
        raise _Refused("invalid-payload", 'The ticker field must be text, like "AAPL".')
    raw = value.strip().upper()
    if not raw:
        raise _Refused(
            "empty-ticker-name",
            "The ticker field is empty. Send a ticker symbol, "
            "e.g. with TradingView's {{ticker}} placeholder.",
        )
    if _OPTION_TICKER.match(raw):
        raise _Refused(
            "invalid-asset-class",
            "Options are not supported: Tradecord trades stocks, ETFs, futures and crypto.",
        )
    ticker = _EXCHANGE_PREFIX.sub("", raw, count=1)  # TradingView's "NASDAQ:AAPL"
    ticker = symbols.short_year(ticker)  # TradingView's "MNQU2025" is the broker's MNQU25
    if _CONTINUOUS.match(ticker):
        # TradingView's continuous "NQ1!" (front month) and "NQ2!" (the next): the contract,
        # as TradersPost maps it, rolling when the front one expires as TradingView's does.
        root, nth = ticker[:-2], int(ticker[-2])
        if not continuous or root not in symbols.FUTURES:
            raise _Refused(
                "ticker-does-not-exist",
                f"{ticker} is a continuous future"
                + (" Tradecord does not know" if continuous else "")
                + "; send the contract itself, like NQZ25 (TradingView: {{syminfo.ticker}} on a "
                "contract chart).",
            )
        at = datetime.now(UTC)
        ticker = symbols.front_contract(root, at)
        if nth == 2:
            after = symbols.contract(ticker, at)
            assert after is not None
            ticker = symbols.front_contract(root, after.expires_at)
    if unknown := symbols.unknown_future(ticker):
        raise _Refused("unsupported-ticker", unknown)
    if not symbols.is_symbol(ticker):
        raise _Refused(
            "ticker-does-not-exist",
            "The ticker is not a symbol Tradecord can trade. "
            f"Use a stock like AAPL, a future like {symbols.example_contract()} or "
            "/ES, or a crypto pair like BTCUSD.",
        )
    return ticker


def _refuse_unsupported(obj: Mapping[str, Any]) -> None:
    """Fields of the format that Tradecord does not act on yet."""
    present = [f for f in OPTION_FIELDS if obj.get(f) is not None]
    if present:
        _check_option_fields(obj)
        raise _Refused(
            "invalid-asset-class",
            f"Options are not supported ({', '.join(present)}): "
            "Tradecord trades stocks, ETFs, futures and "
            "crypto. Remove the options fields.",
        )
    # "true" as a string too, as cancel and test take it (alert templates quote values).
    _extended_hours(obj)
    _ignores_windows(obj)


def _check_option_fields(obj: Mapping[str, Any]) -> None:
    checks: list[tuple[str, str, Any]] = [
        ("optionType", "invalid-option-type", lambda v: v in ("both", "call", "put")),
        ("intrinsicValue", "invalid-intrinsic-value", lambda v: v in ("itm", "otm")),
        (
            "expiration",
            "invalid-expiration",
            lambda v: isinstance(v, str) and _EXPIRATION.match(v.strip()) is not None,
        ),
        ("strikeCount", "invalid-strike-count", lambda v: _is_count(v)),
        ("strikesAway", "invalid-strikes-away", lambda v: _is_count(v, allow_zero=True)),
        ("strikePrice", "invalid-strike-price", lambda v: _positive_or_none(v) is not None),
    ]
    for name, code, ok in checks:
        value = obj.get(name)
        if value is not None and not ok(value):
            raise _Refused(code, f"The provided {name} is invalid.")


def _is_count(value: Any, *, allow_zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, Decimal):
        return False
    return value == value.to_integral_value() and (value > 0 or (allow_zero and value == 0))


def _sentiment(value: Any, action: Action) -> Sentiment | None:
    if value is None:
        return None
    word = value.strip().lower() if isinstance(value, str) else None
    sentiment = SENTIMENT_WORDS.get(word or "")
    if sentiment is None:
        raise _Refused(
            "invalid-sentiment",
            "The provided sentiment value is invalid. The "
            "sentiment field must be one of the following "
            "values: bullish, bearish, or flat (TradingView's "
            "long and short are accepted).",
        )
    # Cancel orders nothing to be bullish or bearish about; add cannot go flat. An exit may
    # say what is left after it ("bullish: open position after trade should be bullish or
    # flat"): a partial exit, as TradingView's {{strategy.market_position}} sends it.
    if (action is Action.CANCEL and sentiment is not Sentiment.FLAT) or (
        action is Action.ADD and sentiment is Sentiment.FLAT
    ):
        raise _Refused(
            "invalid-sentiment-action",
            f"sentiment {sentiment} does not fit action "
            f"{action}: cancel takes flat (or no sentiment), add takes bullish or bearish.",
        )
    return sentiment


def _order_type(value: Any) -> OrderType | None:
    if value is None:
        return None
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in ORDER_TYPES:
        raise _Refused(
            "invalid-order-type",
            "The provided orderType is invalid. The orderType "
            "field must be one of the following values: "
            "market, limit, stop, stop_limit, or trailing_stop.",
        )
    return OrderType(word)


def _time_in_force(value: Any) -> TimeInForce | None:
    if value is None:
        return None
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in TIME_IN_FORCE:
        raise _Refused(
            "invalid-time-in-force",
            "The provided timeInForce is invalid. It must "
            "be one of: day, gtc, opg, cls, ioc or fok.",
        )
    return TimeInForce(word)


def _quantity(obj: Mapping[str, Any], action: Action) -> tuple[Decimal | None, QuantityType | None]:
    raw_type = obj.get("quantityType")
    qtype: QuantityType | None = None
    if raw_type is not None:
        word = raw_type.strip().lower() if isinstance(raw_type, str) else None
        if word not in QUANTITY_TYPES:
            raise _Refused(
                "invalid-quantity-type",
                "The provided quantityType is invalid. It "
                "must be one of: fixed_quantity, "
                "dollar_amount, risk_dollar_amount, "
                "percent_of_equity, or percent_of_position.",
            )
        assert word is not None
        qtype = QuantityType(word)
        if action is Action.CANCEL:
            raise _Refused(
                "invalid-quantity-type-action",
                "quantityType can only be used with action buy, sell, exit or add.",
            )
        if qtype is QuantityType.RISK_DOLLAR_AMOUNT and action is Action.EXIT:
            raise _Refused(
                "invalid-risk-dollar-amount-action",
                "risk_dollar_amount sizes a new position by its stop loss: it can only be used "
                "with action buy, sell or add. An exit closes the position (or send its "
                "quantity as fixed_quantity or percent_of_position).",
            )
        if qtype is QuantityType.PERCENT_OF_POSITION and action is Action.ADD:
            raise _Refused(
                "invalid-percent-of-position-action",
                "percent_of_position can only be used with action buy, sell or exit.",
            )
    raw = obj.get("quantity")
    if raw is None:
        if qtype is not None:
            raise _Refused(
                "quantity-type-requires-quantity", f"quantityType {qtype} needs a quantity."
            )
        return None, None
    quantity = _positive_or_none(raw)
    if quantity is None:
        raise _Refused(
            "invalid-quantity",
            "The provided quantity is invalid. The quantity field "
            "must be a positive number with at most "
            f"{MAX_DECIMALS} decimals.",
        )
    if action is Action.CANCEL:
        raise _Refused(
            "invalid-quantity",
            "A cancel signal takes no quantity: it cancels the ticker's open orders.",
        )
    # Over 100% of equity is leverage a margin account may have (its buying power decides);
    # a position has only 100% to give.
    if qtype is QuantityType.PERCENT_OF_POSITION and quantity > 100:
        raise _Refused(
            "invalid-quantity", f"A {qtype} quantity is a percentage of the position: at most 100."
        )
    return quantity, qtype


def _price(obj: Mapping[str, Any], name: str, code: str) -> Decimal | None:
    value = obj.get(name)
    if value is None:
        return None
    price = _positive_or_none(value)
    if price is None:
        raise _Refused(
            code,
            f"The provided {name} is invalid: it must be a positive number with "
            f"at most {MAX_DECIMALS} decimals.",
        )
    return price


_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")


def _positive_or_none(value: Any) -> Decimal | None:
    """A finite positive decimal below ``MAX_NUMBER`` with few decimals, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if "," in text:
            # "1,000" is a thousand; "1,5" (a decimal comma) must not become 15.
            if not _THOUSANDS.match(text):
                return None
            text = text.replace(",", "")
        if not text or len(text) > 40:
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            return None
    if isinstance(value, float):
        value = Decimal(repr(value))  # callers that built the dict themselves
    if not isinstance(value, Decimal | int):
        return None
    d = Decimal(value)
    if not d.is_finite() or d <= 0 or d >= MAX_NUMBER:
        return None
    if d.adjusted() < -MAX_DECIMALS:  # 1E-60000000000: normalize() would round it to 0
        return None
    exponent = d.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_DECIMALS:
        return None
    return d


def _relative(section: str, obj: Mapping[str, Any], name: str) -> Decimal | None:
    value = obj.get(name)
    if value is None:
        return None
    number = _positive_or_none(value)
    if number is None or (name == "percent" and number >= 100 and section == "stop-loss"):
        code = f"invalid-{section}-{_kebab(name)}"
        raise _Refused(
            code,
            f"The provided {_camel(section)}.{name} is invalid: it must be a "
            "positive number"
            + (" below 100" if name == "percent" and section == "stop-loss" else "")
            + ".",
        )
    return number


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _camel(section: str) -> str:
    return {"take-profit": "takeProfit", "stop-loss": "stopLoss"}[section]


def _take_profit(value: Any) -> TakeProfit | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refused(
            "invalid-take-profit-value-required",
            "takeProfit must be an object with limitPrice, percent or amount.",
        )
    limit = _relative("take-profit", value, "limitPrice")
    percent = _relative("take-profit", value, "percent")
    amount = _relative("take-profit", value, "amount")
    if percent is not None and amount is not None:
        raise _Refused(
            "invalid-take-profit-amount-and-percent",
            "Send takeProfit.percent or takeProfit.amount, not both.",
        )
    if limit is not None and (percent is not None or amount is not None):
        raise _Refused(
            "invalid-take-profit-relative-and-absolute",
            "Send an absolute takeProfit.limitPrice or a relative percent/amount, not both.",
        )
    if limit is None and percent is None and amount is None:
        raise _Refused(
            "invalid-take-profit-value-required", "takeProfit needs limitPrice, percent or amount."
        )
    return TakeProfit(limit, percent, amount)


def _stop_loss(value: Any) -> StopLoss | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refused(
            "invalid-stop-loss-value-required",
            "stopLoss must be an object with stopPrice, percent or amount.",
        )
    raw_type = value.get("type")
    if raw_type is None:
        sl_type = StopLossType.STOP
    else:
        word = raw_type.strip().lower() if isinstance(raw_type, str) else None
        if word not in ("stop", "stop_limit", "trailing_stop"):
            raise _Refused(
                "invalid-stop-loss-type",
                "The provided stopLoss.type is invalid. The "
                "stopLoss.type field must be one of the "
                "following values: stop, stop_limit, or "
                "trailing_stop.",
            )
        sl_type = StopLossType(word)
    if sl_type is StopLossType.TRAILING_STOP:
        return _trailing_stop_loss(value)
    if value.get("trailAmount") is not None or value.get("trailPercent") is not None:
        raise _Refused(
            "invalid-stop-loss-trail-value",
            "stopLoss.trailAmount and stopLoss.trailPercent require stopLoss.type trailing_stop.",
        )
    stop = _relative("stop-loss", value, "stopPrice")
    percent = _relative("stop-loss", value, "percent")
    amount = _relative("stop-loss", value, "amount")
    limit = _relative("stop-loss", value, "limitPrice")
    if percent is not None and amount is not None:
        raise _Refused(
            "invalid-stop-loss-amount-and-percent",
            "Send stopLoss.percent or stopLoss.amount, not both.",
        )
    if stop is not None and (percent is not None or amount is not None):
        raise _Refused(
            "invalid-stop-loss-relative-and-absolute",
            "Send an absolute stopLoss.stopPrice or a relative percent/amount, not both.",
        )
    if limit is not None and sl_type is not StopLossType.STOP_LIMIT:
        raise _Refused(
            "invalid-stop-loss-limit-price",
            "stopLoss.limitPrice requires stopLoss.type stop_limit.",
        )
    if stop is None and percent is None and amount is None:
        if sl_type is StopLossType.STOP_LIMIT and limit is not None:
            raise _Refused(
                "invalid-stop-loss-stop-price-required",
                "A stop_limit stop loss needs stopPrice, percent or amount as well as limitPrice.",
            )
        raise _Refused(
            "invalid-stop-loss-value-required", "stopLoss needs stopPrice, percent or amount."
        )
    if sl_type is StopLossType.STOP_LIMIT and limit is None:
        raise _Refused(
            "invalid-stop-loss-limit-price", "A stop_limit stop loss needs stopLoss.limitPrice."
        )
    return StopLoss(sl_type, stop, percent, amount, limit, typed=raw_type is not None)


def _trailing_stop_loss(value: Mapping[str, Any]) -> StopLoss:
    """``type: trailing_stop``: the stop follows the best price since the entry filled by
    ``trailAmount`` dollars or ``trailPercent`` percent; it has no price of its own."""
    # A null field is absent, as everywhere in the format (alert templates send them).
    fixed = [
        k for k in ("stopPrice", "percent", "amount", "limitPrice") if value.get(k) is not None
    ]
    if fixed:
        raise _Refused(
            "invalid-stop-loss-trail-value",
            f"A trailing_stop stop loss follows the price by trailAmount or trailPercent; "
            f"remove stopLoss.{fixed[0]}.",
        )
    amount = _relative("stop-loss", value, "trailAmount")
    percent = _relative("stop-loss", value, "trailPercent")
    if percent is not None and percent >= 100:
        raise _Refused(
            "invalid-stop-loss-trail-percent",
            "The provided stopLoss.trailPercent is invalid: it must be a positive number below "
            "100.",
        )
    if amount is not None and percent is not None:
        raise _Refused(
            "invalid-stop-loss-trail-value",
            "Send stopLoss.trailAmount or stopLoss.trailPercent, not both.",
        )
    if amount is None and percent is None:
        raise _Refused(
            "invalid-stop-loss-trail-value-required",
            "A trailing_stop stop loss needs trailAmount (dollars) or trailPercent.",
        )
    return StopLoss(StopLossType.TRAILING_STOP, trail_amount=amount, trail_percent=percent)


def distance(text: str) -> tuple[Decimal, bool]:
    """A distance from a price as members type it, "2%" or "2.50" (or "$2.50"), and whether
    it is a percent; zero when it is not a finite number."""
    raw = text.strip()
    percent = raw.endswith("%")
    try:
        value = Decimal(raw.removesuffix("%").strip().removeprefix("$"))
    except InvalidOperation:
        return Decimal(0), percent
    return (value if value.is_finite() else Decimal(0)), percent


def exit_default(text: str, what: str) -> TakeProfit | StopLoss:
    """A subscription's default take-profit or stop-loss, as members type it: "5%" or "2.50"
    (dollars) from the entry price; a stop-loss may trail: "trail 2%", "trail 1.50"."""
    raw = text.strip().casefold()
    trailing = what == "stop_loss" and raw.startswith("trail")
    raw = raw.removeprefix("trail").strip() if trailing else raw
    value, percent = distance(raw)
    if value <= 0 or value >= MAX_NUMBER or (percent and value >= 100):
        trail = ', or trailing: "trail 2%"' if what == "stop_loss" else ""
        raise ValueError(
            f"{what} is a distance from the entry price: a percent under 100 like 5%, or "
            f"dollars like 2.50{trail}; “{text}” is not."
        )
    pct, amount = (value, None) if percent else (None, value)
    if what == "take_profit":
        return TakeProfit(percent=pct, amount=amount)
    if trailing:
        return StopLoss(StopLossType.TRAILING_STOP, trail_amount=amount, trail_percent=pct)
    return StopLoss(percent=pct, amount=amount)


def exit_default_text(exit_: TakeProfit | StopLoss) -> str:
    """``exit_default``'s canonical text: stored, and shown to members."""
    if isinstance(exit_, StopLoss) and exit_.type is StopLossType.TRAILING_STOP:
        pct, amount = exit_.trail_percent, exit_.trail_amount
        prefix = "trail "
    else:
        pct, amount, prefix = exit_.percent, exit_.amount, ""
    return prefix + (f"{pct.normalize():f}%" if pct is not None else f"{amount:.2f}")


def _extended_hours(obj: Mapping[str, Any]) -> bool:
    return _bool(obj.get("extendedHours"), "invalid-extended-hours", "extendedHours") is True


def _ignores_windows(obj: Mapping[str, Any]) -> bool:
    flag = obj.get("ignoreTradingWindows")
    return _bool(flag, "invalid-ignore-trading-windows", "ignoreTradingWindows") is True


def _bool(value: Any, code: str, name: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Refused(code, f"{name} must be true or false.")


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str) and 10 <= len(value.strip()) <= 40:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            at = datetime.fromisoformat(text)
            # A time without a zone is read as UTC ({{timenow}} always sends Z).
            return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # not a timestamp: refused below
    raise _Refused(
        "invalid-time",
        "time must be an ISO-8601 timestamp such as "
        "2024-01-15T14:30:00Z (TradingView: {{timenow}}).",
    )


def _extras(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or _depth(value) > MAX_EXTRAS_DEPTH:
        raise _Refused(
            "invalid-extras",
            f"extras must be a JSON object (nested at most {MAX_EXTRAS_DEPTH} levels).",
        )
    return value


def _depth(value: Any, limit: int = MAX_EXTRAS_DEPTH + 1) -> int:
    """Nesting depth, counted without recursion (bodies are small but may be deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        )
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest
