"""Tradier Brokerage API v1 (stocks and ETFs in cash, margin and PDT accounts).

Tradier facts that shape this module (see emulators/specs/tradier/ and the research notes):
- Responses are XML unless ``Accept: application/json`` (the base class sends it).
- JSON quirks: a collection with one item is an object, with several an array, and an empty
  collection is the string ``"null"``; numbers are JSON numbers (parsed with ``dec``).
- Orders are form-encoded; opening/closing sides (``sell_short``, ``buy_to_cover``) are
  decided here from the current position.
- There is no idempotency key. Our client order id goes into ``tag``; after an unknown
  outcome the caller looks the order up by tag (``includeTags=true``) before any resubmission.
- Live and sandbox are different hosts with different tokens and accounts, so one connection
  reaches one environment and ``api_urls`` has one entry.
- Brackets are Tradier's advanced orders: ``class=otoco`` (entry, take-profit, stop-loss) or
  ``class=oto`` (entry and one exit), each order's fields indexed (``symbol[0]``, ``side[1]``,
  ...). Tradier answers with one order id; reading it back, the orders are its ``leg`` list in
  the order sent. Tradecord shows the entry under that id and the exits as orders of their own.
- Extended hours are durations: ``pre`` works in the pre-market session, ``post`` in the
  post-market session (Tradier's market calendar: premarket 07:00–09:24, open 09:30–16:00,
  postmarket 16:00–19:55 New York). Tradecord's extended-hours day order goes out as ``pre``
  before the open, ``day`` in regular hours and ``post`` after the close, by the time of
  sending; when no session is left that day it is refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import aiohttp

from adapters import symbols
from adapters.base import (
    ASSET_WORDS,
    AdapterContext,
    Capabilities,
    HttpBrokerAdapter,
    HttpResponse,
    OAuthSpec,
    RateLimit,
    dec,
)
from adapters.calendars import NEW_YORK, calendar_for
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
    Account,
    AccountRef,
    AccountType,
    AssetClass,
    Balance,
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
)
from adapters.registry import register

log = logging.getLogger("tradecord.adapters.tradier")

ZERO = Decimal(0)
ACCOUNT_TYPES = {"cash": AccountType.CASH, "margin": AccountType.MARGIN, "pdt": AccountType.MARGIN}
STATUSES = {
    "open": OrderStatus.OPEN,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "expired": OrderStatus.EXPIRED,
    "canceled": OrderStatus.CANCELLED,
    "pending": OrderStatus.PENDING,
    "rejected": OrderStatus.REJECTED,
    "error": OrderStatus.REJECTED,
    # Stream-only statuses: received and not yet working.
    "calculated": OrderStatus.PENDING,
    "accepted_for_bidding": OrderStatus.PENDING,
    "held": OrderStatus.PENDING,
}
ORDER_TYPES = {
    "market": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "stop": OrderType.STOP,
    "stop_limit": OrderType.STOP_LIMIT,
    # Multi-leg net orders (placed elsewhere, seen in history).
    "debit": OrderType.LIMIT,
    "credit": OrderType.LIMIT,
    "even": OrderType.LIMIT,
}
EVENTS = {
    OrderStatus.OPEN: "new",
    OrderStatus.PENDING: "pending",
    OrderStatus.CANCELLED: "canceled",
    OrderStatus.REJECTED: "rejected",
    OrderStatus.EXPIRED: "expired",
    OrderStatus.FILLED: "fill",
    OrderStatus.PARTIALLY_FILLED: "partial_fill",
}
WORKING = frozenset({OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING})
# Tradier's advanced orders that Tradecord places as brackets: the first order is the entry,
# the others its exits.
BRACKET_CLASSES = frozenset({"oto", "otoco"})
# Documented for the first order of an oto/otoco: limit, stop or stop_limit, never market.
BRACKET_ENTRY_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT})
BRACKET_CLOSES = (
    "A take-profit/stop-loss bracket needs an order that opens a position; this one closes one."
)
# Tradier's extended sessions, measured from the exchange's open and close (its market calendar
# gives premarket 07:00–09:24 and postmarket 16:00–19:55 around a 09:30–16:00 day), so an
# early close brings the post-market forward with it.
PRE_MARKET_STARTS = timedelta(hours=2, minutes=30)  # before the open
PRE_MARKET_ENDS = timedelta(minutes=6)  # before the open
POST_MARKET_ENDS = timedelta(hours=3, minutes=55)  # after the close
EXTENDED_DURATIONS = frozenset({"pre", "post"})
Clock = Callable[[], datetime]
PAGE = 100  # orders per page when listing


def items(container: Any, key: str) -> list[dict[str, Any]]:
    """``{"order": {...}}`` / ``{"order": [...]}`` / ``"null"`` → a list."""
    if not isinstance(container, dict):
        return []  # "null": Tradier's empty collection
    value = container.get(key)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def quantity(value: Any) -> Decimal:
    """Tradier prints shares as 10.0; show them as 10."""
    d = dec(value, ZERO)
    assert d is not None
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def error_messages(body: Any) -> list[str]:
    """``{"errors": {"error": "msg"}}`` or ``{"errors": {"error": ["msg", ...]}}``."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), dict):
        return []
    raw = body["errors"].get("error")
    values = raw if isinstance(raw, list) else [raw]
    return [str(v) for v in values if v]


