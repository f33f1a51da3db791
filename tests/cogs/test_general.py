from __future__ import annotations

import asyncio

import discord
import pytest

from bot.errors import NotFound
from emulators.discord.errors import EmulatorError
from tests.discord_harness import Harness
from tests.support import add_broker_connection


async def test_help_lists_every_command_and_the_brokers(tradecord: Harness) -> None:
    msg = await tradecord.reply("alice", "help")
    assert msg.ephemeral
    text = msg.text()
    assert "Tradecord connects your brokerage accounts" in text
    for command in tradecord.bot.tree.get_commands(guild=None):
        assert f"/{command.name}" in text
    assert "Tradecord Paper" in text
    assert "Not configured on this server" in text and "TradeStation" in text
    # Client ids are the deployment's settings: no server admin can set them from Discord.
    assert "the bot's owner enables them by setting their client ids" in text, text
    assert "only visible to you, unless you add share:true to /positions" in text, text


async def test_accounts_shows_the_paper_connection_from_the_start(tradecord: Harness) -> None:
    msg = await tradecord.reply("bob", "accounts")
    assert msg.ephemeral
    text = msg.text()
    assert "Tradecord Paper" in text
    assert "active" in text
    assert "Paper account: Tradecord Paper (margin)" in text


async def test_a_connection_named_with_digits_can_be_renamed_again(tradecord: Harness) -> None:
    h = tradecord
    paper = await h.core.connections.resolve(h.user("alice"), None, "paper")
    await add_broker_connection(h, "alice", "TS")
    # The name is Tradecord Paper's id: the name the member gave wins, ids are never shown.
    done = await h.reply("alice", "rename", connection="TS", new_name=str(paper.connection.id))
    assert "Renamed" in done.text()
    again = await h.reply("alice", "rename", connection=str(paper.connection.id), new_name="TS 2")
    assert "Renamed" in again.text() and "“TS 2”" in again.text(), again.text()
    # Digits that name nothing are not taken as an id either: that would act on a connection
    # the member did not name.
    stray = await h.reply("alice", "rename", connection=str(paper.connection.id), new_name="X")
    assert stray.ephemeral and "no connection named" in stray.text(), stray.text()
    await h.reply("alice", "rename", connection="TS 2", new_name="7")
    ask = await h.reply("alice", "disconnect", connection="7")
    assert "Disconnect “7”?" in ask.text(), ask.text()
    gone = await (await h.emu.click(h.user("alice"), ask, label="Disconnect")).message(timeout=10)
    assert "Disconnected “7”" in gone.text(), gone.text()
    names = [c.name for c in await h.core.connections.list_for(h.user("alice"))]
    assert names == ["Tradecord Paper"]


async def test_admin_commands_are_hidden_from_members_by_default(tradecord: Harness) -> None:
    h = tradecord
    manage_guild = str(discord.Permissions(manage_guild=True).value)
    synced = {
        c.name: c.data.get("default_member_permissions")
        for c in h.emu.world.commands.in_scope(h.guild_id)
    }
    admin = {name for name, perms in synced.items() if perms is not None}
    assert admin == {"plan", "alerts-channel"}
    assert all(synced[name] == manage_guild for name in admin)
    # What members use stays visible to them.
    assert "Your plan is" in (await h.reply("bob", "my-plan")).content
    assert "name you" in (await h.reply("bob", "alerts show-my-name", show=True)).content
    for command in ("plan set", "alerts-channel"):
        with pytest.raises(EmulatorError, match="hidden"):
            await h.slash("bob", command)


