"""Tradecord Paper places take-profit/stop-loss brackets: an entry keeps its bracket, its exits
point back to it

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 04:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch:
        for name in ("take_profit", "stop_loss", "stop_loss_limit"):
            batch.add_column(sa.Column(name, bot.db_types.Money(length=48), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.String(length=40), nullable=True))
        batch.create_index("ix_paper_orders_parent_id", ["parent_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch:
        batch.drop_index("ix_paper_orders_parent_id")
        for name in ("parent_id", "stop_loss_limit", "stop_loss", "take_profit"):
            batch.drop_column(name)
