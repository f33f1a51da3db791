"""/connect, /rename, /disconnect as a member reads them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.models import Connection, ConnectionStatus
from bot.settings import Settings
from tests.cogs.test_accounts import linked
from tests.discord_harness import Harness, running_tradecord


@pytest.fixture
async def h(settings: Settings, db: object) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


async def test_connect_says_which_connection_its_link_will_link_again(h: Harness) -> None:
    """With two TradeStation connections, one refused by the broker, /connect tradestation
    said "Open this private link to connect TradeStation", though the link repairs that one
    and adds none: the member meaning to add a third, or to fix the other, could not know."""
    await h.core.members.set_plan(h.user("alice"), "pro", h.core.settings.plans, by=0)
    await linked(h, "alice", "tradestation")
    await linked(h, "alice", "tradestation")
    fresh = await h.reply("alice", "connect", broker="tradestation")
    assert "Open this private link to connect TradeStation." in fresh.content, fresh.content
    conns = await h.core.connections.list_for(h.user("alice"))
    second = next(c for c in conns if c.name == "TradeStation 2")
    async with h.core.db.transaction() as s:
        row = await s.get(Connection, second.id)
        assert row is not None
        row.status = ConnectionStatus.NEEDS_REAUTH
    again = await h.reply("alice", "connect", broker="tradestation")
    assert again.buttons() and again.ephemeral
    assert "link “TradeStation 2” again" in again.content, again.content
    assert "no longer accepts its authorization" in again.content, again.content


async def test_a_plan_lowered_below_the_connections_in_use_says_what_that_means(
    h: Harness,
) -> None:
    """An admin moving a member with two connections to the free plan (one) read "is now on the
    free plan (1 broker connection(s))", and the member "2 of 1 broker connection(s) in use":
    neither said the two keep working nor what /connect will do."""
    alice = h.user("alice")
    await h.core.members.set_plan(alice, "pro", h.core.settings.plans, by=0)
    await linked(h, "alice", "tradestation")
    await linked(h, "alice", "alpaca")
    set_free = await h.emu.slash(
        h.emu.owner.id,
        "plan set",
        options={"member": alice, "plan": "free"},
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
    )
    told = (await set_free.message()).content
    assert "They have 2: those keep working" in told, told
    # "/disconnect 2." read as a command taking 2.
    assert "until they /disconnect 2 of them." in told, told
    mine = (await h.reply("alice", "my-plan")).content
    assert "2 of 1 broker connection in use" in mine, mine
    assert "until you /disconnect 2 of them." in mine, mine
    await h.core.members.set_plan(alice, "pro", h.core.settings.plans, by=0)
    assert "/disconnect" not in (await h.reply("alice", "my-plan")).content


async def test_rename_suggests_a_name_for_the_other_connection_still_named_by_connect(
    h: Harness,
) -> None:
    """Renaming “TradeStation” (margin) to “TS Stocks” answered "…e.g. “TradeStation Stocks”,
    “TradeStation Futures”": the first for the connection just named, neither saying which
    connection each was for. Now: the other one, by its name."""
    alice = h.user("alice")
    await h.core.members.set_plan(alice, "pro", h.core.settings.plans, by=0)
    await linked(h, "alice", "tradestation")
    await linked(h, "alice", "tradestation")
    conns = {c.name: c for c in await h.core.connections.list_for(alice)}
    _, accounts = await h.core.connections.broker_accounts(alice, conns["TradeStation"].id)
    live = {a.type.value: a for a in accounts if a.environment.value == "live"}
    await h.core.connections.choose_account(
        alice, conns["TradeStation"].id, "live", live["margin"].id
    )
    await h.core.connections.choose_account(
        alice, conns["TradeStation 2"].id, "live", live["futures"].id
    )
    told = await h.reply("alice", "rename", connection="TradeStation", new_name="TS Stocks")
    assert told.content.endswith(
        "descriptive names avoid trading in the wrong one, e.g. /rename “TradeStation 2” to "
        "“TradeStation Futures”."
    ), told.content


async def test_rename_refuses_names_discord_would_format_and_says_what_to_use(h: Harness) -> None:
    """A name shows in channel alerts: "**big**", "@everyone" or "<@123>" were saved as typed,
    and alerts then showed bold text or a ping. Refused, naming the characters, with an
    example; a name stored before the rule still finds its connection and can be renamed."""
    alice = h.user("alice")
    await linked(h, "alice", "tradestation")
    for typed, named in [
        ("**big**", "cannot have `*`:"),
        ("`x`", "cannot have the backtick:"),
        ("@everyone", "cannot have `@`:"),
        ("<@123>", "cannot have `<`, `>` and `@`:"),
        ("||spoiler||", "cannot have `|`:"),
        ("[site](https://example.com)", "cannot have `[` and `]`:"),
        ("https://example.com", "cannot be a link"),
        ("# Big", "cannot start with `#`, `-` and `>`"),
    ]:
        told = await h.reply("alice", "rename", connection="TradeStation", new_name=typed)
        assert told.ephemeral and named in told.content, (typed, told.content)
        assert "e.g. “Alpaca Stocks”" in told.content, told.content
    assert [c.name for c in await h.core.connections.list_for(alice) if not c.builtin] == [
        "TradeStation"
    ]
    # Emoji and underscores inside words show as typed.
    ok = await h.reply("alice", "rename", connection="TradeStation", new_name="🚀 TS_margin")
    assert ok.content.startswith("Renamed “TradeStation” to “🚀 TS_margin”."), ok.content
    await h.reply("alice", "rename", connection="🚀 TS_margin", new_name="TradeStation")
    # Punctuation a descriptive name needs is fine, and a newline is one space.
    ok = await h.reply(
        "alice", "rename", connection="TradeStation", new_name="TS Futures #2\n(IRA)"
    )
    assert ok.content.startswith("Renamed “TradeStation” to “TS Futures #2 (IRA)”."), ok.content
    async with h.core.db.transaction() as s:  # as a name saved before the rule was
        conn = next(c for c in await h.core.connections.list_for(alice) if not c.builtin)
        row = await s.get(Connection, conn.id)
        assert row is not None
        row.name, row.name_key = "**old**", "**old**"
    again = await h.reply("alice", "rename", connection="**old**", new_name="TS Futures")
    assert "to “TS Futures”" in again.content, again.content


async def test_renaming_tradecord_paper_says_it_keeps_its_name_whatever_the_new_name(
    h: Harness,
) -> None:
    """ "/rename Tradecord Paper **Main**" complained about the "*" first, and after it was
    fixed, that Tradecord Paper cannot be renamed at all."""
    for new_name in ("**Main**", "x" * 60, "Main"):
        told = await h.reply("alice", "rename", connection="Tradecord Paper", new_name=new_name)
        assert told.content == "Tradecord Paper keeps its name; rename your broker connections."
    await linked(h, "alice", "tradestation")
    long = await h.reply("alice", "rename", connection="TradeStation", new_name="x" * 60)
    assert long.content.startswith("A connection name has 1 to 50 characters (60 given), e.g. ")


async def test_a_connection_to_link_again_names_connect_as_the_member_fills_it_in(
    h: Harness,
) -> None:
    """It said "Run /connect tradestation": the broker's internal key, which /connect offers
    nowhere (its broker option reads "TradeStation")."""
    from tests.support import add_broker_connection

    cid = await add_broker_connection(h, "alice", "TS")
    async with h.core.db.transaction() as s:
        row = await s.get(Connection, cid)
        assert row is not None
        row.status = ConnectionStatus.NEEDS_REAUTH
    refused = await h.reply("alice", "positions", connection="TS", mode="live")
    assert refused.ephemeral
    assert "Run /connect broker:TradeStation to link it again." in refused.content, refused.content
    assert "tradestation" not in refused.content


async def test_a_broker_down_or_refusing_our_token_is_named(h: Harness) -> None:
    """/positions said "The broker is not answering right now" and "Your authorization at the
    broker has expired … Run /connect again for this broker": which one, for a member with
    several, and /connect asks for the broker by name."""
    from emulators.common import Fault

    alice = h.user("alice")
    await linked(h, "alice", "tradestation")
    [conn] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
    _, accounts = await h.core.connections.broker_accounts(alice, conn.id)
    margin = next(a for a in accounts if a.environment.value == "live" and a.type.value == "margin")
    await h.core.connections.choose_account(alice, conn.id, "live", margin.id)
    ts = h.sandbox.emulators["tradestation"]
    ts.faults.add(Fault(kind="status", path="/v3/", status=503, body={}))
    down = await h.reply("alice", "positions", connection="TradeStation", mode="live")
    assert down.content == "TradeStation is not answering right now. Try again in a minute."
    ts.faults.clear()
    ts.faults.add(Fault(kind="status", path="/v3/", status=401, body={}))
    refused = await h.reply("alice", "positions", connection="TradeStation", mode="live")
    assert refused.ephemeral
    assert refused.content.startswith("TradeStation no longer accepts Tradecord's authorization")
    assert "Run /connect broker:TradeStation to link it again." in refused.content


async def test_setting_the_plan_a_member_already_has_says_nothing_changed(h: Harness) -> None:
    """It said "bob is now on the free plan" of a member on it from the start: the admin would
    read a change they did not make."""
    bob = h.user("bob")

    async def plan_set(plan: str) -> str:
        done = await h.emu.slash(
            h.emu.owner.id,
            "plan set",
            options={"member": bob, "plan": plan},
            guild_id=h.guild_id,
            channel_id=h.emu.general.id,
        )
        return (await done.message()).content

    assert plan_set_text(await plan_set("free")) == "bob was already on the **free** plan"
    assert plan_set_text(await plan_set("pro")) == "bob is now on the **pro** plan"
    assert plan_set_text(await plan_set("Pro")) == "bob was already on the **pro** plan"


def plan_set_text(content: str) -> str:
    return content.split(" (")[0]


async def test_connect_without_discord_sign_in_set_up_names_who_can_fix_it(
    settings: Settings, db: object
) -> None:
    """It said "Ask the server admin" of DISCORD_CLIENT_ID, a setting of the deployment that
    no server admin can set from Discord."""
    async with running_tradecord(settings, brokers=True, discord_client_id=None) as h:
        refused = await h.reply("alice", "connect", broker="tradestation")
    assert refused.ephemeral and refused.buttons() == []
    assert refused.content == (
        "Linking is not set up on this server yet (DISCORD_CLIENT_ID is missing). "
        "Ask the bot's owner."
    )


async def test_accounts_names_the_connect_that_relinks_a_connection(h: Harness) -> None:
    """/accounts said "needs re-linking (/connect)" without the broker /connect asks for."""
    from tests.support import add_broker_connection

    cid = await add_broker_connection(h, "alice", "TS")
    async with h.core.db.transaction() as s:
        row = await s.get(Connection, cid)
        assert row is not None
        row.status = ConnectionStatus.NEEDS_REAUTH
    shown = await h.reply("alice", "accounts")
    assert "Status: ⛔ needs re-linking: /connect broker:TradeStation" in shown.text(), shown.text()
