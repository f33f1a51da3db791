"""a strategy remembers that its owner left the server: its subscribers are told once, and
server admins see it

Revision ID: 0027
Revises: 0026
Create Date: 2026-11-28 04:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0027"
down_revision: str | None = "0026"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.add_column(
            sa.Column("owner_left_at", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.drop_column("owner_left_at")
