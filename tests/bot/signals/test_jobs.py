"""The durable job queue: claims, leases, retries, and workers in separate Cores (processes)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from bot.automation_models import Job, JobStatus
from bot.core import Core
from bot.db import Database
from bot.models import OrderIntent
from bot.services.jobs import RunAgainAt, run_worker
from bot.settings import Settings
from tests.bot.signals.conftest import (
    OWNER,
    count,
    jobs,
    make_strategy,
    open_core,
    orders,
    send,
    subscribe,
)
from tests.support import FakeClock


async def test_enqueue_is_once_per_key_and_waits_for_run_after(
    core: Core, clock: FakeClock
) -> None:
    ran: list[Mapping[str, Any]] = []

    async def handler(payload: Mapping[str, Any]) -> None:
        ran.append(payload)

    core.jobs.register("test.noop", handler)
    assert await core.jobs.enqueue("test.noop", {"n": 1}, key="k1")
    assert not await core.jobs.enqueue("test.noop", {"n": 2}, key="k1")
    await core.jobs.enqueue("test.noop", {"n": 3}, run_after=clock() + timedelta(minutes=5))
    assert await core.jobs.drain() == 1
    assert ran == [{"n": 1}]
    clock.advance(minutes=5)
    assert await core.jobs.drain() == 1
    assert ran[-1] == {"n": 3}
    assert {j.status for j in await jobs(core)} == {JobStatus.DONE}


async def test_jobs_of_one_serial_key_run_one_at_a_time_in_order(
    core: Core, clock: FakeClock
) -> None:
    """A strategy's signals: the next is not claimed while an earlier one is queued (even if
    waiting to run again later) or running; other keys are not held up."""
    ran: list[str] = []

    async def handler(payload: Mapping[str, Any]) -> None:
        if payload["n"] == "s0" and "s0" not in ran:
            ran.append("s0")
            raise RunAgainAt(clock() + timedelta(seconds=30))
        ran.append(str(payload["n"]))

    core.jobs.register("test.noop", handler)
    for n in ("s0", "s1", "s2"):
        await core.jobs.enqueue("test.noop", {"n": n}, serial="strategy:s")
    await core.jobs.enqueue("test.noop", {"n": "t0"}, serial="strategy:t")
    claimed = await core.jobs.claim("w", 10)
    assert sorted(j.payload["n"] for j in claimed) == ["s0", "t0"]
    assert await core.jobs.claim("w", 10) == []  # s1 waits for s0
    for job in claimed:
        await core.jobs.run(job, "w")
    assert ran == ["s0", "t0"]  # s0 runs again in 30 s, and s1 still waits for it
    assert await core.jobs.drain() == 0
    clock.advance(seconds=30)
    assert await core.jobs.drain() == 3
    assert ran == ["s0", "t0", "s0", "s1", "s2"]


@pytest.mark.parametrize("lease", [None, 20])
async def test_a_dead_workers_job_is_taken_again_after_its_lease(
    settings: Settings, db: Database, clock: FakeClock, lease: int | None
) -> None:
    """After the lease: 60 s by default, or the operator's JOB_LEASE_SECONDS."""
    if lease is not None:
        settings = settings.model_copy(update={"job_lease_seconds": lease})
    core = await open_core(settings, clock)
    try:
        await core.jobs.enqueue("test.noop", {}, key="k")
        [job] = await core.jobs.claim("worker-a", 10)
        assert await core.jobs.claim("worker-b", 10) == []  # leased: nobody else takes it
        clock.advance(seconds=(lease or 60) - 1)
        assert await core.jobs.claim("worker-b", 10) == []
        clock.advance(seconds=2)
        [again] = await core.jobs.claim("worker-b", 10)
        assert again.id == job.id and again.attempts == 2
        # worker-a wakes up and tries to finish: the lease is not its any more.
        assert not await core.jobs.complete(job, "worker-a")
        assert await core.jobs.complete(again, "worker-b")
    finally:
        await core.close()


