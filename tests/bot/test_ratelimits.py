"""Broker rate limits in the database: every process takes from the same bucket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import Connection, inspect

from adapters.alpaca import AlpacaAdapter
from adapters.base import LimiterRegistry, RateLimit
from adapters.tradestation import TradeStationAdapter
from adapters.tradier import TradierAdapter
from bot.core import Core
from bot.db import Database, alembic_config
from bot.services.ratelimits import SharedLimiters, _Take
from bot.settings import Settings

# 50 requests per 50 s: a burst of 5, then one request's room drains every 1.1 s, longer than
# a check waits.
ORDERS = RateLimit("orders", 50, 50.0)
APP = RateLimit("orders", 50, 50.0, scope="app")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def processes(db: Database, database_url: str) -> AsyncIterator[list[Database]]:
    """Two more engines on the migrated test database: two processes."""
    dbs = [Database(database_url), Database(database_url)]
    yield dbs
    for other in dbs:
        await other.close()


async def blocked(limiter: object) -> bool:
    """Whether taking one more request has to wait (the wait itself is not sat out)."""
    try:
        await asyncio.wait_for(limiter.acquire(), 0.5)  # type: ignore[attr-defined]
    except TimeoutError:
        return True
    return False


@pytest.mark.first
async def test_two_processes_stay_under_one_limit_together(processes: list[Database]) -> None:
    clock = Clock()
    one, two = (SharedLimiters(p, clock) for p in processes)
    mine, theirs = one.get("alpaca", ORDERS, "conn-1"), two.get("alpaca", ORDERS, "conn-1")
    for limiter in (mine, theirs, mine, theirs, mine):
        assert not await blocked(limiter)
    assert await blocked(theirs) and await blocked(mine)  # 5 sent between them
    # Per account: another connection has its own bucket.
    assert not await blocked(two.get("alpaca", ORDERS, "conn-2"))
    clock.now += 1.2  # one request's room has drained
    assert not await blocked(theirs)
    assert await blocked(mine)


async def test_an_app_wide_limit_is_one_bucket_for_every_connection(
    processes: list[Database],
) -> None:
    clock = Clock()
    one, two = (SharedLimiters(p, clock) for p in processes)
    for n in range(5):
        registry = one if n % 2 else two
        assert not await blocked(registry.get("tradier", APP, f"conn-{n}"))
    assert await blocked(one.get("tradier", APP, "conn-9"))


def test_in_one_process_an_account_limit_is_per_connection_and_an_app_limit_is_shared() -> None:
    """``LimiterRegistry`` (SQLite deployments) keys buckets as ``SharedLimiters`` does."""
    registry = LimiterRegistry()
    mine = registry.get("alpaca", ORDERS, "conn-1")
    assert registry.get("alpaca", ORDERS, "conn-1") is mine  # its requests add up
    assert registry.get("alpaca", ORDERS, "conn-2") is not mine
    assert registry.get("tradier", ORDERS, "conn-1") is not mine  # brokers apart
    app = registry.get("tradier", APP, "conn-1")
    assert registry.get("tradier", APP, "conn-2") is app
    assert (app.max_rate, app.time_period) == (5, pytest.approx(50 / 45 * 5))


@pytest.mark.parametrize(
    "rule",
    [  # the largest, the smallest, and one a minute (every broker's others are alike)
        TradeStationAdapter.capabilities.rate_limits[0],
        TradeStationAdapter.capabilities.rate_limits[-1],
        AlpacaAdapter.capabilities.rate_limits[0],
        TradierAdapter.capabilities.rate_limits[-2],
    ],
    ids=lambda r: f"{r.bucket}-{r.requests}/{r.seconds:g}s",
)
async def test_a_greedy_caller_stays_within_the_published_limit_in_any_window(
    processes: list[Database], rule: RateLimit
) -> None:
    """A bucket the size of the limit let through twice it in the first window (all at once,
    then as much again as it drained): TradeStation, counting from the first request, 429s."""
    clock = Clock()
    limiter = SharedLimiters(processes[0], clock).get("broker", rule, "conn-1")
    take = _Take(limiter.key, limiter.capacity, limiter.per_second, 1)
    sent: list[float] = []
    while clock.now < 1_000_000.0 + 2 * rule.seconds:
        if await limiter.registry.take(take) <= 0:
            sent.append(clock.now)
        else:
            clock.now += rule.seconds / 100
    for i, start in enumerate(sent):
        within = sum(1 for t in sent[i:] if t < start + rule.seconds)
        assert within <= rule.requests, (start, within)
    # ...and still sends most of it: at least 85% of the limit in the window after the first.
    assert sum(1 for t in sent if t >= 1_000_000.0 + rule.seconds) >= 0.85 * rule.requests


async def test_many_takes_at_once_are_one_transaction_and_each_counted(
    processes: list[Database],
) -> None:
    limiter = SharedLimiters(processes[0], Clock()).get("alpaca", ORDERS, "conn-1")
    done = await asyncio.wait(
        [asyncio.ensure_future(limiter.acquire()) for _ in range(8)], timeout=0.5
    )
    assert [len(done[0]), len(done[1])] == [5, 3]
    for pending in done[1]:
        pending.cancel()


async def test_postgresql_deployments_share_limits_and_sqlite_keeps_them_in_memory(
    settings: Settings, db: Database
) -> None:
    core = await Core.open(settings, migrate=False)
    try:
        shared = isinstance(core.connections.limiters, SharedLimiters)
        assert shared is not db.is_sqlite
        assert shared or isinstance(core.connections.limiters, LimiterRegistry)
    finally:
        await core.close()


async def test_the_rate_buckets_migration_applies_and_reverses(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    cfg = alembic_config(empty_database_url)

    def tables(conn: Connection) -> list[str]:
        return inspect(conn).get_table_names()

    def migrate(conn: Connection, verb: str, revision: str) -> None:
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)

    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0006")
            assert "broker_rate_buckets" in await conn.run_sync(tables)
            await conn.run_sync(migrate, "downgrade", "0005")
            assert "broker_rate_buckets" not in await conn.run_sync(tables)
    finally:
        await db.close()
