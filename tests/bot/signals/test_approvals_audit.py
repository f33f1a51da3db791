"""Manual approval at the edges: cards approved together or out of order, a card whose
strategy has moved on, and two presses that cross (Approve on one device, Reject on another)."""

from __future__ import annotations

import pytest

from bot.automation_models import ExecutionStatus
from bot.core import Core
from bot.errors import Conflict
from bot.models import IntentStatus
from tests.bot.signals.conftest import (
    ALICE,
    OWNER,
    execution,
    intents,
    make_strategy,
    orders,
    send,
    subscribe,
)
from tests.bot.signals.test_execution import approval_signal, position, run


async def test_an_approved_entry_and_the_strategys_next_exit_run_in_order(core: Core) -> None:
    """Approved, and the strategy's exit came before the approved order's job ran: the two
    jobs ran side by side, the exit found no position to close, then the entry filled, and
    the member was left holding a position the strategy had closed. A strategy's signals
    trade one at a time, in the order they came (README); an approved order is one of them."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    entry = await run(core, url, sub, action="buy")
    [pending] = await core.signals.pending_approvals(OWNER)
    await core.signals.approve(pending.intent_ids[0], OWNER)
    ack = await send(core, url, {"ticker": "AAPL", "action": "exit"})  # before the job ran
    assert ack.status == 202, ack.body
    await core.jobs.drain()
    assert (await execution(core, entry.signal_id, sub)).status == ExecutionStatus.FILLED
    exited = await execution(core, ack.body["id"], sub)
    # The exit now waits for the entry, and so waits for its Approve in turn.
    assert exited.status == ExecutionStatus.WAITING_APPROVAL, (exited.status, exited.reason)
    [pending] = await core.signals.pending_approvals(OWNER)
    await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    assert await position(core, OWNER, "AAPL") == 0


async def test_an_entry_approved_after_the_strategy_exited_places_nothing(core: Core) -> None:
    """The strategy bought, then exited while the buy card waited (its exit found nothing to
    close): approving the buy opened a position the strategy had already closed, left for
    no signal of it to close."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    entry = await run(core, url, sub, action="buy")
    assert entry.status == ExecutionStatus.WAITING_APPROVAL
    exit_ = await run(core, url, sub, action="exit")
    assert exit_.status == ExecutionStatus.SKIPPED
    [pending] = await core.signals.pending_approvals(OWNER)
    with pytest.raises(Conflict) as refused:
        await core.signals.approve(pending.intent_ids[0], OWNER)
    said = refused.value.user_message
    assert said.startswith(
        f"Not placed: a newer signal of this strategy for AAPL (exit, `{exit_.signal_id[-8:]}`) "
        "came since this card, so its orders no longer follow the strategy."
    ), said
    await core.jobs.drain()
    assert await orders(core) == [] and await position(core, OWNER, "AAPL") == 0
    ended = await execution(core, entry.signal_id, sub)
    assert (ended.status, ended.reason_code) == (ExecutionStatus.SKIPPED, "approval-skipped")
    assert [i.status for i in await intents(core)] == [IntentStatus.DISCARDED]
    assert await core.signals.pending_approvals(OWNER) == []


async def test_a_newer_signal_for_another_ticker_leaves_the_card_approvable(core: Core) -> None:
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    entry = await run(core, url, sub, action="buy")
    await run(core, url, sub, action="exit", ticker="MSFT")
    pending = next(
        p for p in await core.signals.pending_approvals(OWNER) if p.signal_id == entry.signal_id
    )
    await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    assert (await execution(core, entry.signal_id, sub)).status == ExecutionStatus.FILLED


async def test_a_newer_signal_the_same_way_leaves_the_card_approvable(core: Core) -> None:
    """An add that found no position to add to agrees with the buy waiting: not a reason to
    refuse it."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    entry = await run(core, url, sub, action="buy")
    added = await run(core, url, sub, action="add")
    assert added.status == ExecutionStatus.SKIPPED, added.reason
    [pending] = await core.signals.pending_approvals(OWNER)
    await core.signals.approve(pending.intent_ids[0], OWNER)
    await core.jobs.drain()
    assert (await execution(core, entry.signal_id, sub)).status == ExecutionStatus.FILLED


async def test_approve_losing_to_a_reject_on_another_device_says_it_was_declined(
    core: Core,
) -> None:
    """Reject pressed on the phone while Approve, pressed on the desktop, was being checked:
    Approve answered "These orders were discarded since the card was sent (your paper account
    was reset, or its connection removed)", which neither was."""
    _, sub, ex = await approval_signal(core)
    [draft] = await intents(core)
    real_stopped = core.trading.stopped

    async def rejected_meanwhile(member_id: int) -> object:
        await core.signals.reject(draft.id, ALICE)
        return await real_stopped(member_id)

    core.trading.stopped = rejected_meanwhile  # type: ignore[method-assign]
    with pytest.raises(Conflict) as lost:
        await core.signals.approve(draft.id, ALICE)
    assert lost.value.user_message == "This signal was declined; nothing was placed."
    assert (await execution(core, ex.signal_id, sub)).status == ExecutionStatus.DECLINED
