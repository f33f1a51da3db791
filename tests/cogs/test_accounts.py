"""/accounts as a member reads it."""

from __future__ import annotations

import html
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.models import Order
from bot.settings import Settings
from tests.discord_harness import Harness, running_tradecord
from tests.web.test_connect_flow import (
    Browser,
    connect_link,
    finish_link,
    through_broker,
    through_discord,
)


@pytest.fixture
async def h(settings: Settings, db: object) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


async def linked(
    h: Harness, user: str, broker: str, environment: str | None = None, broker_user: str = "demo"
) -> None:
    b = Browser()
    try:
        if environment is None:
            link = await connect_link(h, user, broker)
        else:
            asked = await h.reply(user, "connect", broker=broker, environment=environment)
            link = str(asked.buttons()[0].url)
        done = await b.get(
            await through_broker(
                b, h, await through_discord(b, h, link, h.user(user)), broker_user=broker_user
            )
        )
        assert done.status == 200, await done.text()
    finally:
        await b.close()


async def test_the_futures_reminder_is_shown_only_where_the_login_has_futures_accounts(
    h: Harness,
) -> None:
    """/accounts connection:Alpaca said "Futures trade only in a futures account." above
    menus of margin accounts at a broker without futures: a puzzle, not a warning."""
    await h.core.members.set_plan(h.user("alice"), "pro", h.core.settings.plans, by=0)
    await linked(h, "alice", "alpaca")
    await linked(h, "alice", "tradestation")
    alpaca = await h.reply("alice", "accounts", connection="Alpaca")
    assert alpaca.selects() and "futures" not in alpaca.content.lower(), alpaca.content
    ts = await h.reply("alice", "accounts", connection="TradeStation")
    assert "Futures trade only in a futures account." in ts.content, ts.content


async def test_a_connection_linked_for_paper_only_is_not_said_to_wait_for_a_live_account(
    h: Harness,
) -> None:
    """/accounts connection:X of a link made with environment:paper said "trades live in: no
    account yet", above a paper menu only: there is no live account to choose there."""
    await linked(h, "alice", "tradestation", environment="paper")
    menus = await h.reply("alice", "accounts", connection="TradeStation")
    assert [s["custom_id"].rsplit(":", 1)[1] for s in menus.selects()] == ["paper"]
    assert "live" not in menus.content, menus.content
    assert "trades paper in: no account yet (linked for paper only)." in menus.content


async def test_an_account_another_connection_trades_in_is_marked_in_the_menus(
    h: Harness,
) -> None:
    """The same TradeStation login linked twice offered the first connection's futures account
    in the second's menus as "futures trade here", then refused it once chosen; the option
    now says whose it is, in /accounts and in the DM sent after linking."""
    alice = h.user("alice")
    await h.core.members.set_plan(alice, "pro", h.core.settings.plans, by=0)
    await linked(h, "alice", "tradestation")
    [first] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
    _, accounts = await h.core.connections.broker_accounts(alice, first.id)
    futures = next(
        a for a in accounts if a.environment.value == "live" and a.type.value == "futures"
    )
    await h.core.connections.choose_account(alice, first.id, "live", futures.id)
    await linked(h, "alice", "tradestation")
    dm = await h.emu.wait_for_message(
        lambda m: "**TradeStation 2** is linked" in m.content, include_existing=True
    )
    menus = await h.reply("alice", "accounts", connection="TradeStation 2")
    for message in (dm, menus):
        live = next(s for s in message.selects() if s["custom_id"].endswith(":live"))
        says = {o["value"]: o["description"] for o in live["options"]}
        assert says[futures.id] == "live · futures account · already “TradeStation”'s", says
        assert all("already" not in d for v, d in says.items() if v != futures.id), says


async def test_a_login_with_no_account_is_told_what_to_do(h: Harness) -> None:
    """A login with no account (not opened yet, or the wrong login) got a DM asking to choose
    "below" above no menu, and /accounts said only "the broker lists no accounts"."""
    h.sandbox.emulators["tradestation"].add_user("empty")
    done = await finish_link(h, await connect_link(h, "alice"), broker_user="empty")
    assert done.status == 200
    page = html.unescape(await done.text())
    assert "has no account to choose yet" in page and "in the message we sent" not in page
    dm = await h.emu.wait_for_message(
        lambda m: "**TradeStation** is linked" in m.content, include_existing=True
    )
    assert not dm.components and "Choose" not in dm.content, dm.content
    advice = "has no account to choose yet, so it cannot trade. If you opened one just now"
    assert advice in dm.content, dm.content
    told = await h.reply("alice", "accounts", connection="TradeStation")
    assert advice in told.content and "/disconnect “TradeStation”" in told.content, told.content


