"""The adapter interface and the shared machinery that keeps each broker module small.

``BrokerAdapter`` is the interface (ccxt's unified verbs) plus the checks every broker needs
before an order leaves (asset class against account type, order types, time in force,
fractional quantities, brackets). ``HttpBrokerAdapter`` adds what every REST broker shares:
auth header and token refresh on 401, timeouts, rate limiters, retries for reads only,
a circuit breaker, logging without secrets, and error translation through one narrow hook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import aiohttp
from aiolimiter import AsyncLimiter

from adapters import symbols
from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerError,
    BrokerUnavailable,
    InvalidOrder,
    OrderNotFound,
    OrderNotReplaceable,
    RateLimited,
)
from adapters.models import (
    AUCTIONS,
    Account,
    AccountRef,
    AccountType,
    AssetClass,
    Balance,
    Bracket,
    Environment,
    ExtendedReach,
    Order,
    OrderChange,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Side,
    SubmissionHint,
    TimeInForce,
)

log = logging.getLogger("tradecord.adapters")

_CHANGE_WORDS = {"quantity": "quantity", "limit_price": "limit price", "stop_price": "stop price"}

ASSET_WORDS = {
    AssetClass.EQUITY: "stocks and ETFs",
    AssetClass.CRYPTO: "crypto",
    AssetClass.FUTURE: "futures",
    AssetClass.OPTION: "options",
}


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``requests`` per ``seconds`` for one bucket, per account (member token) or per app."""

    bucket: str
    requests: int
    seconds: float
    scope: str = "account"  # "account" | "app"


@dataclass(frozen=True)
class Capabilities:
    asset_classes: Mapping[AccountType, frozenset[AssetClass]]
    order_types: frozenset[OrderType] = frozenset(OrderType) - {OrderType.TRAILING_STOP}
    # Narrower order types for some asset classes (Alpaca crypto: market, limit, stop_limit).
    order_types_by_asset: Mapping[AssetClass, frozenset[OrderType]] = field(default_factory=dict)
    time_in_force: Mapping[AssetClass, frozenset[TimeInForce]] = field(default_factory=dict)
    fractional: frozenset[AssetClass] = frozenset({AssetClass.CRYPTO})
    # Decimals a quantity of a ``fractional`` asset class may have, where the broker takes
    # other than 8 (Alpaca: 9), so a position held to the last decimal can be closed.
    quantity_decimals: Mapping[AssetClass, int] = field(default_factory=dict)
    brackets: bool = False
    environments: frozenset[Environment] = frozenset(Environment)
    quotes: bool = True
    order_stream: bool = False
    rate_limits: tuple[RateLimit, ...] = ()
    # What ``replace_order`` can change on a working order (``OrderChange`` field names).
    replace: frozenset[str] = frozenset()
    # Stock limit day orders that may also fill in the pre- and after-market sessions.
    extended_hours: bool = False
    # A bracket's stop-loss may be a trailing stop (Bracket.stop_loss_trail_*).
    bracket_trailing_stop: bool = False
    # A bracket's exits follow the position: an order that closes some of it by hand cuts
    # them to what is left (Tradecord Paper). Elsewhere they hold the shares they close.
    exits_follow_position: bool = False
    # A sell may not take shares other open sells hold (a bracket's exits once): Alpaca
    # sells only its "qty_available" and refuses the rest.
    open_sells_hold_shares: bool = False
    # A bracket's exits are good till cancelled whatever the entry's time in force
    # (TradeStation); elsewhere they take the entry's, and a day bracket's end with the day.
    bracket_exits_gtc: bool = False
    # Cancelling one exit of a bracket cancels the bracket's other working orders (Tradier
    # cancels a leg only through its bracket): the member must hear of the stop-loss going.
    exit_cancel_takes_bracket: bool = False
    # A market order placed while the exchange is shut waits for the open (Alpaca, Tradier).
    # TradeStation rejects it ("Market orders are not accepted outside trading hours"), save
    # the auction durations placed for the open or the close.
    market_orders_when_closed: bool = True

    def can_trade(self, account_type: AccountType, asset_class: AssetClass) -> bool:
        return asset_class in self.asset_classes.get(account_type, frozenset())

    def account_types_for(self, asset_class: AssetClass) -> list[AccountType]:
        return [t for t, classes in self.asset_classes.items() if asset_class in classes]

    def order_types_for(self, asset_class: AssetClass) -> frozenset[OrderType]:
        return self.order_types_by_asset.get(asset_class, self.order_types)

    def max_quantity_decimals(self, asset_class: AssetClass) -> int:
        """How many decimals a quantity of ``asset_class`` may have here: none for whole
        units, else the broker's own figure (8 unless it says)."""
        if asset_class not in self.fractional:
            return 0
        return self.quantity_decimals.get(asset_class, 8)


