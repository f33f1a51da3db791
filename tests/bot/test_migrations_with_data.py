"""Upgrading a deployment that has data: what Tradecord runs at start (``Database.upgrade``) on
a database an older version made and used."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from sqlalchemy import event, func, select, table, text

from bot.db import Database, alembic_config, head_revision

TABLES = (
    "members",
    "connections",
    "paper_accounts",
    "paper_orders",
    "paper_fills",
    "strategies",
    "strategy_shares",
    "alert_channels",
    "subscriptions",
    "signals",
    "signal_executions",
)


async def at_revision(url: str, revision: str) -> Database:
    """The app's own Database (its engine: WAL, foreign keys on) migrated to ``revision``."""
    db = Database(url)
    await upgrade_to(db, revision)
    return db


async def upgrade_to(db: Database, revision: str) -> None:
    def up(conn: Any) -> None:
        cfg = alembic_config(db.url)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    conn = await db.connect()
    try:
        async with conn.begin():
            await conn.run_sync(up)
    finally:
        await conn.close()


async def sql(db: Database, statement: str) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text(statement))


async def rows(db: Database, statement: str) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(statement))).all())


async def seed_as_0014(db: Database) -> None:
    """A member trading on paper who subscribes to a shared strategy with an alert channel,
    written as Tradecord at 0014 wrote them (every column added since has a default)."""
    now = "'2026-11-27 12:00:00.000000'" if db.is_sqlite else "'2026-11-27 12:00:00+00'"
    for statement in (
        "INSERT INTO members (id, discord_user_id, created_at) VALUES (1, 111, NOW)",
        "INSERT INTO members (id, discord_user_id, created_at) VALUES (2, 222, NOW)",
        "INSERT INTO connections (id, member_id, broker, name, name_key, status, builtin, "
        "settings, created_at, updated_at) VALUES (10, 1, 'paper', 'Tradecord Paper', "
        "'tradecord paper', 'active', true, '{}', NOW, NOW)",
        "INSERT INTO paper_accounts (id, connection_id, currency, starting_cash, cash, "
        "realized_pnl, order_seq, revision, created_at, updated_at) VALUES ('PA1', 10, 'USD', "
        "'100000', '98150.25', '0', 1, 1, NOW, NOW)",
        "INSERT INTO paper_orders (id, account_id, seq, client_order_id, symbol, asset_class, "
        "multiplier, side, quantity, order_type, time_in_force, reference_price, status, "
        "filled_quantity, average_fill_price, simulated, created_at, updated_at, closed_at) "
        "VALUES ('PO1', 'PA1', 1, 'c1', 'AAPL', 'equity', '1', 'buy', '10', 'market', 'day', "
        "'185.0', 'filled', '10', '184.975', false, NOW, NOW, NOW)",
        "INSERT INTO paper_fills (execution_id, order_id, account_id, symbol, side, quantity, "
        "price, multiplier, realized_pnl, cash_change, simulated, at) VALUES ('PO1-1', 'PO1', "
        "'PA1', 'AAPL', 'buy', '10', '184.975', '1', '0', '-1849.75', false, NOW)",
        "INSERT INTO strategies (id, guild_id, owner_member_id, name, name_key, secret_hash, "
        "secret_rotated_at, allowed_sources, allowed_tickers, max_lag_seconds, "
        "rate_limit_per_minute, created_at, updated_at) VALUES ('s1', 5, 1, 'Breakout', "
        "'breakout', 'h', NOW, '[]', '[]', 60, 30, NOW, NOW)",
        "INSERT INTO strategy_shares VALUES ('s1', 2, NOW)",
        "INSERT INTO alert_channels (id, guild_id, scope, strategy_id, channel_id, updated_at) "
        "VALUES (1, 5, 's1', 's1', 999, NOW)",
        "INSERT INTO subscriptions (id, strategy_id, member_id, connection_id, mode, sizing, "
        "sizing_value, sides, manual_approval, approval_ttl_seconds, enabled, created_at, "
        "updated_at) VALUES (7, 's1', 1, 10, 'paper', 'fixed_quantity', '10', 'both', false, "
        "300, true, NOW, NOW)",
        "INSERT INTO signals (id, strategy_id, received_at, body_hash, body, status, test, "
        "announced) VALUES ('g1', 's1', NOW, 'bh', '{}', 'done', false, true)",
        "INSERT INTO signal_executions (id, signal_id, subscription_id, member_id, "
        "connection_id, mode, status, phases, created_at, updated_at) VALUES (3, 'g1', 7, 1, "
        "10, 'paper', 'placed', '[]', NOW, NOW)",
    ):
        await sql(db, statement.replace("NOW", now))


