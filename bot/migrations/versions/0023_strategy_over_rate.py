"""a strategy's owner is told of requests turned away over its rate limit, and may turn the
DMs about refused signals off

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-28 01:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.add_column(
            sa.Column("refusal_notices", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch.add_column(sa.Column("over_rate", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("over_rate_since", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("strategies") as batch:
        batch.drop_column("over_rate_since")
        batch.drop_column("over_rate")
        batch.drop_column("refusal_notices")
