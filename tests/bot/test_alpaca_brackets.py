"""Alpaca lists a bracket's working exits flat, as orders of their own: /orders still names
them as the exits of the entry Tradecord placed."""

from __future__ import annotations

from decimal import Decimal

from adapters.models import Bracket, OrderRequest, OrderType, Side, TimeInForce
from adapters.symbols import asset_class_of
from bot.core import Core
from bot.models import IntentStatus
from bot.services.trading import Outcome
from cogs.format import order_rows
from emulators.alpaca import AlpacaEmulator
from tests.bot.conftest import MEMBER
from tests.bot.test_order_updates import until
from tests.bot.test_replaced_orders import alpaca, alpaca_paper_connection, core

__all__ = ["alpaca", "core"]  # the fixtures


async def filled_alpaca_bracket(core: Core, alpaca: AlpacaEmulator) -> Outcome:
    """10 F bought at Alpaca (paper) with a take-profit at 20 and a stop-loss at 5, filled:
    its two exits working."""
    await alpaca_paper_connection(core, alpaca)
    target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
    entry = OrderRequest(
        "F",
        Side.BUY,
        Decimal(10),
        OrderType.MARKET,
        TimeInForce.GTC,
        asset_class=asset_class_of("F"),
        bracket=Bracket(take_profit=Decimal(20), stop_loss=Decimal(5)),
    )
    out = await core.trading.place(target, entry, source="discord", idempotency_key="b1")
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    await until(lambda: alpaca.order(out.intent.broker_order_id or "").status == "filled")
    return out


async def test_orders_names_the_exits_of_a_bracket_alpaca_lists_flat(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    out = await filled_alpaca_bracket(core, alpaca)
    _, _, orders = await core.trading.open_orders(MEMBER, "Alpaca", "paper")
    assert {o.parent_id for o in orders} == {out.intent.broker_order_id}
    assert [row[4] for row in order_rows(orders)] == ["TP limit", "SL stop"]
