"""Strategies, subscriptions, alerts and approvals end to end: slash commands through the local
Discord, signals through the bot's own webhook over HTTP, results in DMs and channels."""

from __future__ import annotations

import re
from decimal import Decimal

import aiohttp
import pytest
from sqlalchemy import func, select

from adapters.paper.models import PaperOrder
from emulators.discord import Message
from emulators.discord.errors import EmulatorError
from tests.discord_harness import Harness


async def create_strategy(h: Harness, user: str, name: str) -> str:
    msg = await h.reply(user, "strategy create", name=name)
    assert msg.ephemeral
    m = re.search(r"`(http://\S+/webhook/\S+/\S+)`", msg.content)
    assert m, msg.content
    # The URL is built from PUBLIC_URL; send to where this test's web server listens.
    path = m.group(1).split("/webhook/", 1)[1]
    return f"http://127.0.0.1:{h.bot.web_port}/webhook/{path}"


async def post(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status, await r.json()


async def paper_orders(h: Harness) -> int:
    async with h.core.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(PaperOrder)) or 0)


async def dm_to(h: Harness, user: str, text: str) -> Message:
    uid = h.user(user)

    def to_them(m: Message) -> bool:
        return text in m.text() and any(d.id == m.id for d in h.emu.dm_messages(uid))

    return await h.emu.wait_for_message(to_them, timeout=15, include_existing=True)


async def test_signal_to_subscription_with_dm_and_channel_alert(tradecord: Harness) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Breakout")
    sub = await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="fixed_quantity", sizing_value="3"
    )
    assert "now trades **Breakout**" in sub.content
    owner = h.emu.owner.id
    set_alerts = await h.emu.slash(
        owner,
        "alerts channel",
        options={"channel": h.emu.trade_alerts.id},
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
    )
    assert "go to" in (await set_alerts.message()).content
    status, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    assert status == 202 and body["success"] is True
    done = await dm_to(h, "alice", "Breakout")
    assert "buy 3 AAPL" in done.text()
    post_ = await h.emu.wait_for_message(
        lambda m: m.channel_id == h.emu.trade_alerts.id and "AAPL" in m.text(),
        timeout=15,
        include_existing=True,
    )
    assert "TCP" not in post_.text() and "$1" not in post_.text()  # no account or balance
    assert "alice" not in post_.text().lower()  # not named: she did not opt in
    assert post_.allowed_mentions in (None, {"parse": []}) or not post_.mentions
    report = await h.reply("alice", "signal show", id=str(body["id"]))
    text = report.text()
    assert "received" in text and "ms" in text and "filled" in text.lower()
    assert await paper_orders(h) == 1


async def test_manual_approval_card(tradecord: Harness) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    url = await create_strategy(h, "bob", "Swing")
    await h.reply(
        "bob",
        "subscribe",
        strategy="Swing",
        sizing="fixed_quantity",
        sizing_value="2",
        approval=True,
    )
    status, _ = await post(url, {"ticker": "MSFT", "action": "buy"})
    assert status == 202
    card = await dm_to(h, "bob", "Waiting for your approval")
    assert [b.label for b in card.buttons()] == ["Approve", "Reject"]
    assert await paper_orders(h) == 0
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    edited = await pressed.message(timeout=15)
    assert edited.buttons() == []
    await dm_to(h, "bob", "Filled: buy 2 MSFT")
    assert await paper_orders(h) == 1


async def test_only_admins_choose_the_alert_channel_and_urls_stay_private(
    tradecord: Harness,
) -> None:
    h = tradecord
    # Discord hides /alerts from members without Manage Server (default permissions)...
    with pytest.raises(EmulatorError, match="hidden"):
        await h.reply("carol", "alerts channel", channel=h.emu.trade_alerts.id)
    # ...but a server admin can show it to anyone; the bot still checks when it runs.
    h.emu.set_command_permission(h.guild_id, "alerts", h.user("carol"), allow=True)
    denied = await h.reply("carol", "alerts channel", channel=h.emu.trade_alerts.id)
    assert denied.ephemeral and "Manage Server" in denied.content
    await create_strategy(h, "carol", "Mine")
    listing = await h.reply("carol", "strategy list")
    assert "Mine" in listing.text() and "/webhook/" not in listing.text()
    rotated = await h.reply("carol", "strategy rotate-secret", strategy="Mine")
    assert rotated.ephemeral and "/webhook/" in rotated.content
