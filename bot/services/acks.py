"""The webhook's acknowledgement: one transaction stores the request and, for a valid signal,
its job, and only then is the request answered.

The transaction first writes the strategy's row, which serialises one strategy's requests
across processes (a row lock on PostgreSQL, the single writer on SQLite), so the rate limit
(stored requests of the last minute) and the duplicate window (same body hash, see
``duplicate_window``) are
exact with several web processes. On SQLite the same transaction runs on a plain ``sqlite3``
connection (``SqliteAcks``); on PostgreSQL through SQLAlchemy Core with statements built once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, event, func, insert, select, update

from bot.automation_models import Job, ReceivedSignal, SignalStatus, Strategy
from bot.services.jobs import insert_ignoring
from bot.services.strategies import WebhookAuth

if TYPE_CHECKING:
    from bot.db import Database

RATE_WINDOW = timedelta(minutes=1)
# The same body again this soon is the same alert delivered twice (a sender's retry, an alert
# set up twice). Later it is a new signal: an alert without a time field (an indicator's
# "buy") sends identical bodies on purpose, one a bar, which TradersPost trades every time.
DUPLICATE_WINDOW = timedelta(seconds=30)
CHECKPOINT_EVERY = 200  # SQLite acknowledgement commits between WAL checkpoints
WAL_RESTART_FRAMES = 65536  # pages (256 MB at SQLite's default size) the log may keep
ACTIVE_SIGNAL = (SignalStatus.QUEUED, SignalStatus.PROCESSING, SignalStatus.DONE)


def duplicate_window(signal_time: datetime | None, max_lag_seconds: int) -> timedelta:
    """How long an identical body counts as the same alert. One with its own time field is
    unique per alert, so a copy is a re-delivery (a relay's retry, a replay) for as long as the
    time check lets that time through: ``max_lag_seconds`` either side of now."""
    if signal_time is None:
        return DUPLICATE_WINDOW
    return max(DUPLICATE_WINDOW, timedelta(seconds=2 * max_lag_seconds))


class RateLimited(Exception):
    """Over the strategy's rate: raised inside the acknowledgement's transaction."""


class AckStore:
    """Stores acknowledgements: ``store`` returns the signal's status and, for a duplicate, the
    id of the signal it repeats, or raises ``RateLimited`` (nothing stored)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # SQLite's fast acknowledgement (see SqliteAcks); PostgreSQL goes through SQLAlchemy.
        self.fast = SqliteAcks(db) if db.is_sqlite else None

    async def count_bad_secret(self, strategy_id: str, at: datetime) -> None:
        """A request to the strategy came with a wrong secret: counted for its owner's notice."""
        if self.fast is not None:
            return await self.fast.count_bad_secret(strategy_id, at)
        async with self.db.engine.begin() as conn:
            await conn.execute(ACK_STATEMENTS.unauthorized, {"strategy_id": strategy_id, "at": at})

    async def store(
        self, auth: WebhookAuth, row: dict[str, Any], job: dict[str, Any], valid: bool
    ) -> tuple[str, str | None]:
        if self.fast is not None:
            return await self.fast.store(auth, row, job, valid)
        return await self._with_sqlalchemy(auth, row, job, valid)

    async def _with_sqlalchemy(
        self, auth: WebhookAuth, row: dict[str, Any], job: dict[str, Any], valid: bool
    ) -> tuple[str, str | None]:
        """The acknowledgement's one transaction: rate, duplicate window, the row, its job.
        Statements are built once (``AckStatements``) and run on a plain connection: building
        them and the ORM session per request cost more than the database work."""
        q = ACK_STATEMENTS
        received = row["received_at"]
        status: str | None = None  # None: over the rate
        async with self.db.engine.begin() as conn:
            # The write that makes this transaction the strategy's only one (a row lock on
            # PostgreSQL): the counts below cannot race another process.
            await conn.execute(q.lock, {"strategy_id": auth.id, "at": received})
            count, original = (
                await conn.execute(
                    q.counts,
                    {
                        "strategy_id": auth.id,
                        "rate_since": received - RATE_WINDOW,
                        "rate_limit": auth.rate_limit_per_minute,
                        "body_hash": row["body_hash"],
                        "duplicate_since": received
                        - duplicate_window(row["signal_time"], auth.max_lag_seconds),
                    },
                )
            ).one()
            if count >= auth.rate_limit_per_minute:
                # Not stored, but counted for its owner's notice (see refusals).
                await conn.execute(q.over_rate, {"strategy_id": auth.id, "at": received})
            else:
                original = original if valid else None
                status = signal_status(row, original)
                await conn.execute(
                    q.insert_signal, row | {"status": status, "duplicate_of": original}
                )
                if status == SignalStatus.QUEUED:
                    await conn.execute(q.insert_job(self.db), job)
        if status is None:
            raise RateLimited
        return status, original


class AckStatements:
    """The acknowledgement's statements, built once with bound parameters."""

    def __init__(self) -> None:
        signals, strategies = ReceivedSignal.__table__, Strategy.__table__
        c = signals.c
        self.lock = (
            update(strategies)
            .where(strategies.c.id == bindparam("strategy_id"))
            .values(last_signal_at=bindparam("at", type_=strategies.c.last_signal_at.type))
        )
        recent = (
            select(func.count())
            .select_from(
                select(c.id)
                .where(
                    c.strategy_id == bindparam("strategy_id"),
                    c.received_at > bindparam("rate_since", type_=c.received_at.type),
                )
                .limit(bindparam("rate_limit"))
                .subquery()
            )
            .scalar_subquery()
        )
        duplicate = (
            select(c.id)
            .where(
                c.strategy_id == bindparam("strategy_id"),
                c.body_hash == bindparam("body_hash"),
                c.received_at > bindparam("duplicate_since", type_=c.received_at.type),
                c.status.in_(ACTIVE_SIGNAL),
            )
            .order_by(c.received_at)
            .limit(1)
            .scalar_subquery()
        )
        self.counts = select(recent, duplicate)
        self.over_rate = _count(strategies, "over_rate")
        self.unauthorized = _count(strategies, "bad_secret")
        self.insert_signal = insert(signals)
        self._insert_job: dict[str, Any] = {}

    def insert_job(self, db: Database) -> Any:
        dialect = "sqlite" if db.is_sqlite else "postgresql"
        stmt = self._insert_job.get(dialect)
        if stmt is None:
            stmt = self._insert_job[dialect] = insert_ignoring(db, Job, [], ["dedupe_key"])
        return stmt


def _count(strategies: Any, column: str) -> Any:
    """``column`` counted up on the strategy, and ``column_since`` set if it was not."""
    since = strategies.c[f"{column}_since"]
    return (
        update(strategies)
        .where(strategies.c.id == bindparam("strategy_id"))
        .values(
            {
                column: strategies.c[column] + 1,
                since: func.coalesce(since, bindparam("at", type_=since.type)),
            }
        )
    )


ACK_STATEMENTS = AckStatements()


class SqliteAcks:
    """SQLite only: the webhook's strategy lookup and its one transaction on a plain
    ``sqlite3`` connection, without the ORM.

    The webhook is the one path where SQLAlchemy's per-statement cost (compiling, the session,
    the greenlet) is most of the request. In WAL mode with ``synchronous=NORMAL`` this
    transaction takes tens of microseconds, so it runs right on the event loop (with
    ``SQLITE_SYNCHRONOUS=full`` each shared commit also waits for the disk there), with
    ``busy_timeout=0`` so it can never block the loop: if another writer holds SQLite's lock,
    the same work goes to a thread of its own that waits for the lock. The SQL
    is the acknowledgement's only, and values go through SQLAlchemy's own column types for this
    dialect, so the rows are exactly what the ORM writes and reads. ``BEGIN IMMEDIATE`` takes
    the single write lock first: that makes the rate and duplicate counts exact across
    processes. Requests that arrive together share one commit.
    """

    SIGNAL_COLUMNS = (
        "id",
        "strategy_id",
        "received_at",
        "validated_at",
        "body_hash",
        "body",
        "payload",
        "status",
        "message_code",
        "message",
        "duplicate_of",
        "ticker",
        "action",
        "test",
        "signal_time",
        "source_ip",
        "announced",
    )
    JOB_COLUMNS = (
        "kind",
        "payload",
        "dedupe_key",
        "serial_key",
        "status",
        "run_after",
        "attempts",
        "max_attempts",
        "created_at",
        "updated_at",
    )
    STRATEGY_COLUMNS = (
        "id",
        "name",
        "guild_id",
        "secret_hash",
        "allowed_sources",
        "allowed_tickers",
        "max_lag_seconds",
        "rate_limit_per_minute",
        "max_quantity",
        "bad_secret",
    )

    def __init__(self, db: Database) -> None:
        self.path = db.engine.url.database or ""
        self.synchronous = db.sqlite_synchronous
        dialect = db.engine.dialect

        def processors(table: Any, names: Sequence[str], result: bool) -> list[Any]:
            out = []
            for name in names:
                impl = table.c[name].type.dialect_impl(dialect)
                proc = (
                    impl.result_processor(dialect, None)
                    if result
                    else (impl.bind_processor(dialect))
                )
                out.append(proc or _same)
            return out

        self._signal_in = processors(ReceivedSignal.__table__, self.SIGNAL_COLUMNS, False)
        self._job_in = processors(Job.__table__, self.JOB_COLUMNS, False)
        self._strategy_out = processors(Strategy.__table__, self.STRATEGY_COLUMNS, True)
        self._time_in = processors(ReceivedSignal.__table__, ("received_at",), False)[0]
        self._since_in = processors(Strategy.__table__, ("over_rate_since",), False)[0]
        # Built from the constants above only; every value is a bound parameter.
        self._insert_signal = (
            f"INSERT INTO signals ({', '.join(self.SIGNAL_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join('?' * len(self.SIGNAL_COLUMNS))})"
        )
        self._insert_job = (
            f"INSERT INTO jobs ({', '.join(self.JOB_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join('?' * len(self.JOB_COLUMNS))}) "
            "ON CONFLICT (dedupe_key) DO NOTHING"
        )
        self._select_strategy = (
            f"SELECT {', '.join(self.STRATEGY_COLUMNS)} FROM strategies WHERE id = ?"  # noqa: S608
        )
        assert len(ACTIVE_SIGNAL) == 3
        self._counts = (
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM signals WHERE strategy_id = ? "
            "AND received_at > ? LIMIT ?)), (SELECT id FROM signals WHERE strategy_id = ? "
            "AND body_hash = ? AND received_at > ? AND status IN (?, ?, ?) "
            "ORDER BY received_at LIMIT 1)"
        )
        self._over_rate = (
            "UPDATE strategies SET over_rate = over_rate + 1, "
            "over_rate_since = coalesce(over_rate_since, ?) WHERE id = ?"
        )
        self._unauthorized = (
            "UPDATE strategies SET bad_secret = bad_secret + 1, "
            "bad_secret_since = coalesce(bad_secret_since, ?) WHERE id = ?"
        )
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tradecord-acks")
        self._loop_conn: sqlite3.Connection | None = None  # busy_timeout 0: never waits
        self._thread_conn: sqlite3.Connection | None = None  # waits for the lock, off the loop
        self._batch: list[tuple[Any, asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._since_checkpoint = 0
        event.listen(db.engine.sync_engine, "engine_disposed", lambda _e: self.close())

    def _open(self, busy_ms: int, *, checkpoints: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode=WAL",
            "foreign_keys=ON",
            f"busy_timeout={busy_ms}",
            f"synchronous={self.synchronous}",
            # A checkpoint copies the log into the database and syncs it: tens of ms. The
            # loop's connection never runs one; the thread does, every CHECKPOINT_EVERY commits.
            f"wal_autocheckpoint={1000 if checkpoints else 0}",
        ):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > WAL_RESTART_FRAMES:
            # Under steady load a passive checkpoint never catches up with the commits made
            # while it copies, so the log is never started over and grows for as long as the
            # load lasts (600 MB in 20 s of the benchmark). RESTART waits for the writers and
            # readers of the moment, so the next commit starts the log over; acknowledgements
            # meanwhile queue on this thread. (At 64 MB the benchmark's p99 at 16 connections
            # rose from 14 to 21 ms; at 256 MB it does not move.)
            conn.execute("PRAGMA wal_checkpoint(RESTART)")

    def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._thread_conn is None:
            self._thread_conn = self._open(10_000, checkpoints=True)
        return fn(self._thread_conn, *args)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._loop_conn is None:
            self._loop_conn = self._open(0, checkpoints=False)
        try:
            return fn(self._loop_conn, *args)
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_thread, fn, *args)

    async def strategy(self, strategy_id: str) -> dict[str, Any] | None:
        return await self._call(self._strategy, strategy_id)  # type: ignore[no-any-return]

    async def count_bad_secret(self, strategy_id: str, at: datetime) -> None:
        await self._call(self._count_bad_secret, strategy_id, at)

    def _count_bad_secret(self, conn: sqlite3.Connection, strategy_id: str, at: datetime) -> None:
        conn.execute(self._unauthorized, (self._since_in(at), strategy_id))  # autocommits

    def _strategy(self, conn: sqlite3.Connection, strategy_id: str) -> dict[str, Any] | None:
        found = conn.execute(self._select_strategy, (strategy_id,)).fetchone()
        if found is None:
            return None
        return {
            name: proc(value)
            for name, proc, value in zip(
                self.STRATEGY_COLUMNS, self._strategy_out, found, strict=True
            )
        }

    async def store(
        self, auth: WebhookAuth, row: dict[str, Any], job: dict[str, Any], valid: bool
    ) -> tuple[str, str | None]:
        """Store one acknowledgement. Those arriving in the same loop iteration share one
        transaction (group commit); each is answered only after that commit."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[str, str | None] | RateLimited] = loop.create_future()
        self._batch.append(((auth, row, job, valid), done))
        if len(self._batch) == 1:
            task = loop.create_task(self._flush())  # runs after the requests already in hand
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        result = await done
        if isinstance(result, RateLimited):
            raise result
        return result

    async def _flush(self) -> None:
        batch, self._batch = self._batch, []
        try:
            results = await self._call(self._store_all, [item for item, _ in batch])
        except Exception as e:  # each waiting request answers with it (a 500)
            for _, done in batch:
                if not done.done():
                    done.set_exception(e)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._in_thread, self._checkpoint
            )

    def _store_all(
        self,
        conn: sqlite3.Connection,
        items: list[tuple[WebhookAuth, dict[str, Any], dict[str, Any], bool]],
    ) -> list[tuple[str, str | None] | RateLimited]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [self._store_one(conn, *item) for item in items]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _store_one(
        self,
        conn: sqlite3.Connection,
        auth: WebhookAuth,
        row: dict[str, Any],
        job: dict[str, Any],
        valid: bool,
    ) -> tuple[str, str | None] | RateLimited:
        received = row["received_at"]
        count, original = conn.execute(
            self._counts,
            (
                auth.id,
                self._time_in(received - RATE_WINDOW),
                auth.rate_limit_per_minute,
                auth.id,
                row["body_hash"],
                self._time_in(
                    received - duplicate_window(row["signal_time"], auth.max_lag_seconds)
                ),
                *ACTIVE_SIGNAL,
            ),
        ).fetchone()
        if count >= auth.rate_limit_per_minute:
            # Not stored, but counted for its owner's notice (see refusals).
            conn.execute(self._over_rate, (self._since_in(received), auth.id))
            return RateLimited()
        original = original if valid else None
        status = signal_status(row, original)
        values = row | {"status": status, "duplicate_of": original}
        conn.execute(
            self._insert_signal,
            [
                proc(values[name])
                for name, proc in zip(self.SIGNAL_COLUMNS, self._signal_in, strict=True)
            ],
        )
        if status == SignalStatus.QUEUED:
            conn.execute(
                self._insert_job,
                [
                    proc(job[name])
                    for name, proc in zip(self.JOB_COLUMNS, self._job_in, strict=True)
                ],
            )
        return status, original

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop_conn is not None:
            self._loop_conn.close()
            self._loop_conn = None

        def shut() -> None:
            if self._thread_conn is not None:
                self._thread_conn.close()
                self._thread_conn = None

        self._executor.submit(shut)
        self._executor.shutdown(wait=False)


def _same(value: Any) -> Any:
    return value


def signal_status(row: Mapping[str, Any], original: str | None) -> str:
    if row["message_code"] is not None:
        return SignalStatus.REFUSED
    return SignalStatus.DUPLICATE if original is not None else SignalStatus.QUEUED
