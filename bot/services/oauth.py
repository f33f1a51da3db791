"""OAuth 2.0 client work for brokers, through authlib: authorization URLs, code exchange,
refresh and revocation. The protocol is authlib's; this module only supplies each broker's
endpoints, client authentication and scopes, and turns failures into our errors.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from adapters.base import BrokerAdapter, OAuthSpec
from adapters.errors import AuthorizationExpired, BrokerUnavailable
from bot.settings import BrokerConfig, Settings

log = logging.getLogger("tradecord.oauth")
TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Endpoints:
    """A broker's OAuth endpoints after settings overrides."""

    spec: OAuthSpec
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    refresh_url: str
    revoke_url: str | None

    def __repr__(self) -> str:  # never print the secret
        return f"Endpoints(client_id={self.client_id!r}, token_url={self.token_url!r})"


@dataclass(slots=True)
class TokenSet:
    access_token: str
    refresh_token: str | None
    expires_at: datetime | None
    scope: str | None
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    raw: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"TokenSet(expires_at={self.expires_at}, scope={self.scope!r})"


class ReauthorizationNeeded(AuthorizationExpired):
    """The broker refused our refresh token (``invalid_grant``): only a new /connect helps."""


def endpoints(cls: type[BrokerAdapter], settings: Settings) -> Endpoints:
    spec = cls.oauth
    if spec is None:
        raise ValueError(f"{cls.key} has no OAuth")
    cfg: BrokerConfig = settings.broker(cls.key)
    if not cfg.client_id:
        raise ValueError(f"{cls.key} is not configured")
    token_url = cfg.url("token_url", spec.token_url) or spec.token_url
    if spec.pkce_on_request and cfg.pkce:
        spec = dataclasses.replace(spec, pkce=True)
    return Endpoints(
        spec=spec,
        client_id=cfg.client_id,
        client_secret=cfg.client_secret or "",
        authorize_url=cfg.url("authorize_url", spec.authorize_url) or spec.authorize_url,
        token_url=token_url,
        refresh_url=cfg.url("refresh_url", spec.refresh_url) or spec.refresh_url or token_url,
        revoke_url=cfg.url("revoke_url", spec.revoke_url),
    )


def _client(
    ep: Endpoints,
    *,
    redirect_uri: str | None = None,
    scope: str | None = None,
    code_challenge_method: str | None = None,
) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=ep.client_id,
        client_secret=ep.client_secret,
        token_endpoint_auth_method=ep.spec.client_auth,
        # authlib revokes with client_secret_basic unless told: the broker's method, as for tokens.
        revocation_endpoint_auth_method=ep.spec.client_auth,
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge_method=code_challenge_method,
        timeout=TIMEOUT,
    )


def scope_of(spec: OAuthSpec) -> str:
    return spec.scope_separator.join(spec.scopes)


def authorization_url(
    ep: Endpoints,
    *,
    redirect_uri: str,
    state: str,
    code_verifier: str | None,
    extra: dict[str, str] | None = None,
) -> str:
    """The broker's authorization URL; PKCE S256 whenever the broker accepts it."""
    pkce = ep.spec.pkce and code_verifier is not None
    client = _client(
        ep,
        redirect_uri=redirect_uri,
        scope=scope_of(ep.spec),
        code_challenge_method="S256" if pkce else None,
    )
    params = {**ep.spec.extra_authorize_params, **(extra or {})}
    url, _ = client.create_authorization_url(
        ep.authorize_url, state=state, code_verifier=code_verifier if pkce else None, **params
    )
    if pkce:
        # authlib silently leaves PKCE out when misconfigured; never send a flow without it.
        query = parse_qs(urlsplit(url).query)
        if query.get("code_challenge_method") != ["S256"] or query.get("code_challenge") != [
            s256(code_verifier or "")
        ]:
            raise RuntimeError("PKCE missing from the authorization URL")
    return url


def s256(verifier: str) -> str:
    return create_s256_code_challenge(verifier)


async def discord_exchange(token_url: str, form: dict[str, str]) -> str:
    """Discord's code exchange for "Login with Discord" (identify scope): the access token."""
    client = AsyncOAuth2Client(
        client_id=form["client_id"],
        client_secret=form["client_secret"],
        token_endpoint_auth_method="client_secret_post",  # noqa: S106
        timeout=TIMEOUT,
    )
    kwargs = {k: v for k, v in form.items() if k not in ("client_id", "client_secret")}
    try:
        async with client:
            token = await client.fetch_token(token_url, **kwargs)
    except OAuthError as e:
        log.warning("Discord refused the sign-in code: %s", e.error)
        raise AuthorizationExpired(
            "Discord did not confirm the sign-in (it may have taken too long). Run /connect again."
        ) from None
    except Exception as e:
        log.warning("Discord sign-in exchange failed: %s", type(e).__name__)
        raise BrokerUnavailable("Discord did not answer. Run /connect again in a minute.") from None
    return str(token["access_token"])


