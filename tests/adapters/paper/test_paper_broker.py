"""Tradecord Paper through its adapter, on a real migrated database."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, func, select

from adapters.base import AdapterContext
from adapters.errors import (
    AssetClassNotSupported,
    BrokerError,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    MarketClosed,
    OrderNotCancelable,
    OrderNotFound,
    RateLimited,
    SymbolNotFound,
)
from adapters.models import (
    AccountRef,
    AccountType,
    Environment,
    OrderRequest,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from adapters.paper import PaperBroker, SimulatedFeed, reset, sweep_all
from adapters.paper.models import PaperAccount, PaperFill, PaperOrder, PaperPosition
from adapters.registry import get_adapter_class
from bot.db import Database
from bot.models import Connection, ConnectionAccount

from .conftest import SATURDAY, BrokerFactory, FakeClock, new_paper_connection, stored_residual

pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
MKT, LMT, STP, STPLMT = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT
DAY, GTC, IOC, FOK = TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
BUY, SELL = Side.BUY, Side.SELL


def req(
    symbol: str,
    side: Side,
    qty: str | int,
    order_type: OrderType = MKT,
    tif: TimeInForce = DAY,
    *,
    limit: str | None = None,
    stop: str | None = None,
    cid: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        symbol,
        side,
        D(qty),
        order_type,
        tif,
        D(limit) if limit is not None else None,
        D(stop) if stop is not None else None,
        cid,
    )


async def count(db: Database, model: Any, **where: Any) -> int:
    async with db.session() as s:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await s.scalar(query) or 0)


# -- accounts and registration --------------------------------------------------------------


async def test_registered_and_account_matches_the_member_connection(
    db: Database, broker: PaperBroker, connection_id: int
) -> None:
    assert get_adapter_class("paper") is PaperBroker
    assert PaperBroker.oauth is None  # built in: nothing to authorize
    [account] = await broker.fetch_accounts()
    assert (account.type, account.environment, account.currency) == (
        AccountType.MARGIN,
        Environment.PAPER,
        "USD",
    )
    async with db.session() as s:
        chosen = await s.scalar(
            select(ConnectionAccount.account_id).where(
                ConnectionAccount.connection_id == connection_id
            )
        )
    assert chosen == account.id == f"TCP{connection_id:08d}"
    balance = await broker.fetch_balance(account.ref())
    assert (balance.cash, balance.equity, balance.buying_power) == (D(100000),) * 3
    assert balance.info["simulated"] is True


async def test_starting_cash_setting(make_broker: BrokerFactory) -> None:
    broker = make_broker(starting_cash=D(25000))
    [account] = await broker.fetch_accounts()
    assert (await broker.fetch_balance(account.ref())).cash == D(25000)


def test_bad_settings_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="market_price_type 'close'"):
        PaperBroker(
            AdapterContext(extra={"db": db, "connection_id": 1, "market_price_type": "close"})
        )
    with pytest.raises(ValueError, match="fill_hours"):
        PaperBroker(AdapterContext(extra={"db": db, "connection_id": 1, "fill_hours": "9-5"}))
    with pytest.raises(ValueError, match="connection_id"):
        PaperBroker(AdapterContext(extra={"db": db}))


async def test_another_accounts_ref_is_refused(broker: PaperBroker, ref: AccountRef) -> None:
    other = AccountRef("TCP99999999", AccountType.MARGIN, Environment.PAPER)
    with pytest.raises(BrokerError, match="not the paper account of this connection"):
        await broker.fetch_positions(other)
    with pytest.raises(AssetClassNotSupported):
        cash = AccountRef(ref.id, AccountType.CASH, Environment.PAPER)
        await broker.create_order(cash, req("AAPL", BUY, 1))


# -- market orders and price types ----------------------------------------------------------


@pytest.mark.parametrize(
    ("price_type", "buy_at", "sell_at"),
    [
        ("mid", "100.05", "100.05"),
        ("bid_ask", "100.10", "100.00"),
        ("ask", "100.10", "100.10"),
        ("bid", "100.00", "100.00"),
        ("last", "100.07", "100.07"),
    ],
)
async def test_market_orders_fill_at_the_price_type(
    make_broker: BrokerFactory, feed: SimulatedFeed, price_type: str, buy_at: str, sell_at: str
) -> None:
    broker = make_broker(market_price_type=price_type)
    [account] = await broker.fetch_accounts()
    feed.set_quote("AAPL", D("100.00"), D("100.10"), D("100.07"))
    bought = await broker.create_order(account.ref(), req("AAPL", BUY, 10))
    assert (bought.status, bought.filled_quantity, bought.average_fill_price) == (
        OrderStatus.FILLED,
        D(10),
        D(buy_at),
    )
    assert bought.info["simulated"] is True
    sold = await broker.create_order(account.ref(), req("AAPL", SELL, 10))
    assert sold.average_fill_price == D(sell_at)
    balance = await broker.fetch_balance(account.ref())
    assert balance.cash == D(100000) + (D(sell_at) - D(buy_at)) * 10
    assert balance.realized_pnl == (D(sell_at) - D(buy_at)) * 10


# -- limits and stops -----------------------------------------------------------------------


async def test_limit_buy_rests_then_fills_never_above_its_limit(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("MSFT", D("500.00"), D("500.20"))
    order = await broker.create_order(ref, req("MSFT", BUY, 5, LMT, GTC, limit="499.00"))
    assert order.status is OrderStatus.OPEN and order.filled_quantity == 0
    assert await broker.sweep() == []
    feed.set_quote("MSFT", D("499.50"), D("499.60"))  # mid 499.55: not yet
    assert await broker.sweep() == []
    feed.set_quote("MSFT", D("498.40"), D("498.60"))
    [update] = await broker.sweep()
    assert (update.event, update.fill_quantity, update.fill_price) == ("fill", D(5), D("498.5"))
    assert update.execution_id == f"{order.id}-F1"
    assert update.order.status is OrderStatus.FILLED
    assert await broker.sweep() == []
    [position] = await broker.fetch_positions(ref)
    assert (position.quantity, position.average_price) == (D(5), D("498.5"))


async def test_marketable_limit_sell_fills_at_the_better_price(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("SPY", D("680.00"), D("680.02"))
    order = await broker.create_order(ref, req("SPY", SELL, 3, LMT, DAY, limit="675"))
    assert (order.status, order.average_fill_price) == (OrderStatus.FILLED, D("680.01"))


async def test_buy_stop_triggers_at_the_ask_and_fills_as_market(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("NVDA", D("189.00"), D("189.10"))
    order = await broker.create_order(ref, req("NVDA", BUY, 10, STP, GTC, stop="190"))
    assert order.status is OrderStatus.OPEN
    feed.set_quote("NVDA", D("189.80"), D("189.99"))
    assert await broker.sweep() == []
    feed.set_quote("NVDA", D("190.00"), D("190.10"))
    [update] = await broker.sweep()
    assert update.fill_price == D("190.05")
    assert update.order.info["triggered_at"] is not None


async def test_sell_stop_limit_triggers_then_waits_for_its_limit(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AMD", D("100.00"), D("100.10"))
    await broker.create_order(ref, req("AMD", BUY, 10))
    order = await broker.create_order(
        ref, req("AMD", SELL, 10, STPLMT, GTC, stop="95", limit="94.50")
    )
    feed.set_quote("AMD", D("94.00"), D("94.20"))  # gap through the stop and the limit
    assert await broker.sweep() == []
    [working] = await broker.fetch_open_orders(ref)
    assert working.id == order.id and working.info["triggered_at"] is not None
    feed.set_quote("AMD", D("96.00"), D("96.20"))  # back above the stop: still a working limit
    [update] = await broker.sweep()
    assert update.fill_price == D("96.10") and update.fill_price >= D("94.50")
    assert await broker.fetch_positions(ref) == []


async def test_a_buy_stop_limit_holds_buying_power_at_its_limit(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """Held at its stop ($100k of a $100k account) while it may pay up to its limit: it was
    accepted, triggered and filled at $109, and cash went $9,000 below zero."""
    feed.set_quote("AAPL", D("90.00"), D("90.00"))
    too_big = req("AAPL", BUY, 1000, STPLMT, GTC, stop="100", limit="110")
    with pytest.raises(InsufficientBuyingPower):
        await broker.create_order(ref, too_big)
    fits = await broker.create_order(
        ref, req("AAPL", BUY, 900, STPLMT, GTC, stop="100", limit="110")
    )
    assert fits.info["reference_price"] == "110"
    feed.set_quote("AAPL", D("109.00"), D("109.00"))
    await broker.sweep()
    assert (await broker.fetch_balance(ref)).cash >= 0


# -- ioc / fok ------------------------------------------------------------------------------


async def test_ioc_and_fok_fill_at_once_or_cancel(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("KO", D("70.00"), D("70.02"))
    missed = await broker.create_order(ref, req("KO", BUY, 100, LMT, IOC, limit="69"))
    assert missed.status is OrderStatus.CANCELLED and missed.filled_quantity == 0
    assert missed.reject_reason is not None and "IOC" in missed.reject_reason
    fok_miss = await broker.create_order(ref, req("KO", BUY, 100, LMT, FOK, limit="69.99"))
    assert fok_miss.status is OrderStatus.CANCELLED
    assert await count(db, PaperFill) == 0 and await broker.fetch_positions(ref) == []
    fok = await broker.create_order(ref, req("KO", BUY, 100, MKT, FOK))
    assert (fok.status, fok.filled_quantity) == (OrderStatus.FILLED, D(100))
    assert await broker.fetch_open_orders(ref) == []
    with pytest.raises(InvalidOrder, match="IOC works with market and limit orders only"):
        await broker.create_order(ref, req("KO", SELL, 1, STP, IOC, stop="60"))


# -- day expiry and exchange hours ----------------------------------------------------------


async def test_day_orders_expire_at_the_end_of_the_trading_day(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, clock: FakeClock
) -> None:
    feed.set_quote("JPM", D("310.00"), D("310.10"))
    day = await broker.create_order(ref, req("JPM", BUY, 1, LMT, DAY, limit="300"))
    gtc = await broker.create_order(ref, req("JPM", BUY, 1, LMT, GTC, limit="300"))
    assert day.info["expires_at"] == "2026-12-01T21:00:00+00:00"  # 16:00 New York
    assert gtc.info["expires_at"] is None
    clock.advance(hours=5, minutes=59)
    assert await broker.sweep() == []
    clock.advance(minutes=1)
    [update] = await broker.sweep()
    assert (update.event, update.order.id, update.order.status) == (
        "expired",
        day.id,
        OrderStatus.EXPIRED,
    )
    assert [o.id for o in await broker.fetch_open_orders(ref)] == [gtc.id]
    assert (await broker.fetch_balance(ref)).buying_power == D(100000) - 300


async def test_exchange_hours_closed_on_saturday_then_fill_at_the_open(
    make_broker: BrokerFactory, feed: SimulatedFeed, clock: FakeClock
) -> None:
    clock.at = SATURDAY
    broker = make_broker(fill_hours="exchange")
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    feed.set_quote("AAPL", D("265.00"), D("265.10"))
    resting = await broker.create_order(ref, req("AAPL", BUY, 2))
    assert resting.status is OrderStatus.OPEN and resting.filled_quantity == 0
    assert resting.info["expires_at"] == "2026-11-30T21:00:00+00:00"  # Monday's close
    with pytest.raises(MarketClosed, match=r"IOC orders cannot wait for the open"):
        await broker.create_order(ref, req("AAPL", BUY, 2, LMT, IOC, limit="266"))
    futures = await broker.create_order(ref, req("/ES", BUY, 1, MKT, GTC))
    assert futures.status is OrderStatus.OPEN  # CME is shut on Saturday too
    crypto = await broker.create_order(ref, req("BTCUSD", BUY, "0.01", MKT, GTC))
    assert crypto.status is OrderStatus.FILLED  # crypto never closes
    assert await broker.sweep() == []
    clock.at = SATURDAY.replace(day=30, hour=14, minute=31)  # Monday 09:31 New York
    updates = await broker.sweep()
    assert sorted(u.order.symbol for u in updates) == ["/ES", "AAPL"]
    assert all(u.event == "fill" for u in updates)


async def test_exchange_hours_weekday_session_fills_at_once(make_broker: BrokerFactory) -> None:
    broker = make_broker(fill_hours="exchange")
    [account] = await broker.fetch_accounts()
    order = await broker.create_order(account.ref(), req("XOM", BUY, 1, MKT, IOC))
    assert order.status is OrderStatus.FILLED


# -- shorts, futures, crypto ----------------------------------------------------------------


async def test_short_cover_and_flip_keep_cash_and_pnl_right(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("TSLA", D("400.00"), D("400.00"))
    await broker.create_order(ref, req("TSLA", SELL, 10))
    [short] = await broker.fetch_positions(ref)
    assert (short.quantity, short.average_price, short.side) == (D(-10), D(400), "short")
    balance = await broker.fetch_balance(ref)
    assert balance.cash == D(104000) and balance.equity == D(100000)
    assert balance.buying_power == D(96000)  # the short holds its value
    assert balance.info["short_market_value"] == "4000"
    feed.set_quote("TSLA", D("380.00"), D("380.00"))
    [short] = await broker.fetch_positions(ref)
    assert short.unrealized_pnl == D(200) and short.market_value == D(-3800)
    await broker.create_order(ref, req("TSLA", BUY, 15))
    [long_] = await broker.fetch_positions(ref)
    assert (long_.quantity, long_.average_price) == (D(5), D(380))  # reset on the flip
    balance = await broker.fetch_balance(ref)
    assert balance.realized_pnl == D(200)
    assert balance.cash == D(104000) - 15 * D(380)
    assert balance.equity == D(100200)
    assert await stored_residual(db, ref.id) == 0


async def test_futures_multiplier_margin_and_pnl(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("ESZ6", D("5899.75"), D("5900.25"))
    await broker.create_order(ref, req("ESZ6", BUY, 2))
    [pos] = await broker.fetch_positions(ref)
    assert (pos.quantity, pos.average_price, pos.multiplier) == (D(2), D(5900), D(50))
    balance = await broker.fetch_balance(ref)
    assert balance.cash == D(100000)  # futures move no cash on open
    assert balance.buying_power == D(100000) - D(59000)  # 10 % of 2 × 5900 × 50
    feed.set_quote("ESZ6", D("5909.75"), D("5910.25"))
    [pos] = await broker.fetch_positions(ref)
    assert pos.unrealized_pnl == D(1000) and pos.market_value == D(591000)
    await broker.create_order(ref, req("ESZ6", SELL, 2))
    balance = await broker.fetch_balance(ref)
    assert (balance.cash, balance.realized_pnl) == (D(101000), D(1000))
    assert await stored_residual(db, ref.id) == 0
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("ESZ6", BUY, 4))
    assert "$118,200.00 of initial margin" in str(e.value) and "$101,000.00" in str(e.value)
    with pytest.raises(InvalidOrder, match=r"ticks of 0.25"):
        await broker.create_order(ref, req("ESZ6", BUY, 1, LMT, GTC, limit="5900.10"))


async def test_a_future_fills_at_whole_ticks(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """The midpoint of a one-tick spread (5919.125) is no price ES trades at: a market buy
    fills at the ask, a sell at the bid, as in the market."""
    feed.set_quote("ESZ6", D("5919.00"), D("5919.25"))
    bought = await broker.create_order(ref, req("ESZ6", BUY, 1))
    sold = await broker.create_order(ref, req("ESZ6", SELL, 1))
    assert (bought.average_fill_price, sold.average_fill_price) == (D("5919.25"), D("5919.00"))


async def test_crypto_trades_in_fractions(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("BTCUSD", D("95000.00"), D("95010.00"))
    order = await broker.create_order(ref, req("btc/usd", BUY, "0.12345678", MKT, GTC))
    assert order.symbol == "BTCUSD" and order.average_fill_price == D(95005)
    balance = await broker.fetch_balance(ref)
    assert balance.cash == D(100000) - (D("0.12345678") * D(95005)).quantize(D("0.01"))
    await broker.create_order(ref, req("BTC-USD", SELL, "0.00000001", MKT, IOC))
    [pos] = await broker.fetch_positions(ref)
    assert pos.quantity == D("0.12345677")
    assert await stored_residual(db, ref.id) == 0
    with pytest.raises(InvalidOrder, match="at most 8 decimals"):
        await broker.create_order(ref, req("BTCUSD", BUY, "0.123456789", MKT, GTC))
    with pytest.raises(InvalidOrder, match="day"):
        await broker.create_order(ref, req("BTCUSD", BUY, "1", MKT, DAY))
    with pytest.raises(InvalidOrder, match="whole quantities"):
        await broker.create_order(ref, req("AAPL", BUY, "0.5"))


# -- buying power and validation ------------------------------------------------------------


async def test_buying_power_is_checked_and_reserved_by_open_orders(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("250.00"), D("250.00"))
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("AAPL", BUY, 401))
    assert "needs $100,250.00" in str(e.value) and "has $100,000.00 available" in str(e.value)
    await broker.create_order(ref, req("AAPL", BUY, 300, LMT, GTC, limit="200"))  # 60,000 held
    assert (await broker.fetch_balance(ref)).buying_power == D(40000)
    with pytest.raises(InsufficientBuyingPower):
        await broker.create_order(ref, req("MSFT", SELL, 100, LMT, GTC, limit="500"))  # short
    await broker.create_order(ref, req("AAPL", BUY, 160))  # exactly the rest
    assert (await broker.fetch_balance(ref)).buying_power == 0
    # Closing needs no buying power even when there is none.
    closing = await broker.create_order(ref, req("AAPL", SELL, 160))
    assert closing.status is OrderStatus.FILLED
    assert await count(db, PaperOrder) == 3


async def test_second_resting_sell_of_the_same_long_needs_buying_power(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("250.00"), D("250.00"))
    await broker.create_order(ref, req("AAPL", BUY, 400))  # all 100,000 spent
    assert (await broker.fetch_balance(ref)).buying_power == 0
    first = await broker.create_order(ref, req("AAPL", SELL, 400, LMT, GTC, limit="300"))
    assert first.status is OrderStatus.OPEN
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("AAPL", SELL, 400, LMT, GTC, limit="300"))
    assert "needs $120,000.00" in str(e.value)
    assert "open orders already close all 400 AAPL held" in str(e.value)
    with pytest.raises(InsufficientBuyingPower):
        await broker.create_order(ref, req("AAPL", SELL, 1, LMT, GTC, limit="300"))
    # Cancelled, the first gives the position back to close.
    await broker.cancel_order(ref, first.id)
    second = await broker.create_order(ref, req("AAPL", SELL, 400, LMT, GTC, limit="300"))
    assert second.status is OrderStatus.OPEN
    assert (await broker.fetch_balance(ref)).info["reserved_for_open_orders"] == "0"
    assert await count(db, PaperOrder) == 3


async def test_second_resting_buy_of_the_same_short_needs_buying_power(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("250.00"), D("250.00"))
    await broker.create_order(ref, req("AAPL", SELL, 400))  # the short holds all 100,000
    assert (await broker.fetch_balance(ref)).buying_power == 0
    await broker.create_order(ref, req("AAPL", BUY, 300, LMT, GTC, limit="200"))
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("AAPL", BUY, 400, LMT, GTC, limit="200"))
    assert "needs $40,000.00" in str(e.value)  # 100 close (+20,000), 300 open (−60,000)
    assert "already close 300 of the 400 AAPL held, so this order can close only 100" in str(
        e.value
    )
    closing = await broker.create_order(ref, req("AAPL", BUY, 100, LMT, GTC, limit="200"))
    assert closing.status is OrderStatus.OPEN


async def test_orders_closing_one_position_reserve_what_they_would_open_until_they_end(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """Older orders close a position first; what a newer one opens stays reserved until an
    older one is cancelled (it then closes instead) or the position is gone."""
    feed.set_quote("AAPL", D("250.00"), D("250.00"))
    await broker.create_order(ref, req("AAPL", BUY, 200))  # 50,000 left
    first = await broker.create_order(ref, req("AAPL", SELL, 200, LMT, GTC, limit="300"))
    second = await broker.create_order(ref, req("AAPL", SELL, 100, LMT, GTC, limit="300"))
    balance = await broker.fetch_balance(ref)
    assert balance.info["reserved_for_open_orders"] == "30000"  # the second opens a short
    assert balance.buying_power == D(20000)
    await broker.cancel_order(ref, first.id)
    balance = await broker.fetch_balance(ref)
    assert balance.info["reserved_for_open_orders"] == "0"  # now the second closes
    assert balance.buying_power == D(50000)
    # A newer one closes the 100 the second leaves and opens 200: (200 − 100) × 300.
    third = await broker.create_order(ref, req("AAPL", SELL, 300, LMT, GTC, limit="300"))
    balance = await broker.fetch_balance(ref)
    assert balance.info["reserved_for_open_orders"] == "30000"
    assert balance.buying_power == D(20000)
    feed.set_quote("AAPL", D("300.00"), D("300.00"))
    updates = await broker.sweep(ref)
    assert {u.order.id for u in updates} == {second.id, third.id}
    [short] = await broker.fetch_positions(ref)
    assert short.quantity == D(-200)
    balance = await broker.fetch_balance(ref)
    # 400 sold at 300: cash 50,000 + 120,000; the 60,000 short holds its value twice over.
    assert balance.cash == D(170000) and balance.buying_power == D(50000)
    assert await stored_residual(db, ref.id) == 0


async def test_a_flip_in_one_order_is_accepted_like_the_same_two_orders(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("100.00"), D("100.00"))
    await broker.create_order(ref, req("AAPL", BUY, 100))  # 90,000 left
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("AAPL", SELL, 1101))  # opens 1001, frees 100
    assert "needs $90,100.00" in str(e.value) and "$90,000.00 available" in str(e.value)
    assert "what the 1001 it opens take, less what closing 100 frees" in str(e.value)
    order = await broker.create_order(ref, req("AAPL", SELL, 1050))
    assert order.status is OrderStatus.FILLED
    [short] = await broker.fetch_positions(ref)
    assert (short.quantity, short.average_price) == (D(-950), D(100))
    balance = await broker.fetch_balance(ref)
    # Cash 90,000 + 105,000; the 95,000 short holds its value twice over.
    assert balance.cash == D(195000) and balance.buying_power == D(5000)
    assert await stored_residual(db, ref.id) == 0


async def test_a_futures_flip_counts_the_margin_its_closing_part_frees(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("ESZ6", D("5000.00"), D("5000.00"))  # 25,000 of margin a contract
    await broker.create_order(ref, req("ESZ6", SELL, 3))
    assert (await broker.fetch_balance(ref)).buying_power == D(25000)
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("ESZ6", BUY, 8))  # closes 3, opens 5
    assert "$50,000.00 of initial margin" in str(e.value)
    # Closes 3 (frees 75,000) and opens 4 (takes 100,000): as buy 3, then buy 4 would.
    order = await broker.create_order(ref, req("ESZ6", BUY, 7))
    assert order.status is OrderStatus.FILLED
    [long_] = await broker.fetch_positions(ref)
    assert long_.quantity == D(4)
    balance = await broker.fetch_balance(ref)
    assert balance.buying_power == 0 and balance.info["futures_initial_margin"] == "100000"


async def test_a_resting_flip_reserves_what_it_opens_less_what_its_close_frees(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("100.00"), D("100.00"))
    await broker.create_order(ref, req("AAPL", BUY, 100))  # 90,000 left
    order = await broker.create_order(ref, req("AAPL", SELL, 1000, LMT, GTC, limit="110"))
    assert order.status is OrderStatus.OPEN
    balance = await broker.fetch_balance(ref)
    assert balance.info["reserved_for_open_orders"] == "88000"  # (900 − 100) × 110
    assert balance.buying_power == D(2000)
    feed.set_quote("AAPL", D("110.00"), D("110.00"))
    [update_] = await broker.sweep(ref)
    assert update_.order.status is OrderStatus.FILLED
    balance = await broker.fetch_balance(ref)
    # Filled at the price it reserved at: the buying power it left is what it had said.
    assert balance.cash == D(200000) and balance.buying_power == D(2000)
    assert await stored_residual(db, ref.id) == 0


class PartlyDown:
    """The simulated feed with some symbols' quotes failing; remembers what was asked."""

    def __init__(self, feed: SimulatedFeed) -> None:
        self.feed = feed
        self.down: set[str] = set()
        self.asked: list[str] = []

    async def fetch_quote(self, symbol: str) -> Quote:
        self.asked.append(symbol)
        if symbol in self.down:
            raise BrokerUnavailable()
        return await self.feed.fetch_quote(symbol)


