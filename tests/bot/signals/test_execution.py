"""Executing signals for subscriptions on Tradecord Paper: TradersPost's order behaviour,
sizing, sides, max strategy positions with crypto dust, approval, alerts, and recovery after a
process dies."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.calendars import NEW_YORK
from adapters.errors import BrokerUnavailable, InvalidOrder, OrderNotFound
from adapters.models import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from adapters.paper import PaperBroker
from adapters.symbols import asset_class_of
from bot.automation_models import (
    ExecutionStatus,
    Job,
    JobStatus,
    ReceivedSignal,
    SignalExecution,
    SignalStatus,
    Strategy,
    Subscription,
)
from bot.core import Core
from bot.db import Database
from bot.errors import Conflict, InvalidInput, LimitReached, NotFound, PermissionDenied
from bot.models import AuditEvent, IntentStatus, OrderIntent
from bot.services.notify import Outgoing, RecordingNotifier
from bot.services.signal_plans import Plan
from bot.services.signals import Ack
from bot.services.strategies import WebhookUrl
from bot.services.subscriptions import SubscriptionSettings
from bot.services.trading import mask_account, request_of
from bot.settings import Settings
from tests.bot.signals.conftest import (
    ALICE,
    BOB,
    CAROL,
    GUILD,
    OWNER,
    count,
    execution,
    intents,
    jobs,
    make_strategy,
    notifier,
    open_core,
    orders,
    send,
    subscribe,
)
from tests.support import FakeClock, full_year, trading_contract

ES = trading_contract()


async def hold(core: Core, member: int, symbol: str, quantity: str, side: str = "buy") -> None:
    """A position opened by hand (not by a signal)."""
    target = await core.connections.resolve(member, None, "paper")
    request = OrderRequest(symbol, Side(side), Decimal(quantity))
    request.asset_class = asset_class_of(symbol)
    if request.asset_class.value == "crypto":
        request.time_in_force = TimeInForce.GTC
    out = await core.trading.place(
        target, request, source="discord", idempotency_key=str(uuid.uuid4())
    )
    assert out.intent.status == IntentStatus.FILLED, out.message


async def position(core: Core, member: int, symbol: str) -> Decimal:
    target = await core.connections.resolve(member, None, "paper")
    adapter = await core.connections.adapter_for(target.connection)
    held = await adapter.fetch_positions(target.ref)
    return sum((p.quantity for p in held if p.symbol == symbol), Decimal(0))


async def run(core: Core, url: WebhookUrl, sub: int, **signal: Any) -> SignalExecution:
    ack = await send(core, url, {"ticker": "AAPL", **signal})
    assert ack.status == 202, ack.body
    await core.jobs.drain()
    return await execution(core, ack.body["id"], sub)


def sides_and_quantities(rows: list[Any]) -> list[tuple[str, Decimal]]:
    return [(o.side, o.quantity) for o in rows]


# -- sizing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sub_settings", "signal", "expected"),
    [
        ({"sizing": "fixed_quantity", "sizing_value": Decimal(3)}, {}, Decimal(3)),
        ({"sizing": "dollar_amount", "sizing_value": Decimal(1000)}, {}, Decimal(4)),  # ask 200.10
        ({"sizing": "percent_of_equity", "sizing_value": Decimal(10)}, {}, Decimal(49)),
        ({"sizing": "signal", "sizing_value": Decimal("1.5")}, {"quantity": 2}, Decimal(3)),
        (
            {"sizing": "signal", "sizing_value": Decimal(2)},
            {"quantity": 1000, "quantityType": "dollar_amount"},
            Decimal(9),
        ),
        ({"sizing": "signal", "sizing_value": Decimal(2)}, {}, Decimal(2)),  # no quantity: 1
        ({"sizing": "fixed_quantity", "sizing_value": Decimal(3)}, {"quantity": 50}, Decimal(3)),
    ],
)
async def test_sizing(
    core: Core, sub_settings: dict[str, Any], signal: dict[str, Any], expected: Decimal
) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, **sub_settings)
    ex = await run(core, url, sub, action="buy", **signal)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities(await orders(core)) == [("buy", expected)]


async def test_a_time_in_force_the_broker_does_not_take_falls_back_to_the_default(
    core: Core,
) -> None:
    """The contract: "If you send a time in force not supported by your broker, it will
    fallback to the default". A day order for crypto was refused instead."""
    core.simulated_feed.set_quote("BTCUSD", Decimal(49990), Decimal(50010))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, ticker="BTCUSD", action="buy", timeInForce="day")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    [intent] = await intents(core)
    assert intent.time_in_force == "gtc"
    said = [p["detail"] for p in ex.phases if p["phase"] == "time in force"]
    assert said == ["day is not taken for crypto at Tradecord Paper: sent with the default"]


async def test_crypto_sizes_in_fractions(core: Core) -> None:
    core.simulated_feed.set_quote("BTCUSD", Decimal(49990), Decimal(50010))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="dollar_amount", sizing_value=Decimal(1000))
    ex = await run(core, url, sub, ticker="BTCUSD", action="buy")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities(await orders(core)) == [("buy", Decimal("0.019996"))]


@pytest.mark.parametrize(
    ("sub_settings", "signal", "said"),
    [
        (
            {"sizing": "dollar_amount", "sizing_value": Decimal(1500)},
            {},
            "The subscription's dollar amount sizing ($1,500.00)",
        ),
        (
            {"sizing": "percent_of_equity", "sizing_value": Decimal("0.001")},
            {},
            "The subscription's percent of equity sizing (0.001%)",
        ),
        (
            {"sizing": "signal", "sizing_value": Decimal(1)},
            {"quantity": 100, "quantityType": "dollar_amount"},
            "1× the signal's quantity ($100.00, dollar amount)",
        ),
    ],
)
async def test_a_size_below_one_share_is_skipped_with_the_amount_as_money(
    core: Core, sub_settings: dict[str, Any], signal: dict[str, Any], said: str
) -> None:
    """Before: "The subscription's dollar amount sizing (1,500)" and "(0.001)" for a percent:
    a bare number where every other message says $1,500.00."""
    core.simulated_feed.set_quote("AAPL", Decimal("1999.90"), Decimal("2000.10"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, **sub_settings)
    ex = await run(core, url, sub, action="buy", **signal)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "quantity-zero")
    assert ex.reason == f"{said} comes to less than one tradable unit of AAPL."
    assert await orders(core) == []


async def test_a_multiplied_signal_size_below_one_share_names_the_multiplier(core: Core) -> None:
    """Before: 0.5× a signal of 1 share read "The fixed quantity sizing comes to less than one
    tradable unit of AAPL." — the member had chosen a multiplier, not a fixed quantity."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal("0.5"))
    ex = await run(core, url, sub, action="buy", quantity=1)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "quantity-zero")
    assert ex.reason == (
        "0.5× the signal's quantity (1, fixed quantity) comes to less than one tradable unit "
        "of AAPL."
    )


async def test_dollar_sizing_prices_at_the_quote_not_the_senders_price(core: Core) -> None:
    """The contract: price is for slippage, signalPrice stands in only where the broker has no
    quote. An alert's stale {{close}} of 100 must not double a $1,000 entry at an ask of 200.10."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="dollar_amount", sizing_value=Decimal(1000))
    ex = await run(core, url, sub, action="buy", price=100, signalPrice=100)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities(await orders(core)) == [("buy", Decimal(4))]


@pytest.mark.parametrize("failure", ["empty", "error"])
async def test_dollar_sizing_falls_back_to_the_signal_price_without_a_quote(
    core: Core, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    quote = await core.simulated_feed.fetch_quote("AAPL")

    async def no_quote(self: PaperBroker, symbol: str) -> Any:
        if failure == "error":
            raise BrokerUnavailable("no quotes")
        return dataclasses.replace(quote, bid=Decimal(0), ask=Decimal(0), last=Decimal(0))

    monkeypatch.setattr(PaperBroker, "fetch_quote", no_quote)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="dollar_amount", sizing_value=Decimal(1000))
    ex = await run(core, url, sub, action="buy", signalPrice=125)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities(await orders(core)) == [("buy", Decimal(8))]


async def test_a_limit_order_is_sized_at_its_limit_price(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="dollar_amount", sizing_value=Decimal(1000))
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=190, price=100)
    assert ex.status in (ExecutionStatus.ACCEPTED, ExecutionStatus.FILLED), ex.reason
    assert sides_and_quantities(await orders(core)) == [("buy", Decimal(5))]  # 1000/190


@pytest.mark.parametrize(
    ("dollars", "ticker", "expected"),
    [
        (10_000, ES, None),
        (600_000, ES, Decimal(2)),
        # TradingView's full year (the contract's own example form): the same future.
        (600_000, f"CME_MINI:{full_year(ES)}", Decimal(2)),
    ],
)
async def test_futures_are_sized_in_whole_contracts_with_the_multiplier(
    core: Core, dollars: int, ticker: str, expected: Decimal | None
) -> None:
    """One E-mini contract at 5900.50 is 5900.50 × 50 = $295,025 of exposure."""
    core.simulated_feed.set_quote(ES, Decimal("5900.00"), Decimal("5900.50"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="dollar_amount", sizing_value=Decimal(dollars))
    ex = await run(core, url, sub, ticker=ticker, action="buy")
    if expected is None:
        assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "quantity-zero")
        assert await orders(core) == []
    else:
        assert ex.status == ExecutionStatus.FILLED, ex.reason
        assert sides_and_quantities(await orders(core)) == [("buy", expected)]


async def test_the_strategy_max_quantity_caps_the_sized_entry_not_the_exit(core: Core) -> None:
    """The limit applies to the entry after the subscription's sizing; an exit closes what is
    held, whatever its size. The note says what to change."""
    url = await make_strategy(core)
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, max_quantity=Decimal(3))
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(4))
    ex = await run(core, url, sub, action="sell")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "quantity-over-limit")
    assert ex.reason == (
        "The entry of 4 is above the strategy's limit of 3; no entry was placed. Lower this "
        "subscription's sizing (/subscribe) or ask the strategy's owner to raise the limit "
        "(/strategy settings)."
    )
    assert sides_and_quantities((await orders(core))[1:]) == [("sell", 5)]
    assert await position(core, OWNER, "AAPL") == 0


# -- sides ----------------------------------------------------------------------------------


async def test_long_only_does_not_short(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sides="long")
    ex = await run(core, url, sub, action="sell")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "side-not-allowed")
    assert await orders(core) == []


async def test_short_only_does_not_buy(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sides="short")
    ex = await run(core, url, sub, action="buy")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "side-not-allowed")


async def test_long_only_sell_exits_without_entering_short(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sides="long", sizing_value=Decimal(3))
    ex = await run(core, url, sub, action="sell")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "side-not-allowed")
    assert await position(core, OWNER, "AAPL") == 0


# -- TradersPost's order behaviour -------------------------------------------------------------


async def test_exit_fills_before_the_opposite_entry_is_placed(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(3))
    ex = await run(core, url, sub, action="sell")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities((await orders(core))[1:]) == [("sell", 5), ("sell", 3)]
    assert await position(core, OWNER, "AAPL") == -3
    signal_intents = [i for i in await intents(core) if i.source == "signal"]
    exit_intent = next(i for i in signal_intents if i.idempotency_key.endswith(":exit"))
    entry_intent = next(i for i in signal_intents if i.idempotency_key.endswith(":entry"))
    async with core.db.session() as s:
        exit_filled = await s.scalar(
            select(AuditEvent.id).where(
                AuditEvent.intent_id == exit_intent.id, AuditEvent.kind == "order.filled"
            )
        )
        entry_stored = await s.scalar(
            select(AuditEvent.id).where(
                AuditEvent.intent_id == entry_intent.id, AuditEvent.kind == "order.validated"
            )
        )
    assert exit_filled is not None and entry_stored is not None
    assert exit_filled < entry_stored  # the entry did not exist until the exit had filled


@pytest.mark.parametrize(
    ("subtract", "multiplier", "signal_quantity", "expected"),
    [
        (False, "1", 10, [("sell", 5), ("sell", 10)]),  # the default: the whole quantity
        (True, "1", 10, [("sell", 5), ("sell", 5)]),  # long 5, sell 10: short 5
        (True, "2", 5, [("sell", 5), ("sell", 5)]),  # 2 x 5 = 10 less the 5 exited
    ],
)
async def test_a_reversal_may_enter_the_signal_quantity_less_the_exit(
    core: Core, subtract: bool, multiplier: str, signal_quantity: int, expected: list[Any]
) -> None:
    """TradersPost's "Subtract exit quantity from signal quantity": a TradingView strategy's
    reversal alert carries the exit and the new position as one quantity."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(
        core,
        url,
        OWNER,
        sizing="signal",
        sizing_value=Decimal(multiplier),
        subtract_exit_quantity=subtract,
    )
    ex = await run(core, url, sub, action="sell", quantity=signal_quantity)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities((await orders(core))[1:]) == expected
    assert await position(core, OWNER, "AAPL") == 5 - sum(q for _, q in expected)


async def test_a_reversal_that_leaves_nothing_to_enter_only_exits(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing="signal", subtract_exit_quantity=True)
    ex = await run(core, url, sub, action="sell", quantity=5)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "nothing-left-to-enter")
    assert ex.reason == (
        "Exit only: the signal's 5 less the 5 exited leaves nothing to enter on the other side "
        "(this subscription subtracts the exit quantity)."
    )
    assert sides_and_quantities((await orders(core))[1:]) == [("sell", 5)]
    assert await position(core, OWNER, "AAPL") == 0
    # Nothing to exit: the entry is the signal's whole quantity.
    ex = await run(core, url, sub, action="sell", quantity=5, extras={"bar": 2})
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == -5


async def test_an_exit_that_does_not_fill_stops_the_entry(core: Core) -> None:
    core.signals.exit_timeout = 0.2
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(3))
    ex = await run(core, url, sub, action="sell", orderType="limit", limitPrice=300)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.ACCEPTED, "exit-not-filled")
    # Before: "...; the entry was not placed. The exit order is still working.", which left
    # open whether the entry would follow the exit's fill, and where the exit was.
    assert ex.reason == (
        "The exit order had not filled after 0.2 s, so the entry was not placed, nor will it be "
        "once the exit fills. The exit order is still working: see /orders (/cancel order "
        "cancels it)."
    )
    assert [
        i.idempotency_key.rsplit(":", 1)[1] for i in await intents(core) if i.source == "signal"
    ] == ["exit"]
    assert await position(core, OWNER, "AAPL") == 5


async def test_an_exit_left_working_speaks_for_its_run_when_it_fills_later(core: Core) -> None:
    """The run ended with its exit working and no entry: when the exit fills, the execution
    and the channel say so. Before, only the plan's last leg (the entry, never placed) could,
    and the channel's last word stayed "Order placed"."""
    from bot.services.order_updates import OrderUpdates

    core.signals.exit_timeout = 0.2
    await core.strategies.set_alert_channel(GUILD, 777)
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(3))
    ex = await run(core, url, sub, action="sell", orderType="limit", limitPrice=205)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.ACCEPTED, "exit-not-filled")
    core.simulated_feed.set_quote("AAPL", Decimal("206.00"), Decimal("206.20"))
    assert await OrderUpdates(core).sweep_paper() == 1
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FILLED
    posts = [m.content or "" for c, m in notifier(core).posts if c == 777]
    assert "Filled" in posts[-1] and "sell 5 AAPL" in posts[-1], posts


async def test_a_fill_posted_during_the_fan_out_is_not_followed_by_order_placed(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results' post waits for the whole fan-out; an order update posts at once. A limit
    that filled meanwhile read "✅ Filled", then "📨 Order placed" as the last word."""
    from bot.services.order_updates import OrderUpdates

    await core.strategies.set_alert_channel(GUILD, 777)
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, OWNER)
    await subscribe(core, url, ALICE)
    go_on = asyncio.Event()
    real_execute = core.signals.execute

    async def slow_for_alice(ctx: Any, *args: Any) -> None:
        if ctx.member_discord_id == ALICE:
            await go_on.wait()
        await real_execute(ctx, *args)

    monkeypatch.setattr(core.signals, "execute", slow_for_alice)
    await send(
        core, url, {"ticker": "AAPL", "action": "buy", "orderType": "limit", "limitPrice": 199}
    )
    draining = asyncio.create_task(core.jobs.drain())
    for _ in range(200):
        if await intents(core):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # OWNER's run recorded: its order rests
    core.simulated_feed.set_quote("AAPL", Decimal("198.00"), Decimal("198.20"))
    assert await OrderUpdates(core).sweep_paper() == 1
    go_on.set()
    await draining
    posts = [m.content or "" for c, m in notifier(core).posts if c == 777]
    filled = next(i for i, p in enumerate(posts) if "Filled" in p)
    assert not [p for p in posts[filled:] if "Order placed" in p], posts
    assert sum("Filled" in p for p in posts) == 2, posts  # OWNER's by the update, ALICE's


async def test_buy_when_already_long_is_skipped(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "already-in-position")


async def test_sell_with_flat_sentiment_only_exits(core: Core) -> None:
    url = await make_strategy(core)
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    await hold(core, OWNER, "AAPL", "5")
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(3))
    core.simulated_feed.set_quote("AAPL", Decimal("209.90"), Decimal("210.10"))
    ex = await run(core, url, sub, action="sell", sentiment="flat")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "no-entry-sentiment")
    assert await position(core, OWNER, "AAPL") == 0
    # The member's DM says what the position made; the channel's post does not.
    told = [m.content or "" for uid, m in notifier(core).dms if uid == OWNER][-1]
    # Filled at the simulated feed's price, which the DM and the post say (as /trade does).
    assert told.startswith(
        "✅ Filled: **NQ breakout** → Tradecord Paper (paper) · simulated prices\n"
    )
    assert (
        "Filled: sell 5 AAPL at $210.00, against the position's average of $200.00. "
        "P&L +$50.00 before fees."
    ) in told, told
    posts = [m.content or "" for _, m in notifier(core).posts]
    assert posts[-1] == (
        "**NQ breakout** ✅ Filled · A subscriber (paper): sell 5 AAPL at $210.00"
        " · simulated prices"
    )


@pytest.mark.parametrize("sentiment", ["flat", "bullish"])
async def test_an_exit_of_a_long_while_short_says_there_is_no_long_to_exit(
    core: Core, sentiment: str
) -> None:
    """Before: "Already short AAPL; send action add to add to it.", to a signal that meant to
    exit a long, not to add to anything."""
    await hold(core, OWNER, "AAPL", "5", side="sell")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="sell", sentiment=sentiment)
    assert (ex.status, ex.reason_code, ex.reason) == (
        ExecutionStatus.SKIPPED,
        "no-position-to-exit",
        f"No open AAPL long to exit: sell with sentiment {sentiment} exits a long, and the "
        "position is short. Send action exit to close it.",
    )
    assert await position(core, OWNER, "AAPL") == -5


async def test_buy_with_bearish_sentiment_covers_part_of_a_short(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10", side="sell")
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(4))
    ex = await run(core, url, sub, action="buy", sentiment="short")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == -6


async def test_exit_without_a_position_is_skipped(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="exit")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "no-position-to-exit")


async def test_partial_exit_by_percent_of_position(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action="exit", quantity=50, quantityType="percent_of_position")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 5


async def test_a_partial_exit_says_the_rest_lost_its_stop_loss(core: Core) -> None:
    """The exit cancels the ticker's open orders first, as TradersPost does: the stop-loss
    guarding the whole position goes, and the member is told what is left without one."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10")
    await rest(core, OWNER, "sell", OrderType.STOP, "150", "stop-loss")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    told = len(notifier(core).dms)
    ex = await run(core, url, sub, action="exit", quantity=4)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 6
    dm = "\n".join(m.content or "" for _, m in notifier(core).dms[told:])
    assert (
        "Cancelled 1 open AAPL order: sell 1 AAPL stop at $150.00. The 6 AAPL left after this "
        "exit are no longer covered by it: place a new stop-loss with /trade if they should "
        "have one." in dm
    ), dm
    # A full exit leaves nothing uncovered, and says nothing of it.
    await rest(core, OWNER, "sell", OrderType.STOP, "150", "stop-loss 2")
    told = len(notifier(core).dms)
    ex = await run(core, url, sub, action="exit", sentiment="flat", extras={"again": 1})
    assert await position(core, OWNER, "AAPL") == 0
    dm = "\n".join(m.content or "" for _, m in notifier(core).dms[told:])
    assert "Cancelled 1 open AAPL order" in dm and "no longer covered" not in dm, dm


