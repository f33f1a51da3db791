"""Engine, sessions and migrations.

One ``Database`` per process. Each unit of work opens its own session
(``async with db.session() as s``); sessions never outlive a request or a job.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    bindparam,
    event,
    insert,
    inspect,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from bot.coalesce import BatchFunction, Coalescer
from bot.errors import ConfigurationError
from bot.sqlite_driver import InlineSqlite

R = TypeVar("R")
T = TypeVar("T")
_UPDATES = "tradecord.updates"  # Session.info key of update_later's rows
_INSERTS = "tradecord.inserts"  # Session.info key of insert_later's rows
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x54726164_65636F72  # PostgreSQL advisory lock key of Database.upgrade


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # WAL lets readers run during a write; waiting for the writer is the driver's (busy
        # retries that yield to the loop, see bot.sqlite_driver).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA synchronous={SYNCHRONOUS[synchronous]}")
        cur.close()

    return on_connect


# In WAL mode NORMAL syncs at checkpoints only: a commit survives the process, not the machine.
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}


@dataclass(frozen=True, slots=True)
class _Unit:
    work: Callable[[AsyncSession], Awaitable[Any]]
    rows: Sequence[tuple[type[Any], Any]]


class Database:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        echo: bool = False,
        sqlite_synchronous: str = "normal",
    ):
        self.url = url
        self.sqlite_synchronous = SYNCHRONOUS[sqlite_synchronous]
        kwargs: dict[str, Any] = {"echo": echo}
        self.inline: InlineSqlite | None = None
        if url.startswith("sqlite"):
            path = make_url(url).database or ":memory:"
            if path != ":memory:":
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:  # a file in the way, or no permission
                    raise ConfigurationError(
                        f"TRADECORD_DATA_DIR: cannot create {Path(path).parent} for the SQLite "
                        f"database ({e.strerror}); check TRADECORD_DATA_DIR (or the path in "
                        "DATABASE_URL)"
                    ) from None
            self.inline = InlineSqlite(path)
            kwargs["async_creator"] = self.inline.connect
        else:
            kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas(sqlite_synchronous))
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=_Session
        )
        self._units: Coalescer[_Unit, Any] = Coalescer(self._run_units)
        self._shared: dict[str, Coalescer[Any, Any]] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as s:
            yield s

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside a transaction: commits on success, rolls back on error."""
        async with self.sessionmaker() as s, s.begin():
            yield s

    def shared(self, name: str, run_many: BatchFunction[T, R]) -> Coalescer[T, R]:
        """The coalescer named ``name`` on this database (made with ``run_many`` on first use),
        shared by everything in this process that reads or writes the same kind of rows."""
        coalescer = self._shared.get(name)
        if coalescer is None:
            coalescer = self._shared[name] = Coalescer(run_many)
        return coalescer

    async def group_commit(
        self,
        work: Callable[[AsyncSession], Awaitable[R]],
        *,
        rows: Sequence[tuple[type[Any], Any]] = (),
    ) -> R:
        """Run ``work`` in one transaction with the units of work other tasks ask for at the
        same moment, and return what it returns (see ``bot.coalesce``).

        ``rows`` (mapped class, primary key) are loaded for all the units in one query each,
        locked (``FOR UPDATE`` on PostgreSQL), before any work runs: ``session.get`` finds them
        without a query. ``work`` runs with autoflush off and its changes are flushed with the
        others' at the end, so ORM changes (``add``, attribute sets) become one ``executemany``
        per table; it must not rely on seeing another unit's changes. If the batch fails, each
        unit runs again alone, so one unit's error is its own.

        ``work`` holds the batch's transaction while it runs: it must not wait for anything but
        this session (no broker calls, and never ``group_commit`` itself, which would wait for
        the batch it is part of).
        """
        return cast(R, await self._units(_Unit(work, rows)))

    async def _run_units(self, units: Sequence[_Unit]) -> list[Any]:
        wanted: dict[type[Any], set[Any]] = {}
        for unit in units:
            for cls, key in unit.rows:
                wanted.setdefault(cls, set()).add(key)
        async with self.transaction() as s:
            loaded = []  # the identity map holds objects weakly: keep them for the works
            # One lock order (table, then key) for every batch, so two cannot deadlock.
            for cls, keys in sorted(wanted.items(), key=lambda item: item[0].__tablename__):
                pk = cls.__mapper__.primary_key[0]
                ordered = sorted(keys)
                for i in range(0, len(ordered), 500):
                    query = select(cls).where(pk.in_(ordered[i : i + 500])).order_by(pk)
                    loaded.extend(await s.scalars(query.with_for_update()))
            with s.no_autoflush:
                results = [await unit.work(s) for unit in units]
            await flush_batched(s)
            return results

    async def connect(self) -> AsyncConnection:
        """A connection for start-up; a database that cannot be reached (down, wrong host,
        wrong password) stops the start with one line naming DATABASE_URL, not a traceback."""
        try:
            return await self.engine.connect()
        except (OSError, DBAPIError) as e:
            # The driver's own first line: host and port or the server's refusal, never the URL
            # (it may hold the password).
            reason = str(getattr(e, "orig", None) or e).strip().splitlines() or [""]
            raise ConfigurationError(
                f"DATABASE_URL: cannot connect to the database ({type(e).__name__}: "
                f"{reason[0]}); check that it is running and the host, user and password"
            ) from None

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head on this engine: all of them or, on any error,
        none, and one upgrader at a time (every process's start, `tradecord db upgrade`)."""
        conn = await self.connect()
        try:
            if self.is_sqlite:
                await self._upgrade_sqlite(conn)
            else:
                async with conn.begin():
                    # Each upgrader would otherwise read the same revision and run the same
                    # migrations, and all but one fail. PostgreSQL's DDL is transactional.
                    await conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                    await conn.run_sync(_upgrade, self.url)
        finally:
            await conn.close()

    async def _upgrade_sqlite(self, conn: AsyncConnection) -> None:
        # A migration that rebuilds a table (batch mode: copy, drop, rename) must not run the
        # ON DELETE actions of the tables referring to it: with foreign keys on, dropping the
        # old strategies table deleted every subscription, signal and share. The pragma is a
        # no-op inside a transaction, so it goes first, and back on for the pooled connection.
        await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        await conn.commit()
        try:
            async with conn.begin():
                # Explicitly, or the driver begins only at the first INSERT, UPDATE or DELETE
                # and each migration's DDL before it commits alone: a failure halfway left a
                # schema no later start could migrate. IMMEDIATE: one upgrader at a time.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                if await conn.run_sync(_upgrade, self.url):
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        tables = sorted({row[0] for row in broken})
                        raise ConfigurationError(
                            f"The database upgrade would leave rows of {', '.join(tables)} "
                            "pointing at rows that do not exist; nothing was changed. Please "
                            "report this, with the Tradecord version you upgraded from."
                        )
        finally:
            await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            await conn.commit()

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )

    async def close(self) -> None:
        await self.engine.dispose()
        if self.inline is not None:
            self.inline.close()