@pytest.mark.parametrize("long_quote", ["down", "moved"])
async def test_buying_power_is_checked_at_the_marks_of_shorts_and_futures_alone(
    make_broker: BrokerFactory, feed: SimulatedFeed, long_quote: str
) -> None:
    """A long stock position's mark cancels out of buying power: placing an order does not
    quote it, and whether its quote is gone or moved, an order that just fits is accepted and
    one a cent over is refused, with the short and the future at their current marks and the
    long an open order closes counted in."""
    source = PartlyDown(feed)
    broker = make_broker(quote_source=source)
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    for symbol, side, qty, price in (
        ("AAPL", BUY, 100, "100"),  # cash 90,000
        ("SPY", BUY, 10, "100"),  # cash 89,000
        ("TSLA", SELL, 10, "400"),  # cash 93,000
        ("ESZ6", BUY, 1, "5000"),
    ):
        feed.set_quote(symbol, D(price), D(price))
        await broker.create_order(ref, req(symbol, side, qty))
    # Closes the SPY held: it reserves nothing.
    await broker.create_order(ref, req("SPY", SELL, 10, LMT, GTC, limit="150"))
    feed.set_quote("TSLA", D(410), D(410))
    feed.set_quote("ESZ6", D(5010), D(5010))
    feed.set_quote("MSFT", D(500), D(500))
    if long_quote == "down":
        source.down.add("AAPL")
    else:
        feed.set_quote("AAPL", D(1000), D(1000))
    source.asked.clear()
    # 93,000 − 2 × 4,100 (the short) + 500 (the future's P&L) − 25,050 (its margin)
    # The preview's figure, priced the same way: the held long's quote is not asked.
    assert await broker.fetch_buying_power(ref) == D("60250.00")
    assert set(source.asked) == {"TSLA", "ESZ26"}
    source.asked.clear()
    with pytest.raises(InsufficientBuyingPower) as e:
        await broker.create_order(ref, req("MSFT", BUY, 125, LMT, GTC, limit="482.01"))
    assert "needs $60,251.25" in str(e.value) and "has $60,250.00 available" in str(e.value)
    order = await broker.create_order(ref, req("MSFT", BUY, 125, LMT, GTC, limit="482"))
    assert order.status is OrderStatus.OPEN
    assert set(source.asked) == {"MSFT", "TSLA", "ESZ26", "SPY"}  # not AAPL
    balance = await broker.fetch_balance(ref)
    assert balance.buying_power == 0 == await broker.fetch_buying_power(ref)
    assert balance.info["unpriced"] == (["AAPL"] if long_quote == "down" else [])


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req("AAPL", BUY, 1, LMT), "needs a limit price"),
        (req("AAPL", BUY, 1, MKT, limit="10"), "takes no limit price"),
        (req("AAPL", BUY, 1, STPLMT, limit="10"), "needs a stop price"),
        (req("AAPL", BUY, 0), "more than zero"),
        (req("AAPL", BUY, 1, LMT, limit="-1"), "more than zero"),
        (req("AAPL", BUY, 1, LMT, limit="1.000000001"), "at most 8 decimals"),
        # Longer than 28 digits: still counted, not rounded away.
        (req("AAPL", BUY, 1, LMT, limit="100.0000000000000000000000000001"), "at most 8"),
        (req("BTCUSD", BUY, "0.123456780000000000000000000001", MKT, GTC), "at most 8"),
    ],
)
async def test_invalid_orders_say_what_to_fix(
    db: Database, broker: PaperBroker, ref: AccountRef, request_: OrderRequest, message: str
) -> None:
    with pytest.raises(InvalidOrder, match=message):
        await broker.create_order(ref, request_)
    assert await count(db, PaperOrder) == 0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            req("AAPL", BUY, 1, LMT, limit="100.12345"),
            "The limit price 100.12345 has too many decimals. AAPL prices of $1 or more go in "
            "whole cents: use 100.12 or 100.13.",
        ),
        (
            req("SPY", SELL, 1, STP, stop="500.005"),
            "The stop price 500.005 has too many decimals. SPY prices of $1 or more go in "
            "whole cents: use 500.00 or 500.01.",
        ),
        (
            req("AAPL", BUY, 1, STPLMT, limit="210.001", stop="210"),
            "The limit price 210.001 has too many decimals.",
        ),
        (
            req("AAPL", BUY, 1, LMT, limit="0.12345"),
            "The limit price 0.12345 has too many decimals. AAPL prices under $1 go in steps of "
            "0.0001 (4 decimals): use 0.1234 or 0.1235.",
        ),
    ],
)
async def test_stock_prices_finer_than_the_tick_are_refused_with_the_prices_to_use(
    db: Database, broker: PaperBroker, ref: AccountRef, request_: OrderRequest, message: str
) -> None:
    # SEC Rule 612: real brokers refuse these (Alpaca: "sub-penny increment"), so paper does.
    with pytest.raises(InvalidOrder) as e:
        await broker.create_order(ref, request_)
    assert str(e.value).startswith(message), str(e.value)
    assert await count(db, PaperOrder) == 0


