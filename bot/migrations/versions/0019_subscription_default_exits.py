"""subscriptions may give entries a take-profit and a stop-loss when their signal has none

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-27 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("take_profit", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("stop_loss", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("stop_loss")
        batch.drop_column("take_profit")
