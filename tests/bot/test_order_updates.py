"""Order updates reach the member once per change: broker streams (with drops), polling, paper
sweeps; and reminders before a fixed authorization ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import selectinload

from adapters.errors import BrokerUnavailable
from adapters.models import (
    AccountRef,
    Bracket,
    Environment,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
    TimeInForce,
)
from adapters.symbols import asset_class_of
from adapters.tradestation import TradeStationAdapter
from bot.core import Core
from bot.db import Database
from bot.errors import InvalidInput
from bot.models import (
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    Credential,
    IntentStatus,
    OrderIntent,
)
from bot.services.connections import Target
from bot.services.notify import RecordingNotifier
from bot.services.oauth import TokenSet
from bot.services.order_updates import OrderUpdates
from bot.services.tokens import remind_expiring
from bot.services.trading import Outcome
from bot.settings import Settings, load_settings
from emulators.alpaca import AlpacaEmulator
from emulators.alpaca.server import DEFAULT_CLIENT_ID as ALPACA_CLIENT_ID
from emulators.tradestation import TradeStationEmulator
from emulators.tradier import TradierEmulator
from tests.bot.conftest import MEMBER, connection, link, open_cores, stored_connection
from tests.support import FakeClock


def texts(notifier: RecordingNotifier) -> list[str]:
    return [m.content or "" for _, m in notifier.dms]


@contextlib.asynccontextmanager
async def supervised(core: Core) -> AsyncIterator[OrderUpdates]:
    """Order updates supervised as the background runs them (quicker), stopped on leaving."""
    updates = OrderUpdates(core, supervise_every=0.05, poll_start=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(updates.supervise(stop))
    try:
        yield updates
    finally:
        stop.set()
        await task


async def until_unwatched(updates: OrderUpdates) -> None:
    """Until no connection needs watching (every order and exit has ended)."""
    async with asyncio.timeout(10):
        while await updates.watched_connections():  # noqa: ASYNC110 - no event says
            await asyncio.sleep(0.02)


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Wait for a condition that no event announces (a DM recorded by a background task)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.fixture
async def core(settings: Settings, db: Database) -> AsyncIterator[Core]:
    c = await Core.open(settings, migrate=False)
    c.notifier = RecordingNotifier()
    yield c
    await c.close()


async def test_a_position_settled_at_expiry_is_told_to_its_owner_once(core: Core) -> None:
    clock = FakeClock()  # Tue 1 Dec 2026; ESZ26 stops trading Fri 18 Dec at 14:30 UTC
    core.connections.clock = clock
    core.simulated_feed.set_quote("ESZ26", Decimal("5899.75"), Decimal("5900.25"))
    target = await core.connections.resolve(1, None, "paper")
    req = OrderRequest("ESZ26", Side.SELL, Decimal(2), asset_class=asset_class_of("ESZ26"))
    assert (await core.trading.place(target, req, source="discord", idempotency_key="k")).ok
    core.simulated_feed.set_quote("ESZ26", Decimal("5889.75"), Decimal("5890.25"))
    notifier = core.notifier
    assert isinstance(notifier, RecordingNotifier)
    told = len(notifier.dms)
    updates = OrderUpdates(core)
    assert await updates.sweep_paper() == 0
    clock.at = datetime(2026, 12, 18, 14, 30, tzinfo=UTC)
    assert await updates.sweep_paper() == 1
    assert await updates.sweep_paper() == 0
    assert texts(notifier)[told:] == [
        "📝 Paper · Tradecord Paper: ESZ26 stopped trading, so your short position of 2 was "
        "settled at the final price $5,890.00 (buy 2 to close). · simulated prices"
    ]


async def linked_margin_account(core: Core, ts: TradeStationEmulator) -> Target:
    """The member's TradeStation connection, its margin account chosen for live trading."""
    cid = await link(core, ts)
    async with core.db.transaction() as s:
        s.add(
            ConnectionAccount(
                connection_id=cid,
                mode="live",
                account_id="11827342",
                account_type="margin",
                label="TS ••7342",
            )
        )
    return await core.connections.resolve(MEMBER, "TS", "live")


async def test_paper_fill_from_a_sweep_is_told_once(core: Core) -> None:
    feed = core.simulated_feed
    feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    target = await core.connections.resolve(1, None, "paper")
    req = OrderRequest(
        "AAPL",
        Side.BUY,
        Decimal(5),
        OrderType.LIMIT,
        TimeInForce.GTC,
        limit_price=Decimal("190"),
        asset_class=asset_class_of("AAPL"),
    )
    out = await core.trading.place(target, req, source="discord", idempotency_key="k1")
    assert out.intent.status == IntentStatus.ACCEPTED
    updates = OrderUpdates(core)
    assert await updates.sweep_paper() == 0
    feed.set_quote("AAPL", Decimal("188.90"), Decimal("189.10"))
    assert await updates.sweep_paper() == 1
    assert await updates.sweep_paper() == 0
    notifier = core.notifier
    assert isinstance(notifier, RecordingNotifier)
    # A resting limit fills at the quote once marketable: never through its price.
    assert texts(notifier) == [
        "📝 Paper order update: Filled: buy 5 AAPL at $189.00. · simulated prices"
    ]
    assert notifier.dms[0][0] == 1
    assert (await core.trading.get_intent(out.intent.id)).status == IntentStatus.FILLED


