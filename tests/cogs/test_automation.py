"""Strategies, subscriptions, alerts and approvals end to end: slash commands through the local
Discord, signals through the bot's own webhook over HTTP, results in DMs and channels."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import discord
import pytest
from sqlalchemy import func, select

from adapters.paper.models import PaperOrder
from bot.automation_models import Job, JobStatus, ReceivedSignal, SignalStatus
from bot.db import Database
from bot.models import Connection, ConnectionAccount, ConnectionStatus
from bot.services.refusals import tell_refusals
from bot.services.signal_report import Phase, SignalReport, SubscriptionReport, as_sent
from bot.settings import Settings
from cogs.automation import joined, outcome, phase_table
from emulators.discord import Message
from emulators.discord.errors import EmulatorError
from emulators.discord.permissions import SEND_MESSAGES
from tests.discord_harness import Harness, running_tradecord
from tests.support import add_broker_connection


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


async def awaiting_approval(h: Harness) -> tuple[Message, dict[str, object]]:
    """bob's "Swing" on Tradecord Paper with manual approval, and a buy of MSFT (at
    $399.90 × $400.10) waiting for him: the approval card and the webhook's answer."""
    h.core.simulated_feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    url = await create_strategy(h, "bob", "Swing")
    await h.reply("bob", "subscribe", strategy="Swing", approval=True)
    status, body = await post(url, {"ticker": "MSFT", "action": "buy"})
    assert status == 202
    return await dm_to(h, "bob", "Waiting for your approval"), body


async def test_signal_to_subscription_with_dm_and_channel_alert(tradecord: Harness) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Breakout")
    sub = await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="fixed_quantity", sizing_value="3"
    )
    assert "now trades **Breakout**" in sub.content
    assert "Its exits close the account's whole position in a symbol" in sub.content
    owner = h.emu.owner.id
    set_alerts = await h.emu.slash(
        owner,
        "alerts-channel",
        options={"channel": h.emu.trade_alerts.id},
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
    )
    assert "go to" in (await set_alerts.message()).content
    sent_at = datetime.now(UTC) - timedelta(seconds=2)
    status, body = await post(url, {"ticker": "AAPL", "action": "buy", "time": sent_at.isoformat()})
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
    assert report.ephemeral
    assert "received" in text and "ms" in text and "filled" in text.lower()
    # The date once, then each phase at its UTC time to the millisecond.
    day = re.search(r"Received (\d{4}-\d\d-\d\d) \d\d:\d\d:\d\d\.\d{3} UTC", text)
    assert day, text
    assert f"Alert time {sent_at:%H:%M:%S}.{sent_at.microsecond // 1000:03d} UTC" in text
    assert re.search(r"· \d+ ms to reach us", text), text
    assert re.search(r"received\s+\d\d:\d\d:\d\d\.\d{3}\s+0\b", text), text
    assert re.search(r"filled\s+\d\d:\d\d:\d\d\.\d{3}\s+\d+", text), text
    # The orders line follows the phase table on a line of its own, not after its ```.
    fields = report.embeds[0]["fields"]
    value = next(f["value"] for f in fields if f["name"].startswith("You · Tradecord Paper"))
    assert value.endswith("```\nbuy 3 AAPL → filled"), value
    assert await paper_orders(h) == 1


async def signal_done(h: Harness, signal_id: str) -> None:
    """Until the worker marks the signal done: the member's DM can come before."""
    for _ in range(300):
        async with h.core.db.session() as s:
            status = await s.scalar(
                select(ReceivedSignal.status).where(ReceivedSignal.id == signal_id)
            )
        if status == SignalStatus.DONE:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"signal {signal_id} is still {status}")


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
    status, body = await post(url, {"ticker": "MSFT", "action": "buy"})
    assert status == 202
    card = await dm_to(h, "bob", "Waiting for your approval")
    assert [b.label for b in card.buttons()] == ["Approve", "Reject"]
    assert await paper_orders(h) == 0
    # Before: /signal show said "Waiting for approval: buy 2 MSFT", not where nor by when.
    await signal_done(h, str(body["id"]))
    shown = (await h.reply("bob", "signal show", id=str(body["id"])[-8:])).text()
    assert re.search(
        r"Waiting for your approval: buy 2 MSFT\. Approve or Reject it on the card in your DMs "
        r"before it expires <t:\d+:R>; after that nothing is placed\.",
        shown,
    ), shown
    assert "buy 2 MSFT → awaiting approval" in shown and "draft" not in shown, shown
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    edited = await pressed.message(timeout=15)
    assert edited.buttons() == []
    await dm_to(h, "bob", "Filled: buy 2 MSFT")
    assert await paper_orders(h) == 1


async def test_approving_while_paused_says_what_to_do_and_keeps_the_card(
    tradecord: Harness,
) -> None:
    """Before: Approve answered "Approved: the order is being placed; you will get a DM with
    the result." and the DM said "Not placed: … Your trading is paused": the approval was
    spent on an order bound to be refused."""
    h = tradecord
    card, _ = await awaiting_approval(h)
    await h.reply("bob", "pause")
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    answer = await pressed.message(timeout=15)
    assert answer.ephemeral and answer.id != card.id
    assert answer.content.startswith(
        "Not approved: your trading is paused, so its order would not be sent. Run /resume, "
        "then press Approve again before it expires <t:"
    ), answer.content
    assert [b.label for b in h.emu.message(card.id).buttons()] == ["Approve", "Reject"]
    assert await paper_orders(h) == 0
    await h.reply("bob", "resume")
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    assert "Approved: the order is being placed" in (await pressed.message(timeout=15)).text()
    await dm_to(h, "bob", "Filled: buy 1 MSFT")
    assert await paper_orders(h) == 1


async def test_an_expired_approval_card_says_so_and_loses_its_buttons(tradecord: Harness) -> None:
    h = tradecord
    card, body = await awaiting_approval(h)
    h.core.signals.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    answer = await pressed.message(timeout=15)
    assert answer.id == card.id and "This approval expired" in answer.text()
    assert "Waiting for your approval" in answer.text()  # the card keeps what it was about
    assert h.emu.message(card.id).buttons() == []
    assert await paper_orders(h) == 0
    shown = (await h.reply("bob", "signal show", id=str(body["id"]))).text()
    assert "buy 1 MSFT → not placed" in shown and "discarded" not in shown, shown


async def past_the_approval(h: Harness) -> None:
    """An hour on for the signals and their jobs, once no job is running (a running one's
    lease would look lapsed and another worker would take it), then the due jobs run."""
    for _ in range(300):
        async with h.core.db.session() as s:
            running = await s.scalar(
                select(func.count()).select_from(Job).where(Job.status == JobStatus.RUNNING)
            )
        if not running:
            break
        await asyncio.sleep(0.05)
    later = lambda: datetime.now(UTC) + timedelta(hours=1)  # noqa: E731
    h.core.signals.clock = h.core.jobs.clock = later
    await h.core.jobs.drain()


async def test_an_approval_that_expires_unpressed_takes_the_buttons_off_its_card(
    tradecord: Harness,
) -> None:
    """Before: the DM said it expired, but the card kept Approve and Reject until pressed."""
    h = tradecord
    card, _ = await awaiting_approval(h)
    await h.emu.post(h.user("bob"), card.channel_id, "a DM after the card")
    await past_the_approval(h)
    await dm_to(h, "bob", "The approval expired; nothing was placed.")
    closed = h.emu.message(card.id)
    assert closed.buttons() == [], closed.text()
    assert closed.text().startswith("🕓 Waiting for your approval"), closed.text()
    assert closed.text().endswith("**This approval expired; nothing was placed.**")
    assert await paper_orders(h) == 0


class FakeResponse:
    def __init__(self, status: int) -> None:
        self.status, self.reason = status, "Internal Server Error"


