"""The duplicate check seeks a strategy's body hash by time instead of scanning its day

The acknowledgement asks for the first active signal of a strategy with a body hash in the
last 24 hours, ordered by time. With (strategy_id, body_hash) SQLite preferred the
(strategy_id, received_at) index for its order and read every signal of the strategy's day,
so each acknowledgement grew slower with the strategy's traffic; (strategy_id, body_hash,
received_at) answers both the match and the order in one seek.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27 07:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "ix_signals_strategy_id_body_hash"
NEW = "ix_signals_strategy_id_body_hash_received_at"


def upgrade() -> None:
    op.create_index(NEW, "signals", ["strategy_id", "body_hash", "received_at"])
    op.drop_index(OLD, table_name="signals")


def downgrade() -> None:
    op.create_index(OLD, "signals", ["strategy_id", "body_hash"])
    op.drop_index(NEW, table_name="signals")
