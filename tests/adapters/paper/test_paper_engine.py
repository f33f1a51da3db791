"""The pure accounting and matching rules, with property tests for the money invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.models import AssetClass, OrderType, Quote, Side, TimeInForce
from adapters.paper import engine
from adapters.paper.engine import (
    AccountState,
    Action,
    OrderState,
    PositionState,
    PriceType,
    Reservation,
    apply_fill,
    conservation_residual,
    decide,
    executable_price,
    value_account,
)

D = Decimal
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
START = D(100000)


def quote(bid: str, ask: str, last: str | None = None) -> Quote:
    return Quote("X", D(bid), D(ask), D(last if last is not None else bid), NOW)


def order(
    side: Side,
    order_type: OrderType = OrderType.MARKET,
    tif: TimeInForce = TimeInForce.GTC,
    limit: str | None = None,
    stop: str | None = None,
    qty: str = "10",
) -> OrderState:
    return OrderState(
        side, D(qty), order_type, tif, D(limit) if limit else None, D(stop) if stop else None
    )


def equity(symbol: str = "AAPL") -> PositionState:
    return PositionState(symbol, AssetClass.EQUITY)


# -- accounting -----------------------------------------------------------------------------


def test_buy_then_partial_sell_realizes_on_the_closed_share() -> None:
    acct, pos = AccountState(START, START), equity()
    apply_fill(acct, pos, Side.BUY, D(10), D(100))
    apply_fill(acct, pos, Side.BUY, D(10), D(110))
    assert pos.average_price == D(105)
    ex = apply_fill(acct, pos, Side.SELL, D(5), D(120))
    assert ex.realized_pnl == D(75)  # 5 × (120 − 105)
    assert (pos.quantity, pos.average_price, acct.cash) == (D(15), D(105), START - 2100 + 600)
    assert acct.realized_pnl == D(75)
    assert conservation_residual(acct, [pos]) == 0


def test_short_proceeds_are_cash_and_cover_realizes() -> None:
    acct, pos = AccountState(START, START), equity()
    apply_fill(acct, pos, Side.SELL, D(10), D(50))
    assert (pos.quantity, pos.average_price, acct.cash) == (D(-10), D(50), START + 500)
    ex = apply_fill(acct, pos, Side.BUY, D(10), D(45))
    assert ex.realized_pnl == D(50)
    assert (pos.quantity, pos.cost_basis, acct.cash) == (0, 0, START + 50)


def test_flip_resets_average_price() -> None:
    acct, pos = AccountState(START, START), equity()
    apply_fill(acct, pos, Side.BUY, D(10), D(100))
    ex = apply_fill(acct, pos, Side.SELL, D(25), D(90))
    assert ex.realized_pnl == D(-100)
    assert (pos.quantity, pos.average_price) == (D(-15), D(90))
    ex = apply_fill(acct, pos, Side.BUY, D(20), D(80))
    assert ex.realized_pnl == D(150)  # covers 15 shorted at 90
    assert (pos.quantity, pos.average_price) == (D(5), D(80))
    assert conservation_residual(acct, [pos]) == 0


def test_futures_move_no_cash_on_open_and_pnl_uses_the_multiplier() -> None:
    acct = AccountState(START, START)
    pos = PositionState("ESZ6", AssetClass.FUTURE, D(50))
    apply_fill(acct, pos, Side.BUY, D(2), D(5900))
    assert acct.cash == START
    ex = apply_fill(acct, pos, Side.SELL, D(3), D("5912.25"))
    assert ex.realized_pnl == D("1225")  # 12.25 × 50 × 2
    assert acct.cash == START + D("1225")
    assert (pos.quantity, pos.average_price) == (D(-1), D("5912.25"))
    assert conservation_residual(acct, [pos]) == 0


def test_crypto_fractions_are_exact() -> None:
    acct, pos = AccountState(START, START), PositionState("BTCUSD", AssetClass.CRYPTO)
    apply_fill(acct, pos, Side.BUY, D("0.12345678"), D("95123.45"))
    assert acct.cash == START - D("0.12345678") * D("95123.45")
    apply_fill(acct, pos, Side.SELL, D("0.00000001"), D("95200.01"))
    assert pos.quantity == D("0.12345677")
    assert conservation_residual(acct, [pos]) == 0


def test_buying_power_cash_short_and_futures_margin() -> None:
    acct = AccountState(START, START)
    long_, short = equity("AAPL"), equity("TSLA")
    fut = PositionState("/ES", AssetClass.FUTURE, D(50))
    apply_fill(acct, long_, Side.BUY, D(100), D(200))  # 20,000 long
    apply_fill(acct, short, Side.SELL, D(10), D(400))  # 4,000 short
    apply_fill(acct, fut, Side.BUY, D(1), D(6000))  # 300,000 notional → 30,000 margin
    marks = {"AAPL": D(210), "TSLA": D(390), "/ES": D(6010)}
    v = value_account(acct, [long_, short, fut], marks)
    assert v.long_market_value == D(21000) and v.short_market_value == D(3900)
    assert v.futures_unrealized_pnl == D(500)
    assert v.equity == acct.cash + 21000 - 3900 + 500
    assert v.futures_margin == D("30050")
    assert v.buying_power == v.equity - 21000 - 3900 - D("30050")
    assert v.unrealized_pnl == D(1000) + D(100) + D(500)


def test_open_orders_reserve_what_they_open_less_what_they_close() -> None:
    acct, pos = AccountState(START, START), equity()
    apply_fill(acct, pos, Side.BUY, D(10), D(100))

    def sell(qty: int) -> Reservation:
        return Reservation("AAPL", AssetClass.EQUITY, D(1), Side.SELL, D(qty), D(100))

    v = value_account(acct, [pos], {"AAPL": D(100)}, [sell(25)])
    assert v.reserved == D(500)  # 10 close the long (+1,000), 15 open a short (−1,500)
    assert v.buying_power == START - 1000 - 500
    # Freeing more than it takes, it reserves nothing (and lends nothing before it fills).
    assert value_account(acct, [pos], {"AAPL": D(100)}, [sell(15)]).reserved == 0
    assert engine.order_requirement(AssetClass.EQUITY, D(1), D(10), Side.SELL, D(15), D(100)) == (
        D(-500)
    )


def test_orders_closing_one_position_close_it_once_oldest_first() -> None:
    acct, pos = AccountState(START, START), equity()
    apply_fill(acct, pos, Side.BUY, D(400), D(100))

    def sell(qty: int, filled: int = 0) -> Reservation:
        return Reservation("AAPL", AssetClass.EQUITY, D(1), Side.SELL, D(qty - filled), D(110))

    marks = {"AAPL": D(100)}
    v = value_account(acct, [pos], marks, [sell(300), sell(300)])
    assert v.closing == {"AAPL": D(400)}
    # The second closes the last 100 and opens 200: (200 − 100) × 110.
    assert v.reserved == D(11000)
    # The first fills 100: 300 held, its 200 left close 200, the second closes 100 again.
    apply_fill(acct, pos, Side.SELL, D(100), D(110))
    v = value_account(acct, [pos], marks, [sell(300, filled=100), sell(300)])
    assert v.closing == {"AAPL": D(300)} and v.reserved == D(11000)
    # The first is cancelled: the second closes 300 of the 300 held and reserves nothing.
    v = value_account(acct, [pos], marks, [sell(300)])
    assert v.closing == {"AAPL": D(300)} and v.reserved == 0
    # A buy adds to the long: it closes nothing and leaves the sells' share alone.
    buy = Reservation("AAPL", AssetClass.EQUITY, D(1), Side.BUY, D(10), D(100))
    v = value_account(acct, [pos], marks, [buy, sell(300), sell(300)])
    assert v.closing == {"AAPL": D(300)} and v.reserved == 1000 + 300 * D(110)


def test_unpriced_positions_are_marked_at_average() -> None:
    acct, pos = AccountState(START, START), equity()
    apply_fill(acct, pos, Side.BUY, D(10), D(100))
    v = value_account(acct, [pos], {})
    assert v.unpriced == ("AAPL",) and v.equity == START


# -- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price_type", "buy", "sell"),
    [
        (PriceType.MID, "100.05", "100.05"),
        (PriceType.BID_ASK, "100.10", "100.00"),
        (PriceType.ASK, "100.10", "100.10"),
        (PriceType.BID, "100.00", "100.00"),
        (PriceType.LAST, "100.07", "100.07"),
    ],
)
def test_market_price_types(price_type: PriceType, buy: str, sell: str) -> None:
    q = quote("100.00", "100.10", "100.07")
    assert executable_price(q, Side.BUY, price_type) == D(buy)
    assert executable_price(q, Side.SELL, price_type) == D(sell)
    d = decide(order(Side.BUY), q, price_type, now=NOW, market_open=True)
    assert (d.action, d.price, d.quantity) == (Action.FILL, D(buy), D(10))


@pytest.mark.parametrize(
    ("bid", "ask", "buy", "sell"),
    [
        ("5919.00", "5919.25", "5919.25", "5919.00"),  # one tick wide: the mid is no price
        ("5919.00", "5919.50", "5919.25", "5919.25"),  # two: the mid is a tick
    ],
)
def test_a_futures_midpoint_fill_is_rounded_to_a_tick_against_the_trader(
    bid: str, ask: str, buy: str, sell: str
) -> None:
    q = quote(bid, ask, ask)
    tick = D("0.25")
    assert executable_price(q, Side.BUY, PriceType.MID, tick) == D(buy)
    assert executable_price(q, Side.SELL, PriceType.MID, tick) == D(sell)
    assert executable_price(q, Side.BUY, PriceType.MID) == (D(bid) + D(ask)) / 2  # no tick
    sell_at_bid = order(Side.SELL, OrderType.LIMIT, limit=bid)
    sell_at_bid.tick = tick
    d = decide(sell_at_bid, q, PriceType.MID, now=NOW, market_open=True)
    assert (d.action, d.price) == (Action.FILL, D(sell))


def test_limit_waits_until_marketable_and_fills_at_the_better_price() -> None:
    buy = order(Side.BUY, OrderType.LIMIT, limit="99.50")
    assert (
        decide(buy, quote("99.60", "99.70"), PriceType.MID, now=NOW, market_open=True).action
        is Action.WAIT
    )
    d = decide(buy, quote("99.30", "99.40"), PriceType.MID, now=NOW, market_open=True)
    assert (d.action, d.price) == (Action.FILL, D("99.35"))


def test_stops_trigger_on_the_side_or_last() -> None:
    buy_stop = order(Side.BUY, OrderType.STOP, stop="105")
    below = quote("104.80", "104.90", "105.20")
    assert decide(buy_stop, below, PriceType.MID, now=NOW, market_open=True).action is Action.WAIT
    # With the last price type the trade at 105.20 triggers it.
    d = decide(buy_stop, below, PriceType.LAST, now=NOW, market_open=True)
    assert (d.action, d.price, d.triggered_now) == (Action.FILL, D("105.20"), True)
    sell_stop = order(Side.SELL, OrderType.STOP_LIMIT, stop="95", limit="94.50")
    gap = quote("94.00", "94.20")
    d = decide(sell_stop, gap, PriceType.MID, now=NOW, market_open=True)
    assert (d.action, d.triggered_now) == (Action.TRIGGER, True)
    sell_stop.triggered = True
    d = decide(sell_stop, quote("94.60", "94.80"), PriceType.MID, now=NOW, market_open=True)
    assert (d.action, d.price) == (Action.FILL, D("94.70"))


def test_ioc_and_fok_cancel_instead_of_waiting() -> None:
    for tif in (TimeInForce.IOC, TimeInForce.FOK):
        o = order(Side.BUY, OrderType.LIMIT, tif, limit="99")
        d = decide(o, quote("100", "100.10"), PriceType.MID, now=NOW, market_open=True)
        assert d.action is Action.CANCEL and "limit price was not reached" in (d.reason or "")
        d = decide(o, quote("98", "98.10"), PriceType.MID, now=NOW, market_open=True)
        assert (d.action, d.quantity) == (Action.FILL, o.quantity)  # all of it: fok holds


def test_day_orders_expire_and_closed_markets_wait() -> None:
    o = order(Side.BUY, tif=TimeInForce.DAY)
    o.expires_at = NOW + timedelta(hours=1)
    q = quote("100", "100.10")
    assert decide(o, q, PriceType.MID, now=NOW, market_open=False).action is Action.WAIT
    assert decide(o, q, PriceType.MID, now=o.expires_at, market_open=True).action is Action.EXPIRE


def test_empty_quote_sides_do_not_fill() -> None:
    q = quote("0", "100.10", "0")
    assert (
        decide(order(Side.SELL), q, PriceType.BID_ASK, now=NOW, market_open=True).action
        is Action.WAIT
    )
    assert executable_price(q, Side.BUY, PriceType.MID) is None


# -- properties -----------------------------------------------------------------------------

INSTRUMENTS = [
    ("AAPL", AssetClass.EQUITY, D(1), 0),
    ("SPY", AssetClass.EQUITY, D(1), 0),
    ("BTCUSD", AssetClass.CRYPTO, D(1), 8),
    ("ESZ6", AssetClass.FUTURE, D(50), 0),
    ("MYMH7", AssetClass.FUTURE, D("0.5"), 0),
]


@st.composite
def fills(draw: st.DrawFn) -> tuple[int, Side, Decimal, Decimal]:
    index = draw(st.integers(0, len(INSTRUMENTS) - 1))
    places = INSTRUMENTS[index][3]
    qty = D(draw(st.integers(1, 5 * 10**places))).scaleb(-places)
    price = D(draw(st.integers(1, 10**12))).scaleb(-draw(st.integers(0, 8)))
    return index, draw(st.sampled_from(Side)), qty, price


@settings(max_examples=300, deadline=None)
@given(st.lists(fills(), min_size=1, max_size=40), st.integers(1, 10**9))
def test_no_sequence_of_fills_creates_or_destroys_money(
    sequence: list[tuple[int, Side, Decimal, Decimal]], start: int
) -> None:
    """Invariant, exactly and after every fill:
    cash + Σ cost basis of stock/ETF/crypto positions − realized P&L == starting cash,
    and for futures: the cash they moved == their realized P&L (nothing on open)."""
    with localcontext(Context(prec=60)):  # the test's own sums must not round either
        _check_conservation(sequence, D(start))


def _check_conservation(sequence: list[tuple[int, Side, Decimal, Decimal]], start: Decimal) -> None:
    acct = AccountState(start, start)
    positions = {sym: PositionState(sym, ac, mult) for sym, ac, mult, _ in INSTRUMENTS}
    futures_cash = futures_realized = D(0)
    for index, side, qty, price in sequence:
        pos = positions[INSTRUMENTS[index][0]]
        cash_before = acct.cash
        ex = apply_fill(acct, pos, side, qty, price)
        assert acct.cash - cash_before == ex.cash_change
        if pos.asset_class is AssetClass.FUTURE:
            futures_cash += ex.cash_change
            futures_realized += ex.realized_pnl
        assert conservation_residual(acct, positions.values()) == 0
        assert futures_cash == futures_realized
        assert (pos.quantity == 0) == (pos.cost_basis == 0)
        if pos.quantity:
            assert pos.average_price > 0
    assert acct.realized_pnl == sum((p.realized_pnl for p in positions.values()), D(0))


@st.composite
def quote_paths(draw: st.DrawFn) -> list[Quote]:
    price = D(draw(st.integers(5000, 15000))).scaleb(-2)
    path = []
    for _ in range(draw(st.integers(1, 30))):
        price = max(D("0.01"), price + D(draw(st.integers(-300, 300))).scaleb(-2))
        spread = D(draw(st.integers(0, 50))).scaleb(-2)
        last = price + D(draw(st.integers(0, int(spread * 100)))).scaleb(-2)
        path.append(Quote("X", price, price + spread, last, NOW))
    return path


@settings(max_examples=300, deadline=None)
@given(
    quote_paths(),
    st.sampled_from(Side),
    st.sampled_from([OrderType.LIMIT, OrderType.STOP_LIMIT]),
    st.sampled_from(PriceType),
    st.integers(4000, 16000),
    st.integers(4000, 16000),
)
def test_limit_orders_never_fill_through_their_price(
    path: list[Quote],
    side: Side,
    order_type: OrderType,
    price_type: PriceType,
    limit_cents: int,
    stop_cents: int,
) -> None:
    limit = D(limit_cents).scaleb(-2)
    stop = D(stop_cents).scaleb(-2) if order_type is OrderType.STOP_LIMIT else None
    o = OrderState(side, D(1), order_type, TimeInForce.GTC, limit, stop)
    for q in path:
        d = decide(o, q, price_type, now=NOW, market_open=True)
        price = executable_price(q, side, price_type)
        working_as_limit = order_type is OrderType.LIMIT or o.triggered or d.triggered_now
        if working_as_limit:
            # A working limit fills exactly when marketable, never later, never through.
            better = price is not None and (price <= limit if side is Side.BUY else price >= limit)
            assert (d.action is Action.FILL) == better
        else:
            assert d.action is Action.WAIT
        if d.action is Action.FILL:
            assert d.price is not None and d.price == price
            assert d.price <= limit if side is Side.BUY else d.price >= limit
            break
        o.triggered = o.triggered or d.triggered_now


@st.composite
def resting_orders(draw: st.DrawFn) -> tuple[int, int, int, list[tuple[Side, int]], list[int]]:
    index = draw(st.sampled_from([0, 3]))  # a stock and a future
    held = draw(st.integers(-20, 20))
    spare = draw(st.integers(0, 40))  # buying power beyond the position, in units of one
    orders = draw(st.lists(st.tuples(st.sampled_from(Side), st.integers(1, 40)), max_size=8))
    fill_order = draw(st.permutations(range(8)))
    return index, held, spare, orders, fill_order


@settings(max_examples=300, deadline=None)
@given(resting_orders())
def test_accepted_orders_never_open_exposure_nobody_paid_for(
    case: tuple[int, int, int, list[tuple[Side, int]], list[int]],
) -> None:
    """Orders are placed one by one, each checked against buying power after the ones before it
    (as ``store._place`` does); then all that were accepted fill, in any order, at the price
    they were checked at. Whatever the order, buying power never goes below zero, and each
    order reserves exactly what its check charged it."""
    index, held, spare, orders, fill_order = case
    symbol, asset_class, multiplier, _ = INSTRUMENTS[index]
    price = D(100)
    unit = price * multiplier * (engine.FUTURES_INITIAL_MARGIN if multiplier != 1 else 1)
    start = (abs(held) + spare) * unit
    acct, pos = AccountState(start, start), PositionState(symbol, asset_class, multiplier)
    if held:
        apply_fill(acct, pos, Side.BUY if held > 0 else Side.SELL, D(abs(held)), price)
    marks = {symbol: price}
    working: list[Reservation] = []
    for side, qty in orders:
        before = value_account(acct, [pos], marks, working)
        assert before.buying_power >= 0
        taken = before.closing.get(symbol, D(0))
        need = engine.order_requirement(
            asset_class, multiplier, pos.quantity, side, D(qty), price, taken
        )
        if need > 0 and need > before.buying_power:
            continue
        working.append(Reservation(symbol, asset_class, multiplier, side, D(qty), price))
        after = value_account(acct, [pos], marks, working)
        assert after.buying_power == before.buying_power - max(need, D(0))
    for i in [i for i in fill_order if i < len(working)]:
        r = working[i]
        apply_fill(acct, pos, r.side, r.remaining, price)
        working[i] = Reservation(symbol, asset_class, multiplier, r.side, D(0), price)
        assert value_account(acct, [pos], marks, working).buying_power >= 0


def test_precision_survives_huge_values() -> None:
    acct, pos = AccountState(D(10) ** 15, D(10) ** 15), PositionState("BTCUSD", AssetClass.CRYPTO)
    apply_fill(acct, pos, Side.BUY, D("12345678.12345678"), D("98765.43210987"))
    apply_fill(acct, pos, Side.SELL, D("3.00000001"), D("98765.43210999"))
    assert conservation_residual(acct, [pos]) == 0
    assert engine.opening_quantity(D(-3), Side.BUY, D(5)) == D(2)


BOOK = [
    *INSTRUMENTS,
    ("MSFT", AssetClass.EQUITY, D(1), 0),
    ("ETHUSD", AssetClass.CRYPTO, D(1), 8),
    ("CLF7", AssetClass.FUTURE, D(1000), 0),
]


@st.composite
def books(
    draw: st.DrawFn,
) -> tuple[AccountState, list[PositionState], dict[str, Decimal], list[Reservation]]:
    """An account with long and short stock, crypto and futures positions (some unpriced),
    and open orders on held symbols and others."""
    cash = D(draw(st.integers(-(10**9), 10**9))).scaleb(-2)

    def price() -> Decimal:
        return D(draw(st.integers(1, 10**9))).scaleb(-draw(st.integers(0, 8)))

    positions, marks = [], {}
    for symbol, asset_class, multiplier, places in BOOK:
        if not draw(st.booleans()):
            continue
        quantity = D(draw(st.integers(-(10**6), 10**6))).scaleb(-places)
        positions.append(
            PositionState(symbol, asset_class, multiplier, quantity, quantity * price())
        )
        if draw(st.booleans()):
            marks[symbol] = price()
    orders = []
    for index, side, remaining in draw(
        st.lists(
            st.tuples(st.integers(0, len(BOOK) - 1), st.sampled_from(Side), st.integers(0, 10**6)),
            max_size=8,
        )
    ):
        symbol, asset_class, multiplier, places = BOOK[index]
        quantity = D(remaining).scaleb(-places)
        orders.append(Reservation(symbol, asset_class, multiplier, side, quantity, price()))
    start = D(draw(st.integers(0, 10**9)))
    return AccountState(start, cash), positions, marks, orders


@pytest.mark.first
@settings(max_examples=500, deadline=None)
@given(books())
def test_buying_power_needs_only_the_positions_that_bear_on_it(
    book: tuple[AccountState, list[PositionState], dict[str, Decimal], list[Reservation]],
) -> None:
    """Long stock and crypto positions that no open order trades can go unread, and every long
    stock or crypto position unpriced: buying power and what open orders close stay exactly
    the same (what placing an order relies on to skip them)."""
    account, positions, marks, orders = book
    full = value_account(account, positions, marks, orders)
    needed = engine.buying_power_positions(positions, orders)
    bearing = {p.symbol for p in needed if engine.bears_on_buying_power(p)}
    part = value_account(account, needed, {s: m for s, m in marks.items() if s in bearing}, orders)
    assert part.buying_power == full.buying_power
    assert part.closing == full.closing
    # And it leaves out what it can: long stock and crypto no open order trades, unread;
    # long stock and crypto, unpriced.
    traded = {r.symbol for r in orders}
    for p in positions:
        long_cash = p.moves_cash and p.quantity >= 0
        assert (p in needed) == (not long_cash or p.symbol in traded)
        assert (p.symbol in bearing) == (not long_cash)