async def test_an_approval_card_that_cannot_be_edited_still_expires(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    card, _ = await awaiting_approval(h)

    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise discord.HTTPException(FakeResponse(500), "Discord is down")

    monkeypatch.setattr(h.bot.http, "edit_message", refused)
    await past_the_approval(h)
    await dm_to(h, "bob", "The approval expired; nothing was placed.")
    assert [b.label for b in h.emu.message(card.id).buttons()] == ["Approve", "Reject"]
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    assert "This approval expired" in (await pressed.message(timeout=15)).text()
    assert await paper_orders(h) == 0


async def test_only_admins_choose_the_alert_channel_and_urls_stay_private(
    tradecord: Harness,
) -> None:
    h = tradecord
    # Hidden from members; a server admin may show it to everyone, and it still refuses them.
    with pytest.raises(EmulatorError, match="hidden"):
        await h.slash("carol", "alerts-channel", channel=h.emu.trade_alerts.id)
    h.emu.set_command_permission(h.guild_id, "alerts-channel", h.guild_id, allow=True)
    denied = await h.reply("carol", "alerts-channel", channel=h.emu.trade_alerts.id)
    assert denied.ephemeral and "Manage Server" in denied.content
    # /alerts is not hidden from members: opting in to being named is theirs.
    named = await h.reply("carol", "alerts show-my-name", show=True)
    assert named.ephemeral and "Alerts in this server will name you" in named.content
    await create_strategy(h, "carol", "Mine")
    listing = await h.reply("carol", "strategy list")
    assert "Mine" in listing.text() and "/webhook/" not in listing.text()
    assert re.search(r"Mine .* never\n", listing.text()), listing.text()  # no signal yet
    rotated = await h.reply("carol", "strategy rotate-secret", strategy="Mine")
    assert rotated.ephemeral and "/webhook/" in rotated.content
    # Before: only the new URL, and nothing said the alerts using the old one now fail.
    assert "The old URL stopped working just now: put this one in every alert that used it." in (
        rotated.content
    )


async def test_unsetting_a_strategys_alert_channel_says_where_its_alerts_go_now(
    tradecord: Harness,
) -> None:
    h = tradecord
    owner = h.emu.owner.id
    await h.core.strategies.create(h.guild_id, owner, "Swing")
    swing = h.emu.add_channel(h.guild_id, "swing-alerts")
    await h.reply(owner, "alerts-channel", channel=h.emu.trade_alerts.id)
    await h.reply(owner, "alerts-channel", channel=swing.id, strategy="Swing")
    # Its own channel unset, the strategy's alerts go to the server's channel again.
    unset = await h.reply(owner, "alerts-channel", strategy="Swing", off=True)
    [info] = await h.core.strategies.list(h.guild_id, owner)
    assert await h.core.strategies.alert_channel(h.guild_id, info.id) == h.emu.trade_alerts.id
    assert "posting stopped" not in unset.content, unset.content
    assert f"<#{h.emu.trade_alerts.id}>" in unset.content, unset.content
    # With no server channel either, posting stops.
    await h.reply(owner, "alerts-channel", off=True)
    stopped = await h.reply(owner, "alerts-channel", strategy="Swing", off=True)
    assert "Trade alerts for **Swing** are not posted: it has no channel" in stopped.content
    assert "/alerts-channel channel:#channel strategy:Swing" in stopped.content


async def test_alerts_channel_without_a_channel_says_where_alerts_go_and_changes_nothing(
    tradecord: Harness,
) -> None:
    """An admin checking where alerts go used to switch them off: a bare /alerts-channel
    stopped posting. Now it only tells; stopping takes off:true."""
    h = tradecord
    owner = h.emu.owner.id
    await h.core.strategies.create(h.guild_id, owner, "Swing")
    await h.core.strategies.create(h.guild_id, owner, "Scalp")
    swing = h.emu.add_channel(h.guild_id, "swing-alerts")
    none = await h.reply(owner, "alerts-channel")
    assert none.ephemeral and "no alert channel" in none.content, none.content
    await h.reply(owner, "alerts-channel", channel=h.emu.trade_alerts.id)
    await h.reply(owner, "alerts-channel", channel=swing.id, strategy="Swing")
    shown = await h.reply(owner, "alerts-channel")
    assert f"go to <#{h.emu.trade_alerts.id}>" in shown.content, shown.content
    assert f"**Swing** → <#{swing.id}>" in shown.content and "Scalp" not in shown.content
    own = await h.reply(owner, "alerts-channel", strategy="swing")
    assert f"<#{swing.id}> (its own channel)" in own.content, own.content
    shared = await h.reply(owner, "alerts-channel", strategy="Scalp")
    assert f"<#{h.emu.trade_alerts.id}> (the server's alert channel)" in shared.content
    routes = await h.core.strategies.alert_routes(h.guild_id)
    assert routes.default == h.emu.trade_alerts.id and routes.strategies == (("Swing", swing.id),)
    both = await h.reply(owner, "alerts-channel", channel=swing.id, off=True)
    assert "not both" in both.content
    assert await h.core.strategies.alert_routes(h.guild_id) == routes
    await h.reply(owner, "alerts-channel", off=True)
    assert (await h.core.strategies.alert_routes(h.guild_id)).default is None


async def test_an_alert_channel_the_bot_cannot_post_in_is_flagged_to_the_admin(
    tradecord: Harness,
) -> None:
    h = tradecord
    owner = h.emu.owner.id
    h.emu.set_permission_overwrite(h.emu.trade_alerts.id, h.emu.bot_user.id, deny=SEND_MESSAGES)
    chosen = await h.reply(owner, "alerts-channel", channel=h.emu.trade_alerts.id)
    assert chosen.ephemeral and "Send Messages" in chosen.content, chosen.content
    ok = await h.reply(owner, "alerts-channel", channel=h.emu.general.id)
    assert "Send Messages" not in ok.content, ok.content


async def test_alerts_channel_offers_an_admin_every_strategy_of_the_server(
    tradecord: Harness,
) -> None:
    """Before: only the admin's own and shared ones were offered, and an unknown one was "No
    strategy … that you own or that was shared with you"."""
    h = tradecord
    owner = h.emu.owner.id
    await create_strategy(h, "alice", "Gap fill")
    choices = await h.emu.autocomplete(
        owner, "alerts-channel", options={"strategy": "gap"}, focused="strategy"
    )
    assert [c["value"] for c in choices] == ["Gap fill"]
    shown = await h.reply(owner, "alerts-channel", strategy="Gap fill")
    assert "Trade alerts for **Gap fill** are not posted" in shown.content, shown.content
    unknown = await h.reply(owner, "alerts-channel", strategy="Nope")
    assert unknown.content == (
        "This server has no strategy “Nope”. /strategy list everyone:true lists them all."
    ), unknown.content
    unknown = await h.reply(owner, "alerts-channel", strategy="Nope", channel=h.emu.general.id)
    assert unknown.content.startswith("This server has no strategy “Nope”."), unknown.content


async def test_alerts_channel_says_when_it_cannot_post_in_the_channel_and_what_to_do(
    tradecord: Harness,
) -> None:
    """Before: "Trade alerts go to #channel." while every post there failed."""
    h = tradecord
    owner = h.emu.owner.id
    strategies = h.core.strategies
    swing = (await strategies.create(h.guild_id, owner, "Swing")).strategy.id
    scalp = (await strategies.create(h.guild_id, owner, "Scalp")).strategy.id
    own = h.emu.add_channel(h.guild_id, "scalp-alerts")
    await h.reply(owner, "alerts-channel", channel=h.emu.trade_alerts.id)
    await h.reply(owner, "alerts-channel", channel=own.id, strategy="Scalp")
    await strategies.alert_channel_failing(h.guild_id, swing, h.emu.trade_alerts.id, True)
    shown = await h.reply(owner, "alerts-channel")
    assert shown.content.startswith(
        f"Trade alerts should go to <#{h.emu.trade_alerts.id}>, but I cannot post there since <t:"
    ), shown.content
    assert (
        "Give me View Channel and Send Messages there and choose it again (/alerts-channel "
        f"channel:<#{h.emu.trade_alerts.id}>), or choose another channel. Signals still trade."
    ) in shown.content, shown.content
    assert f"**Scalp** → <#{own.id}>\n" in shown.content, shown.content
    one = await h.reply(owner, "alerts-channel", strategy="Swing")
    assert one.content.startswith(
        f"Trade alerts for **Swing** should go to <#{h.emu.trade_alerts.id}> (the server's "
        "alert channel), but I cannot post there since <t:"
    ), one.content
    await strategies.alert_channel_failing(h.guild_id, scalp, own.id, True)
    shown = await h.reply(owner, "alerts-channel")
    assert f"**Scalp** → <#{own.id}> ⚠️ I cannot post there since <t:" in shown.content
    assert "/alerts-channel strategy:<name> says how to fix a channel marked ⚠️." in shown.content
    one = await h.reply(owner, "alerts-channel", strategy="Scalp")
    assert f"(/alerts-channel channel:<#{own.id}> strategy:Scalp)" in one.content, one.content
    # Choosing it again starts afresh: posts there are tried again.
    again = await h.reply(owner, "alerts-channel", channel=h.emu.trade_alerts.id)
    assert again.content.startswith(f"Saved. Trade alerts go to <#{h.emu.trade_alerts.id}>.")


async def test_a_long_strategy_list_fits_discords_embeds(tradecord: Harness) -> None:
    h = tradecord
    carol = h.user("carol")
    for n in range(40):
        await h.core.strategies.create(h.guild_id, carol, f"{n:02d} " + "x" * 97)
    await h.core.strategies.configure(
        h.guild_id, carol, f"00 {'x' * 97}", allowed_sources=[f"2001:db8::{n:x}" for n in range(50)]
    )
    listing = await h.reply("carol", "strategy list")
    assert listing.ephemeral and listing.embeds, listing.content
    assert "00 xxx" in listing.text() and "/webhook/" not in listing.text()
    assert all(len(e.get("description") or "") <= 4096 for e in listing.embeds)


async def test_strategy_settings_are_shown_changed_and_cleared_by_the_owner(
    tradecord: Harness,
) -> None:
    h = tradecord
    url = await create_strategy(h, "dave", "Scalper")
    shown = await h.reply("dave", "strategy settings", strategy="Scalper")
    text = shown.text()
    assert shown.ephemeral
    for default in ("any address", "every ticker", "300 s", "60 signals a minute", "no limit"):
        assert default in text, text
    assert "on: refused signals are DMed to you" in text, text
    await h.reply("dave", "limits strategy", strategy="Scalper", max_order_notional="2,500")
    text = (await h.reply("dave", "strategy settings", strategy="Scalper")).text()
    assert "max notional per order: $2,500.00" in text, text
    changed = await h.reply(
        "dave",
        "strategy settings",
        strategy="Scalper",
        allowed_tickers="NASDAQ:AAPL, BTC/USD",
        max_lag_seconds=60,
        rate_limit_per_minute=10,
        max_quantity="5",
        refusal_notices=False,
    )
    text = changed.text()
    assert changed.ephemeral and "Saved" in text
    for value in ("AAPL, BTC/USD", "60 s", "10 signals a minute", "any address", "off: /signal"):
        assert value in text, text
    status, body = await post(url, {"ticker": "MSFT", "action": "buy"})
    assert (status, body["messageCode"]) == (400, "unsupported-ticker")
    assert "/strategy settings" in str(body["message"])
    status, body = await post(url, {"ticker": "AAPL", "action": "add", "quantity": 6})
    assert (status, body["messageCode"]) == (400, "quantity-over-limit")
    # This test posts from 127.0.0.1: outside the allow-list, then allowed again.
    await h.reply("dave", "strategy settings", strategy="Scalper", allowed_sources="203.0.113.0/24")
    status, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    assert (status, body["messageCode"]) == (403, "invalid-ip-address")
    cleared = await h.reply(
        "dave",
        "strategy settings",
        strategy="Scalper",
        allowed_sources="none",
        allowed_tickers="None",
        max_quantity="none",
    )
    text = cleared.text()
    assert "any address" in text and "every ticker" in text and "no limit" in text
    status, body = await post(url, {"ticker": "MSFT", "action": "buy", "quantity": 6})
    assert status == 202 and body["success"] is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"allowed_sources": "example.com"}, "is not an IP address or range"),
        ({"allowed_sources": " , "}, "separated by commas"),
        ({"allowed_tickers": "NQ1!"}, "continuous future"),
        ({"max_quantity": "lots"}, "max_quantity must be a number"),
        ({"max_quantity": "-3"}, "positive number below"),
    ],
)
async def test_bad_strategy_settings_say_what_to_do(
    tradecord: Harness, options: dict[str, str], message: str
) -> None:
    h = tradecord
    await create_strategy(h, "erin", "Mean reversion")
    refused = await h.reply("erin", "strategy settings", strategy="Mean reversion", **options)
    assert refused.ephemeral and message in refused.content, refused.content
    kept = await h.reply("erin", "strategy settings", strategy="Mean reversion")
    assert "any address" in kept.text() and "no limit" in kept.text()