async def counts(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        return {t: await conn.scalar(select(func.count()).select_from(table(t))) for t in TABLES}


@pytest.mark.parametrize("start", ["0014", "0027"])
async def test_an_upgrade_keeps_every_row_of_a_database_in_use(
    empty_database_url: str, start: str
) -> None:
    """On SQLite a migration that rebuilds a table (0015, 0016, 0023 and 0028 add a column
    with an expression default) dropped the old one with foreign keys on: its ON DELETE
    actions deleted every strategy's subscriptions, signals, shares and alert channel, and the
    paper fills; 0028 cut every signal run from its subscription."""
    db = await at_revision(empty_database_url, "0014")
    try:
        await upgrade_to(db, start)
        await seed_as_0014(db)
        before = await counts(db)
        await db.upgrade()
        assert await db.current_revision() == head_revision()
        assert await counts(db) == before
        assert await rows(db, "SELECT subscription_id FROM signal_executions") == [(7,)]
        [(execution, price)] = await rows(db, "SELECT execution_id, price FROM paper_fills")
        assert (execution, Decimal(price)) == ("PO1-1", Decimal("184.975"))
        # Foreign keys are enforced again on the connections the app goes on to use.
        if db.is_sqlite:
            assert await rows(db, "PRAGMA foreign_keys") == [(1,)]
    finally:
        await db.close()


class Interrupted(Exception):
    """What stops an upgrade midway: the old bot still holding the database, a full disk."""


async def test_an_upgrade_stopped_midway_changes_nothing_and_can_run_again(
    empty_database_url: str,
) -> None:
    """SQLite committed the first pending migration's DDL at once (the driver begins a
    transaction only at the first INSERT, UPDATE or DELETE), so a failure later left the
    schema half new at the old revision, and every start after failed with "table switches
    already exists"."""
    db = await at_revision(empty_database_url, "0004")
    try:
        await sql(
            db,
            "INSERT INTO members (id, discord_user_id, created_at) "
            "VALUES (1, 111, '2026-11-25 12:00:00+00')",
        )

        def fail_late(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "order_watchers" in statement:  # 0032, the last migration
                raise Interrupted

        event.listen(db.engine.sync_engine, "before_cursor_execute", fail_late)
        with pytest.raises(Interrupted):
            await db.upgrade()
        event.remove(db.engine.sync_engine, "before_cursor_execute", fail_late)
        assert await db.current_revision() == "0004"
        await db.upgrade()
        assert await db.current_revision() == head_revision()
        assert await rows(db, "SELECT discord_user_id FROM members") == [(111,)]
    finally:
        await db.close()


async def test_two_upgrades_at_once_both_end_at_head(empty_database_url: str) -> None:
    """`tradecord db upgrade` run while a process starts: each read the revision and ran the
    same migrations, and one failed ("expected to match one row when updating …")."""
    first, second = Database(empty_database_url), Database(empty_database_url)
    try:
        await upgrade_to(first, "0020")
        await asyncio.gather(first.upgrade(), second.upgrade())
        assert await first.current_revision() == head_revision()
    finally:
        await first.close()
        await second.close()
