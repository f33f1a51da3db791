"""subscriptions may subtract the exited quantity from a reversal's entry (TradersPost's
"Subtract exit quantity from signal quantity")

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27 17:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(
            sa.Column(
                "subtract_exit_quantity", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("subtract_exit_quantity")