async def test_failures_retry_with_backoff_then_give_up(core: Core, clock: FakeClock) -> None:
    calls = 0

    async def broken(payload: Mapping[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    core.jobs.register("test.broken", broken)
    await core.jobs.enqueue("test.broken", {})
    for _ in range(5):
        await core.jobs.drain()
        clock.advance(minutes=10)
    [job] = await jobs(core)
    assert calls == 5 and job.status == JobStatus.FAILED
    assert job.last_error == "RuntimeError: boom"
    await core.jobs.drain()
    assert calls == 5


async def test_a_job_whose_workers_keep_dying_is_given_up(core: Core, clock: FakeClock) -> None:
    await core.jobs.enqueue("test.noop", {})
    for worker in "abcde":
        assert await core.jobs.claim(f"worker-{worker}", 1)
        clock.advance(minutes=2)
    [job] = await core.jobs.claim("worker-f", 1)
    assert job.attempts == 6
    assert await core.jobs.run(job, "worker-f")
    [row] = await jobs(core)
    assert row.status == JobStatus.FAILED and "died" in (row.last_error or "")


async def test_the_worker_loop_runs_jobs_and_stops(core: Core) -> None:
    done = asyncio.Event()

    async def handler(payload: Mapping[str, Any]) -> None:
        done.set()

    core.jobs.register("test.event", handler)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(core, stop=stop, poll_interval=0.05))
    await core.jobs.enqueue("test.event", {})
    await asyncio.wait_for(done.wait(), 10)
    stop.set()
    await asyncio.wait_for(worker, 10)
    for _ in range(50):
        if (await jobs(core))[0].status == JobStatus.DONE:
            break
        await asyncio.sleep(0.02)
    assert (await jobs(core))[0].status == JobStatus.DONE


@pytest.mark.first
async def test_two_workers_in_two_processes_take_each_job_once(
    settings: Settings, db: Database, core: Core, clock: FakeClock
) -> None:
    """Two Cores (own engines, as two processes would have) race over the same jobs."""
    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    for i in range(20):
        ack = await send(
            core,
            url,
            {
                "ticker": "AAPL",
                "action": "buy",
                "quantity": i + 1,
                "sentiment": "bullish",
                "cancel": False,
                "extras": {"n": i},
            },
        )
        assert ack.status == 202
    # Entries into an existing long are skipped (TradersPost's "already long"), so use "add".
    for i in range(20):
        clock.advance(seconds=1)
        await send(
            core, url, {"ticker": "AAPL", "action": "add", "quantity": 1, "extras": {"m": i}}
        )
    other = await open_core(settings, clock)
    runs: Counter[str] = Counter()
    try:
        for name, c in (("one", core), ("two", other)):
            original = c.jobs.handlers["signal"]

            async def counted(
                payload: Mapping[str, Any], _o: Any = original, _n: str = name
            ) -> None:
                runs[payload["signal_id"]] += 1
                await asyncio.sleep(0.01)  # widen the window for a second claim
                await _o(payload)

            c.jobs.register("signal", counted)
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(run_worker(c, stop=stop, concurrency=4, poll_interval=0.02))
            for c in (core, other)
        ]
        for _ in range(1000):
            if all(j.status == JobStatus.DONE for j in await jobs(core)):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.gather(*workers)
    finally:
        await other.close()
    rows = await jobs(core)
    assert len(rows) == 40 and all(j.status == JobStatus.DONE for j in rows)
    assert all(j.attempts == 1 for j in rows)
    assert len(runs) == 40 and set(runs.values()) == {1}
    # Every signal placed at most one order per leg.
    keys = [i.idempotency_key for i in await _intents(core)]
    assert len(keys) == len(set(keys)) and len(await orders(core)) == len(keys)


async def _intents(core: Core) -> list[OrderIntent]:
    from sqlalchemy import select

    async with core.db.session() as s:
        return list(await s.scalars(select(OrderIntent)))


async def test_job_rows_are_purged_after_a_week(core: Core, clock: FakeClock) -> None:
    await core.jobs.enqueue("test.noop", {})
    core.jobs.register("test.noop", _noop)
    await core.jobs.drain()
    assert await core.jobs.purge() == 0
    clock.advance(days=8)
    assert await core.jobs.purge() == 1
    assert await count(core, Job) == 0


async def _noop(payload: Mapping[str, Any]) -> None:
    return None


async def test_a_signal_whose_job_keeps_failing_is_retried_for_minutes_then_told(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database busy for half a minute used to drop a signal for good after five quick
    tries, leaving it "processing" with nobody told. It is now tried for about 13 minutes (a
    run that comes too late trades nothing, as stale); given up, it ends as failed, and its
    owner and the alert channel hear so."""
    from bot.automation_models import ReceivedSignal, SignalStatus
    from tests.bot.signals.conftest import notifier

    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    await core.strategies.set_alert_channel(555, 777)
    failures = 0

    async def busy(*_: Any) -> Any:
        nonlocal failures
        failures += 1
        raise RuntimeError("database is locked")

    monkeypatch.setattr(core.signals, "_contexts", busy)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    for _ in range(5):  # what used to be all of its tries
        await core.jobs.drain()
        clock.advance(seconds=40)
    assert failures == 5
    async with core.db.session() as s:
        record = await s.get(ReceivedSignal, ack.body["id"])
        assert record is not None and record.status == SignalStatus.PROCESSING
    assert not [m for _, m in notifier(core).dms if "could not be processed" in (m.content or "")]
    for _ in range(10):
        clock.advance(minutes=5)
        await core.jobs.drain()
    assert failures == 10
    async with core.db.session() as s:
        record = await s.get(ReceivedSignal, ack.body["id"])
        assert record is not None and record.status == SignalStatus.FAILED
    [(owner, dm)] = [
        (u, m) for u, m in notifier(core).dms if "could not be processed" in (m.content or "")
    ]
    assert owner == OWNER and "send it again" in (dm.content or "")
    assert "database is locked" not in (dm.content or "")
    posts = [m.content or "" for c, m in notifier(core).posts if c == 777]
    assert "could not be processed" in posts[-1], posts
