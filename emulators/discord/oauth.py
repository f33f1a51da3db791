"""Discord OAuth2 ("Login with Discord"): authorize page, code grant with PKCE, bearer tokens.

The authorize page is a small self-contained HTML form (no external resources) where the
visitor says which emulated user they are, then authorizes or cancels. Codes are single-use
and live 10 minutes; reusing one revokes what it issued (RFC 6749 §4.1.2). Errors at the
token endpoint are RFC 6749 JSON. Bearer tokens are only accepted where Discord accepts them.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import html
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import permissions as P
from .errors import UNAUTHORIZED, EmulatorError
from .snowflake import iso
from .state import JSON, World

CODE_LIFETIME = 600.0
TOKEN_LIFETIME = 604800
SUPPORTED_SCOPES = frozenset({"identify", "email", "guilds"})
SESSION_COOKIE = "discord_emulator_session"
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

_SCOPE_TEXT = {
    "identify": "Access your username, avatar, and banner",
    "email": "Access your email address",
    "guilds": "Know what servers you're in",
}


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    name: str


@dataclass
class AuthorizationCode:
    code: str
    client_id: str
    user_id: int
    redirect_uri: str | None
    scopes: tuple[str, ...]
    code_challenge: str | None
    expires_at: float
    used: bool = False
    issued: list[Grant] = field(default_factory=list)


@dataclass
class Grant:
    access_token: str
    refresh_token: str
    client_id: str
    user_id: int
    scopes: tuple[str, ...]
    expires_at: float
    revoked: bool = False

    def to_json(self) -> JSON:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": max(0, round(self.expires_at - time.time())),
            "refresh_token": self.refresh_token,
            "scope": " ".join(self.scopes),
        }


@dataclass(frozen=True)
class _PageTicket:
    params: tuple[tuple[str, str], ...]
    user_id: int | None
    expires_at: float


class OAuthError(Exception):
    """An RFC 6749 token-endpoint error."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status


