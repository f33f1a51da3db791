"""The common vocabulary every broker adapter speaks (ccxt-style, Decimal money).

Every result keeps the vendor's raw payload in ``info`` so nothing is lost in mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class AssetClass(StrEnum):
    EQUITY = "equity"  # stocks and ETFs
    CRYPTO = "crypto"
    FUTURE = "future"
    OPTION = "option"


class AccountType(StrEnum):
    CASH = "cash"
    MARGIN = "margin"
    FUTURES = "futures"
    CRYPTO = "crypto"


class Environment(StrEnum):
    LIVE = "live"
    PAPER = "paper"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    # A stop that follows the price: trail_amount or trail_percent away from the best price
    # since it was placed (the highest for a sell, the lowest for a buy).
    TRAILING_STOP = "trailing_stop"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    # Auction orders: a market or limit order that trades only in the exchange's opening
    # (opg) or closing (cls) auction, at its price, and is cancelled unfilled otherwise.
    OPG = "opg"
    CLS = "cls"


AUCTIONS = frozenset({TimeInForce.OPG, TimeInForce.CLS})


class OrderStatus(StrEnum):
    PENDING = "pending"  # received by the broker, not yet working
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    # Ended because the broker put another order in its place (``Order.replaced_by``): what
    # was meant by it now works under the new order, so it is not the member's cancel.
    REPLACED = "replaced"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
        OrderStatus.REPLACED,
    }
)


@dataclass(frozen=True, slots=True)
class AccountRef:
    """Which account a call is for; the type lets adapters refuse a wrong asset class early."""

    id: str
    type: AccountType
    environment: Environment


@dataclass(slots=True)
class Account:
    id: str
    type: AccountType
    environment: Environment
    currency: str = "USD"
    status: str = "active"
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def masked(self) -> str:
        return mask_account(self.id)

    def ref(self) -> AccountRef:
        return AccountRef(self.id, self.type, self.environment)


def mask_account(account_id: str) -> str:
    """Show only the last four characters: enough to recognise, useless to an onlooker."""
    tail = account_id[-4:] if len(account_id) > 4 else account_id[-2:]
    return f"••••{tail}"


@dataclass(slots=True)
class Balance:
    account_id: str
    currency: str
    cash: Decimal
    buying_power: Decimal
    equity: Decimal
    market_value: Decimal = Decimal(0)
    unrealized_pnl: Decimal | None = None
    realized_pnl: Decimal | None = None
    # Since the previous trading day's close (16:00 New York), where the broker tells it.
    day_pnl: Decimal | None = None
    # Futures margin in use, where the broker tells it: how near a margin call the account is.
    initial_margin: Decimal | None = None
    maintenance_margin: Decimal | None = None
    info: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(slots=True)
class Position:
    symbol: str
    asset_class: AssetClass
    quantity: Decimal  # negative when short
    average_price: Decimal
    market_price: Decimal | None = None
    market_value: Decimal | None = None
    cost_basis: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    multiplier: Decimal = Decimal(1)
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def side(self) -> str:
        return "long" if self.quantity > 0 else "short"


@dataclass(slots=True)
class Bracket:
    take_profit: Decimal | None = None  # limit price
    # Stop price. For a trailing stop-loss, where it starts, from the entry's price: what the
    # cards and risk sizing count from. Brokers are sent the trail, and set the stop
    # themselves from the best price after the entry fills.
    stop_loss: Decimal | None = None
    stop_loss_limit: Decimal | None = None
    # A trailing stop-loss: it follows the best price by an amount or by a percent (one of two).
    stop_loss_trail_amount: Decimal | None = None
    stop_loss_trail_percent: Decimal | None = None

    @property
    def trailing(self) -> bool:
        return self.stop_loss_trail_amount is not None or self.stop_loss_trail_percent is not None


@dataclass(slots=True)
class OrderRequest:
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    client_order_id: str | None = None
    asset_class: AssetClass | None = None
    bracket: Bracket | None = None
    trail_amount: Decimal | None = None  # a trailing stop: one of these two
    trail_percent: Decimal | None = None
    # A stock limit day order that may also fill before the open and after the close.
    extended_hours: bool = False


@dataclass(frozen=True, slots=True)
class ExtendedReach:
    """Where a broker limits an extended-hours order to the session it is sent in: that
    session ("pre-market" or "regular") and when it ends, the order expiring then unfilled."""

    session: str
    ends_at: datetime


CHANGE_FIELDS = ("quantity", "limit_price", "stop_price")


@dataclass(frozen=True, slots=True)
class OrderChange:
    """A change to a working order (``replace_order``): each field given replaces the order's
    own, None keeps it. ``quantity`` is the order's new total, its filled part included, as at
    every broker that takes one."""

    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None

    def fields(self) -> frozenset[str]:
        return frozenset(n for n in CHANGE_FIELDS if getattr(self, n) is not None)


@dataclass(frozen=True, slots=True)
class SubmissionHint:
    """What was sent under a client order id, and when. The caller keeps it (in the database)
    so that a later process can still recognise the order at a broker whose order payloads do
    not carry our client order id."""

    request: OrderRequest
    sent_at: datetime  # timezone-aware
    # Broker order ids other intents already own (their entries and bracket exits): where the
    # order is recognised by content, an identical order of another intent is never this one.
    claimed: frozenset[str] = frozenset()


@dataclass(slots=True)
class Order:
    id: str
    account_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    status: OrderStatus
    client_order_id: str | None = None
    asset_class: AssetClass = AssetClass.EQUITY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    filled_quantity: Decimal = Decimal(0)
    average_fill_price: Decimal | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    reject_reason: str | None = None
    # Working, but a cancel was asked for and the broker has not carried it out yet.
    cancel_pending: bool = False
    # Brokers whose replace makes a new order (Alpaca's PATCH) link the two by id.
    replaced_by: str | None = None  # on the old order, once replaced
    replaces: str | None = None  # on the new order
    # A take-profit/stop-loss bracket, as far as the broker tells: on an exit, its entry; on an
    # entry, its exits.
    parent_id: str | None = None
    exit_ids: tuple[str, ...] = ()
    # A trailing stop: how far it trails (stop_price is where the stop stands now).
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    extended_hours: bool = False  # may fill before the open and after the close
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity


@dataclass(slots=True)
class Quote:
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    time: datetime
    simulated: bool = False
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2


@dataclass(slots=True)
class OrderUpdate:
    """One change to an order as the broker reports it (stream or poll)."""

    order: Order
    event: str  # new, fill, partial_fill, canceled, rejected, expired, ...
    execution_id: str | None = None
    fill_quantity: Decimal | None = None
    fill_price: Decimal | None = None
    at: datetime | None = None
