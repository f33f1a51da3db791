"""The /signal show report as the service builds it: whose subscription is whose, what a
given-up signal and a duplicate say, and the order events it reads as steps."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from bot.automation_models import ExecutionStatus, SignalStatus
from bot.core import Core
from bot.db import Database
from bot.errors import NotFound
from bot.models import AuditEvent, Connection
from bot.services.signal_report import SignalReport
from bot.services.subscriptions import SubscriptionSettings
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import MEMBER
from tests.bot.signals.conftest import (
    ALICE,
    BOB,
    GUILD,
    OWNER,
    execution,
    intents,
    make_strategy,
    notifier,
    open_core,
    send,
    subscribe,
)
from tests.bot.signals.test_account_change import SIGNAL, subscribed
from tests.bot.signals.test_execution import hold
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
    # In the words of its DM ("did not finish"): it may have placed an order first.
    assert mine.phases[-1].name == "did not finish", mine.phases
    assert "stopped trying" in (mine.phases[-1].detail or "")


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


async def test_orders_stay_in_the_report_after_unsubscribe_and_disconnect(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    """Before: the report found a run's orders by its subscription's id, which /unsubscribe
    and /disconnect set to NULL: the orders and their steps vanished from /signal show,
    though /disconnect says "Its history stays in the audit trail". Two runs of one member,
    both removed, each keep their own order."""
    core = await open_core(ts_settings, clock)
    try:
        url, _, _ = await subscribed(core, ts)  # MEMBER, live on TradeStation "TS"
        await core.subscriptions.subscribe(
            GUILD,
            MEMBER,
            url.strategy.id,
            connection="Tradecord Paper",
            mode="paper",
            settings=SubscriptionSettings(sizing_value=Decimal(3)),
        )
        ack = await send(core, url, {**SIGNAL, "limitPrice": 1000})  # fills at both
        await core.jobs.drain()

        def shown(report: SignalReport) -> list[tuple[str | None, str, list[str], list[str]]]:
            return [
                (
                    sub.connection_name,
                    sub.mode,
                    [f"{o.leg} {o.side} {o.quantity} → {o.status}" for o in sub.orders],
                    [p.name for p in sub.phases if p.name.startswith("entry")],
                )
                for sub in report.subscriptions
            ]

        before = shown(await core.signals.signal_report(ack.body["id"], MEMBER))
        assert [(name, mode, orders) for name, mode, orders, _ in before] == [
            ("TS", "live", ["entry buy 2 → filled"]),
            ("Tradecord Paper", "paper", ["entry buy 3 → filled"]),
        ], before
        await core.subscriptions.unsubscribe(GUILD, MEMBER, url.strategy.id, mode="paper")
        await core.connections.disconnect(MEMBER, "TS")
        after = shown(await core.signals.signal_report(ack.body["id"], MEMBER))
        # The removed connection has no name left; its run keeps its order and steps.
        assert after == [(None, *before[0][1:]), before[1]], after
        assert all(steps for *_, steps in after), after
    finally:
        await core.close()


async def test_the_public_channel_says_who_can_open_the_report(core: Core) -> None:
    """Before: the channel's line ended "/signal show `id` has every step", and anyone else
    who tried it read "No signal with that id that you can see. Ids are in the signal's
    alerts and DMs.": sent back to the alert they came from."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, ALICE, sides="short")
    skipped = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    await subscribe(core, url, OWNER, manual_approval=True)
    waiting = await send(core, url, {"ticker": "AAPL", "action": "buy", "extras": {"again": 1}})
    await core.jobs.drain()
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    lines = [p for p in posts if "No order placed" in p]
    assert len(lines) == 2, posts
    assert lines[0].endswith(
        "Each subscriber's DM says why; its owner and subscribers see every step with "
        f"/signal show `{skipped.body['id'][-8:]}`."
    ), lines[0]
    assert lines[1].endswith(
        "(side-not-allowed). Its owner and subscribers see every step with /signal show "
        f"`{waiting.body['id'][-8:]}`."
    ), lines[1]
    with pytest.raises(NotFound) as refused:
        await core.signals.signal_report(skipped.body["id"][-8:], BOB)
    assert refused.value.user_message == (
        "No signal with that id that you can see: /signal show shows the signals of your "
        "strategies and those that ran for you (/signal list has their ids)."
    )