class OAuthProvider:
    """Discord's OAuth2 authorization server for the emulated users."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.clients: dict[str, OAuthClient] = {}
        self.codes: dict[str, AuthorizationCode] = {}
        self.access_tokens: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.preset_user: int | None = None
        self._sessions: dict[str, int] = {}
        self._tickets: dict[str, _PageTicket] = {}
        self._consented: set[tuple[int, str, tuple[str, ...]]] = set()

    # ------------------------------------------------------------------ driving API

    def register_client(
        self,
        client_id: str | int,
        client_secret: str,
        redirect_uris: list[str] | tuple[str, ...],
        *,
        name: str = "",
    ) -> OAuthClient:
        if not redirect_uris:
            raise EmulatorError("register at least one redirect URI")
        client = OAuthClient(
            client_id=str(client_id),
            client_secret=client_secret,
            redirect_uris=tuple(redirect_uris),
            name=name or self.world.bot.username,
        )
        self.clients[client.client_id] = client
        return client

    def login_as(self, user_id: int | None) -> None:
        """Browsers without a session of their own are signed in as ``user_id`` (None: nobody)."""
        if user_id is not None:
            if self.world.user(user_id).bot:
                raise EmulatorError("bots cannot sign in to Discord")
        self.preset_user = user_id

    def bearer(self, token: str) -> Grant | None:
        grant = self.access_tokens.get(token)
        if grant is None or grant.revoked or grant.expires_at <= time.time():
            return None
        return grant

    # ------------------------------------------------------------------ authorize

    def _session_user(self, request: web.Request) -> int | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie and cookie in self._sessions:
            return self._sessions[cookie]
        return self.preset_user

    def _check_client(self, params: Any) -> tuple[OAuthClient, str] | web.Response:
        client = self.clients.get(str(params.get("client_id", "")))
        if client is None:
            return _error_page(
                "Unknown Application", "The application that sent you here is not registered."
            )
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if redirect_uri not in client.redirect_uris:
            return _error_page(
                "Invalid OAuth2 redirect_uri",
                "The redirect_uri does not match any URI registered for this application.",
            )
        return client, str(redirect_uri)

    def _check_request(self, params: Any) -> tuple[str, str] | None:
        """RFC 6749 errors that are reported back to the (verified) redirect URI."""
        if params.get("response_type") != "code":
            return "unsupported_response_type", "response_type must be code"
        scopes = str(params.get("scope", "")).split()
        if not scopes or any(s not in SUPPORTED_SCOPES for s in scopes):
            return "invalid_scope", "The requested scope is invalid, unknown, or malformed."
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is not None or method is not None:
            if method != "S256":
                return "invalid_request", "code_challenge_method must be S256"
            if not challenge or not 43 <= len(challenge) <= 128:
                return "invalid_request", "code_challenge is malformed"
        return None

    async def authorize_page(self, request: web.Request) -> web.StreamResponse:
        params = request.query
        checked = self._check_client(params)
        if isinstance(checked, web.Response):
            return checked
        client, redirect_uri = checked
        problem = self._check_request(params)
        if problem is not None:
            return _redirect(
                redirect_uri,
                error=problem[0],
                error_description=problem[1],
                state=params.get("state"),
            )
        user_id = self._session_user(request)
        scopes = tuple(str(params["scope"]).split())
        if (
            params.get("prompt") == "none"
            and user_id is not None
            and (user_id, client.client_id, scopes) in self._consented
        ):
            code = self._issue_code(client, user_id, params, redirect_uri)
            return _redirect(redirect_uri, code=code, state=params.get("state"))
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = _PageTicket(
            params=tuple((k, v) for k, v in params.items()),
            user_id=user_id,
            expires_at=time.time() + 1800,
        )
        return self._page(client, scopes, ticket, user_id)

    def _page(
        self, client: OAuthClient, scopes: tuple[str, ...], ticket: str, user_id: int | None
    ) -> web.Response:
        esc = html.escape
        if user_id is not None:
            user = self.world.users[user_id]
            who = (
                f'<p class="who" id="signed-in-as" data-user-id="{user.id}">Signed in as '
                f"<strong>{esc(user.display_name)}</strong> (@{esc(user.username)})</p>"
            )
        else:
            options = "".join(
                f'<option value="{u.id}">{esc(u.display_name)} (@{esc(u.username)})</option>'
                for u in self.world.users.values()
                if not u.bot
            )
            who = (
                '<label for="user">Who are you?</label>'
                f'<select id="user" name="user_id" required>{options}</select>'
            )
        items = "".join(f"<li>{esc(_SCOPE_TEXT.get(s, s))}</li>" for s in scopes)
        body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Discord | Authorize access to your account</title>
<link rel="icon" href="data:,"><meta name="viewport" content="width=device-width,initial-scale=1">
<style>
body{{margin:0;background:#313338;color:#dbdee1;font:16px/1.4 system-ui,sans-serif;display:flex;
min-height:100vh;align-items:center;justify-content:center}}
main{{background:#2b2d31;border-radius:8px;padding:32px;width:400px;box-shadow:0 8px 24px #0006}}
h1{{font-size:20px;color:#f2f3f5;margin:0 0 4px}} .app{{color:#b5bac1;margin:0 0 16px}}
label{{display:block;font-size:12px;font-weight:700;text-transform:uppercase;margin:16px 0 8px}}
select{{width:100%;padding:10px;background:#1e1f22;color:#dbdee1;border:0;border-radius:4px}}
ul{{padding-left:20px}} .who{{margin:16px 0}}
.actions{{display:flex;gap:8px;justify-content:flex-end;margin-top:24px}}
button{{border:0;border-radius:4px;padding:10px 20px;font-size:14px;cursor:pointer;color:#fff}}
#authorize{{background:#5865f2}} #cancel{{background:transparent;color:#dbdee1}}
</style></head>
<body><main>
<h1>{esc(client.name)}</h1>
<p class="app">wants to access your Discord account</p>
<form method="post" action="/oauth2/authorize" id="oauth-form">
<input type="hidden" name="ticket" value="{ticket}">
{who}
<p>This will allow the developer of <strong>{esc(client.name)}</strong> to:</p>
<ul id="scopes">{items}</ul>
<div class="actions">
<button type="submit" id="cancel" name="action" value="cancel" formnovalidate>Cancel</button>
<button type="submit" id="authorize" name="action" value="authorize">Authorize</button>
</div></form></main></body></html>"""
        return web.Response(
            text=body,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "img-src data:; "
                "form-action 'self' *; frame-ancestors 'none'",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "strict-origin-when-cross-origin",
            },
        )

    async def authorize_submit(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        ticket = self._tickets.pop(str(form.get("ticket", "")), None)
        if ticket is None or ticket.expires_at < time.time():
            return _error_page(
                "This page has expired", "Go back to the application and try again.", status=400
            )
        params = dict(ticket.params)
        checked = self._check_client(params)
        if isinstance(checked, web.Response):
            return checked
        client, redirect_uri = checked
        state = params.get("state")
        if form.get("action") != "authorize":
            return _redirect(
                redirect_uri,
                error="access_denied",
                error_description="The resource owner or authorization server denied the request",
                state=state,
            )
        user_id = ticket.user_id
        response_cookie: str | None = None
        if user_id is None:
            try:
                user_id = int(str(form.get("user_id", "")))
                user = self.world.user(user_id)
            except (ValueError, EmulatorError):
                return _error_page(
                    "Pick who you are", "Choose one of the listed users.", status=400
                )
            if user.bot:
                return _error_page("Pick who you are", "Bots cannot sign in.", status=400)
            response_cookie = secrets.token_urlsafe(24)
            self._sessions[response_cookie] = user_id
        scopes = tuple(str(params["scope"]).split())
        self._consented.add((user_id, client.client_id, scopes))
        code = self._issue_code(client, user_id, params, redirect_uri)
        response = _redirect(redirect_uri, code=code, state=state)
        if response_cookie is not None:
            response.set_cookie(
                SESSION_COOKIE, response_cookie, httponly=True, samesite="Lax", path="/"
            )
        return response

    def _issue_code(self, client: OAuthClient, user_id: int, params: Any, redirect_uri: str) -> str:
        code = secrets.token_urlsafe(22)
        self.codes[code] = AuthorizationCode(
            code=code,
            client_id=client.client_id,
            user_id=user_id,
            redirect_uri=params.get("redirect_uri") and redirect_uri,
            scopes=tuple(str(params["scope"]).split()),
            code_challenge=params.get("code_challenge"),
            expires_at=time.time() + CODE_LIFETIME,
        )
        return code

    # ------------------------------------------------------------------ token endpoint

    async def token(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await self._form(request)
            client = self._authenticate_client(request, form)
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                grant = self._exchange_code(client, form)
            elif grant_type == "refresh_token":
                grant = self._refresh(client, form)
            elif not grant_type:
                raise OAuthError("unsupported_grant_type", 'Missing "grant_type" in request.')
            else:
                raise OAuthError(
                    "unsupported_grant_type", f'Unsupported grant_type "{grant_type}".'
                )
        except OAuthError as exc:
            headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
            if exc.status == 401 and request.headers.get("Authorization", "").startswith("Basic "):
                headers["WWW-Authenticate"] = 'Basic realm="discord"'
            return _oauth_json(
                {"error": exc.error, "error_description": exc.description}, exc.status, headers
            )
        return _oauth_json(
            grant.to_json(), 200, {"Cache-Control": "no-store", "Pragma": "no-cache"}
        )

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await self._form(request)
            client = self._authenticate_client(request, form)
        except OAuthError as exc:
            return _oauth_json(
                {"error": exc.error, "error_description": exc.description}, exc.status, {}
            )
        token = form.get("token", "")
        grant = self.access_tokens.get(token) or self.refresh_tokens.get(token)
        if grant is not None and grant.client_id == client.client_id:
            grant.revoked = True
        return _oauth_json({}, 200, {"Cache-Control": "no-store"})

    async def _form(self, request: web.Request) -> dict[str, str]:
        if request.content_type != "application/x-www-form-urlencoded":
            raise OAuthError(
                "invalid_request", "The request must be application/x-www-form-urlencoded."
            )
        form = await request.post()
        return {k: str(v) for k, v in form.items()}

    def _authenticate_client(self, request: web.Request, form: dict[str, str]) -> OAuthClient:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            if "client_secret" in form:
                raise OAuthError("invalid_request", "Use one client authentication method.")
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
                raw_id, _, raw_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "Malformed Basic authorization.", 401) from None
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
        else:
            client_id = form.get("client_id", "")
            secret = form.get("client_secret", "")
        client = self.clients.get(client_id)
        if client is None or not secret or not hmac.compare_digest(client.client_secret, secret):
            raise OAuthError("invalid_client", "Client authentication failed.", 401)
        return client

    def _exchange_code(self, client: OAuthClient, form: dict[str, str]) -> Grant:
        code = self.codes.get(form.get("code", ""))
        if code is None or code.client_id != client.client_id or code.expires_at < time.time():
            raise OAuthError("invalid_grant", 'Invalid "code" in request.')
        if code.used:
            for grant in code.issued:
                grant.revoked = True
            raise OAuthError("invalid_grant", 'Invalid "code" in request.')
        code.used = True
        redirect_uri = form.get("redirect_uri")
        if code.redirect_uri is not None and redirect_uri != code.redirect_uri:
            raise OAuthError("invalid_grant", 'Invalid "redirect_uri" in request.')
        if code.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS:
                raise OAuthError("invalid_grant", 'Invalid "code_verifier" in request.')
            digest = hashlib.sha256(verifier.encode("ascii")).digest()
            expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
            if not hmac.compare_digest(expected, code.code_challenge):
                raise OAuthError("invalid_grant", 'Invalid "code_verifier" in request.')
        grant = self._new_grant(client.client_id, code.user_id, code.scopes)
        code.issued.append(grant)
        return grant

    def _refresh(self, client: OAuthClient, form: dict[str, str]) -> Grant:
        old = self.refresh_tokens.get(form.get("refresh_token", ""))
        if old is None or old.revoked or old.client_id != client.client_id:
            raise OAuthError("invalid_grant", 'Invalid "refresh_token" in request.')
        scopes = old.scopes
        if form.get("scope"):
            wanted = tuple(form["scope"].split())
            if not set(wanted) <= set(old.scopes):
                raise OAuthError("invalid_scope", "The requested scope exceeds the granted scope.")
            scopes = wanted
        old.revoked = True
        return self._new_grant(client.client_id, old.user_id, scopes)

    def _new_grant(self, client_id: str, user_id: int, scopes: tuple[str, ...]) -> Grant:
        grant = Grant(
            access_token=secrets.token_urlsafe(22),
            refresh_token=secrets.token_urlsafe(22),
            client_id=client_id,
            user_id=user_id,
            scopes=scopes,
            expires_at=time.time() + TOKEN_LIFETIME,
        )
        self.access_tokens[grant.access_token] = grant
        self.refresh_tokens[grant.refresh_token] = grant
        return grant

    # ------------------------------------------------------------------ bearer APIs

    def me(self, grant: Grant) -> JSON:
        if "identify" not in grant.scopes:
            raise UNAUTHORIZED
        user = self.world.users[grant.user_id]
        data = user.to_json()
        data.update(locale=user.locale, mfa_enabled=False, premium_type=0)
        if "email" in grant.scopes:
            data.update(email=user.email, verified=True)
        return data

    def authorization_info(self, grant: Grant) -> JSON:
        world = self.world
        data: JSON = {
            "application": {
                "id": grant.client_id,
                "name": self.clients[grant.client_id].name,
                "icon": None,
                "description": "",
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": hashlib.sha256(grant.client_id.encode()).hexdigest(),
            },
            "scopes": list(grant.scopes),
            "expires": iso(_utc(grant.expires_at)),
        }
        if "identify" in grant.scopes:
            data["user"] = world.users[grant.user_id].to_json()
        return data

    def guilds(self, grant: Grant) -> list[JSON]:
        if "guilds" not in grant.scopes:
            raise UNAUTHORIZED
        world = self.world
        result: list[JSON] = []
        for guild in world.guilds.values():
            if grant.user_id in guild.members:
                perms = world.base_permissions(guild.id, grant.user_id)
                result.append(
                    {
                        "id": str(guild.id),
                        "name": guild.name,
                        "icon": None,
                        "banner": None,
                        "owner": guild.owner_id == grant.user_id,
                        "permissions": str(perms & P.ALL),
                        "features": [],
                    }
                )
        return result


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC)


def _redirect(uri: str, **params: str | None) -> web.Response:
    parts = urllib.parse.urlsplit(uri)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query.extend((k, v) for k, v in params.items() if v is not None)
    location = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _error_page(title: str, detail: str, *, status: int = 400) -> web.Response:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>Discord | {html.escape(title)}</title></head><body>"
        f'<main id="oauth-error"><h1>{html.escape(title)}</h1><p>{html.escape(detail)}</p></main>'
        "</body></html>"
    )
    return web.Response(
        text=body, status=status, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def _oauth_json(data: JSON, status: int, headers: dict[str, str]) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**headers, "Content-Type": "application/json"},
    )
