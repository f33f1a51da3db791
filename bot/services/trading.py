"""Trading: previews, order intents, submission that never duplicates, reconciliation.

No Discord here: slash commands and the webhook both call this service.

Life of an order:
  draft (preview shown) → pending (member confirmed; claimed atomically, so a double click or
  a second process cannot submit twice) → submitted (stored before the broker is called) →
  accepted / filled / rejected / failed, or unknown when the broker's answer was lost and a
  lookup by client order id could not settle it; the reconciler settles unknowns later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal, InvalidOperation, localcontext
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, overload

from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from adapters import symbols
from adapters.base import BrokerAdapter
from adapters.calendars import NEW_YORK
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
    OrderStateUnknown,
    RateLimited,
)
from adapters.models import (
    AUCTIONS,
    AccountRef,
    AssetClass,
    Balance,
    Bracket,
    Environment,
    ExtendedReach,
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
from adapters.paper.engine import closing_quantity
from adapters.paper.hours import FillHours, next_open
from adapters.registry import get_adapter_class
from bot.automation_models import Job, JobStatus, Strategy
from bot.db import lock_row, update_later
from bot.errors import (
    Conflict,
    InvalidInput,
    LimitReached,
    NotFound,
    PermissionDenied,
    TradecordError,
)
from bot.models import (
    AuditEvent,
    BracketExit,
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    IntentStatus,
    Member,
    OrderIntent,
    Switch,
    new_uuid,
)
from bot.services import audit
from bot.services.connections import Target
from bot.services.jobs import insert_ignoring
from bot.services.limits import (
    KILL_SWITCH,
    LIMIT_NAMES,
    Limits,
    describe_limit,
    server_limits,
    without_thousands,
)
from bot.services.notify import Outgoing
from bot.signal_format import MAX_NUMBER
from bot.wording import cents, money, plural, qty

if TYPE_CHECKING:
    from bot.core import Core
    from bot.db import Database

log = logging.getLogger("tradecord.trading")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

PREVIEW_TTL = timedelta(seconds=60)
SIMULATED_NOTE = "simulated prices"  # said by every message priced by the simulated feed
# The longest a send may take, all of it: an adapter may read first (Tradier and TradeStation
# read the positions before the POST), and its reads retry timeouts, 5xx and 429s, or wait on
# a token renewal. Past it the send is abandoned, in doubt, and looked up by client order id.
SEND_LIMIT = timedelta(seconds=20)
# A send that started this long ago has ended one way or the other: SEND_LIMIT, plus time for a
# broker to act on a POST it received as we gave up and for processes' clocks to disagree. A
# lookup that finds nothing then proves the order never arrived.
SEND_SETTLED_AFTER = SEND_LIMIT + timedelta(seconds=10)
# A confirmed order the process never sent (it stopped first) is sent by the reconciler only
# this long after its Confirm: later, the price the member agreed to is history.
PENDING_SEND_LIMIT = timedelta(minutes=5)
# The reconciler follows at most this many replacements of one order in one pass.
MAX_REPLACEMENTS = 20
# notified_status of an order whose update's DM failed for a while (Discord down or busy, the
# network): no state's "status:" prefix, so the next reconcile pass tells it (tell_untold).
UNDELIVERED = "undelivered"
STATUS_FROM_ORDER = {
    OrderStatus.PENDING: IntentStatus.ACCEPTED,
    OrderStatus.OPEN: IntentStatus.ACCEPTED,
    OrderStatus.PARTIALLY_FILLED: IntentStatus.PARTIALLY_FILLED,
    OrderStatus.FILLED: IntentStatus.FILLED,
    OrderStatus.CANCELLED: IntentStatus.CANCELLED,
    OrderStatus.REJECTED: IntentStatus.REJECTED,
    OrderStatus.EXPIRED: IntentStatus.EXPIRED,
}
# An intent's account is no longer its connection's (see ``TradingService.strand``).
ACCOUNT_CHANGED = "account-changed"
# An intent's order was replaced at the broker by one the broker does not name (TradeStation's
# "UCH"): it ended, but the member did not cancel it, and must not be told so.
REPLACED_UNFOLLOWED = "replaced-unfollowed"
NEEDS_LIMIT = {OrderType.LIMIT, OrderType.STOP_LIMIT}
NEEDS_STOP = {OrderType.STOP, OrderType.STOP_LIMIT}


# Orders sent today that count towards a daily notional limit: every one the broker may have.
NOT_COUNTED = frozenset({IntentStatus.FAILED, IntentStatus.REJECTED, IntentStatus.DISCARDED})
# Sent and not ended: an order on its way to the broker, in doubt, or working there.
SENT_UNFINISHED = (
    IntentStatus.SUBMITTED,
    IntentStatus.UNKNOWN,
    IntentStatus.ACCEPTED,
    IntentStatus.PARTIALLY_FILLED,
)
# Ended without filling all: what did not fill never will, so only the filled part counts.
ENDED_UNFILLED = frozenset({IntentStatus.CANCELLED, IntentStatus.EXPIRED})


# Ends whose audit event takes the broker's time: a partial fill's may be when the order
# opened (TradeStation's, until it closes).
ENDED_AT_BROKER = frozenset({IntentStatus.FILLED, IntentStatus.CANCELLED, IntentStatus.EXPIRED})
PHASES = {
    IntentStatus.FILLED: "order.filled",
    IntentStatus.REJECTED: "order.rejected",
    IntentStatus.CANCELLED: "order.cancelled",
    IntentStatus.EXPIRED: "order.expired",
    IntentStatus.PARTIALLY_FILLED: "order.partially_filled",
}
# In an intent's ``extra``: the broker orders it followed before its current one (replaced at
# the broker), each with what it filled, which still counts towards the intent.
REPLACED_ORDERS = "replaced_orders"
# What an applied update may change on an intent, copied back to the caller's object.
_FOLLOWED = (
    "status",
    "broker_order_id",
    "filled_quantity",
    "average_fill_price",
    "quantity",
    "limit_price",
    "stop_price",
    "order_type",
    "time_in_force",
    "extra",
    "error_code",
    "error_message",
    "updated_at",
)


def _followed(row: OrderIntent) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _FOLLOWED}


def _copy(intent: OrderIntent, stored: dict[str, Any]) -> None:
    for name, value in stored.items():
        setattr(intent, name, value)


def _replaced_orders(row: OrderIntent) -> dict[str, dict[str, str]]:
    return dict((row.extra or {}).get(REPLACED_ORDERS) or {})


def _value(order: Order) -> Decimal:
    return order.filled_quantity * (order.average_fill_price or Decimal(0))


def _with_earlier_fills(
    left: dict[str, dict[str, str]], order: Order | None
) -> tuple[Decimal, Decimal | None]:
    """Filled quantity and average price of the intent: its current order's fills plus those
    of the orders it replaced."""
    if order is not None and not left:
        return order.filled_quantity, order.average_fill_price
    filled = sum((Decimal(f["filled"]) for f in left.values()), Decimal(0))
    value = sum((Decimal(f["value"]) for f in left.values()), Decimal(0))
    if order is not None:
        filled += order.filled_quantity
        value += _value(order)
    return filled, (value / filled if filled else None)


def _record_replaced(
    s: AsyncSession, row: OrderIntent, old_id: str, new_id: str, old_filled: Decimal | None
) -> None:
    audit.record(
        s,
        "order.replaced",
        member_id=row.member_id,
        connection_id=row.connection_id,
        intent_id=row.id,
        replaced_order_id=old_id,
        broker_order_id=new_id,
        filled_quantity=old_filled,
    )


# /orders shows the last this many characters of an order's id (cogs/format.py), so members
# type them to /cancel order; the full id comes from its autocomplete.
SHOWN_ID_LENGTH = 8


def _open_order_id(typed: str, open_orders: dict[str, Order], target: Target) -> str:
    """The open order ``typed`` means: its exact id, or the end of one id at least as long as
    /orders shows (shorter fragments could too easily pick an order the member did not mean)."""
    typed = typed.strip()
    if typed in open_orders:
        return typed
    where = f"“{target.connection.name}” ({target.mode})"
    key = typed.casefold()
    matches = [
        oid
        for oid in open_orders
        if len(key) >= min(SHOWN_ID_LENGTH, len(oid)) and oid.casefold().endswith(key)
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = "; ".join(f"{order_text(open_orders[oid])}: id {oid}" for oid in matches)
        raise InvalidInput(
            f"Id {typed} matches {len(matches)} open orders on {where}: {choices}. Type the whole "
            "id of the one to cancel, or pick it from the list as you type."
        )
    raise NotFound(
        f"Order {typed} is not open on {where}. Type the Id /orders shows for it, or pick the "
        "order from the list as you type; /orders lists the open ones."
    )


def order_terms(
    order_type: OrderType,
    limit: Decimal | None,
    stop: Decimal | None,
    trail_amount: Decimal | None = None,
    trail_percent: Decimal | None = None,
) -> str:
    """The order type with its prices, named: "limit at $150.00", "stop limit (stop $148.00,
    limit $150.00)", "trailing stop (5% behind the best price)"; "market" alone."""
    if trail_amount is not None or trail_percent is not None:
        trail = (
            price_text(trail_amount)
            if trail_amount is not None
            else f"{qty(trail_percent or Decimal(0))}%"
        )
        return f"trailing stop ({trail} behind the best price)"
    kind = order_type.value.replace("_", " ")
    if limit is not None and stop is not None:
        return f"{kind} (stop {price_text(stop)}, limit {price_text(limit)})"
    at = limit if limit is not None else stop
    return f"{kind} at {price_text(at)}" if at is not None else kind


def order_terms_of(order: Order) -> str:
    return order_terms(
        order.order_type,
        order.limit_price,
        order.stop_price,
        order.trail_amount,
        order.trail_percent,
    )


def order_text(order: Order, bracket: Bracket | None = None) -> str:
    """An order as a member recognises it, its prices named: "buy 1 MSFT limit at $350.00",
    "sell 2 AAPL" at the market; "(2 filled)" when it filled in part. A bracket's exit says
    which it is ("the take-profit sell 1 AAPL limit at $210.00"); an entry that never filled
    names the exits of its ``bracket``, which end with it (they were to be placed on its fill)."""
    text = f"{order.side.value} {qty(order.quantity)} {order.symbol}"
    if order.order_type is not OrderType.MARKET:
        text += f" {order_terms_of(order)}"
    if order.parent_id is not None:
        text = f"the {exit_kind(order)} {text}"
    if order.filled_quantity:
        text += f" ({qty(order.filled_quantity)} filled)"
    elif bracket is not None and (exits := _exits_text(bracket)):
        text += f", with its exits ({exits})"
    return text


def _bracket_mates(wanted: list[str], open_orders: Mapping[str, Order]) -> list[str]:
    """The open orders of the brackets whose exits are in ``wanted`` (their entry, the other
    exit), not already in it."""
    parents = {
        o.parent_id for oid in wanted if (o := open_orders.get(oid)) and o.parent_id is not None
    }
    return [
        o.id
        for o in open_orders.values()
        if o.id not in wanted and (o.id in parents or o.parent_id in parents)
    ]


def exits_in_order(orders: Sequence[Order]) -> list[Order]:
    """``orders`` as the broker listed them, except that a bracket's exits are named together
    and always take-profit first, stop-loss second (brokers list them either way round)."""
    legs: dict[str, list[Order]] = {}
    for o in orders:
        if o.parent_id is not None:
            legs.setdefault(o.parent_id, []).append(o)
    out: list[Order] = []
    for o in orders:
        if o.parent_id is None:
            out.append(o)
        elif o.parent_id in legs:  # at the first exit of its bracket: all of them, in order
            out.extend(sorted(legs.pop(o.parent_id), key=lambda x: exit_kind(x) != "take-profit"))
    return out


def client_order_id(intent_id: str) -> str:
    """Deterministic and short enough for every broker (TradeStation allows 22 characters)."""
    return "tc" + hashlib.sha256(intent_id.encode()).hexdigest()[:20]


@dataclass(slots=True)
class OrderInput:
    """What a member or a signal asks for, as text, before validation."""

    symbol: str
    side: str
    quantity: str
    order_type: str = "market"
    limit_price: str | None = None
    stop_price: str | None = None
    time_in_force: str | None = None
    connection: str | None = None
    mode: str | None = None
    take_profit: str | None = None  # a bracket: exits placed once the order fills
    stop_loss: str | None = None
    trail_amount: str | None = None  # a trailing stop: one of these two
    trail_percent: str | None = None
    amount: str | None = None  # /trade: dollars to buy or sell for, instead of a quantity
    risk: str | None = None  # /trade: dollars to lose if the stop-loss fills, instead of one
    extended_hours: bool = False  # may also fill before the open and after the close
    trailing_stop_loss: str | None = None  # a bracket's stop-loss trailing by "1.50" or "2%"


@dataclass(slots=True)
class Preview:
    intent_id: str
    target: Target
    request: OrderRequest
    asset_class: AssetClass
    quote: Quote
    estimated_price: Decimal
    estimated_cost: Decimal  # notional: quantity × price × multiplier
    buying_power_required: Decimal  # what the broker holds back (futures: initial margin)
    buying_power: Decimal
    buying_power_after: Decimal
    position_quantity: Decimal
    broker_name: str
    expires_at: datetime
    market_opens_at: datetime | None = None  # placed while the exchange is shut: its open
    could_extend: bool = False  # extended hours would let it fill before market_opens_at
    extended_reach: ExtendedReach | None = None  # an extended order's one session, if so
    amount: Decimal | None = None  # the dollars the quantity was sized from (/trade amount)
    # An order that closes (part of) a position: the symbol's open orders, which keep working.
    working: list[Order] = field(default_factory=list)
    exits_follow: bool = False  # a bracket's exits are cut to what is left (Capabilities)
    exits_gtc: bool = False  # a bracket's exits are GTC whatever the entry's (Capabilities)
    already_closing: Decimal = Decimal(0)  # of the position, by older orders on this side
    price_type: str | None = None  # what a paper market order fills at (PriceType)
    risk: Decimal | None = None  # the dollars at risk it was sized from (/trade risk)

    @property
    def simulated(self) -> bool:
        return self.quote.simulated

    @property
    def loss_at_stop(self) -> Decimal | None:
        """What the order loses, from the estimated price, if its bracket's stop-loss fills."""
        b = self.request.bracket
        if b is None or b.stop_loss is None:
            return None
        per_unit = abs(self.estimated_price - b.stop_loss) * symbols.multiplier(self.request.symbol)
        return self.request.quantity * per_unit


HISTORY_LIMIT = 200  # /history's orders: a few pages, and one request at every broker


@dataclass(slots=True)
class Holdings:
    target: Target
    broker_name: str
    positions: list[Position]
    simulated: bool


@dataclass(slots=True)
class Portfolio(Holdings):
    balance: Balance


@dataclass(slots=True)
class Outcome:
    """What happened to a confirmed intent, for the member."""

    intent: OrderIntent
    order: Order | None
    message: str
    ok: bool
    simulated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Flattened:
    """What /flatten did: the orders it cancelled, one outcome per position it closed, and
    cancels the broker had not carried out (then no position was closed)."""

    target: Target
    cancelled: list[Order]
    closes: list[Outcome] = field(default_factory=list)
    not_cancelled: list[Order] = field(default_factory=list)
    not_closed: list[tuple[str, str]] = field(default_factory=list)  # symbol, why
    repeated: bool = False  # this confirmation was carried out already: nothing was done


@dataclass(frozen=True, slots=True)
class Refusal:
    """A pre-trade check that failed: nothing is sent; ``message`` is for the member."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class DailyCap:
    limit: Decimal
    strategy_id: str | None  # None: all the member's orders; else that strategy's entries
    what: str  # whose limit, for the member's message


@dataclass(slots=True)
class Gate:
    """Pre-trade checks passed so far: the order's notional (None when it could not be known
    and no limit needed it) and the daily limits left to check where the send is claimed."""

    notional: Decimal | None
    daily: list[DailyCap]
    # Only closes (part of) a position: no limit held it back, and no daily total counts it.
    closes: bool = False
    # A strategy entry's max positions, counted again where it is sent (signals._positions_cap).
    max_positions: dict[str, Any] | None = None

    @property
    def locked(self) -> bool:
        """Checked where the send is claimed, under the member's lock: what orders sent at the
        same moment (in any process) add up to."""
        return bool(self.daily) or self.max_positions is not None


def parse_decimal(text: str | None, what: str) -> Decimal | None:
    if text is None or str(text).strip() == "":
        return None
    raw = without_thousands(str(text).strip().removeprefix("$"), what)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(f"{what} must be a number, like 10 or 2.5 — “{text}” is not.") from None
    if not value.is_finite():
        raise InvalidInput(f"{what} must be a finite number.")
    return value


def _enum(enum: Any, text: str | None, what: str, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    try:
        return enum(text.strip().lower().replace("-", "_").replace(" ", "_"))
    except ValueError:
        options = ", ".join(e.value for e in enum)
        raise InvalidInput(f"{what} must be one of: {options}.") from None


@dataclass(frozen=True, slots=True)
class Origin:
    """What placed an order, said in the DMs about its later updates (a member with several
    strategies cannot tell them apart otherwise): ``head`` follows the DM's first words
    (" · **NQ breakout**"), ``tail`` ends it (where to read more)."""

    head: str = ""
    tail: str = ""
    # The run that placed it is still going, and its result (which reads the order again as
    # it ends) will say this state: a DM of its own would say it twice.
    run_tells: bool = False


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What ``cancel_open`` did: how many cancel requests the broker took, how many of those
    it had not carried out after ``cancel_wait`` seconds, and every order known to have ended,
    as the broker last reported it (one may have filled, in part, before its cancel landed or
    before it could be asked for)."""

    count: int
    unconfirmed: int
    ended: list[Order]
    # The intents of Tradecord's own orders among them, by broker order id.
    intents: dict[str, OrderIntent] = field(default_factory=dict)

    @property
    def brackets(self) -> dict[str, Bracket]:
        """The brackets of Tradecord's own orders among them, by broker order id: an entry's
        exits end with it if it never filled."""
        return _brackets(self.intents.values())


@dataclass(frozen=True, slots=True)
class Change:
    """A change of a working order: previewed (``after`` None), or made (``after``: the order
    working now, a new one where the broker's replace makes one)."""

    target: Target
    broker_name: str
    before: Order
    change: OrderChange
    after: Order | None = None
    quote: Quote | None = None  # at the preview, where the broker gives one
    # The position at the preview of a raised sell (negative: short), to say whether the
    # bigger order sells short; None when not read.
    held: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AtOnce:
    """A change whose new price meets the market: a stop moved past it triggers at once, a
    limit moved through it fills at once."""

    kind: str  # "stop" | "limit"
    price: Decimal  # the new price
    market: Decimal  # the ask for a buy, the bid for a sell


def meets_market(order: Order, change: OrderChange, quote: Quote) -> AtOnce | None:
    """Whether ``change`` makes ``order`` trigger or fill at ``quote`` (``stop_passed``'s rule
    for a stop; a limit at or through the ask for a buy, the bid for a sell)."""
    if change.stop_price is not None:
        moved = OrderRequest(
            order.symbol,
            order.side,
            order.quantity,
            order.order_type,
            order.time_in_force,
            stop_price=change.stop_price,
        )
        if (now := stop_passed(moved, quote)) is not None:
            return AtOnce("stop", change.stop_price, now)
    limit = change.limit_price
    if limit is not None and order.order_type is OrderType.LIMIT:
        now = _quote_price(quote, order.side)
        if now is not None and ((limit >= now) if order.side is Side.BUY else (limit <= now)):
            return AtOnce("limit", limit, now)
    return None


def change_of(quantity: str | None, limit_price: str | None, stop_price: str | None) -> OrderChange:
    """What /modify asks for, as numbers."""
    change = OrderChange(
        parse_decimal(quantity, "Quantity"),
        parse_decimal(limit_price, "Limit price"),
        parse_decimal(stop_price, "Stop price"),
    )
    if not change.fields():
        raise InvalidInput("Give what to change: a new quantity, limit_price or stop_price.")
    for value, name in (
        (change.quantity, "Quantity"),
        (change.limit_price, "Limit price"),
        (change.stop_price, "Stop price"),
    ):
        if value is not None and value >= MAX_NUMBER:
            raise InvalidInput(f"{name} is too large: it must be less than {MAX_NUMBER:,}.")
    return change


