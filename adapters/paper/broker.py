"""Tradecord Paper: the built-in paper broker every member has from the start.

One paper account per paper connection (``TCP`` + the connection id in 8 digits, type margin,
environment paper) trades US stocks and ETFs, crypto and futures. Accounting and matching
rules are in ``engine`` (buying power, shorts, futures margin, liquidity), fill hours and day
order expiry in ``hours``, prices in ``feed``, storage and locking in ``store``.

Built from ``AdapterContext.extra``:
    ``db`` (``bot.db.Database``, required), ``connection_id`` (int, required),
    ``quote_source`` (a ``QuoteSource``, e.g. a connected broker's adapter; default the
    simulated feed), ``market_price_type`` (mid | bid_ask | ask | bid | last; default mid),
    ``starting_cash`` (default 100,000 USD), ``fill_hours`` ("24/7" default, or "exchange"),
    ``clock`` (a callable returning an aware datetime; default the system clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, TypeVar

from sqlalchemy import Row, select
from sqlalchemy.exc import IntegrityError

from adapters.base import AdapterContext, BrokerAdapter, Capabilities
from adapters.calendars import previous_close
from adapters.errors import (
    BrokerError,
    BrokerUnavailable,
    InvalidOrder,
    MarketClosed,
    OrderNotFound,
)
from adapters.models import (
    AUCTIONS,
    CHANGE_FIELDS,
    Account,
    AccountRef,
    AccountType,
    AssetClass,
    Balance,
    Bracket,
    Environment,
    Order,
    OrderChange,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Position,
    Quote,
    Side,
    SubmissionHint,
    TimeInForce,
    mask_account,
)
from adapters.paper import engine, store
from adapters.paper.engine import PriceType
from adapters.paper.feed import BrokerPrices, QuoteSource, SimulatedFeed, utcnow
from adapters.paper.hours import (
    AUCTION_WINDOW,
    FillHours,
    auction_at,
    day_order_expiry,
    is_open,
    next_open,
)
from adapters.paper.models import PaperAccount, PaperOrder
from adapters.paper.universe import Instrument, check_contract, resolve
from adapters.registry import register
from adapters.symbols import CENT, asset_class_of, decimals, sub_penny_problem
from bot.db import Database
from bot.db_types import plain

V = TypeVar("V")
ALL_TIF = frozenset(TimeInForce)
MAX_HISTORY = 500


@dataclass
class PaperTestHooks:
    """Faults for tests and the contract suite; production code never sets these.

    ``refuse_next`` makes the next matching verb raise before doing anything (a 429 or a 5xx
    at a real broker). ``lose_next_create_response`` makes the next ``create_order`` commit the
    order and then raise ``BrokerUnavailable(maybe_sent=True)``, as a lost HTTP response would.
    """

    lost_create_responses: int = 0
    lost_replace_responses: int = 0
    refusals: list[tuple[frozenset[str] | None, BrokerError]] = field(default_factory=list)

    def refuse_next(self, error: BrokerError, verbs: frozenset[str] | None = None) -> None:
        """``verbs``: "read", "create_order", "cancel_order", "replace_order"; None for any."""
        self.refusals.append((verbs, error))

    def lose_next_create_response(self, times: int = 1) -> None:
        self.lost_create_responses += times

    def lose_next_replace_response(self, times: int = 1) -> None:
        self.lost_replace_responses += times

    def take_lost_replace_response(self) -> bool:
        if self.lost_replace_responses > 0:
            self.lost_replace_responses -= 1
            return True
        return False

    def before(self, verb: str) -> None:
        for i, (verbs, error) in enumerate(self.refusals):
            if verbs is None or verb in verbs:
                del self.refusals[i]
                raise error

    def take_lost_response(self) -> bool:
        if self.lost_create_responses > 0:
            self.lost_create_responses -= 1
            return True
        return False


_ENSURED: set[tuple[str, int]] = set()


@register
class PaperBroker(BrokerAdapter):
    key: ClassVar[str] = "paper"
    display_name: ClassVar[str] = "Tradecord Paper"
    capabilities: ClassVar[Capabilities] = Capabilities(
        asset_classes={
            AccountType.MARGIN: frozenset({AssetClass.EQUITY, AssetClass.CRYPTO, AssetClass.FUTURE})
        },
        order_types=frozenset(OrderType),
        time_in_force={
            AssetClass.EQUITY: ALL_TIF,
            AssetClass.FUTURE: ALL_TIF,
            # Crypto has no trading day to end, so no day orders.
            AssetClass.CRYPTO: frozenset({TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK}),
        },
        fractional=frozenset({AssetClass.CRYPTO}),
        brackets=True,
        bracket_trailing_stop=True,
        exits_follow_position=True,
        environments=frozenset({Environment.PAPER}),
        quotes=True,
        order_stream=False,
        replace=frozenset(CHANGE_FIELDS),
        extended_hours=True,
    )

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        extra = context.extra
        for name in ("db", "connection_id"):
            if extra.get(name) is None:
                raise ValueError(f"PaperBroker needs AdapterContext.extra[{name!r}]")
        self.db: Database = extra["db"]
        self.connection_id = int(extra["connection_id"])
        self.account_id = store.paper_account_id(self.connection_id)
        try:
            price_type = PriceType(extra.get("market_price_type") or PriceType.MID)
        except ValueError:
            raise ValueError(
                f"market_price_type {extra['market_price_type']!r} is not one of "
                f"{', '.join(p.value for p in PriceType)}"
            ) from None
        try:
            hours = FillHours(extra.get("fill_hours") or FillHours.ALWAYS)
        except ValueError:
            raise ValueError(
                f"fill_hours {extra['fill_hours']!r} is not 24/7 or exchange"
            ) from None
        self.market = store.Market(price_type, hours, extra.get("clock") or utcnow)
        cash = extra.get("starting_cash") or store.DEFAULT_STARTING_CASH
        self.starting_cash = Decimal(str(cash))
        self.quote_source: QuoteSource = extra.get("quote_source") or SimulatedFeed(
            self.market.clock
        )
        self.test_hooks = PaperTestHooks()
        # Accounts are never deleted while their connection lives, so once this process has
        # seen one exist it need not ask again: one query less on every command.
        self._ensured = (self.db.url, self.connection_id) in _ENSURED
        self._ensuring = asyncio.Lock()  # concurrent first reads create the account once

    # -- helpers ---------------------------------------------------------------------------

    def keeps_exchange_hours(self) -> bool:
        return self.market.fill_hours is FillHours.EXCHANGE

    def market_price_type(self) -> str | None:
        return self.market.price_type.value

    def _now(self) -> datetime:
        return store.now_utc(self.market.clock)

    async def _ensure(self) -> PaperAccount:
        wanted = store.NewAccount(self.connection_id, self.starting_cash, self._now())
        accounts = self.db.shared("paper.accounts", partial(store.ensure_accounts, self.db))
        row = await accounts(wanted)
        self._ensured = True
        _ENSURED.add((self.db.url, self.connection_id))
        return row

    def _check_account(self, account: AccountRef) -> None:
        if account.id != self.account_id:
            raise BrokerError(
                f"Account {mask_account(account.id)} is not the paper account of this connection "
                f"({mask_account(self.account_id)}). Choose the paper account again in /accounts."
            )

    async def _ready(self, verb: str, account: AccountRef | None = None) -> None:
        self.test_hooks.before(verb)
        if account is not None:
            self._check_account(account)
        if not self._ensured:
            async with self._ensuring:
                if not self._ensured:
                    await self._ensure()

    @property
    def simulated_prices(self) -> bool:
        """Whether this connection's prices are made up (another paper broker's count too)."""
        source = self.quote_source
        nested = getattr(source, "simulated_prices", False) is True
        return isinstance(source, SimulatedFeed) or nested

    def simulates(self, symbol: str) -> bool:
        """Whether ``symbol``'s prices here are made up: a broker source leaves the asset
        classes it does not trade to the simulated feed (``BrokerPrices``)."""
        source = self.quote_source
        if isinstance(source, BrokerPrices):
            return asset_class_of(symbol) not in source.asset_classes
        return self.simulated_prices

    # -- reads -------------------------------------------------------------------------------

    async def fetch_accounts(self) -> list[Account]:
        self.test_hooks.before("read")
        row = await self._ensure()
        return [
            Account(
                row.id,
                AccountType.MARGIN,
                Environment.PAPER,
                row.currency,
                "active",
                info={
                    "broker": "paper",
                    "starting_cash": str(row.starting_cash),
                    "simulated": self.simulated_prices,
                    "reset_at": row.reset_at.isoformat() if row.reset_at else None,
                },
            )
        ]

    async def _holdings(
        self, account: AccountRef, *, fills_since: datetime | None = None
    ) -> store.Holdings:
        await self._ready("read", account)
        found = await store.holdings(self.db, self.account_id, fills_since=fills_since)
        if found.account is None:
            raise store.AccountMissing()
        return found

    async def fetch_buying_power(
        self, account: AccountRef, asset: AssetClass | None = None
    ) -> Decimal:
        # As placing an order checks it: the longs' marks cancel out, so only shorts and
        # futures are quoted (one quote, not one per position, from a broker price source).
        row, positions, reserved, _ = await self._holdings(account)
        needed = engine.buying_power_positions(positions, reserved)
        priced = [p.symbol for p in needed if engine.bears_on_buying_power(p)]
        quotes = await store.fetch_quotes(self.quote_source, priced)
        v = engine.value_account(
            store.account_state(row), needed, store.marks_from(quotes), reserved
        )
        # Signed: a deficit read as 0 made a close's card promise buying power it did not free.
        return _cents(v.buying_power)

    async def fetch_balance(self, account: AccountRef) -> Balance:
        close = previous_close(self._now())
        row, positions, reserved, fills = await self._holdings(account, fills_since=close)
        quotes = await store.fetch_quotes(self.quote_source, [p.symbol for p in positions])
        marks = store.marks_from(quotes)
        v = engine.value_account(store.account_state(row), positions, marks, reserved)
        day = engine.day_pnl(positions, fills, marks, self._marks_at(close))
        return Balance(
            account_id=row.id,
            currency=row.currency,
            cash=_cents(v.cash),
            buying_power=_cents(v.buying_power),
            equity=_cents(v.equity),
            market_value=_cents(v.long_market_value - v.short_market_value),
            unrealized_pnl=_cents(v.unrealized_pnl),
            realized_pnl=_cents(row.realized_pnl),
            day_pnl=_cents(day) if day is not None else None,
            # Cogs show margin in use only when a broker gives it; paper has no maintenance.
            initial_margin=_cents(v.futures_margin) if v.futures_margin else None,
            info={
                "simulated": self._simulated(quotes.values()),
                "starting_cash": str(row.starting_cash),
                "long_market_value": str(_cents(v.long_market_value)),
                "short_market_value": str(_cents(v.short_market_value)),
                "futures_unrealized_pnl": str(_cents(v.futures_unrealized_pnl)),
                "futures_initial_margin": str(_cents(v.futures_margin)),
                "reserved_for_open_orders": str(_cents(v.reserved)),
                "unpriced": list(v.unpriced),
            },
        )

    def _marks_at(self, at: datetime) -> Callable[[Sequence[str]], dict[str, Decimal] | None]:
        """Marks at a past moment: the simulated feed has them; a broker's quotes are of now
        only, so an account priced by one has no day P&L while it held positions overnight."""

        def marks(symbols: Sequence[str]) -> dict[str, Decimal] | None:
            if not isinstance(self.quote_source, SimulatedFeed):
                return None
            then = {}
            for symbol in symbols:
                try:
                    then[symbol] = self.quote_source.quote_at(symbol, at)
                except BrokerError:
                    continue
            return store.marks_from(then)

        return marks

    def _simulated(self, quotes: Iterable[Quote]) -> bool:
        """Whether the figures were priced by simulated quotes (no quotes: by the source)."""
        seen = list(quotes)
        return any(q.simulated for q in seen) if seen else self.simulated_prices

    async def fetch_positions(self, account: AccountRef) -> list[Position]:
        await self._ready("read", account)
        reads = self.db.shared("paper.positions", partial(_each, store.positions_of, self.db))
        rows = await reads(self.account_id)
        quotes = await store.fetch_quotes(self.quote_source, [p.symbol for p in rows])
        return [self._position(row, quotes.get(row.symbol)) for row in rows]

    async def fetch_position(self, account: AccountRef, symbol: str) -> Position | None:
        await self._ready("read", account)
        row = await store.position_in(self.db, self.account_id, symbol)
        if row is None:
            return None
        quotes = await store.fetch_quotes(self.quote_source, [symbol])
        return self._position(row, quotes.get(symbol))

    def _position(self, row: Row[Any], quote: Quote | None) -> Position:
        # Unpacked: a Row's items cost less than its attributes, and a list has dozens.
        _, symbol, asset_class, multiplier, quantity, cost_basis, realized_pnl, opened_at = row
        average = engine.average_price(quantity, cost_basis)
        mark = engine.mark_price(quote)
        value = quantity * (average if mark is None else mark) * multiplier
        basis = cost_basis * multiplier
        return Position(
            symbol=symbol,
            asset_class=AssetClass(asset_class),
            quantity=quantity,
            average_price=average,
            market_price=plain(mark) if mark is not None else None,
            market_value=_cents(value),
            cost_basis=_cents(basis),
            unrealized_pnl=_cents(value - basis) if mark is not None else None,
            multiplier=multiplier,
            info={
                "simulated": quote.simulated if quote else self.simulated_prices,
                "realized_pnl": str(_cents(realized_pnl)),
                "opened_at": opened_at.isoformat(),
                "priced_at_average": mark is None,
            },
        )

    async def fetch_open_orders(self, account: AccountRef) -> list[Order]:
        await self._ready("read", account)
        reads = self.db.shared(
            "paper.open_orders", partial(_each, store.open_orders_of_accounts, self.db)
        )
        rows = await reads(self.account_id)
        return [store.to_order(r) for r in reversed(rows)]

    async def fetch_orders(
        self, account: AccountRef, *, since: datetime | None = None, limit: int = 50
    ) -> list[Order]:
        await self._ready("read", account)
        if limit < 1:
            raise InvalidOrder("Ask for at least one order.")
        async with self.db.session() as s:
            rows = await store.order_history(s, self.account_id, since, min(limit, MAX_HISTORY))
        return [store.to_order(r) for r in rows]

    async def _fetch_order_by_id(self, account: AccountRef, order_id: str) -> Order:
        await self._ready("read", account)
        async with self.db.session() as s:
            row = await s.scalar(
                select(PaperOrder).where(
                    PaperOrder.id == order_id, PaperOrder.account_id == self.account_id
                )
            )
        if row is None:
            raise OrderNotFound(f"Tradecord Paper has no order {order_id} in this account.")
        return store.to_order(row)

    async def _fetch_order_by_client_id(
        self, account: AccountRef, client_order_id: str, hint: SubmissionHint | None = None
    ) -> Order:
        # Paper stores the client order id with the order: the hint is not needed.
        await self._ready("read", account)
        async with self.db.session() as s:
            row = await store.order_by_client_id(s, self.account_id, client_order_id)
        if row is None:
            raise OrderNotFound(
                f"Tradecord Paper has no order with client order id {client_order_id} in this "
                "account."
            )
        return store.to_order(row)

    async def fetch_quote(self, symbol: str) -> Quote:
        self.test_hooks.before("read")
        return await self.quote_source.fetch_quote(resolve(symbol).symbol)

    # -- writes ------------------------------------------------------------------------------

    async def create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        self.test_hooks.before("create_order")
        self._check_account(account)
        return await super().create_order(account, request)

    async def _create_order(self, account: AccountRef, request: OrderRequest) -> Order:
        if not self._ensured:
            await self._ensure()
        inst = resolve(request.symbol)  # validated by check_order (create_order calls it)
        # A client order id already used is found by place_orders, inside its transaction.
        now = self._now()
        hours = self.market.fill_hours
        quote = await self.quote_source.fetch_quote(inst.symbol)
        stop_price, watermark = request.stop_price, None
        if request.order_type is OrderType.TRAILING_STOP:
            watermark = engine.trigger_price(quote, request.side, self.market.price_type)
            watermark = watermark or engine.mark_price(quote)
            if watermark is None:
                raise BrokerUnavailable(
                    f"No price is available for {inst.symbol} right now, and a trailing stop "
                    "starts from one. Try again in a moment."
                )
            stop_price = engine.trailing_stop(
                request.side,
                watermark,
                request.trail_amount,
                request.trail_percent,
                tick=inst.tick,
                equity=inst.asset_class is AssetClass.EQUITY,
            )
        new = store.NewOrder(
            instrument=inst,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            time_in_force=request.time_in_force,
            limit_price=request.limit_price,
            stop_price=stop_price,
            client_order_id=request.client_order_id,
            reference_price=store.worst_price(stop_price, request.limit_price)
            or self._reference_price(request, inst, quote),
            expires_at=_expiry(request, inst, now, hours),
            bracket=request.bracket,
            trail_amount=request.trail_amount,
            trail_percent=request.trail_percent,
            watermark=watermark,
            extended_hours=request.extended_hours,
        )
        if request.bracket is not None:
            store.check_bracket_sides(
                request.side, request.bracket, inst.symbol, new.reference_price
            )
        # Orders placed at the same moment (a signal's fan-out) share one transaction.
        place = self.db.shared("paper.place", _place_many)
        order = await place(_Request(self, new, quote, now))
        if self.test_hooks.take_lost_response():
            raise BrokerUnavailable(maybe_sent=True)
        return order

    def _reference_price(self, request: OrderRequest, inst: Instrument, quote: Quote) -> Decimal:
        if request.limit_price is not None:
            return request.limit_price
        if request.stop_price is not None:
            return request.stop_price
        price = engine.executable_price(quote, request.side, self.market.price_type, inst.tick)
        price = price or engine.mark_price(quote)
        if price is None:
            raise BrokerUnavailable(
                f"No price is available for {inst.symbol} right now. Try again in a moment."
            )
        return price

    # -- checks and estimates (also run by previews and signals, before any intent) ------------

    def check_order(self, account: AccountRef, request: OrderRequest) -> None:
        super().check_order(account, request)
        inst = resolve(request.symbol)
        validate(request, inst)
        now = self._now()
        check_contract(inst, now)
        hours = self.market.fill_hours
        immediate = request.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)
        # Here rather than at placing: a preview refuses it before the member confirms.
        if immediate and not is_open(inst.asset_class, now, hours):
            opens = next_open(inst.asset_class, now, hours)
            raise MarketClosed(
                f"The market for {inst.symbol} is closed, and this paper account fills only in "
                f"exchange hours (next open {opens:%a %d %b %H:%M} UTC). "
                f"{request.time_in_force.upper()} orders cannot wait for the open: use a day or "
                "GTC order, which rests until the open."
            )

    def check_change(self, order: Order, change: OrderChange) -> None:
        super().check_change(order, change)
        if order.parent_id is not None and change.quantity is not None:
            raise InvalidOrder(store.EXIT_QUANTITY_FIXED)  # refused at the card, not Confirm
        if change.limit_price is not None or change.stop_price is not None:
            store.check_entry_change(
                order.side,
                _bracket_in(order),
                order.symbol,
                change.limit_price if change.limit_price is not None else order.limit_price,
                change.stop_price if change.stop_price is not None else order.stop_price,
            )

    def canonical_symbol(self, symbol: str) -> str:
        return resolve(symbol).symbol

    def buying_power_required(self, request: OrderRequest, price: Decimal) -> Decimal:
        inst = resolve(request.symbol)
        # All of it opening, as the base contract says; the preview then charges a closing or
        # flipping order by the same split as store._place (trading.buying_power_after).
        return engine.order_requirement(
            inst.asset_class, inst.multiplier, engine.ZERO, request.side, request.quantity, price
        )

    async def cancel_order(self, account: AccountRef, order_id: str) -> None:
        await self._ready("cancel_order", account)
        await store.cancel(self.db, self.account_id, order_id, self._now())

    async def replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        await self._ready("replace_order", account)
        return await super().replace_order(account, order, change)

    async def _replace_order(self, account: AccountRef, order: Order, change: OrderChange) -> Order:
        inst = resolve(order.symbol)
        for label, price in (("limit", change.limit_price), ("stop", change.stop_price)):
            if price is not None:
                _check_price(label, price, inst)
        if change.quantity is not None and decimals(change.quantity) > engine.PRICE_PLACES:
            raise InvalidOrder(
                f"Quantities take at most {engine.PRICE_PLACES} decimals; "
                f"{change.quantity} has more."
            )
        reads = self.db.shared("paper.positions", partial(_each, store.positions_of, self.db))
        held = {row.symbol for row in await reads(self.account_id)}
        quotes = await store.fetch_quotes(self.quote_source, held | {order.symbol})
        changed = await store.replace(
            self.db, self.account_id, order.id, change, quotes, self.market, self._now()
        )
        if self.test_hooks.take_lost_replace_response():
            raise BrokerUnavailable(maybe_sent=True)
        return changed

    # -- paper-only verbs ----------------------------------------------------------------------

    async def sweep(self, account: AccountRef | None = None) -> list[OrderUpdate]:
        """Re-check this account's working orders at current quotes (see ``store.sweep_account``).
        Returns the fills and expiries it made, for the caller to announce."""
        if account is not None:
            self._check_account(account)
        if not self._ensured:
            await self._ensure()
        return await store.sweep_account(self.db, self.account_id, self.quote_source, self.market)

    async def reset(self, starting_cash: Decimal | None = None) -> None:
        """Back to the starting state (``store.reset``)."""
        await store.reset(self.db, self.connection_id, starting_cash=starting_cash, now=self._now())
        self._ensured = True


# -- placing: concurrent orders (a signal's fan-out) share one transaction ---------------------


@dataclass(frozen=True, slots=True)
class _Request:
    broker: PaperBroker
    new: store.NewOrder
    quote: Quote  # the order's own quote: it must be had
    now: datetime


async def _each(
    read: Callable[[Database, Sequence[str]], Awaitable[dict[str, V]]],
    db: Database,
    account_ids: Sequence[str],
) -> list[V]:
    found = await read(db, sorted(set(account_ids)))
    return [found[i] for i in account_ids]


async def _place_many(requests: Sequence[_Request]) -> list[Order | BaseException]:
    db = requests[0].broker.db
    traded: dict[str, set[str]] = {}
    for r in requests:
        traded.setdefault(r.broker.account_id, set()).add(r.new.instrument.symbol)
    wanted = await store.symbols_to_mark(db, traded)
    marks = await asyncio.gather(
        *(_marks(r, wanted.get(r.broker.account_id, ())) for r in requests),
        return_exceptions=True,
    )
    results: dict[int, Order | BaseException] = {}
    ready: list[int] = []
    batch: list[store.Placement] = []
    for i, (r, m) in enumerate(zip(requests, marks, strict=True)):
        if isinstance(m, BaseException):
            results[i] = m
        else:
            ready.append(i)
            b = r.broker
            batch.append(store.Placement(b.account_id, r.new, r.quote, m, b.market, r.now))
    placed: Sequence[Order | BaseException] = []
    try:
        if batch:
            placed = await store.place_orders(db, batch)
    except IntegrityError as e:
        # A client order id placed meanwhile by another process. The coalescer runs a failed
        # batch again one order at a time; alone, the order placed first is the answer.
        if len(batch) != 1 or batch[0].new.client_order_id is None:
            raise
        placed = [await _placed_before(db, batch[0], e)]
    results.update(zip(ready, placed, strict=True))
    return [results[i] for i in range(len(requests))]


async def _marks(r: _Request, wanted: Iterable[str]) -> dict[str, Decimal]:
    """Marks for the order's buying power check (``wanted``: ``store.symbols_to_mark``);
    other than the order's own, best effort (a symbol whose quote fails is unpriced)."""
    own = r.new.instrument.symbol
    quotes = await store.fetch_quotes(r.broker.quote_source, [s for s in wanted if s != own])
    quotes[own] = r.quote
    return store.marks_from(quotes)


