"""Paper migrations apply and reverse cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Connection, inspect

from bot.db import Database, alembic_config

PAPER_TABLES = {"paper_accounts", "paper_positions", "paper_orders", "paper_fills"}


def _migrate(conn: Connection, url: str, direction: str, target: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    getattr(command, direction)(cfg, target)


async def test_paper_migration_up_down_up(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0001")
            assert not PAPER_TABLES & set(
                await conn.run_sync(lambda c: inspect(c).get_table_names())
            )
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0002")
            assert PAPER_TABLES <= set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            await conn.run_sync(_migrate, empty_database_url, "downgrade", "0001")
            assert not PAPER_TABLES & set(
                await conn.run_sync(lambda c: inspect(c).get_table_names())
            )
        await db.upgrade()
        assert await db.current_revision() is not None
    finally:
        await db.close()


async def test_bracket_migrations_reverse_cleanly(empty_database_url: str) -> None:
    """0011 (an entry's bracket, its exits' parent) and 0012 (the exits an intent placed)."""

    def columns(c: Connection) -> set[str]:
        return {col["name"] for col in inspect(c).get_columns("paper_orders")}

    def tables(c: Connection) -> set[str]:
        return set(inspect(c).get_table_names())

    bracket = {"take_profit", "stop_loss", "stop_loss_limit", "parent_id"}
    db = Database(empty_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0012")
            assert bracket <= await conn.run_sync(columns)
            assert "bracket_exits" in await conn.run_sync(tables)
            await conn.run_sync(_migrate, empty_database_url, "downgrade", "0010")
            assert not bracket & await conn.run_sync(columns)
            assert "bracket_exits" not in await conn.run_sync(tables)
        await db.upgrade()
        async with db.engine.connect() as conn:
            assert bracket <= await conn.run_sync(columns)
    finally:
        await db.close()
