"""SQLite for SQLAlchemy's ``aiosqlite`` dialect, run on the event loop instead of a thread.

aiosqlite sends every cursor, execute, fetch, commit and close to a thread of its own and
back: four or five thread hops per statement, each one waiting for the GIL while the loop is
busy. Measured here that is about 0.4 ms of CPU per statement; SQLite itself takes tens of
microseconds for this application's statements (WAL, ``synchronous=NORMAL``, indexed
lookups). So this driver runs ``sqlite3`` right on the loop and gives SQLAlchemy already
finished awaitables, through ``create_async_engine(async_creator=...)``.

Nothing here may block the loop:

- ``busy_timeout`` is 0. When another connection holds SQLite's single write lock (another
  process, the acknowledgement thread, or a transaction of this process waiting on a real
  ``await``), the statement is retried after an ``asyncio.sleep`` that backs off, for as long
  as ``busy_timeout`` used to wait. A statement that got ``SQLITE_BUSY`` had no effect, so
  retrying it is safe; ``SQLITE_BUSY_SNAPSHOT`` (a stale read transaction that wants to write)
  cannot succeed by waiting and is raised, as SQLite's own busy handler would.
- Connections never checkpoint the WAL on commit (that syncs the file: tens of ms); a thread
  of the ``InlineSqlite`` checkpoints every ``checkpoint_every`` commits instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# The same patience busy_timeout=10000 had.
BUSY_WAIT_SECONDS = 10.0
_FIRST_BACKOFF = 0.0005
_MAX_BACKOFF = 0.02


class InlineSqlite:
    """Opens on-loop connections to one database file and checkpoints its WAL off the loop."""

    def __init__(self, path: str, *, checkpoint_every: int = 500) -> None:
        self.path = path
        self.checkpoint_every = checkpoint_every
        self._commits = 0
        self._checkpointing = False
        self._executor: ThreadPoolExecutor | None = None
        self._checkpoint_conn: sqlite3.Connection | None = None

    async def connect(self) -> Connection:
        # check_same_thread=False: SQLAlchemy may close a pooled connection from a GC thread.
        raw = sqlite3.connect(self.path, check_same_thread=False)
        raw.execute("PRAGMA busy_timeout=0")
        raw.execute("PRAGMA wal_autocheckpoint=0")
        return Connection(raw, self)

    def committed(self) -> None:
        self._commits += 1
        if self._commits < self.checkpoint_every or self._checkpointing:
            return
        self._commits = 0
        self._checkpointing = True
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="tradecord-wal")
        self._executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._checkpoint_conn is None:
                self._checkpoint_conn = sqlite3.connect(self.path, check_same_thread=False)
                self._checkpoint_conn.execute("PRAGMA busy_timeout=10000")
            # PASSIVE never waits for readers or writers: it copies what it can.
            self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # the next round tries again; the WAL only grows meanwhile
        finally:
            self._checkpointing = False

    def close(self) -> None:
        if self._executor is None:
            return

        def shut() -> None:
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()
                self._checkpoint_conn = None

        self._executor.submit(shut)
        self._executor.shutdown(wait=True)
        self._executor = None


async def _patiently(call: Callable[[], Any]) -> Any:
    """``call()``, retried while SQLite's write lock is held elsewhere."""
    try:
        return call()
    except sqlite3.OperationalError as e:
        if e.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
    deadline = time.monotonic() + BUSY_WAIT_SECONDS
    delay = _FIRST_BACKOFF
    while True:
        await asyncio.sleep(delay)
        try:
            return call()
        except sqlite3.OperationalError as e:
            if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        delay = min(delay * 2, _MAX_BACKOFF)


class Cursor:
    """The part of ``aiosqlite.Cursor`` SQLAlchemy uses."""

    def __init__(self, raw: sqlite3.Cursor) -> None:
        self._raw = raw

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._raw.close()

    async def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        await _patiently(lambda: self._raw.execute(sql, parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        rows = list(parameters)  # a retry needs the rows again
        await _patiently(lambda: self._raw.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._raw.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._raw.fetchmany(self._raw.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._raw.fetchall()

    async def close(self) -> None:
        self._raw.close()

    @property
    def description(self) -> Any:
        return self._raw.description

    @property
    def rowcount(self) -> int:
        return self._raw.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._raw.lastrowid

    @property
    def arraysize(self) -> int:
        return self._raw.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._raw.arraysize = value


class _RunNow:
    """SQLAlchemy sets ``isolation_level`` by queueing a function on aiosqlite's thread
    (``_tx``); here there is no thread, so the function runs at once."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as e:  # the setter re-raises it through SQLAlchemy
            future.set_exception(e)


class Connection:
    """The part of ``aiosqlite.Connection`` SQLAlchemy uses."""

    _tx = _RunNow()

    def __init__(self, raw: sqlite3.Connection, owner: InlineSqlite) -> None:
        self._connection: sqlite3.Connection | None = raw
        self._conn = raw  # where SQLAlchemy's isolation_level setter looks
        self._owner = owner

    def _raw(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    def cursor(self) -> Cursor:
        return Cursor(self._raw().cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        raw = self._raw()
        await _patiently(raw.commit)
        self._owner.committed()

    async def rollback(self) -> None:
        self._raw().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._raw().create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self._raw().isolation_level

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