async def test_strategy_settings_are_for_the_owner_and_within_range(tradecord: Harness) -> None:
    h = tradecord
    await create_strategy(h, "frank", "Gap fill")
    await h.reply("frank", "strategy share", strategy="Gap fill", member=h.user("gina"))
    for options in ({}, {"max_lag_seconds": 60}):
        denied = await h.reply("gina", "strategy settings", strategy="Gap fill", **options)
        assert denied.ephemeral and "owner" in denied.content and "Saved" not in denied.content
    # Discord (and the emulator) refuse numbers outside the command's declared range.
    for lag in (4, 301):
        with pytest.raises(EmulatorError, match="between 5 and 300"):
            await h.slash("frank", "strategy settings", strategy="Gap fill", max_lag_seconds=lag)
    with pytest.raises(EmulatorError, match="between 1 and 60"):
        await h.slash("frank", "strategy settings", strategy="Gap fill", rate_limit_per_minute=61)


async def test_subscriptions_lists_mine_privately_without_account_numbers(
    tradecord: Harness,
) -> None:
    h = tradecord
    none_yet = await h.reply("hana", "subscriptions")
    assert none_yet.ephemeral and "no subscriptions in this server" in none_yet.content
    await create_strategy(h, "hana", "Trend")
    made = await h.reply(
        "hana",
        "subscribe",
        strategy="Trend",
        sizing="fixed_quantity",
        sizing_value="3",
        sides="long",
        approval=True,
    )
    # Before: "each order waits for your approval by DM", not for how long.
    waits = "each order waits 5 min for your approval by DM, then is not placed"
    assert waits in made.content, made.content
    listing = await h.reply("hana", "subscriptions")
    text = listing.text()
    assert listing.ephemeral
    row = r"Trend\s+Tradecord Paper\s+paper\s+3 qty\s+long\s+approve\s+-\s+-\s+any\s+on\n"
    assert re.search(row, text), text
    async with h.core.db.session() as s:
        accounts = list(await s.scalars(select(ConnectionAccount.account_id)))
    assert accounts and not any(a in text for a in accounts)
    other = await h.reply("ivan", "subscriptions")
    assert "no subscriptions" in other.content and "Trend" not in other.text()


def test_phase_tables_fit_an_embed_field_and_date_only_other_days() -> None:
    t0 = datetime(2025, 3, 4, 23, 59, 59, 998_000, tzinfo=UTC)
    phases = [Phase(f"step {i}", t0 + timedelta(milliseconds=i), i, "why " * 40) for i in range(40)]
    text = phase_table(phases, "2025-03-04", 1024)
    assert len(text) <= 1024 and text.endswith("```")
    assert "23:59:59.998" in text and "2025-03-05 00:00:00.000" in text
    assert re.search(r"… \d+ more", text)
    assert len(joined([f"10.0.{i}.0/24" for i in range(200)], "any", 100)) <= 100


def test_the_signal_show_header_counts_the_results_when_they_differ() -> None:
    def sub(status: str) -> SubscriptionReport:
        return SubscriptionReport(1, 1, 1, "Tradecord Paper", "paper", status, None, None, (), ())

    report = SignalReport(
        signal_id="id",
        strategy_id="s",
        strategy_name="Momentum",
        viewer_is_owner=True,
        status="done",
        ticker="AAPL",
        action="buy",
        sentiment=None,
        test=False,
        message_code=None,
        message=None,
        received_at=datetime.now(UTC),
        signal_time=None,
        latency_ms=None,
        phases=(),
        subscriptions=(sub("filled"), sub("skipped"), sub("filled")),
    )
    assert outcome(report) == "2 filled, 1 skipped"
    assert outcome(replace(report, subscriptions=(sub("partially_filled"),))) == "partially filled"
    assert outcome(replace(report, status="refused", subscriptions=())) == "refused"
    assert outcome(replace(report, subscriptions=())) == "done"


async def test_strategy_autocomplete_offers_what_each_command_accepts(tradecord: Harness) -> None:
    h = tradecord
    await create_strategy(h, "carol", "Alpha trend")
    await h.core.strategies.share(h.guild_id, h.user("carol"), "Alpha trend", h.user("bob"))

    async def offered(user: str, command: str) -> list[str]:
        choices = await h.emu.autocomplete(
            h.user(user),
            command,
            options={"strategy": "alp"},
            focused="strategy",
            guild_id=h.guild_id,
        )
        return [c["name"] for c in choices]

    assert await offered("carol", "strategy rotate-secret") == ["Alpha trend"]
    assert await offered("bob", "subscribe") == ["Alpha trend"]  # shared with bob
    assert await offered("carol", "limits strategy") == ["Alpha trend"]
    assert await offered("bob", "limits strategy") == []  # only its owner sets its limits


async def test_a_live_subscription_can_be_unsubscribed(tradecord: Harness) -> None:
    h = tradecord
    await create_strategy(h, "alice", "Trend")
    conn_id = await add_broker_connection(h, "alice", "TS")
    async with h.core.db.transaction() as s:
        for mode, number in (("live", "11223344"), ("paper", "SIM5566")):
            s.add(
                ConnectionAccount(
                    connection_id=conn_id,
                    mode=mode,
                    account_id=number,
                    account_type="margin",
                    label=f"TradeStation ****{number[-4:]}",
                )
            )
    sub = await h.reply("alice", "subscribe", strategy="Trend", connection="TS", mode="live")
    assert "now trades" in sub.text(), sub.text()
    done = await h.reply("alice", "unsubscribe", strategy="Trend", connection="TS", mode="live")
    assert done.ephemeral and "Unsubscribed **TS** (live)" in done.text(), done.text()
    assert await h.core.subscriptions.list_for(h.user("alice")) == []

    # With one subscription to the strategy, neither connection nor mode is needed.
    await h.reply("alice", "subscribe", strategy="Trend", connection="TS", mode="live")
    alone = await h.reply("alice", "unsubscribe", strategy="Trend")
    assert "Unsubscribed **TS** (live)" in alone.text(), alone.text()

    # Both modes on one connection: the member is asked which, and nothing stops.
    for mode in ("live", "paper"):
        await h.reply("alice", "subscribe", strategy="Trend", connection="TS", mode=mode)
    which = await h.reply("alice", "unsubscribe", strategy="Trend", connection="TS")
    assert which.ephemeral and "“TS” (live), “TS” (paper)" in which.text(), which.text()
    assert "Add mode:" in which.text()
    assert len(await h.core.subscriptions.list_for(h.user("alice"))) == 2
    wrong = await h.reply("alice", "unsubscribe", strategy="Trend", connection="Tradecord Paper")
    assert "not subscribed on “Tradecord Paper”" in wrong.text(), wrong.text()
    paper = await h.reply("alice", "unsubscribe", strategy="Trend", connection="TS", mode="paper")
    assert "Unsubscribed **TS** (paper)" in paper.text(), paper.text()
    [left] = await h.core.subscriptions.list_for(h.user("alice"))
    assert left.mode == "live"
    # A connection that can no longer trade (a re-link is due) can still be stopped.
    async with h.core.db.transaction() as s:
        conn = await s.get(Connection, conn_id)
        assert conn is not None
        conn.status = ConnectionStatus.NEEDS_REAUTH
    stale = await h.reply("alice", "unsubscribe", strategy="Trend", connection="TS")
    assert "Unsubscribed **TS** (live)" in stale.text(), stale.text()


async def test_subscribe_says_which_entries_it_takes_in_words(tradecord: Harness) -> None:
    h = tradecord
    await create_strategy(h, "alice", "Breakout")
    for sides, words in [
        ("both", "long and short entries"),
        ("long", "long entries only"),
        ("short", "short entries only"),
    ]:
        sub = await h.reply("alice", "subscribe", strategy="Breakout", sides=sides)
        assert words in sub.content and "side(s)" not in sub.content, sub.content
        # The default sizing, as /subscriptions says it (1× signal).
        assert "1× the signal's own quantity" in sub.content, sub.content


