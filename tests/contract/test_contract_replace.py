"""The adapter contract for changing a working order (``replace_order``), for every broker.

What a broker's replace can change is its ``capabilities.replace``; a scenario that changes
something the broker cannot is skipped there, and the refusal is checked instead.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.errors import BrokerUnavailable, InvalidOrder, OrderNotReplaceable
from adapters.models import Order, OrderChange, OrderStatus, OrderType
from emulators.common import Fault
from tests.contract.conftest import ASK, BID, SYMBOL, Harness
from tests.contract.test_contract import buy, equity, open_ids

D = Decimal
REPLACE_PATH = r"/orders/[^/]+$"  # one order's path at every HTTP broker


def needs(h: Harness, *fields: str) -> None:
    missing = set(fields) - h.adapter.capabilities.replace
    if missing:
        pytest.skip(f"{h.adapter.display_name} cannot change {', '.join(sorted(missing))}")


async def resting_limit(h: Harness, quantity: int = 2, price: str = "50") -> Order:
    placed = await h.adapter.create_order(
        equity(h), buy(quantity, OrderType.LIMIT, limit_price=D(price))
    )
    return await h.adapter.fetch_order(equity(h), order_id=placed.id)


async def assert_replaced(h: Harness, old: Order, new: Order) -> None:
    """Exactly one order works for what was one: ``new``; an old order that a new one
    replaced says so and names it."""
    working = await open_ids(h)
    assert new.id in working
    if new.id != old.id:
        assert old.id not in working
        before = await h.adapter.fetch_order(equity(h), order_id=old.id)
        assert before.status is OrderStatus.REPLACED
        assert before.replaced_by == new.id
        assert new.replaces == old.id


async def test_replace_limit_price(harness: Harness) -> None:
    h = harness
    needs(h, "limit_price")
    old = await resting_limit(h)
    new = await h.adapter.replace_order(equity(h), old, OrderChange(limit_price=D("60")))
    assert new.status in (OrderStatus.PENDING, OrderStatus.OPEN)
    assert (new.symbol, new.side, new.order_type) == (SYMBOL, old.side, OrderType.LIMIT)
    assert (new.quantity, new.limit_price) == (D(2), D("60"))
    await assert_replaced(h, old, new)
    read = await h.adapter.fetch_order(equity(h), order_id=new.id)
    assert (read.quantity, read.limit_price) == (D(2), D("60"))


async def test_replace_quantity(harness: Harness) -> None:
    h = harness
    needs(h, "quantity")
    old = await resting_limit(h)
    new = await h.adapter.replace_order(equity(h), old, OrderChange(quantity=D(3)))
    assert (new.quantity, new.limit_price) == (D(3), D("50"))
    await assert_replaced(h, old, new)


async def test_a_quantity_the_broker_cannot_change_is_refused_before_sending(
    harness: Harness,
) -> None:
    h = harness
    if "quantity" in h.adapter.capabilities.replace:
        pytest.skip(f"{h.adapter.display_name} changes quantities")
    old = await resting_limit(h)
    with pytest.raises(InvalidOrder, match="cannot change an order's quantity"):
        await h.adapter.replace_order(equity(h), old, OrderChange(quantity=D(3)))
    assert (await h.adapter.fetch_order(equity(h), order_id=old.id)).quantity == D(2)


async def test_replace_stop_price(harness: Harness) -> None:
    h = harness
    needs(h, "stop_price")
    if OrderType.STOP not in h.order_types:
        pytest.skip(f"{h.adapter.display_name} does not take stop orders")
    placed = await h.adapter.create_order(equity(h), buy(1, OrderType.STOP, stop_price=D("150")))
    old = await h.adapter.fetch_order(equity(h), order_id=placed.id)
    new = await h.adapter.replace_order(equity(h), old, OrderChange(stop_price=D("140")))
    assert (new.order_type, new.stop_price, new.quantity) == (OrderType.STOP, D("140"), D(1))
    await assert_replaced(h, old, new)


async def test_a_limit_moved_through_the_market_fills(harness: Harness) -> None:
    h = harness
    needs(h, "limit_price")
    old = await resting_limit(h, 1)
    new = await h.adapter.replace_order(equity(h), old, OrderChange(limit_price=D("101")))
    await h.move_quote(SYMBOL, BID, ASK)  # the broker's next look at the book
    filled = await h.adapter.fetch_order(equity(h), order_id=new.id)
    assert filled.status is OrderStatus.FILLED
    assert filled.average_fill_price is not None and filled.average_fill_price <= D("101")


async def test_an_order_cancelled_meanwhile_cannot_be_changed(harness: Harness) -> None:
    h = harness
    needs(h, "limit_price")
    old = await resting_limit(h)
    await h.adapter.cancel_order(equity(h), old.id)  # ``old`` is now a stale reading
    with pytest.raises(OrderNotReplaceable):
        await h.adapter.replace_order(equity(h), old, OrderChange(limit_price=D("60")))
    assert old.id not in await open_ids(h)


async def test_lost_response_on_replace_changes_it_once(harness: Harness) -> None:
    """A change whose answer is lost: either the broker's error says it may have been made, or
    (a PUT: HTTP clients may resend an idempotent request once on a dropped connection, as
    RFC 9112 allows) the resend's answer comes back. Either way one order works, changed once."""
    h = harness
    needs(h, "limit_price")
    old = await resting_limit(h)
    h.inject(Fault(kind="lose_response", method=h.replace_method, path=REPLACE_PATH, times=1))
    try:
        await h.adapter.replace_order(equity(h), old, OrderChange(limit_price=D("60")))
    except BrokerUnavailable as e:
        assert e.maybe_sent is True
    mine = [o for o in await h.adapter.fetch_open_orders(equity(h)) if o.symbol == SYMBOL]
    assert [o.limit_price for o in mine] == [D("60")]


async def test_nothing_to_change_is_refused(harness: Harness) -> None:
    h = harness
    needs(h, "limit_price")
    old = await resting_limit(h)
    with pytest.raises(InvalidOrder, match="nothing to change"):
        await h.adapter.replace_order(equity(h), old, OrderChange(limit_price=D("50")))
    with pytest.raises(InvalidOrder, match="no stop price"):
        await h.adapter.replace_order(equity(h), old, OrderChange(stop_price=D("40")))
