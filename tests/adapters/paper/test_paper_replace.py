"""Changing a working order at Tradecord Paper: in place, checked for buying power like a new
order, looked at again at once, and a bracket's exits keep covering their position."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.errors import InsufficientBuyingPower, InvalidOrder
from adapters.models import (
    AccountRef,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from adapters.paper import PaperBroker, SimulatedFeed
from bot.db import Database

from .conftest import stored_residual
from .test_paper_brackets import bracket_req, exits_of

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal


def limit_buy(qty: str, price: str, symbol: str = "AAPL") -> OrderRequest:
    return OrderRequest(
        symbol, Side.BUY, D(qty), OrderType.LIMIT, TimeInForce.GTC, limit_price=D(price)
    )


async def test_a_raised_quantity_is_checked_for_buying_power(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.10"))
    order = await broker.create_order(ref, limit_buy("400", "190"))  # $76,000 of $100,000
    with pytest.raises(InsufficientBuyingPower, match=r"needs \$114,000.00 .* \$100,000.00"):
        await broker.replace_order(ref, order, OrderChange(quantity=D(600)))
    kept = await broker.fetch_order(ref, order_id=order.id)
    assert (kept.quantity, kept.status) == (D(400), OrderStatus.OPEN)
    # Its own reservation is not counted against it: 500 at $190 is $95,000.
    changed = await broker.replace_order(ref, order, OrderChange(quantity=D(500)))
    assert (changed.id, changed.quantity, changed.limit_price) == (order.id, D(500), D(190))
    assert (await broker.fetch_balance(ref)).buying_power == D(5000)


async def test_moving_a_brackets_stop_loss_keeps_it_one_cancels_other(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.00"))
    entry = await broker.create_order(ref, bracket_req(Side.BUY, 10, tp="220", sl="190"))
    exits = exits_of(await broker.fetch_open_orders(ref), entry)
    stop = exits[OrderType.STOP]
    with pytest.raises(InvalidOrder, match="change its price, not its quantity"):
        await broker.replace_order(ref, stop, OrderChange(quantity=D(5)))
    moved = await broker.replace_order(ref, stop, OrderChange(stop_price=D("199")))
    assert (moved.id, moved.stop_price, moved.quantity) == (stop.id, D(199), D(10))
    feed.set_quote("AAPL", D("198.90"), D("198.95"))
    await broker.sweep(ref)
    assert (await broker.fetch_order(ref, order_id=stop.id)).status is OrderStatus.FILLED
    take_profit = await broker.fetch_order(ref, order_id=exits[OrderType.LIMIT].id)
    assert take_profit.status is OrderStatus.CANCELLED
    assert await broker.fetch_positions(ref) == []
    assert await stored_residual(db, broker.account_id) == 0


async def test_a_crypto_quantity_takes_fractions_up_to_the_places(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("BTC/USD", D("60000"), D("60010"))
    order = await broker.create_order(
        ref,
        OrderRequest(
            "BTC/USD", Side.BUY, D("0.5"), OrderType.LIMIT, TimeInForce.GTC, limit_price=D(50000)
        ),
    )
    changed = await broker.replace_order(ref, order, OrderChange(quantity=D("0.25")))
    assert changed.quantity == D("0.25")
    with pytest.raises(InvalidOrder, match="at most"):
        await broker.replace_order(ref, changed, OrderChange(quantity=D("0.1234567890123")))