async def discord_identity(me_url: str, access_token: str) -> int:
    """Which Discord user signed in (``GET /users/@me`` with their bearer token)."""
    client = AsyncOAuth2Client(
        token={"access_token": access_token, "token_type": "Bearer"}, timeout=TIMEOUT
    )
    try:
        async with client:
            resp = await client.get(me_url)
            resp.raise_for_status()
            return int(resp.json()["id"])
    except Exception as e:
        log.warning("Discord identity lookup failed: %s", type(e).__name__)
        raise BrokerUnavailable(
            "Discord did not tell us who signed in. Run /connect again."
        ) from None


def new_code_verifier() -> str:
    return generate_token(64)  # 64 chars of [A-Za-z0-9]: ~380 bits, inside RFC 7636's 43-128


def _token_set(token: dict[str, Any], now: datetime) -> TokenSet:
    expires_at = None
    if token.get("expires_in"):
        expires_at = now + timedelta(seconds=int(token["expires_in"]))
    elif token.get("expires_at"):
        expires_at = datetime.fromtimestamp(int(token["expires_at"]), UTC)
    return TokenSet(
        access_token=token["access_token"],
        refresh_token=token.get("refresh_token"),
        expires_at=expires_at,
        scope=token.get("scope"),
        token_type=str(token.get("token_type") or "Bearer").capitalize(),
        raw={
            k: v for k, v in token.items() if k not in ("access_token", "refresh_token", "id_token")
        },
    )


async def exchange_code(
    ep: Endpoints, *, code: str, redirect_uri: str, code_verifier: str | None
) -> TokenSet:
    client = _client(ep, redirect_uri=redirect_uri)
    kwargs: dict[str, Any] = {"code": code, "grant_type": "authorization_code"}
    if ep.spec.client_auth == "client_secret_post" or ep.spec.pkce:
        kwargs["redirect_uri"] = redirect_uri
    if ep.spec.pkce and code_verifier:
        kwargs["code_verifier"] = code_verifier
    try:
        async with client:
            token = await client.fetch_token(ep.token_url, **kwargs)
    except OAuthError as e:
        log.warning("Code exchange refused by %s: %s", ep.token_url, e.error)
        raise AuthorizationExpired(
            "The broker refused to complete the link (the sign-in may have taken too long). "
            "Run /connect again."
        ) from None
    except Exception as e:
        log.warning("Code exchange with %s failed: %s", ep.token_url, type(e).__name__)
        raise BrokerUnavailable(
            "The broker did not answer while finishing the link. Run /connect again in a minute."
        ) from None
    if not token.get("access_token"):
        # A bare 4xx (a 429 without a body) comes back from authlib as an empty token, as in
        # ``refresh``: the broker is busy; nothing was linked.
        log.warning("Code exchange with %s answered no token", ep.token_url)
        raise BrokerUnavailable(
            "The broker was busy and did not finish the link. Run /connect again in a minute."
        )
    return _token_set(dict(token), datetime.now(UTC))


async def refresh(ep: Endpoints, refresh_token: str) -> TokenSet:
    client = _client(ep)
    try:
        async with client:
            token = await client.refresh_token(ep.refresh_url, refresh_token=refresh_token)
    except OAuthError as e:
        if e.error in ("invalid_grant", "access_denied", "unauthorized_client"):
            raise ReauthorizationNeeded() from None
        log.warning("Refresh refused by %s: %s", ep.refresh_url, e.error)
        raise BrokerUnavailable(
            "The broker did not renew our authorization just now. Try again in a minute."
        ) from None
    except Exception as e:
        log.warning("Refresh at %s failed: %s", ep.refresh_url, type(e).__name__)
        raise BrokerUnavailable(
            "The broker did not answer while renewing our authorization. Try again in a minute."
        ) from None
    if not token.get("access_token"):
        # authlib raises only for 5xx and an ``error`` field: a bare 4xx (a 429 without a body)
        # comes back as an empty token. Busy, not a refusal: nothing to re-link.
        log.warning("Refresh at %s answered without an access token", ep.refresh_url)
        raise BrokerUnavailable(
            "The broker did not renew our authorization just now. Try again in a minute."
        )
    out = _token_set(dict(token), datetime.now(UTC))
    if out.refresh_token is None:
        out.refresh_token = refresh_token  # brokers that do not rotate keep the old one valid
    return out


async def revoke(ep: Endpoints, token: str, hint: str = "refresh_token") -> bool:
    """RFC 7009 revocation; ``False`` when the broker has none or refused."""
    if not ep.revoke_url:
        return False
    client = _client(ep)
    try:
        async with client:
            resp = await client.revoke_token(ep.revoke_url, token=token, token_type_hint=hint)
        return 200 <= resp.status_code < 300
    except Exception as e:
        log.warning("Revocation at %s failed: %s", ep.revoke_url, type(e).__name__)
        return False