async def test_prices_on_the_tick_are_taken_and_crypto_keeps_its_decimals(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("200.00"), D("200.02"))
    feed.set_quote("ETHUSD", D("3400.00"), D("3401.00"))
    for request_ in (
        req("AAPL", BUY, 1, LMT, GTC, limit="150.10"),  # trailing zero: still whole cents
        req("AAPL", BUY, 1, LMT, GTC, limit="0.1234"),  # under $1: four decimals
        req("ETHUSD", BUY, "0.01", LMT, GTC, limit="3000.12345"),  # no stock tick for crypto
    ):
        order = await broker.create_order(ref, request_)
        assert order.limit_price == request_.limit_price
    assert len(await broker.fetch_open_orders(ref)) == 3


async def test_unknown_symbols(broker: PaperBroker, ref: AccountRef) -> None:
    with pytest.raises(SymbolNotFound, match="does not know the symbol QQQQX"):
        await broker.create_order(ref, req("QQQQX", BUY, 1))
    with pytest.raises(SymbolNotFound):
        await broker.fetch_quote("QQQQX")


# -- orders: lookups, cancel, history -------------------------------------------------------


async def test_cancel_lookup_and_history(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, clock: FakeClock
) -> None:
    feed.set_quote("HD", D("380.00"), D("380.10"))
    first = await broker.create_order(ref, req("HD", BUY, 1, cid="first1"))
    clock.advance(minutes=1)
    working = await broker.create_order(ref, req("HD", BUY, 1, LMT, GTC, limit="300", cid="w1"))
    assert (await broker.fetch_order(ref, client_order_id="w1")).id == working.id
    assert (await broker.fetch_order(ref, order_id=first.id)).status is OrderStatus.FILLED
    with pytest.raises(OrderNotFound):
        await broker.fetch_order(ref, client_order_id="never")
    with pytest.raises(OrderNotFound):
        await broker.fetch_order(ref, order_id="TCP00000000-9")
    await broker.cancel_order(ref, working.id)
    cancelled = await broker.fetch_order(ref, order_id=working.id)
    assert cancelled.status is OrderStatus.CANCELLED
    with pytest.raises(OrderNotCancelable):
        await broker.cancel_order(ref, working.id)
    with pytest.raises(OrderNotCancelable):
        await broker.cancel_order(ref, first.id)
    with pytest.raises(OrderNotFound):
        await broker.cancel_order(ref, "nope")
    history = await broker.fetch_orders(ref)
    assert [o.id for o in history] == [working.id, first.id]  # newest first
    assert [o.id for o in await broker.fetch_orders(ref, limit=1)] == [working.id]
    since = await broker.fetch_orders(ref, since=first.created_at + timedelta(seconds=30))
    assert [o.id for o in since] == [working.id]