async def test_subscribe_again_changes_only_what_is_given_and_says_what_changed(
    tradecord: Harness,
) -> None:
    # It answered "now trades Breakout" as if new, and every option left out went back to its
    # default: changing the sides reset 3 shares to the signal's quantity.
    h = tradecord
    await create_strategy(h, "alice", "Breakout")
    first = await h.reply(
        "alice",
        "subscribe",
        strategy="Breakout",
        sizing="fixed_quantity",
        sizing_value="3",
        max_positions=2,
    )
    assert first.content.startswith("**Tradecord Paper** (paper) now trades **Breakout**")
    again = await h.reply("alice", "subscribe", strategy="Breakout", sides="long")
    assert again.content.startswith(
        "Updated: **Tradecord Paper** (paper) trades **Breakout**: 3 shares/contracts per "
        "entry, long entries only"
    ), again.content
    assert again.content.endswith("Changed: long and short entries → long entries only.")
    same = await h.reply("alice", "subscribe", strategy="Breakout", sides="long")
    assert same.content.startswith("Updated: ") and same.content.endswith("Nothing changed.")
    assert "now trades" not in again.content + same.content
    # A new sizing without its value would read 3 shares as 3 dollars: refused, unchanged.
    refused = await h.reply("alice", "subscribe", strategy="Breakout", sizing="dollar_amount")
    assert "Give sizing_value with the new sizing (dollar amount)" in refused.content
    [sub] = await h.core.subscriptions.list_for(h.user("alice"))
    assert sub.settings.sizing_value == 3 and sub.settings.max_positions == 2
    await h.reply("alice", "subscribe", strategy="Breakout", max_positions=0)
    [sub] = await h.core.subscriptions.list_for(h.user("alice"))
    assert sub.settings.max_positions is None and sub.settings.sides == "long"
    # Subtracting the exit needs the signal's own quantity to subtract from.
    alone = await h.reply("alice", "subscribe", strategy="Breakout", subtract_exit_quantity=True)
    assert "it needs sizing:signal (fixed quantity sizing" in alone.content, alone.content
    on = await h.reply(
        "alice",
        "subscribe",
        strategy="Breakout",
        sizing="signal",
        sizing_value="1",
        subtract_exit_quantity=True,
    )
    assert on.content.endswith(
        "Changed: 3 shares/contracts per entry → 1× the signal's own quantity; reversals enter "
        "the whole signal quantity → a reversal enters the signal's quantity less what it "
        "exited."
    ), on.content
    assert "1× signal − exit" in (await h.reply("alice", "subscriptions")).text()
    # Trading windows: typed loosely, said one way, and "none" removes them.
    bad = await h.reply("alice", "subscribe", strategy="Breakout", trading_windows="mornings")
    assert "“mornings” is not a time window. Write trading windows as times" in bad.content
    windows = await h.reply("alice", "subscribe", strategy="Breakout", trading_windows="9:45-12")
    assert "“9:45-12” is not a time window" in windows.content  # minutes are needed
    windows = await h.reply("alice", "subscribe", strategy="Breakout", trading_windows="9:45-12:00")
    assert windows.content.endswith(
        "Changed: entries at any time → entries only 09:45-12:00 New York time."
    ), windows.content
    listed = (await h.reply("alice", "subscriptions")).text()
    assert "Entries" in listed and "09:45-12:00 NY" in listed, listed
    london = await h.reply(
        "alice", "subscribe", strategy="Breakout", trading_windows="mon-fri 8:00-16:30 London"
    )
    assert london.content.endswith(
        "Changed: entries only 09:45-12:00 New York time → entries only mon-fri 08:00-16:30 "
        "Europe/London time."
    ), london.content
    assert "mon-fri 08:00-16:30 Europe/London" in (await h.reply("alice", "subscriptions")).text()
    off = await h.reply("alice", "subscribe", strategy="Breakout", trading_windows="none")
    assert off.content.endswith(
        "Changed: entries only mon-fri 08:00-16:30 Europe/London time → entries at any time."
    ), off.content
    # Exits for signals that send none: typed loosely, said one way, none removes them.
    exits = await h.reply(
        "alice", "subscribe", strategy="Breakout", take_profit="5 %", stop_loss="Trail $1.5"
    )
    assert exits.content.endswith(
        "Changed: no default take-profit or stop-loss → entries whose signal has none get a "
        "take-profit 5% and a stop-loss trail 1.50 from the entry price."
    ), exits.content
    listed = (await h.reply("alice", "subscriptions")).text()
    assert re.search(r"Exits .*\n.* TP 5% SL trail 1\.50 ", listed), listed
    bad = await h.reply("alice", "subscribe", strategy="Breakout", take_profit="trail 2%")
    assert "take_profit is a distance from the entry price: a percent under 100" in bad.content
    off = await h.reply("alice", "subscribe", strategy="Breakout", take_profit="none")
    assert off.content.endswith(
        "a take-profit 5% and a stop-loss trail 1.50 from the entry price → entries whose signal "
        "has none get a stop-loss trail 1.50 from the entry price."
    ), off.content
    assert " SL trail 1.50 " in (await h.reply("alice", "subscriptions")).text()
    # Entries whose signal names no order type: market, or a limit at the quote.
    limit = await h.reply("alice", "subscribe", strategy="Breakout", entry_order="Limit 0.20 %")
    assert limit.content.endswith(
        "Changed: market entries → entries whose signal names no order type are limit orders "
        "at the quote (the ask to buy, the bid to sell, or up to 0.2% past it)."
    ), limit.content
    assert "auto, limit +0.2%" in (await h.reply("alice", "subscriptions")).text()
    bad = await h.reply("alice", "subscribe", strategy="Breakout", entry_order="limit 20%")
    assert "(at most 10%); “limit 20%” is not." in bad.content, bad.content
    dollars = await h.reply("alice", "subscribe", strategy="Breakout", entry_order="limit $0.05")
    assert "or up to $0.05 past it" in dollars.content, dollars.content
    market = await h.reply("alice", "subscribe", strategy="Breakout", entry_order="market")
    assert market.content.endswith("past it) → market entries."), market.content
    # TradersPost's "Use signal take profit", left off there by default.
    ignored = await h.reply("alice", "subscribe", strategy="Breakout", signal_take_profit=False)
    assert ignored.content.endswith(
        "Changed: a signal's takeProfit is used → a signal's takeProfit is ignored."
    ), ignored.content


async def test_a_reversal_says_which_order_is_the_exit_and_which_the_entry(
    tradecord: Harness,
) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Flip")
    await h.reply("alice", "subscribe", strategy="Flip", sizing="fixed_quantity", sizing_value="3")
    await h.emu.slash(
        h.emu.owner.id,
        "alerts-channel",
        options={"channel": h.emu.trade_alerts.id},
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
    )
    await post(url, {"ticker": "AAPL", "action": "buy"})
    await dm_to(h, "alice", "buy 3 AAPL")
    status, body = await post(url, {"ticker": "AAPL", "action": "sell"})
    assert status == 202
    # Long 3, then sell: the exit sells 3 and the entry sells 3 more. Two identical lines
    # would read as one order said twice.
    dm = await dm_to(h, "alice", "entry: Filled: sell 3 AAPL")
    assert "exit: Filled: sell 3 AAPL" in dm.text(), dm.text()
    post_ = await h.emu.wait_for_message(
        lambda m: m.channel_id == h.emu.trade_alerts.id and "entry: sell 3 AAPL" in m.text(),
        timeout=15,
        include_existing=True,
    )
    assert "exit: sell 3 AAPL" in post_.text(), post_.text()
    report = await h.reply("alice", "signal show", id=str(body["id"]))
    text = report.text()
    assert "exit: sell 3 AAPL → filled; entry: sell 3 AAPL → filled" in text, text


async def test_signal_show_says_what_became_of_the_order_and_each_phase_once(
    tradecord: Harness,
) -> None:
    # The header said "done" for a rejected entry, and "exit filled" came twice (the execution's
    # own log and the order's event), "rejected" too ("rejected" and "entry rejected").
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Reverse")
    await h.reply("alice", "subscribe", strategy="Reverse", sizing="signal", sizing_value="1")
    await post(url, {"ticker": "AAPL", "action": "buy", "quantity": 3})
    await dm_to(h, "alice", "buy 3 AAPL")
    # Long 3: the exit sells them, then the short entry is beyond the buying power.
    _, body = await post(url, {"ticker": "AAPL", "action": "sell", "quantity": 100000})
    await dm_to(h, "alice", "Not enough buying power")
    await signal_done(h, str(body["id"]))
    report = await h.reply("alice", "signal show", id=str(body["id"]))
    text = report.text()
    assert "sell AAPL · rejected" in text and "· done" not in text, text
    phases = re.findall(r"^(\w[\w ]*?)(?: \(.*?\))?\s+\d\d:\d\d:\d\d\.\d{3}", text, re.M)
    assert phases.count("exit filled") == 1 and phases.count("rejected") == 1, phases
    assert "entry rejected" not in phases, phases
    assert "exit: sell 3 AAPL → filled; entry: sell 100,000 AAPL → rejected" in text, text


async def test_signal_show_takes_the_short_id_the_alerts_show(tradecord: Harness) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Short")
    await h.reply("alice", "subscribe", strategy="Short", sizing="fixed_quantity", sizing_value="1")
    _, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    await dm_to(h, "alice", "buy 1 AAPL")
    short = str(body["id"])[-8:]
    for typed in (short, short.upper()):
        report = await h.reply("alice", "signal show", id=typed)
        assert f"Signal {short}" in report.text(), report.text()
    # Someone who can see nothing of it is told so, as for a full id.
    other = await h.reply("bob", "signal show", id=short)
    assert "No signal with that id that you can see" in other.text(), other.text()