def order_from(raw: dict[str, Any], account_id: str) -> Order:
    kind = str(raw.get("type", "market"))
    order_type = ORDER_TYPES.get(kind, OrderType.MARKET)
    is_option = raw.get("class") == "option"
    filled = quantity(raw.get("exec_quantity"))
    remaining = raw.get("remaining_quantity")
    qty = quantity(raw["quantity"]) if "quantity" in raw else filled + quantity(remaining)
    return Order(
        id=str(raw["id"]),
        account_id=account_id,
        symbol=str(raw.get("option_symbol") if is_option else raw.get("symbol", "")),
        side=Side.BUY if str(raw.get("side", "buy")).startswith("buy") else Side.SELL,
        quantity=qty,
        order_type=order_type,
        time_in_force=TimeInForce.GTC if raw.get("duration") == "gtc" else TimeInForce.DAY,
        # pre and post are day orders for one extended session; a day order sent in regular
        # hours works in regular hours only, so it is not one.
        extended_hours=raw.get("duration") in EXTENDED_DURATIONS,
        status=STATUSES.get(str(raw.get("status")), OrderStatus.PENDING),
        client_order_id=raw.get("tag") or None,
        asset_class=AssetClass.OPTION if is_option else AssetClass.EQUITY,
        limit_price=dec(raw.get("price"))
        if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        else None,
        stop_price=dec(raw.get("stop_price"))
        if order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
        else None,
        filled_quantity=filled,
        average_fill_price=dec(raw.get("avg_fill_price")) if filled > 0 else None,
        created_at=parse_time(raw.get("create_date")),
        updated_at=parse_time(raw.get("transaction_date")),
        reject_reason=raw.get("reason_description") or None,
        info=raw,
    )


def extended_duration(at: datetime) -> str | None:
    """The duration an extended-hours day order sent at ``at`` goes out with: ``pre`` in
    Tradier's pre-market session, ``day`` from its end to the close (the order then works in
    regular hours), ``post`` in the post-market session; None when no session is left that
    New York day (overnight, weekends, holidays)."""
    cal = calendar_for(AssetClass.EQUITY, at)
    assert cal is not None  # stocks always have the XNYS calendar
    today = at.astimezone(NEW_YORK).date()
    if not cal.is_session(today):
        return None
    opens = cal.session_open(today).to_pydatetime()
    closes = cal.session_close(today).to_pydatetime()
    if opens - PRE_MARKET_STARTS <= at < opens - PRE_MARKET_ENDS:
        return "pre"
    if opens - PRE_MARKET_ENDS <= at < closes:
        return "day"
    if closes <= at < closes + POST_MARKET_ENDS:
        return "post"
    return None


def session_end(at: datetime, duration: str) -> datetime:
    """When the Tradier session an order of ``duration`` sent at ``at`` works in ends."""
    cal = calendar_for(AssetClass.EQUITY, at)
    assert cal is not None
    today = at.astimezone(NEW_YORK).date()
    if duration == "pre":
        return cal.session_open(today).to_pydatetime() - PRE_MARKET_ENDS
    closes = cal.session_close(today).to_pydatetime()
    return closes + POST_MARKET_ENDS if duration == "post" else closes


def next_pre_market(at: datetime) -> datetime:
    """When Tradier's next pre-market session opens after ``at``."""
    cal = calendar_for(AssetClass.EQUITY, at)
    assert cal is not None
    opens: datetime = cal.next_open(at.astimezone(UTC)).to_pydatetime()
    return opens - PRE_MARKET_STARTS