async def _placed_before(db: Database, p: store.Placement, error: IntegrityError) -> Order:
    assert p.new.client_order_id is not None
    async with db.session() as s:
        existing = await store.order_by_client_id(s, p.account_id, p.new.client_order_id)
    if existing is None:
        raise error
    return store.to_order(existing)


def _bracket_in(order: Order) -> Bracket | None:
    """The take-profit and stop-loss of a bracketed entry, as ``store.to_order`` gives them."""
    tp, sl = order.info.get("take_profit"), order.info.get("stop_loss")
    if tp is None and sl is None:
        return None
    return Bracket(Decimal(tp) if tp is not None else None, Decimal(sl) if sl is not None else None)


def _cents(value: Decimal) -> Decimal:
    return plain(value.quantize(CENT))


def validate(request: OrderRequest, inst: Instrument) -> None:
    """Paper's own checks after the shared ones in ``BrokerAdapter.check_order``."""
    qty = request.quantity
    if not qty.is_finite() or qty <= 0:
        raise InvalidOrder(f"The quantity must be more than zero, not {qty}.")
    if decimals(qty) > engine.PRICE_PLACES:
        raise InvalidOrder(
            f"Quantities take at most {engine.PRICE_PLACES} decimals; {qty} has more."
        )
    needs_limit = request.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
    needs_stop = request.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)
    for label, price, needed in (
        ("limit", request.limit_price, needs_limit),
        ("stop", request.stop_price, needs_stop),
    ):
        kind = request.order_type.value.replace("_", "-")
        if needed and price is None:
            raise InvalidOrder(f"A {kind} order needs a {label} price.")
        if not needed and price is not None:
            raise InvalidOrder(
                f"A {kind} order takes no {label} price; remove it or change the order type."
            )
        if price is not None:
            _check_price(label, price, inst)
            _check_equity_tick(label, price, inst)
    _check_trail(request, inst)
    if request.time_in_force in (TimeInForce.IOC, TimeInForce.FOK) and (
        needs_stop or request.order_type is OrderType.TRAILING_STOP
    ):
        raise InvalidOrder(
            f"{request.time_in_force.upper()} works with market and limit orders only; a stop "
            "has to wait for its price, so use day or GTC."
        )
    if request.bracket is not None:
        _check_bracket(request, inst)
    cid = request.client_order_id
    if cid is not None and not (0 < len(cid) <= 64):
        raise InvalidOrder("Client order ids are 1 to 64 characters.")


