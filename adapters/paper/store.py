"""Persistence for Tradecord Paper: rows in, engine decisions, rows out.

Concurrency (several processes on PostgreSQL, or several sweepers): every change to an
account happens in one transaction that first locks the account row (``lock_account``). Each
order transition (placement, fill, trigger, cancel, expiry) is its own transaction that
re-reads the order under that lock and decides again, so an order another process already
moved is left alone; fill execution ids are unique as a last line of defence.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Row, and_, bindparam, delete, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from adapters import symbols
from adapters.errors import (
    BrokerError,
    InsufficientBuyingPower,
    InvalidOrder,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotReplaceable,
)
from adapters.models import (
    AUCTIONS,
    AssetClass,
    Bracket,
    Order,
    OrderChange,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Quote,
    Side,
    TimeInForce,
)
from adapters.paper import engine
from adapters.paper.engine import Action, Decision, PriceType
from adapters.paper.feed import Clock, QuoteSource, SimulatedFeed, utcnow
from adapters.paper.hours import AUCTION_WINDOW, FillHours, is_open
from adapters.paper.models import PaperAccount, PaperFill, PaperOrder, PaperPosition
from adapters.paper.universe import Instrument
from bot.db import Database, flush_batched
from bot.db_types import plain
from bot.models import Connection

log = logging.getLogger("tradecord.adapters.paper")

DEFAULT_STARTING_CASH = Decimal(100000)
OPEN_STATUSES = (OrderStatus.PENDING, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)
SETTLEMENT_PREFIX = "expiry-"  # client order id of the order that settles an expired contract
PRICE_TYPE_SETTING = "market_price_type"  # key in Connection.settings read by sweep_all

QuoteSourceFactory = Callable[[int], QuoteSource | Awaitable[QuoteSource | None] | None]


def paper_account_id(connection_id: int) -> str:
    """The paper account of a connection: "TCP" + the connection id in 8 digits."""
    return f"TCP{connection_id:08d}"


@dataclass(frozen=True, slots=True)
class Market:
    """How one paper connection executes: its price type, the fill hours and the clock."""

    price_type: PriceType = PriceType.MID
    fill_hours: FillHours = FillHours.ALWAYS
    clock: Clock = utcnow


class AccountMissing(BrokerError):
    code = "paper-account-missing"
    default_message = (
        "This paper connection no longer exists. Run /accounts to see your connections."
    )


# -- rows ↔ engine -------------------------------------------------------------------------


def account_state(row: PaperAccount | Row[Any]) -> engine.AccountState:
    return engine.AccountState(row.starting_cash, row.cash, row.realized_pnl)


def position_state(row: PaperPosition | Row[Any]) -> engine.PositionState:
    return engine.PositionState(
        row.symbol,
        AssetClass(row.asset_class),
        row.multiplier,
        row.quantity,
        row.cost_basis,
        row.realized_pnl,
    )


def order_state(row: PaperOrder) -> engine.OrderState:
    return engine.OrderState(
        Side(row.side),
        row.quantity,
        OrderType(row.order_type),
        TimeInForce(row.time_in_force),
        row.limit_price,
        row.stop_price,
        row.filled_quantity,
        row.triggered_at is not None,
        ends(row),
        row.trail_amount,
        row.trail_percent,
        row.watermark,
        tick_of(row.symbol) if row.asset_class == AssetClass.FUTURE.value else None,
        _auction_of(row),
        row.asset_class == AssetClass.EQUITY.value,
    )


def _auction_of(row: PaperOrder) -> datetime | None:
    """An opg/cls order's auction: its expiry is the auction's window's end."""
    if row.time_in_force not in AUCTIONS or row.expires_at is None:
        return None
    return row.expires_at - AUCTION_WINDOW


def tick_of(symbol: str) -> Decimal | None:
    spec = symbols.future_spec(symbol)
    return spec.tick if spec is not None else None


def ends(row: PaperOrder) -> datetime | None:
    """When a working order stops: its trading day's end, or its contract's last trading
    moment, whichever comes first."""
    c = symbols.contract(row.symbol, row.created_at) if row.asset_class == "future" else None
    if c is None:
        return row.expires_at
    return c.expires_at if row.expires_at is None else min(row.expires_at, c.expires_at)


def worst_price(stop: Decimal | None, limit: Decimal | None) -> Decimal | None:
    """What a stop (limit) order is priced at for buying power: a stop order at its stop, a
    stop limit at the higher of its stop and limit (a buy may pay up to its limit once
    triggered); None for an order without a stop."""
    if stop is None:
        return None
    return max(stop, limit) if limit is not None else stop


def reservation(row: PaperOrder | Row[Any]) -> engine.Reservation:
    return engine.Reservation(
        row.symbol,
        AssetClass(row.asset_class),
        row.multiplier,
        Side(row.side),
        row.quantity - row.filled_quantity,
        row.reference_price,
        exit=row.parent_id is not None,
    )


def reservations(rows: Iterable[PaperOrder | Row[Any]]) -> list[engine.Reservation]:
    """The open orders as buying power sees them, oldest first. The exits of one bracket close
    the same position between them, one or the other: counted once."""
    seen: set[str] = set()
    out: list[engine.Reservation] = []
    for row in rows:
        if row.parent_id is not None:
            if row.parent_id in seen:
                continue
            seen.add(row.parent_id)
        out.append(reservation(row))
    return out


def check_bracket_sides(side: Side, bracket: Bracket, symbol: str, entry: Decimal) -> None:
    """A buy's take-profit above its entry price and stop-loss below it; a sell's the other way
    round. Otherwise an exit would fill at once, turning the bracket into a round trip."""
    buy = side is Side.BUY
    wrong = [
        f"{label} {plain(price)}"
        for label, price, above in (
            ("take-profit", bracket.take_profit, buy),
            ("stop-loss", bracket.stop_loss, not buy),
        )
        if price is not None and ((price <= entry) if above else (price >= entry))
    ]
    if wrong:
        verb = "is" if len(wrong) == 1 else "are"
        raise InvalidOrder(
            f"For a {side.value} of {symbol} at about {plain(entry)}, the "
            f"take-profit must be {'above' if buy else 'below'} that price and the stop-loss "
            f"{'below' if buy else 'above'} it; {' and '.join(wrong)} {verb} not."
        )


def check_entry_change(
    side: Side,
    bracket: Bracket | None,
    symbol: str,
    limit: Decimal | None,
    stop: Decimal | None,
) -> None:
    """A bracketed entry moved to ``limit``/``stop`` (its prices after the change) must stay
    between its exits, as placing it there must."""
    entry = worst_price(stop, limit) or limit
    if bracket is not None and entry is not None:
        check_bracket_sides(side, bracket, symbol, entry)