async def test_disconnect_says_which_of_its_orders_failed_unsent_or_may_be_at_the_broker(
    tradecord: Harness,
) -> None:
    from decimal import Decimal

    from bot.models import IntentStatus, OrderIntent

    h = tradecord
    cid = await add_broker_connection(h, "alice", "TS")
    member_id = await h.core.members.ensure(h.user("alice"))
    async with h.core.db.transaction() as s:
        for n, status in enumerate([IntentStatus.PENDING, IntentStatus.SUBMITTED]):
            s.add(
                OrderIntent(
                    client_order_id=f"coid-{n}",
                    member_id=member_id,
                    connection_id=cid,
                    broker="tradestation",
                    mode="live",
                    account_id="11827342",
                    symbol="AAPL",
                    asset_class="us_equity",
                    side="buy",
                    quantity=Decimal(1),
                    order_type="market",
                    time_in_force="day",
                    status=status,
                )
            )
    ask = await h.reply("alice", "disconnect", connection="TS")
    gone = await (await h.emu.click(h.user("alice"), ask, label="Disconnect")).message(timeout=10)
    text = gone.text()
    # It said "(see /orders)", where a disconnected connection cannot be chosen.
    assert "1 order stored but not yet sent: failed, nothing was sent to TradeStation." in text
    assert "/orders" not in text
    refused = await h.reply("alice", "orders", connection="TS")
    assert "no connection named “TS”" in refused.text(), refused.text()
    assert "1 order whose sending was never confirmed may be at TradeStation" in text, text


async def test_an_account_menu_of_a_removed_connection_says_so_without_its_id(
    tradecord: Harness,
) -> None:
    from sqlalchemy import delete

    from bot.models import Connection
    from cogs.connections import menus_view

    h = tradecord
    cid = await add_broker_connection(h, "alice", "TS")
    option = {"label": "Margin ••••1234", "value": "11111234", "description": "live"}
    menu = {
        "type": 3,
        "custom_id": f"tc:acct:{cid}:live",
        "placeholder": "Choose the live account for TS",
        "options": [{**option, "default": False}],
    }
    channel = h.bot.get_channel(h.emu.general.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("menus", view=menus_view([{"type": 1, "components": [menu]}]))
    # The menus outlive the connection (a DM sent at linking, then /disconnect).
    async with h.core.db.transaction() as s:
        await s.execute(delete(Connection).where(Connection.id == cid))
    chose = await h.emu.select(h.user("alice"), h.emu.message(sent.id), ["11111234"])
    answer = await chose.message(timeout=10)
    assert answer.ephemeral
    assert f"“{cid}”" not in answer.text(), answer.text()  # an id the member never saw
    assert "no longer" in answer.text() and "/accounts" in answer.text(), answer.text()


async def post_account_menu(h: Harness, connection_id: int) -> discord.Message:
    """The live-account menu of a TS connection, posted where anyone in #general can use it."""
    from cogs.connections import menus_view

    menu = {
        "type": 3,
        "custom_id": f"tc:acct:{connection_id}:live",
        "placeholder": "Choose the live account for TS",
        "options": [
            {
                "label": "Margin ••••1234",
                "value": "11111234",
                "description": "live",
                "default": False,
            }
        ],
    }
    channel = h.bot.get_channel(h.emu.general.id)
    assert isinstance(channel, discord.TextChannel)
    return await channel.send("menus", view=menus_view([{"type": 1, "components": [menu]}]))


async def test_someone_elses_account_menu_is_refused(tradecord: Harness) -> None:
    """The menu's custom_id carries a connection id: it must resolve among the clicker's own
    connections only, wherever the menu is seen."""
    h = tradecord
    cid = await add_broker_connection(h, "alice", "TS")
    sent = await post_account_menu(h, cid)
    chose = await h.emu.select(h.user("bob"), h.emu.message(sent.id), ["11111234"])
    answer = await chose.message(timeout=10)
    assert answer.ephemeral and "no longer exists" in answer.text(), answer.text()
    [conn] = [c for c in await h.core.connections.list_for(h.user("alice")) if c.id == cid]
    assert conn.accounts == []


async def test_a_slow_account_choice_is_deferred(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Choosing an account asks the broker for the login's accounts: it must defer."""
    from cogs import ui

    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    cid = await add_broker_connection(h, "alice", "TS")
    connections = h.core.connections

    async def slow(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(0.3)
        raise NotFound("That account is not one this broker login can use.")

    monkeypatch.setattr(connections, "choose_account", slow)
    sent = await post_account_menu(h, cid)
    chose = await h.emu.select(h.user("alice"), h.emu.message(sent.id), ["11111234"])
    response = await chose.response()
    assert response.deferred and response.ephemeral
    assert "not one this broker login" in (await chose.message(timeout=10)).text()
