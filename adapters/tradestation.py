"""TradeStation Web API v3 (OAuth via Auth0).

Vendor traits this module handles:

- One token serves two hosts: LIVE (api.tradestation.com) and SIM (sim-api.tradestation.com);
  SIM accounts are the paper environment. Futures trade only in a separate Futures account.
- Money and quantities are strings; order statuses are three-letter codes.
- Business rejections come back as HTTP 200 with ``Errors[{"Error": "FAILED", "Message":
  "Order failed. Reason: ..."}]``; HTTP errors carry ``{"Error": ..., "Message": ...}``.
- Equities need opening/closing trade actions (BUY, SELL, SELLSHORT, BUYTOCOVER), decided here
  from the current position; futures take BUY/SELL.
- ``OrderConfirmID`` (<= 22 chars) is the vendor's idempotency key: a second order with the same
  id is refused. Orders returned by the API do NOT carry it, so finding an order by our client
  order id matches the order's content (account, symbol, side, quantity, type, prices) within
  a time window after the submission, using a journal of what this process sent or, in a
  process that did not send it (after a restart), the ``SubmissionHint`` the caller kept.
- Extended hours are a duration, not a flag: DYP ("Day Plus", a day order that also works in
  the pre- and post-market); GCP and GDP are the GTC and GTD counterparts, read back as such.
- Auction orders are durations too: OPG ("At the opening; only valid for listed stocks") is our
  opg, CLO ("On Close") our cls. Futures take neither.
- Order history is two endpoints: today's and open orders (``/orders``) and earlier closed
  orders (``/historicalorders``, ``since`` at most 90 days back).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, unquote

import aiohttp

from adapters import symbols
from adapters.base import (
    AdapterContext,
    AllReady,
    Capabilities,
    HttpBrokerAdapter,
    HttpResponse,
    OAuthSpec,
    RateLimit,
    dec,
)
from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerError,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    MarketClosed,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotReplaceable,
    OrderStateUnknown,
    SymbolNotFound,
)
from adapters.models import (
    AUCTIONS,
    Account,
    AccountRef,
    AccountType,
    AssetClass,
    Balance,
    Environment,
    Order,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Side,
    SubmissionHint,
    TimeInForce,
    mask_account,
)
from adapters.paper.engine import unit_requirement
from adapters.registry import register

log = logging.getLogger("tradecord.adapters.tradestation")

ZERO = Decimal(0)
AUDIENCE = "https://api.tradestation.com"
HISTORY_DAYS = 89  # the vendor allows 90; one day of margin for time zones
PAGE_SIZE = 600
STREAM_READ_TIMEOUT = 30.0  # the vendor sends a heartbeat every 5 s on an idle stream
STREAM_CONTENT_TYPE = "application/vnd.tradestation.streams.v3+json"
CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9]{1,22}$")
# How far an order's OpenedDateTime may sit from our submission time and still be ours.
MATCH_BEFORE = timedelta(minutes=2)
MATCH_AFTER = timedelta(minutes=15)

# The vendor's status table (HistoricalStatus in the v3 OpenAPI): Open / Canceled / Rejected /
# Filled categories, with what each code means.
OPEN_CODES = (
    "ACK",
    "ASS",
    "BRC",
    "BRF",
    "BRO",
    "CHG",
    "CND",
    "COR",
    "DIS",
    "DOA",
    "DON",
    "ECN",
    "EXE",
    "FPR",
    "LAT",
    "OPN",
    "OSO",
    "OTHER",
    "PLA",
    "REC",
    "RJC",
    "RPD",
    "RSN",
    "STP",
    "STT",
    "SUS",
    "UCN",
)
CANCELED_CODES = ("CAN", "EXP", "OUT", "RJR", "SCN", "TSC", "UCH")
# Open codes of an order whose earlier change is still being carried out ("Replace Sent",
# "Replace Pending"): another change must wait for it.
REPLACING_CODES = frozenset({"RSN", "RPD"})
# "Cancel Sent": UCN, and CSN, its deprecated twin.
CANCEL_SENT_CODES = frozenset({"UCN", "CSN"})
STATUS_MAP: dict[str, OrderStatus] = {
    **{c: OrderStatus.OPEN for c in OPEN_CODES},
    # Open-category codes of an order TradeStation holds but that does not work yet, as
    # Alpaca's accepted / held / suspended: "Received", "Sending", "Queued" (a bracket's exits
    # until their entry fills), "Suspended".
    "ACK": OrderStatus.PENDING,
    "PLA": OrderStatus.PENDING,
    "DON": OrderStatus.PENDING,
    "SUS": OrderStatus.PENDING,
    "FPR": OrderStatus.PARTIALLY_FILLED,  # "Partial Fill (Alive)"
    # "~CSN - Cancel Sent~ (Deprecated)", an Open code as UCN: older orders may still carry it.
    "CSN": OrderStatus.OPEN,
    **{c: OrderStatus.CANCELLED for c in CANCELED_CODES},
    "EXP": OrderStatus.EXPIRED,  # a cancel category code, but our model names it
    # "Replaced": filed under Canceled, but nothing the member meant was cancelled; another
    # order now works in its place (which one the vendor's order does not say).
    "UCH": OrderStatus.REPLACED,
    "REJ": OrderStatus.REJECTED,
    "FLL": OrderStatus.FILLED,
    # "Partial Fill (UROut)": filed under Filled, but only part filled and the rest is out
    # (UROut, a Canceled code): map_order makes it CANCELLED unless everything filled.
    "FLP": OrderStatus.FILLED,
}
ACCOUNT_TYPES = {
    "Cash": AccountType.CASH,
    "Margin": AccountType.MARGIN,
    "Futures": AccountType.FUTURES,
    "DVP": AccountType.CASH,
    "Crypto": AccountType.CRYPTO,
}
VENDOR_ORDER_TYPE = {
    OrderType.MARKET: "Market",
    OrderType.LIMIT: "Limit",
    OrderType.STOP: "StopMarket",
    OrderType.STOP_LIMIT: "StopLimit",
    # A StopMarket with AdvancedOptions.TrailingStop; the order then carries TrailingStop.
    OrderType.TRAILING_STOP: "StopMarket",
}
ORDER_TYPE_OF = {v: k for k, v in VENDOR_ORDER_TYPE.items() if k is not OrderType.TRAILING_STOP}
DURATION = {
    TimeInForce.DAY: "DAY",
    TimeInForce.GTC: "GTC",
    TimeInForce.IOC: "IOC",
    TimeInForce.FOK: "FOK",
    TimeInForce.OPG: "OPG",
    TimeInForce.CLS: "CLO",
}
TIF_OF = {
    "DAY": TimeInForce.DAY,
    "DYP": TimeInForce.DAY,
    "OPG": TimeInForce.OPG,
    "CLO": TimeInForce.CLS,
    "1": TimeInForce.DAY,
    "3": TimeInForce.DAY,
    "5": TimeInForce.DAY,
    "GTC": TimeInForce.GTC,
    "GCP": TimeInForce.GTC,
    "GTD": TimeInForce.GTC,
    "GDP": TimeInForce.GTC,
    "IOC": TimeInForce.IOC,
    "FOK": TimeInForce.FOK,
    # The platform's own names for the "plus" durations. The v3 Order schema leaves Duration
    # free text (its examples say "DAY" and "Day"), so read them too should the API echo them.
    "DAY+": TimeInForce.DAY,
    "GTC+": TimeInForce.GTC,
    "GTD+": TimeInForce.GTC,
}
# The "plus" durations (v3 OpenAPI Duration): "DYP - Day Plus; valid until the end of the
# extended trading session", GCP/GDP the same for GTC/GTD. An extended-hours order is one.
EXTENDED_DURATION = {TimeInForce.DAY: "DYP", TimeInForce.GTC: "GCP"}
EXTENDED_CODES = frozenset({"DYP", "GCP", "GDP", "DAY+", "GTC+", "GTD+"})
AUCTION_CODES = frozenset({"OPG", "CLO"})
_ALL_TIF = frozenset(TimeInForce)
# OPG is "only valid for listed stocks" (v3 OpenAPI Duration); CLO targets a stock exchange's
# closing session too. Advertising them for futures would let a member pick what cannot work.
_FUTURES_TIF = _ALL_TIF - AUCTIONS
# Auction refusals: TradeStation does not publish its wording, so these look for the duration's
# name, or for what the sentence is about when the order sent was an auction order.
_AUCTION_NAMED = re.compile(r"\b(OPG|CLO)\b", re.IGNORECASE)
_AUCTION_TOPIC = re.compile(r"duration|auction|\bopening\b|\bclosing\b|on close|at the open", re.I)
_TOO_LATE = re.compile(
    r"too late|passed|after the (market )?(opens?|closes?)|before the (market )?(opens?|closes?)",
    re.IGNORECASE,
)


def vendor_symbol(symbol: str) -> str:
    """TradeStation writes continuous futures ``@ES``; members may type ``/ES``. A share class
    it writes BRK.B ("[Symbol root].[Stock class]", its stock symbology)."""
    s = symbols.share_class(symbol, ".")
    return "@" + s[1:] if s.startswith("/") else s


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _num(value: Decimal) -> str:
    """The vendor's number strings: ``10``, ``140.5`` (no exponent, no float)."""
    return format(value.normalize(), "f")