class _Session(Session):
    """The sessions of ``Database``: rows left for ``update_later`` and ``insert_later`` are
    written when the transaction commits, if ``flush_batched`` has not written them yet."""


@event.listens_for(_Session, "before_commit")
def _write_later(session: Session) -> None:
    if session.info.get(_UPDATES) or session.info.get(_INSERTS):
        _flush_batched(session)


@event.listens_for(_Session, "after_soft_rollback")
def _forget_later(session: Session, _previous: Any) -> None:
    # Any rollback (Tradecord takes no savepoints, so it is the whole transaction's).
    session.info.pop(_UPDATES, None)
    session.info.pop(_INSERTS, None)


def update_later(session: AsyncSession, cls: type[Any], values: dict[str, Any]) -> None:
    """Update the row of ``cls`` whose primary key is in ``values`` when ``flush_batched``
    runs (a ``group_commit`` unit's end) or the transaction commits: the rows other units
    update in the same columns go with it in one ``executemany``, and the row need not be
    loaded first."""
    session.info.setdefault(_UPDATES, []).append((cls, values))


def insert_later(session: AsyncSession, cls: type[Any], values: dict[str, Any]) -> None:
    """Insert a row of the append-only ``cls`` when ``flush_batched`` runs or the transaction
    commits, with the other rows of ``cls`` with the same columns in one ``executemany``.
    Cheaper than an ORM object (no identity, no change tracking): for rows nothing reads back
    in the transaction that writes them."""
    session.info.setdefault(_INSERTS, []).append((cls, values))