async def test_an_error_in_answering_an_account_choice_gets_the_incident_message(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in the reply after a member picked an account, in /accounts or in the DM sent
    after linking, reached no handler (a menu's error, not a command's): they saw "This
    interaction failed" though the account had been chosen."""
    alice = h.user("alice")
    await linked(h, "alice", "tradestation")
    dm = await h.emu.wait_for_message(
        lambda m: "is linked" in m.content and bool(m.selects()), include_existing=True
    )
    menus = await h.reply("alice", "accounts", connection="TradeStation")

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("sending failed")

    # The module the bot loaded as its extension (discord.py imports a fresh one).
    connections = sys.modules[type(h.bot.get_cog("Connections")).__module__]
    monkeypatch.setattr(connections, "reply", broken)
    h.errors.expect(r"Incident [0-9A-F]{8} in component")
    for message in (dm, menus):
        menu = message.selects()[0]
        mode = menu["custom_id"].rsplit(":", 1)[1]
        [conn] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
        chosen = conn.account(mode)
        # One the connection does not trade in yet, so that choosing it changes something.
        value = next(
            o["value"] for o in menu["options"] if chosen is None or o["value"] != chosen.account_id
        )
        chose = await h.emu.select(
            alice, h.emu.message(message.id), [value], custom_id=menu["custom_id"]
        )
        answer = await chose.message(timeout=10)
        assert answer.ephemeral, answer.text()
        assert re.search(r"incident [0-9A-F]{8}", answer.text()), answer.text()
        [conn] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
        now = conn.account(mode)
        assert now is not None and now.account_id == value  # chosen before the reply failed


async def tradier_bracket(h: Harness) -> list[Order]:
    """alice trades live at Tradier (its margin account) and has a bracketed limit buy of F
    resting: the working orders, entry and exits."""
    alice = h.user("alice")
    await linked(h, "alice", "tradier", "live", broker_user="id-demo")
    [conn] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
    _, accounts = await h.core.connections.broker_accounts(alice, conn.id)
    margin = next(a for a in accounts if a.type.value == "margin" and a.environment.value == "live")
    await h.core.connections.choose_account(alice, conn.id, "live", margin.id)
    card = await h.reply(
        "alice",
        "trade",
        symbol="F",
        side="buy",
        quantity="10",
        order_type="limit",
        limit_price="11.05",
        take_profit="12.50",
        stop_loss="9.50",
        mode="live",
        connection="Tradier",
    )
    await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)
    _, _, working = await h.core.trading.open_orders(alice, None, "live")
    return working


async def test_cancelling_one_exit_at_tradier_says_the_bracket_went_with_it(h: Harness) -> None:
    """Tradier cancels a bracket's exits together: /cancel of the take-profit alone took the
    stop-loss along, and the answer only spoke of the take-profit."""
    working = await tradier_bracket(h)
    take_profit = next(o for o in working if o.limit_price is not None and o.parent_id)
    done = (await h.reply("alice", "cancel order", order=take_profit.id, mode="live")).text()
    assert done.startswith(f"Order {take_profit.id[-8:]} on Tradier is now cancelled"), done
    assert "Tradier cancels a bracket's exits together" in done and "stop" in done, done


async def test_accounts_fits_discord_with_a_pro_plans_25_connections_waiting(
    settings: Settings, db: object
) -> None:
    """Before: 25 connections and Tradecord Paper were 26 embed fields (Discord takes 25), and
    15 long names waiting for an account passed a field's 1,024 characters: every /accounts
    answered "Something went wrong"."""
    from bot.models import Connection, ConnectionStatus

    async with running_tradecord(settings) as h:
        member_id = await h.core.members.ensure(h.user("alice"))
        async with h.core.db.transaction() as s:
            for n in range(25):
                name = f"{n:02d} " + "x" * 47
                s.add(
                    Connection(
                        member_id=member_id,
                        broker="tradestation",
                        name=name,
                        name_key=name.casefold(),
                        status=ConnectionStatus.NEEDS_ACCOUNT,
                    )
                )
        answer = await h.reply("alice", "accounts")
        text = answer.text()
        assert "Something went wrong" not in text, text
        assert "And 14 more" in text and "/accounts connection:<name> shows one." in text
        assert "Trading is off until you choose an account" in text and "… and" in text
