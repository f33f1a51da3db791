"""the exits of an intent's bracket, so their fills are told once

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bracket_exits",
        sa.Column("id", bot.db_types.BigIntPK, nullable=False),
        sa.Column("intent_id", sa.String(length=36), nullable=False),
        sa.Column("broker", sa.String(length=32), nullable=False),
        sa.Column("broker_order_id", sa.String(length=64), nullable=False),
        sa.Column("notified_status", sa.String(length=64), nullable=True),
        sa.Column("created_at", bot.db_types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["intent_id"],
            ["order_intents.id"],
            name=op.f("fk_bracket_exits_intent_id_order_intents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bracket_exits")),
        sa.UniqueConstraint(
            "broker", "broker_order_id", name=op.f("uq_bracket_exits_broker_broker_order_id")
        ),
    )
    op.create_index("ix_bracket_exits_intent_id", "bracket_exits", ["intent_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_bracket_exits_intent_id", table_name="bracket_exits")
    op.drop_table("bracket_exits")