@pytest.mark.parametrize("multiplier", ["0.5", "2"])
async def test_the_multiplier_does_not_scale_a_percent_of_the_position(
    core: Core, multiplier: str
) -> None:
    """Before: at 0.5× an exit of 100% of the position sold half; at 2× 50% sold all of it."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(multiplier))
    ex = await run(core, url, sub, action="exit", quantity=50, quantityType="percent_of_position")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 5
    ex = await run(core, url, sub, action="exit", quantity=100, quantityType="percent_of_position")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 0


async def test_flat_sentiment_closes_the_whole_position_whatever_the_signal_quantity(
    core: Core,
) -> None:
    """The contract: flat means no position is open after the trade. With signal sizing, a
    quantity of 2 (the strategy's own size) must not leave 3 of the member's 5 open."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action="sell", sentiment="flat", quantity=2)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "no-entry-sentiment")
    assert await position(core, OWNER, "AAPL") == 0
    await hold(core, OWNER, "AAPL", "5")
    ex = await run(core, url, sub, action="exit", sentiment="flat", quantity=2)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 0


async def test_a_sell_of_a_percent_of_position_sells_part_of_the_long_and_enters_nothing(
    core: Core,
) -> None:
    """percent_of_position sizes part of the open position (the contract refuses it for add);
    it is not an entry size: selling 50% of a long 10 sells 5, it does not sell 10 and short
    5 (50% of a position the same signal just closed)."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action="sell", quantity=50, quantityType="percent_of_position")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "exit-partial-position")
    assert await position(core, OWNER, "AAPL") == 5
    ex = await run(core, url, sub, action="sell", quantity=100, quantityType="percent_of_position")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "percent-of-position-entry")
    assert await position(core, OWNER, "AAPL") == 0


@pytest.mark.parametrize(
    ("quantity", "left", "code"),
    [(4, 6, "exit-partial-position"), (10, -10, None), (15, -15, None)],
)
async def test_a_signal_sized_sell_below_the_long_exits_part_and_enters_nothing(
    core: Core, quantity: int, left: int, code: str | None
) -> None:
    """TradersPost with the signal's quantity: a sell of 4 against a long 10 is a partial exit
    and enters no short; a sell of the whole long or more exits it, then shorts the quantity."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action="sell", quantity=quantity)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, code), ex.reason
    assert await position(core, OWNER, "AAPL") == left


async def test_percent_of_position_does_not_size_an_entry(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action="buy", quantity=50, quantityType="percent_of_position")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "percent-of-position-entry")
    assert "fixed_quantity, dollar_amount or percent_of_equity" in (ex.reason or "")
    assert await orders(core) == []


@pytest.mark.parametrize(("held", "left"), [("3", 2), ("1", 1)])
async def test_a_partial_exit_rounds_down_to_whole_shares(core: Core, held: str, left: int) -> None:
    """50% of 3 shares sells 1 (never more than asked); 50% of 1 share sells nothing."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", held)
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action="exit", quantity=50, quantityType="percent_of_position")
    if left == int(held):
        assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "quantity-zero")
    else:
        assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == left


async def test_add_adds_to_the_open_position(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(2))
    ex = await run(core, url, sub, action="add")
    assert ex.status == ExecutionStatus.FILLED
    assert await position(core, OWNER, "AAPL") == 7
    ex = await run(core, url, sub, action="add", sentiment="bearish", extras={"n": 2})
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "position-is-opposite")


async def test_a_signal_that_waited_past_the_maximum_age_in_the_queue_places_nothing(
    core: Core, clock: FakeClock
) -> None:
    """The webhook's age limit applies again when the signal's turn comes: a worker that was
    down for minutes must not trade a backlog of old alerts at the prices of now."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    alert_time = (clock() - timedelta(seconds=200)).isoformat()  # within 300 s on arrival
    timed = await send(core, url, {"ticker": "MSFT", "action": "buy", "time": alert_time})
    untimed = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    assert (timed.status, untimed.status) == (202, 202)
    clock.advance(seconds=150)  # the worker was down
    await core.jobs.drain()
    ex = await execution(core, timed.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "stale-signal")
    assert "350 s old" in (ex.reason or "") and "maximum signal age of 300 s" in (ex.reason or "")
    # Without an alert time, the age counts from arrival: 150 s, in time.
    assert (await execution(core, untimed.body["id"], sub)).status == ExecutionStatus.FILLED
    late = await send(core, url, {"ticker": "NVDA", "action": "buy"})
    clock.advance(seconds=301)
    await core.jobs.drain()
    ex = await execution(core, late.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "stale-signal")
    assert [o.symbol for o in await orders(core)] == ["AAPL"]


async def test_signals_of_a_strategy_trade_in_the_order_they_arrived(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buy, then an exit sent right after it, run by workers side by side: the exit waits for
    the buy, so it sees (and closes) the position the buy opened."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    buy = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    exit_ = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    create_order, released = PaperBroker.create_order, asyncio.Event()

    async def slow_buy(self: PaperBroker, *args: Any, **kwargs: Any) -> Any:
        if args[1].side is Side.BUY:
            await released.wait()
        return await create_order(self, *args, **kwargs)

    async def release_once_the_exit_ended_or_waited() -> None:
        for _ in range(50):  # the exit, run at once, would have ended by now
            async with core.db.session() as s:
                status = await s.scalar(
                    select(ReceivedSignal.status).where(ReceivedSignal.id == exit_.body["id"])
                )
            if status == SignalStatus.DONE:
                break
            await asyncio.sleep(0.01)
        released.set()

    monkeypatch.setattr(PaperBroker, "create_order", slow_buy)
    releasing = asyncio.create_task(release_once_the_exit_ended_or_waited())
    await core.jobs.drain(concurrency=2)
    await releasing
    assert (await execution(core, buy.body["id"], sub)).status == ExecutionStatus.FILLED
    ex = await execution(core, exit_.body["id"], sub)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 0


async def test_a_signal_whose_job_gave_up_holds_up_no_later_signal(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    dead = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    async with core.db.transaction() as s:
        await s.execute(
            update(Job)
            .where(Job.dedupe_key == f"signal:{dead.body['id']}")
            .values(status=JobStatus.FAILED)
        )
    ex = await run(core, url, sub, action="buy", extras={"later": True})
    assert ex.status == ExecutionStatus.FILLED


async def test_cancel_cancels_the_tickers_open_orders(core: Core) -> None:
    url = await make_strategy(core)
    target = await core.connections.resolve(OWNER, None, "paper")
    resting = OrderRequest("AAPL", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal(150))
    resting.asset_class = asset_class_of("AAPL")
    await core.trading.place(target, resting, source="discord", idempotency_key="resting")
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="cancel")
    assert ex.status == ExecutionStatus.DONE
    assert [o.status for o in await orders(core)] == ["cancelled"]
    # The resting order's intent says so at once, not when the reconciler next looks.
    [intent] = await intents(core)
    assert intent.status == IntentStatus.CANCELLED
    ex = await run(core, url, sub, action="cancel", extras={"again": True})
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "no-open-orders")


async def test_a_cancel_signal_sends_one_dm_saying_what_it_cancelled(core: Core) -> None:
    """Before: "Paper order update: Cancelled: buy 1 AAPL.", then "Done ... Cancelled 1 open
    AAPL order." Now the result alone, naming the order."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    told = len(notifier(core).dms)
    ex = await run(core, url, sub, action="cancel")
    assert ex.status == ExecutionStatus.DONE
    [(uid, dm)] = notifier(core).dms[told:]
    assert uid == OWNER
    assert (dm.content or "").splitlines()[:2] == [
        "✅ Done: **NQ breakout** → Tradecord Paper (paper)",
        "Cancelled 1 open AAPL order: buy 1 AAPL limit at $150.00.",
    ]
    # Counted as told: no later look at the order announces the cancel again.
    [intent] = await intents(core)
    assert (intent.status, intent.notified_status) == (IntentStatus.CANCELLED, "cancelled:0")


async def test_a_cancel_signal_says_in_the_channel_how_many_orders_it_cancelled(
    core: Core,
) -> None:
    """Before: "signal received: CANCEL AAPL" and then nothing, as if it were stuck. The
    orders are counted, not described: they may be the member's own, placed by hand."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    await rest(core, OWNER, "sell", OrderType.LIMIT, "300", "resting too")
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    await run(core, url, sub, action="cancel")
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2, posts
    assert posts[1] == "**NQ breakout** 🚫 Cancelled · A subscriber (paper): 2 open AAPL orders"
    # The strategy's own resting entry has its own "cancelled" line: not counted a second time.
    await run(core, url, sub, action="buy", orderType="limit", limitPrice="150")
    await rest(core, OWNER, "sell", OrderType.LIMIT, "300", "by hand")
    await run(core, url, sub, action="cancel", extras={"again": 1})
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-2:] == [
        "**NQ breakout** 🚫 Cancelled · A subscriber (paper): buy 1 AAPL",
        "**NQ breakout** 🚫 Cancelled · A subscriber (paper): 1 open AAPL order",
    ], posts
    await run(core, url, sub, action="buy", orderType="limit", limitPrice="150", extras={"b": 1})
    await run(core, url, sub, action="cancel", extras={"again": 2})
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-2:] == [
        "📡 **NQ breakout** signal received: CANCEL AAPL (`" + posts[-2].split("`")[1] + "`)",
        "**NQ breakout** 🚫 Cancelled · A subscriber (paper): buy 1 AAPL",
    ], posts


async def test_a_cancel_signal_leaves_the_orders_placed_after_it_arrived(
    core: Core, clock: FakeClock
) -> None:
    """It waited in a slow queue (or its run was retaken after a crash): an order placed after
    it came in, by a newer signal or by hand, is not its to cancel."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "older")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    clock.advance(seconds=1)
    ack = await send(core, url, {"ticker": "AAPL", "action": "cancel"})
    clock.advance(seconds=1)
    await rest(core, OWNER, "buy", OrderType.LIMIT, "140", "newer")
    await core.jobs.drain()
    assert (await execution(core, ack.body["id"], sub)).status == ExecutionStatus.DONE
    assert {o.limit_price: o.status for o in await orders(core)} == {
        Decimal(150): "cancelled",
        Decimal(140): "open",
    }


async def test_a_cancel_signal_whose_orders_ended_before_it_says_so(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resting order is gone by the time its cancel reaches the broker: nothing was
    cancelled, and the reason is about orders, not "no open position to exit"."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)

    async def gone(*_: Any, **__: Any) -> None:
        raise OrderNotFound("gone")

    monkeypatch.setattr(PaperBroker, "cancel_order", gone)
    ex = await run(core, url, sub, action="cancel")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "no-open-orders")
    assert ex.reason == "No open AAPL orders were left to cancel."


async def test_entries_cancel_open_orders_first_unless_told_not_to(core: Core) -> None:
    url = await make_strategy(core)
    target = await core.connections.resolve(OWNER, None, "paper")
    for key in ("a", "b"):
        req = OrderRequest("AAPL", Side.SELL, Decimal(1), OrderType.LIMIT, limit_price=Decimal(300))
        req.asset_class = asset_class_of("AAPL")
        await core.trading.place(target, req, source="discord", idempotency_key=key)
    sub = await subscribe(core, url, OWNER)
    await run(core, url, sub, action="buy", cancel=False)
    assert sorted(o.status for o in await orders(core)) == ["filled", "open", "open"]
    await run(core, url, sub, action="exit")
    assert sorted(o.status for o in await orders(core)) == [
        "cancelled",
        "cancelled",
        "filled",
        "filled",
    ]


async def rest(
    core: Core, member: int, side: str, order_type: OrderType, price: str, key: str
) -> None:
    """An open AAPL order placed by hand: a protective stop or a resting limit."""
    target = await core.connections.resolve(member, None, "paper")
    request = OrderRequest("AAPL", Side(side), Decimal(1), order_type)
    if order_type is OrderType.STOP:
        request.stop_price = Decimal(price)
    else:
        request.limit_price = Decimal(price)
    request.asset_class = asset_class_of("AAPL")
    out = await core.trading.place(target, request, source="discord", idempotency_key=key)
    assert out.intent.status == IntentStatus.ACCEPTED, out.message


@pytest.mark.parametrize(
    ("held", "sub_settings", "signal", "code"),
    [
        ("5", {}, {"action": "buy", "sentiment": "long"}, "already-in-position"),
        (None, {"sides": "short"}, {"action": "buy"}, "side-not-allowed"),
        (None, {"max_positions": 1}, {"action": "buy", "ticker": "AAPL"}, "max-strategy-positions"),
        (None, {}, {"action": "buy", "takeProfit": {"percent": 10}}, "brackets-unsupported"),
        (
            None,
            {"sizing": "dollar_amount", "sizing_value": Decimal(10)},
            {"action": "buy"},
            "quantity-zero",
        ),
        (None, {}, {"action": "exit"}, "no-position-to-exit"),
    ],
)
async def test_a_signal_that_places_nothing_leaves_the_open_orders_alone(
    core: Core,
    monkeypatch: pytest.MonkeyPatch,
    held: str | None,
    sub_settings: dict[str, Any],
    signal: dict[str, Any],
    code: str,
) -> None:
    """TradersPost cancels open orders before submitting new ones: with nothing submitted, a
    protective stop (or a resting order) stays."""
    if code == "brackets-unsupported":
        without_brackets(monkeypatch)
    if held is not None:
        await hold(core, OWNER, "AAPL", held)
        await rest(core, OWNER, "sell", OrderType.STOP, "180", "stop")
    else:
        await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    if "max_positions" in sub_settings:
        await hold(core, OWNER, "MSFT", "1")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, **sub_settings)
    ex = await run(core, url, sub, **signal)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, code)
    assert [o.status for o in await orders(core) if o.order_type != "market"] == ["open"]


async def test_a_refusal_at_placing_time_leaves_the_open_orders_alone(core: Core) -> None:
    """Max positions checked again when an approved entry is placed: refused, nothing sent,
    so the ticker's open order is not cancelled either."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True, max_positions=1)
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.WAITING_APPROVAL
    await hold(core, OWNER, "MSFT", "1")  # the limit is reached meanwhile
    draft = next(i for i in await intents(core) if i.source == "signal")
    await core.signals.approve(draft.id, OWNER)
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, sub)
    assert ex.reason_code == "max-strategy-positions"
    assert [o.status for o in await orders(core) if o.order_type != "market"] == ["open"]


@pytest.mark.parametrize("stop", ["kill switch", "pause", "broker refuses the exit"])
async def test_an_exit_bound_to_be_refused_keeps_the_protective_stop(
    core: Core, monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """Open orders are cancelled right before an order is sent; an exit that the kill switch,
    a pause or the broker's own checks refuse leaves the stop protecting the position."""
    await hold(core, OWNER, "AAPL", "5")
    await rest(core, OWNER, "sell", OrderType.STOP, "180", "stop")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    if stop == "kill switch":
        await core.limits.set_kill_switch(True, by=OWNER)
    elif stop == "pause":
        await core.limits.pause(OWNER)
    else:

        def refuse(self: PaperBroker, account: Any, request: OrderRequest) -> None:
            raise InvalidOrder("Not today.")

        monkeypatch.setattr(PaperBroker, "check_order", refuse)
    ex = await run(core, url, sub, action="exit")
    assert ex.status in (ExecutionStatus.FAILED, ExecutionStatus.REJECTED), ex.status
    assert [o.status for o in await orders(core) if o.order_type != "market"] == ["open"]


async def test_an_opening_auction_signal_waits_for_the_open(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", timeInForce="opg")
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason
    [order] = await orders(core)
    assert (order.time_in_force, order.status) == ("opg", "open")


# -- trading windows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "ignore", "entered"),
    [(10, None, True), (16, None, False), (16, True, True)],
)
async def test_entries_wait_for_the_subscriptions_trading_windows(
    core: Core, clock: FakeClock, hour: int, ignore: bool | None, entered: bool
) -> None:
    """TradersPost's trading windows, judged when the signal came, in New York time; a signal's
    ignoreTradingWindows: true enters anyway."""
    clock.at = datetime(2026, 12, 1, hour, 0, tzinfo=NEW_YORK)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, trading_windows="9:45-15:30")
    extra = {"ignoreTradingWindows": ignore} if ignore is not None else {}
    ex = await run(core, url, sub, action="buy", **extra)
    if entered:
        assert ex.status == ExecutionStatus.FILLED, ex.reason
        return
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "outside-trading-window")
    assert ex.reason == (
        "The signal came Tue at 16:00 New York time, outside this subscription's trading windows "
        "(09:45-15:30); no entry was placed (exits still are). The next window opens Wed 02 Dec "
        "at 09:45. A signal with ignoreTradingWindows: true enters anyway."
    )
    assert await orders(core) == []


