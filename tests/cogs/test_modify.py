"""/modify end to end through the local Discord, on Tradecord Paper: a card, then the change."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from adapters.errors import BrokerUnavailable
from adapters.models import (
    Order,
    OrderChange,
    OrderStatus,
    OrderType,
    Quote,
    Side,
    TimeInForce,
)
from adapters.paper.broker import PaperBroker
from bot.models import AuditEvent, IntentStatus, OrderIntent
from bot.services.trading import Change
from cogs.trading import changed_text, fills_at_once
from emulators.discord import Message
from tests.cogs.test_trading import pin, preview
from tests.discord_harness import Harness

D = Decimal


async def confirmed(h: Harness, user: str, card: Message) -> str:
    done = await h.emu.click(h.user(user), card, label="Confirm")
    return (await done.message(timeout=10)).text()


async def resting_buy(h: Harness, user: str = "alice", **options: str) -> str:
    """A limit buy of 10 AAPL at $150, working; its broker order id."""
    terms = {"order_type": "limit", "limit_price": "150", "time_in_force": "gtc"} | options
    card = await preview(h, user, symbol="AAPL", quantity="10", **terms)
    assert "Broker order id" in await confirmed(h, user, card)
    _, _, [order] = await h.core.trading.open_orders(h.user(user), None, None)
    return order.id


async def intent_of(h: Harness, order_id: str) -> OrderIntent:
    async with h.core.db.session() as s:
        intent = await s.scalar(select(OrderIntent).where(OrderIntent.broker_order_id == order_id))
    assert intent is not None
    return intent


async def test_a_limit_moved_is_previewed_then_changed(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    card = await h.reply("alice", "modify", order=oid[-8:], limit_price="160")
    text = card.text()
    assert card.ephemeral and f"PAPER change order {oid[-8:]}" in text, text
    assert "buy 10 AAPL limit at $150.00" in text and "Limit price: $150.00 → **$160.00**" in text
    assert "fill at once" not in text
    assert [b.label for b in card.buttons()] == ["Confirm", "Cancel"]
    done = await confirmed(h, "alice", card)
    assert done == f"✅ Order {oid[-8:]} on Tradecord Paper changed: buy 10 AAPL limit at $160.00."
    intent = await intent_of(h, oid)
    assert (intent.limit_price, intent.quantity, intent.status) == (D(160), D(10), "accepted")
    async with h.core.db.session() as s:
        event = await s.scalar(select(AuditEvent).where(AuditEvent.kind == "order.changed"))
    assert event is not None and event.intent_id == intent.id
    assert event.detail["changed"] == {"limit_price": ["150", "160"]}


async def test_a_limit_moved_through_the_market_is_warned_and_fills(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    card = await h.reply("alice", "modify", order=oid, limit_price="201", quantity="12")
    text = card.text()
    assert "meets the ask ($200.10): it would fill at once" in text, text
    assert "Quantity: 10 → **12**" in text
    done = await confirmed(h, "alice", card)
    assert "changed: buy 12 AAPL limit at $201.00" in done and "It filled at once" in done, done
    intent = await intent_of(h, oid)
    assert (intent.status, intent.filled_quantity) == (IntentStatus.FILLED, D(12))
    assert "AAPL" in (await h.reply("alice", "positions")).text()


async def test_cancel_on_the_card_changes_nothing(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    card = await h.reply("alice", "modify", order=oid, limit_price="160")
    done = await h.emu.click(h.user("alice"), card, label="Cancel")
    assert (await done.message(timeout=10)).text() == f"Order {oid[-8:]} was not changed."
    _, _, [order] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert order.limit_price == D(150)


async def test_bad_changes_say_what_to_do(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    nothing = await h.reply("alice", "modify", order=oid)
    assert "Give what to change: a new quantity, limit_price or stop_price." in nothing.text()
    no_stop = await h.reply("alice", "modify", order=oid, stop_price="140")
    assert f"Order {oid[-8:]} is a limit order: it has no stop price." in no_stop.text()
    same = await h.reply("alice", "modify", order=oid, limit_price="150.00")
    assert "already has that: there is nothing to change" in same.text()
    sub_penny = await h.reply("alice", "modify", order=oid, limit_price="150.001")
    assert "150.001" in sub_penny.text() and sub_penny.buttons() == []
    word = await h.reply("alice", "modify", order=oid, quantity="ten")
    assert "Quantity must be a number" in word.text()
    elsewhere = await h.reply("bob", "modify", order=oid, limit_price="160")
    assert "is not open on" in elsewhere.text()  # Bob's account has no such order


async def test_the_kill_switch_holds_a_change_back_at_confirm(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    card = await h.reply("alice", "modify", order=oid, limit_price="160")
    await h.reply(h.emu.owner.id, "killswitch", state="on")
    done = await confirmed(h, "alice", card)
    assert "(kill switch); nothing was sent. Cancelling open orders still works." in done, done
    _, _, [order] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert order.limit_price == D(150)
    refused = await h.reply("alice", "modify", order=oid, limit_price="160")
    assert "kill switch" in refused.text() and refused.buttons() == []


async def test_a_brackets_stop_loss_moves_up(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h, "alice", symbol="AAPL", quantity="1", take_profit="220", stop_loss="190"
    )
    assert "Filled" in await confirmed(h, "alice", card)
    _, _, orders = await h.core.trading.open_orders(h.user("alice"), None, None)
    [stop] = [o for o in orders if o.stop_price is not None]
    card = await h.reply("alice", "modify", order=stop.id, stop_price="195")
    assert "Stop price: $190.00 → **$195.00**" in card.text()
    done = await confirmed(h, "alice", card)
    assert "changed: the stop-loss sell 1 AAPL stop at $195.00." in done, done
    # Alpaca takes a leg's quantity; Tradecord Paper does not, and says so before a card.
    refused = await h.reply("alice", "modify", order=stop.id, quantity="2")
    assert "change its price, not its quantity" in refused.text() and refused.buttons() == []


async def test_a_quantity_over_my_limit_is_not_allowed(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    await h.reply("alice", "limits set", max_order_quantity="11")
    over = await h.reply("alice", "modify", order=oid, quantity="12")
    assert over.text().startswith("Not allowed: buy 12 AAPL is over your"), over.text()
    assert over.buttons() == []
    card = await h.reply("alice", "modify", order=oid, quantity="11")
    assert "changed: buy 11 AAPL limit at $150.00." in await confirmed(h, "alice", card)


async def test_a_lost_answer_is_read_again_not_resent(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    made = PaperBroker._replace_order
    calls = []

    async def lost(self: PaperBroker, *args: Any) -> Any:
        calls.append(args)
        await made(self, *args)
        raise BrokerUnavailable(maybe_sent=True)

    monkeypatch.setattr(PaperBroker, "_replace_order", lost)
    card = await h.reply("alice", "modify", order=oid, limit_price="160")
    assert "changed: buy 10 AAPL limit at $160.00." in await confirmed(h, "alice", card)
    assert len(calls) == 1

    async def dropped(self: PaperBroker, *args: Any) -> Any:
        calls.append(args)
        raise BrokerUnavailable(maybe_sent=True)  # it never reached the broker

    monkeypatch.setattr(PaperBroker, "_replace_order", dropped)
    card = await h.reply("alice", "modify", order=oid, limit_price="170")
    done = await confirmed(h, "alice", card)
    assert "could not tell whether it was made. It was not sent again" in done, done
    assert len(calls) == 2
    async with h.core.db.session() as s:
        unknown = await s.scalar(
            select(AuditEvent).where(AuditEvent.kind == "order.change_unknown")
        )
    assert unknown is not None and unknown.detail["asked"] == {"limit_price": "170"}
    _, _, [order] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert order.limit_price == D(160)


def _order(**kw: Any) -> Order:
    base: dict[str, Any] = dict(
        id="b0a1c2d3-0000-4000-8000-00000000a1b2",
        account_id="PA1",
        symbol="F",
        side=Side.BUY,
        quantity=D(10),
        order_type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        status=OrderStatus.OPEN,
        limit_price=D(9),
    )
    return Order(**(base | kw))


def test_a_replacement_order_is_named_with_what_had_filled() -> None:
    before = _order(filled_quantity=D(4), status=OrderStatus.PARTIALLY_FILLED)
    after = _order(id="c9d8e7f6-0000-4000-8000-00000000c3d4", quantity=D(8), limit_price=D("9.5"))
    target: Any = type("T", (), {"connection": type("C", (), {"name": "Alpaca"})()})()
    change = Change(target, "Alpaca", before, OrderChange(D(12), D("9.5")), after=after)
    assert changed_text(change) == (
        "✅ Order 0000a1b2 on Alpaca changed: buy 8 F limit at $9.50. The broker replaced it "
        "with order 0000c3d4, which /orders now shows: it is for the 8 left, 4 having filled."
    )


def test_a_stop_moved_past_the_market_is_said_to_trigger() -> None:
    quote = Quote("F", D("9.90"), D("10.00"), D("9.95"), datetime.now(UTC))
    sell_stop = _order(side=Side.SELL, order_type=OrderType.STOP, limit_price=None, stop_price=D(9))
    warned = fills_at_once(sell_stop, OrderChange(stop_price=D("9.95")), quote)
    assert warned == "A sell stop at $9.95 is past the bid ($9.90): it triggers at once."
    assert fills_at_once(sell_stop, OrderChange(stop_price=D("9.80")), quote) is None
    assert fills_at_once(_order(), OrderChange(limit_price=D("9.99")), quote) is None
    assert fills_at_once(_order(), OrderChange(limit_price=D(10)), None) is None


async def test_an_order_that_filled_after_the_card_is_not_changed(tradecord: Harness) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    card = await h.reply("alice", "modify", order=oid, limit_price="140")
    await h.reply(h.emu.owner.id, "killswitch", state="on")  # what ended is said first
    pin(h, "AAPL", "149.90", "149.95")
    target = await h.core.connections.resolve(h.user("alice"), None, "paper")
    paper = await h.core.connections.adapter_for(target.connection)
    await paper.sweep(target.ref)  # the limit fills at the new price
    done = await confirmed(h, "alice", card)
    assert f"Order {oid[-8:]} has ended (filled): there is nothing left to change." in done, done


async def test_a_change_that_raises_an_order_counts_against_my_daily_notional(
    tradecord: Harness,
) -> None:
    """The order was counted at its old value when placed; a bigger order is counted again,
    at its new value, so /modify is no way around the day's limit."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)  # 10 at $150: $1,500 of the day's allowance
    await h.reply("alice", "limits set", max_daily_notional="2000")
    over = await h.reply("alice", "modify", order=oid, quantity="14")
    assert over.text() == (
        "Not allowed: buy 14 AAPL is about $2,100.00, $600.00 more than it counted for, and "
        "$1,500.00 of paper orders was already sent today (UTC), this order included: over "
        "your max notional per day: $2,000.00 ($500.00 left today). See /limits show."
    )
    assert over.buttons() == []
    card = await h.reply("alice", "modify", order=oid, quantity="12")
    assert "changed: buy 12 AAPL limit at $150.00." in await confirmed(h, "alice", card)
    assert (await intent_of(h, oid)).notional == D(1800)
    # Lowering the price asks for no more allowance, whatever the day's total.
    card = await h.reply("alice", "modify", order=oid, limit_price="149")
    await h.reply("alice", "limits set", max_daily_notional="1000")
    assert "changed: buy 12 AAPL limit at $149.00." in await confirmed(h, "alice", card)
    # Allowed at the card, refused at Confirm: the limit was lowered meanwhile.
    await h.reply("alice", "limits set", max_daily_notional="2000")
    card = await h.reply("alice", "modify", order=oid, quantity="13")
    await h.reply("alice", "limits set", max_daily_notional="1900")
    done = await confirmed(h, "alice", card)
    assert done.startswith("Not changed: buy 13 AAPL is about $1,937.00"), done
    _, _, [order] = await h.core.trading.open_orders(h.user("alice"), None, None)
    assert order.quantity == D(12)
    # The new value is what the day's later orders are counted against.
    refused = await preview(
        h, "alice", symbol="AAPL", quantity="1", order_type="limit", limit_price="150"
    )
    assert "already sent today" in refused.text(), refused.text()


