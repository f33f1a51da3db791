from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, inspect, select, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import Database, head_revision, insert_later, update_later
from bot.db_types import Money, plain
from bot.models import AuditEvent, Base, Connection, ConnectionAccount, Member
from bot.services.members import MemberService


async def test_migrations_from_empty_reach_head_and_match_models(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        assert await db.current_revision() is None
        await db.upgrade()
        assert await db.current_revision() == head_revision()
        await db.upgrade()  # idempotent
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
        for table in (
            "members",
            "connections",
            "credentials",
            "connection_accounts",
            "order_intents",
            "audit_events",
        ):
            assert table in tables
        assert diff == [], f"models and migrations differ: {diff}"
    finally:
        await db.close()


async def test_first_contact_creates_member_with_paper_connection(db: Database) -> None:
    members = MemberService(db)
    member = await members.get_with_connections(42)
    assert member.discord_user_id == 42
    [paper] = member.connections
    assert (paper.broker, paper.name, paper.builtin, paper.status) == (
        "paper",
        "Tradecord Paper",
        True,
        "active",
    )
    assert paper.account("paper") is not None and paper.account("live") is None


async def test_concurrent_first_contact_makes_one_member(db: Database) -> None:
    # Separate services model separate processes: no shared in-memory cache.
    ids = await asyncio.gather(*(MemberService(db).ensure(7) for _ in range(8)))
    assert len(set(ids)) == 1
    async with db.session() as s:
        assert len((await s.scalars(select(Member))).all()) == 1
        assert len((await s.scalars(select(Connection))).all()) == 1
        assert len((await s.scalars(select(ConnectionAccount))).all()) == 1


async def test_connection_names_unique_per_member_ignoring_case(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    member_id = await MemberService(db).ensure(5)
    async with db.session() as s:
        s.add(
            Connection(
                member_id=member_id,
                broker="alpaca",
                name="TRADECORD paper",
                name_key="tradecord paper",
            )
        )
        try:
            await s.commit()
        except IntegrityError:
            await s.rollback()
        else:
            raise AssertionError("duplicate name accepted")


def test_database_file_created_in_data_dir(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'x.db'}")
    assert (tmp_path / "nested").is_dir()
    asyncio.run(db.close())


# Money as it comes: prices and amounts with up to 10 decimals, and numbers written with
# exponents or trailing zeros (1E+5, 2.500), within Decimal's 28 significant digits.
MONEY = st.decimals(min_value=-(10**15), max_value=10**15, places=10) | st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(exponent),
    st.integers(-(10**9), 10**9),
    st.integers(-12, 12),
)


@given(MONEY)
def test_money_reads_back_on_sqlite_exactly_as_plain_makes_it(value: Decimal) -> None:
    """SQLite keeps money as canonical text; reading it back needs no further normalizing,
    and gives the very same digits and exponent as ``plain``."""
    money, dialect = Money(), sqlite_dialect.dialect()
    stored = money.process_bind_param(value, dialect)
    read = money.process_result_value(stored, dialect)
    assert read is not None and read.as_tuple() == plain(value).as_tuple()


async def test_group_commit_batches_concurrent_units_and_keeps_errors_their_own(
    db: Database,
) -> None:
    members = MemberService(db)
    ids = []
    for user in range(20):
        await members.ensure(5000 + user)
    async with db.session() as s:
        ids = list(await s.scalars(select(Connection.id).order_by(Connection.id)))
    assert len(ids) == 20
    statements: list[tuple[str, bool]] = []

    def seen(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        statements.append((statement.split()[0], many))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)

    def rename(cid: int, name: str) -> Callable[[AsyncSession], Awaitable[int]]:
        async def work(s: AsyncSession) -> int:
            row = await s.get(Connection, cid)
            assert row is not None
            if name == "bad":
                raise ValueError("refused")
            row.name = name
            return cid

        return work

    done = await asyncio.gather(
        *(db.group_commit(rename(cid, f"Renamed {cid}"), rows=[(Connection, cid)]) for cid in ids)
    )
    assert done == ids
    # One read of all the rows, one executemany of all the updates.
    assert statements == [("SELECT", False), ("UPDATE", True)]

    results = await asyncio.gather(
        *(
            db.group_commit(rename(cid, "bad" if i == 3 else "Again"), rows=[(Connection, cid)])
            for i, cid in enumerate(ids[:5])
        ),
        return_exceptions=True,
    )
    assert isinstance(results[3], ValueError) and results[:3] + results[4:] == ids[:3] + ids[4:5]
    async with db.session() as s:
        names = {cid: name for cid, name in await s.execute(select(Connection.id, Connection.name))}
    assert [names[cid] for cid in ids[:5]] == ["Again"] * 3 + [f"Renamed {ids[3]}", "Again"]


async def test_update_later_updates_many_rows_in_one_statement_and_skips_a_deleted_one(
    db: Database,
) -> None:
    members = MemberService(db)
    for user in range(5):
        await members.ensure(6000 + user)
    async with db.session() as s:
        ids = list(await s.scalars(select(Connection.id).order_by(Connection.id)))
    statements: list[tuple[str, bool]] = []

    def seen(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        statements.append((statement.split()[0], many))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)

    def rename(cid: int) -> Callable[[AsyncSession], Awaitable[None]]:
        async def work(s: AsyncSession) -> None:
            update_later(s, Connection, {"id": cid, "name": f"Later {cid}", "settings": {"n": cid}})

        return work

    await asyncio.gather(*(db.group_commit(rename(cid)) for cid in [*ids, 999999]))
    assert statements == [("UPDATE", True)]
    async with db.session() as s:
        rows = (await s.execute(select(Connection.id, Connection.name, Connection.settings))).all()
    assert sorted(rows) == [(cid, f"Later {cid}", {"n": cid}) for cid in ids]


async def test_rows_left_for_later_are_written_by_a_plain_commit_and_dropped_by_a_rollback(
    db: Database,
) -> None:
    await MemberService(db).ensure(6100)
    async with db.session() as s:
        cid = await s.scalar(select(Connection.id))
    async with db.transaction() as s:
        update_later(s, Connection, {"id": cid, "name": "Kept"})
        for n in range(3):
            insert_later(s, AuditEvent, {"kind": "kept", "detail": {"n": n}})
    try:
        async with db.transaction() as s:
            update_later(s, Connection, {"id": cid, "name": "Lost"})
            insert_later(s, AuditEvent, {"kind": "lost", "detail": {}})
            raise RuntimeError("the unit of work fails")
    except RuntimeError:
        pass
    async with db.session() as s:  # one session: rolled back, then used again
        await s.scalar(select(Connection.name).where(Connection.id == cid))
        insert_later(s, AuditEvent, {"kind": "lost", "detail": {}})
        await s.rollback()
        insert_later(s, AuditEvent, {"kind": "kept", "detail": {"n": 3}})
        await s.commit()
    async with db.session() as s:
        assert await s.scalar(select(Connection.name).where(Connection.id == cid)) == "Kept"
        events = (
            await s.execute(
                select(AuditEvent.kind, AuditEvent.detail)
                .where(AuditEvent.kind.in_(["kept", "lost"]))
                .order_by(AuditEvent.id)
            )
        ).all()
    assert events == [("kept", {"n": n}) for n in range(4)]


async def test_sqlite_commits_wait_for_the_disk_only_when_asked(tmp_path: Path) -> None:
    """normal (the default) survives a killed process; full, a power loss too: both the ORM's
    connections and the webhook's own acknowledgement connection obey the setting."""
    from bot.core import Core
    from bot.settings import load_settings
    from bot.vault import generate_key_spec

    for name, level in (("normal", 1), ("FULL", 2)):
        settings = load_settings(
            tradecord_data_dir=tmp_path / name,
            tradecord_keys=generate_key_spec("k"),
            discord_token=None,
            sqlite_synchronous=name,
        )
        core = await Core.open(settings)
        try:
            async with core.db.session() as s:
                assert (await s.execute(text("PRAGMA synchronous"))).scalar() == level
            fast = core.signals.acks.fast
            assert fast is not None
            conn = fast._open(0, checkpoints=False)
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
            conn.close()
        finally:
            await core.close()
