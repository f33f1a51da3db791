"""Tables of Tradecord Paper. Everything the paper broker knows lives here, so any process can
serve any member and a restart loses nothing.

Times come from the paper broker's clock (a test may fix it), so the code sets them explicitly;
no column has an ``onupdate``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import ClassVar

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from bot.db_types import BigIntPK, utcnow
from bot.models import Base

ZERO = Decimal(0)


class PaperAccount(Base):
    """One per paper connection; cash and cumulative realized P&L since the last reset."""

    __tablename__ = "paper_accounts"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # "TCP" + 8 digits
    connection_id: Mapped[int] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), unique=True
    )
    currency: Mapped[str] = mapped_column(String(8), default="USD")
    starting_cash: Mapped[Decimal] = mapped_column()
    cash: Mapped[Decimal] = mapped_column()
    realized_pnl: Mapped[Decimal] = mapped_column(default=ZERO)
    # Last order number handed out; never rewound, so order ids stay unique across resets.
    order_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped by every locked transaction; on SQLite that first write is what serializes writers.
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    reset_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaperPosition(Base):
    __tablename__ = "paper_positions"
    __table_args__ = (UniqueConstraint("account_id", "symbol"),)
    ids_unread: ClassVar[bool] = True  # found by account and symbol; see bot.db.flush_batched

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(16))
    multiplier: Mapped[Decimal] = mapped_column()
    quantity: Mapped[Decimal] = mapped_column()  # negative when short
    # Σ signed quantity × price of the open quantity; average price = cost_basis / quantity.
    cost_basis: Mapped[Decimal] = mapped_column()
    realized_pnl: Mapped[Decimal] = mapped_column(default=ZERO)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PaperOrder(Base):
    __tablename__ = "paper_orders"
    __table_args__ = (
        # A second create with the same client order id finds this row instead of adding one.
        UniqueConstraint("account_id", "client_order_id"),
        Index("ix_paper_orders_account_id_status", "account_id", "status"),
        Index("ix_paper_orders_account_id_seq", "account_id", "seq"),
        Index("ix_paper_orders_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    asset_class: Mapped[str] = mapped_column(String(16))
    multiplier: Mapped[Decimal] = mapped_column()
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column()
    order_type: Mapped[str] = mapped_column(String(16))
    time_in_force: Mapped[str] = mapped_column(String(8))
    limit_price: Mapped[Decimal | None] = mapped_column()
    stop_price: Mapped[Decimal | None] = mapped_column()
    # The price buying power was reserved at (limit, stop, or executable price when placed).
    reference_price: Mapped[Decimal] = mapped_column()
    status: Mapped[str] = mapped_column(String(20))
    filled_quantity: Mapped[Decimal] = mapped_column(default=ZERO)
    average_fill_price: Mapped[Decimal | None] = mapped_column()
    triggered_at: Mapped[datetime | None] = mapped_column()
    expires_at: Mapped[datetime | None] = mapped_column()
    reject_reason: Mapped[str | None] = mapped_column(String(300))
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)  # filled at simulated prices
    # An entry's bracket: the exits placed, one-cancels-other, once the entry has filled.
    take_profit: Mapped[Decimal | None] = mapped_column()
    stop_loss: Mapped[Decimal | None] = mapped_column()
    stop_loss_limit: Mapped[Decimal | None] = mapped_column()
    # A trailing stop-loss (one of the two); stop_loss is then where it starts.
    stop_loss_trail_amount: Mapped[Decimal | None] = mapped_column()
    stop_loss_trail_percent: Mapped[Decimal | None] = mapped_column()
    # On an exit of a bracket: its entry. The exits of one entry cancel each other.
    parent_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # A trailing stop: how far it trails, and the best price seen (stop_price follows it).
    trail_amount: Mapped[Decimal | None] = mapped_column()
    trail_percent: Mapped[Decimal | None] = mapped_column()
    watermark: Mapped[Decimal | None] = mapped_column()
    # A stock limit day order that also fills in the pre-market and after-hours sessions.
    extended_hours: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()


class PaperFill(Base):
    __tablename__ = "paper_fills"
    # By account and time: the day's P&L reads the fills since the last close.
    __table_args__ = (Index("ix_paper_fills_account_id_at", "account_id", "at"),)
    ids_unread: ClassVar[bool] = True  # see bot.db.flush_batched

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # "<order id>-F<n>": unique, so a second sweeper cannot book the same fill again.
    execution_id: Mapped[str] = mapped_column(String(48), unique=True)
    order_id: Mapped[str] = mapped_column(
        ForeignKey("paper_orders.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column()
    price: Mapped[Decimal] = mapped_column()
    multiplier: Mapped[Decimal] = mapped_column()
    realized_pnl: Mapped[Decimal] = mapped_column()
    cash_change: Mapped[Decimal] = mapped_column()
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    # Never loaded; declared so one flush inserts a new order before its first fill.
    order: Mapped[PaperOrder] = relationship(lazy="raise")
