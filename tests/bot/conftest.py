"""TradeStation-backed fixtures for tests that need a linked broker connection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapters.models import Environment
from bot.core import Core
from bot.models import Connection, ConnectionAccount, ConnectionStatus, Credential
from bot.services.oauth import TokenSet
from bot.services.tokens import DbTokenProvider
from bot.settings import Settings, load_settings
from emulators.tradestation import TradeStationEmulator
from emulators.tradestation.server import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from emulators.tradestation.testing import sign_in
from emulators.tradier import TradierEmulator

MEMBER = 5150


@pytest.fixture
async def ts() -> AsyncIterator[TradeStationEmulator]:
    emu = TradeStationEmulator(rotation=True)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def tradier() -> AsyncIterator[TradierEmulator]:
    emu = TradierEmulator(heartbeat_interval=3600)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
def tradier_settings(settings: Settings, tradier: TradierEmulator) -> Settings:
    """Settings with Tradier's live environment at the emulator."""
    return load_settings(
        **{k: v for k, v in settings.model_dump().items() if v is not None},
        tradecord_tradier_client_id=tradier.client_id,
        tradecord_tradier_client_secret=tradier.client_secret,
        tradecord_tradier_refresh_url=tradier.refresh_url_for(Environment.LIVE),
        tradecord_tradier_api_url=tradier.api_url(Environment.LIVE),
    )


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


async def link(
    core: Core, ts: TradeStationEmulator, *, member: int = MEMBER, name: str = "TS"
) -> int:
    """A TradeStation connection of ``member``'s named ``name``, signed in afresh (a second
    call is a second connection to the same login, as /connect makes one)."""
    async with aiohttp.ClientSession() as http:
        tokens = await sign_in(http, ts)
    return await stored_connection(
        core,
        member,
        TokenSet(
            tokens["access_token"],
            tokens["refresh_token"],
            datetime.now(UTC) + timedelta(seconds=int(tokens["expires_in"])),
            tokens["scope"],
        ),
        name=name,
    )


async def stored_connection(
    core: Core,
    discord_user_id: int,
    tokens: TokenSet,
    *,
    broker: str = "tradestation",
    name: str = "TS",
    settings: dict[str, Any] | None = None,
    accounts: Sequence[dict[str, Any]] = (),
) -> int:
    """A connection of the member's (TradeStation unless told), holding ``tokens`` as /connect
    stores them, with ``accounts`` (``ConnectionAccount`` fields) chosen."""
    member_id = await core.members.ensure(discord_user_id)
    async with core.db.transaction() as s:
        conn = Connection(
            member_id=member_id,
            broker=broker,
            name=name,
            name_key=name.casefold(),
            status=ConnectionStatus.ACTIVE,
            settings=settings or {},
        )
        s.add(conn)
        await s.flush()
        for account in accounts:
            s.add(ConnectionAccount(connection_id=conn.id, **account))
        cred = Credential(connection_id=conn.id, access_token="")
        s.add(cred)
        member = await core.connections.member_of(conn)
        DbTokenProvider(core, conn.id).store(cred, conn, member, tokens)
        return conn.id


async def connection(core: Core, cid: int) -> Connection:
    async with core.db.session() as s:
        c = await s.scalar(
            select(Connection)
            .where(Connection.id == cid)
            .options(selectinload(Connection.accounts))
        )
    assert c is not None
    return c
