"""subscriptions may place entries whose signal names no order type as limit orders at the
quote, or up to an allowance past it

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-28 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("entry_order", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_column("entry_order")
