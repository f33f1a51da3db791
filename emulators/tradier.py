"""Tradier Brokerage API v1 emulator: OAuth, accounts, orders, quotes, rate limits and the
account-events websocket, answering as Tradier documents (see emulators/specs/tradier/).

One port serves every Tradier host under a path prefix:

==========================  ==================================
real host                   emulator prefix
==========================  ==================================
``api.tradier.com``         ``/api``        (live API and OAuth)
``sandbox.tradier.com``     ``/sandbox``    (paper API and OAuth)
``ws.tradier.com``          ``/ws``         (live account events)
``sandbox-ws.tradier.com``  ``/sandbox-ws`` (paper account events)
==========================  ==================================

Live and sandbox are separate worlds, as at Tradier: each host has its own OAuth server, its own
tokens and its own accounts; a token from one host is unknown on the other.

Tradier publishes no OpenAPI file, so requests are checked by hand against the documentation
(required parameters, enums, form encoding, documented parameter names). Every departure is
answered as Tradier would (400) and recorded in ``spec_violations`` so tests fail on it.

JSON quirks reproduced: responses are XML unless ``Accept: application/json``; a collection with
one item is an object and with several an array; an empty collection is the string ``"null"``;
numbers are JSON numbers. There is no idempotency: ``tag`` is stored and shown (with
``includeTags=true``) but never deduplicated.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree as ET

import aiohttp
from aiohttp import web

from adapters.errors import AuthorizationExpired
from adapters.models import Environment
from emulators.common import (
    BaseEmulator,
    OAuthCore,
    OAuthError,
    OAuthPolicy,
    TokenRecord,
    basic_auth,
    bearer,
    consent_page,
)

JSON = dict[str, Any]

PREFIX = {Environment.LIVE: "/api", Environment.PAPER: "/sandbox"}
WS_PREFIX = {Environment.LIVE: "/ws", Environment.PAPER: "/sandbox-ws"}
SCOPES = ("read", "write", "market", "trade", "stream")
SCOPE_TEXT = {
    "read": "Read account data (balances, positions, orders)",
    "write": "Write account data (watchlists, alerts; not trades)",
    "market": "Market data",
    "trade": "Place, change and cancel orders",
    "stream": "Streaming sessions",
}
ACCOUNT_TYPES = ("cash", "margin", "pdt")
EQUITY_SIDES = ("buy", "buy_to_cover", "sell", "sell_short")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit")
DURATIONS = ("day", "gtc", "pre", "post")
# The market clock's states, as GET /markets/clock names them, and the session each duration
# works in: pre only in the pre-market, post only in the post-market, day and gtc in regular hours.
MARKET_STATES = ("premarket", "open", "postmarket", "closed")
SESSION_OF = {"day": "open", "gtc": "open", "pre": "premarket", "post": "postmarket"}
# What /markets/clock says in each state (Tradier's market calendar: premarket 07:00–09:24,
# open 09:30–16:00, postmarket 16:00–19:55); the wording outside "open" is ours.
CLOCK_TEXT = {
    "premarket": ("Market is in premarket hours from 07:00 to 09:24", "09:30", "open"),
    "open": ("Market is open from 09:30 to 16:00", "16:00", "postmarket"),
    "postmarket": ("Market is in postmarket hours from 16:00 to 19:55", "19:55", "closed"),
    "closed": ("Market is closed", "07:00", "premarket"),
}
CLASSES = ("equity", "option", "multileg", "combo", "oto", "oco", "otoco")
WORKING = ("open", "partially_filled", "pending")
ENDED_UNFILLED = ("canceled", "expired", "rejected")
# Advanced orders emulated, by the number of orders they hold (the first triggers the rest).
ADVANCED_LEGS = {"oto": 2, "otoco": 3}
# Each order's own fields in an advanced order, indexed from 0 (``symbol[0]``, ``type[1]``).
LEG_FIELDS = ("symbol", "option_symbol", "side", "quantity", "type", "price", "stop", "duration")
# Documented rate limits per access token per minute.
DEFAULT_LIMITS = {
    Environment.LIVE: {"standard": 120, "market": 120, "trading": 60},
    Environment.PAPER: {"standard": 60, "market": 60, "trading": 60},
}
RATE_WINDOW = 60.0
SESSION_TTL = 300.0  # an events session id must be used within 5 minutes
TAG_RE = re.compile(r"^[A-Za-z0-9-]{1,255}$")
FORM = "application/x-www-form-urlencoded"


class _Reply(Exception):
    """Ends a handler early with a ready response (auth failures, validation errors)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


# -- the world ------------------------------------------------------------------------------------


@dataclass
class EmuUser:
    id: str  # Tradier profile ids look like "id-gcostanza"
    name: str


@dataclass
class EmuPosition:
    id: int
    symbol: str
    quantity: Decimal  # negative when short
    cost_basis: Decimal  # negative when short, as Tradier reports it
    date_acquired: str


@dataclass
class EmuAccount:
    number: str
    user_id: str
    environment: Environment
    type: str  # cash | margin | pdt
    cash: Decimal
    classification: str = "individual"
    status: str = "active"
    option_level: int = 2
    day_trader: bool = False
    date_created: str = "2024-01-02T14:30:00.000Z"
    realized: Decimal = Decimal(0)
    positions: dict[str, EmuPosition] = field(default_factory=dict)


@dataclass
class EmuQuote:
    symbol: str
    description: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    prevclose: Decimal
    type: str = "stock"
    bidsize: int = 100
    asksize: int = 100
    volume: int = 0
    updated_ms: int = 0


@dataclass
class EmuOrder:
    id: int
    account: str
    environment: Environment
    symbol: str
    side: str
    quantity: Decimal
    type: str
    duration: str
    price: Decimal | None
    stop: Decimal | None
    tag: str | None
    create_date: str
    transaction_date: str
    status: str = "open"
    exec_quantity: Decimal = Decimal(0)
    avg_fill_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    last_fill_quantity: Decimal = Decimal(0)
    reason_description: str | None = None
    triggered: bool = False  # a stop or stop_limit order whose stop has been touched
    parent: int | None = None  # the advanced order (oto, otoco) this order is a leg of
    waiting: bool = False  # a leg held (status pending) until the first order fills

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.exec_quantity

    @property
    def buys(self) -> bool:
        return self.side in ("buy", "buy_to_cover")


@dataclass
class EmuAdvanced:
    """An oto or otoco order: one id for the whole, its orders (legs) with ids of their own."""

    id: int
    account: str
    klass: str  # oto | otoco
    legs: list[int]
    tag: str | None
    create_date: str


@dataclass
class EventSession:
    id: str
    user_id: str
    environment: Environment
    created: float
    superseded: bool = False


@dataclass
class _Subscriber:
    ws: web.WebSocketResponse
    session: EventSession
    exclude: frozenset[str]
    queue: asyncio.Queue[str | None]


@dataclass
class _Ctx:
    environment: Environment
    token: TokenRecord
    user: EmuUser
    json: bool


# -- rendering ------------------------------------------------------------------------------------


def one_or_many(items: list[Any]) -> Any:
    """Tradier's JSON: one item is an object, several are an array."""
    return items[0] if len(items) == 1 else items


