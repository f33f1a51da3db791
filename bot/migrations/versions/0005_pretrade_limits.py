"""pre-trade limits: kill switch, member pause and limits, strategy notional limits

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "switches",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("on", sa.Boolean(), nullable=False),
        sa.Column("changed_at", bot.db_types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_switches")),
    )
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("paused_at", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )
        for column in ("max_order_quantity", "max_order_notional", "max_daily_notional"):
            batch_op.add_column(sa.Column(column, bot.db_types.Money(length=48), nullable=True))
    with op.batch_alter_table("order_intents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notional", bot.db_types.Money(length=48), nullable=True))
        batch_op.add_column(
            sa.Column("submitted_at", bot.db_types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            "ix_order_intents_member_id_submitted_at", ["member_id", "submitted_at"], unique=False
        )
    with op.batch_alter_table("strategies", schema=None) as batch_op:
        for column in ("max_order_notional", "max_daily_notional"):
            batch_op.add_column(sa.Column(column, bot.db_types.Money(length=48), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("strategies", schema=None) as batch_op:
        batch_op.drop_column("max_daily_notional")
        batch_op.drop_column("max_order_notional")
    with op.batch_alter_table("order_intents", schema=None) as batch_op:
        batch_op.drop_index("ix_order_intents_member_id_submitted_at")
        batch_op.drop_column("submitted_at")
        batch_op.drop_column("notional")
    with op.batch_alter_table("members", schema=None) as batch_op:
        for column in ("max_daily_notional", "max_order_notional", "max_order_quantity"):
            batch_op.drop_column(column)
        batch_op.drop_column("paused_at")
    op.drop_table("switches")