@dataclass(frozen=True)
class OAuthSpec:
    """How a broker does OAuth 2.0; the connections service drives it with authlib.

    URLs here are the vendor's real ones; settings (``TRADECORD_<BROKER>_*_URL``) override them.
    """

    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]  # the smallest set that reads and trades; never money movement
    refresh_url: str | None = None  # where it differs from token_url (Tradier)
    revoke_url: str | None = None
    # Revoking one refresh token revokes every refresh token of that login for our client
    # (TradeStation): never while another connection signs in with the same login.
    revokes_login: bool = False
    scope_separator: str = " "
    pkce: bool = False
    # The vendor turns PKCE on per client when asked: ``TRADECORD_<BROKER>_PKCE`` says it is.
    pkce_on_request: bool = False
    client_auth: str = "client_secret_post"  # or "client_secret_basic"
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    issuer: str | None = None  # RFC 9207 ``iss`` expected on the callback, when sent
    issuer_required: bool = False  # the broker advertises authorization_response_iss_parameter
    refresh_token_lifetime: float | None = None  # seconds, when fixed (member is reminded)


class TokenProvider(Protocol):
    """Gives the adapter a current access token; ``refresh`` is single-flight per connection
    (across processes) and raises ``AuthorizationExpired`` when the broker refuses it.
    ``refused`` hears that the broker refused a current token for good (401 after a refresh,
    or 403 for a scope not granted) and the member is told ``reason``, which asks to re-link:
    the provider records that the connection needs it."""

    async def access_token(self) -> str: ...

    async def refresh(self, rejected_token: str) -> str: ...

    async def refused(self, token: str, reason: str) -> None: ...


class StaticToken:
    """A token that cannot be refreshed (Alpaca's never expire; tests)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def access_token(self) -> str:
        return self._token

    async def refresh(self, rejected_token: str) -> str:
        raise AuthorizationExpired()

    async def refused(self, token: str, reason: str) -> None:
        return None  # nothing stored to mark


class Limiter(Protocol):
    async def acquire(self, amount: float = 1) -> None: ...


class Limiters(Protocol):
    """Where adapters get their limiters: ``LimiterRegistry`` in one process, or buckets every
    process shares (``bot.services.ratelimits``)."""

    def get(self, broker: str, rule: RateLimit, owner: str) -> Limiter: ...


def bucket(rule: RateLimit) -> tuple[float, float]:
    """The leaky bucket that keeps any ``rule.seconds`` within ``rule.requests``: its capacity
    (a tenth of the limit, at least one) and how fast it drains (the rest, over the window).
    A bucket the size of the whole limit sends it at once and then as much again as it drains
    within the same window: twice the limit (TradeStation counts from the first request)."""
    burst = max(1, rule.requests // 10)
    return float(burst), max(rule.requests - burst, 1) / rule.seconds  # 1 a window: as it can


class LimiterRegistry:
    """Process-wide limiters keyed by broker, bucket and owner. Shared by all adapters so that
    many connections of one app together stay under the app's published limit."""

    def __init__(self) -> None:
        self._limiters: dict[tuple[str, str, str], AsyncLimiter] = {}

    def get(self, broker: str, rule: RateLimit, owner: str) -> AsyncLimiter:
        key = (broker, rule.bucket, owner if rule.scope == "account" else "*app*")
        limiter = self._limiters.get(key)
        if limiter is None:
            capacity, per_second = bucket(rule)
            limiter = self._limiters[key] = AsyncLimiter(capacity, capacity / per_second)
        return limiter


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; new orders then fail fast for
    ``cooldown`` seconds while reads (and the reconciler) keep probing."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def open(self) -> bool:
        if self.opened_at is None:
            return False
        if time.monotonic() - self.opened_at >= self.cooldown:
            return False  # half-open: let the next call probe
        return True

    def record(self, ok: bool) -> None:
        if ok:
            self.failures, self.opened_at = 0, None
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()


@dataclass
class AdapterContext:
    """Everything an adapter instance needs, built by the connections service."""

    session: aiohttp.ClientSession | None = None
    # Base URL per environment; a connection's token may serve one or both.
    api_urls: Mapping[Environment, str] = field(default_factory=dict)
    tokens: TokenProvider | None = None
    limiters: Limiters = field(default_factory=LimiterRegistry)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    owner: str = "anonymous"  # limiter key for per-account limits (the connection id)
    timeout: float = 10.0
    read_retries: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


