"""webhook settings within the security requirement: at most 60 signals a minute, 300 s skew

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 09:46:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here: this migration must keep meaning what it meant if the app's bounds change.
MAX_RATE_LIMIT = 60
MAX_LAG_SECONDS = 300

strategies = sa.table(
    "strategies",
    sa.column("rate_limit_per_minute", sa.Integer()),
    sa.column("max_lag_seconds", sa.Integer()),
)


def upgrade() -> None:
    # /strategy settings used to allow up to 600 a minute and a day of skew; the webhook reads
    # the stored values, so rows saved then are lowered to the new maximums.
    op.execute(
        strategies.update()
        .where(strategies.c.rate_limit_per_minute > MAX_RATE_LIMIT)
        .values(rate_limit_per_minute=MAX_RATE_LIMIT)
    )
    op.execute(
        strategies.update()
        .where(strategies.c.max_lag_seconds > MAX_LAG_SECONDS)
        .values(max_lag_seconds=MAX_LAG_SECONDS)
    )


def downgrade() -> None:
    """Nothing to undo: the older code accepts these values, and the higher ones are not kept."""
