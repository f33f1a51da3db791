"""What every broker emulator shares: an aiohttp server on 127.0.0.1, a request log,
fault injection, and an OAuth 2.0 authorization server core.

Vendor modules wire their own paths, parameter names and error bodies on top of this; the
behaviour that differs between vendors (token lifetimes, rotation, PKCE, client auth) is
configuration of ``OAuthCore``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    """One injected misbehaviour.

    kind: ``latency`` (sleep ``seconds``, or if ``until`` is given wait for that event, then
    answer normally), ``status`` (answer ``status`` with ``body`` and ``headers`` without
    processing), ``drop`` (close the connection before processing: nothing happened),
    ``lose_response`` (process the request, then close the connection: it happened but the
    client cannot know).
    """

    kind: str
    path: str = ".*"  # regex matched against the request path
    method: str | None = None
    times: int | None = None  # None: until removed
    seconds: float = 0.0
    until: asyncio.Event | None = None  # latency: held until the test sets it
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.method and request.method != self.method.upper():
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return re.search(self.path, request.path) is not None


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float


class FaultPlan:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def take(self, request: web.Request) -> list[Fault]:
        hit = [f for f in self.faults if f.matches(request)]
        for f in hit:
            f.hits += 1
        return hit


class BaseEmulator(ABC):
    """Lifecycle, request log and fault middleware. Subclasses add routes in ``setup_routes``."""

    name = "emulator"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.faults = FaultPlan()
        self.requests: list[RecordedRequest] = []
        self.app = web.Application(middlewares=[self._record, self._inject])
        self._runner: web.AppRunner | None = None
        self.setup_routes(self.app)

    @abstractmethod
    def setup_routes(self, app: web.Application) -> None: ...

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        # A broker's front end takes a fan-out's hundreds of simultaneous connections; with
        # the default backlog of 128 the kernel drops the rest's SYNs and each waits 1 s.
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BaseEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def requests_to(self, path_regex: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if re.search(path_regex, r.path) and (method is None or r.method == method.upper())
        ]

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.query),
                dict(request.headers),
                body,
                time.time(),
            )
        )
        return await handler(request)

    @web.middleware
    async def _inject(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        lose = False
        for fault in self.faults.take(request):
            if fault.kind == "latency" and fault.until is not None:
                await fault.until.wait()
            elif fault.kind == "latency":
                await asyncio.sleep(fault.seconds)
            elif fault.kind == "status":
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
            elif fault.kind == "drop":
                _close(request)
                raise asyncio.CancelledError
            elif fault.kind == "lose_response":
                lose = True
        response = await handler(request)
        if lose:
            _close(request)
            raise asyncio.CancelledError
        return response


def _close(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


# -- OAuth 2.0 authorization server core ---------------------------------------------------


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str | None
    user_id: str
    scope: str
    created: float
    code_challenge: str | None = None
    used: bool = False


@dataclass
class TokenRecord:
    token: str
    client_id: str
    user_id: str
    scope: str
    expires_at: float | None
    kind: str  # "access" | "refresh"
    family: str  # refresh-token family (a grant); revoking it revokes every token of it
    absolute_expires_at: float | None = None
    revoked: bool = False


@dataclass
class OAuthPolicy:
    access_ttl: float | None = 1200.0  # seconds; None = never expires
    issue_refresh: bool = True
    rotate_refresh: bool = False  # issue a new refresh token on every refresh
    refresh_ttl: float | None = None  # idle lifetime of one refresh token
    refresh_absolute_ttl: float | None = None  # lifetime of the whole grant
    code_ttl: float = 600.0
    pkce: bool = False  # accepts code_challenge/code_verifier (S256)
    reuse_detection: bool = True  # using a rotated-out refresh token revokes the family


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class OAuthCore:
    """Codes, tokens, refresh and revocation, with counters tests can assert on."""

    def __init__(self, policy: OAuthPolicy, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.clock = clock
        self.clients: dict[str, OAuthClient] = {}
        self.codes: dict[str, AuthCode] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.token_requests = 0
        self.refresh_requests = 0

    def register_client(self, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
        self.clients[client_id] = OAuthClient(client_id, client_secret, list(redirect_uris))

    def client(self, client_id: str | None) -> OAuthClient:
        c = self.clients.get(client_id or "")
        if c is None:
            raise OAuthError("invalid_client", "Unknown client", 401)
        return c

    def authenticate(self, client_id: str | None, client_secret: str | None) -> OAuthClient:
        c = self.client(client_id)
        if not client_secret or not secrets.compare_digest(c.client_secret, client_secret):
            raise OAuthError("invalid_client", "Client authentication failed", 401)
        return c

    def issue_code(
        self,
        client_id: str,
        redirect_uri: str | None,
        user_id: str,
        scope: str,
        code_challenge: str | None = None,
    ) -> str:
        code = secrets.token_urlsafe(24)
        self.codes[code] = AuthCode(
            code, client_id, redirect_uri, user_id, scope, self.clock(), code_challenge
        )
        return code

    def exchange_code(
        self,
        client: OAuthClient,
        code: str | None,
        redirect_uri: str | None,
        code_verifier: str | None = None,
    ) -> dict[str, Any]:
        self.token_requests += 1
        record = self.codes.get(code or "")
        if record is None or record.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Invalid authorization code")
        if record.used:
            # RFC 6749 4.1.2: a reused code should revoke what it issued.
            self.revoke_user_grants(record.client_id, record.user_id)
            raise OAuthError("invalid_grant", "Authorization code has already been used")
        record.used = True
        if self.clock() - record.created > self.policy.code_ttl:
            raise OAuthError("invalid_grant", "Authorization code expired")
        if record.redirect_uri is not None and redirect_uri != record.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match")
        if record.code_challenge is not None:
            if not code_verifier or s256(code_verifier) != record.code_challenge:
                raise OAuthError("invalid_grant", "PKCE verification failed")
        family = secrets.token_hex(8)
        return self._issue(
            client.client_id, record.user_id, record.scope, family, with_refresh=True
        )

    def refresh(self, client: OAuthClient, refresh_token: str | None) -> dict[str, Any]:
        self.refresh_requests += 1
        rec = self.tokens.get(refresh_token or "")
        now = self.clock()
        if rec is None or rec.kind != "refresh" or rec.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Unknown or invalid refresh token")
        if rec.revoked:
            if self.policy.reuse_detection:
                self.revoke_family(rec.family)
            raise OAuthError("invalid_grant", "Refresh token has been revoked")
        if (rec.expires_at and now > rec.expires_at) or (
            rec.absolute_expires_at and now > rec.absolute_expires_at
        ):
            raise OAuthError("invalid_grant", "Refresh token expired")
        if self.policy.rotate_refresh:
            rec.revoked = True
        return self._issue(
            client.client_id,
            rec.user_id,
            rec.scope,
            rec.family,
            with_refresh=self.policy.rotate_refresh,
            absolute=rec.absolute_expires_at,
        )

    def _issue(
        self,
        client_id: str,
        user_id: str,
        scope: str,
        family: str,
        *,
        with_refresh: bool,
        absolute: float | None = None,
    ) -> dict[str, Any]:
        now = self.clock()
        p = self.policy
        access = secrets.token_urlsafe(32)
        self.tokens[access] = TokenRecord(
            access,
            client_id,
            user_id,
            scope,
            now + p.access_ttl if p.access_ttl else None,
            "access",
            family,
        )
        out: dict[str, Any] = {"access_token": access, "scope": scope}
        if p.access_ttl:
            out["expires_in"] = int(p.access_ttl)
        if with_refresh and p.issue_refresh:
            refresh = secrets.token_urlsafe(32)
            if absolute is None and p.refresh_absolute_ttl:
                absolute = now + p.refresh_absolute_ttl
            self.tokens[refresh] = TokenRecord(
                refresh,
                client_id,
                user_id,
                scope,
                now + p.refresh_ttl if p.refresh_ttl else None,
                "refresh",
                family,
                absolute,
            )
            out["refresh_token"] = refresh
        return out

    def check_access(self, token: str | None) -> TokenRecord | None:
        """The token's record if it is a live access token, else ``None``."""
        rec = self.tokens.get(token or "")
        if rec is None or rec.kind != "access" or rec.revoked:
            return None
        if rec.expires_at is not None and self.clock() > rec.expires_at:
            return None
        return rec

    def expire_access_tokens(self) -> None:
        """Test helper: make every access token expired now."""
        for rec in self.tokens.values():
            if rec.kind == "access":
                rec.expires_at = self.clock() - 1

    def revoke_family(self, family: str) -> None:
        for rec in self.tokens.values():
            if rec.family == family:
                rec.revoked = True

    def revoke_user_grants(self, client_id: str, user_id: str) -> None:
        for rec in self.tokens.values():
            if rec.client_id == client_id and rec.user_id == user_id:
                rec.revoked = True

    def revoke(self, client: OAuthClient, token: str | None) -> None:
        rec = self.tokens.get(token or "")
        if rec is not None and rec.client_id == client.client_id:
            self.revoke_family(rec.family)


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def basic_auth(request: web.Request) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None, None
    try:
        user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user, pw


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else None


PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action *; frame-ancestors 'none'"


def consent_page(
    *,
    broker: str,
    app_name: str,
    scopes: list[str],
    users: list[tuple[str, str]],
    hidden: dict[str, str],
    action: str,
) -> web.Response:
    """The broker's sign-in and consent page: pick a user, then Approve or Deny.

    Stable ids for browser tests: ``select#user``, ``button#approve``, ``button#deny``.
    """
    options = "".join(
        f'<option value="{html.escape(uid)}">{html.escape(label)}</option>' for uid, label in users
    )
    fields = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in hidden.items()
    )
    scope_items = "".join(f"<li>{html.escape(s)}</li>" for s in scopes)
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(broker)} sign in</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}button{{margin-right:1em}}</style>
</head><body><h1>{html.escape(broker)}</h1>
<p><strong>{html.escape(app_name)}</strong> asks for access to your account:</p><ul>{scope_items}</ul>
<form method="post" action="{html.escape(action)}">{fields}
<label for="user">Sign in as</label> <select id="user" name="user_id">{options}</select>
<p><button id="approve" name="decision" value="approve" type="submit">Approve</button>
<button id="deny" name="decision" value="deny" type="submit">Deny</button></p></form></body></html>"""
    return web.Response(
        text=body,
        content_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"},
    )
