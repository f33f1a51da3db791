"""paper brackets may have a trailing stop-loss

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-27 21:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch:
        batch.add_column(
            sa.Column("stop_loss_trail_amount", bot.db_types.Money(length=48), nullable=True)
        )
        batch.add_column(
            sa.Column("stop_loss_trail_percent", bot.db_types.Money(length=48), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("paper_orders") as batch:
        batch.drop_column("stop_loss_trail_percent")
        batch.drop_column("stop_loss_trail_amount")