class TradingService:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        # A cancel request is only a request (Alpaca's pending_cancel, TradeStation's "Cancel
        # request sent"): how long an automation waits for it to land before ordering on.
        self.cancel_wait = 10.0
        # Called after a member was told of a change (the signals service posts channel alerts).
        self.listeners: list[Callable[[OrderIntent], Awaitable[None]]] = []
        # Called after a member was told that an exit of their bracket filled.
        self.exit_listeners: list[Callable[[OrderIntent, Order], Awaitable[None]]] = []
        # Set by the signal service: the strategy and signal a signal's order came from.
        self.origin_of: Callable[[OrderIntent], Awaitable[Origin | None]] | None = None
        # Intents this process is sending now. Its own reconciler leaves them alone whatever
        # the time (a busy event loop can fire SEND_LIMIT late); other processes rely on it.
        self._sending: set[str] = set()

    # -- validation and preview ---------------------------------------------------------

    def build_request(self, order: OrderInput, adapter: BrokerAdapter) -> OrderRequest:
        """Turn text into an order request, refusing anything a broker would misread."""
        if unknown := symbols.unknown_future(order.symbol or ""):
            raise InvalidInput(unknown)
        if not symbols.is_symbol(order.symbol or ""):
            raise InvalidInput(
                f"“{order.symbol}” is not a symbol. Use a ticker like AAPL, a future like "
                f"{symbols.example_contract()} or /ES, or a crypto pair like BTCUSD."
            )
        if symbols.asset_class_of(order.symbol or "") is AssetClass.OPTION:
            # Tradier lists option positions, so /close offers them; priced as shares, the card
            # was 100 times too low and the order went as a stock's.
            where = "at your broker" if adapter.key == "paper" else f"at {adapter.display_name}"
            raise InvalidInput(
                f"{symbols.normalize(order.symbol or '')} is an option, and Tradecord does not "
                f"trade options: trade, close or manage it {where} directly."
            )
        # Once, as the broker writes it: the position lookup, the intent and the order then all
        # name one instrument (BRK-B and BRK.B, BTC/USD and BTCUSD, @ES and /ES).
        symbol = adapter.canonical_symbol(order.symbol)
        side = _enum(Side, order.side, "Side")
        if side is None:
            raise InvalidInput("Side must be buy or sell.")
        quantity = parse_decimal(order.quantity, "Quantity")
        if quantity is None:
            raise InvalidInput("Quantity is required.")
        if quantity <= 0:
            sell = " To sell, use side:sell." if quantity < 0 and side is Side.BUY else ""
            raise InvalidInput(f"Quantity must be more than zero.{sell}")
        if quantity >= MAX_NUMBER:
            raise InvalidInput(f"Quantity is too large: it must be less than {MAX_NUMBER:,}.")
        # Zeros after the point say nothing: "1.0" is the whole number 1, "0.50" is 0.5. With
        # every digit typed kept: in 28 digits, 1.0000000000000000000000000001 would become 1.
        with localcontext(prec=max(28, len(quantity.as_tuple().digits))):
            if quantity == quantity.to_integral_value():
                quantity = quantity.quantize(Decimal(1))
            else:
                quantity = quantity.normalize()
        asset = symbols.asset_class_of(symbol)
        caps = adapter.capabilities
        max_decimals = caps.max_quantity_decimals(asset)
        decimals = max(0, -int(quantity.as_tuple().exponent))
        if decimals > max_decimals:
            if max_decimals == 0:
                raise InvalidInput(
                    f"{symbol} trades in whole units at {adapter.display_name}: "
                    f"use a whole number, not {quantity:f}."  # 0.0000001, not 1E-7
                )
            raise InvalidInput(f"Quantity can have at most {max_decimals} decimals for {symbol}.")
        order_type = _enum(OrderType, order.order_type, "Order type", OrderType.MARKET)
        limit = parse_decimal(order.limit_price, "Limit price")
        stop = parse_decimal(order.stop_price, "Stop price")
        if order_type in NEEDS_LIMIT and limit is None:
            raise InvalidInput(f"A {order_type.value.replace('_', '-')} order needs limit_price.")
        if order_type not in NEEDS_LIMIT and limit is not None:
            raise InvalidInput(
                f"limit_price only applies to limit and stop-limit orders; remove it or "
                f"use order_type:limit (this is a {order_type.value.replace('_', '-')} order)."
            )
        if order_type in NEEDS_STOP and stop is None:
            raise InvalidInput(f"A {order_type.value.replace('_', '-')} order needs stop_price.")
        if order_type not in NEEDS_STOP and stop is not None:
            raise InvalidInput(
                "stop_price only applies to stop and stop-limit orders; remove it or use "
                "order_type:stop."
            )
        take_profit = parse_decimal(order.take_profit, "Take-profit")
        stop_loss = parse_decimal(order.stop_loss, "Stop-loss")
        trail_amount = parse_decimal(order.trail_amount, "Trail amount")
        trail_percent = parse_decimal(order.trail_percent, "Trail percent")
        trails = order_type is OrderType.TRAILING_STOP
        if trails and trail_amount is None and trail_percent is None:
            raise InvalidInput(
                "A trailing stop needs how far it trails: add trail_amount (a price distance) "
                "or trail_percent."
            )
        if trails and trail_amount is not None and trail_percent is not None:
            raise InvalidInput(
                "A trailing stop takes trail_amount (a price distance) or trail_percent, not "
                "both: remove one."
            )
        if not trails and (trail_amount is not None or trail_percent is not None):
            raise InvalidInput(
                "trail_amount and trail_percent only apply to trailing-stop orders; remove them "
                "or use order_type:trailing_stop."
            )
        if trail_percent is not None and trail_percent >= 100:
            raise InvalidInput("trail_percent must be less than 100.")
        prices = (
            (limit, "limit_price"),
            (stop, "stop_price"),
            (take_profit, "take_profit"),
            (stop_loss, "stop_loss"),
            (trail_amount, "trail_amount"),
            (trail_percent, "trail_percent"),
        )
        for price, name in prices:
            if price is not None and price <= 0:
                raise InvalidInput(f"{name} must be more than zero.")
            if price is not None and price >= MAX_NUMBER:
                raise InvalidInput(f"{name} is too large: it must be less than {MAX_NUMBER:,}.")
        trailing = trailing_stop_loss_of(order)
        bracketed = take_profit is not None or stop_loss is not None or trailing != (None, None)
        # A bracket's exits take its time in force: a day order's protection would end with
        # the trading day, without a word, while the position is still held.
        default_tif = (
            TimeInForce.GTC if asset is AssetClass.CRYPTO or bracketed else TimeInForce.DAY
        )
        tif = _enum(TimeInForce, order.time_in_force, "Time in force", default_tif)
        bracket = None
        if trailing != (None, None) and stop_loss is not None:
            raise InvalidInput(
                "Give stop_loss (a fixed stop price) or trailing_stop_loss (a distance that "
                "follows the price), not both."
            )
        if bracketed:
            # A trailing stop-loss's start is set once the entry is priced (preview).
            bracket = Bracket(take_profit, stop_loss, None, *trailing)
        return OrderRequest(
            symbol=symbol,
            side=side,
            quantity=quantity,
            order_type=order_type,
            time_in_force=tif,
            limit_price=limit,
            stop_price=stop,
            asset_class=asset,
            bracket=bracket,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            extended_hours=order.extended_hours,
        )

    async def preview(
        self,
        discord_user_id: int,
        order: OrderInput,
        *,
        source: str = "discord",
        idempotency_key: str | None = None,
        closing: Position | None = None,
    ) -> Preview:
        """Validate, price, and store a draft intent the member can confirm for 60 seconds.
        ``closing``: the position it closes (/close): Confirm sends it only if it still only
        closes a position, and its result says what the position made."""
        amount = amount_of(order)
        risk = risk_of(order)
        target = await self.core.connections.resolve(discord_user_id, order.connection, order.mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            # Sized by dollars: checked as one unit until the quote gives the quantity.
            sized = amount is not None or risk is not None
            probe = dataclasses.replace(order, quantity="1") if sized else order
            request = self.build_request(probe, adapter)
            if amount is not None and request.asset_class is AssetClass.FUTURE:
                raise InvalidInput(
                    f"{request.symbol} trades in contracts: give quantity, the number of "
                    "contracts (amount is for stocks, ETFs and crypto)."
                )
            try:
                adapter.check_order(target.ref, request)
            except AssetClassNotSupported:
                # The classic mistake, told where it bites: name the connection that can. The
                # adapter's own advice ("choose that account for this connection") would be
                # refused: that account is the other connection's.
                asset = request.asset_class
                assert asset is not None
                hint = await self.core.connections.trading_instead(discord_user_id, target, asset)
                if hint:
                    fact = adapter.wrong_account_fact(target.ref, asset, request.symbol)
                    raise AssetClassNotSupported(fact + hint) from None
                raise
            # Three reads at once: at a real broker that is one round trip of waiting, not three.
            quote, buying_power, position = await all_or_first_error(
                adapter.fetch_quote(request.symbol),
                adapter.fetch_buying_power(target.ref, request.asset_class),
                adapter.fetch_position(target.ref, request.symbol),
            )
            check_stop_side(request, quote)
            price = estimate_price(request, quote)
            b = request.bracket
            if price is not None and b is not None and b.trailing and b.stop_loss is None:
                b.stop_loss = trailing_start(request, price)
            if price is not None:
                check_bracket_side(request, price)
                check_trail(request, price)
            if price is None:
                # Valued at 0 it would pass every notional limit and the buying-power check.
                no_quote = TradecordError(
                    f"{adapter.display_name} has no price for {request.symbol} right now (no "
                    "bid, ask or last trade), so this order's cost cannot be estimated; nothing "
                    "was prepared. Try again in a moment, or place a limit order."
                )
                no_quote.code = "no-quote"
                raise no_quote
            if amount is not None:
                request = sized_by_amount(request, amount, price, adapter)
                adapter.check_order(target.ref, request)  # fractions have rules of their own
            if risk is not None:
                request = sized_by_risk(request, risk, price, adapter)
                adapter.check_order(target.ref, request)
            # What the broker holds back, not the notional: futures take only initial margin.
            required = adapter.buying_power_required(request, price)
            assert request.asset_class is not None
            held = position.quantity if position is not None else Decimal(0)
            adapter.check_position(target.ref, request, held)
            working: list[Order] = []
            if closing is None and closing_quantity(held, request.side, request.quantity):
                # A resting stop or limit on the position may fill after this closes it.
                with contextlib.suppress(BrokerError, TimeoutError):
                    key = symbols.instrument_key(request.symbol)
                    listed = await adapter.fetch_open_orders(target.ref)
                    working = exits_in_order(
                        await self._parents(
                            target, [o for o in listed if symbols.instrument_key(o.symbol) == key]
                        )
                    )
                if position is not None and adapter.capabilities.open_sells_hold_shares:
                    # As /close: a sell of shares a bracket's exits hold is refused at Confirm.
                    await self._check_free_to_close(
                        target,
                        adapter.display_name,
                        position,
                        closing_quantity(held, request.side, request.quantity),
                        request.side,
                        working,
                    )
            if b is not None and closing_quantity(held, request.side, request.quantity):
                # Every broker refuses it when placed: its exits would add to the position.
                raise InvalidOrder(
                    "A take-profit/stop-loss bracket needs an order that opens a position, and "
                    f"this {request.side.value} closes (part of) your {qty(abs(held))} "
                    f"{request.symbol}. Close it without take_profit and stop_loss (or with "
                    "/close), then place the bracketed order."
                )
            mult = symbols.multiplier(request.symbol)
            cost = request.quantity * price * mult
            already = already_closing(
                working, request.side, follow=adapter.capabilities.exits_follow_position
            )
            after = buying_power_after(buying_power, request, held, required, already)
            # Below zero already (a price gap), an order that frees some (a close) still goes.
            if after < 0 and after < buying_power:
                # A flip needs only its opening part less what its closing part frees.
                what, lower = "this order", "Lower the quantity"
                if risk is not None:  # the member gave no quantity: say the one worked out
                    sized = f"{qty(request.quantity)} {request.symbol}"
                    what = f"risking {money(risk)} sizes it at {sized}, which"
                    lower = "Lower risk, or set the stop_loss farther from the price"
                elif amount is not None:
                    lower = "Lower the amount"
                raise InsufficientBuyingPower(
                    f"Not enough buying power: {what} needs about "
                    f"{money(buying_power - after)} and "
                    f"{target.connection.name} has {money(buying_power)}. "
                    f"{lower}, or check /balances."
                )
            intent = self._new_intent(
                target,
                request,
                source=source,
                idempotency_key=idempotency_key,
                status=IntentStatus.DRAFT,
                extra={
                    "estimated_price": str(price),
                    "estimated_cost": str(cost),
                    "simulated": quote.simulated,
                    # Closing (part of) a position: risk limits do not hold it back at submit.
                    "closes_position": reduces(request, held),
                    "bracket": bracket_json(request.bracket),
                    **(closing_extra(closing) if closing else {}),
                    **({"amount": str(amount)} if amount is not None else {}),
                    **({"risk": str(risk)} if risk is not None else {}),
                },
            )
            await self._check_early(intent, target, adapter)
            opens_at = None
            if adapter.keeps_exchange_hours():
                opens_at = await _market_opens_at(request.asset_class, self.clock())
            if (
                opens_at is not None
                and not adapter.capabilities.market_orders_when_closed
                and request.order_type is OrderType.MARKET
                and request.time_in_force not in AUCTIONS
            ):
                # The card would say it waits for the open, and Confirm would be refused.
                ny = opens_at.astimezone(NEW_YORK)
                raise MarketClosed(
                    f"The market is closed for {request.symbol} until {ny:%A} {ny.day} {ny:%B} "
                    f"at {ny:%H:%M} New York, and {adapter.display_name} does not take market "
                    "orders while it is closed, so nothing was prepared. Place a limit order "
                    "instead (/trade order_type:limit time_in_force:gtc: a GTC limit works from "
                    "the open until it fills), or try again once the market is open."
                )
            reach = adapter.extended_hours_reach() if request.extended_hours else None
            # Said on the card of a stock limit day order placed while the market is shut.
            could_extend = (
                opens_at is not None
                and adapter.capabilities.extended_hours
                and request.asset_class is AssetClass.EQUITY
                and request.order_type is OrderType.LIMIT
                and request.time_in_force is TimeInForce.DAY
                and request.bracket is None
                and not request.extended_hours
            )
        finally:
            await adapter.close()
        async with self.core.db.transaction() as s:
            _add_validated(s, intent)
        return Preview(
            intent_id=intent.id,
            target=target,
            request=request,
            asset_class=request.asset_class,
            quote=quote,
            estimated_price=price,
            estimated_cost=cost,
            buying_power_required=required,
            buying_power=buying_power,
            buying_power_after=after,
            position_quantity=held,
            broker_name=adapter.display_name,
            expires_at=intent.created_at + PREVIEW_TTL,
            market_opens_at=opens_at,
            could_extend=could_extend,
            extended_reach=reach,
            amount=amount,
            risk=risk,
            working=working,
            exits_follow=adapter.capabilities.exits_follow_position,
            exits_gtc=adapter.capabilities.bracket_exits_gtc,
            already_closing=already,
            price_type=adapter.market_price_type(),
        )

    async def close_preview(
        self,
        discord_user_id: int,
        symbol: str,
        quantity: str | None,
        connection: str | None,
        mode: str | None,
    ) -> tuple[Preview, list[Order]]:
        """/close: a market order for all of a position (or ``quantity`` of it), previewed as
        /trade previews, and the symbol's open orders, which keep working after it. The side
        comes from the position, so a close can never open the opposite one."""
        if unknown := symbols.unknown_future(symbol or ""):
            raise InvalidInput(unknown)
        if not symbols.is_symbol(symbol or ""):
            raise InvalidInput(
                f"“{symbol}” is not a symbol. Pick one of your positions from the list, or "
                "see them with /positions."
            )
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            canonical = adapter.canonical_symbol(symbol)
            position, orders = await all_or_first_error(
                adapter.fetch_position(target.ref, canonical),
                adapter.fetch_open_orders(target.ref),
            )
            already = Closing()
            if position is not None and position.quantity != 0:
                already = await self._closing_already(
                    None, target, adapter, position.symbol, orders
                )
        finally:
            await adapter.close()
        where = f"{target.connection.name} ({target.mode})"
        if position is None or position.quantity == 0:
            raise InvalidInput(
                f"You hold no {canonical} on {where}, so there is nothing to close. /positions "
                "shows what you hold; /trade opens a position."
            )
        held = abs(position.quantity)
        wanted = parse_decimal(quantity, "Quantity")
        if wanted is not None and wanted <= 0:
            raise InvalidInput(
                f"Quantity must be more than zero: how much of your {qty(held)} "
                f"{position.symbol} to close. Leave it out to close all of it."
            )
        if wanted is not None and wanted > held:
            raise InvalidInput(
                f"You hold {qty(held)} {position.symbol} {position.side} on {where}: /close "
                f"closes at most that. Leave quantity out to close all of it; to go "
                f"{'short' if position.quantity > 0 else 'long'} as well, use /trade."
            )
        if (wanted or held) > held - already.quantity:
            raise InvalidInput(
                "Nothing was prepared: "
                + closing_already_text(already, position.quantity, position.symbol)
            )
        side = Side.SELL if position.quantity > 0 else Side.BUY
        if adapter.capabilities.open_sells_hold_shares:
            await self._check_free_to_close(
                target, adapter.display_name, position, wanted or held, side, orders
            )
        preview = await self.preview(
            discord_user_id,
            OrderInput(
                position.symbol,
                side.value,
                str(held if wanted is None else wanted),
                connection=connection,
                mode=mode,
            ),
            closing=position,
        )
        return preview, [o for o in exits_in_order(orders) if o.symbol == position.symbol]

    async def _check_free_to_close(
        self,
        target: Target,
        broker: str,
        position: Position,
        closing: Decimal,
        side: Side,
        orders: Sequence[Order],
    ) -> None:
        """Refuse before the card a close the broker refuses for the shares other open orders
        hold (a bracket's exits: Confirm came back "0 AAPL can be sold now")."""
        key = symbols.instrument_key(position.symbol)
        same = await self._parents(
            target, [o for o in orders if symbols.instrument_key(o.symbol) == key]
        )
        holding = already_closing(same, side, follow=False)
        free = max(abs(position.quantity) - holding, Decimal(0))
        if closing > free:
            raise InvalidInput(
                f"Nothing was prepared: your open {position.symbol} orders hold "
                f"{qty(min(holding, abs(position.quantity)))} of your "
                f"{qty(abs(position.quantity))} (a bracket's take-profit and stop-loss count "
                f"once), and {broker} sells only what they leave free: {qty(free)}. Cancel or "
                "lower them first (/orders lists them; /cancel order, /modify)."
            )

    async def flatten_plan(
        self, discord_user_id: int, connection: str | None, mode: str | None
    ) -> tuple[Target, list[Position], list[Order]]:
        """What /flatten would do: the positions it closes and the open orders it cancels."""
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        await self._may_flatten(target)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            positions, orders = await all_or_first_error(
                adapter.fetch_positions(target.ref), adapter.fetch_open_orders(target.ref)
            )
        finally:
            await adapter.close()
        return target, [p for p in positions if p.quantity != 0], orders

    async def _may_flatten(self, target: Target) -> None:
        """Closing positions is trading: /flatten is refused, before anything is cancelled,
        while the kill switch is on (/cancel all still cancels). A pause lets it through: it
        only takes risk off."""
        gate = await self.stopped(target.connection.member_id, closing=True)
        if gate is not None:
            refused = LimitReached(
                gate.message.replace("nothing was sent", "nothing was cancelled or closed", 1)
                + " /cancel all cancels your open orders."
            )
            refused.code = gate.code
            raise refused

    async def flatten(
        self, discord_user_id: int, connection: str | None, mode: str | None, key: str
    ) -> Flattened:
        """Cancel every open order, then close every position at the market. The cancels come
        first: a take-profit or stop-loss still working would sell what the close sold. If a
        cancel is not carried out in time, no position is closed (nothing half-done). ``key``
        names the confirmation: pressed twice, it places each close once."""
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        async with self.core.db.session() as s:
            # A second press of one confirmation (in another process) must not cancel the
            # closes the first one placed and that still work.
            placed = await s.scalar(
                select(OrderIntent.id)
                .where(OrderIntent.idempotency_key.startswith(f"flatten:{key}:", autoescape=True))
                .limit(1)
            )
        if placed is not None:
            return Flattened(target, [], repeated=True)
        # Again: the kill switch may have flipped since the question.
        await self._may_flatten(target)
        target, cancelled = await self.cancel(discord_user_id, connection, mode)
        done = Flattened(target, cancelled)
        done.not_cancelled = [o for o in cancelled if not o.status.is_final]
        if done.not_cancelled:
            return done
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            closes: list[tuple[Position, OrderRequest]] = []
            for p in await adapter.fetch_positions(target.ref):
                if p.quantity == 0:
                    continue
                side = Side.SELL if p.quantity > 0 else Side.BUY
                order = OrderInput(p.symbol, side.value, format(abs(p.quantity), "f"))
                try:
                    closes.append((p, self.build_request(order, adapter)))
                except TradecordError as e:
                    done.not_closed.append((p.symbol, e.user_message))
            results = await asyncio.gather(
                *(
                    self.place(
                        target,
                        request,
                        source="discord",
                        idempotency_key=f"flatten:{key}:{p.symbol}",
                        extra={"closes_position": True, **closing_extra(p)},
                        adapter=adapter,
                    )
                    for p, request in closes
                ),
                return_exceptions=True,
            )
        finally:
            await adapter.close()
        for (p, _), result in zip(closes, results, strict=True):
            if isinstance(result, Outcome):
                done.closes.append(result)
            elif isinstance(result, TradecordError):
                done.not_closed.append((p.symbol, result.user_message))
            else:
                raise result
        return done

    async def place(
        self,
        target: Target,
        request: OrderRequest,
        *,
        source: str,
        idempotency_key: str,
        extra: dict[str, Any] | None = None,
        submit: bool = True,
        adapter: BrokerAdapter | None = None,
    ) -> Outcome:
        """Store and submit an order for an automated source (a signal), once per key.

        The key (e.g. signal id + subscription id) makes a redelivered job or a racing worker
        find the existing intent instead of placing a second order. With ``submit=False`` the
        intent waits as a draft for the member's approval. ``adapter``: see ``submit``.
        """
        intent = self._new_intent(
            target,
            request,
            source=source,
            idempotency_key=idempotency_key,
            status=IntentStatus.PENDING if submit else IntentStatus.DRAFT,
            extra={**(extra or {}), "bracket": bracket_json(request.bracket)},
        )

        async def store(s: AsyncSession) -> None:
            _add_validated(s, intent)

        try:
            # A signal's fan-out stores its subscribers' intents together (group commit).
            await self.core.db.group_commit(store)
        except IntegrityError:
            async with self.core.db.session() as s:
                existing = await s.scalar(
                    select(OrderIntent).where(OrderIntent.idempotency_key == idempotency_key)
                )
            assert existing is not None
            return Outcome(
                existing,
                None,
                "Already handled (same signal and subscription).",
                existing.status not in (IntentStatus.FAILED, IntentStatus.REJECTED),
                extra={"duplicate": True},
            )
        if not submit:
            return Outcome(intent, None, "Waiting for approval.", True)
        return await self.submit(intent, target=target, adapter=adapter)

    def _new_intent(
        self,
        target: Target,
        request: OrderRequest,
        *,
        source: str,
        idempotency_key: str | None,
        status: str,
        extra: dict[str, Any],
    ) -> OrderIntent:
        assert request.asset_class is not None
        now = self.clock()
        intent_id = new_uuid()
        return OrderIntent(
            id=intent_id,
            client_order_id=client_order_id(intent_id),
            idempotency_key=idempotency_key,
            member_id=target.connection.member_id,
            connection_id=target.connection.id,
            broker=target.connection.broker,
            mode=target.mode,
            account_id=target.account.account_id,
            source=source,
            symbol=request.symbol,
            asset_class=request.asset_class.value,
            side=request.side.value,
            quantity=request.quantity,
            order_type=request.order_type.value,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            time_in_force=request.time_in_force.value,
            status=status,
            created_at=now,
            updated_at=now,
            extra=dict(extra) | _request_extra(request),
        )

    # -- confirm and submit -------------------------------------------------------------

    async def discard(self, intent_id: str, discord_user_id: int) -> OrderIntent:
        intent = await self._owned_intent(intent_id, discord_user_id)
        claimed = await self._transition(intent_id, IntentStatus.DRAFT, IntentStatus.DISCARDED)
        if not claimed:
            # Re-read: the copy above was a draft when read, and saying so now would tell the
            # member a confirmed order is "draft" (or a cancelled one was confirmed).
            raise Conflict(self._already(await self.get_intent(intent_id)))
        intent.status = IntentStatus.DISCARDED
        return intent

    async def confirm(self, intent_id: str, discord_user_id: int) -> Outcome:
        """The member pressed Confirm. Exactly one press wins, in any process."""
        intent = await self.claim(intent_id, discord_user_id)
        target = await self._target_of(intent)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            moved = await self._size_outdated(intent, adapter)
            if moved is not None:
                return await self._refused(intent, moved)
            return await self.submit(intent, target=target, adapter=adapter)
        finally:
            await adapter.close()

    async def _size_outdated(self, intent: OrderIntent, adapter: BrokerAdapter) -> Refusal | None:
        """A market order the card sized from dollars (``amount``, ``risk``) no longer holds
        to them when the price has moved far since: "$2,000 buys 9 AAPL" at $200 is $2,700
        at $300. Refused for a new card rather than sent at a size the member never chose."""
        amount, risk = intent.extra.get("amount"), intent.extra.get("risk")
        if intent.order_type != OrderType.MARKET.value or (amount is None and risk is None):
            return None
        try:
            quote = await adapter.fetch_quote(intent.symbol)
        except (BrokerError, TimeoutError):
            return None  # no worse than the card's price to go on: the broker prices it
        price = _quote_price(quote, Side(intent.side))
        if price is None:
            return None
        mult = symbols.multiplier(intent.symbol)
        was = price_text(Decimal(intent.extra.get("estimated_price") or price))
        what = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
        if amount is not None:
            given, now = Decimal(amount), intent.quantity * price * mult
            said = f"{what} is now about {money(now)}, more than the {money(given)} you gave"
        else:
            stop = (intent.extra.get("bracket") or {}).get("stop_loss")
            if stop is None:
                return None
            given = Decimal(risk)
            now = intent.quantity * abs(price - Decimal(stop)) * mult
            said = (
                f"{what} now loses about {money(now)} if its stop-loss fills, more than the "
                f"{money(given)} you would risk"
            )
        if now <= given * SIZED_SLACK:
            return None
        return Refusal(
            "price-moved",
            f"Not sent: the price moved from {was} to {price_text(price)} since the card, so "
            f"{said}. Run /trade again to size it at this price.",
        )

    async def claim(self, intent_id: str, discord_user_id: int) -> OrderIntent:
        """Move a draft to pending for its owner, once; ``Conflict`` for every later press."""
        intent = await self._owned_intent(intent_id, discord_user_id)
        if intent.status == IntentStatus.DRAFT and self.clock() - intent.created_at > PREVIEW_TTL:
            await self._transition(intent_id, IntentStatus.DRAFT, IntentStatus.DISCARDED)
            again = "/close" if intent.extra.get("close_only") is True else "/trade"
            raise Conflict(
                f"This preview expired after 60 seconds; nothing was sent. Run {again} again."
            )
        if not await self._transition(intent_id, IntentStatus.DRAFT, IntentStatus.PENDING):
            raise Conflict(self._already(await self.get_intent(intent_id)))
        intent.status = IntentStatus.PENDING
        return intent

    async def submit(
        self,
        intent: OrderIntent,
        *,
        target: Target | None = None,
        adapter: BrokerAdapter | None = None,
    ) -> Outcome:
        """Send a pending intent to its broker. Never resends blindly (see module docstring).

        ``adapter``: the caller's open adapter for the target's connection, reused (with its
        token and account already read) and left open for the caller to close."""
        target = target or await self._target_of(intent)
        borrowed = adapter is not None
        try:
            # Every check reads the database now (another process may just have flipped the
            # kill switch) and runs before anything is sent.
            gate, adapter = await self._pretrade(intent, target, adapter)
            if isinstance(gate, Refusal):
                return await self._refused(intent, gate)
            adapter = adapter or await self.core.connections.adapter_for(target.connection)
            if gate.locked:
                # The daily total is read and this order added to it under the member's lock,
                # so two orders at once (in any processes) cannot both fit in what is left.
                marked = await self._mark_sent(intent, gate, as_read=False)
            else:
                marked = await self._mark_submitted(intent, gate)
            if isinstance(marked, Refusal):
                return await self._refused(intent, marked)
            if not marked:
                # Someone else sent it meanwhile (the reconciler, after this process stalled):
                # sending here too could place it twice. Their result reaches the member.
                return await self._moved_on(intent)
            return await self._send(intent, target, adapter)
        finally:
            if not borrowed and adapter is not None:
                await adapter.close()

    async def _mark_submitted(self, intent: OrderIntent, gate: Gate) -> Refusal | bool:
        """Pending -> submitted, stamping the send time, only if it is still pending: the
        compare-and-set that lets exactly one sender call the broker. Concurrent submits (a
        signal's fan-out) share one transaction, their rows read (and on PostgreSQL locked)
        together. (With a daily limit to check, ``_mark_sent`` does this under the member's
        lock instead.) The kill switch and the member's pause are read again here."""
        now = self.clock()
        extra = {**intent.extra, "sent_at": now.isoformat(), "risk_off": gate.closes}

        async def write(s: AsyncSession) -> Refusal | bool:
            row = await s.get(OrderIntent, intent.id)
            if row is None or row.status != IntentStatus.PENDING:
                return False
            stopped = await _stopped_at_claim(
                s, intent, gate, await s.get(Member, intent.member_id)
            )
            if stopped is not None:
                return stopped
            row.status, row.extra, row.updated_at = IntentStatus.SUBMITTED, extra, now
            row.notional, row.submitted_at = gate.notional, now
            audit.record(
                s,
                "order.submitted",
                member_id=intent.member_id,
                connection_id=intent.connection_id,
                intent_id=intent.id,
            )
            return True

        # The member's row is locked with the intent's: a /pause waits for the claim, or the
        # claim sees it (as the kill switch's row lock does for /killswitch).
        marked = await self.core.db.group_commit(
            write, rows=[(Member, intent.member_id), (OrderIntent, intent.id)]
        )
        if marked is not True:
            return marked
        intent.status, intent.extra, intent.updated_at = IntentStatus.SUBMITTED, extra, now
        intent.notional, intent.submitted_at = gate.notional, now
        return True

    async def _refused(self, intent: OrderIntent, refusal: Refusal) -> Outcome:
        simulated = bool(intent.extra.get("simulated"))
        if not await self._refuse(intent, refusal, as_read=False):
            # No longer pending: another process sent it meanwhile, and its result stands.
            return await self._moved_on(intent)
        return Outcome(intent, None, refusal.message, False, simulated)

    async def _moved_on(self, intent: OrderIntent) -> Outcome:
        """The answer for an intent another process took from pending meanwhile. Ended unsent
        (the connection was disconnected at that moment, say), it says why: nothing else
        will. Sent, its result reaches the member from whoever sent it."""
        simulated = bool(intent.extra.get("simulated"))
        now = await self.get_intent(intent.id)
        if now.status == IntentStatus.FAILED:
            return Outcome(now, None, now.error_message or "Nothing was placed.", False, simulated)
        return _in_doubt(intent, simulated)

    # -- pre-trade checks -----------------------------------------------------------------

    async def _pretrade_reads(
        self, member_id: int, strategy_id: str | None
    ) -> tuple[bool, Member | None, Strategy | None]:
        # Concurrent sends (a signal's fan-out) read the switch, members and strategies at once.
        reads = self.core.db.shared("trading.pretrade", partial(_pretrade_rows, self.core.db))
        return await reads((member_id, strategy_id))

    async def stopped(self, member_id: int, *, closing: bool = False) -> Refusal | None:
        """Why nothing of this member's may be sent now (the kill switch, their pause), or
        None: checked where a click would otherwise be told its order is on its way.
        ``closing``: for the member's own orders that only close (a pause lets them through)."""
        switch_on, member, _ = await self._pretrade_reads(member_id, None)
        return _stopped(switch_on, member, closing=closing)

    async def _still_closes(
        self,
        intent: OrderIntent,
        target: Target,
        adapter: BrokerAdapter | None,
        limits: Limits,
        *,
        position_read: bool = False,
        verify: bool = False,
    ) -> tuple[bool, BrokerAdapter | None]:
        """Whether the order only closes (part of) a position now. A signal's exit was sized
        from the position just before it was sent; a /trade preview's reading may be old (two
        closing previews of one position, confirmed one after the other), so with a limit that
        could hold it back, or when ``verify`` (a pause would hold it back), the position is
        read again."""
        if intent.extra.get("leg") == "exit":
            return True, adapter
        if intent.extra.get("closes_position") is not True:
            return False, adapter
        if position_read or (
            not verify and all(getattr(limits, name) is None for name in LIMIT_NAMES)
        ):
            # Read just now (at preview), or nothing to hold it back: no need to ask the broker.
            return True, adapter
        try:
            adapter = adapter or await self.core.connections.adapter_for(target.connection)
            position = await adapter.fetch_position(target.ref, intent.symbol)
        except (BrokerError, TimeoutError):
            return False, adapter  # unknown: the limits apply
        held = position.quantity if position is not None else Decimal(0)
        return reduces(request_of(intent), held), adapter

    async def _not_closing(
        self, intent: OrderIntent, target: Target, adapter: BrokerAdapter | None
    ) -> tuple[Refusal | None, BrokerAdapter | None]:
        """/close, at Confirm: the position is read again, since a close sent after it was
        closed or cut (a stop-loss filled meanwhile) would open the other side."""
        what = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
        try:
            adapter = adapter or await self.core.connections.adapter_for(target.connection)
            position = await adapter.fetch_position(target.ref, intent.symbol)
        except (BrokerError, TimeoutError):
            return Refusal(
                "position-unknown",
                f"Not sent: {what} closes a position, and the broker did not answer when asked "
                "whether you still hold it. Try again in a moment.",
            ), adapter
        held = position.quantity if position is not None else Decimal(0)
        if reduces(request_of(intent), held):
            try:
                already = await self._closing_already(intent.id, target, adapter, intent.symbol)
            except (BrokerError, TimeoutError):
                return Refusal(
                    "position-unknown",
                    f"Not sent: {what} closes a position, and the broker did not answer when "
                    "asked which of your orders are still working. Try again in a moment.",
                ), adapter
            if intent.quantity <= abs(held) - already.quantity:
                return None, adapter
            return Refusal(
                "position-closing",
                f"Not sent: {what} would no longer only close your position: "
                + closing_already_text(already, held, intent.symbol),
            ), adapter
        now = f"{qty(abs(held))} {intent.symbol} {'long' if held > 0 else 'short'}"
        return Refusal(
            "position-changed",
            f"Not sent: {what} would no longer only close your position: you hold "
            f"{now if held else f'no {intent.symbol}'} now (it filled, closed or changed after "
            "it was prepared). /positions shows what you hold.",
        ), adapter

    async def _closing_already(
        self,
        intent_id: str | None,
        target: Target,
        adapter: BrokerAdapter,
        symbol: str,
        orders: Sequence[Order] | None = None,
    ) -> Closing:
        """The member's other closes (/close, /flatten) of the position in ``symbol``.

        Working at the broker: at a shut market a close rests until the open with the position
        still held, so a second close passes the position check; when both fill, the second
        opens the other side. Being sent: confirmed (or sent) but not yet answered by the
        broker, so neither in its open orders nor in the position; two Confirms a moment apart
        would both pass. Of two confirmed together, the one confirmed first counts for the
        other, never both ways: exactly one goes. ``orders``: the open orders, if just read
        (else the broker is asked, only when such a close was sent)."""
        now = self.clock()
        async with self.core.db.session() as s:
            rows = (
                await s.execute(
                    select(
                        OrderIntent.id,
                        OrderIntent.status,
                        OrderIntent.client_order_id,
                        OrderIntent.broker_order_id,
                        OrderIntent.quantity,
                        OrderIntent.updated_at,
                        OrderIntent.extra,
                    ).where(
                        OrderIntent.connection_id == target.connection.id,
                        OrderIntent.account_id == target.account.account_id,
                        OrderIntent.symbol == symbol,
                        OrderIntent.status.in_(CLOSING_STATUSES),
                    )
                )
            ).all()
        mine = next((r for r in rows if r.id == intent_id), None)
        others = [r for r in rows if r.id != intent_id and r.extra.get("close_only") is True]
        sent = [r for r in others if r.status != IntentStatus.PENDING]
        ids = {i for r in sent for i in (r.client_order_id, r.broker_order_id) if i is not None}
        working: list[Order] = []
        if ids:
            if orders is None:
                orders = await adapter.fetch_open_orders(target.ref)
            working = [
                o
                for o in orders
                if o.symbol == symbol and (o.id in ids or o.client_order_id in ids)
            ]
        seen = {i for o in working for i in (o.id, o.client_order_id)}
        sending = [
            r.quantity
            for r in others
            if r.client_order_id not in seen
            and (r.broker_order_id is None or r.broker_order_id not in seen)
            and _in_flight(r.status, r.updated_at, r.id, now, mine)
        ]
        return Closing(working, sending)

    async def _check_early(
        self, intent: OrderIntent, target: Target, adapter: BrokerAdapter
    ) -> None:
        """The pre-trade checks Confirm will make, made at preview too: a member who is paused,
        stopped by the kill switch or over a limit learns it before the card, not after the
        click. (Confirm checks again: a switch may flip or a daily total grow meanwhile.)
        ``adapter``: the preview's, whose position reading is fresh."""
        gate = await self._would_refuse(intent, target, adapter, position_read=True)
        if gate is not None:
            refused = LimitReached(gate.message.replace("Not sent: ", "Not allowed: ", 1))
            refused.code = gate.code
            raise refused

    async def _would_refuse(
        self,
        intent: OrderIntent,
        target: Target,
        adapter: BrokerAdapter,
        *,
        position_read: bool = False,
    ) -> Refusal | None:
        """Every pre-trade check, the day's totals as they are now (without the lock)."""
        gate, _ = await self._pretrade(intent, target, adapter, position_read=position_read)
        if isinstance(gate, Gate) and gate.locked:
            async with self.core.db.session() as s:
                gate = (
                    await self._over_daily(s, intent, gate, self.clock())
                    or await self._over_positions(s, intent, gate)
                    or gate
                )
        return gate if isinstance(gate, Refusal) else None

    async def refusal(
        self,
        target: Target,
        request: OrderRequest,
        adapter: BrokerAdapter,
        *,
        source: str,
        extra: dict[str, Any],
    ) -> Refusal | None:
        """Why this order would be refused if sent now (the kill switch, a pause, a limit), or
        None. Lets an automation leave things alone (a protective stop it would cancel before
        ordering) when its order is bound to be refused. Stores nothing."""
        intent = self._new_intent(
            target,
            request,
            source=source,
            idempotency_key=None,
            status=IntentStatus.PENDING,
            extra=extra,
        )
        return await self._would_refuse(intent, target, adapter)

    async def _pretrade(
        self,
        intent: OrderIntent,
        target: Target,
        adapter: BrokerAdapter | None,
        *,
        position_read: bool = False,
    ) -> tuple[Gate | Refusal, BrokerAdapter | None]:
        """The kill switch, the member's pause, and the per-order limits (the member's, the
        server's and, for a strategy's entry, the strategy's); returns the daily limits still
        to check. Opens an adapter (returned) only to price an order no limit can do without.
        ``position_read``: the position behind ``closes_position`` was read just now."""
        strategy_id = intent.extra.get("strategy_id") if intent.source == "signal" else None
        # The strategy's limits are on what it opens (as its max quantity is): an exit that
        # closes a position is never held back by them.
        if intent.extra.get("leg", "entry") != "entry":
            strategy_id = None
        switch_on, member, strategy = await self._pretrade_reads(intent.member_id, strategy_id)
        # Paused, only the member's own closing orders may pass: a signal's never do.
        paused = member is not None and member.paused_at is not None
        stopped = _stopped(switch_on, member, closing=paused and intent.source != "signal")
        if stopped is not None:
            return stopped, adapter
        assert member is not None
        if intent.extra.get("close_only") is True and not position_read:
            gone, adapter = await self._not_closing(intent, target, adapter)
            if gone is not None:
                return gone, adapter
            position_read = True
        limits = Limits(
            member.max_order_quantity, member.max_order_notional, member.max_daily_notional
        ).stricter(server_limits(self.core.settings))
        closes, adapter = await self._still_closes(
            intent, target, adapter, limits, position_read=position_read, verify=paused
        )
        if paused and not closes:
            return _stopped(False, member), adapter
        if closes:
            # Limits cap the risk a member takes on; an order that only closes a position takes
            # risk off and is never held back by them: a member at a limit can always get out.
            price = known_price(intent)
            mult = symbols.multiplier(intent.symbol)
            notional = intent.quantity * price * mult if price is not None else None
            return Gate(notional, [], closes=True), adapter
        what = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
        if limits.max_order_quantity is not None and intent.quantity > limits.max_order_quantity:
            return Refusal(
                "limit-order-quantity",
                f"Not sent: {what} is over your "
                f"{describe_limit('max_order_quantity', limits.max_order_quantity)}. "
                "See /limits show.",
            ), adapter
        if strategy is not None and strategy.max_quantity is not None:
            if intent.quantity > strategy.max_quantity:
                return Refusal(
                    "strategy-order-quantity",
                    f"Not sent: {what} is over the strategy “{strategy.name}”'s "
                    f"max quantity per order of {qty(strategy.max_quantity)}.",
                ), adapter
        order_caps = [
            (limits.max_order_notional, "limit-order-notional", "your"),
            (
                strategy.max_order_notional if strategy else None,
                "strategy-order-notional",
                f"the strategy “{strategy.name if strategy else ''}”'s",
            ),
        ]
        daily = [
            DailyCap(limits.max_daily_notional, None, "your")
            if limits.max_daily_notional is not None
            else None,
            DailyCap(strategy.max_daily_notional, strategy.id, f"the strategy “{strategy.name}”'s")
            if strategy is not None and strategy.max_daily_notional is not None
            else None,
        ]
        caps = [c for c in daily if c is not None]
        needed = caps or any(limit is not None for limit, _, _ in order_caps)
        price = known_price(intent)
        if price is None and needed:
            # A signal's market order carries no price: ask the broker, as a preview does.
            try:
                adapter = adapter or await self.core.connections.adapter_for(target.connection)
                quote = await adapter.fetch_quote(intent.symbol)
            except (BrokerError, TimeoutError):
                quote = None
            price = _quote_price(quote, Side(intent.side)) if quote is not None else None
            if price is None:
                return Refusal(
                    "limit-no-price",
                    f"Not sent: {what} could not be priced to check it against your notional "
                    "limits (no quote from the broker). Try again in a moment.",
                ), adapter
        mult = symbols.multiplier(intent.symbol)
        notional = intent.quantity * price * mult if price is not None else None
        for limit, code, whose in order_caps:
            if limit is not None and notional is not None and notional > limit:
                return Refusal(
                    code,
                    f"Not sent: {what} is about {money(notional)}, over {whose} "
                    f"{describe_limit('max_order_notional', limit)}."
                    + (" See /limits show." if whose == "your" else ""),
                ), adapter
        return Gate(notional, caps, max_positions=intent.extra.get("max_positions")), adapter

    async def _over_daily(
        self,
        s: AsyncSession,
        intent: OrderIntent,
        gate: Gate,
        now: datetime,
        counted: Decimal | None = None,
    ) -> Refusal | None:
        """Whether this order would take a daily total (UTC day) over its limit. The caller
        holds the member's lock. ``counted``: a working order being raised, what it was counted
        for so far."""
        start = _day_start(now)
        rows = await s.scalars(
            select(OrderIntent).where(
                OrderIntent.member_id == intent.member_id,
                # Paper practice uses up no live allowance, nor live trading paper's.
                OrderIntent.mode == intent.mode,
                OrderIntent.submitted_at >= start,
                OrderIntent.id != intent.id,
            )
        )
        # A closing order took risk off: as no limit held it back, it uses no allowance.
        sent = [r for r in rows if r.status not in NOT_COUNTED and not r.extra.get("risk_off")]
        this = gate.notional or Decimal(0)
        for cap in gate.daily:
            counted_in = [
                r
                for r in sent
                if cap.strategy_id is None
                or (
                    r.extra.get("strategy_id") == cap.strategy_id
                    and r.extra.get("leg", "entry") == "entry"
                )
            ]
            used = sum((sent_notional(r) for r in counted_in), Decimal(0))
            if used + this > cap.limit:
                what = (
                    f"{intent.side} {qty(intent.quantity)} {intent.symbol} is about {money(this)}"
                )
                # Raised, an order sent today was counted at its old value; one sent on an
                # earlier day counts today at its whole new value.
                today = counted is not None and (
                    intent.submitted_at is None or intent.submitted_at >= start
                )
                if counted is not None:
                    what += f", {money(this - counted)} more than it counted for"
                    if not today:
                        what += " (sent on an earlier day, it counts today at its new value)"
                if today:
                    assert counted is not None
                    used += counted
                sent_today = f"{money(used)} of {intent.mode} orders was already sent today (UTC)"
                if today:
                    sent_today += ", this order included"
                left = max(cap.limit - used, Decimal(0))
                code = "strategy-daily-notional" if cap.strategy_id else "limit-daily-notional"
                return Refusal(
                    code,
                    f"Not sent: {what}, and {sent_today}: over "
                    f"{cap.what} {describe_limit('max_daily_notional', cap.limit)} "
                    f"({money(left)} left today)."
                    + (" See /limits show." if cap.strategy_id is None else ""),
                )
        return None

    async def _over_positions(
        self, s: AsyncSession, intent: OrderIntent, gate: Gate
    ) -> Refusal | None:
        """Whether this entry would open a position beyond its subscription's max strategy
        positions. Counted: the positions held when they were read, and the orders sent on the
        account that are still on their way or working, or that filled after the read (not in
        it yet), so two strategies' entries at the same moment cannot both pass. The caller
        holds the member's lock, which every such send takes."""
        cap = gate.max_positions
        if cap is None:
            return None
        held, mine = set(cap["held"]), symbols.instrument_key(intent.symbol)
        since = cap.get("read_at")
        sent = OrderIntent.status.in_(SENT_UNFINISHED)
        if since is not None:
            filled = (OrderIntent.filled_quantity > 0) & (
                OrderIntent.updated_at >= datetime.fromisoformat(since)
            )
            sent = sent | filled
        rows = await s.execute(
            select(OrderIntent.symbol, OrderIntent.status, OrderIntent.extra).where(
                OrderIntent.connection_id == intent.connection_id,
                OrderIntent.account_id == intent.account_id,
                OrderIntent.id != intent.id,
                sent,
            )
        )
        # Orders that only close open no position. One that filled about when the positions
        # were read may be in them already, as dust; one still working on a coin held only as
        # dust is an entry on its way like any other.
        dust = set(cap.get("dust", ()))
        coming = {
            key
            for symbol, status, extra in rows
            if not (extra or {}).get("risk_off")
            and ((key := symbols.instrument_key(symbol)) not in dust or status in SENT_UNFINISHED)
        }
        coming -= held | {mine}
        if len(held) + len(coming) < cap["limit"]:
            return None
        n = len(coming)
        way = "on its way" if n == 1 else "on their way"
        on_way = f" and {n} more {way} or just filled" if n else ""
        return Refusal(
            "max-strategy-positions",
            f"Max strategy positions reached: {len(held)} open position{plural(len(held))} on "
            f"the account{on_way}, limit {cap['limit']}. No new position entered.",
        )

    async def _mark_sent(
        self,
        intent: OrderIntent,
        gate: Gate,
        *,
        as_read: bool = True,
        reason: str | None = None,
    ) -> Refusal | bool:
        """Check the daily limits and max positions and move the intent from pending to
        submitted in one transaction under the member's lock: of several processes about to
        send it, exactly one gets True. ``as_read``: only if not changed since this intent
        object was read."""
        now = self.clock()
        extra = {**intent.extra, "sent_at": now.isoformat(), "risk_off": gate.closes}
        this_one = _still_pending(intent, as_read=as_read)
        async with self.core.db.transaction() as s:
            if gate.locked:
                await lock_row(s, Member, Member.id == intent.member_id)
                # Sent by another process meanwhile: not this caller's to refuse or send.
                if await s.scalar(select(OrderIntent.id).where(*this_one)) is None:
                    return False
                refusal = await self._over_daily(s, intent, gate, now)
                refusal = refusal or await self._over_positions(s, intent, gate)
                if refusal is not None:
                    return refusal
            member = await s.scalar(
                select(Member).where(Member.id == intent.member_id).with_for_update(read=True)
            )
            stopped = await _stopped_at_claim(s, intent, gate, member)
            if stopped is not None:
                return stopped
            claimed = (
                await s.execute(
                    update(OrderIntent)
                    .where(*this_one)
                    .values(
                        status=IntentStatus.SUBMITTED,
                        extra=extra,
                        updated_at=now,
                        notional=gate.notional,
                        submitted_at=now,
                    )
                )
            ).rowcount  # type: ignore[attr-defined]
            if claimed:
                audit.record(
                    s,
                    "order.submitted",
                    member_id=intent.member_id,
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                    reason=reason,
                )
        if not claimed:
            return False
        intent.status, intent.extra, intent.updated_at = IntentStatus.SUBMITTED, extra, now
        intent.notional, intent.submitted_at = gate.notional, now
        return True

    async def _refuse(
        self, intent: OrderIntent, refusal: Refusal, *, as_read: bool, reason: str | None = None
    ) -> bool:
        """End an unsent (still pending) intent as failed, with why in the audit trail (by
        default: the pre-trade check that refused it). ``as_read``: only if not changed since
        this intent object was read. False when it was no longer pending."""
        async with self.core.db.transaction() as s:
            query = update(OrderIntent).where(*_still_pending(intent, as_read=as_read))
            now = self.clock()
            done = (
                await s.execute(
                    query.values(
                        status=IntentStatus.FAILED,
                        error_code=refusal.code,
                        error_message=refusal.message[:500],
                        updated_at=now,
                    )
                )
            ).rowcount  # type: ignore[attr-defined]
            if done:
                audit.record(
                    s,
                    "order.failed",
                    member_id=intent.member_id,
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                    error=refusal.code,
                    reason=reason or f"pre-trade check: {refusal.message}",
                )
        if done:
            intent.status, intent.updated_at = IntentStatus.FAILED, now
            intent.error_code, intent.error_message = refusal.code, refusal.message[:500]
        return bool(done)

    async def _send(self, intent: OrderIntent, target: Target, adapter: BrokerAdapter) -> Outcome:
        """Call the broker for an intent this caller has just moved to submitted (the caller
        closes the adapter)."""
        self._sending.add(intent.id)
        try:
            return await self._send_now(intent, target, adapter)
        finally:
            self._sending.discard(intent.id)

    async def _send_now(
        self, intent: OrderIntent, target: Target, adapter: BrokerAdapter
    ) -> Outcome:
        request = request_of(intent)
        simulated = bool(intent.extra.get("simulated"))
        try:
            # Bounded, so that SEND_SETTLED_AFTER holds: the reconciler and resend_lost take a
            # lookup that finds nothing after it as proof the order never arrived.
            async with asyncio.timeout(SEND_LIMIT.total_seconds()):
                order = await adapter.create_order(target.ref, request)
        except (BrokerUnavailable, OrderStateUnknown, TimeoutError) as e:
            # The broker answered without saying whether it took the order (OrderStateUnknown)
            # or did not answer (in time): looked up, never resent.
            maybe_sent = not isinstance(e, BrokerUnavailable) or e.maybe_sent
            if not maybe_sent:
                await self._set(
                    intent,
                    IntentStatus.FAILED,
                    phase="order.failed",
                    error=e if isinstance(e, BrokerError) else None,
                )
                return Outcome(intent, None, _not_sent(e), False, simulated)
            return await self._settle_after_doubt(intent, adapter, target, simulated)
        except (RateLimited, AuthorizationExpired) as e:
            # Turned away before any order existed (our authorization refused, or re-linking
            # needed before sending): no broker rejected an order.
            await self._set(intent, IntentStatus.FAILED, phase="order.failed", error=e)
            return Outcome(intent, None, f"Nothing was placed: {e.user_message}", False, simulated)
        except BrokerError as e:
            await self._set(intent, IntentStatus.REJECTED, phase="order.rejected", error=e)
            return Outcome(
                intent, None, f"The broker rejected the order: {e.user_message}", False, simulated
            )
        behind = await self._apply_order(intent, order, told=True)
        return _answered(intent, order, simulated, behind=behind)

    async def resend_lost(self, intent: OrderIntent, *, target: Target | None = None) -> Outcome:
        """Send again an intent stuck in SUBMITTED because the process sending it died, after
        a lookup by client order id found nothing. The caller did that lookup and owns the
        intent's work (a signal job's lease); the compare-and-set makes any race lose."""
        sent_at = intent.extra.get("sent_at")
        if intent.status != IntentStatus.SUBMITTED or sent_at is None:
            raise Conflict(self._already(intent))
        if intent.id in self._sending or self.clock() < send_settles_at(intent):
            raise Conflict("The first attempt to send this order may still be under way.")
        async with self.core.db.transaction() as s:
            claimed = (
                await s.execute(
                    update(OrderIntent)
                    .where(
                        OrderIntent.id == intent.id,
                        OrderIntent.status == IntentStatus.SUBMITTED,
                        OrderIntent.updated_at == intent.updated_at,
                    )
                    .values(status=IntentStatus.PENDING, updated_at=self.clock())
                )
            ).rowcount  # type: ignore[attr-defined]
            if claimed:
                audit.record(
                    s,
                    "order.resent",
                    member_id=intent.member_id,
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                    reason="the process sending it stopped and the broker has no such order",
                )
        if not claimed:
            raise Conflict(self._already(await self.get_intent(intent.id)))
        intent.status = IntentStatus.PENDING
        return await self.submit(intent, target=target)

    async def _settle_after_doubt(
        self, intent: OrderIntent, adapter: BrokerAdapter, target: Target, simulated: bool
    ) -> Outcome:
        """The broker may have the order. Look it up by client order id; never resend."""
        try:
            order = await adapter.fetch_order(
                target.ref, client_order_id=intent.client_order_id, hint=await self.hint(intent)
            )
        except OrderNotFound:
            if self._send_settled(intent):
                await self._set(
                    intent,
                    IntentStatus.FAILED,
                    phase="order.failed",
                    reason="the broker did not receive it",
                )
                return Outcome(
                    intent,
                    None,
                    "The broker did not receive the order (we checked), so nothing was placed. "
                    "Try again when the broker is answering.",
                    False,
                    simulated,
                )
            # Not found yet proves nothing: the broker may still be processing the request we
            # gave up on. The reconciler looks again once SEND_SETTLED_AFTER has passed.
            await self._set(
                intent, IntentStatus.UNKNOWN, phase="order.unknown", reason="not at the broker yet"
            )
            return _in_doubt(intent, simulated)
        except (BrokerError, TimeoutError):
            await self._set(intent, IntentStatus.UNKNOWN, phase="order.unknown")
            return _in_doubt(intent, simulated)
        behind = await self._apply_order(intent, order, told=True)
        return _answered(intent, order, simulated, behind=behind)

    async def _apply_order(self, intent: OrderIntent, order: Order, *, told: bool = False) -> bool:
        """``told``: the caller's own message (a /trade card, a signal's result) says this state
        to the member; recorded as told, so only a later state is news (see tell_untold).

        True when ``order`` is behind the stored state (a stream's fill stored before the
        broker's answer to the POST): ``intent`` then holds the stored state, which is what
        the caller's message must say."""
        if order.exit_ids:  # a bracket's exits, named by the broker with its entry
            await self._record_exits(intent, order.exit_ids)
        if order.status is OrderStatus.REPLACED and order.replaced_by:
            await self._follow_replacement(intent, order)
            return
        unfollowed = order.status is OrderStatus.REPLACED
        if unfollowed:
            # Nothing names a successor to follow: this intent's order ended unfilled (stored
            # as cancelled), but the member is told it was replaced, not cancelled.
            log.info("Order %s replaced without a successor; no longer followed", order.id)
            order = dataclasses.replace(order, status=OrderStatus.CANCELLED)
        stored: dict[str, Any] = {}
        behind = False

        async def write(s: AsyncSession) -> bool:
            nonlocal behind
            behind = False  # run again alone if its batch failed
            row = await s.get(OrderIntent, intent.id)
            assert row is not None
            if row.status in IntentStatus.FINAL and row.status != IntentStatus.FAILED:
                # A later update already settled it; the caller's copy takes its state, or its
                # message would describe this older one.
                behind = True
                stored.update(_followed(row))
                return True
            left = _replaced_orders(row)
            if order.id in left:
                return False  # an order this intent has already left for its replacement
            if order.replaces and row.broker_order_id == order.replaces:
                # The replacing order reported before the replaced one said "replaced": a
                # replace can still be refused (the old order filling first), so the intent
                # stays with the old order until it says so (its event, a poll, a reconcile).
                return False
            filled, average = _with_earlier_fills(left, order)
            status = STATUS_FROM_ORDER[order.status]
            if status == IntentStatus.ACCEPTED and filled > 0:
                status = IntentStatus.PARTIALLY_FILLED  # the replaced order filled some
            if _older(row, status, filled):
                # Read before an update already applied (late event, slow poll).
                behind = True
                stored.update(_followed(row))
                return True
            if (
                (row.status, row.filled_quantity, row.broker_order_id) == (status, filled, order.id)
                and not unfollowed
                and not (order.replaces and left)
            ):
                # Read again as it stood (a reconcile pass, a poll, another process's stream):
                # no new phase to record, only that it was seen, so the reconciler's next pass
                # reads the orders it has not seen for longest. The caller's copy still takes
                # the row's state: another process may have stored it first (a stream's event
                # before the placing process's own answer).
                row.updated_at = self.clock()
                if told:
                    row.notified_status = f"{status}:{filled}"
                stored.update(_followed(row))
                return True
            # An order found ended late (a stream gap, a restart) ended when the broker says.
            at = await _broker_time(s, row, order) if status in ENDED_AT_BROKER else None
            if status != IntentStatus.ACCEPTED and row.status in (
                IntentStatus.SUBMITTED,
                IntentStatus.UNKNOWN,
                IntentStatus.PENDING,
            ):
                # An order that filled at once was also accepted: keep both phases.
                audit.record(
                    s,
                    "order.accepted",
                    member_id=row.member_id,
                    connection_id=row.connection_id,
                    intent_id=row.id,
                    at=at,
                    broker_order_id=order.id,
                )
            if order.replaces and left:
                # The terms changed at the broker: the intent says what now works there.
                row.quantity = sum((Decimal(f["filled"]) for f in left.values()), order.quantity)
                row.limit_price, row.stop_price = order.limit_price, order.stop_price
                row.order_type, row.time_in_force = order.order_type, order.time_in_force
            row.status = status
            row.broker_order_id = order.id
            row.filled_quantity = filled
            row.average_fill_price = average
            row.error_message = order.reject_reason
            if unfollowed:
                row.error_code = REPLACED_UNFOLLOWED
            row.updated_at = self.clock()
            if told:
                row.notified_status = f"{status}:{filled}"
            audit.record(
                s,
                PHASES.get(status, "order.accepted"),
                member_id=row.member_id,
                connection_id=row.connection_id,
                intent_id=row.id,
                at=at,
                broker_order_id=order.id,
                filled_quantity=filled,
                average_fill_price=average,
                reason=order.reject_reason,
            )
            stored.update(_followed(row))
            return True

        if await self.core.db.group_commit(write, rows=[(OrderIntent, intent.id)]):
            _copy(intent, stored)
        return behind

    async def _follow_replacement(self, intent: OrderIntent, old: Order) -> None:
        """The broker replaced the intent's order by a new one (a change the member made in the
        broker's own app): the intent now follows the new order, keeping what the old one
        filled. Not a cancel: nothing the member meant has ended."""
        new_id = old.replaced_by
        assert new_id is not None
        stored: dict[str, Any] = {}

        async def write(s: AsyncSession) -> bool:
            row = await s.get(OrderIntent, intent.id)
            assert row is not None
            if row.status in IntentStatus.FINAL and row.status != IntentStatus.FAILED:
                return False
            left = _replaced_orders(row)
            fills = {"filled": str(old.filled_quantity), "value": str(_value(old))}
            if old.id in left:
                if left[old.id] == fills:
                    return False  # already followed (a late event, a second poll)
                # Reported replaced again, with fills its first report had not counted yet.
                row.extra = {**(row.extra or {}), REPLACED_ORDERS: {**left, old.id: fills}}
            elif row.broker_order_id in (None, old.id):
                _record_replaced(s, row, old.id, new_id, old.filled_quantity)
                row.extra = {**(row.extra or {}), REPLACED_ORDERS: {**left, old.id: fills}}
                row.broker_order_id = new_id
            else:
                return False  # an order this intent does not follow
            filled, average = _with_earlier_fills(_replaced_orders(row), None)
            if filled > row.filled_quantity:
                row.filled_quantity, row.average_fill_price = filled, average
                if row.status in IntentStatus.OPEN:
                    row.status = IntentStatus.PARTIALLY_FILLED
            row.updated_at = self.clock()
            stored.update(_followed(row))
            return True

        if await self.core.db.group_commit(write, rows=[(OrderIntent, intent.id)]):
            _copy(intent, stored)

    async def _set(
        self,
        intent: OrderIntent,
        status: str,
        *,
        phase: str,
        error: BrokerError | None = None,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        async def write(s: AsyncSession) -> None:
            values: dict[str, Any] = {"id": intent.id, "status": status, "updated_at": self.clock()}
            if extra is not None:
                values["extra"] = extra
            if error is not None:
                values.update(error_code=error.code, error_message=error.user_message[:500])
            update_later(s, OrderIntent, values)
            audit.record(
                s,
                phase,
                member_id=intent.member_id,
                connection_id=intent.connection_id,
                intent_id=intent.id,
                error=error.code if error else None,
                reason=reason,
            )

        await self.core.db.group_commit(write)
        intent.status = status
        if extra is not None:
            intent.extra = extra
        if error is not None:
            intent.error_code, intent.error_message = error.code, error.user_message

    async def _transition(self, intent_id: str, frm: str, to: str) -> bool:
        async with self.core.db.transaction() as s:
            result = await s.execute(
                update(OrderIntent)
                .where(OrderIntent.id == intent_id, OrderIntent.status == frm)
                .values(status=to, updated_at=self.clock())
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    # -- reconciliation -----------------------------------------------------------------

    async def reconcile(
        self, *, older_than: timedelta = timedelta(seconds=30)
    ) -> list[OrderIntent]:
        """Settle intents whose broker state we do not know, and follow open orders.

        Runs at start and periodically. Returns the intents whose status changed.
        """
        cutoff = self.clock() - older_than
        working = OrderIntent.status.in_([IntentStatus.ACCEPTED, IntentStatus.PARTIALLY_FILLED])
        async with self.core.db.session() as s:
            rows = list(
                await s.scalars(
                    select(OrderIntent)
                    .join(Connection, Connection.id == OrderIntent.connection_id)
                    .where(
                        OrderIntent.status.in_(
                            [
                                IntentStatus.UNKNOWN,
                                IntentStatus.SUBMITTED,
                                IntentStatus.PENDING,
                                IntentStatus.ACCEPTED,
                                IntentStatus.PARTIALLY_FILLED,
                            ]
                        ),
                        OrderIntent.updated_at <= cutoff,
                        # Settled as "account changed": no longer followable, nothing to add.
                        OrderIntent.error_code.is_distinct_from(ACCOUNT_CHANGED),
                        # Nothing can be read with a lapsed sign-in (each try would only take
                        # a slot of the broker's rate limit): /connect brings them back.
                        Connection.status != ConnectionStatus.NEEDS_REAUTH,
                    )
                    # Orders in doubt first (a member waits to hear), then the working orders
                    # seen longest ago: 500 resting orders cannot hold back the rest.
                    .order_by(case((working, 1), else_=0), OrderIntent.updated_at)
                    .limit(500)
                )
            )
        owned = await self._owned_by_running_jobs(rows)
        changed: list[OrderIntent] = []
        for intent in rows:
            if intent.id in owned or intent.id in self._sending:
                continue
            before = (intent.status, intent.error_code)
            filled_before = intent.filled_quantity
            try:
                await self._reconcile_one(intent)
            except (BrokerError, TimeoutError) as e:
                log.info(
                    "Reconcile of %s deferred: %s", intent.id, getattr(e, "code", type(e).__name__)
                )
                continue
            except Exception as e:
                # One intent's trouble must not keep the others (other members') unsettled.
                # Only the type: a message might quote a token or a broker's response.
                log.error("Reconcile of %s failed: %s; moving on", intent.id, type(e).__name__)
                continue
            if (intent.status, intent.error_code) != before:
                changed.append(intent)
                await self._tell(intent)
            elif intent.filled_quantity != filled_before:
                await self._tell(intent)  # more of it filled: news, as from the stream
            elif intent.notified_status == UNDELIVERED:
                # Its DM failed in an earlier pass; a working order is read at every pass, so
                # its row is never old enough for tell_untold.
                await self._tell(intent)
        await self._reconcile_left_exits()
        await self.tell_untold(cutoff)
        return changed

    async def _reconcile_left_exits(self) -> None:
        """Follow the working exits of brackets at an account the member has since left: the
        watcher follows the chosen accounts only, so their fill went untold and the connection
        stayed watched for ever. Read-only at their own account, as intents are there."""
        chosen = select(ConnectionAccount.id).where(
            ConnectionAccount.connection_id == OrderIntent.connection_id,
            ConnectionAccount.mode == OrderIntent.mode,
            ConnectionAccount.account_id == OrderIntent.account_id,
        )
        async with self.core.db.session() as s:
            rows = (
                await s.execute(
                    select(BracketExit.broker_order_id, OrderIntent)
                    .join(OrderIntent, OrderIntent.id == BracketExit.intent_id)
                    .join(Connection, Connection.id == OrderIntent.connection_id)
                    .where(
                        BracketExit.notified_status.is_(None),
                        OrderIntent.broker != "paper",
                        Connection.status != ConnectionStatus.NEEDS_REAUTH,
                        ~chosen.exists(),
                    )
                    .order_by(BracketExit.id)
                    .limit(500)
                )
            ).all()
        exits: dict[str, tuple[OrderIntent, list[str]]] = {}
        for exit_id, intent in rows:
            exits.setdefault(intent.id, (intent, []))[1].append(exit_id)
        for intent, exit_ids in exits.values():
            try:
                await self._reconcile_exits(intent, exit_ids)
            except (BrokerError, TimeoutError, NotFound) as e:
                log.info(
                    "Reconcile of the exits of %s deferred: %s",
                    intent.id,
                    getattr(e, "code", type(e).__name__),
                )
            except Exception as e:  # one bracket's trouble must not keep the others unread
                log.error("Reconcile of the exits of %s failed: %s", intent.id, type(e).__name__)

    async def _reconcile_exits(self, intent: OrderIntent, exit_ids: list[str]) -> None:
        conn = await self._connection_of(intent)
        adapter = await self.core.connections.adapter_for(conn)
        orders: list[Order] = []
        try:
            ref = await _served(adapter, intent)
            for exit_id in exit_ids if ref is not None else []:
                try:
                    orders.append(await adapter.fetch_order(ref, order_id=exit_id))
                except OrderNotFound:
                    log.info("Exit %s of intent %s not found at the broker", exit_id, intent.id)
        finally:
            await adapter.close()
        if ref is None:
            await self._strand_exits(intent, conn.name)
        for order in orders:
            await self.apply_update(conn.broker, OrderUpdate(order, "poll"), connection_id=conn.id)

    async def _strand_exits(self, intent: OrderIntent, connection_name: str) -> None:
        """The login no longer reaches the account of an intent's working exits: they are
        settled (no longer watched), and the member is told once to check them there."""
        async with self.core.db.transaction() as s:
            stranded = (
                await s.execute(
                    update(BracketExit)
                    .where(
                        BracketExit.intent_id == intent.id, BracketExit.notified_status.is_(None)
                    )
                    .values(notified_status=ACCOUNT_CHANGED)
                )
            ).rowcount  # type: ignore[attr-defined]
            if stranded:
                audit.record(
                    s,
                    "order.exit_unknown",
                    member_id=intent.member_id,
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                    error=ACCOUNT_CHANGED,
                    reason="its account changed and the broker no longer serves the old one",
                )
        notifier = self.core.notifier
        if not stranded or notifier is None:
            return
        head = f"{'📝 Paper' if intent.mode == 'paper' else '🔴 Live'} bracket"
        price = intent.average_fill_price
        entry = f" at {fill_price(price)}" if price else ""
        content = (
            f"{head} exit{plural(stranded)} not followed: the {intent.mode} account of "
            f"“{connection_name}” changed, and the broker no longer shows Tradecord the old "
            "account, so the "
            f"exit{plural(stranded)} of your {intent.side} {qty(intent.filled_quantity)} "
            f"{intent.symbol}{entry} (intent {intent.id[:8]}) can no longer be followed: "
            f"{'it' if stranded == 1 else 'they'} may still be working at "
            f"{mask_account(intent.account_id)}, and a fill there is not told. "
            "Check that account at the broker."
        )
        try:
            await notifier.dm(await self._discord_id(intent), Outgoing(content=content))
        except Exception:  # settled either way; only the news is lost
            log.warning("Could not tell the member about the exits of intent %s", intent.id)

    async def tell_untold(self, cutoff: datetime) -> int:
        """Tell what a process stored and died before telling: an order whose earlier state
        the member heard (a signal's result, an update) and whose later one, stored before
        ``cutoff``, they did not. Later updates do not repair it: they find no change to tell.
        ``_tell``'s compare-and-set keeps it once across processes. Orders of the last week;
        the state a /trade card or a signal's result said is recorded with the order. Also any
        order whose DM Discord failed to take (``UNDELIVERED``), whatever its state."""
        async with self.core.db.session() as s:
            rows = list(
                await s.scalars(
                    select(OrderIntent)
                    .where(
                        OrderIntent.status.in_(
                            [
                                IntentStatus.FILLED,
                                IntentStatus.PARTIALLY_FILLED,
                                IntentStatus.CANCELLED,
                                IntentStatus.EXPIRED,
                                IntentStatus.REJECTED,
                            ]
                        )
                        | (OrderIntent.notified_status == UNDELIVERED),
                        OrderIntent.notified_status.is_not(None),
                        ~OrderIntent.notified_status.startswith(OrderIntent.status.concat(":")),
                        OrderIntent.updated_at <= cutoff,
                        OrderIntent.updated_at > cutoff - timedelta(days=7),
                    )
                    .order_by(OrderIntent.updated_at)
                    .limit(500)
                )
            )
        for intent in rows:
            await self._tell(intent)
        return len(rows)

    async def _owned_by_running_jobs(self, intents: list[OrderIntent]) -> set[str]:
        """Unsent or in-flight intents of a signal whose job has not finished: that job carries
        them on when it runs again, and two senders must never race. An approved execution's
        orders are sent by its own job (``approved:{execution}``), not the signal's."""
        by_key: dict[str, set[str]] = {}
        for i in intents:
            if i.status in (IntentStatus.PENDING, IntentStatus.SUBMITTED) and i.extra.get(
                "signal_id"
            ):
                by_key.setdefault(f"signal:{i.extra['signal_id']}", set()).add(i.id)
                if i.extra.get("execution_id") is not None:
                    by_key.setdefault(f"approved:{i.extra['execution_id']}", set()).add(i.id)
        if not by_key:
            return set()
        async with self.core.db.session() as s:
            keys = await s.scalars(
                select(Job.dedupe_key).where(
                    Job.dedupe_key.in_(list(by_key)),
                    Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                )
            )
            return {intent_id for k in keys if k for intent_id in by_key[k]}

    async def _reconcile_one(self, intent: OrderIntent) -> None:
        try:
            conn = await self._connection_of(intent)
        except NotFound as e:
            await self._unreachable(intent, e)  # the connection was removed meanwhile
            return
        target: Target | None
        try:
            target = self._target_in(conn, intent)
        except InvalidInput as e:
            # The member chose another account after the preview. A pending intent was never
            # sent, and is sent nowhere now; any other may be at its own (old) account, and is
            # followed there below, read-only.
            if intent.status == IntentStatus.PENDING:
                await self._unreachable(intent, e)
                return
            target = None
        adapter = await self.core.connections.adapter_for(conn)
        try:
            ref = target.ref if target is not None else await _served(adapter, intent)
            if ref is None:
                # The login no longer reaches the old account: say so once, for the member to
                # check there (the query skips it from now on).
                await self.strand(intent, conn.name, unreachable=True)
                return
            try:
                order = await adapter.fetch_order(
                    ref, client_order_id=intent.client_order_id, hint=await self.hint(intent)
                )
            except OrderNotFound:
                if intent.status == IntentStatus.PENDING:
                    assert target is not None  # a pending one of another account ended above
                    # Confirmed but the process died before the broker call, and the broker has
                    # no copy: send it now. Every process runs this, so only the one that wins
                    # the claim sends (Tradier and others do not dedupe client order ids).
                    # The checks hold here too: a kill switch flipped since the Confirm stops it.
                    waited = self.clock() - intent.updated_at
                    if waited > PENDING_SEND_LIMIT:
                        await self._refuse(
                            intent,
                            _too_late(intent, waited),
                            as_read=True,
                            reason="confirmed too long ago to send now",
                        )
                        return
                    gate, _ = await self._pretrade(intent, target, adapter)
                    if isinstance(gate, Refusal) and gate.code == "limit-no-price":
                        log.info("Reconcile of %s deferred: no quote to check limits", intent.id)
                        return  # the next pass tries again
                    if not isinstance(gate, Refusal):
                        marked = await self._mark_sent(
                            intent,
                            gate,
                            reason="the process confirming it stopped before sending it",
                        )
                        if marked is True:
                            await self._send(intent, target, adapter)
                            return
                        if marked is False:
                            return  # another process took it
                        gate = marked
                    # Refused now (kill switch, pause, a limit): it ends, and the member is told.
                    await self._refuse(intent, gate, as_read=True)
                elif intent.status in (
                    IntentStatus.UNKNOWN,
                    IntentStatus.SUBMITTED,
                ) and self._send_settled(intent):
                    await self._set(
                        intent,
                        IntentStatus.FAILED,
                        phase="order.failed",
                        reason="the broker has no such order",
                    )
                return
            # Replaced at the broker (perhaps more than once): the client order id finds the
            # first order, and each replaced one names its successor.
            for _ in range(MAX_REPLACEMENTS):
                if order.status is not OrderStatus.REPLACED or not order.replaced_by:
                    break
                await self._apply_order(intent, order)
                order = await adapter.fetch_order(ref, order_id=order.replaced_by)
        finally:
            await adapter.close()
        await self._apply_order(intent, order)

    async def _unreachable(self, intent: OrderIntent, e: InvalidInput | NotFound) -> None:
        """A pending intent whose account changed, or any intent whose connection was removed.
        A pending one was never sent: it fails, with the reason for the member. Any other may
        be at the broker, where we can no longer look (``disconnect`` told the member)."""
        if intent.status != IntentStatus.PENDING:
            log.warning("Reconcile of %s skipped: %s", intent.id, e.code)
            return
        await self._refuse(
            intent,
            Refusal(e.code, e.user_message),
            as_read=True,
            reason="its connection or account changed before it was sent",
        )

    async def strand(
        self, intent: OrderIntent, connection_name: str, *, unreachable: bool = False
    ) -> bool:
        """Settle an unfinished intent whose connection's account for its mode changed since it
        was stored, without sending it anywhere: not to the new account (it was meant for the
        old one), nor again to the old one. One never sent (a draft or pending) fails. One that
        may have reached the old account is left as it is (False), for the reconciler to follow
        there, read-only, as any other; only ``unreachable`` (the reconciler found that the
        broker login no longer serves the old account) makes it unknown, for the member to
        check there. Only if unchanged since read; False otherwise."""
        if intent.error_code == ACCOUNT_CHANGED:
            return False  # settled so by an earlier run
        now = self.clock()
        where = f"The {intent.mode} account of “{connection_name}” changed"
        if intent.status in (IntentStatus.DRAFT, IntentStatus.PENDING):
            status, phase = IntentStatus.FAILED, "order.failed"
            message = f"{where} since this order was prepared; nothing was sent."
            reason = "its account changed before it was sent"
        elif unreachable and intent.status in (
            IntentStatus.SUBMITTED,
            IntentStatus.UNKNOWN,
            IntentStatus.ACCEPTED,
            IntentStatus.PARTIALLY_FILLED,
        ):
            status, phase = IntentStatus.UNKNOWN, "order.unknown"
            message = (
                f"{where}, and the broker no longer shows Tradecord the old account, so this "
                f"order can no longer be followed: it may be at {mask_account(intent.account_id)}. "
                "Check that account at the broker."
            )
            reason = "its account changed and the broker no longer serves the old one"
        else:
            return False
        async with self.core.db.transaction() as s:
            done = (
                await s.execute(
                    update(OrderIntent)
                    .where(
                        OrderIntent.id == intent.id,
                        OrderIntent.status == intent.status,
                        OrderIntent.updated_at == intent.updated_at,
                    )
                    .values(
                        status=status,
                        error_code=ACCOUNT_CHANGED,
                        error_message=message,
                        updated_at=now,
                    )
                )
            ).rowcount  # type: ignore[attr-defined]
            if done:
                audit.record(
                    s,
                    phase,
                    member_id=intent.member_id,
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                    error=ACCOUNT_CHANGED,
                    reason=reason,
                )
        if done:
            intent.status, intent.updated_at = status, now
            intent.error_code, intent.error_message = ACCOUNT_CHANGED, message
        return bool(done)

    def _send_settled(self, intent: OrderIntent) -> bool:
        """Whether the last send has surely ended (``_send`` gives up after SEND_LIMIT and never
        retries), so that a lookup finding nothing proves the broker never got the order."""
        return self.clock() >= send_settles_at(intent)

    async def apply_update(
        self, broker: str, update: OrderUpdate, *, connection_id: int | None = None
    ) -> OrderIntent | None:
        """An order update from a stream, a poll or a paper sweep. Orders placed outside
        Tradecord have no intent and are ignored."""
        order = update.order
        query = select(OrderIntent).where(OrderIntent.broker == broker)
        if order.client_order_id:
            query = query.where(OrderIntent.client_order_id == order.client_order_id)
        else:
            query = query.where(OrderIntent.broker_order_id == order.id)
        if connection_id is not None:
            # Seen on this connection's stream: an intent of another connection (another
            # account, maybe another member's) is not this order, whatever its ids say.
            query = query.where(OrderIntent.connection_id == connection_id)
        async with self.core.db.session() as s:
            intent = await s.scalar(query)
            if intent is None and order.replaces:
                # A replacing order carries a client order id of its own (Alpaca makes one up):
                # it is the intent's by the id of the order it replaces, or its own once the
                # intent follows it.
                intent = await s.scalar(
                    select(OrderIntent).where(
                        OrderIntent.broker == broker,
                        OrderIntent.broker_order_id.in_([order.id, order.replaces]),
                        *(
                            [OrderIntent.connection_id == connection_id]
                            if connection_id is not None
                            else []
                        ),
                    )
                )
        if intent is None:
            await self._apply_exit(broker, order, connection_id)
            return None
        return await self.apply_order_state(intent, order)

    async def _apply_exit(self, broker: str, order: Order, connection_id: int | None) -> None:
        """An order that is no intent of its own may be an exit of a bracket an intent placed.
        Its end is stored once (compare-and-set), which also stops its watching; a fill closed
        the member's position, so they are told, as when it ended after filling part (those
        shares were sold all the same)."""
        if not order.status.is_final:
            return
        sold = order.status is OrderStatus.FILLED or order.filled_quantity > 0
        async with self.core.db.session() as s:
            intent = await s.scalar(
                select(OrderIntent)
                .join(BracketExit, BracketExit.intent_id == OrderIntent.id)
                .where(BracketExit.broker == broker, BracketExit.broker_order_id == order.id)
            )
            if intent is None and order.parent_id:
                intent = await s.scalar(
                    select(OrderIntent).where(
                        OrderIntent.broker == broker, OrderIntent.broker_order_id == order.parent_id
                    )
                )
        if intent is None or (connection_id is not None and intent.connection_id != connection_id):
            return
        await self._record_exits(intent, [order.id])
        async with self.core.db.transaction() as s:
            won = (
                await s.execute(
                    update(BracketExit)
                    .where(
                        BracketExit.broker == broker,
                        BracketExit.broker_order_id == order.id,
                        BracketExit.notified_status.is_(None),
                    )
                    .values(notified_status=order.status.value)
                )
            ).rowcount  # type: ignore[attr-defined]
            if won == 1 and sold:
                # A step of the entry's trail: /signal show ended at "entry filled", as if the
                # position were still open, while the DM pointed there for every step.
                ended = {} if order.status is OrderStatus.FILLED else {"ended": order.status.value}
                audit.record(
                    s,
                    "order.exit_filled",
                    member_id=intent.member_id,
                    connection_id=intent.connection_id,
                    intent_id=intent.id,
                    at=await _broker_time(s, intent, order),
                    broker_order_id=order.id,
                    exit=exit_kind(order),
                    quantity=order.filled_quantity,
                    price=order.average_fill_price,
                    **ended,
                )
        if won != 1 or not sold:
            return
        notifier = self.core.notifier
        if notifier is not None:
            try:
                await notifier.dm(
                    await self._discord_id(intent),
                    Outgoing(content=describe_exit(intent, order, await self._origin(intent))),
                )
            except Exception:
                log.warning("Could not tell the member about an exit of intent %s", intent.id)
        for listener in self.exit_listeners:
            await listener(intent, order)

    async def _record_exits(self, intent: OrderIntent, exit_ids: Sequence[str]) -> None:
        rows = [
            {
                "intent_id": intent.id,
                "broker": intent.broker,
                "broker_order_id": exit_id,
                "created_at": self.clock(),
            }
            for exit_id in exit_ids
        ]
        async with self.core.db.transaction() as s:
            await s.execute(
                insert_ignoring(self.core.db, BracketExit, rows, ["broker", "broker_order_id"])
            )

    async def apply_order_state(
        self, intent: OrderIntent, order: Order, *, dm: bool = True
    ) -> OrderIntent:
        """Store the broker's state of ``order`` and announce a change; ``dm``: whether the
        member hears it in a DM of its own (not when the caller's message says it)."""
        before = (intent.status, intent.filled_quantity)
        await self._apply_order(intent, order)
        if (intent.status, intent.filled_quantity) != before:
            # The order says how its fills were priced (a paper sweep's may be simulated).
            await self._tell(intent, simulated=order.info.get("simulated") is True, dm=dm)
        return intent

    async def mark_announced(self, intents: list[OrderIntent]) -> None:
        """Another message (a signal's result) tells the member about these orders as they
        are now: later updates in the same state must not be announced again."""

        async def write(s: AsyncSession) -> None:
            for intent in intents:
                status = f"{intent.status}:{intent.filled_quantity}"
                update_later(s, OrderIntent, {"id": intent.id, "notified_status": status})

        await self.core.db.group_commit(write)

    async def _tell(
        self, intent: OrderIntent, *, simulated: bool | None = None, dm: bool = True
    ) -> None:
        """Tell the member once per status (the compare-and-set makes it once across processes).

        ``simulated``: whether the fills were priced by the simulated feed; None: as the
        preview was priced. ``dm``: False when the caller's own message to the member says it;
        the state still counts as told, and the listeners (alert channels) still hear it."""
        notifier = self.core.notifier
        if notifier is None:
            return
        # A partial fill is news each time more fills; the same state twice is not. Nor is an
        # unknown one that can no longer be followed (its status may not change).
        key = f"{intent.status}:{intent.filled_quantity}"
        if intent.error_code == ACCOUNT_CHANGED:
            key += f":{ACCOUNT_CHANGED}"
        async with self.core.db.transaction() as s:
            result = await s.execute(
                update(OrderIntent)
                .where(
                    OrderIntent.id == intent.id,
                    (OrderIntent.notified_status.is_(None)) | (OrderIntent.notified_status != key),
                    # Still the stored state: one another process stored and told since (a fill
                    # after this partial fill) must not be followed by this older one.
                    OrderIntent.status == intent.status,
                    OrderIntent.filled_quantity == intent.filled_quantity,
                )
                # Telling changes no state: tell_untold's window reads the state's time.
                .values(notified_status=key, updated_at=OrderIntent.updated_at)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return
        if simulated is None:
            simulated = bool((intent.extra or {}).get("simulated"))
        # Every message priced by the simulated feed says so; only fills carry a price.
        priced = intent.status in (IntentStatus.FILLED, IntentStatus.PARTIALLY_FILLED)
        note = f" · {SIMULATED_NOTE}" if simulated and priced else ""
        try:
            origin = await self._origin(intent) if dm else None
            if origin is not None and not origin.run_tells:
                await notifier.dm(
                    await self._discord_id(intent),
                    Outgoing(
                        content=f"{'📝 Paper' if intent.mode == 'paper' else '🔴 Live'} order "
                        f"update{origin.head}: {describe_intent(intent)}{note}{origin.tail}"
                    ),
                )
        except Exception as e:
            # Marked told before the DM (so two processes never both send it): a failure that
            # may pass is marked owed for the next pass to send. Not at once: Discord, down
            # or rate limiting, would only refuse a burst of tries as well.
            passing = not _refused_for_good(e)
            log.warning(
                "Could not tell the member about intent %s: %s%s",
                intent.id,
                type(e).__name__,
                "; told again at the next pass" if passing else "",
            )
            if passing:
                await self._owe_tell(intent, key)
        for listener in self.listeners:
            await listener(intent)

    async def _owe_tell(self, intent: OrderIntent, key: str) -> None:
        """Mark ``key``'s DM undelivered, unless a later state was told meanwhile."""
        try:
            async with self.core.db.transaction() as s:
                await s.execute(
                    update(OrderIntent)
                    .where(OrderIntent.id == intent.id, OrderIntent.notified_status == key)
                    .values(notified_status=UNDELIVERED, updated_at=OrderIntent.updated_at)
                )
        except Exception:
            log.warning("Could not mark intent %s's update as undelivered", intent.id)

    async def _origin(self, intent: OrderIntent) -> Origin:
        return (await self.origin_of(intent) if self.origin_of else None) or Origin()

    async def _discord_id(self, intent: OrderIntent) -> int:
        async with self.core.db.session() as s:
            value = await s.scalar(
                select(Member.discord_user_id).where(Member.id == intent.member_id)
            )
        assert value is not None
        return int(value)

    # -- reads and cancels ----------------------------------------------------------------

    async def portfolio(
        self, discord_user_id: int, connection: str | None, mode: str | None
    ) -> Portfolio:
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            balance, positions = await all_or_first_error(
                adapter.fetch_balance(target.ref), adapter.fetch_positions(target.ref)
            )
        finally:
            await adapter.close()
        simulated = bool(balance.info.get("simulated")) or _simulated(positions)
        return Portfolio(target, adapter.display_name, positions, simulated, balance)

    async def quote(
        self, discord_user_id: int, symbol: str, connection: str | None, mode: str | None
    ) -> tuple[Target, str, Quote]:
        """/quote: the bid, ask and last trade the connection's broker gives for ``symbol``,
        and where they come from (Tradecord Paper: the broker it takes its prices from, or the
        simulated feed)."""
        if unknown := symbols.unknown_future(symbol or ""):
            raise InvalidInput(unknown)
        if not symbols.is_symbol(symbol or ""):
            raise InvalidInput(
                f"“{symbol}” is not a symbol: type a ticker (AAPL), a future (/ES or a contract "
                "like ESH7) or a crypto pair (BTCUSD)."
            )
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            canonical = adapter.canonical_symbol(symbol)
            quote = await adapter.fetch_quote(canonical)
        finally:
            await adapter.close()
        # Named as this connection writes it: Tradecord Paper's BTCUSD, not its price
        # source's BTC/USD (its cards, /positions and /history say BTCUSD).
        quote = dataclasses.replace(quote, symbol=canonical)
        source = adapter.display_name
        if target.connection.builtin and not quote.simulated:
            paper = await self.core.connections.paper_settings(discord_user_id)
            if paper.quote_source_broker:
                source = f"{paper.quote_source_broker}, {source}'s price source"
        return target, source, quote

    async def holdings(
        self, discord_user_id: int, connection: str | None, mode: str | None
    ) -> Holdings:
        """Positions only: what /positions shows, without the balance's reads."""
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            positions = await adapter.fetch_positions(target.ref)
        finally:
            await adapter.close()
        return Holdings(target, adapter.display_name, positions, _simulated(positions))

    async def open_orders(
        self, discord_user_id: int, connection: str | None, mode: str | None
    ) -> tuple[Target, str, list[Order]]:
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            orders = await adapter.fetch_open_orders(target.ref)
        finally:
            await adapter.close()
        return target, adapter.display_name, exits_in_order(await self._parents(target, orders))

    async def _parents(self, target: Target, orders: list[Order]) -> list[Order]:
        """Exits of brackets Tradecord placed, linked to their entry where the broker's list
        does not link them (Alpaca lists a bracket's legs flat, as orders of their own)."""
        unlinked = [o.id for o in orders if o.parent_id is None]
        if not unlinked:
            return orders
        async with self.core.db.session() as s:
            rows = await s.execute(
                select(BracketExit.broker_order_id, OrderIntent.broker_order_id)
                .join(OrderIntent, BracketExit.intent_id == OrderIntent.id)
                .where(
                    BracketExit.broker == target.connection.broker,
                    BracketExit.broker_order_id.in_(unlinked),
                    OrderIntent.connection_id == target.connection.id,
                )
            )
            entries = {exit_id: entry for exit_id, entry in rows.all() if entry}
        if not entries:
            return orders
        return [
            dataclasses.replace(o, parent_id=entries[o.id]) if o.id in entries else o
            for o in orders
        ]

    async def history(
        self, discord_user_id: int, connection: str | None, mode: str | None, days: int
    ) -> tuple[Target, str, list[Order]]:
        if not 1 <= days <= 90:
            raise InvalidInput("days must be between 1 and 90.")
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            orders = await adapter.fetch_orders(
                target.ref, since=self.clock() - timedelta(days=days), limit=HISTORY_LIMIT
            )
        finally:
            await adapter.close()
        # Exits linked to their entry as /orders links them (TP, SL), in the order they ended.
        return target, adapter.display_name, await self._parents(target, orders)

    async def cancel(
        self,
        discord_user_id: int,
        connection: str | None,
        mode: str | None,
        order_ids: list[str] | None = None,
    ) -> tuple[Target, list[Order]]:
        """Cancel the given open orders (all open orders when ``order_ids`` is None): each by
        its id, or by the end of it that /orders shows.

        Returns the orders as the broker reports them afterwards.
        """
        target, results, _ = await self._cancel(discord_user_id, connection, mode, order_ids)
        return target, results

    async def cancel_listed(
        self, discord_user_id: int, connection: str | None, mode: str | None, listed: list[str]
    ) -> tuple[Target, list[Order], list[Order]]:
        """/cancel all's answer: cancel the orders its question listed (those that ended since
        are reported as they ended), not one placed after it (a signal's, a bracket's exits
        from a fill), which it returns third, left open."""
        return await self._cancel(discord_user_id, connection, mode, None, listed)

    async def _cancel(
        self,
        discord_user_id: int,
        connection: str | None,
        mode: str | None,
        order_ids: list[str] | None,
        listed: list[str] | None = None,
    ) -> tuple[Target, list[Order], list[Order]]:
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        left: list[Order] = []
        try:
            # Linked to their entries, so a bracket's mates are known where the broker lists
            # its legs flat (Alpaca).
            listing = await self._parents(target, await adapter.fetch_open_orders(target.ref))
            open_orders = {o.id: o for o in listing}
            if listed is not None:
                wanted = list(listed)
                left = [o for oid, o in open_orders.items() if oid not in listed]
            elif order_ids is None:
                wanted = list(open_orders)
            else:
                wanted = [_open_order_id(typed, open_orders, target) for typed in order_ids]
            for oid in wanted:
                # One that filled or ended since the listing is reported as it ended.
                with contextlib.suppress(OrderNotCancelable, OrderNotFound):
                    await adapter.cancel_order(target.ref, oid)
            # Where an exit is cancelled with its whole bracket, the orders that went with it
            # are reported too: a take-profit cancelled alone took the stop-loss along.
            along = (
                _bracket_mates(wanted, open_orders)
                if adapter.capabilities.exit_cancel_takes_bracket
                else []
            )
            deadline = time.monotonic() + self.cancel_wait
            settled = await asyncio.gather(
                *(self._settled(target, adapter, oid, None, deadline) for oid in wanted + along)
            )
            results = exits_in_order([order for order in settled if order is not None])
            for order in results:
                await self._apply_broker_order(target, order)
        finally:
            await adapter.close()
        along_ids = {o.id for o in results}
        return target, results, [o for o in left if o.id not in along_ids]

    # -- changing a working order --------------------------------------------------------

    async def preview_change(
        self,
        discord_user_id: int,
        connection: str | None,
        mode: str | None,
        order_id: str,
        change: OrderChange,
    ) -> Change:
        """The open order ``order_id`` means (its id or the end /orders shows), checked for
        ``change`` as the broker and the pre-trade checks would: nothing is sent."""
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            open_orders = {o.id: o for o in await adapter.fetch_open_orders(target.ref)}
            order = open_orders[_open_order_id(order_id, open_orders, target)]
            adapter.check_change(order, change)
            own = await self._own_intent(target, order.id)
            raised = await self._check_change(target, adapter, order, change, "Not allowed", own)
            if raised is not None and raised[1].daily:
                async with self.core.db.session() as s:
                    stub, gate, counted = raised
                    refusal = await self._over_daily(s, stub, gate, self.clock(), counted)
                    _raise_limit(refusal, "Not allowed")
            quote = None
            if adapter.capabilities.quotes:
                with contextlib.suppress(BrokerError, TimeoutError):
                    quote = await adapter.fetch_quote(order.symbol)
            await self._check_change_affordable(target, adapter, order, change, quote)
            held = None
            if order.side is Side.SELL and change.quantity and change.quantity > order.quantity:
                with contextlib.suppress(BrokerError, TimeoutError):
                    position = await adapter.fetch_position(target.ref, order.symbol)
                    held = position.quantity if position is not None else Decimal(0)
        finally:
            await adapter.close()
        return Change(target, adapter.display_name, order, change, quote=quote, held=held)

    async def _check_change_affordable(
        self,
        target: Target,
        adapter: BrokerAdapter,
        order: Order,
        change: OrderChange,
        quote: Quote | None,
    ) -> None:
        """A change that raises what the order holds back by more than the buying power left
        is refused before its card, as /trade refuses an order: the broker would refuse it
        only after Confirm. Orders that close a position hold back nothing to check."""
        if order.side is Side.SELL and order.asset_class is not AssetClass.FUTURE:
            held = await adapter.fetch_position(target.ref, order.symbol)
            if held is not None and held.quantity > 0:
                return  # a sell of shares held (the rest, a short, is the broker's to judge)

        def held_back(quantity: Decimal, limit: Decimal | None, stop: Decimal | None) -> Decimal:
            request = OrderRequest(
                order.symbol,
                order.side,
                quantity,
                order.order_type,
                order.time_in_force,
                limit_price=limit,
                stop_price=stop,
                asset_class=order.asset_class,
            )
            price = estimate_price(request, quote) if quote is not None else None
            price = price or request.limit_price or request.stop_price
            return adapter.buying_power_required(request, price) if price else Decimal(0)

        left = order.quantity - order.filled_quantity
        after = (change.quantity or order.quantity) - order.filled_quantity
        more = held_back(
            after, change.limit_price or order.limit_price, change.stop_price or order.stop_price
        ) - held_back(left, order.limit_price, order.stop_price)
        if more <= 0:
            return
        try:
            power = await adapter.fetch_buying_power(target.ref, order.asset_class)
        except (BrokerError, TimeoutError):
            return  # the broker judges it at Confirm
        if more > power:
            raise InsufficientBuyingPower(
                f"Not allowed: the change holds back about {money(more)} more, and "
                f"{target.connection.name} has {money(power)} of buying power left. Change it "
                "less, or check /balances."
            )

    async def change_order(
        self,
        discord_user_id: int,
        connection: str | None,
        mode: str | None,
        order_id: str,
        change: OrderChange,
    ) -> Change:
        """Change the open order ``order_id`` (its whole id), read again first. Never resent:
        when the broker's answer is lost, the order is read again to learn whether it changed,
        and ``OrderStateUnknown`` says when that cannot tell. The intent of Tradecord's own
        order follows the change."""
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            try:
                before = await adapter.fetch_order(target.ref, order_id=order_id)
            except OrderNotFound:
                raise NotFound(
                    f"Order {order_id[-8:]} is no longer on {target.connection.name}'s books. "
                    "/orders lists the open ones."
                ) from None
            adapter.check_change(before, change)  # it may have ended since the card
            own = await self._own_intent(target, before.id)
            revalued = await self._check_change(target, adapter, before, change, "Not changed", own)
            lowered = revalued is not None and not revalued[1].daily
            stamped = (
                await self._claim_raise(*revalued) if revalued is not None and not lowered else None
            )
            try:
                after = await adapter.replace_order(target.ref, before, change)
            except BrokerUnavailable as e:
                if not e.maybe_sent:
                    await self._release_raise(stamped, own.id if own else "")
                    raise
                after = await self._changed_meanwhile(target, adapter, before, change)
                if after is None:
                    await self._record_unknown_change(target, before, change)
                    raise OrderStateUnknown(
                        f"The broker did not answer the change of order {before.id[-8:]}, and "
                        "reading it again could not tell whether it was made. It was not sent "
                        "again: /orders shows the order as it stands now."
                    ) from e
            except BrokerError:
                # Refused: the order stands as it was.
                await self._release_raise(stamped, own.id if own else "")
                raise
            await self._follow_change(target, before, after)
            if revalued is not None and lowered:
                await self._claim_raise(*revalued)
        finally:
            await adapter.close()
        return Change(target, adapter.display_name, before, change, after=after)

    async def _own_intent(self, target: Target, broker_order_id: str) -> OrderIntent | None:
        """The intent behind a broker order Tradecord placed (None: placed elsewhere)."""
        async with self.core.db.session() as s:
            return await s.scalar(
                select(OrderIntent).where(
                    OrderIntent.connection_id == target.connection.id,
                    OrderIntent.broker_order_id == broker_order_id,
                )
            )

    async def _check_change(
        self,
        target: Target,
        adapter: BrokerAdapter,
        order: Order,
        change: OrderChange,
        verdict: str,
        own: OrderIntent | None,
    ) -> tuple[OrderIntent, Gate, Decimal] | None:
        """The pre-trade checks of a new order for the order as it would be after the change
        (the kill switch, a pause, the per-order limits, the strategy's for a strategy's entry;
        an order that only closes a position is held back by no limit). When the change raises
        the value of Tradecord's own order under a daily limit, returns what the daily totals
        must then be checked with: the order was counted when placed, at its old value."""
        remaining = (change.quantity or order.quantity) - order.filled_quantity
        request = OrderRequest(
            order.symbol,
            order.side,
            remaining,
            order.order_type,
            order.time_in_force,
            limit_price=change.limit_price or order.limit_price,
            stop_price=change.stop_price or order.stop_price,
            asset_class=order.asset_class,
        )
        # Checked as the order it is: a strategy's entry under the strategy's limits too.
        scope = {
            k: v
            for k, v in (own.extra if own is not None else {}).items()
            if k in ("strategy_id", "leg", "closes_position")
        }
        if own is None:
            # Not placed by Tradecord as an order of its own (a bracket's exit, an order placed
            # at the broker): whether it closes is read from the position, as a close's is, so
            # a member under a limit can still move the stop-loss protecting a position.
            scope["closes_position"] = True
        intent = self._new_intent(
            target,
            request,
            source=own.source if own is not None else "discord",
            idempotency_key=None,
            status=IntentStatus.PENDING,
            extra=scope,
        )  # never stored: what the checks read
        gate, _ = await self._pretrade(intent, target, adapter)
        _raise_limit(gate if isinstance(gate, Refusal) else None, verdict)
        assert isinstance(gate, Gate)
        if own is None or not gate.daily or gate.closes:
            return None  # counted against no daily limit, or closing: nothing to re-value
        if own.extra.get("risk_off"):
            # Sent as a close, it was counted against no daily limit; raised past the position
            # it opens one, which would then count nowhere either.
            raise LimitReached(
                f"{verdict}: this order was placed to close your position, and so was counted "
                "against no daily limit; changed this way it would open a new one. Keep it "
                "closing, and place the rest as a new order with /trade."
            )
        if own.status in NOT_COUNTED or gate.notional is None or not remaining:
            return None
        total = remaining + order.filled_quantity
        value = gate.notional * total / remaining
        counted = sent_notional(own)
        if value == counted:
            return None
        # Its own old value is not counted twice; when it was sent matters (another day's).
        intent.id, intent.quantity, intent.submitted_at = own.id, total, own.submitted_at
        # Lowered, it gives back allowance once the broker has made the change (the caller
        # stamps it then, with no daily limit to pass).
        return intent, Gate(value, gate.daily if value > counted else []), counted

    async def _claim_raise(self, intent: OrderIntent, gate: Gate, counted: Decimal) -> Stamp:
        """Check a raised order against the daily totals and stamp its new value in one
        transaction under the member's lock, as a send is claimed: two changes or sends at
        once cannot both pass on the same allowance. An order sent on an earlier day counts
        today at its new value, as ``_over_daily`` checked it. The stamp and what it replaced,
        read under the lock (another change may have stamped it since it was read). A lowered
        order (no daily limits in ``gate``) is only stamped."""
        now = self.clock()
        async with self.core.db.transaction() as s:
            await lock_row(s, Member, Member.id == intent.member_id)
            refusal = await self._over_daily(s, intent, gate, now, counted)
            _raise_limit(refusal, "Not changed")
            notional, sent = (
                await s.execute(
                    select(OrderIntent.notional, OrderIntent.submitted_at).where(
                        OrderIntent.id == intent.id
                    )
                )
            ).one()
            values: dict[str, Any] = {"notional": gate.notional}
            if gate.daily and sent is not None and sent < _day_start(now):
                values["submitted_at"] = now
            await s.execute(update(OrderIntent).where(OrderIntent.id == intent.id).values(values))
        assert gate.notional is not None
        return Stamp(gate.notional, notional, sent)

    async def _release_raise(self, stamped: Stamp | None, intent_id: str) -> None:
        """The broker refused the change: the order keeps the value (and the day) it had
        before this claim (unless another change has stamped it since)."""
        if stamped is None:
            return
        async with self.core.db.transaction() as s:
            await s.execute(
                update(OrderIntent)
                .where(OrderIntent.id == intent_id, OrderIntent.notional == stamped.mine)
                .values(notional=stamped.notional, submitted_at=stamped.submitted_at)
            )

    async def _changed_meanwhile(
        self, target: Target, adapter: BrokerAdapter, before: Order, change: OrderChange
    ) -> Order | None:
        """After a lost answer: the order working now if the change was made, else None."""
        try:
            now = await adapter.fetch_order(target.ref, order_id=before.id)
            if now.status is OrderStatus.REPLACED and now.replaced_by:
                return await adapter.fetch_order(target.ref, order_id=now.replaced_by)
        except BrokerError:
            return None
        if all(getattr(now, f) == getattr(change, f) for f in change.fields()):
            return now
        return None

    async def _record_unknown_change(
        self, target: Target, before: Order, change: OrderChange
    ) -> None:
        asked = {f: str(getattr(change, f)) for f in sorted(change.fields())}

        async def write(s: AsyncSession) -> None:
            audit.record(
                s,
                "order.change_unknown",
                member_id=target.connection.member_id,
                connection_id=target.connection.id,
                broker_order_id=before.id,
                asked=asked,
            )

        await self.core.db.group_commit(write)

    async def _follow_change(self, target: Target, before: Order, after: Order) -> None:
        """Record the change; the intent of Tradecord's own order takes the new terms and, where
        the broker made a new order, follows it."""
        async with self.core.db.session() as s:
            intent = await s.scalar(
                select(OrderIntent).where(
                    OrderIntent.connection_id == target.connection.id,
                    OrderIntent.broker_order_id == before.id,
                )
            )
        # A new order (Alpaca) is for what was left to fill: the order's total adds what the
        # old one filled.
        earlier = before.filled_quantity if after.id != before.id else Decimal(0)
        now = {
            "quantity": after.quantity + earlier,
            "limit_price": after.limit_price,
            "stop_price": after.stop_price,
        }
        changed = {
            f: [str(getattr(before, f)), str(v)] for f, v in now.items() if getattr(before, f) != v
        }

        async def write(s: AsyncSession) -> None:
            if intent is not None and after.id == before.id:
                update_later(
                    s,
                    OrderIntent,
                    {
                        "id": intent.id,
                        "quantity": after.quantity,
                        "limit_price": after.limit_price,
                        "stop_price": after.stop_price,
                        "updated_at": self.clock(),
                    },
                )
            audit.record(
                s,
                "order.changed",
                member_id=target.connection.member_id,
                connection_id=target.connection.id,
                intent_id=intent.id if intent is not None else None,
                broker_order_id=before.id,
                new_broker_order_id=after.id if after.id != before.id else None,
                changed=changed,
            )

        await self.core.db.group_commit(write)
        if intent is None:
            return
        if after.id != before.id:
            replaced = dataclasses.replace(
                before, status=OrderStatus.REPLACED, replaced_by=after.id
            )
            await self._follow_replacement(intent, replaced)
        else:
            intent.quantity = after.quantity
            intent.limit_price, intent.stop_price = after.limit_price, after.stop_price
        await self._apply_order(intent, after, told=True)  # /modify's answer says it

    async def cancel_open(
        self,
        target: Target,
        adapter: BrokerAdapter,
        order_ids: Sequence[str],
        *,
        dm: bool = True,
    ) -> Cancelled:
        """Cancel open orders for an automation (a signal), skipping ones that ended on their
        own meanwhile, and wait until the broker has carried the cancels out: until then a
        cancelled order still holds its shares, and a sell sent at once would be refused. The
        intents of Tradecord's own orders among them are updated at once (and their members
        told, by a DM each unless ``dm`` is False), not when the reconciler next looks."""
        if not order_ids:
            return Cancelled(0, 0, [])
        async with self.core.db.session() as s:
            ours = {
                i.broker_order_id: i
                for i in await s.scalars(
                    select(OrderIntent).where(
                        OrderIntent.connection_id == target.connection.id,
                        OrderIntent.broker_order_id.in_(list(order_ids)),
                    )
                )
            }
        requested, ended_anyway = [], []
        for oid in order_ids:
            try:
                await adapter.cancel_order(target.ref, oid)
            except OrderNotCancelable:
                ended_anyway.append(oid)  # it ended on its own meanwhile: filled, perhaps
                continue
            except OrderNotFound:
                continue
            requested.append(oid)
        deadline = time.monotonic() + self.cancel_wait

        async def settled(oid: str) -> Order | None:
            try:
                return await self._settled(target, adapter, oid, ours.get(oid), deadline)
            except BrokerError:
                return None  # unread: the reconciler settles ours

        landed = await asyncio.gather(*(settled(oid) for oid in requested + ended_anyway))
        for order in landed:
            intent = ours.get(order.id) if order is not None else None
            if intent is not None and order is not None:
                await self.apply_order_state(intent, order, dm=dm)
        ended = exits_in_order(
            [order for order in landed if order is not None and order.status.is_final]
        )
        unconfirmed = sum(
            1 for order in landed[: len(requested)] if order is None or not order.status.is_final
        )
        return Cancelled(len(requested), unconfirmed, ended, ours)

    async def brackets(self, target: Target, orders: Sequence[Order]) -> dict[str, Bracket]:
        """The brackets Tradecord placed ``orders`` with, by broker order id (a /cancel
        reply names the exits that end with an entry)."""
        async with self.core.db.session() as s:
            intents = await s.scalars(
                select(OrderIntent).where(
                    OrderIntent.connection_id == target.connection.id,
                    OrderIntent.broker_order_id.in_([o.id for o in orders]),
                )
            )
            return _brackets(intents)

    async def _settled(
        self,
        target: Target,
        adapter: BrokerAdapter,
        order_id: str,
        intent: OrderIntent | None,
        deadline: float,
    ) -> Order | None:
        """The order once the broker reports it ended, or as last read at ``deadline`` (a
        cancel is a request: at Alpaca the order is pending_cancel until it lands); None when
        the broker no longer has it."""
        hint = hint_of(intent) if intent is not None else None
        pause = 0.05
        while True:
            try:
                order = await adapter.fetch_order(target.ref, order_id=order_id, hint=hint)
            except OrderNotFound:
                return None
            if order.status.is_final or time.monotonic() + pause > deadline:
                return order
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _apply_broker_order(self, target: Target, order: Order) -> None:
        async with self.core.db.session() as s:
            intent = await s.scalar(
                select(OrderIntent).where(
                    OrderIntent.connection_id == target.connection.id,
                    OrderIntent.broker_order_id == order.id,
                )
            )
        if intent is not None:
            await self._apply_order(intent, order, told=True)  # /cancel's answer says it

    async def reset_paper(self, discord_user_id: int) -> Target:
        """Back to the starting cash; open paper intents end as cancelled."""
        from adapters.paper import reset

        target = await self.core.connections.resolve(discord_user_id, None, "paper")
        await reset(
            self.core.db,
            target.connection.id,
            starting_cash=Decimal(str(self.core.settings.paper_starting_cash)),
        )
        async with self.core.db.transaction() as s:
            await s.execute(
                update(OrderIntent)
                .where(
                    OrderIntent.connection_id == target.connection.id,
                    OrderIntent.status.in_(list(IntentStatus.OPEN)),
                )
                .values(
                    status=IntentStatus.CANCELLED,
                    # Told by /paper reset's own answer (tell_untold reads the status part).
                    notified_status=f"{IntentStatus.CANCELLED}:",
                    updated_at=self.clock(),
                )
            )
            # A card previewed before the reset was priced against positions that are gone: a
            # "sell to close" confirmed after it would open a short nobody previewed.
            await s.execute(
                update(OrderIntent)
                .where(
                    OrderIntent.connection_id == target.connection.id,
                    OrderIntent.status == IntentStatus.DRAFT,
                )
                .values(status=IntentStatus.DISCARDED, updated_at=self.clock())
            )
            audit.record(
                s,
                "paper.reset",
                member_id=target.connection.member_id,
                connection_id=target.connection.id,
            )
        return target

    async def get_intent(self, intent_id: str) -> OrderIntent:
        async with self.core.db.session() as s:
            intent = await s.get(OrderIntent, intent_id)
        if intent is None:
            raise NotFound("That order preview no longer exists. Run /trade again.")
        return intent

    async def _owned_intent(self, intent_id: str, discord_user_id: int) -> OrderIntent:
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(OrderIntent, Member.discord_user_id)
                    .join(Member, Member.id == OrderIntent.member_id)
                    .where(OrderIntent.id == intent_id)
                )
            ).first()
        if row is None:
            raise NotFound("That order preview no longer exists. Run /trade again.")
        intent, owner = row
        if owner != discord_user_id:
            raise PermissionDenied(
                "This order belongs to someone else. Run /trade yourself to get your own."
            )
        return intent

    async def account_changed(self, intent: OrderIntent) -> bool:
        """Whether the member chose another account for the intent's mode on its connection
        since it was stored (``NotFound`` if the connection was removed)."""
        try:
            await self._target_of(intent)
        except InvalidInput:
            return True
        return False

    async def hint(self, intent: OrderIntent) -> SubmissionHint:
        """``hint_of``, with the broker orders other intents at the account own: a broker
        that finds an order by its content (TradeStation) must never take one of those for
        this intent, which its memory of what it sent (gone after a restart, not shared with
        other processes) no longer tells it."""
        hint = hint_of(intent)
        if not get_adapter_class(intent.broker).finds_orders_by_content:
            return hint
        since = hint.sent_at - timedelta(days=1)
        async with self.core.db.session() as s:
            entries = await s.scalars(
                select(OrderIntent.broker_order_id).where(
                    OrderIntent.broker == intent.broker,
                    OrderIntent.account_id == intent.account_id,
                    OrderIntent.id != intent.id,
                    OrderIntent.broker_order_id.is_not(None),
                    OrderIntent.updated_at >= since,
                )
            )
            exits = await s.scalars(
                select(BracketExit.broker_order_id)
                .join(OrderIntent, BracketExit.intent_id == OrderIntent.id)
                .where(
                    OrderIntent.broker == intent.broker,
                    OrderIntent.account_id == intent.account_id,
                    OrderIntent.updated_at >= since,
                )
            )
            claimed = frozenset(x for x in (*entries, *exits) if x)
        return dataclasses.replace(hint, claimed=claimed)

    async def _target_of(self, intent: OrderIntent) -> Target:
        return self._target_in(await self._connection_of(intent), intent)

    async def _connection_of(self, intent: OrderIntent) -> Connection:
        async with self.core.db.session() as s:
            conn = (
                (
                    await s.scalars(
                        select(Connection)
                        .where(Connection.id == intent.connection_id)
                        .options(joinedload(Connection.accounts))
                    )
                )
                .unique()
                .first()
            )
        if conn is None:
            raise NotFound("The connection for this order was removed.")
        return conn

    @staticmethod
    def _target_in(conn: Connection, intent: OrderIntent) -> Target:
        """The intent's account on ``conn``, if it is still the one chosen for its mode."""
        account = conn.account(intent.mode)
        if account is None or account.account_id != intent.account_id:
            raise InvalidInput(
                f"The {intent.mode} account of “{conn.name}” changed since this order was "
                "prepared; nothing was sent. Run /trade again."
            )
        return Target(conn, account, intent.mode)

    @staticmethod
    def _already(intent: OrderIntent) -> str:
        if intent.status == IntentStatus.DISCARDED:
            why = (
                "cancelled, expired, or its paper account was reset"
                if intent.mode == "paper"
                else "cancelled or expired"
            )
            return f"This preview was {why}; nothing was sent. Run /trade again."
        return f"This order was already confirmed (it is {intent.status.replace('_', ' ')})."


async def _served(adapter: BrokerAdapter, intent: OrderIntent) -> AccountRef | None:
    """The intent's own account, if the connection's login still reaches it (its type as the
    broker says: the intent does not store it); None if the broker no longer lists it."""
    mode = Environment(intent.mode)
    return next(
        (
            a.ref()
            for a in await adapter.fetch_accounts()
            if a.id == intent.account_id and a.environment is mode
        ),
        None,
    )


def _add_validated(s: AsyncSession, intent: OrderIntent) -> None:
    """Add a new intent with its first audit event (the source is the intent's own)."""
    s.add(intent)
    audit.record(
        s,
        "order.validated",
        member_id=intent.member_id,
        connection_id=intent.connection_id,
        intent_id=intent.id,
        symbol=intent.symbol,
        side=intent.side,
        quantity=intent.quantity,
        order_type=intent.order_type,
        mode=intent.mode,
        source=intent.source,
    )


def _brackets(intents: Iterable[OrderIntent]) -> dict[str, Bracket]:
    out = {}
    for intent in intents:
        bracket = bracket_of((intent.extra or {}).get("bracket"))
        if bracket is not None and intent.broker_order_id:
            out[intent.broker_order_id] = bracket
    return out


BRACKET_FIELDS = (
    "take_profit",
    "stop_loss",
    "stop_loss_limit",
    "stop_loss_trail_amount",
    "stop_loss_trail_percent",
)


def bracket_json(bracket: Bracket | None) -> dict[str, str | None] | None:
    if bracket is None:
        return None
    values = ((k, getattr(bracket, k)) for k in BRACKET_FIELDS)
    return {k: None if v is None else str(v) for k, v in values}


def bracket_of(data: Any) -> Bracket | None:
    if not data:
        return None
    return Bracket(**{k: Decimal(data[k]) if data.get(k) else None for k in BRACKET_FIELDS})


def request_of(intent: OrderIntent) -> OrderRequest:
    """The order as stored, brackets included: what we send and what lookups match on."""
    return OrderRequest(
        symbol=intent.symbol,
        side=Side(intent.side),
        quantity=intent.quantity,
        order_type=OrderType(intent.order_type),
        time_in_force=TimeInForce(intent.time_in_force),
        limit_price=intent.limit_price,
        stop_price=intent.stop_price,
        client_order_id=intent.client_order_id,
        asset_class=AssetClass(intent.asset_class),
        bracket=bracket_of(intent.extra.get("bracket")),
        trail_amount=_decimal_or_none(intent.extra.get("trail_amount")),
        trail_percent=_decimal_or_none(intent.extra.get("trail_percent")),
        extended_hours=intent.extra.get("extended_hours") is True,
    )


def _request_extra(request: OrderRequest) -> dict[str, Any]:
    """What the columns do not hold, kept with the intent: a trailing stop's distance (the
    columns hold fixed prices) and extended hours."""
    kept: dict[str, Any] = {
        name: str(value)
        for name, value in (
            ("trail_amount", request.trail_amount),
            ("trail_percent", request.trail_percent),
        )
        if value is not None
    }
    if request.extended_hours:
        kept["extended_hours"] = True
    return kept


def _decimal_or_none(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None


def hint_of(intent: OrderIntent) -> SubmissionHint:
    """What we sent and when, so brokers that do not echo our id can still find the order."""
    sent = intent.extra.get("sent_at")
    sent_at = datetime.fromisoformat(sent) if sent else intent.updated_at
    return SubmissionHint(request_of(intent), sent_at)


def send_settles_at(intent: OrderIntent) -> datetime:
    """When the intent's last send has surely ended, one way or the other."""
    return hint_of(intent).sent_at + SEND_SETTLED_AFTER


def known_price(intent: OrderIntent) -> Decimal | None:
    """The price the order was previewed at, else its own limit or stop price."""
    estimated = (intent.extra or {}).get("estimated_price")
    if estimated:
        return Decimal(str(estimated))
    return intent.limit_price if intent.limit_price is not None else intent.stop_price


def check_stop_side(request: OrderRequest, quote: Quote) -> None:
    """Refuse a stop the market has already passed: it would trigger at once and fill at the
    market, far from the stop price the preview would be estimated at (brokers such as Alpaca
    reject it for that reason)."""
    now = stop_passed(request, quote)
    if now is None:
        return
    stop = request.stop_price
    buy = request.side is Side.BUY
    raise InvalidInput(
        f"A {request.side.value} stop triggers when {request.symbol} "
        f"{'rises' if buy else 'falls'} to stop_price, and it is at {price_text(now)} now: "
        f"a stop at {price_text(stop)} would trigger at once and fill at the market price. "
        f"Use a stop_price {'above' if buy else 'below'} {price_text(now)}, or "
        f"order_type:limit to {request.side.value} at {price_text(stop)} or "
        f"{'less' if buy else 'more'}."
    )


def check_bracket_side(request: OrderRequest, price: Decimal) -> None:
    """A take-profit the wrong side of the entry would fill at once, and so would such a
    stop-loss: the bracket would only be a round trip."""
    b = request.bracket
    if b is None:
        return
    buy = request.side is Side.BUY
    levels = (("take_profit", b.take_profit, buy), ("stop_loss", b.stop_loss, not buy))
    for name, level, above in levels:
        if level is not None and ((level <= price) if above else (level >= price)):
            raise InvalidInput(
                f"This {request.side.value} is estimated at {price_text(price)}: its {name} "
                f"must be {'above' if above else 'below'} that, not {price_text(level)}. "
                f"The take-profit closes at a gain ({'above' if buy else 'below'} the entry), "
                f"the stop-loss at a limited loss ({'below' if buy else 'above'} it)."
            )


def stop_passed(request: OrderRequest, quote: Quote) -> Decimal | None:
    """The market price (ask for a buy, bid for a sell) a stop order has already reached, so
    it would trigger at once; None for any other order, or when the quote has no price."""
    if request.order_type not in NEEDS_STOP or request.stop_price is None:
        return None
    now = _quote_price(quote, request.side)
    if now is None:
        return None
    stop = request.stop_price
    return None if ((stop > now) if request.side is Side.BUY else (stop < now)) else now


# How far a dollar-sized market order may outgrow its dollars by Confirm (prices tick while
# the member reads the card; a jump is another order).
SIZED_SLACK = Decimal("1.10")


def _quote_price(quote: Quote, side: Side) -> Decimal | None:
    price = quote.ask if side is Side.BUY else quote.bid
    if price <= 0:
        price = quote.last
    return price if price > 0 else None


def _raise_limit(refusal: Refusal | None, verdict: str) -> None:
    """A pre-trade refusal of a change, said as ``verdict`` ("Not allowed" at the card)."""
    if refusal is not None:
        refused = LimitReached(refusal.message.replace("Not sent", verdict, 1))
        refused.code = refusal.code
        raise refused


def sent_notional(intent: OrderIntent) -> Decimal:
    """The notional an order sent earlier counts for: as stamped when sent, else (sent before
    any limit needed its price) what has filled so far; once cancelled or expired, only what
    filled."""
    if intent.notional is not None and intent.status not in ENDED_UNFILLED:
        return intent.notional
    if not intent.filled_quantity:
        return Decimal(0)
    if intent.average_fill_price is None:
        # Filled at a price the broker did not report: the filled share of the stamped value.
        return (intent.notional or Decimal(0)) * intent.filled_quantity / intent.quantity
    return intent.filled_quantity * intent.average_fill_price * symbols.multiplier(intent.symbol)


def amount_of(order: OrderInput) -> Decimal | None:
    """/trade's amount, when the order is sized by one (checked: one of quantity, amount or
    risk)."""
    given = [n for n, v in (("quantity", order.quantity), ("amount", order.amount)) if v]
    if order.risk:
        given.append("risk")
    if not given:
        raise InvalidInput(
            "Give quantity (how many shares, contracts or coins) or amount (how many "
            "dollars to buy or sell for), or risk with a stop_loss (how many dollars to lose "
            "if it fills)."
        )
    if len(given) > 1:
        raise InvalidInput(
            f"Give {' or '.join(given)}, not both: quantity is how many to trade, amount how "
            "many dollars, risk how many dollars to lose at the stop-loss."
        )
    if order.amount is None:
        return None
    amount = parse_decimal(order.amount.strip().removeprefix("$").replace(",", ""), "Amount")
    if amount is None or amount <= 0:
        raise InvalidInput("Amount must be more than zero: how many dollars, e.g. 500.")
    if amount >= MAX_NUMBER:
        raise InvalidInput(f"Amount is too large: it must be less than {MAX_NUMBER:,}.")
    return amount


def risk_of(order: OrderInput) -> Decimal | None:
    """/trade's risk: the dollars to lose if the bracket's stop-loss fills (``amount_of``
    checked it is the only size given)."""
    if order.risk is None:
        return None
    risk = parse_decimal(order.risk.strip().removeprefix("$").replace(",", ""), "Risk")
    if risk is None or risk <= 0:
        raise InvalidInput("Risk must be more than zero: how many dollars to lose, e.g. 100.")
    if risk >= MAX_NUMBER:
        raise InvalidInput(f"Risk is too large: it must be less than {MAX_NUMBER:,}.")
    if not order.stop_loss and not order.trailing_stop_loss:
        raise InvalidInput(
            "risk sizes the order by its distance to the stop-loss: give stop_loss too, e.g. "
            "risk:100 stop_loss:190 (a loss of $100 if it fills), or trailing_stop_loss."
        )
    return risk


def trailing_stop_loss_of(order: OrderInput) -> tuple[Decimal | None, Decimal | None]:
    """/trade's trailing_stop_loss as (amount, percent): "1.50" or "$1.50" trails by a price
    distance, "2%" by a percent of the best price."""
    text = (order.trailing_stop_loss or "").strip()
    if not text:
        return None, None
    percent = text.endswith("%")
    value = parse_decimal(text.removesuffix("%").strip(), "trailing_stop_loss")
    if value is None or value <= 0 or (percent and value >= 100) or value >= MAX_NUMBER:
        raise InvalidInput(
            "trailing_stop_loss is how far the stop-loss follows the best price: a price "
            "distance like 1.50, or a percent under 100 like 2%."
        )
    return (None, value) if percent else (value, None)


def check_trail(request: OrderRequest, price: Decimal) -> None:
    """A sell trailing stop that trails by more than the price stands at or below zero, where
    the price can never fall to: it would never trigger."""
    trail = request.trail_amount
    if request.side is Side.SELL and trail is not None and trail >= price:
        raise InvalidInput(
            f"A sell trailing stop {price_text(trail)} behind the best price of "
            f"{request.symbol} (about {price_text(price)} now) would stand at or below zero "
            "and never trigger. Trail by less than the price, or by a percent with "
            "trail_percent."
        )


def trailing_start(request: OrderRequest, price: Decimal) -> Decimal:
    """Where a bracket's trailing stop-loss starts if the entry fills at ``price``: its trail
    below a buy (above a sell), at the symbol's price step."""
    b = request.bracket
    assert b is not None and b.trailing
    percent = b.stop_loss_trail_percent
    distance = price * percent / 100 if percent is not None else b.stop_loss_trail_amount
    assert distance is not None
    start = symbols.price_away(
        request.symbol, price, distance, -1 if request.side is Side.BUY else 1
    )
    if start <= 0:
        raise InvalidInput(
            f"A trailing stop-loss {price_text(distance)} behind an entry at about "
            f"{price_text(price)} would start at or below zero: trail by less."
        )
    return start


def sized_by_risk(
    request: OrderRequest, risk: Decimal, price: Decimal, adapter: BrokerAdapter
) -> OrderRequest:
    """``request`` for as many units as lose ``risk`` if the bracket's stop-loss fills, from
    the estimated entry ``price`` (``check_bracket_side`` put the stop on the losing side)."""
    assert request.bracket is not None and request.bracket.stop_loss is not None
    per_unit = abs(price - request.bracket.stop_loss) * symbols.multiplier(request.symbol)
    asset = request.asset_class
    assert asset is not None
    fractional = adapter.fraction_allowed(
        asset,
        request.side,
        request.time_in_force,
        bracket=True,
        exiting=False,
        symbol=request.symbol,
    )
    with localcontext(prec=60):
        units = (risk / per_unit).quantize(
            Decimal("1e-8") if fractional else Decimal(1), ROUND_DOWN
        )
    if units <= 0:
        what = {AssetClass.EQUITY: "share", AssetClass.FUTURE: "contract"}.get(asset, "unit")
        raise InvalidInput(
            f"One {what} of {request.symbol} loses about {price_text(per_unit)} from "
            f"{price_text(price)} to the stop-loss at {price_text(request.bracket.stop_loss)}: "
            f"{money(risk)} of risk does not cover it. Raise the risk to at least "
            f"{money(_cent_up(per_unit))}, move the stop-loss closer, or give quantity."
        )
    whole = units == units.to_integral_value()
    return dataclasses.replace(
        request, quantity=units.quantize(Decimal(1)) if whole else units.normalize()
    )


def sized_by_amount(
    request: OrderRequest, amount: Decimal, price: Decimal, adapter: BrokerAdapter
) -> OrderRequest:
    """``request`` for as many units as ``amount`` buys (or sells for) at ``price``, rounded
    down: whole units, unless the broker takes a fraction of one for this order (crypto; at
    Alpaca a stock's simple day buy)."""
    asset = request.asset_class
    assert asset is not None  # build_request set it
    fractional = adapter.fraction_allowed(
        asset,
        request.side,
        request.time_in_force,
        bracket=request.bracket is not None,
        exiting=False,  # a sell by amount is not known to close a position: whole shares
        symbol=request.symbol,
    )
    unit = symbols.multiplier(request.symbol) * price
    with localcontext(prec=60):
        units = (amount / unit).quantize(Decimal("1e-8") if fractional else Decimal(1), ROUND_DOWN)
    if units <= 0:
        what = "share" if asset is AssetClass.EQUITY else "unit"
        raise InvalidInput(
            f"{money(amount)} does not {request.side.value} one {what} of {request.symbol} at "
            f"about {price_text(price)}: raise the amount to at least {money(_cent_up(unit))}, "
            "or give "
            "quantity."
        )
    # As build_request writes a typed quantity: "4", not "4.00000000".
    whole = units == units.to_integral_value()
    return dataclasses.replace(
        request, quantity=units.quantize(Decimal(1)) if whole else units.normalize()
    )


def estimate_price(request: OrderRequest, quote: Quote) -> Decimal | None:
    """None when the quote has no price for the order's side nor a last trade."""
    stop, limit = request.stop_price, request.limit_price
    if request.order_type is OrderType.STOP_LIMIT and stop is not None and limit is not None:
        # The higher of the two, as Tradecord Paper holds buying power for it: a buy may pay up
        # to its limit once triggered; a sell is valued at its stop.
        return max(stop, limit)
    if request.order_type in NEEDS_LIMIT and request.limit_price is not None:
        return request.limit_price
    if request.order_type is OrderType.STOP and request.stop_price is not None:
        return request.stop_price
    # As at submit: brokers send 0 for a missing bid or ask (outside market hours, say).
    return _quote_price(quote, request.side)


def _still_pending(intent: OrderIntent, *, as_read: bool) -> list[Any]:
    """The intent's row while it is unsent (and, ``as_read``, unchanged since it was read):
    the compare-and-set of everything that sends or refuses it."""
    conditions = [OrderIntent.id == intent.id, OrderIntent.status == IntentStatus.PENDING]
    if as_read:
        conditions.append(OrderIntent.updated_at == intent.updated_at)
    return conditions


def _too_late(intent: OrderIntent, waited: timedelta) -> Refusal:
    minutes = int(waited.total_seconds() // 60)
    return Refusal(
        "order-too-late",
        f"Not sent: {intent.side} {qty(intent.quantity)} {intent.symbol} was confirmed "
        f"{minutes} minutes ago, but Tradecord stopped before sending it; an order that late "
        "would trade at prices you never saw. Place it again if you still want it.",
    )


def _kill_switch() -> Refusal:
    return Refusal(
        "kill-switch",
        "Trading is stopped for everyone by the bot owner (kill switch); nothing was sent. "
        "Cancelling open orders still works.",
    )


def _stopped(switch_on: bool, member: Member | None, *, closing: bool = False) -> Refusal | None:
    """The kill switch stops everything; a member's pause stops strategy signals and every
    order of theirs that takes on risk. ``closing``: an order of the member's own (not a
    signal's) that only closes positions, which a pause lets through: a member who pauses in a
    hurry must still be able to get out."""
    if switch_on:
        return _kill_switch()
    if member is None:
        return Refusal("member-gone", "Your membership was removed; nothing was sent.")
    if member.paused_at is not None and not closing:
        return Refusal(
            "member-paused",
            "Your trading is paused, so nothing was sent: while paused, only your own orders "
            "that close a position go through (/close, /flatten), and no strategy signal does. "
            "Run /resume to trade again.",
        )
    return None


def _member_closing(intent: OrderIntent, gate: Gate) -> bool:
    """Whether a pause lets this order through (see ``_stopped``)."""
    return gate.closes and intent.source != "signal"


def _day_start(now: datetime) -> datetime:
    """Where the daily limits' day (UTC) began."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


class Stamp(NamedTuple):
    """A change's new value stamped on its order, and what it replaced."""

    mine: Decimal
    notional: Decimal | None
    submitted_at: datetime | None


async def _stopped_at_claim(
    s: AsyncSession, intent: OrderIntent, gate: Gate, member: Member | None
) -> Refusal | None:
    """The kill switch and the member's pause, read again where the send is claimed: both
    were read a moment before (with broker calls in between), and once /killswitch or /pause
    has answered nothing it stops may be sent."""
    return _stopped(await _switch_on(s), member, closing=_member_closing(intent, gate))


async def _switch_on(s: AsyncSession) -> bool:
    """The kill switch, read again in the transaction that claims a send: the pre-trade checks
    read it a moment before, and /killswitch may have gone on since. On PostgreSQL the read
    shares the switch's row lock, so a claim commits before /killswitch on does or sees it on:
    once /killswitch has answered, nothing more is sent. Read once per transaction (a
    fan-out's batch of claims)."""
    if "kill_switch_on" not in s.info:
        on = await s.scalar(
            select(Switch.on).where(Switch.name == KILL_SWITCH).with_for_update(read=True)
        )
        s.info["kill_switch_on"] = bool(on)
    return bool(s.info["kill_switch_on"])


async def _pretrade_rows(
    db: Database, wanted: Sequence[tuple[int, str | None]]
) -> list[tuple[bool, Member | None, Strategy | None]]:
    """What the pre-trade checks read, for many sends in one session: the kill switch once,
    then the members and strategies each in one query."""
    member_ids = sorted({m for m, _ in wanted})
    strategy_ids = sorted({sid for _, sid in wanted if sid is not None})
    async with db.session() as s:
        switch = await s.get(Switch, KILL_SWITCH)
        members = {
            m.id: m for m in await s.scalars(select(Member).where(Member.id.in_(member_ids)))
        }
        strategies = (
            {
                x.id: x
                for x in await s.scalars(select(Strategy).where(Strategy.id.in_(strategy_ids)))
            }
            if strategy_ids
            else {}
        )
    on = switch is not None and switch.on
    return [(on, members.get(m), strategies.get(sid) if sid else None) for m, sid in wanted]


async def _market_opens_at(asset: AssetClass | None, now: datetime) -> datetime | None:
    """When the exchange next opens if it is shut now; None when open, for crypto, or when the
    calendar cannot tell (the card's line is advice: a preview never fails for it)."""
    if asset is None:
        return None
    try:
        # In a thread: the first calendar imports pandas and builds a year (~0.6 s).
        return await asyncio.to_thread(next_open, asset, now, FillHours.EXCHANGE)
    except Exception:
        log.exception("No exchange calendar for %s at %s", asset, now)
        return None


# Statuses of a close that may still take the position: being sent, or sent and working.
CLOSING_STATUSES = (
    IntentStatus.PENDING,
    IntentStatus.SUBMITTED,
    IntentStatus.ACCEPTED,
    IntentStatus.PARTIALLY_FILLED,
    IntentStatus.UNKNOWN,
)


@dataclass(frozen=True, slots=True)
class Closing:
    """A member's closes of one position that may still take it: ``working`` at the broker
    (their open orders), and the quantities of those ``sending`` (no broker answer yet)."""

    working: list[Order] = field(default_factory=list)
    sending: list[Decimal] = field(default_factory=list)

    @property
    def quantity(self) -> Decimal:
        return sum((o.remaining_quantity for o in self.working), sum(self.sending, Decimal(0)))

    def __bool__(self) -> bool:
        return bool(self.working or self.sending)


def _in_flight(
    status: str, updated_at: datetime, intent_id: str, now: datetime, mine: Any | None
) -> bool:
    """Whether another close not among the open orders is still on its way to the broker.
    A sent one is, until its send has ended one way or the other; a confirmed one not yet sent,
    for as long as it may be sent, if it was confirmed before this one (``mine``): of two
    confirmed together each sees the other, and exactly one of them must give way."""
    if status == IntentStatus.SUBMITTED:
        return now - updated_at < SEND_SETTLED_AFTER
    if status != IntentStatus.PENDING or now - updated_at >= PENDING_SEND_LIMIT:
        return False
    if mine is None or mine.status != IntentStatus.PENDING:
        return True  # a preview, or this one is past its own check
    return (updated_at, intent_id) < (mine.updated_at, mine.id)


def closing_already_text(already: Closing, held: Decimal, symbol: str) -> str:
    """Why a close is refused while the member's earlier closes (``already``) of the
    position ``held`` still work or are being sent, and what to do."""
    n = len(already.working) + len(already.sending)
    one = n == 1
    them = "it" if one else "them"
    left = abs(held) - already.quantity
    if left <= 0:
        told = f"all of your {qty(abs(held))} {symbol}"
        then = f"/orders lists {them}; cancel {them} with /cancel order to close another way."
    else:
        told = f"{qty(already.quantity)} of your {qty(abs(held))} {symbol}"
        then = f"/close {symbol} quantity:{left.normalize():f} closes the rest."
    earlier = f"your earlier {'close' if one else f'{n} closes'} of {symbol}"
    if not already.sending:
        return (
            f"{earlier} {'is' if one else 'are'} still working at the broker and close"
            f"{'s' if one else ''} {told} when filled (a market order placed while the market "
            f"is shut waits for the open). {then}"
        )
    where = (
        "being sent to the broker right now"
        if not already.working
        else "working at the broker or being sent to it right now"
    )
    return (
        f"{earlier} {'is' if one else 'are'} {where} and close{'s' if one else ''} {told} "
        f"when filled. Wait a moment for the broker's answer: /orders shows what is still "
        f"working. {then}"
    )


def closing_extra(position: Position) -> dict[str, Any]:
    """An order that must only close ``position`` (/close, /flatten): checked again when it is
    sent, and its fill is told against the position's average price."""
    return {"close_only": True, "position_average": str(position.average_price)}


def reduces(request: OrderRequest, held: Decimal) -> bool:
    """Whether ``request`` only closes (part of) the position ``held``, opening nothing."""
    closing = (request.side is Side.SELL and held > 0) or (request.side is Side.BUY and held < 0)
    return closing and request.quantity <= abs(held)


def already_closing(orders: Sequence[Order], side: Side, *, follow: bool) -> Decimal:
    """How much of the position older open orders on ``side`` close first, as the broker
    counts them: a bracket's exits once (one or the other fills), none of them where they
    follow the position (``Capabilities.exits_follow_position``: they make room), and none
    still held for their entry's fill."""
    alone, brackets = Decimal(0), dict[str, Decimal]()
    for o in orders:
        if o.side is not side or o.status is OrderStatus.PENDING:
            continue
        if o.parent_id is None:
            alone += o.remaining_quantity
        elif not follow:
            brackets[o.parent_id] = max(brackets.get(o.parent_id, Decimal(0)), o.remaining_quantity)
    return alone + sum(brackets.values(), Decimal(0))


def buying_power_after(
    buying_power: Decimal,
    request: OrderRequest,
    held: Decimal,
    required: Decimal,
    already_closing: Decimal = Decimal(0),
) -> Decimal:
    """Buying power left once the order fills. ``required``: what all of it takes when it opens
    (``BrokerAdapter.buying_power_required``, so much a unit at every broker). The part that
    closes ``held`` frees as much a unit as the rest takes, so a flip is charged its opening
    part less what its closing part frees: the rule Tradecord Paper checks orders by
    (``engine.order_requirement``), split by the same ``engine.closing_quantity``."""
    closing = closing_quantity(held, request.side, request.quantity, already_closing)
    with localcontext(prec=60):  # exact: ``required`` is a multiple of the quantity
        change = required * (request.quantity - 2 * closing) / request.quantity
    return buying_power - change


def price_text(value: Decimal, *, most: int = 8) -> str:
    """A price as typed or quoted: cents, more places (up to ``most``) only when it has them
    (0.000123)."""
    places = min(most, max(2, -int(value.normalize().as_tuple().exponent)))
    return f"${value:,.{places}f}"


def fill_price(value: Decimal) -> str:
    """What a fill was priced at: cents, with the fraction of a cent a fill at the midpoint or
    with price improvement has (270.285: rounded to $270.28 it no longer matched the cash the
    fill took), up to 4 places (8 below $1)."""
    return price_text(value, most=4 if abs(value) >= 1 else 8)


def pnl_text(long: bool, entry: Decimal, exit: Decimal, quantity: Decimal, symbol: str) -> str:
    """What closing ``quantity`` of a position opened at ``entry`` made (fees unknown here)."""
    per_unit = exit - entry if long else entry - exit
    pnl = cents(per_unit * quantity * symbols.multiplier(symbol))  # a tiny loss is $0.00
    return f" P&L {'+' if pnl > 0 else ''}{money(pnl)} before fees."


def _cent_up(value: Decimal) -> Decimal:
    """A minimum to the cent above: the nearest cent may fall short of it."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_CEILING)


def filled_text(intent: OrderIntent, price: Decimal | None, quantity: Decimal) -> str:
    """A fill as members read it ("Filled: sell 10 AAPL at $210.00."), with what the position
    made when the order closed one whose average it knows (/close, /flatten, a signal's
    exit)."""
    what = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
    at = f" at {fill_price(price)}" if price else ""
    entry = (intent.extra or {}).get("position_average")
    if not entry or not price:
        return f"Filled: {what}{at}."
    long = intent.side == Side.SELL  # it closed a long
    result = pnl_text(long, Decimal(entry), price, quantity, intent.symbol)
    average = fill_price(Decimal(entry))
    return f"Filled: {what}{at}, against the position's average of {average}.{result}"


# Why an order that could not fill at once ended: the broker cancels it, nobody asked to.
IMMEDIATE = {
    TimeInForce.FOK: "A fill-or-kill order fills in full at once or not at all, and it could "
    "not fill in full at its price just then.",
    TimeInForce.IOC: "An immediate-or-cancel order cancels whatever does not fill at once.",
}


def placed(order: Order) -> bool:
    """Whether a confirmed order went through: working or filled (even in part), not ended
    unfilled at once (rejected, or a fill-or-kill that could not fill)."""
    if order.status is OrderStatus.REJECTED:
        return False
    ended = order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED)
    return not (ended and not order.filled_quantity)


def describe(intent: OrderIntent, order: Order) -> str:
    what = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
    bracket = _bracket_note(intent, order.status)
    if order.status is OrderStatus.FILLED:
        return filled_text(intent, order.average_fill_price, order.filled_quantity) + bracket
    if order.status is OrderStatus.PARTIALLY_FILLED:
        return _partly(what, order.filled_quantity, order.average_fill_price) + bracket
    if order.status is OrderStatus.REJECTED:
        return f"Rejected: {what}. {order.reject_reason or ''}".strip()
    if order.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        ended = order.status.value.capitalize()
        text = _ended(ended, what, order.filled_quantity, order.average_fill_price)
        if order.filled_quantity < order.quantity and intent.time_in_force in IMMEDIATE:
            text += " " + IMMEDIATE[TimeInForce(intent.time_in_force)]
        return text + bracket
    state = "working"
    if intent.time_in_force in AUCTIONS:
        which = "opening" if intent.time_in_force == TimeInForce.OPG else "closing"
        state = f"waiting for the {which} auction"
    return f"Accepted: {what} ({intent.order_type.replace('_', ' ')}, {state}).{bracket}"


def _answered(intent: OrderIntent, order: Order, simulated: bool, *, behind: bool) -> Outcome:
    """The outcome of a send as the broker answered it, or, when a stream's update was stored
    first (``behind``), as the intent now stands: the member was told that state already."""
    if not behind:
        return Outcome(intent, order, describe(intent, order), placed(order), simulated)
    ok = intent.status != IntentStatus.REJECTED and not (
        intent.status in ENDED_UNFILLED and not intent.filled_quantity
    )
    return Outcome(intent, order, describe_intent(intent), ok, simulated)


def _bracket_note(intent: OrderIntent, status: OrderStatus | str) -> str:
    """What a bracketed order's exits do now: wait for it to fill, work, or end with it
    unplaced (cancelled or expired before any fill)."""
    bracket = bracket_of((intent.extra or {}).get("bracket"))
    if bracket is None:
        return ""
    exits = _exits_text(bracket)
    if status == OrderStatus.FILLED:  # the same word for an intent
        both = bracket.take_profit is not None and (
            bracket.stop_loss is not None or bracket.trailing
        )
        return f" Its exits are working: {exits}{' (one cancels the other)' if both else ''}."
    if status in (
        OrderStatus.OPEN,
        OrderStatus.PENDING,
        OrderStatus.PARTIALLY_FILLED,
        IntentStatus.ACCEPTED,
    ):
        return f" Its exits ({exits}) are placed once it has filled."
    if status in (IntentStatus.CANCELLED, IntentStatus.EXPIRED) and not intent.filled_quantity:
        return f" Its exits ({exits}) were never placed."
    return ""


def _exits_text(bracket: Bracket) -> str:
    """A bracket's exits with their prices: "take-profit $210.00 · stop-loss $196.00"."""
    return " · ".join(exits_words(bracket, price_text, start=False))


def exits_words(
    bracket: Bracket, price: Callable[[Decimal], str], *, start: bool = True
) -> list[str]:
    """Each exit of ``bracket`` with its price (written by ``price``); a trailing stop-loss
    by its trail and, with ``start`` (a card's estimate: the broker starts it from the fill),
    where it starts: "trailing stop-loss 2% behind the best price, from $196.00"."""
    words = []
    if bracket.take_profit is not None:
        words.append(f"take-profit {price(bracket.take_profit)}")
    if bracket.trailing:
        amount, percent = bracket.stop_loss_trail_amount, bracket.stop_loss_trail_percent
        trail = f"{qty(percent)}%" if percent is not None else price(amount or Decimal(0))
        where = ""
        if start and bracket.stop_loss is not None:
            where = f", from {price(bracket.stop_loss)}"
        words.append(f"trailing stop-loss {trail} behind the best price{where}")
    elif bracket.stop_loss is not None:
        words.append(f"stop-loss {price(bracket.stop_loss)}")
    return words


def _partly(what: str, filled: Decimal, price: Decimal | None) -> str:
    """A working order that filled in part, at the average price of what filled."""
    at = f" at an average of {fill_price(price)}" if price else ""
    return f"Partially filled: {qty(filled)} of {what}{at}."


def _ended(how: str, what: str, filled: Decimal | None, price: Decimal | None) -> str:
    """A cancelled or expired order; one that filled in part first says how much (the member
    holds those shares)."""
    if not filled:
        return f"{how}: {what}."
    at = f" at {fill_price(price)}" if price else ""
    return f"{how} after filling {qty(filled)} of {what}{at}."


def intent_terms(intent: OrderIntent) -> str:
    """A working order's type and prices after its trade, " limit at $10.00"; "" for a market
    order, whose price is its fill."""
    if intent.order_type == OrderType.MARKET.value:
        return ""
    extra = intent.extra if isinstance(intent.extra, dict) else {}
    terms = order_terms(
        OrderType(intent.order_type),
        intent.limit_price,
        intent.stop_price,
        _decimal_or_none(extra.get("trail_amount")),
        _decimal_or_none(extra.get("trail_percent")),
    )
    return f" {terms}"


def describe_intent(intent: OrderIntent) -> str:
    what = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
    text = {
        IntentStatus.FILLED: filled_text(intent, intent.average_fill_price, intent.filled_quantity),
        IntentStatus.PARTIALLY_FILLED: _partly(
            what, intent.filled_quantity, intent.average_fill_price
        ),
        IntentStatus.ACCEPTED: f"Accepted by the broker: {what}{intent_terms(intent)}.",
        IntentStatus.REJECTED: f"Rejected: {what}. {intent.error_message or ''}".strip(),
        IntentStatus.CANCELLED: _ended(
            "Cancelled", what, intent.filled_quantity, intent.average_fill_price
        )
        if intent.error_code != REPLACED_UNFOLLOWED
        else _ended(
            "Replaced at the broker", what, intent.filled_quantity, intent.average_fill_price
        )
        + " Another order works in its place; it was changed outside Tradecord, which does "
        "not follow the new order: check it in your broker's app.",
        IntentStatus.EXPIRED: _ended(
            "Expired", what, intent.filled_quantity, intent.average_fill_price
        ),
        IntentStatus.FAILED: f"Not placed: {what}. "
        + (intent.error_message or "The broker never received it; nothing happened."),
        IntentStatus.UNKNOWN: f"Not followed: {what}. {intent.error_message}"
        if intent.error_code == ACCOUNT_CHANGED
        else f"Still checking with the broker: {what}.",
    }.get(intent.status, f"{what}: {intent.status}.")
    return text + _bracket_note(intent, intent.status)


def exit_kind(order: Order) -> str:
    return "take-profit" if order.order_type is OrderType.LIMIT else "stop-loss"


def describe_exit(intent: OrderIntent, order: Order, origin: Origin | None = None) -> str:
    """A bracket's exit filled (or ended after filling part): what closed, which order of the
    member's it closed, and what the round trip made (the broker's fees are not known here)."""
    exit_price, entry_price = order.average_fill_price, intent.average_fill_price
    price = f" at {fill_price(exit_price)}" if exit_price else ""
    entry = f" at {fill_price(entry_price)}" if entry_price else ""
    result = ""
    if exit_price and entry_price:
        long = intent.side == Side.BUY
        result = pnl_text(long, entry_price, exit_price, order.filled_quantity, intent.symbol)
    note = f" · {SIMULATED_NOTE}" if order.info.get("simulated") is True else ""
    origin = origin or Origin()
    head = f"{'📝 Paper' if intent.mode == 'paper' else '🔴 Live'} bracket exit"
    yours = f"the exit of your {intent.side} {qty(intent.filled_quantity)} {intent.symbol}{entry}"
    kind, side, filled = exit_kind(order), order.side.value, qty(order.filled_quantity)
    if order.status is not OrderStatus.FILLED:
        # Ended after filling part: what it sold is closed; the rest of the position is not.
        return (
            f"{head} {order.status.value} after filling part{origin.head}: the {kind} {side} "
            f"{filled} of {qty(order.quantity)} {order.symbol}{price}, {yours} "
            f"(intent {intent.id[:8]}).{result} It fills no more: check what remains of your "
            f"position in your broker's app.{note}{origin.tail}"
        )
    return (
        f"{head} filled{origin.head}: the {kind} {side} {filled} {order.symbol}{price}, "
        f"{yours} (intent {intent.id[:8]}).{result}{note}{origin.tail}"
    )


# How far a working order has come, for updates that may arrive out of order.
_PROGRESS = {IntentStatus.ACCEPTED: 1, IntentStatus.PARTIALLY_FILLED: 2}


# An update heard this long after the broker's time is recorded at the broker's time.
HEARD_LATE = timedelta(seconds=10)


async def _broker_time(s: AsyncSession, row: OrderIntent, order: Order) -> datetime | None:
    """When the broker says ``order`` last changed, for the audit trail; never before what is
    already recorded of the intent (its sending: the broker's clock and ours disagree a
    little), so its steps keep their order. None: the broker did not say."""
    at = order.updated_at
    if at is None or at.tzinfo is None or at > datetime.now(UTC) - HEARD_LATE:
        return None  # heard as it happened (a fan-out's fills): now, and no query for it
    last = await s.scalar(select(func.max(AuditEvent.at)).where(AuditEvent.intent_id == row.id))
    return max(x for x in (at, row.submitted_at, last) if x is not None)


def _older(row: OrderIntent, status: str, filled: Decimal) -> bool:
    """Whether a working state reported for ``row`` is older than the one stored: fills only
    add up at a broker, and an order never goes from partly filled back to accepted. A final
    state is the broker's last word and never older."""
    if status in IntentStatus.FINAL:
        return False
    if filled != row.filled_quantity:
        return filled < row.filled_quantity
    return _PROGRESS.get(status, 0) < _PROGRESS.get(row.status, 0)


def _refused_for_good(e: Exception) -> bool:
    """A message refused by an answer that will not change (DMs closed, the member gone, a
    message Discord will not take): an HTTP status of 4xx but 429, as the notifier's client
    raises. Anything else (Discord down or busy, the network, a timeout) may pass."""
    status = getattr(e, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status != 429


def _in_doubt(intent: OrderIntent, simulated: bool) -> Outcome:
    return Outcome(
        intent,
        None,
        "We could not confirm whether the broker received this order. We will not resend it; "
        "we keep checking and will message you the outcome. See /orders meanwhile.",
        False,
        simulated,
    )


def _not_sent(e: BaseException) -> str:
    msg = e.user_message if isinstance(e, BrokerError) else "The broker did not answer."
    return f"Nothing was placed: {msg}"


def _simulated(positions: list[Position]) -> bool:
    return any(p.info.get("simulated") for p in positions)


@overload
async def all_or_first_error(a: Awaitable[A], b: Awaitable[B], /) -> tuple[A, B]: ...


@overload
async def all_or_first_error(
    a: Awaitable[A], b: Awaitable[B], c: Awaitable[C], /
) -> tuple[A, B, C]: ...


async def all_or_first_error(*reads: Awaitable[Any]) -> tuple[Any, ...]:
    """``asyncio.gather`` that, when one fails, cancels the others and raises that error as
    it is (the central handler turns it into the member's message)."""
    tasks = [asyncio.ensure_future(x) for x in reads]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return tuple(results)