async def test_history_is_of_orders_that_ended_in_the_window_last_ended_first(
    db: Database,
    connection_id: int,
    broker: PaperBroker,
    ref: AccountRef,
    feed: SimulatedFeed,
    clock: FakeClock,
) -> None:
    """Before: by when each was placed, so a GTC limit placed 8 days ago that filled today was
    not in /history's last 7 days."""
    feed.set_quote("HD", D("380.00"), D("380.10"))
    old = await broker.create_order(ref, req("HD", BUY, 1, LMT, GTC, limit="370", cid="old1"))
    clock.advance(days=8)
    recent = await broker.create_order(ref, req("HD", BUY, 1, cid="new1"))
    clock.advance(minutes=5)
    feed.set_quote("HD", D("369.90"), D("369.95"))
    await sweep_all(db, {connection_id: feed}.get, clock=clock)
    assert (await broker.fetch_order(ref, order_id=old.id)).status is OrderStatus.FILLED
    week = await broker.fetch_orders(ref, since=clock() - timedelta(days=7))
    assert [o.id for o in week] == [old.id, recent.id]


# -- idempotency, persistence, concurrency --------------------------------------------------


async def test_same_client_order_id_returns_the_existing_order(
    db: Database, broker: PaperBroker, ref: AccountRef
) -> None:
    a = await broker.create_order(ref, req("PG", BUY, 3, cid="abc123"))
    b = await broker.create_order(ref, req("PG", BUY, 7, cid="abc123"))
    assert a.id == b.id and b.quantity == D(3)
    assert await count(db, PaperOrder) == 1 and await count(db, PaperFill) == 1


