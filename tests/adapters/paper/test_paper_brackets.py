"""Take-profit/stop-loss brackets at Tradecord Paper: the exits come with the entry's fill,
one cancels the other, and buying power counts them once."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import InsufficientBuyingPower, InvalidOrder
from adapters.models import (
    AccountRef,
    Bracket,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from adapters.paper import PaperBroker, SimulatedFeed
from bot.db import Database

from .conftest import new_paper_connection, stored_residual

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
BUY, SELL = Side.BUY, Side.SELL
_MEMBERS = itertools.count()


def bracket_req(
    side: Side,
    qty: int,
    *,
    tp: str | None = None,
    sl: str | None = None,
    sl_limit: str | None = None,
    order_type: OrderType = OrderType.MARKET,
    limit: str | None = None,
    tif: TimeInForce = TimeInForce.GTC,
) -> OrderRequest:
    return OrderRequest(
        "AAPL",
        side,
        D(qty),
        order_type,
        tif,
        limit_price=D(limit) if limit else None,
        bracket=Bracket(
            D(tp) if tp else None, D(sl) if sl else None, D(sl_limit) if sl_limit else None
        ),
    )


def exits_of(orders: list[Order], entry: Order) -> dict[OrderType, Order]:
    return {o.order_type: o for o in orders if o.info["parent_id"] == entry.id}


async def test_a_filled_entry_places_its_exits_and_buying_power_counts_them_once(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    entry = await broker.create_order(ref, bracket_req(BUY, 10, tp="220", sl="190"))
    assert entry.status is OrderStatus.FILLED
    assert (entry.info["take_profit"], entry.info["stop_loss"]) == ("220", "190")
    open_orders = await broker.fetch_open_orders(ref)
    exits = exits_of(open_orders, entry)
    assert len(open_orders) == 2 and set(exits) == {OrderType.LIMIT, OrderType.STOP}
    tp, sl = exits[OrderType.LIMIT], exits[OrderType.STOP]
    assert (tp.side, tp.quantity, tp.limit_price, tp.time_in_force) == (
        SELL,
        D(10),
        D(220),
        TimeInForce.GTC,
    )
    assert (sl.side, sl.quantity, sl.stop_price) == (SELL, D(10), D(190))
    # Both exits close the same 10 shares, one or the other: nothing is held for a short.
    assert (await broker.fetch_balance(ref)).buying_power == D(100000) - D(2000)


async def test_the_take_profit_fills_and_cancels_the_stop_loss(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    entry = await broker.create_order(ref, bracket_req(BUY, 10, tp="220", sl="190"))
    feed.set_quote("AAPL", D("221.00"), D("221.00"))
    [update] = await broker.sweep()
    assert update.order.order_type is OrderType.LIMIT and update.fill_price == D(221)
    assert await broker.fetch_open_orders(ref) == []
    assert await broker.fetch_positions(ref) == []
    history = await broker.fetch_orders(ref)
    sl = exits_of(history, entry)[OrderType.STOP]
    assert sl.status is OrderStatus.CANCELLED
    assert sl.reject_reason is not None and "take-profit of the same bracket filled" in (
        sl.reject_reason
    )
    # The price falling through the old stop afterwards opens nothing.
    feed.set_quote("AAPL", D("150.00"), D("150.00"))
    assert await broker.sweep() == []
    assert await broker.fetch_positions(ref) == []
    assert await stored_residual(db, ref.id) == 0


async def test_a_short_entry_stops_out_above_and_cancels_its_take_profit(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    entry = await broker.create_order(ref, bracket_req(SELL, 5, tp="180", sl="210", sl_limit="212"))
    feed.set_quote("AAPL", D("211.00"), D("211.00"))  # through the stop, under its limit
    [update] = await broker.sweep()
    assert update.order.order_type is OrderType.STOP_LIMIT and update.order.side is BUY
    assert update.fill_price == D(211)
    history = exits_of(await broker.fetch_orders(ref), entry)
    assert history[OrderType.LIMIT].status is OrderStatus.CANCELLED
    assert await broker.fetch_positions(ref) == []
    account = await broker.fetch_balance(ref)
    assert account.realized_pnl == D(5) * (D(200) - D(211))
    assert await stored_residual(db, ref.id) == 0


async def test_a_resting_entry_has_no_exits_until_it_fills(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    entry = await broker.create_order(
        ref, bracket_req(BUY, 10, tp="215", order_type=OrderType.LIMIT, limit="195")
    )
    assert [o.id for o in await broker.fetch_open_orders(ref)] == [entry.id]
    feed.set_quote("AAPL", D("194.00"), D("194.00"))
    [filled] = await broker.sweep()
    assert filled.order.id == entry.id and filled.order.status is OrderStatus.FILLED
    [tp] = await broker.fetch_open_orders(ref)
    assert (tp.info["parent_id"], tp.order_type, tp.limit_price) == (
        entry.id,
        OrderType.LIMIT,
        D(215),
    )


async def test_cancelling_an_unfilled_entry_leaves_no_exits(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    entry = await broker.create_order(
        ref, bracket_req(BUY, 10, sl="180", order_type=OrderType.LIMIT, limit="190")
    )
    await broker.cancel_order(ref, entry.id)
    feed.set_quote("AAPL", D("170.00"), D("170.00"))
    assert await broker.sweep() == []
    assert await broker.fetch_open_orders(ref) == []
    assert await broker.fetch_positions(ref) == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (bracket_req(BUY, 1, tp="190"), "take-profit must be above that price"),
        (bracket_req(SELL, 1, sl="190"), "stop-loss above it; stop-loss 190 is not"),
        (
            bracket_req(BUY, 1, tp="210", sl="205", order_type=OrderType.LIMIT, limit="204"),
            "stop-loss 205 is not",
        ),
        (bracket_req(BUY, 1, tp="205", sl="210"), "above the stop-loss"),
        (bracket_req(BUY, 1, sl_limit="180"), "needs a stop-loss (stop) price too"),
        (bracket_req(BUY, 1), "needs a take-profit price, a stop-loss price, or both"),
        (bracket_req(BUY, 1, tp="210", tif=TimeInForce.IOC), "time in force day or gtc"),
        (bracket_req(BUY, 1, tp="210.000000001"), "at most 8 decimals"),
    ],
)
async def test_a_bracket_that_cannot_work_is_refused_with_what_to_fix(
    db: Database,
    broker: PaperBroker,
    ref: AccountRef,
    feed: SimulatedFeed,
    request_: OrderRequest,
    message: str,
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    with pytest.raises(InvalidOrder) as e:
        await broker.create_order(ref, request_)
    assert message in str(e.value)
    assert await broker.fetch_orders(ref) == []


def plain_req(side: Side, qty: int, limit: str | None = None) -> OrderRequest:
    order_type = OrderType.LIMIT if limit else OrderType.MARKET
    return OrderRequest(
        "AAPL", side, D(qty), order_type, TimeInForce.GTC, limit_price=D(limit) if limit else None
    )


async def test_closing_the_position_by_hand_cancels_its_exits(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """Else the take-profit would later sell shares no longer held: a short nobody asked for."""
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    await broker.create_order(ref, bracket_req(BUY, 10, tp="220", sl="190"))
    closing = await broker.create_order(ref, plain_req(SELL, 10))
    assert closing.status is OrderStatus.FILLED
    assert await broker.fetch_open_orders(ref) == []
    cancelled = [o for o in await broker.fetch_orders(ref) if o.info["parent_id"]]
    assert {o.status for o in cancelled} == {OrderStatus.CANCELLED} and len(cancelled) == 2
    assert f"order {closing.id} closed the AAPL position" in (cancelled[0].reject_reason or "")
    feed.set_quote("AAPL", D("230.00"), D("230.00"))
    assert await broker.sweep() == []
    assert await broker.fetch_positions(ref) == []
    assert await stored_residual(db, ref.id) == 0


async def test_a_resting_sell_of_part_of_the_position_cuts_its_exits_to_what_is_left(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    await broker.create_order(ref, bracket_req(BUY, 10, tp="220", sl="190"))
    await broker.create_order(ref, plain_req(SELL, 4, limit="205"))
    feed.set_quote("AAPL", D("206.00"), D("206.00"))
    [sold] = await broker.sweep()
    assert sold.order.quantity == 4 and sold.order.status is OrderStatus.FILLED
    assert sorted(o.quantity for o in await broker.fetch_open_orders(ref)) == [D(6), D(6)]
    feed.set_quote("AAPL", D("221.00"), D("221.00"))
    [take_profit] = await broker.sweep()
    assert take_profit.fill_quantity == 6
    assert await broker.fetch_positions(ref) == []
    assert await broker.fetch_open_orders(ref) == []


async def test_the_oldest_bracket_keeps_its_exits_when_the_position_shrinks(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    first = await broker.create_order(ref, bracket_req(BUY, 10, tp="220"))
    second = await broker.create_order(ref, bracket_req(BUY, 5, tp="230"))
    await broker.create_order(ref, plain_req(SELL, 10))
    [kept] = await broker.fetch_open_orders(ref)
    assert (kept.info["parent_id"], kept.quantity) == (first.id, D(5))
    [gone] = [o for o in await broker.fetch_orders(ref) if o.info["parent_id"] == second.id]
    assert gone.status is OrderStatus.CANCELLED


async def test_a_bracket_on_an_order_that_closes_is_refused(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """Its exits would sit on the side of the position it closes: a buy take-profit below a
    long's price would buy more."""
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    await broker.create_order(ref, plain_req(BUY, 10))
    with pytest.raises(InvalidOrder) as e:
        await broker.create_order(ref, bracket_req(SELL, 5, tp="180", sl="210"))
    assert "closes (part of) your 10 AAPL" in str(e.value)
    assert [p.quantity for p in await broker.fetch_positions(ref)] == [D(10)]


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, Side, int, int]]:
    """Moves of the price (in whole dollars) and orders: a bracketed entry, or a market order
    by hand, of 1 to 10 shares."""
    kinds = st.sampled_from(["bracket", "market", "move"])
    return draw(
        st.lists(
            st.tuples(kinds, st.sampled_from(Side), st.integers(1, 10), st.integers(-15, 15)),
            min_size=1,
            max_size=14,
        )
    )