def legs_of(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``leg`` list of an order with legs (one leg is an object, as everywhere)."""
    return items(raw, "leg")


def is_bracket(raw: dict[str, Any]) -> bool:
    return raw.get("class") in BRACKET_CLASSES and len(legs_of(raw)) >= 2


def orders_from(raw: dict[str, Any], account_id: str) -> list[Order]:
    """A Tradier order as Tradecord's orders. An oto/otoco is its entry (the first leg) under
    the id Tradier answered the placement with, which is the one to look up and cancel, then
    its exits as orders of their own. Tradier documents no fields of the advanced order
    itself beyond its legs, so everything else comes from the legs."""
    if not is_bracket(raw):
        return [order_from(raw, account_id)]
    parent_id = str(raw["id"])
    first, *rest = legs_of(raw)
    exits = []
    for leg in rest:
        exit_ = order_from(leg, account_id)
        exit_.parent_id = parent_id
        exit_.client_order_id = None  # the tag is the entry's: an exit is no intent's order
        exits.append(exit_)
    entry = order_from(first, account_id)
    entry.id = parent_id
    entry.client_order_id = raw.get("tag") or first.get("tag") or None
    entry.exit_ids = tuple(e.id for e in exits)
    entry.info = raw
    return [entry, *exits]


def find_order(raw: dict[str, Any], order_id: str, account_id: str) -> Order | None:
    """The order ``order_id`` names within a Tradier order: the order itself, or a leg of a
    bracket (its first leg stands for the entry)."""
    orders = orders_from(raw, account_id)
    if str(raw.get("id")) == order_id:
        return orders[0]
    if is_bracket(raw):
        if str(legs_of(raw)[0].get("id")) == order_id:
            return orders[0]
        return next((o for o in orders[1:] if o.id == order_id), None)
    return None


@register
class TradierAdapter(HttpBrokerAdapter):
    key = "tradier"
    display_name = "Tradier"
    # Tradier writes share classes with a slash (BRK/B) and refuses BRK.B (not in
    # brokers.md: seen by third-party Tradier clients, which rewrite the dot to a slash).
    share_class_separator = "/"
    capabilities = Capabilities(
        # pdt accounts are margin accounts; Tradier has no futures or crypto.
        asset_classes={
            AccountType.CASH: frozenset({AssetClass.EQUITY}),
            AccountType.MARGIN: frozenset({AssetClass.EQUITY}),
        },
        order_types=frozenset(OrderType) - {OrderType.TRAILING_STOP},
        # Tradier durations are day, gtc, pre and post: no IOC or FOK.
        time_in_force={AssetClass.EQUITY: frozenset({TimeInForce.DAY, TimeInForce.GTC})},
        fractional=frozenset(),
        # As oto/otoco advanced orders, for stocks and ETFs in every account type.
        brackets=True,
        exit_cancel_takes_bracket=True,  # cancel_order: a leg goes through its bracket
        environments=frozenset(Environment),
        quotes=True,
        order_stream=True,
        # Tradier's modify (PUT .../orders/{id}) takes type, duration, price and stop: the
        # quantity cannot be changed.
        replace=frozenset({"limit_price", "stop_price"}),
        # Durations pre and post: stock limit orders (the base class checks the rest).
        extended_hours=True,
        # Per access token per minute, and different on the sandbox host.
        rate_limits=(
            RateLimit("standard:live", 120, 60.0),
            RateLimit("standard:paper", 60, 60.0),
            RateLimit("market:live", 120, 60.0),
            RateLimit("market:paper", 60, 60.0),
            RateLimit("trading:live", 60, 60.0),
            RateLimit("trading:paper", 60, 60.0),
        ),
    )
    oauth = OAuthSpec(
        authorize_url="https://api.tradier.com/v1/oauth/authorize",
        token_url="https://api.tradier.com/v1/oauth/accesstoken",  # noqa: S106 - a URL
        refresh_url="https://api.tradier.com/v1/oauth/refreshtoken",
        # read: accounts; market: quotes; trade: orders; stream: the fills websocket.
        # Never "write" (watchlists and account settings), which Tradecord does not need.
        scopes=("read", "market", "trade", "stream"),
        scope_separator=",",
        pkce=False,  # confidential client, HTTP Basic; Tradier has no PKCE
        client_auth="client_secret_basic",
    )
    default_api_urls = {
        Environment.LIVE: "https://api.tradier.com/v1",
        Environment.PAPER: "https://sandbox.tradier.com/v1",
    }
    # Tradier sends heartbeats on the account stream; this long without any message means
    # the stream is dead even if the socket looks open.
    stream_idle_timeout: ClassVar[float] = 90.0
    # Tradier's OAuth issues live tokens; sandbox accounts use separate developer tokens.
    connect_environments: ClassVar[tuple[str, ...]] = ("live",)

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        # Fields an order event does not carry (symbol, side, quantity, tag), by order id.
        self._order_details: dict[tuple[str, str], dict[str, Any]] = {}

    # -- errors ---------------------------------------------------------------------------

    def vendor_error(self, resp: HttpResponse) -> BrokerError | None:
        text = resp.body if isinstance(resp.body, str) else ""
        if resp.status == 401:
            if text.startswith("Unauthorized Account"):
                return AuthorizationExpired(
                    "This Tradier authorization cannot reach that account (live and sandbox "
                    "accounts need separate connections). Run /connect again and pick the "
                    "account you mean."
                )
            return AuthorizationExpired()
        if resp.status >= 500:
            return None
        messages = error_messages(resp.body)
        if not messages:
            return None
        detail = " ".join(m if m.endswith(".") else m + "." for m in messages)
        low = detail.lower()
        code = messages[0][:100]
        if "buying power" in low:
            return InsufficientBuyingPower(
                f"Tradier: {detail} Lower the quantity, or check /balances.", vendor_code=code
            )
        if "symbol not found" in low:
            return SymbolNotFound(
                f"Tradier does not know this symbol ({detail}) Check the ticker: Tradier "
                "trades US-listed stocks and ETFs.",
                vendor_code=code,
            )
        if "not found" in low and "/orders/" in resp.path:
            return OrderNotFound(vendor_code=code)
        if resp.method == "DELETE":
            return OrderNotCancelable(
                f"Tradier cannot cancel this order: {detail} See /orders.", vendor_code=code
            )
        if "market" in low and "closed" in low:
            return MarketClosed(f"Tradier: {detail}", vendor_code=code)
        if resp.method == "PUT" and "/orders/" in resp.path:
            return InvalidOrder(f"Tradier refused the change: {detail}", vendor_code=code)
        if resp.method == "POST" and resp.path.endswith("/orders"):
            return InvalidOrder(f"Tradier rejected the order: {detail}", vendor_code=code)
        return BrokerError(f"Tradier refused the request: {detail}", vendor_code=code)

    def rate_limit_wait(self, resp: HttpResponse) -> float | None:
        return _reset_after(resp)

    # -- checks Tradier adds to the shared ones ----------------------------------------------

    def check_order(self, account: AccountRef, request: OrderRequest) -> None:
        super().check_order(account, request)
        self.check_stock_prices(request)
        if request.extended_hours:
            self._extended_duration()  # refused here, before an intent is stored
        b = request.bracket
        if b is None:
            return
        if b.take_profit is None and b.stop_loss is None:
            raise InvalidOrder("A bracket needs a take-profit price, a stop-loss price, or both.")
        if b.stop_loss_limit is not None and b.stop_loss is None:
            raise InvalidOrder("A stop-loss limit price needs a stop-loss price too.")
        if any(p is not None and p <= 0 for p in (b.take_profit, b.stop_loss, b.stop_loss_limit)):
            raise InvalidOrder("Prices must be more than zero.")
        # Tradier documents the first order of an oto/otoco as a limit, stop or stop_limit
        # order (docs.tradier.com, "Place OTOCO Order" and "Place OTO Order").
        if request.order_type not in BRACKET_ENTRY_TYPES:
            raise InvalidOrder(
                "Tradier places a take-profit/stop-loss bracket only on a limit, stop or "
                f"stop-limit entry, not a {request.order_type.value.replace('_', ' ')} order: "
                "give the entry a limit price (a marketable one fills at once)."
            )

    def _now(self) -> datetime:
        """The time now: ``ctx.extra["clock"]`` (a callable returning an aware datetime) when
        a test fixes it, else the system clock."""
        clock: Clock | None = self.ctx.extra.get("clock")
        return clock() if clock is not None else datetime.now(UTC)

    def extended_hours_reach(self) -> ExtendedReach | None:
        # A pre order expires as the pre-market ends, a day order sent in regular hours at the
        # close: neither carries into the next session. A post order ends with the day anyway.
        now = self._now()
        duration = extended_duration(now)
        if duration not in ("pre", "day"):
            return None
        session = "pre-market" if duration == "pre" else "regular"
        return ExtendedReach(session, session_end(now, duration))

    def _extended_duration(self) -> str:
        """The duration for an extended-hours day order sent now, or ``MarketClosed``."""
        now = self._now()
        duration = extended_duration(now)
        if duration is None:
            pre = next_pre_market(now).astimezone(NEW_YORK)
            raise MarketClosed(
                "Tradier has no trading session open now for an extended-hours order: the next "
                f"pre-market session opens {pre:%A} {pre.day} {pre:%B} at {pre:%H:%M} New York "
                "time. Send it then, or send it now without extended hours, as a day or GTC "
                "order, which waits for the open."
            )
        return duration

    # -- reads --------------------------------------------------------------------------

    async def fetch_accounts(self) -> list[Account]:
        accounts: list[Account] = []
        for env in self.environments():
            resp = await self.request(
                "GET", "/user/profile", environment=env, bucket=f"standard:{env}"
            )
            profile = resp.body.get("profile") if isinstance(resp.body, dict) else None
            for raw in items(profile, "account"):
                kind = ACCOUNT_TYPES.get(str(raw.get("type")))
                if kind is None:
                    log.warning("tradier account of unknown type %r skipped", raw.get("type"))
                    continue
                accounts.append(
                    Account(
                        id=str(raw["account_number"]),
                        type=kind,
                        environment=env,
                        status=str(raw.get("status", "active")),
                        info=raw,
                    )
                )
        return accounts

    async def fetch_balance(self, account: AccountRef) -> Balance:
        resp = await self._get(account, f"/accounts/{account.id}/balances")
        raw = resp.body.get("balances", {}) if isinstance(resp.body, dict) else {}
        if not isinstance(raw, dict):
            raise BrokerError("Tradier returned no balances for this account.")
        kind = str(raw.get("account_type", "margin"))
        block = raw.get(kind) if isinstance(raw.get(kind), dict) else {}
        power = block.get("cash_available") if kind == "cash" else block.get("stock_buying_power")
        return Balance(
            account_id=account.id,
            currency="USD",
            cash=dec(raw.get("total_cash"), ZERO) or ZERO,
            buying_power=dec(power, ZERO) or ZERO,
            equity=dec(raw.get("total_equity"), ZERO) or ZERO,
            market_value=dec(raw.get("market_value"), ZERO) or ZERO,
            unrealized_pnl=dec(raw.get("open_pl")),
            realized_pnl=dec(raw.get("close_pl")),
            info=raw,
        )

    async def fetch_positions(self, account: AccountRef) -> list[Position]:
        return await self._marked(account, await self._positions(account))

    async def _positions(self, account: AccountRef) -> list[Position]:
        """As Tradier lists them, unpriced: what an order's side needs, with no quote."""
        resp = await self._get(account, f"/accounts/{account.id}/positions")
        raw = resp.body.get("positions") if isinstance(resp.body, dict) else None
        out = []
        for p in items(raw, "position"):
            qty = quantity(p.get("quantity"))
            cost = dec(p.get("cost_basis"), ZERO) or ZERO
            symbol = str(p.get("symbol", ""))
            is_option = bool(symbols.OCC_RE.match(symbol))
            multiplier = Decimal(100) if is_option else Decimal(1)
            out.append(
                Position(
                    symbol=symbol,
                    asset_class=AssetClass.OPTION if is_option else AssetClass.EQUITY,
                    quantity=qty,
                    # Tradier's cost basis is negative for shorts, so the ratio stays positive.
                    average_price=cost / (qty * multiplier) if qty else ZERO,
                    cost_basis=cost,
                    multiplier=multiplier,
                    info=p,
                )
            )
        return out

    async def _marked(self, account: AccountRef, positions: list[Position]) -> list[Position]:
        """Tradier's positions carry no price: one quotes request (comma-separated symbols)
        marks them to the last trade, for their value and unrealized P&L. Without quotes the
        positions are still listed, unpriced."""
        if not positions:
            return positions
        try:
            resp = await self.request(
                "GET",
                "/markets/quotes",
                environment=account.environment,
                bucket=f"market:{account.environment}",
                params={"symbols": ",".join(sorted({p.symbol for p in positions}))},
            )
        except BrokerError as e:
            log.info("Tradier quotes for positions unavailable: %s", e)
            return positions
        body = resp.body.get("quotes") if isinstance(resp.body, dict) else None
        last = {
            str(q.get("symbol", "")).upper(): dec(q.get("last"))
            for q in items(body, "quote")
            if dec(q.get("last"))
        }
        for p in positions:
            price = last.get(p.symbol.upper())
            if price is None:
                continue
            p.market_price = price
            p.market_value = p.quantity * price * p.multiplier
            if p.cost_basis is not None:
                p.unrealized_pnl = p.market_value - p.cost_basis
        return positions

    async def _raw_orders(self, account: AccountRef) -> list[dict[str, Any]]:
        """Every order Tradier lists for the account, tags included, paging through."""
        orders: list[dict[str, Any]] = []
        page = 1
        while True:
            resp = await self._get(
                account,
                f"/accounts/{account.id}/orders",
                params={"includeTags": "true", "page": str(page), "limit": str(PAGE)},
            )
            raw = resp.body.get("orders") if isinstance(resp.body, dict) else None
            batch = items(raw, "order")
            orders.extend(batch)
            if len(batch) < PAGE:
                return orders
            page += 1

    async def _all_orders(self, account: AccountRef) -> list[Order]:
        """Every order of the account; a bracket's exits are listed as orders of their own."""
        return [o for raw in await self._raw_orders(account) for o in orders_from(raw, account.id)]

    async def fetch_open_orders(self, account: AccountRef) -> list[Order]:
        return [o for o in await self._all_orders(account) if o.status in WORKING]

    async def fetch_orders(
        self, account: AccountRef, *, since: datetime | None = None, limit: int = 50
    ) -> list[Order]:
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        epoch = datetime.min.replace(tzinfo=UTC)

        def ended(o: Order) -> datetime:
            # transaction_date, when the order last changed: for a finished order, when it
            # ended (a GTC order placed days before and filled today belongs to today).
            return o.updated_at or o.created_at or epoch

        done = [
            o
            for o in await self._all_orders(account)
            if o.status.is_final and (since is None or ended(o) >= since)
        ]
        done.sort(key=lambda o: (ended(o), int(o.id) if o.id.isdigit() else 0), reverse=True)
        return done[:limit]

    async def _fetch_order_by_id(self, account: AccountRef, order_id: str) -> Order:
        if not order_id.isdigit():
            raise OrderNotFound(f"{order_id!r} is not a Tradier order id.")
        try:
            resp = await self._get(
                account, f"/accounts/{account.id}/orders/{order_id}", params={"includeTags": "true"}
            )
        except OrderNotFound:
            raw = None
        else:
            raw = resp.body.get("order") if isinstance(resp.body, dict) else None
        if isinstance(raw, dict) and "id" in raw:
            found = find_order(raw, order_id, account.id)
            if found is not None:
                return found
        # A bracket's exit has an id of its own (its leg's), which Tradier documents no lookup
        # for: it is found within the bracket, in the account's order list.
        for listed in await self._raw_orders(account):
            found = find_order(listed, order_id, account.id)
            if found is not None:
                return found
        raise OrderNotFound()

    async def _fetch_order_by_client_id(
        self,
        account: AccountRef,
        client_order_id: str,
        hint: SubmissionHint | None = None,
    ) -> Order:
        # Tradier has no lookup by tag: list with tags and match. Absence here is proof the
        # order was never created, because the list holds every order of the account; the
        # tag is stored with the order, so the hint is not needed.
        matches = [
            o for o in await self._all_orders(account) if o.client_order_id == client_order_id
        ]
        if not matches:
            raise OrderNotFound(f"Tradier has no order tagged {client_order_id}.")
        if len(matches) > 1:
            log.warning("tradier: %d orders share tag %s", len(matches), client_order_id)
        return min(matches, key=lambda o: int(o.id) if o.id.isdigit() else 0)

    async def fetch_quote(self, symbol: str) -> Quote:
        sym = self.canonical_symbol(symbol)
        asset = symbols.asset_class_of(sym)
        if asset not in (AssetClass.EQUITY, AssetClass.OPTION):
            # Tradier quotes options (OCC symbols) though Tradecord trades none there.
            raise AssetClassNotSupported(
                f"{sym} is not a stock, ETF or option, and Tradier does not offer "
                f"{ASSET_WORDS[asset]} trading."
            )
        envs = self.environments()
        if not envs:
            raise BrokerUnavailable("Tradier is not available to this connection.")
        env = envs[0]
        resp = await self.request(
            "GET",
            "/markets/quotes",
            environment=env,
            bucket=f"market:{env}",
            params={"symbols": sym},
        )
        body = resp.body.get("quotes") if isinstance(resp.body, dict) else None
        found = [q for q in items(body, "quote") if str(q.get("symbol", "")).upper() == sym]
        if not found:
            raise SymbolNotFound(f"Tradier has no quote for {sym}. Check the ticker.")
        q = found[0]
        stamp = q.get("trade_date") or q.get("bid_date")
        at = datetime.fromtimestamp(int(stamp) / 1000, UTC) if stamp else datetime.now(UTC)
        last = dec(q.get("last")) or dec(q.get("prevclose"), ZERO) or ZERO
        return Quote(
            symbol=sym,
            bid=dec(q.get("bid"), ZERO) or ZERO,
            ask=dec(q.get("ask"), ZERO) or ZERO,
            last=last,
            time=at,
            info=q,
        )

    async def fetch_market_state(self) -> str:
        """Tradier's market clock: ``premarket``, ``open``, ``postmarket`` or ``closed``."""
        envs = self.environments()
        if not envs:
            raise BrokerUnavailable("Tradier is not available to this connection.")
        resp = await self.request(
            "GET", "/markets/clock", environment=envs[0], bucket=f"market:{envs[0]}"
        )
        clock = resp.body.get("clock") if isinstance(resp.body, dict) else None
        return str(clock.get("state", "closed")) if isinstance(clock, dict) else "closed"

    # -- writes -------------------------------------------------------------------------

    async def _create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        sym = self.canonical_symbol(request.symbol)
        side = await self._vendor_side(account, sym, request.side, request.quantity)
        form: dict[str, str] = {
            "class": "equity",
            "symbol": sym,
            "side": side,
            "quantity": str(request.quantity.quantize(Decimal(1))),
            "type": request.order_type.value,
            # Decided at sending: the session the order is sent in is the one it is for.
            "duration": self._extended_duration()
            if request.extended_hours
            else request.time_in_force.value,
        }
        _prices(form, "", request.order_type, limit=request.limit_price, stop=request.stop_price)
        if request.bracket is not None:
            form = _bracket_form(form, request)
        if request.client_order_id:
            form["tag"] = request.client_order_id
        resp = await self.request(
            "POST",
            f"/accounts/{account.id}/orders",
            environment=account.environment,
            bucket=f"trading:{account.environment}",
            form=form,
            write=True,
        )
        raw = resp.body.get("order") if isinstance(resp.body, dict) else None
        if not isinstance(raw, dict) or "id" not in raw:
            problems = error_messages(resp.body)
            if not problems:
                # A 2xx that names no order and no error (cut short, unreadable) may still
                # have placed it: looked up by its tag, never taken for a rejection.
                raise OrderStateUnknown()
            raise InvalidOrder(f"Tradier did not accept the order: {' '.join(problems)}")
        order_id = str(raw["id"])
        try:
            # The placement answer holds only the id; the order itself tells the status
            # (a market order is often already filled).
            return await self._fetch_order_by_id(account, order_id)
        except BrokerError as e:
            log.info("tradier: order %s placed; details not read back (%s)", order_id, e.code)
        return Order(
            id=order_id,
            account_id=account.id,
            symbol=sym,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            time_in_force=request.time_in_force,
            status=OrderStatus.PENDING,
            client_order_id=request.client_order_id,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            extended_hours=form.get("duration") in EXTENDED_DURATIONS,
            info={**raw, "duration": form.get("duration")},
        )

    def check_change(self, order: Order, change: OrderChange) -> None:
        super().check_change(order, change)
        if order.parent_id is not None or order.exit_ids:
            # Tradier documents modifying an order it answered a placement with, not an
            # oto/otoco or one of its legs: refused before the card, not at its Confirm.
            raise InvalidOrder(
                "Tradier cannot change an order of a take-profit/stop-loss bracket from "
                "Tradecord: cancel the bracket with /cancel and place a new one."
            )

    async def _replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        self.check_change(order, change)
        if not order.id.isdigit():
            raise OrderNotFound(f"{order.id!r} is not a Tradier order id.")
        # The order's own type and duration (pre and post included, which ``time_in_force``
        # does not tell apart from day), with its prices as changed.
        form = {
            "type": order.order_type.value,
            "duration": str(order.info.get("duration") or order.time_in_force.value),
        }
        limit = change.limit_price if change.limit_price is not None else order.limit_price
        stop = change.stop_price if change.stop_price is not None else order.stop_price
        _prices(form, "", order.order_type, limit=limit, stop=stop)
        try:
            await self.request(
                "PUT",
                f"/accounts/{account.id}/orders/{order.id}",
                environment=account.environment,
                bucket=f"trading:{account.environment}",
                form=form,
                write=True,
            )
        except InvalidOrder as e:
            # Tradier publishes no wording for refusing an order that has ended: the order
            # itself tells whether that was the reason.
            now = await self._fetch_order_by_id(account, order.id)
            if now.status.is_final:
                raise OrderNotReplaceable(
                    f"Tradier cannot change this order: it is {now.status.value}. See /orders."
                ) from e
            raise
        try:
            return await self._fetch_order_by_id(account, order.id)
        except BrokerError as e:
            # Changed, but not read back: the order as it was, with what Tradier accepted.
            log.info("tradier: order %s changed; not read back (%s)", order.id, e.code)
        return dataclasses.replace(order, limit_price=limit, stop_price=stop)

    async def _vendor_side(self, account: AccountRef, symbol: str, side: Side, qty: Decimal) -> str:
        held = ZERO
        for p in await self._positions(account):
            if p.symbol == symbol:
                held = p.quantity
        return _vendor_side(account.type, symbol, side, qty, held)

    def check_position(self, account: AccountRef, request: OrderRequest, held: Decimal) -> None:
        super().check_position(account, request, held)
        _vendor_side(account.type, request.symbol, request.side, request.quantity, held)

    async def cancel_order(self, account: AccountRef, order_id: str) -> None:
        if not order_id.isdigit():
            raise OrderNotFound(f"{order_id!r} is not a Tradier order id.")
        try:
            await self._delete(account, order_id)
        except OrderNotFound:
            # Tradier documents cancelling the order it answered a placement with, not a leg
            # of it: a bracket's exit is cancelled through its bracket, which cancels what of
            # it still works (both exits, once the entry has filled).
            exit_ = await self._fetch_order_by_id(account, order_id)
            if exit_.parent_id is None:
                raise
            if exit_.status.is_final:
                raise OrderNotCancelable(
                    f"Tradier cannot cancel this order: it is {exit_.status.value}. See /orders."
                ) from None
            await self._delete(account, exit_.parent_id)

    async def _delete(self, account: AccountRef, order_id: str) -> None:
        # A cancel is a write: never resent blindly, and a lost answer may have acted.
        await self.request(
            "DELETE",
            f"/accounts/{account.id}/orders/{order_id}",
            environment=account.environment,
            bucket=f"trading:{account.environment}",
            write=True,
        )

    # -- the account-events stream ---------------------------------------------------------

    async def stream_order_updates(
        self, accounts: list[AccountRef], *, ready: asyncio.Event | None = None
    ) -> AsyncIterator[OrderUpdate]:
        """``ready`` is set once the subscription is sent: Tradier documents no answer to it
        (only heartbeats and events follow), and sends no snapshot of open orders."""
        if not accounts:
            if ready is not None:
                ready.set()  # nothing to subscribe
            return
        env = accounts[0].environment
        if any(a.environment is not env for a in accounts):
            raise ValueError("one Tradier stream serves one environment")
        wanted = {a.id: a for a in accounts}
        resp = await self.request(
            "POST", "/accounts/events/session", environment=env, bucket=f"standard:{env}"
        )
        stream = resp.body.get("stream") if isinstance(resp.body, dict) else None
        if not isinstance(stream, dict) or not stream.get("url") or not stream.get("sessionid"):
            raise BrokerUnavailable("Tradier did not open an account-events session.")
        url = str(stream["url"])
        if not url.startswith(("wss://", "ws://")):
            raise BrokerUnavailable("Tradier returned an unexpected stream address.")
        assert self.ctx.session is not None
        try:
            ws = await self.ctx.session.ws_connect(
                url,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                autoping=True,
                headers={"User-Agent": "Tradecord/0.1"},
            )
        except (TimeoutError, aiohttp.ClientError) as e:
            raise BrokerUnavailable("Could not connect to Tradier's account stream.") from e
        # Per order: (exec_quantity, avg_fill_price) last seen, to derive each fill.
        seen: dict[str, tuple[Decimal, Decimal]] = {}
        async with ws:
            await ws.send_str(
                json.dumps(
                    {"events": ["order"], "sessionid": stream["sessionid"], "excludeAccounts": []}
                )
            )
            if ready is not None:
                ready.set()
            while True:
                try:
                    msg = await ws.receive(timeout=self.stream_idle_timeout)
                except TimeoutError as e:
                    raise BrokerUnavailable("Tradier's account stream went silent.") from e
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    return
                if msg.type == aiohttp.WSMsgType.ERROR:
                    raise BrokerUnavailable("Tradier's account stream failed.")
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    log.warning("tradier stream: unreadable message skipped")
                    continue
                if not isinstance(data, dict) or data.get("event") == "heartbeat":
                    continue
                if "error" in data:
                    raise BrokerUnavailable(
                        f"Tradier's account stream refused the session ({data['error']})."
                    )
                ref = wanted.get(str(data.get("account", "")))
                if data.get("event") != "order" or ref is None or "id" not in data:
                    continue
                yield await self._update_from_event(ref, data, seen)

    async def _update_from_event(
        self,
        account: AccountRef,
        event: dict[str, Any],
        seen: dict[str, tuple[Decimal, Decimal]],
    ) -> OrderUpdate:
        order_id = str(event["id"])
        key = (account.id, order_id)
        details = self._order_details.get(key)
        if details is None:
            # Events carry no symbol, side, quantity or tag: read them once per order.
            fetched = await self._fetch_order_by_id(account, order_id)
            own = legs_of(fetched.info)[0] if fetched.exit_ids else fetched.info
            details = {
                k: v
                for k, v in own.items()
                if k in ("symbol", "side", "quantity", "duration", "tag", "class", "option_symbol")
            }
            # Which of Tradecord's orders the event is about: an order of a bracket is the
            # entry (under the bracket's id) or one of its exits.
            details["_as"] = {
                "id": fetched.id,
                "tag": fetched.client_order_id,
                "parent_id": fetched.parent_id,
                "exit_ids": fetched.exit_ids,
            }
            if len(self._order_details) > 5000:
                self._order_details.clear()
            self._order_details[key] = details
        known: dict[str, Any] = details.get("_as") or {}
        if known.get("exit_ids") and known["id"] == order_id:
            # An event about the bracket as a whole: Tradier documents no fields of its own
            # for it, so its entry is read again and reported as it is.
            event = dict(legs_of((await self._fetch_order_by_id(account, order_id)).info)[0])
        fields = {k: v for k, v in details.items() if k != "_as"}
        order = order_from({**fields, **event}, account.id)
        if known:
            order.id, order.client_order_id = known["id"], known["tag"]
            order.parent_id, order.exit_ids = known["parent_id"], tuple(known["exit_ids"])
        if order.status is OrderStatus.REJECTED and not order.reject_reason:
            # Events do not say why; the order does, and a rejection is worth one read.
            try:
                order.reject_reason = (
                    await self._fetch_order_by_id(account, order_id)
                ).reject_reason
            except BrokerError as e:
                log.info("tradier: reason for rejected order %s not read (%s)", order_id, e.code)
        exec_qty = order.filled_quantity
        avg = dec(event.get("avg_fill_price"), ZERO) or ZERO
        last_qty = dec(event.get("last_fill_quantity"), ZERO) or ZERO
        prev = seen.get(order_id)
        if prev is not None:
            fill_qty = exec_qty - prev[0]
        else:
            fill_qty = last_qty if last_qty > 0 else exec_qty
        seen[order_id] = (exec_qty, avg)
        fill_price: Decimal | None = None
        if fill_qty > 0:
            last_px = dec(event.get("last_fill_price"), ZERO) or ZERO
            if last_px > 0:
                fill_price = last_px
            elif prev is not None:
                fill_price = _round_price((avg * exec_qty - prev[1] * prev[0]) / fill_qty)
            else:
                fill_price = avg
        return OrderUpdate(
            order=order,
            event=EVENTS.get(order.status, order.status.value),
            execution_id=f"{order_id}-{exec_qty}" if fill_qty > 0 else None,
            fill_quantity=fill_qty if fill_qty > 0 else None,
            fill_price=fill_price,
            at=order.updated_at,
        )

    # -- helpers ------------------------------------------------------------------------

    async def _get(
        self, account: AccountRef, path: str, params: dict[str, str] | None = None
    ) -> HttpResponse:
        return await self.request(
            "GET",
            path,
            environment=account.environment,
            bucket=f"standard:{account.environment}",
            params=params,
        )


def _prices(
    form: dict[str, str],
    index: str,
    kind: OrderType,
    *,
    limit: Decimal | None,
    stop: Decimal | None,
) -> None:
    """``price`` for limit and stop_limit orders, ``stop`` for stop and stop_limit orders
    (``price[1]`` and so on for the orders of an advanced order)."""
    if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        if limit is None:
            raise InvalidOrder("A limit order needs a limit price.")
        form[f"price{index}"] = _plain(limit)
    if kind in (OrderType.STOP, OrderType.STOP_LIMIT):
        if stop is None:
            raise InvalidOrder("A stop order needs a stop price.")
        form[f"stop{index}"] = _plain(stop)


def _bracket_form(entry: dict[str, str], request: OrderRequest) -> dict[str, str]:
    """The entry ``entry`` and its exits as one advanced order, the shape Tradier documents
    (docs.tradier.com/reference/brokerage-api-trading-place-otoco-order, and
    documentation.tradier.com/brokerage-api/trading/place-otoco-order and place-oto-order):
    ``class=otoco`` (or ``oto`` for one exit), one ``duration`` for all, and each order's
    ``symbol``, ``side``, ``quantity``, ``type``, ``price`` and ``stop`` indexed from 0 in the
    order entry, take-profit, stop-loss. Tradier starts the exits when the entry fills; with
    both, the one that fills cancels the other."""
    assert request.bracket is not None
    b = request.bracket
    # The exits close what the entry opens; Tradier takes the closing sides for them.
    exit_side = {"buy": "sell", "sell_short": "buy_to_cover"}.get(entry["side"])
    if exit_side is None:
        raise InvalidOrder(BRACKET_CLOSES)
    orders: list[tuple[OrderType, Decimal | None, Decimal | None]] = [
        (request.order_type, request.limit_price, request.stop_price)
    ]
    if b.take_profit is not None:
        orders.append((OrderType.LIMIT, b.take_profit, None))
    if b.stop_loss is not None:
        kind = OrderType.STOP if b.stop_loss_limit is None else OrderType.STOP_LIMIT
        orders.append((kind, b.stop_loss_limit, b.stop_loss))
    form = {"class": "otoco" if len(orders) == 3 else "oto", "duration": entry["duration"]}
    for i, (kind, limit, stop) in enumerate(orders):
        form[f"symbol[{i}]"] = entry["symbol"]
        form[f"side[{i}]"] = entry["side"] if i == 0 else exit_side
        form[f"quantity[{i}]"] = entry["quantity"]
        form[f"type[{i}]"] = kind.value
        _prices(form, f"[{i}]", kind, limit=limit, stop=stop)
    return form


def _plain(value: Decimal) -> str:
    """A price as Tradier's form expects it: plain digits, no exponent."""
    return format(value, "f")


def _round_price(value: Decimal) -> Decimal:
    """A price derived from average fill prices, without division noise or exponents."""
    q = value.quantize(Decimal("0.000001"))
    return q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()


def _reset_after(resp: HttpResponse) -> float | None:
    """Seconds until the rate window resets: ``Retry-After`` if sent, else
    ``X-Ratelimit-Expiry`` (epoch milliseconds)."""
    after = resp.headers.get("Retry-After")
    if after is not None:
        try:
            return max(0.0, float(after))
        except ValueError:
            pass  # an HTTP date: fall back to Tradier's own expiry header
    expiry = resp.headers.get("X-Ratelimit-Expiry")
    if expiry is not None and expiry.isdigit():
        return max(0.0, int(expiry) / 1000 - time.time())
    return None


def _vendor_side(kind: AccountType, symbol: str, side: Side, qty: Decimal, held: Decimal) -> str:
    """Tradier wants opening and closing actions; a crossing order must be split."""
    if side is Side.BUY:
        if held >= 0:
            return "buy"
        if qty > -held:
            raise InvalidOrder(
                f"You are short {-held} {symbol}; Tradier cannot cover and go long in one "
                f"order. Buy {-held} to cover first, then buy the rest."
            )
        return "buy_to_cover"
    if held > 0:
        if qty > held:
            raise InvalidOrder(
                f"You hold {held} {symbol}; Tradier cannot sell and go short in one order. "
                f"Sell {held} first, then sell short the rest."
            )
        return "sell"
    if kind is AccountType.CASH:
        raise InvalidOrder(
            f"You hold no {symbol} in this cash account, so this sell would be a short "
            "sale, and Tradier does not allow short selling in cash accounts."
        )
    return "sell_short"
