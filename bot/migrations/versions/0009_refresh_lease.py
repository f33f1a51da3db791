"""credentials carry a refresh lease, so a token refresh holds no database lock over HTTP

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.add_column(
            sa.Column("refresh_lease_until", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("refresh_lease_owner", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("refresh_lease_owner")
        batch.drop_column("refresh_lease_until")