@pytest.mark.first
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps())
async def test_exits_never_close_more_than_the_position_and_money_is_kept(
    db: Database, make_broker: Any, script: list[tuple[str, Side, int, int]]
) -> None:
    """Whatever brackets, hand trades and price moves come, a bracket's exits close at most
    what is held (one of each OCO pair counting), never stand on the opening side, and no
    money is made or lost beyond the fills."""
    member = 5000 + next(_MEMBERS)  # a fresh account per example
    broker = make_broker(connection_id=await new_paper_connection(db, member))
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    feed = broker.quote_source
    price = D(200)
    feed.set_quote("AAPL", price, price)
    for kind, side, qty, move in script:
        if kind == "move":
            price = max(D(20), price + move)
            feed.set_quote("AAPL", price, price)
            await broker.sweep()
            continue
        up = 1 if side is BUY else -1
        request = (
            bracket_req(side, qty, tp=str(price + up * 10), sl=str(price - up * 10))
            if kind == "bracket"
            else plain_req(side, qty)
        )
        try:
            await broker.create_order(ref, request)
        except (InvalidOrder, InsufficientBuyingPower):
            pass
        held = sum((p.quantity for p in await broker.fetch_positions(ref)), D(0))
        groups: dict[str, D] = {}
        for o in await broker.fetch_open_orders(ref):
            parent = o.info["parent_id"]
            if parent is None:
                continue
            assert (o.side is SELL) == (held > 0), (o, held)
            groups[parent] = max(groups.get(parent, D(0)), o.remaining_quantity)
        assert sum(groups.values(), D(0)) <= abs(held)
        assert await stored_residual(db, ref.id) == 0
        # The preview's buying power, priced from fewer quotes, is the balance's.
        balance = await broker.fetch_balance(ref)
        assert await broker.fetch_buying_power(ref) == balance.buying_power


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ({"tp": "220.005"}, "The take-profit price 220.005 has too many decimals."),
        ({"sl": "189.999"}, "The stop-loss price 189.999 has too many decimals."),
        ({"sl": "190", "sl_limit": "189.505"}, "The stop-loss limit price 189.505 has too many"),
    ],
)
async def test_exit_prices_finer_than_a_cent_are_refused(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, prices: dict[str, str], message: str
) -> None:
    # Refused with the entry, not when the exit is placed after the fill.
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    with pytest.raises(InvalidOrder, match=message) as e:
        await broker.create_order(ref, bracket_req(BUY, 1, **({"tp": "220", "sl": "190"} | prices)))
    assert "whole cents: use" in str(e.value)
    assert await broker.fetch_orders(ref) == []


