"""The accounting and matching rules of Tradecord Paper, as pure functions on plain dataclasses.

Nothing here does I/O: the persistence layer loads rows into these dataclasses, calls the
functions, and writes the results back in one transaction. That keeps the money rules
property-testable on their own.

Cash and positions
    Stocks, ETFs and crypto move cash on every fill: a buy pays ``quantity × price``, a sell
    receives it. Selling more than is held opens a short: the proceeds are credited to cash and
    the short is a liability, so ``equity = cash + long market value − short market value``.
    Futures move no cash when opened (they are margined); closing or reducing a futures
    position credits or debits its realized P&L, ``(exit − entry) × multiplier × contracts``.
    There are no commissions or fees.

Cost basis, average price, realized P&L
    A position keeps ``cost_basis`` = Σ signed quantity × price of what is still open (negative
    for a short, price units, no multiplier), so ``average_price = cost_basis / quantity``.
    Reducing a position removes the closed share of the basis and realizes
    ``(closed value − removed basis) × multiplier``. A fill that crosses zero closes the old
    position in full and opens the rest at the fill price: the average price resets on a flip.

Conservation (checked by property tests): for every account, at every moment,
    ``cash + Σ cost_basis of stock/ETF/crypto positions − realized P&L == starting cash``.
    Futures appear only through realized P&L, which is exactly what they moved in cash.

Buying power (no leverage)
    ``buying power = equity − Σ |market value| of stock/ETF/crypto positions
    − futures initial margin − reserved for open orders``.
    For an account holding only long stock that is simply its cash; a short needs buying power
    equal to its value (cash − 2 × short market value). Futures initial margin is
    ``FUTURES_INITIAL_MARGIN`` (10 %) of notional, ``|contracts| × price × multiplier``, at
    the mark. An order needs what its part that opens or increases a position takes, less
    what its part that closes one frees, both per unit at the order's reference price: value
    for stocks and crypto (selling a long brings it in, buying back a short gives it back),
    initial margin for futures. An order that frees at least what it takes needs none, and a
    flip in one order is checked like the close and the open sent one after the other
    (exactly so when it fills at the mark). The reference price is the limit price (limit,
    stop-limit), the stop price (stop) or the executable price when placed (market).
    A position closes once: open orders on the closing side close it oldest first, and a new
    order closes only what they leave of it (two resting sells of one long cannot both be
    closing). Open orders keep what they need reserved until they end, never less than zero
    (what a resting order will free is not there before it fills, so it pays for nothing
    else). Reservations are worked out afresh from the open orders' remaining quantities and
    the positions at every valuation, so a fill or a cancel moves them at once (a cancelled
    closing order leaves its share of the position to the orders after it, which then
    reserve less). A resting order is not checked again when it fills, so a gap can leave
    buying power negative (as at a real broker); new orders that open exposure are then
    refused, orders that reduce it are always accepted.

Marks
    Positions are valued at the quote's bid/ask midpoint (the last price when a side is
    missing); when no quote can be had, at their average price.

Matching
    The connection's market price type sets the executable price per side: ``mid``
    (midpoint), ``bid_ask`` (ask for buys, bid for sells), ``ask``, ``bid``, ``last``. A market
    order fills at it. A limit order fills only when it is marketable, i.e. the executable price
    is at or better than the limit (buy ≤ limit, sell ≥ limit), and then at that price, so never
    through the limit. A stop triggers when the trigger price reaches the stop (buys: ≥ stop;
    sells: ≤ stop); the trigger price is the last price for the ``last`` price type and the side
    (ask for buys, bid for sells) otherwise. A triggered stop then behaves as a market order, a
    triggered stop-limit as a limit order.

Liquidity
    Infinite at the quote: a marketable order fills in full, at one price, in one fill. So ioc
    and fok both fill completely at once or are cancelled, and fok's all-or-nothing always
    holds; resting orders never partially fill.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal, localcontext
from enum import StrEnum
from typing import NamedTuple

from adapters.models import AssetClass, OrderType, Quote, Side, TimeInForce
from adapters.symbols import equity_tick
from bot.db_types import plain

ZERO = Decimal(0)
PRICE_PLACES = 8  # prices and quantities carry at most 8 decimals
PRICE_Q = Decimal(1).scaleb(-PRICE_PLACES)
# Basis shares and P&L: fine enough to be invisible, coarse enough for NUMERIC(38, 18).
MONEY_Q = Decimal(1).scaleb(-16)
FUTURES_INITIAL_MARGIN = Decimal("0.10")
# Enough digits that no product of a quantity and a price is ever rounded.
_EXACT = Context(prec=60, rounding=ROUND_HALF_EVEN)


class PriceType(StrEnum):
    """Which quote price a market order (and a marketable limit) executes at."""

    MID = "mid"
    BID_ASK = "bid_ask"
    ASK = "ask"
    BID = "bid"
    LAST = "last"


# -- accounting ------------------------------------------------------------------------------


@dataclass(slots=True)
class AccountState:
    starting_cash: Decimal
    cash: Decimal
    realized_pnl: Decimal = ZERO


@dataclass(slots=True)
class PositionState:
    symbol: str
    asset_class: AssetClass
    multiplier: Decimal = Decimal(1)
    quantity: Decimal = ZERO  # negative when short
    cost_basis: Decimal = ZERO  # Σ signed quantity × price of the open quantity
    realized_pnl: Decimal = ZERO

    @property
    def average_price(self) -> Decimal:
        return average_price(self.quantity, self.cost_basis)

    @property
    def moves_cash(self) -> bool:
        return self.asset_class is not AssetClass.FUTURE


def average_price(quantity: Decimal, cost_basis: Decimal) -> Decimal:
    if quantity == 0:
        return ZERO
    with localcontext(_EXACT):
        return plain((cost_basis / quantity).quantize(PRICE_Q))


@dataclass(frozen=True, slots=True)
class Execution:
    """What one fill did to the account."""

    side: Side
    quantity: Decimal
    price: Decimal
    realized_pnl: Decimal
    cash_change: Decimal


def signed(side: Side, quantity: Decimal) -> Decimal:
    return quantity if side is Side.BUY else -quantity


def apply_fill(
    account: AccountState, position: PositionState, side: Side, quantity: Decimal, price: Decimal
) -> Execution:
    """Book one fill into ``account`` and ``position`` (both updated in place)."""
    if quantity <= 0 or price <= 0:
        raise ValueError("a fill needs a positive quantity and price")
    with localcontext(_EXACT):
        delta = signed(side, quantity)
        held = position.quantity
        realized = ZERO
        if held != 0 and (held > 0) != (delta > 0):
            closed = min(quantity, abs(held))
            direction = Decimal(1) if held > 0 else Decimal(-1)
            if closed == abs(held):
                removed = position.cost_basis
            else:
                removed = (position.cost_basis * closed / abs(held)).quantize(MONEY_Q)
            realized = ((direction * closed * price - removed) * position.multiplier).quantize(
                MONEY_Q
            )
            position.cost_basis -= removed
            position.quantity -= direction * closed
            opened = quantity - closed
        else:
            opened = quantity
        if opened:
            position.cost_basis += signed(side, opened) * price
            position.quantity += signed(side, opened)
        if position.quantity == 0:
            position.cost_basis = ZERO
        cash_change = -delta * price if position.moves_cash else realized
        account.cash += cash_change
        account.realized_pnl += realized
        position.realized_pnl += realized
    return Execution(side, quantity, price, realized, cash_change)


def conservation_residual(account: AccountState, positions: Iterable[PositionState]) -> Decimal:
    """``cash + Σ cost basis (cash-moving positions) − realized − starting``: always zero."""
    with localcontext(_EXACT):
        basis = sum((p.cost_basis for p in positions if p.moves_cash), ZERO)
        return account.cash + basis - account.realized_pnl - account.starting_cash


def closing_quantity(
    held: Decimal, side: Side, quantity: Decimal, already_closing: Decimal = ZERO
) -> Decimal:
    """The part of an order that closes ``held``. Open orders placed before it on the same side
    close ``already_closing`` of it first: each share of a position can be closed once."""
    if held == 0 or (held > 0) == (side is Side.BUY):
        return ZERO
    return min(quantity, max(ZERO, abs(held) - already_closing))


def opening_quantity(
    held: Decimal, side: Side, quantity: Decimal, already_closing: Decimal = ZERO
) -> Decimal:
    """The part of an order that opens or increases exposure (the rest closes ``held``)."""
    return quantity - closing_quantity(held, side, quantity, already_closing)


def unit_requirement(asset_class: AssetClass, multiplier: Decimal, price: Decimal) -> Decimal:
    """Buying power one unit takes when it opens at ``price``, and frees when it closes."""
    with localcontext(_EXACT):
        if asset_class is AssetClass.FUTURE:
            return price * multiplier * FUTURES_INITIAL_MARGIN
        return price


def order_requirement(
    asset_class: AssetClass,
    multiplier: Decimal,
    held: Decimal,
    side: Side,
    quantity: Decimal,
    reference_price: Decimal,
    already_closing: Decimal = ZERO,
) -> Decimal:
    """Buying power an order needs: what its opening part takes less what its closing part
    frees (see the module docstring). Negative when it frees more than it takes."""
    with localcontext(_EXACT):
        closing = closing_quantity(held, side, quantity, already_closing)
        opening = quantity - closing
        return (opening - closing) * unit_requirement(asset_class, multiplier, reference_price)


@dataclass(frozen=True, slots=True)
class Reservation:
    """An open order as buying power sees it."""

    symbol: str
    asset_class: AssetClass
    multiplier: Decimal
    side: Side
    remaining: Decimal
    reference_price: Decimal
    # A bracket's exit: it closes what other orders leave of the position, since it is cut
    # (or cancelled) whenever they trade it, and never opens one: it reserves nothing.
    exit: bool = False


@dataclass(frozen=True, slots=True)
class Valuation:
    cash: Decimal
    long_market_value: Decimal
    short_market_value: Decimal
    futures_unrealized_pnl: Decimal
    futures_margin: Decimal
    reserved: Decimal
    equity: Decimal
    buying_power: Decimal
    unrealized_pnl: Decimal
    unpriced: tuple[str, ...]  # symbols marked at their average price for want of a quote
    closing: Mapping[str, Decimal]  # by symbol: how much of the position open orders close
    # The same without brackets' exits: what a new order (or a change) cannot close again.
    closing_firm: Mapping[str, Decimal] = field(default_factory=dict)


def bears_on_buying_power(p: PositionState) -> bool:
    """Whether buying power depends on ``p``'s mark. A long stock, ETF or crypto position's
    market value is counted in equity and taken off it again (no leverage), exactly, so its
    mark cancels out; a short's counts twice, a futures position's through P&L and margin."""
    return p.quantity < 0 or not p.moves_cash


def buying_power_positions(
    positions: Iterable[PositionState], reservations: Iterable[Reservation]
) -> list[PositionState]:
    """The positions ``value_account``'s ``buying_power`` and ``closing`` depend on: those that
    bear on buying power, and those open orders trade (what they close depends on the
    quantity held). Valuing only these, with marks only for those that bear on buying power,
    gives the same buying power: placing an order need not quote or value the rest."""
    traded = {r.symbol for r in reservations}
    return [p for p in positions if p.symbol in traded or bears_on_buying_power(p)]


def mark_price(quote: Quote | None) -> Decimal | None:
    if quote is None:
        return None
    if quote.bid > 0 and quote.ask > 0:
        with localcontext(_EXACT):
            return plain(((quote.bid + quote.ask) / 2).quantize(PRICE_Q))
    return quote.last if quote.last > 0 else None


class DayFill(NamedTuple):
    """A fill since the previous close, as day P&L needs it."""

    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    multiplier: Decimal


def day_pnl(
    positions: Iterable[PositionState],
    fills: Iterable[DayFill],
    marks: Mapping[str, Decimal],
    close_marks: Callable[[Sequence[str]], Mapping[str, Decimal] | None],
) -> Decimal | None:
    """Profit and loss since the previous close: what is held now at today's ``marks``, less
    what was held at the close at that moment's marks (``close_marks`` of the symbols held
    then; None when those prices cannot be had), less what today's ``fills`` paid. Whatever
    the accounting (stocks move cash, futures only their P&L), equity changes by exactly this.
    None when a price is missing."""
    value = ZERO
    held: dict[str, tuple[Decimal, Decimal]] = {}  # at the close: quantity, multiplier
    for p in positions:
        if p.quantity:
            mark = marks.get(p.symbol)
            if mark is None:
                return None
            value += p.quantity * mark * p.multiplier
            held[p.symbol] = (p.quantity, p.multiplier)
    for f in fills:
        signed = f.quantity if f.side == "buy" else -f.quantity
        value -= signed * f.price * f.multiplier
        quantity, _ = held.get(f.symbol, (ZERO, f.multiplier))
        held[f.symbol] = (quantity - signed, f.multiplier)
    overnight = sorted(symbol for symbol, (quantity, _) in held.items() if quantity)
    if overnight:
        then = close_marks(overnight)
        if then is None or any(symbol not in then for symbol in overnight):
            return None
        value -= sum((held[s][0] * then[s] * held[s][1] for s in overnight), ZERO)
    return value


def value_account(
    account: AccountState,
    positions: Iterable[PositionState],
    marks: Mapping[str, Decimal],
    reservations: Iterable[Reservation] = (),
) -> Valuation:
    """Equity and buying power at the given marks (see the module docstring).
    ``reservations``: the open orders, oldest first."""
    with localcontext(_EXACT):
        long_mv = short_mv = fut_upnl = fut_margin = upnl = ZERO
        unpriced: list[str] = []
        held: dict[str, Decimal] = {}
        for p in positions:
            if p.quantity == 0:
                continue
            held[p.symbol] = p.quantity
            mark = marks.get(p.symbol)
            if mark is None:
                mark = p.average_price
                unpriced.append(p.symbol)
            pnl = (p.quantity * mark - p.cost_basis) * p.multiplier
            upnl += pnl
            if p.moves_cash:
                value = p.quantity * mark
                if value > 0:
                    long_mv += value
                else:
                    short_mv -= value
            else:
                fut_upnl += pnl
                fut_margin += abs(p.quantity) * mark * p.multiplier * FUTURES_INITIAL_MARGIN
        reserved = ZERO
        closing: dict[str, Decimal] = {}
        firm: dict[str, Decimal] | None = None
        # Oldest first: the first orders to close a position close it; brackets' exits last.
        for r in sorted(reservations, key=lambda r: r.exit):
            if r.exit and firm is None:
                firm = dict(closing)
            position = held.get(r.symbol, ZERO)
            taken = closing.get(r.symbol, ZERO)
            need = order_requirement(
                r.asset_class,
                r.multiplier,
                position,
                r.side,
                r.remaining,
                r.reference_price,
                taken,
            )
            # What a resting order will free is not there until it fills: nothing to lend out.
            # An exit is cut to what other orders leave of the position, so what looks like
            # its opening part here never trades: it holds nothing back.
            if not r.exit:
                reserved += max(need, ZERO)
            closing[r.symbol] = taken + closing_quantity(position, r.side, r.remaining, taken)
        equity = account.cash + long_mv - short_mv + fut_upnl
        buying_power = equity - long_mv - short_mv - fut_margin - reserved
        return Valuation(
            cash=account.cash,
            long_market_value=long_mv,
            short_market_value=short_mv,
            futures_unrealized_pnl=fut_upnl,
            futures_margin=fut_margin,
            reserved=reserved,
            equity=equity,
            buying_power=buying_power,
            unrealized_pnl=upnl,
            unpriced=tuple(sorted(unpriced)),
            closing=closing,
            closing_firm=firm if firm is not None else dict(closing),
        )


# -- matching --------------------------------------------------------------------------------


@dataclass(slots=True)
class OrderState:
    side: Side
    quantity: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    filled_quantity: Decimal = ZERO
    triggered: bool = False
    expires_at: datetime | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    watermark: Decimal | None = None  # a trailing stop's best price so far
    tick: Decimal | None = None  # a future's price step: it fills only at whole ticks
    auction_at: datetime | None = None  # an opg/cls order: when its auction trades
    equity: bool = False  # a stock or ETF: its trailing stop moves in whole cents

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def has_stop(self) -> bool:
        return self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT)

    @property
    def trails(self) -> bool:
        return self.order_type is OrderType.TRAILING_STOP

    @property
    def has_limit(self) -> bool:
        return self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT)

    @property
    def immediate(self) -> bool:
        return self.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)


class Action(StrEnum):
    WAIT = "wait"  # nothing changes
    TRAIL = "trail"  # a trailing stop's best price moved, and its stop with it
    TRIGGER = "trigger"  # the stop triggered; the order keeps working as market/limit
    FILL = "fill"
    CANCEL = "cancel"  # ioc/fok that could not fill at once
    EXPIRE = "expire"  # a day order past the end of its trading day


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    price: Decimal | None = None
    quantity: Decimal | None = None
    triggered_now: bool = False
    reason: str | None = None
    watermark: Decimal | None = None  # a trailing stop's, as of this quote
    stop_price: Decimal | None = None


def executable_price(
    quote: Quote, side: Side, price_type: PriceType, tick: Decimal | None = None
) -> Decimal | None:
    """The price an order on ``side`` executes at, or None when the quote lacks it. ``tick``:
    the instrument's price step (futures), to which a midpoint is rounded."""
    match price_type:
        case PriceType.MID:
            if quote.bid <= 0 or quote.ask <= 0:
                return None
            with localcontext(_EXACT):
                price = plain(((quote.bid + quote.ask) / 2).quantize(PRICE_Q))
                if tick:
                    # A future trades only at whole ticks: the mid of a one-tick spread is
                    # not a price it can fill at. Rounded against the trader (a buy up,
                    # towards the ask), as the market would fill it.
                    way = ROUND_CEILING if side is Side.BUY else ROUND_FLOOR
                    price = plain((price / tick).to_integral_value(way) * tick)
        case PriceType.BID_ASK:
            price = quote.ask if side is Side.BUY else quote.bid
        case PriceType.ASK:
            price = quote.ask
        case PriceType.BID:
            price = quote.bid
        case PriceType.LAST:
            price = quote.last
    return price if price > 0 else None