async def test_stream_partial_fills_and_a_dropped_stream(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
) -> None:
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        target = await linked_margin_account(core, ts)
        req = OrderRequest(
            "MSFT",
            Side.BUY,
            Decimal(10),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("300"),
            asset_class=asset_class_of("MSFT"),
        )
        out = await core.trading.place(target, req, source="discord", idempotency_key="ts1")
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
        order_id = out.intent.broker_order_id
        assert order_id
        updates = OrderUpdates(core, supervise_every=0.05, poll_start=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(updates.supervise(stop))
        await until(lambda: bool(ts.open_streams))
        ts.fill(order_id, 4, "300")
        await until(lambda: any("Partially filled: 4" in t for t in texts(notifier)))
        ts.drop_streams()
        ts.fill(order_id, 6, "300")  # fills while no stream is connected
        await until(lambda: any("Filled: buy 10 MSFT" in t for t in texts(notifier)))
        stop.set()
        await task
        kinds = [t.split(": ", 1)[1].split(":")[0] for t in texts(notifier)]
        assert kinds == ["Partially filled", "Filled"]  # each change once, nothing twice
        assert (await core.trading.get_intent(out.intent.id)).status == IntentStatus.FILLED
    finally:
        await core.close()


async def test_reminder_before_a_fixed_authorization_ends_is_sent_once(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
) -> None:
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    clock = FakeClock()
    core.connections.clock = clock
    try:
        cid = await link(core, ts)
        async with core.db.transaction() as s:
            cred = await s.get(Credential, cid)
            assert cred is not None
            cred.refresh_expires_at = clock() + timedelta(days=2)
        assert await remind_expiring(core) == 0
        clock.advance(hours=25)
        assert await remind_expiring(core) == 1
        assert await remind_expiring(core) == 0
        [(user, message)] = notifier.dms
        assert user == MEMBER and "/connect broker:TradeStation" in (message.content or "")
        assert "about 23 hours" in (message.content or "")
    finally:
        await core.close()


async def test_a_reminder_discord_did_not_take_is_sent_next_pass(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reminder was claimed, then its DM failed: that member was never reminded, and the
    error ended the pass for the members after them."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    clock = FakeClock()
    core.connections.clock = clock
    try:
        cid = await link(core, ts)
        async with core.db.transaction() as s:
            cred = await s.get(Credential, cid)
            assert cred is not None
            cred.refresh_expires_at = clock() + timedelta(hours=20)

        async def away(*_: Any, **__: Any) -> None:
            raise ConnectionError("Discord is away")

        with monkeypatch.context() as m:
            m.setattr(notifier, "dm", away)
            assert await remind_expiring(core) == 0
        clock.advance(hours=1)
        assert await remind_expiring(core) == 1
        assert [user for user, _ in notifier.dms] == [MEMBER]
    finally:
        await core.close()


async def test_a_poll_goes_on_past_an_order_the_broker_no_longer_has(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
) -> None:
    """One working order the broker has forgotten must not stop the poll (and the stream
    that follows it) for every other order of the connection."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = RecordingNotifier()
    try:
        target = await linked_margin_account(core, ts)
        placed = []
        for key in ("gone", "kept"):
            req = OrderRequest(
                "MSFT",
                Side.BUY,
                Decimal(10),
                OrderType.LIMIT,
                TimeInForce.GTC,
                limit_price=Decimal("300"),
                asset_class=asset_class_of("MSFT"),
            )
            out = await core.trading.place(target, req, source="discord", idempotency_key=key)
            assert out.intent.status == IntentStatus.ACCEPTED, out.message
            placed.append(out.intent)
        gone, kept = placed
        assert gone.broker_order_id and kept.broker_order_id
        del ts.world.orders[gone.broker_order_id]  # purged at the broker
        ts.fill(kept.broker_order_id, 10, "300")
        async with core.db.session() as s:
            conn = await s.scalar(
                select(Connection)
                .where(Connection.id == target.connection.id)
                .options(selectinload(Connection.accounts))
            )
        assert conn is not None
        adapter = await core.connections.adapter_for(conn)
        try:
            await OrderUpdates(core).poll(conn, adapter)
        finally:
            await adapter.close()
        assert (await core.trading.get_intent(kept.id)).status == IntentStatus.FILLED
        assert (await core.trading.get_intent(gone.id)).status == IntentStatus.ACCEPTED
    finally:
        await core.close()


async def test_a_poll_leaves_an_order_at_a_left_account_to_the_reconciler(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """The member chose another account since: asking it about the order finds nothing, on
    every poll; the reconciler follows the order at its own account."""
    [core] = await open_cores(ts_settings, 1)
    try:
        out = await _working_msft(core, ts, "left")
        cid = out.intent.connection_id
        await choose_cash_account(core, cid)
        async with core.db.session() as s:
            conn = await s.scalar(
                select(Connection)
                .where(Connection.id == cid)
                .options(selectinload(Connection.accounts))
            )
        assert conn is not None
        adapter = await core.connections.adapter_for(conn)
        try:
            with caplog.at_level("INFO", logger="tradecord.order_updates"):
                await OrderUpdates(core).poll(conn, adapter)
        finally:
            await adapter.close()
        assert "not found at the broker" not in caplog.text
        assert (await core.trading.get_intent(out.intent.id)).status == IntentStatus.ACCEPTED
    finally:
        await core.close()


def msft_limit(bracket: Bracket | None = None) -> OrderRequest:
    """A GTC limit order to buy 10 MSFT at 300, bracketed if ``bracket``."""
    return OrderRequest(
        "MSFT",
        Side.BUY,
        Decimal(10),
        OrderType.LIMIT,
        TimeInForce.GTC,
        limit_price=Decimal("300"),
        asset_class=asset_class_of("MSFT"),
        bracket=bracket,
    )


async def poll_now(core: Core, connection_id: int) -> None:
    """One poll of the connection's orders, as the watcher makes after a reconnect."""
    conn = await connection(core, connection_id)
    adapter = await core.connections.adapter_for(conn)
    try:
        await OrderUpdates(core).poll(conn, adapter)
    finally:
        await adapter.close()


async def choose_cash_account(core: Core, connection_id: int) -> None:
    """The member switches the connection's live account to the cash one (in /accounts)."""
    async with core.db.transaction() as s:
        chosen = await s.scalar(
            select(ConnectionAccount).where(
                ConnectionAccount.connection_id == connection_id, ConnectionAccount.mode == "live"
            )
        )
        assert chosen is not None
        chosen.account_id, chosen.account_type = "11827341", "cash"


async def _working_msft(core: Core, ts: TradeStationEmulator, key: str) -> Outcome:
    """A resting TradeStation limit order to buy 10 MSFT, accepted."""
    target = await linked_margin_account(core, ts)
    out = await core.trading.place(target, msft_limit(), source="discord", idempotency_key=key)
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    assert out.order is not None
    return out


async def test_an_older_update_never_moves_an_order_backwards(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """A stream event delivered late (a ``partial_fill`` after the next one, a ``new`` after a
    fill) or a poll that read the order before the stream's last event: the intent keeps its
    furthest state, and the member is not told an older one."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out = await _working_msft(core, ts, "late")
        assert out.order is not None
        cid = out.intent.connection_id

        def at(status: OrderStatus, filled: int) -> OrderUpdate:
            order = replace(
                out.order,  # type: ignore[arg-type]
                status=status,
                filled_quantity=Decimal(filled),
                average_fill_price=Decimal(300) if filled else None,
            )
            return OrderUpdate(order, status.value)

        await core.trading.apply_update(
            "tradestation", at(OrderStatus.PARTIALLY_FILLED, 6), connection_id=cid
        )
        await core.trading.apply_update(
            "tradestation", at(OrderStatus.PARTIALLY_FILLED, 4), connection_id=cid
        )
        await core.trading.apply_update("tradestation", at(OrderStatus.OPEN, 0), connection_id=cid)
        intent = await core.trading.get_intent(out.intent.id)
        assert (intent.status, intent.filled_quantity) == (IntentStatus.PARTIALLY_FILLED, 6)
        assert [t.split(": ", 1)[1] for t in texts(notifier)] == [
            "Partially filled: 6 of buy 10 MSFT at an average of $300.00."
        ]
    finally:
        await core.close()


async def test_a_cancel_after_a_partial_fill_says_what_filled(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out = await _working_msft(core, ts, "part-cancel")
        order_id = out.intent.broker_order_id
        assert order_id
        ts.fill(order_id, 4, "300")
        ts.world.cancel(order_id)
        conn = await connection(core, out.intent.connection_id or 0)
        adapter = await core.connections.adapter_for(conn)
        try:
            await OrderUpdates(core).poll(conn, adapter)
        finally:
            await adapter.close()
        intent = await core.trading.get_intent(out.intent.id)
        assert (intent.status, intent.filled_quantity) == (IntentStatus.CANCELLED, 4)
        assert [t.split(": ", 1)[1] for t in texts(notifier)] == [
            "Cancelled after filling 4 of buy 10 MSFT at $300.00."
        ]
    finally:
        await core.close()


async def test_an_order_replaced_in_tradestations_app_is_not_told_as_cancelled(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    # "UCH" (Replaced) names no successor: the intent ends, but the member cancelled nothing.
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out = await _working_msft(core, ts, "replaced")
        order_id = out.intent.broker_order_id
        assert order_id
        ts.fill(order_id, 4, "300")
        ts.world.mark_replaced(order_id)
        conn = await connection(core, out.intent.connection_id or 0)
        adapter = await core.connections.adapter_for(conn)
        try:
            await OrderUpdates(core).poll(conn, adapter)
        finally:
            await adapter.close()
        intent = await core.trading.get_intent(out.intent.id)
        assert (intent.status, intent.filled_quantity) == (IntentStatus.CANCELLED, 4)
        [told] = [t.split(": ", 1)[1] for t in texts(notifier)]
        assert told.startswith("Replaced at the broker after filling 4 of buy 10 MSFT at $300.00.")
        assert "Cancelled" not in told and "broker's app" in told
    finally:
        await core.close()


async def test_an_update_from_another_connections_stream_leaves_the_intent_alone(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """An order seen on one connection's stream that carries the client order id of an intent
    of another connection is not that intent's order (another account, another member)."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out = await _working_msft(core, ts, "mine")
        other = await link(core, ts, member=MEMBER + 1)
        assert other != out.intent.connection_id
        stranger = replace(
            out.order,  # type: ignore[arg-type]
            id="999999",
            client_order_id=out.intent.client_order_id,
            status=OrderStatus.FILLED,
            filled_quantity=Decimal(10),
            average_fill_price=Decimal(290),
        )
        got = await core.trading.apply_update(
            "tradestation", OrderUpdate(stranger, "fill"), connection_id=other
        )
        assert got is None
        intent = await core.trading.get_intent(out.intent.id)
        assert intent.status == IntentStatus.ACCEPTED
        assert texts(notifier) == []
    finally:
        await core.close()


async def test_a_connection_that_needs_relinking_is_not_watched(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """Its token is refused until the member links it again: a watcher would only retry
    forever (and the supervisor would restart it). /connect makes it active again."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = RecordingNotifier()
    try:
        out = await _working_msft(core, ts, "relink")
        cid = out.intent.connection_id
        updates = OrderUpdates(core)
        assert await updates.watched_connections() == [cid]
        async with core.db.transaction() as s:
            conn = await s.get(Connection, cid)
            assert conn is not None
            conn.status = ConnectionStatus.NEEDS_REAUTH
        assert await updates.watched_connections() == []
    finally:
        await core.close()


async def test_a_state_overtaken_before_it_is_told_is_not_told(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """Two processes: one stores a partial fill of 6, the other the fill of all 10 and tells
    it; the first then tells what it stored. The member must not hear "Partially filled" after
    "Filled"."""
    core_a, core_b = await open_cores(ts_settings, 2)
    core_a.notifier = core_b.notifier = notifier = RecordingNotifier()
    try:
        out = await _working_msft(core_a, ts, "race")
        assert out.order is not None
        gate = asyncio.Event()
        stored = asyncio.Event()
        tell = core_a.trading._tell

        async def tell_late(
            intent: OrderIntent, *, simulated: bool | None = None, dm: bool = True
        ) -> None:
            stored.set()
            await gate.wait()
            await tell(intent, simulated=simulated, dm=dm)

        core_a.trading._tell = tell_late  # type: ignore[method-assign]
        partly = replace(
            out.order,
            status=OrderStatus.PARTIALLY_FILLED,
            filled_quantity=Decimal(6),
            average_fill_price=Decimal(300),
        )
        filled = replace(partly, status=OrderStatus.FILLED, filled_quantity=Decimal(10))
        first = asyncio.create_task(
            core_a.trading.apply_order_state(await core_a.trading.get_intent(out.intent.id), partly)
        )
        await stored.wait()
        await core_b.trading.apply_order_state(
            await core_b.trading.get_intent(out.intent.id), filled
        )
        gate.set()
        await first
        assert [t.split(": ", 1)[1] for t in texts(notifier)] == ["Filled: buy 10 MSFT at $300.00."]
    finally:
        await core_a.close()
        await core_b.close()


@pytest.fixture
async def alpaca() -> AsyncIterator[AlpacaEmulator]:
    emu = AlpacaEmulator()
    await emu.start()
    yield emu
    await emu.stop()


async def _alpaca_core(
    settings: Settings, alpaca: AlpacaEmulator
) -> tuple[Core, RecordingNotifier]:
    """A core that reaches the Alpaca emulator, with the member's paper connection there."""
    with_alpaca = load_settings(
        **{k: v for k, v in settings.model_dump().items() if v is not None},
        tradecord_alpaca_client_id=ALPACA_CLIENT_ID,
        tradecord_alpaca_api_url=alpaca.api_url("live"),
        tradecord_alpaca_paper_api_url=alpaca.api_url("paper"),
        tradecord_alpaca_data_url=alpaca.data_url,
    )
    [core] = await open_cores(with_alpaca, 1)
    core.notifier = notifier = RecordingNotifier()
    await stored_connection(
        core,
        MEMBER,
        TokenSet(alpaca.issue_token("demo", env="paper"), None, None, "trading data"),
        broker="alpaca",
        name="Alpaca",
        settings={"environment": "paper"},
        accounts=[
            {
                "mode": "paper",
                "account_id": "PA3KX7T9QW2M",
                "account_type": "margin",
                "label": "paper",
            }
        ],
    )
    return core, notifier


async def test_a_fill_while_the_stream_subscribes_is_told_without_waiting_for_the_reconciler(
    settings: Settings, db: Database, alpaca: AlpacaEmulator
) -> None:
    """Alpaca's ``trade_updates`` sends no snapshot: an order that fills after the watcher
    looked but before Alpaca subscribed the stream is in neither. The watcher polls once
    Alpaca answers ``listening``, so the member hears of it at once."""
    core, notifier = await _alpaca_core(settings, alpaca)
    try:
        target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
        req = OrderRequest(
            "AAPL",
            Side.BUY,
            Decimal(5),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("100"),
            asset_class=asset_class_of("AAPL"),
        )
        out = await core.trading.place(target, req, source="discord", idempotency_key="al1")
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
        order_id = out.intent.broker_order_id
        assert order_id
        alpaca.listen_gate = gate = asyncio.Event()
        async with supervised(core):
            # Authenticated and asked to listen, not yet subscribed: the fill is not sent.
            await until(lambda: alpaca.listens_received == 1)
            alpaca.fill(order_id, Decimal(5), Decimal("100"))
            gate.set()
            await until(lambda: any("Filled" in t for t in texts(notifier)), within=5)
            assert alpaca.listens_received == 1  # the first stream, not a reconnect
        kinds = [t.split(": ", 1)[1].split(":")[0] for t in texts(notifier)]
        assert kinds == ["Filled"]
        assert (await core.trading.get_intent(out.intent.id)).status == IntentStatus.FILLED
    finally:
        await core.close()


async def test_orders_are_polled_when_the_stream_fails_before_it_is_ready(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The poll waits for the stream to be subscribed; a stream that keeps failing before
    that must not leave working orders unchecked, nor have its failure hidden."""
    attempts = 0

    async def failing(
        self: TradeStationAdapter,
        accounts: list[AccountRef],
        *,
        ready: asyncio.Event | None = None,
    ) -> AsyncIterator[OrderUpdate]:
        nonlocal attempts
        attempts += 1
        raise BrokerUnavailable("stream down", vendor_code="test-stream-down")
        yield  # pragma: no cover - makes this an async generator

    monkeypatch.setattr(TradeStationAdapter, "stream_order_updates", failing)
    caplog.set_level("INFO", logger="tradecord.order_updates")
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out = await _working_msft(core, ts, "never-ready")
        assert out.intent.broker_order_id
        async with supervised(core):
            # The attempt (its failed stream, then its poll) is over once the pause is logged:
            # only a poll of a later attempt can see this fill.
            await until(lambda: "paused: broker-unavailable" in caplog.text)
            ts.fill(out.intent.broker_order_id, 10, "300")
            await until(lambda: any("Filled" in t for t in texts(notifier)), within=5)
        assert attempts >= 2  # told by the poll that followed a later failed attempt
    finally:
        await core.close()


async def _alpaca_bracket(
    settings: Settings, alpaca: AlpacaEmulator
) -> tuple[Core, RecordingNotifier, Outcome, Any]:
    """A core with an Alpaca paper connection and a resting bracketed buy of 5 AAPL there;
    the emulator's entry order."""

    core, notifier = await _alpaca_core(settings, alpaca)
    target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
    req = OrderRequest(
        "AAPL",
        Side.BUY,
        Decimal(5),
        OrderType.LIMIT,
        TimeInForce.GTC,
        limit_price=Decimal("10"),  # far below the market: it rests, as do its exits later
        asset_class=asset_class_of("AAPL"),
        bracket=Bracket(Decimal("1000"), Decimal("9"), None),
    )
    out = await core.trading.place(target, req, source="discord", idempotency_key="br1")
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    return core, notifier, out, alpaca.broker.orders[out.intent.broker_order_id or ""]


def _exit_told(out: Outcome) -> str:
    return (
        "📝 Paper bracket exit filled: the take-profit sell 5 AAPL at $1,000.50, the exit of "
        f"your buy 5 AAPL at $10.00 (intent {out.intent.id[:8]}). P&L +$4,952.50 before fees."
    )


async def test_an_alpaca_bracket_exit_filling_is_told_once_with_the_entry_it_closes(
    settings: Settings, db: Database, alpaca: AlpacaEmulator
) -> None:
    """Alpaca names a bracket's exits in the entry's create response; their fills come on the
    stream as orders of their own, which the member hears of once. Once both exits have ended
    (one filled, the other cancelled with it) the connection is no longer watched."""
    from bot.models import BracketExit

    core, notifier, out, entry = await _alpaca_bracket(settings, alpaca)
    try:
        async with core.db.session() as s:
            exits = set(await s.scalars(select(BracketExit.broker_order_id)))
        assert exits == {leg.id for leg in entry.legs} and len(exits) == 2
        async with supervised(core) as updates:
            await until(lambda: alpaca.listens_received >= 1)
            alpaca.fill(entry.id, Decimal(5), Decimal("10"))
            await until(lambda: any("Filled: buy 5 AAPL" in t for t in texts(notifier)))
            assert await updates.watched_connections()  # its exits are working
            take_profit = next(leg for leg in entry.legs if leg.type == "limit")
            alpaca.fill(take_profit.id, Decimal(5), Decimal("1000.50"))
            await until(lambda: any("bracket exit" in t for t in texts(notifier)))
            await until_unwatched(updates)
        assert [t for t in texts(notifier) if "bracket exit" in t] == [_exit_told(out)]
    finally:
        await core.close()


async def test_an_exit_fill_the_stream_missed_is_found_by_the_poll(
    settings: Settings, db: Database, alpaca: AlpacaEmulator
) -> None:
    core, notifier, out, entry = await _alpaca_bracket(settings, alpaca)
    try:
        alpaca.fill(entry.id, Decimal(5), Decimal("10"))
        take_profit = next(leg for leg in entry.legs if leg.type == "limit")
        alpaca.fill(take_profit.id, Decimal(5), Decimal("1000.50"))
        updates = OrderUpdates(core)
        target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
        assert await updates.watched_connections() == [target.connection.id]
        adapter = await core.connections.adapter_for(target.connection)
        try:
            await updates.poll(target.connection, adapter)
        finally:
            await adapter.close()
        assert [t for t in texts(notifier) if "bracket exit" in t] == [_exit_told(out)]
        assert await updates.watched_connections() == []
    finally:
        await core.close()


async def test_a_tradestation_bracket_exit_is_told_once_and_then_no_longer_watched(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """TradeStation lists a bracket's exits as the entry's OSO conditional orders."""
    from bot.models import BracketExit

    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        target = await linked_margin_account(core, ts)
        req = msft_limit(Bracket(Decimal("500"), Decimal("250")))
        out = await core.trading.place(target, req, source="discord", idempotency_key="tsb")
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
        async with supervised(core) as updates:
            await until(lambda: bool(ts.open_streams))
            ts.fill(out.intent.broker_order_id or "", 10, "300")
            await until(lambda: any("Filled: buy 10 MSFT" in t for t in texts(notifier)))
            async with core.db.session() as s:
                exits = list(await s.scalars(select(BracketExit.broker_order_id)))
            assert len(exits) == 2, exits
            take_profit = next(e for e in exits if ts.world.orders[e].limit_price == Decimal("500"))
            ts.fill(take_profit, 10, "500.25")
            await until(lambda: any("bracket exit" in t for t in texts(notifier)))
            await until_unwatched(updates)
        assert [t for t in texts(notifier) if "bracket exit" in t] == [
            "🔴 Live bracket exit filled: the take-profit sell 10 MSFT at $500.25, the exit of "
            f"your buy 10 MSFT at $300.00 (intent {out.intent.id[:8]}). P&L +$2,002.50 before "
            "fees."
        ]
    finally:
        await core.close()


async def tradier_live(core: Core, tradier: TradierEmulator) -> None:
    """MEMBER's connection "Tradier", trading live in the demo login's margin account."""
    live = Environment.LIVE
    grant = tradier.issue_tokens("id-demo", live)
    margin = next(
        x
        for x in tradier.accounts.values()
        if x.environment is live and x.type == "margin" and x.user_id == "id-demo"
    )
    await stored_connection(
        core,
        MEMBER,
        TokenSet(grant["access_token"], grant.get("refresh_token"), None, grant["scope"]),
        broker="tradier",
        name="Tradier",
        settings={"environment": "live"},
        accounts=[
            {
                "mode": "live",
                "account_id": margin.number,
                "account_type": "margin",
                "label": "Tradier margin",
            }
        ],
    )


async def test_a_tradier_bracket_exit_is_told_once_and_then_no_longer_watched(
    tradier_settings: Settings, db: Database, tradier: TradierEmulator
) -> None:
    """Tradier answers an otoco with one id and reads it back with its legs: the entry is the
    member's order, the exits (named by their legs' ids) are told as its exits."""
    from bot.models import BracketExit

    [core] = await open_cores(tradier_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        await tradier_live(core, tradier)
        target = await core.connections.resolve(MEMBER, "Tradier", "live")
        req = OrderRequest(
            "F",
            Side.BUY,
            Decimal(10),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("10.50"),  # below the market: it rests until the quote moves
            asset_class=asset_class_of("F"),
            bracket=Bracket(Decimal(12), Decimal(10)),
        )
        out = await core.trading.place(target, req, source="discord", idempotency_key="trb")
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
        (advanced,) = tradier.advanced.values()
        assert out.intent.broker_order_id == str(advanced.id)
        async with core.db.session() as s:
            exits = set(await s.scalars(select(BracketExit.broker_order_id)))
        assert exits == {str(leg) for leg in advanced.legs[1:]}
        async with supervised(core) as updates:
            await until(lambda: tradier.stream_count > 0)
            tradier.set_quote("F", "10.40", "10.45")  # the entry fills; its exits start
            await until(lambda: any("Filled: buy 10 F" in t for t in texts(notifier)))
            assert await updates.watched_connections()  # its exits are working
            tradier.set_quote("F", "12.00", "12.05")  # the take-profit fills
            await until(lambda: any("bracket exit" in t for t in texts(notifier)))
            await until_unwatched(updates)
        assert [t for t in texts(notifier) if "bracket exit" in t] == [
            "🔴 Live bracket exit filled: the take-profit sell 10 F at $12.00, the exit of "
            f"your buy 10 F at $10.45 (intent {out.intent.id[:8]}). P&L +$15.50 before fees."
        ]
        assert (await core.trading.get_intent(out.intent.id)).status == IntentStatus.FILLED
    finally:
        await core.close()


async def test_a_second_close_at_alpaca_beside_one_queued_for_the_open_is_refused(
    settings: Settings, db: Database, alpaca: AlpacaEmulator
) -> None:
    """With Alpaca's market shut, a /close queues until the open (accepted there, the position
    still held): a second /close is refused, the first found among Alpaca's open orders."""
    core, _ = await _alpaca_core(settings, alpaca)
    try:
        alpaca.broker.close_market()
        # The demo account's own AAPL.
        first, _ = await core.trading.close_preview(MEMBER, "AAPL", None, "Alpaca", "paper")
        held = first.position_quantity
        assert held > 0 and first.request.quantity == held
        sent = await core.trading.confirm(first.intent_id, MEMBER)
        assert sent.ok and sent.intent.status == IntentStatus.ACCEPTED, sent.message
        with pytest.raises(InvalidInput) as refused:
            await core.trading.close_preview(MEMBER, "AAPL", None, "Alpaca", "paper")
        assert (
            "your earlier close of AAPL is still working at the broker and closes all of your "
            f"{held:f} AAPL when filled"
        ) in refused.value.user_message, refused.value.user_message
        # /quote reads Alpaca's own quote.
        _, source, quote = await core.trading.quote(MEMBER, "msft", "Alpaca", "paper")
        assert (source, quote.symbol, quote.simulated) == ("Alpaca", "MSFT", False)
        assert 0 < quote.bid <= quote.ask
    finally:
        await core.close()


async def test_flatten_at_alpaca_cancels_a_brackets_exits_then_closes_the_position(
    settings: Settings, db: Database, alpaca: AlpacaEmulator
) -> None:
    """/flatten at a real broker's API: the exits resting at Alpaca are cancelled first, then
    the position is sold at the market, once per confirmation."""
    core, _, _, entry = await _alpaca_bracket(settings, alpaca)
    try:
        alpaca.fill(entry.id, Decimal(5), Decimal("10"))
        _, positions, orders = await core.trading.flatten_plan(MEMBER, "Alpaca", "paper")
        [held] = [p for p in positions if p.symbol == "AAPL"]  # the demo account's and these 5
        assert held.quantity >= 5
        assert sorted(o.id for o in orders) == sorted(leg.id for leg in entry.legs)
        done = await core.trading.flatten(MEMBER, "Alpaca", "paper", "press-1")
        assert done.not_cancelled == [] and done.not_closed == []
        assert {o.id for o in done.cancelled} == {leg.id for leg in entry.legs}
        assert all(o.status.is_final for o in done.cancelled)
        closed = {c.intent.symbol: c for c in done.closes}
        assert len(closed) == len(positions)
        close = closed["AAPL"]
        assert close.ok, close.message
        assert (close.intent.side, close.intent.quantity) == ("sell", held.quantity)
        assert close.intent.extra["position_average"] == str(held.average_price)
        sells = [
            o for o in alpaca.broker.orders.values() if o.side == "sell" and o.type == "market"
        ]
        assert len(sells) == len(positions)
        # A second press of the same confirmation (another process) neither cancels the
        # closes, which may still be working, nor places more.
        again = await core.trading.flatten(MEMBER, "Alpaca", "paper", "press-1")
        assert again.repeated and again.cancelled == [] and again.closes == []
        assert [o.status for o in sells if o.status == "canceled"] == []
        every_sell = [o for o in alpaca.broker.orders.values() if o.side == "sell"]
        assert len(every_sell) == len(sells) + len(entry.legs)
    finally:
        await core.close()


async def test_an_order_in_an_account_chosen_since_is_followed_by_the_running_watcher(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """Before: a watcher kept the accounts it started with for as long as the connection had
    working orders, so an order in the account chosen since (in /accounts, by any process)
    was neither streamed nor polled: its fill waited for the reconciler."""
    worker, bot = await open_cores(ts_settings, 2)
    worker.notifier = told = RecordingNotifier()
    bot.notifier = RecordingNotifier()
    updates = OrderUpdates(worker, supervise_every=0.05, poll_start=0.05)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None

    def limit(quantity: int) -> OrderRequest:
        return OrderRequest(
            "MSFT",
            Side.BUY,
            Decimal(quantity),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("300"),
            asset_class=asset_class_of("MSFT"),
        )

    try:
        margin = await linked_margin_account(bot, ts)
        cid = margin.connection.id
        resting = await bot.trading.place(margin, limit(5), source="discord", idempotency_key="a")
        assert resting.intent.status == IntentStatus.ACCEPTED, resting.message
        task = asyncio.create_task(updates.supervise(stop))
        async with asyncio.timeout(10):
            while not ts.open_streams:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await bot.connections.choose_account(MEMBER, cid, "live", "11827341")
        cash = await bot.connections.resolve(MEMBER, "TS", "live")
        new = await bot.trading.place(cash, limit(3), source="discord", idempotency_key="b")
        assert new.intent.status == IntentStatus.ACCEPTED and new.intent.broker_order_id
        ts.fill(new.intent.broker_order_id, 3, "300")
        async with asyncio.timeout(8):
            while not any("Filled: buy 3 MSFT" in (m.content or "") for _, m in told.dms):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        if task is not None:
            await task
        await worker.close()
        await bot.close()


async def test_an_unsent_tradestation_order_never_takes_another_intents_order_after_a_restart(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """TradeStation's orders carry no id of ours: a lost submission is found by what it was,
    and only the sending process's memory told two identical orders apart. Before: after a
    restart, the reconciler gave the second of two identical buys (its POST dropped) the first
    one's order, and told the member both filled."""
    from adapters.tradestation import JOURNAL
    from emulators.common import Fault

    JOURNAL.clear()
    [first] = await open_cores(ts_settings, 1)
    try:
        target = await linked_margin_account(first, ts)
        req = OrderRequest("MSFT", Side.BUY, Decimal(1), asset_class=asset_class_of("MSFT"))
        one = await first.trading.place(target, req, source="discord", idempotency_key="one")
        assert one.intent.broker_order_id, one.message
        ts.faults.add(Fault(kind="drop", path=r"/orderexecution/orders$", method="POST", times=1))
        two = await first.trading.place(target, req, source="discord", idempotency_key="two")
        assert two.intent.status == IntentStatus.UNKNOWN, two.message
    finally:
        await first.close()
    JOURNAL.clear()  # the process restarts
    [second] = await open_cores(ts_settings, 1)
    try:
        later = datetime.now(UTC) + timedelta(seconds=60)  # past SEND_SETTLED_AFTER
        second.trading.clock = second.connections.clock = lambda: later
        await second.trading.reconcile()
        after = await second.trading.get_intent(two.intent.id)
        assert after.broker_order_id != one.intent.broker_order_id
        assert after.status == IntentStatus.FAILED  # what the sending process concludes
        assert len(ts.orders_for("11827342")) == 1
    finally:
        await second.close()


async def test_two_processes_keep_one_tradier_event_session(
    tradier_settings: Settings, db: Database, tradier: TradierEmulator
) -> None:
    """Every process streamed every connection with working orders. Tradier allows one
    account-events session per login and a new one ends the last: two workers ended each
    other's stream every few seconds (7 sessions in 10 s) and re-polled every order at each
    reconnect, spending the member's 120 requests a minute."""
    a, b = await open_cores(tradier_settings, 2)
    for c in (a, b):
        c.notifier = RecordingNotifier()
    try:
        await tradier_live(a, tradier)
        target = await a.connections.resolve(MEMBER, "Tradier", "live")
        request = OrderRequest(
            "F",
            Side.BUY,
            Decimal(10),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("10.50"),
            asset_class=asset_class_of("F"),
        )
        out = await a.trading.place(target, request, source="discord", idempotency_key="k")
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
        stop = asyncio.Event()
        watchers = [OrderUpdates(c, supervise_every=0.2) for c in (a, b)]
        tasks = [asyncio.create_task(w.supervise(stop)) for w in watchers]
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*tasks)
        assert len(tradier.sessions) == 1, [s.superseded for s in tradier.sessions.values()]
    finally:
        await a.close()
        await b.close()


async def test_a_connection_is_followed_by_one_process_until_its_lease_lapses(
    settings: Settings, db: Database
) -> None:
    """The lease behind one watcher per connection: taken by the first process to ask, kept
    while renewed, given up when no longer wanted, and taken over once it has lapsed (a
    process that died)."""
    from bot.models import OrderWatcher

    one, two = await open_cores(settings, 2)
    try:
        cid = (await one.connections.resolve(MEMBER, None, "paper")).connection.id
        first, second = OrderUpdates(one), OrderUpdates(two)
        assert await first._lease({cid}) == {cid}
        assert await second._lease({cid}) == set()
        assert await first._lease({cid}) == {cid}  # renewed
        assert await first._lease(set()) == set()  # its orders ended: given up
        assert await second._lease({cid}) == {cid}
        async with one.db.transaction() as s:  # the second process stops renewing and dies
            lapsed = datetime.now(UTC) - timedelta(seconds=1)
            await s.execute(sa_update(OrderWatcher).values(lease_expires_at=lapsed))
        assert await first._lease({cid}) == {cid}
        assert await second._lease({cid}) == set()
    finally:
        await one.close()
        await two.close()
