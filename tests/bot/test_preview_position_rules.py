"""A /trade preview refuses what the broker would refuse given the position, before the card:
a short sale from a cash account, or (at Tradier) one order that crosses from long to short."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.errors import InvalidOrder
from adapters.models import Environment
from bot.core import Core
from bot.db import Database
from bot.services.oauth import TokenSet
from bot.services.trading import OrderInput
from bot.settings import Settings
from emulators.tradier import TradierEmulator
from tests.bot.conftest import MEMBER, open_cores, stored_connection

LIVE = Environment.LIVE


@pytest.fixture
async def core(tradier_settings: Settings, db: Database) -> AsyncIterator[Core]:
    [c] = await open_cores(tradier_settings, 1)
    yield c
    await c.close()


async def connect(core: Core, tradier: TradierEmulator, kind: str) -> None:
    """Connects id-demo's live ``kind`` account as "Tradier"."""
    grant = tradier.issue_tokens("id-demo", LIVE)
    account = next(
        a
        for a in tradier.accounts.values()
        if a.environment is LIVE and a.type == kind and a.user_id == "id-demo"
    )
    await stored_connection(
        core,
        MEMBER,
        TokenSet(grant["access_token"], grant.get("refresh_token"), None, grant["scope"]),
        broker="tradier",
        name="Tradier",
        settings={"environment": "live"},
        accounts=[
            {"mode": "live", "account_id": account.number, "account_type": kind, "label": kind}
        ],
    )


async def preview(core: Core, side: str, quantity: str) -> None:
    order = OrderInput("F", side, quantity, connection="Tradier", mode="live")
    await core.trading.preview(MEMBER, order)


async def test_a_short_sale_from_a_cash_account_is_refused_at_the_card(
    core: Core, tradier: TradierEmulator
) -> None:
    await connect(core, tradier, "cash")
    with pytest.raises(InvalidOrder) as refused:
        await preview(core, "sell", "5")
    assert refused.value.user_message == (
        "You hold no F in this cash account, so selling 5 would sell short, which a cash "
        "account cannot do. Sell short from a margin account (see /accounts)."
    )
    await preview(core, "buy", "5")  # a buy is fine


async def test_a_sell_through_a_long_position_is_refused_at_the_card(
    core: Core, tradier: TradierEmulator
) -> None:
    await connect(core, tradier, "margin")  # holds 10 AAPL
    with pytest.raises(InvalidOrder, match=r"cannot sell and go short in one order\. Sell 10"):
        await core.trading.preview(
            MEMBER, OrderInput("AAPL", "sell", "15", connection="Tradier", mode="live")
        )
    await core.trading.preview(
        MEMBER, OrderInput("AAPL", "sell", "10", connection="Tradier", mode="live")
    )
    assert all(r.method == "GET" for r in tradier.requests), "a preview sends no order"


async def test_cancelling_one_exit_at_tradier_reports_the_bracket_orders_that_went_with_it(
    core: Core, tradier: TradierEmulator
) -> None:
    """Tradier cancels a leg only through its bracket: the take-profit cancelled alone takes
    the stop-loss with it, and /cancel's answer must say so, not only "take-profit
    cancelled"."""
    from decimal import Decimal

    await connect(core, tradier, "margin")
    order = OrderInput(
        "F",
        "buy",
        "10",
        order_type="limit",
        limit_price="11.05",  # marketable: it fills at once and its exits work
        connection="Tradier",
        mode="live",
        take_profit="12.50",
        stop_loss="9.50",
    )
    preview = await core.trading.preview(MEMBER, order)
    await core.trading.confirm(preview.intent_id, MEMBER)
    _, _, working = await core.trading.open_orders(MEMBER, "Tradier", "live")
    take_profit = next(o for o in working if o.limit_price == Decimal("12.50"))
    _, cancelled = await core.trading.cancel(MEMBER, "Tradier", "live", [take_profit.id])
    assert {o.id for o in cancelled} == {o.id for o in working if o.parent_id}, cancelled
    assert all(o.status.is_final for o in cancelled)


async def test_a_confirm_after_the_connection_needs_re_linking_says_nothing_was_placed(
    core: Core, tradier: TradierEmulator
) -> None:
    """Before: "The broker rejected the order: “Tradier” needs to be re-linked", though no
    broker saw an order: Tradecord held it back for want of an authorization."""
    from sqlalchemy import update

    from bot.models import Connection, ConnectionStatus, IntentStatus

    await connect(core, tradier, "margin")
    card = await core.trading.preview(
        MEMBER, OrderInput("F", "buy", "1", connection="Tradier", mode="live")
    )
    async with core.db.transaction() as s:
        await s.execute(
            update(Connection)
            .where(Connection.name == "Tradier")
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )
    out = await core.trading.confirm(card.intent_id, MEMBER)
    assert out.intent.status == IntentStatus.FAILED
    assert out.message.startswith("Nothing was placed: “Tradier” needs to be re-linked"), (
        out.message
    )
