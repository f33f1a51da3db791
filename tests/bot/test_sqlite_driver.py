"""The on-loop SQLite driver: waits for SQLite's write lock without blocking the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import OperationalError

from bot import sqlite_driver
from bot.db import Database
from bot.models import Member


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    await db.upgrade()
    yield db
    await db.close()


def _blocker(db: Database) -> sqlite3.Connection:
    """Another process's connection holding SQLite's write lock."""
    conn = sqlite3.connect(db.engine.url.database or "", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def _add_member(db: Database, discord_id: int) -> None:
    async with db.transaction() as s:
        s.add(Member(discord_user_id=discord_id))


async def test_a_write_waits_for_the_lock_while_the_loop_keeps_running(
    sqlite_db: Database,
) -> None:
    blocker = _blocker(sqlite_db)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    tick_task = asyncio.create_task(ticker())
    write = asyncio.create_task(_add_member(sqlite_db, 11))
    # Half a second: a blocked loop ticks about once, a free one hundreds of times, and a
    # garbage-collection pause on a loaded machine cannot close that gap.
    await asyncio.sleep(0.5)
    assert not write.done(), "the write went through while another connection held the lock"
    assert ticks > 20, "the event loop was blocked while the write waited"
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.wait_for(write, 5)
    tick_task.cancel()
    async with sqlite_db.session() as s:
        assert await s.scalar(select(Member.id).where(Member.discord_user_id == 11)) is not None


async def test_a_write_gives_up_like_busy_timeout_did(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "BUSY_WAIT_SECONDS", 0.1)
    blocker = _blocker(sqlite_db)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            await _add_member(sqlite_db, 12)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    async with sqlite_db.session() as s:
        assert await s.scalar(select(Member.id).where(Member.discord_user_id == 12)) is None


async def test_reads_go_on_while_another_connection_writes(sqlite_db: Database) -> None:
    await _add_member(sqlite_db, 13)
    blocker = _blocker(sqlite_db)
    try:
        async with sqlite_db.session() as s:
            found = await s.scalar(select(Member.id).where(Member.discord_user_id == 13))
        assert found is not None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_the_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    assert db.inline is not None
    db.inline.checkpoint_every = 10
    try:
        async with db.transaction() as s:
            await s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        # Connections never checkpoint on commit: the rows stay in the log...
        size_before = path.stat().st_size
        for i in range(8):
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 4000 + str(i)})
        assert path.stat().st_size == size_before
        # ...until the driver's thread copies them into the database file.
        for i in range(3):
            async with db.transaction() as s:
                await s.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "y" * 4000 + str(i)})
        # The checkpoint writes page by page: wait for all of it, not for its first page.
        for _ in range(500):
            if path.stat().st_size > size_before + 8 * 4000:
                break
            await asyncio.sleep(0.01)
        assert path.stat().st_size > size_before + 8 * 4000
    finally:
        await db.close()


async def test_autocommit_isolation_works_without_a_driver_thread(sqlite_db: Database) -> None:
    # SQLAlchemy sets isolation_level through aiosqlite's queue; the driver runs it at once.
    async with sqlite_db.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(insert(Member).values(discord_user_id=14))
        other = sqlite3.connect(sqlite_db.engine.url.database or "")
        try:
            found = other.execute("SELECT count(*) FROM members WHERE discord_user_id = 14")
            assert found.fetchone() == (1,)  # visible before this connection ends: autocommitted
        finally:
            other.close()