async def test_only_the_owner_is_told_to_send_an_add_when_already_in_position(
    core: Core,
) -> None:
    """Before: a subscriber read "Already long AAPL; send action add to add to it." in their
    DM and /signal show, though only the strategy's owner can send its signals."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    for member in (OWNER, ALICE):
        await hold(core, member, "AAPL", "5")
        await subscribe(core, url, member)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    report = await core.signals.signal_report(ack.body["id"], OWNER)
    [owner] = [sub for sub in report.subscriptions if sub.own]
    assert owner.reason == "Already long AAPL; send action add to add to it.", owner.reason
    [alice] = (await core.signals.signal_report(ack.body["id"], ALICE)).subscriptions
    said = "Already long AAPL: the strategy's buy signal adds nothing to a position already open."
    assert (alice.status, alice.reason_code, alice.reason) == (
        ExecutionStatus.SKIPPED,
        "already-in-position",
        said,
    )
    [dm] = [
        m.content or ""
        for u, m in notifier(core).dms
        if u == ALICE and "Skipped" in (m.content or "")
    ]
    assert said in dm and "send action" not in dm, dm


async def test_a_plan_with_nothing_to_place_has_no_sized_step(core: Core) -> None:
    """Before: a cancel with nothing to cancel logged "sized" with the plan's note ("No open
    AAPL orders."), then "skipped" with the same note. Runs stored so still show no "sized"."""
    from bot.automation_models import SignalExecution

    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ack = await send(core, url, {"ticker": "AAPL", "action": "cancel"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.reason) == (ExecutionStatus.SKIPPED, "No open AAPL orders.")
    assert [p["phase"] for p in ex.phases] == ["skipped"], ex.phases
    stored = {**ex.phases[0], "phase": "sized"}  # as runs before the fix logged it
    async with core.db.transaction() as s:
        await s.execute(
            update(SignalExecution)
            .where(SignalExecution.id == ex.id)
            .values(phases=[stored, *ex.phases])
        )
    [mine] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    assert [(p.name, p.detail) for p in mine.phases] == [("skipped", "No open AAPL orders.")]


async def test_an_order_held_back_reads_not_placed_in_the_dm_the_channel_and_the_list(
    core: Core,
) -> None:
    """An approved exit Tradecord did not send because the position changed meanwhile: the DM
    said "⛔ Not placed", the channel "⛔ Rejected" and /signal list "rejected"."""
    url = await make_strategy(core)
    await core.strategies.set_alert_channel(GUILD, 777)
    await hold(core, OWNER, "AAPL", "5")
    sub = await subscribe(core, url, OWNER, manual_approval=True)
    ack = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    await hold(core, OWNER, "AAPL", "5", side="sell")  # closed by hand meanwhile
    draft = next(i for i in await intents(core) if i.source == "signal")
    await core.signals.approve(draft.id, OWNER)
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert (ex.status, ex.reason_code) == (ExecutionStatus.REJECTED, "position-changed")
    [told] = [m.content or "" for _, m in notifier(core).dms if "position" in (m.content or "")]
    assert told.startswith("⛔ Not placed: **NQ breakout**"), told
    posts = [m.content or "" for channel, m in notifier(core).posts if channel == 777]
    assert posts[-1].startswith("**NQ breakout** ⛔ Not placed · A subscriber (paper): "), posts
    assert posts[-1].endswith(" (position-changed)"), posts
    [line] = await core.signals.recent_signals(OWNER)
    assert line.results == (("not placed", 1),), line.results