def _check_price(label: str, price: Decimal, inst: Instrument) -> None:
    if not price.is_finite() or price <= 0:
        raise InvalidOrder(f"The {label} price must be more than zero, not {price}.")
    if decimals(price) > engine.PRICE_PLACES:
        raise InvalidOrder(f"Prices take at most {engine.PRICE_PLACES} decimals; {price} has more.")
    if inst.tick is not None and price % inst.tick != 0:
        raise InvalidOrder(
            f"{inst.symbol} trades in ticks of {inst.tick}; {price} is not a multiple. "
            f"Use for example {(price // inst.tick) * inst.tick}."
        )


def _check_equity_tick(label: str, price: Decimal, inst: Instrument) -> None:
    # Real brokers refuse these (Alpaca: "sub-penny increment does not fulfill minimum pricing
    # criteria"): paper must not teach a member prices their live account will refuse.
    if inst.asset_class is not AssetClass.EQUITY:
        return
    problem = sub_penny_problem(label, price, inst.symbol)
    if problem is not None:
        raise InvalidOrder(problem)


def _check_trail(request: OrderRequest, inst: Instrument) -> None:
    amount, percent = request.trail_amount, request.trail_percent
    if request.order_type is not OrderType.TRAILING_STOP:
        if amount is not None or percent is not None:
            raise InvalidOrder(
                "trail_amount and trail_percent are for trailing-stop orders only; remove them "
                "or use order type trailing_stop."
            )
        return
    if (amount is None) == (percent is None):
        raise InvalidOrder(
            "A trailing stop trails by an amount or by a percent: give exactly one of the two."
        )
    if amount is not None:
        _check_price("trail amount", amount, inst)
    if percent is not None and not (0 < percent < 100):
        raise InvalidOrder(f"The trail percent must be between 0 and 100, not {percent}.")


