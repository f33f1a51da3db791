"""The /signal show report as the service builds it: whose subscription is whose, what a
given-up signal and a duplicate say, and the order events it reads as steps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from bot.automation_models import ExecutionStatus, SignalStatus
from bot.core import Core
from bot.models import AuditEvent, Connection
from tests.bot.signals.conftest import (
    ALICE,
    BOB,
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


async def name_connections(core: Core, name: str) -> None:
    async with core.db.transaction() as s:
        await s.execute(update(Connection).values(name=name))


async def test_the_owner_sees_no_other_members_connection_only_their_public_name(
    core: Core,
) -> None:
    """Before: every subscription came with its connection's name, which is the member's own
    (free text: "Bob's IRA") and was the field's title in /signal show."""
    url = await make_strategy(core)
    for member in (ALICE, BOB):
        await core.strategies.share(GUILD, OWNER, url.strategy.id, member)
    await subscribe(core, url, OWNER)
    await subscribe(core, url, ALICE)
    await subscribe(core, url, BOB)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "Alice")
    await core.subscriptions.set_alerts_show_name(BOB, GUILD, False, "Bob")  # named, not shown
    await name_connections(core, "My IRA at Schwab")
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    report = await core.signals.signal_report(ack.body["id"], OWNER)
    by_member = {sub.member_discord_id: sub for sub in report.subscriptions}
    owner, alice, bob = by_member[OWNER], by_member[ALICE], by_member[BOB]
    assert (owner.own, owner.connection_name) == (True, "My IRA at Schwab")
    assert (alice.own, alice.connection_name, alice.public_name) == (False, None, "Alice")
    assert (bob.own, bob.connection_name, bob.public_name) == (False, None, None)
    # A subscriber sees their own, with its connection.
    [mine] = (await core.signals.signal_report(ack.body["id"], BOB)).subscriptions
    assert (mine.own, mine.connection_name, mine.public_name) == (True, "My IRA at Schwab", None)


async def test_a_given_up_signal_ends_its_pending_runs_as_failed(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the runs it had not finished stayed "pending" for ever in /signal show, while
    their members' DMs said the run did not finish; and its last step read "done"."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    sub = await subscribe(core, url, ALICE)

    async def busy(*_: Any, **__: Any) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(core.signals, "execute", busy)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    for _ in range(12):
        await core.jobs.drain()
        clock.advance(minutes=5)
    signal_id = str(ack.body["id"])
    ex = await execution(core, signal_id, sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "signal-given-up")
    assert ex.notified_status == ExecutionStatus.FAILED  # the DM below told it
    assert [p["phase"] for p in ex.phases][-1] == "failed"
    [dm] = [
        m.content or ""
        for u, m in notifier(core).dms
        if "could not be processed" in (m.content or "") and u == ALICE
    ]
    assert "your run of it did not finish" in dm, dm
    report = await core.signals.signal_report(signal_id, OWNER)
    assert report.status == SignalStatus.FAILED
    assert [p.name for p in report.phases][-1] == "failed"
    [alice] = report.subscriptions
    assert alice.status == ExecutionStatus.FAILED and alice.reason == "signal-given-up"
    [mine] = (await core.signals.signal_report(signal_id, ALICE)).subscriptions
    assert mine.phases[-1].name == "failed" and "stopped trying" in (mine.phases[-1].detail or "")


async def test_a_duplicates_report_names_the_signal_it_repeats(core: Core) -> None:
    url = await make_strategy(core)
    first = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    again = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    assert again.body["duplicate"] is True
    report = await core.signals.signal_report(again.body["logId"], OWNER)
    assert report.status == SignalStatus.DUPLICATE
    assert report.duplicate_of == first.body["id"]
    original = await core.signals.signal_report(first.body["id"], OWNER)
    assert original.duplicate_of is None


async def test_a_brackets_exit_reads_as_its_kind_with_quantity_and_price(core: Core) -> None:
    """The audit event another change records for a take-profit or stop-loss that filled."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, ALICE)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    [entry] = [i for i in await intents(core) if i.source == "signal"]
    async with core.db.transaction() as s:
        s.add(
            AuditEvent(
                kind="order.exit_filled",
                member_id=entry.member_id,
                connection_id=entry.connection_id,
                intent_id=entry.id,
                detail={"exit": "take-profit", "quantity": "1", "price": "210.5"},
            )
        )
    [mine] = (await core.signals.signal_report(ack.body["id"], ALICE)).subscriptions
    [exit_] = [p for p in mine.phases if p.name == "take-profit filled"]
    assert exit_.detail == "1 @ $210.50"
    [theirs] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    [exit_] = [p for p in theirs.phases if p.name == "take-profit filled"]
    assert exit_.detail is None  # another member's price and size are theirs


async def test_a_later_fill_stored_with_its_old_bare_step_is_shown_once(core: Core) -> None:
    """Runs stored before the fix logged "filled" besides the order's "entry filled"."""
    from bot.automation_models import SignalExecution

    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, sizing="fixed_quantity", sizing_value=Decimal(1))
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    bare = {"phase": "filled", "at": ex.phases[-1]["at"], "detail": None}
    async with core.db.transaction() as s:
        await s.execute(
            update(SignalExecution)
            .where(SignalExecution.id == ex.id)
            .values(phases=[*ex.phases, bare])
        )
    [mine] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    names = [p.name for p in mine.phases]
    assert "filled" not in names and names.count("entry filled") == 1, names


async def test_a_brackets_exit_that_fills_is_a_step_of_the_entry(core: Core) -> None:
    """The DM said "stop-loss filled ... /signal show for every step", and /signal show ended
    at "entry filled", as if the position were still open."""
    from bot.services.order_updates import OrderUpdates

    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ack = await send(
        core,
        url,
        {
            "ticker": "AAPL",
            "action": "buy",
            "takeProfit": {"percent": 5},
            "stopLoss": {"amount": 4},
        },
    )
    await core.jobs.drain()
    assert (await execution(core, ack.body["id"], sub)).status == ExecutionStatus.FILLED
    core.simulated_feed.set_quote("AAPL", Decimal("195.00"), Decimal("195.20"))
    assert await OrderUpdates(core).sweep_paper() == 1
    [mine] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    [step] = [p for p in mine.phases if p.name == "stop-loss filled"]
    assert step.detail is not None and step.detail.startswith("1 @ $"), step
