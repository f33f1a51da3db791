"""a member's choice to be named in trade alerts is per server

It was one choice for every server, made in one of them with that server's nickname. The
server a stored choice was made in is not known, so stored choices are dropped: members are
"a subscriber" again until they opt in again where they want to be named (the safe side).

Revision ID: 0029
Revises: 0028
Create Date: 2026-11-29 08:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import bot.db_types

revision: str = "0029"
down_revision: str | None = "0028"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _table(per_server: bool) -> None:
    columns: list[sa.Column[object]] = [
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
    ]
    if per_server:
        columns.append(sa.Column("guild_id", sa.BigInteger(), nullable=False))
    op.create_table(
        "alert_preferences",
        *columns,
        sa.Column("alerts_show_name", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=True),
        sa.Column("updated_at", bot.db_types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["members.id"],
            name=op.f("fk_alert_preferences_member_id_members"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            *(["member_id", "guild_id"] if per_server else ["member_id"]),
            name=op.f("pk_alert_preferences"),
        ),
    )


def upgrade() -> None:
    op.drop_table("alert_preferences")
    _table(per_server=True)


def downgrade() -> None:
    op.drop_table("alert_preferences")
    _table(per_server=False)