async def test_a_weekend_signal_waits_for_weekday_windows(core: Core, clock: FakeClock) -> None:
    clock.at = datetime(2026, 12, 5, 10, 0, tzinfo=NEW_YORK)  # a Saturday, inside the hours
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, trading_windows="weekdays 9:45-15:30")
    ex = await run(core, url, sub, action="buy")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "outside-trading-window")
    assert "Sat at 10:00 New York time" in (ex.reason or "")
    assert "trading windows (mon-fri 09:45-15:30)" in (ex.reason or "")
    assert "The next window opens Mon 07 Dec at 09:45." in (ex.reason or "")


async def test_trading_windows_in_another_time_zone_say_its_time(
    core: Core, clock: FakeClock
) -> None:
    clock.at = datetime(2026, 12, 1, 11, 45, tzinfo=NEW_YORK)  # 16:45 in London
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, trading_windows="mon-fri 08:00-16:30 london")
    ex = await run(core, url, sub, action="buy")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "outside-trading-window")
    assert "came Tue at 16:45 Europe/London time" in (ex.reason or ""), ex.reason
    assert "(mon-fri 08:00-16:30 Europe/London)" in (ex.reason or "")
    assert "The next window opens Wed 02 Dec at 08:00." in (ex.reason or "")
    clock.at = datetime(2026, 12, 1, 11, 15, tzinfo=NEW_YORK)  # 16:15 in London
    ex = await run(core, url, sub, action="buy", time=clock.at.isoformat())
    assert ex.status == ExecutionStatus.FILLED, ex.reason


async def test_an_exit_outside_the_trading_windows_still_closes_the_position(
    core: Core, clock: FakeClock
) -> None:
    await hold(core, OWNER, "AAPL", "5")
    clock.at = datetime(2026, 12, 1, 16, 0, tzinfo=NEW_YORK)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, trading_windows="09:45-15:30")
    ex = await run(core, url, sub, action="exit")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 0


# -- a subscription's default exits ----------------------------------------------------------


async def test_a_subscriptions_exits_bracket_the_entries_of_signals_without_their_own(
    core: Core,
) -> None:
    """TradersPost's subscription take-profit and stop-loss: each applies where the signal
    sends none of its own, counted from the same entry price (the quote's midpoint, 200)."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, take_profit="5%", stop_loss="trail 2%")
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    entry, *exits = await orders(core)
    assert (entry.take_profit, entry.stop_loss, entry.stop_loss_trail_percent) == (210, 196, 2)
    assert sorted(o.order_type for o in exits) == ["limit", "trailing_stop"]
    # The signal named no time in force: gtc, so the exits outlast the trading day.
    assert {o.time_in_force for o in (entry, *exits)} == {"gtc"}
    # The signal's own stop-loss distance wins, of the subscription's type (trailing) since it
    # names none; the subscription's take-profit still applies.
    ex = await run(core, url, sub, action="sell", stopLoss={"amount": 5}, extras={"n": 2})
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    short = [o for o in await orders(core) if o.parent_id is None and o.side == "sell"][-1]
    assert (short.take_profit, short.stop_loss, short.stop_loss_trail_amount) == (190, 205, 5)
    # A type it names is its own: a fixed stop.
    stop = {"type": "stop", "amount": 5}
    ex = await run(core, url, sub, action="buy", stopLoss=stop, extras={"n": 3})
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    long = [o for o in await orders(core) if o.parent_id is None and o.side == "buy"][-1]
    assert (long.take_profit, long.stop_loss, long.stop_loss_trail_amount) == (210, 195, None)


async def test_a_subscription_may_ignore_the_signals_take_profit(core: Core) -> None:
    """TradersPost's "Use signal take profit", off: the signal's takeProfit is ignored and the
    subscription's own applies (none: no take-profit); its stopLoss still counts."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, take_profit="5%", signal_take_profit=False)
    exits = {"takeProfit": {"percent": 1}, "stopLoss": {"amount": 4}}
    ex = await run(core, url, sub, action="buy", **exits)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    [entry] = [o for o in await orders(core) if o.parent_id is None]
    assert (entry.take_profit, entry.stop_loss) == (210, 196)  # 5%, not the signal's 1%
    assert await subscribe(core, url, OWNER, signal_take_profit=False) == sub  # no default
    ex = await run(core, url, sub, action="sell", sentiment="flat", extras={"n": 2})
    ex = await run(core, url, sub, action="buy", extras={"n": 3}, **exits)
    entry = [o for o in await orders(core) if o.parent_id is None and o.side == "buy"][-1]
    assert (entry.take_profit, entry.stop_loss) == (None, 196)


async def test_an_extended_hours_signal_takes_no_default_exits(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, take_profit="5%", stop_loss="2%")
    ex = await run(
        core, url, sub, action="buy", orderType="limit", limitPrice=201, extendedHours=True
    )
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    [entry] = await orders(core)
    assert (entry.take_profit, entry.stop_loss, entry.extended_hours) == (None, None, True)


async def test_default_exits_a_broker_cannot_place_are_refused_when_subscribing(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    caps = dataclasses.replace(PaperBroker.capabilities, bracket_trailing_stop=False)
    monkeypatch.setattr(PaperBroker, "capabilities", caps)
    url = await make_strategy(core)
    with pytest.raises(InvalidInput, match="takes no trailing stop-loss in a bracket"):
        await subscribe(core, url, OWNER, stop_loss="trail 2%")
    without_brackets(monkeypatch)
    with pytest.raises(InvalidInput, match="takes no take-profit/stop-loss brackets"):
        await subscribe(core, url, OWNER, take_profit="5%")
    with pytest.raises(InvalidInput, match="take_profit is a distance from the entry price"):
        await subscribe(core, url, OWNER, take_profit="lots")


# -- max strategy positions -----------------------------------------------------------------


@pytest.mark.parametrize(("doge_price", "allowed"), [("0.149", True), ("0.151", False)])
async def test_max_positions_ignores_crypto_dust_up_to_1_50_usd(
    core: Core, doge_price: str, allowed: bool
) -> None:
    price = Decimal(doge_price)
    core.simulated_feed.set_quote("DOGEUSD", price, price)
    await hold(core, OWNER, "DOGEUSD", "10")  # worth 1.49 or 1.51 USD, bought by hand
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, max_positions=1)
    ex = await run(core, url, sub, action="buy")
    if allowed:
        assert ex.status == ExecutionStatus.FILLED, ex.reason
    else:
        assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "max-strategy-positions")
        assert await position(core, OWNER, "AAPL") == 0


async def test_max_positions_counts_positions_opened_outside_tradecord_signals(core: Core) -> None:
    await hold(core, OWNER, "MSFT", "1")
    url = await make_strategy(core)
    one = await subscribe(core, url, OWNER, max_positions=1)
    ex = await run(core, url, one, action="buy")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "max-strategy-positions")
    await subscribe(core, url, OWNER, max_positions=2)  # same subscription, new limit
    ex = await run(core, url, one, action="buy", extras={"n": 2})
    assert ex.status == ExecutionStatus.FILLED


async def test_a_reversal_does_not_count_the_position_it_closes(core: Core) -> None:
    await hold(core, OWNER, "AAPL", "5")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, max_positions=1)
    ex = await run(core, url, sub, action="sell")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == -1


# -- brackets ---------------------------------------------------------------------------------


def without_brackets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tradecord Paper as a broker without brackets sees it."""
    monkeypatch.setattr(
        PaperBroker, "capabilities", dataclasses.replace(PaperBroker.capabilities, brackets=False)
    )


async def test_brackets_are_refused_where_they_cannot_be_placed(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    without_brackets(monkeypatch)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", takeProfit={"percent": 10})
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "brackets-unsupported")
    assert await orders(core) == []


async def test_brackets_are_computed_from_the_entry_price(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[OrderRequest] = []
    place = core.trading.place

    async def spy(target: Any, request: OrderRequest, **kw: Any) -> Any:
        seen.append(request)
        return await place(target, request, **kw)

    monkeypatch.setattr(core.trading, "place", spy)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    # A market order's entry is the quote's midpoint (199.90 / 200.10), as the contract says:
    # not the bid this sell would get, nor the sender's price, kept for brokers without quotes.
    await run(
        core,
        url,
        sub,
        action="sell",
        signalPrice=150,
        takeProfit={"percent": 10},
        stopLoss={"type": "stop_limit", "amount": 5, "limitPrice": 206},
    )
    [request] = seen
    assert request.bracket is not None
    assert (
        request.bracket.take_profit,
        request.bracket.stop_loss,
        request.bracket.stop_loss_limit,
    ) == (Decimal(180), Decimal(205), Decimal(206))
    [intent] = await intents(core)
    assert intent.extra["bracket"] == {
        "take_profit": "180.00",
        "stop_loss": "205.00",
        "stop_loss_limit": "206",
        "stop_loss_trail_amount": None,
        "stop_loss_trail_percent": None,
    }


@pytest.mark.parametrize(
    ("ticker", "multiplier", "signal", "side", "expected"),
    [
        # Entry at the midpoint 200.00, stop 4 below: $100 of risk is 25 shares.
        ("AAPL", "1", {"action": "buy", "stopLoss": {"amount": 4}}, "buy", 25),
        ("AAPL", "1", {"action": "buy", "stopLoss": {"stopPrice": 190}}, "buy", 10),
        ("AAPL", "1", {"action": "sell", "stopLoss": {"percent": 2.5}}, "sell", 20),
        ("AAPL", "2", {"action": "buy", "stopLoss": {"amount": 4}}, "buy", 50),  # $200 of risk
        # 10 points of /ES are $500 a contract: $100 of risk is none, $1,000 two.
        (ES, "10", {"action": "buy", "stopLoss": {"amount": 10}}, "buy", 2),
    ],
)
async def test_risk_dollar_amount_sizes_the_entry_by_its_stop_loss(
    core: Core, ticker: str, multiplier: str, signal: dict[str, Any], side: str, expected: int
) -> None:
    """TradersPost's risk_dollar_amount: quantity = risk / (entry price - stop loss price),
    from the same entry price the bracket's stop loss counts from."""
    core.simulated_feed.set_quote(ES, Decimal("5000.00"), Decimal("5000.50"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(multiplier))
    body = {"ticker": ticker, "quantityType": "risk_dollar_amount", "quantity": 100, **signal}
    ack = await send(core, url, body)
    assert ack.status == 202, ack.body
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    entry = (await orders(core))[0]
    assert (entry.side, entry.quantity, entry.stop_loss is not None) == (side, expected, True)


async def test_a_reversal_sized_by_risk_exits_the_whole_position_first(core: Core) -> None:
    """Risk dollars size the new position only: the old one is closed whole, not by them."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, sizing="signal")
    body = {"quantityType": "risk_dollar_amount", "quantity": 100, "stopLoss": {"amount": 4}}
    ex = await run(core, url, sub, action="sell", **body)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sides_and_quantities((await orders(core))[1:3]) == [("sell", 5), ("sell", 25)]
    assert await position(core, OWNER, "AAPL") == -25


async def test_risk_dollar_amount_with_a_stop_loss_on_the_winning_side_is_skipped(
    core: Core,
) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="signal")
    body = {"quantityType": "risk_dollar_amount", "quantity": 100}
    ex = await run(core, url, sub, action="buy", stopLoss={"stopPrice": 210}, **body)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "invalid-bracket")
    assert ex.reason == (
        "The stop loss $210.00 is not below the entry price $200.00, so risk_dollar_amount "
        "cannot size the entry. Send a stop loss on the losing side of the entry."
    )
    assert await orders(core) == []


async def test_a_bracketed_signal_on_paper_fills_and_leaves_its_exits_working(
    core: Core,
) -> None:
    """TradingView alerts with takeProfit/stopLoss work on the paper account every member
    has: the entry fills, its exits rest, and the one that fills cancels the other."""
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    from adapters.models import OrderUpdate
    from adapters.paper import store
    from bot.services.order_updates import OrderUpdates

    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", takeProfit={"percent": 5}, stopLoss={"amount": 4})
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    entry, *exits = await orders(core)
    assert (entry.status, entry.take_profit, entry.stop_loss) == ("filled", 210, 196)
    assert sorted((o.order_type, o.side, o.quantity, o.status) for o in exits) == [
        ("limit", "sell", entry.quantity, "open"),
        ("stop", "sell", entry.quantity, "open"),
    ]
    core.simulated_feed.set_quote("AAPL", Decimal("195.00"), Decimal("195.20"))
    told = len(notifier(core).dms)
    updates = OrderUpdates(core)
    assert await updates.sweep_paper() == 1
    by_type = {o.order_type: o.status for o in (await orders(core))[1:]}
    assert by_type == {"limit": "cancelled", "stop": "filled"}
    assert await position(core, OWNER, "AAPL") == 0
    # The member hears that the stop-loss closed the position, and so does the channel.
    [(uid, dm)] = notifier(core).dms[told:]
    assert uid == OWNER
    assert (dm.content or "").startswith(
        "📝 Paper bracket exit filled · **NQ breakout**: the stop-loss sell 1 AAPL at $195.10, "
        "the exit of your buy 1 AAPL"
    ), dm.content
    assert "P&L -$" in (dm.content or "") and " before fees." in (dm.content or "")  # a loss
    assert (dm.content or "").endswith(
        f"\nSignal `{ex.signal_id[-8:]}` · /signal show for every step."
    ), dm.content
    post = notifier(core).posts[-1][1].content or ""
    assert post.endswith(
        "🎯 Stop-loss filled · A subscriber (paper): sell 1 AAPL at $195.10 · simulated prices"
    )
    # Once: the same fill seen again (another sweeper, a replay) is not news.
    [stop] = [o for o in await orders(core) if o.order_type == "stop"]
    await core.trading.apply_update("paper", OrderUpdate(store.to_order(stop), "fill"))
    assert len(notifier(core).dms) == told + 1


@pytest.mark.parametrize(
    ("stop_loss", "trail", "start"),
    [
        ({"type": "trailing_stop", "trailAmount": 4}, "$4.00", 196),
        ({"type": "trailing_stop", "trailPercent": 2}, "2%", 196),
    ],
)
async def test_a_trailing_stop_loss_follows_the_price_after_the_entry_fills(
    core: Core, stop_loss: dict[str, Any], trail: str, start: int
) -> None:
    """stopLoss type trailing_stop: the exit trails the best price since the fill by the
    signal's amount or percent; the plan says by how much and where it starts (from the
    entry price the bracket counts from: the quote's midpoint, 200)."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", takeProfit={"percent": 5}, stopLoss=stop_loss)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    entry, *exits = await orders(core)
    assert (entry.take_profit, entry.stop_loss) == (210, start)
    assert sorted((o.order_type, o.side, o.status) for o in exits) == [
        ("limit", "sell", "open"),
        ("trailing_stop", "sell", "open"),
    ]
    [(_, dm)] = notifier(core).dms
    assert (
        "Its exits are working: take-profit $210.00 · trailing stop-loss "
        f"{trail} behind the best price (one cancels the other)."
    ) in (dm.content or ""), dm.content


async def test_a_trailing_stop_loss_sizes_a_risk_dollar_amount_by_its_trail(core: Core) -> None:
    """risk_dollar_amount counts from where the trailing stop-loss starts: $4 behind, so a
    $100 risk is 25 shares."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    body = {
        "ticker": "AAPL",
        "action": "buy",
        "quantityType": "risk_dollar_amount",
        "quantity": 100,
        "stopLoss": {"type": "trailing_stop", "trailAmount": 4},
    }
    ack = await send(core, url, body)
    assert ack.status == 202, ack.body
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert (await orders(core))[0].quantity == 25


async def test_a_trailing_stop_loss_is_refused_where_the_broker_has_none(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    caps = dataclasses.replace(PaperBroker.capabilities, bracket_trailing_stop=False)
    monkeypatch.setattr(PaperBroker, "capabilities", caps)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(
        core, url, sub, action="buy", stopLoss={"type": "trailing_stop", "trailPercent": 2}
    )
    assert (ex.status, ex.reason_code) == (
        ExecutionStatus.SKIPPED,
        "trailing-stop-loss-unsupported",
    )
    assert "Send stopLoss type stop" in (ex.reason or "")
    assert await orders(core) == []


async def test_an_exit_signal_after_a_bracketed_entry_leaves_no_exit_working(core: Core) -> None:
    """TradersPost cancels the ticker's open orders before the exit: the bracket's take-profit
    and stop-loss go with it, and nothing is left to open a position later."""
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    entry = await run(
        core, url, sub, action="buy", takeProfit={"percent": 5}, stopLoss={"percent": 5}
    )
    assert entry.status == ExecutionStatus.FILLED, entry.reason
    assert len([o for o in await orders(core) if o.status == "open"]) == 2
    done = await run(core, url, sub, action="exit")
    assert done.status == ExecutionStatus.FILLED, done.reason
    assert await position(core, OWNER, "AAPL") == 0
    assert [o for o in await orders(core) if o.status == "open"] == []


async def test_a_signal_that_cancels_before_ordering_says_both_in_one_dm(core: Core) -> None:
    """Before: "Paper order update: Cancelled: buy 1 AAPL." and then the result, which said the
    same cancel again; and when the result was a refusal, the cancel was only in the first."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    told = len(notifier(core).dms)
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.FILLED
    [(_, dm)] = notifier(core).dms[told:]
    assert (dm.content or "").splitlines()[1:3] == [
        "Filled: buy 1 AAPL at $200.00.",
        "Cancelled 1 open AAPL order: buy 1 AAPL limit at $150.00.",
    ]
    # An exit that does not fill ends the run with its own reason: the cancel is still said.
    core.signals.exit_timeout = 0.2
    await rest(core, OWNER, "sell", OrderType.LIMIT, "300", "take-profit")
    told = len(notifier(core).dms)
    ex = await run(core, url, sub, action="sell", orderType="limit", limitPrice=300)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.ACCEPTED, "exit-not-filled")
    [(_, dm)] = notifier(core).dms[told:]
    lines = (dm.content or "").splitlines()
    assert lines[2].startswith("The exit order had not filled"), lines
    assert lines[3] == "Cancelled 1 open AAPL order: sell 1 AAPL limit at $300.00.", lines


