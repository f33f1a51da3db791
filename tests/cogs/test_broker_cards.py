"""/trade and /close cards at the emulated brokers, in live mode: what each broker's own rules
(margin, fractions, decimals) make of the order before the member confirms it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from bot.db import Database
from bot.settings import Settings
from tests.cogs.test_accounts import linked, tradier_bracket
from tests.discord_harness import Harness, running_tradecord
from tests.support import in_session, trading_contract


@pytest.fixture
async def h(settings: Settings, db: Database) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


async def choose(h: Harness, name: str, kind: str | None) -> None:
    """Alice's connection ``name`` trades live in its ``kind`` account (any, when None)."""
    uid = h.user("alice")
    conn = next(c for c in await h.core.connections.list_for(uid) if c.name == name)
    _, accounts = await h.core.connections.broker_accounts(uid, conn.id)
    account = next(
        a
        for a in accounts
        if a.environment.value == "live" and (kind is None or a.type.value == kind)
    )
    await h.core.connections.choose_account(uid, conn.id, "live", account.id)


async def live_trade(h: Harness, **options: str) -> str:
    options.setdefault("side", "buy")
    return (await h.reply("alice", "trade", mode="live", **options)).text()


async def test_a_future_at_tradestation_needs_its_margin_not_its_notional(h: Harness) -> None:
    """Before: "Not enough buying power: this order needs about $295,012.50" for one ES
    contract in a futures account with $100,000: futures can hardly be traded there."""
    await h.core.members.set_plan(h.user("alice"), "pro", h.core.settings.plans, by=0)
    await linked(h, "alice", "tradestation")
    await choose(h, "TradeStation", "futures")
    h.core.trading.clock = in_session()  # TradeStation takes market orders in hours only
    for symbol in ("/ES", trading_contract()):
        text = await live_trade(h, symbol=symbol, quantity="1")
        assert "Not enough buying power" not in text, text
        assert "Confirm" in text or "**BUY 1" in text, text


async def test_amount_of_a_stock_alpaca_will_not_split_sizes_whole_shares(h: Harness) -> None:
    """Before: "BUY 2.49875062 NOFR" on the card, refused by Alpaca at Confirm."""
    alpaca = h.sandbox.emulators["alpaca"]
    alpaca.add_asset("NOFR", price=Decimal(20), fractionable=False)
    alpaca.set_quote("NOFR", Decimal("19.99"), Decimal("20.01"))
    await linked(h, "alice", "alpaca")
    await choose(h, "Alpaca", None)
    text = await live_trade(h, symbol="NOFR", amount="50")
    assert "**BUY 2 NOFR**" in text, text


async def test_an_alpaca_crypto_position_to_nine_decimals_can_be_closed(h: Harness) -> None:
    """Before: "Quantity can have at most 8 decimals for BTC/USD." about a quantity the member
    never typed: Alpaca holds coins to 9 decimals (its fees are taken in the coin)."""
    alpaca = h.sandbox.emulators["alpaca"]
    await linked(h, "alice", "alpaca")
    await choose(h, "Alpaca", None)
    alpaca.set_position(
        alpaca.account("demo", "live"), "BTC/USD", Decimal("0.001049999"), Decimal(95000)
    )
    card = await h.reply("alice", "close", symbol="BTCUSD", mode="live")
    assert "decimals" not in card.text(), card.text()
    assert card.buttons(), card.text()


