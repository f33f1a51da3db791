"""Order updates heard in an awkward order or shape: a fill streamed before the broker's answer
to the POST, a bracket exit that ends after selling part, partial fills' prices, and the time a
fill is recorded at."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy import update as sa_update

from adapters.models import (
    AccountRef,
    Bracket,
    Order,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
)
from adapters.tradestation import TradeStationAdapter
from bot.core import Core
from bot.db import Database
from bot.models import AuditEvent, BracketExit, IntentStatus, OrderIntent
from bot.services.notify import RecordingNotifier
from bot.services.signal_alerts import public_order
from bot.services.signal_report import _event_detail
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import open_cores
from tests.bot.test_order_updates import linked_margin_account, msft_limit, poll_now, texts


async def test_a_fill_streamed_before_the_brokers_answer_is_what_the_card_says(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream told "Filled" before the POST's answer ("working") came back: the /trade
    card must not then say the order works."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        target = await linked_margin_account(core, ts)
        real = TradeStationAdapter.create_order

        async def answered_after_the_stream(
            self: TradeStationAdapter, account: AccountRef, request: OrderRequest
        ) -> Order:
            order = await real(self, account, request)
            filled = replace(
                order,
                status=OrderStatus.FILLED,
                filled_quantity=order.quantity,
                average_fill_price=Decimal(300),
            )
            await core.trading.apply_update(
                "tradestation", OrderUpdate(filled, "fill"), connection_id=target.connection.id
            )
            return order

        monkeypatch.setattr(TradeStationAdapter, "create_order", answered_after_the_stream)
        out = await core.trading.place(target, msft_limit(), source="discord", idempotency_key="k")
        assert out.intent.status == IntentStatus.FILLED
        assert "working" not in out.message
        assert out.message.startswith("Filled: buy 10 MSFT at $300.00"), out.message
        assert out.ok
        dms = [m.content or "" for _, m in notifier.dms]
        assert len(dms) == 1 and "Filled: buy 10 MSFT at $300.00" in dms[0], dms
    finally:
        await core.close()


async def test_a_bracket_exit_that_sold_part_and_then_ended_is_told(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The take-profit sold 4 of 10 and was then cancelled: those 4 closed part of the
    position, so the member hears of them, the alert channel too, and /signal show has it."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    heard: list[tuple[str, Decimal]] = []

    async def listener(intent: OrderIntent, order: Order) -> None:
        heard.append((intent.id, order.filled_quantity))

    core.trading.exit_listeners.append(listener)
    try:
        target = await linked_margin_account(core, ts)
        bracket = Bracket(Decimal("500"), Decimal("250"))
        out = await core.trading.place(
            target, msft_limit(bracket), source="discord", idempotency_key="tp"
        )
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
        cid = target.connection.id
        ts.fill(out.intent.broker_order_id or "", 10, "300")
        await poll_now(core, cid)
        async with core.db.session() as s:
            exits = list(await s.scalars(select(BracketExit.broker_order_id)))
        take_profit = next(e for e in exits if ts.world.orders[e].limit_price == Decimal(500))
        ts.fill(take_profit, 4, "500.25")
        ts.world.cancel(take_profit)
        await poll_now(core, cid)
        told = [t for t in texts(notifier) if "bracket exit" in t]
        assert told == [
            "🔴 Live bracket exit cancelled after filling part: the take-profit sell 4 of 10 "
            "MSFT at $500.25, the exit of your buy 10 MSFT at $300.00 (intent "
            f"{out.intent.id[:8]}). P&L +$801.00 before fees. It fills no more: check what "
            "remains of your position in your broker's app."
        ]
        assert heard == [(out.intent.id, Decimal(4))]
        async with core.db.session() as s:
            events = list(
                await s.scalars(select(AuditEvent).where(AuditEvent.kind == "order.exit_filled"))
            )
        assert [Decimal(str(e.detail["quantity"])) for e in events] == [Decimal(4)]
        # /signal show's step says it ended there.
        assert _event_detail(events[0], out.intent) == "4 @ $500.25, then cancelled"
        await poll_now(core, cid)  # ended and told: never again
        assert len([t for t in texts(notifier) if "bracket exit" in t]) == 1
    finally:
        await core.close()


async def test_a_partial_fill_says_its_average_price(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The member's DM and the alert channel's line say at what price the part filled."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        target = await linked_margin_account(core, ts)
        out = await core.trading.place(target, msft_limit(), source="discord", idempotency_key="p")
        order_id = out.intent.broker_order_id or ""
        ts.fill(order_id, 2, "299")
        ts.fill(order_id, 2, "300")
        await poll_now(core, target.connection.id)
        assert texts(notifier) == [
            "🔴 Live order update: Partially filled: 4 of buy 10 MSFT at an average of $299.50."
        ]
        intent = await core.trading.get_intent(out.intent.id)
        assert public_order(intent) == "buy 10 MSFT limit at $300.00 (4 filled at $299.50)"
    finally:
        await core.close()


async def _filled_at(core: Core, intent_id: str) -> datetime:
    async with core.db.session() as s:
        [at] = list(
            await s.scalars(
                select(AuditEvent.at).where(
                    AuditEvent.intent_id == intent_id, AuditEvent.kind == "order.filled"
                )
            )
        )
    return at


async def test_a_fill_heard_late_is_recorded_at_the_brokers_time(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """/signal show puts "entry filled" when the broker filled it, not when Tradecord heard;
    but never before the order was sent (another clock's time) nor in the future."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = RecordingNotifier()
    try:
        target = await linked_margin_account(core, ts)
        cid = target.connection.id
        now = datetime.now(UTC)
        # The broker's time of each fill: hours ago (the order was sent before that), before
        # the order was sent, and ahead of our clock.
        said = {
            "late": now - timedelta(hours=3),
            "early": now - timedelta(days=1),
            "ahead": now + timedelta(hours=1),
        }
        recorded = {}
        for key, at in said.items():
            out = await core.trading.place(
                target, msft_limit(), source="discord", idempotency_key=key
            )
            assert out.order is not None
            if key == "late":  # sent four hours ago
                async with core.db.transaction() as s:
                    row = await s.get(OrderIntent, out.intent.id)
                    assert row is not None
                    row.submitted_at = now - timedelta(hours=4)
                    await s.execute(
                        sa_update(AuditEvent)
                        .where(AuditEvent.intent_id == out.intent.id)
                        .values(at=now - timedelta(hours=4))
                    )
            filled = replace(
                out.order,
                status=OrderStatus.FILLED,
                filled_quantity=Decimal(10),
                average_fill_price=Decimal(300),
                updated_at=at,
            )
            await core.trading.apply_update(
                "tradestation", OrderUpdate(filled, "fill"), connection_id=cid
            )
            recorded[key] = await _filled_at(core, out.intent.id)
        assert abs(recorded["late"] - said["late"]) < timedelta(minutes=1)
        assert recorded["early"] >= now - timedelta(minutes=1)  # when it was sent
        assert now <= recorded["ahead"] <= datetime.now(UTC)
    finally:
        await core.close()
