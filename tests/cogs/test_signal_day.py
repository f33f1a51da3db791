"""A member's day with a strategy's signals, as they read it in Discord: the result DM, the
alert channel, /signal list and /signal show say each outcome in the same words, each reason
once, and keep what ran after the member stopped trading the strategy."""

from __future__ import annotations

import re
from decimal import Decimal

from tests.cogs.test_automation import create_strategy, dm_to, post, signal_done
from tests.discord_harness import Harness


async def alerts_to_channel(h: Harness) -> int:
    channel = h.emu.trade_alerts.id
    await h.emu.slash(
        h.emu.owner.id,
        "alerts-channel",
        options={"channel": channel},
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
    )
    return channel


async def test_an_order_held_back_is_not_placed_in_every_word(tradecord: Harness) -> None:
    """Before: the DM and the channel said "⛔ Not placed" for an order refused because the
    member paused their trading, while /signal list, /signal show and its autocomplete said
    "failed"."""
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    channel = await alerts_to_channel(h)
    url = await create_strategy(h, "alice", "Breakout")
    await h.reply("alice", "subscribe", strategy="Breakout")
    await h.reply("alice", "pause")
    _, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    signal_id = str(body["id"])
    dm = await dm_to(h, "alice", "Your trading is paused")
    assert dm.text().startswith("⛔ Not placed: **Breakout**"), dm.text()
    line = await h.emu.wait_for_message(
        lambda m: m.channel_id == channel and "member-paused" in m.text(),
        timeout=15,
        include_existing=True,
    )
    assert "⛔ Not placed · A subscriber (paper): buy 1 AAPL (member-paused)" in line.text()
    await signal_done(h, signal_id)

    listed = (await h.reply("alice", "signal list")).text()
    [row] = [r for r in listed.splitlines() if signal_id[-8:] in r]
    assert row.rstrip().endswith("not placed"), listed
    shown = await h.reply("alice", "signal show", id=signal_id)
    embed = shown.embeds[0]
    assert embed["description"].startswith("buy AAPL · not placed"), embed["description"]
    [field] = embed["fields"][1:]
    assert field["name"] == "You · Tradecord Paper (paper) · not placed", field["name"]
    assert "buy 1 AAPL → not placed" in field["value"], field["value"]
    assert "failed" not in shown.text(), shown.text()
    choices = await h.emu.autocomplete(
        h.user("alice"), "signal show", options={"id": "not placed"}, focused="id"
    )
    assert [c["value"] for c in choices] == [signal_id], choices
    assert choices[0]["name"].endswith("· Breakout · not placed"), choices


async def test_a_cancel_with_nothing_to_cancel_says_why_once(tradecord: Harness) -> None:
    """Before: /signal show said it three times, the first on a step that sized nothing:
    "sized (No open AAPL orders.)", "skipped (No open AAPL orders.)", a blank line, then
    "No open AAPL orders."."""
    h = tradecord
    url = await create_strategy(h, "alice", "Breakout")
    await h.reply("alice", "subscribe", strategy="Breakout")
    _, body = await post(url, {"ticker": "AAPL", "action": "cancel"})
    await dm_to(h, "alice", "No open AAPL orders.")
    await signal_done(h, str(body["id"]))
    shown = await h.reply("alice", "signal show", id=str(body["id"]))
    [field] = shown.embeds[0]["fields"][1:]
    value = field["value"]
    assert field["name"] == "You · Tradecord Paper (paper) · skipped", field["name"]
    steps = re.findall(r"^(\S.*?)\s+\d\d:\d\d:\d\d\.\d{3}", value, re.M)
    assert steps == ["skipped"], value
    assert value.endswith("```\nNo open AAPL orders."), value
    assert value.count("No open AAPL orders.") == 1 and "\n\n" not in value, value


async def test_what_ran_stays_in_signal_show_after_unsubscribe(tradecord: Harness) -> None:
    """/unsubscribe says "Orders already placed and positions stay as they are": before,
    /signal show lost the orders and their steps once the subscription was gone."""
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Breakout")
    await h.reply("alice", "subscribe", strategy="Breakout")
    _, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    await dm_to(h, "alice", "Filled: **Breakout**")
    await signal_done(h, str(body["id"]))
    before = (await h.reply("alice", "signal show", id=str(body["id"]))).embeds[0]["fields"]
    stopped = await h.reply("alice", "unsubscribe", strategy="Breakout")
    assert "Orders already placed and positions stay as they are" in stopped.text()
    after = (await h.reply("alice", "signal show", id=str(body["id"]))).embeds[0]["fields"]
    assert after == before, after
    assert "entry filled" in after[1]["value"] and "buy 1 AAPL → filled" in after[1]["value"]
