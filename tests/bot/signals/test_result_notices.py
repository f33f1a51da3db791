"""A subscriber's result DM (an approval card too) is told once, even when the process that
saved the result died before sending it; later order updates and a given-up signal leave the
execution's steps and reason as /signal show reads them."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from adapters.models import OrderStatus
from bot.automation_models import ExecutionStatus, SignalExecution
from bot.core import Core
from bot.models import IntentStatus
from bot.services.notify import Outgoing
from tests.bot.signals.conftest import (
    GUILD,
    OWNER,
    execution,
    intents,
    make_strategy,
    notifier,
    send,
    subscribe,
)
from tests.support import FakeClock


def cards(core: Core, member: int) -> list[Outgoing]:
    return [m for uid, m in notifier(core).dms if uid == member and m.components]


async def dies(*_: Any, **__: Any) -> None:
    raise asyncio.CancelledError  # the process going down right after the result's commit


async def saved_untold(
    core: Core, monkeypatch: pytest.MonkeyPatch, signal: dict[str, Any], **settings: Any
) -> tuple[str, int]:
    """A signal whose run saved the subscription's result, then died before its DM."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, **settings)
    real_notify = core.signals.alerts.notify
    monkeypatch.setattr(core.signals.alerts, "notify", dies)
    ack = await send(core, url, signal)
    with pytest.raises(asyncio.CancelledError):
        await core.jobs.drain()
    monkeypatch.setattr(core.signals.alerts, "notify", real_notify)
    return str(ack.body["id"]), sub