async def test_concurrent_creates_with_one_client_order_id_make_one_order(
    database_url: str, db: Database, connection_id: int, feed: SimulatedFeed, clock: FakeClock
) -> None:
    # Separate engines stand in for separate processes.
    dbs = [Database(database_url) for _ in range(4)]
    try:
        brokers = [
            PaperBroker(
                AdapterContext(
                    extra={
                        "db": d,
                        "connection_id": connection_id,
                        "quote_source": feed,
                        "clock": clock,
                    }
                )
            )
            for d in dbs
        ]
        [account] = await brokers[0].fetch_accounts()
        orders = await asyncio.gather(
            *(b.create_order(account.ref(), req("WMT", BUY, 1, cid="same1")) for b in brokers)
        )
        assert len({o.id for o in orders}) == 1
        assert await count(db, PaperOrder) == 1 and await count(db, PaperFill) == 1
    finally:
        for d in dbs:
            await d.close()


async def test_state_survives_a_new_adapter_and_engine(
    database_url: str, db: Database, connection_id: int, clock: FakeClock
) -> None:
    feed = SimulatedFeed(clock)
    feed.set_quote("COST", D("920.00"), D("920.20"))
    first = PaperBroker(
        AdapterContext(
            extra={"db": db, "connection_id": connection_id, "quote_source": feed, "clock": clock}
        )
    )
    [account] = await first.fetch_accounts()
    await first.create_order(account.ref(), req("COST", BUY, 10))
    resting = await first.create_order(account.ref(), req("COST", SELL, 4, LMT, GTC, limit="950"))
    before = await first.fetch_balance(account.ref())
    await db.close()

    # A restarted process: new engine, new feed, new adapter, same database.
    again = Database(database_url)
    try:
        feed2 = SimulatedFeed(clock)
        feed2.set_quote("COST", D("920.00"), D("920.20"))
        second = PaperBroker(
            AdapterContext(
                extra={
                    "db": again,
                    "connection_id": connection_id,
                    "quote_source": feed2,
                    "clock": clock,
                }
            )
        )
        [same] = await second.fetch_accounts()
        assert same.id == account.id
        assert await second.fetch_balance(same.ref()) == before
        [pos] = await second.fetch_positions(same.ref())
        assert (pos.quantity, pos.average_price) == (D(10), D("920.1"))
        assert [o.id for o in await second.fetch_open_orders(same.ref())] == [resting.id]
        feed2.set_quote("COST", D("951.00"), D("951.20"))
        [update] = await second.sweep()
        assert update.order.id == resting.id and update.fill_price == D("951.1")
    finally:
        await again.close()


async def test_two_sweepers_fill_an_order_once(
    database_url: str,
    db: Database,
    broker: PaperBroker,
    ref: AccountRef,
    connection_id: int,
    feed: SimulatedFeed,
    clock: FakeClock,
) -> None:
    feed.set_quote("GOOGL", D("290.00"), D("290.10"))
    order = await broker.create_order(ref, req("GOOGL", BUY, 10, LMT, GTC, limit="280"))
    feed.set_quote("GOOGL", D("279.00"), D("279.10"))
    dbs = [Database(database_url) for _ in range(3)]
    try:
        sweepers = [
            PaperBroker(
                AdapterContext(
                    extra={
                        "db": d,
                        "connection_id": connection_id,
                        "quote_source": feed,
                        "clock": clock,
                    }
                )
            )
            for d in dbs
        ]
        results = await asyncio.gather(*(s.sweep() for s in sweepers))
    finally:
        for d in dbs:
            await d.close()
    updates = [u for batch in results for u in batch]
    assert [u.order.id for u in updates] == [order.id]
    assert await count(db, PaperFill, order_id=order.id) == 1
    [pos] = await broker.fetch_positions(ref)
    assert pos.quantity == D(10)
    assert (await broker.fetch_balance(ref)).cash == D(100000) - D("2790.5")


# -- reset, sweep_all, quote sources --------------------------------------------------------