class BrokerAdapter(ABC):
    """The interface. Public verbs validate, then call the narrow ``_hooks`` subclasses write."""

    key: ClassVar[str]
    display_name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    oauth: ClassVar[OAuthSpec | None] = None
    # The vendor's real API base URL per environment; settings may point them elsewhere.
    default_api_urls: ClassVar[Mapping[Environment, str]] = {}

    def __init__(self, context: AdapterContext) -> None:
        self.ctx = context

    # Which environments /connect may ask for (first = default). "both" links live and paper
    # with one authorization where the broker's token reaches both hosts.
    connect_environments: ClassVar[tuple[str, ...]] = ("both", "live", "paper")

    @classmethod
    def authorize_params(cls, environment: str | None) -> dict[str, str]:
        """Extra authorization-request parameters for the environment a member asked for."""
        return {}

    # -- reads --------------------------------------------------------------------------

    @abstractmethod
    async def fetch_accounts(self) -> list[Account]: ...

    @abstractmethod
    async def fetch_balance(self, account: AccountRef) -> Balance: ...

    async def fetch_buying_power(
        self, account: AccountRef, asset: AssetClass | None = None
    ) -> Decimal:
        """What a new order (of ``asset``) is checked against (a preview needs no more of the
        balance). A broker answers it with the balance; Tradecord Paper computes it without
        quoting the positions it does not depend on."""
        return (await self.fetch_balance(account)).buying_power

    @abstractmethod
    async def fetch_positions(self, account: AccountRef) -> list[Position]: ...

    async def fetch_position(self, account: AccountRef, symbol: str) -> Position | None:
        """The position in ``symbol``, if any. Brokers list positions in one call; a broker
        that can read one alone (the paper broker) overrides this."""
        key = symbols.instrument_key(symbol)  # however either side spells it (@ES, /ES)
        return next(
            (
                p
                for p in await self.fetch_positions(account)
                if symbols.instrument_key(p.symbol) == key
            ),
            None,
        )

    @abstractmethod
    async def fetch_open_orders(self, account: AccountRef) -> list[Order]: ...

    @abstractmethod
    async def fetch_orders(
        self, account: AccountRef, *, since: datetime | None = None, limit: int = 50
    ) -> list[Order]:
        """Order history (closed orders), newest first."""

    async def fetch_order(
        self,
        account: AccountRef,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
        hint: SubmissionHint | None = None,
    ) -> Order:
        """By broker id or by our client order id; ``OrderNotFound`` proves absence.

        ``hint`` (what was sent under ``client_order_id``, and when) lets a lookup in a process
        that did not send the order recognise it where the broker does not keep our id."""
        if (order_id is None) == (client_order_id is None):
            raise ValueError("give exactly one of order_id and client_order_id")
        if order_id is not None:
            return await self._fetch_order_by_id(account, order_id)
        assert client_order_id is not None
        if hint is not None and hint.request.client_order_id not in (None, client_order_id):
            raise ValueError("the hint describes another client order id")
        return await self._fetch_order_by_client_id(account, client_order_id, hint)

    @abstractmethod
    async def _fetch_order_by_id(self, account: AccountRef, order_id: str) -> Order: ...

    @abstractmethod
    async def _fetch_order_by_client_id(
        self, account: AccountRef, client_order_id: str, hint: SubmissionHint | None = None
    ) -> Order: ...

    @abstractmethod
    async def fetch_quote(self, symbol: str) -> Quote: ...

    # -- writes -------------------------------------------------------------------------

    async def create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        """Place an order. Never retried here: on ``BrokerUnavailable(maybe_sent=True)`` the
        caller looks the order up by client order id before anything else."""
        self.check_order(account, request)
        return await self._create_order(account, request)

    @abstractmethod
    async def _create_order(self, account: AccountRef, request: OrderRequest) -> Order: ...

    @abstractmethod
    async def cancel_order(self, account: AccountRef, order_id: str) -> None:
        """Ask the broker to cancel; ``OrderNotCancelable`` when it has already ended."""

    async def replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        """Change a working order's quantity or prices (``order`` as just read). Never
        retried: on ``BrokerUnavailable(maybe_sent=True)`` the caller reads the order again
        before anything else. Returns the order working after the change: a new one where the
        broker's replace makes one (Alpaca; it ``replaces`` the old one), else ``order`` as
        the broker reports it afterwards. ``OrderNotReplaceable`` when the order has ended or
        a change or cancel of it is still being carried out."""
        self.check_change(order, change)
        return await self._replace_order(account, order, change)

    async def _replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        raise InvalidOrder(
            f"{self.display_name} orders cannot be changed from Tradecord: cancel it with "
            "/cancel and place a new one."
        )

    async def stream_order_updates(
        self, accounts: list[AccountRef], *, ready: asyncio.Event | None = None
    ) -> AsyncIterator[OrderUpdate]:
        """The vendor's order stream, where ``capabilities.order_stream`` says there is one.

        ``ready`` is set once the broker has subscribed the stream (all of it, when it merges
        several): any change after that comes through it, so a poll made then misses nothing.
        It stays unset if the stream ends or fails before that."""
        raise BrokerError(f"{self.display_name} has no order stream; poll fetch_open_orders.")
        yield  # pragma: no cover - makes this an async generator

    async def close(self) -> None:  # noqa: B027 - most adapters hold nothing of their own
        """Release what the adapter holds (the shared HTTP session is not the adapter's)."""

    # -- how this broker writes and prices an order -----------------------------------------

    # How this broker writes a stock's share class: BRK.B at most, BRK/B at Tradier.
    share_class_separator: ClassVar[str] = "."
    # Orders carry no client order id of ours, so a lost submission is found by what it
    # was (``SubmissionHint``): the caller passes the orders other intents own.
    finds_orders_by_content: ClassVar[bool] = False

    def canonical_symbol(self, symbol: str) -> str:
        """``symbol`` as this broker writes it, so an order and a position in one instrument
        match however the member typed it: a share class as the broker writes it (BRK-B,
        BRK/B and BRK.B are one stock). Brokers that canonicalise more (the paper broker:
        ``BTC/USD`` → ``BTCUSD``, ``@ES`` → ``/ES``) override this."""
        return symbols.share_class(symbol, self.share_class_separator)

    def fraction_allowed(
        self,
        asset: AssetClass,
        side: Side,
        time_in_force: TimeInForce | None,
        *,
        bracket: bool,
        exiting: bool,
        symbol: str | None = None,
    ) -> bool:
        """Whether an order on these terms may be for a fraction of a unit here, so a sizing
        (a signal's, /trade's amount) rounds to whole units only where it must. ``exiting``:
        it closes a position held. ``symbol``: the instrument, where its own rules matter
        (Alpaca's stocks that are not fractionable, once quoted). By the capabilities; a
        broker with rules of its own for fractions (Alpaca's shares) overrides this."""
        return asset in self.capabilities.fractional

    def extended_hours_reach(self) -> ExtendedReach | None:
        """For an extended-hours order sent now: the one session it works in, where the broker
        does not carry it through the day's pre-market, regular and after-hours sessions (as
        most do); None when it does."""
        return None

    def market_price_type(self) -> str | None:
        """Which quote price a market order fills at, where the account says (Tradecord
        Paper's ``PriceType``); None at a real broker, where the market decides."""
        return None

    def keeps_exchange_hours(self) -> bool:
        """Whether orders here wait for the exchange's sessions, as at every real broker (a
        market order placed at night fills at the open). Tradecord Paper in its 24/7 mode
        fills at any hour and overrides this."""
        return True

    def buying_power_required(self, request: OrderRequest, price: Decimal) -> Decimal:
        """Buying power ``request`` takes at ``price`` when it opens a position: its notional
        here; a broker that margins (the paper broker's futures) overrides this with its own
        requirement, so previews refuse exactly what the broker would."""
        return request.quantity * price * symbols.multiplier(request.symbol)

    # -- checks every broker shares -----------------------------------------------------

    def check_position(self, account: AccountRef, request: OrderRequest, held: Decimal) -> None:
        """Refuse, at preview, an order the broker refuses given the position (``held``,
        signed: negative is short); brokers with rules of their own add to it."""
        if (
            account.type is AccountType.CASH
            and request.side is Side.SELL
            and request.quantity > held
        ):
            have = f"hold {held.normalize():f}" if held > 0 else "hold no"
            raise InvalidOrder(
                f"You {have} {request.symbol} in this cash account, so selling "
                f"{request.quantity.normalize():f} would sell short, which a cash account "
                "cannot do. "
                + (
                    f"Sell at most {held.normalize():f}."
                    if held > 0
                    else "Sell short from a margin account (see /accounts)."
                )
            )

    def check_order(self, account: AccountRef, request: OrderRequest) -> None:
        caps = self.capabilities
        asset = request.asset_class or symbols.asset_class_of(request.symbol)
        request.asset_class = asset
        if account.environment not in caps.environments:
            raise InvalidOrder(f"{self.display_name} has no {account.environment} environment.")
        if not caps.can_trade(account.type, asset):
            raise AssetClassNotSupported(self.wrong_account_message(account, asset, request.symbol))
        order_types = caps.order_types_for(asset)
        if request.order_type not in order_types:
            allowed = ", ".join(sorted(t.value for t in order_types))
            raise InvalidOrder(
                f"{self.display_name} does not take {request.order_type} orders for "
                f"{ASSET_WORDS[asset]} (allowed: {allowed})."
            )
        tifs = caps.time_in_force.get(asset)
        if tifs is not None and request.time_in_force not in tifs:
            allowed = ", ".join(sorted(t.value for t in tifs))
            raise InvalidOrder(
                f"{ASSET_WORDS[asset].capitalize()} at {self.display_name} take time in force "
                f"{allowed}, not {request.time_in_force}."
            )
        if (
            request.quantity != request.quantity.to_integral_value()
            and asset not in caps.fractional
        ):
            raise InvalidOrder(
                f"{self.display_name} takes whole quantities for {ASSET_WORDS[asset]}; "
                f"{request.quantity} has a fraction."
            )
        if request.bracket and not caps.brackets:
            raise InvalidOrder(
                f"{self.display_name} does not support take-profit/stop-loss brackets."
            )
        if request.bracket and request.bracket.trailing:
            self.check_trailing_stop_loss(request.bracket)
        if request.extended_hours:
            self.check_extended_hours(request, asset)
        if request.time_in_force in AUCTIONS:
            self.check_auction(request, asset)

    def check_auction(self, request: OrderRequest, asset: AssetClass) -> None:
        """The rules every broker shares for an auction order (opg, cls): the stock exchanges'
        opening and closing auctions take market and limit orders, one price for all."""
        which = "opening" if request.time_in_force is TimeInForce.OPG else "closing"
        a_which = "an opening" if request.time_in_force is TimeInForce.OPG else "a closing"
        if asset is not AssetClass.EQUITY:
            raise InvalidOrder(
                f"Time in force {request.time_in_force} trades in a stock exchange's {which} "
                f"auction; {symbols.normalize(request.symbol)} is "
                f"{_article(ASSET_WORDS[asset])}. Use day or gtc."
            )
        if request.order_type not in (OrderType.MARKET, OrderType.LIMIT):
            raise InvalidOrder(
                f"{a_which.capitalize()}-auction order is a market or limit order, not a "
                f"{request.order_type.value.replace('_', '-')} order."
            )
        if request.bracket is not None:
            raise InvalidOrder(
                f"A take-profit/stop-loss bracket cannot ride on {a_which}-auction order: "
                "place the exits once it has filled, or use day or gtc."
            )
        if request.extended_hours:
            raise InvalidOrder(
                f"{a_which.capitalize()}-auction order trades in the auction only: it cannot "
                "also be an extended-hours order."
            )

    def check_trailing_stop_loss(self, bracket: Bracket) -> None:
        """A bracket's trailing stop-loss: where the broker takes one, trailing by one positive
        amount or a percent under 100, as a stop (not a stop-limit)."""
        if not self.capabilities.bracket_trailing_stop:
            raise InvalidOrder(
                f"{self.display_name} takes no trailing stop-loss in a take-profit/stop-loss "
                "bracket. Send a fixed stop-loss (stopLoss type stop) instead."
            )
        amount, percent = bracket.stop_loss_trail_amount, bracket.stop_loss_trail_percent
        if amount is not None and percent is not None:
            raise InvalidOrder("A trailing stop-loss trails by an amount or a percent, not both.")
        if bracket.stop_loss_limit is not None:
            raise InvalidOrder("A trailing stop-loss is a stop order: it takes no limit price.")
        if amount is not None and not amount > 0:
            raise InvalidOrder(f"The stop-loss trail amount must be above zero, not {amount}.")
        if percent is not None and not 0 < percent < 100:
            raise InvalidOrder(
                f"The stop-loss trail percent must be above 0 and below 100, not {percent}."
            )

    def check_extended_hours(self, request: OrderRequest, asset: AssetClass) -> None:
        """The rules every broker shares for an order that may fill outside regular hours:
        the exchanges then take only limit orders, for the day's sessions, in stocks."""
        if asset is not AssetClass.EQUITY:
            raise InvalidOrder(
                f"Extended hours are for stocks and ETFs; {symbols.normalize(request.symbol)} "
                f"is {_article(ASSET_WORDS[asset])}. Send it without extended hours."
            )
        if not self.capabilities.extended_hours:
            raise InvalidOrder(
                f"{self.display_name} takes no extended-hours orders from Tradecord. Send it "
                "without extended hours, for the regular session."
            )
        if request.order_type is not OrderType.LIMIT:
            raise InvalidOrder(
                "Extended-hours orders must be limit orders: before the open and after the "
                "close the exchanges take no market or stop orders. Give a limit price."
            )
        if request.time_in_force is not TimeInForce.DAY:
            raise InvalidOrder(
                "Extended-hours orders are day orders: they work through the day's pre-market, "
                "regular and after-hours sessions. Use time in force day."
            )
        if request.bracket is not None:
            raise InvalidOrder(
                "A take-profit/stop-loss bracket cannot be placed for extended hours: its "
                "stop-loss would be a stop order, which works in regular hours only."
            )

    def check_change(self, order: Order, change: OrderChange) -> None:
        """Refuse a change that no broker would carry out, or this one cannot, before it is
        sent, each with what to do instead."""
        wanted = change.fields()
        if not wanted:
            raise InvalidOrder("Give a new quantity, limit_price or stop_price to change.")
        if order.status.is_final:
            raise OrderNotReplaceable(
                f"Order {order.id[-8:]} has ended ({order.status.value.replace('_', ' ')}): "
                "there is nothing left to change. /orders shows what is still working."
            )
        if order.cancel_pending:
            raise OrderNotReplaceable(
                f"A cancel of order {order.id[-8:]} is being carried out: it cannot be changed."
            )
        missing = sorted(wanted - self.capabilities.replace)
        if missing:
            what = " or ".join(_CHANGE_WORDS[f] for f in missing)
            raise InvalidOrder(
                f"{self.display_name} cannot change an order's {what}: cancel it with /cancel "
                "and place a new one."
            )
        if order.order_type is OrderType.TRAILING_STOP:
            raise InvalidOrder(
                "A trailing stop moves by itself and its trail cannot be changed here: cancel "
                "it with /cancel and place a new one."
            )
        kind = order.order_type.value.replace("_", " ")
        if change.limit_price is not None and order.limit_price is None:
            raise InvalidOrder(f"Order {order.id[-8:]} is a {kind} order: it has no limit price.")
        if change.stop_price is not None and order.stop_price is None:
            raise InvalidOrder(f"Order {order.id[-8:]} is a {kind} order: it has no stop price.")
        for label, price in (("limit", change.limit_price), ("stop", change.stop_price)):
            if price is None:
                continue
            if not price.is_finite() or price <= 0:
                raise InvalidOrder(f"The {label} price must be a positive number.")
            if order.asset_class is AssetClass.EQUITY:
                problem = symbols.sub_penny_problem(label, price, symbols.normalize(order.symbol))
                if problem is not None:
                    raise InvalidOrder(problem)
        if change.quantity is not None:
            q = change.quantity
            if not q.is_finite() or q <= order.filled_quantity:
                filled = (
                    f", more than the {order.filled_quantity.normalize():f} already filled"
                    if order.filled_quantity
                    else ""
                )
                raise InvalidOrder(
                    f"The new quantity is the order's total and must be above zero{filled}."
                )
            if q != q.to_integral_value() and order.asset_class not in self.capabilities.fractional:
                raise InvalidOrder(
                    f"{self.display_name} takes whole quantities for "
                    f"{ASSET_WORDS[order.asset_class]}; {q.normalize():f} has a fraction."
                )
        if all(getattr(change, f) == getattr(order, f) for f in wanted):
            raise InvalidOrder("The order already has that: there is nothing to change.")

    def check_stock_prices(self, request: OrderRequest) -> None:
        """Refuse stock prices finer than SEC Rule 612 allows (whole cents from $1, 0.0001
        below), saying which prices would do. A broker may not accept them, and how TradeStation
        or Tradier word the refusal is not published: checking here gives every broker the same
        clear answer before anything is sent."""
        if (request.asset_class or symbols.asset_class_of(request.symbol)) is not (
            AssetClass.EQUITY
        ):
            return
        b = request.bracket
        for label, price in (
            ("limit", request.limit_price),
            ("stop", request.stop_price),
            ("take-profit", b.take_profit if b else None),
            ("stop-loss", b.stop_loss if b else None),
            ("stop-loss limit", b.stop_loss_limit if b else None),
        ):
            if price is None or not price.is_finite() or price <= 0:
                continue  # not a price to round; the other checks (or the broker) refuse it
            problem = symbols.sub_penny_problem(label, price, symbols.normalize(request.symbol))
            if problem is not None:
                raise InvalidOrder(problem)

    def wrong_account_fact(self, account: AccountRef, asset: AssetClass, symbol: str) -> str:
        """What is wrong, without the advice: a caller that knows a better way adds its own."""
        return (
            f"{symbols.normalize(symbol)} is {_article(ASSET_WORDS[asset])}, and the "
            f"{account.type} account chosen for this connection cannot trade {ASSET_WORDS[asset]}."
        )

    def wrong_account_message(self, account: AccountRef, asset: AssetClass, symbol: str) -> str:
        kinds = caps_list(self.capabilities.account_types_for(asset))
        base = self.wrong_account_fact(account, asset, symbol)
        if not kinds:
            return base + f" {self.display_name} does not offer {ASSET_WORDS[asset]} trading."
        return (
            base + f" At {self.display_name}, {ASSET_WORDS[asset]} trade in a {kinds} account: "
            f"choose that account for this connection in /accounts (none listed there? "
            f"{self.display_name} must open one for you first)."
        )


