"""Token lifecycle: refresh once per connection across callers and processes; invalid_grant
marks the connection for re-linking and is never retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from adapters.errors import AuthorizationExpired
from bot.core import Core
from bot.db import Database
from bot.models import AuditEvent, Connection, ConnectionStatus, Credential
from bot.services.notify import RecordingNotifier
from bot.services.oauth import TokenSet
from bot.services.tokens import DbTokenProvider
from bot.settings import Settings, load_settings
from emulators.tradestation import TradeStationEmulator
from emulators.tradestation.server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from emulators.tradestation.testing import sign_in

MEMBER = 5150


@pytest.fixture
async def ts() -> AsyncIterator[TradeStationEmulator]:
    emu = TradeStationEmulator(rotation=True)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def ts_settings(settings: Settings, ts: TradeStationEmulator, tmp_path: Path) -> Settings:
    return load_settings(
        **{k: v for k, v in settings.model_dump().items() if v is not None},
        tradecord_tradestation_client_id=DEFAULT_CLIENT_ID,
        tradecord_tradestation_client_secret=DEFAULT_CLIENT_SECRET,
        tradecord_tradestation_authorize_url=ts.authorize_url,
        tradecord_tradestation_token_url=ts.token_url,
        tradecord_tradestation_revoke_url=ts.revoke_url,
        tradecord_tradestation_api_url=ts.api_url("live"),
        tradecord_tradestation_paper_api_url=ts.api_url("paper"),
    )


async def open_cores(settings: Settings, n: int) -> list[Core]:
    # Each Core stands for a separate process: own engine, own locks, same database.
    return [await Core.open(settings, migrate=False) for _ in range(n)]


async def link(core: Core, ts: TradeStationEmulator) -> int:
    async with aiohttp.ClientSession() as http:
        tokens = await sign_in(http, ts)
    member_id = await core.members.ensure(MEMBER)
    async with core.db.transaction() as s:
        conn = Connection(member_id=member_id, broker="tradestation", name="TS",
                          name_key="ts", status=ConnectionStatus.ACTIVE)
        s.add(conn)
        await s.flush()
        cred = Credential(connection_id=conn.id, access_token="")
        s.add(cred)
        member = await core.connections.member_of(conn)
        DbTokenProvider(core, conn.id).store(cred, conn, member, TokenSet(
            tokens["access_token"], tokens["refresh_token"],
            datetime.now(UTC) + timedelta(seconds=int(tokens["expires_in"])), tokens["scope"],
        ))
        return conn.id


async def connection(core: Core, cid: int) -> Connection:
    async with core.db.session() as s:
        from sqlalchemy.orm import selectinload

        c = await s.scalar(select(Connection).where(Connection.id == cid)
                           .options(selectinload(Connection.accounts)))
    assert c is not None
    return c


async def test_concurrent_callers_over_several_processes_refresh_once(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    cores = await open_cores(ts_settings, 4)
    try:
        cid = await link(cores[0], ts)
        ts.oauth.expire_access_tokens()  # every caller now gets a 401 first
        before = ts.oauth.refresh_requests
        adapters = [await c.connections.adapter_for(await connection(c, cid)) for c in cores]
        results = await asyncio.gather(*(adapters[i % 4].fetch_accounts() for i in range(24)))
        assert all(results)
        assert ts.oauth.refresh_requests - before == 1
    finally:
        for c in cores:
            await c.close()


async def test_new_refresh_token_is_saved_before_use(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old_access = await provider.access_token()
        async with core.db.session() as s:
            old_refresh = (await s.get(Credential, cid)).refresh_token  # type: ignore[union-attr]
        new_access = await provider.refresh(old_access)
        async with core.db.session() as s:
            cred = await s.get(Credential, cid)
        assert cred is not None and cred.refresh_token != old_refresh  # rotated and stored
        assert await provider.access_token() == new_access
    finally:
        await core.close()


async def test_invalid_grant_marks_reauth_and_is_never_retried(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        cid = await link(core, ts)
        ts.oauth.revoke_user_grants(DEFAULT_CLIENT_ID, "demo")
        ts.oauth.expire_access_tokens()
        adapter = await core.connections.adapter_for(await connection(core, cid))
        with pytest.raises(AuthorizationExpired, match="/connect tradestation"):
            await adapter.fetch_accounts()
        refreshes = ts.oauth.refresh_requests
        with pytest.raises(AuthorizationExpired):
            await adapter.fetch_accounts()
        assert ts.oauth.refresh_requests == refreshes  # not retried
        assert (await connection(core, cid)).status == ConnectionStatus.NEEDS_REAUTH
        [(user, message)] = notifier.dms
        assert user == MEMBER and "/connect tradestation" in (message.content or "")
        async with core.db.session() as s:
            kinds = list(await s.scalars(select(AuditEvent.kind).where(
                AuditEvent.connection_id == cid)))
        assert "connection.needs_reauth" in kinds
    finally:
        await core.close()
