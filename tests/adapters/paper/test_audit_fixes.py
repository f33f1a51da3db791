"""Tradecord Paper, from an audit: a gap through a bracket's exit and a hand order, a change
that moves a bracketed entry past its stop-loss, futures margin on /balances, and which orders
say their fills were at simulated prices."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from adapters.errors import InvalidOrder
from adapters.models import (
    AccountRef,
    Bracket,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from adapters.paper import PaperBroker, SimulatedFeed, sweep_all
from bot.db import Database
from tests.support import FakeClock

from .conftest import stored_residual

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
BUY, SELL = Side.BUY, Side.SELL


async def _bracketed_ten(broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed) -> None:
    """10 AAPL bought at about 100 with a take-profit at 110 and a stop-loss at 90."""
    feed.set_quote("AAPL", D("100.00"), D("100.02"))
    entry = await broker.create_order(
        ref,
        OrderRequest(
            "AAPL", BUY, D(10), OrderType.MARKET, TimeInForce.GTC, bracket=Bracket(D(110), D(90))
        ),
    )
    assert entry.status is OrderStatus.FILLED


@pytest.mark.parametrize(
    ("hand", "gap"),
    [
        # The stop-loss (90) and a stop of the trader's own at 91, gapped through to 88.
        (
            OrderRequest("AAPL", SELL, D(10), OrderType.STOP, TimeInForce.GTC, stop_price=D(91)),
            (D("88.00"), D("88.02")),
        ),
        # The take-profit (110) and a limit of the trader's own at 109, gapped through to 112.
        (
            OrderRequest("AAPL", SELL, D(10), OrderType.LIMIT, TimeInForce.GTC, limit_price=D(109)),
            (D("112.00"), D("112.02")),
        ),
    ],
    ids=["stop-loss", "take-profit"],
)
async def test_a_gap_through_a_brackets_exit_and_a_hand_order_does_not_open_a_short(
    db: Database,
    broker: PaperBroker,
    ref: AccountRef,
    feed: SimulatedFeed,
    clock: FakeClock,
    hand: OrderRequest,
    gap: tuple[Decimal, Decimal],
) -> None:
    """The older exit filled first and cut nothing, then the hand order sold 10 more: short
    10 AAPL nobody asked for."""
    await _bracketed_ten(broker, ref, feed)
    placed = await broker.create_order(ref, hand)
    assert placed.status is OrderStatus.OPEN
    feed.set_quote("AAPL", *gap)
    clock.advance(minutes=1)
    updates = await sweep_all(db, lambda _cid: feed, clock=clock)
    assert [(p.symbol, p.quantity) for p in await broker.fetch_positions(ref)] == []
    # The trader's own order closed the position; the bracket's exits were cancelled.
    assert [u.order.id for u in updates if u.event == "fill"] == [placed.id]
    assert await broker.fetch_open_orders(ref) == []
    assert await stored_residual(db, broker.account_id) == 0


async def test_exits_reserve_nothing_for_a_position_a_hand_order_closes(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """The take-profit was charged $1,100 as if it would open a short, though the hand order
    filling cancels it, and it filling first leaves the hand order nothing to close."""
    await _bracketed_ten(broker, ref, feed)
    before = await broker.fetch_balance(ref)
    hand = OrderRequest("AAPL", SELL, D(10), OrderType.STOP, TimeInForce.GTC, stop_price=D(91))
    await broker.create_order(ref, hand)
    after = await broker.fetch_balance(ref)
    assert after.info["reserved_for_open_orders"] == "0"
    assert after.buying_power == before.buying_power


async def test_a_change_cannot_move_a_bracketed_entry_past_its_stop_loss(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """Placing it at 94 is refused; placing it at 99 and moving it to 94 was accepted, and it
    filled at 94 with its stop-loss at 95 firing at once."""
    feed.set_quote("AAPL", D("100.00"), D("100.02"))
    entry = await broker.create_order(
        ref,
        OrderRequest(
            "AAPL",
            BUY,
            D(10),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=D(99),
            bracket=Bracket(D("110"), D("95")),
        ),
    )
    assert entry.status is OrderStatus.OPEN
    with pytest.raises(InvalidOrder, match="stop-loss"):
        broker.check_change(entry, OrderChange(limit_price=D("94")))  # refused at the card
    with pytest.raises(InvalidOrder, match="stop-loss"):
        await broker.replace_order(ref, entry, OrderChange(limit_price=D("94")))
    [still] = await broker.fetch_open_orders(ref)
    assert still.limit_price == D(99)
    # Within the bracket it still moves.
    moved = await broker.replace_order(ref, entry, OrderChange(limit_price=D("97")))
    assert moved.limit_price == D(97)


async def test_balances_show_the_futures_margin_in_use(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("ESZ26", D("5000.00"), D("5000.00"))
    await broker.create_order(ref, OrderRequest("ESZ26", BUY, D(2)))
    b = await broker.fetch_balance(ref)
    assert b.initial_margin == D(b.info["futures_initial_margin"]) == D(50000)
    assert b.maintenance_margin is None  # paper models no maintenance margin


async def test_a_balance_without_futures_shows_no_margin(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("100.00"), D("100.00"))
    await broker.create_order(ref, OrderRequest("AAPL", BUY, D(2)))
    assert (await broker.fetch_balance(ref)).initial_margin is None


class _RealPrices:
    """A linked broker's prices: the feed's, not simulated."""

    def __init__(self, feed: SimulatedFeed) -> None:
        self.feed = feed

    async def fetch_quote(self, symbol: str) -> Quote:
        return dataclasses.replace(await self.feed.fetch_quote(symbol), simulated=False)


async def test_an_order_filled_at_real_prices_is_not_labelled_simulated(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, clock: FakeClock
) -> None:
    """Placed while paper used the simulated feed, it filled at a linked broker's price and
    its fill DM still said "simulated prices"."""
    feed.set_quote("AAPL", D("200.00"), D("200.02"))
    order = await broker.create_order(
        ref,
        OrderRequest("AAPL", BUY, D(1), OrderType.LIMIT, TimeInForce.GTC, limit_price=D(190)),
    )
    assert order.status is OrderStatus.OPEN
    assert order.info["simulated"] is False  # no fills, so none at simulated prices
    feed.set_quote("AAPL", D("189.00"), D("189.02"))
    clock.advance(minutes=1)
    [update] = await sweep_all(db, lambda _cid: _RealPrices(feed), clock=clock)
    assert update.event == "fill" and update.order.id == order.id
    assert update.order.info["simulated"] is False


async def test_an_order_filled_at_simulated_prices_says_so(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.02"))
    order = await broker.create_order(ref, OrderRequest("AAPL", BUY, D(1)))
    assert order.status is OrderStatus.FILLED and order.info["simulated"] is True