async def test_reset_restores_the_starting_state(
    db: Database, broker: PaperBroker, ref: AccountRef, connection_id: int
) -> None:
    await broker.create_order(ref, req("V", BUY, 10, cid="r1"))
    await broker.create_order(ref, req("V", BUY, 1, LMT, GTC, limit="1"))
    await reset(db, connection_id)
    balance = await broker.fetch_balance(ref)
    assert (balance.cash, balance.realized_pnl, balance.buying_power) == (D(100000), 0, D(100000))
    assert await broker.fetch_positions(ref) == []
    assert await broker.fetch_open_orders(ref) == [] and await broker.fetch_orders(ref) == []
    assert await count(db, PaperFill) == 0 and await count(db, PaperPosition) == 0
    again = await broker.create_order(ref, req("V", BUY, 1, cid="r1"))
    assert again.id.endswith("-3")  # order ids are never reused
    await reset(db, connection_id, starting_cash=D(5000))
    assert (await broker.fetch_balance(ref)).cash == D(5000)


async def test_sweep_all_uses_each_connections_source_and_price_type(
    db: Database,
    connection_id: int,
    make_broker: BrokerFactory,
    feed: SimulatedFeed,
    clock: FakeClock,
) -> None:
    other_id = await new_paper_connection(db, 2002)
    async with db.transaction() as s:
        other = await s.get(Connection, other_id)
        assert other is not None
        other.settings = {"market_price_type": "bid_ask"}
    other_feed = SimulatedFeed(clock)
    sources = {connection_id: feed, other_id: other_feed}
    brokers = [make_broker(), make_broker(connection_id=other_id, quote_source=other_feed)]
    for b, f in zip(brokers, (feed, other_feed), strict=True):
        [account] = await b.fetch_accounts()
        f.set_quote("MA", D("580.00"), D("580.40"))
        await b.create_order(account.ref(), req("MA", BUY, 1, LMT, GTC, limit="570"))
        f.set_quote("MA", D("569.00"), D("569.40"))
    await brokers[1].fetch_accounts()
    updates = await sweep_all(db, sources.get, clock=clock)
    prices = {u.order.account_id: u.fill_price for u in updates}
    assert prices == {brokers[0].account_id: D("569.2"), brokers[1].account_id: D("569.40")}
    assert await sweep_all(db, sources.get, clock=clock) == []


class BrokenQuotes:
    """A quote source with a bug of its own: it fails with something no broker error wraps."""

    async def fetch_quote(self, symbol: str) -> Quote:
        raise KeyError("bidPrice")


async def test_sweep_all_goes_on_past_an_account_whose_sweep_fails(
    db: Database,
    connection_id: int,
    make_broker: BrokerFactory,
    feed: SimulatedFeed,
    clock: FakeClock,
) -> None:
    """One member's broken quote source must not keep every later account's orders from being
    swept (accounts are swept in id order, so it would be the same ones on every pass)."""
    other_id = await new_paper_connection(db, 2003)
    brokers = [make_broker(), make_broker(connection_id=other_id)]
    feed.set_quote("MA", D("580.00"), D("580.40"))
    refs = []
    for b in brokers:
        [account] = await b.fetch_accounts()
        refs.append(account.ref())
        await b.create_order(account.ref(), req("MA", BUY, 1, LMT, GTC, limit="570"))
    feed.set_quote("MA", D("569.00"), D("569.40"))
    sources: dict[int, Any] = {connection_id: BrokenQuotes(), other_id: feed}
    assert brokers[0].account_id < brokers[1].account_id  # the broken one comes first
    [update] = await sweep_all(db, sources.get, clock=clock)
    assert (update.order.account_id, update.event) == (brokers[1].account_id, "fill")
    [still_open] = await brokers[0].fetch_open_orders(refs[0])
    assert still_open.status is OrderStatus.OPEN


class BrokerQuotes:
    """A connected broker as the price source: real (not simulated) quotes."""

    def __init__(self, bid: str, ask: str) -> None:
        self.bid, self.ask = D(bid), D(ask)

    async def fetch_quote(self, symbol: str) -> Quote:
        from datetime import UTC, datetime

        return Quote(symbol, self.bid, self.ask, self.bid, datetime.now(UTC))


async def test_a_connected_broker_can_price_paper(make_broker: BrokerFactory) -> None:
    broker = make_broker(quote_source=BrokerQuotes("50.00", "50.02"))
    [account] = await broker.fetch_accounts()
    order = await broker.create_order(account.ref(), req("PFE", BUY, 10))
    assert order.average_fill_price == D("50.01") and order.info["simulated"] is False
    [pos] = await broker.fetch_positions(account.ref())
    assert pos.info["simulated"] is False
    assert (await broker.fetch_balance(account.ref())).info["simulated"] is False


async def test_another_paper_broker_fits_as_a_quote_source(
    db: Database, make_broker: BrokerFactory, feed: SimulatedFeed
) -> None:
    source = make_broker(connection_id=await new_paper_connection(db, 3003))
    broker = make_broker(quote_source=source)
    [account] = await broker.fetch_accounts()
    feed.set_quote("T", D("27.00"), D("27.02"))
    order = await broker.create_order(account.ref(), req("T", BUY, 1))
    assert order.average_fill_price == D("27.01") and order.info["simulated"] is True


# -- test hooks used by the contract harness ------------------------------------------------


async def test_lost_response_commits_then_raises(
    db: Database, broker: PaperBroker, ref: AccountRef
) -> None:
    broker.test_hooks.lose_next_create_response()
    with pytest.raises(BrokerUnavailable) as e:
        await broker.create_order(ref, req("IBM", BUY, 1, cid="lost1"))
    assert e.value.maybe_sent is True
    found = await broker.fetch_order(ref, client_order_id="lost1")
    assert found.status is OrderStatus.FILLED
    assert await count(db, PaperOrder) == 1
    # The retry with the same id is answered with that order, not a second one.
    assert (await broker.create_order(ref, req("IBM", BUY, 1, cid="lost1"))).id == found.id


async def test_refusal_happens_before_anything(
    db: Database, broker: PaperBroker, ref: AccountRef
) -> None:
    broker.test_hooks.refuse_next(RateLimited(retry_after=2), frozenset({"create_order"}))
    await broker.fetch_balance(ref)  # reads are not affected
    with pytest.raises(RateLimited) as e:
        await broker.create_order(ref, req("IBM", BUY, 1))
    assert e.value.retry_after == 2
    assert await count(db, PaperOrder) == 0
    assert (await broker.create_order(ref, req("IBM", BUY, 1))).status is OrderStatus.FILLED


async def test_concurrent_first_reads_create_the_account_once(
    db: Database, make_broker: BrokerFactory
) -> None:
    """A signal's snapshot reads positions and open orders at once from a new adapter: the
    account is looked up (and, on first use, created) once, not raced by both reads."""
    lookups: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith(("SELECT paper_accounts", "INSERT INTO paper_accounts")):
            lookups.append(statement.split()[0])

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    broker = make_broker()
    ref = AccountRef(broker.account_id, AccountType.MARGIN, Environment.PAPER)
    positions, orders = await asyncio.gather(
        broker.fetch_positions(ref), broker.fetch_open_orders(ref)
    )
    assert positions == [] and orders == []
    assert lookups == ["SELECT", "INSERT"]


# -- concurrent placement (a signal's fan-out) ------------------------------------------------


async def _brokers(
    db: Database, feed: SimulatedFeed, clock: FakeClock, n: int, **extra: Any
) -> list[tuple[PaperBroker, AccountRef]]:
    made = []
    for user in range(n):
        cid = await new_paper_connection(db, 3000 + user)
        broker = PaperBroker(
            AdapterContext(
                extra={"db": db, "connection_id": cid, "quote_source": feed, "clock": clock} | extra
            )
        )
        [account] = await broker.fetch_accounts()
        made.append((broker, account.ref()))
    return made