async def test_a_cancel_signal_names_the_exits_of_the_brackets_it_cancels(core: Core) -> None:
    """Before: "Cancelled 1 open AAPL order." for a resting bracketed entry, "Cancelled 2 open
    AAPL orders." for the working take-profit and stop-loss of a filled one."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    brackets = {"takeProfit": {"percent": 5}, "stopLoss": {"amount": 4}}
    await run(core, url, sub, action="buy", orderType="limit", limitPrice="150", **brackets)
    told = len(notifier(core).dms)
    await run(core, url, sub, action="cancel")
    [(_, dm)] = notifier(core).dms[told:]
    assert (dm.content or "").splitlines()[1] == (
        "Cancelled 1 open AAPL order: buy 1 AAPL limit at $150.00, with its exits "
        "(take-profit $157.50 · stop-loss $146.00)."
    )
    entry = await run(core, url, sub, action="buy", extras={"market": 1}, **brackets)
    assert entry.status == ExecutionStatus.FILLED, entry.reason
    told = len(notifier(core).dms)
    await run(core, url, sub, action="cancel", extras={"exits": 1})
    [(_, dm)] = notifier(core).dms[told:]
    assert (dm.content or "").splitlines()[1] == (
        "Cancelled 2 open AAPL orders: the take-profit sell 1 AAPL limit at $210.00; the "
        "stop-loss sell 1 AAPL stop at $196.00."
    )


@pytest.mark.parametrize("broker_order", ["as placed", "stop-loss first"])
async def test_a_brackets_exits_are_named_take_profit_first_however_the_broker_lists_them(
    core: Core, monkeypatch: pytest.MonkeyPatch, broker_order: str
) -> None:
    """Before: the cancelled exits were named in the broker's order, the stop-loss first when
    the broker listed it first; /orders and /cancel all listed them so too."""
    if broker_order == "stop-loss first":
        listed = PaperBroker.fetch_open_orders

        async def stop_loss_first(self: PaperBroker, account: Any) -> Any:
            return sorted(await listed(self, account), key=lambda o: o.order_type != "stop")

        monkeypatch.setattr(PaperBroker, "fetch_open_orders", stop_loss_first)
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    brackets = {"takeProfit": {"percent": 5}, "stopLoss": {"amount": 4}}
    entry = await run(core, url, sub, action="buy", **brackets)
    assert entry.status == ExecutionStatus.FILLED, entry.reason
    _, _, working = await core.trading.open_orders(OWNER, None, "paper")  # /orders
    assert [o.order_type for o in working] == ["limit", "stop"]
    _, cancelled = await core.trading.cancel(OWNER, None, "paper")  # /cancel all
    assert [o.order_type for o in cancelled] == ["limit", "stop"]
    added = await run(core, url, sub, action="add", **brackets)
    assert added.status == ExecutionStatus.FILLED, added.reason
    told = len(notifier(core).dms)
    await run(core, url, sub, action="cancel")
    [(_, dm)] = notifier(core).dms[told:]
    assert (dm.content or "").splitlines()[1] == (
        "Cancelled 2 open AAPL orders: the take-profit sell 1 AAPL limit at $210.00; the "
        "stop-loss sell 1 AAPL stop at $196.00."
    )


async def test_a_bracketed_entry_that_expires_unfilled_says_its_exits_went_with_it(
    core: Core,
) -> None:
    """Before: "Paper order update: Expired: buy 1 AAPL.", not a word of the take-profit and
    stop-loss the member was told would be placed once it filled."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    brackets = {"takeProfit": {"percent": 5}, "stopLoss": {"amount": 4}}
    await run(core, url, sub, action="buy", orderType="limit", limitPrice="150", **brackets)
    [intent] = await intents(core)
    target = await core.connections.resolve(OWNER, None, "paper")
    adapter = await core.connections.adapter_for(target.connection)
    order = await adapter.fetch_order(target.ref, order_id=intent.broker_order_id)
    await adapter.close()
    order.status = OrderStatus.EXPIRED
    told = len(notifier(core).dms)
    await core.trading.apply_order_state(intent, order)
    [(_, dm)] = notifier(core).dms[told:]
    assert dm.content == (
        "📝 Paper order update · **NQ breakout**: Expired: buy 1 AAPL. Its exits (take-profit "
        "$157.50 · stop-loss $146.00) were never placed.\n"
        f"Signal `{intent.extra['signal_id'][-8:]}` · /signal show for every step."
    )


async def test_a_later_update_of_a_signals_order_names_its_strategy_and_signal(
    core: Core,
) -> None:
    """Before: "📝 Paper order update: Filled: buy 1 AAPL at $149.25." an hour after the
    signal, for a member whose two strategies both trade AAPL: which one bought?"""
    from bot.services.order_updates import OrderUpdates

    swing, scalp = await make_strategy(core, "Swing"), await make_strategy(core, "Scalp")
    await subscribe(core, scalp, OWNER)
    sub = await subscribe(core, swing, OWNER)
    ex = await run(core, swing, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.ACCEPTED
    told = len(notifier(core).dms)
    core.simulated_feed.set_quote("AAPL", Decimal("149.00"), Decimal("149.50"))
    assert await OrderUpdates(core).sweep_paper() == 1
    [(uid, dm)] = notifier(core).dms[told:]  # still one DM
    assert uid == OWNER
    assert dm.content == (
        "📝 Paper order update · **Swing**: Filled: buy 1 AAPL at $149.25. · simulated prices\n"
        f"Signal `{ex.signal_id[-8:]}` · /signal show for every step."
    )
    # An order placed by hand says nothing of strategies.
    await rest(core, OWNER, "buy", OrderType.LIMIT, "140", "by hand")
    core.simulated_feed.set_quote("AAPL", Decimal("139.00"), Decimal("139.50"))
    told = len(notifier(core).dms)
    assert await OrderUpdates(core).sweep_paper() == 1
    [(_, dm)] = notifier(core).dms[told:]
    assert (dm.content or "").startswith("📝 Paper order update: Filled: buy 1 AAPL at $")
    assert "Signal" not in (dm.content or ""), dm.content


async def test_a_fill_stored_by_a_process_that_died_before_telling_it_is_told_later(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fill was committed, then the process died before the DM and the channel: later
    sweeps see no change, so only the reconciler's look at what was told can repair it."""
    from bot.services.order_updates import OrderUpdates

    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.ACCEPTED
    told = len(notifier(core).dms)
    real_tell = core.trading._tell

    async def dies(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt  # the process going down right after the commit

    monkeypatch.setattr(core.trading, "_tell", dies)
    core.simulated_feed.set_quote("AAPL", Decimal("149.00"), Decimal("149.50"))
    with pytest.raises(KeyboardInterrupt):
        await OrderUpdates(core).sweep_paper()
    monkeypatch.setattr(core.trading, "_tell", real_tell)
    assert await OrderUpdates(core).sweep_paper() == 0  # nothing new to see
    assert len(notifier(core).dms) == told
    clock.advance(minutes=1)
    await core.trading.reconcile()
    [(uid, dm)] = notifier(core).dms[told:]
    assert uid == OWNER and "Filled: buy 1 AAPL" in (dm.content or "")
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FILLED
    await core.trading.reconcile()
    assert len(notifier(core).dms) == told + 1  # once

    # The same for an order placed by hand, whose acceptance only its card said.
    await rest(core, OWNER, "buy", OrderType.LIMIT, "140", "by hand")
    monkeypatch.setattr(core.trading, "_tell", dies)
    core.simulated_feed.set_quote("AAPL", Decimal("139.00"), Decimal("139.50"))
    with pytest.raises(KeyboardInterrupt):
        await OrderUpdates(core).sweep_paper()
    monkeypatch.setattr(core.trading, "_tell", real_tell)
    clock.advance(minutes=1)
    await core.trading.reconcile()
    (uid, dm) = notifier(core).dms[-1]
    assert uid == OWNER and "Filled: buy 1 AAPL at $" in (dm.content or ""), dm.content
    assert len(notifier(core).dms) == told + 2


async def test_a_fill_that_lands_while_its_run_finishes_is_told_once(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's result says "Filled" (it reads the order again as it finishes): an order
    update DM for the same fill, sent while the run was still going, said it twice."""
    from bot.services.order_updates import OrderUpdates

    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    real_finish = core.signals._finish

    async def fill_first(ctx: Any, result: Any) -> None:
        core.simulated_feed.set_quote("AAPL", Decimal("149.00"), Decimal("149.50"))
        assert await OrderUpdates(core).sweep_paper() == 1  # the fill lands now
        await real_finish(ctx, result)

    monkeypatch.setattr(core.signals, "_finish", fill_first)
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.FILLED
    fills = [m.content or "" for u, m in notifier(core).dms if "Filled" in (m.content or "")]
    assert len(fills) == 1, fills


async def test_what_cancel_and_paper_reset_said_is_not_told_again_by_the_catch_up(
    core: Core, clock: FakeClock
) -> None:
    """/cancel and /paper reset answer the member themselves: the reconciler's look for
    states never told must not DM "Cancelled" half a minute later."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "140", "cancelled by hand")
    await core.trading.cancel(OWNER, None, None)
    await rest(core, OWNER, "buy", OrderType.LIMIT, "141", "cancelled by the reset")
    await core.trading.reset_paper(OWNER)
    told = len(notifier(core).dms)
    clock.advance(minutes=1)
    await core.trading.reconcile()
    assert len(notifier(core).dms) == told, notifier(core).dms[told:]


async def test_an_entry_the_broker_refuses_is_known_before_the_exit_is_sent(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reversal whose entry the broker's own checks refuse (here: no brackets on this
    account, as at Alpaca for fractional or crypto orders) sends nothing, not an exit followed
    by a refused entry reported as "not placed"."""
    check = PaperBroker.check_order

    def no_brackets_here(self: PaperBroker, account: Any, request: OrderRequest) -> None:
        if request.bracket is not None:
            raise InvalidOrder("Brackets are not available for this order at the broker.")
        check(self, account, request)

    monkeypatch.setattr(PaperBroker, "check_order", no_brackets_here)
    await hold(core, OWNER, "AAPL", "5", side="sell")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    placed = len(await orders(core))
    ex = await run(core, url, sub, action="buy", sentiment="long", stopLoss={"percent": 5})
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    assert "Brackets are not available" in (ex.reason or "")
    assert len(await orders(core)) == placed
    assert await position(core, OWNER, "AAPL") == Decimal(-5)


async def test_a_signal_price_finer_than_a_cent_is_refused_with_the_prices_to_use(
    core: Core,
) -> None:
    """A stock's limitPrice of 100.12345 was placed at paper; every US broker refuses it."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice="100.12345")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    assert "AAPL prices of $1 or more go in whole cents: use 100.12 or 100.13" in (ex.reason or "")
    ex = await run(core, url, sub, action="buy", takeProfit={"limitPrice": "220.005"})
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    assert "take-profit price 220.005" in (ex.reason or "")
    assert await intents(core) == [] and await orders(core) == []


@pytest.mark.parametrize(
    ("ticker", "bid", "ask", "percent", "take_profit", "stop_loss"),
    [
        # Entry 0.985 under $1, take-profit over it: whole cents there, not 1.0343.
        ("AAPL", "0.9800", "0.9900", 5, Decimal("1.03"), Decimal("0.9358")),
        # 5900.125 ± 1 % on 0.25s: quantize made 5959.13, which paper refused.
        (ES, "5900.00", "5900.25", 1, Decimal("5959.25"), Decimal("5841.00")),
    ],
)
async def test_percent_brackets_land_on_the_price_tick(
    core: Core,
    ticker: str,
    bid: str,
    ask: str,
    percent: int,
    take_profit: Decimal,
    stop_loss: Decimal,
) -> None:
    core.simulated_feed.set_quote(ticker, Decimal(bid), Decimal(ask))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(
        core,
        url,
        sub,
        ticker=ticker,
        action="buy",
        takeProfit={"percent": percent},
        stopLoss={"percent": percent},
    )
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    entry = (await orders(core))[0]
    assert (entry.take_profit, entry.stop_loss) == (take_profit, stop_loss)


@pytest.mark.parametrize(
    ("ticker", "bid", "ask", "take_profit", "stop_loss"),
    [
        # Before: whole 0.0001s made the take-profit 0.0000 and the signal was skipped.
        ("SHIBUSD", "0.00001233", "0.00001235", Decimal("0.00001296"), Decimal("0.00001172")),
        # Before: cents made a 0.2 % stop-loss of a $2.20 coin $2.20, the entry price itself.
        ("XRPUSD", "2.1999", "2.2001", Decimal("2.2440"), Decimal("2.1956")),
    ],
)
async def test_percent_brackets_of_a_coin_keep_the_coins_precision(
    core: Core, ticker: str, bid: str, ask: str, take_profit: Decimal, stop_loss: Decimal
) -> None:
    core.simulated_feed.set_quote(ticker, Decimal(bid), Decimal(ask))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="fixed_quantity", sizing_value=Decimal(10))
    ex = await run(
        core,
        url,
        sub,
        ticker=ticker,
        action="buy",
        timeInForce="gtc",
        takeProfit={"percent": 5 if ticker == "SHIBUSD" else 2},
        stopLoss={"percent": 5 if ticker == "SHIBUSD" else "0.2"},
    )
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    entry = (await orders(core))[0]
    assert (entry.take_profit, entry.stop_loss) == (take_profit, stop_loss)


@pytest.mark.parametrize(
    ("exit_", "said"),
    [
        (
            {"stopLoss": {"percent": "0.01"}},
            "The stop-loss of 0.01% from the entry price $0.00001234 rounds to $0.00001234 at "
            "SHIBUSD's price steps of 0.00000001, not below it; the bracketed entry was not "
            "placed. Send a larger percent or amount, or the price itself as stopLoss.stopPrice.",
        ),
        (
            {"stopLoss": {"amount": "0.00002"}},
            "The stop-loss of $0.00002 from the entry price $0.00001234 comes to a price at or "
            "below zero; the bracketed entry was not placed. Send a smaller percent or amount, "
            "or the price itself as stopLoss.stopPrice.",
        ),
    ],
)
async def test_an_exit_a_coins_precision_cannot_express_is_refused_with_what_to_send(
    core: Core, exit_: dict[str, Any], said: str
) -> None:
    core.simulated_feed.set_quote("SHIBUSD", Decimal("0.00001233"), Decimal("0.00001235"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="fixed_quantity", sizing_value=Decimal(10))
    ex = await run(core, url, sub, ticker="SHIBUSD", action="buy", timeInForce="gtc", **exit_)
    assert (ex.status, ex.reason_code, ex.reason) == (
        ExecutionStatus.SKIPPED,
        "invalid-bracket",
        said,
    )
    assert await orders(core) == []


async def test_a_stop_the_market_has_passed_is_not_placed(core: Core) -> None:
    """A buy stop at or below the ask (a sell stop at or above the bid) would trigger at once
    and fill at the market: refused before the broker, as /trade refuses it."""
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="stop", stopPrice=100)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    assert "would trigger at once" in (ex.reason or "") and "200.10" in (ex.reason or "")
    assert await intents(core) == [] and await orders(core) == []
    # The exit leg too: a sell stop above the bid is refused, the position stays.
    await hold(core, OWNER, "AAPL", "5")
    placed = len(await orders(core))
    ex = await run(
        core, url, sub, action="exit", orderType="stop_limit", stopPrice=250, limitPrice=249
    )
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    assert "sell stop" in (ex.reason or "")
    assert len(await orders(core)) == placed
    assert await position(core, OWNER, "AAPL") == 5


async def test_a_stop_beyond_the_market_is_placed(core: Core) -> None:
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="stop", stopPrice=250)
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason
    [order] = await orders(core)
    assert (order.order_type, order.stop_price) == ("stop", Decimal(250))


# -- manual approval ----------------------------------------------------------------------------


async def approval_signal(
    core: Core, *, role: int | None = None
) -> tuple[WebhookUrl, int, SignalExecution]:
    """ALICE's approval waiting; ``role``: the strategy is shared with it, which she has."""
    url = await make_strategy(core)
    if role is None:
        await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    else:
        await core.strategies.share_role(GUILD, OWNER, url.strategy.id, role)
    settings = SubscriptionSettings(
        manual_approval=True, approval_ttl_seconds=120, sizing_value=Decimal(2)
    )
    info = await core.subscriptions.subscribe(
        GUILD, ALICE, url.strategy.id, settings=settings, roles={role or GUILD}
    )
    sub = info.id
    notifier(core).dms.clear()  # "… shared the strategy with you": the tests count what follows
    ex = await run(core, url, sub, action="buy")
    return url, sub, ex


async def test_an_approved_order_whose_job_keeps_failing_is_told_to_its_member(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Approving says "you will get a DM with the result": a job given up must not leave
    that unsaid, nor the run waiting as approved for ever."""
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)

    async def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(core.signals, "execute", broken)
    await core.signals.approve(draft.id, ALICE)
    for _ in range(6):
        await core.jobs.drain()
        clock.advance(minutes=5)
    ex = await execution(core, ex.signal_id, sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "processing-failed")
    [(_, told)] = [
        dm for dm in notifier(core).dms if "could not be placed" in (dm[1].content or "")
    ]
    assert "nothing was placed" in (told.content or "")
    [discarded] = await intents(core)
    assert discarded.status == IntentStatus.DISCARDED and await orders(core) == []


async def test_an_approval_whose_window_closes_during_the_click_is_not_approved(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    real_stopped = core.trading.stopped

    async def slow(member_id: int) -> Any:
        clock.advance(seconds=121)  # the 120 s window closes while the click is checked
        return await real_stopped(member_id)

    monkeypatch.setattr(core.trading, "stopped", slow)
    with pytest.raises(Conflict) as late:
        await core.signals.approve(draft.id, ALICE)
    assert "expired" in late.value.user_message
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.EXPIRED
    await core.jobs.drain()
    assert await orders(core) == []


async def test_manual_approval_waits_as_a_draft_until_approved(core: Core) -> None:
    _, sub, ex = await approval_signal(core)
    assert ex.status == ExecutionStatus.WAITING_APPROVAL
    [draft] = await intents(core)
    assert draft.status == IntentStatus.DRAFT and await orders(core) == []
    [pending] = await core.signals.pending_approvals(ALICE)
    assert pending.intent_ids == (draft.id,) and "buy 2 AAPL" in pending.summary
    # The DM asks once: its header says it waits, the next line what for.
    [(_, asked)] = [dm for dm in notifier(core).dms if dm[0] == ALICE]
    assert (asked.content or "").count("buy 2 AAPL") == 1, asked.content
    with pytest.raises(PermissionDenied):
        await core.signals.approve(draft.id, BOB)
    result = await core.signals.approve(draft.id, ALICE)
    assert result.status == ExecutionStatus.APPROVED
    # Before: "This signal was already handled (it is approved)." to a second click.
    with pytest.raises(Conflict) as twice:
        await core.signals.approve(draft.id, ALICE)
    assert twice.value.user_message == (
        "You approved this signal already: its order is being placed, and you will get a DM "
        "with the result."
    )
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, sub)
    assert ex.status == ExecutionStatus.FILLED
    with pytest.raises(Conflict) as after:
        await core.signals.reject(draft.id, ALICE)
    assert after.value.user_message == (
        f"This signal was already handled: it is filled. /signal show `{ex.signal_id[-8:]}` has "
        "every step."
    )
    assert sides_and_quantities(await orders(core)) == [("buy", 2)]
    assert [p["phase"] for p in ex.phases] == ["sized", "approval requested", "approved"]


async def test_a_click_on_a_run_that_ended_unplaced_says_so_in_words(core: Core) -> None:
    """Approved, then the kill switch held the order back: a later click said "it is failed",
    where the DM had said "Not placed"."""
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    await core.signals.approve(draft.id, ALICE)
    await core.limits.set_kill_switch(True, by=OWNER)
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FAILED
    with pytest.raises(Conflict) as late:
        await core.signals.reject(draft.id, ALICE)
    assert late.value.user_message.startswith(
        "This signal was already handled: it is not placed."
    ), late.value.user_message


async def test_a_paused_member_is_not_asked_to_approve_an_order_bound_to_be_refused(
    core: Core,
) -> None:
    """Before: a paused member got "Waiting for your approval … [Approve] [Reject]", and
    Approve answered "Not placed … Your trading is paused". Now the run says so at once."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    notifier(core).dms.clear()
    sub = await subscribe(core, url, ALICE, manual_approval=True, sizing_value=Decimal(2))
    await core.limits.pause(ALICE)
    ex = await run(core, url, sub, action="buy")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "member-paused")
    assert await core.signals.pending_approvals(ALICE) == []
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    [(_, told)] = [dm for dm in notifier(core).dms if dm[0] == ALICE]
    assert "\nNot placed: buy 2 AAPL. Your trading is paused" in (told.content or "")
    assert not told.components
    await core.limits.resume(ALICE)
    ex = await run(core, url, sub, action="buy", quantity=3)  # once resumed, asked as before
    assert ex.status == ExecutionStatus.WAITING_APPROVAL


@pytest.mark.parametrize("stop", ["pause", "kill switch"])
async def test_an_approval_given_while_trading_is_stopped_waits_for_a_click_after(
    core: Core, stop: str
) -> None:
    """Before: "Approved: the order is being placed", then a DM "Not placed: … paused", and
    the approval was spent. Now the click is refused with what to do, and the approval
    still waits."""
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    if stop == "pause":
        await core.limits.pause(ALICE)
    else:
        await core.limits.set_kill_switch(True, by=OWNER)
    with pytest.raises(LimitReached) as refused:
        await core.signals.approve(draft.id, ALICE)
    said = refused.value.user_message
    assert said.startswith(
        "Not approved: your trading is paused, so its order would not be sent. Run /resume, "
        "then press Approve again before it expires <t:"
        if stop == "pause"
        else "Not approved: trading is stopped for everyone by the bot owner (kill switch), so "
        "its order would not be sent. Press Approve again once trading is back, before it "
        "expires <t:"
    ), said
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.WAITING_APPROVAL
    assert await orders(core) == []
    if stop == "pause":
        await core.limits.resume(ALICE)
    else:
        await core.limits.set_kill_switch(False, by=OWNER)
    await core.signals.approve(draft.id, ALICE)
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FILLED


async def test_a_refused_order_in_the_dm_ends_its_sentence(core: Core) -> None:
    """Before: "Not placed: buy 1 AAPL. Trading is stopped … Cancelling open orders still
    works" — the reason's period was cut, and it read as cut off."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    await core.limits.set_kill_switch(True, by=OWNER)
    ex = await run(core, url, sub, action="buy")
    assert ex.reason_code == "kill-switch"
    [(_, told)] = [dm for dm in notifier(core).dms if dm[0] == OWNER]
    assert "Cancelling open orders still works.\nSignal `" in (told.content or "")


async def test_approving_a_reversal_says_both_of_its_orders_are_placed(core: Core) -> None:
    """Before: "Approved: the order is being placed", to a card that asked for an exit and an
    entry."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ex = await run(core, url, sub, action="buy")
    [pending] = await core.signals.pending_approvals(OWNER)
    done = await core.signals.approve(pending.intent_ids[0], OWNER)
    assert done.message.startswith("Approved: the order is being placed;")
    await core.jobs.drain()
    ex = await run(core, url, sub, action="sell")
    [pending] = await core.signals.pending_approvals(OWNER)
    assert pending.summary == "exit: sell 1 AAPL; then sell 1 AAPL"
    done = await core.signals.approve(pending.intent_ids[0], OWNER)
    assert done.message == (
        "Approved: the exit and then the entry are being placed; you will get a DM with the result."
    )
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FILLED


async def test_rejected_approval_places_nothing(core: Core) -> None:
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    told = len(notifier(core).dms)
    result = await core.signals.reject(draft.id, ALICE)
    assert result.status == ExecutionStatus.DECLINED
    assert result.message == "Declined: nothing was placed."  # the card they pressed says it
    assert notifier(core).dms[told:] == []  # and no second DM says it again
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.DECLINED
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    assert await orders(core) == []
    with pytest.raises(Conflict, match="declined"):
        await core.signals.approve(draft.id, ALICE)


async def test_an_expired_approval_places_nothing(core: Core, clock: FakeClock) -> None:
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    clock.advance(seconds=121)
    await core.jobs.drain()  # the expiry job is due
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.EXPIRED
    with pytest.raises(Conflict, match="expired"):
        await core.signals.approve(draft.id, ALICE)
    assert await orders(core) == []
    # Before: "🕓 The approval expired; nothing was placed. (signal `…`)", neither the strategy
    # nor the order named, while the card that asked is far up the DMs.
    told = [m.content or "" for uid, m in notifier(core).dms if uid == ALICE][-1]
    assert told == (
        f"🕓 **NQ breakout** buy 2 AAPL: The approval expired; nothing was placed. "
        f"(signal `{ex.signal_id[-8:]}`)"
    )
    # The card that asked loses its Approve and Reject and says why.
    dms = [m for uid, m in notifier(core).dms if uid == ALICE]
    [card] = [m for m in dms if "Waiting for your approval" in (m.content or "")]
    assert card.components == []
    assert (card.content or "").endswith("**This approval expired; nothing was placed.**")
    # Before, the card named no account: the click's orders go to this one.
    [draft] = await intents(core)
    assert f"\nAccount {mask_account(draft.account_id)} · paper" in (card.content or "")


async def test_approval_after_the_deadline_expires_even_before_the_job_runs(
    core: Core, clock: FakeClock
) -> None:
    _, _, _ = await approval_signal(core)
    [draft] = await intents(core)
    clock.advance(seconds=121)
    with pytest.raises(Conflict, match="expired"):
        await core.signals.approve(draft.id, ALICE)
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]


async def test_an_approval_waiting_when_its_subscription_is_paused_waits_for_a_resume(
    core: Core,
) -> None:
    """Before: a card that arrived before /subscribe active:false still placed its order
    when approved, though a paused subscription takes no signals."""
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    await core.subscriptions.set_enabled(ALICE, sub, False)
    with pytest.raises(LimitReached) as refused:
        await core.signals.approve(draft.id, ALICE)
    assert refused.value.user_message.startswith(
        "Not approved: your subscription to **NQ breakout** is paused, so it takes no signals. "
        "Resume it (/subscribe strategy:NQ breakout connection:Tradecord Paper mode:paper "
        "active:true), then press Approve again "
        "before it expires <t:"
    ), refused.value.user_message
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.WAITING_APPROVAL
    assert await orders(core) == []
    await core.subscriptions.set_enabled(ALICE, sub, True)
    await core.signals.approve(draft.id, ALICE)
    await core.jobs.drain()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FILLED


@pytest.mark.parametrize("end", ["unsubscribe", "unshare", "left the server", "lost the role"])
async def test_an_approval_waiting_when_its_subscription_ends_is_withdrawn(
    core: Core, clock: FakeClock, end: str
) -> None:
    """Before: Approve then answered "That signal order no longer exists", the drafts stayed
    drafts for ever, and at its deadline the member was told the approval expired."""
    url, _, ex = await approval_signal(core, role=77 if end == "lost the role" else None)
    [draft] = await intents(core)
    if end == "lost the role":
        await core.strategies.reconcile_access(GUILD, ALICE, frozenset({GUILD}))
    elif end == "unsubscribe":
        await core.subscriptions.unsubscribe(GUILD, ALICE, url.strategy.id)
    elif end == "unshare":
        await core.strategies.unshare(GUILD, OWNER, url.strategy.id, ALICE)
    else:
        await core.strategies.member_left(GUILD, ALICE)
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    # Its card loses Approve and Reject, and says why.
    [card] = [m for u, m in notifier(core).dms if "Waiting for your approval" in (m.content or "")]
    assert card.components == []
    assert (card.content or "").endswith(
        "**This approval was withdrawn: its subscription ended "
        "or its connection was removed, so nothing was placed.**"
    )
    with pytest.raises(Conflict) as late:
        await core.signals.approve(draft.id, ALICE)
    assert late.value.user_message == (
        "This approval was withdrawn: its subscription ended or its connection was removed, so "
        "nothing was placed."
    )
    async with core.db.session() as s:
        ended = await s.scalar(select(SignalExecution).where(SignalExecution.id == ex.id))
    assert ended is not None
    assert (ended.status, ended.reason_code) == (ExecutionStatus.SKIPPED, "subscription-ended")
    told = len(notifier(core).dms)
    clock.advance(seconds=121)
    await core.jobs.drain()  # its expiry job finds nothing waiting: no "expired" DM
    assert notifier(core).dms[told:] == [] and await orders(core) == []


@pytest.mark.parametrize(("minutes", "placed"), [(4, True), (6, False)])
async def test_an_approved_order_its_worker_reaches_late_is_placed_only_within_five_minutes(
    core: Core, clock: FakeClock, minutes: int, placed: bool
) -> None:
    """The queue was down after the click: an order approved long ago would trade at prices
    the member never saw, so, like a confirmed /trade order, it waits five minutes at most."""
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    await core.signals.approve(draft.id, ALICE)
    clock.advance(minutes=minutes)
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, sub)
    if placed:
        assert ex.status == ExecutionStatus.FILLED, ex.reason
        assert sides_and_quantities(await orders(core)) == [("buy", 2)]
        return
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "order-too-late")
    assert "approved this order 6 minutes ago" in (ex.reason or "")
    assert await orders(core) == []
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    told = [m.content or "" for uid, m in notifier(core).dms if uid == ALICE]
    assert any("Not placed" in t for t in told), told