async def test_history_names_a_brackets_exits_as_orders_does(h: Harness) -> None:
    """At TradeStation /orders showed a bracket's exits as "TP limit" and "SL stop"; once
    /flatten had cancelled them, /history listed the same orders as a plain "limit" and "stop":
    nothing said which was the take-profit of which entry."""
    alice = h.user("alice")
    await linked(h, "alice", "tradestation")
    [conn] = [c for c in await h.core.connections.list_for(alice) if not c.builtin]
    _, accounts = await h.core.connections.broker_accounts(alice, conn.id)
    margin = next(
        a for a in accounts if a.type.value == "margin" and a.environment.value == "paper"
    )
    await h.core.connections.choose_account(alice, conn.id, "paper", margin.id)
    card = await h.reply(
        "alice",
        "trade",
        symbol="MSFT",
        side="buy",
        quantity="10",
        order_type="limit",
        limit_price="100",
        take_profit="900",
        stop_loss="50",
        connection="TradeStation",
        mode="paper",
    )
    await (await h.emu.click(alice, card, label="Confirm")).message(timeout=10)
    orders = (await h.reply("alice", "orders", connection="TradeStation", mode="paper")).text()
    assert "TP limit" in orders and "SL stop" in orders, orders
    asked = await h.reply("alice", "flatten", connection="TradeStation", mode="paper")
    await (await h.emu.click(alice, asked, label="Flatten")).message(timeout=10)
    history = (await h.reply("alice", "history", connection="TradeStation", mode="paper")).text()
    assert "TP limit" in history and "SL stop" in history, history


async def ts_futures_live(h: Harness) -> None:
    """alice's TradeStation connection trades live in its futures account, in hours (it
    takes market orders only while the market is open)."""
    h.core.trading.clock = in_session()
    alice = h.user("alice")
    await linked(h, "alice", "tradestation")
    conn = next(c for c in await h.core.connections.list_for(alice) if c.name == "TradeStation")
    _, accounts = await h.core.connections.broker_accounts(alice, conn.id)
    account = next(
        a for a in accounts if a.environment.value == "live" and a.type.value == "futures"
    )
    await h.core.connections.choose_account(alice, conn.id, "live", account.id)


async def test_a_future_bought_as_slash_mes_is_closed_as_slash_mes(h: Harness) -> None:
    """TradeStation writes continuous futures @MES: bought as /MES, the position was "no /MES"
    to /close, and selling part of it was announced as opening a short (and charged margin)."""
    await ts_futures_live(h)
    live = {"mode": "live", "connection": "TradeStation"}
    card = await h.reply("alice", "trade", symbol="/MES", side="buy", quantity="3", **live)
    done = await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    assert "Filled: buy 3 @MES" in done.text(), done.text()
    close = await h.reply("alice", "close", symbol="/MES", quantity="1", **live)
    assert "closes 1 of your long position of 3" in close.text(), close.text()
    # It frees the margin a buy would hold back: "needs" was the opening margin.
    assert "Buying power needed" not in close.text(), close.text()
    sell = await h.reply(
        "alice",
        "trade",
        symbol="/MES",
        side="sell",
        quantity="1",
        order_type="trailing_stop",
        trail_amount="10",
        **live,
    )
    assert "opens a short" not in sell.text() and "You hold no" not in sell.text(), sell.text()
    positions = (await h.reply("alice", "positions", **live)).text()
    assert "@MES" in positions and "/MES" not in positions, positions


async def test_balances_of_a_futures_account_show_the_margin_in_use(h: Harness) -> None:
    """Market value is the contracts' notional ($590,000 for 2 ES); the margin held, which
    TradeStation reports, showed nowhere: how near a margin call the account is."""
    await ts_futures_live(h)
    live = {"mode": "live", "connection": "TradeStation"}
    card = await h.reply("alice", "trade", symbol="/ES", side="buy", quantity="2", **live)
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    text = (await h.reply("alice", "balances", **live)).text()
    assert re.search(
        r"Margin in use:\s+\$[\d,]+\.\d\d initial, \$[\d,]+\.\d\d maintenance", text
    ), text


async def test_modify_of_a_tradier_bracket_exit_is_refused_before_the_card(h: Harness) -> None:
    """/modify of a Tradier bracket's stop-loss showed a LIVE change card with Confirm; only
    Confirm said Tradier cannot change a bracket's orders, which was known before the card."""
    working = await tradier_bracket(h)
    stop = next(o for o in working if o.parent_id and o.stop_price is not None)
    change = await h.reply(
        "alice", "modify", order=stop.id, stop_price="9.75", mode="live", connection="Tradier"
    )
    assert not change.buttons(), change.text()
    assert "cannot change an order of a take-profit/stop-loss bracket" in change.text()