class AllReady:
    """Sets ``ready`` once every part of a merged stream (one per environment) is subscribed:
    a change in a part not yet subscribed would be in neither the stream nor a poll."""

    def __init__(self, ready: asyncio.Event | None, parts: Iterable[object]) -> None:
        self._ready = ready
        self._waiting = set(parts)
        self._check()

    def part(self, key: object) -> Callable[[], None]:
        """What part ``key`` calls when the broker confirms its subscription."""

        def mark() -> None:
            self._waiting.discard(key)
            self._check()

        return mark

    def _check(self) -> None:
        if not self._waiting and self._ready is not None:
            self._ready.set()


def caps_list(types: list[AccountType]) -> str:
    names = [t.value for t in types]
    return " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " or " + names[-1]


def _article(words: str) -> str:
    return {
        "futures": "a futures contract",
        "crypto": "a crypto pair",
        "options": "an option",
        "stocks and ETFs": "a stock or ETF",
    }[words]


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or text when the vendor did not send JSON
    method: str = "GET"
    path: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpBrokerAdapter(BrokerAdapter):
    """REST brokers. Subclasses set ``key``, ``display_name``, ``capabilities``, implement the
    verbs with ``self.request(...)``, and translate vendor error bodies in ``vendor_error``."""

    accept: ClassVar[str] = "application/json"

    def vendor_error(self, resp: HttpResponse) -> BrokerError | None:
        """Map a vendor error response to our hierarchy; ``None`` falls back to the status."""
        return None

    def rate_limit_wait(self, resp: HttpResponse) -> float | None:
        """Seconds until a 429's window lets requests through again, from the headers this
        broker sends (``Retry-After``, or ``X-RateLimit-Reset``); None when they do not say."""
        return _retry_after(resp)

    def auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def environments(self) -> list[Environment]:
        """The environments this connection can reach, live first."""
        return [e for e in (Environment.LIVE, Environment.PAPER) if e in self.ctx.api_urls]

    def breaker(self, environment: Environment) -> CircuitBreaker:
        name = f"{self.key}:{environment}"
        breaker = self.ctx.breakers.get(name)
        if breaker is None:
            breaker = self.ctx.breakers[name] = CircuitBreaker()
        return breaker

    async def create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        """New orders fail fast while the broker's breaker is open (requirement 19), before
        anything is sent: a read the order starts with would otherwise close it. Cancels and
        changes still go out: they take risk off."""
        if self.breaker(account.environment).open:
            raise BrokerUnavailable(
                f"{self.display_name} has been failing; new orders are paused for a moment. "
                "Try again in about a minute."
            )
        return await super().create_order(account, request)

    async def _acquire(self, bucket: str) -> None:
        for rule in self.capabilities.rate_limits:
            if rule.bucket == bucket:
                await self.ctx.limiters.get(self.key, rule, self.ctx.owner).acquire()

    async def request(
        self,
        method: str,
        path: str,
        *,
        environment: Environment,
        bucket: str,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        form: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        write: bool = False,
        allow: tuple[int, ...] = (),
        base_url: str | None = None,
        probe: bool = False,
    ) -> HttpResponse:
        """One logical call. Reads retry on 5xx, timeouts and 429 with capped backoff and jitter
        (honouring ``Retry-After``); writes never retry here, except once after a token refresh
        on 401 (the broker refused it before acting). (aiohttp itself resends an idempotent
        PUT or DELETE once when the connection drops, as RFC 9112 allows: a cancel or a change
        to the same terms, sent twice, is one cancel or change. A POST is never resent.)
        Statuses in ``allow`` come back unraised. ``base_url`` sends to another host of the
        same vendor (Alpaca's data API) with this environment's token, limiter and breaker.
        ``probe``: a 401 only says the token does not reach here (an environment the member
        did not authorize): no refresh, and the connection is not marked for re-linking."""
        base = base_url or self.ctx.api_urls.get(environment)
        if self.ctx.session is None or base is None:
            raise BrokerUnavailable(
                f"{self.display_name} {environment} is not available to this connection."
            )
        breaker = self.breaker(environment)
        url = base.rstrip("/") + path
        attempts = 1 if write else max(1, self.ctx.read_retries)
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            await self._acquire(bucket)
            hdrs = {"Accept": self.accept, "User-Agent": "Tradecord/0.1"}
            token = None
            if self.ctx.tokens is not None:
                token = await self.ctx.tokens.access_token()
                hdrs.update(self.auth_headers(token))
            if headers:
                hdrs.update(headers)
            started = time.perf_counter()
            try:
                resp = await self._send(method, url, params, json_body, form, hdrs, path)
            except (TimeoutError, aiohttp.ClientError) as e:
                breaker.record(False)
                log.warning("%s %s %s failed: %s", self.key, method, path, type(e).__name__)
                if attempt < attempts:
                    await asyncio.sleep(_backoff(attempt))
                    continue
                # A write whose connection broke may have been received and acted on.
                raise BrokerUnavailable(self.not_answering, maybe_sent=write) from e
            log.debug(
                "%s %s %s -> %s in %.1f ms",
                self.key,
                method,
                path,
                resp.status,
                (time.perf_counter() - started) * 1000,
            )
            if (
                resp.status == 401
                and token is not None
                and not refreshed
                and not probe
                and not _is_html(resp)  # a proxy's page: the broker never saw the token
            ):
                assert self.ctx.tokens is not None
                refreshed = True
                await self.ctx.tokens.refresh(token)
                attempt -= 1
                continue
            if resp.status >= 500:
                breaker.record(False)
            else:
                breaker.record(True)
            if resp.ok or resp.status in allow:
                return resp
            delay = None
            if (resp.status == 429 or resp.status >= 500) and attempt < attempts:
                after = self.rate_limit_wait(resp) if resp.status == 429 else _retry_after(resp)
                delay = _retry_delay(after, attempt)
            if delay is not None:
                await asyncio.sleep(delay)
                continue
            error = self._error_for(resp, write)
            refused = resp.status in (401, 403) and isinstance(error, AuthorizationExpired)
            if refused and token is not None and not probe:
                # Refused even fresh from a refresh (401), or lacking a scope the member did
                # not grant (403): the message sends the member to /connect, which repairs
                # only a connection marked as needing it.
                assert self.ctx.tokens is not None
                await self.ctx.tokens.refused(token, error.user_message)
            raise error

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        form: Mapping[str, Any] | None,
        headers: dict[str, str],
        path: str,
    ) -> HttpResponse:
        assert self.ctx.session is not None
        timeout = aiohttp.ClientTimeout(total=self.ctx.timeout)
        async with self.ctx.session.request(
            method,
            url,
            params=params,
            json=json_body,
            data=form,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        ) as r:
            raw = await r.read()
            ctype = r.headers.get("Content-Type", "")
            body: Any
            if "json" in ctype and raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
            else:
                body = raw.decode(errors="replace")
            return HttpResponse(r.status, r.headers, body, method, path)

    def _error_for(self, resp: HttpResponse, write: bool) -> BrokerError:
        if resp.status in (401, 403) and _is_html(resp):
            # A web page, not the broker's API answering: a proxy or firewall in front of it
            # turned the request away, which says nothing of the member's authorization.
            return BrokerUnavailable(
                f"Something in front of {self.display_name}'s API turned the request away "
                f"(HTTP {resp.status}); the connection itself is fine. Try again in a minute.",
                maybe_sent=write,
            )
        err = self.vendor_error(resp)
        if err is not None:
            return err
        if resp.status == 401:
            # A member may have several brokers: say which one, and the /connect that fixes it.
            return AuthorizationExpired(
                f"{self.display_name} no longer accepts Tradecord's authorization (it expired "
                f"or was revoked). Run /connect broker:{self.display_name} to link it again."
            )
        if resp.status == 403:
            return AuthorizationExpired(
                f"{self.display_name} refused access. Re-link the connection with /connect, "
                "making sure to grant trading access."
            )
        if resp.status == 404:
            return OrderNotFound()
        if resp.status == 429:
            return RateLimited(retry_after=self.rate_limit_wait(resp))
        if resp.status >= 500:
            return BrokerUnavailable(self.not_answering, maybe_sent=write)
        return InvalidOrder()

    @property
    def not_answering(self) -> str:
        """Which broker is down: "The broker" leaves a member with several guessing."""
        return f"{self.display_name} is not answering right now. Try again in a minute."


