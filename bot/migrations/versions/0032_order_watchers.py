"""order watchers: one process follows a connection's working orders, under a lease

Every process streamed every connection with working orders. Tradier allows one account-events
session per login, and a new one ends the last: two processes kept ending each other's stream.

Revision ID: 0032
Revises: 0031
Create Date: 2026-11-29 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0032"
down_revision: str | None = "0031"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "order_watchers",
        sa.Column("connection_id", BIGINT, autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("lease_expires_at", bot.db_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_order_watchers_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_order_watchers")),
    )


def downgrade() -> None:
    op.drop_table("order_watchers")
