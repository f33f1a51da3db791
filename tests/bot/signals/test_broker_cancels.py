"""A signal's cancels at a real broker are requests: the order stays pending_cancel for a
moment, still holding its shares (the Alpaca emulator's ``cancel_delay``). The exit waits for
them to land, and a cancelled order that filled first stops the run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from adapters.alpaca import AlpacaAdapter
from adapters.models import OrderStatus
from bot.automation_models import ExecutionStatus
from bot.core import Core
from bot.db import Database
from bot.services.oauth import TokenSet
from bot.services.subscriptions import Sizing, SubscriptionSettings
from bot.settings import Settings, load_settings
from cogs.format import order_rows
from cogs.trading import cancelled_text
from emulators.alpaca import AlpacaEmulator
from emulators.alpaca.server import DEFAULT_CLIENT_ID
from tests.bot.conftest import stored_connection
from tests.bot.signals.conftest import (
    GUILD,
    OWNER,
    execution,
    make_strategy,
    notifier,
    open_core,
    send,
)
from tests.support import FakeClock

ACCOUNT = "PA3KX7T9QW2M"  # the emulator's "demo" paper account: 10 AAPL held


def account(alpaca: AlpacaEmulator) -> Any:
    return next(a for a in alpaca.broker.accounts.values() if a.account_number == ACCOUNT)


@pytest.fixture
async def alpaca() -> AsyncIterator[AlpacaEmulator]:
    emu = AlpacaEmulator()
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def core(
    settings: Settings, db: Database, clock: FakeClock, alpaca: AlpacaEmulator
) -> AsyncIterator[Core]:
    with_alpaca = load_settings(
        **{k: v for k, v in settings.model_dump().items() if v is not None},
        tradecord_alpaca_client_id=DEFAULT_CLIENT_ID,
        tradecord_alpaca_api_url=alpaca.api_url("live"),
        tradecord_alpaca_paper_api_url=alpaca.api_url("paper"),
        tradecord_alpaca_data_url=alpaca.data_url,
    )
    c = await open_core(with_alpaca, clock)
    c.trading.cancel_wait = 3.0
    yield c
    await c.close()


async def subscribed_to_alpaca(core: Core, alpaca: AlpacaEmulator) -> tuple[Any, int]:
    """OWNER's strategy, subscribed with OWNER's Alpaca paper account (as /connect stores it)."""
    token = alpaca.issue_token("demo", env="paper")
    await stored_connection(
        core,
        OWNER,
        TokenSet(token, None, None, "trading data"),
        broker="alpaca",
        name="Alpaca",
        settings={"environment": "paper"},
        accounts=[
            {"mode": "paper", "account_id": ACCOUNT, "account_type": "margin", "label": "paper"}
        ],
    )
    url = await make_strategy(core)
    sub = await core.subscriptions.subscribe(
        GUILD, OWNER, url.strategy.id, connection="Alpaca", settings=SubscriptionSettings()
    )
    return url, sub.id


async def protective_stop(alpaca: AlpacaEmulator) -> str:
    """A sell stop for the 10 AAPL held, placed outside Tradecord: it holds all 10 shares."""
    body = {
        "symbol": "AAPL",
        "qty": "10",
        "side": "sell",
        "type": "stop",
        "stop_price": "150",
        "time_in_force": "gtc",
    }
    headers = {"Authorization": f"Bearer {alpaca.issue_token('demo', env='paper')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(alpaca.api_url("paper") + "/v2/orders", json=body, headers=headers) as r,
    ):
        assert r.status == 200
        return str((await r.json())["id"])


async def test_an_exit_waits_for_the_cancel_of_the_stop_that_holds_its_shares(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    url, sub = await subscribed_to_alpaca(core, alpaca)
    stop = await protective_stop(alpaca)
    alpaca.cancel_delay = 0.3  # sent at once, the exit would be refused: 0 shares available
    ack = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.ACCEPTED, (ex.reason_code, ex.reason)
    assert alpaca.broker.orders[stop].status == "canceled"
    assert "AAPL" not in account(alpaca).positions
    assert [p["phase"] for p in ex.phases if p["phase"] == "cancelled"] == ["cancelled"]


async def test_a_stop_that_fills_before_its_cancel_lands_stops_the_exit(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """Selling again after the stop sold the position would open a short."""
    url, sub = await subscribed_to_alpaca(core, alpaca)
    stop = await protective_stop(alpaca)
    alpaca.cancel_delay = 0.3
    loop = asyncio.get_running_loop()

    def fill_once_pending(_: Any, event: dict[str, Any]) -> None:
        if event["event"] == "pending_cancel":  # right after the DELETE was answered
            loop.call_soon(alpaca.fill, stop, Decimal(10), Decimal("149.50"))

    alpaca.broker.listeners.append(fill_once_pending)
    ack = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "position-changed")
    assert "filled before its cancel went through" in (ex.reason or "")
    assert alpaca.broker.orders[stop].status == "filled"
    demo = account(alpaca)
    assert "AAPL" not in demo.positions  # flat, not short
    assert [o.id for o in alpaca.broker.orders.values() if o.account_id == demo.id] == [stop]


async def stop_fills_as_it_is_cancelled(
    alpaca: AlpacaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A protective stop that fills between the signal's look at the account and its cancel
    (the broker answers 422: already filled)."""
    stop = await protective_stop(alpaca)
    cancel = AlpacaAdapter.cancel_order

    async def filled_first(self: AlpacaAdapter, ref: Any, order_id: str) -> None:
        alpaca.fill(stop, Decimal(10), Decimal("149.50"))
        await cancel(self, ref, order_id)

    monkeypatch.setattr(AlpacaAdapter, "cancel_order", filled_first)