async def test_a_closing_sell_raised_into_a_short_is_no_way_around_the_daily_limit(
    tradecord: Harness,
) -> None:
    """Before: a closing sell (counted against no limit, as it takes risk off) raised from 10
    to 60 with /modify went through, a $12,500 short that a new /trade was refused."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    await confirmed(h, "alice", await preview(h, "alice", symbol="AAPL", quantity="10"))
    sell = await preview(
        h,
        "alice",
        symbol="AAPL",
        side="sell",
        quantity="10",
        order_type="limit",
        limit_price="250",
        time_in_force="gtc",
    )
    await confirmed(h, "alice", sell)
    _, _, [order] = await h.core.trading.open_orders(h.user("alice"), None, None)
    await h.reply("alice", "limits set", max_daily_notional="5000")
    card = await h.reply("alice", "modify", order=order.id, quantity="60")
    assert card.text().startswith("Not allowed: this order was placed to close your position")
    assert card.buttons() == []
    # Without a daily limit the card says what the raise does, as /trade's card would.
    await h.reply("alice", "limits set", max_daily_notional="0")
    card = await h.reply("alice", "modify", order=order.id, quantity="60")
    assert "⚠️ You hold 10 AAPL: once the order fills you are short 50." in card.text()
    await h.reply("alice", "limits set", max_daily_notional="5000")
    # Keeping it a close is still fine: no limit holds back taking risk off.
    card = await h.reply("alice", "modify", order=order.id, limit_price="240")
    assert "changed: sell 10 AAPL limit at $240.00." in await confirmed(h, "alice", card)


async def test_a_raise_the_account_cannot_pay_for_is_refused_before_its_card(
    tradecord: Harness,
) -> None:
    """Before: a card to confirm raising 10 to 100,000 shares ($15,000,000), refused only
    after Confirm; and 1e13 shares went to the broker to refuse."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)  # 10 at $150
    card = await h.reply("alice", "modify", order=oid, quantity="100000")
    assert card.text().startswith("Not allowed: the change holds back about $14,998,500.00 more")
    assert card.buttons() == []
    huge = await h.reply("alice", "modify", order=oid, quantity="1e13")
    assert "Quantity is too large" in huge.text(), huge.text()
    card = await h.reply("alice", "modify", order=oid, quantity="20")  # affordable: a card
    assert [b.label for b in card.buttons()] == ["Confirm", "Cancel"], card.text()


