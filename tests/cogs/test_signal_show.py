"""/signal show's embed: whose subscription is whose, the viewer's own first, the others that
do not fit counted by outcome within Discord's limits, and what a step or an order says."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import discord
from sqlalchemy import update

from bot.models import Connection
from bot.services.signal_report import OrderLine, Phase, SignalReport, SubscriptionReport
from cogs.automation import phase_table, signal_embed, since_receipt
from tests.cogs.test_automation import create_strategy, dm_to, post, signal_done
from tests.discord_harness import Harness

T0 = datetime(2026, 3, 4, 14, 30, tzinfo=UTC)


def steps(n: int = 6) -> tuple[Phase, ...]:
    names = ["sized", "entry submitted", "entry accepted", "entry filled", "x", "y"]
    return tuple(Phase(names[i % 6], T0 + timedelta(milliseconds=40 * i), 40 * i) for i in range(n))


def order(status: str = "filled", error: str | None = None) -> OrderLine:
    return OrderLine(
        "entry", "i", "buy", Decimal(3), "AAPL", "market", status, Decimal(3), None, error
    )


def sub(
    n: int,
    status: str = "filled",
    *,
    own: bool = False,
    public_name: str | None = None,
    reason_code: str | None = None,
) -> SubscriptionReport:
    return SubscriptionReport(
        execution_id=n,
        subscription_id=n,
        member_discord_id=n,
        connection_name="Tradecord Paper" if own else None,
        mode="paper",
        status=status,
        reason_code=reason_code,
        reason=reason_code,
        phases=steps(),
        orders=(order(status),),
        own=own,
        public_name=public_name,
    )


def report(*subs: SubscriptionReport) -> SignalReport:
    return SignalReport(
        signal_id="0190a1b2-c3d4-7abc-8def-0123456789ab",
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
        received_at=T0,
        signal_time=None,
        latency_ms=None,
        phases=steps(4),
        subscriptions=subs,
    )


def within_limits(embed: discord.Embed) -> None:
    assert len(embed) <= 6000 and len(embed.fields) <= 25
    assert all(len(f.name or "") <= 256 and len(f.value or "") <= 1024 for f in embed.fields)


def names(embed: discord.Embed) -> list[str]:
    return [f.name or "" for f in embed.fields]


def test_others_are_named_only_as_they_chose_and_the_viewers_own_by_its_connection() -> None:
    """Before: each field was titled with the subscription's connection name, the member's
    own (free text, which may say who they are)."""
    embed = signal_embed(
        report(sub(1, public_name="Alice"), sub(2), sub(3, own=True), sub(4, "skipped"))
    )
    assert names(embed) == [
        "Signal",
        "You · Tradecord Paper (paper) · filled",
        "Alice (paper) · filled",
        "A subscriber (paper) · filled",
        "A subscriber (paper) · skipped",
    ]


def test_the_viewers_own_result_comes_first_and_the_rest_are_counted_by_outcome() -> None:
    """Before: at most 20 fields, then "N more subscriptions": the owner's own result, after
    those of 40 subscribers, was never shown."""
    others = [sub(n) for n in range(1, 41)] + [
        sub(n, "skipped", reason_code="side-not-allowed") for n in range(41, 46)
    ]
    embed = signal_embed(report(*others, sub(99, "rejected", own=True)))
    within_limits(embed)
    fields = names(embed)
    assert fields[:2] == ["Signal", "You · Tradecord Paper (paper) · rejected"], fields
    shown = [f for f in fields[2:] if f.startswith("A subscriber")]
    assert fields[-1] == f"{45 - len(shown)} more subscriptions", fields
    counted = embed.fields[-1].value or ""
    assert counted.splitlines() == [
        f"{40 - len(shown)} subscribers · filled",
        "5 subscribers · skipped (side-not-allowed)",
    ], counted


def test_a_thousand_subscribers_fit_the_embed() -> None:
    statuses = ["filled", "rejected", "skipped", "partially_filled", "accepted"]
    subs = [
        sub(n, statuses[n % 5], reason_code=f"code-{n}" if n % 5 in (1, 2) else None)
        for n in range(1000)
    ]
    embed = signal_embed(report(sub(5000, own=True), sub(5001, "skipped", own=True), *subs))
    within_limits(embed)
    assert names(embed)[1:3] == [
        "You · Tradecord Paper (paper) · filled",
        "You · Tradecord Paper (paper) · skipped",
    ]
    counted = embed.fields[-1].value or ""
    assert re.search(r"… \d+ more outcomes$", counted), counted
    # The most common outcomes first: none of them is among those cut.
    top = {re.sub(r"^\d+ ", "", line) for line in counted.splitlines()[:3]}
    assert top == {
        "subscribers · partially filled",
        "subscribers · order placed",
        "subscribers · filled",
    }, counted


def test_a_duplicate_says_which_signal_it_repeats() -> None:
    embed = signal_embed(
        replace(
            report(),
            status="duplicate",
            duplicate_of="0190a1b2-c3d4-7abc-8def-00000000cafe",
        )
    )
    assert "Duplicate of `0000cafe`: /signal show id:0000cafe for what it traded" in (
        embed.description or ""
    ), embed.description


def test_the_brokers_message_is_shown_on_the_viewers_own_order_only() -> None:
    error = "Halted: LULD pause"
    own = replace(sub(1, "rejected", own=True), orders=(order("rejected", error),), reason=None)
    theirs = replace(sub(2, "rejected"), orders=(order("rejected", error),))
    embed = signal_embed(report(own, theirs))
    [mine, other] = [f.value or "" for f in embed.fields[1:]]
    assert "buy 3 AAPL → rejected (Halted: LULD pause)" in mine, mine
    assert error not in other
    # Said once when its reason says it already.
    said = replace(own, reason=f"Rejected by the broker: {error}.")
    value = signal_embed(report(said)).fields[1].value or ""
    assert value.count(error) == 1, value


def test_steps_long_after_the_signal_say_minutes_and_hours() -> None:
    assert [since_receipt(ms) for ms in (0, 59_999, 250_000, 14_400_000, 14_460_500)] == [
        "0",
        "59999",
        "4 m 10 s",
        "4 h 0 m",
        "4 h 1 m",
    ]
    late = (Phase("received", T0, 0), Phase("entry filled", T0 + timedelta(hours=4), 14_400_000))
    table = phase_table(late, "2026-03-04", 1024)
    assert re.search(r"entry filled\s+18:30:00\.000\s+4 h 0 m", table), table


async def test_the_owner_sees_a_subscriber_by_alert_name_never_by_connection(
    tradecord: Harness,
) -> None:
    h = tradecord
    url = await create_strategy(h, "alice", "Breakout")
    await h.core.strategies.share(h.guild_id, h.user("alice"), "Breakout", h.user("bob"))
    for user in ("alice", "bob"):
        await h.reply(user, "subscribe", strategy="Breakout")
    bob = await h.core.members.ensure(h.user("bob"))
    async with h.core.db.transaction() as s:
        await s.execute(
            update(Connection).where(Connection.member_id == bob).values(name="Bob's IRA at Schwab")
        )
    _, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    await dm_to(h, "bob", "Breakout")
    await signal_done(h, str(body["id"]))
    shown = await h.reply("alice", "signal show", id=str(body["id"]))
    fields = [f["name"] for f in shown.embeds[0]["fields"]]
    assert fields == [
        "Signal",
        "You · Tradecord Paper (paper) · filled",
        "A subscriber (paper) · filled",
    ], fields
    assert "Schwab" not in shown.text(), shown.text()
    # Bob sees his own by its name.
    his = await h.reply("bob", "signal show", id=str(body["id"]))
    assert [f["name"] for f in his.embeds[0]["fields"]][1:] == [
        "You · Bob's IRA at Schwab (paper) · filled"
    ]


def test_a_reason_is_said_once_below_the_steps_without_a_blank_line() -> None:
    """Before: "skipped (no-open-orders)", then a blank line (no orders), then
    "no-open-orders" again."""
    skipped = replace(
        sub(1, "skipped", reason_code="no-open-orders"),
        phases=(Phase("skipped", T0, 0, "no-open-orders"),),
        orders=(),
    )
    value = signal_embed(report(skipped)).fields[1].value or ""
    assert value.endswith("```\nno-open-orders") and value.count("no-open-orders") == 1, value
    assert "\n\n" not in value, value


def test_each_outcome_has_the_words_of_the_dm_and_the_channel() -> None:
    """Before: /signal show said "failed" where the DM and the channel said "⛔ Not placed"."""
    embed = signal_embed(
        report(
            sub(1, "failed", reason_code="member-paused"),
            sub(2, "rejected", reason_code="position-changed"),
            sub(3, "rejected", reason_code="insufficient-funds"),
            sub(4, "accepted"),
            sub(5, "failed", reason_code="signal-given-up"),
        )
    )
    assert names(embed)[1:] == [
        "A subscriber (paper) · not placed",
        "A subscriber (paper) · not placed",
        "A subscriber (paper) · rejected",
        "A subscriber (paper) · order placed",
        "A subscriber (paper) · did not finish",
    ]
    assert (embed.description or "").startswith(
        "buy AAPL · 2 not placed, 1 rejected, 1 order placed, 1 did not finish"
    ), embed.description


async def test_a_former_subscriber_filters_the_signals_that_ran_for_them(
    tradecord: Harness,
) -> None:
    """Unsubscribed and unshared: /signal list still showed the strategy's signal that ran
    for them, and /signal list strategy: of it said there was no such strategy."""
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await create_strategy(h, "olive", "Alpha")
    await h.reply("olive", "strategy share", strategy="Alpha", member=h.user("sam"))
    await h.reply("sam", "subscribe", strategy="Alpha")
    status, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    assert status == 202
    await signal_done(h, str(body["id"]))
    await h.reply("sam", "unsubscribe", strategy="Alpha")
    await h.reply("olive", "strategy unshare", strategy="Alpha", member=h.user("sam"))
    filtered = (await h.reply("sam", "signal list", strategy="Alpha")).text()
    assert str(body["id"])[-8:] in filtered, filtered
    assert "that ran for you" in filtered and "no longer shared with you" in filtered
    # One that never ran for them stays unknown to them.
    await create_strategy(h, "olive", "Beta")
    never = (await h.reply("sam", "signal list", strategy="Beta")).text()
    assert "none of its signals ran for you" in never, never


async def test_a_rate_limited_strategy_test_is_not_reported_as_an_alert_turned_away(
    tradecord: Harness,
) -> None:
    """/strategy test over the rate limit is told in its answer; it was also counted with the
    alerts turned away, and the hourly DM then warned of lost alerts."""
    from bot.services.refusals import tell_refusals

    h = tradecord
    url = await create_strategy(h, "olive", "Alpha")
    await h.reply("olive", "strategy settings", strategy="Alpha", rate_limit_per_minute=1)
    assert (await post(url, {"ticker": "AAPL", "action": "buy"}))[0] == 202
    answer = await h.reply("olive", "strategy test", strategy="Alpha", ticker="AAPL", action="buy")
    assert "signals a minute" in answer.content, answer.content
    await tell_refusals(h.core)
    await asyncio.sleep(0.3)
    dms = [m.text() for m in h.emu.dm_messages(h.user("olive"))]
    assert not any("came over its limit" in t for t in dms), dms