def trigger_price(quote: Quote, side: Side, price_type: PriceType) -> Decimal | None:
    if price_type is PriceType.LAST:
        price = quote.last
    else:
        price = quote.ask if side is Side.BUY else quote.bid
    return price if price > 0 else None


def stop_reached(order: OrderState, quote: Quote, price_type: PriceType) -> bool:
    assert order.stop_price is not None
    price = trigger_price(quote, order.side, price_type)
    if price is None:
        return False
    return price >= order.stop_price if order.side is Side.BUY else price <= order.stop_price


def trailing_stop(
    side: Side,
    watermark: Decimal,
    amount: Decimal | None,
    percent: Decimal | None,
    *,
    tick: Decimal | None = None,
    equity: bool = False,
) -> Decimal:
    """A trailing stop's stop price: ``amount`` or ``percent`` below the highest price seen
    for a sell, above the lowest for a buy. It lands on a price the market quotes (a future's
    ``tick``; a stock's cent, or 0.0001 under $1), rounded away from the market so it never
    trails closer than asked."""
    with localcontext(_EXACT):
        if amount is not None:
            offset = amount
        else:
            assert percent is not None
            offset = watermark * percent / 100
        sell = side is Side.SELL
        stop = max(watermark - offset if sell else watermark + offset, ZERO)
        step = tick or (equity_tick(stop) if equity else PRICE_Q)
        way = ROUND_FLOOR if sell else ROUND_CEILING
        return plain((stop / step).to_integral_value(way) * step)