def _duration(o: dict[str, Any]) -> str:
    return str(o.get("Duration") or "").upper()


def map_status(code: str | None) -> OrderStatus:
    status = STATUS_MAP.get(str(code or "").upper())
    if status is None:
        log.warning("tradestation: unknown order status %r treated as open", code)
        return OrderStatus.OPEN
    return status


def rejection_error(message: str, sent: TimeInForce | None = None) -> BrokerError:
    """An ``Errors`` entry of an order response as our error, by the reason's wording;
    ``sent`` is the time in force of the order refused, where known."""
    reason = message.split("Reason:", 1)[1].strip() if "Reason:" in message else message.strip()
    low = reason.lower()
    if "buying power" in low:
        return InsufficientBuyingPower(
            f"TradeStation: not enough buying power for this order ({reason}) "
            "Lower the quantity, or check /balances.",
            vendor_code="FAILED",
        )
    auction = _auction_refused(reason, sent)
    if auction is not None:
        return InvalidOrder(_auction_message(auction, reason), vendor_code="FAILED")
    if "market is closed" in low or "market closed" in low or "trading hours" in low:
        return MarketClosed(
            f"TradeStation: {reason} Try again in trading hours, or use a GTC limit order.",
            vendor_code="FAILED",
        )
    if "account type" in low:
        return AssetClassNotSupported(
            f"TradeStation refused the order: {reason} At TradeStation, futures trade only in a "
            "Futures account and stocks in a Cash or Margin account; choose the right account "
            "for this connection in /accounts.",
            vendor_code="FAILED",
        )
    if "invalid symbol" in low or "unknown symbol" in low or "symbol not found" in low:
        return SymbolNotFound(
            f"TradeStation does not know that symbol ({reason}) Check the ticker; futures need "
            "a contract month such as ESZ25.",
            vendor_code="FAILED",
        )
    return InvalidOrder(f"TradeStation rejected the order: {reason}", vendor_code="FAILED")


def _auction_refused(reason: str, sent: TimeInForce | None) -> TimeInForce | None:
    """Which auction (opg, cls) a refusal is about: the one it names, else the one sent when
    the reason speaks of durations or auctions."""
    named = _AUCTION_NAMED.search(reason)
    if named:
        return TIF_OF[named[1].upper()]
    if sent in AUCTIONS and _AUCTION_TOPIC.search(reason):
        return sent
    return None


def _auction_message(tif: TimeInForce, reason: str) -> str:
    which = "opening" if tif is TimeInForce.OPG else "closing"
    before = "opens" if tif is TimeInForce.OPG else "closes"
    if _TOO_LATE.search(reason):
        return (
            f"Too late for today's {which} auction at TradeStation ({reason}) A {which}-auction "
            f"({tif.value}) order must be in before the market {before}: place it again once "
            f"today's sessions are over, for the next {which} auction, or use time in force day "
            "to trade in the regular session."
        )
    return (
        f"TradeStation refused this {which}-auction ({tif.value}) order: {reason} TradeStation "
        "takes opening and closing auction orders for listed stocks only, as market or limit "
        "orders."
    )


def _is_duplicate(message: str) -> bool:
    low = message.lower()
    return "duplicate" in low and "orderconfirmid" in low.replace(" ", "")


@dataclass
class Submission:
    """What this process sent under one client order id, to recognise the order later."""

    account_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: str  # vendor OrderType
    limit_price: Decimal | None
    stop_price: Decimal | None
    sent_at: datetime
    order_id: str | None = None
    trailing: bool = False  # a trailing stop and a plain stop are both StopMarket
    extended: bool = False  # sent with a "plus" duration (DYP)
    auction: str | None = None  # sent with an auction duration: OPG or CLO

    def matches(self, o: dict[str, Any]) -> bool:
        leg = (o.get("Legs") or [{}])[0]
        opened = _ts(o.get("OpenedDateTime"))
        duration = _duration(o)
        return (
            o.get("AccountID") == self.account_id
            and str(leg.get("Symbol", "")).upper() == self.symbol
            and _leg_side(leg) is self.side
            and dec(leg.get("QuantityOrdered"), ZERO) == self.quantity
            and o.get("OrderType") == self.order_type
            and (self.limit_price is None or dec(o.get("LimitPrice")) == self.limit_price)
            and (self.stop_price is None or dec(o.get("StopPrice")) == self.stop_price)
            and bool(o.get("TrailingStop")) == self.trailing
            # An extended or auction order and a regular twin are told apart by the duration;
            # a duration we do not know rules nothing out, as a miss would read as "not placed".
            and (duration not in TIF_OF or (duration in EXTENDED_CODES) == self.extended)
            and (duration not in TIF_OF or _auction_code(duration) == self.auction)
            and opened is not None
            and self.sent_at - MATCH_BEFORE <= opened <= self.sent_at + MATCH_AFTER
        )


