"""The central error handler: domain errors as their own private message; anything else
logged with an incident id, and only the id shown."""

from __future__ import annotations

import re

import pytest

from bot.errors import NotFound
from tests.discord_harness import Harness


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
    logged = [r for r in tradecord.errors.records if m.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the log has the traceback
