"""/subscribe, /unsubscribe and /subscriptions name the subscription they mean: the one a
bare /subscribe changes, the account type it trades in, a sizing value typed with its unit, a
strategy seen through a role."""

from __future__ import annotations

import re

from bot.models import ConnectionAccount
from tests.cogs.test_automation import create_strategy
from tests.discord_harness import Harness
from tests.support import add_broker_connection


async def live_margin_connection(h: Harness, user: str, name: str = "TS Stocks") -> None:
    conn_id = await add_broker_connection(h, user, name)
    async with h.core.db.transaction() as s:
        s.add(
            ConnectionAccount(
                connection_id=conn_id,
                mode="live",
                account_id="11223344",
                account_type="margin",
                label="TradeStation ****3344",
            )
        )


async def test_a_bare_subscribe_pauses_the_live_subscription_and_names_it_to_resume(
    tradecord: Harness,
) -> None:
    """Before: /subscribe strategy:Trend active:false made a paused Tradecord Paper
    subscription, the live one kept trading, and the hint to resume named neither."""
    h = tradecord
    await create_strategy(h, "alice", "Trend")
    await live_margin_connection(h, "alice")
    made = await h.reply(
        "alice", "subscribe", strategy="Trend", connection="TS Stocks", mode="live"
    )
    assert made.content.startswith("**TS Stocks** (live, margin account) now trades **Trend**"), (
        made.content
    )
    paused = await h.reply("alice", "subscribe", strategy="Trend", active=False)
    assert paused.content.startswith(
        "Updated: **TS Stocks** (live, margin account) trades **Trend**"
    ), paused.content
    assert paused.content.endswith(
        "It is paused: it takes no signals until you resume it (/subscribe strategy:Trend "
        "connection:TS Stocks mode:live active:true)."
    ), paused.content
    [sub] = await h.core.subscriptions.list_for(h.user("alice"))
    assert (sub.connection_name, sub.mode, sub.enabled) == ("TS Stocks", "live", False)
    listed = (await h.reply("alice", "subscriptions")).text()
    assert re.search(r"Trend\s+TS Stocks\s+live, margin\s+1× signal", listed), listed


async def test_a_sizing_value_is_taken_with_its_unit(tradecord: Harness) -> None:
    """Before: “$50” on a percent-of-equity subscription was taken as 50% of the equity, and
    “5%”, as /subscriptions shows it, was no number."""
    h = tradecord
    await create_strategy(h, "alice", "Breakout")
    percent = dict(strategy="Breakout", sizing="percent_of_equity")
    made = await h.reply("alice", "subscribe", **percent, sizing_value="5%")
    assert "5 percent of the account's equity per entry" in made.content, made.content
    dollars = await h.reply("alice", "subscribe", strategy="Breakout", sizing_value="$50")
    assert dollars.content == (
        "sizing_value $50.00 is dollars, but the sizing is percent of equity: type 50 for 50% "
        "of equity, or give sizing:dollar_amount for $50.00 per entry."
    ), dollars.content
    [sub] = await h.core.subscriptions.list_for(h.user("alice"))
    assert sub.settings.sizing_value == 5
    more = await h.reply("alice", "subscribe", strategy="Breakout", sizing_value="7 %")
    assert more.content.endswith(
        "Changed: 5 percent of the account's equity per entry → 7 percent of the account's "
        "equity per entry."
    ), more.content


async def test_unsubscribing_a_strategy_seen_through_a_role_says_there_is_no_subscription(
    tradecord: Harness,
) -> None:
    """Before: “No strategy “Gap fill” here that you own or that was shared with you”, to a
    member it was shared with through their role."""
    h = tradecord
    premium = h.emu.add_role(h.guild_id, "Premium", 0)
    h.emu.add_member(h.guild_id, h.user("bob"), roles=[premium.id])
    await create_strategy(h, "alice", "Gap fill")
    await h.reply("alice", "strategy share", strategy="Gap fill", role=premium.id)
    none = await h.reply("bob", "unsubscribe", strategy="Gap fill")
    assert none.content == "You have no subscription to “Gap fill”. See /subscriptions."