async def test_concurrent_orders_of_many_accounts_share_one_transaction(
    db: Database, feed: SimulatedFeed, clock: FakeClock
) -> None:
    feed.set_quote("AAPL", D("199.85"), D("199.89"))
    accounts = await _brokers(db, feed, clock, 6)
    locks: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE paper_accounts SET revision"):
            locks.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    orders = await asyncio.gather(
        *(
            b.create_order(ref, req("AAPL", BUY, 2, cid=f"c{i}"))
            for i, (b, ref) in enumerate(accounts)
        )
    )
    assert len(locks) == 1  # every account locked by one statement, in one transaction
    assert [o.client_order_id for o in orders] == [f"c{i}" for i in range(6)]
    for (broker, ref), order in zip(accounts, orders, strict=True):
        assert order.status is OrderStatus.FILLED and order.id.startswith(ref.id)
        [position] = await broker.fetch_positions(ref)
        assert (position.symbol, position.quantity) == ("AAPL", D(2))
        assert (await broker.fetch_balance(ref)).cash == D(100000) - D("199.87") * 2
        assert await stored_residual(db, ref.id) == 0


async def test_orders_for_one_account_in_one_batch_each_see_the_ones_before(
    db: Database, feed: SimulatedFeed, clock: FakeClock
) -> None:
    """Buying power is checked order by order within a batch: the second of two orders that
    each fit alone is refused, and an order for another account in the same batch fills."""
    feed.set_quote("XYZ", D("99.99"), D("100.01"))
    (small, ref), (other, other_ref) = await _brokers(db, feed, clock, 2, starting_cash=D(1000))
    first, second, third = await asyncio.gather(
        small.create_order(ref, req("XYZ", BUY, 6)),
        small.create_order(ref, req("XYZ", BUY, 6)),
        other.create_order(other_ref, req("XYZ", BUY, 6)),
        return_exceptions=True,
    )
    assert not isinstance(first, BaseException) and first.status is OrderStatus.FILLED
    assert isinstance(second, InsufficientBuyingPower)
    assert not isinstance(third, BaseException) and third.status is OrderStatus.FILLED
    assert await count(db, PaperOrder, account_id=ref.id) == 1
    [position] = await small.fetch_positions(ref)
    assert position.quantity == D(6) and await stored_residual(db, ref.id) == 0


@pytest.mark.parametrize(("limit", "accepted"), [("389.80", True), ("389.81", False)])
async def test_an_order_in_a_batch_sees_the_short_an_earlier_one_opened_at_its_mark(
    db: Database, feed: SimulatedFeed, clock: FakeClock, limit: str, accepted: bool
) -> None:
    """The first order of a batch turns a long into a short: the second is checked with that
    short at its mark (the mid), not at the bid it was sold at."""
    [(broker, ref)] = await _brokers(db, feed, clock, 1, market_price_type="bid_ask")
    feed.set_quote("AAPL", D("99.90"), D("100.10"))
    await broker.create_order(ref, req("AAPL", BUY, 100))  # at 100.10: cash 89,990
    feed.set_quote("AAPL", D("119.90"), D("120.10"))
    feed.set_quote("MSFT", D("500.00"), D("500.20"))
    flip, second = await asyncio.gather(
        broker.create_order(ref, req("AAPL", SELL, 300)),
        broker.create_order(ref, req("MSFT", BUY, 200, LMT, GTC, limit=limit)),
        return_exceptions=True,
    )
    assert not isinstance(flip, BaseException) and flip.status is OrderStatus.FILLED
    # Cash 89,990 + 300 × 119.90 = 125,960; the short of 200 at 120.00 holds 48,000.
    if accepted:
        assert not isinstance(second, BaseException) and second.status is OrderStatus.OPEN
        assert (await broker.fetch_balance(ref)).buying_power == 0
    else:
        assert isinstance(second, InsufficientBuyingPower)
        assert "needs $77,962.00" in str(second) and "has $77,960.00" in str(second)


async def test_accounts_are_opened_together_and_a_missing_connection_is_its_own_error(
    db: Database,
) -> None:
    from adapters.paper import store

    first, second = [await new_paper_connection(db, 4000 + i) for i in range(2)]
    opened = await store.ensure_accounts(
        db, [store.NewAccount(first), store.NewAccount(987654), store.NewAccount(second)]
    )
    assert isinstance(opened[1], store.AccountMissing)  # no such connection: nothing to open
    assert [getattr(a, "id", None) for a in opened[::2]] == [
        store.paper_account_id(first),
        store.paper_account_id(second),
    ]
    assert await count(db, PaperAccount) == 2
    again = await store.ensure_accounts(db, [store.NewAccount(second), store.NewAccount(second)])
    assert [getattr(a, "id", None) for a in again] == [store.paper_account_id(second)] * 2
    assert await count(db, PaperAccount) == 2


# -- contract expiry: ESZ26 stops trading Fri 18 Dec 2026 at 08:30 Chicago (14:30 UTC) ----------

ESZ26_ENDS = datetime(2026, 12, 18, 14, 30, tzinfo=UTC)


async def test_an_expired_or_unlisted_contract_is_refused_with_the_one_to_trade(
    db: Database, broker: PaperBroker, ref: AccountRef
) -> None:
    with pytest.raises(InvalidOrder) as e:
        await broker.create_order(ref, req("ESZ25", BUY, 1))
    assert str(e.value) == (
        "ESZ25 (E-mini S&P 500, December 2025) stopped trading on Fri 19 Dec 2025. "
        "Trade ESZ26, the contract trading now, or /ES."
    )
    with pytest.raises(InvalidOrder, match=r"There is no January 2027 E-mini S&P 500 contract"):
        broker.check_order(ref, req("ESF27", BUY, 1))
    assert await count(db, PaperOrder) == 0


async def test_a_contract_whose_last_business_day_was_before_a_holiday_is_refused(
    broker: PaperBroker, ref: AccountRef, clock: FakeClock
) -> None:
    # Gold stops on the third-last business day: Wed 25 Nov 2026, as Thanksgiving is none.
    clock.at = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    with pytest.raises(InvalidOrder) as e:
        await broker.create_order(ref, req("GCX26", BUY, 1))
    assert str(e.value).startswith(
        "GCX26 (Gold, November 2026) stopped trading on Wed 25 Nov 2026."
    )


async def test_a_resting_order_expires_with_its_contract(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, clock: FakeClock
) -> None:
    feed.set_quote("ESZ6", D("5899.75"), D("5900.25"))
    order = await broker.create_order(ref, req("ESZ6", BUY, 1, LMT, GTC, limit="5800"))
    assert order.symbol == "ESZ26"
    clock.at = ESZ26_ENDS - timedelta(seconds=1)
    assert await broker.sweep() == []
    clock.at = ESZ26_ENDS
    [update] = await broker.sweep()
    assert (update.event, update.order.status) == ("expired", OrderStatus.EXPIRED)
    assert update.order.reject_reason == "Expired: ESZ26 stopped trading on Fri 18 Dec 2026."
    with pytest.raises(InvalidOrder, match="stopped trading"):
        await broker.create_order(ref, req("ESZ26", SELL, 1))


async def test_a_position_held_past_expiry_is_settled_at_the_final_price_once(
    db: Database, broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed, clock: FakeClock
) -> None:
    feed.set_quote("ESZ26", D("5899.75"), D("5900.25"))
    await broker.create_order(ref, req("ESZ26", SELL, 2))  # short 2 at 5900
    await broker.create_order(ref, req("AAPL", BUY, 1))
    feed.set_quote("ESZ26", D("5889.75"), D("5890.25"))
    clock.at = ESZ26_ENDS - timedelta(minutes=1)
    assert await sweep_all(db, lambda _c: feed, clock=clock) == []
    clock.at = ESZ26_ENDS + timedelta(days=3)
    [update] = await sweep_all(db, lambda _c: feed, clock=clock)
    assert (update.event, update.fill_quantity, update.fill_price) == ("fill", D(2), D(5890))
    assert (update.order.side, update.order.client_order_id) == (BUY, "expiry-ESZ26")
    assert [p.symbol for p in await broker.fetch_positions(ref)] == ["AAPL"]
    balance = await broker.fetch_balance(ref)
    assert balance.realized_pnl == D(1000)  # (5900 - 5890) × 50 × 2
    assert await stored_residual(db, ref.id) == 0
    [settled, *_] = await broker.fetch_orders(ref)
    assert settled.client_order_id == "expiry-ESZ26" and settled.status is OrderStatus.FILLED
    assert await sweep_all(db, lambda _c: feed, clock=clock) == []


