from __future__ import annotations

from tests.discord_harness import Harness


async def test_help_lists_every_command_and_the_brokers(tradecord: Harness) -> None:
    msg = await tradecord.reply("alice", "help")
    assert msg.ephemeral
    text = msg.text()
    assert "Tradecord connects your brokerage accounts" in text
    for command in tradecord.bot.tree.get_commands(guild=None):
        assert f"/{command.name}" in text
    assert "Tradecord Paper" in text
    assert "Not configured on this server" in text and "TradeStation" in text


async def test_accounts_shows_the_paper_connection_from_the_start(tradecord: Harness) -> None:
    msg = await tradecord.reply("bob", "accounts")
    assert msg.ephemeral
    text = msg.text()
    assert "Tradecord Paper" in text
    assert "active" in text
    assert "Paper account: Tradecord Paper (margin)" in text