async def test_a_bracket_of_one_exit_does_not_say_one_cancels_the_other(h: Harness) -> None:
    await linked(h, "alice", "alpaca")
    await choose(h, "Alpaca", None)
    card = await h.reply(
        "alice",
        "trade",
        symbol="AAPL",
        side="buy",
        risk="100",
        stop_loss="185",
        mode="live",
        connection="Alpaca",
    )
    assert "Bracket: stop-loss $185.00, placed once it fills" in card.text(), card.text()
    assert "one cancels the other" not in card.text(), card.text()


async def test_a_quote_names_a_coin_as_tradecord_paper_trades_it(h: Harness) -> None:
    """With Alpaca as Tradecord Paper's price source, /quote BTCUSD was titled "BTC/USD ·
    Tradecord Paper" (Alpaca's spelling); the card, /positions and /history say BTCUSD."""
    await linked(h, "alice", "alpaca")
    await choose(h, "Alpaca", None)
    await h.reply("alice", "paper settings", quote_source="Alpaca")
    quote = (await h.reply("alice", "quote", symbol="BTC-USD")).text()
    assert quote.startswith("BTCUSD · Tradecord Paper"), quote


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"symbol": "BTCUSD", "amount": "50"}, "Alpaca does not sell crypto short"),
        ({"symbol": "AAPL", "quantity": "1.5"}, "Alpaca does not sell a fraction of a share short"),
    ],
)
async def test_a_short_alpaca_never_takes_is_refused_before_the_card(
    h: Harness, options: dict[str, str], said: str
) -> None:
    """With nothing held, the card said "this sell opens a short position" above Confirm, and
    Confirm was rejected (for BTC, as "held by other open orders", which there were none of)."""
    await linked(h, "alice", "alpaca")
    await choose(h, "Alpaca", None)
    card = await h.reply("alice", "trade", side="sell", mode="live", connection="Alpaca", **options)
    assert not card.buttons(), card.text()
    assert said in card.text() and "you hold none" in card.text(), card.text()


async def alpaca_bracket(h: Harness) -> None:
    """alice trades live at Alpaca and holds 10 AAPL bought with a take-profit and a stop-loss,
    whose exits hold all 10 shares there."""
    await linked(h, "alice", "alpaca")
    await choose(h, "Alpaca", None)
    card = await h.reply(
        "alice",
        "trade",
        symbol="AAPL",
        side="buy",
        quantity="10",
        take_profit="250",
        stop_loss="150",
        mode="live",
        connection="Alpaca",
    )
    await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)


async def test_closing_part_of_a_bracketed_alpaca_position_says_its_exits_hold_it(
    h: Harness,
) -> None:
    """10 AAPL bought with a take-profit and a stop-loss at Alpaca: /close quantity:4 showed a
    card, and Confirm came back "The broker rejected the order: ... 0 AAPL can be sold now":
    Alpaca sells only the shares its open orders leave free, and the exits hold all 10."""
    await alpaca_bracket(h)
    live = {"mode": "live", "connection": "Alpaca"}
    close = await h.reply("alice", "close", symbol="AAPL", quantity="4", **live)
    assert not close.buttons(), close.text()
    assert "your open AAPL orders hold 10 of your 10" in close.text(), close.text()
    assert "sells only what they leave free: 0" in close.text(), close.text()


async def test_a_trade_selling_shares_a_brackets_exits_hold_is_refused_before_the_card(
    h: Harness,
) -> None:
    """As /close: /trade sell 4 of 10 AAPL whose bracket's exits hold all 10 at Alpaca showed a
    card whose Confirm Alpaca refused ("0 AAPL can be sold now")."""
    await alpaca_bracket(h)
    live = {"mode": "live", "connection": "Alpaca"}
    sell = await h.reply("alice", "trade", symbol="AAPL", side="sell", quantity="4", **live)
    assert not sell.buttons(), sell.text()
    assert "sells only what they leave free: 0" in sell.text(), sell.text()