@pytest.mark.parametrize(
    ("trail", "first_stop", "raised_stop"), [("amount", 195, 205), ("percent", 190, "199.50")]
)
async def test_a_trailing_stop_loss_follows_the_high_and_cancels_the_take_profit(
    broker: PaperBroker,
    ref: AccountRef,
    feed: SimulatedFeed,
    trail: str,
    first_stop: Any,
    raised_stop: Any,
) -> None:
    """The stop-loss of a bracket may trail: it starts its trail (5 dollars, 5 percent) from
    the entry's fill, rises with the price, and filling cancels the take-profit."""
    feed.set_quote("AAPL", D(200), D(200))
    request = bracket_req(BUY, 10, tp="240")
    assert request.bracket is not None
    request.bracket.stop_loss = D(195)  # where it starts, from the estimate
    if trail == "amount":
        request.bracket.stop_loss_trail_amount = D(5)
    else:
        request.bracket.stop_loss_trail_percent = D(5)
    entry = await broker.create_order(ref, request)
    assert entry.status is OrderStatus.FILLED
    assert entry.info[f"stop_loss_trail_{trail}"] == "5"
    exits = exits_of(await broker.fetch_open_orders(ref), entry)
    stop = exits[OrderType.TRAILING_STOP]
    assert (stop.side, stop.quantity, stop.stop_price) == (SELL, D(10), D(first_stop))
    feed.set_quote("AAPL", D(210), D(210))
    await broker.sweep()
    stop = exits_of(await broker.fetch_open_orders(ref), entry)[OrderType.TRAILING_STOP]
    assert stop.stop_price == D(raised_stop)
    feed.set_quote("AAPL", D(199), D(199))
    [filled, *_] = await broker.sweep()
    assert filled.event == "fill" and filled.order.id == stop.id
    assert await broker.fetch_open_orders(ref) == []  # the take-profit went with it
    assert await broker.fetch_positions(ref) == []


