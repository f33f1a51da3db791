"""a strategy's owner is told (by DM, at most hourly) when its signals are refused

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-28 00:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSALS_UNTOLD = "status = 'refused' AND announced = false"


def upgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.add_column(
            sa.Column("refusals_told_at", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )
    # Refusals from before this revision are old news: nobody is told of them now.
    op.execute("UPDATE signals SET announced = true WHERE status = 'refused'")
    op.create_index(
        "ix_signals_refusals_untold",
        "signals",
        ["strategy_id"],
        sqlite_where=sa.text(REFUSALS_UNTOLD),
        postgresql_where=sa.text(REFUSALS_UNTOLD),
    )


def downgrade() -> None:
    op.drop_index("ix_signals_refusals_untold", table_name="signals")
    with op.batch_alter_table("strategies") as batch:
        batch.drop_column("refusals_told_at")
