"""The acknowledgement's storage: SQLite's direct path and the SQLAlchemy path give the same
rows and the same answers, and a locked SQLite database delays an answer without losing it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, select

from bot.automation_models import Job, ReceivedSignal
from bot.core import Core
from bot.db import Database, alembic_config
from tests.bot.signals.conftest import count, make_strategy, send
from tests.conftest import requires_sqlite
from tests.support import FakeClock


async def exchange(core: Core, clock: FakeClock) -> list[tuple[int, str | None]]:
    url = await make_strategy(core)
    answers = []
    for body in (
        {"ticker": "AAPL", "action": "buy", "quantity": 1},
        {"ticker": "AAPL", "action": "buy", "quantity": 1},  # duplicate
        {"ticker": "AAPL", "action": "hold"},  # refused
        b"{not json",
    ):
        ack = await send(core, url, body)
        answers.append((ack.status, ack.body.get("messageCode")))
        clock.advance(seconds=1)
    return answers


@pytest.mark.parametrize("direct", [True, False])
async def test_both_storage_paths_answer_and_store_alike(
    core: Core, clock: FakeClock, direct: bool
) -> None:
    if not direct:
        core.signals.acks.fast = None
    elif core.signals.acks.fast is None:
        pytest.skip("the direct path is SQLite's")
    start = clock()
    answers = await exchange(core, clock)
    assert answers == [
        (202, None),
        (200, None),
        (400, "invalid-action"),
        (400, "malformed-json"),
    ]
    async with core.db.session() as s:
        rows = list(await s.scalars(select(ReceivedSignal).order_by(ReceivedSignal.received_at)))
        [job] = list(await s.scalars(select(Job)))
    assert [r.status for r in rows] == ["queued", "duplicate", "refused", "refused"]
    first = rows[0]
    assert first.received_at == start and first.received_at.tzinfo is not None
    assert first.payload is not None and first.payload["quantity"] == "1"
    assert rows[1].duplicate_of == first.id and rows[2].payload is None
    assert rows[3].body == "{not json" and rows[2].test is False
    assert job.payload == {"signal_id": first.id} and job.run_after == first.received_at


@requires_sqlite
async def test_a_locked_database_delays_the_answer_but_loses_nothing(core: Core) -> None:
    url = await make_strategy(core)
    await send(core, url, {"ticker": "AAPL", "action": "buy"})  # opens the direct connection
    assert core.signals.acks.fast is not None
    blocker = sqlite3.connect(core.signals.acks.fast.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process is writing
    try:
        pending: asyncio.Task[Any] = asyncio.create_task(
            send(core, url, {"ticker": "AAPL", "action": "buy", "quantity": 2})
        )
        await asyncio.sleep(0.3)
        assert not pending.done()  # waiting for the lock, in its thread: the loop runs on
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    ack = await asyncio.wait_for(pending, 10)
    assert ack.status == 202
    assert await count(core, ReceivedSignal) == 2


async def test_acknowledgements_arriving_together_keep_the_limit_and_the_window(
    core: Core,
) -> None:
    """60 requests at once, the limit, one body sent twice: whichever of the pair is stored
    first is queued and the other answered as its duplicate (concurrent requests take the
    strategy's lock in no fixed order). The duplicate counts toward the rate: a 61st is 429."""
    url = await make_strategy(core)
    bodies: list[dict[str, Any]] = [
        {"ticker": "AAPL", "action": "buy", "quantity": i + 1} for i in range(59)
    ]
    bodies.insert(30, dict(bodies[0]))  # the same body twice in one burst
    acks = await asyncio.gather(*(send(core, url, b) for b in bodies))
    assert sorted(a.status for a in acks) == [200] + [202] * 59
    pair = {acks[0].status: acks[0], acks[30].status: acks[30]}
    assert set(pair) == {200, 202}
    assert pair[200].body["id"] == pair[202].body["id"]
    over = await send(core, url, {"ticker": "AAPL", "action": "buy", "quantity": 99})
    assert over.status == 429
    assert await count(core, ReceivedSignal) == 60
    assert await count(core, Job) == 59


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"ticker":"AAPL","action":"buy","extras":{"n":1e1000000}}', None),
        (b'{"ticker":"AAPL","action":"buy","quantity":1e99999999999999999999}', "invalid-payload"),
        # Written out in full, this price is 60 billion digits: refused, never expanded.
        (b'{"ticker":"AAPL","action":"buy","price":1E-60000000000}', "invalid-price"),
    ],
)
async def test_numbers_no_decimal_holds_get_an_answer_not_an_error(
    core: Core, raw: bytes, code: str | None
) -> None:
    """Valid JSON whose numbers overflow: answered (stored and echoed, or refused), never an
    exception after the signal was stored, which the webhook would answer 500 and the sender
    would retry."""
    url = await make_strategy(core)
    ack = await send(core, url, raw)
    assert await count(core, ReceivedSignal) == 1
    if code is None:
        assert ack.status == 202, ack.body
        json.dumps(ack.body, allow_nan=False)
        assert ack.body["payload"]["extras"] == {"n": "1E+1000000"}
    else:
        assert (ack.status, ack.body["messageCode"]) == (400, code)


