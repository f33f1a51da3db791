"""The local-mode chat: lines typed as in Discord, run against the real bot."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from unittest import mock

import pytest

from bot.db import Database
from bot.local import Chat, run_local
from bot.settings import Settings
from emulators.discord import InteractionTimeout
from emulators.discord.state import Message as DiscordMessage
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


def _chat_with_a_menu(out: io.StringIO) -> Chat:
    """A chat whose last message has one menu of two options (no bot needed to refuse)."""
    chat = Chat(mock.Mock(), 1, out)
    menu = {
        "type": 3,
        "custom_id": "pick",
        "options": [{"label": "First", "value": "a"}, {"label": "Last", "value": "b"}],
    }
    chat.last = DiscordMessage(
        id=1, channel_id=2, author_id=3, components=[{"type": 1, "components": [menu]}]
    )
    return chat


async def test_select_refuses_option_zero_and_negative_numbers() -> None:
    """Before: "select 0" and "select -1" chose the menu's last option (options[-1])."""
    out = io.StringIO()
    chat = _chat_with_a_menu(out)
    for line in ("select 0", "select -1", "select 1 0", "select 1 -1", "select 1,0"):
        assert await chat.handle(line)
    assert out.getvalue() == "! choose numbers from 1 to 2, e.g. select 1\n" * 5
    chat.emu.select.assert_not_called()


async def test_a_bot_that_does_not_answer_in_time_is_said_so() -> None:
    """Before: ``except EmulatorError`` came first and printed the emulator's own words; the
    ``except InteractionTimeout`` after it was never reached."""
    out = io.StringIO()
    chat = _chat_with_a_menu(out)
    assert chat.last is not None
    chat.last.components[0]["components"].append(
        {"type": 2, "style": 1, "label": "Go", "custom_id": "go"}
    )
    chat.emu.click = mock.AsyncMock(side_effect=InteractionTimeout("no answer within 3s"))
    assert await chat.handle("press Go")
    assert out.getvalue() == "! Tradecord did not answer in time.\n"


async def test_wrong_values_are_refused_in_words(settings: Settings, db: Database) -> None:
    """Before: "quantity must be a integer" (for an integer option) and "option 'side' only
    offers ['buy', 'sell']; got 'hold'" (a Python list)."""
    async with running_tradecord(settings) as h:
        out = io.StringIO()
        chat = Chat(h.emu, h.user("alice"), out)
        assert await chat.handle("/trade symbol:AAPL side:hold quantity:1")
        assert out.getvalue() == "! side takes buy or sell; not hold\n"
        assert await chat.handle("/history days:many")
        assert out.getvalue().endswith("! days must be an integer\n"), out.getvalue()
        assert await chat.handle("/trade symbol:AAPL side:Buy quantity:1")  # as Discord shows it
        assert "[1] Confirm  [2] Cancel" in out.getvalue(), out.getvalue()


async def test_empty_stdin_that_is_not_a_terminal_says_why_it_stops(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: local mode with stdin not a terminal (a service, < /dev/null) and no --script
    started and stopped at once, saying nothing."""
    read, write = os.pipe()
    os.close(write)
    with open(read) as stdin:  # noqa: ASYNC230 - a pipe's end, already open
        monkeypatch.setattr(sys, "stdin", stdin)
        local = settings.model_copy(update={"tradecord_keys": None, "discord_token": None})
        out = io.StringIO()
        assert await run_local(local, out=out) == 0
    assert out.getvalue().splitlines()[-1] == (
        "Nothing to read: stdin is not a terminal and gave no lines. Run tradecord in a "
        "terminal to chat, or use --script FILE to play a file."
    )


async def test_a_script_saved_with_a_byte_order_mark_plays_its_first_line(tmp_path: Path) -> None:
    """Saved "UTF-8 with BOM", the first line reached the chat as "\\ufeff/help", not a command."""
    from bot.local import _lines

    script = tmp_path / "demo.txt"
    script.write_bytes(b"\xef\xbb\xbf/help\n/accounts\n")
    assert [line async for line in _lines(script, io.StringIO())] == ["/help", "/accounts"]
