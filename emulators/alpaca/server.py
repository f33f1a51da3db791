"""Alpaca on one local port: every host under its own path prefix.

- ``/app``   = app.alpaca.markets (OAuth authorize + consent page)
- ``/live``  = api.alpaca.markets (live Trading API, ``/oauth/token``, ``/stream``)
- ``/paper`` = paper-api.alpaca.markets (paper Trading API, ``/stream`` in binary frames)
- ``/data``  = data.alpaca.markets (market data: snapshots, latest quotes)

The host selects the environment, as at Alpaca: one token may reach the live account, the
paper account, or both, depending on what the user authorized (``env`` on the authorize URL).
Every Trading API and OAuth request is validated against Alpaca's OpenAPI files (defects fixed
in memory, see ``spec.py``); a non-conforming one is answered 400 and recorded in
``spec_violations`` so tests fail. Validation needs openapi-core (a test extra) and is on by
default where it is installed; ``validate_requests=False`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

from emulators.alpaca import spec
from emulators.alpaca.world import (
    DEFAULT_ASSETS,
    FINAL,
    Account,
    AlpacaError,
    Asset,
    Broker,
    Order,
    User,
    parse_time,
    rfc3339,
)
from emulators.common import BaseEmulator, OAuthCore, OAuthError, OAuthPolicy, bearer, consent_page

HOSTS = {"live": "https://api.alpaca.markets", "paper": "https://paper-api.alpaca.markets"}
DEFAULT_CLIENT_ID = "tradecord-local"
DEFAULT_CLIENT_SECRET = "tradecord-local-secret"
DEFAULT_REDIRECT = "http://127.0.0.1:8080/oauth/alpaca/callback"
UNAUTHORIZED = {"message": "unauthorized."}
FORBIDDEN = {"message": "forbidden."}  # [infer] a token without the needed scope
SCOPE_WORDS = {
    "trading": "Place, cancel and change orders",
    "data": "Read market data",
    "account:write": "Change account configurations and watchlists",
}

ApiHandler = Callable[[web.Request, Account], Awaitable[web.StreamResponse]]


@dataclass(eq=False)
class StreamConn:
    ws: web.WebSocketResponse
    environment: str
    binary: bool
    account_id: str | None = None
    streams: set[str] = field(default_factory=set)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        # The paper stream sends JSON in binary frames; live sends text frames.
        if self.binary:
            await self.ws.send_bytes(text.encode())
        else:
            await self.ws.send_str(text)


class AlpacaEmulator(BaseEmulator):
    """Alpaca Trading API v2, Alpaca Connect OAuth, the market data API and the
    ``trade_updates`` stream, backed by one ``Broker`` world."""

    name = "alpaca"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: bool = True,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        redirect_uris: tuple[str, ...] = (DEFAULT_REDIRECT,),
        rate_limit: int = 200,
        rate_window: float = 60.0,
        clock: Callable[[], float] = time.time,
        validate_requests: bool | None = None,
        validate_responses: bool = True,
    ) -> None:
        self.clock = clock
        # None: validate when openapi-core and PyYAML (test extras) are installed, as in tests;
        # local mode may run without them.
        if validate_requests is None:
            validate_requests = spec.available()
        elif validate_requests and not spec.available():
            raise RuntimeError("validate_requests needs openapi-core (pip install -e .[test])")
        self.validate_requests = validate_requests
        self.broker = Broker(clock)
        # Alpaca tokens never expire and come without a refresh token; no PKCE.
        self.oauth = OAuthCore(OAuthPolicy(access_ttl=None, issue_refresh=False, pkce=False), clock)
        self.client_id = client_id
        self.oauth.register_client(client_id, client_secret, list(redirect_uris))
        self.grants: dict[str, dict[str, str]] = {}  # access token -> environment -> account id
        self._code_grants: dict[str, dict[str, str]] = {}
        self.spec_violations: list[str] = []
        # Answers are checked against the same files, so only when requests are.
        self.validate_responses = validate_responses and validate_requests
        self.rate_limit, self.rate_window = rate_limit, rate_window
        self.rate_limited = 0  # 429s answered, for tests
        # Seconds a cancel stays pending_cancel before it lands (0: at once, as usual on paper).
        self.cancel_delay = 0.0
        self._windows: dict[str, tuple[float, int]] = {}
        self._streams: set[StreamConn] = set()
        # Test hooks: ``listen`` actions received, and a gate that, while set to an unset
        # Event, holds each one (not yet subscribed, not yet answered) until it is set.
        self.listens_received = 0
        self.listen_gate: asyncio.Event | None = None
        super().__init__(host=host, port=port)
        self.broker.listeners.append(self._on_event)
        if seed:
            self.seed_defaults()

    # -- URLs ----------------------------------------------------------------------------------

    def api_url(self, environment: str) -> str:
        return f"{self.base_url}/{environment}"

    def stream_url(self, environment: str) -> str:
        return self.api_url(environment).replace("http://", "ws://", 1) + "/stream"

    @property
    def api_urls(self) -> dict[str, str]:
        return {"live": self.api_url("live"), "paper": self.api_url("paper")}

    @property
    def data_url(self) -> str:
        return f"{self.base_url}/data"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/app/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/live/oauth/token"

    @property
    def revoke_url(self) -> None:
        """Alpaca documents no revocation endpoint for Trading API OAuth."""
        return None

    # -- world control -------------------------------------------------------------------------

    def seed_defaults(self) -> None:
        """Enough for a newcomer in local mode to sign in and trade at once."""
        for symbol, cls, exchange, name, price in DEFAULT_ASSETS:
            self.broker.add_asset(symbol, cls, exchange=exchange, name=name, price=price)
        self.broker.add_asset(
            "EIDO",
            exchange="ARCA",
            name="iShares MSCI Indonesia ETF",
            price=Decimal("19.50"),
            shortable=False,
            easy_to_borrow=False,
        )
        self.broker.add_asset(
            "BRK.A",
            exchange="NYSE",
            name="Berkshire Hathaway Inc. Class A",
            price=Decimal(700000),
            fractionable=False,
        )
        self.add_user("demo", "Demo Trader")
        self.add_account(
            "demo", "live", cash=Decimal(30000), multiplier="2", account_number="611093251"
        )
        paper = self.add_account(
            "demo", "paper", cash=Decimal(100000), multiplier="4", account_number="PA3KX7T9QW2M"
        )
        self.broker.set_position(paper, "AAPL", Decimal(10), Decimal("180.25"))
        self.add_user("casey", "Casey Cash")
        self.add_account(
            "casey", "live", cash=Decimal(1500), multiplier="1", account_number="611093377"
        )
        self.add_account(
            "casey", "paper", cash=Decimal(100000), multiplier="4", account_number="PA3C4SEYP4PR"
        )

    def add_user(self, user_id: str, name: str | None = None) -> User:
        return self.broker.add_user(user_id, name)

    def add_account(self, user_id: str, environment: str = "paper", **kwargs: Any) -> Account:
        """A live or paper account for ``user_id`` (cash, multiplier, account_number, flags)."""
        if environment == "live" and self.broker.accounts_of(user_id, "live"):
            raise ValueError("an Alpaca user has exactly one live account")
        return self.broker.add_account(user_id, environment, **kwargs)

    def add_asset(self, symbol: str, asset_class: str = "us_equity", **kwargs: Any) -> Asset:
        return self.broker.add_asset(symbol, asset_class, **kwargs)

    def account(self, user_id: str, environment: str) -> Account:
        return self.broker.accounts_of(user_id, environment)[0]

    def set_position(
        self, account: Account, symbol: str, qty: Decimal, avg_entry_price: Decimal
    ) -> None:
        self.broker.set_position(account, symbol, qty, avg_entry_price)

    def set_quote(
        self, symbol: str, bid: Decimal, ask: Decimal, last: Decimal | None = None
    ) -> None:
        """Move the market; resting limit and stop orders are re-checked."""
        self.broker.set_quote(symbol, bid, ask, last)

    def open_market(self) -> None:
        """The session opens. First its opening auction: every opg order waiting (queued or
        working) fills in full at the symbol's last price (set it with ``set_quote`` before)
        if it is a market order or its limit reaches that price, else it is ``canceled``.
        Then queued (``accepted``) equity orders are routed and may fill."""
        self.broker.open_market()

    def close_market(self) -> None:
        """The session ends. First its closing auction: every cls order working fills at the
        symbol's last price or is ``canceled``, as opg orders at the open (a cls order queued
        while the market was shut waits for the next session's close). Then working day
        orders expire; new equity orders are queued. Auction orders are refused from 9:28am
        (opg) / 3:50pm (cls) until 7:00pm ET on weekdays by the emulator's ``clock``."""
        self.broker.close_market()

    @property
    def market_open(self) -> bool:
        return self.broker.market_open

    def orders(self, account: Account) -> list[Order]:
        return self.broker.orders_of(account)

    def order(self, order_id: str) -> Order:
        return self.broker.orders[order_id]

    def fill(self, order_id: str, qty: Decimal | None = None, price: Decimal | None = None) -> None:
        """Fill (part of) a working order now, e.g. a partial fill at a chosen price."""
        order = self.broker.orders[order_id]
        if order.status not in ("new", "partially_filled", "pending_cancel"):
            raise ValueError(f"order is {order.status}, not working")
        remaining = order.remaining()
        qty = Decimal(qty) if qty is not None else remaining
        assert qty is not None and remaining is not None and 0 < qty <= remaining
        if price is None:
            q = self.broker.quote(order.asset)
            price = q.ask if order.side == "buy" else q.bid
        self.broker.execute(order, qty, Decimal(price))

    def reject(self, order_id: str) -> None:
        """The venue rejects a working order (stream event ``rejected``)."""
        order = self.broker.orders[order_id]
        if order.status in FINAL:
            raise ValueError(f"order is already {order.status}")
        self.broker._end(order, "rejected")

    def issue_token(self, user_id: str, scope: str = "trading data", env: str | None = None) -> str:
        """Mint a token as if ``user_id`` approved the default client (no browser)."""
        binding = self._binding(user_id, env, None)
        client = self.oauth.client(self.client_id)
        redirect = client.redirect_uris[0]
        code = self.oauth.issue_code(client.client_id, redirect, user_id, scope)
        token = self.oauth.exchange_code(client, code, redirect)["access_token"]
        self.grants[token] = binding
        return str(token)

    def revoke_token(self, token: str) -> None:
        """The user removes the app in Alpaca's dashboard."""
        rec = self.oauth.tokens.get(token)
        if rec is not None:
            rec.revoked = True

    async def drop_streams(self) -> None:
        """Close every stream connection, as when Alpaca restarts its stream servers."""
        for conn in list(self._streams):
            await conn.ws.close()

    @property
    def stream_connections(self) -> int:
        return len(self._streams)

    def stream_listeners(self, environment: str | None = None) -> int:
        """Connections authenticated and listening to ``trade_updates`` (tests wait for it)."""
        return sum(
            1
            for c in self._streams
            if "trade_updates" in c.streams
            and (environment is None or c.environment == environment)
        )

    # -- routes --------------------------------------------------------------------------------

    def setup_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/app/oauth/authorize", self._authorize_page)
        r.add_post("/app/oauth/authorize", self._authorize_decision)
        r.add_post("/live/oauth/token", self._token)
        for env in ("live", "paper"):
            p = f"/{env}"
            r.add_get(p + "/v2/account", self._api(env, self._get_account))
            r.add_get(p + "/v2/clock", self._api(env, self._get_clock))
            r.add_get(p + "/v2/assets/{symbol_or_asset_id}", self._api(env, self._get_asset))
            r.add_get(p + "/v2/positions", self._api(env, self._get_positions))
            r.add_get(p + "/v2/positions/{symbol_or_asset_id}", self._api(env, self._get_position))
            r.add_get(p + "/v2/orders", self._api(env, self._list_orders))
            r.add_post(p + "/v2/orders", self._api(env, self._post_order, scope="trading"))
            r.add_get(p + "/v2/orders:by_client_order_id", self._api(env, self._by_client_id))
            r.add_get(p + "/v2/orders/{order_id}", self._api(env, self._get_order))
            r.add_delete(
                p + "/v2/orders/{order_id}", self._api(env, self._delete_order, scope="trading")
            )
            r.add_patch(
                p + "/v2/orders/{order_id}", self._api(env, self._patch_order, scope="trading")
            )
            r.add_get(p + "/stream", self._stream_handler(env))
        r.add_get("/data/v2/stocks/snapshots", self._data(self._stock_snapshots))
        r.add_get("/data/v2/stocks/{symbol}/snapshot", self._data(self._stock_snapshot))
        r.add_get("/data/v2/stocks/quotes/latest", self._data(self._stock_quotes))
        r.add_get("/data/v1beta3/crypto/us/snapshots", self._data(self._crypto_snapshots))
        r.add_get("/data/v1beta3/crypto/us/latest/quotes", self._data(self._crypto_quotes))

    # -- OAuth ---------------------------------------------------------------------------------

    def _binding(self, user_id: str, env: str | None, paper_account: str | None) -> dict[str, str]:
        """Which account per environment a grant reaches: ``env`` picks one, none means both."""
        binding: dict[str, str] = {}
        for e in ("live", "paper") if env is None else (env,):
            accounts = self.broker.accounts_of(user_id, e)
            if e == "paper" and paper_account:
                accounts = [a for a in accounts if a.id == paper_account] or accounts
            if accounts:
                binding[e] = accounts[0].id
        return binding

    def _oauth_violations(
        self, api: Callable[[], Any], host: str, request: web.Request, path: str, body: bytes
    ) -> list[str]:
        if not self.validate_requests:
            return []
        errors = spec.request_errors(
            api(),
            host,
            request.method,
            path,
            dict(request.query),
            dict(request.headers),
            body,
            request.content_type or "application/json",
        )
        for e in errors:
            self.spec_violations.append(f"{request.method} {request.path}: {e}")
        return errors

    @staticmethod
    def _page_error(message: str) -> web.Response:
        return web.Response(
            status=400, text=f"<!doctype html><p>{message}</p>", content_type="text/html"
        )

    def _client_redirect(self, client_id: str | None, redirect_uri: str | None) -> str | None:
        try:
            client = self.oauth.client(client_id)
        except OAuthError:
            return None
        return redirect_uri if redirect_uri in client.redirect_uris else None

    async def _authorize_page(self, request: web.Request) -> web.Response:
        if self._oauth_violations(
            spec.authorize_api, "https://app.alpaca.markets", request, "/oauth/authorize", b""
        ):
            return self._page_error("The authorization request is not valid.")
        q = request.query
        redirect = self._client_redirect(q.get("client_id"), q.get("redirect_uri"))
        if redirect is None:
            # RFC 6749 4.1.2.1: never redirect to an unverified URI.
            return self._page_error("Unknown application or redirect URI.")
        if q.get("response_type") != "code":
            return _redirect(redirect, error="unsupported_response_type", state=q.get("state"))
        env = q.get("env")
        users: list[tuple[str, str]] = []
        for user in self.broker.users.values():
            papers = self.broker.accounts_of(user.id, "paper") if env != "live" else []
            if len(papers) > 1:  # several paper accounts: the user picks the one to authorize
                users += [
                    (f"{user.id}|{a.id}", f"{user.name} (paper {a.account_number})") for a in papers
                ]
            else:
                users.append((user.id, user.name))
        scopes = [SCOPE_WORDS.get(s, s) for s in q.get("scope", "").split()]
        scopes.insert(0, "Read your account, positions and orders")
        which = {"live": "your live account", "paper": "your paper account"}.get(
            env or "", "your live and your paper account"
        )
        hidden = {k: q[k] for k in ("client_id", "redirect_uri", "state", "scope", "env") if k in q}
        return consent_page(
            broker="Alpaca",
            app_name=f"{q['client_id']} ({which})",
            scopes=scopes,
            users=users,
            hidden=hidden,
            action="/app/oauth/authorize",
        )

    async def _authorize_decision(self, request: web.Request) -> web.Response:
        form = await request.post()
        get = {k: str(v) for k, v in form.items()}
        redirect = self._client_redirect(get.get("client_id"), get.get("redirect_uri"))
        if redirect is None:
            return self._page_error("Unknown application or redirect URI.")
        state = get.get("state")
        if get.get("decision") != "approve":
            return _redirect(redirect, error="access_denied", state=state)
        user_id, _, paper_account = get.get("user_id", "").partition("|")
        if user_id not in self.broker.users:
            return self._page_error("Unknown user.")
        binding = self._binding(user_id, get.get("env"), paper_account or None)
        if not binding:
            return _redirect(redirect, error="access_denied", state=state)
        code = self.oauth.issue_code(get["client_id"], redirect, user_id, get.get("scope", ""))
        self._code_grants[code] = binding
        return _redirect(redirect, code=code, state=state)

    async def _token(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._oauth_violations(spec.token_api, HOSTS["live"], request, "/oauth/token", body):
            return _oauth_error(OAuthError("invalid_request", "missing or malformed parameters"))
        form = await request.post()
        get = {k: str(v) for k, v in form.items()}
        try:
            if get.get("grant_type") != "authorization_code":
                # No refresh tokens at Alpaca: authorization_code is the only grant.
                raise OAuthError("unsupported_grant_type", "only authorization_code is supported")
            client = self.oauth.authenticate(get.get("client_id"), get.get("client_secret"))
            issued = self.oauth.exchange_code(client, get.get("code"), get.get("redirect_uri"))
        except OAuthError as e:
            return _oauth_error(e)
        self.grants[issued["access_token"]] = self._code_grants.pop(get["code"], {})
        return web.json_response(
            {
                "access_token": issued["access_token"],
                "token_type": "bearer",
                "scope": issued["scope"],
            }
        )

    # -- the Trading API wrapper ---------------------------------------------------------------

    def _token_account(self, token: str | None, env: str) -> Account | None:
        if self.oauth.check_access(token) is None:
            return None
        account_id = self.grants.get(token or "", {}).get(env)
        return self.broker.accounts.get(account_id) if account_id else None

    def _rate(self, key: str) -> tuple[bool, dict[str, str]]:
        now = self.clock()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.rate_window:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(self.rate_limit - count, 0)),
            "X-RateLimit-Reset": str(int(start + self.rate_window + 0.999)),
        }
        return count <= self.rate_limit, headers

    def _api(self, env: str, handler: ApiHandler, scope: str | None = None) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            token = bearer(request)
            acct = self._token_account(token, env)
            if acct is None:
                return web.json_response(UNAUTHORIZED, status=401)
            ok, headers = self._rate(f"trading:{acct.id}")
            if not ok:
                self.rate_limited += 1
                return web.json_response(
                    {"code": 42910000, "message": "rate limit exceeded"},
                    status=429,
                    headers=headers,
                )
            rec = self.oauth.check_access(token)
            if scope and (rec is None or scope not in rec.scope.split()):
                return web.json_response(FORBIDDEN, status=403, headers=headers)
            body = await request.read()
            path = request.path[len(env) + 1 :]
            errors = (
                spec.request_errors(
                    spec.trading_api(),
                    HOSTS[env],
                    request.method,
                    path,
                    dict(request.query),
                    dict(request.headers),
                    body,
                    request.content_type or "application/json",
                )
                if self.validate_requests
                else []
            )
            if errors:
                self.spec_violations += [f"{request.method} {request.path}: {e}" for e in errors]
                return web.json_response(
                    {"code": 40010000, "message": "request is not valid: " + errors[0]},
                    status=400,
                    headers=headers,
                )
            try:
                response = await handler(request, acct)
            except AlpacaError as e:
                response = web.json_response(e.body, status=e.status)
            response.headers.update(headers)
            if (
                self.validate_responses
                and isinstance(response, web.Response)
                and (200 <= response.status < 300 and response.body)
            ):
                assert isinstance(response.body, bytes)
                self.spec_violations += [
                    f"response to {request.method} {request.path}: {e}"
                    for e in spec.response_errors(
                        spec.trading_api(),
                        HOSTS[env],
                        request.method,
                        path,
                        dict(request.query),
                        dict(request.headers),
                        response.status,
                        json.loads(response.body),
                    )
                ]
            return response

        return wrapped

    # -- Trading API handlers --------------------------------------------------------------------

    async def _get_account(self, request: web.Request, acct: Account) -> web.Response:
        return web.json_response(self.broker.account_json(acct))

    async def _get_clock(self, request: web.Request, acct: Account) -> web.Response:
        return web.json_response(self.broker.clock_json())

    async def _get_asset(self, request: web.Request, acct: Account) -> web.Response:
        key = request.match_info["symbol_or_asset_id"]
        asset = self.broker.resolve(key) or next(
            (a for a in self.broker.assets.values() if a.id == key), None
        )
        if asset is None:
            # The observed wording (observed-error-payloads.json).
            raise AlpacaError(404, {"code": 40410000, "message": f"asset not found for {key}"})
        return web.json_response(
            {
                "id": asset.id,
                "class": asset.asset_class,
                "exchange": asset.exchange,
                "symbol": asset.symbol,
                "name": asset.name,
                "status": asset.status,
                "tradable": asset.tradable,
                "marginable": asset.marginable,
                "shortable": asset.shortable,
                "easy_to_borrow": asset.easy_to_borrow,
                "fractionable": asset.fractionable,
            }
        )

    async def _get_positions(self, request: web.Request, acct: Account) -> web.Response:
        return web.json_response(
            [self.broker.position_json(acct, p) for p in acct.positions.values()]
        )

    async def _get_position(self, request: web.Request, acct: Account) -> web.Response:
        key = request.match_info["symbol_or_asset_id"]
        for p in acct.positions.values():
            if key.upper() in (p.asset.symbol, p.asset.position_symbol) or key == p.asset.id:
                return web.json_response(self.broker.position_json(acct, p))
        raise AlpacaError(404, {"code": 40410000, "message": "position does not exist"})

    async def _list_orders(self, request: web.Request, acct: Account) -> web.Response:
        q = request.query
        status = q.get("status", "open")
        limit = int(q.get("limit", "50"))
        if limit > 500:
            raise AlpacaError(422, {"code": 42210000, "message": "limit must be <= 500"})
        nested = q.get("nested") == "true"
        symbols = {s.strip().upper() for s in q.get("symbols", "").split(",") if s.strip()}
        try:
            after = parse_time(q["after"]) if "after" in q else None
            until = parse_time(q["until"]) if "until" in q else None
        except ValueError:
            raise AlpacaError(422, {"code": 40010001, "message": "invalid timestamp"}) from None
        chosen = []
        for o in self.broker.orders_of(acct):
            if nested and o.parent is not None:
                continue
            if (status == "open" and o.final) or (status == "closed" and not o.final):
                continue
            submitted = o.submitted_at or o.created_at
            if (after is not None and submitted <= after) or (
                until is not None and submitted >= until
            ):
                continue
            if symbols and not {o.asset.symbol, o.asset.position_symbol} & symbols:
                continue
            chosen.append(o)
        chosen.sort(key=lambda o: o.seq, reverse=q.get("direction", "desc") == "desc")
        return web.json_response([self.broker.order_json(o, nested=nested) for o in chosen[:limit]])

    async def _post_order(self, request: web.Request, acct: Account) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise AlpacaError(
                400, {"code": 40010000, "message": "request body format is invalid"}
            ) from None
        _, snapshot = self.broker.submit(acct, body)
        return web.json_response(snapshot)

    async def _by_client_id(self, request: web.Request, acct: Account) -> web.Response:
        order = self.broker.by_client_id(acct, request.query["client_order_id"])
        if order is None:
            raise AlpacaError(404, {"code": 40410000, "message": "order not found"})
        return web.json_response(
            self.broker.order_json(order, nested=request.query.get("nested") == "true")
        )

    async def _get_order(self, request: web.Request, acct: Account) -> web.Response:
        order = self.broker.orders.get(request.match_info["order_id"])
        if order is None or order.account_id != acct.id:
            raise AlpacaError(404, {"code": 40410000, "message": "order not found"})
        return web.json_response(
            self.broker.order_json(order, nested=request.query.get("nested") == "true")
        )

    async def _patch_order(self, request: web.Request, acct: Account) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            raise AlpacaError(
                400, {"code": 40010000, "message": "request body format is invalid"}
            ) from None
        _, snapshot = self.broker.replace(acct, request.match_info["order_id"], body)
        return web.json_response(snapshot)

    async def _delete_order(self, request: web.Request, acct: Account) -> web.Response:
        order = self.broker.cancel(
            acct, request.match_info["order_id"], pending=self.cancel_delay > 0
        )
        if self.cancel_delay > 0:
            asyncio.get_running_loop().call_later(
                self.cancel_delay, self.broker.finish_cancel, order
            )
        return web.Response(status=204)

    # -- market data -----------------------------------------------------------------------------

    def _data(self, handler: Callable[[web.Request], web.Response]) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            token = bearer(request)
            rec = self.oauth.check_access(token)
            if rec is None or not self.grants.get(token or ""):
                return web.json_response(UNAUTHORIZED, status=401)
            ok, headers = self._rate(f"data:{rec.user_id}")
            if not ok:
                self.rate_limited += 1
                return web.json_response(
                    {"code": 42910000, "message": "rate limit exceeded"},
                    status=429,
                    headers=headers,
                )
            if "data" not in rec.scope.split():
                return web.json_response(FORBIDDEN, status=403, headers=headers)
            try:
                response = handler(request)
            except AlpacaError as e:
                response = web.json_response(e.body, status=e.status)
            response.headers.update(headers)
            return response

        return wrapped

    def _symbols(self, request: web.Request) -> list[str]:
        raw = request.query.get("symbols", "")
        symbols = [s.strip().upper() for s in raw.split(",") if s.strip()]
        if not symbols:
            raise AlpacaError(400, {"code": 40010001, "message": "symbols is required"})  # [infer]
        return symbols

    def _known(self, symbol: str, crypto: bool) -> Asset | None:
        asset = self.broker.assets.get(symbol)
        return asset if asset is not None and asset.crypto == crypto else None

    def _quote_json(self, asset: Asset) -> dict[str, Any]:
        q = self.broker.quote(asset)
        out: dict[str, Any] = {
            "t": rfc3339(q.t),
            "bp": float(q.bid),
            "bs": q.bid_size,
            "ap": float(q.ask),
            "as": q.ask_size,
        }
        if not asset.crypto:
            out.update({"bx": "V", "ax": "V", "c": ["R"], "z": "C"})
        return out

    def _snapshot_json(self, asset: Asset) -> dict[str, Any]:
        q = self.broker.quote(asset)
        last = float(q.last)
        trade: dict[str, Any] = {"t": rfc3339(q.t), "p": last, "s": 100, "i": int(q.t * 1000)}
        if asset.crypto:
            trade["tks"] = "B"
        else:
            trade.update({"x": "V", "c": ["@"], "z": "C"})
        bar = {
            "t": rfc3339(q.t - q.t % 60),
            "o": last,
            "h": last,
            "l": last,
            "c": last,
            "v": 100,
            "n": 1,
            "vw": last,
        }
        return {
            "latestTrade": trade,
            "latestQuote": self._quote_json(asset),
            "minuteBar": bar,
            "dailyBar": bar,
            "prevDailyBar": bar,
        }

    def _stock_snapshots(self, request: web.Request) -> web.Response:
        found = {s: a for s in self._symbols(request) if (a := self._known(s, False))}
        # Unknown symbols are left out of the answer.
        return web.json_response({s: self._snapshot_json(a) for s, a in found.items()})

    def _stock_snapshot(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"].upper()
        asset = self._known(symbol, False)
        if asset is None:
            raise AlpacaError(
                404, {"code": 40410000, "message": f"no snapshot found for {symbol}"}
            )  # [infer]
        return web.json_response({"symbol": symbol, **self._snapshot_json(asset)})

    def _stock_quotes(self, request: web.Request) -> web.Response:
        found = {s: a for s in self._symbols(request) if (a := self._known(s, False))}
        return web.json_response({"quotes": {s: self._quote_json(a) for s, a in found.items()}})

    def _crypto_snapshots(self, request: web.Request) -> web.Response:
        found = {s: a for s in self._symbols(request) if (a := self._known(s, True))}
        return web.json_response(
            {"snapshots": {s: self._snapshot_json(a) for s, a in found.items()}}
        )

    def _crypto_quotes(self, request: web.Request) -> web.Response:
        found = {s: a for s in self._symbols(request) if (a := self._known(s, True))}
        return web.json_response({"quotes": {s: self._quote_json(a) for s, a in found.items()}})

    # -- the trade_updates stream ------------------------------------------------------------------

    def _on_event(self, acct: Account, data: dict[str, Any]) -> None:
        message = {"stream": "trade_updates", "data": data}
        for conn in self._streams:
            if conn.account_id == acct.id and "trade_updates" in conn.streams:
                conn.queue.put_nowait(message)

    def _stream_handler(self, env: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            conn = StreamConn(ws, env, binary=env == "paper")
            self._streams.add(conn)
            writer = asyncio.create_task(self._writer(conn))
            try:
                async for msg in ws:
                    if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                        break
                    if not await self._stream_message(conn, msg.data):
                        break
            finally:
                self._streams.discard(conn)
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                await ws.close()
            return ws

        return handler

    async def _writer(self, conn: StreamConn) -> None:
        while True:
            message = await conn.queue.get()
            await conn.send(message)

    async def _stream_message(self, conn: StreamConn, raw: str | bytes) -> bool:
        """Answer one client message; False closes the connection."""
        try:
            message = json.loads(raw)
            action = message.get("action")
            data = message.get("data") or {}
        except (ValueError, AttributeError):
            await conn.send({"stream": "listening", "data": {"error": "invalid syntax"}})
            return True
        if action in ("authenticate", "auth"):
            acct = self._token_account(data.get("oauth_token"), conn.environment)
            if acct is None:
                await conn.send(
                    {
                        "stream": "authorization",
                        "data": {"status": "unauthorized", "action": "authenticate"},
                    }
                )
                return False
            conn.account_id = acct.id
            await conn.send(
                {
                    "stream": "authorization",
                    "data": {"status": "authorized", "action": "authenticate"},
                }
            )
            return True
        if conn.account_id is None:
            await conn.send(
                {
                    "stream": "authorization",
                    "data": {"status": "unauthorized", "action": str(action)},
                }
            )
            return False
        if action == "listen":
            self.listens_received += 1
            if self.listen_gate is not None:
                await self.listen_gate.wait()
            wanted = set(data.get("streams") or [])
            conn.streams = wanted & {"trade_updates"}
            await conn.send({"stream": "listening", "data": {"streams": sorted(conn.streams)}})
        return True


def _redirect(uri: str, **params: str | None) -> web.Response:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    sep = "&" if "?" in uri else "?"
    return web.Response(
        status=302, headers={"Location": f"{uri}{sep}{query}", "Cache-Control": "no-store"}
    )


def _oauth_error(e: OAuthError) -> web.Response:
    # [infer] Alpaca documents no error body for /oauth/token: RFC 6749 5.2 shape.
    return web.json_response(
        {"error": e.error, "error_description": e.description},
        status=e.status,
        headers={"Cache-Control": "no-store"},
    )
