"""Trading commands end to end through the local Discord, on Tradecord Paper."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from sqlalchemy import func, select

from adapters.models import ExtendedReach, OrderRequest, OrderType, Side, TimeInForce
from adapters.paper.broker import PaperBroker
from adapters.paper.models import PaperOrder
from adapters.paper.universe import equity_list
from bot.models import IntentStatus, OrderIntent
from bot.services.trading import HISTORY_LIMIT
from bot.settings import Settings
from cogs import ui
from cogs.trading import TradeButton, closed_line, extended_line, history_footer
from emulators.discord import Message
from tests.discord_harness import Harness, running_tradecord
from tests.support import FakeClock, trading_contract

ES = trading_contract()


def pin(h: Harness, symbol: str, bid: str, ask: str) -> None:
    h.core.simulated_feed.set_quote(symbol, Decimal(bid), Decimal(ask))


async def paper_orders(h: Harness) -> int:
    async with h.core.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(PaperOrder)) or 0)


async def preview(h: Harness, user: str, **options: object) -> Message:
    options.setdefault("side", "buy")
    card = await h.reply(user, "trade", **options)
    assert card.ephemeral
    return card


async def test_trade_preview_confirm_fills(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="10")
    text = card.text()
    assert "PAPER order preview" in text and "BUY 10 AAPL" in text
    assert "Tradecord Paper" in text and "$2,001.00" in text  # estimated cost at the ask
    assert "simulated prices" in text
    assert "TCP" not in text  # the account number is masked
    assert [b.label for b in card.buttons()] == ["Confirm", "Cancel"]
    alice = h.user("alice")
    done = await h.emu.click(alice, card, label="Confirm")
    result = await done.message(timeout=10)
    assert "Filled: buy 10 AAPL at $200.00" in result.text()
    assert result.buttons() == []  # the card cannot be pressed again
    positions = await h.reply("alice", "positions")
    assert "AAPL" in positions.text() and "long" in positions.text()


async def test_a_fill_at_a_fraction_of_a_cent_is_shown_as_it_was_priced(
    tradecord: Harness,
) -> None:
    """At the midpoint of a one-cent spread: "at $199.99" for 10 shares did not match the
    $1,999.95 the fill took from cash."""
    h = tradecord
    pin(h, "AAPL", "199.99", "200.00")
    card = await preview(h, "alice", symbol="AAPL", quantity="10")
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert "Filled: buy 10 AAPL at $199.995." in (await done.message(timeout=10)).text()
    positions = (await h.reply("alice", "positions")).text()
    assert "199.995" in positions, positions
    balances = (await h.reply("alice", "balances")).text()
    assert "$98,000.05" in balances  # 100,000 less 10 × 199.995


async def test_balances_show_the_day_pnl_shared_as_a_percent_only(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.99", "200.01")
    card = await preview(h, "alice", symbol="AAPL", quantity="10")
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    pin(h, "AAPL", "204.99", "205.01")
    [day] = [
        f
        for f in (await h.reply("alice", "balances")).embeds[0]["fields"]
        if f["name"] == "Day P&L"
    ]
    assert day["value"] == "+$50.00 (+0.05%)"  # since the last close: the account is new
    shared = await h.reply("alice", "balances", share=True)
    [day] = [f for f in shared.embeds[0]["fields"] if f["name"] == "Day P&L"]
    assert day["value"] == "+0.05%" and "$50" not in shared.text()


async def test_the_card_names_the_paper_connection_once(tradecord: Harness) -> None:
    """Its name is its broker's: "Tradecord Paper (Tradecord Paper)" said it twice."""
    card = await preview(tradecord, "alice", symbol="AAPL", quantity="1")
    [field] = [f for f in card.embeds[0]["fields"] if f["name"] == "Connection"]
    assert field["value"] == "Tradecord Paper"


async def test_a_futures_card_shows_the_notional_and_the_margin_it_needs(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, ES, "5900.00", "5900.50")
    card = await preview(h, "alice", symbol=ES, quantity="1")
    text = card.text()
    assert f"BUY 1 {ES}" in text
    assert "Notional value" in text and "$295,025.00" in text
    assert "Buying power needed" in text and "$29,502.50" in text  # 10 % initial margin
    assert "$70,497.50" in text  # buying power after
    assert [b.label for b in card.buttons()] == ["Confirm", "Cancel"]


@pytest.mark.parametrize(
    ("symbol", "side", "label"),
    [
        ("AAPL", "buy", "Estimated cost"),
        ("AAPL", "sell", "Estimated proceeds"),  # a sell's money comes in: it was "cost"
        (ES, "buy", "Notional value"),  # a future costs its margin, not its notional
        (ES, "sell", "Notional value"),
    ],
)
async def test_the_card_names_the_orders_value_for_its_side_and_asset(
    tradecord: Harness, symbol: str, side: str, label: str
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    pin(h, ES, "5900.00", "5900.50")
    card = await preview(h, "alice", symbol=symbol, side=side, quantity="1")
    names = [f["name"] for f in card.embeds[0]["fields"]]
    assert label in names, names
    assert not {"Estimated cost", "Estimated proceeds", "Notional value"} - {label} & set(names)


async def test_the_card_says_when_a_sell_opens_a_short(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", side="sell", quantity="10")
    assert "You hold no AAPL: this sell opens a short position of 10." in card.text()
    buy = await preview(h, "alice", symbol="AAPL", quantity="4")
    assert "short" not in buy.text()
    await (await h.emu.click(h.user("alice"), buy, label="Confirm")).message(timeout=10)
    closing = await preview(h, "alice", symbol="AAPL", side="sell", quantity="4")
    assert "short" not in closing.text()  # closes what is held: nothing to warn of
    flip = await preview(h, "alice", symbol="AAPL", side="sell", quantity="10")
    text = flip.text()
    assert "You hold 4 AAPL: this sell closes them and opens a short position of 6." in text
    await (await h.emu.click(h.user("alice"), flip, label="Confirm")).message(timeout=10)
    more = await preview(h, "alice", symbol="AAPL", side="sell", quantity="2")
    assert "You are short 6 AAPL already: this sell adds 2 to the short." in more.text()
    # A buy through the short goes long, and is said as the sell through a long was.
    cover = await preview(h, "alice", symbol="AAPL", quantity="10")
    assert "You are short 6 AAPL: this buy covers them and opens a long position of 4." in (
        cover.text()
    ), cover.text()
    exact = await preview(h, "alice", symbol="AAPL", quantity="6")
    assert "long position" not in exact.text()


async def test_cancel_on_the_card_sends_nothing(tradecord: Harness) -> None:
    h = tradecord
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    done = await h.emu.click(h.user("alice"), card, label="Cancel")
    assert "nothing was sent" in (await done.message()).text()
    assert await paper_orders(h) == 0


async def test_someone_elses_confirm_is_refused(tradecord: Harness) -> None:
    h = tradecord
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    confirm_id = card.buttons()[0].custom_id
    assert confirm_id
    intent_id = confirm_id.rsplit(":", 1)[1]
    # A card that others can see (here: posted to the channel) must still refuse them.
    view = discord.ui.View(timeout=None)
    view.add_item(TradeButton("confirm", intent_id))
    channel = h.bot.get_channel(h.emu.general.id)
    assert isinstance(channel, discord.TextChannel)
    public = await channel.send("card", view=view)
    stored = h.emu.message(public.id)
    bob = await h.emu.click(h.user("bob"), stored, label="Confirm")
    answer = await bob.message()
    assert answer.ephemeral and "someone else's order" in answer.text()
    assert await paper_orders(h) == 0


async def test_double_press_places_one_order(tradecord: Harness) -> None:
    h = tradecord
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    alice = h.user("alice")
    first, second = await asyncio.gather(
        h.emu.click(alice, card, label="Confirm"), h.emu.click(alice, card, label="Confirm")
    )
    texts = [(await r.message(timeout=10)).text() for r in (first, second)]
    assert await paper_orders(h) == 1
    assert any("Filled" in t for t in texts)


async def test_a_trade_with_a_bracket_rests_its_exits_once_it_fills(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h, "alice", symbol="AAPL", quantity="10", take_profit="220", stop_loss="190.5"
    )
    assert "Bracket: take-profit $220.00 · stop-loss $190.50, placed once it fills" in card.text()
    assert "· market · GTC" in card.text() and "day orders" not in card.text(), card.text()
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    result = (await done.message(timeout=10)).text()
    assert "Filled: buy 10 AAPL" in result
    assert "Its exits are working: take-profit $220.00 · stop-loss $190.50" in result, result
    orders = (await h.reply("alice", "orders")).text()
    assert "2 open orders" in orders, orders
    assert "TP limit" in orders and "220.00" in orders
    assert "SL stop" in orders and "190.50" in orders
    async with h.core.db.session() as s:
        exits = (await s.scalars(select(PaperOrder).where(PaperOrder.parent_id.is_not(None)))).all()
    assert sorted((o.order_type, o.side, o.quantity) for o in exits) == [
        ("limit", "sell", 10),
        ("stop", "sell", 10),
    ]
    # Good till cancelled unless asked: a day order's exits ended with the trading day, and
    # the position was left without its stop-loss overnight, without a word.
    assert {o.time_in_force for o in exits} == {"gtc"}
    day = await preview(
        h, "alice", symbol="AAPL", quantity="1", stop_loss="190", time_in_force="day"
    )
    assert "(⚠️ as day orders, they end with the trading day: time_in_force:gtc keeps them)" in (
        day.text()
    ), day.text()


def test_a_day_bracket_at_a_broker_whose_exits_are_gtc_is_not_said_to_end_with_the_day() -> None:
    """TradeStation sends a bracket's exits good till cancelled whatever the entry's time in
    force: warning that they end with the day would be false there."""
    from adapters.models import Bracket
    from adapters.registry import get_adapter_class
    from cogs.trading import _bracket_line

    request = OrderRequest(
        "AAPL",
        Side.BUY,
        Decimal(1),
        time_in_force=TimeInForce.DAY,
        bracket=Bracket(stop_loss=Decimal(190)),
    )
    assert get_adapter_class("tradestation").capabilities.bracket_exits_gtc
    assert not get_adapter_class("alpaca").capabilities.bracket_exits_gtc
    gtc = _bracket_line(request, exits_gtc=True)
    assert "good till cancelled" in gtc and "end with the trading day" not in gtc
    assert "end with the trading day" in _bracket_line(request)


async def test_a_trade_with_a_trailing_stop_loss_trails_from_its_fill(tradecord: Harness) -> None:
    """trailing_stop_loss: the card says by how much and where it starts from the estimate;
    once the entry fills, the stop-loss trails the best price."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h, "alice", symbol="AAPL", quantity="10", take_profit="220", trailing_stop_loss="2%"
    )
    exits = "take-profit $220.00 · trailing stop-loss 2% behind the best price"
    assert f"Bracket: {exits}, from $196.10, placed once it fills" in card.text(), card.text()
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    result = (await done.message(timeout=10)).text()
    # Started from the fill, not the card's estimate: no start price is said once it works.
    assert f"Its exits are working: {exits} (one cancels the other)." in result, result
    async with h.core.db.session() as s:
        exits_ = (
            await s.scalars(select(PaperOrder).where(PaperOrder.parent_id.is_not(None)))
        ).all()
    assert sorted((o.order_type, o.quantity, o.trail_percent) for o in exits_) == [
        ("limit", 10, None),
        ("trailing_stop", 10, 2),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stop_loss": "190", "trailing_stop_loss": "2%"}, "not both"),
        ({"trailing_stop_loss": "100%"}, "a percent under 100 like 2%"),
        ({"trailing_stop_loss": "-1"}, "a price distance like 1.50"),
        ({"trailing_stop_loss": "250"}, "would start at or below zero: trail by less"),
    ],
)
async def test_a_trailing_stop_loss_that_cannot_work_says_what_to_give(
    tradecord: Harness, options: dict[str, str], message: str
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="1", **options)
    assert message in card.text(), card.text()
    assert card.buttons() == []


async def test_trade_by_risk_sizes_from_where_a_trailing_stop_loss_starts(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", risk="100", trailing_stop_loss="4")
    assert "**BUY 25 AAPL** · market" in card.text(), card.text()


async def test_a_resting_bracketed_order_says_its_exits_wait_for_the_fill(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h,
        "alice",
        symbol="AAPL",
        quantity="1",
        order_type="limit",
        limit_price="150",
        take_profit="170",
    )
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    result = (await done.message(timeout=10)).text()
    assert "Its exits (take-profit $170.00) are placed once it has filled." in result, result


async def test_cancel_names_the_exits_of_a_bracket_it_cancels(tradecord: Harness) -> None:
    """Before: "Order 1a2b3c4d (buy 1 AAPL) on Tradecord Paper is now cancelled." and
    "Cancelled 2 open orders on Tradecord Paper.", with no word of the take-profit and
    stop-loss."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    alice = h.user("alice")
    card = await preview(
        h,
        "alice",
        symbol="AAPL",
        quantity="1",
        order_type="limit",
        limit_price="150",
        time_in_force="gtc",
        take_profit="170",
        stop_loss="140",
    )
    await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)
    _, _, [entry] = await h.core.trading.open_orders(alice, None, None)
    done = await h.reply("alice", "cancel order", order=entry.id)
    assert done.text() == (
        f"Order {entry.id[-8:]} on Tradecord Paper is now cancelled: buy 1 AAPL limit at "
        "$150.00, with its exits (take-profit $170.00 · stop-loss $140.00)."
    ), done.text()
    # Filled: its exits work as two open orders of their own, named as such.
    card = await preview(
        h, "alice", symbol="AAPL", quantity="1", take_profit="220", stop_loss="190"
    )
    await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)
    ask = await h.reply("alice", "cancel all")
    confirmed = await h.emu.click(alice, ask, label="Cancel them all")
    said, _, named = (await confirmed.message(timeout=10)).text().rstrip(".").partition(": ")
    assert said == "Cancelled 2 open orders on Tradecord Paper. Bracket orders among them"
    assert set(named.split("; ")) == {  # in the order the broker lists them
        "the take-profit sell 1 AAPL limit at $220.00",
        "the stop-loss sell 1 AAPL stop at $190.00",
    }


