"""Helpers for tests and local mode: sign in at the emulator over HTTP, and a token provider
that refreshes at the emulator's token endpoint the way TradeStation's clients must."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from adapters.errors import AuthorizationExpired

from .server import AUDIENCE, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, TradeStationEmulator

SCOPES = "openid offline_access ReadAccount MarketData Trade"
REDIRECT_URI = "http://localhost:8080/oauth/tradestation/callback"


async def authorization_code(
    session: aiohttp.ClientSession,
    emu: TradeStationEmulator,
    *,
    user_id: str = "demo",
    client_id: str = DEFAULT_CLIENT_ID,
    redirect_uri: str = REDIRECT_URI,
    scope: str = SCOPES,
    state: str = "state-for-tests",
    extra: dict[str, str] | None = None,
) -> str:
    """Open the authorize page, approve as ``user_id``, and return the code from the redirect."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "audience": AUDIENCE,
        "redirect_uri": redirect_uri,
        "state": state,
        "scope": scope,
        **(extra or {}),
    }
    async with session.get(emu.authorize_url, params=params, allow_redirects=False) as r:
        if r.status != 200:
            raise AssertionError(f"authorize page answered {r.status}: {r.headers.get('Location')}")
    form = {k: v for k, v in params.items() if k not in ("response_type", "audience")}
    form.update(user_id=user_id, decision="approve")
    async with session.post(
        f"{emu.base_url}/signin/u/consent", data=form, allow_redirects=False
    ) as r:
        location = r.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    if "code" not in query:
        raise AssertionError(f"no code in the redirect: {location}")
    assert query["state"] == [state]
    return query["code"][0]


async def sign_in(
    session: aiohttp.ClientSession,
    emu: TradeStationEmulator,
    *,
    user_id: str = "demo",
    client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    redirect_uri: str = REDIRECT_URI,
    scope: str = SCOPES,
) -> dict[str, Any]:
    """The whole code flow; returns the token response."""
    code = await authorization_code(
        session, emu, user_id=user_id, client_id=client_id, redirect_uri=redirect_uri, scope=scope
    )
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": client_secret,
        "code": code,
        "redirect_uri": redirect_uri,
    }
    async with session.post(emu.token_url, data=form) as r:
        body: dict[str, Any] = await r.json()
        if r.status != 200:
            raise AssertionError(f"token exchange failed: {body}")
        return body


class EmulatorTokens:
    """A ``TokenProvider`` over the emulator's token endpoint: single-flight refresh, keeps a
    rotated refresh token, and turns ``invalid_grant`` into ``AuthorizationExpired``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_url: str,
        tokens: dict[str, Any],
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
    ) -> None:
        self.session = session
        self.token_url = token_url
        self.access = str(tokens["access_token"])
        self.refresh_token = tokens.get("refresh_token")
        self.client_id = client_id
        self.client_secret = client_secret
        self.refreshes = 0
        self._lock = asyncio.Lock()

    async def access_token(self) -> str:
        return self.access

    async def refused(self, token: str, reason: str) -> None:
        return None  # nothing stored to mark: the test sees the error

    async def refresh(self, rejected_token: str) -> str:
        async with self._lock:
            if self.access != rejected_token:
                return self.access  # someone refreshed while we waited
            if not self.refresh_token:
                raise AuthorizationExpired()
            form = {
                "grant_type": "refresh_token",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "refresh_token": self.refresh_token,
            }
            async with self.session.post(self.token_url, data=form) as r:
                body = await r.json()
                if r.status != 200:
                    raise AuthorizationExpired()
            self.refreshes += 1
            self.access = body["access_token"]
            self.refresh_token = body.get("refresh_token", self.refresh_token)
            return self.access
