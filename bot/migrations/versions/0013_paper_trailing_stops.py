"""Tradecord Paper trails stops: how far, and the best price seen

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 05:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("trail_amount", "trail_percent", "watermark")


def upgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, bot.db_types.Money(length=48), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