async def test_a_raise_the_broker_refuses_gives_the_allowance_back(
    tradecord: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    oid = await resting_buy(h)
    await h.reply("alice", "limits set", max_daily_notional="2000")

    async def refused(self: PaperBroker, *args: Any) -> Any:
        raise BrokerUnavailable(maybe_sent=False)

    monkeypatch.setattr(PaperBroker, "_replace_order", refused)
    card = await h.reply("alice", "modify", order=oid, quantity="13")
    await confirmed(h, "alice", card)
    assert (await intent_of(h, oid)).notional == D(1500)


async def test_a_brackets_stop_loss_moves_under_a_per_order_limit(tradecord: Harness) -> None:
    """A bracket's exits are not orders of Tradecord's own: they were checked as if they
    opened a position, and a member under a limit smaller than the position could not move
    the stop-loss protecting it."""
    h = tradecord
    pin(h, "AAPL", "199.90", "200.10")
    card = await preview(
        h, "alice", symbol="AAPL", quantity="10", take_profit="220", stop_loss="190"
    )
    assert "Filled" in await confirmed(h, "alice", card)
    await h.reply("alice", "limits set", max_order_quantity="5")
    _, _, orders = await h.core.trading.open_orders(h.user("alice"), None, None)
    [stop] = [o for o in orders if o.stop_price is not None]
    moved = (await h.reply("alice", "modify", order=stop.id, stop_price="195")).text()
    assert "over your max quantity per order" not in moved, moved
    assert "$190.00 → **$195.00**" in moved, moved