async def test_signals_of_one_minute_have_their_own_short_ids_and_old_ids_still_resolve(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signal ids grow with time (their start is the minute), so messages show their random
    end. A signal stored before that, its id random throughout, is still found by the start
    its messages showed."""
    h = tradecord
    url = await create_strategy(h, "alice", "Ids")
    first, second = [
        (await post(url, {"ticker": "AAPL", "action": "buy", "extras": {"n": n}}))[1]
        for n in (1, 2)
    ]
    ids = [str(first["id"]), str(second["id"])]
    assert ids[0][-8:] != ids[1][-8:], ids
    for full in ids:
        report = await h.reply("alice", "signal show", id=full[-8:])
        assert f"Signal {full[-8:]}" in report.text(), report.text()
    monkeypatch.setattr("bot.services.signals.time_ordered_uuid", lambda: str(uuid.uuid4()))
    _, old = await post(url, {"ticker": "AAPL", "action": "buy", "extras": {"n": 3}})
    start = str(old["id"])[:8]
    report = await h.reply("alice", "signal show", id=start)
    assert f"Signal {str(old['id'])[-8:]}" in report.text(), report.text()


async def test_an_approval_card_shows_the_price_of_a_limit_signal(tradecord: Harness) -> None:
    # It said "buy 2 MSFT limit": the member approved without seeing the price.
    h = tradecord
    h.core.simulated_feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    url = await create_strategy(h, "bob", "Dip")
    await h.reply(
        "bob", "subscribe", strategy="Dip", sizing="fixed_quantity", sizing_value="2", approval=True
    )
    body = {"ticker": "MSFT", "action": "buy", "orderType": "limit", "limitPrice": 350.5}
    status, _ = await post(url, body)
    assert status == 202
    card = await dm_to(h, "bob", "Waiting for your approval")
    assert "buy 2 MSFT limit at $350.50" in card.text(), card.text()


async def test_subscribe_refuses_a_fraction_at_a_broker_of_whole_units(tradecord: Harness) -> None:
    """TradeStation trades no fraction of anything: 0.5 would size every signal to zero. The
    paper broker trades crypto in fractions, so it keeps the fraction."""
    h = tradecord
    await create_strategy(h, "alice", "Trend")
    conn_id = await add_broker_connection(h, "alice", "TS")
    async with h.core.db.transaction() as s:
        s.add(
            ConnectionAccount(
                connection_id=conn_id,
                mode="paper",
                account_id="SIM5566",
                account_type="margin",
                label="TradeStation ****5566",
            )
        )
    half = dict(strategy="Trend", sizing="fixed_quantity", sizing_value="0.5")
    refused = await h.reply("alice", "subscribe", connection="TS", **half)
    assert "TradeStation trades whole shares" in refused.text(), refused.text()
    assert await h.core.subscriptions.list_for(h.user("alice")) == []
    whole = await h.reply("alice", "subscribe", connection="TS", **{**half, "sizing_value": "2"})
    assert "now trades" in whole.text(), whole.text()
    paper = await h.reply("alice", "subscribe", connection="Tradecord Paper", **half)
    assert "now trades" in paper.text(), paper.text()
    assert len(await h.core.subscriptions.list_for(h.user("alice"))) == 2


async def test_member_text_in_a_reply_pings_nobody(tradecord: Harness) -> None:
    """A strategy name is member-written and echoed in the reply: its mention syntax must stay
    text. Error replies set no allowed_mentions themselves; the bot's default must hold."""
    h = tradecord
    bob = h.user("bob")
    msg = await h.reply("alice", "strategy settings", strategy=f"<@{bob}> breakout")
    assert f"No strategy “<@{bob}> breakout”" in msg.content, msg.content
    assert msg.mentions == [] and not msg.mention_everyone


async def test_a_strategy_name_discord_would_format_is_refused_with_what_to_use(
    tradecord: Harness,
) -> None:
    """Alerts post a strategy's name in the channel: "<@id> breakout" was saved (a ping's
    text in every alert), "_scalper_" shows in italics. Refused as /rename refuses them in
    connection names, with an example; an underscore inside a word ("ES_scalper_v2", as
    TradingView scripts are often named) shows as typed and is fine."""
    h = tradecord
    bob = h.user("bob")
    for typed, named in [
        (f"<@{bob}> breakout", "cannot have `<`, `>` and `@`:"),
        ("ES _scalper_", "cannot have `_`:"),
        ("**NQ**", "cannot have `*`:"),
    ]:
        told = await h.reply("alice", "strategy create", name=typed)
        assert told.ephemeral and f"A strategy name {named}" in told.content, told.content
        assert "e.g. “NQ breakout” or “ES scalper v2”" in told.content, told.content
        assert "webhook" not in told.content
    assert await h.core.strategies.list(h.guild_id, h.user("alice")) == []
    made = await h.reply("alice", "strategy create", name="ES scalper v2 (1m)")
    assert "Created **ES scalper v2 (1m)**" in made.text(), made.text()
    snake = await h.reply("alice", "strategy create", name="ES_scalper_v2")
    assert "Created **ES_scalper_v2**" in snake.text(), snake.text()


async def test_numbers_typed_as_they_are_shown_are_taken(tradecord: Harness) -> None:
    """/subscriptions shows "$1,500" and /strategy settings "12,000"; typed back, they were
    refused, and a bad sizing_value was explained as a multiplier whatever the sizing was."""
    h = tradecord
    await create_strategy(h, "alice", "Breakout")
    sub = await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="dollar_amount", sizing_value="$1,500"
    )
    assert "now trades" in sub.content, sub.content
    [info] = await h.core.subscriptions.list_for(h.user("alice"))
    assert info.settings.sizing_value == 1500
    bad = await h.reply("alice", "subscribe", strategy="Breakout", sizing_value="lots")
    assert bad.content == "sizing_value must be a number, like 10 or 2.5 — “lots” is not."
    comma = await h.reply("alice", "subscribe", strategy="Breakout", sizing_value="1,5")
    assert "a comma that does not separate thousands" in comma.content, comma.content
    saved = await h.reply("alice", "strategy settings", strategy="Breakout", max_quantity="12,000")
    assert "12,000" in saved.text(), saved.text()
    strategy = await h.core.strategies.get(h.guild_id, h.user("alice"), "Breakout")
    assert strategy.max_quantity == 12000


async def test_a_dollar_amount_sizing_reads_as_money(tradecord: Harness) -> None:
    """It read "1500000 dollars per entry" and "the current value, 1500000, was for dollar
    amount": now as every other amount of money."""
    h = tradecord
    await create_strategy(h, "alice", "Breakout")
    sub = await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="dollar_amount", sizing_value="1500000"
    )
    assert "$1,500,000.00 per entry" in sub.content, sub.content
    switch = await h.reply("alice", "subscribe", strategy="Breakout", sizing="fixed_quantity")
    assert "the current value, $1,500,000.00, was for dollar amount" in switch.content
    listed = (await h.reply("alice", "subscriptions")).text()
    assert "$1,500,000.00" in listed, listed


async def test_a_percent_of_equity_sizing_reads_as_a_percent(tradecord: Harness) -> None:
    """Only /subscriptions' table said "10% equity"; switching sizing said "the current value,
    10, was for percent of equity", a bare number."""
    h = tradecord
    await create_strategy(h, "alice", "Breakout")
    await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="percent_of_equity", sizing_value="10"
    )
    listed = (await h.reply("alice", "subscriptions")).text()
    assert re.search(r"paper\s+10% equity\s+both", listed), listed
    switch = await h.reply("alice", "subscribe", strategy="Breakout", sizing="fixed_quantity")
    assert "the current value, 10%, was for percent of equity" in switch.content, switch.content


async def test_turning_the_servers_alerts_off_names_the_strategies_still_posting(
    tradecord: Harness,
) -> None:
    """off:true answered "Trade alerts for all strategies go to nowhere (posting stopped)"
    while a strategy with a channel of its own kept posting there."""
    h = tradecord
    owner = h.emu.owner.id
    await h.core.strategies.create(h.guild_id, owner, "Swing")
    swing = h.emu.add_channel(h.guild_id, "swing-alerts")
    chosen = await h.reply(owner, "alerts-channel", channel=h.emu.trade_alerts.id)
    assert chosen.content.startswith(f"Saved. Trade alerts go to <#{h.emu.trade_alerts.id}>.")
    await h.reply(owner, "alerts-channel", channel=swing.id, strategy="Swing")
    off = await h.reply(owner, "alerts-channel", off=True)
    assert "nowhere" not in off.content and "all strategies" not in off.content, off.content
    assert "no alert channel: signals trade, but only the strategies below post" in off.content
    assert f"**Swing** → <#{swing.id}>" in off.content, off.content
    assert "Choose one with /alerts-channel channel:#channel." in off.content
    # off:true again would not stop Swing's: the way that does is named.
    assert off.content.endswith("To stop one: /alerts-channel off:true strategy:<name>.")
    # A strategy typed in another case is named as it is called ("**swing**" before).
    again = await h.reply(owner, "alerts-channel", channel=swing.id, strategy="swing")
    assert (
        again.content == f"Saved. Trade alerts for **Swing** go to <#{swing.id}> (its own channel)."
    )


async def test_a_member_a_strategy_was_shared_with_is_told_what_they_can_do(
    tradecord: Harness,
) -> None:
    """Deleting or opening the settings of a shared strategy answered only "Only the
    strategy's owner can …": now which strategy, and what the member can do instead."""
    h = tradecord
    await create_strategy(h, "alice", "Gap fill")
    await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("bob"))
    delete = await h.reply("bob", "strategy delete", strategy="Gap fill")
    assert delete.ephemeral and delete.buttons() == []
    assert delete.content == (
        "“Gap fill” was shared with you, but only its owner can delete it. To stop its signals "
        "trading for you: /unsubscribe strategy:Gap fill."
    )
    settings = await h.reply("bob", "strategy settings", strategy="Gap fill")
    assert settings.embeds == [] and "only its owner can see its webhook settings" in (
        settings.content
    )
    assert "/subscriptions shows how your subscription trades it" in settings.content
    change = await h.reply("bob", "strategy settings", strategy="Gap fill", max_quantity="5")
    assert "only its owner can change it" in change.content, change.content
    assert "changes with /subscribe strategy:Gap fill." in change.content, change.content
    assert len(await h.core.strategies.list(h.guild_id, h.user("alice"))) == 1


async def test_a_shared_strategy_is_listed_without_its_owners_allow_list_or_subscribers(
    tradecord: Harness,
) -> None:
    """Before: /strategy list showed a member it was merely shared with the owner's IP
    allow-list and its subscriber count, which /strategy settings refuses them."""
    h = tradecord
    await create_strategy(h, "alice", "Gap fill")
    await h.reply("alice", "strategy settings", strategy="Gap fill", allowed_sources="203.0.113.7")
    await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("bob"))
    await h.reply("bob", "subscribe", strategy="Gap fill")
    mine = (await h.reply("alice", "strategy list")).text()
    assert re.search(r"Gap fill\s+owner\s+1\s+203\.0\.113\.7/32\s", mine), mine
    theirs = (await h.reply("bob", "strategy list")).text()
    assert "203.0.113" not in theirs, theirs
    assert re.search(r"Gap fill\s+shared\s+-\s+-\s+60/min", theirs), theirs
    [info] = await h.core.strategies.list(h.guild_id, h.user("bob"))
    assert (info.allowed_sources, info.subscriptions) == ((), 0)


async def test_a_member_with_a_strategy_through_a_role_is_told_it_is_the_owners(
    tradecord: Harness,
) -> None:
    """Before: they heard "No strategy … that you own or that was shared with you"."""
    h = tradecord
    premium = h.emu.add_role(h.guild_id, "Premium", 0)
    h.emu.add_member(h.guild_id, h.user("bob"), roles=[premium.id])
    await create_strategy(h, "alice", "Gap fill")
    await h.reply("alice", "strategy share", strategy="Gap fill", role=premium.id)
    delete = await h.reply("bob", "strategy delete", strategy="Gap fill")
    assert "only its owner can delete it" in delete.content, delete.content
    assert delete.buttons() == []
    shown = await h.reply("bob", "strategy settings", strategy="Gap fill")
    assert "only its owner can see its webhook settings" in shown.content, shown.content
    change = await h.reply("bob", "strategy settings", strategy="Gap fill", max_quantity="5")
    assert "only its owner can change it" in change.content, change.content
    rotate = await h.reply("bob", "strategy rotate-secret", strategy="Gap fill")
    assert "only its owner can change it" in rotate.content, rotate.content
    assert "/webhook/" not in rotate.content


