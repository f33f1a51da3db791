"""Tables of signal automation: strategies and their webhooks, subscriptions, received signals,
their per-subscription executions, alert settings, and the durable job queue.

Everything a second process needs is here (rate limits, duplicate windows, leases), so several
web and worker processes can share one PostgreSQL database.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.db_types import BigIntPK, utcnow
from bot.models import Base, new_uuid


class Strategy(Base):
    """A named webhook (TradersPost's "strategy") owned by a member of one guild."""

    __tablename__ = "strategies"
    __table_args__ = (UniqueConstraint("guild_id", "name_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    owner_member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    name_key: Mapped[str] = mapped_column(String(100))  # casefolded: unique per guild
    # SHA-256 of the webhook secret, hex. The secret itself is shown once and never stored.
    secret_hash: Mapped[str] = mapped_column(String(64))
    secret_rotated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where signals may come from: IPs/CIDRs and the preset "tradingview"; empty = anywhere.
    allowed_sources: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Tickers this strategy trades (normalized); empty = any ticker.
    allowed_tickers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    max_lag_seconds: Mapped[int] = mapped_column(Integer, default=300)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=60)
    max_quantity: Mapped[Decimal | None] = mapped_column()
    # Pre-trade limits on the entries this strategy's signals place, per subscriber: checked by
    # the trading service at submit time (set with /limits strategy).
    max_order_notional: Mapped[Decimal | None] = mapped_column()
    max_daily_notional: Mapped[Decimal | None] = mapped_column()
    # Touched by every authenticated request (one turned away over the rate too, on PostgreSQL):
    # the write that serialises one strategy's webhook.
    last_signal_at: Mapped[datetime | None] = mapped_column()
    # When its owner was last told that signals were refused (at most one DM an hour).
    refusals_told_at: Mapped[datetime | None] = mapped_column()
    # Whether its owner wants those DMs (refusals are marked told either way).
    refusal_notices: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Requests turned away over the rate limit (429) since the owner was last told: they are
    # not in the signal log, so they are counted here, when (the first) and how many.
    over_rate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    over_rate_since: Mapped[datetime | None] = mapped_column()
    # Requests with a wrong secret (401) since the owner was last told, counted up to
    # BAD_SECRET_CAP: an alert still sending the URL from before /strategy rotate-secret.
    bad_secret: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    bad_secret_since: Mapped[datetime | None] = mapped_column()
    # When its owner was found gone from the guild (their subscribers were told then); cleared
    # when it is given to another member or its owner is back.
    owner_left_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StrategyShare(Base):
    """A member of the guild the owner shared the strategy with (they may subscribe)."""

    __tablename__ = "strategy_shares"

    strategy_id: Mapped[str] = mapped_column(
        ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StrategyRoleShare(Base):
    """A role of the guild the owner shared the strategy with: its members may subscribe, and
    a member who loses the role (or leaves) loses the subscriptions it gave them. The guild's
    id is its @everyone role."""

    __tablename__ = "strategy_role_shares"

    strategy_id: Mapped[str] = mapped_column(
        ForeignKey("strategies.id", ondelete="CASCADE"), primary_key=True
    )
    role_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    """Routes a strategy's signals to one connection of one member, with their own rules."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("strategy_id", "connection_id", "mode"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(
        ForeignKey("strategies.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True
    )
    mode: Mapped[str] = mapped_column(String(8))  # paper | live
    # fixed_quantity | dollar_amount | percent_of_equity | signal (signal quantity × value)
    sizing: Mapped[str] = mapped_column(String(24), default="fixed_quantity")
    sizing_value: Mapped[Decimal] = mapped_column(default=Decimal(1))
    sides: Mapped[str] = mapped_column(String(8), default="both")  # both | long | short
    manual_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approval_ttl_seconds: Mapped[int] = mapped_column(Integer, default=300)
    # TradersPost's deprecated "max strategy positions": every open position counts.
    max_positions: Mapped[int | None] = mapped_column(Integer)
    # TradersPost's "Subtract exit quantity from signal quantity": a reversal (long 5, sell 10)
    # exits the position and enters only the rest (short 5), as a TradingView strategy's
    # reversal alert sends the exit and the entry as one quantity.
    subtract_exit_quantity: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # TradersPost's trading windows: New York times when entries may be placed (None: any).
    trading_windows: Mapped[str | None] = mapped_column(String(200))
    # Exits for entries whose signal has none (TradersPost's subscription take-profit and
    # stop-loss): "5%" or "2.50" from the entry price; a stop-loss may be "trail 2%".
    take_profit: Mapped[str | None] = mapped_column(String(40))
    stop_loss: Mapped[str | None] = mapped_column(String(40))
    # TradersPost's "Use signal take profit": off, a signal's takeProfit is ignored (the
    # subscription's own, if any, applies instead).
    signal_take_profit: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Entries whose signal names no order type: None, market; "limit" or "limit +0.2%" (at
    # the quote, or up to that far past it; bot.services.subscriptions.EntryLimit).
    entry_order: Mapped[str | None] = mapped_column(String(40))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# The orders one signal may place for one subscription, in the order they are placed.
LEGS = ("exit", "entry")


def intent_key(signal_id: str, subscription_id: int, leg: str) -> str:
    """The order intent's idempotency key: a re-run of the same signal finds the same intent."""
    return f"{signal_id}:{subscription_id}:{leg}"


class SignalStatus:
    QUEUED = "queued"  # stored and acknowledged; a job will process it
    PROCESSING = "processing"
    DONE = "done"
    DUPLICATE = "duplicate"  # same body within the window: acknowledged, not traded
    REFUSED = "refused"  # invalid or stale: answered 400 with a message code
    FAILED = "failed"  # its job was given up (kept failing): owner and members were told


# The predicate of ix_signals_refusals_untold, written the same in the queries that use it
# (SQLite uses a partial index only for a query whose WHERE has its terms as written).
REFUSALS_UNTOLD = "status = 'refused' AND announced = false"


class ReceivedSignal(Base):
    """One authenticated webhook request (TradersPost's signal log), stored before the answer."""

    __tablename__ = "signals"
    __table_args__ = (
        Index("ix_signals_strategy_id_received_at", "strategy_id", "received_at"),
        # The duplicate check: a body hash within a time window, earliest first.
        Index(
            "ix_signals_strategy_id_body_hash_received_at",
            "strategy_id",
            "body_hash",
            "received_at",
        ),
        # Refusals not yet told to the strategy's owner (bot.services.refusals): a handful of
        # rows, where the signal log keeps a year.
        Index(
            "ix_signals_refusals_untold",
            "strategy_id",
            sqlite_where=text(REFUSALS_UNTOLD),
            postgresql_where=text(REFUSALS_UNTOLD),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_uuid)
    strategy_id: Mapped[str] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    validated_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    body_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the raw body
    body: Mapped[str] = mapped_column(Text)  # as received (≤16 KiB), for the signal log
    # The validated signal in canonical form (signal_format.Signal.to_record); None if refused.
    payload: Mapped[dict[str, Any] | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(12))
    message_code: Mapped[str | None] = mapped_column(String(48))
    message: Mapped[str | None] = mapped_column(String(400))
    duplicate_of: Mapped[str | None] = mapped_column(String(36))
    ticker: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str | None] = mapped_column(String(8))
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    signal_time: Mapped[datetime | None] = mapped_column()
    source_ip: Mapped[str | None] = mapped_column(String(45))
    announced: Mapped[bool] = mapped_column(Boolean, default=False)


class ExecutionStatus:
    PENDING = "pending"
    WAITING_APPROVAL = "waiting_approval"
    APPROVED = "approved"
    SKIPPED = "skipped"  # nothing to do, or a rule refused it (reason says which)
    DONE = "done"  # cancel-only signals
    ACCEPTED = "accepted"  # working at the broker
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    REJECTED = "rejected"
    FAILED = "failed"
    UNCONFIRMED = "unconfirmed"  # sent; the broker's answer is being settled (reconciler)
    CANCELLED = "cancelled"  # the order was cancelled unfilled (by hand, a later signal)
    ORDER_EXPIRED = "order_expired"  # the order's time in force ran out unfilled
    EXPIRED = "expired"  # approval not given in time
    DECLINED = "declined"  # the member rejected the approval
    TEST = "test"  # a test signal: planned, never placed

    FINAL = frozenset(
        {
            SKIPPED,
            DONE,
            ACCEPTED,
            PARTIALLY_FILLED,
            FILLED,
            REJECTED,
            FAILED,
            UNCONFIRMED,
            CANCELLED,
            ORDER_EXPIRED,
            EXPIRED,
            DECLINED,
            TEST,
        }
    )


class SignalExecution(Base):
    """What one signal did for one subscription: plan, status and phases."""

    __tablename__ = "signal_executions"
    __table_args__ = (UniqueConstraint("signal_id", "subscription_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    signal_id: Mapped[str] = mapped_column(ForeignKey("signals.id", ondelete="CASCADE"))
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), index=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="SET NULL")
    )
    mode: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), default=ExecutionStatus.PENDING)
    reason_code: Mapped[str | None] = mapped_column(String(48))
    reason: Mapped[str | None] = mapped_column(String(500))
    plan: Mapped[dict[str, Any] | None] = mapped_column()
    # [{"phase": ..., "at": iso, "detail": ...}]; broker phases come from the audit trail.
    phases: Mapped[list[Any]] = mapped_column(JSON, default=list)
    approval_expires_at: Mapped[datetime | None] = mapped_column()
    notified_status: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ChannelLine(Base):
    """A subscriber's result waiting for its strategy's alert channel: an outbox row, stored in
    the transaction that records the result and deleted by whoever posts it. A fan-out cut
    short (the process died, Discord failed) posts the lines of the subscriptions it finished
    on its job's re-run, or the background pass's, instead of losing them."""

    __tablename__ = "channel_lines"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    signal_id: Mapped[str] = mapped_column(ForeignKey("signals.id", ondelete="CASCADE"), index=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("signal_executions.id", ondelete="CASCADE"), index=True
    )
    line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class AlertChannel(Base):
    """Where a guild's trade alerts go: the default (scope "*") or one strategy's channel."""

    __tablename__ = "alert_channels"
    __table_args__ = (UniqueConstraint("guild_id", "scope"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    # "*" for the guild default, else the strategy id (a NULL would not be unique on PostgreSQL).
    scope: Mapped[str] = mapped_column(String(36))
    strategy_id: Mapped[str | None] = mapped_column(ForeignKey("strategies.id", ondelete="CASCADE"))
    channel_id: Mapped[int] = mapped_column(BigInteger)
    # Since when posts there fail for good (its strategy's owner was told); cleared once a
    # post works again. Choosing another channel makes a new row.
    failing_since: Mapped[datetime | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertPreference(Base):
    """A member's choices about public alerts in one server. Default: never named."""

    __tablename__ = "alert_preferences"

    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    # Per server: named (with that server's nickname) only where the member said so.
    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    alerts_show_name: Mapped[bool] = mapped_column(Boolean, default=False)
    display_name: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    """A durable unit of background work, claimed under a lease by one worker at a time."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_run_after", "status", "run_after"),
        Index("ix_jobs_serial_key_status_id", "serial_key", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Enqueueing the same key twice makes one job (e.g. "signal:<id>").
    dedupe_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    # Jobs of one key run one at a time, in the order they were added (a strategy's signals).
    serial_key: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(12), default=JobStatus.QUEUED)
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