class SubmissionJournal:
    """Process-wide, bounded. Keyed by (account id, client order id); also remembers which
    vendor order each client order id turned out to be."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], Submission] = OrderedDict()
        self._by_order: dict[str, str] = {}

    def record(self, account_id: str, client_order_id: str, sub: Submission) -> None:
        key = (account_id, client_order_id)
        self._items[key] = sub
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            _, old = self._items.popitem(last=False)
            if old.order_id:
                self._by_order.pop(old.order_id, None)

    def get(self, account_id: str, client_order_id: str) -> Submission | None:
        return self._items.get((account_id, client_order_id))

    def bind(self, account_id: str, client_order_id: str, order_id: str) -> None:
        sub = self._items.get((account_id, client_order_id))
        if sub is not None:
            sub.order_id = order_id
        self._by_order[order_id] = client_order_id

    def client_id_for(self, order_id: str) -> str | None:
        return self._by_order.get(order_id)

    def clear(self) -> None:
        self._items.clear()
        self._by_order.clear()


JOURNAL = SubmissionJournal()


def _auction_code(duration: str) -> str | None:
    return duration if duration in AUCTION_CODES else None


def _submission(account: AccountRef, request: OrderRequest, sent_at: datetime) -> Submission:
    return Submission(
        account.id,
        vendor_symbol(request.symbol),
        request.side,
        request.quantity,
        VENDOR_ORDER_TYPE[request.order_type],
        request.limit_price,
        request.stop_price,
        sent_at.astimezone(UTC),
        trailing=request.order_type is OrderType.TRAILING_STOP,
        extended=request.extended_hours,
        auction=DURATION[request.time_in_force] if request.time_in_force in AUCTIONS else None,
    )


def _leg_side(leg: dict[str, Any]) -> Side:
    # "Buy", "Sell", and in some payloads "SellShort"/"BuyToCover".
    return Side.BUY if str(leg.get("BuyOrSell", "")).lower().startswith("buy") else Side.SELL


def _asset_class(asset_type: str | None, symbol: str) -> AssetClass:
    kind = str(asset_type or "").upper()
    if kind.startswith("FUTURE") and "OPTION" not in kind:
        return AssetClass.FUTURE
    if "OPTION" in kind:
        return AssetClass.OPTION
    if kind == "STOCK":
        return AssetClass.EQUITY
    return symbols.asset_class_of(symbol)


_BRACKET_CLOSES = (
    "A take-profit/stop-loss bracket needs an order that opens a position; this one closes one."
)


def _trailing_stop(request: OrderRequest) -> dict[str, str]:
    """A trailing stop order's ``AdvancedOptions.TrailingStop``."""
    trail = _trail(request.trail_amount, request.trail_percent)
    if request.stop_price is not None or request.limit_price is not None:
        # TradeStation would ignore a StopPrice sent with a trailing stop; say so, not drop it.
        raise InvalidOrder(
            "A trailing stop at TradeStation sets its own stop price from the best price and "
            "fills at market: leave out the stop and limit prices."
        )
    return trail


def _trail(amount: Decimal | None, percent: Decimal | None) -> dict[str, str]:
    """``AdvancedOptions.TrailingStop``: an Amount or a Percent offset from the current price,
    mutually exclusive, as strings (the vendor's spec), for a trailing stop order or a
    bracket's trailing stop-loss alike."""
    if (amount is None) == (percent is None):
        raise InvalidOrder(
            "A trailing stop at TradeStation trails by an amount or by a percent: give exactly "
            "one of the two."
        )
    if amount is not None:
        if amount <= 0:
            raise InvalidOrder(f"The trail amount must be more than zero, not {_num(amount)}.")
        return {"Amount": _num(amount)}
    assert percent is not None
    if not 0 < percent < 100:  # 100% or more would put a sell's stop at zero or below
        raise InvalidOrder(
            f"The trail percent must be more than 0 and less than 100, not {_num(percent)}."
        )
    return {"Percent": _num(percent)}


def map_order(o: dict[str, Any]) -> Order:
    """``info`` keeps the vendor's order; a trailing stop's offset is its ``TrailingStop``
    and ``stop_price`` is where that stop stands now."""
    leg = (o.get("Legs") or [{}])[0]
    symbol = str(leg.get("Symbol", ""))
    filled = dec(leg.get("ExecQuantity"), ZERO) or ZERO
    order_id = str(o.get("OrderID", ""))
    order_type = ORDER_TYPE_OF.get(str(o.get("OrderType")), OrderType.MARKET)
    trail = o.get("TrailingStop") if isinstance(o.get("TrailingStop"), dict) else {}
    if trail:
        order_type = OrderType.TRAILING_STOP
    quantity = dec(leg.get("QuantityOrdered"), ZERO) or ZERO
    status = map_status(o.get("Status"))
    if filled > 0 and status in (OrderStatus.OPEN, OrderStatus.PENDING):
        status = OrderStatus.PARTIALLY_FILLED  # e.g. "Cancel Sent" after a partial fill
    elif str(o.get("Status")).upper() == "FLP" and filled < quantity:
        status = OrderStatus.CANCELLED  # told as "Cancelled after filling n of ..."
    return Order(
        id=order_id,
        account_id=str(o.get("AccountID", "")),
        symbol=symbol,
        side=_leg_side(leg),
        quantity=quantity,
        order_type=order_type,
        time_in_force=TIF_OF.get(_duration(o), TimeInForce.DAY),
        status=status,
        client_order_id=JOURNAL.client_id_for(order_id),
        asset_class=_asset_class(leg.get("AssetType"), symbol),
        limit_price=dec(o.get("LimitPrice")),
        stop_price=dec(o.get("StopPrice")),
        filled_quantity=filled,
        average_fill_price=dec(o.get("FilledPrice")) if filled else None,
        created_at=_ts(o.get("OpenedDateTime")),
        updated_at=_ts(o.get("ClosedDateTime")) or _ts(o.get("OpenedDateTime")),
        reject_reason=o.get("RejectReason") or None,
        cancel_pending=str(o.get("Status")).upper() in CANCEL_SENT_CODES,
        # The orders this one sends when it fills: a bracket's exits (its OSOs); on an exit,
        # its entry where named ("OSP (linked parent)"): the only link to it for a bracket
        # Tradecord did not place, so holds no record of.
        exit_ids=_related(o, "OSO"),
        parent_id=next(iter(_related(o, "OSP")), None),
        trail_amount=dec(trail.get("Amount")),
        trail_percent=dec(trail.get("Percent")),
        extended_hours=_duration(o) in EXTENDED_CODES,
        info=o,
    )


def _account_error(account: AccountRef, errors: list[dict[str, Any]] | None) -> BrokerError:
    entry = next((e for e in errors or [] if e.get("AccountID") == account.id), None)
    if entry is None and errors:
        entry = errors[0]
    message = str((entry or {}).get("Message", "no data returned"))
    code = (entry or {}).get("Error")
    if "account type" in message.lower():
        return BrokerError(
            f"TradeStation does not serve account {mask_account(account.id)} through its API "
            f"({message}) Choose a cash, margin or futures account for this connection in "
            "/accounts.",
            vendor_code=code,
        )
    return BrokerError(
        f"TradeStation refused the request for account {mask_account(account.id)}: {message}",
        vendor_code=code,
    )


def _equity_action(kind: AccountType, symbol: str, side: Side, qty: Decimal, held: Decimal) -> str:
    """A stock order's TradeAction, which opens or closes: one that would close the position
    and open the other side must be split (the preview refuses it before its card)."""
    if side is Side.BUY:
        if held >= 0:
            return "BUY"
        if qty > -held:
            raise InvalidOrder(
                f"You are short {_num(-held)} {symbol}; buying {_num(qty)} would cover and "
                "then go long, which TradeStation takes as two orders. Buy "
                f"{_num(-held)} to cover first, then buy the rest."
            )
        return "BUYTOCOVER"
    if held > 0:
        if qty > held:
            raise InvalidOrder(
                f"You hold {_num(held)} {symbol}; selling {_num(qty)} would close it and open "
                "a short, which TradeStation takes as two orders. Sell "
                f"{_num(held)} first, then sell short the rest."
            )
        return "SELL"
    if kind is AccountType.CASH:
        raise InvalidOrder(
            f"This cash account holds no {symbol} to sell, and cash accounts cannot sell "
            "short. Use a margin account to sell short."
        )
    return "SELLSHORT"


def _closing(order: Order) -> bool:
    """A working stock order that closes a position (SELL or BUYTOCOVER): TradeStation takes
    no more of it than the position. A queued exit is checked once its entry fills."""
    if order.asset_class is not AssetClass.EQUITY or order.status is OrderStatus.PENDING:
        return False
    leg = (order.info.get("Legs") or [{}])[0]
    return (
        str(leg.get("OpenOrClose", "")).lower() == "close"
        or str(leg.get("BuyOrSell", "")).lower() == "buytocover"
    )


