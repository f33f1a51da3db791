"""Figures that must agree wherever they are shown: /trade cards, fills, /positions, /history
and /balances, on Tradecord Paper."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from emulators.discord import Message
from tests.discord_harness import Harness


def pin(h: Harness, symbol: str, bid: str, ask: str) -> None:
    h.core.simulated_feed.set_quote(symbol, Decimal(bid), Decimal(ask))


def fields(message: Message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embeds[0]["fields"]}


async def fill(h: Harness, card: Message) -> str:
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    return (await done.message(timeout=10)).text()


async def test_a_sub_dollar_price_reads_one_way(tradecord: Harness) -> None:
    """Before: the card said $0.500000, /positions and /history 0.495000 (every price under $1
    padded to six places) and the fill DM $0.495."""
    h = tradecord
    pin(h, "F", "0.49", "0.50")
    card = await h.reply("alice", "trade", symbol="F", side="buy", quantity="100")
    assert fields(card)["Estimated price"] == "$0.50"
    assert "at $0.495" in await fill(h, card)
    for command in ("positions", "history"):
        text = (await h.reply("alice", command)).text()
        assert "0.495" in text and "0.4950" not in text, text


async def test_shared_balances_give_one_gain_one_percentage(tradecord: Harness) -> None:
    """Before: Unrealized P&L was divided by the equity after the gain (+9.09%), Day P&L by
    the equity before it (+10.00%)."""
    h = tradecord
    pin(h, "AAPL", "200", "200")
    card = await h.reply("alice", "trade", symbol="AAPL", side="buy", quantity="400")
    await fill(h, card)
    pin(h, "AAPL", "225", "225")
    shared = fields(await h.reply("alice", "balances", share=True))
    assert shared["Unrealized P&L"] == shared["Day P&L"] == "+10.00%"


async def test_balances_of_a_non_usd_account_say_its_currency_throughout(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: Equity "1,500.00 CAD" beside P&L in dollars ("-$3.00")."""
    h = tradecord
    portfolio = h.core.trading.portfolio

    async def in_cad(*args: Any) -> Any:
        pf = await portfolio(*args)
        pf.balance = replace(
            pf.balance,
            currency="CAD",
            equity=Decimal(1500),
            unrealized_pnl=Decimal(-3),
            realized_pnl=Decimal(-3),
            day_pnl=Decimal(-3),
        )
        return pf

    monkeypatch.setattr(h.core.trading, "portfolio", in_cad)
    shown = fields(await h.reply("alice", "balances"))
    assert shown["Equity"] == "1,500.00 CAD"
    assert shown["Unrealized P&L"] == "-3.00 CAD"
    assert shown["Realized P&L"] == "-3.00 CAD"
    assert shown["Day P&L"].startswith("-3.00 CAD (")
    assert "$" not in "".join(shown.values())


async def short_tsla_in_deficit(h: Harness) -> None:
    """Short 300 TSLA at 250, TSLA to 300: cash 175,000 less twice the 90,000 short is a
    buying power of -5,000."""
    pin(h, "TSLA", "250", "250")
    card = await h.reply("alice", "trade", symbol="TSLA", side="sell", quantity="300")
    await fill(h, card)
    pin(h, "TSLA", "300", "300")


async def test_a_buying_power_deficit_is_shown_and_the_close_card_counts_from_it(
    tradecord: Harness,
) -> None:
    """Before: /balances showed $0.00 and /close 100 promised "Buying power after" $30,000.00;
    after the fill /balances showed $25,000.00."""
    h = tradecord
    await short_tsla_in_deficit(h)
    balances = fields(await h.reply("alice", "balances"))
    assert balances["Buying power"].startswith("-$5,000.00"), balances
    assert "close or cover" in balances["Buying power"]
    card = await h.reply("alice", "close", symbol="TSLA", quantity="100")
    shown = fields(card)
    assert shown["Buying power"] == "-$5,000.00"
    assert shown["Buying power after"] == "$25,000.00"
    await fill(h, card)
    assert fields(await h.reply("alice", "balances"))["Buying power"] == "$25,000.00"


async def test_in_deficit_new_risk_is_refused_and_a_small_close_goes_through(
    tradecord: Harness,
) -> None:
    h = tradecord
    await short_tsla_in_deficit(h)
    pin(h, "AAPL", "200", "200")
    refused = await h.reply("alice", "trade", symbol="AAPL", side="buy", quantity="1")
    assert "Not enough buying power" in refused.text(), refused.text()
    card = await h.reply("alice", "close", symbol="TSLA", quantity="10")
    assert fields(card)["Buying power after"] == "-$2,000.00", card.text()
    assert "Filled" in await fill(h, card)


async def test_the_minimum_amount_offered_buys_one_share(tradecord: Harness) -> None:
    """It said "at least $0.12" for a $0.1234 share (rounded to the nearest cent), and $0.12
    was refused the same way."""
    h = tradecord
    pin(h, "F", "0.1233", "0.1234")
    first = (await h.reply("alice", "trade", symbol="F", side="buy", amount="0.10")).text()
    assert "raise the amount to at least $0.13," in first, first
    again = (await h.reply("alice", "trade", symbol="F", side="buy", amount="0.13")).text()
    assert "does not buy one share" not in again, again


async def test_the_minimum_risk_offered_covers_one_share(tradecord: Harness) -> None:
    """One share losing $0.0127 to the stop said "loses about $0.01 … at least $0.01", and a
    risk of $0.01 was refused the same way."""
    h = tradecord
    pin(h, "F", "0.4999", "0.5000")
    options = {"symbol": "F", "side": "buy", "stop_loss": "0.4873"}
    first = (await h.reply("alice", "trade", risk="0.005", **options)).text()
    assert "loses about $0.0127" in first and "at least $0.02," in first, first
    again = (await h.reply("alice", "trade", risk="0.02", **options)).text()
    assert "does not cover it" not in again, again


def test_a_tiny_loss_or_gain_closing_a_coin_reads_zero_dollars() -> None:
    from bot.services.trading import pnl_text

    for exit in ("0.00001230", "0.00001238"):  # "-$0.00", "+$0.00" before
        text = pnl_text(True, Decimal("0.00001234"), Decimal(exit), Decimal(1000), "SHIBUSD")
        assert text == " P&L $0.00 before fees.", text
