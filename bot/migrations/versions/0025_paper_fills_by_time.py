"""paper fills indexed by account and time: the day's P&L reads those since the last close

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-28 02:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The new index leads with account_id, so it serves what the old one did.
    op.create_index("ix_paper_fills_account_id_at", "paper_fills", ["account_id", "at"])
    op.drop_index("ix_paper_fills_account_id", table_name="paper_fills")


def downgrade() -> None:
    op.create_index("ix_paper_fills_account_id", "paper_fills", ["account_id"])
    op.drop_index("ix_paper_fills_account_id_at", table_name="paper_fills")