def _check_closing_change(order: Order, change: OrderChange, held: Decimal) -> None:
    """Refuse raising a closing order past the position (``held``, signed), which would also
    open the other side: TradeStation takes that only as an order of its own."""
    if change.quantity is None or not _closing(order):
        return
    sell = order.side is Side.SELL
    position = max(held if sell else -held, ZERO)
    most = position + order.filled_quantity
    if change.quantity <= most:
        return
    verb, other = ("sell", "short") if sell else ("buy", "long")
    if not position:
        raise InvalidOrder(
            f"TradeStation cannot raise this {verb}: the {order.symbol} position it closes is "
            f"no longer there, so more would open a {other} position. Cancel it with /cancel, "
            "and place a new order with /trade."
        )
    have = f"you hold {_num(position)}" if sell else f"you are short {_num(position)}"
    raise InvalidOrder(
        f"TradeStation cannot raise this {verb} to {_num(change.quantity)}: {have} "
        f"{order.symbol}, and more would also open a {other} position, which TradeStation takes "
        f"only as an order of its own. Keep it at {_num(most)} or less, and place the {other} "
        "as a new order with /trade."
    )


def _related(o: dict[str, Any], relationship: str) -> tuple[str, ...]:
    return tuple(
        str(c["OrderID"])
        for c in o.get("ConditionalOrders") or ()
        if isinstance(c, dict)
        and str(c.get("Relationship", "")).upper() == relationship
        and c.get("OrderID")
    )


_END = object()


