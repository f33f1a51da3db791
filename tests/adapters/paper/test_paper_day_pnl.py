"""Tradecord Paper's day P&L: the change in equity since the previous trading day's close
(16:00 New York), as Alpaca's ``equity - last_equity``, whatever was bought, sold, shorted or
closed out since."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from adapters.models import AccountRef, OrderRequest, OrderType, Quote, Side, TimeInForce
from adapters.paper import PaperBroker, SimulatedFeed

from .conftest import BrokerFactory, FakeClock

D = Decimal
TUESDAY_CLOSE = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)  # 16:00 in New York
WEDNESDAY = datetime(2026, 12, 2, 16, 0, tzinfo=UTC)  # 11:00 in New York


def order(symbol: str, side: Side, quantity: int) -> OrderRequest:
    return OrderRequest(symbol, side, D(quantity), OrderType.MARKET, TimeInForce.GTC)


async def equity(broker: PaperBroker, ref: AccountRef) -> Decimal:
    return (await broker.fetch_balance(ref)).equity


async def test_day_pnl_is_the_change_in_equity_since_the_last_close(
    broker: PaperBroker, ref: AccountRef, clock: FakeClock
) -> None:
    # Tuesday morning: long stock, short stock, a future, and a stock sold out tomorrow.
    for symbol, side, quantity in [
        ("AAPL", Side.BUY, 10),
        ("MSFT", Side.SELL, 5),
        ("ESZ6", Side.BUY, 1),
        ("NVDA", Side.BUY, 2),
    ]:
        await broker.create_order(ref, order(symbol, side, quantity))
    clock.at = TUESDAY_CLOSE
    at_close = await equity(broker, ref)

    clock.at = WEDNESDAY
    await broker.create_order(ref, order("NVDA", Side.SELL, 2))  # closed out today
    await broker.create_order(ref, order("AAPL", Side.BUY, 3))  # added to today
    await broker.create_order(ref, order("TSLA", Side.BUY, 4))  # opened today
    clock.advance(minutes=95)
    balance = await broker.fetch_balance(ref)
    assert balance.day_pnl is not None and balance.day_pnl != 0
    # Both are rounded to the cent on their own.
    assert abs(balance.day_pnl - (balance.equity - at_close)) <= D("0.01"), (
        balance.day_pnl,
        balance.equity - at_close,
    )


async def test_an_account_opened_today_counts_from_its_first_fill(
    broker: PaperBroker, ref: AccountRef, clock: FakeClock, feed: SimulatedFeed
) -> None:
    feed.set_quote("AAPL", D("199.90"), D("200.10"))
    await broker.create_order(ref, order("AAPL", Side.BUY, 10))  # at the midpoint, 200
    feed.set_quote("AAPL", D("204.90"), D("205.10"))
    assert (await broker.fetch_balance(ref)).day_pnl == D(50)


class BrokerQuotes:
    """A broker's quotes: of now only."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.prices = {"AAPL": D(200)}

    async def fetch_quote(self, symbol: str) -> Quote:
        price = self.prices[symbol]
        return Quote(symbol, price - D("0.05"), price + D("0.05"), price, self.clock())


async def test_priced_by_a_broker_it_has_no_day_pnl_for_what_was_held_overnight(
    make_broker: BrokerFactory, clock: FakeClock
) -> None:
    quotes = BrokerQuotes(clock)
    broker = make_broker(quote_source=quotes)
    [account] = await broker.fetch_accounts()
    ref = account.ref()
    await broker.create_order(ref, order("AAPL", Side.BUY, 10))
    quotes.prices["AAPL"] = D(203)
    assert (await broker.fetch_balance(ref)).day_pnl == D(30)  # all of it bought today
    clock.at = WEDNESDAY  # yesterday's close price is not to be had from a broker
    assert (await broker.fetch_balance(ref)).day_pnl is None
