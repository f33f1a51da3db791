"""jobs with a serial key run one at a time, in order: a strategy's signals

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 15:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("serial_key", sa.String(length=64), nullable=True))
        batch.create_index(
            "ix_jobs_serial_key_status_id", ["serial_key", "status", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_serial_key_status_id")
        batch.drop_column("serial_key")
