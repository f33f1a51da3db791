"""Take-profit/stop-loss brackets at Tradecord Paper: the exits come with the entry's fill,
one cancels the other, and buying power counts them once."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.errors import InvalidOrder
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

from .conftest import stored_residual

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
BUY, SELL = Side.BUY, Side.SELL


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
