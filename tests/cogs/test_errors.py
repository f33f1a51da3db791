"""The central error handler: domain errors as their own private message; anything else
logged with an incident id, and only the id shown."""

from __future__ import annotations

import re

import discord
import pytest
from discord import app_commands

from bot.client import transformer_message
from bot.errors import NotFound
from tests.cogs.test_automation import create_strategy
from tests.discord_harness import Harness

OUTSIDER = "That member is not in this server. Choose someone from its member list."


async def test_domain_error_becomes_its_message(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(_: int) -> None:
        raise NotFound("You have no connection named “X”. See /accounts.")

    monkeypatch.setattr(tradecord.core.members, "get_with_connections", refuse)
    msg = await tradecord.reply("alice", "accounts")
    assert msg.ephemeral
    assert msg.content == "You have no connection named “X”. See /accounts."


async def test_unexpected_error_shows_only_an_incident_id(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crash(_: int) -> None:
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(tradecord.core.members, "get_with_connections", crash)
    tradecord.errors.expect(r"Incident [0-9A-F]{8} in accounts")
    msg = await tradecord.reply("alice", "accounts")
    assert msg.ephemeral
    m = re.search(r"incident ([0-9A-F]{8})", msg.content or "")
    assert m, msg.content
    assert "hunter2" not in msg.text()
    # The logs are the bot's owner's: a server admin of the guild cannot read them.
    assert "Give this id to the bot's owner" in msg.text(), msg.text()
    logged = [r for r in tradecord.errors.records if m.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the log has the traceback


async def test_choosing_someone_outside_the_server_says_so(tradecord: Harness) -> None:
    h = tradecord
    await create_strategy(h, "alice", "Trend")
    outsider = h.emu.add_user("outsider")  # Discord resolves them as a user, not a member
    for user, command, options in (
        ("alice", "strategy share", {"strategy": "Trend"}),
        (h.emu.owner.id, "plan set", {"plan": "pro"}),
    ):
        msg = await h.reply(user, command, member=outsider.id, **options)
        assert msg.ephemeral, command
        assert msg.content == OUTSIDER, (command, msg.content)
    assert await h.core.strategies.list(h.guild_id, outsider.id) == []


def test_other_options_discord_py_cannot_convert_get_advice_too() -> None:
    channel = app_commands.transformers.BaseChannelTransformer(discord.TextChannel)
    error = app_commands.TransformerError(object(), discord.AppCommandOptionType.channel, channel)
    assert "Choose a text channel" in transformer_message(error)
    stamp = app_commands.Timestamp()
    error = app_commands.TransformerError("soon", discord.AppCommandOptionType.string, stamp)
    assert "try again" in transformer_message(error)


async def test_an_error_after_an_order_was_placed_is_answered(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in showing a confirmed order's result reached no handler (a button's, not a
    command's): the member saw "This interaction failed" about an order that had filled. Nor
    may the answer say "Nothing was changed; try again": trying again places it twice."""
    import sys
    from decimal import Decimal

    from tests.cogs.test_trading import paper_orders

    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    card = await h.reply("alice", "trade", symbol="AAPL", side="buy", quantity="1")

    def broken(*_: object) -> discord.Embed:
        raise RuntimeError("rendering failed")

    # The module the bot loaded as its extension (discord.py imports a fresh one).
    trading = sys.modules[type(h.bot.get_cog("Trading")).__module__]
    monkeypatch.setattr(trading, "result_embed", broken)
    h.errors.expect(r"Incident [0-9A-F]{8} in component")
    answer = await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    assert await paper_orders(h) == 1
    assert answer.ephemeral and re.search(r"incident [0-9A-F]{8}", answer.text()), answer.text()
    assert "Nothing was changed" not in answer.text()
    assert "check whether it was done (/orders, /accounts) before trying again" in answer.text()


async def test_a_long_broker_message_still_reaches_the_member(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a broker's refusal quoted past Discord's 2,000 characters was refused by Discord,
    and the member was left with "This interaction failed"."""
    from typing import Any

    from adapters.errors import InvalidOrder

    h = tradecord
    vendor = "; ".join(f"Leg {n}: LimitPrice must be within the price band" for n in range(60))

    async def refuse(*_: Any, **__: Any) -> Any:
        raise InvalidOrder(f"TradeStation rejected the request: {vendor}")

    monkeypatch.setattr(h.core.trading, "holdings", refuse)
    answer = await (await h.slash("alice", "positions")).message(timeout=5)
    assert answer.text().startswith("TradeStation rejected the request: Leg 0")
    assert answer.text().endswith("…") and len(answer.content) <= 2000
