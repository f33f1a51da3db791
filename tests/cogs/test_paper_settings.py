"""/paper settings end to end through the local Discord."""

from __future__ import annotations

from decimal import Decimal

from tests.discord_harness import Harness
from tests.support import add_broker_connection


async def test_paper_settings_show_change_and_price_later_orders(tradecord: Harness) -> None:
    h = tradecord
    await add_broker_connection(h, "alice", "TS")
    await add_broker_connection(h, "bob", "Bob's TS")

    shown = await h.reply("alice", "paper settings")
    assert shown.ephemeral
    text = shown.text()
    assert "Paper settings" in text and "saved" not in text
    assert "Bid/ask midpoint" in text and "simulated feed (simulated prices)" in text
    # It said "/paper settings price_type quote_source", two words to type as they stood.
    assert "/paper settings price_type:<price> or quote_source:<a linked broker" in text, text

    alice = h.user("alice")
    choices = await h.emu.autocomplete(
        alice,
        "paper settings",
        options={"quote_source": ""},
        focused="quote_source",
        guild_id=h.guild_id,
    )
    # Her linked broker and the simulated feed; never Tradecord Paper, never Bob's.
    assert [c["value"] for c in choices] == ["simulated", "TS"]
    typed = await h.emu.autocomplete(
        alice,
        "paper settings",
        options={"quote_source": "t"},
        focused="quote_source",
        guild_id=h.guild_id,
    )
    assert [c["value"] for c in typed] == ["simulated", "TS"]  # "t" is in both names

    saved = await h.reply("alice", "paper settings", price_type="ask", quote_source="TS")
    assert saved.ephemeral
    assert "Paper settings saved" in saved.text()
    assert "Always the ask" in saved.text() and "TS (TradeStation)" in saved.text()

    refused = await h.reply("alice", "paper settings", quote_source="Bob's TS")
    assert refused.ephemeral and "no connection named “Bob's TS”" in refused.text()
    assert "/connect" in refused.text()

    # Back to the simulated feed, keeping "always the ask": a market buy fills at the ask.
    back = await h.reply("alice", "paper settings", quote_source="simulated")
    assert "Always the ask" in back.text() and "simulated feed" in back.text()
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    card = await h.reply("alice", "trade", side="buy", symbol="AAPL", quantity="1")
    done = await h.emu.click(alice, card, label="Confirm")
    assert "Filled: buy 1 AAPL at $200.10" in (await done.message(timeout=10)).text()

    # Bob's settings are his own.
    assert "Bid/ask midpoint" in (await h.reply("bob", "paper settings")).text()


async def buy_on_card(h: Harness, user: str, symbol: str, quantity: str) -> str:
    card = await h.reply(user, "trade", side="buy", symbol=symbol, quantity=quantity)
    done = await h.emu.click(h.user(user), card, label="Confirm")
    return (await done.message(timeout=10)).text()


async def test_balances_say_which_positions_could_not_be_priced(tradecord: Harness) -> None:
    """Before: the source down, AAPL was valued at cost and /balances said "Unrealized P&L:
    $0.00", as if the position were flat."""
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    await buy_on_card(h, "alice", "AAPL", "10")
    await add_broker_connection(h, "alice", "TS")  # no stored tokens: every quote fails
    await h.reply("alice", "paper settings", quote_source="TS")
    positions = (await h.reply("alice", "positions")).text()
    assert "AAPL    long   10  200.00     —    —      —" in positions, positions
    for options in ({}, {"share": True}):
        text = (await h.reply("alice", "balances", **options)).text()
        assert "Unrealized P&L: —" in text or "Unrealized P&L" not in text, text
        assert "$0.00" not in text.split("Unrealized P&L", 1)[-1].split("\n", 1)[0], text
        assert "No quote for AAPL just now: valued at what it cost" in text, text


async def test_disconnecting_the_paper_price_source_says_paper_goes_simulated(
    tradecord: Harness,
) -> None:
    """Before: the question spoke only of the broker; and the source was kept by id, so on
    SQLite the next connection linked (given the freed id) became the price source unasked."""
    h = tradecord
    alice = h.user("alice")
    await add_broker_connection(h, "alice", "TS")
    await h.reply("alice", "paper settings", quote_source="TS")
    question = await h.reply("alice", "disconnect", connection="TS")
    assert "Tradecord Paper takes its prices from it" in question.text(), question.text()
    assert "simulated prices" in question.text()
    await h.core.connections.disconnect(alice, "TS")
    assert "simulated feed" in (await h.reply("alice", "paper settings")).text()
    await add_broker_connection(h, "alice", "Futures")
    assert "simulated feed" in (await h.reply("alice", "paper settings")).text()


async def test_paper_settings_say_when_the_price_source_needs_relinking(
    tradecord: Harness,
) -> None:
    from sqlalchemy import update

    from bot.models import Connection, ConnectionStatus

    h = tradecord
    cid = await add_broker_connection(h, "alice", "TS")
    await h.reply("alice", "paper settings", quote_source="TS")
    async with h.core.db.transaction() as s:
        await s.execute(
            update(Connection)
            .where(Connection.id == cid)
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )
    shown = (await h.reply("alice", "paper settings")).text()
    assert "⛔ It needs to be re-linked (/connect broker:TradeStation)" in shown, shown