def _expiry(
    request: OrderRequest, inst: Instrument, now: datetime, hours: FillHours
) -> datetime | None:
    """When a working order ends: a day order with its trading day, an auction order with its
    auction's minute; gtc orders never."""
    if request.time_in_force in AUCTIONS:
        return auction_at(request.time_in_force, now) + AUCTION_WINDOW
    if request.time_in_force is TimeInForce.DAY:
        return day_order_expiry(inst.asset_class, now, hours, extended=request.extended_hours)
    return None


def _check_bracket(request: OrderRequest, inst: Instrument) -> None:
    b = request.bracket
    assert b is not None
    if b.stop_loss_limit is not None and b.stop_loss is None:
        raise InvalidOrder("A stop-loss limit price needs a stop-loss (stop) price too.")
    if b.take_profit is None and b.stop_loss is None and not b.trailing:
        raise InvalidOrder("A bracket needs a take-profit price, a stop-loss price, or both.")
    if request.time_in_force not in (TimeInForce.DAY, TimeInForce.GTC):
        raise InvalidOrder(
            "A take-profit/stop-loss bracket takes time in force day or gtc: its exits wait "
            "for their prices."
        )
    for label, price in (
        ("take-profit", b.take_profit),
        ("stop-loss", b.stop_loss),
        ("stop-loss limit", b.stop_loss_limit),
    ):
        if price is not None:
            _check_price(label, price, inst)
            _check_equity_tick(label, price, inst)
    entry = request.limit_price or request.stop_price  # None for a market entry
    if entry is not None:
        store.check_bracket_sides(request.side, b, inst.symbol, entry)
    elif b.take_profit is not None and b.stop_loss is not None:
        buy = request.side is Side.BUY
        if (b.take_profit <= b.stop_loss) if buy else (b.take_profit >= b.stop_loss):
            raise InvalidOrder(
                f"For a {request.side.value}, the take-profit ({plain(b.take_profit)}) must be "
                f"{'above' if buy else 'below'} the stop-loss ({plain(b.stop_loss)})."
            )
