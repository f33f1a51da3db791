"""A sell past a long position (or a buy past a short) that the broker only takes as two
orders is refused before its card, as at Tradier: Alpaca and TradeStation passed it, and then
refused it at Confirm. And what Alpaca's cancel of one bracket exit takes with it is told."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adapters.errors import InvalidOrder
from adapters.models import OrderChange
from bot.core import Core
from bot.errors import TradecordError
from bot.models import IntentStatus
from bot.services.trading import OrderInput
from bot.settings import Settings
from emulators.alpaca import AlpacaEmulator
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import MEMBER, link
from tests.bot.test_alpaca_brackets import filled_alpaca_bracket
from tests.bot.test_replaced_orders import alpaca, alpaca_paper_connection, core

__all__ = ["alpaca", "core"]  # the fixtures


def ts_limit(symbol: str, side: str, quantity: str, price: str) -> OrderInput:
    # Limit GTC: a market order is refused while the market is closed, whatever the position.
    return OrderInput(
        symbol,
        side,
        quantity,
        order_type="limit",
        limit_price=price,
        time_in_force="gtc",
        connection="TS",
        mode="live",
    )


async def ts_margin(core: Core, ts: TradeStationEmulator) -> None:
    """The member's "TS" connection trading the live margin account, which holds 10 AAPL."""
    cid = await link(core, ts)
    _, accounts = await core.connections.broker_accounts(MEMBER, cid)
    live = {a.type.value: a for a in accounts if a.environment.value == "live"}
    await core.connections.choose_account(MEMBER, cid, "live", live["margin"].id)


async def test_alpaca_refuses_a_sell_through_a_long_position_at_the_card(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """Before: the card said "once filled you are short 5", and Confirm answered "Quantities
    held by other open orders do not count", though there were none."""
    await alpaca_paper_connection(core, alpaca)  # the demo paper account holds 10 AAPL
    with pytest.raises(InvalidOrder) as refused:
        await core.trading.preview(
            MEMBER, OrderInput("AAPL", "sell", "15", connection="Alpaca", mode="paper")
        )
    said = refused.value.user_message
    assert "Sell 10 first, then sell short the rest" in said, said
    assert "open orders" not in said, said
    await core.trading.preview(
        MEMBER, OrderInput("AAPL", "sell", "10", connection="Alpaca", mode="paper")
    )
    assert not alpaca.requests_to(r"/v2/orders$", "POST"), "a preview sends no order"


async def test_tradestation_refuses_a_reversal_at_the_card(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """Before: passed at the card, then "The broker rejected the order: …" at Confirm, though
    the adapter had refused it itself and nothing was sent."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        await ts_margin(core, ts)
        with pytest.raises(InvalidOrder) as refused:
            await core.trading.preview(MEMBER, ts_limit("AAPL", "sell", "15", "999"))
        assert "Sell 10 first, then sell short the rest" in refused.value.user_message
        ts.set_position("11827342", "TSLA", -3, "340")
        with pytest.raises(InvalidOrder, match="Buy 3 to cover first, then buy the rest"):
            await core.trading.preview(MEMBER, ts_limit("TSLA", "buy", "5", "1"))
        await core.trading.preview(MEMBER, ts_limit("AAPL", "sell", "10", "999"))
    finally:
        await core.close()


async def test_tradestation_refuses_raising_a_sell_past_the_long_at_the_modify_card(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """Before: /modify showed "once the order fills you are short 5", and Confirm answered
    "TradeStation rejected the order: Sell quantity 15 exceeds the long position of 10"."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        await ts_margin(core, ts)
        card = await core.trading.preview(MEMBER, ts_limit("AAPL", "sell", "10", "999"))
        placed = await core.trading.confirm(card.intent_id, MEMBER)
        assert placed.intent.status == IntentStatus.ACCEPTED, placed.message
        oid = placed.intent.broker_order_id
        assert oid is not None
        with pytest.raises(TradecordError) as refused:
            await core.trading.preview_change(
                MEMBER, "TS", "live", oid, OrderChange(quantity=Decimal(15))
            )
        said = refused.value.user_message
        assert "10" in said and "/trade" in said, said
        # Within the position it is a change like any other.
        await core.trading.preview_change(
            MEMBER, "TS", "live", oid, OrderChange(limit_price=Decimal(990))
        )
    finally:
        await core.close()


async def test_cancelling_one_exit_at_alpaca_reports_the_exit_that_went_with_it(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """Alpaca's bracket exits are one-cancels-other: the take-profit cancelled alone takes the
    stop-loss with it, and /cancel's answer must say so, not only "take-profit cancelled"."""
    await filled_alpaca_bracket(core, alpaca)
    _, _, working = await core.trading.open_orders(MEMBER, "Alpaca", "paper")
    take_profit = next(o for o in working if o.limit_price == Decimal(20))
    _, cancelled = await core.trading.cancel(MEMBER, "Alpaca", "paper", [take_profit.id])
    assert {o.id for o in cancelled} == {o.id for o in working if o.parent_id}, cancelled
    assert all(o.status.is_final for o in cancelled)
