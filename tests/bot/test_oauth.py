"""Requirement 1: authlib leaves PKCE out of the authorization URL silently, so we check the
URL itself, against a challenge computed here independently of authlib."""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import re
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.tradestation import TradeStationAdapter
from bot.services import oauth

UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def _endpoints(pkce: bool) -> oauth.Endpoints:
    spec = TradeStationAdapter.oauth
    assert spec is not None
    return oauth.Endpoints(
        spec=replace(spec, pkce=pkce),
        client_id="client",
        client_secret="not-a-real-secret",
        authorize_url="https://broker.example/authorize",
        token_url="https://broker.example/token",
        refresh_url="https://broker.example/token",
        revoke_url=None,
    )


def _expected_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_authorization_url_carries_the_s256_challenge_of_the_verifier() -> None:
    verifier = oauth.new_code_verifier()
    url = oauth.authorization_url(
        _endpoints(pkce=True),
        redirect_uri="https://tradecord.example/oauth/tradestation/callback",
        state="s" * 43,
        code_verifier=verifier,
    )
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"] == [_expected_challenge(verifier)]
    assert "code_verifier" not in query  # the verifier itself never leaves us


def test_a_url_without_pkce_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """If authlib drops the challenge (as it does when misconfigured), we refuse the URL."""
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    made = AsyncOAuth2Client.create_authorization_url

    def without_pkce(self: AsyncOAuth2Client, url: str, state: str, **kw: object) -> object:
        kw.pop("code_verifier", None)
        return made(self, url, state, **kw)

    monkeypatch.setattr(AsyncOAuth2Client, "create_authorization_url", without_pkce)
    with pytest.raises(RuntimeError, match="PKCE missing"):
        oauth.authorization_url(
            _endpoints(pkce=True),
            redirect_uri="https://tradecord.example/oauth/tradestation/callback",
            state="s" * 43,
            code_verifier=oauth.new_code_verifier(),
        )


def test_code_verifier_is_long_random_and_unreserved() -> None:
    verifiers = {oauth.new_code_verifier() for _ in range(200)}
    assert len(verifiers) == 200
    for v in verifiers:
        assert UNRESERVED.fullmatch(v), v
        # Drawn uniformly from 62 symbols: at least 256 bits of entropy.
        assert len(v) * math.log2(62) >= 256


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING"])
def test_authlib_never_logs_below_info_whatever_the_log_level(level: str) -> None:
    """Requirement 13: authlib's integrations log the code verifier at DEBUG."""
    from bot.cli import setup_logging

    root, authlib_log = logging.getLogger(), logging.getLogger("authlib")
    saved = (root.level, list(root.handlers), authlib_log.level)
    try:
        root.handlers.clear()  # as at startup: basicConfig sets the root level only then
        setup_logging(level)
        assert root.level == logging.getLevelName(level)
        assert not authlib_log.isEnabledFor(logging.DEBUG)
        assert authlib_log.getEffectiveLevel() >= max(logging.INFO, logging.getLevelName(level))
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        authlib_log.setLevel(saved[2])


@pytest.mark.parametrize(("enabled", "pkce"), [(None, False), ("false", False), ("true", True)])
def test_tradestation_uses_pkce_once_the_setting_says_the_key_has_it(
    enabled: str | None, pkce: bool
) -> None:
    from adapters.alpaca import AlpacaAdapter
    from bot.settings import load_settings

    given = {"tradecord_tradestation_pkce": enabled} if enabled is not None else {}
    settings = load_settings(
        tradecord_tradestation_client_id="ts",
        tradecord_alpaca_client_id="alpaca",
        tradecord_alpaca_pkce="true",  # not a setting: Alpaca has no PKCE to turn on
        **given,
    )
    assert oauth.endpoints(TradeStationAdapter, settings).spec.pkce is pkce
    assert oauth.endpoints(AlpacaAdapter, settings).spec.pkce is False
