"""Plans as a member reads them: over a lowered plan, on a plan the settings dropped, and when
an admin changes theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.models import Member
from bot.settings import Settings
from tests.discord_harness import Harness, running_tradecord
from tests.support import add_broker_connection
from tests.web.test_connect_flow import connect_link, finish_link


@pytest.fixture
async def h(settings: Settings, db: object) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


async def test_connect_over_a_lowered_plan_says_how_many_to_remove(h: Harness) -> None:
    """Two connections on free (1): /connect said "Remove one with /disconnect", and after
    removing one it still refused. Two must go, as /my-plan says."""
    await add_broker_connection(h, "alice", "TS one")
    await add_broker_connection(h, "alice", "TS two")
    refused = await h.reply("alice", "connect", broker="alpaca")
    assert refused.ephemeral and refused.buttons() == []
    assert "allows 1 broker connection and you have 2" in refused.content, refused.content
    assert "Remove 2 of them with /disconnect" in refused.content, refused.content
    assert "Remove one" not in refused.content, refused.content
    mine = (await h.reply("alice", "my-plan")).content
    assert "until you /disconnect 2 of them." in mine, mine


async def test_a_plan_lowered_during_connect_says_what_to_do(h: Harness) -> None:
    """The page said only "Your plan (free) allows 1 broker connection, all in use. Nothing
    was linked.": not how to make room, nor who can raise the plan."""
    alice = h.user("alice")
    await h.core.members.set_plan(alice, "pro", h.core.settings.plans, by=0)
    await finish_link(h, await connect_link(h, "alice"))
    link = await connect_link(h, "alice", "alpaca")
    await h.core.members.set_plan(alice, "free", h.core.settings.plans, by=0)  # meanwhile
    refused = await finish_link(h, link)
    text = await refused.text()
    assert refused.status == 403, text
    assert "Remove one with /disconnect" in text, text
    assert "/plan set" in text and "Nothing was linked" in text, text


async def store_plan(h: Harness, user: str, plan: str) -> None:
    """A plan stored earlier, whatever the settings offer now."""
    member_id = await h.core.members.ensure(h.user(user))
    async with h.core.db.transaction() as s:
        member = await s.get(Member, member_id)
        assert member is not None
        member.plan = plan


async def test_a_plan_the_settings_dropped_shows_as_the_default_plan(h: Harness) -> None:
    """A member stored on "legacy" after PLAN_LIMITS dropped it read "Your plan is **legacy**:
    0 of 1", the 1 being the free plan's: a plan that no longer exists, with another's limit."""
    await store_plan(h, "alice", "legacy")
    await add_broker_connection(h, "alice", "TS one")
    mine = (await h.reply("alice", "my-plan")).content
    assert "Your plan is **free**: 1 of 1 broker connection in use" in mine, mine
    assert "“legacy” is no longer offered" in mine, mine
    assert "**legacy**" not in mine, mine
    refused = await h.reply("alice", "connect", broker="alpaca")
    assert refused.buttons() == [], refused.content
    assert "Your plan (free) allows 1 broker connection" in refused.content, refused.content
    assert "“legacy” is no longer offered" in refused.content, refused.content
    # Moved off it to the plan it counted as, the member's plan did change.
    done = await h.emu.slash(
        h.emu.owner.id,
        "plan set",
        options={"member": h.user("alice"), "plan": "free"},
        guild_id=h.guild_id,
        channel_id=h.emu.general.id,
    )
    assert "is now on the **free** plan" in (await done.message()).content
    [dm] = h.emu.dm_messages(h.user("alice"))
    assert "plan to **free**" in dm.content, dm.content
    assert "no longer offered" not in (await h.reply("alice", "my-plan")).content


async def test_a_member_whose_plan_an_admin_changes_is_told(h: Harness) -> None:
    """Only the admin got a reply: the member learned of a lowered plan from a refused
    /connect. Told by DM: the plan, its limit, who set it, where, and what to /disconnect."""
    alice = h.user("alice")
    await h.core.members.set_plan(alice, "pro", h.core.settings.plans, by=0)
    await add_broker_connection(h, "alice", "TS one")
    await add_broker_connection(h, "alice", "TS two")

    async def plan_set(plan: str) -> None:
        done = await h.emu.slash(
            h.emu.owner.id,
            "plan set",
            options={"member": alice, "plan": plan},
            guild_id=h.guild_id,
            channel_id=h.emu.general.id,
        )
        await done.message()

    await plan_set("free")
    [dm] = h.emu.dm_messages(alice)
    assert "plan to **free**" in dm.content, dm.content
    assert "1 broker connection" in dm.content, dm.content
    assert f"<@{h.emu.owner.id}>" in dm.content, dm.content
    assert h.emu.guild.name in dm.content, dm.content
    assert "until you /disconnect 2 of them." in dm.content, dm.content
    await plan_set("free")  # "was already": nothing to tell
    assert len(h.emu.dm_messages(alice)) == 1
    await plan_set("pro")
    latest = h.emu.dm_messages(alice)[-1].content
    assert len(h.emu.dm_messages(alice)) == 2 and "plan to **pro**" in latest, latest
    assert "25 broker connections" in latest and "/disconnect" not in latest, latest
