"""the kill switch's row exists from the start (off), so a send's claim can always share its
lock: the first /killswitch on then waits for claims in flight, as every later one does

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-27 22:40:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

switches = sa.table(
    "switches",
    sa.column("name", sa.String(40)),
    sa.column("on", sa.Boolean()),
    sa.column("changed_at", bot.db_types.UTCDateTime(timezone=True)),
    sa.column("changed_by", sa.BigInteger()),
)
KILL_SWITCH = "kill_switch"


def upgrade() -> None:
    bind = op.get_bind()
    found = bind.execute(sa.select(switches.c.name).where(switches.c.name == KILL_SWITCH))
    if found.first() is None:
        op.execute(
            switches.insert().values(name=KILL_SWITCH, on=False, changed_at=datetime.now(UTC))
        )


def downgrade() -> None:
    # Only the row this migration made: one an owner has switched stays.
    op.execute(
        switches.delete().where(switches.c.name == KILL_SWITCH, switches.c.changed_by.is_(None))
    )