class QuotesUntil:
    """A broker as the price source that stops quoting a contract once it expired."""

    def __init__(self, clock: FakeClock, ends: datetime) -> None:
        self.clock, self.ends = clock, ends

    async def fetch_quote(self, symbol: str) -> Quote:
        if self.clock() >= self.ends:
            raise SymbolNotFound(f"{symbol} is not a tradable symbol")
        return Quote(symbol, D("5899.75"), D("5900.25"), D("5900"), self.clock())


async def test_a_broker_that_no_longer_quotes_the_contract_leaves_settling_to_the_feed(
    db: Database, make_broker: BrokerFactory, clock: FakeClock
) -> None:
    source = QuotesUntil(clock, ESZ26_ENDS)
    broker = make_broker(quote_source=source)
    [account] = await broker.fetch_accounts()
    await broker.create_order(account.ref(), req("ESZ26", BUY, 1))
    clock.at = ESZ26_ENDS + timedelta(hours=1)
    [update] = await sweep_all(db, lambda _c: source, clock=clock)
    final = SimulatedFeed().quote_at("ESZ26", ESZ26_ENDS)  # deterministic per symbol and time
    assert update.fill_price == (final.bid + final.ask) / 2
    assert update.order.info["simulated"] is True
    assert await broker.fetch_positions(account.ref()) == []


def shown(position: Any) -> tuple[Any, ...]:
    """Every field of a position as text (``Decimal('13.90')`` is not ``Decimal('13.9')``),
    then its info."""
    fields = [f for f in position.__dataclass_fields__ if f != "info"]
    return (*(repr(getattr(position, f)) for f in fields), position.info)


async def test_positions_read_as_before_field_for_field(
    broker: PaperBroker, ref: AccountRef, feed: SimulatedFeed
) -> None:
    """fetch_positions and fetch_position read their rows by a statement built once, with only
    the columns a position shows; each position is the same as before to the last digit
    (the expected reprs are the output of the previous reads) and the same from either."""
    for symbol, side, qty, bid, ask in (
        ("AAPL", BUY, "10", "199.99", "200.00"),
        ("MSFT", SELL, "7", "410.10", "410.13"),
        ("BTCUSD", BUY, "0.123", "95000.01", "95000.37"),
        ("ESZ6", BUY, "2", "5899.75", "5900.25"),
        ("NVDA", BUY, "1", "0.50", "0.51"),
    ):
        feed.set_quote(symbol, D(bid), D(ask))
        await broker.create_order(ref, req(symbol, side, qty, MKT, GTC))
    for symbol, bid, ask in (
        ("AAPL", "201.37", "201.40"),
        ("MSFT", "405.00", "405.20"),
        ("ESZ6", "5909.75", "5910.25"),
        ("NVDA", "0.70", "0.71"),
    ):
        feed.set_quote(symbol, D(bid), D(ask))
    await broker.create_order(ref, req("AAPL", SELL, "3"))  # some P&L realized
    positions = await broker.fetch_positions(ref)
    assert [shown(p) for p in positions] == POSITIONS_BEFORE
    for p in positions:
        assert shown(await broker.fetch_position(ref, p.symbol)) == shown(p)
    assert await broker.fetch_position(ref, "IBM") is None


# fetch_positions of the previous reads (5b9528f), field by field.
POSITIONS_BEFORE = [
    (
        "'AAPL'",
        "<AssetClass.EQUITY: 'equity'>",
        "Decimal('7')",
        "Decimal('199.995')",
        "Decimal('201.385')",
        "Decimal('1409.7')",
        "Decimal('1399.96')",
        "Decimal('9.73')",
        "Decimal('1')",
        {
            "simulated": True,
            "realized_pnl": "4.17",
            "opened_at": "2026-12-01T15:00:00+00:00",
            "priced_at_average": False,
        },
    ),
    (
        "'BTCUSD'",
        "<AssetClass.CRYPTO: 'crypto'>",
        "Decimal('0.123')",
        "Decimal('95000.19')",
        "Decimal('95000.19')",
        "Decimal('11685.02')",
        "Decimal('11685.02')",
        "Decimal('0')",
        "Decimal('1')",
        {
            "simulated": True,
            "realized_pnl": "0",
            "opened_at": "2026-12-01T15:00:00+00:00",
            "priced_at_average": False,
        },
    ),
    (
        "'ESZ26'",
        "<AssetClass.FUTURE: 'future'>",
        "Decimal('2')",
        "Decimal('5900')",
        "Decimal('5910')",
        "Decimal('591000')",
        "Decimal('590000')",
        "Decimal('1000')",
        "Decimal('50')",
        {
            "simulated": True,
            "realized_pnl": "0",
            "opened_at": "2026-12-01T15:00:00+00:00",
            "priced_at_average": False,
        },
    ),
    (
        "'MSFT'",
        "<AssetClass.EQUITY: 'equity'>",
        "Decimal('-7')",
        "Decimal('410.115')",
        "Decimal('405.1')",
        "Decimal('-2835.7')",
        "Decimal('-2870.8')",
        "Decimal('35.1')",
        "Decimal('1')",
        {
            "simulated": True,
            "realized_pnl": "0",
            "opened_at": "2026-12-01T15:00:00+00:00",
            "priced_at_average": False,
        },
    ),
    (
        "'NVDA'",
        "<AssetClass.EQUITY: 'equity'>",
        "Decimal('1')",
        "Decimal('0.505')",
        "Decimal('0.705')",
        "Decimal('0.7')",
        "Decimal('0.5')",
        "Decimal('0.2')",
        "Decimal('1')",
        {
            "simulated": True,
            "realized_pnl": "0",
            "opened_at": "2026-12-01T15:00:00+00:00",
            "priced_at_average": False,
        },
    ),
]


async def test_an_extended_hours_limit_fills_in_the_pre_market_a_plain_one_waits(
    make_broker: BrokerFactory, feed: SimulatedFeed, clock: FakeClock
) -> None:
    clock.at = datetime(2026, 12, 1, 12, tzinfo=UTC)  # 07:00 New York
    broker = make_broker(fill_hours="exchange")
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    feed.set_quote("AAPL", D("265.00"), D("265.10"))
    plain = await broker.create_order(ref, req("AAPL", BUY, 1, LMT, limit="266"))
    assert plain.status is OrderStatus.OPEN and not plain.extended_hours
    early = req("AAPL", BUY, 1, LMT, limit="266")
    early.extended_hours = True
    filled = await broker.create_order(ref, early)
    assert filled.status is OrderStatus.FILLED and filled.extended_hours
    resting = req("AAPL", BUY, 1, LMT, limit="200")
    resting.extended_hours = True
    waiting = await broker.create_order(ref, resting)
    assert waiting.info["expires_at"] == "2026-12-02T01:00:00+00:00"  # 20:00 New York
    market = req("AAPL", BUY, 1)
    market.extended_hours = True
    with pytest.raises(InvalidOrder, match="must be limit orders"):
        await broker.create_order(ref, market)
    coins = req("BTCUSD", BUY, "0.01", LMT, GTC, limit="1")
    coins.extended_hours = True
    with pytest.raises(InvalidOrder, match="stocks and ETFs"):
        await broker.create_order(ref, coins)
