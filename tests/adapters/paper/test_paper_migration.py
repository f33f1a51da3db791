"""Migration 0002 applies after 0001 and reverses cleanly, on SQLite and PostgreSQL."""

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
