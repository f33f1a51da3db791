"""The name public alerts show for a member who opted in follows their server nickname.
Before: /alerts show-my-name stored the nickname of that moment, and a member who renamed
"Alice Smith" -> "AS" to stop showing their real name kept being posted as "Alice Smith"."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlalchemy import select

from bot.automation_models import AlertPreference
from bot.db import Database
from bot.models import Member
from bot.settings import Settings
from emulators.discord import Message
from tests.cogs.test_automation import create_strategy, post
from tests.discord_harness import Harness, running_tradecord


async def stored_name(h: Harness, user: str) -> str | None:
    async with h.core.db.session() as s:
        return await s.scalar(
            select(AlertPreference.display_name)
            .join(Member, Member.id == AlertPreference.member_id)
            .where(Member.discord_user_id == h.user(user), AlertPreference.guild_id == h.guild_id)
        )


async def becomes(h: Harness, user: str, name: str) -> None:
    """Until the stored name is ``name``: the member update reaches the bot as an event."""
    for _ in range(200):
        if await stored_name(h, user) == name:
            return
        await asyncio.sleep(0.05)
    assert await stored_name(h, user) == name


async def alert_about(h: Harness, url: str, ticker: str) -> Message:
    h.core.simulated_feed.set_quote(ticker, Decimal("99.90"), Decimal("100.10"))
    status, _ = await post(url, {"ticker": ticker, "action": "buy"})
    assert status == 202
    return await h.emu.wait_for_message(
        # The subscriber's line, once the order has a result.
        lambda m: (
            m.channel_id == h.emu.trade_alerts.id and ticker in m.text() and "(paper)" in m.text()
        ),
        timeout=15,
        include_existing=True,
    )


async def opted_in(h: Harness) -> str:
    """alice, nicknamed "Alice Smith", subscribes to her strategy and is named in alerts."""
    h.emu.add_member(h.guild_id, h.user("alice"), nick="Alice Smith")
    url = await create_strategy(h, "alice", "Breakout")
    await h.reply("alice", "subscribe", strategy="Breakout")
    await h.reply(h.emu.owner.id, "alerts-channel", channel=h.emu.trade_alerts.id)
    return url


async def test_alerts_follow_a_nickname_changed_after_opting_in(
    settings: Settings, db: Database
) -> None:
    """With the Server Members intent: the member update says so, at once."""
    async with running_tradecord(settings, discord_members_intent=True) as h:
        url = await opted_in(h)
        named = await h.reply("alice", "alerts show-my-name", show=True)
        # Which name, and that it is not fixed: before, only "will name you".
        assert named.content == (
            "Alerts in this server will name you as “Alice Smith”, your name here (as plain "
            "text, never a mention). They follow it: change your server nickname and they "
            "show the new one. Other servers still say “a subscriber”."
        ), named.content
        assert "· Alice Smith (paper)" in (await alert_about(h, url, "AAPL")).text()
        h.emu.add_member(h.guild_id, h.user("alice"), nick="AS")  # GUILD_MEMBER_UPDATE
        await becomes(h, "alice", "AS")
        renamed = (await alert_about(h, url, "MSFT")).text()
        assert "· AS (paper)" in renamed and "Alice Smith" not in renamed, renamed


async def test_without_the_members_intent_the_next_command_refreshes_the_name(
    tradecord: Harness,
) -> None:
    """No member update reaches a bot without the privileged intent: the member's next
    interaction in the server carries their name, and it is kept from then."""
    h = tradecord
    url = await opted_in(h)
    named = await h.reply("alice", "alerts show-my-name", show=True)
    assert named.content.endswith(
        "They follow it: change your server nickname and they show the new one from your "
        "next Tradecord command here. Other servers still say “a subscriber”."
    ), named.content
    h.emu.add_member(h.guild_id, h.user("alice"), nick="AS")
    await h.reply("alice", "subscriptions")
    await becomes(h, "alice", "AS")
    renamed = (await alert_about(h, url, "MSFT")).text()
    assert "· AS (paper)" in renamed and "Alice Smith" not in renamed, renamed
    # Off: her name is not kept, nor refreshed.
    await h.reply("alice", "alerts show-my-name", show=False)
    h.emu.add_member(h.guild_id, h.user("alice"), nick="Alice again")
    await h.reply("alice", "subscriptions")
    assert await stored_name(h, "alice") is None