async def test_an_approval_card_says_the_price_a_dollar_sized_entry_was_sized_at(
    core: Core,
) -> None:
    """Before: "buy 4 AAPL · expires …": approved after AAPL rose to $250, $1,000 of sizing
    bought $1,000.40 — at $300 it would be $1,200 — and the card never said it was sized at
    $200.10."""
    url = await make_strategy(core)
    sub = await subscribe(
        core, url, OWNER, manual_approval=True, sizing="dollar_amount", sizing_value=Decimal(1000)
    )
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.WAITING_APPROVAL, ex.reason
    [(_, card)] = notifier(core).dms
    asked = (card.content or "").splitlines()[1]
    assert asked.startswith("buy 4 AAPL at the market (sized at $200.10, about $800.40) · expires")
    # A fixed quantity is no price's doing: nothing to say.
    fixed = await make_strategy(core, "Fixed")
    sub = await subscribe(core, fixed, OWNER, manual_approval=True, sizing_value=Decimal(2))
    await run(core, fixed, sub, action="buy", ticker="MSFT")
    asked = (notifier(core).dms[-1][1].content or "").splitlines()[1]
    assert asked.startswith("buy 2 MSFT · expires <t:"), asked


@pytest.mark.parametrize(
    ("signal", "said"),
    [
        (
            {"takeProfit": {"amount": 10}, "stopLoss": {"amount": 4}},
            "Not placed: AAPL is at $210.10 now, past the take-profit at $210.00 priced when the "
            "signal came, so the take-profit would fill as soon as the entry did.",
        ),
        (
            {"orderType": "stop", "stopPrice": 205},
            "Not placed: AAPL is at $210.10 now, past the buy stop at $205.00 you approved, so it "
            "would trigger at once and fill at the market price.",
        ),
    ],
)
async def test_an_approval_after_the_market_passed_its_prices_places_nothing(
    core: Core, signal: dict[str, Any], said: str
) -> None:
    """Before: approved once AAPL had risen past the take-profit priced from the signal's
    market, the broker's refusal "take-profit 210 is not [above about 210]" said neither why
    nor what to do; a buy stop the market had passed filled at once at the market."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ex = await run(core, url, sub, action="buy", **signal)
    assert ex.status == ExecutionStatus.WAITING_APPROVAL, ex.reason
    core.simulated_feed.set_quote("AAPL", Decimal("209.90"), Decimal("210.10"))
    [pending] = await core.signals.pending_approvals(OWNER)
    await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "price-moved")
    assert ex.reason == f"{said} Place it with /trade if you still want it."
    assert await orders(core) == []
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    told = [m.content or "" for uid, m in notifier(core).dms if uid == OWNER][-1]
    assert said in told, told


async def test_a_reversal_whose_entry_the_market_passed_still_says_its_exit_filled(
    core: Core,
) -> None:
    """The exit goes (it only closes), the entry does not: the result says both."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "1")
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ex = await run(core, url, sub, action="sell", takeProfit={"amount": 10})
    assert ex.status == ExecutionStatus.WAITING_APPROVAL, ex.reason
    core.simulated_feed.set_quote("AAPL", Decimal("189.90"), Decimal("190.10"))
    [pending] = await core.signals.pending_approvals(OWNER)
    await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "price-moved")
    assert await position(core, OWNER, "AAPL") == 0
    told = (notifier(core).dms[-1][1].content or "").splitlines()
    assert told[1].startswith("Filled: sell 1 AAPL at $"), told
    assert told[2].startswith("Not placed: AAPL is at $189.90 now, past the take-profit"), told


async def test_a_cancel_under_manual_approval_runs_without_waiting(core: Core) -> None:
    """Nothing to approve: a cancel places no order (and there is no draft for a card)."""
    await rest(core, OWNER, "buy", OrderType.LIMIT, "150", "resting")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ex = await run(core, url, sub, action="cancel")
    assert ex.status == ExecutionStatus.DONE, ex.reason
    assert [o.status for o in await orders(core)] == ["cancelled"]
    assert await core.signals.pending_approvals(OWNER) == []


async def test_approval_refuses_if_the_position_changed(core: Core) -> None:
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ex = await run(core, url, sub, action="exit")
    assert ex.status == ExecutionStatus.WAITING_APPROVAL
    await hold(core, OWNER, "AAPL", "5", side="sell")  # closed by hand meanwhile
    draft = next(i for i in await intents(core) if i.source == "signal")
    await core.signals.approve(draft.id, OWNER)
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "position-changed")
    assert await position(core, OWNER, "AAPL") == 0
    # Not "⛔ Rejected", which reads as if the member or the broker turned it down.
    [told] = [
        m.content or "" for u, m in notifier(core).dms if "position changed" in (m.content or "")
    ]
    assert told.startswith("⛔ Not placed: **"), told


# -- fan-out, alerts, test signals --------------------------------------------------------------


async def test_one_failing_subscription_does_not_affect_the_others(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await make_strategy(core)
    for member in (ALICE, BOB, CAROL):
        await core.strategies.share(GUILD, OWNER, url.strategy.id, member)
    subs = {m: await subscribe(core, url, m) for m in (ALICE, BOB, CAROL)}
    bob_conn = (await core.connections.resolve(BOB, None, "paper")).connection.id
    original = core.connections.adapter_for

    async def flaky(connection: Any) -> Any:
        if connection.id == bob_conn:
            raise BrokerUnavailable("The broker is down.")
        return await original(connection)

    monkeypatch.setattr(core.connections, "adapter_for", flaky)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    statuses = {m: (await execution(core, ack.body["id"], s)).status for m, s in subs.items()}
    assert statuses == {
        ALICE: ExecutionStatus.FILLED,
        BOB: ExecutionStatus.FAILED,
        CAROL: ExecutionStatus.FILLED,
    }
    assert {j.status for j in await jobs(core)} == {JobStatus.DONE}


async def named_before_the_rule(core: Core, url: WebhookUrl, name: str) -> None:
    async with core.db.transaction() as s:
        await s.execute(
            update(Strategy)
            .where(Strategy.id == url.strategy.id)
            .values(name=name, name_key=name.casefold())
        )


async def test_the_signal_received_line_gives_the_price_as_sent(core: Core) -> None:
    """It was cut to cents as an amount of money: "at $0.00" for a coin at 0.00001234."""
    url = await make_strategy(core, name="Meme")
    await core.strategies.set_alert_channel(GUILD, 777)
    for ticker, price in (("SHIBUSD", "0.00001234"), ("AAPL", "270.285")):
        await send(core, url, {"ticker": ticker, "action": "buy", "price": price, "test": True})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    received = [p for p in posts if "signal received" in p]
    assert len(received) == 2, posts
    assert "at $0.00001234" in received[0] and "at $270.285" in received[1], received


async def test_alerts_name_only_members_who_opted_in_and_leak_no_account_data(core: Core) -> None:
    url = await make_strategy(core, name="Breakout")
    # /strategy create refuses "@" now; a name saved before that must still ping nobody.
    await named_before_the_rule(core, url, "Breakout @everyone")
    await core.strategies.set_alert_channel(GUILD, 777)
    for member in (ALICE, BOB):
        await core.strategies.share(GUILD, OWNER, url.strategy.id, member)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "Alice <@999> @here")
    await subscribe(core, url, ALICE)
    await subscribe(core, url, BOB, sizing_value=Decimal(100000))  # far beyond buying power
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2  # the signal, then every subscriber's result in one post
    received, results = posts
    assert "signal received" in received and "BUY AAPL" in received
    alice = next(line for line in results.splitlines() if "Filled" in line)
    bob = next(line for line in results.splitlines() if "Rejected" in line)
    assert "Alice" in alice and "<@999>" not in alice and "@here" not in alice
    assert "A subscriber" in bob and "Alice" not in bob
    assert "insufficient-buying-power" in bob
    account = (await core.connections.resolve(BOB, None, "paper")).account.account_id
    for text in posts:
        assert "@everyone" not in text
        assert account not in text and "TCP" not in text
        assert "buying power" not in text.lower() and "equity" not in text.lower()
        assert "$100,000" not in text
    dms = {uid: m.content or "" for uid, m in notifier(core).dms}
    assert set(dms) == {ALICE, BOB}
    assert "Filled: buy 1 AAPL" in dms[ALICE] and ack.body["id"] in dms[ALICE]
    assert "buying power" in dms[BOB].lower()  # the member's own DM says why