async def test_a_trailing_stop_loss_needs_no_start_and_takes_no_limit(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """It trails from the fill, so the price it was expected to start from is optional; a
    limit price would make it a stop-limit, which it is not."""
    feed.set_quote("AAPL", D(200), D(200))
    request = bracket_req(BUY, 10)
    assert request.bracket is not None
    request.bracket.stop_loss_trail_amount = D(5)
    request.bracket.stop_loss_limit = D(194)
    with pytest.raises(InvalidOrder, match="takes no limit price"):
        await broker.create_order(ref, request)
    request.bracket.stop_loss_limit = None
    entry = await broker.create_order(ref, request)
    [stop] = exits_of(await broker.fetch_open_orders(ref), entry).values()
    assert (stop.order_type, stop.stop_price) == (OrderType.TRAILING_STOP, D(195))


async def test_a_trailing_stop_loss_starts_on_a_whole_cent_below_the_fill(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("199.87"), D("199.87"))
    request = bracket_req(BUY, 10)
    assert request.bracket is not None
    request.bracket.stop_loss_trail_percent = D("2.5")
    entry = await broker.create_order(ref, request)
    [stop] = exits_of(await broker.fetch_open_orders(ref), entry).values()
    assert stop.stop_price == D("194.87")  # 194.87325 trails no closer than 2.5%


async def test_a_resting_entry_that_closes_a_position_opened_meanwhile_places_no_exits(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """Its exits were placed for all it filled against a flat position: the take-profit then
    sold 10 more, a short nobody asked for."""
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    resting = bracket_req(BUY, 10, tp="215", sl="185", order_type=OrderType.LIMIT, limit="195")
    await broker.create_order(ref, resting)
    await broker.create_order(ref, plain_req(SELL, 10))  # short 10, by hand
    feed.set_quote("AAPL", D("194.00"), D("194.00"))
    await broker.sweep()  # the entry fills: it closes the short
    assert await broker.fetch_positions(ref) == []
    assert await broker.fetch_open_orders(ref) == []
    feed.set_quote("AAPL", D("216.00"), D("216.00"))
    assert await broker.sweep() == []
    assert await broker.fetch_positions(ref) == []


async def test_a_position_with_exits_closes_by_hand_however_little_buying_power_is_left(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """The exits counted as closing all 490 shares, so a market sell of them was charged as
    opening a short, and refused: the member could not get out."""
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    await broker.create_order(ref, bracket_req(BUY, 490, tp="220", sl="190"))
    assert (await broker.fetch_balance(ref)).buying_power < 3000
    out = await broker.create_order(ref, plain_req(SELL, 490))
    assert out.status is OrderStatus.FILLED
    assert await broker.fetch_positions(ref) == [] and await broker.fetch_open_orders(ref) == []


@pytest.mark.parametrize(
    ("kind", "change"), [("tp", {"limit_price": D(225)}), ("sl", {"stop_price": D(195)})]
)
async def test_an_exit_moves_however_little_buying_power_is_left(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, kind: str, change: dict[str, Any]
) -> None:
    """Its sibling counted as closing the whole position, so the moved exit was charged as
    opening a short, and refused."""
    from adapters.models import OrderChange

    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    await broker.create_order(ref, bracket_req(BUY, 490, tp="220", sl="190"))
    wanted = OrderType.LIMIT if kind == "tp" else OrderType.STOP
    [exit_] = [o for o in await broker.fetch_open_orders(ref) if o.order_type is wanted]
    moved = await broker.replace_order(ref, exit_, OrderChange(**change))
    assert all(getattr(moved, k) == v for k, v in change.items())


async def test_a_trailing_stop_loss_narrower_than_the_spread_does_not_fire_at_once(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """It trailed from the midpoint fill, above the bid it sells at: the next look sold it, a
    round trip with no price move. A trailing stop placed alone starts from the bid."""
    feed.set_quote("BTCUSD", D("94980"), D("95020"))
    entry = OrderRequest(
        "BTCUSD",
        BUY,
        D("0.1"),
        OrderType.MARKET,
        TimeInForce.GTC,
        bracket=Bracket(stop_loss_trail_amount=D(15)),
    )
    assert (await broker.create_order(ref, entry)).status is OrderStatus.FILLED
    assert await broker.sweep() == []
    [trailing] = await broker.fetch_open_orders(ref)
    assert trailing.stop_price == D("94965")  # 15 under the bid
    feed.set_quote("BTCUSD", D("94960"), D("95000"))
    [stopped] = await broker.sweep()
    assert stopped.order.status is OrderStatus.FILLED