async def test_unsharing_a_role_never_shared_or_oneself_is_refused(tradecord: Harness) -> None:
    """Before: a role it was never shared with was "no longer shared", and the owner could
    unshare herself, ending her own subscriptions."""
    h = tradecord
    vip = h.emu.add_role(h.guild_id, "VIP", 0)
    await create_strategy(h, "alice", "Gap fill")
    await h.reply("alice", "subscribe", strategy="Gap fill")
    role = await h.reply("alice", "strategy unshare", strategy="Gap fill", role=vip.id)
    assert role.ephemeral and role.content == (
        "“Gap fill” is not shared with that role. /strategy settings lists whom it is shared with."
    ), role.content
    me = await h.reply("alice", "strategy unshare", strategy="Gap fill", member=h.user("alice"))
    assert me.content == (
        "You own this strategy, so it is not shared with you: pick a member it is shared "
        "with. To stop it trading for you: /unsubscribe strategy:Gap fill."
    ), me.content
    assert len(await h.core.subscriptions.list_for(h.user("alice"), h.guild_id)) == 1


async def test_a_display_name_with_markdown_or_a_mention_is_shown_as_typed(
    tradecord: Harness,
) -> None:
    """Display names are the member's own text: "**Bob** <@1>" showed in bold, and as a
    mention's pill (allowed_mentions only stopped the ping), in /strategy share and /plan set."""
    h = tradecord
    bob = h.emu.add_user("bob", global_name="**Bob** <@1575800000000000000>")
    h.emu.add_member(h.guild_id, bob.id)
    await create_strategy(h, "alice", "Gap fill")
    shared = await h.reply("alice", "strategy share", strategy="Gap fill", member=bob.id)
    plan = await h.reply(h.emu.owner.id, "plan set", member=bob.id, plan="pro")
    for told in (shared.content, plan.content):
        assert "\\*\\*Bob\\*\\*" in told and "<@1575800000000000000>" not in told, told
        assert "<@\u200b1575800000000000000>" in told, told


async def test_how_long_an_order_waits_for_approval_is_the_members_choice(
    tradecord: Harness,
) -> None:
    """Every approval waited 5 minutes: a day trader's signal is stale well before, a swing
    trader may need longer. /subscribe approval_minutes sets it."""
    h = tradecord
    h.core.simulated_feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    url = await create_strategy(h, "bob", "Swing")
    made = await h.reply("bob", "subscribe", strategy="Swing", approval=True, approval_minutes=1)
    assert "each order waits 1 min for your approval by DM" in made.content, made.content
    status, _ = await post(url, {"ticker": "MSFT", "action": "buy"})
    assert status == 202
    card = await dm_to(h, "bob", "Waiting for your approval")
    h.core.signals.clock = lambda: datetime.now(UTC) + timedelta(minutes=2)
    pressed = await h.emu.click(h.user("bob"), card, label="Approve")
    assert "This approval expired" in (await pressed.message(timeout=15)).text()
    assert await paper_orders(h) == 0
    longer = await h.reply("bob", "subscribe", strategy="Swing", approval_minutes=90)
    assert "Changed: each order waits 1 min for your approval by DM, then is not placed → " in (
        longer.content
    ), longer.content
    assert "each order waits 90 min" in longer.content, longer.content


async def test_signal_list_shows_each_member_the_signals_they_may_see(tradecord: Harness) -> None:
    """An owner sees every signal of their strategy, refused ones and duplicates with why; a
    subscriber of a shared strategy sees those that ran for them, with their own result."""
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Breakout")
    await h.reply("alice", "strategy share", strategy="Breakout", member=h.user("bob"))
    await h.reply("alice", "subscribe", strategy="Breakout")
    await h.reply("bob", "subscribe", strategy="Breakout")
    status, bought = await post(url, {"ticker": "AAPL", "action": "buy", "quantity": 1})
    assert status == 202
    await signal_done(h, str(bought["id"]))
    status, refused = await post(url, {"ticker": "AAPL", "action": "hold"})
    assert status == 400
    status, again = await post(url, {"ticker": "AAPL", "action": "buy", "quantity": 1})
    assert status == 200 and again["duplicate"] is True

    owner = await h.reply("alice", "signal list")
    assert owner.ephemeral
    text = owner.text()
    assert "3 signals of your strategies, newest first" in text
    rows = [line for line in text.splitlines() if "AAPL" in line]
    # Newest first: the duplicate, the refusal with its code, then both subscribers' fills.
    assert len(rows) == 3, text
    assert f"duplicate of {str(bought['id'])[-8:]}" in rows[0]
    assert str(refused["logId"])[-8:] in rows[1] and "refused: invalid-action" in rows[1]
    assert str(bought["id"])[-8:] in rows[2] and "2 filled" in rows[2]

    subscriber = (await h.reply("bob", "signal list", strategy="Breakout")).text()
    assert "1 signal of Breakout, those that ran for you, newest first." in subscriber
    bob_rows = [line for line in subscriber.splitlines() if "AAPL" in line]
    assert len(bob_rows) == 1 and bob_rows[0].rstrip().endswith("filled"), subscriber
    assert "2 filled" not in subscriber  # alice's result is hers

    listed = (await h.reply("alice", "strategy list")).text()
    assert "Last signal (UTC)" in listed and "never" not in listed, listed
    nobody = await h.reply("carol", "signal list")
    assert nobody.ephemeral and nobody.content.startswith("No signals yet.")
    hidden = await h.reply("carol", "signal list", strategy="Breakout")
    assert "Breakout" in hidden.content and not hidden.embeds  # not shared with carol

    # /signal show offers them by what the member types: here an outcome.
    choices = await h.emu.autocomplete(
        h.user("alice"), "signal show", options={"id": "refused"}, focused="id"
    )
    assert [c["value"] for c in choices] == [refused["logId"]]
    assert "buy AAPL" not in choices[0]["name"] and "hold" in choices[0]["name"]
    shown = await h.reply("alice", "signal show", id=str(choices[0]["value"]))
    assert shown.embeds[0]["description"].startswith("hold AAPL · refused"), shown.text()


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{"ticker": "ES1!", "action": "hold"}', "ES1!"),
        ('{"ticker": "```@everyone <@1>"}', "everyone1"),  # cannot close the table's block
        ('{"ticker": 5}', None),
        ('{"ticker": "***"}', None),
        ("[1, 2]", None),
        ("not json", None),
        (None, None),
    ],
)
def test_a_refused_signal_shows_its_own_ticker_only_in_plain_characters(
    body: str | None, shown: str | None
) -> None:
    assert as_sent(body, "ticker") == shown


async def test_a_new_strategy_comes_with_its_alert_message_and_a_test_signal(
    tradecord: Harness,
) -> None:
    """Its TradingView alert message, pasted as is, is a signal Tradecord takes; /strategy test
    sends a test signal down the webhook's path: subscribers hear what it would do, nothing
    is placed, and a refusal says why as the webhook would."""
    h = tradecord
    made = await h.reply("alice", "strategy create", name="Breakout")
    template = re.search(r"```json\n(.+)\n```", made.content)
    assert template, made.content
    # What TradingView sends once it fills in the placeholders.
    filled = (
        template.group(1)
        .replace("{{ticker}}", "NASDAQ:AAPL")
        .replace("{{strategy.order.action}}", "buy")
        .replace("{{strategy.market_position}}", "long")
        .replace("{{strategy.order.contracts}}", "2")
        .replace("{{close}}", "200.05")
        .replace("{{timenow}}", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    )
    assert "{{" not in filled
    url = made.content.split("`")[1].split("/webhook/", 1)[1]
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{h.bot.web_port}/webhook/{url}", data=filled) as r,
    ):
        assert r.status == 202, await r.text()

    h.core.simulated_feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="fixed_quantity", sizing_value="3"
    )
    orders_before = await paper_orders(h)
    sent = await h.reply("alice", "strategy test", strategy="Breakout", ticker="msft", action="buy")
    assert sent.ephemeral
    assert sent.content.startswith("Sent a test signal to **Breakout**: buy MSFT. "), sent.content
    dm = await dm_to(h, "alice", "Test signal")
    assert "A real one would: buy 3 MSFT" in dm.text(), dm.text()
    assert await paper_orders(h) == orders_before

    await h.reply("alice", "strategy settings", strategy="Breakout", allowed_tickers="AAPL")
    refused = await h.reply(
        "alice", "strategy test", strategy="Breakout", ticker="MSFT", action="buy"
    )
    assert refused.content.startswith(
        "**Breakout** refused the test signal, as it would the same alert: "
        "`unsupported-ticker`: The ticker MSFT is not allowed"
    ), refused.content
    assert await tell_refusals(h.core) == 0  # told in the answer already
    # A member it was shared with may subscribe, not test it on every subscriber.
    await h.reply("alice", "strategy share", strategy="Breakout", member=h.user("bob"))
    bob = await h.reply("bob", "strategy test", strategy="Breakout", ticker="AAPL", action="buy")
    assert bob.content == (
        "Only the owner of “Breakout” sends it test signals: they reach every subscriber."
    )


async def test_a_subscription_is_paused_and_resumed_with_its_settings_kept(
    tradecord: Harness,
) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "alice", "Breakout")
    await h.reply(
        "alice", "subscribe", strategy="Breakout", sizing="fixed_quantity", sizing_value="3"
    )
    paused = await h.reply("alice", "subscribe", strategy="Breakout", active=False)
    assert paused.content.endswith(
        "Changed: paused. It is paused: it takes no signals until you resume it "
        "(/subscribe strategy:Breakout connection:Tradecord Paper mode:paper active:true)."
    ), paused.content
    assert re.search(r"Breakout .* paused\n", (await h.reply("alice", "subscriptions")).text())
    status, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    assert status == 202
    await signal_done(h, str(body["id"]))
    assert await paper_orders(h) == 0
    assert "no subscription ran it" in (await h.reply("alice", "signal list")).text()
    # Changing a setting keeps it paused; resuming keeps the settings.
    sized = await h.reply("alice", "subscribe", strategy="Breakout", sizing_value="5")
    assert "It is paused" in sized.content and "Changed: 3 shares" in sized.content
    resumed = await h.reply("alice", "subscribe", strategy="Breakout", active=True)
    assert resumed.content.endswith("Changed: resumed (it was paused)."), resumed.content
    assert "5 shares/contracts per entry" in resumed.content


