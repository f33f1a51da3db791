"""order intents indexed by status and last update

The reconciler looks every 30 s at the orders of some statuses updated in a window (orders to
settle, and fills stored but never told): by status alone it read every filled order ever.

Revision ID: 0030
Revises: 0029
Create Date: 2026-11-29 09:05:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0030"
down_revision: str | None = "0029"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_order_intents_status_updated_at", "order_intents", ["status", "updated_at"])
    op.drop_index("ix_order_intents_status", table_name="order_intents")


def downgrade() -> None:
    op.create_index("ix_order_intents_status", "order_intents", ["status"])
    op.drop_index("ix_order_intents_status_updated_at", table_name="order_intents")