async def test_a_member_named_in_one_servers_alerts_is_a_subscriber_in_anothers(
    core: Core,
) -> None:
    """Opting in in one server named the member everywhere, with that server's nickname."""
    other_guild = GUILD + 1
    here = await make_strategy(core, name="Here")
    there = await core.strategies.create(other_guild, OWNER, "There")
    await core.strategies.set_alert_channel(GUILD, 777)
    await core.strategies.set_alert_channel(other_guild, 888)
    await core.strategies.share(GUILD, OWNER, here.strategy.id, ALICE)
    await core.strategies.share(other_guild, OWNER, there.strategy.id, ALICE)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "Alice (here)")
    await subscribe(core, here, ALICE)
    await core.subscriptions.subscribe(
        other_guild, ALICE, there.strategy.id, settings=SubscriptionSettings()
    )
    for url in (here, there):
        await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    posts = {
        channel: m.content or ""
        for channel, m in notifier(core).posts
        if "Filled" in (m.content or "")
    }
    assert "Alice \\(here\\)" in posts[777]  # markdown escaped
    assert "Alice" not in posts[888] and "A subscriber" in posts[888], posts[888]


async def test_a_signal_every_subscriber_skips_says_so_in_the_channel(core: Core) -> None:
    """Before: "signal received", then nothing: an admin could not tell skipped from stuck.
    Now one line counts the skips by reason, naming nobody (not even who opted in)."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    for member in (ALICE, BOB):
        await core.strategies.share(GUILD, OWNER, url.strategy.id, member)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "Alice")
    for member in (OWNER, ALICE):
        await hold(core, member, "AAPL", "5")
        await subscribe(core, url, member)
    await subscribe(core, url, BOB, sides="short")
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2, posts
    assert posts[1] == (
        "**NQ breakout** ⏭️ No order placed · 3 subscribers skipped this signal "
        "(already-in-position ×2, side-not-allowed). Each subscriber's DM says why; its owner "
        f"and subscribers see every step with /signal show `{ack.body['id'][-8:]}`."
    )
    account = (await core.connections.resolve(ALICE, None, "paper")).account.account_id
    assert "Alice" not in posts[1] and account not in posts[1]
    # One that places an order has its own line: no "no order placed" beside it.
    await core.subscriptions.subscribe(
        GUILD, BOB, url.strategy.id, settings=SubscriptionSettings(sides="both")
    )
    await send(core, url, {"ticker": "AAPL", "action": "buy", "extras": {"again": 1}})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 4 and "Filled" in posts[3] and "No order placed" not in posts[3], posts
    # Nobody trading it: said too, with how members join.
    alone = await make_strategy(core, name="Nobody yet")
    await send(core, alone, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-1] == (
        "**Nobody yet** ⏭️ No order placed · no subscription trades this strategy (none yet, or "
        "all paused). Members subscribe with /subscribe."
    ), posts
    # A test signal's "nothing will be placed" was said when it arrived.
    await send(core, url, {"ticker": "AAPL", "action": "buy", "test": True})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 7 and "test" in posts[6], posts


async def test_a_signal_waiting_for_approval_says_so_in_the_channel(core: Core) -> None:
    """Before: "signal received", then nothing until someone approved (and nothing at all if
    they declined or let it expire)."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, OWNER, manual_approval=True)
    await subscribe(core, url, ALICE, sides="short")
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2, posts
    assert posts[1] == (
        "**NQ breakout** 🕓 No order placed yet · 1 subscriber was asked to approve this signal "
        "in a DM; 1 skipped it (side-not-allowed). Its owner and subscribers see every step "
        f"with /signal show `{ack.body['id'][-8:]}`."
    )


async def test_a_rejection_dm_gives_the_brokers_reason_once(core: Core) -> None:
    """The rejected order's own text carries the broker's reason: the DM said it twice."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(100000))  # beyond buying power
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.REJECTED
    [dm] = [m.content or "" for uid, m in notifier(core).dms if uid == OWNER]
    assert "Rejected: buy 100,000 AAPL. Not enough buying power" in dm, dm
    assert dm.lower().count("not enough buying power") == 1, dm


async def test_a_refusal_before_any_order_is_posted_to_the_channel(core: Core) -> None:
    """Refused before the broker has an order (a buy stop the market is already above): the
    channel still hears the subscriber's result, without the member's name unless they opted
    in."""
    core.simulated_feed.set_quote("BTCUSD", Decimal(49990), Decimal(50010))
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "Alice")
    await subscribe(core, url, OWNER)
    alice = await subscribe(core, url, ALICE)
    stop = {"orderType": "stop", "stopPrice": 40000}
    ack = await send(core, url, {"ticker": "BTCUSD", "action": "buy", **stop})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], alice)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    assert await intents(core) == []
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2, posts
    lines = sorted(posts[1].splitlines()[1:])
    assert lines == [
        "⛔ Not placed · A subscriber (paper): buy 1 BTCUSD stop at $40,000.00 (invalid-order)",
        "⛔ Not placed · Alice (paper): buy 1 BTCUSD stop at $40,000.00 (invalid-order)",
    ]
    account = (await core.connections.resolve(ALICE, None, "paper")).account.account_id
    assert account not in posts[1]


async def test_a_refused_reversal_names_its_legs_in_the_channel(core: Core) -> None:
    """Before: "⛔ Not placed · A subscriber (paper): buy 1 AAPL; buy 1 AAPL (invalid-order)":
    one order said twice, without the price that was refused."""
    await hold(core, OWNER, "AAPL", "1", side="sell")
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="stop", stopPrice="150")
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "invalid-order")
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-1] == (
        "**NQ breakout** ⛔ Not placed · A subscriber (paper): exit: buy 1 AAPL stop at $150.00; "
        "entry: buy 1 AAPL stop at $150.00 (invalid-order)"
    )


async def test_an_order_whose_answer_was_lost_says_what_happens_next(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the DM's head was the raw "• unconfirmed", with no word of what comes next,
    and the channel heard nothing after "signal received"."""

    async def lost(self: PaperBroker, *_: Any, **__: Any) -> None:
        raise BrokerUnavailable(maybe_sent=True)

    monkeypatch.setattr(PaperBroker, "create_order", lost)
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.UNCONFIRMED
    [(_, dm)] = notifier(core).dms
    assert (dm.content or "").splitlines()[:3] == [
        "⏳ Not confirmed yet: **NQ breakout** → Tradecord Paper (paper)",
        "Still checking with the broker: buy 1 AAPL.",
        "Tradecord never sends it twice: you will get a DM once the broker says how it ended. "
        "See /orders meanwhile.",
    ]
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-1] == "**NQ breakout** ⏳ Not confirmed yet · A subscriber (paper): buy 1 AAPL"


async def test_a_member_who_takes_no_dms_still_has_their_result_posted(core: Core) -> None:
    """Discord refuses DMs to members who closed them: the channel still hears their result."""

    class ClosedDms(RecordingNotifier):
        async def dm(self, discord_user_id: int, message: Outgoing) -> None:
            if discord_user_id == ALICE:
                raise RuntimeError("403 Forbidden: Cannot send messages to this user")
            await super().dm(discord_user_id, message)

    core.notifier = ClosedDms()
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "Alice")
    alice = await subscribe(core, url, ALICE)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    assert (await execution(core, ack.body["id"], alice)).status == ExecutionStatus.FILLED
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2, posts
    assert "Filled · Alice (paper): buy 1 AAPL" in posts[1]


async def test_an_alert_channel_that_refuses_posts_is_reported_to_the_owner_once(
    core: Core,
) -> None:
    """Deleted, or Tradecord's permission taken away: signals still trade, and the strategy's
    owner hears of it once, not at every signal, until a post there works again."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    alice = await subscribe(core, url, ALICE)
    notifier(core).unavailable.add(777)

    def warnings() -> list[str]:
        return [
            m.content or ""
            for uid, m in notifier(core).dms
            if uid == OWNER and "cannot be posted in <#777>" in (m.content or "")
        ]

    for action in ("buy", "sell"):
        ack = await send(core, url, {"ticker": "AAPL", "action": action, "extras": {"n": 1}})
        await core.jobs.drain()
        assert (await execution(core, ack.body["id"], alice)).status == ExecutionStatus.FILLED
    [warning] = warnings()
    assert "/alerts-channel" in warning and "**NQ breakout**" in warning
    assert not any(uid == ALICE and "<#777>" in (m.content or "") for uid, m in notifier(core).dms)

    notifier(core).unavailable.clear()  # an admin fixed the permissions
    await send(core, url, {"ticker": "AAPL", "action": "buy", "extras": {"n": 2}})
    await core.jobs.drain()
    notifier(core).unavailable.add(777)  # and it broke again: that is news again
    await send(core, url, {"ticker": "AAPL", "action": "sell", "extras": {"n": 2}})
    await core.jobs.drain()
    assert len(warnings()) == 2


async def test_a_slow_alert_channel_does_not_hold_up_the_orders(core: Core) -> None:
    """Discord slow or down (429s, 5xx retries): "signal received" is posted while the
    subscriptions trade, and still before their results."""
    released, told = asyncio.Event(), asyncio.Event()

    class SlowChannel(RecordingNotifier):
        async def post(self, channel_id: int, message: Outgoing) -> None:
            await released.wait()
            await super().post(channel_id, message)

        async def dm(self, discord_user_id: int, message: Outgoing) -> None:
            await super().dm(discord_user_id, message)
            told.set()  # the member's result: their order was placed

    core.notifier = SlowChannel()
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await subscribe(core, url, OWNER)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    draining = asyncio.create_task(core.jobs.drain())
    try:
        await asyncio.wait_for(told.wait(), 5)
        assert len(await orders(core)) == 1
    finally:
        released.set()
        await draining
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2 and "signal received" in posts[0] and "Filled" in posts[1], posts
    assert ack.body["id"]


async def test_slow_dms_do_not_hold_up_the_rest_of_a_fan_out(core: Core) -> None:
    """Past the fan-out's concurrency, the next subscriptions trade while earlier members'
    DMs wait on Discord (DMs to hundreds of members run into its rate limits)."""
    released, second = asyncio.Event(), asyncio.Event()

    class SlowDms(RecordingNotifier):
        async def dm(self, discord_user_id: int, message: Outgoing) -> None:
            if discord_user_id == OWNER:
                await released.wait()
            await super().dm(discord_user_id, message)
            if discord_user_id == ALICE:
                second.set()

    core.signals.fanout_concurrency = 1
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    core.notifier = SlowDms()  # after the DM that tells her it is shared
    await subscribe(core, url, OWNER)
    await subscribe(core, url, ALICE)
    await send(core, url, {"ticker": "AAPL", "action": "buy"})
    draining = asyncio.create_task(core.jobs.drain())
    try:
        await asyncio.wait_for(second.wait(), 5)
        assert len(await orders(core)) == 2
    finally:
        released.set()
        await draining


async def test_a_test_signal_is_planned_but_never_placed(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(3))
    ex = await run(core, url, sub, action="buy", test=True)
    assert ex.status == ExecutionStatus.TEST and "buy 3 AAPL" in (ex.reason or "")
    assert await orders(core) == [] and await count(core, OrderIntent) == 0


async def test_a_test_signal_that_would_do_nothing_says_so_plainly(core: Core) -> None:
    """Before: "Test signal, nothing placed. Would: Already long AAPL; send action add to add to
    it." — a note read as if it were the trade."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    await run(core, url, sub, action="buy")
    ex = await run(core, url, sub, action="buy", test=True)
    assert ex.status == ExecutionStatus.TEST
    assert ex.reason == (
        "Nothing placed, and a real one would place nothing either: Already long AAPL; send "
        "action add to add to it."
    )


async def test_a_test_signals_dm_says_test_once_and_ends_its_sentence(core: Core) -> None:
    """Before: "🧪 Test signal: ..." then "Test signal, nothing placed. Would: exit: sell 1
    AAPL; then sell 1 AAPL", the test said twice and the sentence left open."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    await run(core, url, sub, action="buy")
    told = len(notifier(core).dms)
    await run(core, url, sub, action="sell", test=True)
    [(_, dm)] = notifier(core).dms[told:]
    lines = (dm.content or "").splitlines()
    assert lines[:2] == [
        "🧪 Test signal: **NQ breakout** → Tradecord Paper (paper)",
        "Nothing placed. A real one would: exit: sell 1 AAPL; then sell 1 AAPL.",
    ]
    assert (dm.content or "").lower().count("test") == 1


async def test_an_add_with_no_position_says_which_sentiments_would_open_one(core: Core) -> None:
    """Before: "No open AAPL position to add to; send a sentiment to open one." — which
    sentiment (flat opens nothing) was left to guess."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="add", quantity=1)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "no-position-to-add-to")
    assert ex.reason == (
        "No open AAPL position to add to. An add opens one only when it says which way: "
        "sentiment bullish (long) or bearish (short)."
    )
    opened = await run(core, url, sub, action="add", quantity=1, sentiment="bullish")
    assert opened.status == ExecutionStatus.FILLED


async def test_paused_subscriptions_and_unshared_members(core: Core) -> None:
    url = await make_strategy(core)
    with pytest.raises(NotFound):
        await subscribe(core, url, ALICE)  # not shared with Alice
    sub = await subscribe(core, url, OWNER)
    await core.subscriptions.set_enabled(OWNER, sub, False)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    assert await count(core, SignalExecution) == 0 and await orders(core) == []
    assert ack.status == 202


# -- nothing lost, nothing doubled ----------------------------------------------------------


