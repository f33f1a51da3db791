"""a strategy's owner is told of requests that came with a wrong secret (an alert still sending
the URL from before /strategy rotate-secret)

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-28 01:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.add_column(sa.Column("bad_secret", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("bad_secret_since", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.drop_column("bad_secret_since")
        batch.drop_column("bad_secret")
