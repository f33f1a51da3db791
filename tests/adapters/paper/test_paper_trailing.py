"""Trailing stops at Tradecord Paper: the stop follows the best price, then fills as market."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.errors import InvalidOrder
from adapters.models import AccountRef, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from adapters.paper import PaperBroker, SimulatedFeed

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
BUY, SELL = Side.BUY, Side.SELL


def trailing(
    side: Side,
    qty: int,
    *,
    amount: str | None = None,
    percent: str | None = None,
    tif: TimeInForce = TimeInForce.GTC,
    stop: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        "AAPL",
        side,
        D(qty),
        OrderType.TRAILING_STOP,
        tif,
        stop_price=D(stop) if stop else None,
        trail_amount=D(amount) if amount else None,
        trail_percent=D(percent) if percent else None,
    )


def quote(feed: SimulatedFeed, price: str) -> None:
    feed.set_quote("AAPL", D(price), D(price))


async def test_a_sell_trailing_stop_follows_the_high_and_fills_when_the_price_falls_back(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    quote(feed, "100")
    await broker.create_order(ref, OrderRequest("AAPL", BUY, D(10)))
    order = await broker.create_order(ref, trailing(SELL, 10, amount="5"))
    assert (order.status, order.stop_price, order.info["watermark"]) == (
        OrderStatus.OPEN,
        D(95),
        "100",
    )
    quote(feed, "110")
    assert await broker.sweep() == []  # nothing to report: the stop moved up with the price
    [working] = await broker.fetch_open_orders(ref)
    assert (working.stop_price, working.info["watermark"]) == (D(105), "110")
    quote(feed, "107")  # down, not to the stop: the stop stays at 105
    assert await broker.sweep() == []
    [working] = await broker.fetch_open_orders(ref)
    assert working.stop_price == D(105)
    quote(feed, "104.50")
    [filled] = await broker.sweep()
    assert filled.event == "fill" and filled.fill_price == D("104.50")
    assert await broker.fetch_positions(ref) == []


async def test_a_buy_trailing_stop_by_percent_follows_the_low(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    quote(feed, "200")
    await broker.create_order(ref, OrderRequest("AAPL", SELL, D(3)))
    order = await broker.create_order(ref, trailing(BUY, 3, percent="10"))
    assert order.stop_price == D(220)
    quote(feed, "150")
    assert await broker.sweep() == []
    [working] = await broker.fetch_open_orders(ref)
    assert working.stop_price == D(165)
    quote(feed, "166")
    [filled] = await broker.sweep()
    assert filled.fill_price == D(166) and filled.order.side is BUY
    assert await broker.fetch_positions(ref) == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (trailing(SELL, 1), "give exactly one of the two"),
        (trailing(SELL, 1, amount="1", percent="1"), "give exactly one of the two"),
        (trailing(SELL, 1, percent="100"), "between 0 and 100"),
        (trailing(SELL, 1, amount="1", tif=TimeInForce.IOC), "use day or GTC"),
        (trailing(SELL, 1, amount="1", stop="90"), "takes no stop price"),
        (
            OrderRequest("AAPL", SELL, D(1), OrderType.STOP, stop_price=D(90), trail_amount=D(1)),
            "for trailing-stop orders only",
        ),
    ],
)
async def test_a_trailing_stop_that_cannot_work_is_refused(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, request_: OrderRequest, message: str
) -> None:
    quote(feed, "100")
    with pytest.raises(InvalidOrder) as e:
        await broker.create_order(ref, request_)
    assert message in str(e.value)


async def test_a_percent_trailing_stop_moves_in_whole_cents_never_closer_than_asked(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    quote(feed, "199.87")
    await broker.create_order(ref, OrderRequest("AAPL", BUY, D(10)))
    order = await broker.create_order(ref, trailing(SELL, 10, percent="2.5"))
    assert order.stop_price == D("194.87")  # 194.87325, down to the cent below
    quote(feed, "201.13")
    await broker.sweep()
    [working] = await broker.fetch_open_orders(ref)
    assert working.stop_price == D("196.10")  # 196.10175
    await broker.cancel_order(ref, working.id)
    await broker.create_order(ref, OrderRequest("AAPL", SELL, D(20)))
    quote(feed, "123.45")
    order = await broker.create_order(ref, trailing(BUY, 10, percent="3"))
    assert order.stop_price == D("127.16")  # 127.1535, up to the cent above


async def test_a_futures_trailing_stop_lands_on_a_tick(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("ESZ6", D("5000.25"), D("5000.25"))
    await broker.create_order(ref, OrderRequest("ESZ6", BUY, D(1)))
    request = OrderRequest(
        "ESZ6", SELL, D(1), OrderType.TRAILING_STOP, TimeInForce.GTC, trail_percent=D(1)
    )
    order = await broker.create_order(ref, request)
    assert order.stop_price == D("4950.00")  # 4950.2475, down to the quarter-point tick