def collection(outer: str, inner: str, items: list[Any]) -> JSON:
    """``{"orders": {"order": ...}}``, or ``{"orders": "null"}`` when empty (sic)."""
    return {outer: {inner: one_or_many(items)} if items else "null"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Tradier sends JSON numbers; integral amounts still print as 10.0.
        return float(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def to_xml(payload: JSON) -> str:
    """Tradier's default representation: the same document as XML, lists as repeated elements."""
    ((root_name, value),) = payload.items()
    root = ET.Element(root_name)
    _xml_fill(root, value)
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode")


def _xml_fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            for one in item if isinstance(item, list) else [item]:
                _xml_fill(ET.SubElement(element, key), one)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _dec(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


# -- the emulator ---------------------------------------------------------------------------------


class TradierEmulator(BaseEmulator):
    """Tradier live + sandbox on one local port.

    Control surface for tests and local mode: ``add_user``, ``add_account``, ``add_position``,
    ``set_quote``, ``fill``, ``reject``, ``expire_day_orders``, ``set_market_state`` (or
    ``set_market_open``; a switch, not tied to ``clock``),
    ``set_rate_limit``, ``issue_tokens``, ``expire_access_tokens``, ``send_heartbeat``,
    ``drop_streams``, ``stream_count``; state in ``users``, ``accounts``, ``orders`` (the legs
    of oto/otoco orders too, by their own ids), ``advanced`` (oto/otoco orders), ``quotes``,
    ``sessions``; checks in ``spec_violations`` and ``requests``.
    """

    name = "tradier"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = True,
        refresh_tokens: bool = True,
        client_id: str = "tradecord-local",
        client_secret: str = "tradecord-local-secret",  # noqa: S107 - local-mode app
        redirect_uris: list[str] | None = None,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.heartbeat_interval = heartbeat_interval
        # Refresh tokens are issued only to partner apps approved for them.
        policy = OAuthPolicy(
            access_ttl=86399.0,
            issue_refresh=refresh_tokens,
            rotate_refresh=False,
            refresh_ttl=None,
            refresh_absolute_ttl=None,
            code_ttl=600.0,
            pkce=False,
            reuse_detection=False,
        )
        self.oauth: dict[Environment, OAuthCore] = {
            env: OAuthCore(policy, clock=clock) for env in Environment
        }
        uris = redirect_uris or ["http://127.0.0.1:8080/oauth/tradier/callback"]
        for core in self.oauth.values():
            core.register_client(client_id, client_secret, uris)
        self.partner_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tradier-partner:{client_id}"))
        self.users: dict[str, EmuUser] = {}
        self.accounts: dict[str, EmuAccount] = {}
        self.orders: dict[int, EmuOrder] = {}
        self.advanced: dict[int, EmuAdvanced] = {}
        self.quotes: dict[str, EmuQuote] = {}
        self.sessions: dict[str, EventSession] = {}
        self.spec_violations: list[str] = []
        self.market_state = "open"
        self.rate_limits = {env: dict(limits) for env, limits in DEFAULT_LIMITS.items()}
        self._windows: dict[tuple[Environment, str, str], list[float]] = {}
        self._subscribers: list[_Subscriber] = []
        self._next_order = 1000
        self._next_position = 100
        self._account_seq = {Environment.LIVE: 10000, Environment.PAPER: 10000000}
        super().__init__(host=host, port=port)
        if seed:
            self._seed()

    # -- URLs ------------------------------------------------------------------------------------

    def api_url(self, environment: Environment = Environment.LIVE) -> str:
        """What ``https://api.tradier.com/v1`` / ``https://sandbox.tradier.com/v1`` are here."""
        return f"{self.base_url}{PREFIX[environment]}/v1"

    def authorize_url_for(self, environment: Environment) -> str:
        return f"{self.api_url(environment)}/oauth/authorize"

    def token_url_for(self, environment: Environment) -> str:
        return f"{self.api_url(environment)}/oauth/accesstoken"

    def refresh_url_for(self, environment: Environment) -> str:
        return f"{self.api_url(environment)}/oauth/refreshtoken"

    def stream_url(self, environment: Environment) -> str:
        return f"ws://{self.host}:{self.port}{WS_PREFIX[environment]}/v1/accounts/events"

    @property
    def authorize_url(self) -> str:
        return self.authorize_url_for(Environment.LIVE)

    @property
    def token_url(self) -> str:
        return self.token_url_for(Environment.LIVE)

    @property
    def refresh_url(self) -> str:
        return self.refresh_url_for(Environment.LIVE)

    @property
    def revoke_url(self) -> None:
        """Tradier documents no revocation endpoint."""
        return None

    # -- seeding and control ------------------------------------------------------------------

    def _seed(self) -> None:
        for symbol, desc, kind, last in (
            ("AAPL", "Apple Inc", "stock", "190.00"),
            ("MSFT", "Microsoft Corp", "stock", "420.00"),
            ("SPY", "SPDR S&P 500", "etf", "590.00"),
            ("QQQ", "Invesco QQQ Trust", "etf", "510.00"),
            ("TSLA", "Tesla Inc", "stock", "250.00"),
            ("NVDA", "NVIDIA Corp", "stock", "140.00"),
            ("AMZN", "Amazon.com Inc", "stock", "200.00"),
            ("F", "Ford Motor Co", "stock", "11.00"),
        ):
            px = Decimal(last)
            spread = Decimal("0.05") if px >= 100 else Decimal("0.01")
            self.set_quote(symbol, px - spread, px + spread, px, description=desc, type=kind)
        self.add_user("id-demo", "Demo Trader")
        self.add_user("id-pat", "Pat Daytrader")
        for env in Environment:
            margin = self.add_account("id-demo", env, "margin", cash=Decimal(100000))
            self.add_position(margin.number, "AAPL", Decimal(10), Decimal("150.00"))
            self.add_account("id-demo", env, "cash", cash=Decimal(25000))
        self.add_account("id-pat", Environment.LIVE, "pdt", cash=Decimal(50000))

    def add_user(self, user_id: str, name: str) -> EmuUser:
        user = self.users[user_id] = EmuUser(user_id, name)
        return user

    def add_account(
        self,
        user_id: str,
        environment: Environment,
        type: str = "margin",
        *,
        cash: Decimal = Decimal(100000),
        number: str | None = None,
        status: str = "active",
    ) -> EmuAccount:
        if type not in ACCOUNT_TYPES:
            raise ValueError(f"Tradier account types are {ACCOUNT_TYPES}")
        if user_id not in self.users:
            raise KeyError(user_id)
        if number is None:
            self._account_seq[environment] += 1
            seq = self._account_seq[environment]
            # Live accounts look like 6YA05708, sandbox ones like VA12345678.
            number = f"6YA{seq:05d}" if environment is Environment.LIVE else f"VA{seq:08d}"
        acct = EmuAccount(
            number,
            user_id,
            environment,
            type,
            Decimal(cash),
            status=status,
            date_created=iso_ms(self.clock()),
        )
        self.accounts[number] = acct
        return acct

    def add_position(self, account: str, symbol: str, quantity: Decimal, price: Decimal) -> None:
        acct = self.accounts[account]
        self._next_position += 1
        acct.positions[symbol] = EmuPosition(
            self._next_position,
            symbol,
            Decimal(quantity),
            Decimal(quantity) * Decimal(price),
            iso_ms(self.clock()),
        )

    def set_quote(
        self,
        symbol: str,
        bid: Decimal | str | float,
        ask: Decimal | str | float,
        last: Decimal | str | float | None = None,
        *,
        description: str | None = None,
        type: str | None = None,
    ) -> None:
        """Move (or create) a quote; resting orders in that symbol are re-checked."""
        b, a = Decimal(str(bid)), Decimal(str(ask))
        px = Decimal(str(last)) if last is not None else (b + a) / 2
        q = self.quotes.get(symbol)
        now_ms = int(self.clock() * 1000)
        if q is None:
            self.quotes[symbol] = EmuQuote(
                symbol, description or symbol, b, a, px, px, type=type or "stock", updated_ms=now_ms
            )
        else:
            q.bid, q.ask, q.last, q.updated_ms = b, a, px, now_ms
        for order in list(self.orders.values()):
            if order.symbol == symbol:
                self._try_fill(order)

    @property
    def market_open(self) -> bool:
        """Regular hours."""
        return self.market_state == "open"

    def set_market_open(self, is_open: bool) -> None:
        self.set_market_state("open" if is_open else "closed")

    def set_market_state(self, state: str) -> None:
        """Move the market clock to ``premarket``, ``open``, ``postmarket`` or ``closed``;
        orders for the session that begins fill if their prices allow."""
        if state not in MARKET_STATES:
            raise ValueError(f"market state must be one of {', '.join(MARKET_STATES)}")
        self.market_state = state
        for order in list(self.orders.values()):
            self._try_fill(order)

    def set_rate_limit(
        self, bucket: str, per_minute: int, environment: Environment | None = None
    ) -> None:
        for env in [environment] if environment else list(Environment):
            self.rate_limits[env][bucket] = per_minute

    def issue_tokens(
        self, user_id: str, environment: Environment, scope: str = "read market trade stream"
    ) -> JSON:
        """Mint a grant directly (as the developer dashboard does), skipping the browser."""
        core = self.oauth[environment]
        code = core.issue_code(self.client_id, None, user_id, scope)
        client = core.authenticate(self.client_id, self.client_secret)
        return self._token_body(core.exchange_code(client, code, None))

    def expire_access_tokens(self) -> None:
        for core in self.oauth.values():
            core.expire_access_tokens()

    def orders_for(self, account: str) -> list[EmuOrder]:
        return [o for o in self.orders.values() if o.account == account]

    def fill(
        self, order_id: int | str, quantity: Decimal | str | int, price: Decimal | str | None = None
    ) -> EmuOrder:
        """Execute part (or all) of a working order now, at ``price`` or the current quote."""
        order = self.orders[int(order_id)]
        qty = Decimal(str(quantity))
        if order.status not in WORKING or order.waiting or qty <= 0 or qty > order.remaining:
            raise ValueError(f"cannot fill {qty} of order {order.id} ({order.status})")
        if price is None:
            quote = self.quotes[order.symbol]
            px = quote.ask if order.buys else quote.bid
        else:
            px = Decimal(str(price))
        self._execute(order, qty, px)
        return order

    def reject(self, order_id: int | str, reason: str) -> EmuOrder:
        """The broker rejects a working order after accepting it (e.g. a risk check)."""
        order = self.orders[int(order_id)]
        order.reason_description = reason
        self._end(order, "rejected")
        return order

    def expire_day_orders(self) -> list[EmuOrder]:
        """End of session: working day orders expire."""
        expired = []
        for order in self.orders.values():
            if order.status in WORKING and order.duration in ("day", "pre", "post"):
                self._end(order, "expired")
                expired.append(order)
        return expired

    @property
    def stream_count(self) -> int:
        """Account-events websockets currently subscribed."""
        return len(self._subscribers)

    def send_heartbeat(self) -> None:
        for sub in self._subscribers:
            sub.queue.put_nowait(self._heartbeat())

    async def drop_streams(self) -> None:
        """Close every account-events websocket after what is already queued is sent."""
        for sub in list(self._subscribers):
            sub.queue.put_nowait(None)
        for _ in range(100):
            if not self._subscribers:
                return
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for sub in list(self._subscribers):
            with contextlib.suppress(Exception):
                await sub.ws.close()
        await super().stop()

    def violation(self, request: web.Request, message: str) -> None:
        self.spec_violations.append(f"{request.method} {request.path}: {message}")

    # -- routes -------------------------------------------------------------------------------

    def setup_routes(self, app: web.Application) -> None:
        r = app.router
        for env in Environment:
            p = PREFIX[env] + "/v1"
            r.add_get(p + "/oauth/authorize", self._bind(env, self._authorize))
            r.add_post(p + "/oauth/authorize", self._bind(env, self._consent))
            r.add_post(p + "/oauth/accesstoken", self._bind(env, self._accesstoken))
            r.add_post(p + "/oauth/refreshtoken", self._bind(env, self._refreshtoken))
            r.add_get(p + "/user/profile", self._api(env, "standard", "read", self._profile))
            r.add_post(
                p + "/accounts/events/session",
                self._api(env, "standard", "stream", self._events_session),
            )
            a = p + "/accounts/{account_id}"
            r.add_get(a + "/balances", self._api(env, "standard", "read", self._balances))
            r.add_get(a + "/positions", self._api(env, "standard", "read", self._positions))
            r.add_get(a + "/orders", self._api(env, "standard", "read", self._list_orders))
            r.add_post(a + "/orders", self._api(env, "trading", "trade", self._place_order))
            r.add_get(a + "/orders/{order_id}", self._api(env, "standard", "read", self._get_order))
            r.add_put(
                a + "/orders/{order_id}", self._api(env, "trading", "trade", self._modify_order)
            )
            r.add_delete(
                a + "/orders/{order_id}", self._api(env, "trading", "trade", self._cancel_order)
            )
            r.add_get(p + "/markets/quotes", self._api(env, "market", "market", self._quotes))
            r.add_get(p + "/markets/clock", self._api(env, "market", "market", self._clock))
            r.add_get(WS_PREFIX[env] + "/v1/accounts/events", self._bind(env, self._events_ws))

    def _bind(
        self,
        env: Environment,
        fn: Callable[[web.Request, Environment], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request, env)
            except _Reply as r:
                return r.response

        return handler

    def _api(
        self,
        env: Environment,
        bucket: str,
        scope: str,
        fn: Callable[[web.Request, _Ctx], Awaitable[web.Response]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Bearer auth, the token's rate-limit bucket and scope, then the handler; every
        authenticated answer carries the X-Ratelimit-* headers."""

        async def handler(request: web.Request) -> web.StreamResponse:
            headers: dict[str, str] = {}
            try:
                ctx = self._authenticate(request, env, bucket, scope, headers)
                response = await fn(request, ctx)
            except _Reply as r:
                response = r.response
            response.headers.update(headers)
            return response

        return handler

    def _authenticate(
        self,
        request: web.Request,
        env: Environment,
        bucket: str,
        scope: str,
        headers: dict[str, str],
    ) -> _Ctx:
        token = bearer(request)
        record = self.oauth[env].check_access(token)
        if token is None or record is None:
            raise _Reply(web.Response(status=401, text="Invalid Access Token"))
        allowed = self.rate_limits[env][bucket]
        now = self.clock()
        key = (env, token, bucket)
        window = self._windows.get(key)
        if window is None or now >= window[0] + RATE_WINDOW:
            window = self._windows[key] = [now, 0.0]
        limited = window[1] >= allowed
        if not limited:
            window[1] += 1
        headers.update(
            {
                "X-Ratelimit-Allowed": str(allowed),
                "X-Ratelimit-Used": str(int(window[1])),
                "X-Ratelimit-Available": str(max(0, allowed - int(window[1]))),
                "X-Ratelimit-Expiry": str(int((window[0] + RATE_WINDOW) * 1000)),
            }
        )
        if limited:
            raise _Reply(web.Response(status=429, text="Rate limit exceeded"))
        if scope not in record.scope.split():
            raise _Reply(web.Response(status=403, text="Insufficient scope"))
        accept = request.headers.get("Accept", "")
        return _Ctx(env, record, self.users[record.user_id], "application/json" in accept)

    def _reply(self, ctx: _Ctx | bool, payload: JSON, status: int = 200) -> web.Response:
        as_json = ctx.json if isinstance(ctx, _Ctx) else ctx
        if as_json:
            return web.Response(
                status=status, text=json.dumps(_jsonable(payload)), content_type="application/json"
            )
        return web.Response(status=status, text=to_xml(payload), content_type="application/xml")

    def _errors(self, ctx: _Ctx | bool, messages: list[str], status: int = 400) -> _Reply:
        error: Any = messages[0] if len(messages) == 1 else messages
        return _Reply(self._reply(ctx, {"errors": {"error": error}}, status))

    def _check_params(
        self, request: web.Request, ctx: _Ctx, allowed: set[str], source: Any = None
    ) -> None:
        """Unknown parameter names are departures from the documentation."""
        names = source if source is not None else request.query
        unknown = sorted(set(names) - allowed)
        if unknown:
            msgs = [f"unknown parameter {n!r}" for n in unknown]
            for m in msgs:
                self.violation(request, m)
            raise self._errors(ctx, msgs)

    def _account(self, ctx: _Ctx, request: web.Request) -> EmuAccount:
        number = request.match_info["account_id"]
        acct = self.accounts.get(number)
        if acct is None or acct.user_id != ctx.user.id or acct.environment is not ctx.environment:
            raise _Reply(web.Response(status=401, text=f"Unauthorized Account: {number}"))
        return acct

    # -- OAuth ----------------------------------------------------------------------------------

    async def _authorize(self, request: web.Request, env: Environment) -> web.Response:
        q = request.query
        for name in sorted(
            set(q) - {"client_id", "scope", "state", "response_type", "redirect_uri"}
        ):
            # PKCE parameters land here: Tradier's clients are confidential and it has none.
            self.violation(request, f"unknown authorize parameter {name!r}")
        if q.get("response_type", "code") != "code":
            self.violation(request, "response_type must be code")
        core = self.oauth[env]
        client = core.clients.get(q.get("client_id", ""))
        if client is None:
            return web.Response(status=400, text="Invalid client_id")
        if not q.get("state"):
            self.violation(request, "state is required")
            return web.Response(status=400, text="state is required")
        scopes = self._parse_scopes(request, q.get("scope", ""))
        if scopes is None:
            return web.Response(status=400, text="Invalid scope")
        redirect = q.get("redirect_uri")
        if redirect is not None and redirect not in client.redirect_uris:
            self.violation(request, "redirect_uri is not the application's registered callback")
            return web.Response(status=400, text="Invalid redirect_uri")
        users = [
            (u.id, u.name)
            for u in self.users.values()
            if any(a.user_id == u.id and a.environment is env for a in self.accounts.values())
        ]
        hidden = {"client_id": client.client_id, "scope": ",".join(scopes), "state": q["state"]}
        if redirect:
            hidden["redirect_uri"] = redirect
        broker = "Tradier Brokerage" + (" (Sandbox)" if env is Environment.PAPER else "")
        return consent_page(
            broker=broker,
            app_name=client.client_id,
            scopes=[SCOPE_TEXT[s] for s in scopes],
            users=users,
            hidden=hidden,
            action=request.path,
        )

    def _parse_scopes(self, request: web.Request, raw: str) -> list[str] | None:
        if " " in raw.strip() or "+" in raw:
            self.violation(request, "scope must be comma-delimited")
            return None
        scopes = [s.strip() for s in raw.split(",") if s.strip()]
        if not scopes or any(s not in SCOPES for s in scopes):
            self.violation(request, f"invalid scope {raw!r}")
            return None
        return scopes

    async def _consent(self, request: web.Request, env: Environment) -> web.Response:
        form = await request.post()
        core = self.oauth[env]
        client = core.clients.get(str(form.get("client_id", "")))
        if client is None:
            return web.Response(status=400, text="Invalid client_id")
        redirect = str(form.get("redirect_uri") or client.redirect_uris[0])
        if redirect not in client.redirect_uris:
            return web.Response(status=400, text="Invalid redirect_uri")
        state = str(form.get("state", ""))
        user_id = str(form.get("user_id", ""))
        if form.get("decision") != "approve" or user_id not in self.users:
            params = {"error": "access_denied", "state": state}
        else:
            scope = " ".join(str(form.get("scope", "")).split(","))
            params = {
                "code": core.issue_code(client.client_id, None, user_id, scope),
                "state": state,
            }
        sep = "&" if "?" in redirect else "?"
        raise web.HTTPFound(redirect + sep + urlencode(params))

    async def _oauth_form(
        self, request: web.Request, env: Environment, allowed: set[str]
    ) -> tuple[Any, JSON]:
        """Basic client auth and a form body, as both Tradier token endpoints require."""
        if request.content_type != FORM:
            self.violation(request, f"body must be {FORM}, not {request.content_type}")
        form = await request.post()
        for name in sorted(set(form) - allowed):
            self.violation(request, f"unknown parameter {name!r}")
        if "client_id" in form or "client_secret" in form:
            self.violation(request, "client credentials belong in HTTP Basic auth")
        client_id, secret = basic_auth(request)
        if client_id is None:
            self.violation(request, "HTTP Basic client authentication is required")
        client = self.oauth[env].authenticate(client_id, secret)
        return client, {k: str(v) for k, v in form.items()}

    async def _accesstoken(self, request: web.Request, env: Environment) -> web.Response:
        core = self.oauth[env]
        try:
            client, form = await self._oauth_form(request, env, {"grant_type", "code"})
            if form.get("grant_type") != "authorization_code":
                self.violation(request, "grant_type must be authorization_code")
                raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code")
            out = core.exchange_code(client, form.get("code"), None)
        except OAuthError as e:
            return web.json_response(
                {"error": e.error, "error_description": e.description}, status=e.status
            )
        return web.json_response(self._token_body(out))

    async def _refreshtoken(self, request: web.Request, env: Environment) -> web.Response:
        core = self.oauth[env]
        try:
            client, form = await self._oauth_form(request, env, {"grant_type", "refresh_token"})
            if form.get("grant_type") != "refresh_token":
                self.violation(request, "grant_type must be refresh_token")
                raise OAuthError("unsupported_grant_type", "grant_type must be refresh_token")
            out = core.refresh(client, form.get("refresh_token"))
        except OAuthError as e:
            return web.json_response(
                {"error": e.error, "error_description": e.description}, status=e.status
            )
        # Refresh tokens do not rotate or expire: the same one keeps working.
        out["refresh_token"] = form["refresh_token"]
        return web.json_response(self._token_body(out))

    def _token_body(self, out: JSON) -> JSON:
        body: JSON = {
            "access_token": out["access_token"],
            "expires_in": out.get("expires_in", 86399),
            "issued_at": datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="seconds"),
            "scope": out["scope"],
            "status": "approved",
        }
        if "refresh_token" in out:
            body["refresh_token"] = out["refresh_token"]
        return body

    # -- accounts -----------------------------------------------------------------------------

    async def _profile(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, set())
        accounts = [
            {
                "account_number": a.number,
                "classification": a.classification,
                "date_created": a.date_created,
                "day_trader": a.day_trader,
                "option_level": a.option_level,
                "status": a.status,
                "type": a.type,
                "last_update_date": a.date_created,
            }
            for a in self.accounts.values()
            if a.user_id == ctx.user.id and a.environment is ctx.environment
        ]
        profile: JSON = {"id": ctx.user.id, "name": ctx.user.name}
        if accounts:
            profile["account"] = one_or_many(accounts)
        return self._reply(ctx, {"profile": profile})

    def _price(self, symbol: str, fallback: Decimal) -> Decimal:
        q = self.quotes.get(symbol)
        return q.last if q else fallback

    def _reserved(self, acct: EmuAccount) -> Decimal:
        """Buying power held by working orders that open or add to positions."""
        total = Decimal(0)
        for o in self.orders.values():
            if o.account == acct.number and o.status in WORKING and o.side in ("buy", "sell_short"):
                total += o.remaining * self._estimate(o.symbol, o.side, o.type, o.price, o.stop)
        return total

    def _estimate(
        self, symbol: str, side: str, type: str, price: Decimal | None, stop: Decimal | None
    ) -> Decimal:
        if type in ("limit", "stop_limit") and price is not None:
            return price
        if type == "stop" and stop is not None:
            return stop
        q = self.quotes[symbol]
        return q.ask if side in ("buy", "buy_to_cover") else q.bid

    def balances(self, acct: EmuAccount) -> JSON:
        long_mv = short_mv = open_pl = Decimal(0)
        for p in acct.positions.values():
            value = p.quantity * self._price(p.symbol, p.cost_basis / p.quantity)
            if p.quantity > 0:
                long_mv += value
            else:
                short_mv += value
            open_pl += value - p.cost_basis
        market_value = long_mv + short_mv
        equity = acct.cash + market_value
        reserved = self._reserved(acct)
        pending = sum(
            1 for o in self.orders.values() if o.account == acct.number and o.status in WORKING
        )
        body: JSON = {
            "option_short_value": Decimal(0),
            "total_equity": equity,
            "account_number": acct.number,
            "account_type": acct.type,
            "close_pl": acct.realized,
            "current_requirement": Decimal(0),
            "equity": Decimal(0),
            "long_market_value": long_mv,
            "market_value": market_value,
            "open_pl": open_pl,
            "option_long_value": Decimal(0),
            "option_requirement": Decimal(0),
            "pending_orders_count": pending,
            "short_market_value": short_mv,
            "stock_long_value": long_mv,
            "total_cash": acct.cash,
            "uncleared_funds": Decimal(0),
            "pending_cash": Decimal(0),
        }
        if acct.type == "cash":
            body["cash"] = {
                "cash_available": max(Decimal(0), acct.cash - reserved),
                "sweep": Decimal(0),
                "unsettled_funds": Decimal(0),
            }
        else:
            # Reg T: 50% initial requirement; buying power is twice the excess equity.
            requirement = (long_mv - short_mv) / 2
            body["current_requirement"] = requirement
            stock_bp = max(Decimal(0), 2 * (equity - requirement) - reserved)
            body[acct.type] = {
                "fed_call": Decimal(0),
                "maintenance_call": Decimal(0),
                "option_buying_power": stock_bp / 2,
                "stock_buying_power": stock_bp,
                "stock_short_value": short_mv,
            }
            if acct.type == "margin":
                body["margin"]["sweep"] = Decimal(0)
        return body

    def buying_power(self, acct: EmuAccount) -> Decimal:
        b = self.balances(acct)
        if acct.type == "cash":
            return b["cash"]["cash_available"]
        return b[acct.type]["stock_buying_power"]

    async def _balances(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, set())
        return self._reply(ctx, {"balances": self.balances(self._account(ctx, request))})

    async def _positions(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, set())
        acct = self._account(ctx, request)
        items = [
            {
                "cost_basis": p.cost_basis,
                "date_acquired": p.date_acquired,
                "id": p.id,
                "quantity": p.quantity,
                "symbol": p.symbol,
            }
            for p in acct.positions.values()
        ]
        return self._reply(ctx, collection("positions", "position", items))

    # -- orders -------------------------------------------------------------------------------

    def order_json(self, o: EmuOrder, *, include_tag: bool) -> JSON:
        out: JSON = {
            "id": o.id,
            "type": o.type,
            "symbol": o.symbol,
            "side": o.side,
            "quantity": o.quantity,
            "status": o.status,
            "duration": o.duration,
        }
        if o.price is not None:
            out["price"] = o.price
        out.update(
            {
                "avg_fill_price": o.avg_fill_price,
                "exec_quantity": o.exec_quantity,
                "last_fill_price": o.last_fill_price,
                "last_fill_quantity": o.last_fill_quantity,
                "remaining_quantity": o.remaining if o.status in WORKING else Decimal(0),
                "create_date": o.create_date,
                "transaction_date": o.transaction_date,
                "class": "equity",
            }
        )
        if o.stop is not None:
            out["stop_price"] = o.stop
        if o.reason_description:
            out["reason_description"] = o.reason_description
        if include_tag and o.tag:
            out["tag"] = o.tag
        return out

    def advanced_json(self, a: EmuAdvanced, *, include_tag: bool) -> JSON:
        """An oto/otoco as an order with legs, in the shape Tradier documents for orders with
        legs (docs.tradier.com/docs/orders: ``num_legs`` and a ``leg`` list, each leg with its
        own id and status), legs in the order they were sent. Tradier documents no status of
        the advanced order itself; this one is derived from its legs."""
        legs = [self.orders[i] for i in a.legs]
        entry = legs[0]
        out: JSON = {
            "id": a.id,
            "type": entry.type,
            "symbol": entry.symbol,
            "side": entry.side,
            "quantity": entry.quantity,
            "status": self._advanced_status(legs),
            "duration": entry.duration,
            "create_date": a.create_date,
            "transaction_date": max(leg.transaction_date for leg in legs),
            "class": a.klass,
            "num_legs": len(legs),
            "leg": [self.order_json(leg, include_tag=False) for leg in legs],
        }
        if include_tag and a.tag:
            out["tag"] = a.tag
        return out

    @staticmethod
    def _advanced_status(legs: list[EmuOrder]) -> str:
        entry, *exits = legs
        if entry.status in WORKING:
            return entry.status
        if any(leg.status in WORKING for leg in exits):
            return "open"
        if entry.status != "filled" or any(leg.status == "filled" for leg in exits):
            return entry.status  # ended unfilled, or filled and closed by an exit
        return exits[-1].status  # its exits ended unfilled

    def _top_level(self, account: str) -> list[EmuOrder | EmuAdvanced]:
        """The account's orders as Tradier lists them: an advanced order once, with its legs."""
        plain: list[EmuOrder | EmuAdvanced] = [
            o for o in self.orders_for(account) if o.parent is None
        ]
        plain.extend(a for a in self.advanced.values() if a.account == account)
        return sorted(plain, key=lambda o: o.id)

    def _render(self, order: EmuOrder | EmuAdvanced, *, include_tag: bool) -> JSON:
        if isinstance(order, EmuAdvanced):
            return self.advanced_json(order, include_tag=include_tag)
        return self.order_json(order, include_tag=include_tag)

    def _include_tags(self, request: web.Request, ctx: _Ctx) -> bool:
        raw = request.query.get("includeTags", "false")
        if raw not in ("true", "false"):
            self.violation(request, f"includeTags must be true or false, not {raw!r}")
            raise self._errors(ctx, [f"Invalid parameter, includeTags: {raw}"])
        return raw == "true"

    def _positive_int(self, request: web.Request, ctx: _Ctx, name: str) -> int | None:
        raw = request.query.get(name)
        if raw is None:
            return None
        if not raw.isdigit() or int(raw) < 1:
            self.violation(request, f"{name} must be a positive integer, not {raw!r}")
            raise self._errors(ctx, [f"Invalid parameter, {name}: {raw}"])
        return int(raw)

    async def _list_orders(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, {"includeTags", "page", "limit"})
        acct = self._account(ctx, request)
        tags = self._include_tags(request, ctx)
        page = self._positive_int(request, ctx, "page") or 1
        limit = self._positive_int(request, ctx, "limit")
        orders = self._top_level(acct.number)
        if limit is not None:
            orders = orders[(page - 1) * limit : page * limit]
        items = [self._render(o, include_tag=tags) for o in orders]
        return self._reply(ctx, collection("orders", "order", items))

    def _order(self, ctx: _Ctx, request: web.Request, acct: EmuAccount) -> EmuOrder | EmuAdvanced:
        """The order a path names: an id Tradier answered a placement with. A leg of an
        advanced order is not looked up or cancelled by its own id here: Tradier documents no
        such call, so a client must not depend on it."""
        raw = request.match_info["order_id"]
        key = int(raw) if raw.isdigit() else None
        order = self.advanced.get(key) if key is not None else None
        if order is None and key is not None:
            plain = self.orders.get(key)
            order = plain if plain is not None and plain.parent is None else None
        if order is None or order.account != acct.number:
            raise self._errors(ctx, [f"Order {raw} not found."], status=404)
        return order

    async def _get_order(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, {"includeTags"})
        acct = self._account(ctx, request)
        tags = self._include_tags(request, ctx)
        order = self._order(ctx, request, acct)
        return self._reply(ctx, {"order": self._render(order, include_tag=tags)})

    async def _cancel_order(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, set())
        acct = self._account(ctx, request)
        order = self._order(ctx, request, acct)
        if isinstance(order, EmuAdvanced):
            # Whatever of it still works: the entry (which takes its held exits with it), or
            # the exits once the entry has filled.
            working = [self.orders[i] for i in order.legs if self.orders[i].status in WORKING]
            if not working:
                status = self._advanced_status([self.orders[i] for i in order.legs])
                raise self._errors(ctx, [f"Order {order.id} cannot be canceled: it is {status}."])
            for leg in working:
                if leg.status in WORKING:
                    self._end(leg, "canceled")
            return self._reply(ctx, {"order": {"id": order.id, "status": "ok"}})
        if order.status not in WORKING:
            raise self._errors(ctx, [f"Order {order.id} cannot be canceled: it is {order.status}."])
        self._end(order, "canceled")
        return self._reply(ctx, {"order": {"id": order.id, "status": "ok"}})

    async def _modify_order(self, request: web.Request, ctx: _Ctx) -> web.Response:
        """Change a working order in place (``PUT .../orders/{id}``, form ``type``,
        ``duration``, ``price``, ``stop``, each optional): the same id, answered with
        ``{"order": {"id", "status": "ok"}}``. The quantity cannot be changed. A limit made
        marketable fills at once, as a new one would."""
        if request.content_type != FORM:
            self.violation(request, f"order body must be {FORM}, not {request.content_type}")
            raise self._errors(ctx, ["Orders must be sent form-encoded."])
        form = {k: str(v) for k, v in (await request.post()).items()}
        self._check_params(request, ctx, {"type", "duration", "price", "stop"}, source=form)
        acct = self._account(ctx, request)
        order = self._order(ctx, request, acct)
        if isinstance(order, EmuAdvanced):
            # Tradier documents no change of an oto/otoco as a whole; refused, not guessed at.
            raise self._errors(
                ctx, [f"Order {order.id} is a {order.klass} order: it cannot be changed."]
            )
        if order.status not in WORKING:
            # Tradier publishes no wording for this; it says what the cancel refusal says.
            raise self._errors(ctx, [f"Order {order.id} cannot be changed: it is {order.status}."])
        problems = self._validate_modify_form(form, order)
        if problems:
            for p in problems:
                self.violation(request, p)
            raise self._errors(ctx, problems)
        if not form:
            # Not a documentation departure (every field is optional), but nothing to do.
            raise self._errors(ctx, ["Nothing to change: send type, duration, price or stop."])
        kind = form.get("type", order.type)
        duration = form.get("duration", order.duration)
        takes_price, takes_stop = kind in ("limit", "stop_limit"), kind in ("stop", "stop_limit")
        price = (_dec(form["price"]) if "price" in form else order.price) if takes_price else None
        stop = (_dec(form["stop"]) if "stop" in form else order.stop) if takes_stop else None
        if duration in ("pre", "post") and kind != "limit":
            raise self._errors(ctx, ["Extended hours orders must be limit orders."])
        if duration != order.duration:
            self._check_session(ctx, duration)  # as a new order with that duration would be
        if order.side in ("buy", "sell_short"):
            # Checked as a placement is, the order's own hold given back first (as a broker's
            # risk check would; Tradier does not document it).
            held = order.remaining * self._estimate(
                order.symbol, order.side, order.type, order.price, order.stop
            )
            cost = order.remaining * self._estimate(order.symbol, order.side, kind, price, stop)
            if cost > self.buying_power(acct) + held:
                raise self._errors(ctx, ["You do not have enough buying power for this trade."])
        if (kind, stop) != (order.type, order.stop):
            order.triggered = False  # a new stop is looked at afresh against the quote
        order.type, order.duration, order.price, order.stop = kind, duration, price, stop
        order.transaction_date = iso_ms(self.clock())
        self._emit(order)
        self._try_fill(order)
        return self._reply(ctx, {"order": {"id": order.id, "status": "ok"}})

    def _validate_modify_form(self, form: dict[str, str], order: EmuOrder) -> list[str]:
        """Documented values, and ``price``/``stop`` only where the order's type (as it will
        be) takes them, as for a placement."""
        problems: list[str] = []
        for name, values in (("type", ORDER_TYPES), ("duration", DURATIONS)):
            if name in form and form[name] not in values:
                problems.append(f"{name} must be one of {', '.join(values)}, not {form[name]!r}")
        for name in ("price", "stop"):
            if name in form:
                value = _dec(form[name])
                if value is None or value <= 0:
                    problems.append(f"{name} must be a positive number, not {form[name]!r}")
        if problems:
            return problems
        kind = form.get("type", order.type)
        for name, kinds, current in (
            ("price", ("limit", "stop_limit"), order.price),
            ("stop", ("stop", "stop_limit"), order.stop),
        ):
            if kind in kinds and name not in form and current is None:
                problems.append(f"{name} is required for {kind} orders")
            if kind not in kinds and name in form:
                problems.append(f"{name} is not valid for {kind} orders")
        return problems

    async def _place_order(self, request: web.Request, ctx: _Ctx) -> web.Response:
        if request.content_type != FORM:
            self.violation(request, f"order body must be {FORM}, not {request.content_type}")
            raise self._errors(ctx, ["Orders must be sent form-encoded."])
        form = {k: str(v) for k, v in (await request.post()).items()}
        if form.get("class") in ADVANCED_LEGS:
            return await self._place_advanced(request, ctx, form)
        allowed = {
            "class",
            "symbol",
            "side",
            "quantity",
            "type",
            "duration",
            "price",
            "stop",
            "tag",
            "preview",
        }
        self._check_params(request, ctx, allowed, source=form)
        acct = self._account(ctx, request)
        problems = self._validate_order_form(form)
        if problems:
            for p in problems:
                self.violation(request, p)
            raise self._errors(ctx, problems)
        if form["class"] != "equity":
            # Not a documentation departure: this emulator trades stocks and ETFs only.
            raise self._errors(ctx, [f"class {form['class']} is not available for this account."])
        symbol, side, type = form["symbol"].upper(), form["side"], form["type"]
        qty = Decimal(form["quantity"])
        price = _dec(form["price"]) if "price" in form else None
        stop = _dec(form["stop"]) if "stop" in form else None
        self._business_checks(ctx, acct, symbol, side, type, form["duration"], qty, price, stop)
        now = iso_ms(self.clock())
        if form.get("preview") == "true":
            cost = qty * self._estimate(symbol, side, type, price, stop)
            return self._reply(
                ctx,
                {
                    "order": {
                        "status": "ok",
                        "commission": Decimal(0),
                        "cost": cost,
                        "fees": Decimal(0),
                        "symbol": symbol,
                        "quantity": qty,
                        "side": side,
                        "type": type,
                        "duration": form["duration"],
                        "result": True,
                        "order_cost": cost,
                        "margin_change": Decimal(0),
                        "request_date": now[:-1],
                        "extended_hours": form["duration"] in ("pre", "post"),
                        "class": "equity",
                        "strategy": "equity",
                        "day_trades": 0,
                    }
                },
            )
        self._next_order += 1
        order = EmuOrder(
            self._next_order,
            acct.number,
            ctx.environment,
            symbol,
            side,
            qty,
            type,
            form["duration"],
            price,
            stop,
            form.get("tag"),
            now,
            now,
        )
        self.orders[order.id] = order
        self._emit(order)
        self._try_fill(order)
        return self._reply(
            ctx, {"order": {"id": order.id, "status": "ok", "partner_id": self.partner_id}}
        )

    async def _place_advanced(
        self, request: web.Request, ctx: _Ctx, form: dict[str, str]
    ) -> web.Response:
        """An oto or otoco order, as documented (docs.tradier.com/reference/
        brokerage-api-trading-place-otoco-order; documentation.tradier.com/brokerage-api/
        trading/place-otoco-order and place-oto-order): each order's fields indexed from 0,
        one ``duration`` or one per order. The first order works at once; the others are held
        (pending) until it has filled, then work, an otoco's two cancelling each other."""
        klass = form["class"]
        n = ADVANCED_LEGS[klass]
        allowed = {"class", "duration", "tag", "preview"}
        allowed |= {f"{name}[{i}]" for name in LEG_FIELDS for i in range(n)}
        self._check_params(request, ctx, allowed, source=form)
        acct = self._account(ctx, request)
        problems = self._validate_advanced(form, n)
        if problems:
            for p in problems:
                self.violation(request, p)
            raise self._errors(ctx, problems)
        if any(f"option_symbol[{i}]" in form for i in range(n)):
            # Not a documentation departure: this emulator trades stocks and ETFs only.
            raise self._errors(ctx, ["Option orders are not available for this account."])
        if form.get("preview") == "true":
            raise self._errors(ctx, [f"Previews of {klass} orders are not emulated."])
        legs: list[tuple[str, str, Decimal, str, str, Decimal | None, Decimal | None]] = []
        for i in range(n):
            legs.append(
                (
                    form[f"symbol[{i}]"].upper(),
                    form[f"side[{i}]"],
                    Decimal(form[f"quantity[{i}]"]),
                    form[f"type[{i}]"],
                    form.get("duration") or form[f"duration[{i}]"],
                    _dec(form[f"price[{i}]"]) if f"price[{i}]" in form else None,
                    _dec(form[f"stop[{i}]"]) if f"stop[{i}]" in form else None,
                )
            )
        symbol, side, qty, type, duration, price, stop = legs[0]
        self._business_checks(ctx, acct, symbol, side, type, duration, qty, price, stop)
        for symbol, _, _, type, duration, _, _ in legs[1:]:
            # The exits close what the first order opens: their sides are checked when they
            # start, the position being there only then.
            if symbol not in self.quotes:
                raise self._errors(ctx, [f"Invalid parameter, {symbol}: symbol not found."])
            if duration in ("pre", "post") and type != "limit":
                raise self._errors(ctx, ["Extended hours orders must be limit orders."])
        now = iso_ms(self.clock())
        self._next_order += 1
        advanced = EmuAdvanced(self._next_order, acct.number, klass, [], form.get("tag"), now)
        self.advanced[advanced.id] = advanced
        for i, (symbol, side, qty, type, duration, price, stop) in enumerate(legs):
            self._next_order += 1
            leg = EmuOrder(
                self._next_order,
                acct.number,
                ctx.environment,
                symbol,
                side,
                qty,
                type,
                duration,
                price,
                stop,
                None,
                now,
                now,
                status="open" if i == 0 else "pending",
                parent=advanced.id,
                waiting=i > 0,
            )
            self.orders[leg.id] = leg
            advanced.legs.append(leg.id)
            self._emit(leg)
        self._try_fill(self.orders[advanced.legs[0]])
        return self._reply(
            ctx, {"order": {"id": advanced.id, "status": "ok", "partner_id": self.partner_id}}
        )

    def _validate_advanced(self, form: dict[str, str], n: int) -> list[str]:
        """The documented parameters and validations of oto and otoco orders."""
        otoco = form["class"] == "otoco"
        per_order = [f"duration[{i}]" in form for i in range(n)]
        problems: list[str] = []
        if "duration" in form and any(per_order):
            problems.append("duration is sent once or per order (duration[index]), not both")
        elif "duration" not in form and not all(per_order):
            problems.append("missing required parameter 'duration'")
        problems += [
            f"missing required parameter '{name}[{i}]'"
            for i in range(n)
            for name in ("symbol", "side", "quantity", "type")
            if not form.get(f"{name}[{i}]")
        ]
        if problems:
            return problems
        durations = [form.get("duration") or form[f"duration[{i}]"] for i in range(n)]
        for d in sorted(set(durations)):
            if d not in DURATIONS:
                problems.append(f"duration must be one of {', '.join(DURATIONS)}, not {d!r}")
        for i in range(n):
            # The first order is a limit, stop or stop_limit order; an oto's second may also
            # be a market order, an otoco's second and third may not.
            types = ORDER_TYPES if i > 0 and not otoco else ("limit", "stop", "stop_limit")
            kind, side, qty = (form[f"{name}[{i}]"] for name in ("type", "side", "quantity"))
            if kind not in types:
                problems.append(
                    f"type[{i}] must be one of {', '.join(types)} in this position of an "
                    f"{form['class']} order, not {kind!r}"
                )
            if side not in EQUITY_SIDES:
                problems.append(f"side[{i}] must be one of {', '.join(EQUITY_SIDES)}, not {side!r}")
            amount = _dec(qty)
            if amount is None or amount <= 0 or amount != amount.to_integral_value():
                problems.append(f"quantity[{i}] must be a positive whole number, not {qty!r}")
            for name in (f"price[{i}]", f"stop[{i}]"):
                if name in form:
                    value = _dec(form[name])
                    if value is None or value <= 0:
                        problems.append(f"{name} must be a positive number, not {form[name]!r}")
            if (kind in ("limit", "stop_limit")) != (f"price[{i}]" in form):
                problems.append(
                    f"price[{i}] is required for limit and stop_limit orders, and only for them"
                )
            if (kind in ("stop", "stop_limit")) != (f"stop[{i}]" in form):
                problems.append(
                    f"stop[{i}] is required for stop and stop_limit orders, and only for them"
                )
        if otoco:
            if form.get("symbol[1]", "").upper() != form.get("symbol[2]", "").upper():
                problems.append("the second and third orders must have the same symbol")
            if form["type[1]"] == form["type[2]"]:
                problems.append("the second and third orders must have a different type")
            if durations[1] != durations[2]:
                problems.append("the second and third orders must have the same duration")
        if "tag" in form and not TAG_RE.match(form["tag"]):
            problems.append("tag must be at most 255 letters, digits and dashes")
        if form.get("preview", "false") not in ("true", "false"):
            problems.append("preview must be true or false")
        return problems

    def _validate_order_form(self, form: dict[str, str]) -> list[str]:
        problems = [
            f"missing required parameter {n!r}"
            for n in ("class", "symbol", "side", "quantity", "type", "duration")
            if not form.get(n)
        ]
        if problems:
            return problems
        enums = {"class": CLASSES, "type": ORDER_TYPES, "duration": DURATIONS}
        if form["class"] == "equity":
            enums["side"] = EQUITY_SIDES
        for name, values in enums.items():
            if form[name] not in values:
                problems.append(f"{name} must be one of {', '.join(values)}, not {form[name]!r}")
        qty = _dec(form["quantity"])
        if qty is None or qty <= 0 or qty != qty.to_integral_value():
            problems.append(f"quantity must be a positive whole number, not {form['quantity']!r}")
        for name in ("price", "stop"):
            if name in form:
                value = _dec(form[name])
                if value is None or value <= 0:
                    problems.append(f"{name} must be a positive number, not {form[name]!r}")
        needs_price = form["type"] in ("limit", "stop_limit")
        needs_stop = form["type"] in ("stop", "stop_limit")
        if needs_price != ("price" in form):
            problems.append("price is required for limit and stop_limit orders, and only for them")
        if needs_stop != ("stop" in form):
            problems.append("stop is required for stop and stop_limit orders, and only for them")
        if "tag" in form and not TAG_RE.match(form["tag"]):
            problems.append("tag must be at most 255 letters, digits and dashes")
        if form.get("preview", "false") not in ("true", "false"):
            problems.append("preview must be true or false")
        return problems

    def _business_checks(
        self,
        ctx: _Ctx,
        acct: EmuAccount,
        symbol: str,
        side: str,
        type: str,
        duration: str,
        qty: Decimal,
        price: Decimal | None,
        stop: Decimal | None,
    ) -> None:
        if acct.status != "active":
            raise self._errors(ctx, ["Account is not active."])
        if symbol not in self.quotes:
            raise self._errors(ctx, [f"Invalid parameter, {symbol}: symbol not found."])
        if duration in ("pre", "post") and type != "limit":
            raise self._errors(ctx, ["Extended hours orders must be limit orders."])
        self._check_session(ctx, duration)
        held = acct.positions.get(symbol)
        have = held.quantity if held else Decimal(0)
        if side == "buy" and have < 0:
            raise self._errors(ctx, ["You have a short position; use buy_to_cover to close it."])
        if side == "buy_to_cover" and (have >= 0 or qty > -have):
            raise self._errors(ctx, ["buy_to_cover quantity exceeds your short position."])
        if side == "sell" and (have <= 0 or qty > have):
            raise self._errors(ctx, ["Sell quantity exceeds your long position."])
        if side == "sell_short":
            if acct.type == "cash":
                raise self._errors(ctx, ["Short selling is not allowed in a cash account."])
            if have > 0:
                raise self._errors(ctx, ["You have a long position; use sell to close it."])
        if side in ("buy", "sell_short"):
            cost = qty * self._estimate(symbol, side, type, price, stop)
            if cost > self.buying_power(acct):
                raise self._errors(ctx, ["You do not have enough buying power for this trade."])

    def _check_session(self, ctx: _Ctx, duration: str) -> None:
        """A pre order only in the pre-market session, a post order only in the post-market
        one. Tradier publishes no wording for this refusal; this one is ours."""
        session = SESSION_OF[duration]
        if duration in ("pre", "post") and self.market_state != session:
            raise self._errors(
                ctx,
                [f"{duration.capitalize()} orders can only be placed in the {session} session."],
            )

    # -- execution ----------------------------------------------------------------------------

    def _try_fill(self, order: EmuOrder) -> None:
        if order.status not in WORKING or order.waiting:
            return
        if self.market_state != SESSION_OF[order.duration]:
            return  # not its session: it waits
        q = self.quotes.get(order.symbol)
        if q is None:
            return
        px = q.ask if order.buys else q.bid
        if order.type in ("stop", "stop_limit") and not order.triggered:
            assert order.stop is not None
            if (order.buys and q.ask < order.stop) or (not order.buys and q.bid > order.stop):
                return
            order.triggered = True
        if order.type in ("limit", "stop_limit"):
            assert order.price is not None
            if (order.buys and px > order.price) or (not order.buys and px < order.price):
                return
        self._execute(order, order.remaining, px)

    def _execute(self, order: EmuOrder, qty: Decimal, price: Decimal) -> None:
        total = order.exec_quantity + qty
        order.avg_fill_price = (order.avg_fill_price * order.exec_quantity + price * qty) / total
        order.exec_quantity = total
        order.last_fill_price, order.last_fill_quantity = price, qty
        order.status = "filled" if order.remaining == 0 else "partially_filled"
        order.transaction_date = iso_ms(self.clock())
        self._book(self.accounts[order.account], order.symbol, qty if order.buys else -qty, price)
        self._emit(order)
        self._advance(order)

    def _end(self, order: EmuOrder, status: str) -> None:
        """A working order ends unfilled (or with part filled): canceled, expired, rejected."""
        order.status, order.waiting = status, False
        order.transaction_date = iso_ms(self.clock())
        self._emit(order)
        self._advance(order)

    def _advance(self, order: EmuOrder) -> None:
        """What a change of one order of an advanced order does to the others: the first
        filling starts the rest; the first ending unfilled cancels the rest (they were held
        for it); in an otoco, an exit filling cancels the other."""
        if order.parent is None:
            return
        advanced = self.advanced[order.parent]
        first, *rest = (self.orders[i] for i in advanced.legs)
        if order is first:
            if first.status == "filled":
                for leg in rest:
                    if leg.waiting:
                        self._start(leg)
            elif first.status in ENDED_UNFILLED:
                for leg in rest:
                    if leg.status in WORKING:
                        self._end(leg, "canceled")
        elif order.status == "filled" and advanced.klass == "otoco":
            for leg in rest:
                if leg is not order and leg.status in WORKING:
                    self._end(leg, "canceled")

    def _start(self, leg: EmuOrder) -> None:
        """A held order starts working, if the account can take it now."""
        acct = self.accounts[leg.account]
        held = acct.positions.get(leg.symbol)
        have = held.quantity if held else Decimal(0)
        short_of = (leg.side == "sell" and leg.quantity > have) or (
            leg.side == "buy_to_cover" and leg.quantity > -have
        )
        leg.waiting = False
        if short_of:
            leg.reason_description = "The quantity exceeds the position it closes."
            self._end(leg, "rejected")
            return
        leg.status = "open"
        leg.transaction_date = iso_ms(self.clock())
        self._emit(leg)
        self._try_fill(leg)

    def _book(self, acct: EmuAccount, symbol: str, delta: Decimal, price: Decimal) -> None:
        acct.cash -= delta * price
        pos = acct.positions.get(symbol)
        have = pos.quantity if pos else Decimal(0)
        cost = pos.cost_basis if pos else Decimal(0)
        new = have + delta
        if have == 0 or (have > 0) == (delta > 0):
            new_cost = cost + delta * price
        else:
            closed = min(abs(delta), abs(have))
            avg = cost / have
            acct.realized += closed * (price - avg) * (1 if have > 0 else -1)
            new_cost = cost * new / have if abs(delta) <= abs(have) else new * price
        if new == 0:
            acct.positions.pop(symbol, None)
        elif pos is None or (have > 0) != (new > 0):
            self._next_position += 1
            acct.positions[symbol] = EmuPosition(
                self._next_position, symbol, new, new_cost, iso_ms(self.clock())
            )
        else:
            pos.quantity, pos.cost_basis = new, new_cost

    # -- market data --------------------------------------------------------------------------

    async def _quotes(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, {"symbols", "greeks"})
        raw = request.query.get("symbols", "")
        symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
        if not symbols:
            self.violation(request, "symbols is required")
            raise self._errors(ctx, ["Invalid parameter, symbols: required"])
        found, unmatched = [], []
        for s in symbols:
            q = self.quotes.get(s)
            if q is None:
                unmatched.append({"symbol": s})
                continue
            found.append(
                {
                    "symbol": q.symbol,
                    "description": q.description,
                    "exch": "Q",
                    "type": q.type,
                    "last": q.last,
                    "change": q.last - q.prevclose,
                    "volume": q.volume,
                    "open": q.prevclose,
                    "high": max(q.last, q.prevclose),
                    "low": min(q.last, q.prevclose),
                    "close": None,
                    "bid": q.bid,
                    "ask": q.ask,
                    "change_percentage": ((q.last - q.prevclose) / q.prevclose * 100).quantize(
                        Decimal("0.01")
                    ),
                    "average_volume": 0,
                    "last_volume": 100,
                    "trade_date": q.updated_ms,
                    "prevclose": q.prevclose,
                    "week_52_high": max(q.last, q.prevclose),
                    "week_52_low": min(q.last, q.prevclose),
                    "bidsize": q.bidsize,
                    "bidexch": "Q",
                    "bid_date": q.updated_ms,
                    "asksize": q.asksize,
                    "askexch": "Q",
                    "ask_date": q.updated_ms,
                    "root_symbols": q.symbol,
                }
            )
        body: JSON = {}
        if found:
            body["quote"] = one_or_many(found)
        if unmatched:
            body["unmatched_symbols"] = one_or_many(unmatched)
        return self._reply(ctx, {"quotes": body})

    async def _clock(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, {"delayed"})
        now = datetime.fromtimestamp(self.clock(), UTC)
        description, next_change, next_state = CLOCK_TEXT[self.market_state]
        return self._reply(
            ctx,
            {
                "clock": {
                    "date": now.date().isoformat(),
                    "description": description,
                    "state": self.market_state,
                    "timestamp": int(now.timestamp()),
                    "next_change": next_change,
                    "next_state": next_state,
                }
            },
        )

    # -- account events -----------------------------------------------------------------------

    async def _events_session(self, request: web.Request, ctx: _Ctx) -> web.Response:
        self._check_params(request, ctx, set())
        body = await request.read()
        if body.strip():
            self.violation(request, "the events session request takes no body")
        # One session at a time: a new one retires the older sessions and their streams.
        for s in self.sessions.values():
            if s.user_id == ctx.user.id and s.environment is ctx.environment:
                s.superseded = True
        for sub in self._subscribers:
            if sub.session.superseded:
                sub.queue.put_nowait(None)
        session = EventSession(secrets.token_hex(16), ctx.user.id, ctx.environment, self.clock())
        self.sessions[session.id] = session
        return self._reply(
            ctx, {"stream": {"url": self.stream_url(ctx.environment), "sessionid": session.id}}
        )

    async def _events_ws(self, request: web.Request, env: Environment) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        try:
            first = await ws.receive(timeout=30)
        except TimeoutError:
            await ws.close()
            return ws
        if first.type != aiohttp.WSMsgType.TEXT:
            await ws.close()
            return ws
        session, exclude, problem = self._subscription(request, env, first.data)
        if session is None:
            await ws.send_str(json.dumps({"error": problem}))
            await ws.close()
            return ws
        sub = _Subscriber(ws, session, exclude, asyncio.Queue())
        self._subscribers.append(sub)
        writer = asyncio.create_task(self._write_loop(sub))
        beat = asyncio.create_task(self._heartbeat_loop(sub))
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    # Later messages are checked too (recorded), though only the first counts.
                    self._subscription(request, env, msg.data)
        finally:
            writer.cancel()
            beat.cancel()
            self._subscribers.remove(sub)
        return ws

    def _subscription(
        self,
        request: web.Request,
        env: Environment,
        data: str,
    ) -> tuple[EventSession | None, frozenset[str], str]:
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self.violation(request, "the subscription must be a JSON object")
            return None, frozenset(), "invalid payload"
        for name in sorted(set(payload) - {"events", "sessionid", "excludeAccounts"}):
            self.violation(request, f"unknown subscription field {name!r}")
        events = payload.get("events")
        if not isinstance(events, list) or "order" not in events:
            self.violation(request, 'events must be a list that includes "order"')
            return None, frozenset(), "invalid events"
        exclude = payload.get("excludeAccounts", [])
        if not isinstance(exclude, list) or not all(isinstance(a, str) for a in exclude):
            self.violation(request, "excludeAccounts must be a list of account numbers")
            return None, frozenset(), "invalid excludeAccounts"
        session = self.sessions.get(str(payload.get("sessionid", "")))
        if (
            session is None
            or session.environment is not env
            or session.superseded
            or self.clock() - session.created > SESSION_TTL
        ):
            return None, frozenset(), "session is invalid or expired"
        return session, frozenset(exclude), ""

    async def _write_loop(self, sub: _Subscriber) -> None:
        while True:
            item = await sub.queue.get()
            if item is None:
                await sub.ws.close()
                return
            await sub.ws.send_str(item)

    async def _heartbeat_loop(self, sub: _Subscriber) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            sub.queue.put_nowait(self._heartbeat())

    def _heartbeat(self) -> str:
        now = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return json.dumps({"event": "heartbeat", "status": "active", "timestamp": now})

    def _emit(self, order: EmuOrder) -> None:
        """One documented order event to every live stream of the account's owner."""
        acct = self.accounts[order.account]
        event = json.dumps(
            _jsonable(
                {
                    "id": order.id,
                    "event": "order",
                    "status": order.status,
                    "type": order.type,
                    "price": order.price or Decimal(0),
                    "stop_price": order.stop or Decimal(0),
                    "avg_fill_price": order.avg_fill_price,
                    "exec_quantity": order.exec_quantity,
                    "last_fill_quantity": order.last_fill_quantity,
                    "remaining_quantity": order.remaining
                    if order.status in WORKING
                    else Decimal(0),
                    "transaction_date": order.transaction_date,
                    "create_date": order.create_date,
                    "account": order.account,
                }
            )
        )
        for sub in self._subscribers:
            s = sub.session
            if (
                s.user_id == acct.user_id
                and s.environment is order.environment
                and order.account not in sub.exclude
            ):
                sub.queue.put_nowait(event)


class EmulatorTokenProvider:
    """A ``TokenProvider`` for tests, benchmarks and contract harnesses: holds one Tradier grant
    and refreshes it at the emulator's ``/oauth/refreshtoken`` (Basic client auth, form body),
    as the connections service does against the real Tradier."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        refresh_url: str,
        client_id: str,
        client_secret: str,
        access_token: str,
        refresh_token: str | None,
    ) -> None:
        self._session = session
        self._url = refresh_url
        pair = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._auth = {"Authorization": f"Basic {pair}"}
        self._access = access_token
        self._refresh = refresh_token
        self._lock = asyncio.Lock()
        self.refreshes = 0

    async def access_token(self) -> str:
        return self._access

    async def refused(self, token: str, reason: str) -> None:
        return None  # nothing stored to mark: the test sees the error

    async def refresh(self, rejected_token: str) -> str:
        async with self._lock:
            if rejected_token != self._access:
                return self._access  # another caller already refreshed
            if self._refresh is None:
                raise AuthorizationExpired()
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh}
            async with self._session.post(self._url, data=form, headers=self._auth) as r:
                if r.status != 200:
                    raise AuthorizationExpired()
                body = await r.json()
            self.refreshes += 1
            self._access = body["access_token"]
            self._refresh = body.get("refresh_token", self._refresh)
            return self._access
