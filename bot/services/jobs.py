"""A durable job queue in the database, and the worker loop that runs it.

Jobs are rows. A worker claims a batch atomically and holds each under a lease that it renews
while the job runs; a worker that dies leaves its lease to expire, and the job is claimed again
(``attempts`` counts the tries). Handlers must therefore be idempotent in their *effects*: signal
processing gets that from the order intents' idempotency keys, so a re-run never places a
second order.

Claiming: PostgreSQL takes ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the ``UPDATE``, so
workers in several processes never block on or take each other's rows. SQLite has one writer,
so the same single ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` statement is atomic
there without row locks (SQLAlchemy renders no ``FOR UPDATE`` on SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from bot.automation_models import Job, JobStatus

if TYPE_CHECKING:
    from bot.core import Core
    from bot.db import Database

log = logging.getLogger("tradecord.jobs")

Handler = Callable[[Mapping[str, Any]], Awaitable[None]]
# Called once when a job of its kind is given up, with its payload and last error.
GaveUp = Callable[[Mapping[str, Any], str], Awaitable[None]]

KEEP_FINISHED = timedelta(days=7)


def insert_ignoring(
    db: Database, table: type[Any], rows: list[dict[str, Any]], unique: list[str]
) -> Any:
    """INSERT that skips rows clashing with an existing one on ``unique`` (both dialects).
    Without ``rows``, the statement takes its values as execution parameters."""
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    stmt = dialect_insert(table)
    if rows:
        stmt = stmt.values(rows)
    return stmt.on_conflict_do_nothing(index_elements=unique)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    kind: str
    payload: Mapping[str, Any]
    attempts: int
    max_attempts: int


class RunAgainAt(Exception):
    """Raised by a handler whose work cannot go on before ``when``: the job waits until then,
    and the wait does not count as one of its attempts."""

    def __init__(self, when: datetime) -> None:
        super().__init__(f"run again at {when.isoformat()}")
        self.when = when


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"


class JobQueue:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lease = timedelta(seconds=core.settings.job_lease_seconds)
        self.handlers: dict[str, Handler] = {}
        self.gave_up: dict[str, GaveUp] = {}
        # Nudges a worker loop in this process right after an enqueue; other processes poll.
        self._wake = asyncio.Event()

    def register(self, kind: str, handler: Handler, gave_up: GaveUp | None = None) -> None:
        """``gave_up``: what to do (tell someone) when a job of this kind is given up."""
        self.handlers[kind] = handler
        if gave_up is not None:
            self.gave_up[kind] = gave_up

    def wake(self) -> None:
        self._wake.set()

    # -- enqueue --------------------------------------------------------------------------------

    def row(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        key: str | None = None,
        run_after: datetime | None = None,
        max_attempts: int = 5,
        serial: str | None = None,
    ) -> dict[str, Any]:
        """The column values of a new job. ``serial``: jobs with the same one run one at a time,
        in the order they were added."""
        now = self.clock()
        return dict(
            kind=kind,
            payload=dict(payload),
            dedupe_key=key,
            serial_key=serial,
            status=JobStatus.QUEUED,
            run_after=run_after or now,
            attempts=0,
            max_attempts=max_attempts,
            created_at=now,
            updated_at=now,
        )

    def insert_statement(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        key: str | None = None,
        run_after: datetime | None = None,
        max_attempts: int = 5,
        serial: str | None = None,
    ) -> Any:
        """An INSERT for the caller's transaction, so the job commits with what it is about.
        With a ``key``, inserting it again does nothing (no error to roll the caller back)."""
        values = self.row(
            kind, payload, key=key, run_after=run_after, max_attempts=max_attempts, serial=serial
        )
        if key is None:
            return insert(Job).values(values)
        return insert_ignoring(self.core.db, Job, [values], ["dedupe_key"])

    async def enqueue(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        key: str | None = None,
        run_after: datetime | None = None,
        serial: str | None = None,
    ) -> bool:
        """Add a job in its own transaction; False when one with the same ``key`` exists."""
        stmt = self.insert_statement(kind, payload, key=key, run_after=run_after, serial=serial)
        async with self.core.db.transaction() as s:
            result = await s.execute(stmt)
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        self.wake()
        return True

    # -- claim, renew, finish -------------------------------------------------------------------

    async def claim(self, worker: str, limit: int) -> list[ClaimedJob]:
        """Take up to ``limit`` runnable jobs: queued and due, or running with a dead lease."""
        if limit <= 0:
            return []
        now = self.clock()
        earlier = aliased(Job)
        runnable = (
            select(Job.id)
            .where(
                or_(
                    (Job.status == JobStatus.QUEUED) & (Job.run_after <= now),
                    (Job.status == JobStatus.RUNNING) & (Job.lease_expires_at < now),
                ),
                # Not while an earlier job of its serial key is queued (due or not) or running:
                # a strategy's signals trade in the order they came. Under SKIP LOCKED a
                # worker still sees an earlier job another worker is claiming as queued.
                or_(
                    Job.serial_key.is_(None),
                    ~exists().where(
                        earlier.serial_key == Job.serial_key,
                        earlier.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
                        earlier.id < Job.id,
                    ),
                ),
            )
            .order_by(Job.run_after, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        stmt = (
            update(Job)
            .where(Job.id.in_(runnable))
            .values(
                status=JobStatus.RUNNING,
                lease_owner=worker,
                lease_expires_at=now + self.lease,
                attempts=Job.attempts + 1,
                updated_at=now,
            )
            .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
            .execution_options(synchronize_session=False)
        )
        async with self.core.db.transaction() as s:
            rows = (await s.execute(stmt)).all()
        jobs = [ClaimedJob(r.id, r.kind, r.payload or {}, r.attempts, r.max_attempts) for r in rows]
        return sorted(jobs, key=lambda j: j.id)

    async def renew(self, worker: str, job_ids: list[int]) -> set[int]:
        """Extend the leases this worker still holds; returns the ids it holds."""
        if not job_ids:
            return set()
        now = self.clock()
        async with self.core.db.transaction() as s:
            rows = await s.execute(
                update(Job)
                .where(
                    Job.id.in_(job_ids), Job.lease_owner == worker, Job.status == JobStatus.RUNNING
                )
                .values(lease_expires_at=now + self.lease, updated_at=now)
                .returning(Job.id)
                .execution_options(synchronize_session=False)
            )
            return {r.id for r in rows}

    async def _finish(self, job: ClaimedJob, worker: str, values: dict[str, Any]) -> bool:
        now = self.clock()
        async with self.core.db.transaction() as s:
            result = await s.execute(
                update(Job)
                .where(Job.id == job.id, Job.lease_owner == worker, Job.status == JobStatus.RUNNING)
                .values(updated_at=now, **values)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    async def complete(self, job: ClaimedJob, worker: str) -> bool:
        return await self._finish(
            job,
            worker,
            {
                "status": JobStatus.DONE,
                "finished_at": self.clock(),
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    async def fail(self, job: ClaimedJob, worker: str, error: BaseException) -> bool:
        """Retry later with backoff, or give up after ``max_attempts``."""
        text = f"{type(error).__name__}: {error}"[:500]
        if job.attempts >= job.max_attempts:
            values: dict[str, Any] = {
                "status": JobStatus.FAILED,
                "finished_at": self.clock(),
                "last_error": text,
            }
        else:
            delay = timedelta(seconds=min(300, 2**job.attempts))
            values = {
                "status": JobStatus.QUEUED,
                "run_after": self.clock() + delay,
                "last_error": text,
            }
        values.update(lease_owner=None, lease_expires_at=None)
        finished = await self._finish(job, worker, values)
        told = self.gave_up.get(job.kind)
        if finished and values["status"] == JobStatus.FAILED and told is not None:
            try:
                await told(job.payload, text)
            except Exception:  # the give-up is recorded; a lost notice is only logged
                log.exception("Could not tell that job %s (%s) was given up", job.id, job.kind)
        return finished

    async def defer(self, job: ClaimedJob, worker: str, when: datetime) -> bool:
        """Queue the job again for ``when``, giving back the attempt it just used."""
        return await self._finish(
            job,
            worker,
            {
                "status": JobStatus.QUEUED,
                "run_after": when,
                "attempts": Job.attempts - 1,
                "lease_owner": None,
                "lease_expires_at": None,
            },
        )

    async def purge(self, older_than: timedelta = KEEP_FINISHED) -> int:
        async with self.core.db.transaction() as s:
            result = await s.execute(
                delete(Job).where(
                    Job.status.in_([JobStatus.DONE, JobStatus.FAILED]),
                    Job.finished_at < self.clock() - older_than,
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # -- running ----------------------------------------------------------------------------------

    async def run(self, job: ClaimedJob, worker: str) -> bool:
        """Run one claimed job to completion; True when it finished (done or given up)."""
        if job.attempts > job.max_attempts:
            # Its workers kept dying mid-run (leases expired): stop retrying a poison job.
            await self.fail(job, worker, RuntimeError("gave up: workers died while running it"))
            return True
        handler = self.handlers.get(job.kind)
        if handler is None:
            await self.fail(job, worker, LookupError(f"no handler for job kind {job.kind!r}"))
            return False
        try:
            await handler(job.payload)
        except RunAgainAt as e:
            await self.defer(job, worker, e.when)
            return False
        except Exception as e:
            log.exception("Job %s (%s) failed on attempt %s", job.id, job.kind, job.attempts)
            await self.fail(job, worker, e)
            return False
        if not await self.complete(job, worker):
            log.warning("Job %s finished after its lease passed to another worker", job.id)
        return True

    async def drain(self, *, worker: str | None = None, concurrency: int = 8) -> int:
        """Run claimable jobs until none is left; for tests, benchmarks and one-shot workers."""
        worker = worker or worker_name()
        done = 0
        while True:
            jobs = await self.claim(worker, concurrency)
            if not jobs:
                return done
            await asyncio.gather(*(self.run(j, worker) for j in jobs))
            done += len(jobs)


async def run_worker(
    core: Core,
    *,
    stop: asyncio.Event,
    concurrency: int = 8,
    poll_interval: float = 0.5,
    worker: str | None = None,
) -> None:
    """Run jobs until ``stop`` is set: as a task in the bot process or in a worker process.

    Keeps up to ``concurrency`` jobs running, renews their leases every third of the lease,
    and polls for new work every ``poll_interval`` seconds (at once after a local enqueue).
    """
    queue = core.jobs
    name = worker or worker_name()
    running: dict[int, asyncio.Task[bool]] = {}
    renew_every = queue.lease.total_seconds() / 3
    loop = asyncio.get_running_loop()
    last_renew = last_purge = loop.time()
    log.info("Worker %s started (concurrency %d)", name, concurrency)
    try:
        while not stop.is_set():
            free = concurrency - len(running)
            if free > 0:
                queue._wake.clear()
                try:
                    claimed = await queue.claim(name, free)
                except Exception:
                    log.exception("Claiming jobs failed; retrying")
                    claimed = []
                for job in claimed:
                    task = asyncio.create_task(queue.run(job, name), name=f"job-{job.id}")
                    running[job.id] = task
                    task.add_done_callback(lambda _t, i=job.id: running.pop(i, None))
                if len(claimed) == free:
                    await asyncio.sleep(0)  # more may be waiting: claim again at once
                    continue
            now = loop.time()
            if running and now - last_renew >= renew_every:
                last_renew = now
                with contextlib.suppress(Exception):
                    await queue.renew(name, list(running))
            if now - last_purge >= 600:
                last_purge = now
                with contextlib.suppress(Exception):
                    await queue.purge()
            waits: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(queue._wake.wait()),
            ]
            if running:
                # A job ending frees a slot, and may make the next job of its serial key
                # claimable: claim again then, not at the next poll.
                waits.append(
                    asyncio.ensure_future(
                        asyncio.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                    )
                )
            _, pending = await asyncio.wait(
                waits, timeout=min(poll_interval, renew_every), return_when=asyncio.FIRST_COMPLETED
            )
            for fut in pending:
                fut.cancel()
    finally:
        if running:
            # Let running jobs finish their current step; their effects are idempotent anyway.
            await asyncio.gather(*running.values(), return_exceptions=True)
        log.info("Worker %s stopped", name)
