"""The signal format: every message code the parser gives, and what valid signals become."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.models import OrderType, TimeInForce
from adapters.symbols import contract, front_contract
from bot.signal_format import (
    Action,
    QuantityType,
    Refusal,
    Sentiment,
    Signal,
    StopLoss,
    StopLossType,
    TakeProfit,
    exit_default,
    exit_default_text,
    normalize_ticker,
    parse,
    parse_object,
)

SPEC = Path(__file__).resolve().parents[3] / "emulators/specs/traderspost-webhook-openapi.json"


DEEP: Any = 1
for _ in range(20):
    DEEP = [DEEP]


def refusal(obj: Any) -> str:
    result = parse(obj) if isinstance(obj, bytes) else parse_object(obj)
    assert isinstance(result, Refusal), f"accepted: {result}"
    assert result.message  # every refusal says what to do
    return result.code


def ok(obj: dict[str, Any]) -> Signal:
    result = parse_object(obj)
    assert isinstance(result, Signal), result
    return result


def base(**fields: Any) -> dict[str, Any]:
    return {"ticker": "AAPL", "action": "buy", **fields}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty-json"),
        (b"   \n", "empty-json"),
        (b"{}", "empty-json"),
        (b'{"ticker": "AAPL", "action": "buy",}', "malformed-json"),
        (b"{\xe2\x80\x9cticker\xe2\x80\x9d: 1}", "malformed-json"),  # smart quotes
        (b'{"ticker": "AAPL", "action": "buy", "quantity": NaN}', "malformed-json"),
        (b"\xff\xfe{}", "malformed-json"),
        (b"[" * 5000 + b"]" * 5000, "malformed-json"),
        # Valid JSON, but no decimal holds these numbers.
        (b'{"ticker":"A","action":"buy","quantity":1e99999999999999999999}', "invalid-payload"),
        (b'{"ticker":"A","action":"buy","extras":{"n":1e-9999999999999999999}}', "invalid-payload"),
        (b'["AAPL", "buy"]', "invalid-payload"),
        (b'"buy"', "invalid-payload"),
        (b'{"ticker": "AAPL"}', "invalid-payload"),
        (b'{"action": "buy"}', "invalid-payload"),
        (b'{"ticker": null, "action": "buy"}', "invalid-payload"),
    ],
)
def test_body_level_codes(body: bytes, code: str) -> None:
    assert refusal(body) == code


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"action": "buy_to_open"}, "invalid-action"),
        ({"action": 1}, "invalid-action"),
        ({"ticker": "   "}, "empty-ticker-name"),
        ({"ticker": 42}, "invalid-payload"),
        ({"ticker": "$$$"}, "ticker-does-not-exist"),
        ({"ticker": "A" * 30}, "ticker-does-not-exist"),
        ({"ticker": "ZCZ2025"}, "unsupported-ticker"),  # corn: a future Tradecord lacks
        ({"ticker": "CBOT:ZCZ25"}, "unsupported-ticker"),
        ({"ticker": "SPY 250624C596"}, "invalid-asset-class"),
        ({"optionType": "call"}, "invalid-asset-class"),
        ({"optionType": "straddle"}, "invalid-option-type"),
        ({"intrinsicValue": "atm"}, "invalid-intrinsic-value"),
        ({"expiration": "someday"}, "invalid-expiration"),
        ({"strikeCount": -1}, "invalid-strike-count"),
        ({"strikesAway": 1.5}, "invalid-strikes-away"),
        ({"strikePrice": "x"}, "invalid-strike-price"),
        ({"sentiment": "sideways"}, "invalid-sentiment"),
        ({"action": "cancel", "sentiment": "short"}, "invalid-sentiment-action"),
        ({"action": "add", "sentiment": "flat"}, "invalid-sentiment-action"),
        ({"orderType": "iceberg"}, "invalid-order-type"),
        ({"orderType": "Trailing_Stop"}, "invalid-trailing-stop"),  # by how much?
        (
            {"orderType": "trailing_stop", "trailAmount": 1, "trailPercent": 1},
            "invalid-trailing-stop",
        ),
        ({"orderType": "trailing_stop", "trailPercent": 100}, "invalid-trailing-stop"),
        ({"orderType": "trailing_stop", "trailAmount": -2}, "invalid-trailing-stop"),
        ({"trailAmount": 2}, "invalid-trailing-stop"),  # a market order that trails
        ({"orderType": "limit", "limitPrice": -1}, "invalid-limit-price"),
        ({"limitPrice": 100}, "invalid-limit-price"),  # a market order with a limit price
        ({"orderType": "stop", "stopPrice": "abc"}, "invalid-stop-price"),
        ({"orderType": "limit", "limitPrice": 10, "stopPrice": 9}, "invalid-stop-price"),
        ({"timeInForce": "forever"}, "invalid-time-in-force"),
        ({"ticker": "BTCUSD", "timeInForce": "opg"}, "invalid-time-in-force"),
        ({"orderType": "stop", "stopPrice": 190, "timeInForce": "cls"}, "invalid-time-in-force"),
        ({"timeInForce": "opg", "takeProfit": {"percent": 5}}, "invalid-time-in-force"),
        (
            {"timeInForce": "cls", "orderType": "limit", "limitPrice": 1, "extendedHours": True},
            "invalid-extended-hours",
        ),
        ({"quantity": 0}, "invalid-quantity"),
        ({"quantity": -3}, "invalid-quantity"),
        ({"quantity": "ten"}, "invalid-quantity"),
        ({"quantity": True}, "invalid-quantity"),
        ({"quantity": 1e13}, "invalid-quantity"),
        ({"quantity": "0.123456789"}, "invalid-quantity"),
        ({"quantity": 150, "quantityType": "percent_of_position"}, "invalid-quantity"),
        ({"quantity": "1,5"}, "invalid-quantity"),  # a decimal comma: not 15
        ({"quantity": "1,00,000"}, "invalid-quantity"),
        ({"quantity": "1E-60000000000"}, "invalid-quantity"),  # not a tiny nonzero quantity
        ({"action": "cancel", "quantity": 1}, "invalid-quantity"),
        ({"quantityType": "shares", "quantity": 1}, "invalid-quantity-type"),
        (
            {"quantityType": "risk_dollar_amount", "quantity": 100},
            "invalid-stop-loss-value-required",
        ),
        (
            {
                "action": "exit",
                "quantityType": "risk_dollar_amount",
                "quantity": 100,
                "stopLoss": {"amount": 5},
            },
            "invalid-risk-dollar-amount-action",
        ),
        ({"action": "cancel", "quantityType": "fixed_quantity"}, "invalid-quantity-type-action"),
        (
            {"action": "add", "quantityType": "percent_of_position", "quantity": 5},
            "invalid-percent-of-position-action",
        ),
        ({"quantityType": "dollar_amount"}, "quantity-type-requires-quantity"),
        ({"price": 0}, "invalid-price"),
        ({"signalPrice": "1,2,3x"}, "invalid-signal-price"),
        ({"takeProfit": 5}, "invalid-take-profit-value-required"),
        ({"takeProfit": {}}, "invalid-take-profit-value-required"),
        ({"takeProfit": {"percent": -5}}, "invalid-take-profit-percent"),
        ({"takeProfit": {"amount": "x"}}, "invalid-take-profit-amount"),
        ({"takeProfit": {"limitPrice": 0}}, "invalid-take-profit-limit-price"),
        ({"takeProfit": {"percent": 5, "amount": 2}}, "invalid-take-profit-amount-and-percent"),
        (
            {"takeProfit": {"percent": 5, "limitPrice": 220}},
            "invalid-take-profit-relative-and-absolute",
        ),
        ({"stopLoss": "tight"}, "invalid-stop-loss-value-required"),
        ({"stopLoss": {"type": "stop"}}, "invalid-stop-loss-value-required"),
        ({"stopLoss": {"type": "guaranteed", "percent": 5}}, "invalid-stop-loss-type"),
        ({"stopLoss": {"trailAmount": 1, "percent": 5}}, "invalid-stop-loss-trail-value"),
        ({"stopLoss": {"type": "trailing_stop"}}, "invalid-stop-loss-trail-value-required"),
        (
            {"stopLoss": {"type": "trailing_stop", "trailAmount": 1, "trailPercent": 2}},
            "invalid-stop-loss-trail-value",
        ),
        (
            {"stopLoss": {"type": "trailing_stop", "trailPercent": 2, "stopPrice": 190}},
            "invalid-stop-loss-trail-value",
        ),
        (
            {"stopLoss": {"type": "trailing_stop", "trailPercent": 100}},
            "invalid-stop-loss-trail-percent",
        ),
        (
            {"stopLoss": {"type": "trailing_stop", "trailAmount": 0}},
            "invalid-stop-loss-trail-amount",
        ),
        (
            {"stopLoss": {"type": "trailing_stop", "trailAmount": "x"}},
            "invalid-stop-loss-trail-amount",
        ),
        ({"stopLoss": {"percent": 100}}, "invalid-stop-loss-percent"),
        ({"stopLoss": {"amount": 0}}, "invalid-stop-loss-amount"),
        ({"stopLoss": {"stopPrice": -2}}, "invalid-stop-loss-stop-price"),
        (
            {"stopLoss": {"type": "stop_limit", "stopPrice": 190, "limitPrice": "x"}},
            "invalid-stop-loss-limit-price",
        ),
        ({"stopLoss": {"stopPrice": 190, "limitPrice": 189}}, "invalid-stop-loss-limit-price"),
        ({"stopLoss": {"type": "stop_limit", "stopPrice": 190}}, "invalid-stop-loss-limit-price"),
        (
            {"stopLoss": {"type": "stop_limit", "limitPrice": 189}},
            "invalid-stop-loss-stop-price-required",
        ),
        ({"stopLoss": {"percent": 5, "amount": 1}}, "invalid-stop-loss-amount-and-percent"),
        ({"stopLoss": {"percent": 5, "stopPrice": 190}}, "invalid-stop-loss-relative-and-absolute"),
        ({"cancel": "maybe"}, "invalid-cancel"),
        ({"test": 1}, "invalid-test"),
        ({"time": "yesterday"}, "invalid-time"),
        ({"time": 1718721000}, "invalid-time"),
        ({"time": "0001-01-01T00:00:00+01:00"}, "invalid-time"),
        ({"extras": "note"}, "invalid-extras"),
        ({"extras": {"a": DEEP}}, "invalid-extras"),
        ({"extendedHours": "yes"}, "invalid-extended-hours"),
        ({"extendedHours": True}, "invalid-extended-hours"),  # a market order
        (
            {"extendedHours": True, "orderType": "stop", "stopPrice": 1},
            "invalid-extended-hours",
        ),
        (
            {"extendedHours": True, "orderType": "limit", "timeInForce": "gtc"},
            "invalid-extended-hours",
        ),
        (
            {"extendedHours": True, "orderType": "limit", "stopLoss": {"percent": 2}},
            "invalid-extended-hours",
        ),
        ({"ignoreTradingWindows": "no"}, "invalid-ignore-trading-windows"),
    ],
)
def test_field_codes(fields: dict[str, Any], code: str) -> None:
    assert refusal(base(**fields)) == code


@pytest.mark.parametrize("ticker", ["BTCUSD", "ESZ26"])
def test_extended_hours_is_ignored_where_it_does_not_apply(ticker: str) -> None:
    """ "Only applicable for stocks": a template shared with crypto and futures tickers carries
    it for them too, and was refused for it."""
    sig = parse(json.dumps({"ticker": ticker, "action": "buy", "extendedHours": True}).encode())
    assert sig.extended_hours is False


def test_an_exit_may_say_what_is_left_after_it() -> None:
    """TradingView's {{strategy.market_position}} after a partial exit of a long is "long":
    "bullish: open position after trade should be bullish or flat"."""
    sig = parse(b'{"ticker": "AAPL", "action": "exit", "sentiment": "long", "quantity": 5}')
    assert (sig.action, sig.sentiment, sig.quantity) == (Action.EXIT, Sentiment.BULLISH, 5)


def test_codes_follow_the_contracts_style() -> None:
    """Codes the contract lists are used as listed; the ones Tradecord adds read the same way."""
    spec = json.loads(SPEC.read_text())
    post = spec["paths"]["/trading/webhook/{uuid}/{password}"]["post"]
    listed = set(
        post["responses"]["400"]["content"]["application/json"]["schema"]["properties"][
            "messageCode"
        ]["enum"]
    )
    for code in (
        "malformed-json",
        "invalid-action",
        "invalid-sentiment-action",
        "invalid-quantity-type-action",
        "invalid-stop-loss-stop-price-required",
    ):
        assert code in listed


def test_the_contracts_own_example_is_accepted() -> None:
    spec = json.loads(SPEC.read_text())
    post = spec["paths"]["/trading/webhook/{uuid}/{password}"]["post"]
    example = post["requestBody"]["content"]["application/json"]["schema"]["example"]
    signal = parse(json.dumps(example).encode())
    assert isinstance(signal, Signal)
    assert signal.ticker == "AAPL" and signal.action is Action.BUY
    assert signal.sentiment is Sentiment.BULLISH  # the example says "long"
    assert signal.quantity == 10 and signal.quantity_type is QuantityType.FIXED_QUANTITY
    assert signal.order_type is OrderType.MARKET and signal.test is True
    assert signal.take_profit is not None and signal.take_profit.percent == 10
    assert signal.stop_loss is not None and signal.stop_loss.type is StopLossType.STOP
    assert signal.time == datetime(2025, 6, 18, 14, 30, tzinfo=UTC)
    assert signal.extras["strategy"] == "EMA_Crossover"


def test_tradingview_placeholders_as_strings() -> None:
    signal = ok(
        base(
            quantity="{{strategy.order.contracts}}".replace("{{strategy.order.contracts}}", "3"),
            price="412.50",
            sentiment="LONG",
            action=" Sell ",
            time="2024-01-15T14:30:00Z",
            cancel="false",
        )
    )
    assert signal.quantity == 3 and signal.price == Decimal("412.50")
    assert signal.action is Action.SELL and signal.cancel is False
    assert signal.reference_price == Decimal("412.50")


def test_fields_outside_the_format_are_ignored() -> None:
    signal = ok(base(interval="5", comment="x", message="hello", expiresAt="2030-01-01"))
    assert signal.ticker == "AAPL"


def test_ticker_notation_from_tradingview() -> None:
    assert ok(base(ticker="NASDAQ:aapl")).ticker == "AAPL"
    # A continuous future is the contract it stands for today, as TradersPost maps it.
    now = datetime.now(UTC)
    front = front_contract("NQ", now)
    after = contract(front, now)
    assert after is not None
    assert ok(base(ticker="CME_MINI:NQ1!")).ticker == front
    assert ok(base(ticker="NQ2!")).ticker == front_contract("NQ", after.expires_at) != front
    assert refusal(base(ticker="ZZZ1!")) == "ticker-does-not-exist"
    # TradingView's full contract year is written as brokers write it: a future, not a stock.
    assert ok(base(ticker="NQZ2025")).ticker == "NQZ25"
    assert ok(base(ticker="CME_MINI:MNQU2025")).ticker == "MNQU25"
    assert ok(base(ticker="BTC/USD")).ticker == "BTC/USD"
    # The refusal itself advertises /ES: futures with their prefix are symbols, nothing else is.
    assert ok(base(ticker="/ES")).ticker == "/ES"
    assert ok(base(ticker="@MESZ25")).ticker == "@MESZ25"
    assert refusal(base(ticker="/AAPL")) == "ticker-does-not-exist"
    assert normalize_ticker("cme_mini:esz2025") == "ESZ25"
    with pytest.raises(ValueError, match="does not trade ABC futures"):
        normalize_ticker("ABCZ2025")  # a future Tradecord does not know: not taken for a stock
    with pytest.raises(ValueError, match="not a symbol"):
        normalize_ticker("$$$")


def test_order_fields() -> None:
    s = ok(
        base(
            orderType="stop_limit",
            limitPrice="101.5",
            stopPrice=101,
            timeInForce="GTC",
            signalPrice=100,
            price=99,
        )
    )
    assert s.order_type is OrderType.STOP_LIMIT and s.time_in_force is TimeInForce.GTC
    assert (s.limit_price, s.stop_price) == (Decimal("101.5"), Decimal(101))
    assert s.reference_price == 100  # signalPrice first, as the contract says


def test_trailing_stops_by_amount_or_percent() -> None:
    s = ok(base(orderType="trailing_stop", trailPercent="2.5"))
    assert s.order_type is OrderType.TRAILING_STOP
    assert (s.trail_amount, s.trail_percent) == (None, Decimal("2.5"))
    again = Signal.from_record(s.to_record())
    assert again.trail_percent == Decimal("2.5") and again.echo()["trailPercent"] == 2.5
    s = ok(base(orderType="trailing_stop", trailAmount=1))
    assert (s.trail_amount, s.trail_percent) == (Decimal(1), None)


@pytest.mark.parametrize(
    ("stop_loss", "amount", "percent"),
    [
        ({"type": "trailing_stop", "trailAmount": "2.5"}, Decimal("2.5"), None),
        ({"type": "Trailing_Stop", "trailPercent": 3}, None, Decimal(3)),
    ],
)
def test_a_trailing_stop_loss_by_amount_or_percent(
    stop_loss: dict[str, Any], amount: Decimal | None, percent: Decimal | None
) -> None:
    s = ok(base(takeProfit={"percent": 5}, stopLoss=stop_loss))
    assert s.stop_loss == StopLoss(
        StopLossType.TRAILING_STOP, trail_amount=amount, trail_percent=percent
    )
    assert Signal.from_record(s.to_record()) == s


def test_record_round_trip_and_echo() -> None:
    s = parse(
        json.dumps(
            base(
                sentiment="bullish",
                quantity=2.5,
                quantityType="dollar_amount",
                takeProfit={"amount": 5},
                stopLoss={"type": "stop_limit", "stopPrice": 190, "limitPrice": 189},
                time="2024-01-15T14:30:00+02:00",
                extras={"n": 1.5, "big": 10**30},
            )
        ).encode()
    )
    assert isinstance(s, Signal)
    again = Signal.from_record(s.to_record())
    assert again.to_record() == s.to_record()
    assert again.time == datetime(2024, 1, 15, 12, 30, tzinfo=UTC)
    echo = s.echo()
    assert echo["quantity"] == 2.5 and echo["takeProfit"] == {"amount": 5}
    assert echo["extras"] == {"n": 1.5, "big": "1000000000000000000000000000000"}
    json.dumps(echo, allow_nan=False)


def test_a_huge_exponent_in_extras_still_echoes_as_json() -> None:
    s = parse(b'{"ticker":"AAPL","action":"buy","extras":{"x":1e5000,"y":-1E400,"z":1e1000000}}')
    assert isinstance(s, Signal)
    echo = s.echo()
    json.dumps(echo, allow_nan=False)
    assert echo["extras"]["z"] == "1E+1000000"


def test_thousands_separators_and_percentages_of_equity() -> None:
    assert ok(base(quantity="1,000")).quantity == 1000
    assert ok(base(quantity="12,345.5")).quantity == Decimal("12345.5")
    # More than all the equity is margin the account may have: its buying power decides.
    leveraged = ok(base(quantity=150, quantityType="percent_of_equity"))
    assert leveraged.quantity == 150


def test_extended_hours_is_a_limit_day_order_in_a_stock() -> None:
    signal = parse_object(base(extendedHours=True, orderType="limit", limitPrice=190))
    assert isinstance(signal, Signal) and signal.extended_hours
    again = Signal.from_record(signal.to_record())
    assert again.extended_hours and signal.echo()["extendedHours"] is True
    plain = parse_object(base(extendedHours=False))
    assert isinstance(plain, Signal) and not plain.extended_hours
    assert "extendedHours" not in plain.echo()
    # A cancel has no order to send in extended hours: the flag means nothing there.
    cancel = parse_object({"ticker": "AAPL", "action": "cancel", "extendedHours": True})
    assert isinstance(cancel, Signal) and not cancel.extended_hours


@pytest.mark.parametrize(
    ("text", "what", "parsed", "canonical"),
    [
        ("5%", "take_profit", TakeProfit(percent=Decimal(5)), "5%"),
        ("$2.5", "take_profit", TakeProfit(amount=Decimal("2.5")), "2.50"),
        (" 1.50 ", "stop_loss", StopLoss(amount=Decimal("1.50")), "1.50"),
        (
            "Trail 2.50%",
            "stop_loss",
            StopLoss(StopLossType.TRAILING_STOP, trail_percent=Decimal("2.50")),
            "trail 2.5%",
        ),
    ],
)
def test_a_subscriptions_default_exit_is_read_as_typed(
    text: str, what: str, parsed: Any, canonical: str
) -> None:
    exit_ = exit_default(text, what)
    assert exit_ == parsed
    assert exit_default_text(exit_) == canonical


@pytest.mark.parametrize(
    ("text", "what"),
    [("trail 2%", "take_profit"), ("100%", "stop_loss"), ("0", "take_profit"), ("x", "stop_loss")],
)
def test_a_default_exit_that_cannot_be_read_says_how_to_write_it(text: str, what: str) -> None:
    with pytest.raises(ValueError, match="is a distance from the entry price"):
        exit_default(text, what)


@pytest.mark.parametrize(("word", "tif"), [("opg", TimeInForce.OPG), ("CLS", TimeInForce.CLS)])
def test_auction_orders_are_read(word: str, tif: TimeInForce) -> None:
    s = ok(base(timeInForce=word, orderType="limit", limitPrice=190))
    assert s.time_in_force is tif
    assert Signal.from_record(s.to_record()) == s


def test_a_trailing_stop_loss_with_null_fixed_prices_is_accepted() -> None:
    """A null field counts as absent everywhere else in the format; before, a trailing stop
    loss with "stopPrice": null was refused as having a fixed price."""
    from bot import signal_format

    parsed = signal_format.parse_object(
        {
            "ticker": "AAPL",
            "action": "buy",
            "stopLoss": {"type": "trailing_stop", "trailPercent": 2, "stopPrice": None},
        }
    )
    assert isinstance(parsed, signal_format.Signal), parsed


def test_true_and_false_may_be_quoted_in_every_flag() -> None:
    """Before: "test": "true" and "cancel": "true" were taken, while "extendedHours": "true"
    and "ignoreTradingWindows": "true" were refused."""
    from bot import signal_format

    parsed = signal_format.parse_object(
        {
            "ticker": "AAPL",
            "action": "buy",
            "orderType": "limit",
            "limitPrice": 150,
            "extendedHours": "true",
            "ignoreTradingWindows": "TRUE",
        }
    )
    assert isinstance(parsed, signal_format.Signal), parsed
    assert parsed.extended_hours and parsed.ignore_trading_windows
    off = signal_format.parse_object({"ticker": "AAPL", "action": "buy", "extendedHours": "false"})
    assert isinstance(off, signal_format.Signal) and not off.extended_hours