async def test_a_member_who_leaves_the_server_stops_trading_its_strategies(
    settings: Settings, db: Database
) -> None:
    """With the Server Members intent: a paid community removes a member, and the strategies
    shared with them stop trading for them; their own strategy, connections and positions stay."""
    async with running_tradecord(settings, discord_members_intent=True) as h:
        url = await create_strategy(h, "alice", "Gap fill")
        await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("bob"))
        await h.reply("bob", "subscribe", strategy="Gap fill")
        await create_strategy(h, "bob", "Own idea")
        await h.reply("bob", "subscribe", strategy="Own idea")
        await h.reply("bob", "strategy share", strategy="Own idea", member=h.user("alice"))
        await h.reply("alice", "subscribe", strategy="Own idea")

        # A bot can DM only a user it shares a server with: bob is in another one too.
        other = h.emu.add_guild("Other server")
        h.emu.add_member(other.id, h.user("bob"))
        h.emu.remove_member(h.guild_id, h.user("bob"))
        dm = await dm_to(h, "bob", "You are no longer a member of")
        assert "your subscription to **Gap fill** ended" in dm.text(), dm.text()
        # His own strategy goes on for its subscribers, who hear that nobody can change it.
        left = await dm_to(h, "alice", "The owner of **Own idea** left")
        assert "/unsubscribe strategy:Own idea stops them; a server admin can" in left.text()
        subs = await h.core.subscriptions.list_for(h.user("bob"), h.guild_id)
        assert [s.strategy_name for s in subs] == ["Own idea"]
        h.members["owner"] = h.emu.owner.id
        listed = await h.reply("owner", "strategy list", everyone=True)
        assert (
            f"**Own idea** · <@{h.user('bob')}> (left the server) · 2 subscriptions"
            in (listed.embeds[0]["description"])
        ), listed.embeds[0]["description"]
        assert await h.core.strategies.list(h.guild_id, h.user("bob")) != []
        # The strategy's next signal places nothing for him; its owner is not touched.
        status, body = await post(url, {"ticker": "AAPL", "action": "buy", "quantity": 1})
        assert status == 202
        await signal_done(h, str(body["id"]))
        assert await paper_orders(h) == 0
        info = await h.core.strategies.get(h.guild_id, h.user("alice"), "Gap fill")
        assert info.shared_with == ()

        # One who left while the bot was away is found when it is back: its READY comes with
        # every member (chunked), and carol is not among them.
        await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("carol"))
        await h.reply("carol", "subscribe", strategy="Gap fill")
        guild = h.bot.get_guild(h.guild_id)
        assert guild is not None and guild.chunked
        del h.emu.world.guild(h.guild_id).members[h.user("carol")]
        # The guild as a restart finds it: carol neither in its members nor in its count.
        guild._remove_member(guild.get_member(h.user("carol")))  # type: ignore[arg-type]
        guild._member_count = (guild.member_count or 1) - 1
        assert guild.chunked
        cog = h.bot.get_cog("Automation")
        await cog.reconcile_members()  # type: ignore[union-attr]
        assert await h.core.subscriptions.list_for(h.user("carol"), h.guild_id) == []
        assert [s.strategy_name for s in await h.core.subscriptions.list_for(h.user("alice"))] == [
            "Own idea"
        ]


async def test_an_owner_who_rejoins_owns_her_strategy_again_and_her_next_departure_is_told(
    settings: Settings, db: Database
) -> None:
    """With the Server Members intent: before, only the start-up reconcile cleared "left the
    server", so she stayed gone, and leaving again told her subscribers nothing."""
    async with running_tradecord(settings, discord_members_intent=True) as h:
        await create_strategy(h, "alice", "Gap fill")
        await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("bob"))
        await h.reply("bob", "subscribe", strategy="Gap fill")

        def told() -> list[Message]:
            return [
                m
                for m in h.emu.dm_messages(h.user("bob"))
                if "The owner of **Gap fill** left" in m.text()
            ]

        async def owner_left() -> bool:
            info = await h.core.strategies.get(h.guild_id, h.user("alice"), "Gap fill")
            return info.owner_left_at is not None

        h.emu.remove_member(h.guild_id, h.user("alice"))
        await dm_to(h, "bob", "The owner of **Gap fill** left")
        assert await owner_left()
        h.emu.add_member(h.guild_id, h.user("alice"))
        for _ in range(200):
            if not await owner_left():
                break
            await asyncio.sleep(0.05)
        assert not await owner_left()
        h.emu.remove_member(h.guild_id, h.user("alice"))
        for _ in range(200):
            if len(told()) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(told()) == 2


async def test_a_server_admin_deletes_a_members_strategy_and_its_people_are_told(
    tradecord: Harness,
) -> None:
    """One whose owner left the server, or that should not be there: only its owner could."""
    h = tradecord
    h.members["owner"] = h.emu.owner.id  # the server's owner: every permission
    await create_strategy(h, "alice", "Pump signals")
    await h.reply("alice", "strategy share", strategy="Pump signals", member=h.user("bob"))
    await h.reply("bob", "subscribe", strategy="Pump signals")
    # Another member can neither see it nor delete it.
    hidden = await h.reply("carol", "strategy delete", strategy="Pump signals")
    assert hidden.ephemeral and hidden.buttons() == []
    shared = await h.reply("bob", "strategy delete", strategy="Pump signals")
    assert "only its owner can delete it" in shared.content
    denied = await h.reply("carol", "strategy list", everyone=True)
    assert denied.ephemeral and "Only server admins (Manage Server)" in denied.content
    await create_strategy(h, "carol", "Quiet one")
    listed = await h.reply("owner", "strategy list", everyone=True)
    description = listed.embeds[0]["description"]
    assert listed.ephemeral and description.splitlines() == [
        f"**Pump signals** · <@{h.user('alice')}> · 1 subscription · last signal never",
        f"**Quiet one** · <@{h.user('carol')}> · 0 subscriptions · last signal never",
    ], description
    choices = await h.emu.autocomplete(
        h.emu.owner.id, "strategy delete", options={"strategy": "pump"}, focused="strategy"
    )
    assert [c["value"] for c in choices] == ["Pump signals"]

    card = await h.reply("owner", "strategy delete", strategy="Pump signals")
    assert card.ephemeral and "as a server admin? Its 1 subscription will end" in card.content
    assert card.content.endswith("and its owner is told."), card.content
    pressed = await h.emu.click(h.emu.owner.id, card, label="Delete strategy")
    assert "Deleted" in (await pressed.message(timeout=10)).text()
    await dm_to(h, "alice", "A server admin deleted your strategy “Pump signals”")
    await dm_to(h, "bob", "was deleted by a server admin, so your subscription")
    assert await h.core.strategies.names(h.guild_id) == ["Quiet one"]


async def test_a_strategy_is_given_to_another_member_with_its_url_and_subscribers(
    tradecord: Harness,
) -> None:
    """Its owner hands it over, or a server admin does for one whose owner left: the alerts
    sending its URL go on, and so do its subscriptions, the former owner's included."""
    h = tradecord
    h.members["owner"] = h.emu.owner.id
    url = await create_strategy(h, "alice", "Momentum")
    await h.reply("alice", "subscribe", strategy="Momentum")
    await h.reply("alice", "strategy share", strategy="Momentum", member=h.user("bob"))
    await h.reply("bob", "subscribe", strategy="Momentum")
    # Only its owner or a server admin gives it away.
    refused = await h.reply("bob", "strategy transfer", strategy="Momentum", member=h.user("carol"))
    assert "only its owner can change it" in refused.content, refused.content

    given = await h.reply("alice", "strategy transfer", strategy="Momentum", member=h.user("bob"))
    assert given.ephemeral and "**Momentum** now belongs to bob" in given.content
    # Who gave it, and where: strategy names are unique only within a server.
    told = await dm_to(h, "bob", "gave you the strategy **Momentum**")
    server = h.emu.world.guild(h.guild_id).name
    assert told.text().startswith(f"<@{h.user('alice')}> gave you"), told.text()
    assert f"in **{server}**: you now own it" in told.text(), told.text()
    info = await h.core.strategies.get(h.guild_id, h.user("bob"), "Momentum")
    assert info.is_owner and info.shared_with == (h.user("alice"),)
    assert info.subscriptions == 2
    settings = await h.reply("bob", "strategy settings", strategy="Momentum", max_lag_seconds=60)
    assert "Saved" in settings.content
    status, _ = await post(url, {"ticker": "AAPL", "action": "buy", "quantity": 1})
    assert status == 202  # the URL the alerts send still works

    # A server admin gives it on: its owner is told who did.
    await h.reply("owner", "strategy transfer", strategy="Momentum", member=h.user("carol"))
    await dm_to(h, "bob", "A server admin gave your strategy **Momentum** to another member")
    carol = await h.core.strategies.get(h.guild_id, h.user("carol"), "Momentum")
    assert carol.is_owner and set(carol.shared_with) == {h.user("alice"), h.user("bob")}
    same = await h.reply("carol", "strategy transfer", strategy="Momentum", member=h.user("carol"))
    assert "is theirs already" in same.content


