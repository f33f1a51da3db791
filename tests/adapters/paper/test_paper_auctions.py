"""Auction orders at Tradecord Paper: opg trades in the opening auction, cls in the closing
one, at the price then or not at all, in either fill-hours mode."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.errors import InvalidOrder
from adapters.models import Bracket, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from adapters.paper import PaperBroker, SimulatedFeed
from tests.support import FakeClock

from .conftest import BrokerFactory

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
OPG, CLS = TimeInForce.OPG, TimeInForce.CLS
BEFORE_OPEN = datetime(2026, 12, 1, 13, 0, tzinfo=UTC)  # Tuesday 08:00 New York
OPEN = datetime(2026, 12, 1, 14, 30, tzinfo=UTC)  # 09:30
CLOSE = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)  # 16:00


def auction(tif: TimeInForce, limit: str | None = None, side: Side = Side.BUY) -> OrderRequest:
    kind = OrderType.LIMIT if limit else OrderType.MARKET
    return OrderRequest("AAPL", side, D(5), kind, tif, limit_price=D(limit) if limit else None)


@pytest.mark.parametrize("fill_hours", ["24/7", "exchange"])
async def test_an_opening_auction_order_waits_for_the_open_and_fills_there(
    make_broker: BrokerFactory, feed: SimulatedFeed, clock: FakeClock, fill_hours: str
) -> None:
    clock.at = BEFORE_OPEN
    broker = make_broker(fill_hours=fill_hours)
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    feed.set_quote("AAPL", D("199.90"), D("200.10"))
    market = await broker.create_order(ref, auction(OPG))
    limit = await broker.create_order(ref, auction(OPG, "190"))
    assert (market.status, market.time_in_force) == (OrderStatus.OPEN, OPG)  # even in 24/7
    assert market.info["expires_at"] == "2026-12-01T14:31:00+00:00"
    assert await broker.sweep() == []
    clock.at = OPEN.replace(second=20)
    feed.set_quote("AAPL", D("195.00"), D("195.20"))
    updates = {u.order.id: u for u in await broker.sweep()}
    assert updates[market.id].event == "fill" and updates[market.id].fill_price == D("195.10")
    cancelled = updates[limit.id].order
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.reject_reason == (
        "Cancelled: it trades only in the opening auction, and the auction's price ($195.10) "
        "did not reach its limit."
    )


async def test_a_closing_auction_order_fills_at_the_close_even_in_exchange_hours(
    make_broker: BrokerFactory, feed: SimulatedFeed, clock: FakeClock
) -> None:
    clock.at = OPEN.replace(hour=18)  # 13:00, in the session
    broker = make_broker(fill_hours="exchange")
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    feed.set_quote("AAPL", D("199.90"), D("200.10"))
    order = await broker.create_order(ref, auction(CLS, "201"))
    assert order.status is OrderStatus.OPEN  # marketable now, but it waits for the close
    clock.at = CLOSE.replace(second=5)
    [update] = await broker.sweep()
    assert (update.event, update.fill_price) == ("fill", D("200.00"))


async def test_an_auction_order_unseen_in_its_auction_expires(
    broker: PaperBroker, feed: SimulatedFeed, clock: FakeClock
) -> None:
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    clock.at = BEFORE_OPEN
    feed.set_quote("AAPL", D("199.90"), D("200.10"))
    order = await broker.create_order(ref, auction(OPG))
    clock.at = OPEN.replace(minute=45)  # the bot was not running at the open
    [update] = await broker.sweep()
    assert update.order.status is OrderStatus.EXPIRED
    assert "its opening auction passed while Tradecord Paper was not pricing orders" in (
        update.order.reject_reason or ""
    )
    assert order.id == update.order.id


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            OrderRequest("/ES", Side.BUY, D(1), time_in_force=OPG),
            "trades in a stock exchange's opening auction; /ES is a futures contract",
        ),
        (
            OrderRequest("AAPL", Side.BUY, D(1), OrderType.STOP, CLS, stop_price=D(250)),
            "A closing-auction order is a market or limit order, not a stop order",
        ),
        (
            OrderRequest("AAPL", Side.BUY, D(1), time_in_force=OPG, bracket=Bracket(D(250))),
            "A take-profit/stop-loss bracket cannot ride on an opening-auction order",
        ),
    ],
)
async def test_auction_orders_that_cannot_trade_in_an_auction_are_refused(
    broker: PaperBroker, request_: OrderRequest, message: str
) -> None:
    [account] = await broker.fetch_accounts()
    with pytest.raises(InvalidOrder, match=message):
        await broker.create_order(account.ref(), request_)
