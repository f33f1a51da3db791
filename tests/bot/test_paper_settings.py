"""Paper settings: the market price type and quote source a member chooses for Tradecord Paper,
the checks on them, and that later orders really fill that way."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from adapters.models import OrderRequest, OrderType, Side, TimeInForce
from adapters.paper import PaperBroker
from adapters.paper.engine import PriceType
from adapters.symbols import asset_class_of
from adapters.tradestation import TradeStationAdapter
from bot.core import Core
from bot.db import Database
from bot.errors import InvalidInput, NotFound
from bot.models import AuditEvent, Connection, ConnectionStatus, IntentStatus
from bot.services.notify import RecordingNotifier
from bot.services.order_updates import OrderUpdates
from bot.services.trading import Outcome
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import MEMBER, link

KEYS = itertools.count()


@pytest.fixture
async def core(ts_settings: Settings, db: Database) -> AsyncIterator[Core]:
    c = await Core.open(ts_settings, migrate=False)
    c.notifier = RecordingNotifier()
    yield c
    await c.close()


async def market(core: Core, side: Side, quantity: int = 1, symbol: str = "MSFT") -> Outcome:
    target = await core.connections.resolve(MEMBER, None, "paper")
    req = OrderRequest(
        symbol,
        side,
        Decimal(quantity),
        OrderType.MARKET,
        TimeInForce.DAY,
        asset_class=asset_class_of(symbol),
    )
    key = f"market-{next(KEYS)}"  # a fresh order each time, never a deduplicated repeat
    out = await core.trading.place(target, req, source="discord", idempotency_key=key)
    assert out.intent.status == IntentStatus.FILLED, out.message
    return out


def dm_texts(core: Core) -> list[str]:
    notifier = core.notifier
    assert isinstance(notifier, RecordingNotifier)
    return [m.content or "" for _, m in notifier.dms]


async def test_defaults_are_the_midpoint_and_the_simulated_feed(core: Core) -> None:
    settings = await core.connections.paper_settings(MEMBER)
    assert settings.connection.builtin
    assert settings.price_type is PriceType.MID and settings.quote_source is None
    # No options: nothing changes and nothing is audited.
    again = await core.connections.set_paper_settings(MEMBER)
    assert again.price_type is PriceType.MID and again.quote_source is None
    async with core.db.session() as s:
        assert not list(await s.scalars(select(AuditEvent).where(AuditEvent.kind.like("paper.%"))))


async def test_market_orders_fill_at_each_price_type_of_the_simulated_feed(core: Core) -> None:
    core.simulated_feed.set_quote("MSFT", Decimal("99.90"), Decimal("100.10"), Decimal("100.05"))
    expected = {
        PriceType.MID: ("100.00", "100.00"),
        PriceType.BID_ASK: ("100.10", "99.90"),
        PriceType.ASK: ("100.10", "100.10"),
        PriceType.BID: ("99.90", "99.90"),
        PriceType.LAST: ("100.05", "100.05"),
    }
    for price_type, (buy, sell) in expected.items():
        settings = await core.connections.set_paper_settings(MEMBER, price_type=price_type.value)
        assert settings.price_type is price_type and settings.quote_source is None
        bought, sold = await market(core, Side.BUY), await market(core, Side.SELL)
        assert bought.intent.average_fill_price == Decimal(buy), price_type
        assert sold.intent.average_fill_price == Decimal(sell), price_type
        assert bought.order is not None and bought.order.info["simulated"] is True


async def test_a_linked_broker_prices_paper_orders(core: Core, ts: TradeStationEmulator) -> None:
    await link(core, ts)
    ts.set_quote("MSFT", "300.00", "301.00", "300.25")
    core.simulated_feed.set_quote("MSFT", Decimal("99.90"), Decimal("100.10"))
    assert [c.name for c in await core.connections.quote_sources(MEMBER)] == ["TS"]
    settings = await core.connections.set_paper_settings(
        MEMBER, price_type="bid_ask", quote_source="ts"
    )
    assert settings.quote_source is not None and settings.quote_source.name == "TS"
    assert settings.quote_source_broker == "TradeStation"
    assert settings.price_type is PriceType.BID_ASK
    bought = await market(core, Side.BUY)
    assert bought.intent.average_fill_price == Decimal("301.00")  # TradeStation's ask
    assert bought.order is not None and bought.order.info["simulated"] is False
    sold = await market(core, Side.SELL)
    assert sold.intent.average_fill_price == Decimal("300.00")  # and its bid

    # Changing only the price type keeps the source.
    settings = await core.connections.set_paper_settings(MEMBER, price_type="last")
    assert settings.quote_source is not None and settings.quote_source.name == "TS"
    assert (await market(core, Side.BUY)).intent.average_fill_price == Decimal("300.25")

    # A resting order swept against the broker's quotes: its fill message is not "simulated".
    target = await core.connections.resolve(MEMBER, None, "paper")
    req = OrderRequest(
        "MSFT",
        Side.BUY,
        Decimal(1),
        OrderType.LIMIT,
        TimeInForce.GTC,
        limit_price=Decimal("290"),
        asset_class=asset_class_of("MSFT"),
    )
    out = await core.trading.place(target, req, source="discord", idempotency_key="rest")
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    ts.set_quote("MSFT", "288.00", "289.00", "288.50")
    assert await OrderUpdates(core).sweep_paper() == 1
    assert dm_texts(core) == ["📝 Paper order update: Filled: buy 1 MSFT at $288.50."]

    # /quote names where the prices come from.
    _, source, quote = await core.trading.quote(MEMBER, "msft", None, "paper")
    assert source == "TradeStation, Tradecord Paper's price source"
    assert (quote.bid, quote.ask, quote.simulated) == (Decimal("288.00"), Decimal("289.00"), False)

    # Back to the simulated feed.
    settings = await core.connections.set_paper_settings(MEMBER, quote_source="Simulated")
    assert settings.quote_source is None
    assert (await market(core, Side.BUY)).intent.average_fill_price == Decimal("100.00")
    _, source, quote = await core.trading.quote(MEMBER, "MSFT", None, "paper")
    assert (source, quote.bid, quote.simulated) == ("Tradecord Paper", Decimal("99.90"), True)


async def test_a_swept_fill_at_simulated_prices_says_so(core: Core) -> None:
    feed = core.simulated_feed
    feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    target = await core.connections.resolve(MEMBER, None, "paper")
    req = OrderRequest(
        "MSFT",
        Side.BUY,
        Decimal(1),
        OrderType.LIMIT,
        TimeInForce.GTC,
        limit_price=Decimal("386"),
        asset_class=asset_class_of("MSFT"),
    )
    out = await core.trading.place(target, req, source="discord", idempotency_key="sim")
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    feed.set_quote("MSFT", Decimal("385.00"), Decimal("385.20"))
    assert await OrderUpdates(core).sweep_paper() == 1
    assert dm_texts(core) == [
        "📝 Paper order update: Filled: buy 1 MSFT at $385.10. · simulated prices"
    ]


async def test_changes_are_audited(core: Core, ts: TradeStationEmulator) -> None:
    cid = await link(core, ts)
    await core.connections.set_paper_settings(MEMBER, price_type="ask", quote_source="TS")
    await core.connections.set_paper_settings(MEMBER, quote_source="simulated")
    async with core.db.session() as s:
        events = list(
            await s.scalars(
                select(AuditEvent)
                .where(AuditEvent.kind == "paper.settings_changed")
                .order_by(AuditEvent.id)
            )
        )
    assert [e.detail["quote_source_connection_id"] for e in events] == [cid, None]
    assert events[0].detail["price_type"] == "ask"
    assert events[0].detail["previous_price_type"] == "mid"
    assert events[1].detail["previous_quote_source"] == "TS"
    assert events[1].detail["quote_source"] == "simulated"
    paper = (await core.connections.paper_settings(MEMBER)).connection
    assert {e.connection_id for e in events} == {paper.id}
    assert {e.member_id for e in events} == {paper.member_id}


async def test_bad_price_type(core: Core) -> None:
    with pytest.raises(InvalidInput, match=r"not a market price type.*mid, bid_ask, ask, bid"):
        await core.connections.set_paper_settings(MEMBER, price_type="best")
    assert (await core.connections.paper_settings(MEMBER)).price_type is PriceType.MID


async def test_a_source_that_is_not_the_members(core: Core, ts: TradeStationEmulator) -> None:
    await link(core, ts)  # MEMBER's TS: another member cannot use it
    with pytest.raises(NotFound, match=r"no connection named “TS”.*simulated.*/connect"):
        await core.connections.set_paper_settings(MEMBER + 1, quote_source="TS")
    with pytest.raises(NotFound, match="no connection named “Nope”"):
        await core.connections.set_paper_settings(MEMBER, quote_source="Nope")


async def test_paper_cannot_price_itself(core: Core) -> None:
    with pytest.raises(InvalidInput, match="cannot price itself"):
        await core.connections.set_paper_settings(MEMBER, quote_source="Tradecord Paper")


async def test_a_source_that_needs_relinking(core: Core, ts: TradeStationEmulator) -> None:
    cid = await link(core, ts)
    async with core.db.transaction() as s:
        await s.execute(
            update(Connection)
            .where(Connection.id == cid)
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )
    with pytest.raises(InvalidInput, match=r"re-linked.*/connect broker:TradeStation"):
        await core.connections.set_paper_settings(MEMBER, quote_source="TS")
    assert await core.connections.quote_sources(MEMBER) == []


async def test_crypto_on_paper_priced_by_a_broker_without_crypto_is_simulated(
    core: Core, ts: TradeStationEmulator
) -> None:
    """Before: TradeStation answered "does not know the symbol BTCUSD. Check the ticker": a
    ticker paper trades, refused because its price source trades no crypto."""
    await link(core, ts)
    ts.set_quote("MSFT", "300.00", "301.00", "300.25")
    core.simulated_feed.set_quote("BTCUSD", Decimal("49990"), Decimal("50010"))
    await core.connections.set_paper_settings(MEMBER, quote_source="TS")
    target = await core.connections.resolve(MEMBER, None, "paper")
    req = OrderRequest(
        "BTCUSD",
        Side.BUY,
        Decimal(1),
        OrderType.MARKET,
        TimeInForce.GTC,
        asset_class=asset_class_of("BTCUSD"),
    )
    btc = await core.trading.place(target, req, source="discord", idempotency_key="btc")
    assert btc.intent.average_fill_price == Decimal("50000"), btc.message
    assert btc.order is not None and btc.order.info["simulated"] is True
    _, _, quote = await core.trading.quote(MEMBER, "BTCUSD", None, "paper")
    assert quote.simulated
    msft = await market(core, Side.BUY)  # stocks still come from TradeStation
    assert msft.order is not None and msft.order.info["simulated"] is False
    # What a signal's order is marked with (its results then say "simulated prices").
    adapter = await core.connections.adapter_for(target.connection)
    assert isinstance(adapter, PaperBroker)
    assert adapter.simulates("BTCUSD") and not adapter.simulates("MSFT")


async def test_a_source_that_needs_relinking_is_named_as_paper_s_prices(
    core: Core, ts: TradeStationEmulator
) -> None:
    """Before: a paper /trade said only "“TS” needs to be re-linked", never that it is paper's
    price source nor how to trade meanwhile; /paper settings showed it as fine."""
    cid = await link(core, ts)
    await core.connections.set_paper_settings(MEMBER, quote_source="TS")
    async with core.db.transaction() as s:
        await s.execute(
            update(Connection)
            .where(Connection.id == cid)
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )
    target = await core.connections.resolve(MEMBER, None, "paper")
    req = OrderRequest("MSFT", Side.BUY, Decimal(1), asset_class=asset_class_of("MSFT"))
    out = await core.trading.place(target, req, source="discord", idempotency_key="relink")
    assert out.intent.status != IntentStatus.FILLED
    assert "Tradecord Paper takes its prices from “TS”" in out.message, out.message
    assert "/paper settings quote_source:simulated" in out.message


async def test_a_broker_without_quotes(
    core: Core, ts: TradeStationEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    await link(core, ts)
    monkeypatch.setattr(
        TradeStationAdapter,
        "capabilities",
        dataclasses.replace(TradeStationAdapter.capabilities, quotes=False),
    )
    with pytest.raises(InvalidInput, match=r"does not serve quotes.*Choose one of: simulated"):
        await core.connections.set_paper_settings(MEMBER, price_type="ask", quote_source="TS")
    # Nothing half-done: the valid price type in the same call was not saved either.
    assert (await core.connections.paper_settings(MEMBER)).price_type is PriceType.MID
    assert await core.connections.quote_sources(MEMBER) == []
