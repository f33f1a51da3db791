"""Database models (SQLAlchemy 2.0 typed declarative).

Nothing here is SQLite-only: the same models run on PostgreSQL with several processes.
Secrets live only in ``credentials`` and only as vault envelopes.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.db_types import BigIntPK, Money, UTCDateTime, utcnow

# Stable constraint names so Alembic migrations are identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), Decimal: Money(), dict[str, Any]: JSON()}


def new_uuid() -> str:
    return str(uuid.uuid4())


def time_ordered_uuid() -> str:
    """A UUID version 7 (RFC 9562): the Unix time in milliseconds, then 74 random bits.

    For rows written on the webhook's hot path: ids that grow with time are added at the end
    of their index, so the signals written together touch the same few pages instead of one
    random page each (a quarter of the acknowledgement's commit time at SQLite). The random
    part is the id's end: that is what messages show (``short_id``)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (1 << 48) - 1) << 80 | 0x7 << 76 | (rand >> 64 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (1 << 62) - 1
    return str(uuid.UUID(int=value))


def short_id(signal_id: str) -> str:
    """The 8 characters messages show of a signal's id: its random end (``time_ordered_uuid``
    ids of one minute share their start). /signal show takes it, or the start of an older
    id, as messages before time-ordered ids showed."""
    return signal_id[-8:]


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    discord_user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    plan: Mapped[str | None] = mapped_column(String(32))
    # Set by /pause: every new order of the member is refused at submit time until /resume.
    paused_at: Mapped[datetime | None] = mapped_column()
    # The member's own pre-trade limits (None: the server's default applies, if any). They can
    # only be stricter than the server's: the stricter of the two is enforced.
    max_order_quantity: Mapped[Decimal | None] = mapped_column()
    max_order_notional: Mapped[Decimal | None] = mapped_column()
    max_daily_notional: Mapped[Decimal | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    connections: Mapped[list[Connection]] = relationship(
        back_populates="member",
        cascade="all, delete-orphan",
        order_by="Connection.id",
        lazy="raise_on_sql",
    )


class ConnectionStatus:
    ACTIVE = "active"  # linked and at least one account chosen
    NEEDS_ACCOUNT = "needs_account"  # linked; trading is off until an account is chosen
    NEEDS_REAUTH = "needs_reauth"  # the broker refused our refresh token


class Connection(Base):
    """One account relationship at one broker (TradersPost's "broker connection")."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("member_id", "name_key"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    broker: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(50))
    # casefolded name: uniqueness "ignoring case" enforced by the database, not by a race.
    name_key: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default=ConnectionStatus.NEEDS_ACCOUNT)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Broker-side identity of the login (e.g. user id), to refuse linking it to two members.
    external_id: Mapped[str | None] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    member: Mapped[Member] = relationship(back_populates="connections", lazy="raise_on_sql")
    accounts: Mapped[list[ConnectionAccount]] = relationship(
        back_populates="connection",
        cascade="all, delete-orphan",
        order_by="ConnectionAccount.mode",
        lazy="raise_on_sql",
    )
    credential: Mapped[Credential | None] = relationship(
        back_populates="connection",
        cascade="all, delete-orphan",
        uselist=False,
        lazy="raise_on_sql",
    )

    def account(self, mode: str) -> ConnectionAccount | None:
        return next((a for a in self.accounts if a.mode == mode), None)


class ConnectionAccount(Base):
    """The live or paper account chosen for a connection (at most one of each)."""

    __tablename__ = "connection_accounts"
    __table_args__ = (UniqueConstraint("connection_id", "mode"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(8))  # "live" | "paper"
    account_id: Mapped[str] = mapped_column(String(64))
    account_type: Mapped[str] = mapped_column(String(16))  # cash | margin | futures | crypto
    label: Mapped[str] = mapped_column(String(100))  # masked, safe to show
    chosen_at: Mapped[datetime] = mapped_column(default=utcnow)

    connection: Mapped[Connection] = relationship(back_populates="accounts", lazy="raise_on_sql")


class Credential(Base):
    """OAuth tokens of a connection, as vault envelopes bound to this row."""

    __tablename__ = "credentials"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True
    )
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str | None] = mapped_column(Text)
    token_type: Mapped[str] = mapped_column(String(20), default="Bearer")
    scope: Mapped[str | None] = mapped_column(String(200))
    environment: Mapped[str | None] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column()
    refresh_expires_at: Mapped[datetime | None] = mapped_column()
    refresh_reminded_at: Mapped[datetime | None] = mapped_column()
    # A token refresh in flight (bot.services.tokens): who makes it, and until when the others
    # wait for it instead of refreshing themselves.
    refresh_lease_until: Mapped[datetime | None] = mapped_column()
    refresh_lease_owner: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    connection: Mapped[Connection] = relationship(back_populates="credential", lazy="raise_on_sql")


class IntentStatus:
    DRAFT = "draft"  # previewed, waiting for the member's Confirm
    DISCARDED = "discarded"  # preview cancelled or expired; never sent
    PENDING = "pending"  # confirmed and stored, broker not called yet
    SUBMITTED = "submitted"  # broker call in flight or answered without a final state
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"  # we cannot prove whether the broker has it: the reconciler decides
    FAILED = "failed"  # proven never placed (refused before sending, or lookup proved absence)

    FINAL = frozenset({FILLED, CANCELLED, REJECTED, EXPIRED, FAILED, DISCARDED})
    OPEN = frozenset({ACCEPTED, PARTIALLY_FILLED})


class OrderIntent(Base):
    """An order we mean to place, stored before the broker is called."""

    __tablename__ = "order_intents"
    __table_args__ = (
        # Status, then last update: the reconciler's windows (see migration 0030).
        Index("ix_order_intents_status_updated_at", "status", "updated_at"),
        Index("ix_order_intents_member_id_submitted_at", "member_id", "submitted_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    # Same key twice (a double click, a repeated signal) means the same intent.
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL"), index=True
    )
    broker: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))
    account_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="discord")
    symbol: Mapped[str] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column()
    order_type: Mapped[str] = mapped_column(String(16))
    limit_price: Mapped[Decimal | None] = mapped_column()
    stop_price: Mapped[Decimal | None] = mapped_column()
    time_in_force: Mapped[str] = mapped_column(String(8))
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default=IntentStatus.PENDING)
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    filled_quantity: Mapped[Decimal] = mapped_column(default=Decimal(0))
    average_fill_price: Mapped[Decimal | None] = mapped_column()
    error_code: Mapped[str | None] = mapped_column(String(40))
    error_message: Mapped[str | None] = mapped_column(String(500))
    notified_status: Mapped[str | None] = mapped_column(String(64))
    # Stamped by the pre-trade checks as the order is sent: daily notional limits sum these.
    notional: Mapped[Decimal | None] = mapped_column()
    submitted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BracketExit(Base):
    """An exit of a bracket an intent placed (take-profit or stop-loss): the broker's order is
    not an intent of its own, but its fill is the member's news, told once."""

    __tablename__ = "bracket_exits"
    __table_args__ = (UniqueConstraint("broker", "broker_order_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    intent_id: Mapped[str] = mapped_column(
        ForeignKey("order_intents.id", ondelete="CASCADE"), index=True
    )
    broker: Mapped[str] = mapped_column(String(32))
    broker_order_id: Mapped[str] = mapped_column(String(64))
    # How it ended, once seen (a fill is told): until then it is followed like a working order.
    notified_status: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrderWatcher(Base):
    """Which process follows a connection's working orders, under a lease it renews: one
    stream per connection, however many processes run. Tradier allows one account-events
    session per login, and a new one ends the last: two processes watching both kept
    knocking the other's stream offline (and re-polled every order at each reconnect)."""

    __tablename__ = "order_watchers"

    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    holder: Mapped[str] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime] = mapped_column()


class Switch(Base):
    """A global on/off flag (the kill switch), in the database so every process obeys it."""

    __tablename__ = "switches"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    on: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    changed_by: Mapped[int | None] = mapped_column(BigInteger)  # Discord user id


class AuditEvent(Base):
    """Append-only trail. No foreign keys: the trail outlives deleted connections."""

    __tablename__ = "audit_events"
    ids_unread: ClassVar[bool] = True  # see bot.db.flush_batched

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(40))
    member_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    connection_id: Mapped[int | None] = mapped_column(BigInteger)
    intent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ConnectLink(Base):
    """A private /connect link: single use, 10 minutes, replaced by a newer /connect.

    Only the SHA-256 of the link token is stored: the database alone cannot open a link.
    """

    __tablename__ = "connect_links"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    broker: Mapped[str] = mapped_column(String(32))
    environment: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
    cancelled_at: Mapped[datetime | None] = mapped_column()


class OAuthState(Base):
    """Server-side OAuth state (RFC 9700): single use, 10 minutes, bound to member and broker.

    ``kind`` is "discord" (proving whose browser this is) or "broker". The state value itself
    is stored only as a hash; the PKCE verifier only as a vault envelope bound to this row.
    """

    __tablename__ = "oauth_states"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    link_id: Mapped[str] = mapped_column(ForeignKey("connect_links.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    broker: Mapped[str] = mapped_column(String(32))
    issuer: Mapped[str | None] = mapped_column(String(200))
    code_verifier: Mapped[str | None] = mapped_column(Text)
    # Hash of the browser's flow cookie: a state only completes in the browser that began it.
    browser_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    consumed_at: Mapped[datetime | None] = mapped_column()


class UsedCode(Base):
    """Authorization codes already presented (hashed): a reused code is refused unspent."""

    __tablename__ = "used_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    broker: Mapped[str] = mapped_column(String(32))
    used_at: Mapped[datetime] = mapped_column(default=utcnow)


class BrokerRateBucket(Base):
    """One broker rate limit's leaky bucket (see bot.services.ratelimits), shared by every
    process: ``level`` requests in the bucket as of ``at`` (Unix seconds)."""

    __tablename__ = "broker_rate_buckets"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    level: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float)
