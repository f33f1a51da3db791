"""channel lines: an outbox for subscribers' results in alert channels

A signal's results were collected in memory and posted once every subscription had run: a
process that died in between lost the lines of the subscriptions it had finished.

Revision ID: 0031
Revises: 0030
Create Date: 2026-11-29 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "channel_lines",
        sa.Column("id", BIGINT, nullable=False),
        sa.Column("signal_id", sa.String(length=36), nullable=False),
        sa.Column("execution_id", BIGINT, nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", bot.db_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["signal_executions.id"],
            name=op.f("fk_channel_lines_execution_id_signal_executions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["signal_id"],
            ["signals.id"],
            name=op.f("fk_channel_lines_signal_id_signals"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_lines")),
    )
    for column in ("signal_id", "execution_id", "created_at"):
        op.create_index(op.f(f"ix_channel_lines_{column}"), "channel_lines", [column])


def downgrade() -> None:
    op.drop_table("channel_lines")
