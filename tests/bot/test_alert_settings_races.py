"""Two admins, or two clicks, saving the same alert setting at once. Before: each service
deleted (or updated) then inserted, so under PostgreSQL's READ COMMITTED both inserted and one
hit the unique key: "Something went wrong (incident …)" for a setting that was saved."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from bot.automation_models import AlertChannel, AlertPreference
from bot.core import Core
from bot.db import Database
from bot.settings import Settings

GUILD = 777
ROUNDS = 20


@pytest.fixture
async def core(settings: Settings, db: Database) -> AsyncIterator[Core]:
    c = await Core.open(settings, migrate=False)
    yield c
    await c.close()


async def test_two_admins_choosing_the_alert_channel_at_once_both_succeed(core: Core) -> None:
    for n in range(ROUNDS):
        a, b = 1000 + 2 * n, 1001 + 2 * n
        results = await asyncio.gather(
            core.strategies.set_alert_channel(GUILD, a),
            core.strategies.set_alert_channel(GUILD, b),
            return_exceptions=True,
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        # One of the two wins, and both admins are told where alerts go now.
        assert await core.strategies.alert_channel(GUILD) in (a, b)
    async with core.db.session() as s:
        rows = await s.scalar(select(func.count()).select_from(AlertChannel))
    assert rows == 1


async def test_a_new_channel_is_not_taken_for_failing_like_the_one_it_replaces(
    core: Core,
) -> None:
    """Choosing another channel starts it afresh, as the old delete-then-insert did."""
    strategy = await core.strategies.create(GUILD, 42, "Gap fill")
    await core.strategies.set_alert_channel(GUILD, 5)
    assert await core.strategies.alert_channel_failing(GUILD, strategy.strategy.id, 5, True)
    await core.strategies.set_alert_channel(GUILD, 6)
    assert (await core.strategies.alert_routes(GUILD)).failing == {}


async def test_saving_show_my_name_twice_at_once_succeeds(core: Core) -> None:
    for n in range(ROUNDS):
        guild = GUILD + 1 + n  # a fresh guild: the first save of each round inserts
        results = await asyncio.gather(
            core.subscriptions.set_alerts_show_name(42, guild, True, "Alice"),
            core.subscriptions.set_alerts_show_name(42, guild, False),
            return_exceptions=True,
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
    async with core.db.session() as s:
        rows = list(await s.scalars(select(AlertPreference)))
    assert len(rows) == ROUNDS
    # Whichever came last, the row is whole: named only with a name.
    assert all(r.display_name == "Alice" for r in rows if r.alerts_show_name)
