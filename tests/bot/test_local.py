"""The local-mode chat: lines typed as in Discord, run against the real bot."""

from __future__ import annotations

import io

from bot.db import Database
from bot.local import Chat
from bot.settings import Settings
from tests.discord_harness import running_tradecord
from tests.web.test_connect_flow import Browser, connect_link, through_broker, through_discord


async def test_select_reaches_every_menu_of_a_message(settings: Settings, db: Database) -> None:
    """A linked connection's DM has two menus, live and paper: ``select N`` could choose only
    in the first, so local mode could never pick a paper account."""
    async with running_tradecord(settings, brokers=True) as h:
        alice = h.user("alice")
        out = io.StringIO()
        chat = Chat(h.emu, alice, out)
        b = Browser()
        try:
            link = await connect_link(h, "alice")
            await b.get(await through_broker(b, h, await through_discord(b, h, link, alice)))
        finally:
            await b.close()
        await h.emu.wait_for_message(
            lambda m: "is linked" in m.content and len(m.selects()) == 2, include_existing=True
        )
        assert "[2] ▾ Choose the paper account for TradeStation" in out.getvalue()
        assert await chat.handle("select 3 1")
        assert "! 3 is not a menu of the last message; its menus: 1, 2" in out.getvalue()
        assert await chat.handle("select 2 1")
        assert "TradeStation will trade paper in margin account" in out.getvalue()
        overview = await h.reply("alice", "accounts")
        assert "Paper account: TradeStation" in overview.text(), overview.text()


async def test_a_yes_or_no_option_refuses_a_word_it_does_not_know(
    settings: Settings, db: Database
) -> None:
    """Before: "/subscribe … approval:manual" read "manual" as false and subscribed with
    "orders are sent automatically"; Discord offers only true and false for such an option."""
    async with running_tradecord(settings) as h:
        out = io.StringIO()
        chat = Chat(h.emu, h.user("alice"), out)
        assert await chat.handle("/alerts show-my-name show:manual")
        assert out.getvalue() == "! show takes true or false, as Discord offers it; not manual\n"
        assert await chat.handle("/alerts show-my-name show:no")  # answered, not refused
        assert out.getvalue().count("! ") == 1 and "Tradecord" in out.getvalue()


async def test_press_takes_a_buttons_label_as_well_as_its_number(
    settings: Settings, db: Database
) -> None:
    """Before: "press Confirm" answered "press a number from 1 to 2" and nothing was done."""
    async with running_tradecord(settings) as h:
        out = io.StringIO()
        chat = Chat(h.emu, h.user("alice"), out)
        assert await chat.handle("/trade symbol:AAPL side:buy quantity:1")
        assert "[1] Confirm  [2] Cancel" in out.getvalue()
        assert await chat.handle("press 3")
        assert "! press a number from 1 to 2 or a button's label (Confirm, Cancel)" in (
            out.getvalue()
        )
        assert await chat.handle("press confirm")
        assert "Filled: buy 1 AAPL" in out.getvalue(), out.getvalue()


async def test_a_role_option_takes_a_roles_name(settings: Settings, db: Database) -> None:
    """Before: "role:@everyone" was sent as the text "@everyone", which Discord never sends for
    a role option, and /strategy share failed."""
    async with running_tradecord(settings) as h:
        out = io.StringIO()
        chat = Chat(h.emu, h.emu.owner.id, out)
        assert await chat.handle("/strategy create name:Gap")
        assert await chat.handle("/strategy share strategy:Gap role:@everyone")
        assert "Gap is shared with everyone in this server: any member can now" in (
            out.getvalue()
        ), out.getvalue()
        assert await chat.handle("/strategy share strategy:Gap role:@nobody")
        assert out.getvalue().endswith("! no role @nobody\n"), out.getvalue()


async def test_a_value_without_its_options_name_says_how_to_write_it(
    settings: Settings, db: Database
) -> None:
    """Before: "/killswitch has no subcommand 'on'; it has []"."""
    async with running_tradecord(settings) as h:
        out = io.StringIO()
        chat = Chat(h.emu, h.emu.owner.id, out)
        assert await chat.handle("/killswitch on")
        assert out.getvalue() == "! options are written name:value, e.g. /killswitch state:on\n"
        assert await chat.handle("/strategy make name:x")
        assert "! /strategy has no subcommand make; its subcommands: create," in out.getvalue()