def _retry_after(resp: HttpResponse) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        # Alpaca sends no Retry-After, only when its window resets (Unix seconds).
        reset = resp.headers.get("X-RateLimit-Reset")
        if reset is None:
            return None
        try:
            at = float(reset)
        except ValueError:
            return None
        return max(0.0, at - time.time()) if at > 1e9 else max(0.0, at)
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _backoff(attempt: int) -> float:
    return min(4.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random())


# The longest a broker's Retry-After is waited out inside a call (a member's command waits).
MAX_RETRY_WAIT = 10.0


def _is_html(resp: HttpResponse) -> bool:
    """Whether the answer is a web page (a proxy's or a firewall's), not an API's."""
    if "text/html" in resp.headers.get("Content-Type", "").lower():
        return True
    text = resp.body.lstrip()[:15].lower() if isinstance(resp.body, str) else ""
    return text.startswith(("<!doctype html", "<html"))


def _retry_delay(after: float | None, attempt: int) -> float | None:
    """How long to wait before trying again, given how long the broker asks to wait
    (``after``), or None: it asks for longer than a call may wait, and a retry sooner would
    only be refused again."""
    if after is None:
        return _backoff(attempt)  # a 429 never causes a tight loop
    return after if after <= MAX_RETRY_WAIT else None


def dec(value: Any, default: Decimal | None = None) -> Decimal | None:
    """Vendor number (string, int, float or null) to Decimal without float noise."""
    if value is None or value == "":
        return default
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))