async def test_a_bracket_on_the_wrong_side_says_which_way(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="1", take_profit="150")
    assert "its take_profit must be above that, not $150.00" in card.text(), card.text()
    card = await preview(h, "alice", symbol="AAPL", side="sell", quantity="1", stop_loss="150")
    assert "its stop_loss must be above that, not $150.00" in card.text(), card.text()
    card = await preview(h, "alice", symbol="AAPL", quantity="1", stop_loss="-1")
    assert "stop_loss must be more than zero" in card.text()
    assert await paper_orders(h) == 0


async def test_a_bracket_on_a_closing_sell_is_refused_at_the_card(tradecord: Harness) -> None:
    """Every broker refuses it when placed (the exits would buy the position back): the card
    says so, rather than Confirm."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    assert (
        "Filled"
        in (
            await (
                await h.emu.click(
                    h.user("alice"),
                    await preview(h, "alice", symbol="AAPL", quantity="5"),
                    label="Confirm",
                )
            ).message(timeout=10)
        ).text()
    )
    card = await preview(h, "alice", symbol="AAPL", side="sell", quantity="3", stop_loss="210")
    assert card.text() == (
        "A take-profit/stop-loss bracket needs an order that opens a position, and this sell "
        "closes (part of) your 5 AAPL. Close it without take_profit and stop_loss (or with "
        "/close), then place the bracketed order."
    ), card.text()
    assert card.buttons() == [] and await paper_orders(h) == 1


async def test_expired_card(tradecord: Harness) -> None:
    h = tradecord
    clock = FakeClock()
    h.core.trading.clock = clock
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    clock.advance(seconds=61)
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert "expired" in (await done.message()).text()
    assert await paper_orders(h) == 0


async def test_bad_input_gets_advice(tradecord: Harness) -> None:
    h = tradecord
    for options, expected in [
        ({"symbol": "AAPL", "quantity": "ten"}, "must be a number"),
        ({"symbol": "AAPL", "quantity": "0"}, "more than zero"),
        ({"symbol": "AAPL", "quantity": "2.5"}, "whole number"),
        ({"symbol": "AAPL", "quantity": "1", "order_type": "limit"}, "needs limit_price"),
        ({"symbol": "ZZZQX", "quantity": "1"}, "ZZZQX"),
        ({"symbol": "AAPL", "quantity": "100000"}, "Not enough buying power"),
        ({"symbol": "AAPL", "quantity": "1", "connection": "Nope"}, "no connection named"),
    ]:
        msg = await h.reply("alice", "trade", side="buy", **options)
        assert msg.ephemeral and expected in msg.text(), (options, msg.text())
    assert await paper_orders(h) == 0


async def test_a_stop_the_market_has_passed_is_refused_with_what_to_do(tradecord: Harness) -> None:
    # A buy stop below the market (a sell stop above it) triggers at once and fills at the
    # market: the preview must not estimate it at the stop price.
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    for side, stop, advice in [
        ("buy", "150", "Use a stop_price above $200.10, or order_type:limit to buy at $150.00"),
        ("sell", "250", "Use a stop_price below $199.90, or order_type:limit to sell at $250.00"),
    ]:
        for order_type in ("stop", "stop_limit"):
            options = {"limit_price": stop} if order_type == "stop_limit" else {}
            msg = await h.reply(
                "alice",
                "trade",
                symbol="AAPL",
                side=side,
                quantity="1",
                order_type=order_type,
                stop_price=stop,
                **options,
            )
            text = msg.text()
            assert msg.ephemeral and "would trigger at once" in text and advice in text, text
    # On the right side it is a preview, estimated at the stop.
    card = await preview(
        h, "alice", symbol="AAPL", quantity="1", order_type="stop", stop_price="210"
    )
    assert "$210.00" in card.text()
    assert await paper_orders(h) == 0


async def test_a_price_with_more_decimals_is_shown_as_typed(tradecord: Harness) -> None:
    # Rounded to cents, the preview said "limit 250.12" while the order went in at 250.123.
    # Crypto: a stock's price finer than a cent is refused (the test after this one).
    h = tradecord
    pin(h, "ETHUSD", "3400.00", "3401.00")
    card = await preview(
        h, "alice", symbol="ETHUSD", quantity="1", order_type="limit", limit_price="250.123"
    )
    text = card.text()
    assert "limit $250.123" in text and "250.12 " not in text, text
    assert text.count("250.123") == 2, text  # the title and the estimated price
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    orders = (await h.reply("alice", "orders")).text()
    assert "250.123" in orders, orders
    # Cents stay cents.
    card = await preview(
        h, "alice", symbol="AAPL", quantity="1", order_type="limit", limit_price="250.5"
    )
    assert "limit $250.50" in card.text()


async def test_a_stock_price_finer_than_a_cent_is_refused_with_the_prices_to_use(
    tradecord: Harness,
) -> None:
    # Paper took limit 100.12345; every US broker refuses it (SEC Rule 612).
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    for options, said in (
        (
            {"order_type": "limit", "limit_price": "100.12345"},
            "AAPL prices of $1 or more go in whole cents: use 100.12 or 100.13",
        ),
        (
            {"take_profit": "220.005", "stop_loss": "190", "time_in_force": "gtc"},
            "The take-profit price 220.005 has too many decimals",
        ),
    ):
        msg = await h.reply("alice", "trade", symbol="AAPL", side="buy", quantity="1", **options)
        text = msg.text()
        assert msg.ephemeral and said in text and msg.buttons() == [], text
    assert await paper_orders(h) == 0


async def test_a_decimal_comma_is_refused_not_read_as_thousands(tradecord: Harness) -> None:
    # "1,5" was read as 15 shares and "500,00" as a limit of 50,000.
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    for options in (
        {"quantity": "1,5"},
        {"quantity": "1", "order_type": "limit", "limit_price": "500,00"},
    ):
        msg = await h.reply("alice", "trade", symbol="AAPL", side="buy", **options)
        text = msg.text()
        assert msg.ephemeral and "takes a point for decimals, like 2.5" in text, text
    limits = await h.reply("alice", "limits set", max_order_notional="2,5")
    assert "takes a point for decimals" in limits.text(), limits.text()
    # Thousands separators still work.
    thousand = await h.reply("alice", "trade", symbol="AAPL", side="buy", quantity="1,000")
    assert "$200,100.00" in thousand.text(), thousand.text()  # 1,000 at the ask
    big = await h.reply("alice", "limits set", max_order_notional="2,500")
    assert "$2,500.00" in big.text(), big.text()
    assert await paper_orders(h) == 0


async def test_orders_cancel_order_and_cancel_all(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "MSFT", "399.90", "400.10")
    alice = h.user("alice")
    for limit in ("350", "360"):
        card = await preview(
            h,
            "alice",
            symbol="MSFT",
            quantity="1",
            order_type="limit",
            limit_price=limit,
            time_in_force="gtc",
        )
        await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)
    orders = await h.reply("alice", "orders")
    assert orders.text().count("MSFT") == 2
    choices = await h.emu.autocomplete(
        alice, "cancel order", options={"order": "360"}, focused="order", guild_id=h.guild_id
    )
    assert len(choices) == 1 and "360.00" in choices[0]["name"]
    done = await h.reply("alice", "cancel order", order=choices[0]["value"])
    assert "cancelled" in done.text()
    ask = await h.reply("alice", "cancel all")
    assert ask.text() == (
        "Cancel your one open paper order on Tradecord Paper, buy 1 MSFT limit at $350.00?"
    ), ask.text()
    assert [b.label for b in ask.buttons()] == ["Cancel it", "Keep it"]
    confirmed = await h.emu.click(alice, ask, label="Cancel it")
    assert "Cancelled 1 open order" in (await confirmed.message(timeout=10)).text()
    none = (await h.reply("alice", "orders")).text()
    assert "No open orders." in none and "/cancel" not in none, none  # nothing to cancel
    history = await h.reply("alice", "history")
    assert history.text().count("cancelled") == 2


async def test_cancel_all_cancels_what_its_question_named_not_an_order_placed_since(
    tradecord: Harness,
) -> None:
    """Before: the order placed between the question and the press (another card, a signal's)
    was cancelled too, though the question had named only the other."""
    h = tradecord
    pin(h, "MSFT", "399.90", "400.10")
    alice = h.user("alice")

    async def limit(price: str) -> None:
        card = await preview(
            h,
            "alice",
            symbol="MSFT",
            quantity="1",
            order_type="limit",
            limit_price=price,
            time_in_force="gtc",
        )
        await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)

    await limit("350")
    ask = await h.reply("alice", "cancel all")
    assert "buy 1 MSFT limit at $350.00?" in ask.text()
    await limit("340")
    done = await (await h.emu.click(alice, ask, label="Cancel it")).message(timeout=10)
    assert done.text().startswith("Cancelled 1 open order on Tradecord Paper."), done.text()
    assert "Left open: 1 order placed after the question (buy 1 MSFT limit at $340.00)" in (
        done.text()
    )
    _, _, still = await h.core.trading.open_orders(alice, None, None)
    assert [o.limit_price for o in still] == [Decimal(340)]


async def test_a_dollar_sized_card_confirmed_after_a_big_move_is_not_sent(
    tradecord: Harness,
) -> None:
    """Before: "$2,000 buys 9 AAPL" at $200.10, confirmed at $300, filled for $2,700; and 24
    AAPL sized to risk $100 to a $196 stop, confirmed at $210, risked $336."""
    h = tradecord
    alice = h.user("alice")

    async def press(card: Message) -> str:
        return (await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)).text()

    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", amount="2000")
    assert "$2,000.00 buys 9 AAPL" in card.text()
    pin(h, "AAPL", "299.90", "300.10")
    assert (
        "Not sent: the price moved from $200.10 to $300.10 since the card, so buy 9 AAPL is "
        "now about $2,700.90, more than the $2,000.00 you gave. Run /trade again to size it at "
        "this price."
    ) in await press(card)
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", risk="100", stop_loss="196")
    pin(h, "AAPL", "209.90", "210.10")
    assert "now loses about $338.40 if its stop-loss fills" in await press(card)
    assert "AAPL" not in (await h.reply("alice", "positions")).text()  # neither was sent
    # A tick is no jump: the order goes as the card said.
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", amount="2000")
    pin(h, "AAPL", "200.90", "201.10")
    assert "Filled: buy 9 AAPL" in await press(card)


async def limit_order(h: Harness, user: str, price: str) -> None:
    """An open paper order: buy 1 MSFT at ``price``, good till cancelled."""
    pin(h, "MSFT", "399.90", "400.10")
    card = await preview(
        h,
        user,
        symbol="MSFT",
        quantity="1",
        order_type="limit",
        limit_price=price,
        time_in_force="gtc",
    )
    await (await h.emu.click(h.user(user), card, label="Confirm")).message(timeout=10)


async def test_the_id_shown_by_orders_cancels_that_order(tradecord: Harness) -> None:
    h = tradecord
    await limit_order(h, "alice", "350")
    await limit_order(h, "alice", "360")
    listing = await h.reply("alice", "orders")
    row = next(line for line in listing.text().splitlines() if "360.00" in line)
    short_id = row.split()[0]
    done = await h.reply("alice", "cancel order", order=short_id)
    assert "is not open" not in done.text() and "cancelled" in done.text(), done.text()
    _, _, [left] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert left.limit_price == Decimal("350")
    # Fewer characters than /orders shows could pick an order by accident: refused.
    short = await h.reply("alice", "cancel order", order=short_id[-2:])
    assert short.ephemeral and "is not open" in short.text() and "Type the Id" in short.text()
    _, _, [kept] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert kept.id == left.id


async def test_an_id_ending_two_open_orders_asks_which(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    await limit_order(h, "alice", "350")
    await limit_order(h, "alice", "360")
    real = PaperBroker.fetch_open_orders

    async def same_endings(self: PaperBroker, account: Any) -> list[Any]:
        # Brokers whose ids share their last characters (the paper broker's never do).
        return [replace(o, id=f"{n}-ab12cd34") for n, o in enumerate(await real(self, account))]

    monkeypatch.setattr(PaperBroker, "fetch_open_orders", same_endings)
    which = await h.reply("alice", "cancel order", order="AB12CD34")
    text = which.text()
    assert which.ephemeral and "matches 2 open orders" in text, text
    assert "buy 1 MSFT limit at $360.00: id 0-ab12cd34" in text
    assert "buy 1 MSFT limit at $350.00: id 1-ab12cd34" in text
    assert "Type the whole id" in text
    monkeypatch.setattr(PaperBroker, "fetch_open_orders", real)
    _, _, still = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert len(still) == 2


async def test_a_double_press_on_a_confirm_dialog_acts_once(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    alice = h.user("alice")
    await limit_order(h, "alice", "350")
    calls: list[tuple[Any, ...]] = []
    cancel = h.core.trading.cancel_listed

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await cancel(*args, **kwargs)

    monkeypatch.setattr(h.core.trading, "cancel_listed", counted)
    ask = await h.reply("alice", "cancel all")
    # Both presses reach the bot before the first one has removed the buttons.
    presses = await asyncio.gather(
        h.emu.click(alice, ask, label="Cancel it"),
        h.emu.click(alice, ask, label="Cancel it"),
    )
    answers = [await p.message(timeout=10) for p in presses]
    assert len(calls) == 1
    assert "Cancelled 1 open order" in ask.text() and ask.buttons() == []
    second = next(a for a in answers if a.id != ask.id)
    assert second.ephemeral and "already pressed" in second.text(), second.text()


async def test_share_posts_no_account_numbers_or_amounts(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="3")
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    shared = await h.reply("alice", "positions", share=True)
    assert not shared.ephemeral
    text = shared.text()
    assert "AAPL" in text and "TCP" not in text and "$" not in text
    with_amounts = await h.reply("alice", "balances", share=True, show_amounts=True)
    assert "$" in with_amounts.text() and "TCP" not in with_amounts.text()
    private = await h.reply("alice", "balances")
    assert private.ephemeral and "Buying power" in private.text()


async def test_shared_balances_name_the_broker_not_the_connection(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection's name is the member's own ("Roth IRA"); shared, only the broker shows."""
    h = tradecord
    portfolio = h.core.trading.portfolio

    async def named(*args: Any) -> Any:
        pf = await portfolio(*args)
        pf.target.connection.name = "Roth IRA"
        return pf

    monkeypatch.setattr(h.core.trading, "portfolio", named)
    shared = await h.reply("alice", "balances", share=True)
    assert not shared.ephemeral
    assert "Roth IRA" not in shared.text() and "Tradecord Paper" in shared.text()
    assert "alice's balances" in shared.text()
    private = await h.reply("alice", "balances")
    assert "Roth IRA" in private.text()


async def test_trade_by_amount_sizes_the_order_from_dollars(tradecord: Harness) -> None:
    """ "Buy $1,000 of AAPL": the quantity is what the amount buys at the estimate (the ask,
    or the order's limit), rounded down to whole shares where the broker takes no fraction."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", amount="$1,000")
    text = card.text()
    assert "**BUY 4 AAPL** · market" in text, text
    assert "💵 $1,000.00 buys 4 AAPL at the estimated price (whole shares: $199.60 not spent)." in (
        text
    )
    done = await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    assert "Filled: buy 4 AAPL at $200.00." in done.text(), done.text()
    async with h.core.db.session() as s:
        intent = await s.scalar(select(OrderIntent).order_by(OrderIntent.created_at.desc()))
    assert intent is not None and intent.extra["amount"] == "1000"

    limit = await preview(
        h, "alice", symbol="AAPL", side="sell", amount="500", order_type="limit", limit_price="250"
    )
    assert "**SELL 2 AAPL** · limit" in limit.text(), limit.text()
    assert "💵 $500.00 sells 2 AAPL at the estimated price." in limit.text()
    h.core.simulated_feed.set_quote("BTCUSD", Decimal("49990"), Decimal("50000"))
    btc = (await preview(h, "alice", symbol="BTCUSD", amount="1000")).text()
    assert "**BUY 0.02 BTCUSD** · market" in btc and "not spent" not in btc, btc


async def test_trade_by_risk_sizes_the_order_from_its_stop_loss(tradecord: Harness) -> None:
    """ "Risk $100 to a stop at $196": the quantity loses about that much if the stop-loss fills,
    from the estimated entry (the ask for a buy), contract multipliers included."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", risk="$100", stop_loss="196")
    text = card.text()
    assert "**BUY 24 AAPL** · market" in text, text  # $4.10 a share to the stop
    assert (
        "🎯 Sized for $100.00 of risk: 24 AAPL would lose $98.40 from the estimated price to the "
        "stop-loss at $196.00."
    ) in text, text
    done = await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    assert "Filled: buy 24 AAPL at $200.00." in done.text(), done.text()
    async with h.core.db.session() as s:
        intent = await s.scalar(select(OrderIntent).order_by(OrderIntent.created_at.desc()))
    assert intent is not None and intent.extra["risk"] == "100"
    contract = trading_contract()
    pin(h, contract, "5000.00", "5000.50")
    short = (
        await preview(h, "alice", symbol=contract, side="sell", risk="1,000", stop_loss="5010")
    ).text()
    assert f"**SELL 2 {contract}** · market" in short, short  # 10 points of $50: $500 each
    # A size the member never typed is named when it is too big, with what to change.
    big = await preview(h, "alice", symbol="AAPL", risk="100,000", stop_loss="199")
    assert big.text().startswith(
        "Not enough buying power: risking $100,000.00 sizes it at 90,909 AAPL, which needs about $"
    ), big.text()
    assert big.text().endswith(
        "Lower risk, or set the stop_loss farther from the price, or check /balances."
    ), big.text()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"amount": "100"}, "$100.00 does not buy one share of AAPL at about $200.10: raise the "),
        ({"amount": "100", "quantity": "1"}, "Give quantity or amount, not both"),
        ({}, "Give quantity (how many shares, contracts or coins) or amount (how many dollars"),
        ({"amount": "0"}, "Amount must be more than zero: how many dollars, e.g. 500."),
        ({"amount": "ten"}, "Amount"),
        ({"amount": "5000", "symbol": "ESZ26"}, "ESZ26 trades in contracts: give quantity"),
        ({"risk": "100"}, "risk sizes the order by its distance to the stop-loss: give stop_loss"),
        ({"risk": "100", "quantity": "3", "stop_loss": "190"}, "Give quantity or risk, not both"),
        ({"risk": "-5", "stop_loss": "190"}, "Risk must be more than zero"),
        (
            {"risk": "5", "stop_loss": "190"},
            "One share of AAPL loses about $10.10 from $200.10 to the stop-loss at $190.00: "
            "$5.00 of risk does not cover it.",
        ),
        ({"risk": "100", "stop_loss": "210"}, "its stop_loss must be below that, not $210.00"),
    ],
)
async def test_trade_by_amount_refuses_what_it_cannot_size(
    tradecord: Harness, options: dict[str, str], message: str
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    refused = await h.reply("alice", "trade", **({"symbol": "AAPL", "side": "buy"} | options))
    assert refused.ephemeral and message in refused.text(), refused.text()
    assert await paper_orders(h) == 0


async def test_quote_shows_bid_ask_last_and_spread(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    pin(h, "ESZ26", "5919.00", "5919.25")
    h.core.simulated_feed.set_quote("BTCUSD", Decimal("91296.4"), Decimal("91332.98"))
    private = await h.reply("alice", "quote", symbol="esz26")
    assert private.ephemeral
    text = private.text()
    assert "ESZ26 · Tradecord Paper" in text and "Prices from Tradecord Paper" in text, text
    embed = private.embeds[0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {
        "Bid": "5,919.00",
        "Ask": "5,919.25",
        "Last": "5,919.125",  # a pinned quote trades at its mid
        "Spread": "0.25 (under 0.01% of the mid)",
    }, fields
    assert embed["footer"]["text"] == "simulated prices, not a market's"
    crypto = (await h.reply("alice", "quote", symbol="btc/usd")).embeds[0]
    spread = next(f["value"] for f in crypto["fields"] if f["name"] == "Spread")
    assert spread == "36.58 (0.04% of the mid)", spread

    quote = h.core.trading.quote

    async def named(*args: Any) -> Any:
        target, broker, q = await quote(*args)
        target.connection.name = "Roth IRA"
        return target, broker, q

    monkeypatch.setattr(h.core.trading, "quote", named)
    shared = await h.reply("alice", "quote", symbol="ESZ26", share=True)
    assert not shared.ephemeral
    assert "Roth IRA" not in shared.text() and "Prices from Tradecord Paper" in shared.text()
    assert "Roth IRA" in (await h.reply("alice", "quote", symbol="ESZ26")).text()


async def test_quote_refuses_what_is_not_a_symbol_it_knows(tradecord: Harness) -> None:
    h = tradecord
    unknown = await h.reply("alice", "quote", symbol="ZZZZQ")
    assert unknown.ephemeral
    assert "Tradecord Paper does not know the symbol ZZZZQ." in unknown.text(), unknown.text()
    typo = (await h.reply("alice", "quote", symbol="not one")).text()
    assert "“not one” is not a symbol: type a ticker (AAPL)" in typo, typo
    live = (await h.reply("alice", "quote", symbol="AAPL", mode="live")).text()
    assert live.startswith("You have no connection with a live account. Link a broker"), live


async def test_a_future_tradecord_does_not_know_is_not_taken_for_a_stock(
    tradecord: Harness,
) -> None:
    h = tradecord
    for command, opts in (
        ("trade", {"symbol": "ZCZ25", "side": "buy", "quantity": "1"}),
        ("quote", {"symbol": "ZCH26"}),
        ("close", {"symbol": "ZCZ25"}),
    ):
        text = (await h.reply("alice", command, **opts)).text()
        assert "Tradecord does not trade ZC futures yet" in text, (command, text)


# Enough positions for two pages: any of the paper broker's stocks will do.
SYMBOLS = sorted(equity_list().stocks)[:18]


async def hold(h: Harness, user: str, symbols: list[str]) -> None:
    """One paper share of each symbol, placed directly (no card to press)."""
    from adapters.models import OrderRequest, Side
    from adapters.symbols import asset_class_of

    target = await h.core.connections.resolve(h.user(user), None, "paper")
    for i, sym in enumerate(symbols):
        req = OrderRequest(sym, Side.BUY, Decimal(1), asset_class=asset_class_of(sym))
        out = await h.core.trading.place(target, req, source="test", idempotency_key=f"k{i}")
        assert out.ok, out.message


async def test_long_positions_page_with_buttons(tradecord: Harness) -> None:
    h = tradecord
    await hold(h, "alice", SYMBOLS)
    page1 = await h.reply("alice", "positions")
    assert "Page 1/2" in page1.text()
    nxt = await h.emu.click(h.user("alice"), page1, label="Next ▶")
    page2 = await nxt.message()
    assert "Page 2/2" in page2.text()


async def test_a_press_on_buttons_whose_view_ended_says_they_expired(tradecord: Harness) -> None:
    """A pager outlives its view when Tradecord restarts (or its edit at the timeout fails):
    the press reaches nothing and would fail in Discord without a word. Ending the view is
    what a restart does to it."""
    h = tradecord
    alice = h.user("alice")
    await hold(h, "alice", SYMBOLS)
    pager = await h.reply("alice", "positions")
    ids = [b["custom_id"] for b in pager.iter_components() if b.get("label") == "Next ▶"]
    assert len(ids) == 1 and ids[0].startswith(ui.VIEW_PREFIX)
    ui._VIEWS[ids[0]].stop()
    answer = await (await h.emu.click(alice, pager, label="Next ▶")).message(timeout=10)
    assert answer.text() == ui.EXPIRED and answer.flags & 64  # private
    assert "Page 1/2" in pager.text()


async def test_pressing_next_or_previous_twice_stays_on_a_page(tradecord: Harness) -> None:
    h = tradecord
    alice = h.user("alice")
    await hold(h, "alice", SYMBOLS[:16])
    pager = await h.reply("alice", "positions")
    assert "Page 1/2" in pager.text()
    for label, page in (("Next ▶", "Page 2/2"), ("◀ Previous", "Page 1/2")):
        # Both presses reach the bot before the first one has changed the buttons.
        clicks = await asyncio.gather(
            h.emu.click(alice, pager, label=label), h.emu.click(alice, pager, label=label)
        )
        answers = [(await c.message(timeout=10)).text() for c in clicks]
        assert not any("Something went wrong" in a for a in answers), answers
        assert page in pager.text(), pager.text()


async def test_paper_reset_with_confirmation(tradecord: Harness) -> None:
    h = tradecord
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    ask = await h.reply("alice", "paper reset")
    assert "Reset your paper account to $100,000.00" in ask.text()
    done = await h.emu.click(h.user("alice"), ask, label="Reset my paper account")
    assert "back to $100,000.00" in (await done.message(timeout=10)).text()
    assert "No open positions." in (await h.reply("alice", "positions")).text()


async def test_a_fast_answer_is_one_message_without_a_thinking_placeholder(
    tradecord: Harness,
) -> None:
    h = tradecord
    result = await h.slash("alice", "positions")
    response = await result.response()
    assert not response.deferred and response.ephemeral
    assert "Positions" in (await result.message()).text()


async def test_slow_work_is_deferred_in_time_and_then_answered(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    trading = h.core.trading

    def slowly(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def slow(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0.3)
            return await method(*args, **kwargs)

        return slow

    monkeypatch.setattr(trading, "holdings", slowly(trading.holdings))
    result = await h.slash("alice", "positions")
    response = await result.response()
    assert response.deferred and response.ephemeral  # "thinking…" before the answer
    answer = await result.message()
    assert "Positions" in answer.text() and not answer.loading

    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    monkeypatch.setattr(trading, "submit", slowly(trading.submit))
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert (await done.response()).deferred  # the card waits, then is replaced
    assert "Filled" in (await done.message(timeout=10)).text()
    assert await paper_orders(h) == 1


async def test_a_failed_deferral_does_not_hide_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.01)
    deferrals: list[bool] = []

    class Response:
        def is_done(self) -> bool:
            return False

        async def defer(self, *, ephemeral: bool, thinking: bool) -> None:
            deferrals.append(thinking)
            raise discord.NotFound(FakeHTTPResponse(404), "Unknown interaction")

    class Interaction:
        type = discord.InteractionType.application_command
        response = Response()

    async def work() -> str:
        await asyncio.sleep(0.1)
        return "done"

    assert await ui.in_time(Interaction(), work(), ephemeral=True) == "done"  # type: ignore[arg-type]
    assert deferrals == [True]


class FakeHTTPResponse:
    def __init__(self, status: int) -> None:
        self.status, self.reason = status, "Not Found"


async def test_shared_orders_and_history_show_no_account_or_prices_unless_asked(
    tradecord: Harness,
) -> None:
    h = tradecord
    alice = h.user("alice")
    pin(h, "MSFT", "399.90", "400.10")
    card = await preview(
        h, "alice", symbol="MSFT", quantity="2", order_type="limit", limit_price="350.25"
    )
    await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)
    shared = await h.reply("alice", "orders", share=True)
    assert not shared.ephemeral
    text = shared.text()
    assert "MSFT" in text and "limit" in text and "350.25" not in text and "TCP" not in text
    priced = await h.reply("alice", "orders", share=True, show_amounts=True)
    assert "350.25" in priced.text() and "TCP" not in priced.text()
    ask = await h.reply("alice", "cancel all")
    await (await h.emu.click(alice, ask, label="Cancel it")).message(timeout=10)
    history = await h.reply("alice", "history", share=True)
    assert not history.ephemeral
    assert "cancelled" in history.text() and "350.25" not in history.text()
    assert "TCP" not in history.text()


async def test_shared_summaries_show_a_display_name_as_typed(tradecord: Harness) -> None:
    """A display name is the member's own text: "**Bob**" made a shared summary's title bold.
    Embed titles render markdown but not mentions, so "<@…>" already shows as typed."""
    h = tradecord
    bob = h.emu.add_user("bob", global_name="**Bob** <@1575800000000000000>")
    h.emu.add_member(h.guild_id, bob.id)
    for command in ("positions", "balances", "orders", "history"):
        shared = await h.reply(bob.id, command, share=True)
        title = shared.embeds[0]["title"]
        assert title.startswith("\\*\\*Bob\\*\\* <@1575800000000000000>'s "), title


async def test_an_empty_list_says_what_there_is_none_of_private_or_shared(
    tradecord: Harness,
) -> None:
    """Empty, /positions said "Nothing here." privately and "No open positions." shared, and a
    shared summary had a blank footer."""
    h = tradecord
    for command, options, empty in (
        ("positions", {}, "No open positions."),
        ("orders", {}, "No open orders."),
        ("history", {"days": 1}, "No orders in the last 1 day."),
        ("history", {}, "No orders in the last 7 days."),
    ):
        private = await h.reply("alice", command, **options)
        shared = await h.reply("alice", command, share=True, **options)
        assert empty in private.text(), private.text()
        assert empty in shared.text(), shared.text()
        assert "Nothing here" not in private.text() + shared.text()
        footer = shared.embeds[0]["footer"]["text"]
        assert f"Shared with /{command} · no account numbers or amounts" in footer, footer
    balances = await h.reply("alice", "balances", share=True, show_amounts=True)
    footer = balances.embeds[0]["footer"]["text"]
    assert footer.endswith("Shared with /balances · no account numbers"), footer
    private = await h.reply("alice", "balances")
    assert "\u200b" not in private.embeds[0].get("footer", {}).get("text", ""), private.embeds


async def test_share_error_after_a_slow_read_stays_private(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    original = h.core.trading.holdings

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await original(*args, **kwargs)

    monkeypatch.setattr(h.core.trading, "holdings", slow)
    result = await h.slash("alice", "positions", share=True, connection="My Schwab IRA")
    assert (await result.response()).deferred  # publicly: "Tradecord is thinking…" for all
    error = await result.followup(0, timeout=10)
    assert "no connection named" in error.text()
    assert error.ephemeral, "the error was posted in the channel"
    # The public placeholder is gone rather than left thinking (or carrying the error).
    assert result.original is not None and result.original.deleted
    others = h.emu.messages(h.emu.general.id, visible_to=h.user("bob"))
    assert not any("My Schwab IRA" in m.text() for m in others)


async def test_history_shows_what_a_fill_cost(tradecord: Harness) -> None:
    """A market order's Price column says only "mkt": the fill's price is its own column."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="10")
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    history = (await h.reply("alice", "history")).text()
    assert "Avg fill" in history and "mkt" in history
    assert "10/10    200.00  market" in history, history
    assert "simulated prices" in history, history  # filled at the simulated feed's price
    # When it ended: before, /history showed no time at all.
    [filled] = [line for line in history.splitlines() if "10/10" in line]
    assert "Ended UTC" in history and re.search(r"\d\d-\d\d \d\d:\d\d$", filled), filled
    shared = (await h.reply("alice", "history", share=True, show_amounts=True)).text()
    assert "10/10    200.00  market" in shared and "simulated prices" in shared, shared
    private = (await h.reply("alice", "history", share=True)).text()
    assert "200.00" not in private and "Avg fill" not in private
    assert "simulated prices" not in private  # no price shown


def test_history_says_when_older_orders_were_cut() -> None:
    assert history_footer(12, 7, None) == "12 orders"
    assert history_footer(1, 7, "Alpaca") == "1 order"
    cut = history_footer(HISTORY_LIMIT, 30, "TradeStation")
    assert cut == (
        f"The newest {HISTORY_LIMIT} orders: older ones of these 30 days are not shown. "
        "TradeStation's site has the full history."
    )
    # Tradecord Paper has no site: it said "Your broker's site has the full history".
    paper = history_footer(HISTORY_LIMIT, 30, None)
    assert paper == f"The newest {HISTORY_LIMIT} orders: older ones of these 30 days are not shown."


async def test_paper_history_cut_points_to_no_broker_site(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    for _ in range(2):
        card = await preview(h, "alice", symbol="AAPL", quantity="1")
        await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    # The module the bot loaded as its extension (discord.py imports a fresh one).
    cog = sys.modules[type(h.bot.get_cog("Trading")).__module__]
    monkeypatch.setattr(cog, "HISTORY_LIMIT", 2)
    footer = (await h.reply("alice", "history")).text().splitlines()[-1]
    cut = "The newest 2 orders: older ones of these 7 days are not shown."
    assert footer == f"{cut} · simulated prices", footer


async def test_cancel_racing_a_confirm_is_told_the_order_went_ahead(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    alice = h.user("alice")
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    trading = h.core.trading
    owned = trading._owned_intent
    both_read = asyncio.Event()
    reads: list[str] = []

    async def read_together(*args: Any, **kwargs: Any) -> Any:
        # Both presses read the draft before either changes it, as two processes may.
        intent = await owned(*args, **kwargs)
        reads.append(intent.status)
        if len(reads) == 2:
            both_read.set()
        await asyncio.wait_for(both_read.wait(), 5)
        return intent

    transition = trading._transition
    claimed = asyncio.Event()

    async def confirm_first(intent_id: str, frm: str, to: str) -> bool:
        # Confirm wins the compare-and-set; which one would is up to the database's timing.
        if to == IntentStatus.DISCARDED:
            await asyncio.wait_for(claimed.wait(), 5)
        done = await transition(intent_id, frm, to)
        if to == IntentStatus.PENDING:
            claimed.set()
        return done

    monkeypatch.setattr(trading, "_owned_intent", read_together)
    monkeypatch.setattr(trading, "_transition", confirm_first)
    confirm, cancel = await asyncio.gather(
        h.emu.click(alice, card, label="Confirm"), h.emu.click(alice, card, label="Cancel")
    )
    confirmed = await confirm.message(timeout=10)
    refused = await cancel.message(timeout=10)
    assert reads == ["draft", "draft"]
    assert await paper_orders(h) == 1 and "Filled" in confirmed.text()
    assert refused.ephemeral and "already confirmed" in refused.text()
    assert "draft" not in refused.text(), refused.text()  # the status it has now


async def test_a_slow_claim_counts_towards_the_confirm_deadline(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    # Scaled down: Discord's 3 s becomes 0.5 s, and "defer after 1.5 s" 0.2 s.
    monkeypatch.setattr(h.emu.interactions, "ack_deadline", 0.5)
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.2)
    trading = h.core.trading
    claim, submit = trading.claim, trading.submit

    async def slow_claim(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.35)  # the database busy with other writers
        return await claim(*args, **kwargs)

    async def slow_submit(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.35)  # the broker taking its time
        return await submit(*args, **kwargs)

    monkeypatch.setattr(trading, "claim", slow_claim)
    monkeypatch.setattr(trading, "submit", slow_submit)
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert (await done.response()).deferred  # within the deadline, not after it
    assert "Filled" in (await done.message(timeout=10)).text()
    assert await paper_orders(h) == 1


async def test_a_slow_trade_preview_is_deferred(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/trade asks the broker for a quote: it must defer rather than risk Discord's 3 s."""
    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    trading = h.core.trading
    original = trading.preview

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await original(*args, **kwargs)

    monkeypatch.setattr(trading, "preview", slow)
    result = await h.slash("alice", "trade", symbol="AAPL", side="buy", quantity="1")
    response = await result.response()
    assert response.deferred and response.ephemeral
    card = await result.message(timeout=10)
    assert [b.label for b in card.buttons()] == ["Confirm", "Cancel"]


async def test_a_result_after_the_token_expired_goes_by_dm(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord refuses followups after 15 minutes (401 50027): the answer goes by DM."""
    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    trading = h.core.trading
    original = trading.holdings
    release = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        await asyncio.wait_for(release.wait(), 10)
        return await original(*args, **kwargs)

    monkeypatch.setattr(trading, "holdings", held)
    result = await h.slash("alice", "positions")
    assert (await result.response()).deferred
    h.emu.expire_interaction(result)  # as if the broker had taken 15 minutes
    release.set()
    alice = h.user("alice")
    dm = await h.emu.wait_for_message(
        lambda m: any(d.id == m.id for d in h.emu.dm_messages(alice)) and "Positions" in m.text(),
        timeout=10,
    )
    assert "No open positions." in dm.text()
    assert result.followups == []  # nothing went to the expired interaction


async def test_a_card_outcome_after_the_token_expired_goes_by_dm(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a button: the card can no longer be edited, so the outcome is a DM."""
    h = tradecord
    monkeypatch.setattr(ui, "DEFER_AFTER", 0.05)
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    trading = h.core.trading
    original = trading.submit
    release = asyncio.Event()

    async def held(*args: Any, **kwargs: Any) -> Any:
        await asyncio.wait_for(release.wait(), 10)
        return await original(*args, **kwargs)

    monkeypatch.setattr(trading, "submit", held)
    alice = h.user("alice")
    done = await h.emu.click(alice, card, label="Confirm")
    assert (await done.response()).deferred
    h.emu.expire_interaction(done)
    release.set()
    dm = await h.emu.wait_for_message(
        lambda m: any(d.id == m.id for d in h.emu.dm_messages(alice)) and "Filled" in m.text(),
        timeout=10,
    )
    assert "buy 1 AAPL" in dm.text()
    assert await paper_orders(h) == 1


async def test_a_trailing_stop_from_trade_rests_with_its_stop_below_the_price(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, "AAPL", "200.00", "200.00")
    done = await h.emu.click(
        h.user("alice"), await preview(h, "alice", symbol="AAPL", quantity="10"), label="Confirm"
    )
    assert "Filled" in (await done.message(timeout=10)).text()
    card = await preview(
        h,
        "alice",
        symbol="AAPL",
        side="sell",
        quantity="10",
        order_type="trailing_stop",
        trail_percent="5",
        time_in_force="gtc",
    )
    assert "trailing stop (trailing 5% behind the best price)" in card.text(), card.text()
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert "Accepted: sell 10 AAPL (trailing stop, working)" in (await done.message()).text()
    orders = (await h.reply("alice", "orders")).text()
    # Named as the card named it, in /orders and in a shared list alike: where the stop
    # stands, and how far it trails (it showed only the stop price).
    assert "trailing stop" in orders and "stop 190.00" in orders, orders
    assert "trail 5%" in orders, orders
    [choice] = await h.emu.autocomplete(
        h.user("alice"), "cancel order", options={"order": ""}, focused="order", guild_id=h.guild_id
    )
    assert "sell 10 AAPL trailing stop (5% behind the best price)" in choice["name"], choice
    assert "trailing_stop" not in orders
    shared = (await h.reply("alice", "orders", share=True)).text()
    assert "trailing stop" in shared and "trailing_stop" not in shared, shared
    missing = await preview(
        h, "alice", symbol="AAPL", side="sell", quantity="1", order_type="trailing_stop"
    )
    assert "add trail_amount (a price distance) or trail_percent" in missing.text()


async def test_orders_names_a_stop_limits_stop_and_limit_prices(tradecord: Harness) -> None:
    """Was "212.00 / 210.00": the member could not tell the stop from the limit."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h,
        "alice",
        symbol="AAPL",
        quantity="3",
        order_type="stop_limit",
        stop_price="210",
        limit_price="212",
        time_in_force="gtc",
    )
    # The card names them in the same order (it said "limit 212.00, stop 210.00").
    assert "stop limit (stop $210.00, limit $212.00)" in card.text(), card.text()
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    for options in ({}, {"share": True, "show_amounts": True}):
        listing = (await h.reply("alice", "orders", **options)).text()
        lines = listing.splitlines()
        row = next(n for n, line in enumerate(lines) if "AAPL" in line)
        stop, limit = lines[row], lines[row + 1]
        assert stop.endswith("stop limit  stop 210.00   gtc  open"), listing
        # The limit goes on below the stop, in the same column, with the other cells blank.
        assert limit.strip() == "limit 212.00" and limit.index("limit") == stop.index("stop 2")
        assert " / " not in listing


async def buy(h: Harness, symbol: str, quantity: str, **options: object) -> None:
    card = await preview(h, "alice", symbol=symbol, quantity=quantity, **options)
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)


async def test_close_sells_the_whole_position_after_a_preview(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10")
    alice = h.user("alice")
    choices = await h.emu.autocomplete(
        alice, "close", options={"symbol": "aa"}, focused="symbol", guild_id=h.guild_id
    )
    assert choices == [{"name": "AAPL · long 10", "value": "AAPL"}]
    card = await h.reply("alice", "close", symbol="AAPL")
    assert card.ephemeral
    text = card.text()
    assert "**SELL 10 AAPL** · market" in text, text
    assert "This sell closes your whole long position of 10 AAPL." in text
    assert "open AAPL order" not in text  # nothing else is working on AAPL
    pin(h, "AAPL", "209.90", "210.10")
    done = await h.emu.click(alice, card, label="Confirm")
    assert (
        "Filled: sell 10 AAPL at $210.00, against the position's average of $200.00. "
        "P&L +$100.00 before fees."
    ) in (await done.message(timeout=10)).text()
    assert "No open positions" in (await h.reply("alice", "positions")).text()


async def test_close_covers_a_short_and_closes_part_when_asked(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10", side="sell")
    part = (await h.reply("alice", "close", symbol="aapl", quantity="4")).text()
    assert "**BUY 4 AAPL** · market" in part, part
    assert "This buy closes 4 of your short position of 10 AAPL." in part
    whole = (await h.reply("alice", "close", symbol="AAPL")).text()
    assert "This buy closes your whole short position of 10 AAPL." in whole, whole


async def test_close_refuses_what_it_cannot_close_and_says_what_to_do(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    none = (await h.reply("alice", "close", symbol="MSFT")).text()
    assert "You hold no MSFT on Tradecord Paper (paper), so there is nothing to close." in none
    assert "/positions" in none
    await buy(h, "AAPL", "10")
    more = (await h.reply("alice", "close", symbol="AAPL", quantity="12")).text()
    assert "You hold 10 AAPL long on Tradecord Paper (paper): /close closes at most that." in more
    assert "to go short as well, use /trade" in more
    assert "not a symbol" in (await h.reply("alice", "close", symbol="not a symbol")).text()
    for nothing in ("0", "-2"):  # said "To sell, use side:sell", which /close does not have
        zero = (await h.reply("alice", "close", symbol="AAPL", quantity=nothing)).text()
        assert zero == (
            "Quantity must be more than zero: how much of your 10 AAPL to close. Leave it out "
            "to close all of it."
        ), zero
    negative = await preview(h, "alice", symbol="AAPL", quantity="-5")
    assert negative.text() == "Quantity must be more than zero. To sell, use side:sell."
    assert await paper_orders(h) == 1  # only the buy: nothing was prepared or sent


async def test_close_warns_that_a_resting_exit_keeps_working(tradecord: Harness) -> None:
    """A stop-loss placed by hand, left working after the position is closed, sells short when
    it triggers. A bracket's exits are cut to what is left by Tradecord Paper itself: telling
    the member to cancel them would leave what is left unprotected."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10", take_profit="220", stop_loss="190")
    await buy(h, "AAPL", "5")
    await buy(
        h, "AAPL", "15", side="sell", order_type="stop", stop_price="180", time_in_force="gtc"
    )
    text = (await h.reply("alice", "close", symbol="AAPL")).text()
    assert "Its bracket's exits are cut to what is left of the AAPL position (cancelled once " in (
        text
    ), text
    assert "⚠️ 1 open AAPL order stays working: sell 15 AAPL stop at $180.00." in text, text
    assert "take-profit" not in text.split("stays working")[1], text
    assert "Once the position is closed, a fill would open a new one: cancel it" in text
    part = (await h.reply("alice", "close", symbol="AAPL", quantity="4")).text()
    assert "You will hold 11 AAPL after this: a fill of more than that would open a position " in (
        part
    ), part


async def test_a_closing_trade_warns_of_orders_still_working_on_the_position(
    tradecord: Harness,
) -> None:
    """/trade sell of the whole position said "closes your whole long position" and nothing of
    the stop-loss that would then sell short: the card names it, as /close's does."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10")
    await buy(
        h, "AAPL", "10", side="sell", order_type="stop", stop_price="180", time_in_force="gtc"
    )
    card = await preview(h, "alice", symbol="AAPL", side="sell", quantity="10")
    text = card.text()
    # The stop placed first closes the position first, as the broker counts it: this sell
    # would open a short, and takes buying power instead of freeing it.
    assert (
        "⚠️ Open sell orders already close 10 of your long position of 10 AAPL: this sell opens "
        "a short position of 10 if they fill first." in text
    ), text
    fields = {f["name"]: f["value"] for f in card.embeds[0]["fields"]}
    money = {k: Decimal(v.strip("$").replace(",", "")) for k, v in fields.items() if "power" in k}
    assert money["Buying power after"] < money["Buying power"], fields
    assert "⚠️ 1 open AAPL order stays working: sell 10 AAPL stop at $180.00." in text, text
    assert "Once the position is closed, a fill would open a new one" in text
    opening = (await preview(h, "alice", symbol="MSFT", quantity="1")).text()
    assert "stays working" not in opening, opening


async def test_a_flip_counts_the_sells_already_working_first(tradecord: Harness) -> None:
    """Long 100 with a sell limit for 100 resting: a sell of 150 was carded as closing 100 and
    shorting 50 (buying power up), while the broker counts the resting sell first and charges
    all 150 as a short; Confirm then refused what the card had passed."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "100")
    await buy(
        h, "AAPL", "100", side="sell", order_type="limit", limit_price="250", time_in_force="gtc"
    )
    card = await preview(h, "alice", symbol="AAPL", side="sell", quantity="150")
    text = card.text()
    assert (
        "⚠️ Open sell orders already close 100 of your 100 AAPL: this sell opens a short "
        "position of 150 if they fill first." in text
    ), text
    fields = {f["name"]: f["value"] for f in card.embeds[0]["fields"]}
    money = {k: Decimal(v.strip("$").replace(",", "")) for k, v in fields.items() if "power" in k}
    assert money["Buying power"] - money["Buying power after"] > 29_000, fields  # 150 short


async def test_a_close_confirmed_after_the_position_went_is_not_sent(tradecord: Harness) -> None:
    """Two /close cards for one position (or a stop-loss that filled meanwhile): the second
    Confirm would sell short. The position is read again at Confirm."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10")
    alice = h.user("alice")
    first = await h.reply("alice", "close", symbol="AAPL")
    second = await h.reply("alice", "close", symbol="AAPL", quantity="6")
    await (await h.emu.click(alice, first, label="Confirm")).message(timeout=10)
    sent = await paper_orders(h)
    result = (await (await h.emu.click(alice, second, label="Confirm")).message(timeout=10)).text()
    assert (
        "Not sent: sell 6 AAPL would no longer only close your position: you hold no AAPL now"
        in result
    ), result
    assert await paper_orders(h) == sent
    assert "No open positions" in (await h.reply("alice", "positions")).text()


async def test_a_second_close_beside_one_waiting_for_the_open_is_refused(
    settings: Settings, db: object
) -> None:
    """At a shut market a close rests until the open and the position is still held: a second
    close would pass the position check, and the two would sell it twice (a short) at the
    open. Refused at the preview and at Confirm; what is not yet being closed still closes."""
    clock = FakeClock()  # a weekday session: the buy fills
    async with running_tradecord(settings, paper_fill_hours="exchange") as h:
        h.core.trading.clock = h.core.connections.clock = clock
        alice = h.user("alice")
        pin(h, "AAPL", "199.90", "200.10")
        await buy(h, "AAPL", "10")
        clock.at = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)  # Saturday
        first = await h.reply("alice", "close", symbol="AAPL", quantity="6")
        late = await h.reply("alice", "close", symbol="AAPL")  # prepared before the first went
        sent = (await (await h.emu.click(alice, first, label="Confirm")).message(timeout=10)).text()
        assert "Filled" not in sent, sent  # it waits for Monday's open
        orders = await paper_orders(h)
        pressed = await h.emu.click(alice, late, label="Confirm")
        result = (await pressed.message(timeout=10)).text()
        assert (
            "Not sent: sell 10 AAPL would no longer only close your position: your earlier "
            "close of AAPL is still working at the broker and closes 6 of your 10 AAPL when "
            "filled (a market order placed while the market is shut waits for the open). "
            "/close AAPL quantity:4 closes the rest."
        ) in result, result
        again = (await h.reply("alice", "close", symbol="AAPL")).text()
        assert "Nothing was prepared: your earlier close of AAPL is still working" in again
        assert await paper_orders(h) == orders
        rest = await h.reply("alice", "close", symbol="AAPL", quantity="4")
        assert "This sell closes 4 of your long position of 10 AAPL." in rest.text()
        await (await h.emu.click(alice, rest, label="Confirm")).message(timeout=10)
        assert await paper_orders(h) == orders + 1
        none_left = (await h.reply("alice", "close", symbol="AAPL", quantity="1")).text()
        assert (
            "your earlier 2 closes of AAPL are still working at the broker and close all of "
            "your 10 AAPL when filled"
        ) in none_left, none_left
        assert "/orders lists them; cancel them with /cancel order" in none_left
        assert await paper_orders(h) == orders + 1


async def _closes_with(h: Harness, status: str, count: int) -> None:
    """Wait until ``count`` close intents are in ``status``."""
    for _ in range(500):
        async with h.core.db.session() as s:
            rows = await s.scalars(select(OrderIntent).where(OrderIntent.status == status))
            if sum(i.extra.get("close_only") is True for i in rows) >= count:
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {count} close intents {status}")


async def test_two_closes_confirmed_together_send_one(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two /close cards of one position, both confirmed while the broker has not yet answered
    the first: neither order is among the open orders or in the position yet, so each would
    pass the other's check and the two would sell it twice (a short). Exactly one is sent."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10")
    alice = h.user("alice")
    first = await h.reply("alice", "close", symbol="AAPL")
    second = await h.reply("alice", "close", symbol="AAPL")
    real = PaperBroker.create_order
    answer = asyncio.Event()  # the broker's answer to an order, held back until set

    async def slow(self: PaperBroker, *args: object, **kwargs: object) -> object:
        await answer.wait()
        return await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(PaperBroker, "create_order", slow)
    orders = await paper_orders(h)
    pressed = [await h.emu.click(alice, card, label="Confirm") for card in (first, second)]
    await _closes_with(h, IntentStatus.FAILED, 1)  # one is refused before the broker answers
    answer.set()
    results = [(await p.message(timeout=10)).text() for p in pressed]
    assert await paper_orders(h) == orders + 1
    refused = [r for r in results if "Not sent" in r]
    assert len(refused) == 1, results
    assert (
        "Not sent: sell 10 AAPL would no longer only close your position: your earlier close of "
        "AAPL is being sent to the broker right now and closes all of your 10 AAPL when filled."
    ) in refused[0], refused[0]
    assert "No open positions" in (await h.reply("alice", "positions")).text()
    # While a close is on its way, /close prepares nothing and says why.
    await buy(h, "AAPL", "10")
    answer.clear()
    card = await h.reply("alice", "close", symbol="AAPL", quantity="4")
    sending = await h.emu.click(alice, card, label="Confirm")
    await _closes_with(h, IntentStatus.SUBMITTED, 1)
    meanwhile = (await h.reply("alice", "close", symbol="AAPL")).text()
    assert (
        "Nothing was prepared: your earlier close of AAPL is being sent to the broker right now "
        "and closes 4 of your 10 AAPL when filled. Wait a moment for the broker's answer: "
        "/orders shows what is still working. /close AAPL quantity:6 closes the rest."
    ) in meanwhile, meanwhile
    answer.set()
    assert "Filled" in (await sending.message(timeout=10)).text()


async def test_flatten_cancels_the_orders_then_closes_every_position(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    pin(h, "MSFT", "399.90", "400.10")
    await buy(h, "AAPL", "10", take_profit="220", stop_loss="190")
    await buy(h, "MSFT", "3", side="sell")
    await buy(h, "MSFT", "1", order_type="limit", limit_price="350", time_in_force="gtc")
    ask = await h.reply("alice", "flatten")
    assert ask.ephemeral
    assert ask.text() == (
        "Flatten Tradecord Paper (paper)? This cancels 3 open orders, then closes 2 positions "
        "at the market: sell 10 AAPL, buy 3 MSFT."
    )
    alice = h.user("alice")
    pin(h, "MSFT", "409.90", "410.10")  # the short loses
    done = (await (await h.emu.click(alice, ask, label="Flatten")).message(timeout=10)).text()
    assert done.startswith("Flattened Tradecord Paper: cancelled 3 open orders.\n"), done
    assert "✅ Filled: sell 10 AAPL at $200.00, against the position's average of $200.00." in done
    assert (
        "✅ Filled: buy 3 MSFT at $410.00, against the position's average of $400.00. "
        "P&L -$30.00 before fees."
    ) in done
    assert "No open positions" in (await h.reply("alice", "positions")).text()
    assert "No open orders." in (await h.reply("alice", "orders")).text()
    nothing = (await h.reply("alice", "flatten")).text()
    assert nothing == "Tradecord Paper has no open paper positions or orders: nothing to flatten."


async def test_keep_everything_flattens_nothing(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10")
    ask = await h.reply("alice", "flatten")
    kept = await (await h.emu.click(h.user("alice"), ask, label="Keep everything")).message(
        timeout=10
    )
    assert kept.text() == "Nothing was cancelled or closed."
    assert "AAPL" in (await h.reply("alice", "positions")).text()
    ask = await h.reply("alice", "flatten")
    done = await (await h.emu.click(h.user("alice"), ask, label="Flatten")).message(timeout=10)
    assert done.text().startswith("Flattened Tradecord Paper: no open orders to cancel.\n• ✅"), (
        done.text()
    )


async def test_flatten_closes_no_position_while_a_cancel_is_not_carried_out(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exit still working after the close would sell again: then nothing is closed."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10", take_profit="220")
    ask = await h.reply("alice", "flatten")

    async def refuse_cancel(self: PaperBroker, *args: Any, **kwargs: Any) -> None:
        return None  # the broker accepts the request and has not acted on it yet

    monkeypatch.setattr(PaperBroker, "cancel_order", refuse_cancel)
    h.core.trading.cancel_wait = 0.2
    done = (
        await (await h.emu.click(h.user("alice"), ask, label="Flatten")).message(timeout=10)
    ).text()
    assert done.startswith("Not flattened: the broker had not carried out every cancel yet"), done
    assert "take-profit sell 10 AAPL limit at $220.00" in done
    assert "no position was closed" in done
    assert "long" in (await h.reply("alice", "positions")).text()


async def test_flatten_while_paused_still_takes_the_risk_off(tradecord: Harness) -> None:
    """A pause stops what adds risk; /flatten only takes it off, and a member who pauses in a
    hurry must still be able to get out (before: refused, positions left open)."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10", take_profit="220")
    ask = await h.reply("alice", "flatten")
    await h.reply("alice", "pause")
    done = (
        await (await h.emu.click(h.user("alice"), ask, label="Flatten")).message(timeout=10)
    ).text()
    assert "cancelled 1 open order" in done and "Filled: sell 10 AAPL" in done, done
    assert "No open positions" in (await h.reply("alice", "positions")).text()


async def test_a_pause_holds_back_an_order_that_adds_risk_but_not_a_close(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await buy(h, "AAPL", "10")
    await h.reply("alice", "pause")
    more = (await preview(h, "alice", symbol="AAPL", quantity="1")).text()
    assert "only your own orders that close a position go through" in more, more
    # A sell past the position would open a short: risk, held back.
    past = (await preview(h, "alice", symbol="AAPL", side="sell", quantity="12")).text()
    assert "Your trading is paused" in past, past
    card = await preview(h, "alice", symbol="AAPL", side="sell", quantity="10")
    out = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert "Filled: sell 10 AAPL" in (await out.message(timeout=10)).text()


# symbol, signed quantity, (bid, ask) at the fill, (bid, ask) now: long and short, sub-dollar,
# a fraction of a cent, fractional crypto, and enough rows for a second page.
HELD = [
    ("AAPL", "10", ("199.99", "200.00"), ("201.37", "201.40")),
    ("MSFT", "-7", ("410.10", "410.13"), ("405.00", "405.20")),
    ("BTC/USD", "0.123", ("95000.01", "95000.37"), ("94210.55", "94212.05")),
    ("NVDA", "1", ("0.50", "0.51"), ("0.70", "0.71")),
    ("SPY", "3", ("500.00", "500.01"), ("500.00", "500.01")),
    *(
        (sym, str(i + 1), ("100.00", "100.02"), (f"{99 + i}.50", f"{99 + i}.53"))
        for i, sym in enumerate(SYMBOLS[2:13])
    ),
]


async def test_positions_show_the_same_pages_figure_for_figure(tradecord: Harness) -> None:
    """Each page of /positions byte for byte as it was before its reads and its rendering
    were made faster (the expected pages are that code's output, with the footer's later
    "close with /close"): the same numbers, columns, pages and buttons."""
    from adapters.models import OrderRequest, Side, TimeInForce
    from adapters.symbols import asset_class_of

    h = tradecord
    target = await h.core.connections.resolve(h.user("alice"), None, "paper")
    for i, (sym, quantity, then, _) in enumerate(HELD):
        pin(h, sym, *then)
        side = Side.SELL if quantity.startswith("-") else Side.BUY
        req = OrderRequest(
            sym,
            side,
            abs(Decimal(quantity)),
            asset_class=asset_class_of(sym),
            time_in_force=TimeInForce.GTC,
        )
        out = await h.core.trading.place(target, req, source="test", idempotency_key=f"g{i}")
        assert out.ok, out.message
    for sym, _, _, now in HELD:
        pin(h, sym, *now)
    page = await h.reply("alice", "positions")
    shown = []
    for n in range(2):
        if n:
            page = await (await h.emu.click(h.user("alice"), page, label="Next ▶")).message()
        buttons = [
            (b.get("label"), b.get("style"), b.get("disabled")) for b in page.iter_components()
        ]
        shown.append((page.embeds, buttons))
    footer = "16 positions · close with /close · simulated prices"
    assert shown == [
        (
            [embed(PAGE_1, f"Page 1/2 · {footer}")],
            [(None, None, None), ("◀ Previous", 2, True), ("Next ▶", 2, False)],
        ),
        (
            [embed(PAGE_2, f"Page 2/2 · {footer}")],
            [(None, None, None), ("◀ Previous", 2, False), ("Next ▶", 2, True)],
        ),
    ]


def embed(description: str, footer: str) -> dict[str, Any]:
    return {
        "title": "Positions · Tradecord Paper",
        "description": description,
        "footer": {"text": footer},
        "color": discord.Colour.blurple().value,
        "flags": 0,
        "type": "rich",
    }


PAGE_1 = (
    "📝 PAPER · Tradecord Paper\n"
    "```\n"
    "Symbol  Side     Qty        Avg       Last       P&L    P&L %\n"
    "AAPL    long      10    199.995    201.385   +$13.90   +0.70%\n"
    "ABBV    long       1     100.01     99.515    -$0.50   -0.50%\n"
    "ABNB    long       2     100.01    100.515    +$1.01   +0.50%\n"
    "ABT     long       3     100.01    101.515    +$4.52   +1.51%\n"
    "ACGL    long       4     100.01    102.515   +$10.02   +2.50%\n"
    "ACN     long       5     100.01    103.515   +$17.52   +3.50%\n"
    "ADBE    long       6     100.01    104.515   +$27.03   +4.50%\n"
    "ADI     long       7     100.01    105.515   +$38.54   +5.51%\n"
    "ADM     long       8     100.01    106.515   +$52.04   +6.50%\n"
    "ADP     long       9     100.01    107.515   +$67.54   +7.50%\n"
    "ADSK    long      10     100.01    108.515   +$85.05   +8.50%\n"
    "AEP     long      11     100.01    109.515  +$104.56   +9.50%\n"
    "BTCUSD  long   0.123  95,000.19  94,211.30   -$97.03   -0.83%\n"
    "MSFT    short      7    410.115     405.10   +$35.10   +1.22%\n"
    "NVDA    long       1      0.505      0.705    +$0.20  +40.00%\n"  # was 0.505000
    "```"
)
PAGE_2 = (
    "📝 PAPER · Tradecord Paper\n"
    "```\n"
    "Symbol  Side  Qty      Avg     Last    P&L   P&L %\n"
    "SPY     long    3  500.005  500.005  $0.00  +0.00%\n"
    "```"
)


async def test_an_order_while_the_market_is_shut_says_it_waits_for_the_open(
    settings: Settings, db: object
) -> None:
    """An order placed on a Saturday works from Monday's open (a market order at whatever price
    then): the card says so where orders keep exchange hours (every real broker, and Tradecord
    Paper set to them), and not where they fill at any hour."""
    saturday = FakeClock(datetime(2026, 11, 28, 15, 0, tzinfo=UTC))
    monday_open = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)  # 09:30 in New York
    shut = f"🌙 The market is closed until <t:{int(monday_open.timestamp())}:f>: this market"
    async with running_tradecord(settings, paper_fill_hours="exchange") as h:
        h.core.trading.clock = h.core.connections.clock = saturday
        pin(h, "AAPL", "199.90", "200.10")
        assert shut in (await preview(h, "alice", symbol="AAPL", quantity="1")).text()
        limit = await preview(
            h,
            "alice",
            symbol="AAPL",
            quantity="1",
            order_type="limit",
            limit_price="190",
            time_in_force="gtc",
        )
        works = (
            f"closed until <t:{int(monday_open.timestamp())}:f>: this order works from the open."
        )
        assert works in limit.text()
        assert "extended_hours" not in limit.text()  # a GTC order cannot be extended
        day = await preview(
            h, "alice", symbol="AAPL", quantity="1", order_type="limit", limit_price="190"
        )
        assert works + " With extended_hours:true it may also fill in the pre-market" in (
            day.text()
        )
        extended = await preview(
            h,
            "alice",
            symbol="AAPL",
            quantity="1",
            order_type="limit",
            limit_price="190",
            extended_hours=True,
        )
        assert "as an extended-hours order this may fill before then" in extended.text()
        # Tradecord Paper refuses an IOC that cannot wait at the card, not after Confirm.
        ioc = await preview(
            h,
            "alice",
            symbol="AAPL",
            quantity="1",
            order_type="limit",
            limit_price="190",
            time_in_force="ioc",
        )
        assert "IOC orders cannot wait for the open: use a day or GTC order" in ioc.text()
        assert ioc.buttons() == []  # no card to confirm
        btc = await preview(h, "alice", symbol="BTCUSD", quantity="0.1")
        assert "market is closed" not in btc.text()  # crypto never closes
    async with running_tradecord(settings) as h:  # 24/7: it fills now
        h.core.trading.clock = h.core.connections.clock = saturday
        pin(h, "AAPL", "199.90", "200.10")
        assert (
            "market is closed"
            not in (await preview(h, "alice", symbol="AAPL", quantity="1")).text()
        )


@pytest.mark.parametrize("tif", ["ioc", "fok"])
def test_an_immediate_order_while_the_market_is_shut_is_said_not_to_wait(tif: str) -> None:
    """At a real broker (Tradecord Paper refuses it at the card) an IOC or FOK order placed
    while the market is shut cannot wait for the open: the card does not say it will."""
    opens = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)
    request = OrderRequest(
        "AAPL", Side.BUY, Decimal(1), OrderType.LIMIT, TimeInForce(tif), Decimal(190)
    )
    p: Any = SimpleNamespace(market_opens_at=opens, request=request, could_extend=False)
    assert closed_line(p) == (
        f"\n🌙 The market is closed until <t:{int(opens.timestamp())}:f>: an {tif.upper()} "
        "order cannot wait for the open, so the broker may refuse it or cancel it unfilled. A "
        "day or GTC order waits for the open."
    )


def test_an_extended_order_limited_to_one_session_says_when_it_expires() -> None:
    ends = datetime(2026, 12, 1, 14, 24, tzinfo=UTC)  # 09:24 in New York
    request = OrderRequest("AAPL", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal(190))
    request.extended_hours = True
    p: Any = SimpleNamespace(
        request=request, broker_name="Tradier", extended_reach=ExtendedReach("pre-market", ends)
    )
    assert extended_line(p) == (
        "\n🌙 Extended hours: at Tradier an order sent now works in the pre-market session "
        f"only. Unfilled, it expires at <t:{int(ends.timestamp())}:t> and does not carry into "
        "the regular session."
    )


async def test_an_auction_order_says_it_trades_only_in_its_auction(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="1", time_in_force="opg")
    assert "**BUY 1 AAPL** · market · OPG" in card.text(), card.text()
    assert (
        "🔔 Opening auction: it trades only in the next opening auction, at the auction's "
        "price (which may differ from this estimate), or is cancelled unfilled."
    ) in card.text()
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    result = (await done.message(timeout=10)).text()
    assert "Accepted: buy 1 AAPL (market, waiting for the opening auction)." in result, result
    orders = (await h.reply("alice", "orders")).text()
    assert "opg" in orders, orders
    btc = await preview(h, "alice", symbol="BTCUSD", quantity="0.1", time_in_force="cls")
    assert "take time in force" in btc.text() and btc.buttons() == []


async def test_an_extended_hours_limit_is_marked_on_the_card(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h,
        "alice",
        symbol="AAPL",
        quantity="1",
        order_type="limit",
        limit_price="150",
        extended_hours=True,
    )
    assert "🌙 Extended hours: may also fill in the pre-market and after-hours" in card.text()
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    assert "Accepted: buy 1 AAPL" in (await done.message(timeout=10)).text()
    _, _, [order] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert order.extended_hours
    listed = (await h.reply("alice", "orders")).text()
    assert "limit  150.00  day+  open" in listed, listed  # day plus: before and after hours too
    market = await preview(h, "alice", symbol="AAPL", quantity="1", extended_hours=True)
    assert "Extended-hours orders must be limit orders" in market.text()
    assert market.buttons() == []


async def test_a_fill_or_kill_that_cannot_fill_says_why_and_is_no_success(
    tradecord: Harness,
) -> None:
    """It said "✅ Cancelled: buy 10 AAPL." and nothing more, as if the member had cancelled."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    terms = {"order_type": "limit", "limit_price": "150", "time_in_force": "fok"}
    card = await preview(h, "alice", symbol="AAPL", quantity="10", **terms)
    done = await h.emu.click(h.user("alice"), card, label="Confirm")
    result = await done.message(timeout=10)
    assert result.embeds[0]["title"].startswith("❌"), result.embeds[0]
    assert (
        "Cancelled: buy 10 AAPL. A fill-or-kill order fills in full at once or not at all, and "
        "it could not fill in full at its price just then." in result.text()
    ), result.text()


async def test_a_paper_market_card_says_what_the_order_fills_at(tradecord: Harness) -> None:
    """The card estimated at the ask and the fill came at the midpoint, the paper default:
    it looked like a mistake."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    assert (
        "ℹ️ Your paper market orders fill at: bid/ask midpoint (futures at whole ticks) (/paper "
        "settings); the estimate is at the ask." in card.text()
    ), card.text()
    await h.reply("alice", "paper settings", price_type="bid_ask")
    card = await preview(h, "alice", symbol="AAPL", quantity="1")
    assert "fill at" not in card.text(), card.text()
    limit = await preview(
        h, "alice", symbol="AAPL", quantity="1", order_type="limit", limit_price="150"
    )
    assert "fill at" not in limit.text()


async def test_a_stop_limit_with_its_limit_past_its_stop_is_warned(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    terms = {"order_type": "stop_limit", "stop_price": "210", "time_in_force": "gtc"}
    odd = await preview(h, "alice", symbol="AAPL", quantity="1", limit_price="205", **terms)
    assert (
        "⚠️ Its limit ($205.00) is below its stop ($210.00): once the stop triggers at $210.00, "
        "it buys only if the price comes back to $205.00." in odd.text()
    ), odd.text()
    usual = await preview(h, "alice", symbol="AAPL", quantity="1", limit_price="211", **terms)
    assert "Its limit" not in usual.text() and usual.buttons()
    # Priced at the higher of its stop and limit, as Tradecord Paper holds buying power for it.
    price = {f["name"]: f["value"] for f in odd.embeds[0]["fields"]}["Estimated price"]
    assert price == "$210.00", price


async def test_a_sell_trailing_stop_trailing_by_more_than_the_price_is_refused(
    tradecord: Harness,
) -> None:
    h = tradecord
    pin(h, "F", "9.99", "10.01")
    await buy(h, "F", "10")
    card = await preview(
        h,
        "alice",
        symbol="F",
        side="sell",
        quantity="10",
        order_type="trailing_stop",
        trail_amount="12",
    )
    assert card.text().startswith(
        "A sell trailing stop $12.00 behind the best price of F (about $"
    ), card.text()
    assert "would stand at or below zero and never trigger" in card.text()
    assert card.buttons() == []