async def flush_batched(session: AsyncSession) -> None:
    """Flush, then run the updates of ``update_later``, then insert the new rows of models
    with ``ids_unread = True`` (and ``insert_later``'s) without reading their ids back.

    The ORM must learn each new row's id; on SQLite it can do that only one row at a time.
    Nothing reads the id of a row of those models (an audit event, a fill, a paper position
    found by account and symbol) after adding it, so their rows go in as one ``executemany``
    per table, in the order they were added, after the rows they refer to.
    """
    await session.run_sync(_flush_batched)


def _flush_batched(session: Session) -> None:
    pending = sorted(
        (
            state
            for state in map(inspect, session.new)
            if getattr(state.class_, "ids_unread", False)
        ),
        key=lambda state: state.insert_order or 0,
    )
    batches: dict[tuple[type[Any], frozenset[str]], list[dict[str, Any]]] = {}
    for state in pending:
        columns = state.mapper.columns.keys()
        values = {key: value for key, value in state.dict.items() if key in columns}
        batches.setdefault((state.class_, frozenset(values)), []).append(values)
        session.expunge(state.obj())
    for cls, values in session.info.pop(_INSERTS, ()):
        batches.setdefault((cls, frozenset(values)), []).append(values)
    session.flush()
    updates: dict[tuple[type[Any], frozenset[str]], list[dict[str, Any]]] = {}
    for cls, values in session.info.pop(_UPDATES, ()):
        updates.setdefault((cls, frozenset(values)), []).append(values)
    for (cls, keys), rows in updates.items():
        mapper = cls.__mapper__
        pk = mapper.primary_key[0]
        changed = sorted(k for k in keys if mapper.columns[k] is not pk)
        statement = (
            update(cls.__table__)
            .where(pk == bindparam("pk_"))
            .values({mapper.columns[k]: bindparam(f"v_{k}") for k in changed})
        )
        # Core, not the ORM's bulk update: a row deleted meanwhile is skipped, not an error.
        params = [{"pk_": r[pk.key]} | {f"v_{k}": r[k] for k in changed} for r in rows]
        session.execute(statement, params)
    for (cls, _), rows in batches.items():
        # Core: the ORM's bulk insert would build and track nothing here, but costs more.
        session.execute(insert(cls.__table__), rows)


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migration scripts, read once per process: reading them runs every script's module."""
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str | None:
    return _scripts().get_current_head()


def _upgrade(conn: Connection, url: str) -> bool:
    """Whether any migration ran."""
    # A database a newer Tradecord migrated (a downgrade, or an older process on shared
    # storage) has a revision this code has never heard of: refuse clearly, touch nothing.
    current = MigrationContext.configure(conn).get_current_revision()
    scripts = _scripts()
    if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
        raise ConfigurationError(
            f"DATABASE_URL: the database is at revision {current}, newer than this Tradecord "
            f"knows (up to {scripts.get_current_head()}); run the newer Tradecord version"
        )
    if current == scripts.get_current_head():
        return False  # Alembic would read every script again to learn there is nothing to do
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return True


async def lock_name(session: AsyncSession, name: str) -> None:
    """Take a lock on ``name`` until the transaction ends, for a check-then-insert with no row
    to lock yet (two members claiming one brokerage account).

    PostgreSQL: a transaction-level advisory lock on the name's hash. SQLite has one writer per
    database: a write that changes nothing makes this transaction that writer, and its reads
    from then on see every commit before it.
    """
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(text("UPDATE members SET id = id WHERE 0"))
    else:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name}
        )


async def lock_row(session: AsyncSession, table: Any, where: Any) -> None:
    """Take the write lock for the rows matching ``where`` until the transaction ends.

    PostgreSQL locks just those rows (``SELECT ... FOR UPDATE``). SQLite has one writer per
    database: a no-op UPDATE makes this transaction that writer, so a second process waits on
    ``busy_timeout`` exactly where a PostgreSQL one would wait on the row lock.
    """
    from sqlalchemy import select, update

    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        pk = next(iter(table.__table__.primary_key.columns))
        await session.execute(update(table).where(where).values({pk.name: pk}))
    else:
        await session.execute(select(table).where(where).with_for_update())