def bracket_of(row: PaperOrder) -> Bracket | None:
    trailing = row.stop_loss_trail_amount is not None or row.stop_loss_trail_percent is not None
    if row.take_profit is None and row.stop_loss is None and not trailing:
        return None
    return Bracket(
        row.take_profit,
        row.stop_loss,
        row.stop_loss_limit,
        row.stop_loss_trail_amount,
        row.stop_loss_trail_percent,
    )


def to_order(row: PaperOrder) -> Order:
    return Order(
        id=row.id,
        account_id=row.account_id,
        symbol=row.symbol,
        side=Side(row.side),
        quantity=row.quantity,
        order_type=OrderType(row.order_type),
        time_in_force=TimeInForce(row.time_in_force),
        status=OrderStatus(row.status),
        client_order_id=row.client_order_id,
        asset_class=AssetClass(row.asset_class),
        limit_price=row.limit_price,
        stop_price=row.stop_price,
        filled_quantity=row.filled_quantity,
        average_fill_price=row.average_fill_price,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reject_reason=row.reject_reason,
        parent_id=row.parent_id,
        trail_amount=row.trail_amount,
        trail_percent=row.trail_percent,
        extended_hours=bool(row.extended_hours),
        info={
            "broker": "paper",
            "simulated": row.simulated,
            "multiplier": str(row.multiplier),
            "reference_price": str(row.reference_price),
            "triggered_at": _iso(row.triggered_at),
            "expires_at": _iso(row.expires_at),
            "closed_at": _iso(row.closed_at),
            "take_profit": plain_or_none(row.take_profit),
            "stop_loss": plain_or_none(row.stop_loss),
            "stop_loss_limit": plain_or_none(row.stop_loss_limit),
            "stop_loss_trail_amount": plain_or_none(row.stop_loss_trail_amount),
            "stop_loss_trail_percent": plain_or_none(row.stop_loss_trail_percent),
            "parent_id": row.parent_id,
            "trail_amount": plain_or_none(row.trail_amount),
            "trail_percent": plain_or_none(row.trail_percent),
            "watermark": plain_or_none(row.watermark),
        },
    )


def plain_or_none(value: Decimal | None) -> str | None:
    return str(plain(value)) if value is not None else None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


# -- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewAccount:
    """A connection whose paper account must exist, and how to open it if it does not."""

    connection_id: int
    starting_cash: Decimal = DEFAULT_STARTING_CASH
    now: datetime | None = None


async def ensure_account(
    db: Database,
    connection_id: int,
    starting_cash: Decimal = DEFAULT_STARTING_CASH,
    now: datetime | None = None,
) -> PaperAccount:
    """The connection's paper account, created with ``starting_cash`` on first use."""
    (row,) = await ensure_accounts(db, [NewAccount(connection_id, starting_cash, now)])
    if isinstance(row, BrokerError):
        raise row
    return row


async def ensure_accounts(
    db: Database, wanted: Sequence[NewAccount]
) -> list[PaperAccount | BrokerError]:
    """``ensure_account`` for several connections: one read, and one insert of those missing."""
    query = select(PaperAccount).where(
        PaperAccount.connection_id.in_(sorted({w.connection_id for w in wanted}))
    )
    async with db.session() as s:
        found = {row.connection_id: row for row in await s.scalars(query)}
    missing: dict[int, NewAccount] = {}
    for w in wanted:
        if w.connection_id not in found:
            missing.setdefault(w.connection_id, w)
    if missing:
        created = [_new_account(w) for w in missing.values()]
        try:
            async with db.transaction() as s:
                s.add_all(created)
            found.update((row.connection_id, row) for row in created)
        except IntegrityError:
            # Another process created one first, or a connection is gone: one at a time.
            for w in missing.values():
                with suppress(IntegrityError):
                    async with db.transaction() as s:
                        s.add(_new_account(w))
            async with db.session() as s:
                found = {row.connection_id: row for row in await s.scalars(query)}
    return [found.get(w.connection_id) or AccountMissing() for w in wanted]


def _new_account(w: NewAccount) -> PaperAccount:
    now = w.now or utcnow()
    return PaperAccount(
        id=paper_account_id(w.connection_id),
        connection_id=w.connection_id,
        currency="USD",
        starting_cash=w.starting_cash,
        cash=w.starting_cash,
        realized_pnl=Decimal(0),
        order_seq=0,
        revision=0,
        created_at=now,
        updated_at=now,
    )


