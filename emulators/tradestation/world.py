"""TradeStation's brokerage as the emulator holds it: users, accounts (LIVE and SIM), positions,
orders, quotes, and a fill engine that behaves like the SIM environment ("instant fills").

Payloads are rendered in the vendor's shapes: every money and quantity value is a string,
timestamps are RFC 3339 with a ``Z``, order statuses are the three-letter codes.

Rejection texts: TradeStation documents the envelope (``{"Error": "FAILED", "Message":
"Order failed. Reason: ..."}`` in a 200) but not the reasons for buying power, closed markets,
the wrong account type or auction orders, so those sentences are ours; the ``REASON_*``
constants collect them.

Auction orders (Duration OPG, CLO) trade only in the stock exchange's opening or closing
auction, which the emulator runs when the session moves into or out of regular hours
(``set_session``) or when a test asks (``run_opening_auction``, ``run_closing_auction``).
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from adapters import symbols

ET = ZoneInfo("America/New_York")
ZERO = Decimal(0)

# Status codes and their StatusDescription, as the v3 spec lists them.
STATUS_TEXT = {
    "ACK": "Received",
    "ASS": "Option Assignment",
    "BRC": "Bracket Canceled",
    "BRF": "Bracket Filled",
    "BRO": "Broken",
    "CHG": "Change",
    "CND": "Condition Met",
    "COR": "Fill Corrected",
    "DIS": "Dispatched",
    "DOA": "Dead",
    "DON": "Queued",
    "ECN": "Expiration Cancel Request",
    "EXE": "Option Exercise",
    "FPR": "Partial Fill (Alive)",
    "LAT": "Too Late to Cancel",
    "OPN": "Sent",
    "OSO": "OSO Order",
    "OTHER": "OrderStatus not mapped",
    "PLA": "Sending",
    "REC": "Big Brother Recall Request",
    "RJC": "Cancel Request Rejected",
    "RPD": "Replace Pending",
    "RSN": "Replace Sent",
    "STP": "Stop Hit",
    "STT": "OrderStatus Message",
    "SUS": "Suspended",
    "UCN": "Cancel Sent",
    "CAN": "Canceled",
    "EXP": "Expired",
    "OUT": "UROut",
    "RJR": "Change Request Rejected",
    "SCN": "Big Brother Recall",
    "TSC": "Trade Server Canceled",
    "UCH": "Replaced",
    "REJ": "Rejected",
    "FLL": "Filled",
    "FLP": "Partial Fill (UROut)",
}
CLOSED_STATUSES = frozenset({"CAN", "EXP", "OUT", "RJR", "SCN", "TSC", "UCH", "REJ", "FLL", "FLP"})

REASON_BUYING_POWER = "Insufficient buying power. Available: {available}, required: {required}."
REASON_MARKET_CLOSED = (
    "Market is closed for {symbol}. Market orders are not accepted outside trading hours."
)
REASON_WRONG_ACCOUNT = "{kind} orders are not supported for account type {account_type}."
REASON_INVALID_SYMBOL = "Invalid symbol {symbol}."
REASON_ACCOUNT_TYPE = "Request not supported for account type."
REASON_DUPLICATE = (
    "Duplicate OrderConfirmID. An order with this OrderConfirmID was already submitted."
)
REASON_BAD_ACTION = "TradeAction {action} is not valid for {kind} orders."
REASON_SELL_EXCEEDS = (
    "Sell quantity {qty} exceeds the long position of {held}. "
    "Use SellShort to open a short position."
)
REASON_COVER_EXCEEDS = "BuyToCover quantity {qty} exceeds the short position of {held}."
REASON_USE_COVER = "The account is short {symbol}. Use BuyToCover to close a short position."
REASON_CLOSE_LONG_FIRST = (
    "The account is long {symbol}. Close the long position with Sell before selling short."
)
REASON_NO_SHORT_IN_CASH = "Short selling is not allowed in a Cash account."
REASON_INVALID_ACCOUNT = "Invalid AccountID {account_id}."
# TradeStation's own guide to extended hours says to "set Duration to 'Day+'" and choose Limit
# "because that's the only kind of order that can be used in extended hours" (tradestation.com
# Market Insights, "What Tools Can Help With Extended Hours Trading?"). The v3 API's refusal
# text is not published, and refusing such an order at entry, rather than letting it work in
# regular hours only, is our inference: this sentence is ours.
REASON_EXTENDED_LIMIT_ONLY = (
    "{duration} orders must be Limit orders: only limit orders trade in the extended sessions."
)
# The auction durations' refusals. The v3 OpenAPI says OPG is "only valid for listed stocks";
# everything else here is our inference, and every sentence is ours (the vendor publishes none):
# CLO is refused for futures as OPG is, the auctions take Market and Limit orders only (the
# exchanges' market-/limit-on-open and -on-close orders), and an order is refused once its
# auction of the day has passed and until the day's sessions end (OPG in the regular session
# and the post-market, CLO in the post-market), as at Alpaca, whose windows are published.
REASON_AUCTION_STOCKS_ONLY = "{duration} orders are only valid for listed stocks."
REASON_AUCTION_ORDER_TYPE = "{duration} orders must be Market or Limit orders."
REASON_AUCTION_TOO_LATE = {
    "OPG": "Too late for the opening: OPG orders are accepted only before the market opens.",
    "CLO": "Too late for the close: CLO orders are accepted only before the market closes.",
}
CENT = Decimal("0.01")

OPENING_ACTIONS = frozenset({"BUY", "SELLSHORT"})
BUY_ACTIONS = frozenset({"BUY", "BUYTOCOVER"})
EQUITY_ACTIONS = frozenset({"BUY", "SELL", "SELLSHORT", "BUYTOCOVER"})
FUTURE_ACTIONS = frozenset({"BUY", "SELL"})
ORDER_TYPES = frozenset({"Market", "Limit", "StopMarket", "StopLimit"})
# The US stock market's sessions, switched by tests (no clock): pre-market, regular hours,
# post-market, and the night when nothing trades.
SESSIONS = ("pre", "regular", "post", "closed")
# "DYP - Day Plus; valid until the end of the extended trading session" (v3 OpenAPI Duration),
# GCP and GDP the same for GTC and GTD: these work in the pre- and post-market as well; every
# other duration works in regular hours only.
EXTENDED_DURATIONS = frozenset({"DYP", "GCP", "GDP"})
# "OPG - At the opening; only valid for listed stocks at the opening session Price" and "CLO -
# On Close; orders that target the closing session of an exchange" (v3 OpenAPI Duration): they
# trade in that auction only, never in the continuous session.
AUCTION_DURATIONS = frozenset({"OPG", "CLO"})
AUCTION_ORDER_TYPES = frozenset({"Market", "Limit"})
# The sessions in which each auction of the day is over and the next day's not yet taken.
AUCTION_PASSED = {"OPG": frozenset({"regular", "post"}), "CLO": frozenset({"post"})}
# Initial margin as a share of one contract's notional: realistic orders of magnitude
# (ES about $15k) without a per-exchange table.
FUTURES_MARGIN_RATE = Decimal("0.05")
MAINTENANCE_SHARE = Decimal("0.9")

# Sensible prices for a newcomer in local mode; ``set_quote`` adds or moves any symbol.
DEFAULT_EQUITY_QUOTES: dict[str, Decimal] = {
    "AAPL": Decimal("228.50"),
    "MSFT": Decimal("415.20"),
    "SPY": Decimal("590.10"),
    "QQQ": Decimal("505.30"),
    "TSLA": Decimal("340.00"),
    "NVDA": Decimal("145.00"),
    "AMZN": Decimal("205.00"),
    "AMD": Decimal("138.00"),
    "META": Decimal("560.00"),
    "GOOGL": Decimal("170.00"),
}


class OrderRejected(Exception):
    """A business rejection: the vendor answers 200 with ``Errors[{Error: FAILED}]``."""

    def __init__(self, reason: str, order_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.order_id = order_id


class BadRequest(Exception):
    """A malformed request: the vendor answers 400 ``{"Error": "BadRequest"}``."""


def s(value: Decimal | int) -> str:
    """A vendor number string: no exponent, no trailing zeros beyond what the value needs."""
    d = Decimal(value).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP).normalize()
    text = format(d, "f")
    return "0" if text in ("-0", "") else text


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def et_date(ts: float) -> date:
    return datetime.fromtimestamp(ts, ET).date()


def _trailing_stop(body: dict[str, Any], order_type: str) -> tuple[Decimal | None, Decimal | None]:
    """``AdvancedOptions.TrailingStop`` as (amount, percent): the spec makes them mutually
    exclusive strings, an offset from the current price. Which order types take it, and the
    bounds, are not published: StopMarket (as in every vendor example) and positive offsets
    under 100% are our reading [infer]."""
    advanced = body.get("AdvancedOptions")
    trail = advanced.get("TrailingStop") if isinstance(advanced, dict) else None
    if trail is None:
        return None, None
    if order_type != "StopMarket":
        raise BadRequest("TrailingStop is valid for StopMarket orders only.")
    if not isinstance(trail, dict):
        raise BadRequest("TrailingStop must be an object with Amount or Percent.")
    amount, percent = trail.get("Amount"), trail.get("Percent")
    if amount is not None and percent is not None:
        raise BadRequest("TrailingStop Amount and Percent are mutually exclusive.")
    if amount is None and percent is None:
        raise BadRequest("TrailingStop needs an Amount or a Percent.")
    if amount is not None:
        value = parse_decimal(amount, "TrailingStop Amount")
        if value <= 0:
            raise BadRequest("TrailingStop Amount must be greater than zero.")
        return value, None
    value = parse_decimal(percent, "TrailingStop Percent")
    if not 0 < value < 100:
        raise BadRequest("TrailingStop Percent must be greater than 0 and less than 100.")
    return None, value


def parse_decimal(value: Any, name: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise BadRequest(f"{name} must be a number, not {value!r}.") from None
    if not d.is_finite():
        raise BadRequest(f"{name} must be a finite number.")
    return d


@dataclass
class QuoteState:
    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    previous_close: Decimal
    updated: float
    volume: int = 0

    def payload(self) -> dict[str, Any]:
        change = self.last - self.previous_close
        pct = (change / self.previous_close * 100) if self.previous_close else ZERO
        out: dict[str, Any] = {
            "Symbol": self.symbol,
            "Open": s(self.previous_close),
            "High": s(max(self.last, self.previous_close)),
            "Low": s(min(self.last, self.previous_close)),
            "PreviousClose": s(self.previous_close),
            "Last": s(self.last),
            "Ask": s(self.ask),
            "AskSize": "100",
            "Bid": s(self.bid),
            "BidSize": "100",
            "NetChange": s(change),
            "NetChangePct": s(pct),
            "Volume": str(self.volume),
            "PreviousVolume": "0",
            "Close": s(self.last),
            "DailyOpenInterest": "0",
            "TradeTime": iso(self.updated),
            "TickSizeTier": "0",
            "MarketFlags": {
                "IsDelayed": False,
                "IsHardToBorrow": False,
                "IsBats": False,
                "IsHalted": False,
            },
            "LastSize": "100",
            "LastVenue": "ARCX",
        }
        spec = symbols.future_spec(self.symbol)
        if spec is not None:
            out["LastVenue"] = "CME"
            out["MinPrice"] = s(self.last * Decimal("0.9"))
            out["MaxPrice"] = s(self.last * Decimal("1.1"))
        return out


@dataclass
class PositionState:
    symbol: str
    quantity: Decimal  # negative when short
    average_price: Decimal
    opened: float
    position_id: str


@dataclass
class User:
    id: str
    name: str


@dataclass
class AccountState:
    id: str
    user_id: str
    type: str  # Cash | Margin | Futures | Crypto
    live: bool
    cash: Decimal
    alias: str | None = None
    status: str = "Active"
    positions: dict[str, PositionState] = field(default_factory=dict)
    realized: Decimal = ZERO
    # The equity the day started with (/bodbalances); an account opened today, its cash.
    bod_equity: Decimal | None = None

    @property
    def brokerage(self) -> bool:
        """Crypto accounts answer "Request not supported for account type." on brokerage reads."""
        return self.type in ("Cash", "Margin", "Futures", "DVP")

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AccountID": self.id,
            "Currency": "USD",
            "Status": self.status,
            "AccountType": self.type,
        }
        if self.alias:
            out["Alias"] = self.alias
        if self.type in ("Cash", "Margin"):
            out["AccountDetail"] = {
                "IsStockLocateEligible": False,
                "EnrolledInRegTProgram": self.type == "Margin",
                "RequiresBuyingPowerWarning": self.type == "Margin",
                "DayTradingQualified": True,
                "OptionApprovalLevel": 0,
                "PatternDayTrader": False,
            }
        return out


@dataclass
class OrderState:
    id: str
    account: AccountState
    symbol: str
    asset_type: str  # STOCK | FUTURE
    action: str  # BUY | SELL | SELLSHORT | BUYTOCOVER
    quantity: Decimal
    order_type: str
    duration: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    confirm_id: str | None
    client_id: str | None
    opened: float
    route: str = "Intelligent"
    status: str = "ACK"
    closed: float | None = None
    filled: Decimal = ZERO
    filled_value: Decimal = ZERO
    reject_reason: str | None = None
    stop_triggered: bool = False
    parent_id: str | None = None
    names_parent: bool = False  # ConditionalOrders names parent_id as "OSP" (World flag)
    children: list[str] = field(default_factory=list)
    group_type: str | None = None  # BRK | OCO | NORMAL, for orders that belong to a group
    group_name: str | None = None
    siblings: list[str] = field(default_factory=list)
    price_for_bp: Decimal = ZERO
    # AdvancedOptions.TrailingStop: one of the two, and the best price seen since the order
    # started working (the high for a sell, the low for a buy). ``stop_price`` follows it.
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    watermark: Decimal | None = None

    @property
    def trailing(self) -> bool:
        return self.trail_amount is not None or self.trail_percent is not None

    def trail_to(self, mark: Decimal) -> None:
        """Move the watermark (only ever in the order's favour) and the stop with it, on the
        instrument's tick."""
        sell = not self.is_buy
        if self.watermark is None:
            self.watermark = mark
        else:
            self.watermark = max(self.watermark, mark) if sell else min(self.watermark, mark)
        if self.trail_amount is not None:
            offset = self.trail_amount
        else:
            assert self.trail_percent is not None
            offset = self.watermark * self.trail_percent / 100
        spec = symbols.future_spec(self.symbol)
        tick = spec.tick if spec is not None else CENT
        stop = self.watermark - offset if sell else self.watermark + offset
        self.stop_price = (stop / tick).quantize(Decimal(1), ROUND_HALF_UP) * tick

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_buy(self) -> bool:
        return self.action in BUY_ACTIONS

    @property
    def average_fill(self) -> Decimal | None:
        return self.filled_value / self.filled if self.filled else None

    def summary(self) -> str:
        verb = {
            "BUY": "Buy",
            "SELL": "Sell",
            "SELLSHORT": "Sell Short",
            "BUYTOCOVER": "Buy to Cover",
        }[self.action]
        qty = s(self.quantity)
        if self.order_type == "Market":
            return f"{verb} {qty} {self.symbol} @ Market"
        if self.order_type == "Limit":
            return f"{verb} {qty} {self.symbol} @ {s(self.limit_price or ZERO)} Limit"
        if self.order_type == "StopMarket" and self.stop_price is None:
            return f"{verb} {qty} {self.symbol} @ Stop Market"  # a queued trailing stop
        if self.order_type == "StopMarket":
            return f"{verb} {qty} {self.symbol} @ {s(self.stop_price or ZERO)} Stop Market"
        return (
            f"{verb} {qty} {self.symbol} @ {s(self.stop_price or ZERO)} Stop Limit "
            f"{s(self.limit_price or ZERO)}"
        )

    def payload(self) -> dict[str, Any]:
        avg = self.average_fill
        buy_or_sell = "Buy" if self.is_buy else "Sell"
        open_close = "Open" if self.action in OPENING_ACTIONS else "Close"
        leg: dict[str, Any] = {
            "AssetType": self.asset_type,
            "BuyOrSell": buy_or_sell,
            "ExecQuantity": s(self.filled),
            "OpenOrClose": open_close,
            "QuantityOrdered": s(self.quantity),
            "QuantityRemaining": s(self.remaining if self.is_open else ZERO),
            "Symbol": self.symbol,
        }
        if avg is not None:
            leg["ExecutionPrice"] = s(avg)
        out: dict[str, Any] = {
            "AccountID": self.account.id,
            "CommissionFee": "0",
            "Currency": "USD",
            "Duration": self.duration,
            "Legs": [leg],
            "OrderID": self.id,
            "OpenedDateTime": iso(self.opened),
            "OrderType": self.order_type,
            "PriceUsedForBuyingPower": s(self.price_for_bp),
            "Routing": self.route,
            "Status": self.status,
            "StatusDescription": STATUS_TEXT[self.status],
            "UnbundledRouteFee": "0",
        }
        if avg is not None:
            out["FilledPrice"] = s(avg)
        if self.limit_price is not None:
            out["LimitPrice"] = s(self.limit_price)
        if self.stop_price is not None:
            out["StopPrice"] = s(self.stop_price)
        if self.trail_amount is not None:
            out["TrailingStop"] = {"Amount": s(self.trail_amount)}
        if self.trail_percent is not None:
            out["TrailingStop"] = {"Percent": s(self.trail_percent)}
        if self.closed is not None:
            out["ClosedDateTime"] = iso(self.closed)
        if self.reject_reason:
            out["RejectReason"] = self.reject_reason
        if self.duration in ("GTC", "GCP"):
            out["GoodTillDate"] = iso(self.opened + 90 * 86400)[:10] + "T00:00:00Z"
        related = [{"Relationship": "OSO", "OrderID": c} for c in self.children]
        if self.parent_id is not None and self.names_parent:
            related.insert(0, {"Relationship": "OSP", "OrderID": self.parent_id})
        related += [{"Relationship": self.group_type or "OCO", "OrderID": o} for o in self.siblings]
        if related:
            out["ConditionalOrders"] = related
        if self.group_name:
            out["GroupName"] = self.group_name
        return out


Listener = Callable[[OrderState], None]


class World:
    """All brokerage state, mutated only through these methods so that every change reaches
    the order streams."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.users: dict[str, User] = {}
        self.accounts: dict[str, AccountState] = {}
        self.orders: dict[str, OrderState] = {}
        self.quotes: dict[str, QuoteState] = {}
        self.confirm_ids: dict[tuple[str, str, str], str] = {}  # (api key, user, id) -> order
        self.listeners: list[Listener] = []
        self.session = "regular"
        self.auto_fill = True  # the SIM's instant fills; False leaves orders for ``fill``
        # The v3 OpenAPI lists the Relationship "OSP (linked parent)" without saying which
        # orders carry it: off, an OSO's exits name no entry (as in the API's examples); on,
        # each names its entry so (test control).
        self.exits_name_entry = False
        # Vendor order ids are globally unique; a random start keeps two emulators apart.
        self._order_ids = itertools.count(286_000_000 + secrets.randbelow(10_000_000) * 10)
        self._position_ids = itertools.count(64_630_792)
        self._groups = itertools.count(2_706_452_145)

    @property
    def market_open(self) -> bool:
        """Regular hours: market orders are taken, every duration works."""
        return self.session == "regular"

    @market_open.setter
    def market_open(self, value: bool) -> None:
        self.set_session("regular" if value else "closed")

    def set_session(self, session: str) -> None:
        """Move the stock market to ``pre``, ``regular``, ``post`` or ``closed``; the orders
        that work in the session that begins fill if their prices allow. Entering regular
        hours runs the opening auction first (OPG orders), leaving them runs the closing
        auction (CLO orders) while still open; with ``auto_fill`` off neither runs."""
        if session not in SESSIONS:
            raise ValueError(f"session must be one of {', '.join(SESSIONS)}")
        opening = self.session != "regular" and session == "regular"
        if self.session == "regular" and session != "regular" and self.auto_fill:
            self.run_closing_auction()
        self.session = session
        if opening and self.auto_fill:
            self.run_opening_auction()
        for order in list(self.orders.values()):
            self._work(order)

    def in_session(self, order: OrderState) -> bool:
        """Whether ``order`` may fill now. Futures keep their own hours, which the emulator
        does not model: they are always in session. An auction order (OPG, CLO) fills only in
        its auction."""
        if order.duration in AUCTION_DURATIONS:
            return False
        if order.asset_type != "STOCK" or self.session == "regular":
            return True
        return self.session in ("pre", "post") and order.duration in EXTENDED_DURATIONS

    # -- seeding -------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str | None = None) -> User:
        user = self.users[user_id] = User(user_id, name or user_id)
        return user

    def add_account(
        self,
        user_id: str,
        account_id: str,
        account_type: str,
        *,
        live: bool = True,
        cash: Decimal | int | str = 0,
        alias: str | None = None,
    ) -> AccountState:
        if user_id not in self.users:
            self.add_user(user_id)
        if account_type not in ("Cash", "Margin", "Futures", "DVP", "Crypto"):
            raise ValueError(f"unknown TradeStation account type {account_type!r}")
        acct = AccountState(account_id, user_id, account_type, live, Decimal(str(cash)), alias)
        acct.bod_equity = acct.cash
        self.accounts[account_id] = acct
        return acct

    def start_day(self) -> None:
        """A new trading day: each account's beginning-of-day balances are what it holds now."""
        for acct in self.accounts.values():
            acct.bod_equity = self.equity(acct)

    def equity(self, acct: AccountState) -> Decimal:
        mv, _, pnl = self._marks(acct)
        return acct.cash + (pnl if acct.type == "Futures" else mv)

    def bod_balance_payload(self, acct: AccountState) -> dict[str, Any]:
        """[spec BODBalance]: the figures the day started with."""
        equity = s(acct.bod_equity if acct.bod_equity is not None else acct.cash)
        out: dict[str, Any] = {"AccountID": acct.id, "AccountType": acct.type}
        if acct.type == "Futures":
            out["BalanceDetail"] = {
                "Equity": equity,
                "CashAvailableToWithdraw": equity,
                "NetCash": equity,
                "OpenTradeEquity": "0",
                "SecurityOnDeposit": "0",
            }
            out["CurrencyDetails"] = [
                {
                    "Currency": "USD",
                    "CashBalance": equity,
                    "AccountOpenTradeEquity": "0",
                    "AccountSecurities": "0",
                    "OpenTradeEquity": "0",
                    "Securities": "0",
                }
            ]
            return out
        out["BalanceDetail"] = {
            "AccountBalance": equity,
            "CashAvailableToWithdraw": equity,
            "DayTradingMarginableBuyingPower": equity,
            "DayTrades": "0",
            "Equity": equity,
            "NetCash": equity,
            "OptionBuyingPower": equity,
            "OptionValue": "0",
            "OvernightBuyingPower": equity,
        }
        return out

    def set_position(
        self,
        account_id: str,
        symbol: str,
        quantity: Decimal | int | str,
        average_price: Decimal | int | str,
    ) -> None:
        acct = self.accounts[account_id]
        qty = Decimal(str(quantity))
        if qty == 0:
            acct.positions.pop(symbol, None)
            return
        acct.positions[symbol] = PositionState(
            symbol, qty, Decimal(str(average_price)), self.clock(), str(next(self._position_ids))
        )
        self.quote(symbol)  # positions need a price

    def set_quote(
        self,
        symbol: str,
        bid: Decimal | int | str,
        ask: Decimal | int | str,
        last: Decimal | int | str | None = None,
    ) -> None:
        sym = symbol.upper()
        b, a = Decimal(str(bid)), Decimal(str(ask))
        px = Decimal(str(last)) if last is not None else (b + a) / 2
        q = self.quotes.get(sym)
        if q is None:
            self.quotes[sym] = QuoteState(sym, b, a, px, px, self.clock())
        else:
            q.bid, q.ask, q.last, q.updated = b, a, px, self.clock()
            q.volume += 100
        self.check_resting(sym)

    def quote(self, symbol: str) -> QuoteState | None:
        """The quote, creating futures quotes on demand from the contract table."""
        sym = symbol.upper()
        q = self.quotes.get(sym)
        if q is not None:
            return q
        spec = symbols.future_spec(sym)
        if spec is None or sym.startswith("/"):
            return None
        px = spec.reference_price
        q = self.quotes[sym] = QuoteState(sym, px - spec.tick, px + spec.tick, px, px, self.clock())
        return q

    # -- reads ---------------------------------------------------------------------------

    def user_accounts(self, user_id: str, live: bool) -> list[AccountState]:
        return [a for a in self.accounts.values() if a.user_id == user_id and a.live == live]

    def account_orders(self, account_id: str) -> list[OrderState]:
        return [o for o in self.orders.values() if o.account.id == account_id]

    def todays_orders(self, account_id: str) -> list[OrderState]:
        """Open orders and orders closed today (US Eastern), newest first."""
        today = et_date(self.clock())
        out = [
            o
            for o in self.account_orders(account_id)
            if o.is_open or (o.closed is not None and et_date(o.closed) == today)
        ]
        return sorted(out, key=lambda o: o.closed or o.opened, reverse=True)

    def historical_orders(self, account_id: str, since: date) -> list[OrderState]:
        """Orders closed from ``since`` up to yesterday, newest close first: the vendor serves
        open and today's orders only from ``/orders`` ("prior to current date")."""
        today = et_date(self.clock())
        out = [
            o
            for o in self.account_orders(account_id)
            if not o.is_open and o.closed is not None and since <= et_date(o.closed) < today
        ]
        return sorted(out, key=lambda o: o.closed or 0, reverse=True)

    def position_payload(self, acct: AccountState, pos: PositionState) -> dict[str, Any]:
        q = self.quote(pos.symbol)
        last = q.last if q else pos.average_price
        mult = symbols.multiplier(pos.symbol)
        is_future = symbols.future_spec(pos.symbol) is not None
        market_value = pos.quantity * last * mult
        cost = pos.quantity * pos.average_price * mult
        pnl = market_value - cost
        pct = (pnl / abs(cost) * 100) if cost else ZERO
        margin = self._initial_margin(pos.symbol) * abs(pos.quantity) if is_future else ZERO
        return {
            "AccountID": acct.id,
            "AveragePrice": s(pos.average_price),
            "AssetType": "FUTURE" if is_future else "STOCK",
            "Last": s(last),
            "Bid": s(q.bid if q else last),
            "Ask": s(q.ask if q else last),
            "ConversionRate": "1",
            "DayTradeRequirement": s(margin / 2) if is_future else "0",
            "InitialRequirement": s(margin),
            "MaintenanceMargin": s(margin * MAINTENANCE_SHARE),
            "LongShort": "Long" if pos.quantity > 0 else "Short",
            "MarkToMarketPrice": s(pos.average_price),
            "MarketValue": s(market_value),
            "PositionID": pos.position_id,
            "Quantity": s(pos.quantity),
            "Symbol": pos.symbol,
            "Timestamp": iso(pos.opened),
            "TodaysProfitLoss": s(pnl),
            "TotalCost": s(cost),
            "UnrealizedProfitLoss": s(pnl),
            "UnrealizedProfitLossPercent": s(pct),
            "UnrealizedProfitLossQty": s((last - pos.average_price) * mult),
        }

    def _marks(self, acct: AccountState) -> tuple[Decimal, Decimal, Decimal]:
        """(signed market value, gross market value, unrealized P/L) of the positions."""
        mv = gross = pnl = ZERO
        for pos in acct.positions.values():
            q = self.quote(pos.symbol)
            last = q.last if q else pos.average_price
            mult = symbols.multiplier(pos.symbol)
            mv += pos.quantity * last * mult
            gross += abs(pos.quantity) * last * mult
            pnl += pos.quantity * (last - pos.average_price) * mult
        return mv, gross, pnl

    def _initial_margin(self, symbol: str) -> Decimal:
        spec = symbols.future_spec(symbol)
        if spec is None:
            return ZERO
        q = self.quote(symbol)
        price = q.last if q else spec.reference_price
        return (price * spec.multiplier * FUTURES_MARGIN_RATE).quantize(Decimal(1))

    def _reserved(self, acct: AccountState, excluding: str | None = None) -> Decimal:
        """Buying power held by working orders that open or add to positions (but the order
        ``excluding``, whose change is being checked)."""
        total = ZERO
        for o in self.account_orders(acct.id):
            if o.is_open and o.status != "DON" and o.id != excluding:
                total += self._order_cost(acct, o.symbol, self._opening_quantity(o), o.price_for_bp)
        return total

    def _order_cost(self, acct: AccountState, symbol: str, qty: Decimal, price: Decimal) -> Decimal:
        if acct.type == "Futures":
            return self._initial_margin(symbol) * qty
        return qty * price

    def buying_power(self, acct: AccountState, excluding: str | None = None) -> Decimal:
        mv, gross, pnl = self._marks(acct)
        reserved = self._reserved(acct, excluding)
        if acct.type == "Futures":
            used = sum(
                (self._initial_margin(p.symbol) * abs(p.quantity) for p in acct.positions.values()),
                ZERO,
            )
            return max(ZERO, acct.cash + pnl - used - reserved)
        if acct.type == "Margin":
            # Reg T overnight: twice the equity not already used by positions.
            return max(ZERO, 2 * (acct.cash + mv) - gross - reserved)
        return max(ZERO, acct.cash - reserved)

    def balance_payload(self, acct: AccountState) -> dict[str, Any]:
        mv, gross, pnl = self._marks(acct)
        bp = self.buying_power(acct)
        out: dict[str, Any] = {
            "AccountID": acct.id,
            "AccountType": acct.type,
            "BuyingPower": s(bp),
            "Commission": "0",
            "TodaysProfitLoss": s(pnl + acct.realized),
            "UnclearedDeposit": "0",
        }
        if acct.type == "Futures":
            initial = sum(
                (self._initial_margin(p.symbol) * abs(p.quantity) for p in acct.positions.values()),
                ZERO,
            )
            open_margin = self._reserved(acct)
            equity = acct.cash + pnl
            out.update(
                {
                    "CashBalance": s(acct.cash),
                    "Equity": s(equity),
                    "MarketValue": s(gross),
                    "BalanceDetail": {
                        "DayTradeExcess": s(bp),
                        "RealizedProfitLoss": s(acct.realized),
                        "UnrealizedProfitLoss": s(pnl),
                        "DayTradeOpenOrderMargin": s(open_margin / 2),
                        "OpenOrderMargin": s(open_margin),
                        "DayTradeMargin": s(initial / 2),
                        "InitialMargin": s(initial),
                        "MaintenanceMargin": s(initial * MAINTENANCE_SHARE),
                        "TradeEquity": s(pnl),
                        "SecurityOnDeposit": "0",
                        "TodayRealTimeTradeEquity": s(pnl),
                    },
                    "CurrencyDetails": [
                        {
                            "Currency": "USD",
                            "Commission": "0",
                            "CashBalance": s(acct.cash),
                            "RealizedProfitLoss": s(acct.realized),
                            "UnrealizedProfitLoss": s(pnl),
                            "InitialMargin": s(initial),
                            "MaintenanceMargin": s(initial * MAINTENANCE_SHARE),
                            "AccountConversionRate": "1",
                        }
                    ],
                }
            )
            return out
        cost = sum((p.quantity * p.average_price for p in acct.positions.values()), ZERO)
        out.update(
            {
                "CashBalance": s(acct.cash),
                "Equity": s(acct.cash + mv),
                "MarketValue": s(mv),
                "BalanceDetail": {
                    "CostOfPositions": s(cost),
                    "DayTrades": "0",
                    "MaintenanceRate": s(gross * Decimal("0.25")),
                    "OptionBuyingPower": s(bp),
                    "OptionsMarketValue": "0",
                    "OvernightBuyingPower": s(bp),
                    "RequiredMargin": s(gross / 2 if acct.type == "Margin" else gross),
                    "RealizedProfitLoss": s(acct.realized),
                    "UnrealizedProfitLoss": s(pnl),
                },
            }
        )
        return out

    # -- order entry ---------------------------------------------------------------------

    def _emit(self, order: OrderState) -> None:
        for listener in list(self.listeners):
            listener(order)

    def place(
        self,
        user_id: str,
        client_id: str,
        body: dict[str, Any],
        *,
        live: bool,
        parent: OrderState | None = None,
        work: bool = True,
    ) -> OrderState:
        """Validate and enter one order (with its OSO children); raises ``OrderRejected`` or
        ``BadRequest``. Business rejections found after entry (buying power, closed market)
        leave a REJ order behind, as the vendor's Errors entries carry an OrderID."""
        acct = self.accounts.get(str(body.get("AccountID", "")))
        if acct is None or acct.user_id != user_id or acct.live != live:
            raise OrderRejected(REASON_INVALID_ACCOUNT.format(account_id=body.get("AccountID")))
        confirm = body.get("OrderConfirmID")
        if confirm is not None:
            existing = self.confirm_ids.get((client_id, user_id, confirm))
            if existing is not None:
                raise OrderRejected(REASON_DUPLICATE, existing)
        if not acct.brokerage:
            raise OrderRejected(REASON_ACCOUNT_TYPE)
        sym = str(body.get("Symbol", "")).upper()
        q = self.quote(sym)
        if q is None:
            raise OrderRejected(REASON_INVALID_SYMBOL.format(symbol=sym))
        is_future = symbols.future_spec(sym) is not None
        kind = "Futures" if is_future else "Equity"
        if is_future != (acct.type == "Futures"):
            raise OrderRejected(REASON_WRONG_ACCOUNT.format(kind=kind, account_type=acct.type))
        action = str(body.get("TradeAction", "")).upper()
        if action not in (FUTURE_ACTIONS if is_future else EQUITY_ACTIONS):
            raise OrderRejected(REASON_BAD_ACTION.format(action=action, kind=kind.lower()))
        qty = parse_decimal(body.get("Quantity"), "Quantity")
        if qty <= 0 or qty != qty.to_integral_value():
            raise BadRequest("Quantity must be a positive whole number.")
        order_type = str(body.get("OrderType"))
        trail_amount, trail_percent = _trailing_stop(body, order_type)
        trailing = trail_amount is not None or trail_percent is not None
        limit = stop = None
        if order_type in ("Limit", "StopLimit"):
            if body.get("LimitPrice") in (None, ""):
                raise BadRequest(f"LimitPrice is required for {order_type} orders.")
            limit = parse_decimal(body["LimitPrice"], "LimitPrice")
        # The vendor ignores StopPrice when a TrailingStop is given.
        if order_type in ("StopMarket", "StopLimit") and not trailing:
            if body.get("StopPrice") in (None, ""):
                raise BadRequest(f"StopPrice is required for {order_type} orders.")
            stop = parse_decimal(body["StopPrice"], "StopPrice")
        for name, price in (("LimitPrice", limit), ("StopPrice", stop)):
            if price is not None and price <= 0:
                raise BadRequest(f"{name} must be greater than zero.")
        duration = str(body.get("TimeInForce", {}).get("Duration", "DAY")).upper()
        if duration in EXTENDED_DURATIONS and order_type != "Limit":
            raise OrderRejected(REASON_EXTENDED_LIMIT_ONLY.format(duration=duration))
        if duration in AUCTION_DURATIONS:
            self._check_auction(duration, order_type, is_future)
        if parent is None:
            self._check_position(acct, sym, action, qty)
        order = OrderState(
            id=str(next(self._order_ids)),
            account=acct,
            symbol=sym,
            asset_type="FUTURE" if is_future else "STOCK",
            action=action,
            quantity=qty,
            order_type=order_type,
            duration=duration,
            limit_price=limit,
            stop_price=stop,
            confirm_id=confirm,
            client_id=client_id,
            opened=self.clock(),
            route=str(body.get("Route") or "Intelligent"),
            parent_id=parent.id if parent else None,
            names_parent=parent is not None and self.exits_name_entry,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
        )
        if trailing and parent is None:
            # An OSO's trailing exit starts trailing only once its entry fills (in ``_work``).
            order.trail_to(q.last)
        order.price_for_bp = (
            limit or order.stop_price or (q.ask if order.is_buy else q.bid) or q.last
        )
        if parent is not None:
            order.status = "DON"  # queued until the parent fills
            self._register(order, user_id)
            return order
        try:
            self._risk_checks(order)  # before registering: the order must not reserve for itself
        except OrderRejected as e:
            self._register(order, user_id)
            self._close(order, "REJ", reason=e.reason)
            raise OrderRejected(e.reason, order.id) from None
        order.status = "OPN"
        self._register(order, user_id)
        children: list[OrderState] = []
        for oso in body.get("OSOs") or []:
            try:
                placed, errors = self.place_group(
                    user_id,
                    client_id,
                    str(oso.get("Type", "NORMAL")),
                    list(oso.get("Orders") or []),
                    live=live,
                    parent=order,
                )
            except BadRequest:
                # A malformed exit (a bad TrailingStop, say) is a 400: no entry is left behind.
                self._discard([order, *children], user_id)
                raise
            children.extend(placed)
            if errors:
                # The vendor refuses the whole request when one of its orders is invalid.
                self._discard([order, *children], user_id)
                raise errors[0]
        if work:
            self.activate(order)
        return order

    def activate(self, order: OrderState) -> None:
        """Announce a newly entered order (and its queued children), then work it."""
        self._emit(order)
        for child_id in order.children:
            self._emit(self.orders[child_id])
        self._work(order)

    def _register(self, order: OrderState, user_id: str) -> None:
        self.orders[order.id] = order
        if order.confirm_id is not None and order.client_id is not None:
            self.confirm_ids[(order.client_id, user_id, order.confirm_id)] = order.id

    def _discard(self, orders: list[OrderState], user_id: str) -> None:
        for o in orders:
            self.orders.pop(o.id, None)
            if o.confirm_id is not None and o.client_id is not None:
                self.confirm_ids.pop((o.client_id, user_id, o.confirm_id), None)

    def _check_auction(self, duration: str, order_type: str, is_future: bool) -> None:
        """An OPG or CLO order: a stock's market or limit order, placed while its auction is
        still ahead (see the ``REASON_AUCTION_*`` constants for what is documented)."""
        if is_future:
            raise OrderRejected(REASON_AUCTION_STOCKS_ONLY.format(duration=duration))
        if order_type not in AUCTION_ORDER_TYPES:
            raise OrderRejected(REASON_AUCTION_ORDER_TYPE.format(duration=duration))
        if self.session in AUCTION_PASSED[duration]:
            raise OrderRejected(REASON_AUCTION_TOO_LATE[duration])

    def _check_position(self, acct: AccountState, sym: str, action: str, qty: Decimal) -> None:
        if acct.type == "Futures":
            return
        held = acct.positions[sym].quantity if sym in acct.positions else ZERO
        if action == "SELL" and qty > max(held, ZERO):
            raise OrderRejected(REASON_SELL_EXCEEDS.format(qty=s(qty), held=s(max(held, ZERO))))
        if action == "BUYTOCOVER" and qty > max(-held, ZERO):
            raise OrderRejected(REASON_COVER_EXCEEDS.format(qty=s(qty), held=s(max(-held, ZERO))))
        if action == "SELLSHORT":
            if acct.type == "Cash":
                raise OrderRejected(REASON_NO_SHORT_IN_CASH)
            if held > 0:
                raise OrderRejected(REASON_CLOSE_LONG_FIRST.format(symbol=sym))
        if action == "BUY" and held < 0:
            raise OrderRejected(REASON_USE_COVER.format(symbol=sym))

    def _opening_quantity(self, order: OrderState) -> Decimal:
        """The part of the order's remaining quantity that opens or adds to a position."""
        acct = order.account
        if acct.type != "Futures":
            return order.remaining if order.action in OPENING_ACTIONS else ZERO
        held = acct.positions[order.symbol].quantity if order.symbol in acct.positions else ZERO
        signed = order.remaining if order.is_buy else -order.remaining
        return max(ZERO, abs(held + signed) - abs(held))

    def _risk_checks(self, order: OrderState, excluding: str | None = None) -> None:
        # A market-on-open or -on-close order waits for its auction: it is placed while the
        # market is shut (OPG always is).
        auction = order.duration in AUCTION_DURATIONS
        if not self.market_open and order.order_type == "Market" and not auction:
            raise OrderRejected(REASON_MARKET_CLOSED.format(symbol=order.symbol))
        opening = self._opening_quantity(order)
        if opening == 0:
            return
        acct = order.account
        required = self._order_cost(acct, order.symbol, opening, order.price_for_bp)
        available = self.buying_power(acct, excluding)
        if required > available:
            raise OrderRejected(
                REASON_BUYING_POWER.format(available=f"{available:.2f}", required=f"{required:.2f}")
            )

    def place_group(
        self,
        user_id: str,
        client_id: str,
        group_type: str,
        bodies: list[dict[str, Any]],
        *,
        live: bool,
        parent: OrderState | None = None,
    ) -> tuple[list[OrderState], list[OrderRejected]]:
        """Enter siblings (OCO/BRK/NORMAL); each is its own order, as the vendor notes. They
        are linked before any is worked, so a sibling that fills at once cancels the others."""
        placed: list[OrderState] = []
        errors: list[OrderRejected] = []
        for body in bodies:
            try:
                placed.append(
                    self.place(user_id, client_id, body, live=live, parent=parent, work=False)
                )
            except OrderRejected as e:
                errors.append(e)
            except BadRequest:
                # A 400 places nothing: the siblings entered before the malformed one go too.
                self._discard(placed, user_id)
                raise
        kind = group_type.upper()
        if kind in ("BRK", "OCO") and len(placed) > 1:
            name = f"{kind} {next(self._groups)}"
            for o in placed:
                o.group_type, o.group_name = kind, name
                o.siblings = [p.id for p in placed if p is not o]
        if parent is not None:
            parent.children.extend(o.id for o in placed)
        else:
            for o in placed:
                if o.is_open:
                    self.activate(o)
        return placed, errors

    # -- order life ----------------------------------------------------------------------

    def _close(self, order: OrderState, status: str, *, reason: str | None = None) -> None:
        order.status = status
        order.closed = self.clock()
        if reason:
            order.reject_reason = reason
        self._emit(order)
        if status in ("CAN", "EXP", "REJ", "OUT", "TSC"):
            for child_id in order.children:
                child = self.orders[child_id]
                if child.is_open:
                    self._close(child, "CAN")

    def cancel(self, order_id: str, *, pending: bool = False) -> OrderState:
        """``pending``: the cancel is only sent (``UCN``, "Cancel Sent": the order still works
        and may fill) until ``finish_cancel``, as when the exchange is slow to confirm it."""
        order = self.orders[order_id]
        if not order.is_open:
            raise BadRequest(
                f"Order {order_id} cannot be canceled: it is {STATUS_TEXT[order.status]}."
            )
        if pending:
            order.status = "UCN"
            self._emit(order)
            return order
        self._close(order, "CAN")
        return order

    def finish_cancel(self, order: OrderState) -> None:
        if order.is_open:
            self._close(order, "CAN")

    def replace_order(self, order_id: str, body: dict[str, Any]) -> OrderState:
        """``PUT /v3/orderexecution/orders/{orderID}``: "Replaces an active order with a
        modified version of that order. You cannot update an order that has been filled."

        The v3 OpenAPI answers with that order's ``OrderID`` and names no other, so the order
        keeps its id and changes in place [infer]; the change lands at once (no "Replace Sent"
        in between), as the SIM's instant fills. What the vendor does with an invalid or
        unaffordable change is not published: a malformed one is a 400 (``BadRequest``), one
        the account cannot carry a 200 with ``Error`` (``OrderRejected``), and either way the
        order works on unchanged, as at any broker that refuses a cancel/replace."""
        order = self.orders[order_id]
        if not order.is_open or order.status in ("UCN", "RSN", "RPD"):
            raise BadRequest(
                f"Order {order_id} cannot be replaced: its status is {STATUS_TEXT[order.status]}."
            )
        documented = ("LimitPrice", "StopPrice", "OrderType", "Quantity", "AdvancedOptions")
        if not any(body.get(k) not in (None, "") for k in documented):
            raise BadRequest("Give at least one property to replace.")
        new = replace(order)  # checked whole before anything changes
        if body.get("Quantity") not in (None, ""):
            qty = parse_decimal(body["Quantity"], "Quantity")
            if qty <= 0 or qty != qty.to_integral_value():
                raise BadRequest("Quantity must be a positive whole number.")
            if qty <= order.filled:
                raise BadRequest(f"Quantity must be more than the {s(order.filled)} filled.")
            new.quantity = qty
        if body.get("OrderType") not in (None, ""):
            if body["OrderType"] != "Market":
                raise BadRequest("OrderType can only be updated to Market.")
            if order.duration in EXTENDED_DURATIONS:
                # What placement refuses for the duration, a change may not make.
                raise OrderRejected(REASON_EXTENDED_LIMIT_ONLY.format(duration=order.duration))
            new.order_type = "Market"
            new.limit_price = new.stop_price = None
            new.trail_amount = new.trail_percent = new.watermark = None
        trail_amount, trail_percent = _trailing_stop(body, new.order_type)
        if trail_amount is not None or trail_percent is not None:
            if not order.trailing:
                raise BadRequest("TrailingStop can only be replaced on a trailing stop order.")
            new.trail_amount, new.trail_percent = trail_amount, trail_percent
            if new.watermark is not None:  # a queued exit starts trailing when it works
                new.trail_to(new.watermark)
        elif body.get("StopPrice") not in (None, ""):
            # The vendor ignores StopPrice only beside a TrailingStop; alone, a trailing stop's
            # stop cannot be pinned [infer].
            if new.order_type not in ("StopMarket", "StopLimit") or new.trailing:
                raise BadRequest(f"StopPrice is not valid for this {new.order_type} order.")
            new.stop_price = parse_decimal(body["StopPrice"], "StopPrice")
        if body.get("LimitPrice") not in (None, ""):
            if new.order_type not in ("Limit", "StopLimit"):
                raise BadRequest(f"LimitPrice is not valid for {new.order_type} orders.")
            new.limit_price = parse_decimal(body["LimitPrice"], "LimitPrice")
        for name, price in (("LimitPrice", new.limit_price), ("StopPrice", new.stop_price)):
            if price is not None and price <= 0:
                raise BadRequest(f"{name} must be greater than zero.")
        q = self.quote(order.symbol)
        touch = ((q.ask if new.is_buy else q.bid) or q.last) if q is not None else ZERO
        new.price_for_bp = new.limit_price or new.stop_price or touch
        if new.status != "DON":  # a queued exit is checked when its entry fills
            if new.quantity != order.quantity and order.parent_id is None:
                self._check_position(order.account, order.symbol, order.action, new.remaining)
            self._risk_checks(new, excluding=order.id)
        for name in (
            "quantity",
            "order_type",
            "limit_price",
            "stop_price",
            "trail_amount",
            "trail_percent",
            "watermark",
            "price_for_bp",
        ):
            setattr(order, name, getattr(new, name))
        self._emit(order)
        self._work(order)  # a limit moved through the market fills as a new one would
        return order

    def reject(self, order_id: str, reason: str) -> OrderState:
        """Test control: the exchange rejects a working order."""
        order = self.orders[order_id]
        self._close(order, "REJ", reason=reason)
        return order

    def mark_replaced(self, order_id: str) -> OrderState:
        """Test control: TradeStation reports the order "UCH" ("Replaced", a Canceled-category
        code in the v3 OpenAPI's status table), as after a change made elsewhere than this
        API, whose replace (``replace_order``) keeps the order's id. The order that replaces
        it, and whether anything links the two, is not documented, so it is not emulated."""
        order = self.orders[order_id]
        self._close(order, "UCH")
        return order

    def expire_day_orders(self, *, regular_close: bool = False) -> list[OrderState]:
        """Test control: the day's sessions end; DAY and DYP orders expire. With
        ``regular_close`` only the regular session ends: DYP orders work on into the
        post-market, "valid until the end of the extended trading session". Auction orders
        (OPG, CLO) end in their auction instead (``run_auction``)."""
        ending = ("DAY",) if regular_close else ("DAY", "DYP")
        out = []
        for order in list(self.orders.values()):
            if order.is_open and order.duration in ending and order.status != "DON":
                self._close(order, "EXP")
                out.append(order)
        return out

    def run_opening_auction(self) -> list[OrderState]:
        """Test control: the opening auction (``run_auction("OPG")``)."""
        return self.run_auction("OPG")

    def run_closing_auction(self) -> list[OrderState]:
        """Test control: the closing auction (``run_auction("CLO")``)."""
        return self.run_auction("CLO")

    def run_auction(self, duration: str) -> list[OrderState]:
        """The stock exchanges' opening (``OPG``) or closing (``CLO``) auction: each working
        order of that duration trades in full at the auction's one price, its symbol's last
        price (move it with ``set_quote`` first), if it is a market order or its limit reaches
        that price; the rest are taken out unfilled, "UROut" (``OUT``), as an IOC's leftover.
        Returns the orders it ended. [infer] The status of an auction order left unfilled,
        the price, and all-or-nothing (the emulator keeps no auction book to fill part of an
        order against) are not documented by the vendor."""
        if duration not in AUCTION_DURATIONS:
            raise ValueError("auction duration must be OPG or CLO")
        ended: list[OrderState] = []
        for order in list(self.orders.values()):  # placement order
            if not order.is_open or order.status == "DON" or order.duration != duration:
                continue
            q = self.quote(order.symbol)
            price = q.last if q is not None else None
            limit = order.limit_price
            if price is not None and (
                limit is None or (price <= limit if order.is_buy else price >= limit)
            ):
                self._execute(order, order.remaining, price)
            else:
                self._close(order, "OUT")
            ended.append(order)
        return ended

    def fill(
        self,
        order_id: str,
        quantity: Decimal | int | str,
        price: Decimal | int | str,
    ) -> OrderState:
        """Test control: execute part or all of an order at ``price``."""
        order = self.orders[order_id]
        qty = Decimal(str(quantity))
        if not order.is_open or order.status == "DON":
            raise ValueError(f"order {order_id} is not working ({order.status})")
        if qty <= 0 or qty > order.remaining:
            raise ValueError(f"fill quantity {qty} must be within the remaining {order.remaining}")
        self._execute(order, qty, Decimal(str(price)))
        return order

    def _execute(self, order: OrderState, qty: Decimal, price: Decimal) -> None:
        acct = order.account
        signed = qty if order.is_buy else -qty
        mult = symbols.multiplier(order.symbol)
        pos = acct.positions.get(order.symbol)
        held = pos.quantity if pos else ZERO
        new_qty = held + signed
        if held == 0 or (held > 0) == (signed > 0):
            avg = ((abs(held) * (pos.average_price if pos else ZERO)) + qty * price) / abs(new_qty)
        else:
            closed_qty = min(abs(signed), abs(held))
            assert pos is not None
            realized = (price - pos.average_price) * closed_qty * mult * (1 if held > 0 else -1)
            acct.realized += realized
            if acct.type == "Futures":
                acct.cash += realized
            avg = pos.average_price if abs(signed) <= abs(held) else price
        if acct.type != "Futures":
            acct.cash -= signed * price
        if new_qty == 0:
            acct.positions.pop(order.symbol, None)
        elif pos is None or (held > 0) != (new_qty > 0):
            acct.positions[order.symbol] = PositionState(
                order.symbol, new_qty, avg, self.clock(), str(next(self._position_ids))
            )
        else:
            pos.quantity, pos.average_price = new_qty, avg
        order.filled += qty
        order.filled_value += qty * price
        if order.remaining == 0:
            self._close(order, "FLL")
            self._on_filled(order)
        else:
            order.status = "FPR"
            self._emit(order)
            self._cancel_siblings(order)

    def _on_filled(self, order: OrderState) -> None:
        self._cancel_siblings(order)
        for child_id in order.children:
            child = self.orders[child_id]
            if child.status != "DON":
                continue
            try:
                self._check_position(child.account, child.symbol, child.action, child.quantity)
            except OrderRejected as e:
                self._close(child, "REJ", reason=e.reason)
                continue
            child.status = "OPN"
            self._emit(child)
            self._work(child)

    def _cancel_siblings(self, order: OrderState) -> None:
        if order.group_type not in ("BRK", "OCO"):
            return
        for sib_id in order.siblings:
            sib = self.orders[sib_id]
            if sib.is_open:
                self._close(sib, "CAN")

    def _work(self, order: OrderState) -> None:
        """Fill what the current quote allows; IOC/FOK leftovers are cancelled (UROut)."""
        if not order.is_open or order.status == "DON":
            return
        q = self.quote(order.symbol)
        if q is not None and order.trailing and not order.stop_triggered:
            order.trail_to(q.last)  # the stop follows the price whether or not fills are automatic
        if q is not None and self.auto_fill and self.in_session(order):
            price = self._executable_price(order, q)
            if price is not None:
                self._execute(order, order.remaining, price)
        if order.is_open and order.duration in ("IOC", "FOK") and self.auto_fill:
            self._close(order, "OUT")

    def _executable_price(self, order: OrderState, q: QuoteState) -> Decimal | None:
        touch = (q.ask if order.is_buy else q.bid) or q.last
        if order.order_type in ("StopMarket", "StopLimit") and not order.stop_triggered:
            assert order.stop_price is not None
            hit = q.last >= order.stop_price if order.is_buy else q.last <= order.stop_price
            if not hit:
                return None
            order.stop_triggered = True
        if order.order_type in ("Market", "StopMarket"):
            return touch
        assert order.limit_price is not None
        if order.is_buy and touch <= order.limit_price:
            return touch
        if not order.is_buy and touch >= order.limit_price:
            return touch
        return None

    def check_resting(self, symbol: str) -> None:
        for order in list(self.orders.values()):
            if order.symbol == symbol and order.is_open:
                self._work(order)

    def orders_payload(self, orders: Iterable[OrderState]) -> list[dict[str, Any]]:
        return [o.payload() for o in orders]
