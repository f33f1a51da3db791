"""alert channels remember that posts there fail, so their strategy's owner is told once

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_channels") as batch:
        batch.add_column(
            sa.Column("failing_since", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_channels") as batch:
        batch.drop_column("failing_since")
