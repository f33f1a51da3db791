"""Previews at real brokers refuse, before any card, what the broker cannot take from Tradecord:
an option position (Tradier lists them; Tradecord does not trade options), and a market order
while the exchange is shut where the broker rejects it then (TradeStation)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.models import AssetClass, OrderType
from bot.core import Core
from bot.db import Database
from bot.errors import TradecordError
from bot.services.trading import OrderInput
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from emulators.tradier import TradierEmulator
from tests.bot.conftest import MEMBER, open_cores
from tests.bot.test_order_updates import linked_margin_account
from tests.bot.test_preview_position_rules import connect
from tests.support import FakeClock

OCC = "AAPL250117C00150000"  # AAPL 17 Jan 2025 150 call
SATURDAY = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


@pytest.fixture
async def core(tradier_settings: Settings, db: Database) -> AsyncIterator[Core]:
    [c] = await open_cores(tradier_settings, 1)
    yield c
    await c.close()


@pytest.fixture
async def ts_core(ts_settings: Settings, db: Database) -> AsyncIterator[Core]:
    [c] = await open_cores(ts_settings, 1)
    yield c
    await c.close()


async def holding_an_option(core: Core, tradier: TradierEmulator) -> None:
    await connect(core, tradier, "margin")
    account = next(
        a for a in tradier.accounts.values() if a.type == "margin" and a.user_id == "id-demo"
    )
    tradier.add_position(account.number, OCC, Decimal(2), Decimal("5.00"))
    tradier.set_quote(OCC, 4.90, 5.10, 5.00, type="option")


async def test_closing_an_option_position_is_refused_before_the_card(
    core: Core, tradier: TradierEmulator
) -> None:
    """Priced as a share it showed a card 100 times too low, and sent class=equity."""
    await holding_an_option(core, tradier)
    with pytest.raises(TradecordError) as refused:
        await core.trading.close_preview(MEMBER, OCC, None, "Tradier", "live")
    message = refused.value.user_message
    assert "option" in message and "Tradecord does not trade options" in message
    assert "at Tradier" in message
    assert all(r.method == "GET" for r in tradier.requests), "nothing is sent"


async def test_trading_an_option_is_refused_before_the_card(
    core: Core, tradier: TradierEmulator
) -> None:
    await holding_an_option(core, tradier)
    with pytest.raises(TradecordError, match="Tradecord does not trade options"):
        await core.trading.preview(
            MEMBER, OrderInput(OCC, "buy", "1", connection="Tradier", mode="live")
        )


async def test_option_positions_are_still_listed(core: Core, tradier: TradierEmulator) -> None:
    await holding_an_option(core, tradier)
    holdings = await core.trading.holdings(MEMBER, "Tradier", "live")
    [option] = [p for p in holdings.positions if p.symbol == OCC]
    assert option.asset_class is AssetClass.OPTION and option.multiplier == 100
    assert option.market_value == Decimal("1000.00")  # 2 contracts of 100 at $5.00


async def ts_margin_at_night(core: Core, ts: TradeStationEmulator) -> None:
    """The member's TradeStation margin account chosen for live trading, on a Saturday."""
    await linked_margin_account(core, ts)
    core.trading.clock = FakeClock(SATURDAY)
    ts.market_open = False


async def test_a_market_order_at_tradestation_is_refused_while_the_market_is_shut(
    ts_core: Core, ts: TradeStationEmulator
) -> None:
    """The card said it would wait for the open; Confirm then met TradeStation's "Market is
    closed for MSFT. Market orders are not accepted outside trading hours"."""
    await ts_margin_at_night(ts_core, ts)
    with pytest.raises(TradecordError) as refused:
        await ts_core.trading.preview(
            MEMBER, OrderInput("MSFT", "buy", "1", connection="TS", mode="live")
        )
    message = refused.value.user_message
    assert "market is closed" in message.lower()
    assert "limit" in message and "GTC" in message


async def test_a_limit_order_at_tradestation_is_still_previewed_while_the_market_is_shut(
    ts_core: Core, ts: TradeStationEmulator
) -> None:
    await ts_margin_at_night(ts_core, ts)
    p = await ts_core.trading.preview(
        MEMBER,
        OrderInput(
            "MSFT",
            "buy",
            "1",
            order_type="limit",
            limit_price="400",
            time_in_force="gtc",
            connection="TS",
            mode="live",
        ),
    )
    assert p.request.order_type is OrderType.LIMIT and p.market_opens_at is not None