async def test_a_signal_acknowledged_by_a_process_that_died_runs_once_elsewhere(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    sub = await subscribe(first, url, OWNER, sizing_value=Decimal(2))
    ack = await send(first, url, {"ticker": "AAPL", "action": "buy"})
    assert ack.status == 202
    await first.close()  # no worker ever ran in that process

    second = await open_core(settings, clock)
    try:
        assert await second.jobs.drain() == 1
        assert await second.jobs.drain() == 0
        assert (await execution(second, ack.body["id"], sub)).status == ExecutionStatus.FILLED
        assert sides_and_quantities(await orders(second)) == [("buy", 2)]
    finally:
        await second.close()


class Crash(BaseException):
    """The process dies here (not an error the code could handle)."""


async def die(*_: Any, **__: Any) -> Any:
    raise Crash


async def run_until_crash(core: Core, url: WebhookUrl, signal: dict[str, Any]) -> Ack:
    """Acknowledge ``signal`` and run its job in ``core`` until the process dies; close it."""
    ack = await send(core, url, signal)
    with pytest.raises(Crash):
        await core.jobs.drain()
    await core.close()
    return ack


async def test_a_job_whose_worker_died_after_ordering_is_retaken_without_a_second_order(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    sub = await subscribe(first, url, OWNER)
    ack = await send(first, url, {"ticker": "AAPL", "action": "buy"})
    [job] = await first.jobs.claim("doomed", 1)
    await first.signals.process(ack.body["id"])  # all effects happened...
    await first.close()  # ...and the worker died before marking the job done
    assert len(await orders_of(settings, clock)) == 1

    second = await open_core(settings, clock)
    try:
        assert await second.jobs.drain() == 0  # the lease still holds
        clock.advance(seconds=61)
        assert await second.jobs.drain() == 1
        [row] = await jobs(second)
        assert (row.id, row.status, row.attempts) == (job.id, JobStatus.DONE, 2)
        assert len(await orders(second)) == 1
        assert (await execution(second, ack.body["id"], sub)).status == ExecutionStatus.FILLED
    finally:
        await second.close()


async def test_a_worker_that_died_between_storing_and_sending_is_resumed_once(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    await hold(first, OWNER, "AAPL", "4")
    sub = await subscribe(first, url, OWNER, sizing_value=Decimal(3))

    first.trading.submit = die  # type: ignore[method-assign]
    ack = await run_until_crash(first, url, {"ticker": "AAPL", "action": "sell"})

    second = await open_core(settings, clock)
    try:
        [stored] = [i for i in await intents(second) if i.source == "signal"]
        assert stored.status == IntentStatus.PENDING and stored.idempotency_key.endswith(":exit")
        clock.advance(seconds=61)
        await second.jobs.drain()
        await second.jobs.drain()
        ex = await execution(second, ack.body["id"], sub)
        assert ex.status == ExecutionStatus.FILLED, ex.reason
        # One exit (the stored one, sent once) and one entry: the plan it started with.
        assert sides_and_quantities((await orders(second))[1:]) == [("sell", 4), ("sell", 3)]
        assert await position(second, OWNER, "AAPL") == -3
    finally:
        await second.close()


async def crash_before_the_channel_post(settings: Settings, clock: FakeClock) -> str:
    """Two subscribers trade a signal, then the process dies before its channel post."""
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    await first.strategies.set_alert_channel(GUILD, 777)
    await first.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(first, url, OWNER)
    await subscribe(first, url, ALICE, sizing_value=Decimal(2))
    first.signals.alerts.post_lines = die  # type: ignore[method-assign]
    ack = await run_until_crash(first, url, {"ticker": "AAPL", "action": "buy"})
    return str(ack.body["id"])


def channel_lines(core: Core) -> list[str]:
    """The subscribers' lines the alert channel got (one alone shares its post's first line)."""
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    lines = [line for post in posts for line in post.split("\n", 1)[-1].splitlines()]
    return sorted(line.removeprefix("**NQ breakout** ") for line in lines)


FILLED_LINES = [
    "✅ Filled · A subscriber (paper): buy 1 AAPL at $200.00 · simulated prices",
    "✅ Filled · A subscriber (paper): buy 2 AAPL at $200.00 · simulated prices",
]


async def test_results_recorded_before_the_process_died_are_posted_by_the_rerun(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    """Before: the lines waited in memory for the whole fan-out and died with the process;
    the retaken job found every subscription done and posted nothing."""
    await crash_before_the_channel_post(settings, clock)
    second = await open_core(settings, clock)
    try:
        clock.advance(seconds=61)
        assert await second.jobs.drain() == 1
        assert channel_lines(second) == FILLED_LINES
    finally:
        await second.close()


async def test_results_no_run_posted_are_posted_once_by_the_background_pass(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    await crash_before_the_channel_post(settings, clock)
    second = await open_core(settings, clock)
    try:
        assert await second.signals.alerts.post_leftovers() == 0  # a run may still post them
        clock.advance(seconds=150)
        assert await second.signals.alerts.post_leftovers() == 1
        assert channel_lines(second) == FILLED_LINES
        assert await second.jobs.drain() == 1  # the retaken job has none left to post
        assert await second.signals.alerts.post_leftovers() == 0
        assert channel_lines(second) == FILLED_LINES
    finally:
        await second.close()


async def test_results_discord_failed_to_take_are_tried_again_for_half_an_hour(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord down beyond discord.py's own retries: the results used to be dropped."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await subscribe(core, url, OWNER)
    recording = notifier(core)
    posts = recording.post

    async def outage(channel_id: int, message: Outgoing) -> None:
        raise RuntimeError("503 Service Unavailable")

    monkeypatch.setattr(recording, "post", outage)
    for action in ("buy", "sell"):
        await send(core, url, {"ticker": "AAPL", "action": action})
        await core.jobs.drain()
        clock.advance(minutes=20)
    assert await core.signals.alerts.post_leftovers() == 2  # both fail again...
    monkeypatch.setattr(recording, "post", posts)  # ...and Discord is back
    assert await core.signals.alerts.post_leftovers() == 1  # the first, 40 minutes old, is not
    [line] = channel_lines(core)
    assert line.startswith("✅ Filled · A subscriber (paper): exit: sell 1 AAPL"), line
    assert await core.signals.alerts.post_leftovers() == 0


async def test_an_order_stored_before_approval_was_switched_on_is_not_held_for_approval(
    settings: Settings, db: Database, clock: FakeClock
) -> None:
    """The worker died after storing the order to send; the member then switched manual
    approval on. The retaken job must not show the stored (pending, not draft) order on an
    approval card: declining it would say "nothing was placed" while the order stays pending
    and the reconciler sends it anyway. It carries the order it started through instead."""
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    sub = await subscribe(first, url, OWNER, sizing_value=Decimal(2))
    first.trading.submit = die  # type: ignore[method-assign]
    ack = await run_until_crash(first, url, {"ticker": "AAPL", "action": "buy"})

    second = await open_core(settings, clock)
    try:
        assert sub == await subscribe(
            second, url, OWNER, sizing_value=Decimal(2), manual_approval=True
        )
        clock.advance(seconds=61)
        assert await second.jobs.drain() == 1
        ex = await execution(second, ack.body["id"], sub)
        assert ex.status == ExecutionStatus.FILLED, (ex.status, ex.reason)
        assert sides_and_quantities(await orders(second)) == [("buy", 2)]
    finally:
        await second.close()


async def died_sending_two_orders(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, list[Subscription]]:
    """A signal to two subscriptions whose worker died once both orders were marked sent and
    before the broker got either; the signal's id and the subscriptions."""
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    await first.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    subs = [
        await subscribe(first, url, OWNER, sizing_value=Decimal(2)),
        await subscribe(first, url, ALICE, sizing_value=Decimal(3)),
    ]
    sending = asyncio.Barrier(2)

    async def die_once_both_are_sent(*_: Any, **__: Any) -> Any:
        await sending.wait()
        raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", die_once_both_are_sent)
        ack = await run_until_crash(first, url, {"ticker": "AAPL", "action": "buy"})
    return ack.body["id"], subs


async def sent_once_each(core: Core, signal_id: str, subs: list[Subscription]) -> None:
    for sub in subs:
        ex = await execution(core, signal_id, sub)
        assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert sorted(sides_and_quantities(await orders(core))) == [("buy", 2), ("buy", 3)]


async def test_an_order_a_dead_worker_was_sending_is_carried_on_after_a_pause(
    settings: Settings, db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pausing a subscription stops new signals, not a run under way: the retaken job
    settles the order the dead worker was sending and records the execution, instead of
    leaving it pending for ever while the reconciler marks the order failed unsent."""
    signal_id, subs = await died_sending_two_orders(settings, clock, monkeypatch)
    second = await open_core(settings, clock)
    try:
        await second.subscriptions.set_enabled(OWNER, subs[0], False)
        await second.subscriptions.set_enabled(ALICE, subs[1], False)
        clock.advance(seconds=61)
        assert await second.jobs.drain() == 1
        assert await second.trading.reconcile(older_than=timedelta(0)) == []
        await sent_once_each(second, signal_id, subs)
    finally:
        await second.close()


async def test_orders_whose_worker_died_while_sending_them_are_sent_once_by_the_retaken_job(
    settings: Settings, db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both subscriptions' intents are SUBMITTED and the broker got neither: the job, retaken
    when the dead worker's lease ends, looks each order up, finds nothing and sends it;
    meanwhile the reconciler leaves the job's intents alone (it would mark them failed)."""
    signal_id, subs = await died_sending_two_orders(settings, clock, monkeypatch)
    second = await open_core(settings, clock)
    try:
        stored = [i for i in await intents(second) if i.source == "signal"]
        assert [i.status for i in stored] == [IntentStatus.SUBMITTED] * 2
        with pytest.raises(Conflict, match="may still be under way"):
            await second.trading.resend_lost(stored[0])
        clock.advance(seconds=45)
        assert await second.trading.reconcile(older_than=timedelta(0)) == []
        for intent in stored:
            assert (await second.trading.get_intent(intent.id)).status == IntentStatus.SUBMITTED
        clock.advance(seconds=16)
        assert await second.jobs.drain() == 1
        await sent_once_each(second, signal_id, subs)
        async with second.db.session() as s:
            phases = list(
                await s.scalars(
                    select(AuditEvent.kind).where(AuditEvent.intent_id.in_([i.id for i in stored]))
                )
            )
        assert phases.count("order.submitted") == 4 and phases.count("order.resent") == 2
        with pytest.raises(Conflict):  # settled: nothing left to resend
            await second.trading.resend_lost(await second.trading.get_intent(stored[0].id))
    finally:
        await second.close()


async def test_a_job_retaken_before_a_dead_send_has_settled_waits_for_it_then_sends_once(
    settings: Settings, db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a lease shorter than the time a lost send takes to settle, the retaken job cannot
    yet tell "never reached the broker" from "still on its way": it neither resends nor gives
    up, but runs again once the send has surely ended (without spending an attempt)."""
    settings = settings.model_copy(update={"job_lease_seconds": 10})
    signal_id, subs = await died_sending_two_orders(settings, clock, monkeypatch)
    second = await open_core(settings, clock)
    try:
        clock.advance(seconds=11)
        assert await second.jobs.drain() == 1
        assert await orders(second) == []
        [job] = await jobs(second)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
        for sub in subs:
            assert (await execution(second, signal_id, sub)).status == ExecutionStatus.PENDING
        assert await second.trading.reconcile(older_than=timedelta(0)) == []
        assert await second.jobs.drain() == 0  # not before the send has settled
        clock.advance(seconds=20)
        assert await second.jobs.drain() == 1
        await sent_once_each(second, signal_id, subs)
        [job] = await jobs(second)
        assert (job.status, job.attempts) == (JobStatus.DONE, 2)
    finally:
        await second.close()


async def test_an_approved_order_whose_worker_died_while_sending_it_is_sent_once_by_its_job(
    settings: Settings, db: Database, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An approved signal's order is sent by its own job (``signal.approved``), not the
    signal's: the reconciler must leave it to that job too, or it marks the order failed
    (the broker has nothing yet) before the retaken job can look it up and send it."""
    first = await open_core(settings, clock)
    url = await make_strategy(first)
    sub = await subscribe(first, url, OWNER, manual_approval=True, sizing_value=Decimal(2))
    ex = await run(first, url, sub, action="buy")
    assert ex.status == ExecutionStatus.WAITING_APPROVAL
    [draft] = await intents(first)
    await first.signals.approve(draft.id, OWNER)
    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", die)
        with pytest.raises(Crash):
            await first.jobs.drain()
    await first.close()

    second = await open_core(settings, clock)
    try:
        assert (await second.trading.get_intent(draft.id)).status == IntentStatus.SUBMITTED
        clock.advance(seconds=45)  # the send has settled; the dead worker's lease has not
        assert await second.trading.reconcile(older_than=timedelta(0)) == []
        assert (await second.trading.get_intent(draft.id)).status == IntentStatus.SUBMITTED
        clock.advance(seconds=16)
        assert await second.jobs.drain() == 1
        ex = await execution(second, ex.signal_id, sub)
        assert ex.status == ExecutionStatus.FILLED, ex.reason
        assert sides_and_quantities(await orders(second)) == [("buy", 2)]
    finally:
        await second.close()


async def orders_of(settings: Settings, clock: FakeClock) -> list[Any]:
    c = await open_core(settings, clock)
    try:
        return await orders(c)
    finally:
        await c.close()


async def test_strategy_owner_sees_every_subscription_in_the_report(
    settings: Settings, db: Database
) -> None:
    from datetime import UTC, datetime

    clock = FakeClock(datetime.now(UTC))  # order phases are stamped by the real clock
    core = await open_core(settings, clock)
    try:
        url = await make_strategy(core)
        await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
        await subscribe(core, url, OWNER)
        await subscribe(core, url, ALICE, sides="short")
        ack: Ack = await send(
            core, url, {"ticker": "AAPL", "action": "buy", "time": clock().isoformat()}
        )
        await core.jobs.drain()
        report = await core.signals.signal_report(ack.body["id"], OWNER)
        assert report.viewer_is_owner and len(report.subscriptions) == 2
        assert [p.name for p in report.phases] == ["received", "validated", "processing", "done"]
        mine = next(r for r in report.subscriptions if r.member_discord_id == OWNER)
        names = [p.name for p in mine.phases]
        assert names[0] == "sized" and names[-1] == "entry filled"
        assert {"entry submitted", "entry accepted"} <= set(names)
        assert all(p.elapsed_ms >= 0 for p in mine.phases)
        assert mine.orders[0].status == "filled" and report.latency_ms == 0
        theirs = await core.signals.signal_report(ack.body["id"], ALICE)
        assert not theirs.viewer_is_owner
        [alice] = theirs.subscriptions
        assert (alice.status, alice.reason_code) == ("skipped", "side-not-allowed")
        with pytest.raises(NotFound):
            await core.signals.signal_report(ack.body["id"], BOB)
    finally:
        await core.close()


async def test_the_owner_sees_no_broker_message_of_another_members_order(core: Core) -> None:
    """Broker messages can quote a balance: the owner sees another member's refusal as its
    code, as the alert channel does; the member still sees their own in full."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, ALICE, sizing="fixed_quantity", sizing_value=Decimal(100_000))
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    [own] = (await core.signals.signal_report(ack.body["id"], ALICE)).subscriptions
    assert own.status == ExecutionStatus.REJECTED and "available" in (own.reason or "")
    [alice] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    assert alice.status == ExecutionStatus.REJECTED and alice.reason_code
    shown = [alice.reason, *(p.detail for p in alice.phases), *(o.error for o in alice.orders)]
    assert not [t for t in shown if t and "$" in t], shown


async def test_the_owner_sees_another_members_phases_by_name_only(core: Core) -> None:
    """A reversal's "exit filled" says the member's average price and P&L; "sized" can say
    their equity: the owner sees that the phases happened, not what they say."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await hold(core, ALICE, "AAPL", "5")
    await subscribe(core, url, ALICE, sizing="percent_of_equity", sizing_value=Decimal(1))
    ack = await send(core, url, {"ticker": "AAPL", "action": "sell"})
    await core.jobs.drain()
    [own] = (await core.signals.signal_report(ack.body["id"], ALICE)).subscriptions
    assert any(p.name == "exit filled" and p.detail for p in own.phases), own.phases
    [alice] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    assert "exit filled" in {p.name for p in alice.phases}
    assert [p for p in alice.phases if p.detail] == [], alice.phases


@pytest.mark.first
async def test_a_large_fan_out_posts_its_results_in_a_few_messages(core: Core) -> None:
    url = await make_strategy(core, name="Momentum")
    await core.strategies.set_alert_channel(GUILD, 777)
    members = [5000 + i for i in range(40)]
    for member in members:
        await core.strategies.share(GUILD, OWNER, url.strategy.id, member)
        await subscribe(core, url, member)
    await core.subscriptions.set_alerts_show_name(members[0], GUILD, True, "Dana")
    core.simulated_feed.set_quote("AAPL", Decimal("199.85"), Decimal("199.89"))
    await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2, posts
    lines = posts[1].splitlines()
    assert lines[0] == "**Momentum**"
    assert sorted(lines[1:]) == sorted(
        [
            "✅ Filled · Dana (paper): buy 1 AAPL at $199.87 · simulated prices",
            "✅ Filled · A subscriber (paper): buy 1 AAPL at $199.87 · simulated prices ×39",
        ]
    )
    assert len({uid for uid, _ in notifier(core).dms}) == 40  # each member still told privately


def test_a_digest_splits_at_discords_message_length_and_keeps_every_line() -> None:
    from bot.services.signal_alerts import ChannelDigest

    digest = ChannelDigest(777, "Scalper *v2*")
    names = [f"Member {i:03d}" for i in range(300)]
    for name in names:
        digest.add(f"✅ Filled · {name} (paper): buy 1 AAPL at $199.87")
    digest.add(f"✅ Filled · {names[0]} (paper): buy 1 AAPL at $199.87")
    messages = digest.messages()
    assert len(messages) > 1
    assert all(len(m) <= ChannelDigest.LIMIT for m in messages)
    assert all(m.startswith("**Scalper \\*v2\\***\n") for m in messages)
    lines = [line for m in messages for line in m.splitlines()[1:]]
    assert len(lines) == 300
    assert lines[0].endswith("×2") and not any(line.endswith("×2") for line in lines[1:])
    one = ChannelDigest(777, "Solo")
    one.add("✅ Filled · A subscriber (paper): buy 1 AAPL at $199.87")
    assert one.messages() == ["**Solo** ✅ Filled · A subscriber (paper): buy 1 AAPL at $199.87"]


async def test_a_resting_entry_that_fills_later_is_announced_once(core: Core) -> None:
    from bot.services.order_updates import OrderUpdates

    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.ACCEPTED
    core.simulated_feed.set_quote("AAPL", Decimal("149.00"), Decimal("149.50"))
    updates = OrderUpdates(core)
    assert await updates.sweep_paper() == 1
    await updates.sweep_paper()
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.FILLED
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 3
    assert "Order placed" in posts[1] and "Filled" in posts[2] and "buy 1 AAPL at $" in posts[2]


@pytest.mark.parametrize(
    ("signal", "terms"),
    [
        ({"orderType": "limit", "limitPrice": 150}, "buy 1 AAPL limit at $150.00"),
        ({"orderType": "stop", "stopPrice": 9999}, "buy 1 AAPL stop at $9,999.00"),
    ],
)
async def test_a_working_entry_says_its_price_in_the_channel_and_the_dm(
    core: Core, signal: dict[str, Any], terms: str
) -> None:
    """Before: "Order placed · A subscriber (paper): buy 1 AAPL" and "Accepted by the broker:
    buy 1 AAPL", the price the order waits for said nowhere."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", **signal)
    assert ex.status == ExecutionStatus.ACCEPTED
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-1].endswith(f"Order placed · A subscriber (paper): {terms}")
    [dm] = [m.content or "" for uid, m in notifier(core).dms if uid == OWNER]
    assert f"Accepted by the broker: {terms}.\n" in dm


@pytest.mark.parametrize("ending", ["cancelled", "expired"])
async def test_a_resting_entry_that_ends_unfilled_is_announced_as_such(
    core: Core, ending: str
) -> None:
    """Cancelled by a later cancel signal, or expired at the broker: said so, never
    "Rejected"."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.ACCEPTED
    [intent] = await intents(core)
    if ending == "cancelled":
        cancel = await run(core, url, sub, action="cancel")
        assert cancel.status == ExecutionStatus.DONE
    else:
        target = await core.connections.resolve(OWNER, None, "paper")
        adapter = await core.connections.adapter_for(target.connection)
        order = await adapter.fetch_order(target.ref, order_id=intent.broker_order_id)
        await adapter.close()
        order.status = OrderStatus.EXPIRED
        await core.trading.apply_order_state(intent, order)
    ex = await execution(core, ex.signal_id, sub)
    assert ex.status == {"cancelled": "cancelled", "expired": "order_expired"}[ending]
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert "Rejected" not in posts[-1]
    assert {"cancelled": "🚫 Cancelled", "expired": "⌛ Expired"}[ending] in posts[-1]
    assert "buy 1 AAPL" in posts[-1]


async def test_a_resting_entry_cancelled_after_a_partial_fill_says_what_filled(
    core: Core,
) -> None:
    """The subscriber holds what filled before the cancel: the channel says so, not just
    "Cancelled" as for an order that never traded."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER, sizing="fixed_quantity", sizing_value=Decimal(4))
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.ACCEPTED
    [intent] = await intents(core)
    assert intent.quantity == 4
    target = await core.connections.resolve(OWNER, None, "paper")
    adapter = await core.connections.adapter_for(target.connection)
    order = await adapter.fetch_order(target.ref, order_id=intent.broker_order_id)
    await adapter.close()
    order.status, order.filled_quantity = OrderStatus.PARTIALLY_FILLED, Decimal(2)
    order.average_fill_price = Decimal("149.5")
    await core.trading.apply_order_state(intent, order)
    order.status = OrderStatus.CANCELLED
    await core.trading.apply_order_state(intent, order)
    ex = await execution(core, ex.signal_id, sub)
    assert ex.status == ExecutionStatus.CANCELLED
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert "🟡 Partially filled" in posts[-2], posts
    assert "buy 4 AAPL limit at $150.00 (2 filled at $149.50)" in posts[-2], posts
    assert "🚫 Cancelled" in posts[-1]
    assert posts[-1].endswith("buy 4 AAPL (2 filled at $149.50) · simulated prices"), posts[-1]


async def test_a_fill_before_the_execution_is_recorded_is_not_lost(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order fills between placement and the execution's record: the update finds the
    execution still pending and leaves it to the run, which must record the fill."""
    from bot.services.order_updates import OrderUpdates

    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    sub = await subscribe(core, url, OWNER)
    finish = core.signals._finish

    async def fill_first(ctx: Any, result: Any) -> None:
        core.simulated_feed.set_quote("AAPL", Decimal("149.00"), Decimal("149.50"))
        assert await OrderUpdates(core).sweep_paper() == 1
        await finish(ctx, result)

    monkeypatch.setattr(core.signals, "_finish", fill_first)
    ex = await run(core, url, sub, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert len(posts) == 2 and "Filled" in posts[1] and "buy 1 AAPL at $" in posts[1]
    dm = [m.content or "" for uid, m in notifier(core).dms if uid == OWNER][-1]
    assert dm.startswith("✅ Filled")


async def test_the_snapshot_reads_positions_and_open_orders_at_once(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buy cancels the ticker's open orders first, so it reads both; at a real broker that
    is one round trip of waiting per subscriber instead of two."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(2))
    together = asyncio.Barrier(2)
    first: set[str] = set()

    def meeting(read: Any) -> Any:
        async def wait_for_the_other(self: PaperBroker, *args: Any) -> Any:
            if read.__name__ not in first:  # the snapshot's read; later ones pass
                first.add(read.__name__)
                await together.wait()  # only a concurrent read gets past this
            return await read(self, *args)

        return wait_for_the_other

    monkeypatch.setattr(PaperBroker, "fetch_positions", meeting(PaperBroker.fetch_positions))
    monkeypatch.setattr(PaperBroker, "fetch_open_orders", meeting(PaperBroker.fetch_open_orders))
    ex = await asyncio.wait_for(run(core, url, sub, action="buy"), 10)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert await position(core, OWNER, "AAPL") == 2


async def test_a_subscriber_is_served_by_one_adapter_from_snapshot_to_order(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order goes out through the adapter that read the snapshot: its account (and, at a
    real broker, its token) is read once per subscriber, not again for the order."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(2))
    made: list[int] = []
    adapter_for = core.connections.adapter_for

    async def counting(connection: Any) -> Any:
        made.append(connection.id)
        return await adapter_for(connection)

    monkeypatch.setattr(core.connections, "adapter_for", counting)
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert len(made) == 1


async def test_a_trailing_stop_signal_rests_at_paper_and_follows_the_price(core: Core) -> None:
    """TradingView's trailing exits: orderType trailing_stop with trailAmount or
    trailPercent."""
    core.simulated_feed.set_quote("AAPL", Decimal("200.00"), Decimal("200.00"))
    await hold(core, OWNER, "AAPL", "5")
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(5))
    ex = await run(core, url, sub, action="sell", orderType="trailing_stop", trailPercent=5)
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason
    [intent] = [i for i in await intents(core) if i.source == "signal"]
    assert (intent.order_type, intent.extra["trail_percent"]) == ("trailing_stop", "5")
    [order] = [o for o in await orders(core) if o.order_type == "trailing_stop"]
    assert (order.status, order.stop_price, order.trail_percent) == ("open", 190, 5)
    leg = Plan.from_json(ex.plan or {}).legs[0]  # as an approval card would say it
    assert leg.describe("AAPL") == "sell 5 AAPL trailing stop (5% behind the best price)"


async def test_the_signal_log_forgets_old_signals_but_not_orders_still_working(
    core: Core, clock: FakeClock
) -> None:
    """SIGNAL_LOG_DAYS: without it every webhook request stayed in the database for good."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    filled = await run(core, url, sub, action="buy")
    resting = await run(
        core,
        url,
        sub,
        ticker="MSFT",
        action="buy",
        orderType="limit",
        limitPrice=300,
        timeInForce="gtc",
    )
    assert (filled.status, resting.status) == (ExecutionStatus.FILLED, ExecutionStatus.ACCEPTED)
    refused = await send(core, url, {"ticker": "AAPL", "action": "hold"})
    assert refused.status == 400
    clock.advance(days=core.settings.signal_log_days - 1)
    assert await core.signals.purge_log() == 0  # not old enough yet
    clock.advance(days=2)
    recent = await send(core, url, {"ticker": "AAPL", "action": "buy", "extras": {"n": 2}})
    assert await core.signals.purge_log(batch=1) == 2  # in batches: the filled one, the refused
    async with core.db.session() as db:
        left = set(await db.scalars(select(ReceivedSignal.id)))
    assert left == {resting.signal_id, recent.body["id"]}
    assert await count(core, SignalExecution, SignalExecution.signal_id == filled.signal_id) == 0
    core.settings = core.settings.model_copy(update={"signal_log_days": 0})
    clock.advance(days=3650)
    assert await core.signals.purge_log() == 0  # 0 keeps everything


async def test_an_extended_hours_signal_places_an_extended_hours_limit(core: Core) -> None:
    """TradersPost's extendedHours: true was refused; it is a stock limit day order that may
    fill before the open and after the close, kept through the plan and the intent."""
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing_value=Decimal(2))
    ex = await run(
        core, url, sub, action="buy", orderType="limit", limitPrice=150, extendedHours=True
    )
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason
    [intent] = [i for i in await intents(core) if i.source == "signal"]
    assert intent.extra["extended_hours"] is True
    assert request_of(intent).extended_hours
    [order] = await orders(core)
    assert (order.order_type, order.limit_price, order.extended_hours) == ("limit", 150, True)
    leg = Plan.from_json(ex.plan or {}).legs[0]  # as an approval card would say it
    assert leg.describe("AAPL") == "buy 2 AAPL limit at $150.00, extended hours"
    # With no limitPrice the limit is the market price when the signal is processed.
    ex = await run(
        core, url, sub, ticker="MSFT", action="buy", orderType="limit", extendedHours=True
    )
    assert ex.status == ExecutionStatus.FILLED, ex.reason


async def test_two_strategies_entering_at_once_cannot_both_pass_max_positions(
    core: Core,
) -> None:
    """Two strategies' entries on one account at the same moment: each read no position, but
    the second sent counts the first (on its way or filled since the read), so only one
    enters."""
    first, second = await make_strategy(core, "AAPL"), await make_strategy(core, "MSFT")
    subs = [await subscribe(core, url, OWNER, max_positions=1) for url in (first, second)]
    acks = [
        await send(core, url, {"ticker": ticker, "action": "buy"})
        for url, ticker in ((first, "AAPL"), (second, "MSFT"))
    ]
    await core.jobs.drain()
    done = [await execution(core, a.body["id"], s) for a, s in zip(acks, subs, strict=True)]
    assert sorted(ex.reason_code or ex.status for ex in done) == [
        ExecutionStatus.FILLED,
        "max-strategy-positions",
    ]
    refused = next(ex for ex in done if ex.reason_code)
    assert "1 more on its way or just filled" in (refused.reason or ""), refused.reason
    assert [o.symbol for o in await orders(core)] in (["AAPL"], ["MSFT"])


async def test_a_working_entry_counts_toward_max_positions(core: Core) -> None:
    """An entry that is working (a limit below the market) is a position on its way: a
    second strategy's entry is refused until it ends."""
    first, second = await make_strategy(core, "AAPL"), await make_strategy(core, "MSFT")
    one = await subscribe(core, first, OWNER, max_positions=1)
    two = await subscribe(core, second, OWNER, max_positions=1)
    ex = await run(core, first, one, action="buy", orderType="limit", limitPrice=150)
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason
    ex = await run(core, second, two, ticker="MSFT", action="buy")
    assert ex.reason_code == "max-strategy-positions", ex.reason
    assert await position(core, OWNER, "MSFT") == 0


async def test_an_entry_working_on_a_coin_held_as_dust_counts_toward_max_positions(
    core: Core,
) -> None:
    """Orders on instruments held as dust were never counted: a 1,000 DOGE entry working
    beside $1 of DOGE let another strategy's MSFT entry through, two positions for a limit of
    one."""
    core.simulated_feed.set_quote("DOGEUSD", Decimal("0.10"), Decimal("0.10"))
    await hold(core, OWNER, "DOGEUSD", "10")  # $1.00 of DOGE: dust
    first, second = await make_strategy(core, "DOGE"), await make_strategy(core, "MSFT")
    one = await subscribe(core, first, OWNER, sizing_value=Decimal(1000), max_positions=1)
    two = await subscribe(core, second, OWNER, max_positions=1)
    ex = await run(
        core, first, one, ticker="DOGEUSD", action="buy", orderType="limit", limitPrice="0.05"
    )
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason
    ex = await run(core, second, two, ticker="MSFT", action="buy")
    assert ex.reason_code == "max-strategy-positions", (ex.status, ex.reason)
    assert await position(core, OWNER, "MSFT") == 0


async def test_an_approved_entry_counts_the_entries_working_when_it_is_approved(
    core: Core,
) -> None:
    """Max positions is counted when the member approves, with the entries sent meanwhile."""
    first, second = await make_strategy(core, "AAPL"), await make_strategy(core, "MSFT")
    manual = await subscribe(core, first, OWNER, manual_approval=True, max_positions=1)
    auto = await subscribe(core, second, OWNER, max_positions=1)
    ex = await run(core, first, manual, action="buy")
    assert ex.status == ExecutionStatus.WAITING_APPROVAL
    working = await run(
        core, second, auto, ticker="MSFT", action="buy", orderType="limit", limitPrice=300
    )
    assert working.status == ExecutionStatus.ACCEPTED, working.reason
    draft = next(i for i in await intents(core) if i.status == IntentStatus.DRAFT)
    await core.signals.approve(draft.id, OWNER)
    await core.jobs.drain()
    ex = await execution(core, ex.signal_id, manual)
    assert ex.reason_code == "max-strategy-positions", ex.reason
    assert await position(core, OWNER, "AAPL") == 0


# -- the subscription's entry order type ------------------------------------------------------


@pytest.mark.parametrize(
    ("entry_order", "action", "order_type", "limit"),
    [
        (None, "buy", "market", None),
        ("limit", "buy", "limit", Decimal("200.10")),  # at the ask
        ("limit 0.5%", "buy", "limit", Decimal("201.10")),  # 200.10 + 1.0005, on the cent
        ("limit 0.25", "sell", "limit", Decimal("199.65")),  # the bid less a quarter
    ],
)
async def test_entries_that_name_no_order_type_follow_the_subscription(
    core: Core, entry_order: str | None, action: str, order_type: str, limit: Decimal | None
) -> None:
    """TradersPost's entry order type: a marketable limit at the quote, with an allowance past
    it, caps what a fill may cost; it fills as a market order would while the quote holds."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, entry_order=entry_order)
    ex = await run(core, url, sub, action=action, quantity=2)
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    [order] = await orders(core)
    assert (order.order_type, order.limit_price) == (order_type, limit)


async def test_sizing_the_bracket_and_the_limit_price_from_one_quote(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dollar sizing, a bracket and a limit entry each need the quote: one request, not three
    (a broker's rate limit is per account, and a fan-out asks for every subscriber)."""
    asked: list[str] = []
    fetch_quote = PaperBroker.fetch_quote

    async def counted(self: PaperBroker, symbol: str) -> Any:
        asked.append(symbol)
        return await fetch_quote(self, symbol)

    monkeypatch.setattr(PaperBroker, "fetch_quote", counted)
    url = await make_strategy(core)
    sub = await subscribe(
        core,
        url,
        OWNER,
        sizing="dollar_amount",
        sizing_value=Decimal(1000),
        entry_order="limit",
        take_profit="5%",
    )
    ex = await run(core, url, sub, action="buy")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    assert asked == ["AAPL"]
    [entry, *_] = await orders(core)
    assert (entry.quantity, entry.limit_price) == (4, Decimal("200.10"))  # $1,000 at the ask


async def test_a_signal_that_names_its_order_type_keeps_it(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, entry_order="limit 1%")
    ex = await run(core, url, sub, action="buy", orderType="market")
    assert ex.status == ExecutionStatus.FILLED, ex.reason
    ex = await run(core, url, sub, ticker="MSFT", action="buy", orderType="limit", limitPrice=390)
    assert ex.status == ExecutionStatus.ACCEPTED, ex.reason  # below the ask: it works
    assert [(o.symbol, o.order_type, o.limit_price) for o in await orders(core)] == [
        ("AAPL", "market", None),
        ("MSFT", "limit", Decimal(390)),
    ]


async def test_two_cards_of_one_subscription_approved_one_after_the_other_enter_once(
    core: Core, clock: FakeClock
) -> None:
    """Before: both were placed as their cards said, and the member was long twice the size:
    the orders were planned from a position the first approval had changed."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True, sizing_value=Decimal(2))
    await run(core, url, sub, action="buy", time=clock().isoformat())
    clock.advance(seconds=5)
    await run(core, url, sub, action="buy", time=clock().isoformat())
    first, second = await core.signals.pending_approvals(OWNER)
    await core.signals.approve(first.intent_ids[0], OWNER)
    await core.jobs.drain()
    await core.signals.approve(second.intent_ids[0], OWNER)
    await core.jobs.drain()
    assert await position(core, OWNER, "AAPL") == 2
    ex = await execution(core, second.signal_id, sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "position-changed")
    assert "(it was 0, it is 2); nothing was placed" in (ex.reason or ""), ex.reason
    assert [
        i.status
        for i in await intents(core)
        if i.idempotency_key.startswith(f"signal:{second.signal_id}")
    ] in ([IntentStatus.DISCARDED], [])


async def test_an_approved_reversal_after_the_long_grew_places_nothing(core: Core) -> None:
    """Before: "exit: sell 1; then sell 1" (long 1 to short 1) approved after the member
    bought 4 more left them long 3, told "Filled"."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "1")
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    await run(core, url, sub, action="sell")
    [pending] = await core.signals.pending_approvals(OWNER)
    assert pending.summary == "exit: sell 1 AAPL; then sell 1 AAPL"
    await hold(core, OWNER, "AAPL", "4")
    await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    ex = await execution(core, pending.signal_id, sub)
    assert ex.reason_code == "position-changed", (ex.status, ex.reason)
    assert await position(core, OWNER, "AAPL") == 5


@pytest.mark.parametrize(
    "body",
    [
        {"action": "exit", "quantity": 10},
        {"action": "sell", "sentiment": "flat", "quantity": 10},
        {"action": "sell", "quantity": 10},  # a reversal: its exit is never held back
    ],
)
async def test_the_strategy_s_max_quantity_never_refuses_an_exit(
    core: Core, body: dict[str, Any]
) -> None:
    """Before: 400 quantity-over-limit at the webhook for any quantity over the strategy's
    limit, so a long 10 under a limit of 3 could not be closed by its strategy."""
    url = await make_strategy(core)
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, max_quantity=Decimal(3))
    await hold(core, OWNER, "AAPL", "10")
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ack = await send(core, url, {"ticker": "AAPL", **body})
    assert ack.status == 202, ack.body
    await core.jobs.drain()
    assert await position(core, OWNER, "AAPL") == 0
    ex = await execution(core, ack.body["id"], sub)
    if body["action"] == "sell" and "sentiment" not in body:
        assert ex.reason_code == "quantity-over-limit"  # the entry after it was capped


@pytest.mark.parametrize(
    ("held", "signal", "after"),
    [
        ("-10", {"action": "buy", "sentiment": "bullish"}, 3),  # was short 7
        ("10", {"action": "sell", "sentiment": "short"}, -3),  # was long 7
        ("10", {"action": "exit", "sentiment": "bearish"}, 0),  # was long 7
    ],
)
async def test_a_sentiment_leaves_no_position_on_the_other_side(
    core: Core, held: str, signal: dict[str, Any], after: int
) -> None:
    """signal-format: "bullish - Open position after trade should be bullish or flat" (and
    bearish the same). Before: the signal's quantity below the position made a partial exit,
    leaving 7 on the side the sentiment ruled out."""
    url = await make_strategy(core)
    await hold(
        core, OWNER, "AAPL", held.lstrip("-"), side="sell" if held.startswith("-") else "buy"
    )
    sub = await subscribe(core, url, OWNER, sizing="signal", sizing_value=Decimal(1))
    ex = await run(core, url, sub, quantity=3, **signal)
    assert ex.status == ExecutionStatus.FILLED, (ex.reason_code, ex.reason)
    assert await position(core, OWNER, "AAPL") == after


@pytest.mark.parametrize("action", ["exit", "sell"])
async def test_a_percent_of_the_position_exits_that_part_whatever_sizes_the_entries(
    core: Core, action: str
) -> None:
    """Before: under a fixed-quantity subscription the percent was ignored: "exit 50%" sold
    all 10, and "sell 50%" sold all 10 and then shorted 1."""
    url = await make_strategy(core)
    await hold(core, OWNER, "AAPL", "10")
    sub = await subscribe(core, url, OWNER, sizing="fixed_quantity", sizing_value=Decimal(1))
    ex = await run(core, url, sub, action=action, quantity=50, quantityType="percent_of_position")
    assert ex.status == ExecutionStatus.FILLED, (ex.reason_code, ex.reason)
    assert await position(core, OWNER, "AAPL") == 5


async def test_approving_while_the_connection_needs_re_linking_keeps_the_card_waiting(
    core: Core,
) -> None:
    """Before: "being placed", then the run was skipped for the re-link, the approval spent
    and its draft left "awaiting approval"."""
    from sqlalchemy import update as sql_update

    from bot.errors import LimitReached
    from bot.models import Connection, ConnectionStatus

    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    async with core.db.transaction() as s:
        await s.execute(
            sql_update(Connection)
            .where(Connection.id == draft.connection_id)
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )
    with pytest.raises(LimitReached, match="needs to be re-linked"):
        await core.signals.approve(draft.id, ALICE)
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.WAITING_APPROVAL


async def test_approving_orders_a_paper_reset_discarded_says_so(core: Core) -> None:
    """Before: "being placed", then "⛔ Rejected … buy 2 AAPL: discarded."."""
    from bot.errors import Conflict

    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    await core.trading.reset_paper(ALICE)
    with pytest.raises(Conflict, match="discarded since the card was sent"):
        await core.signals.approve(draft.id, ALICE)
    await core.jobs.drain()
    ended = await execution(core, ex.signal_id, sub)
    assert (ended.status, ended.reason_code) == (ExecutionStatus.SKIPPED, "orders-discarded")
    assert await orders(core) == []


async def test_a_subscription_ended_between_the_click_and_its_job_is_told_and_ended(
    core: Core,
) -> None:
    """Before: the run stayed "approved" for good, its draft "awaiting approval", and the DM
    the click had promised never came."""
    url, _, ex = await approval_signal(core)
    [draft] = await intents(core)
    approved = await core.signals.approve(draft.id, ALICE)
    assert "you will get a DM with the result" in approved.message
    told = len(notifier(core).dms)
    await core.subscriptions.unsubscribe(GUILD, ALICE, url.strategy.id)
    await core.jobs.drain()
    async with core.db.session() as s:
        ended = await s.get(SignalExecution, ex.id)
    assert ended is not None
    assert (ended.status, ended.reason_code) == (ExecutionStatus.SKIPPED, "subscription-ended")
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    dms = [m.content or "" for uid, m in notifier(core).dms[told:] if uid == ALICE]
    assert any("could not be placed: its subscription ended" in d for d in dms), dms
    assert await orders(core) == []


async def test_a_card_for_an_entry_the_subscription_no_longer_takes_is_not_approved(
    core: Core,
) -> None:
    """Before: a short entry's card approved after the member set sides:long still shorted."""
    from bot.errors import LimitReached

    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    await run(core, url, sub, action="sell")
    [pending] = await core.signals.pending_approvals(OWNER)
    assert pending.summary.startswith("sell 1 AAPL")
    await subscribe(core, url, OWNER, manual_approval=True, sides="long")
    with pytest.raises(LimitReached, match="takes long entries only now"):
        await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    assert await position(core, OWNER, "AAPL") == 0