def marketable(order: OrderState, price: Decimal) -> bool:
    if not order.has_limit:
        return True
    assert order.limit_price is not None
    return price <= order.limit_price if order.side is Side.BUY else price >= order.limit_price


def _auction(
    order: OrderState, quote: Quote | None, price_type: PriceType, now: datetime
) -> Decision:
    """An opg/cls order: it waits for its auction, then trades at the auction's price (the
    market's then) or never; the exchange's hours do not hold it back (the close is one)."""
    if now < (order.auction_at or now):
        return Decision(Action.WAIT, reason="it waits for its auction")
    price = executable_price(quote, order.side, price_type, order.tick) if quote else None
    if price is None:
        return Decision(Action.CANCEL, reason="no price was quoted at the auction")
    if not marketable(order, price):
        return Decision(
            Action.CANCEL, reason=f"the auction's price (${price:,.2f}) did not reach its limit"
        )
    return Decision(Action.FILL, price=price, quantity=order.remaining)


def decide(
    order: OrderState,
    quote: Quote | None,
    price_type: PriceType,
    *,
    now: datetime,
    market_open: bool,
) -> Decision:
    """What happens to a working order at this quote and moment."""
    if order.expires_at is not None and now >= order.expires_at:
        over = "its auction is over" if order.auction_at is not None else "the trading day ended"
        return Decision(Action.EXPIRE, reason=over)
    if order.auction_at is not None:
        return _auction(order, quote, price_type, now)

    def stay(reason: str, triggered_now: bool = False) -> Decision:
        if order.immediate:
            return Decision(Action.CANCEL, reason=reason)
        if triggered_now:
            return Decision(Action.TRIGGER, triggered_now=True)
        return Decision(Action.WAIT, reason=reason)

    if not market_open:
        return stay("the market is closed")
    if quote is None:
        return stay("no quote was available")
    triggered_now = False
    moved: dict[str, Decimal] = {}
    if order.trails and not order.triggered:
        seen = trigger_price(quote, order.side, price_type)
        if seen is None:
            return stay(f"the quote had no {price_type} price")
        mark = order.watermark if order.watermark is not None else seen
        mark = max(mark, seen) if order.side is Side.SELL else min(mark, seen)
        stop = trailing_stop(
            order.side,
            mark,
            order.trail_amount,
            order.trail_percent,
            tick=order.tick,
            equity=order.equity,
        )
        if mark != order.watermark:
            moved = {"watermark": mark, "stop_price": stop}
        if (seen > stop) if order.side is Side.SELL else (seen < stop):
            if moved:
                return Decision(Action.TRAIL, **moved)
            return stay("the trailing stop was not reached")
        triggered_now = True
    elif order.has_stop and not order.triggered:
        if not stop_reached(order, quote, price_type):
            return stay("the stop price was not reached")
        triggered_now = True
    price = executable_price(quote, order.side, price_type, order.tick)
    if price is None:
        return stay(f"the quote had no {price_type} price", triggered_now)
    if not marketable(order, price):
        return stay(f"the limit price was not reached ({price_type} price {price})", triggered_now)
    return Decision(
        Action.FILL, price=price, quantity=order.remaining, triggered_now=triggered_now, **moved
    )