async def lock_account(s: AsyncSession, account_id: str) -> PaperAccount:
    """Lock the account row for the rest of the transaction and return it fresh.

    One UPDATE … RETURNING, on purpose: pysqlite opens a transaction only at the first write,
    so on SQLite this is what takes the database write lock before anything is read (reads
    before it could be stale). On PostgreSQL its row lock serializes processes per account.
    """
    row = await s.scalar(
        update(PaperAccount)
        .where(PaperAccount.id == account_id)
        .values(revision=PaperAccount.revision + 1)
        .returning(PaperAccount)
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise AccountMissing()
    return row


async def lock_accounts(s: AsyncSession, account_ids: Sequence[str]) -> dict[str, PaperAccount]:
    """``lock_account`` for several accounts at once (those that exist)."""
    if len(account_ids) > 1 and s.get_bind().dialect.name == "postgresql":
        # Row locks in one order (by id) for every batch, so two batches cannot deadlock.
        await s.execute(
            select(PaperAccount.id)
            .where(PaperAccount.id.in_(account_ids))
            .order_by(PaperAccount.id)
            .with_for_update()
        )
    rows = await s.scalars(
        update(PaperAccount)
        .where(PaperAccount.id.in_(account_ids))
        .values(revision=PaperAccount.revision + 1)
        .returning(PaperAccount)
        .execution_options(populate_existing=True)
    )
    return {row.id: row for row in rows}


# A position as reads show it (not the row's id or updated_at), in the order
# ``broker._position`` unpacks. Its statements are built once: every fetch_positions
# (/positions, a signal's snapshot) runs one.
_held = PaperPosition.__table__.c
POSITION_COLUMNS = (
    _held.account_id,
    _held.symbol,
    _held.asset_class,
    _held.multiplier,
    _held.quantity,
    _held.cost_basis,
    _held.realized_pnl,
    _held.opened_at,
)
_POSITIONS_OF = (
    select(*POSITION_COLUMNS)
    .where(_held.account_id.in_(bindparam("account_ids", expanding=True)))
    .order_by(_held.account_id, _held.symbol)
)
_POSITION_IN = select(*POSITION_COLUMNS).where(
    _held.account_id == bindparam("account_id"), _held.symbol == bindparam("symbol")
)


async def positions_of(db: Database, account_ids: Sequence[str]) -> dict[str, list[Row[Any]]]:
    """The positions of several accounts by symbol, in one query, as ``POSITION_COLUMNS``.
    Core on a connection: plain rows need no session."""
    found: dict[str, list[Row[Any]]] = {i: [] for i in account_ids}
    async with db.engine.connect() as conn:
        for row in await conn.execute(_POSITIONS_OF, {"account_ids": list(account_ids)}):
            found[row.account_id].append(row)
    return found


async def position_in(db: Database, account_id: str, symbol: str) -> Row[Any] | None:
    """The account's position in ``symbol``, as ``POSITION_COLUMNS``; None if it has none."""
    async with db.engine.connect() as conn:
        result = await conn.execute(_POSITION_IN, {"account_id": account_id, "symbol": symbol})
        return result.first()


_ACCOUNT = select(PaperAccount.__table__).where(PaperAccount.__table__.c.id == bindparam("id"))
_POSITIONS = select(*POSITION_COLUMNS).where(_held.account_id == bindparam("id"))
_working = PaperOrder.__table__.c
# An open order as ``reservations`` reads it.
_RESERVING = (
    select(
        _working.symbol,
        _working.asset_class,
        _working.multiplier,
        _working.side,
        _working.quantity,
        _working.filled_quantity,
        _working.reference_price,
        _working.parent_id,
    )
    .where(_working.account_id == bindparam("id"), _working.status.in_(OPEN_STATUSES))
    .order_by(_working.seq)
)


class Holdings(NamedTuple):
    account: Row[Any] | None
    positions: list[engine.PositionState]
    reserved: list[engine.Reservation]
    fills: list[engine.DayFill]  # since ``fills_since``, when asked for


async def holdings(
    db: Database, account_id: str, *, fills_since: datetime | None = None
) -> Holdings:
    """The account's row, positions and open orders' reservations: what a balance or a
    buying power is worked out from, read together as plain rows (no session); and for a
    day's P&L, its fills after ``fills_since``."""
    async with db.engine.connect() as conn:
        params = {"id": account_id}
        account = (await conn.execute(_ACCOUNT, params)).first()
        positions = [position_state(p) for p in await conn.execute(_POSITIONS, params)]
        reserved = reservations(await conn.execute(_RESERVING, params))
        fills = []
        if fills_since is not None:
            found = await conn.execute(_FILLS_SINCE, {"id": account_id, "since": fills_since})
            fills = [engine.DayFill(*row) for row in found]
    return Holdings(account, positions, reserved, fills)


_FILLS_SINCE = select(
    PaperFill.symbol, PaperFill.side, PaperFill.quantity, PaperFill.price, PaperFill.multiplier
).where(
    PaperFill.account_id == bindparam("id"),
    PaperFill.at > bindparam("since", type_=PaperFill.__table__.c.at.type),
)


async def open_orders_of_accounts(
    db: Database, account_ids: Sequence[str]
) -> dict[str, list[PaperOrder]]:
    """``open_orders_of`` of several accounts, in one query."""
    query = (
        select(PaperOrder)
        .where(PaperOrder.account_id.in_(account_ids), PaperOrder.status.in_(OPEN_STATUSES))
        .order_by(PaperOrder.seq)
    )
    found: dict[str, list[PaperOrder]] = {i: [] for i in account_ids}
    async with db.session() as s:
        for row in await s.scalars(query):
            found[row.account_id].append(row)
    return found


# Built once, like the statements below: every order placed runs them.
_TO_MARK = select(
    _held.account_id,
    _held.symbol,
    _held.asset_class,
    _held.quantity,
    exists()
    .where(
        PaperOrder.account_id == _held.account_id,
        PaperOrder.symbol == _held.symbol,
        PaperOrder.status.in_(OPEN_STATUSES),
    )
    .label("working"),  # an open order trades it
).where(_held.account_id.in_(bindparam("account_ids", expanding=True)))


async def symbols_to_mark(
    db: Database, traded: Mapping[str, Collection[str]]
) -> dict[str, list[str]]:
    """By account, the held symbols whose marks placing orders for ``traded`` (symbols by
    account) needs: those of positions that bear on buying power, and those an open order or
    the batch trades, as a fill (a sweep's meanwhile, an earlier order's in the batch) may
    turn them into positions that do. Accounts needing none are left out."""
    wanted: dict[str, list[str]] = {}
    async with db.engine.connect() as conn:
        rows = await conn.execute(_TO_MARK, {"account_ids": list(traded)})
    for account_id, symbol, asset_class, quantity, working in rows:
        position = engine.PositionState(symbol, AssetClass(asset_class), quantity=quantity)
        if working or symbol in traded[account_id] or engine.bears_on_buying_power(position):
            wanted.setdefault(account_id, []).append(symbol)
    return wanted


async def open_orders_of(s: AsyncSession, account_id: str) -> list[PaperOrder]:
    rows = await s.scalars(
        select(PaperOrder)
        .where(PaperOrder.account_id == account_id, PaperOrder.status.in_(OPEN_STATUSES))
        .order_by(PaperOrder.seq)
    )
    return list(rows)


async def order_by_client_id(
    s: AsyncSession, account_id: str, client_order_id: str
) -> PaperOrder | None:
    return await s.scalar(
        select(PaperOrder).where(
            PaperOrder.account_id == account_id, PaperOrder.client_order_id == client_order_id
        )
    )


async def order_history(
    s: AsyncSession, account_id: str, since: datetime | None, limit: int
) -> list[PaperOrder]:
    """Orders that ended since ``since``, the last to end first: a GTC order placed last
    month that filled today is today's history."""
    ended = func.coalesce(PaperOrder.closed_at, PaperOrder.updated_at)
    query = select(PaperOrder).where(
        PaperOrder.account_id == account_id, PaperOrder.status.not_in(OPEN_STATUSES)
    )
    if since is not None:
        query = query.where(ended >= since)
    rows = await s.scalars(query.order_by(ended.desc(), PaperOrder.seq.desc()).limit(limit))
    return list(rows)


async def reset(
    db: Database,
    connection_id: int,
    *,
    starting_cash: Decimal | None = None,
    now: datetime | None = None,
) -> str:
    """Back to the starting state in one transaction: no orders, positions or fills, cash at
    the starting cash (``starting_cash`` replaces it when given). Returns the account id."""
    now = now or utcnow()
    account = await ensure_account(db, connection_id, starting_cash or DEFAULT_STARTING_CASH, now)
    async with db.transaction() as s:
        row = await lock_account(s, account.id)
        for table in (PaperFill, PaperOrder, PaperPosition):
            await s.execute(delete(table).where(table.account_id == row.id))
        if starting_cash is not None:
            row.starting_cash = starting_cash
        row.cash = row.starting_cash
        row.realized_pnl = Decimal(0)
        row.reset_at = row.updated_at = now
    return account.id


# -- quotes ----------------------------------------------------------------------------------


async def fetch_quotes(source: QuoteSource, symbols: Iterable[str]) -> dict[str, Quote]:
    """Quotes for ``symbols``; a symbol whose quote fails (broker down, rate limited) is left
    out and the caller treats it as unpriced."""
    wanted = sorted(set(symbols))
    if isinstance(source, SimulatedFeed):
        return source.quotes(wanted)  # computed in place: no task per symbol
    results = await asyncio.gather(
        *(source.fetch_quote(sym) for sym in wanted), return_exceptions=True
    )
    quotes: dict[str, Quote] = {}
    for sym, result in zip(wanted, results, strict=True):
        if isinstance(result, BrokerError):
            log.info("paper: no quote for %s: %s", sym, type(result).__name__)
        elif isinstance(result, BaseException):
            raise result
        else:
            quotes[sym] = result
    return quotes


def marks_from(quotes: Mapping[str, Quote]) -> dict[str, Decimal]:
    marks = {sym: engine.mark_price(q) for sym, q in quotes.items()}
    return {sym: m for sym, m in marks.items() if m is not None}


# -- transitions -----------------------------------------------------------------------------


async def book_fill(
    s: AsyncSession,
    account: PaperAccount,
    order: PaperOrder,
    quantity: Decimal,
    price: Decimal,
    simulated: bool,
    now: datetime,
    *,
    positions: dict[str, PaperPosition] | None = None,
) -> PaperFill:
    """Apply one fill of ``order`` to the account, its position and the order itself.

    ``positions``: the account's positions by symbol, read in this transaction (kept up to
    date here); without it the order's position is looked up."""
    if positions is not None:
        pos_row = positions.get(order.symbol)
    else:
        pos_row = await s.scalar(
            select(PaperPosition).where(
                PaperPosition.account_id == account.id, PaperPosition.symbol == order.symbol
            )
        )
    position = (
        position_state(pos_row)
        if pos_row is not None
        else engine.PositionState(order.symbol, AssetClass(order.asset_class), order.multiplier)
    )
    before = position.quantity
    acct = account_state(account)
    execution = engine.apply_fill(acct, position, Side(order.side), quantity, price)
    account.cash, account.realized_pnl, account.updated_at = acct.cash, acct.realized_pnl, now

    if position.quantity == 0:
        if pos_row is not None:
            await s.delete(pos_row)
            if positions is not None:
                del positions[order.symbol]
    else:
        if pos_row is None:
            pos_row = PaperPosition(
                account_id=account.id,
                symbol=order.symbol,
                asset_class=order.asset_class,
                multiplier=order.multiplier,
                opened_at=now,
            )
            s.add(pos_row)
            if positions is not None:
                positions[order.symbol] = pos_row
        elif (before > 0) != (position.quantity > 0):
            pos_row.opened_at = now  # flipped: a new position at a new average price
        pos_row.quantity, pos_row.cost_basis = position.quantity, position.cost_basis
        pos_row.realized_pnl, pos_row.updated_at = position.realized_pnl, now

    # Every fill adds to filled_quantity: an order with none filled has no fills to count.
    previous = (
        await s.scalar(
            select(func.count()).select_from(PaperFill).where(PaperFill.order_id == order.id)
        )
        if order.filled_quantity
        else 0
    )
    fill = PaperFill(
        execution_id=f"{order.id}-F{(previous or 0) + 1}",
        order_id=order.id,
        account_id=account.id,
        symbol=order.symbol,
        side=order.side,
        quantity=quantity,
        price=price,
        multiplier=order.multiplier,
        realized_pnl=execution.realized_pnl,
        cash_change=execution.cash_change,
        simulated=simulated,
        at=now,
    )
    s.add(fill)

    filled_before = order.filled_quantity
    order.filled_quantity = filled_before + quantity
    with_prior = (order.average_fill_price or Decimal(0)) * filled_before
    order.average_fill_price = plain(
        ((with_prior + quantity * price) / order.filled_quantity).quantize(engine.PRICE_Q)
    )
    order.simulated = order.simulated or simulated
    order.updated_at = now
    if order.filled_quantity >= order.quantity:
        order.status, order.closed_at = OrderStatus.FILLED, now
    else:
        order.status = OrderStatus.PARTIALLY_FILLED
    return fill


async def apply_decision(
    s: AsyncSession,
    account: PaperAccount,
    order: PaperOrder,
    decision: Decision,
    quote: Quote | None,
    now: datetime,
    *,
    positions: dict[str, PaperPosition] | None = None,
    flush: bool = True,
    working: list[PaperOrder] | None = None,
) -> OrderUpdate | None:
    """Write what ``decision`` says into the rows; the update to report, if any
    (``positions``: see ``book_fill``; ``flush=False`` leaves the flush to the caller;
    ``working``: the account's open orders, kept up to date with a bracket's exits)."""
    update_ = await _decide(s, account, order, decision, quote, now, positions, flush)
    if update_ is None:
        return None
    if update_.order.status.is_final:
        await _follow_bracket(s, account, order, now, working)
    if update_.fill_quantity and order.parent_id is None:
        # After its own exits are placed: an entry that closed a position opened by hand
        # meanwhile leaves its exits nothing (or less) to close.
        await _fit_exits(s, order, now, positions, working)
    if flush:
        await s.flush()
    return update_


async def _fit_exits(
    s: AsyncSession,
    order: PaperOrder,
    now: datetime,
    positions: dict[str, PaperPosition] | None,
    working: list[PaperOrder] | None,
) -> None:
    """After another order traded the symbol: a bracket's exits never close more than the
    position holds, so closing it by hand cannot leave an exit that would later open one the
    other way. An exit is cut to what is left, or cancelled once nothing is."""
    if working is not None:
        exits = [o for o in working if o.parent_id is not None and o.symbol == order.symbol]
    else:
        exits = list(
            await s.scalars(
                select(PaperOrder)
                .where(
                    PaperOrder.account_id == order.account_id,
                    PaperOrder.symbol == order.symbol,
                    PaperOrder.parent_id.is_not(None),
                    PaperOrder.status.in_(OPEN_STATUSES),
                )
                .with_for_update()
            )
        )
    if not exits:
        return
    if positions is not None:
        row = positions.get(order.symbol)
    else:
        row = await s.scalar(
            select(PaperPosition).where(
                PaperPosition.account_id == order.account_id,
                PaperPosition.symbol == order.symbol,
            )
        )
    held = row.quantity if row is not None else Decimal(0)
    groups: dict[str | None, list[PaperOrder]] = {}
    for exit_ in sorted(exits, key=lambda o: o.seq):  # the oldest brackets keep their exits
        groups.setdefault(exit_.parent_id, []).append(exit_)
    left = abs(held)
    for group in groups.values():
        closes = held > 0 if group[0].side == Side.SELL.value else held < 0
        wanted = max(o.quantity - o.filled_quantity for o in group)  # one or the other fills
        given = min(wanted, left) if closes else Decimal(0)
        left -= given
        if given == wanted:
            continue
        for exit_ in group:
            exit_.updated_at = now
            if given > 0:
                exit_.quantity = exit_.filled_quantity + given
                continue
            exit_.status = OrderStatus.CANCELLED.value
            exit_.reject_reason = (
                f"Cancelled: order {order.id} closed the {order.symbol} position this exit "
                "was to close."
            )
            exit_.closed_at = now
            if working is not None:
                working.remove(exit_)


async def _decide(
    s: AsyncSession,
    account: PaperAccount,
    order: PaperOrder,
    decision: Decision,
    quote: Quote | None,
    now: datetime,
    positions: dict[str, PaperPosition] | None,
    flush: bool,
) -> OrderUpdate | None:
    if decision.watermark is not None:  # a trailing stop followed the price
        order.watermark, order.stop_price = decision.watermark, decision.stop_price
        order.updated_at = now
    if decision.triggered_now:
        order.triggered_at, order.updated_at = now, now
    match decision.action:
        case Action.FILL:
            assert decision.price is not None and decision.quantity is not None
            assert quote is not None
            fill = await book_fill(
                s,
                account,
                order,
                decision.quantity,
                decision.price,
                quote.simulated,
                now,
                positions=positions,
            )
            if flush:
                await s.flush()
            event = "fill" if order.status == OrderStatus.FILLED else "partial_fill"
            return OrderUpdate(
                to_order(order), event, fill.execution_id, fill.quantity, fill.price, now
            )
        case Action.CANCEL | Action.EXPIRE:
            expired = decision.action is Action.EXPIRE
            order.status = OrderStatus.EXPIRED if expired else OrderStatus.CANCELLED
            order.reject_reason = _reason(order, decision)
            order.closed_at = order.updated_at = now
            if flush:
                await s.flush()
            return OrderUpdate(to_order(order), "expired" if expired else "canceled", at=now)
        case _:
            return None


async def _follow_bracket(
    s: AsyncSession,
    account: PaperAccount,
    order: PaperOrder,
    now: datetime,
    working: list[PaperOrder] | None,
) -> None:
    """An order that stopped working, as its bracket sees it: an exit that filled cancels the
    other exit (one-cancels-other); an entry places its exits for what it filled."""
    if order.parent_id is not None and order.status == OrderStatus.FILLED:
        others = await s.scalars(
            select(PaperOrder)
            .where(
                PaperOrder.parent_id == order.parent_id,
                PaperOrder.id != order.id,
                PaperOrder.status.in_(OPEN_STATUSES),
            )
            .with_for_update()
        )
        kind = "take-profit" if order.order_type == OrderType.LIMIT.value else "stop-loss"
        for other in others:
            other.status = OrderStatus.CANCELLED.value
            other.reject_reason = f"Cancelled: the {kind} of the same bracket filled ({order.id})."
            other.closed_at = other.updated_at = now
            if working is not None and other in working:
                working.remove(other)
    if bracket_of(order) is not None and order.filled_quantity > 0:
        for exit_ in _exits(account, order, now):
            s.add(exit_)
            if working is not None:
                working.append(exit_)


def _exits(account: PaperAccount, entry: PaperOrder, now: datetime) -> list[PaperOrder]:
    """A filled entry's exits: the take-profit a limit order, the stop-loss a stop (or
    stop-limit, or trailing stop) order, each on the other side for what the entry filled,
    with its time in force (a day entry's exits end with its trading day, as at Alpaca). A
    trailing stop-loss trails from the entry's fill price, the best price seen so far."""
    side = Side.SELL if entry.side == Side.BUY.value else Side.BUY
    legs: list[tuple[OrderType, Decimal | None, Decimal | None]] = []
    trail = entry.stop_loss_trail_amount, entry.stop_loss_trail_percent
    watermark = None
    if entry.take_profit is not None:
        legs.append((OrderType.LIMIT, entry.take_profit, None))
    if trail != (None, None):
        watermark = entry.average_fill_price
        assert watermark is not None  # the entry has filled
        stop = engine.trailing_stop(
            side,
            watermark,
            *trail,
            tick=tick_of(entry.symbol),
            equity=entry.asset_class == AssetClass.EQUITY.value,
        )
        legs.append((OrderType.TRAILING_STOP, None, stop))
    elif entry.stop_loss is not None:
        if entry.stop_loss_limit is not None:
            legs.append((OrderType.STOP_LIMIT, entry.stop_loss_limit, entry.stop_loss))
        else:
            legs.append((OrderType.STOP, None, entry.stop_loss))
    exits = []
    for order_type, limit, stop in legs:
        account.order_seq += 1
        reference = limit if limit is not None else stop
        assert reference is not None
        exits.append(
            PaperOrder(
                id=f"{account.id}-{account.order_seq}",
                account_id=account.id,
                seq=account.order_seq,
                client_order_id=None,
                symbol=entry.symbol,
                asset_class=entry.asset_class,
                multiplier=entry.multiplier,
                side=side.value,
                quantity=entry.filled_quantity,
                order_type=order_type.value,
                time_in_force=entry.time_in_force,
                limit_price=limit,
                stop_price=stop,
                reference_price=reference,
                status=OrderStatus.OPEN.value,
                filled_quantity=Decimal(0),
                simulated=False,
                parent_id=entry.id,
                # The watermark is set at its first look, from the price it would trigger at (the
                # bid for a sell), as a trailing stop placed alone starts: from the fill, a trail
                # under half the spread stood above the bid and fired at once.
                **(
                    dict(trail_amount=trail[0], trail_percent=trail[1], watermark=None)
                    if order_type is OrderType.TRAILING_STOP
                    else {}
                ),
                expires_at=entry.expires_at,
                created_at=now,
                updated_at=now,
            )
        )
    return exits


def _reason(order: PaperOrder, decision: Decision) -> str:
    if order.time_in_force in AUCTIONS:
        which = "opening" if order.time_in_force == TimeInForce.OPG else "closing"
        if decision.action is Action.EXPIRE:
            return (
                f"Expired: its {which} auction passed while Tradecord Paper was not pricing "
                "orders (the bot was not running)."
            )
        return f"Cancelled: it trades only in the {which} auction, and {decision.reason}."
    if decision.action is Action.EXPIRE:
        end = ends(order)
        if end is not None and (order.expires_at is None or end < order.expires_at):
            return f"Expired: {order.symbol} stopped trading on {end:%a %d %b %Y}."
        return "Expired: the trading day of this day order ended."
    tif = order.time_in_force.upper()
    return f"Cancelled: {tif} orders fill immediately or not at all, and {decision.reason}."


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A validated order request, in canonical form, with what it was priced at."""

    instrument: Instrument
    side: Side
    quantity: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    limit_price: Decimal | None
    stop_price: Decimal | None
    client_order_id: str | None
    reference_price: Decimal
    expires_at: datetime | None
    bracket: Bracket | None = None
    trail_amount: Decimal | None = None  # a trailing stop; stop_price is its first stop
    trail_percent: Decimal | None = None
    watermark: Decimal | None = None
    extended_hours: bool = False


@dataclass(frozen=True, slots=True)
class Placement:
    """One order to place in one account, priced at ``quote`` (``marks``: those its buying
    power check needs, see ``symbols_to_mark``)."""

    account_id: str
    new: NewOrder
    quote: Quote
    marks: Mapping[str, Decimal]
    market: Market
    now: datetime


_traded = aliased(PaperPosition)
_POSITIONS_TO_PLACE = (
    select(*POSITION_COLUMNS, _traded)
    .outerjoin(
        _traded,
        and_(_traded.id == _held.id, _traded.symbol.in_(bindparam("symbols", expanding=True))),
    )
    .where(_held.account_id.in_(bindparam("account_ids", expanding=True)))
)


async def place_orders(db: Database, batch: Sequence[Placement]) -> list[Order | BrokerError]:
    """Check buying power, record each order and execute what can execute now, for many orders
    in one transaction: the accounts are locked and read together and the rows written in one
    flush. An order whose client order id the account already has is answered with that order,
    unchanged. An order refused (buying power, a missing account) gets its error in its place;
    the others go on. Orders for one account are placed in the batch's order, each seeing the
    ones before it."""
    ids = sorted({p.account_id for p in batch})
    results: list[Order | BrokerError | PaperOrder] = []
    async with db.transaction() as s:
        accounts = await lock_accounts(s, ids)
        wanted = [p.new.client_order_id for p in batch if p.new.client_order_id is not None]
        placed: dict[tuple[str, str | None], PaperOrder] = {}
        if wanted:
            for row in await s.scalars(
                select(PaperOrder).where(
                    PaperOrder.account_id.in_(ids), PaperOrder.client_order_id.in_(wanted)
                )
            ):
                placed[row.account_id, row.client_order_id] = row
        # ORM objects only for the positions the batch trades (its fills change them), plain
        # rows for the rest, in one statement.
        positions: dict[str, dict[str, PaperPosition]] = {i: {} for i in ids}
        untraded: dict[str, list[engine.PositionState]] = {i: [] for i in ids}
        params = {"account_ids": ids, "symbols": sorted({p.new.instrument.symbol for p in batch})}
        for row in await s.execute(_POSITIONS_TO_PLACE, params):
            if (pos := row[-1]) is not None:
                positions[pos.account_id][pos.symbol] = pos
            else:
                untraded[row.account_id].append(position_state(row))
        working: dict[str, list[PaperOrder]] = {i: [] for i in ids}
        for row in await s.scalars(
            select(PaperOrder)
            .where(PaperOrder.account_id.in_(ids), PaperOrder.status.in_(OPEN_STATUSES))
            .order_by(PaperOrder.seq)
        ):
            working[row.account_id].append(row)
        # The batch changes only the positions and open orders of the symbols it trades: of
        # the others, those buying power depends on stay the same throughout.
        others = {
            i: engine.buying_power_positions(untraded[i], reservations(working[i])) for i in ids
        }

        for p in batch:
            account = accounts.get(p.account_id)
            if account is None:
                results.append(AccountMissing())
                continue
            if p.new.client_order_id is not None:
                existing = placed.get((p.account_id, p.new.client_order_id))
                if existing is not None:
                    results.append(to_order(existing))
                    continue
            held = positions[p.account_id]
            order_or_error = _place(
                s, account, held, others[p.account_id], working[p.account_id], p
            )
            results.append(order_or_error)
            if isinstance(order_or_error, BrokerError):
                continue
            order = order_or_error
            if order.client_order_id is not None:
                placed[p.account_id, order.client_order_id] = order
            open_now = is_open(
                p.new.instrument.asset_class,
                p.now,
                p.market.fill_hours,
                extended=p.new.extended_hours,
            )
            decision = engine.decide(
                order_state(order), p.quote, p.market.price_type, now=p.now, market_open=open_now
            )
            await apply_decision(
                s,
                account,
                order,
                decision,
                p.quote,
                p.now,
                positions=held,
                flush=False,
                working=working[p.account_id],
            )
            if OrderStatus(order.status).is_final:
                working[p.account_id].remove(order)
        await flush_batched(s)  # the fills after their orders, in one executemany
    return [to_order(r) if isinstance(r, PaperOrder) else r for r in results]


EXIT_QUANTITY_FIXED = (
    "An exit of a take-profit/stop-loss bracket closes what its entry filled: change its price, "
    "not its quantity."
)


def _place(
    s: AsyncSession,
    account: PaperAccount,
    held: Mapping[str, PaperPosition],
    others: Sequence[engine.PositionState],
    working: list[PaperOrder],
    p: Placement,
) -> PaperOrder | BrokerError:
    """The new order's row, after the buying power check. ``held``: the positions the batch
    trades; ``others``: those of the rest buying power depends on."""
    new, inst = p.new, p.new.instrument
    position = held.get(inst.symbol)
    quantity = position.quantity if position is not None else Decimal(0)
    if new.bracket is not None and engine.closing_quantity(quantity, new.side, new.quantity):
        # Its exits would be on the side of the position it closes, adding to it.
        return InvalidOrder(
            f"A take-profit/stop-loss bracket needs an order that opens a position, and this "
            f"{new.side.value} closes (part of) your {plain(quantity)} {inst.symbol}. Close it "
            "without a bracket, then place the bracketed order."
        )
    valuation = engine.value_account(
        account_state(account),
        [*(position_state(row) for row in held.values()), *others],
        p.marks,
        reservations(working),
    )
    # What older open orders already close is not this order's to close again; a bracket's
    # exits are cut when this one fills (_fit_exits), so they take nothing from it.
    taken = valuation.closing_firm.get(inst.symbol, Decimal(0))
    need = engine.order_requirement(
        inst.asset_class,
        inst.multiplier,
        quantity,
        new.side,
        new.quantity,
        new.reference_price,
        taken,
    )
    if need > 0 and need > valuation.buying_power:
        note = ""
        closing = engine.closing_quantity(quantity, new.side, new.quantity, taken)
        if taken and engine.closing_quantity(quantity, new.side, new.quantity):
            note = _taken_note(inst, quantity, taken)
        elif closing:
            note = (
                f" That is what the {plain(new.quantity - closing)} it opens take, less what "
                f"closing {plain(closing)} frees."
            )
        return InsufficientBuyingPower(_bp_message(inst, need, valuation.buying_power, note))
    account.order_seq += 1
    order = PaperOrder(
        id=f"{account.id}-{account.order_seq}",
        account_id=account.id,
        seq=account.order_seq,
        client_order_id=new.client_order_id,
        symbol=inst.symbol,
        asset_class=inst.asset_class.value,
        multiplier=inst.multiplier,
        side=new.side.value,
        quantity=new.quantity,
        order_type=new.order_type.value,
        time_in_force=new.time_in_force.value,
        limit_price=new.limit_price,
        stop_price=new.stop_price,
        reference_price=new.reference_price,
        status=OrderStatus.OPEN.value,
        filled_quantity=Decimal(0),
        # Whether its fills were at simulated prices (book_fill): the source may change
        # before it fills.
        simulated=False,
        take_profit=new.bracket.take_profit if new.bracket else None,
        stop_loss=new.bracket.stop_loss if new.bracket else None,
        stop_loss_limit=new.bracket.stop_loss_limit if new.bracket else None,
        stop_loss_trail_amount=new.bracket.stop_loss_trail_amount if new.bracket else None,
        stop_loss_trail_percent=new.bracket.stop_loss_trail_percent if new.bracket else None,
        trail_amount=new.trail_amount,
        trail_percent=new.trail_percent,
        watermark=new.watermark,
        extended_hours=new.extended_hours,
        expires_at=new.expires_at,
        created_at=p.now,
        updated_at=p.now,
    )
    s.add(order)
    working.append(order)
    return order


def _bp_message(inst: Instrument, need: Decimal, available: Decimal, note: str = "") -> str:
    what = (
        f"${need:,.2f} of initial margin ({engine.FUTURES_INITIAL_MARGIN:.0%} of the contracts' "
        "value)"
        if inst.asset_class is AssetClass.FUTURE
        else f"${need:,.2f} of buying power"
    )
    return (
        f"Not enough buying power: this {inst.symbol} order needs {what}, and the paper account "
        f"has ${max(available, Decimal(0)):,.2f} available.{note} Lower the quantity, cancel "
        "open orders, or close positions first."
    )


def _taken_note(inst: Instrument, held: Decimal, taken: Decimal) -> str:
    """Why an order that looks like it closes a position is charged as opening one."""
    held = abs(held)
    if taken >= held:
        what = f"all {plain(held)} {inst.symbol} held, so this order would open a new position"
    else:
        what = (
            f"{plain(taken)} of the {plain(held)} {inst.symbol} held, so this order can close "
            f"only {plain(held - taken)}"
        )
    return f" Your open orders already close {what}."


async def _working_order(
    s: AsyncSession, account_id: str, order_id: str, ended: type[BrokerError], verb: str
) -> PaperOrder:
    """The order, locked, if it still works; ``ended`` (nothing to ``verb``) if it has ended."""
    order = await s.scalar(
        select(PaperOrder)
        .where(PaperOrder.id == order_id, PaperOrder.account_id == account_id)
        .with_for_update()
    )
    if order is None:
        raise OrderNotFound(f"Tradecord Paper has no order {order_id} in this account.")
    if OrderStatus(order.status).is_final:
        raise ended(
            f"Order {order_id} has already ended ({order.status}); there is nothing to {verb}."
        )
    return order


async def cancel(db: Database, account_id: str, order_id: str, now: datetime) -> Order:
    async with db.transaction() as s:
        account = await lock_account(s, account_id)
        order = await _working_order(s, account_id, order_id, OrderNotCancelable, "cancel")
        order.status = OrderStatus.CANCELLED.value
        order.reject_reason = "Cancelled at your request."
        order.closed_at = order.updated_at = now
        await _follow_bracket(s, account, order, now, None)  # a part-filled entry's exits
        return to_order(order)


async def replace(
    db: Database,
    account_id: str,
    order_id: str,
    change: OrderChange,
    quotes: Mapping[str, Quote],
    market: Market,
    now: datetime,
) -> Order:
    """Change a working order in place (same id, as Tradier and TradeStation do): the buying
    power check of a new order for what the change asks, then the order is looked at again at
    ``quotes`` (the order's symbol and the positions'), so a limit moved through the market
    fills now as a new one would."""
    async with db.transaction() as s:
        account = await lock_account(s, account_id)
        order = await _working_order(s, account_id, order_id, OrderNotReplaceable, "change")
        if order.parent_id is not None and change.quantity is not None:
            raise InvalidOrder(EXIT_QUANTITY_FIXED)
        quantity = change.quantity if change.quantity is not None else order.quantity
        limit = change.limit_price if change.limit_price is not None else order.limit_price
        stop = change.stop_price if change.stop_price is not None else order.stop_price
        if change.limit_price is not None or change.stop_price is not None:
            check_entry_change(Side(order.side), bracket_of(order), order.symbol, limit, stop)
        # Priced as a new order is (a market order keeps its own).
        reference = worst_price(stop, limit) or limit or order.reference_price
        positions = {
            p.symbol: p
            for p in await s.scalars(
                select(PaperPosition).where(PaperPosition.account_id == account_id)
            )
        }
        working = await open_orders_of(s, account_id)
        valuation = engine.value_account(
            account_state(account),
            [position_state(p) for p in positions.values()],
            marks_from(quotes),
            reservations(w for w in working if w.id != order.id),
        )
        held = positions.get(order.symbol)
        need = engine.order_requirement(
            AssetClass(order.asset_class),
            order.multiplier,
            held.quantity if held is not None else Decimal(0),
            Side(order.side),
            quantity - order.filled_quantity,
            reference,
            valuation.closing_firm.get(order.symbol, Decimal(0)),
        )
        if need > 0 and need > valuation.buying_power:
            inst = Instrument(order.symbol, AssetClass(order.asset_class), order.multiplier)
            raise InsufficientBuyingPower(_bp_message(inst, need, valuation.buying_power))
        order.quantity, order.limit_price, order.stop_price = quantity, limit, stop
        order.reference_price = reference
        order.updated_at = now
        quote = quotes.get(order.symbol)
        open_now = is_open(
            AssetClass(order.asset_class), now, market.fill_hours, extended=order.extended_hours
        )
        decision = engine.decide(
            order_state(order), quote, market.price_type, now=now, market_open=open_now
        )
        await apply_decision(
            s, account, order, decision, quote, now, positions=positions, working=working
        )
        return to_order(order)


# -- sweeping ------------------------------------------------------------------------------


async def sweep_account(
    db: Database, account_id: str, source: QuoteSource, market: Market
) -> list[OrderUpdate]:
    """Re-check every working order of one account at current quotes: trigger stops, fill
    what is marketable, expire finished day orders. Returns the fills and expiries made."""
    now = now_utc(market.clock)
    async with db.session() as s:
        working = await open_orders_of(s, account_id)
    if not working:
        return []
    needs_quote = {
        o.symbol
        for o in working
        if not (o.expires_at is not None and now >= o.expires_at)
        and (
            o.time_in_force in AUCTIONS  # the close is an auction's moment
            or is_open(AssetClass(o.asset_class), now, market.fill_hours, extended=o.extended_hours)
        )
    }
    quotes = await fetch_quotes(source, needs_quote)
    updates: list[OrderUpdate] = []
    # Brackets' exits last, as buying power counts them: a gap through an exit and a hand
    # order closing the same position fills the hand order, whose fill cuts the exits
    # (_fit_exits); the exit first would have left the hand order to open a position.
    for seen in sorted(working, key=lambda o: o.parent_id is not None):
        quote = quotes.get(seen.symbol)
        open_now = is_open(
            AssetClass(seen.asset_class), now, market.fill_hours, extended=seen.extended_hours
        )
        first_look = engine.decide(
            order_state(seen), quote, market.price_type, now=now, market_open=open_now
        )
        if first_look.action is Action.WAIT:
            continue
        try:
            update_ = await _transition(db, account_id, seen.id, quote, market, open_now, now)
        except IntegrityError:
            # The unique execution id refused a second booking of a fill: already done.
            log.info("paper: order %s was filled by another sweeper", seen.id)
            continue
        if update_ is not None:
            updates.append(update_)
    return updates


async def _transition(
    db: Database,
    account_id: str,
    order_id: str,
    quote: Quote | None,
    market: Market,
    open_now: bool,
    now: datetime,
) -> OrderUpdate | None:
    async with db.transaction() as s:
        account = await lock_account(s, account_id)
        order = await s.scalar(
            select(PaperOrder)
            .where(PaperOrder.id == order_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if order is None or OrderStatus(order.status).is_final:
            return None  # cancelled, or moved by another process meanwhile
        decision = engine.decide(
            order_state(order), quote, market.price_type, now=now, market_open=open_now
        )
        return await apply_decision(s, account, order, decision, quote, now)


async def sweep_all(
    db: Database,
    quote_source_factory: QuoteSourceFactory | None = None,
    *,
    fill_hours: FillHours | str = FillHours.ALWAYS,
    clock: Clock | None = None,
) -> list[OrderUpdate]:
    """Sweep every paper account that has working orders.

    ``quote_source_factory(connection_id)`` gives the quote source of that paper connection
    (a connected broker adapter; may be async); ``None`` from it, or no factory, means the
    simulated feed. The price type comes from the connection's settings
    (``market_price_type``, default mid). One account's failure is logged and skipped.
    """
    clock = clock or utcnow
    hours = FillHours(fill_hours)
    async with db.session() as s:
        rows = (
            await s.execute(
                select(PaperAccount.id, PaperAccount.connection_id, Connection.settings)
                .join(Connection, Connection.id == PaperAccount.connection_id)
                .where(
                    exists().where(
                        PaperOrder.account_id == PaperAccount.id,
                        PaperOrder.status.in_(OPEN_STATUSES),
                    )
                )
                .order_by(PaperAccount.id)
            )
        ).all()
    simulated = SimulatedFeed(clock)
    updates = await settle_expired(db, quote_source_factory, simulated, now_utc(clock))
    for account_id, connection_id, settings in rows:
        try:
            source = await _source_for(quote_source_factory, connection_id) or simulated
            price_type = PriceType((settings or {}).get(PRICE_TYPE_SETTING, PriceType.MID))
            market = Market(price_type, hours, clock)
            updates.extend(await sweep_account(db, account_id, source, market))
        except (BrokerError, ValueError) as e:
            log.warning("paper: sweep of %s skipped: %s", account_id, type(e).__name__)
        except Exception as e:
            # Accounts go in id order: one account's bug (its quote source's, say) would
            # otherwise stop every later account's orders on every pass. Only the type: a
            # message might quote a broker's response.
            log.error("paper: sweep of %s failed: %s; moving on", account_id, type(e).__name__)
    return updates


async def settle_expired(
    db: Database,
    quote_source_factory: QuoteSourceFactory | None,
    simulated: SimulatedFeed,
    now: datetime,
) -> list[OrderUpdate]:
    """Close every position held in a futures contract past its last trading moment at the
    contract's final price, as the exchange settles it: a market order with client order id
    ``expiry-<symbol>``, filled. The price is the account's quote source's; a simulated feed's
    at the moment trading ended. A broker that no longer quotes the contract leaves it to the
    simulated feed, so no position is stuck in a contract nobody can trade.
    """
    async with db.session() as s:
        rows = (
            await s.execute(
                select(PaperPosition.account_id, PaperPosition.symbol, PaperAccount.connection_id)
                .join(PaperAccount, PaperAccount.id == PaperPosition.account_id)
                .where(PaperPosition.asset_class == AssetClass.FUTURE.value)
                .order_by(PaperPosition.account_id, PaperPosition.symbol)
            )
        ).all()
    updates: list[OrderUpdate] = []
    for account_id, symbol, connection_id in rows:
        c = symbols.contract(symbol, now)
        if c is None or now < c.expires_at:
            continue
        try:
            source = await _source_for(quote_source_factory, connection_id) or simulated
            price, priced_simulated = await _final_price(source, simulated, symbol, c.expires_at)
            settled = await _settle(db, account_id, symbol, price, priced_simulated, now)
        except IntegrityError:
            continue  # settled by another process meanwhile
        except Exception as e:
            log.warning("paper: settling %s of %s waits: %s", symbol, account_id, type(e).__name__)
            continue
        if settled is not None:
            updates.append(settled)
    return updates


async def _final_price(
    source: QuoteSource, simulated: SimulatedFeed, symbol: str, ended: datetime
) -> tuple[Decimal, bool]:
    if not isinstance(source, SimulatedFeed):
        with suppress(BrokerError):
            quote = await source.fetch_quote(symbol)
            price = engine.mark_price(quote)
            if price is not None:
                return price, quote.simulated
        source = simulated
    quote = source.quote_at(symbol, ended)
    price = engine.mark_price(quote)
    assert price is not None  # the simulated feed always quotes a known future
    return price, True


async def _settle(
    db: Database, account_id: str, symbol: str, price: Decimal, simulated: bool, now: datetime
) -> OrderUpdate | None:
    async with db.transaction() as s:
        account = await lock_account(s, account_id)
        position = await s.scalar(
            select(PaperPosition)
            .where(PaperPosition.account_id == account_id, PaperPosition.symbol == symbol)
            .execution_options(populate_existing=True)
        )
        if position is None or position.quantity == 0:
            return None
        account.order_seq += 1
        quantity = abs(position.quantity)
        order = PaperOrder(
            id=f"{account.id}-{account.order_seq}",
            account_id=account.id,
            seq=account.order_seq,
            client_order_id=f"{SETTLEMENT_PREFIX}{symbol}",
            symbol=symbol,
            asset_class=position.asset_class,
            multiplier=position.multiplier,
            side=(Side.SELL if position.quantity > 0 else Side.BUY).value,
            quantity=quantity,
            order_type=OrderType.MARKET.value,
            time_in_force=TimeInForce.DAY.value,
            reference_price=price,
            status=OrderStatus.OPEN.value,
            filled_quantity=Decimal(0),
            simulated=simulated,
            created_at=now,
            updated_at=now,
        )
        s.add(order)
        fill = await book_fill(s, account, order, quantity, price, simulated, now)
        await s.flush()
        return OrderUpdate(to_order(order), "fill", fill.execution_id, fill.quantity, price, now)


async def _source_for(factory: QuoteSourceFactory | None, connection_id: int) -> QuoteSource | None:
    if factory is None:
        return None
    made = factory(connection_id)
    if inspect.isawaitable(made):
        made = await made
    return made


def now_utc(clock: Clock) -> datetime:
    at = clock()
    if at.tzinfo is None:
        raise ValueError("the paper clock must return timezone-aware datetimes")
    return at.astimezone(UTC)