async def test_a_stop_that_fills_just_before_it_is_cancelled_stops_the_exit(
    core: Core, alpaca: AlpacaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop fills between the signal's look at the account and its cancel (422: already
    filled): that is a changed position too, not an order to skip."""
    url, sub = await subscribed_to_alpaca(core, alpaca)
    await stop_fills_as_it_is_cancelled(alpaca, monkeypatch)
    ack = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "position-changed")
    assert "AAPL" not in account(alpaca).positions  # flat, not short


async def test_cancel_reports_a_cancel_once_it_lands_or_that_it_is_still_pending(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    await subscribed_to_alpaca(core, alpaca)
    alpaca.cancel_delay = 0.2
    stop = await protective_stop(alpaca)
    _, [order] = await core.trading.cancel(OWNER, "Alpaca", "paper", [stop])
    assert order.status is OrderStatus.CANCELLED  # waited for it
    assert cancelled_text("Alpaca", [order]) == "Cancelled 1 open order on Alpaca."

    alpaca.cancel_delay, core.trading.cancel_wait = 1.0, 0.1
    stop = await protective_stop(alpaca)
    _, [order] = await core.trading.cancel(OWNER, "Alpaca", "paper", None)
    assert order.status is OrderStatus.OPEN  # pending_cancel: still working
    assert cancelled_text("Alpaca", [order]) == (
        "Cancelled 0 open orders on Alpaca. 1 more: cancel requested, not yet carried out by "
        "the broker (see /orders)."
    )
    _, _, [listed] = await core.trading.open_orders(OWNER, "Alpaca", "paper")
    assert listed.cancel_pending and listed.status is OrderStatus.OPEN
    assert order_rows([listed])[0][-1] == "cancel requested"  # what /orders shows


async def test_an_exit_is_not_sent_while_the_cancel_of_the_stop_is_still_pending(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """The stop could still fill after the exit: the position would be sold twice."""
    url, sub = await subscribed_to_alpaca(core, alpaca)
    stop = await protective_stop(alpaca)
    alpaca.cancel_delay, core.trading.cancel_wait = 5.0, 0.2
    ack = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "cancel-pending")
    assert "could still fill" in (ex.reason or "") and "0.2 s" in (ex.reason or "")
    assert alpaca.broker.orders[stop].status == "pending_cancel"
    demo = account(alpaca)
    assert [o.id for o in alpaca.broker.orders.values() if o.account_id == demo.id] == [stop]
    assert [p["phase"] for p in ex.phases if p["phase"] == "cancel pending"] == ["cancel pending"]


async def test_a_cancel_signal_says_when_the_broker_has_not_carried_it_out(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    url, sub = await subscribed_to_alpaca(core, alpaca)
    await protective_stop(alpaca)
    alpaca.cancel_delay, core.trading.cancel_wait = 5.0, 0.2
    ack = await send(core, url, {"ticker": "AAPL", "action": "cancel"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.DONE
    assert "had not carried it out after 0.2 s" in (ex.reason or "")
    # Not "Cancelled 1 open AAPL order." beside it: that one is still working.
    [dm] = [m.content or "" for uid, m in notifier(core).dms if ack.body["id"] in (m.content or "")]
    assert "Cancelled" not in dm and "had not carried it out" in dm, dm


async def test_a_cancel_signal_whose_order_filled_first_says_so(
    core: Core, alpaca: AlpacaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only open order fills between the signal's look at the account and its cancel:
    nothing was cancelled, and the member must learn that the order filled (the position
    changed), not that there was "no open position to exit"."""
    url, sub = await subscribed_to_alpaca(core, alpaca)
    await stop_fills_as_it_is_cancelled(alpaca, monkeypatch)
    ack = await send(core, url, {"ticker": "AAPL", "action": "cancel"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.SKIPPED, "position-changed")
    assert "filled before its cancel went through" in (ex.reason or "")
    assert "position to exit" not in (ex.reason or "")


# -- sizing at a broker with fractional shares ------------------------------------------------


async def dollar_sized(core: Core, alpaca: AlpacaEmulator) -> tuple[Any, int]:
    url, _ = await subscribed_to_alpaca(core, alpaca)
    sub = await core.subscriptions.subscribe(
        GUILD,
        OWNER,
        url.strategy.id,
        connection="Alpaca",
        settings=SubscriptionSettings(sizing=Sizing.DOLLAR_AMOUNT, sizing_value=Decimal(1000)),
    )
    alpaca.broker.set_quote("MSFT", Decimal("419.90"), Decimal("420.10"))
    return url, sub.id


async def msft_order_sent(
    core: Core, alpaca: AlpacaEmulator, url: Any, sub: int, body: dict[str, Any]
) -> Any:
    """Send ``body``, run it, and return the MSFT order it placed at Alpaca (the parent of a
    bracket's legs)."""
    ack = await send(core, url, {"ticker": "MSFT", **body})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status in (ExecutionStatus.FILLED, ExecutionStatus.ACCEPTED), (
        ex.reason_code,
        ex.reason,
    )
    [order] = [
        o for o in alpaca.broker.orders.values() if o.asset.symbol == "MSFT" and o.parent is None
    ]
    return order


@pytest.mark.parametrize(
    ("signal", "side"),
    [
        ({"action": "sell"}, "sell"),  # a short: Alpaca sells no fraction short
        ({"action": "buy", "takeProfit": {"limitPrice": 500}}, "buy"),  # no fractional bracket
        ({"action": "buy", "timeInForce": "gtc"}, "buy"),  # fractions are day orders only
    ],
)
async def test_dollar_sizing_uses_whole_shares_where_alpaca_takes_no_fraction(
    core: Core, alpaca: AlpacaEmulator, signal: dict[str, Any], side: str
) -> None:
    """$1,000 of MSFT at 420 is 2 shares for these orders, not 2.38…: Alpaca takes
    fractional shares only as long, simple, day orders."""
    url, sub = await dollar_sized(core, alpaca)
    order = await msft_order_sent(core, alpaca, url, sub, signal)
    assert (order.side, order.qty) == (side, Decimal(2))


async def test_dollar_sizing_buys_fractional_shares_at_alpaca(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    url, sub = await dollar_sized(core, alpaca)
    ack = await send(core, url, {"ticker": "MSFT", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status in (ExecutionStatus.FILLED, ExecutionStatus.ACCEPTED), (
        ex.reason_code,
        ex.reason,
    )
    [order] = [o for o in alpaca.broker.orders.values() if o.asset.symbol == "MSFT"]
    # 1000 / 420.10, to the 9 decimals Alpaca takes
    assert (order.side, order.qty) == ("buy", Decimal("2.380385622"))


async def test_risk_sizing_places_a_whole_share_bracket_at_alpaca(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """$110 of risk to a stop $4 under the midpoint: 27 shares (27.5 rounded down: Alpaca takes
    no fractional OTO order), sent as an OTO order (a stop-loss alone) whose leg is that stop."""
    url, _ = await subscribed_to_alpaca(core, alpaca)
    signal_sized = SubscriptionSettings(sizing=Sizing.SIGNAL)
    info = await core.subscriptions.subscribe(
        GUILD, OWNER, url.strategy.id, connection="Alpaca", settings=signal_sized
    )
    sub = info.id
    alpaca.broker.set_quote("MSFT", Decimal("419.90"), Decimal("420.10"))
    body = {
        "action": "buy",
        "quantityType": "risk_dollar_amount",
        "quantity": 110,
        "stopLoss": {"amount": 4},
    }
    order = await msft_order_sent(core, alpaca, url, sub, body)
    assert (order.side, order.qty, order.order_class) == ("buy", Decimal(27), "oto")
    assert [leg.stop_price for leg in order.legs if leg.stop_price is not None] == [Decimal(416)]
