"""Tradecord removed from a server: its strategies stop trading for their subscribers, who are
told once and can remove the subscriptions from anywhere. Before: nothing listened for the
removal, the hourly check logged "Unknown Guild" and went on, every hour, the strategies kept
trading, and /unsubscribe worked only in the server the bot had left."""

from __future__ import annotations

from emulators.discord import Message
from tests.cogs.test_automation import dm_to, paper_orders, post, signal_done
from tests.discord_harness import Harness


async def gone_server(h: Harness) -> tuple[int, str]:
    """alice's "Gone" in another server, shared with bob, who subscribes, as does she; both
    are also in the harness's server, so DMs still reach them once the bot has left. The
    strategy's webhook URL, at this test's web server."""
    gone = h.emu.add_guild("Gone server")
    for who in ("alice", "bob"):
        h.emu.add_member(gone.id, h.user(who))
    made = await h.core.strategies.create(gone.id, h.user("alice"), "Gone")
    strategy_id = made.strategy.id
    await h.core.strategies.share(gone.id, h.user("alice"), strategy_id, h.user("bob"))
    for who in ("alice", "bob"):
        await h.core.subscriptions.subscribe(gone.id, h.user(who), strategy_id)
    path = made.url.split("/webhook/", 1)[1]
    return gone.id, f"http://127.0.0.1:{h.bot.web_port}/webhook/{path}"


def dms_with(h: Harness, user: str, text: str) -> list[Message]:
    return [m for m in h.emu.dm_messages(h.user(user)) if text in m.text()]


async def test_the_hourly_check_finds_the_bot_removed_and_pauses_its_strategies(
    tradecord: Harness,
) -> None:
    """The removal happened while the bot was away (no GUILD_DELETE): Discord answers the
    hourly check "Unknown Guild"."""
    h = tradecord
    gone, url = await gone_server(h)
    del h.emu.world.guilds[gone]  # the bot is no longer in it; REST says Unknown Guild
    # As a restart finds it: not among the bot's servers.
    h.bot._connection._remove_guild(h.bot.get_guild(gone))  # type: ignore[arg-type]
    assert await h.core.strategies.check_members() == 0
    for who in ("alice", "bob"):
        [sub] = await h.core.subscriptions.list_for(h.user(who), gone)
        assert not sub.enabled  # kept, paused
    status, body = await post(url, {"ticker": "AAPL", "action": "buy"})
    assert status == 202
    await signal_done(h, str(body["id"]))
    assert await paper_orders(h) == 0

    told = (await dm_to(h, "bob", "Tradecord was removed from")).text()
    assert "**Gone** no longer trades for you: your subscription to it is paused" in told, told
    assert "/unsubscribe strategy:Gone" in told and "in our DMs" in told, told
    assert "/subscribe strategy:Gone active:true" in told, told
    owner = (await dm_to(h, "alice", "your strategy **Gone** no longer trades")).text()
    assert "2 subscriptions" in owner and "/unsubscribe strategy:Gone" in owner, owner
    # Told once: the check runs every hour, and another process may find it too.
    await h.core.strategies.check_members()
    await h.core.strategies.guild_removed(gone)
    assert len(dms_with(h, "bob", "Tradecord was removed from")) == 1
    assert len(dms_with(h, "alice", "Tradecord was removed from")) == 1

    # /unsubscribe finds it in DMs, and in a server the bot is in, but only for its members.
    await h.bot.tree.sync()  # globally, as `tradecord sync --global` does: DMs see it
    done = await h.emu.slash(h.user("bob"), "unsubscribe", options={"strategy": "Gone"}, dm=True)
    assert (
        "Unsubscribed **Tradecord Paper** (paper) from **Gone**"
        in (await done.message(timeout=10)).text()
    )
    assert await h.core.subscriptions.list_for(h.user("bob"), gone) == []
    hidden = await h.reply("carol", "unsubscribe", strategy="Gone")
    assert hidden.content.startswith("No strategy “Gone” here"), hidden.content
    mine = await h.reply("alice", "unsubscribe", strategy="gone")
    assert "from **Gone**" in mine.content, mine.content
    assert await h.core.subscriptions.list_for(h.user("alice"), gone) == []


async def test_a_strategy_of_a_server_the_bot_is_in_is_unsubscribed_there(
    tradecord: Harness,
) -> None:
    """In DMs, /unsubscribe stops only what a server Tradecord left can no longer stop."""
    h = tradecord
    _, _ = await gone_server(h)
    await h.bot.tree.sync()
    done = await h.emu.slash(h.user("bob"), "unsubscribe", options={"strategy": "Gone"}, dm=True)
    answer = (await done.message(timeout=10)).text()
    assert answer == (
        "“Gone” belongs to a server Tradecord is still in: run /unsubscribe strategy:Gone there."
    ), answer
    [sub] = await h.core.subscriptions.list_for(h.user("bob"))
    assert sub.enabled
    done = await h.emu.slash(h.user("bob"), "unsubscribe", options={"strategy": "Nope"}, dm=True)
    assert (await done.message(timeout=10)).text().startswith("You have no subscription to “Nope”.")


async def test_the_bot_removed_from_a_server_hears_it_and_names_the_server(
    tradecord: Harness,
) -> None:
    """GUILD_DELETE reaches the bot: the same, at once, with the server's name."""
    h = tradecord
    gone, _ = await gone_server(h)
    del h.emu.world.guilds[gone]
    h.emu.hub.dispatch_guild(gone, "GUILD_DELETE", {"id": str(gone)})
    told = (await dm_to(h, "bob", "Tradecord was removed from **Gone server**")).text()
    assert "**Gone** no longer trades for you" in told, told
    await dm_to(h, "alice", "Tradecord was removed from **Gone server**")
    [sub] = await h.core.subscriptions.list_for(h.user("bob"), gone)
    assert not sub.enabled
    assert await h.core.strategies.guild_removed(gone) == 0  # found again: told once
    assert len(dms_with(h, "bob", "Tradecord was removed from")) == 1


async def test_an_owner_trading_only_their_own_strategy_is_found_too(tradecord: Harness) -> None:
    """Before: the hourly check asked Discord only about members following another's
    strategy, so a server with none was never found gone."""
    h = tradecord
    gone = h.emu.add_guild("Solo server")
    h.emu.add_member(gone.id, h.user("alice"))
    made = await h.core.strategies.create(gone.id, h.user("alice"), "Solo")
    await h.core.subscriptions.subscribe(gone.id, h.user("alice"), made.strategy.id)
    del h.emu.world.guilds[gone.id]
    await h.core.strategies.check_members()
    [sub] = await h.core.subscriptions.list_for(h.user("alice"), gone.id)
    assert not sub.enabled
    told = (await dm_to(h, "alice", "your strategy **Solo** no longer trades")).text()
    assert "its 1 subscription is paused. To remove yours: /unsubscribe" in told, told