@requires_sqlite
async def test_the_duplicate_check_seeks_the_body_hash_instead_of_reading_the_day(
    core: Core,
) -> None:
    """Each acknowledgement looks for an earlier signal with the same body in the duplicate
    window (a day when this was found). Read through the (strategy, time) index, that lookup
    visited every signal the strategy sent in it, so acknowledgements slowed down as the
    strategy traded."""
    url = await make_strategy(core)
    await send(core, url, {"ticker": "AAPL", "action": "buy"})
    assert core.signals.acks.fast is not None
    conn = sqlite3.connect(core.signals.acks.fast.path)
    try:
        plan = [
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {core.signals.acks.fast._counts}", ("s", "t", 60) * 3
            )
        ]
    finally:
        conn.close()
    [duplicate] = [step for step in plan if "body_hash" in step]
    assert "ix_signals_strategy_id_body_hash_received_at" in duplicate
    assert "strategy_id=? AND body_hash=? AND received_at>?" in duplicate


async def test_the_duplicate_index_migration_reverses_cleanly(empty_database_url: str) -> None:
    def indexes(c: Connection) -> set[str]:
        return {str(ix["name"]) for ix in inspect(c).get_indexes("signals")}

    def migrate(c: Connection, direction: str, target: str) -> None:
        cfg = alembic_config(empty_database_url)
        cfg.attributes["connection"] = c
        getattr(command, direction)(cfg, target)

    old, new = "ix_signals_strategy_id_body_hash", "ix_signals_strategy_id_body_hash_received_at"
    db = Database(empty_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0014")
            assert new in (found := await conn.run_sync(indexes)) and old not in found
            await conn.run_sync(migrate, "downgrade", "0013")
            assert old in (found := await conn.run_sync(indexes)) and new not in found
    finally:
        await db.close()


@requires_sqlite
@pytest.mark.parametrize(("frames", "restarts"), [(100, False), (100_000, True)])
async def test_a_log_past_its_limit_is_started_over(
    core: Core, frames: int, restarts: bool
) -> None:
    """A passive checkpoint under steady load never catches up, so the log was never started
    over: it grew for as long as the load lasted. Past the limit the checkpoint waits for it."""
    from bot.services.acks import WAL_RESTART_FRAMES

    assert 100 < WAL_RESTART_FRAMES < 100_000
    ran: list[str] = []

    class Log:
        def execute(self, sql: str) -> Any:
            ran.append(sql)
            return self

        def fetchone(self) -> tuple[int, int, int]:
            return (0, frames, frames - 50)  # the commits made while it copied are left

    fast = core.signals.acks.fast
    assert fast is not None
    fast._checkpoint(Log())  # type: ignore[arg-type]
    expected = ["PRAGMA wal_checkpoint(PASSIVE)"]
    if restarts:
        expected.append("PRAGMA wal_checkpoint(RESTART)")
    assert ran == expected