@register
class TradeStationAdapter(HttpBrokerAdapter):
    key = "tradestation"
    display_name = "TradeStation"
    finds_orders_by_content = True  # its orders carry no client order id of ours
    capabilities = Capabilities(
        asset_classes={
            AccountType.CASH: frozenset({AssetClass.EQUITY}),
            AccountType.MARGIN: frozenset({AssetClass.EQUITY}),
            AccountType.FUTURES: frozenset({AssetClass.FUTURE}),
            # Crypto accounts answer "Request not supported for account type." to the API.
            AccountType.CRYPTO: frozenset(),
        },
        order_types=frozenset(OrderType),
        # Equities also take the auction durations OPG and CLO (opg, cls); futures do not.
        time_in_force={AssetClass.EQUITY: _ALL_TIF, AssetClass.FUTURE: _FUTURES_TIF},
        fractional=frozenset(),
        brackets=True,
        # A StopMarket leg with AdvancedOptions.TrailingStop, as the vendor's OSO examples.
        bracket_trailing_stop=True,
        bracket_exits_gtc=True,  # _exits sends them GTC
        market_orders_when_closed=False,  # "Market is closed for …" while the exchange is shut
        environments=frozenset(Environment),
        quotes=True,
        order_stream=True,
        # PUT /orderexecution/orders/{id} takes Quantity, LimitPrice and StopPrice (and a
        # TrailingStop, or a change to Market, which OrderChange does not ask for).
        replace=frozenset({"quantity", "limit_price", "stop_price"}),
        # Duration DYP (Day Plus): stock limit day orders only (the base class checks that).
        extended_hours=True,
        rate_limits=(
            # Published per user per API key, each over a 5-minute window (quotes: 1 minute).
            RateLimit("accounts", 250, 300.0),
            RateLimit("balances", 250, 300.0),
            RateLimit("positions", 250, 300.0),
            RateLimit("orders", 250, 300.0),  # "Order Details"
            RateLimit("quotes", 30, 60.0),
        ),
    )
    oauth = OAuthSpec(
        authorize_url="https://signin.tradestation.com/authorize",
        token_url="https://signin.tradestation.com/oauth/token",  # noqa: S106 - a URL
        revoke_url="https://signin.tradestation.com/oauth/revoke",
        # "Making a Refresh Token revocation request will revoke ALL Refresh Tokens for that
        # API key": the whole grant of the login, other connections on it included.
        revokes_login=True,
        # openid is required, offline_access brings the refresh token; no scope moves money.
        scopes=("openid", "offline_access", "ReadAccount", "MarketData", "Trade"),
        # PKCE must be enabled per API key by TradeStation (TRADECORD_TRADESTATION_PKCE=true
        # once it is); keys are confidential clients either way.
        pkce=False,
        pkce_on_request=True,
        client_auth="client_secret_post",
        extra_authorize_params={"audience": AUDIENCE},
    )
    default_api_urls = {
        Environment.LIVE: "https://api.tradestation.com",
        Environment.PAPER: "https://sim-api.tradestation.com",
    }

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        # One contract's initial margin as TradeStation reported it (a position's
        # InitialRequirement over its quantity), by instrument, from positions read here.
        self._margins: dict[str, Decimal] = {}
        # Signed positions by account and symbol, read when open orders listed here include a
        # closing stock order: check_change (sync) holds a raise of one against them.
        self._held_when_listed: dict[str, dict[str, Decimal]] = {}

    def canonical_symbol(self, symbol: str) -> str:
        # As TradeStation writes it (@ES, BRK.B): the position read back is then the one the
        # order named. Bought as /MES, the position @MES was "no /MES" to /close, and a sell of
        # part of it was announced as opening a short.
        return vendor_symbol(symbol)

    def buying_power_required(self, request: OrderRequest, price: Decimal) -> Decimal:
        """A future takes initial margin, not its notional (an ES contract's ~$295k would
        refuse most futures accounts). TradeStation publishes no per-symbol margin outside an
        order confirmation, so: its own figure where a position in the contract was just read,
        else the rate Tradecord Paper charges; the broker's check at placement is final."""
        asset = request.asset_class or symbols.asset_class_of(request.symbol)
        if asset is not AssetClass.FUTURE:
            return super().buying_power_required(request, price)
        per = self._margins.get(symbols.instrument_key(request.symbol))
        if per is None:
            per = unit_requirement(asset, symbols.multiplier(request.symbol), price)
        return request.quantity * per

    # -- error translation ---------------------------------------------------------------

    def check_order(self, account: AccountRef, request: OrderRequest) -> None:
        super().check_order(account, request)
        self.check_stock_prices(request)

    def check_change(self, order: Order, change: OrderChange) -> None:
        super().check_change(order, change)
        held = self._held_when_listed.get(order.account_id)
        if held is not None:
            _check_closing_change(order, change, held.get(order.symbol.upper(), ZERO))

    def check_position(self, account: AccountRef, request: OrderRequest, held: Decimal) -> None:
        super().check_position(account, request, held)
        if (request.asset_class or symbols.asset_class_of(request.symbol)) is AssetClass.EQUITY:
            # What _trade_action refuses when sending, refused before the card instead.
            _equity_action(account.type, request.symbol, request.side, request.quantity, held)

    def vendor_error(self, resp: HttpResponse) -> BrokerError | None:
        body = resp.body if isinstance(resp.body, dict) else {}
        code = body.get("Error")
        message = str(body.get("Message") or code or "")
        if resp.status == 400:
            if "cannot be canceled" in message.lower() or "cannot be cancelled" in message.lower():
                return OrderNotCancelable(
                    f"TradeStation cannot cancel that order: {message}", vendor_code=code
                )
            return InvalidOrder(f"TradeStation rejected the request: {message}", vendor_code=code)
        if resp.status == 403:
            return AuthorizationExpired(
                f"TradeStation refused access ({message}). Re-link the connection with /connect "
                "and grant account, market data and trading access.",
                vendor_code=code,
            )
        if resp.status == 404 and resp.path.startswith("/v3/marketdata/"):
            # A quote or symbol lookup: the symbol is unknown, not an order.
            sym = unquote(resp.path.rstrip("/").rsplit("/", 1)[-1])
            return SymbolNotFound(
                f"TradeStation does not know the symbol {sym} ({message}). Check the ticker; "
                "futures need a contract month such as ESZ25, or the continuous @ES.",
                vendor_code=code,
            )
        if resp.status == 404:
            return OrderNotFound(
                f"TradeStation has no such order ({message}). It may belong to another "
                "account; see /orders.",
                vendor_code=code,
            )
        return None

    # -- helpers -------------------------------------------------------------------------

    async def _get(
        self,
        account: AccountRef,
        path: str,
        bucket: str,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        resp = await self.request(
            "GET", path, environment=account.environment, bucket=bucket, params=params
        )
        return resp.body if isinstance(resp.body, dict) else {}

    def _base(self, account: AccountRef) -> str:
        return f"/v3/brokerage/accounts/{quote(account.id, safe='')}"

    async def _paged(
        self,
        account: AccountRef,
        path: str,
        params: dict[str, Any],
        limit: int,
        page_size: int = PAGE_SIZE,
    ) -> list[dict[str, Any]]:
        """Follows ``NextToken`` until ``limit`` orders or the last page."""
        out: list[dict[str, Any]] = []
        query = {**params, "pageSize": min(page_size, max(1, limit))}
        while True:
            body = await self._get(account, path, "orders", query)
            self._raise_if_only_errors(account, body, "Orders")
            out.extend(body.get("Orders") or [])
            token = body.get("NextToken")
            if not token or len(out) >= limit:
                return out
            query = {**query, "nextToken": token}

    def _raise_if_only_errors(self, account: AccountRef, body: dict[str, Any], key: str) -> None:
        mine = [e for e in body.get("Errors") or [] if e.get("AccountID") == account.id]
        if mine and not body.get(key):
            raise _account_error(account, mine)

    # -- reads ---------------------------------------------------------------------------

    async def fetch_accounts(self) -> list[Account]:
        out: list[Account] = []
        for env in self.environments():
            resp = await self.request(
                "GET", "/v3/brokerage/accounts", environment=env, bucket="accounts"
            )
            body = resp.body if isinstance(resp.body, dict) else {}
            for a in body.get("Accounts") or []:
                kind = ACCOUNT_TYPES.get(str(a.get("AccountType")))
                if kind is None:
                    log.info("tradestation: skipping account type %r", a.get("AccountType"))
                    continue
                out.append(
                    Account(
                        id=str(a["AccountID"]),
                        type=kind,
                        environment=env,
                        currency=str(a.get("Currency") or "USD"),
                        status=str(a.get("Status") or "Active").lower(),
                        info=a,
                    )
                )
        return out

    async def fetch_balance(self, account: AccountRef) -> Balance:
        body, day_start = await asyncio.gather(
            self._get(account, f"{self._base(account)}/balances", "balances"),
            self._day_start_equity(account),
        )
        rows = [b for b in body.get("Balances") or [] if b.get("AccountID") == account.id]
        if not rows:
            raise _account_error(account, body.get("Errors"))
        b = rows[0]
        detail = b.get("BalanceDetail") or {}
        currency = ((b.get("CurrencyDetails") or [{}])[0]).get("Currency") or "USD"
        equity = dec(b.get("Equity"), ZERO) or ZERO
        return Balance(
            account_id=account.id,
            currency=str(currency),
            cash=dec(b.get("CashBalance"), ZERO) or ZERO,
            buying_power=dec(b.get("BuyingPower"), ZERO) or ZERO,
            equity=equity,
            market_value=dec(b.get("MarketValue"), ZERO) or ZERO,
            unrealized_pnl=dec(detail.get("UnrealizedProfitLoss")),
            realized_pnl=dec(detail.get("RealizedProfitLoss")),
            # Balances' own TodaysProfitLoss is "unrealized ... of all open positions": what
            # closed today is not in it. The change from the day's starting equity is.
            day_pnl=equity - day_start if day_start is not None else None,
            # A futures account's BalanceDetail [spec Balances example, Futures].
            initial_margin=dec(detail.get("InitialMargin")),
            maintenance_margin=dec(detail.get("MaintenanceMargin")),
            info=b,
        )

    async def _day_start_equity(self, account: AccountRef) -> Decimal | None:
        """ "The total amount of equity with which you started the current trading day"
        [spec BODBalanceDetail]; None when it cannot be read: the balances show without it."""
        try:
            body = await self._get(account, f"{self._base(account)}/bodbalances", "balances")
        except BrokerError as e:
            log.info("tradestation: no beginning-of-day balance: %s", type(e).__name__)
            return None
        rows = [b for b in body.get("BODBalances") or [] if b.get("AccountID") == account.id]
        return dec((rows[0].get("BalanceDetail") or {}).get("Equity")) if rows else None

    async def _positions(
        self,
        account: AccountRef,
        symbol: str | None = None,
    ) -> list[dict[str, Any]]:
        params = {"symbol": symbol} if symbol else None
        body = await self._get(account, f"{self._base(account)}/positions", "positions", params)
        self._raise_if_only_errors(account, body, "Positions")
        return [p for p in body.get("Positions") or [] if p.get("AccountID") == account.id]

    async def fetch_positions(self, account: AccountRef) -> list[Position]:
        out = []
        for p in await self._positions(account):
            symbol = str(p.get("Symbol", ""))
            qty = dec(p.get("Quantity"), ZERO) or ZERO
            if p.get("LongShort") == "Short" and qty > 0:
                qty = -qty
            asset = _asset_class(p.get("AssetType"), symbol)
            margin = dec(p.get("InitialRequirement"))
            if asset is AssetClass.FUTURE and margin and qty:
                self._margins[symbols.instrument_key(symbol)] = margin / abs(qty)
            out.append(
                Position(
                    symbol=symbol,
                    asset_class=asset,
                    quantity=qty,
                    average_price=dec(p.get("AveragePrice"), ZERO) or ZERO,
                    market_price=dec(p.get("Last")),
                    market_value=dec(p.get("MarketValue")),
                    cost_basis=dec(p.get("TotalCost")),
                    unrealized_pnl=dec(p.get("UnrealizedProfitLoss")),
                    multiplier=symbols.multiplier(symbol),
                    info=p,
                )
            )
        return out

    async def _todays_orders(self, account: AccountRef) -> list[dict[str, Any]]:
        """Open orders and today's closed ones (the vendor caps an unpaged answer at 600)."""
        return await self._paged(account, f"{self._base(account)}/orders", {}, 10 * PAGE_SIZE)

    async def fetch_open_orders(self, account: AccountRef) -> list[Order]:
        orders = [map_order(o) for o in await self._todays_orders(account)]
        mine = [o for o in orders if not o.status.is_final and o.account_id == account.id]
        if any(_closing(o) for o in mine):
            try:
                positions = await self.fetch_positions(account)
            except BrokerError as e:
                log.info("tradestation: no positions beside open orders: %s", type(e).__name__)
            else:
                self._held_when_listed[account.id] = {
                    p.symbol.upper(): p.quantity for p in positions
                }
        return sorted(
            mine, key=lambda o: o.created_at or datetime.min.replace(tzinfo=UTC), reverse=True
        )

    def _history_since(self, since: datetime | None) -> date:
        earliest = datetime.now(UTC).date() - timedelta(days=HISTORY_DAYS)
        if since is None:
            return earliest
        return max(earliest, since.astimezone(UTC).date())

    async def fetch_orders(
        self,
        account: AccountRef,
        *,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[Order]:
        """Closed orders, newest first: today's from ``/orders`` plus earlier ones from
        ``/historicalorders`` (which the vendor limits to 90 days back)."""
        today = [
            o for o in await self._todays_orders(account) if map_status(o.get("Status")).is_final
        ]
        older = await self._paged(
            account,
            f"{self._base(account)}/historicalorders",
            {"since": self._history_since(since).isoformat()},
            limit,
        )
        seen: set[str] = set()
        out: list[Order] = []
        for raw in today + older:
            order = map_order(raw)
            if order.id in seen or order.account_id != account.id:
                continue
            seen.add(order.id)
            if since is not None and order.updated_at is not None and order.updated_at < since:
                continue
            out.append(order)
        out.sort(key=lambda o: o.updated_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return out[:limit]

    async def _fetch_order_by_id(self, account: AccountRef, order_id: str) -> Order:
        oid = quote(order_id, safe="")
        body = await self._get(account, f"{self._base(account)}/orders/{oid}", "orders")
        for o in body.get("Orders") or []:
            if str(o.get("OrderID")) == order_id:
                return map_order(o)
        body = await self._get(
            account,
            f"{self._base(account)}/historicalorders/{oid}",
            "orders",
            {"since": self._history_since(None).isoformat()},
        )
        for o in body.get("Orders") or []:
            if str(o.get("OrderID")) == order_id:
                return map_order(o)
        raise OrderNotFound(
            f"TradeStation has no order {order_id} in account {mask_account(account.id)} "
            "in the last 90 days."
        )

    async def _fetch_order_by_client_id(
        self,
        account: AccountRef,
        client_order_id: str,
        hint: SubmissionHint | None = None,
    ) -> Order:
        sub = JOURNAL.get(account.id, client_order_id)
        if sub is None and hint is not None:
            # Sent by another process (e.g. before a restart): recognise it by what was sent.
            sub = _submission(account, hint.request, hint.sent_at)
            JOURNAL.record(account.id, client_order_id, sub)
        if sub is None:
            raise OrderStateUnknown(
                "TradeStation orders do not carry our order reference, and this process has no "
                "record of sending it, so we cannot tell whether it reached TradeStation. "
                "We will not resend it; check /orders."
            )
        if sub.order_id is not None:
            return await self._fetch_order_by_id(account, sub.order_id)
        candidates = await self._todays_orders(account)
        if sub.sent_at.date() < datetime.now(UTC).date():
            candidates += await self._paged(
                account,
                f"{self._base(account)}/historicalorders",
                {"since": self._history_since(sub.sent_at - timedelta(days=1)).isoformat()},
                10 * PAGE_SIZE,
            )
        # Orders bound to another intent, by this process's journal or by the caller (the
        # database knows them when this process does not: after a restart, or elsewhere).
        claimed = hint.claimed if hint is not None else frozenset()
        matched: dict[str, dict[str, Any]] = {}
        for o in candidates:
            oid = str(o.get("OrderID"))
            owner = JOURNAL.client_id_for(oid)
            if sub.matches(o) and owner in (None, client_order_id) and oid not in claimed:
                matched[oid] = o
        if not matched:
            raise OrderNotFound(
                f"TradeStation has no order matching {client_order_id} in account "
                f"{mask_account(account.id)}: it was not placed."
            )
        if len(matched) > 1:
            raise OrderStateUnknown(
                "TradeStation shows several identical orders placed at that moment and does not "
                "say which one is ours. We will not resend it; check /orders."
            )
        oid, raw = next(iter(matched.items()))
        JOURNAL.bind(account.id, client_order_id, oid)
        return map_order(raw)

    def remember_submission(
        self,
        account: AccountRef,
        request: OrderRequest,
        sent_at: datetime,
    ) -> None:
        """Teach the journal about an order sent by another process (e.g. before a restart),
        so ``fetch_order(client_order_id=...)`` can recognise it by content."""
        if not request.client_order_id:
            raise ValueError("the request has no client order id")
        JOURNAL.record(account.id, request.client_order_id, _submission(account, request, sent_at))

    async def fetch_quote(self, symbol: str) -> Quote:
        env = Environment.LIVE if Environment.LIVE in self.ctx.api_urls else Environment.PAPER
        sym = vendor_symbol(symbol)
        resp = await self.request(
            "GET", f"/v3/marketdata/quotes/{quote(sym, safe='@')}", environment=env, bucket="quotes"
        )
        body = resp.body if isinstance(resp.body, dict) else {}
        quotes = body.get("Quotes") or []
        if not quotes:
            raise SymbolNotFound(
                f"TradeStation does not know the symbol {sym}. Check the ticker; futures need a "
                "contract month such as ESZ25, or the continuous @ES."
            )
        q = quotes[0]
        return Quote(
            symbol=str(q.get("Symbol") or sym),
            bid=dec(q.get("Bid"), ZERO) or ZERO,
            ask=dec(q.get("Ask"), ZERO) or ZERO,
            last=dec(q.get("Last"), ZERO) or ZERO,
            time=_ts(q.get("TradeTime")) or datetime.now(UTC),
            info=q,
        )

    # -- writes --------------------------------------------------------------------------

    async def _held(self, account: AccountRef, symbol: str) -> Decimal:
        rows = await self._positions(account, symbol)
        return sum(
            (
                dec(p.get("Quantity"), ZERO) or ZERO
                for p in rows
                if str(p.get("Symbol", "")).upper() == symbol
            ),
            ZERO,
        )

    async def _trade_action(self, account: AccountRef, request: OrderRequest, symbol: str) -> str:
        """BUY/SELL for futures; for equities open or close according to the position."""
        if request.asset_class is AssetClass.FUTURE:
            if request.bracket is not None:
                # Futures have no opening or closing action, so TradeStation would start the
                # bracket's exits after a closing fill too: either exit would open a position.
                held = await self._held(account, symbol)
                if held * (1 if request.side is Side.BUY else -1) < 0:
                    raise InvalidOrder(_BRACKET_CLOSES)
            return "BUY" if request.side is Side.BUY else "SELL"
        held = await self._held(account, symbol)
        return _equity_action(account.type, symbol, request.side, request.quantity, held)

    def _order_body(
        self,
        account: AccountRef,
        symbol: str,
        action: str,
        quantity: Decimal,
        order_type: OrderType,
        tif: TimeInForce,
        limit: Decimal | None,
        stop: Decimal | None,
        extended: bool = False,
        trailing: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        duration = (EXTENDED_DURATION if extended else DURATION).get(tif)
        if duration is None:
            # Only DAY and GTC have a "plus" twin (the base check refuses the rest first).
            raise InvalidOrder(
                f"TradeStation takes extended-hours orders as day or gtc, not {tif.value}."
            )
        body: dict[str, Any] = {
            "AccountID": account.id,
            "Symbol": symbol,
            "Quantity": _num(quantity),
            "OrderType": VENDOR_ORDER_TYPE[order_type],
            "TradeAction": action,
            "TimeInForce": {"Duration": duration},
        }
        if symbols.asset_class_of(symbol) is not AssetClass.FUTURE:
            # "For Stocks and Options, Route value will default to Intelligent" [spec]: a
            # route of stocks' only; a future goes without one, to the exchange's default.
            body["Route"] = "Intelligent"
        if limit is not None:
            body["LimitPrice"] = _num(limit)
        if stop is not None:
            body["StopPrice"] = _num(stop)
        if trailing is not None:
            body["AdvancedOptions"] = {"TrailingStop": trailing}
        return body

    def _exits(
        self, account: AccountRef, request: OrderRequest, symbol: str, entry_action: str
    ) -> dict[str, Any]:
        """The bracket as the vendor's OSO: a BRK group of closing orders that start working
        when the entry fills."""
        assert request.bracket is not None
        b = request.bracket
        if entry_action not in ("BUY", "SELLSHORT", "SELL") or (
            entry_action == "SELL" and request.asset_class is not AssetClass.FUTURE
        ):
            raise InvalidOrder(_BRACKET_CLOSES)
        exit_action = {"BUY": "SELL", "SELLSHORT": "BUYTOCOVER", "SELL": "BUY"}[entry_action]
        legs = []
        if b.take_profit is not None:
            legs.append(
                self._order_body(
                    account,
                    symbol,
                    exit_action,
                    request.quantity,
                    OrderType.LIMIT,
                    TimeInForce.GTC,
                    b.take_profit,
                    None,
                )
            )
        if b.trailing:
            # The trail only: TradeStation sets the stop from the best price once the exit
            # works, and would ignore a StopPrice (b.stop_loss is where Tradecord expects it).
            legs.append(
                self._order_body(
                    account,
                    symbol,
                    exit_action,
                    request.quantity,
                    OrderType.TRAILING_STOP,
                    TimeInForce.GTC,
                    None,
                    None,
                    trailing=_trail(b.stop_loss_trail_amount, b.stop_loss_trail_percent),
                )
            )
        elif b.stop_loss is not None:
            kind = OrderType.STOP_LIMIT if b.stop_loss_limit is not None else OrderType.STOP
            legs.append(
                self._order_body(
                    account,
                    symbol,
                    exit_action,
                    request.quantity,
                    kind,
                    TimeInForce.GTC,
                    b.stop_loss_limit,
                    b.stop_loss,
                )
            )
        if not legs:
            raise InvalidOrder("A bracket needs a take-profit price, a stop-loss price, or both.")
        return {"Type": "BRK" if len(legs) > 1 else "NORMAL", "Orders": legs}

    async def _create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        cid = request.client_order_id
        if cid is not None and not CLIENT_ORDER_ID.match(cid):
            raise InvalidOrder(
                "TradeStation order references must be 1-22 letters or digits; this one is not."
            )
        kind = request.order_type
        if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) and request.limit_price is None:
            raise InvalidOrder("A limit order needs a limit price.")
        if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and request.stop_price is None:
            raise InvalidOrder("A stop order needs a stop price.")
        trailing = _trailing_stop(request) if kind is OrderType.TRAILING_STOP else None
        if trailing is None and (request.trail_amount, request.trail_percent) != (None, None):
            raise InvalidOrder(
                "A trail amount or percent is for trailing stops only; remove it or make the "
                "order a trailing stop."
            )
        symbol = vendor_symbol(request.symbol)
        action = await self._trade_action(account, request, symbol)
        body = self._order_body(
            account,
            symbol,
            action,
            request.quantity,
            request.order_type,
            request.time_in_force,
            request.limit_price,
            request.stop_price,
            request.extended_hours,
            trailing,
        )
        if cid is not None:
            body["OrderConfirmID"] = cid
        if request.bracket is not None:
            body["OSOs"] = [self._exits(account, request, symbol, action)]
        if cid is not None:
            JOURNAL.record(account.id, cid, _submission(account, request, datetime.now(UTC)))
        resp = await self.request(
            "POST",
            "/v3/orderexecution/orders",
            environment=account.environment,
            bucket="orderexecution",
            json_body=body,
            write=True,
        )
        answer = resp.body if isinstance(resp.body, dict) else {}
        placed = answer.get("Orders") or []
        errors = answer.get("Errors") or []
        if not placed:
            if not errors:
                raise OrderStateUnknown()
            err = errors[0]
            message = str(err.get("Message") or err.get("Error") or "")
            if cid is not None and _is_duplicate(message):
                return await self._existing(account, cid, err.get("OrderID"))
            if cid is not None and err.get("OrderID"):
                JOURNAL.bind(account.id, cid, str(err["OrderID"]))
            raise rejection_error(message, request.time_in_force)
        order_id = str(placed[0]["OrderID"])
        if cid is not None:
            JOURNAL.bind(account.id, cid, order_id)
        if errors:
            log.warning(
                "tradestation: order %s placed with errors: %s",
                order_id,
                [e.get("Message") for e in errors],
            )
        try:
            order = await self._fetch_order_by_id(account, order_id)
        except BrokerError:
            # Placed for sure; the read-back failing must not look like a failed order.
            order = Order(
                id=order_id,
                account_id=account.id,
                symbol=symbol,
                side=request.side,
                quantity=request.quantity,
                order_type=request.order_type,
                time_in_force=request.time_in_force,
                status=OrderStatus.PENDING,
                client_order_id=cid,
                asset_class=request.asset_class or AssetClass.EQUITY,
                limit_price=request.limit_price,
                stop_price=request.stop_price,
                created_at=datetime.now(UTC),
                extended_hours=request.extended_hours,
                info={"placement": answer},
            )
        order.client_order_id = cid
        if errors:
            order.info = {**order.info, "PlacementErrors": errors}
        return order

    async def _existing(self, account: AccountRef, cid: str, order_id: Any) -> Order:
        """A duplicate OrderConfirmID means the order already exists: answer with it."""
        if order_id:
            JOURNAL.bind(account.id, cid, str(order_id))
            order = await self._fetch_order_by_id(account, str(order_id))
            order.client_order_id = cid
            return order
        try:
            return await self._fetch_order_by_client_id(account, cid)
        except OrderNotFound as e:
            raise OrderStateUnknown(
                "TradeStation says this order was already sent but we cannot see it yet. "
                "We will not resend it; check /orders."
            ) from e

    async def cancel_order(self, account: AccountRef, order_id: str) -> None:
        try:
            # DELETE is safe to retry, so it goes through the read retry policy.
            await self.request(
                "DELETE",
                f"/v3/orderexecution/orders/{quote(order_id, safe='')}",
                environment=account.environment,
                bucket="orderexecution",
            )
        except OrderNotCancelable:
            # A retried DELETE finds its own earlier cancel done: that is success.
            order = await self._fetch_order_by_id(account, order_id)
            if order.status is OrderStatus.CANCELLED:
                return
            raise

    async def _replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        """``PUT /v3/orderexecution/orders/{id}`` with what changes. The vendor documents "a
        modified version of that order" and an answer naming one OrderID, no successor: the
        order that answer names (the same, we read) is read back as the one now working."""
        if str(order.info.get("Status", "")).upper() in REPLACING_CODES:
            raise OrderNotReplaceable(
                f"An earlier change of order {order.id[-8:]} is still being carried out at "
                "TradeStation: wait for it to land (see /orders), then try again."
            )
        if change.quantity is not None and change.quantity > order.quantity and _closing(order):
            try:
                held = await self._held(account, order.symbol.upper())
            except BrokerError as e:
                log.info("tradestation: no position to check a change by: %s", type(e).__name__)
            else:
                _check_closing_change(order, change, held)  # refused here, not sent
        body: dict[str, str] = {}
        if change.quantity is not None:
            body["Quantity"] = _num(change.quantity)
        if change.limit_price is not None:
            body["LimitPrice"] = _num(change.limit_price)
        if change.stop_price is not None:
            body["StopPrice"] = _num(change.stop_price)
        try:
            resp = await self.request(
                "PUT",
                f"/v3/orderexecution/orders/{quote(order.id, safe='')}",
                environment=account.environment,
                bucket="orderexecution",
                json_body=body,
                write=True,
            )
        except InvalidOrder as e:
            # How TradeStation words the refusal for an ended order is not published: the
            # order itself tells.
            ended = await self._not_replaceable(account, order.id)
            if ended is None:
                raise
            raise ended from e
        answer = resp.body if isinstance(resp.body, dict) else {}
        if answer.get("Error"):
            # A refusal in a 200 OrderResponse, as for new orders; the order works on unchanged.
            error = rejection_error(
                str(answer.get("Message") or answer["Error"]), order.time_in_force
            )
            ended = await self._not_replaceable(account, order.id)
            if ended is None:
                raise error
            raise ended from error
        new_id = str(answer.get("OrderID") or order.id)
        try:
            new = await self._fetch_order_by_id(account, new_id)
        except BrokerError:
            # Changed for sure; the read-back failing must not look like a failed change.
            return replace(
                order,
                quantity=change.quantity or order.quantity,
                limit_price=change.limit_price or order.limit_price,
                stop_price=change.stop_price or order.stop_price,
                info={**order.info, "Replace": answer},
            )
        if new.id == order.id:
            new.client_order_id = new.client_order_id or order.client_order_id
        else:
            new.replaces = order.id  # not what the vendor documents, but kept if it happens
        return new

    async def _not_replaceable(
        self, account: AccountRef, order_id: str
    ) -> OrderNotReplaceable | None:
        """Why TradeStation refused a change, when the order says: it has ended, or a cancel
        or change of it is still being carried out."""
        try:
            now = await self._fetch_order_by_id(account, order_id)
        except BrokerError:
            return None  # the vendor's own refusal says more than a failed read
        what = str(now.info.get("StatusDescription") or now.status.value).lower()
        if now.status.is_final:
            return OrderNotReplaceable(
                f"TradeStation cannot change order {order_id[-8:]}: it has ended ({what}). "
                "/orders shows what is still working."
            )
        if now.cancel_pending or str(now.info.get("Status", "")).upper() in REPLACING_CODES:
            return OrderNotReplaceable(
                f"TradeStation cannot change order {order_id[-8:]} now: a cancel or change of "
                f"it is still being carried out ({what})."
            )
        return None

    # -- the order stream ----------------------------------------------------------------

    async def stream_order_updates(
        self, accounts: list[AccountRef], *, ready: asyncio.Event | None = None
    ) -> AsyncIterator[OrderUpdate]:
        """Chunked JSON from ``/brokerage/stream/accounts/{ids}/orders`` per environment.
        Ends when any stream ends (GoAway or close) so the caller reconnects both. ``ready``
        is set once every environment's stream has been answered (200): each then sends a
        snapshot of its orders, so nothing from before is missed either."""
        by_env: dict[Environment, list[str]] = {}
        for a in accounts:
            if a.environment in self.ctx.api_urls:
                by_env.setdefault(a.environment, []).append(a.id)
        all_ready = AllReady(ready, by_env)
        if not by_env:
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._pump(env, ids, queue, all_ready.part(env)))
            for env, ids in by_env.items()
        ]
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(
        self,
        env: Environment,
        ids: list[str],
        queue: asyncio.Queue[Any],
        opened: Callable[[], None],
    ) -> None:
        fills: dict[str, tuple[Decimal, Decimal]] = {}  # order id -> (filled qty, filled value)
        try:
            async for obj in self._stream_objects(env, ids, opened):
                if "OrderID" in obj:
                    queue.put_nowait(self._update(obj, fills))
                elif obj.get("StreamStatus") == "GoAway":
                    log.info("tradestation: order stream GoAway on %s", env)
                    break
                elif "Error" in obj:
                    if obj.get("Error") == "Forbidden" and obj.get("AccountID"):
                        log.warning(
                            "tradestation: stream refused account %s: %s",
                            mask_account(str(obj["AccountID"])),
                            obj.get("Message"),
                        )
                        continue
                    raise BrokerUnavailable(
                        f"TradeStation's order stream failed ({obj.get('Error')}: "
                        f"{obj.get('Message')}).",
                        vendor_code=str(obj.get("Error")),
                    )
            queue.put_nowait(_END)
        except asyncio.CancelledError:
            raise
        except BrokerError as e:
            queue.put_nowait(e)
        except Exception as e:  # surfaced to the consumer, never swallowed
            queue.put_nowait(BrokerUnavailable("TradeStation's order stream broke."))
            log.warning("tradestation: order stream error %s", type(e).__name__)

    def _update(
        self,
        obj: dict[str, Any],
        fills: dict[str, tuple[Decimal, Decimal]],
    ) -> OrderUpdate:
        order = map_order(obj)
        prev_qty, prev_value = fills.get(order.id, (ZERO, ZERO))
        filled = order.filled_quantity
        at = order.updated_at
        if filled > prev_qty and order.average_fill_price is not None:
            value = filled * order.average_fill_price
            fills[order.id] = (filled, value)
            delta = filled - prev_qty
            return OrderUpdate(
                order=order,
                event="fill" if order.status is OrderStatus.FILLED else "partial_fill",
                execution_id=f"{order.id}:{_num(filled)}",
                fill_quantity=delta,
                fill_price=(value - prev_value) / delta,
                at=at,
            )
        event = {
            OrderStatus.CANCELLED: "canceled",
            OrderStatus.REJECTED: "rejected",
            OrderStatus.EXPIRED: "expired",
            OrderStatus.REPLACED: "replaced",
            OrderStatus.PENDING: "new",
            OrderStatus.OPEN: "new",
        }.get(order.status, "updated")
        return OrderUpdate(order=order, event=event, at=at)

    async def _stream_objects(
        self,
        env: Environment,
        ids: list[str],
        opened: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        base = self.ctx.api_urls[env].rstrip("/")
        url = f"{base}/v3/brokerage/stream/accounts/{quote(','.join(ids), safe=',')}/orders"
        assert self.ctx.session is not None and self.ctx.tokens is not None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.ctx.timeout, sock_read=STREAM_READ_TIMEOUT
        )
        refreshed = False
        while True:
            token = await self.ctx.tokens.access_token()
            headers = {
                "Accept": STREAM_CONTENT_TYPE,
                "User-Agent": "Tradecord/0.1",
                **self.auth_headers(token),
            }
            try:
                async with self.ctx.session.get(url, headers=headers, timeout=timeout) as r:
                    if r.status == 401 and not refreshed:
                        refreshed = True
                        await self.ctx.tokens.refresh(token)
                        continue
                    if r.status != 200:
                        raw = await r.read()
                        try:
                            body: Any = json.loads(raw)
                        except ValueError:
                            body = raw.decode(errors="replace")
                        raise self._error_for(
                            HttpResponse(r.status, r.headers, body, "GET", "/stream"), False
                        )
                    if opened is not None:
                        opened()
                    decoder = json.JSONDecoder()
                    # Chunks split anywhere, a character's UTF-8 bytes included ("–" in a
                    # status text): decoded as one stream, never chunk by chunk.
                    text = codecs.getincrementaldecoder("utf-8")()
                    buffer = ""
                    async for chunk in r.content.iter_any():
                        buffer += text.decode(chunk)
                        while True:
                            buffer = buffer.lstrip()
                            if not buffer:
                                break
                            try:
                                obj, end = decoder.raw_decode(buffer)
                            except ValueError:
                                break  # an incomplete object: wait for the next chunk
                            buffer = buffer[end:]
                            if isinstance(obj, dict):
                                yield obj
                    return
            except (TimeoutError, aiohttp.ClientError) as e:
                raise BrokerUnavailable(
                    "TradeStation's order stream dropped; it will reconnect."
                ) from e