async def test_an_approval_card_is_not_lost_when_the_process_dies_before_sending_it(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the result was saved as told in the commit that saved it; the job's re-run
    skipped the run (no longer pending) and the card never came. (The audit's version moved
    the clock 10 minutes, past the card's default 5: an expired card is not sent, below.)"""
    signal_id, sub = await saved_untold(
        core, monkeypatch, {"ticker": "AAPL", "action": "buy"}, manual_approval=True
    )
    ex = await execution(core, signal_id, sub)
    assert ex.status == ExecutionStatus.WAITING_APPROVAL
    assert cards(core, OWNER) == []
    clock.advance(minutes=2)  # past the job's lease: its re-run
    await core.jobs.drain()
    await core.trading.reconcile()
    [card] = cards(core, OWNER)
    assert "Waiting for your approval" in (card.content or ""), card.content
    [draft] = await intents(core)
    assert draft.id in str(card.components)  # its own buttons: they approve this draft
    # Once: neither the background pass nor another drain sends it again.
    clock.advance(minutes=2)
    assert await core.signals.alerts.tell_untold() == 0
    await core.jobs.drain()
    assert len(cards(core, OWNER)) == 1


async def test_an_approval_that_expired_before_its_card_went_out_is_not_sent(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    signal_id, sub = await saved_untold(
        core, monkeypatch, {"ticker": "AAPL", "action": "buy"}, manual_approval=True
    )
    clock.advance(minutes=10)  # the card's 5 minutes are over
    await core.jobs.drain()
    assert await core.signals.alerts.tell_untold() == 0
    assert cards(core, OWNER) == []
    assert (await execution(core, signal_id, sub)).status == ExecutionStatus.EXPIRED
    # The expiry's own DM says what the card was about.
    [(_, dm)] = [(uid, m) for uid, m in notifier(core).dms if uid == OWNER]
    assert "The approval expired; nothing was placed." in (dm.content or ""), dm.content


async def test_a_fill_saved_by_a_run_whose_job_finished_elsewhere_is_told_by_the_background(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No re-run comes (an approved order's job, a job given up): the background pass tells
    what is older than its grace, once, and leaves the newer to the run still telling it."""
    signal_id, sub = await saved_untold(core, monkeypatch, {"ticker": "AAPL", "action": "buy"})
    assert (await execution(core, signal_id, sub)).status == ExecutionStatus.FILLED
    assert await core.signals.alerts.tell_untold() == 0  # a run may still be telling it
    clock.advance(minutes=3)
    passes = await asyncio.gather(*(core.signals.alerts.tell_untold() for _ in range(3)))
    assert sorted(passes) == [0, 0, 1]  # three processes' passes at once: one tells it
    [(uid, dm)] = notifier(core).dms
    assert uid == OWNER and (dm.content or "").startswith("✅ Filled: **NQ breakout**"), dm
    assert "buy 1 AAPL" in (dm.content or "") and f"Signal `{signal_id}`" in (dm.content or "")
    await core.jobs.drain()  # the job's re-run finds it told
    assert len(notifier(core).dms) == 1


async def test_a_result_told_late_names_its_orders_after_an_unsubscribe(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run saved its fill and died; the member unsubscribed before the background pass
    told it: the late DM found the run's orders by its subscription, gone, and named none."""
    await saved_untold(core, monkeypatch, {"ticker": "AAPL", "action": "buy"})
    await core.subscriptions.unsubscribe(GUILD, OWNER, "NQ breakout")
    clock.advance(minutes=3)
    assert await core.signals.alerts.tell_untold() == 1
    [(_, dm)] = notifier(core).dms
    assert "buy 1 AAPL" in (dm.content or ""), dm.content


async def test_an_approved_orders_result_is_told_though_its_job_has_nothing_left_to_do(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The approved order's job saved its fill and died before the DM: its re-run finds the
    run no longer approved and ends; only the background pass can tell it."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    [draft] = await intents(core)
    await core.signals.approve(draft.id, OWNER)
    real_notify = core.signals.alerts.notify
    monkeypatch.setattr(core.signals.alerts, "notify", dies)
    with pytest.raises(asyncio.CancelledError):
        await core.jobs.drain()
    monkeypatch.setattr(core.signals.alerts, "notify", real_notify)
    assert (await execution(core, ack.body["id"], sub)).status == ExecutionStatus.FILLED
    told = len(notifier(core).dms)
    clock.advance(minutes=3)  # past the job's lease and the pass's grace
    await core.jobs.drain()
    assert len(notifier(core).dms) == told  # the re-run had nothing to do
    assert await core.signals.alerts.tell_untold() == 1
    (uid, dm) = notifier(core).dms[-1]
    assert uid == OWNER and (dm.content or "").startswith("✅ Filled: **NQ breakout**"), dm


async def test_the_background_work_of_every_process_tells_them(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import update

    from bot.automation_models import Job, JobStatus
    from bot.background import Background

    await saved_untold(core, monkeypatch, {"ticker": "AAPL", "action": "buy"})
    async with core.db.transaction() as s:  # its job ended elsewhere: no re-run will come
        await s.execute(update(Job).values(status=JobStatus.DONE))
    clock.advance(minutes=3)
    told = asyncio.Event()
    tell_untold = core.signals.alerts.tell_untold

    async def tell_noted() -> int:
        n = await tell_untold()
        if n:
            told.set()
        return n

    # Background takes the bound method when built: wrap it first, to wait for the pass.
    monkeypatch.setattr(core.signals.alerts, "tell_untold", tell_noted)
    week = 7 * 24 * 3600.0
    background = Background(
        core,
        reconcile_every=week,
        sweep_every=week,
        remind_every=week,
        purge_every=week,
        follow_orders=False,
    )
    background.start()
    try:
        async with asyncio.timeout(30):  # a hang guard, not a speed check
            await told.wait()
    finally:
        await background.close()
    [(uid, dm)] = notifier(core).dms
    assert uid == OWNER and "Filled" in (dm.content or ""), dm


async def test_a_result_told_in_time_is_not_told_again(core: Core, clock: FakeClock) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.notified_status) == (ExecutionStatus.FILLED, ExecutionStatus.FILLED)
    clock.advance(minutes=3)
    assert await core.signals.alerts.tell_untold() == 0
    assert len(notifier(core).dms) == 1


# -- order updates after the run -------------------------------------------------------------


async def resting_entry(core: Core, quantity: int = 1) -> tuple[str, int]:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="fixed_quantity", sizing_value=Decimal(quantity))
    ack = await send(
        core, url, {"ticker": "AAPL", "action": "buy", "orderType": "limit", "limitPrice": 150}
    )
    await core.jobs.drain()
    assert (await execution(core, ack.body["id"], sub)).status == ExecutionStatus.ACCEPTED
    return str(ack.body["id"]), sub


async def broker_says(
    core: Core, status: OrderStatus, filled: int = 0, reason: str | None = None
) -> None:
    [intent] = [i for i in await intents(core) if i.source == "signal"]
    target = await core.connections.resolve(OWNER, None, "paper")
    adapter = await core.connections.adapter_for(target.connection)
    order = await adapter.fetch_order(target.ref, order_id=intent.broker_order_id)
    await adapter.close()
    order.status, order.filled_quantity = status, Decimal(filled)
    order.average_fill_price = Decimal("149.5") if filled else None
    order.reject_reason = reason
    await core.trading.apply_order_state(intent, order)


def step_names(ex: SignalExecution) -> list[str]:
    return [p["phase"] for p in ex.phases or []]


async def test_a_later_fill_is_one_step_in_words(core: Core) -> None:
    """Before: the execution logged "partially_filled" and "filled" besides the order's own
    "entry partially filled" and "entry filled": each outcome twice, once as a raw code."""
    signal_id, sub = await resting_entry(core, quantity=4)
    await broker_says(core, OrderStatus.PARTIALLY_FILLED, filled=2)
    await broker_says(core, OrderStatus.FILLED, filled=4)
    ex = await execution(core, signal_id, sub)
    assert ex.status == ExecutionStatus.FILLED
    assert not {"filled", "partially_filled"} & set(step_names(ex)), step_names(ex)
    report = await core.signals.signal_report(signal_id, OWNER)
    [mine] = report.subscriptions
    names = [p.name for p in mine.phases]
    assert names.count("entry partially filled") == 1 and names.count("entry filled") == 1, names
    assert not {"filled", "partially_filled", "partially filled"} & set(names), names
    [partial] = [p for p in mine.phases if p.name == "entry partially filled"]
    assert partial.detail == "2 of 4 filled at $149.50", partial.detail


async def test_a_later_rejection_keeps_the_brokers_reason(core: Core) -> None:
    """Before: the execution's reason stayed empty and its bare "rejected" step hid the
    order's "entry rejected (Halted: LULD pause)" as a duplicate."""
    signal_id, sub = await resting_entry(core)
    await broker_says(core, OrderStatus.REJECTED, reason="Halted: LULD pause")
    ex = await execution(core, signal_id, sub)
    assert ex.status == ExecutionStatus.REJECTED
    [intent] = [i for i in await intents(core) if i.source == "signal"]
    assert intent.status == IntentStatus.REJECTED
    assert ex.reason_code == "order-rejected" and ex.reason == "Halted: LULD pause", (
        ex.reason_code,
        ex.reason,
    )
    [mine] = (await core.signals.signal_report(signal_id, OWNER)).subscriptions
    rejected = [p for p in mine.phases if "rejected" in p.name]
    assert [(p.name, p.detail) for p in rejected] == [("entry rejected", "Halted: LULD pause")]
    assert mine.reason == "Halted: LULD pause"
