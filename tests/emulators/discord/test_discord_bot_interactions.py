"""A real discord.py bot against the emulator: login, sync, commands, components, modals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiohttp
import discord
import pytest

from emulators.discord import (
    DiscordEmulator,
    EmulatorError,
    InteractionTimeout,
    User,
    components_index,
    permissions,
    render_message,
)

RunBot = Callable[..., AbstractAsyncContextManager[None]]


@pytest.fixture
def alice(emu: DiscordEmulator) -> User:
    user = emu.add_user("alice", global_name="Alice")
    emu.add_member(emu.guild.id, user.id)
    return user


@pytest.fixture
def bob(emu: DiscordEmulator) -> User:
    user = emu.add_user("bob", global_name="Bob")
    emu.add_member(emu.guild.id, user.id)
    return user


async def test_wrong_token_is_a_login_failure(
    make_bot: Callable[..., Any], emu: DiscordEmulator
) -> None:
    client = make_bot()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.start("not-the-token")
    finally:
        await client.close()
    assert emu.sessions == []


async def test_bot_logs_in_and_sees_the_world(bot: Any, emu: DiscordEmulator) -> None:
    assert bot.user.id == emu.bot_user.id
    assert bot.application_id == emu.application_id
    guild = bot.get_guild(emu.guild.id)
    assert guild is not None and guild.name == "Tradecord Local"
    assert {c.name for c in guild.text_channels} == {"general", "trade-alerts"}
    assert guild.default_role.id == guild.id
    assert guild.owner_id == emu.owner.id
    assert guild.me.guild_permissions.send_messages


async def test_commands_must_be_synced_before_users_can_run_them(
    make_bot: Callable[..., Any], run_bot: RunBot, emu: DiscordEmulator, alice: User
) -> None:
    client = make_bot()
    async with run_bot(client):
        with pytest.raises(EmulatorError, match="not a synced command"):
            await emu.slash(alice.id, "ping")
        synced = await client.tree.sync()
        assert {c.name for c in synced} >= {"ping", "trade", "paper", "strategy"}
        assert all(c.id for c in synced)
        fetched = await client.tree.fetch_commands()
        assert {c.id for c in fetched} == {c.id for c in synced}

        result = await emu.slash(alice.id, "ping")
        response = await result.response()
        assert response.name == "CHANNEL_MESSAGE_WITH_SOURCE"
        assert response.message is not None and response.message.content == "pong"
        assert not result.ephemeral
        assert emu.messages(emu.general.id)[-1].content == "pong"

        # A second sync keeps ids (Discord upserts by name).
        again = await client.tree.sync()
        assert {c.id for c in again} == {c.id for c in synced}


async def test_unknown_options_and_bad_values_are_refused(
    bot: Any, emu: DiscordEmulator, alice: User
) -> None:
    with pytest.raises(EmulatorError, match="unknown option"):
        await emu.slash(
            alice.id, "trade", {"symbol": "AAPL", "quantity": 1, "side": "buy", "qty": 2}
        )
    with pytest.raises(EmulatorError, match="required option 'side'"):
        await emu.slash(alice.id, "trade", {"symbol": "AAPL", "quantity": 1})
    with pytest.raises(EmulatorError, match="only offers"):
        await emu.slash(alice.id, "trade", {"symbol": "AAPL", "quantity": 1, "side": "hold"})
    with pytest.raises(EmulatorError, match="between 1 and 10000"):
        await emu.slash(alice.id, "trade", {"symbol": "AAPL", "quantity": 0, "side": "buy"})
    with pytest.raises(EmulatorError, match="integer option"):
        await emu.slash(alice.id, "trade", {"symbol": "AAPL", "quantity": "10", "side": "buy"})
    with pytest.raises(EmulatorError, match="needs a subcommand"):
        await emu.slash(alice.id, "paper")


async def test_trade_confirmation_only_works_for_its_owner(
    bot: Any, emu: DiscordEmulator, alice: User, bob: User
) -> None:
    result = await emu.slash(
        alice.id, "trade", {"symbol": "AAPL", "quantity": 10, "side": "buy", "limit": 187.5}
    )
    message = await result.message()
    assert bot.seen[-1] == ("trade", "AAPL", 10, "buy", 187.5)
    assert result.ephemeral and message.ephemeral
    assert "Buy 10 AAPL" in message.text() and "Limit: 187.50" in message.text()
    assert [b.label for b in message.buttons()] == ["Confirm", "Cancel"]

    # Bob cannot even see Alice's ephemeral message...
    with pytest.raises(EmulatorError, match="ephemeral"):
        await emu.click(bob.id, message, "trade:confirm")
    assert message not in emu.messages(emu.general.id, visible_to=bob.id)

    # ...and Alice's clicks are dispatched to the View stored under the response message id.
    click = await emu.click(alice.id, message, label="Confirm")
    response = await click.response()
    assert response.name == "UPDATE_MESSAGE"
    assert message.content == "Order placed"
    assert all(b.disabled for b in message.buttons())
    assert len(message.edits) == 1 and message.edits[0].content == ""
    with pytest.raises(EmulatorError, match="disabled"):
        await emu.click(alice.id, message, "trade:confirm")
    assert "(only you can see this)" in render_message(message)


async def test_interaction_check_rejects_another_members_click(
    bot: Any, emu: DiscordEmulator, alice: User, bob: User
) -> None:
    # A public message with the same view: Bob can see it but the view's check refuses him.
    channel = bot.get_channel(emu.general.id)
    sent = await channel.send("Confirm?", view=bot.confirm_view(alice.id))
    message = emu.message(sent.id)
    denied = await emu.click(bob.id, message, "trade:confirm")
    reply = (await denied.response()).message
    assert (
        reply is not None and reply.ephemeral and reply.content == "This confirmation is not yours."
    )
    assert message.content == "Confirm?"
    accepted = await emu.click(alice.id, message, "trade:cancel")
    assert (await accepted.message()).content == "Cancelled"
    assert message.components == []


async def test_select_menu(bot: Any, emu: DiscordEmulator, alice: User) -> None:
    result = await emu.slash(alice.id, "account")
    message = await result.message()
    index = components_index(message)
    assert [(c.number, c.kind) for c in index] == [(1, "select")]
    with pytest.raises(EmulatorError, match="not an option"):
        await emu.select(alice.id, message, ["crypto"])
    with pytest.raises(EmulatorError, match="takes 1-1 values"):
        await emu.select(alice.id, message, ["margin", "cash"])
    chosen = await emu.select(alice.id, message, ["futures"])
    reply = await chosen.message()
    assert reply.content == "Using futures" and reply.ephemeral
    assert chosen.payload["data"]["values"] == ["futures"]
    assert chosen.payload["message"]["id"] == str(message.id)


async def test_modal_submit(bot: Any, emu: DiscordEmulator, alice: User, bob: User) -> None:
    opened = await emu.slash(alice.id, "rename")
    response = await opened.response()
    assert response.name == "MODAL" and opened.modal is not None
    assert opened.modal["title"] == "Rename connection"
    with pytest.raises(EmulatorError, match="shown to user"):
        await emu.submit_modal(bob.id, opened, {"name": "Margin main"})
    with pytest.raises(EmulatorError, match="3-32 characters"):
        await emu.submit_modal(alice.id, opened, {"name": "ab"})
    with pytest.raises(EmulatorError, match="no inputs"):
        await emu.submit_modal(alice.id, opened, {"name": "Margin main", "colour": "red"})
    submitted = await emu.submit_modal(alice.id, opened, {"name": "Margin main"})
    assert (await submitted.message()).content == "Renamed to Margin main (no note)"
    with pytest.raises(EmulatorError, match="already submitted"):
        await emu.submit_modal(alice.id, opened, {"name": "Again"})


async def test_autocomplete(bot: Any, emu: DiscordEmulator, alice: User) -> None:
    choices = await emu.autocomplete(alice.id, "cancel", {"order": "aapl"}, focused="order")
    assert [c["value"] for c in choices] == ["AAPL-1001", "AAPL-1004"]
    result = await emu.slash(alice.id, "cancel", {"order": choices[0]["value"]})
    assert (await result.message()).content == "Cancelled AAPL-1001"
    with pytest.raises(EmulatorError, match="no autocomplete"):
        await emu.autocomplete(alice.id, "trade", {}, focused="symbol")


async def test_deferred_command_followups_and_edits(
    bot: Any, emu: DiscordEmulator, alice: User
) -> None:
    result = await emu.slash(alice.id, "report")
    response = await result.response()
    assert response.deferred and response.ephemeral
    message = await result.message()
    # The first followup after a defer edits the loading message (Discord's compatibility rule).
    followup = await result.followup(0)
    assert followup.content == "Details attached" and followup.ephemeral
    assert message.content == "Report ready" and "+$120.00" in message.text()
    assert [v.content for v in message.edits] == ["", "Crunching numbers"]
    assert not message.loading
    attachment = followup.attachments[0]
    assert attachment["filename"] == "report.csv" and attachment["size"] == len(
        b"symbol,pnl\nAAPL,120\n"
    )
    async with aiohttp.ClientSession() as session, session.get(attachment["url"]) as got:
        assert await got.read() == b"symbol,pnl\nAAPL,120\n"


async def test_channel_post_and_direct_message(bot: Any, emu: DiscordEmulator, alice: User) -> None:
    waiting = asyncio.create_task(
        emu.wait_for_message(lambda m: m.channel_id == emu.trade_alerts.id)
    )
    result = await emu.slash(alice.id, "alert", {"symbol": "TSLA"})
    assert (await result.message()).content == "Alert posted"
    alert = await waiting
    assert alert.author_id == emu.bot_user.id and alert.embeds[0]["title"] == "Alert: TSLA"
    assert alert.allowed_mentions == {"parse": []}

    result = await emu.slash(alice.id, "dmme")
    assert (await result.message()).content == "Sent you a DM"
    assert [m.content for m in emu.dm_messages(alice.id)] == ["Your positions: AAPL 10"]


async def test_subcommands_and_resolved_options(
    bot: Any, emu: DiscordEmulator, alice: User, bob: User
) -> None:
    trader = emu.add_role(emu.guild.id, "Trader", permissions.SEND_MESSAGES)
    emu.add_member(emu.guild.id, bob.id, roles=[trader.id])
    result = await emu.slash(alice.id, "whois", {"member": bob})
    assert (await result.message()).content == "Bob: Trader"
    assert result.payload["data"]["resolved"]["members"][str(bob.id)]["roles"] == [str(trader.id)]

    result = await emu.slash(alice.id, "paper reset", {"balance": 5000})
    assert (await result.message()).content == "Paper reset to $5,000"
    result = await emu.slash(
        alice.id, "strategy create", {"name": "momo", "channel": emu.trade_alerts.id}
    )
    assert (await result.message()).content == "Strategy momo posts to #trade-alerts"
    result = await emu.slash(alice.id, "strategy signals test", {"dry_run": True})
    assert (await result.message()).content == "dry_run=True"
    option = result.payload["data"]["options"][0]
    assert (option["name"], option["type"], option["options"][0]["name"]) == ("signals", 2, "test")


async def test_default_member_permissions_and_overrides(
    bot: Any, emu: DiscordEmulator, alice: User, bob: User
) -> None:
    with pytest.raises(EmulatorError, match="hidden"):
        await emu.slash(alice.id, "settings")
    result = await emu.slash(emu.owner.id, "settings")
    assert (await result.message()).content == "settings ok"
    mods = emu.add_role(emu.guild.id, "Mods", 0)
    emu.add_member(emu.guild.id, bob.id, roles=[mods.id])
    emu.set_command_permission(emu.guild.id, "settings", mods.id, allow=True)
    result = await emu.slash(bob.id, "settings")
    await result.message()
    # The override lets Bob run it, but the member permissions sent to the bot stay honest.
    assert bot.seen[-1] == ("settings", False)
    with pytest.raises(EmulatorError, match="not available in DMs"):
        await emu.slash(alice.id, "settings", dm=True)


async def test_permissions_in_interactions(bot: Any, emu: DiscordEmulator, alice: User) -> None:
    emu.set_permission_overwrite(emu.general.id, emu.guild.id, deny=permissions.EMBED_LINKS)
    result = await emu.slash(alice.id, "ping")
    await result.response()
    member_perms = int(result.payload["member"]["permissions"])
    assert member_perms & permissions.VIEW_CHANNEL and not member_perms & permissions.EMBED_LINKS
    assert (
        not int(result.payload["app_permissions"]) & permissions.EMBED_LINKS
    )  # @everyone deny hits the bot too
    bot_role = next(r for r in emu.guild.roles.values() if r.bot_id == emu.bot_user.id)
    emu.set_permission_overwrite(emu.general.id, bot_role.id, allow=permissions.EMBED_LINKS)
    result = await emu.slash(alice.id, "ping")
    await result.response()
    assert (
        int(result.payload["app_permissions"]) & permissions.EMBED_LINKS
    )  # a role overwrite re-allows
    owner = await emu.slash(emu.owner.id, "ping")
    await owner.response()
    assert int(owner.payload["member"]["permissions"]) == permissions.ALL


async def test_double_callback_and_unknown_interaction(
    bot: Any, emu: DiscordEmulator, alice: User
) -> None:
    result = await emu.slash(alice.id, "ping")
    await result.response()
    url = f"{emu.api_base}/interactions/{result.id}/{result.token}/callback"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as again:
            assert again.status == 400
            assert again.headers["Content-Type"] == "application/json"
            assert await again.json() == {
                "code": 40060,
                "message": "Interaction has already been acknowledged.",
            }
        bogus = f"{emu.api_base}/interactions/{result.id}/not-the-token/callback"
        async with session.post(bogus, json={"type": 4, "data": {"content": "x"}}) as unknown:
            assert unknown.status == 404
            assert await unknown.json() == {"code": 10062, "message": "Unknown interaction"}


async def test_ack_deadline_and_token_lifetime(
    make_bot: Callable[..., Any], run_bot: RunBot, pointed_at: Callable[..., Any]
) -> None:
    emu = DiscordEmulator(bot_token="MTIz.slow.bot", ack_deadline=0.1)
    carol = emu.add_user("carol")
    emu.add_member(emu.guild.id, carol.id)
    outcomes: asyncio.Queue[Any] = asyncio.Queue()
    follow_up_now = asyncio.Event()
    async with emu:
        with pointed_at(emu):
            client = make_bot(emu)

            @client.tree.command(description="Too slow")
            async def slow(interaction: discord.Interaction) -> None:
                await asyncio.sleep(0.3)  # past the 0.1 s acknowledgement deadline
                try:
                    await interaction.response.send_message("late")
                except discord.NotFound as exc:
                    outcomes.put_nowait(exc.code)

            @client.tree.command(description="Answers, then follows up much later")
            async def later(interaction: discord.Interaction) -> None:
                await interaction.response.send_message("soon")
                await follow_up_now.wait()
                try:
                    await interaction.followup.send("much later")
                except discord.HTTPException as exc:
                    outcomes.put_nowait((exc.status, exc.code))

            async with run_bot(client, "MTIz.slow.bot"):
                await client.tree.sync()
                slow_result = await emu.slash(carol.id, "slow")
                with pytest.raises(InteractionTimeout, match="did not acknowledge"):
                    await slow_result.response(timeout=0.2)
                assert await asyncio.wait_for(outcomes.get(), 5) == 10062

                later_result = await emu.slash(carol.id, "later")
                await later_result.response()
                emu.expire_interaction(later_result)  # as if 15 minutes had passed
                follow_up_now.set()
                assert await asyncio.wait_for(outcomes.get(), 5) == (401, 50027)
    assert emu.unmodelled_requests == []


async def test_errors_in_handlers_surface(
    bot: Any, emu: DiscordEmulator, alice: User, discord_errors: Any
) -> None:
    @bot.tree.command(description="Broken")
    async def broken(interaction: discord.Interaction) -> None:
        raise RuntimeError("boom")

    await bot.tree.sync()
    discord_errors.expect("Ignoring exception in command 'broken'")
    logged = asyncio.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "broken" in record.getMessage():
                logged.set()

    spy = Spy(level=logging.ERROR)
    logging.getLogger("discord").addHandler(spy)
    try:
        result = await emu.slash(alice.id, "broken")
        await asyncio.wait_for(logged.wait(), 5)
        with pytest.raises(InteractionTimeout, match="did not acknowledge /broken"):
            await result.response(timeout=0.2)
    finally:
        logging.getLogger("discord").removeHandler(spy)
    assert any("boom" in discord_errors.describe(r) for r in discord_errors.records)


async def test_user_messages_reach_the_bot(bot: Any, emu: DiscordEmulator, alice: User) -> None:
    seen: asyncio.Future[discord.Message] = asyncio.get_running_loop().create_future()

    async def on_message(message: discord.Message) -> None:
        if message.author.id == alice.id and not seen.done():
            seen.set_result(message)

    bot.add_listener(on_message)
    await emu.post(alice.id, emu.general.id, f"hello <@{emu.bot_user.id}>")
    message = await asyncio.wait_for(seen, 5)
    # Without the message content intent Discord still shows content that mentions the bot.
    assert message.content.startswith("hello")
    assert message.author.id == alice.id and message.guild is not None


async def test_reconnect_resumes_the_session(bot: Any, emu: DiscordEmulator, alice: User) -> None:
    resumed = asyncio.Event()

    async def on_resumed() -> None:
        resumed.set()

    bot.add_listener(on_resumed)
    session_id = emu.sessions[0].session_id
    assert emu.request_reconnect() == 1
    await asyncio.wait_for(resumed.wait(), 10)
    assert [s.session_id for s in emu.sessions] == [session_id]
    result = await emu.slash(alice.id, "ping")
    assert (await result.message()).content == "pong"