async def test_a_strategy_shared_with_a_role_trades_for_its_members_while_they_have_it(
    settings: Settings, db: Database
) -> None:
    """A paid community's role gives its members the strategy; a member whose role is taken
    away (their payment lapsed) stops trading it at once, with the Server Members intent."""
    async with running_tradecord(settings, discord_members_intent=True) as h:
        premium = h.emu.add_role(h.guild_id, "Premium", 0)
        h.emu.add_member(h.guild_id, h.user("bob"), roles=[premium.id])
        await create_strategy(h, "alice", "Gap fill")
        both = await h.reply("alice", "strategy share", strategy="Gap fill")
        assert both.content == "Choose a member or a role to share it with (one of them)."
        shared = await h.reply("alice", "strategy share", strategy="Gap fill", role=premium.id)
        assert shared.ephemeral and shared.content.startswith(
            f"**Gap fill** is shared with <@&{premium.id}>: its members can now /subscribe "
            "while they have the role. One who loses it, or leaves the server, loses their "
            "subscription at once and is told."
        ), shared.content
        settings_card = await h.reply("alice", "strategy settings", strategy="Gap fill")
        field = {f["name"]: f["value"] for f in settings_card.embeds[0]["fields"]}
        assert field["Shared with"] == f"<@&{premium.id}>"

        # Without the role, it is not there to subscribe to.
        await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("erin"))
        told = await dm_to(h, "erin", "shared the strategy **Gap fill** with you")
        server = h.emu.world.guild(h.guild_id).name
        assert f"/subscribe strategy:Gap fill in **{server}**: you choose" in told.text()
        refused = await h.reply("carol", "subscribe", strategy="Gap fill")
        assert refused.content.startswith("No strategy “Gap fill” here that you own"), refused
        listed = await h.reply("bob", "strategy list")
        assert "Gap fill" in listed.text() and "shared" in listed.text()
        choices = await h.emu.autocomplete(
            h.user("bob"), "subscribe", options={"strategy": "gap"}, focused="strategy"
        )
        assert [c["value"] for c in choices] == ["Gap fill"]
        subscribed = await h.reply("bob", "subscribe", strategy="Gap fill")
        assert "now trades **Gap fill**" in subscribed.content, subscribed.content

        h.emu.remove_member_role(h.guild_id, h.user("bob"), premium.id)
        dm = await dm_to(h, "bob", "You no longer have a role")
        assert dm.text().startswith(
            f"You no longer have a role in **{h.emu.world.guild(h.guild_id).name}** that "
            "**Gap fill** is shared with, so its signals no longer trade for you: your "
            "subscription ended."
        ), dm.text()
        assert await h.core.subscriptions.list_for(h.user("bob"), h.guild_id) == []
        gone = await h.reply("bob", "subscribe", strategy="Gap fill")
        assert "now trades" not in gone.content

        # Unsharing the role ends the subscriptions it gave, asking Discord for the roles.
        h.emu.add_member(h.guild_id, h.user("bob"), roles=[premium.id])
        h.emu.add_member(h.guild_id, h.user("carol"), roles=[premium.id])
        await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("carol"))
        for who in ("bob", "carol"):
            assert "now trades" in (await h.reply(who, "subscribe", strategy="Gap fill")).content
        unshared = await h.reply("alice", "strategy unshare", strategy="Gap fill", role=premium.id)
        assert unshared.content == (
            f"**Gap fill** is no longer shared with <@&{premium.id}>. 1 subscriber with no "
            "other way to it lost their subscription and was told."
        ), unshared.content
        assert await h.core.subscriptions.list_for(h.user("bob"), h.guild_id) == []
        assert len(await h.core.subscriptions.list_for(h.user("carol"), h.guild_id)) == 1
        info = await h.core.strategies.get(h.guild_id, h.user("alice"), "Gap fill")
        assert set(info.shared_with) == {h.user("carol"), h.user("erin")}
        assert info.shared_with_roles == ()
        member_unshared = await h.reply(
            "alice", "strategy unshare", strategy="Gap fill", member=h.user("carol")
        )
        assert member_unshared.content == (
            "**Gap fill** is no longer shared with carol. Their subscription to it ended, "
            "and they were told."
        ), member_unshared.content
        assert await h.core.subscriptions.list_for(h.user("carol"), h.guild_id) == []

        # Unsharing a member whose role still has it shared leaves their subscription be.
        await h.reply("alice", "strategy share", strategy="Gap fill", role=premium.id)
        await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("carol"))
        assert "now trades" in (await h.reply("carol", "subscribe", strategy="Gap fill")).content
        kept = await h.reply(
            "alice", "strategy unshare", strategy="Gap fill", member=h.user("carol")
        )
        assert kept.content == (
            "**Gap fill** is no longer shared with carol. A role of theirs still has it "
            "shared, so they keep their subscription: /strategy unshare with that role ends it."
        ), kept.content
        assert len(await h.core.subscriptions.list_for(h.user("carol"), h.guild_id)) == 1
        again = await h.reply(
            "alice", "strategy unshare", strategy="Gap fill", member=h.user("carol")
        )
        assert "is shared with them only through a role they have" in again.content

        # A role taken away while the bot was down: its start-up reconcile has every member's
        # roles (the guild is chunked) and ends what the role alone gave.
        assert "now trades" in (await h.reply("bob", "subscribe", strategy="Gap fill")).content
        h.emu.world.guild(h.guild_id).members[h.user("bob")].roles.remove(premium.id)
        guild = h.bot.get_guild(h.guild_id)
        assert guild is not None and guild.chunked
        cached = guild.get_member(h.user("bob"))
        assert cached is not None
        cached._roles = discord.utils.SnowflakeList([])  # as READY would bring him now
        cog = h.bot.get_cog("Automation")
        await cog.reconcile_members()  # type: ignore[union-attr]
        assert await h.core.subscriptions.list_for(h.user("bob"), h.guild_id) == []


async def test_without_the_members_intent_the_hourly_check_finds_lost_roles_and_departures(
    tradecord: Harness,
) -> None:
    """No GUILD_MEMBER_UPDATE or REMOVE reaches a bot without the privileged intent: the
    check asks Discord for each follower, which needs no intent."""
    h = tradecord
    premium = h.emu.add_role(h.guild_id, "Premium", 0)
    for who in ("bob", "carol"):
        h.emu.add_member(h.guild_id, h.user(who), roles=[premium.id])
    await create_strategy(h, "alice", "Gap fill")
    await h.reply("alice", "strategy share", strategy="Gap fill", role=premium.id)
    everyone = await h.reply("alice", "strategy share", strategy="Gap fill", role=h.guild_id)
    assert "is shared with everyone in this server" in everyone.content, everyone.content
    assert "loses their subscription within the hour and is told." in everyone.content
    await h.reply("alice", "strategy unshare", strategy="Gap fill", role=h.guild_id)
    for who in ("bob", "carol"):
        await h.reply(who, "subscribe", strategy="Gap fill")
    h.emu.remove_member_role(h.guild_id, h.user("bob"), premium.id)
    other = h.emu.add_guild("Other server")
    h.emu.add_member(other.id, h.user("carol"))  # so that a DM still reaches her
    h.emu.remove_member(h.guild_id, h.user("carol"))
    assert len(await h.core.subscriptions.list_for(h.user("bob"), h.guild_id)) == 1
    assert await h.core.strategies.check_members() == 2
    assert await h.core.subscriptions.list_for(h.user("bob"), h.guild_id) == []
    assert await h.core.subscriptions.list_for(h.user("carol"), h.guild_id) == []
    # Discord names the server for the DMs, as the events do.
    server = h.emu.world.guild(h.guild_id).name
    await dm_to(h, "bob", f"You no longer have a role in **{server}** that **Gap fill** is")
    await dm_to(h, "carol", f"You are no longer a member of **{server}**")
    assert await h.core.strategies.check_members() == 0  # told once

    # A deleted role: GUILD_ROLE_DELETE (no privileged intent) ends what it alone gave.
    vip = h.emu.add_role(h.guild_id, "VIP", 0)
    h.emu.add_member(h.guild_id, h.user("dave"), roles=[vip.id])
    await h.reply("alice", "strategy share", strategy="Gap fill", role=vip.id)
    await h.reply("dave", "subscribe", strategy="Gap fill")
    h.emu.delete_role(h.guild_id, vip.id)
    await dm_to(h, "dave", f"You no longer have a role in **{server}** that **Gap fill** is")
    assert await h.core.subscriptions.list_for(h.user("dave"), h.guild_id) == []
    info = await h.core.strategies.get(h.guild_id, h.user("alice"), "Gap fill")
    assert info.shared_with_roles == (premium.id,)


async def test_a_strategy_owner_sees_who_subscribes_but_not_their_connections(
    tradecord: Harness,
) -> None:
    h = tradecord
    await create_strategy(h, "alice", "Gap fill")
    empty = await h.reply("alice", "strategy subscribers", strategy="Gap fill")
    # Not "yet": it reads as wrong once its subscribers have left.
    assert empty.embeds[0]["description"] == "Nobody subscribes to it."
    await h.reply("alice", "strategy share", strategy="Gap fill", member=h.user("bob"))
    await h.reply("alice", "subscribe", strategy="Gap fill")
    await h.reply("bob", "subscribe", strategy="Gap fill", active=False)
    card = await h.reply("alice", "strategy subscribers", strategy="Gap fill")
    assert card.ephemeral
    day = r"since \d{4}-\d{2}-\d{2}"
    first, second = card.embeds[0]["description"].splitlines()
    assert re.fullmatch(rf"<@{h.user('alice')}> · paper · {day}", first), first
    assert re.fullmatch(rf"<@{h.user('bob')}> · paper · paused · {day}", second), second
    assert card.embeds[0]["footer"]["text"].startswith("2 subscriptions, 0 live")
    assert "Tradecord Paper" not in card.text()
    denied = await h.reply("bob", "strategy subscribers", strategy="Gap fill")
    assert denied.content == (
        "Only the owner of “Gap fill” and server admins see who subscribes to it."
    )
    hidden = await h.reply("carol", "strategy subscribers", strategy="Gap fill")
    assert hidden.content.startswith("No strategy “Gap fill” here")
    h.members["owner"] = h.emu.owner.id
    admin = await h.reply("owner", "strategy subscribers", strategy="Gap fill")
    assert len(admin.embeds[0]["description"].splitlines()) == 2


async def test_what_tells_members_by_dm_is_deferred_when_the_dms_are_slow(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting, transferring and unsharing a strategy DM the people it concerns before they
    answer: with Discord slow to take DMs, the interaction must be deferred in time (3 s)."""
    from cogs import ui

    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    await create_strategy(h, "alice", "Momentum")
    await h.reply("alice", "subscribe", strategy="Momentum")  # told when it is deleted
    await h.reply("alice", "strategy share", strategy="Momentum", member=h.user("bob"))
    await h.reply("bob", "subscribe", strategy="Momentum")
    dm = h.core.notifier.dm

    async def slow_dm(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await dm(*args, **kwargs)

    monkeypatch.setattr(h.core.notifier, "dm", slow_dm)
    unshared = await h.slash("alice", "strategy unshare", strategy="Momentum", member=h.user("bob"))
    assert (await unshared.response()).deferred
    assert "is no longer shared with" in (await unshared.message(timeout=10)).text()
    given = await h.slash("alice", "strategy transfer", strategy="Momentum", member=h.user("bob"))
    assert (await given.response()).deferred
    assert "now belongs to" in (await given.message(timeout=10)).text()
    card = await h.reply("bob", "strategy delete", strategy="Momentum")
    pressed = await h.emu.click(h.user("bob"), card, label="Delete strategy")
    assert (await pressed.response()).deferred
    assert "Deleted" in (await pressed.message(timeout=10)).text()
