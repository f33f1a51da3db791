"""What a member sees when a broker is slow, an answer would be long, or a channel is
read-only: always an answer, within Discord's limits, and never a post around the server's
permissions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from adapters.models import Account, AccountType, Environment
from bot.components import account_menus
from bot.services.trading import OrderInput
from bot.settings import Settings
from emulators.discord.permissions import SEND_MESSAGES
from tests.cogs.test_accounts import linked
from tests.discord_harness import Harness, running_tradecord


@pytest.mark.parametrize(
    ("command", "focused", "read"),
    [("cancel order", "order", "open_orders"), ("close", "symbol", "holdings")],
)
async def test_choices_that_need_the_broker_come_in_time_when_it_is_slow(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch, command: str, focused: str, read: str
) -> None:
    """A broker taking 3.5 s to list orders or positions: Discord had dropped the request
    ("Loading options failed") and the late answer was refused, logged as an error."""
    h = tradecord
    original = getattr(h.core.trading, read)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3.5)
        return await original(*args, **kwargs)

    monkeypatch.setattr(h.core.trading, read, slow)
    choices = await h.emu.autocomplete(
        h.user("alice"),
        command,
        {},
        focused=focused,
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
        timeout=6,
    )
    assert choices == []


async def test_cancel_all_of_many_bracket_orders_says_what_it_did(tradecord: Harness) -> None:
    """24 resting buys with a take-profit and a stop-loss each: the answer named every part,
    past 2,000 characters; Discord refused it after the orders were cancelled, and the member
    read an error with the question still open."""
    h = tradecord
    alice = h.user("alice")
    h.core.simulated_feed.set_quote("AAPL", Decimal("99.90"), Decimal("100.10"))
    for n in range(24):
        order = OrderInput(
            "AAPL",
            "buy",
            "10",
            "limit",
            limit_price=f"{90 - n * 0.25:.2f}",
            time_in_force="gtc",
            take_profit="120.00",
            stop_loss="80.00",
        )
        preview = await h.core.trading.preview(alice, order)
        assert (await h.core.trading.confirm(preview.intent_id, alice)).ok
    ask = await h.reply("alice", "cancel all")
    done = (
        await (await h.emu.click(alice, ask, label="Cancel them all")).message(timeout=20)
    ).text()
    assert done.startswith("Cancelled 24 open orders"), done
    assert "and 19 more (/history lists them)." in done and len(done) < 2000, done


@pytest.fixture
async def with_brokers(settings: Settings, db: object) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


async def test_disconnecting_a_connection_with_many_subscriptions_can_be_asked(
    with_brokers: Harness,
) -> None:
    """40 subscriptions named in the question passed 2,000 characters: Discord refused it, and
    there was no way to disconnect at all."""
    h = with_brokers
    alice = h.user("alice")
    await linked(h, "alice", "tradestation")
    [conn] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
    _, accounts = await h.core.connections.broker_accounts(alice, conn.id)
    paper = next(a for a in accounts if a.environment.value == "paper")
    await h.core.connections.choose_account(alice, conn.id, "paper", paper.id)
    for n in range(40):
        name = f"Momentum breakout swing strategy number {n:02d} ES"
        await h.core.strategies.create(h.guild_id, alice, name)
        await h.core.subscriptions.subscribe(
            h.guild_id, alice, name, connection=conn.name, mode="paper"
        )
    question = await h.reply("alice", "disconnect", connection=conn.name)
    assert "and 35 more (/subscriptions)" in question.text(), question.text()
    assert [b.label for b in question.buttons()] == ["Disconnect", "Keep it"]


async def test_share_is_refused_where_the_member_may_not_post(tradecord: Harness) -> None:
    """A read-only channel (or a mute by overwrite): the bot posted the member's summary there
    for everyone, around the server's permissions."""
    h = tradecord
    h.emu.set_permission_overwrite(h.emu.trade_alerts.id, h.guild_id, deny=SEND_MESSAGES)
    result = await h.emu.slash(
        h.user("alice"),
        "positions",
        options={"share": True},
        guild_id=h.guild_id,
        channel_id=h.emu.trade_alerts.id,
    )
    answer = await result.message(timeout=10)
    assert answer.ephemeral
    assert "You cannot send messages in this channel" in answer.text(), answer.text()
    shared = await h.reply("alice", "positions", share=True)  # #general: posted
    assert not shared.ephemeral


def test_an_account_menu_says_how_many_accounts_it_leaves_out() -> None:
    """A select holds 25 options: a login's 26th to 30th accounts were cut without a word."""
    chosen = SimpleNamespace(account_id="SIM00029M")
    conn: Any = SimpleNamespace(
        id=7,
        name="TradeStation",
        broker="tradestation",
        account=lambda mode: chosen if mode == "live" else None,
    )
    accounts = [Account(f"SIM{n:05d}M", AccountType.MARGIN, Environment.LIVE) for n in range(30)]
    [row] = account_menus(conn, accounts)
    [menu] = row["components"]
    assert menu["placeholder"].endswith("(25 of 30 shown)"), menu["placeholder"]
    assert menu["options"][0]["value"] == "SIM00029M"  # the chosen one is never left out


async def test_sharing_a_strategy_is_answered_when_the_dm_is_slow(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The member shared with is told by DM before the command answers: a DM slower than 3 s
    (Discord's DM rate limit) left the owner with "The application did not respond", though
    the strategy was shared."""
    from tests.cogs.test_automation import create_strategy

    h = tradecord
    await create_strategy(h, "alice", "Trend")
    original = h.core.notifier.dm

    async def slow_dm(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3.5)
        return await original(*args, **kwargs)

    monkeypatch.setattr(h.core.notifier, "dm", slow_dm)
    result = await h.slash("alice", "strategy share", strategy="Trend", member=h.user("bob"))
    answer = await result.message(timeout=10)
    assert answer.ephemeral and "is shared with" in answer.text(), answer.text()


async def test_approve_on_an_expired_card_is_answered_when_the_dm_is_slow(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pressing Approve on an expired card DMs "expired" before answering: past 3 s Discord
    showed "This interaction failed" and the card kept its buttons."""
    from datetime import UTC, datetime, timedelta

    from tests.cogs.test_automation import awaiting_approval

    h = tradecord
    card, _ = await awaiting_approval(h)
    h.core.signals.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    original = h.core.notifier.dm

    async def slow_dm(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3.5)
        return await original(*args, **kwargs)

    monkeypatch.setattr(h.core.notifier, "dm", slow_dm)
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    answer = await pressed.message(timeout=10)
    assert "This approval expired" in answer.text(), answer.text()
    assert answer.buttons() == []
