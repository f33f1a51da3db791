"""The TradeStation emulator: Auth0 sign-in, the LIVE API and the SIM API on one port.

Hosts become path prefixes: ``/signin`` is signin.tradestation.com, ``/live`` is
api.tradestation.com and ``/sim`` is sim-api.tradestation.com. The same access token works on
both API hosts, as at the vendor. Every API request is checked against the vendored v3 OpenAPI
file (defects fixed in memory); a request that does not conform gets the vendor's 400 and is
recorded in ``spec_violations`` so tests fail.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from adapters.models import Environment
from emulators.common import (
    BaseEmulator,
    Handler,
    OAuthClient,
    OAuthCore,
    OAuthError,
    OAuthPolicy,
    basic_auth,
    bearer,
    consent_page,
)

from . import spec
from .world import (
    DEFAULT_EQUITY_QUOTES,
    REASON_ACCOUNT_TYPE,
    AccountState,
    BadRequest,
    OrderRejected,
    OrderState,
    World,
    et_date,
    iso,
)

AUDIENCE = "https://api.tradestation.com"
ISSUER = "https://signin.tradestation.com/"
STREAM_CONTENT_TYPE = "application/vnd.tradestation.streams.v3+json"
KNOWN_SCOPES = frozenset(
    {
        "openid",
        "profile",
        "email",
        "offline_access",
        "MarketData",
        "ReadAccount",
        "Trade",
        "OptionSpreads",
        "Matrix",
    }
)
ACCESS_TTL = 1200.0  # 20 minutes
ROTATION_IDLE_TTL = 1800.0  # rotation mode: each refresh token lives 30 minutes ...
ROTATION_ABSOLUTE_TTL = 86400.0  # ... and the grant 24 hours
# Published quotas: per user per API key, window starting at the first request.
DEFAULT_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "accounts": (250, 300.0),
    "balances": (250, 300.0),
    "positions": (250, 300.0),
    "orders": (250, 300.0),
    "quotes": (30, 60.0),
}
MAX_ORDER_STREAMS = 40  # concurrent order streams per user
HISTORY_DAYS = 90
MAX_PAGE = 600
# The vendor's default allowed callbacks are localhost URLs; the default client mirrors that.
_LOCALHOST = re.compile(r"^http://(localhost|127\.0\.0\.1)(:\d+)?(/.*)?$")

DEFAULT_CLIENT_ID = "tradecord-local"
DEFAULT_CLIENT_SECRET = "tradecord-local-secret"

USER = web.RequestKey("ts_user", str)
CLIENT = web.RequestKey("ts_client", str)
LIVE = web.RequestKey("ts_live", bool)

_GO_AWAY = object()
_DROP = object()


@dataclass(slots=True)
class SpecViolation:
    method: str
    path: str
    errors: list[str]


@dataclass
class _Window:
    started: float
    count: int = 0


@dataclass(eq=False)  # identity: kept in a set
class _Stream:
    user_id: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


def _error(status: int, error: str, message: str, **extra: str) -> web.Response:
    return web.json_response({"Error": error, "Message": message, **extra}, status=status)


def _bucket(method: str, path: str) -> str | None:
    """Which published quota a request counts against (``path`` without the host prefix)."""
    if method != "GET":
        return None
    if path == "/v3/brokerage/accounts":
        return "accounts"
    if re.fullmatch(r"/v3/brokerage/accounts/[^/]+/(bod)?balances", path):
        return "balances"
    if re.fullmatch(r"/v3/brokerage/accounts/[^/]+/positions", path):
        return "positions"
    if re.fullmatch(r"/v3/brokerage/accounts/[^/]+/(historical)?orders(/[^/]+)?", path):
        return "orders"
    if path.startswith("/v3/marketdata/quotes/"):
        return "quotes"
    return None


def _scope_for(path: str) -> str | None:
    if path.startswith("/v3/brokerage/"):
        return "ReadAccount"
    if path.startswith("/v3/orderexecution/"):
        return "Trade"
    if path.startswith("/v3/marketdata/"):
        return "MarketData"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TradeStationEmulator(BaseEmulator):
    """TradeStation Web API v3 with Auth0 OAuth.

    ``rotation``: refresh tokens rotate (30 min idle, 24 h absolute) instead of living
    indefinitely. ``pkce_enabled``: the key accepts PKCE (the vendor enables it on request);
    otherwise an authorize request carrying ``code_challenge`` is refused.
    ``validate_requests``: check every API request against the OpenAPI file (default: when
    openapi-core is installed); ``validate_responses`` checks answers too (needs the former).
    """

    name = "tradestation"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rotation: bool = False,
        pkce_enabled: bool = False,
        seed: bool = True,
        clock: Callable[[], float] = time.time,
        heartbeat_interval: float = 5.0,
        validate_requests: bool | None = None,
        validate_responses: bool = False,
        rate_limits: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        self.clock = clock
        # None: validate when openapi-core (a test extra) is installed, as in tests; local mode
        # may run without it.
        if validate_requests is None:
            validate_requests = spec.available()
        elif validate_requests and not spec.available():
            raise RuntimeError("validate_requests needs openapi-core (pip install -e .[test])")
        self.validate_requests = validate_requests
        self.world = World(clock)
        self.rotation = rotation
        self.pkce_enabled = pkce_enabled
        self.oauth = OAuthCore(self._policy(), clock)
        self.heartbeat_interval = heartbeat_interval
        self.validate_responses = validate_responses
        self.rate_limits = dict(DEFAULT_RATE_LIMITS if rate_limits is None else rate_limits)
        self.spec_violations: list[SpecViolation] = []
        self.response_violations: list[SpecViolation] = []
        self.revocations = 0
        # Seconds a cancel stays "Cancel Sent" (UCN) before it lands (0: at once).
        self.cancel_delay = 0.0
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._streams: set[_Stream] = set()
        self._localhost_clients: set[str] = set()
        super().__init__(host=host, port=port)
        self.register_client(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, [], allow_localhost=True)
        if seed:
            self.seed_defaults()

    def _policy(self) -> OAuthPolicy:
        if self.rotation:
            return OAuthPolicy(
                access_ttl=ACCESS_TTL,
                rotate_refresh=True,
                refresh_ttl=ROTATION_IDLE_TTL,
                refresh_absolute_ttl=ROTATION_ABSOLUTE_TTL,
                pkce=self.pkce_enabled,
            )
        # Without rotation there is no rotated-out token whose reuse would signal theft.
        return OAuthPolicy(
            access_ttl=ACCESS_TTL,
            rotate_refresh=False,
            refresh_ttl=None,
            refresh_absolute_ttl=None,
            pkce=self.pkce_enabled,
            reuse_detection=False,
        )

    # -- addresses -----------------------------------------------------------------------

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/signin/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/signin/oauth/token"

    @property
    def revoke_url(self) -> str:
        return f"{self.base_url}/signin/oauth/revoke"

    def api_url(self, environment: Environment | str) -> str:
        """Base URL standing in for https://api.tradestation.com (live) or
        https://sim-api.tradestation.com (paper, also spelled "sim"); paths start with ``/v3``."""
        live = environment in (Environment.LIVE, "live")
        if not live and environment not in (Environment.PAPER, "paper", "sim"):
            raise ValueError(f"unknown TradeStation environment {environment!r}")
        return f"{self.base_url}/{'live' if live else 'sim'}"

    @property
    def api_urls(self) -> dict[Environment, str]:
        return {e: self.api_url(e) for e in Environment}

    # -- world control -------------------------------------------------------------------

    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: list[str],
        *,
        allow_localhost: bool = False,
    ) -> None:
        """An API key. ``allow_localhost`` accepts any http://localhost callback, like the
        vendor's default allow-list; otherwise ``redirect_uris`` must match exactly."""
        self.oauth.register_client(client_id, client_secret, redirect_uris)
        if allow_localhost:
            self._localhost_clients.add(client_id)

    def seed_defaults(self) -> None:
        """A newcomer signs in as ``demo`` and finds funded LIVE and SIM accounts of every
        kind; ``alice`` is a second login with one account per environment."""
        w = self.world
        for sym, px in DEFAULT_EQUITY_QUOTES.items():
            w.set_quote(sym, px - Decimal("0.02"), px + Decimal("0.02"), px)
        w.add_user("demo", "Demo Trader")
        w.add_account("demo", "11827341", "Cash", cash=25_000)
        w.add_account("demo", "11827342", "Margin", cash=50_000)
        w.add_account("demo", "11827343", "Futures", cash=100_000)
        w.add_account("demo", "11827344C", "Crypto", cash=5_000)
        w.add_account("demo", "SIM1182734M", "Margin", live=False, cash=100_000)
        w.add_account("demo", "SIM1182734F", "Futures", live=False, cash=100_000)
        w.set_position("11827342", "AAPL", 10, "200.00")
        w.add_user("alice", "Alice Example")
        w.add_account("alice", "11900001", "Margin", cash=30_000)
        w.add_account("alice", "SIM1190000M", "Margin", live=False, cash=100_000)

    def add_user(self, user_id: str, name: str | None = None) -> None:
        self.world.add_user(user_id, name)

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
        return self.world.add_account(
            user_id, account_id, account_type, live=live, cash=cash, alias=alias
        )

    def set_position(
        self,
        account_id: str,
        symbol: str,
        quantity: Decimal | int | str,
        average_price: Decimal | int | str,
    ) -> None:
        self.world.set_position(account_id, symbol, quantity, average_price)

    def set_quote(
        self,
        symbol: str,
        bid: Decimal | int | str,
        ask: Decimal | int | str,
        last: Decimal | int | str | None = None,
    ) -> None:
        """Move a quote; resting limit and stop orders are re-checked against it."""
        self.world.set_quote(symbol, bid, ask, last)

    def fill(
        self, order_id: str, quantity: Decimal | int | str, price: Decimal | int | str
    ) -> OrderState:
        return self.world.fill(order_id, quantity, price)

    def reject(self, order_id: str, reason: str) -> OrderState:
        return self.world.reject(order_id, reason)

    def expire_day_orders(self, *, regular_close: bool = False) -> list[OrderState]:
        return self.world.expire_day_orders(regular_close=regular_close)

    def run_opening_auction(self) -> list[OrderState]:
        """The opening auction now, whatever the session: every working OPG order fills in
        full at its symbol's last price (``set_quote`` first) if it is a market order or its
        limit reaches that price, else ends unfilled as "UROut" (``OUT``). Returns the orders
        it ended. ``set_session("regular")`` runs it on its own (unless ``auto_fill`` is off)."""
        return self.world.run_opening_auction()

    def run_closing_auction(self) -> list[OrderState]:
        """The closing auction now, for CLO orders, as ``run_opening_auction`` for OPG ones.
        Leaving regular hours (``set_session``, ``market_open = False``) runs it on its own."""
        return self.world.run_closing_auction()

    @property
    def market_open(self) -> bool:
        """Regular hours; setting False moves the market to ``closed`` (the night), True to
        regular hours, running the closing or opening auction as ``set_session`` does."""
        return self.world.market_open

    @market_open.setter
    def market_open(self, value: bool) -> None:
        self.world.market_open = value

    @property
    def session(self) -> str:
        return self.world.session

    def set_session(self, session: str) -> None:
        """``pre``, ``regular``, ``post`` or ``closed``: DYP/GCP stock orders also fill in the
        pre- and post-market, other stock orders wait for regular hours.

        Auction orders: moving into ``regular`` from another session first runs the opening
        auction (working OPG orders fill at the symbol's last price or end "UROut"), moving
        out of it runs the closing auction (CLO orders) before the session ends; see
        ``run_opening_auction``. With ``auto_fill`` off neither runs. OPG orders are taken in
        ``pre`` and ``closed`` (refused in ``regular`` and ``post``: the day's opening has
        passed), CLO orders in every session but ``post``."""
        self.world.set_session(session)

    @property
    def auto_fill(self) -> bool:
        return self.world.auto_fill

    @auto_fill.setter
    def auto_fill(self, value: bool) -> None:
        self.world.auto_fill = value

    def order(self, order_id: str) -> OrderState:
        return self.world.orders[order_id]

    def orders_for(self, account_id: str) -> list[OrderState]:
        return self.world.account_orders(account_id)

    def order_by_confirm_id(self, confirm_id: str) -> OrderState | None:
        """Test helper: the vendor keeps OrderConfirmID for de-duplication but never returns
        it in order payloads."""
        for o in self.world.orders.values():
            if o.confirm_id == confirm_id:
                return o
        return None

    def expire_access_tokens(self) -> None:
        self.oauth.expire_access_tokens()

    def go_away(self) -> None:
        """Every open order stream gets ``{"StreamStatus": "GoAway"}`` and ends."""
        for stream in list(self._streams):
            stream.queue.put_nowait(_GO_AWAY)

    def drop_streams(self) -> None:
        """Every open order stream is cut without a goodbye (a network failure)."""
        for stream in list(self._streams):
            stream.queue.put_nowait(_DROP)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def stop(self) -> None:
        # The vendor says GoAway before shutting a server down; it also lets handlers end.
        self.go_away()
        for _ in range(50):
            if not self._streams:
                break
            await asyncio.sleep(0.01)
        await super().stop()

    # -- routes --------------------------------------------------------------------------

    def setup_routes(self, app: web.Application) -> None:
        app.middlewares.append(self._api_gate)
        r = app.router
        r.add_get("/signin/authorize", self.authorize)
        r.add_post("/signin/u/consent", self.consent)
        r.add_post("/signin/oauth/token", self.token)
        r.add_post("/signin/oauth/revoke", self.revoke)
        h = "/{host:live|sim}/v3"
        r.add_get(f"{h}/brokerage/accounts", self.get_accounts)
        r.add_get(f"{h}/brokerage/accounts/{{accounts}}/balances", self.get_balances)
        r.add_get(f"{h}/brokerage/accounts/{{accounts}}/bodbalances", self.get_bod_balances)
        r.add_get(f"{h}/brokerage/accounts/{{accounts}}/positions", self.get_positions)
        r.add_get(f"{h}/brokerage/accounts/{{accounts}}/orders", self.get_orders)
        r.add_get(f"{h}/brokerage/accounts/{{accounts}}/orders/{{ids}}", self.get_orders_by_id)
        r.add_get(f"{h}/brokerage/accounts/{{accounts}}/historicalorders", self.get_history)
        r.add_get(
            f"{h}/brokerage/accounts/{{accounts}}/historicalorders/{{ids}}", self.get_history_by_id
        )
        r.add_get(f"{h}/brokerage/stream/accounts/{{accounts}}/orders", self.stream_orders)
        r.add_post(f"{h}/orderexecution/orders", self.place_order)
        r.add_put(f"{h}/orderexecution/orders/{{order_id}}", self.replace_order)
        r.add_delete(f"{h}/orderexecution/orders/{{order_id}}", self.cancel_order)
        r.add_post(f"{h}/orderexecution/ordergroups", self.place_group)
        r.add_get(f"{h}/marketdata/quotes/{{symbols}}", self.get_quotes)

    # -- the API gate: auth, rate limits, spec validation --------------------------------

    @web.middleware
    async def _api_gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        m = re.match(r"^/(live|sim)(/.*)$", request.path)
        if m is None:
            return await handler(request)
        path = m.group(2)
        record = self.oauth.check_access(bearer(request))
        if record is None:
            return _error(401, "Unauthorized", "Unauthorized")
        spec_request: spec.SpecRequest | None = None
        if self.validate_requests:
            body = await request.read()  # cached by the recording middleware
            spec_request = spec.SpecRequest(
                request.method,
                path,
                {k: request.query.getall(k) for k in request.query},
                dict(request.headers),
                body or None,
                request.content_type if body else "application/json",
            )
            problems = spec.request_errors(spec_request)
            if problems:
                self.spec_violations.append(SpecViolation(request.method, request.path, problems))
                if any(p.startswith("PathNotFound") for p in problems):
                    return _error(404, "NotFound", "Resource not found.")
                return _error(400, "BadRequest", problems[0])
        scope = _scope_for(path)
        if scope is not None and scope not in record.scope.split():
            return _error(403, "Forbidden", f"The access token lacks the {scope} scope.")
        bucket = _bucket(request.method, path)
        if bucket is not None and bucket in self.rate_limits:
            limited = self._rate_limited((record.user_id, record.client_id, bucket))
            if limited is not None:
                return limited
        request[USER] = record.user_id
        request[CLIENT] = record.client_id
        request[LIVE] = m.group(1) == "live"
        response = await handler(request)
        if (
            self.validate_responses
            and spec_request is not None
            and isinstance(response, web.Response)
            and response.content_type == "application/json"
        ):
            assert isinstance(response.body, bytes)
            problems = spec.response_errors(
                spec_request,
                spec.SpecResponse(
                    response.status, response.body, response.content_type, dict(response.headers)
                ),
            )
            if problems:
                self.response_violations.append(
                    SpecViolation(request.method, request.path, problems)
                )
        return response

    def _rate_limited(self, key: tuple[str, str, str]) -> web.Response | None:
        limit, seconds = self.rate_limits[key[2]]
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window.started >= seconds:
            window = self._windows[key] = _Window(now)
        window.count += 1
        if window.count <= limit:
            return None
        retry = max(1, math.ceil(window.started + seconds - now))
        resp = _error(429, "TooManyRequests", "Rate limit exceeded. Try again later.")
        resp.headers["Retry-After"] = str(retry)
        return resp

    def reset_rate_limits(self) -> None:
        self._windows.clear()

    # -- accounts, balances, positions ---------------------------------------------------

    def _accounts(
        self,
        request: web.Request,
        *,
        brokerage_only: bool,
    ) -> tuple[list[AccountState], list[dict[str, str]]]:
        found: list[AccountState] = []
        errors: list[dict[str, str]] = []
        for account_id in request.match_info["accounts"].split(","):
            acct = self.world.accounts.get(account_id)
            if acct is None or acct.user_id != request[USER] or acct.live != request[LIVE]:
                errors.append(
                    {
                        "AccountID": account_id,
                        "Error": "Forbidden",
                        "Message": "Invalid Account ID.",
                    }
                )
            elif brokerage_only and not acct.brokerage:
                errors.append(
                    {"AccountID": account_id, "Error": "Forbidden", "Message": REASON_ACCOUNT_TYPE}
                )
            else:
                found.append(acct)
        return found, errors

    async def get_accounts(self, request: web.Request) -> web.Response:
        accounts = self.world.user_accounts(request[USER], request[LIVE])
        return web.json_response({"Accounts": [a.payload() for a in accounts]})

    async def get_balances(self, request: web.Request) -> web.Response:
        accounts, errors = self._accounts(request, brokerage_only=True)
        return web.json_response(
            {
                "Balances": [self.world.balance_payload(a) for a in accounts],
                "Errors": errors,
            }
        )

    async def get_bod_balances(self, request: web.Request) -> web.Response:
        accounts, errors = self._accounts(request, brokerage_only=True)
        return web.json_response(
            {
                "BODBalances": [self.world.bod_balance_payload(a) for a in accounts],
                "Errors": errors,
            }
        )

    async def get_positions(self, request: web.Request) -> web.Response:
        accounts, errors = self._accounts(request, brokerage_only=True)
        raw = request.query.get("symbol", "")
        wanted = [s.strip().upper() for s in raw.split(",") if s.strip()]

        def keep(symbol: str) -> bool:
            if not wanted:
                return True
            return any(
                symbol == w or (w.endswith("*") and symbol.startswith(w[:-1].strip()))
                for w in wanted
            )

        positions = [
            self.world.position_payload(a, p)
            for a in accounts
            for p in a.positions.values()
            if keep(p.symbol)
        ]
        return web.json_response({"Positions": positions, "Errors": errors})

    # -- orders --------------------------------------------------------------------------

    def _page(self, request: web.Request, orders: list[OrderState]) -> dict[str, Any]:
        """The vendor's pagination: ``pageSize`` up to 600, an opaque ``nextToken`` valid
        for one hour."""
        start = 0
        token = request.query.get("nextToken")
        if token:
            try:
                data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                start, expires = int(data["o"]), float(data["e"])
            except (ValueError, KeyError, TypeError):
                raise web.HTTPBadRequest(
                    text=json.dumps({"Error": "BadRequest", "Message": "Invalid nextToken."}),
                    content_type="application/json",
                ) from None
            if self.clock() > expires:
                raise web.HTTPBadRequest(
                    text=json.dumps({"Error": "BadRequest", "Message": "nextToken has expired."}),
                    content_type="application/json",
                )
        size = int(request.query.get("pageSize", MAX_PAGE))
        chunk = orders[start : start + size]
        out: dict[str, Any] = {"Orders": [o.payload() for o in chunk]}
        if "pageSize" in request.query and start + size < len(orders):
            token_data = json.dumps({"o": start + size, "e": self.clock() + 3600}).encode()
            out["NextToken"] = _b64(token_data)
        return out

    async def get_orders(self, request: web.Request) -> web.Response:
        accounts, errors = self._accounts(request, brokerage_only=False)
        orders = sorted(
            (o for a in accounts for o in self.world.todays_orders(a.id)),
            key=lambda o: o.closed or o.opened,
            reverse=True,
        )
        return web.json_response({**self._page(request, orders), "Errors": errors})

    async def get_orders_by_id(self, request: web.Request) -> web.Response:
        accounts, errors = self._accounts(request, brokerage_only=False)
        pool = {o.id: o for a in accounts for o in self.world.todays_orders(a.id)}
        return web.json_response(self._by_id(request, pool, errors))

    def _by_id(
        self, request: web.Request, pool: dict[str, OrderState], errors: list[dict[str, str]]
    ) -> dict[str, Any]:
        found, missing = [], list(errors)
        for order_id in request.match_info["ids"].split(","):
            if order_id in pool:
                found.append(pool[order_id].payload())
            else:
                missing.append(
                    {
                        "AccountID": request.match_info["accounts"],
                        "OrderID": order_id,
                        "Error": "NotFound",
                        "Message": "Order not found.",
                    }
                )
        return {"Orders": found, "Errors": missing}

    def _since(self, request: web.Request) -> date:
        raw = request.query.get("since", "")
        try:
            since = date.fromisoformat(raw)
        except ValueError:
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {
                        "Error": "BadRequest",
                        "Message": f"Invalid since date {raw!r}; use YYYY-MM-DD.",
                    }
                ),
                content_type="application/json",
            ) from None
        if since < et_date(self.clock()) - timedelta(days=HISTORY_DAYS):
            raise web.HTTPBadRequest(
                text=json.dumps(
                    {"Error": "BadRequest", "Message": "since must be within the last 90 days."}
                ),
                content_type="application/json",
            )
        return since

    async def get_history(self, request: web.Request) -> web.Response:
        since = self._since(request)
        accounts, errors = self._accounts(request, brokerage_only=False)
        orders = sorted(
            (o for a in accounts for o in self.world.historical_orders(a.id, since)),
            key=lambda o: o.closed or 0,
            reverse=True,
        )
        return web.json_response({**self._page(request, orders), "Errors": errors})

    async def get_history_by_id(self, request: web.Request) -> web.Response:
        since = self._since(request)
        accounts, errors = self._accounts(request, brokerage_only=False)
        pool = {o.id: o for a in accounts for o in self.world.historical_orders(a.id, since)}
        return web.json_response(self._by_id(request, pool, errors))

    async def place_order(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            order = self.world.place(request[USER], request[CLIENT], body, live=request[LIVE])
        except OrderRejected as e:
            return web.json_response({"Errors": [_failed(e)]})
        except BadRequest as e:
            return _error(400, "BadRequest", str(e))
        sent = [order, *(self.world.orders[c] for c in order.children)]
        return web.json_response(
            {"Orders": [{"OrderID": o.id, "Message": f"Sent order: {o.summary()}"} for o in sent]}
        )

    async def place_group(self, request: web.Request) -> web.Response:
        body = await request.json()
        kind = str(body.get("Type", "")).upper()
        if kind not in ("OCO", "BRK", "NORMAL"):
            return _error(400, "BadRequest", "Type must be OCO, BRK or NORMAL.")
        try:
            placed, errors = self.world.place_group(
                request[USER],
                request[CLIENT],
                kind,
                list(body.get("Orders") or []),
                live=request[LIVE],
            )
        except BadRequest as e:
            return _error(400, "BadRequest", str(e))
        out: dict[str, Any] = {
            "Orders": [{"OrderID": o.id, "Message": f"Sent order: {o.summary()}"} for o in placed]
        }
        if errors:
            out["Errors"] = [_failed(e) for e in errors]
        return web.json_response(out)

    def _own_order(self, request: web.Request) -> OrderState | None:
        """The order in the path, if it is the caller's and on this host."""
        order = self.world.orders.get(request.match_info["order_id"])
        if (
            order is None
            or order.account.user_id != request[USER]
            or order.account.live != request[LIVE]
        ):
            return None
        return order

    async def replace_order(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        if self._own_order(request) is None:
            return _error(404, "NotFound", f"Order {order_id} was not found.")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise BadRequest("The body must be a JSON object.")
            self.world.replace_order(order_id, body)
        except ValueError:
            return _error(400, "BadRequest", "The body is not valid JSON.")
        except BadRequest as e:
            return _error(400, "BadRequest", str(e))
        except OrderRejected as e:
            # An OrderResponse with Error, the business-rejection envelope of order placement.
            return web.json_response({**_failed(e), "OrderID": order_id})
        return web.json_response({"OrderID": order_id, "Message": "Cancel/Replace order sent."})

    async def cancel_order(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        if self._own_order(request) is None:
            return _error(404, "NotFound", f"Order {order_id} was not found.")
        try:
            order = self.world.cancel(order_id, pending=self.cancel_delay > 0)
        except BadRequest as e:
            return _error(400, "BadRequest", str(e))
        if self.cancel_delay > 0:
            asyncio.get_running_loop().call_later(
                self.cancel_delay, self.world.finish_cancel, order
            )
        return web.json_response({"OrderID": order_id, "Message": "Cancel request sent"})

    # -- market data ---------------------------------------------------------------------

    async def get_quotes(self, request: web.Request) -> web.Response:
        quotes, errors = [], []
        for sym in request.match_info["symbols"].split(","):
            q = self.world.quote(sym.strip())
            if q is None:
                errors.append({"Symbol": sym, "Error": "FAILED, INVALID SYMBOL"})
            else:
                quotes.append(q.payload())
        return web.json_response({"Quotes": quotes, "Errors": errors})

    # -- the order stream ----------------------------------------------------------------

    async def stream_orders(self, request: web.Request) -> web.StreamResponse:
        user = request[USER]
        if sum(1 for s in self._streams if s.user_id == user) >= MAX_ORDER_STREAMS:
            return _error(429, "TooManyRequests", "Too many concurrent order streams.")
        accounts, errors = self._accounts(request, brokerage_only=False)
        ids = {a.id for a in accounts}
        stream = _Stream(user)

        def listener(order: OrderState) -> None:
            if order.account.id in ids:
                stream.queue.put_nowait(order.payload())

        resp = web.StreamResponse(status=200, headers={"Content-Type": STREAM_CONTENT_TYPE})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        self.world.listeners.append(listener)
        self._streams.add(stream)
        try:
            for err in errors:
                await _write(resp, err)
            for account_id in sorted(ids):
                for order in reversed(self.world.todays_orders(account_id)):
                    await _write(resp, order.payload())
            await _write(resp, {"StreamStatus": "EndSnapshot"})
            beat = 0
            while True:
                try:
                    item = await asyncio.wait_for(stream.queue.get(), self.heartbeat_interval)
                except TimeoutError:
                    beat += 1
                    await _write(resp, {"Heartbeat": beat, "Timestamp": iso(self.clock())})
                    continue
                if item is _GO_AWAY:
                    await _write(resp, {"StreamStatus": "GoAway"})
                    break
                if item is _DROP:
                    if request.transport is not None:
                        request.transport.close()
                    raise asyncio.CancelledError
                await _write(resp, item)
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                self.world.listeners.remove(listener)
            self._streams.discard(stream)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # -- Auth0 ---------------------------------------------------------------------------

    def _redirect_allowed(self, client: OAuthClient, uri: str) -> bool:
        if uri in client.redirect_uris:
            return True
        return client.client_id in self._localhost_clients and bool(_LOCALHOST.match(uri))

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            client = self.oauth.client(q.get("client_id"))
        except OAuthError:
            return _auth0_page(400, "invalid_request: Unknown client.")
        redirect_uri = q.get("redirect_uri", "")
        if not self._redirect_allowed(client, redirect_uri):
            return _auth0_page(
                400,
                "Callback URL mismatch. The provided redirect_uri is not in "
                "the list of allowed callback URLs.",
            )
        problem = self._authorize_problem(q)
        if problem is not None:
            return _redirect(redirect_uri, {**problem, "state": q.get("state", "")})
        users = [(u.id, f"{u.name} ({u.id})") for u in self.world.users.values()]
        hidden = {
            k: q[k]
            for k in (
                "client_id",
                "redirect_uri",
                "state",
                "scope",
                "code_challenge",
                "code_challenge_method",
            )
            if k in q
        }
        return consent_page(
            broker="TradeStation",
            app_name=client.client_id,
            scopes=q.get("scope", "").split(),
            users=users,
            hidden=hidden,
            action="/signin/u/consent",
        )

    def _authorize_problem(self, q: Any) -> dict[str, str] | None:
        if q.get("response_type") != "code":
            return {
                "error": "unsupported_response_type",
                "error_description": "Unsupported response type",
            }
        audience = q.get("audience")
        if not audience:
            return {
                "error": "invalid_request",
                "error_description": "Missing required parameter: audience",
            }
        if audience != AUDIENCE:
            return {"error": "access_denied", "error_description": f"Service not found: {audience}"}
        scopes = q.get("scope", "").split()
        unknown = [s for s in scopes if s not in KNOWN_SCOPES]
        if unknown:
            return {
                "error": "invalid_scope",
                "error_description": f"Unknown scope: {' '.join(unknown)}",
            }
        if "openid" not in scopes:
            return {"error": "invalid_scope", "error_description": "The openid scope is required"}
        if "code_challenge" in q:
            if not self.pkce_enabled:
                return {
                    "error": "invalid_request",
                    "error_description": "PKCE is not enabled for this client",
                }
            if q.get("code_challenge_method") != "S256":
                return {
                    "error": "invalid_request",
                    "error_description": "code_challenge_method must be S256",
                }
        return None

    async def consent(self, request: web.Request) -> web.Response:
        form = await request.post()
        q = {k: str(v) for k, v in form.items()}
        try:
            client = self.oauth.client(q.get("client_id"))
        except OAuthError:
            return _auth0_page(400, "invalid_request: Unknown client.")
        redirect_uri = q.get("redirect_uri", "")
        if not self._redirect_allowed(client, redirect_uri):
            return _auth0_page(400, "Callback URL mismatch.")
        state = q.get("state", "")
        if q.get("decision") != "approve":
            return _redirect(
                redirect_uri,
                {
                    "error": "access_denied",
                    "error_description": "User did not authorize the request",
                    "state": state,
                },
            )
        user_id = q.get("user_id", "")
        if user_id not in self.world.users:
            return _auth0_page(400, "Unknown user.")
        problem = self._authorize_problem({**q, "response_type": "code", "audience": AUDIENCE})
        if problem is not None:
            return _redirect(redirect_uri, {**problem, "state": state})
        code = self.oauth.issue_code(
            client.client_id, redirect_uri, user_id, q.get("scope", ""), q.get("code_challenge")
        )
        return _redirect(redirect_uri, {"code": code, "state": state})

    async def _form(self, request: web.Request) -> dict[str, str]:
        # Auth0 also takes JSON bodies; the vendor documents form encoding.
        if request.content_type == "application/json":
            data = await request.json()
            return {k: str(v) for k, v in data.items()}
        form = await request.post()
        return {k: str(v) for k, v in form.items()}

    def _client_auth(self, request: web.Request, form: dict[str, str]) -> OAuthClient:
        """client_secret_post: the vendor's keys take the secret in the body."""
        if basic_auth(request)[0] is not None:
            raise OAuthError("access_denied", "Unauthorized", 401)
        try:
            return self.oauth.authenticate(form.get("client_id"), form.get("client_secret"))
        except OAuthError:
            raise OAuthError("access_denied", "Unauthorized", 401) from None

    async def token(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        try:
            client = self._client_auth(request, form)
            grant = form.get("grant_type")
            if grant == "authorization_code":
                out = self.oauth.exchange_code(
                    client, form.get("code"), form.get("redirect_uri"), form.get("code_verifier")
                )
                if "offline_access" not in out["scope"].split():
                    # Refresh tokens only come with offline_access.
                    self.oauth.tokens.pop(out.pop("refresh_token"), None)
            elif grant == "refresh_token":
                if not form.get("refresh_token"):
                    raise OAuthError("invalid_request", "Missing required parameter: refresh_token")
                out = self.oauth.refresh(client, form.get("refresh_token"))
            else:
                raise OAuthError("unsupported_grant_type", f"Unsupported grant type: {grant}", 403)
        except OAuthError as e:
            # Auth0 answers invalid_grant with 403.
            status = 403 if e.error == "invalid_grant" else e.status
            return web.json_response(
                {"error": e.error, "error_description": e.description},
                status=status,
                headers={"Cache-Control": "no-store"},
            )
        record = self.oauth.tokens[out["access_token"]]
        out["id_token"] = self._id_token(client, record.user_id)
        out["token_type"] = "Bearer"
        return web.json_response(out, headers={"Cache-Control": "no-store"})

    def _id_token(self, client: OAuthClient, user_id: str) -> str:
        now = int(self.clock())
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(
            json.dumps(
                {
                    "iss": ISSUER,
                    "sub": f"auth0|{user_id}",
                    "aud": client.client_id,
                    "iat": now,
                    "exp": now + 36000,
                    "name": self.world.users[user_id].name,
                }
            ).encode()
        )
        signing_input = f"{header}.{payload}".encode()
        sig = hmac.new(client.client_secret.encode(), signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(sig)}"

    async def revoke(self, request: web.Request) -> web.Response:
        """Revoking one refresh token revokes ALL refresh tokens of that user for the API key.
        Access tokens already issued stay valid until they expire, as with Auth0 JWTs."""
        form = await self._form(request)
        try:
            client = self._client_auth(request, form)
        except OAuthError as e:
            return web.json_response(
                {"error": e.error, "error_description": e.description}, status=e.status
            )
        self.revocations += 1
        rec = self.oauth.tokens.get(form.get("token", ""))
        if rec is not None and rec.client_id == client.client_id and rec.kind == "refresh":
            for other in self.oauth.tokens.values():
                if (
                    other.kind == "refresh"
                    and other.client_id == client.client_id
                    and other.user_id == rec.user_id
                ):
                    other.revoked = True
        return web.Response(status=200)


def _failed(e: OrderRejected) -> dict[str, str]:
    entry = {"Error": "FAILED", "Message": f"Order failed. Reason: {e.reason}"}
    if e.order_id is not None:
        entry["OrderID"] = e.order_id
    return entry


async def _write(resp: web.StreamResponse, obj: dict[str, Any]) -> None:
    await resp.write((json.dumps(obj) + "\n").encode())


def _redirect(uri: str, params: dict[str, str]) -> web.Response:
    sep = "&" if urlsplit(uri).query else "?"
    return web.Response(
        status=302,
        headers={"Location": f"{uri}{sep}{urlencode(params)}", "Cache-Control": "no-store"},
    )


def _auth0_page(status: int, message: str) -> web.Response:
    text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Error</title></head>"
        f"<body><h1>Oops!, something went wrong</h1><p>{html.escape(message)}</p>"
        "</body></html>"
    )
    return web.Response(
        status=status, text=text, content_type="text/html", headers={"Cache-Control": "no-store"}
    )
