"""Sandbox brokers for local mode: settings that load, an OAuth client per broker whose only
callback is Tradecord's, and adapters that work through those settings."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html import unescape
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from adapters.base import AdapterContext, StaticToken
from adapters.models import Environment
from adapters.registry import get_adapter_class
from bot.settings import BROKERS, load_settings
from emulators.sandbox import SandboxBrokers, callback_url, start_sandbox_brokers

PUBLIC_URL = "http://127.0.0.1:8080"
INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
ACTION = re.compile(r'<form method="post" action="([^"]+)">')
FIRST_USER = re.compile(r'<select id="user" name="user_id"><option value="([^"]+)">')


@pytest.fixture
async def brokers() -> AsyncIterator[SandboxBrokers]:
    sandbox = await start_sandbox_brokers(PUBLIC_URL)
    yield sandbox
    await sandbox.stop()


def test_settings_point_every_broker_at_its_emulator(brokers: SandboxBrokers) -> None:
    settings = load_settings(**brokers.settings_overrides)
    for key in BROKERS:
        config = settings.broker(key)
        assert config.client_id == brokers.client_id
        assert config.client_secret == brokers.client_secrets[key]
        base = brokers.emulators[key].base_url
        urls = {name: url for name, url in config.urls.items() if url is not None}
        assert {"authorize_url", "token_url", "api_url", "paper_api_url"} <= set(urls)
        assert all(url.startswith(base + "/") for url in urls.values()), urls
        # A vendor without a revoke endpoint gets none, and so does its adapter.
        oauth = get_adapter_class(key).oauth
        assert oauth is not None
        assert ("revoke_url" in urls) == (oauth.revoke_url is not None)
    assert settings.broker("alpaca").urls["data_url"] == brokers.alpaca.data_url
    assert brokers.environment["TRADECORD_ALPACA_CLIENT_ID"] == brokers.client_id


async def _authorize(
    session: aiohttp.ClientSession, key: str, url: str, client_id: str, redirect_uri: str
) -> tuple[int, str]:
    spec = get_adapter_class(key).oauth
    assert spec is not None
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": spec.scope_separator.join(spec.scopes),
        "state": "st4te",
        **spec.extra_authorize_params,
    }
    async with session.get(url, params=params, allow_redirects=False) as r:
        return r.status, await r.text()


async def _approve(session: aiohttp.ClientSession, authorize_url: str, page: str) -> str:
    """Sign in as the first user on the consent page and approve; the code from the redirect."""
    action = ACTION.search(page)
    user = FIRST_USER.search(page)
    assert action and user, page
    form = {unescape(k): unescape(v) for k, v in INPUT.findall(page)}
    form.update(user_id=unescape(user.group(1)), decision="approve")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
    async with session.post(
        origin + unescape(action.group(1)), data=form, allow_redirects=False
    ) as r:
        assert r.status in (302, 303), await r.text()
        location = r.headers["Location"]
    return location


async def _token(
    session: aiohttp.ClientSession,
    key: str,
    token_url: str,
    client_id: str,
    secret: str,
    code: str,
    redirect_uri: str,
) -> str:
    spec = get_adapter_class(key).oauth
    assert spec is not None
    form = {"grant_type": "authorization_code", "code": code}
    headers = {}
    if spec.client_auth == "client_secret_basic":
        pair = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    else:
        form.update(client_id=client_id, client_secret=secret, redirect_uri=redirect_uri)
    async with session.post(token_url, data=form, headers=headers) as r:
        body = await r.json()
        assert r.status == 200, body
    return str(body["access_token"])


@pytest.mark.parametrize("key", BROKERS)
async def test_oauth_client_takes_exactly_tradecords_callback(
    brokers: SandboxBrokers, key: str
) -> None:
    settings = load_settings(**brokers.settings_overrides)
    config = settings.broker(key)
    authorize_url = config.url("authorize_url", None)
    token_url = config.url("token_url", None)
    assert authorize_url and token_url and config.client_id and config.client_secret
    redirect = callback_url(PUBLIC_URL, key)
    async with aiohttp.ClientSession() as session:
        for wrong in (
            redirect + "x",
            f"{PUBLIC_URL}/oauth/other/callback",
            redirect.replace("127.0.0.1", "localhost"),
        ):
            status, _ = await _authorize(session, key, authorize_url, config.client_id, wrong)
            assert status == 400, wrong
        status, page = await _authorize(session, key, authorize_url, config.client_id, redirect)
        assert status == 200, page
        location = await _approve(session, authorize_url, page)
        assert location.startswith(redirect + "?")
        query = parse_qs(urlsplit(location).query)
        assert query["state"] == ["st4te"]
        token = await _token(
            session,
            key,
            token_url,
            config.client_id,
            config.client_secret,
            query["code"][0],
            redirect,
        )
        api_url = config.url("api_url", None)
        assert api_url is not None
        adapter = get_adapter_class(key)(
            AdapterContext(
                session=session,
                api_urls={Environment.LIVE: api_url},
                tokens=StaticToken(token),
                extra={"data_url": config.urls.get("data_url")},
            )
        )
        accounts = await adapter.fetch_accounts()
        assert accounts and all(a.environment is Environment.LIVE for a in accounts)


async def test_stop_closes_every_port() -> None:
    brokers = await start_sandbox_brokers(PUBLIC_URL)
    urls = [emu.base_url for emu in brokers.emulators.values()]
    await brokers.stop()
    async with aiohttp.ClientSession() as session:
        for url in urls:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(url + "/", timeout=aiohttp.ClientTimeout(total=5))


async def test_local_mode_s_brokers_open_and_close_with_the_exchange(
    brokers: SandboxBrokers,
) -> None:
    """Local mode's card said a market order placed on a Sunday waits for Monday's open, and
    the emulated Alpaca filled it at once: their market was always open."""
    sunday = datetime(2026, 11, 29, 15, 0, tzinfo=UTC)
    monday = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York
    for at, open_ in ((sunday, False), (monday, True), (sunday, False)):
        task = asyncio.create_task(brokers.follow_the_exchange(now=lambda at=at: at))
        await asyncio.sleep(0)
        task.cancel()
        assert (
            brokers.alpaca.market_open,
            brokers.tradier.market_open,
            brokers.tradestation.market_open,
        ) == (open_, open_, open_), at
