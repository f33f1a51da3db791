"""Pre-trade checks at submit time (security requirement 20): the global kill switch, a
member's pause, per-order and per-day limits of the member, of the server and of a strategy.
A refused order ends failed with the reason in its audit trail and never reaches the broker.
/trade makes the same checks at preview, so a refusal comes before the card: no draft is
stored and there is nothing to confirm."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, event, inspect, select, text
from sqlalchemy import update as sa_update

from adapters.paper.broker import PaperBroker
from bot.automation_models import ExecutionStatus
from bot.core import Core
from bot.db import Database, alembic_config, head_revision
from bot.errors import InvalidInput, LimitReached, PermissionDenied, TradecordError
from bot.models import AuditEvent, IntentStatus, OrderIntent
from bot.services.notify import RecordingNotifier
from bot.services.strategies import WebhookUrl
from bot.services.trading import OrderInput, Outcome, change_of
from bot.settings import Settings, load_settings
from tests.bot.signals.conftest import (
    GUILD,
    OWNER,
    execution,
    make_strategy,
    open_core,
    orders,
    send,
    subscribe,
)
from tests.support import FakeClock, trading_contract

ES = trading_contract()

ALICE, BOB = 1002, 1003


async def with_defaults(settings: Settings, clock: FakeClock, **limits: Any) -> Core:
    """Another process of the same server, with server-wide default limits."""
    values = {k: v for k, v in settings.model_dump().items() if v is not None}
    return await open_core(load_settings(**{**values, **limits}), clock)


async def shared_with(core: Core, *members: int) -> WebhookUrl:
    """A strategy of OWNER's, shared with ``members`` so they may subscribe."""
    url = await make_strategy(core)
    for member in members:
        await core.strategies.share(GUILD, OWNER, url.strategy.id, member)
    return url


async def trade(core: Core, member: int, quantity: str = "1", **kw: Any) -> Outcome:
    p = await core.trading.preview(member, OrderInput("AAPL", "buy", quantity, **kw))
    return await core.trading.confirm(p.intent_id, member)


async def refused(core: Core, out: Outcome, code: str) -> None:
    """Nothing reached the broker, the intent failed with the check's code, and the audit
    trail says which check refused it."""
    assert not out.ok and out.order is None
    intent = await core.trading.get_intent(out.intent.id)
    assert intent.status == IntentStatus.FAILED and intent.error_code == code
    assert intent.error_message == out.message
    async with core.db.session() as s:
        trail = list(
            await s.scalars(
                select(AuditEvent).where(AuditEvent.intent_id == intent.id).order_by(AuditEvent.id)
            )
        )
    assert [e.kind for e in trail] == ["order.validated", "order.failed"]
    assert trail[-1].detail["error"] == code
    assert "pre-trade check" in trail[-1].detail["reason"]
    assert intent.broker_order_id is None


async def refused_early(core: Core, member: int, code: str, quantity: str = "1", **kw: Any) -> str:
    """The preview is refused with the check's code: no draft intent, no card; the message."""
    async with core.db.session() as s:
        before = list(await s.scalars(select(OrderIntent.id)))
    with pytest.raises(LimitReached) as refusal:
        await core.trading.preview(member, OrderInput("AAPL", "buy", quantity, **kw))
    assert refusal.value.code == code
    async with core.db.session() as s:
        assert list(await s.scalars(select(OrderIntent.id))) == before
    return refusal.value.user_message


async def paper_orders(core: Core) -> int:
    return len(await orders(core))


# -- the kill switch ---------------------------------------------------------------------------


async def test_the_kill_switch_refuses_new_orders_but_not_cancels(core: Core) -> None:
    resting = await trade(core, ALICE, order_type="limit", limit_price="150", time_in_force="gtc")
    assert resting.ok and resting.intent.status == IntentStatus.ACCEPTED
    state = await core.limits.set_kill_switch(True, by=OWNER)
    assert state.on and (await core.limits.kill_switch()).changed_by == OWNER

    message = await refused_early(core, ALICE, "kill-switch")
    assert "kill switch" in message and "Cancelling" in message
    assert await paper_orders(core) == 1  # only the resting order from before

    _, cancelled = await core.trading.cancel(ALICE, None, "paper")  # cancelling still works
    assert [o.status.value for o in cancelled] == ["cancelled"]

    await core.limits.set_kill_switch(False, by=OWNER)
    assert (await trade(core, ALICE)).ok


async def test_the_kill_switch_set_by_one_process_stops_another(
    core: Core, settings: Settings, clock: FakeClock
) -> None:
    other = await open_core(settings, clock)
    try:
        # Previewed before the switch went on, confirmed after: Confirm reads it again.
        p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
        await other.limits.set_kill_switch(True, by=OWNER)
        await refused(core, await core.trading.confirm(p.intent_id, ALICE), "kill-switch")
        await refused_early(core, ALICE, "kill-switch")
    finally:
        await other.close()


@pytest.mark.parametrize("daily_limit", [False, True])
async def test_a_kill_switch_turned_on_after_the_checks_still_stops_the_send(
    core: Core, monkeypatch: pytest.MonkeyPatch, daily_limit: bool
) -> None:
    """The pre-trade checks read the switch off; /killswitch goes on before the send is
    claimed: the claim reads it again, so once /killswitch has answered nothing more is sent.
    (With a daily limit the claim is the member-locked one.)"""
    if daily_limit:
        await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(1_000_000)})
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    checks = core.trading._pretrade

    async def checked_then_switched(*args: Any, **kw: Any) -> Any:
        gate = await checks(*args, **kw)
        await core.limits.set_kill_switch(True, by=OWNER)
        return gate

    monkeypatch.setattr(core.trading, "_pretrade", checked_then_switched)
    await refused(core, await core.trading.confirm(p.intent_id, ALICE), "kill-switch")
    assert await paper_orders(core) == 0


async def test_the_kill_switch_blocks_a_signals_order(core: Core) -> None:
    url = await shared_with(core, ALICE)
    sub = await subscribe(core, url, ALICE)
    await core.limits.set_kill_switch(True, by=OWNER)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    assert ack.status == 202
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.FAILED
    assert ex.reason_code == "kill-switch" and "kill switch" in (ex.reason or "")
    assert await paper_orders(core) == 0
    async with core.db.session() as s:
        intent = await s.scalar(select(OrderIntent))
    assert intent is not None
    await refused(core, Outcome(intent, None, intent.error_message or "", False), "kill-switch")


async def test_the_reconciler_does_not_send_a_pending_order_while_the_switch_is_on(
    core: Core, clock: FakeClock
) -> None:
    """Confirmed, then the process died before the send: the reconciler's send is checked too."""
    core.notifier = notifier = RecordingNotifier()
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    await core.trading.claim(p.intent_id, ALICE)
    await core.limits.set_kill_switch(True, by=OWNER)
    clock.advance(seconds=60)
    changed = await core.trading.reconcile()
    assert [i.id for i in changed] == [p.intent_id]
    intent = await core.trading.get_intent(p.intent_id)
    assert intent.status == IntentStatus.FAILED and intent.error_code == "kill-switch"
    assert await paper_orders(core) == 0
    assert "kill switch" in notifier.dms[-1][1].content  # the member is told why


# -- a member's pause --------------------------------------------------------------------------


async def test_a_paused_member_is_refused_manual_and_automated_orders_until_resume(
    core: Core,
) -> None:
    url = await shared_with(core, ALICE)
    sub = await subscribe(core, url, ALICE)
    assert await core.limits.pause(ALICE)
    assert not await core.limits.pause(ALICE)  # already paused
    assert "/resume" in await refused_early(core, ALICE, "member-paused")

    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.FAILED and ex.reason_code == "member-paused"

    assert (await trade(core, BOB)).ok  # someone else's pause is not yours
    # A card shown before the pause is refused at Confirm.
    p = await core.trading.preview(BOB, OrderInput("AAPL", "buy", "1"))
    assert await core.limits.pause(BOB)
    await refused(core, await core.trading.confirm(p.intent_id, BOB), "member-paused")
    assert await core.limits.resume(BOB)
    assert await core.limits.resume(ALICE)
    assert not await core.limits.resume(ALICE)
    assert (await trade(core, ALICE)).ok
    assert await paper_orders(core) == 2


@pytest.mark.parametrize("daily_limit", [False, True])
async def test_a_pause_begun_after_the_checks_still_stops_the_send(
    core: Core, monkeypatch: pytest.MonkeyPatch, daily_limit: bool
) -> None:
    """As the kill switch: /pause answers "paused" between the checks and the send, and the
    claim reads it again (before: the order was sent and filled)."""
    if daily_limit:
        await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(1_000_000)})
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    checks = core.trading._pretrade

    async def checked_then_paused(*args: Any, **kw: Any) -> Any:
        gate = await checks(*args, **kw)
        assert await core.limits.pause(ALICE)
        return gate

    monkeypatch.setattr(core.trading, "_pretrade", checked_then_paused)
    await refused(core, await core.trading.confirm(p.intent_id, ALICE), "member-paused")
    assert await paper_orders(core) == 0


async def test_paused_a_member_may_close_by_hand_but_no_signal_trades(core: Core) -> None:
    """A pause stops the strategies (their exits too: the member may be managing the position
    by hand now) and every order that adds risk; the member's own closes go through."""
    url = await shared_with(core, ALICE)
    sub = await subscribe(core, url, ALICE, sizing_value=Decimal(10))
    entry = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    assert (await execution(core, entry.body["id"], sub)).status == ExecutionStatus.FILLED
    assert await core.limits.pause(ALICE)
    out = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    ex = await execution(core, out.body["id"], sub)
    assert ex.status == ExecutionStatus.FAILED and ex.reason_code == "member-paused"
    await refused_early(core, ALICE, "member-paused")  # a buy adds to the position
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "4"))
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok


# -- a member's limits and the server's defaults -----------------------------------------------


async def test_per_order_quantity_and_notional_limits(core: Core) -> None:
    await core.limits.set_member_limits(
        ALICE, {"max_order_quantity": Decimal(5), "max_order_notional": Decimal(1000)}
    )
    message = await refused_early(core, ALICE, "limit-order-quantity", "6")
    assert "max quantity per order: 5" in message and "/limits show" in message
    message = await refused_early(core, ALICE, "limit-order-notional", "5")  # 5 × 200.10
    assert "$1,000.50" in message and "$1,000.00" in message
    assert (await trade(core, ALICE, "4")).ok
    assert (await trade(core, BOB, "6")).ok  # limits are per member
    # A card shown before the limit was set is refused at Confirm.
    p = await core.trading.preview(BOB, OrderInput("AAPL", "buy", "6"))
    await core.limits.set_member_limits(BOB, {"max_order_quantity": Decimal(5)})
    out = await core.trading.confirm(p.intent_id, BOB)
    await refused(core, out, "limit-order-quantity")
    assert out.message.startswith("Not sent:")


async def test_limits_never_hold_back_closing_a_position(core: Core) -> None:
    """Limits cap the risk a member takes on: at a limit they can still get out of a position
    (by hand or by a strategy's exit), while the kill switch still stops that."""
    assert (await trade(core, ALICE, "10")).ok  # long 10 AAPL, 2,001.00 sent today
    await core.limits.set_member_limits(
        ALICE,
        {
            "max_order_quantity": Decimal(1),
            "max_order_notional": Decimal(100),
            "max_daily_notional": Decimal(2000),
        },
    )
    await refused_early(core, ALICE, "limit-order-notional")
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "10"))
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.ok and out.intent.status == IntentStatus.FILLED
    # Closing more than is held opens a short: that is new risk, and held back.
    with pytest.raises(LimitReached):
        await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "1"))


async def test_a_second_closing_preview_of_one_position_is_checked_again(core: Core) -> None:
    """Two previews to sell a whole position, confirmed one after the other: the second would
    open a short, so at send time it is new risk and the limits apply."""
    assert (await trade(core, ALICE, "10")).ok
    await core.limits.set_member_limits(ALICE, {"max_order_quantity": Decimal(1)})
    first = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "10"))
    second = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "10"))
    assert (await core.trading.confirm(first.intent_id, ALICE)).ok
    out = await core.trading.confirm(second.intent_id, ALICE)
    await refused(core, out, "limit-order-quantity")


async def test_a_limit_order_is_valued_at_its_limit_price(core: Core) -> None:
    await core.limits.set_member_limits(ALICE, {"max_order_notional": Decimal(1000)})
    message = await refused_early(
        core, ALICE, "limit-order-notional", "10", order_type="limit", limit_price="150"
    )
    assert "$1,500.00" in message


async def test_the_daily_notional_counts_orders_sent_today_except_refused_or_failed(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(5000)})
    assert (await trade(core, ALICE, "10")).ok  # 2,001.00
    # Refused by the broker: it does not count.
    from adapters.errors import InvalidOrder

    async def reject(*_: Any, **__: Any) -> Any:
        raise InvalidOrder("refused for this test")

    with monkeypatch.context() as m:
        m.setattr(PaperBroker, "create_order", reject)
        rejected = await trade(core, ALICE, "10")
    assert rejected.intent.status == IntentStatus.REJECTED
    assert (await trade(core, ALICE, "10")).ok  # 4,002.00 sent today
    message = await refused_early(core, ALICE, "limit-daily-notional", "5")  # + 1,000.50
    assert (
        "$4,002.00 of paper orders was already sent today" in message and "$998.00 left" in message
    )
    # Two cards that each fit what is left, confirmed one after the other: the second does
    # not fit once the first is sent, and Confirm refuses it.
    fits = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "4"))  # + 800.40
    too_many = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "4"))
    assert (await core.trading.confirm(fits.intent_id, ALICE)).ok
    out = await core.trading.confirm(too_many.intent_id, ALICE)
    await refused(core, out, "limit-daily-notional")
    clock.advance(hours=9)  # past 00:00 UTC: a new day
    assert (await trade(core, ALICE, "10")).ok


async def test_the_server_default_applies_and_a_member_cannot_loosen_it(
    core: Core, settings: Settings, clock: FakeClock
) -> None:
    strict = await with_defaults(
        settings, clock, limit_max_order_notional="1000", limit_max_daily_notional=""
    )
    try:
        await refused_early(strict, ALICE, "limit-order-notional", "5")
        with pytest.raises(InvalidInput, match="only be the same or lower"):
            await strict.limits.set_member_limits(ALICE, {"max_order_notional": Decimal(2000)})
        shown = await strict.limits.set_member_limits(ALICE, {"max_order_notional": Decimal(500)})
        assert shown.effective.max_order_notional == Decimal(500)
        assert shown.server.max_order_notional == Decimal(1000)
        assert shown.effective.max_daily_notional is None  # empty: no limit
        await refused_early(strict, ALICE, "limit-order-notional", "3")
        # Removing one's own limit falls back to the server's, never to none.
        shown = await strict.limits.set_member_limits(ALICE, {"max_order_notional": None})
        assert shown.effective.max_order_notional == Decimal(1000)
        assert (await trade(strict, ALICE, "4")).ok
    finally:
        await strict.close()


def test_limit_settings_reject_negative_values(settings: Settings) -> None:
    from bot.settings import SettingsError

    values = {k: v for k, v in settings.model_dump().items() if v is not None}
    with pytest.raises(SettingsError, match="LIMIT_MAX_ORDER_NOTIONAL"):
        load_settings(**{**values, "limit_max_order_notional": "-5"})
    assert load_settings(**values).limit_max_daily_notional == 0


# -- a strategy's limits ----------------------------------------------------------------------


async def test_strategy_notional_limits_hold_its_signals_entries(core: Core) -> None:
    url = await shared_with(core, ALICE)
    sub = await subscribe(core, url, ALICE, sizing_value=Decimal(10))
    with pytest.raises(PermissionDenied, match="only its owner"):
        await core.limits.set_strategy_limits(
            GUILD, ALICE, url.strategy.name, {"max_order_notional": Decimal(1000)}
        )
    limits = await core.limits.set_strategy_limits(
        GUILD, OWNER, url.strategy.name, {"max_order_notional": Decimal(1000)}
    )
    assert limits.max_order_notional == Decimal(1000)

    # A market order: its notional is priced from a quote at submit time (10 × 200.10).
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.FAILED
    assert ex.reason_code == "strategy-order-notional" and "$2,001.00" in (ex.reason or "")
    assert await paper_orders(core) == 0
    assert (await trade(core, ALICE, "10")).ok  # her own /trade is not the strategy's


async def test_strategy_daily_notional_is_per_subscriber(core: Core, clock: FakeClock) -> None:
    url = await shared_with(core, ALICE, BOB)
    subs = {m: await subscribe(core, url, m, sizing_value=Decimal(10)) for m in (ALICE, BOB)}
    await core.limits.set_strategy_limits(
        GUILD, OWNER, url.strategy.name, {"max_daily_notional": Decimal(3000)}
    )
    first = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    for sub in subs.values():
        assert (await execution(core, first.body["id"], sub)).status == ExecutionStatus.FILLED
    clock.advance(seconds=5)
    second = await send(core, url, {"ticker": "AAPL", "action": "add"})
    await core.jobs.drain()
    for sub in subs.values():
        ex = await execution(core, second.body["id"], sub)
        assert ex.status == ExecutionStatus.FAILED, ex.reason
        assert ex.reason_code == "strategy-daily-notional"
    # An exit is never held back by the strategy's limits.
    third = await send(core, url, {"ticker": "AAPL", "action": "exit"})
    await core.jobs.drain()
    for sub in subs.values():
        assert (await execution(core, third.body["id"], sub)).status == ExecutionStatus.FILLED


# -- the migration ------------------------------------------------------------------------------


def _migrate(conn: Connection, url: str, direction: str, target: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    getattr(command, direction)(cfg, target)


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


async def test_the_limits_migration_applies_and_reverses(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0004")
            assert "paused_at" not in await conn.run_sync(_columns, "members")
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0005")
            assert {"paused_at", "max_daily_notional"} <= await conn.run_sync(_columns, "members")
            assert {"notional", "submitted_at"} <= await conn.run_sync(_columns, "order_intents")
            assert "max_order_notional" in await conn.run_sync(_columns, "strategies")
            assert "switches" in await conn.run_sync(lambda c: inspect(c).get_table_names())
            await conn.run_sync(_migrate, empty_database_url, "downgrade", "0004")
            assert "notional" not in await conn.run_sync(_columns, "order_intents")
            assert "switches" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
        await db.upgrade()
        assert await db.current_revision() == head_revision()
    finally:
        await db.close()


async def test_the_kill_switch_row_exists_off_from_the_start(
    core: Core, empty_database_url: str
) -> None:
    """Seeded by migration 0020, so the claims always have a row to share the lock of; its
    downgrade takes only a row no owner has switched."""
    state = await core.limits.kill_switch()
    assert (state.on, state.changed_by) == (False, None) and state.changed_at is not None
    db = Database(empty_database_url)
    try:
        rows = "SELECT name FROM switches"
        async with db.engine.begin() as conn:
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0020")
            assert (await conn.execute(text(rows))).scalars().all() == ["kill_switch"]
            await conn.run_sync(_migrate, empty_database_url, "downgrade", "0019")
            assert (await conn.execute(text(rows))).scalars().all() == []
            await conn.run_sync(_migrate, empty_database_url, "upgrade", "0020")
            await conn.execute(text("UPDATE switches SET changed_by = 1"))
            await conn.run_sync(_migrate, empty_database_url, "downgrade", "0019")
            assert (await conn.execute(text(rows))).scalars().all() == ["kill_switch"]
    finally:
        await db.close()


async def test_concurrent_sends_read_the_checks_rows_once(core: Core) -> None:
    """A signal's fan-out sends many orders at once: the switch, the members and the
    strategies are read for all of them together, not once per order."""
    members = [3001 + i for i in range(5)]
    claimed = []
    for m in members:
        p = await core.trading.preview(m, OrderInput("AAPL", "buy", "1"))
        claimed.append(await core.trading.claim(p.intent_id, m))
    statements: list[str] = []

    def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(core.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        outcomes = await asyncio.gather(*(core.trading.submit(i) for i in claimed))
    finally:
        event.remove(core.db.engine.sync_engine, "before_cursor_execute", seen)
    assert all(o.ok for o in outcomes)
    # Batched: fewer reads than orders. How many batches depends on when the sends arrive
    # (one, or more when some arrive while a batch is being read: a busy machine makes three).
    assert 1 <= len([q for q in statements if q.startswith("SELECT switches.name")]) < len(members)
    # The claims read the switch again: once per transaction, however many claims it holds.
    assert (
        1
        <= len([q for q in statements if q.startswith('SELECT switches."on" FROM')])
        <= len(members)
    )
    # The checks read the members together, and so do the claims (which lock them, as the
    # pause is read again there).
    reads = [q for q in statements if "FROM members WHERE members.id IN" in q]
    if core.db.is_sqlite:  # no FOR UPDATE to tell the two apart
        assert 2 <= len(reads) < 2 * len(members), reads
    else:
        for locked in (False, True):
            batches = [q for q in reads if q.endswith("FOR UPDATE") == locked]
            assert 1 <= len(batches) < len(members), reads


async def test_the_reconciler_ends_an_order_over_the_daily_limit_and_never_sends_it_later(
    core: Core, clock: FakeClock
) -> None:
    """Confirmed, then its process died; meanwhile another order used the day's limit. The
    reconciler refuses it for good (and tells the member), not holds it for tomorrow."""
    core.notifier = notifier = RecordingNotifier()
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(3000)})
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "10"))  # 2,001.00
    await core.trading.claim(p.intent_id, ALICE)
    assert (await trade(core, ALICE, "10")).ok
    before = await paper_orders(core)
    clock.advance(seconds=60)
    await core.trading.reconcile()
    intent = await core.trading.get_intent(p.intent_id)
    assert (intent.status, intent.error_code) == (IntentStatus.FAILED, "limit-daily-notional")
    assert any("already sent today" in m.content for _, m in notifier.dms)
    clock.advance(hours=24)
    await core.trading.reconcile()
    assert await paper_orders(core) == before


async def test_a_late_refusal_does_not_overwrite_an_order_another_process_sent(
    core: Core, clock: FakeClock
) -> None:
    """A Confirm stalled after its claim; the reconciler sent the order; then the kill switch
    went on. The stalled press must not mark the filled order failed."""
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    stalled = await core.trading.claim(p.intent_id, ALICE)
    clock.advance(seconds=60)
    await core.trading.reconcile()
    assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.FILLED
    await core.limits.set_kill_switch(True, by=OWNER)
    out = await core.trading.submit(stalled)
    assert not out.ok and "will not resend" in out.message
    assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.FILLED
    assert await paper_orders(core) == 1


# -- audit h4: pricing, what counts toward the day, races ----------------------------------------


def no_ask(last: str) -> Any:
    """A broker quote without bid or ask (Alpaca and Tradier send 0 then), last trade ``last``."""
    from adapters.models import Quote

    async def quote(self: PaperBroker, symbol: str) -> Quote:
        real = await self.quote_source.fetch_quote(symbol)
        return Quote(real.symbol, Decimal(0), Decimal(0), Decimal(last), real.time)

    return quote


async def test_a_market_order_without_an_ask_is_not_valued_at_zero(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ask at preview: the order is valued at the last trade, and with no price at all it is
    refused with a reason, never waved through as costing $0."""
    await core.limits.set_member_limits(ALICE, {"max_order_notional": Decimal(1000)})
    monkeypatch.setattr(PaperBroker, "fetch_quote", no_ask("200.10"))
    message = await refused_early(core, ALICE, "limit-order-notional", "5")
    assert "$1,000.50" in message
    monkeypatch.setattr(PaperBroker, "fetch_quote", no_ask("0"))
    with pytest.raises(TradecordError) as refusal:
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    assert refusal.value.code == "no-quote" and "no price" in refusal.value.user_message
    assert await paper_orders(core) == 0


async def test_two_orders_confirmed_at_once_cannot_both_fit_the_days_rest(core: Core) -> None:
    """Two cards that each fit what is left of the day, confirmed at the same moment (two
    clicks, two processes): the daily total is checked and added to under one lock."""
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(3000)})
    cards = [await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "10")) for _ in "ab"]
    outcomes = await asyncio.gather(*(core.trading.confirm(c.intent_id, ALICE) for c in cards))
    assert sorted(o.ok for o in outcomes) == [False, True]
    await refused(core, next(o for o in outcomes if not o.ok), "limit-daily-notional")
    assert await paper_orders(core) == 1


async def test_a_cancelled_orders_unfilled_part_does_not_use_the_days_limit(core: Core) -> None:
    """The day's total is what was sent and may still trade or has traded: an order cancelled
    (or expired) before it filled no longer can, and leaves the allowance to the next."""
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(3000)})
    resting = await trade(
        core, ALICE, "10", order_type="limit", limit_price="150", time_in_force="gtc"
    )
    assert resting.ok and resting.intent.status == IntentStatus.ACCEPTED  # 1,500.00 working
    await refused_early(core, ALICE, "limit-daily-notional", "10")  # + 2,001.00
    _, cancelled = await core.trading.cancel(ALICE, None, "paper")
    assert [o.status.value for o in cancelled] == ["cancelled"]
    assert (await core.trading.get_intent(resting.intent.id)).status == IntentStatus.CANCELLED
    assert (await trade(core, ALICE, "10")).ok


async def test_closing_a_position_does_not_use_the_days_limit(core: Core) -> None:
    """Closing is never held back by a limit, so it does not count towards the next opening
    order's daily total either: a round trip uses the allowance once, as a strategy's exits
    do not use the strategy's daily limit."""
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(5000)})
    assert (await trade(core, ALICE, "10")).ok  # 2,001.00
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "10"))
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok  # closes: takes risk off
    assert (await trade(core, ALICE, "10")).ok  # 4,002.00 of new risk today
    await refused_early(core, ALICE, "limit-daily-notional", "5")  # + 1,000.50


async def test_a_futures_order_is_valued_with_its_contract_multiplier(core: Core) -> None:
    """One E-mini is 50 × the index: a notional limit sees $295,025, not $5,900.50, at preview
    and again at Confirm."""
    core.simulated_feed.set_quote(ES, Decimal("5900.00"), Decimal("5900.50"))
    p = await core.trading.preview(ALICE, OrderInput(ES, "buy", "1"))
    await core.limits.set_member_limits(ALICE, {"max_order_notional": Decimal(100_000)})
    await refused(core, await core.trading.confirm(p.intent_id, ALICE), "limit-order-notional")
    with pytest.raises(LimitReached, match=r"\$295,025.00"):
        await core.trading.preview(ALICE, OrderInput(ES, "buy", "1"))


async def test_a_signal_order_approved_after_a_pause_is_not_sent(core: Core) -> None:
    """Approval waits as a draft; the member clicks Approve, then pauses before the order is
    sent: the send is checked when it happens, not when the signal arrived or the click came.
    (A click while paused is refused with what to do: test_execution.)"""
    url = await shared_with(core, ALICE)
    sub = await subscribe(core, url, ALICE, manual_approval=True, approval_ttl_seconds=120)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    assert (await execution(core, ack.body["id"], sub)).status == ExecutionStatus.WAITING_APPROVAL
    async with core.db.session() as s:
        draft = await s.scalar(select(OrderIntent))
    assert draft is not None and draft.status == IntentStatus.DRAFT
    await core.signals.approve(draft.id, ALICE)
    assert await core.limits.pause(ALICE)
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.FAILED and ex.reason_code == "member-paused"
    assert await paper_orders(core) == 0


async def test_a_signal_entry_over_a_limit_leaves_the_open_orders_alone(core: Core) -> None:
    """A signal cancels the ticker's open orders right before its order is sent; an order the
    pre-trade checks refuse (here: over the member's notional per order) sends nothing, so it
    must cancel nothing either: the protective stop stays, as it does for a pause or the kill
    switch."""
    url = await shared_with(core, ALICE)
    sub = await subscribe(core, url, ALICE, sizing_value=Decimal(10))
    first = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    assert (await execution(core, first.body["id"], sub)).status == ExecutionStatus.FILLED
    stop = await trade_order(core, ALICE, "sell", "10", "stop", stop_price="150")
    assert stop.ok and stop.intent.status == IntentStatus.ACCEPTED
    await core.limits.set_member_limits(ALICE, {"max_order_notional": Decimal(1000)})
    add = await send(core, url, {"ticker": "AAPL", "action": "add", "cancel": True})
    await core.jobs.drain()
    ex = await execution(core, add.body["id"], sub)
    assert ex.status == ExecutionStatus.FAILED and ex.reason_code == "limit-order-notional"
    assert (await core.trading.get_intent(stop.intent.id)).status == IntentStatus.ACCEPTED
    _, _, still_open = await core.trading.open_orders(ALICE, None, "paper")
    assert [o.order_type.value for o in still_open] == ["stop"]


async def trade_order(
    core: Core, member: int, side: str, quantity: str, order_type: str, **kw: Any
) -> Outcome:
    p = await core.trading.preview(
        member, OrderInput("AAPL", side, quantity, order_type=order_type, time_in_force="gtc", **kw)
    )
    return await core.trading.confirm(p.intent_id, member)


async def test_raising_an_order_of_an_earlier_day_counts_it_today_and_says_so(
    core: Core, clock: FakeClock
) -> None:
    """Placed yesterday for $1,500 and raised today to $2,100 under a $2,000 day: refused, and
    the message said $1,500 "was already sent today, this order included" when nothing was.
    Raised to $1,800 it passes and counts today at its new value (before: nowhere)."""
    rest = await trade_order(core, ALICE, "buy", "10", "limit", limit_price="150")
    assert rest.ok and rest.order is not None
    clock.advance(days=1)
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(2000)})
    with pytest.raises(LimitReached) as e:
        await core.trading.preview_change(
            ALICE, None, "paper", rest.order.id, change_of("14", None, None)
        )
    assert e.value.user_message == (
        "Not allowed: buy 14 AAPL is about $2,100.00, $600.00 more than it counted for (sent "
        "on an earlier day, it counts today at its new value), and $0.00 of paper orders was "
        "already sent today (UTC): over your max notional per day: $2,000.00 ($2,000.00 left "
        "today). See /limits show."
    )
    await core.trading.change_order(
        ALICE, None, "paper", rest.order.id, change_of("12", None, None)
    )
    message = await refused_early(core, ALICE, "limit-daily-notional", "2")  # + 400.20
    assert "$1,800.00 of paper orders was already sent today" in message, message


async def test_lowering_a_working_order_gives_back_the_days_allowance(core: Core) -> None:
    """Cancelling gave back the unfilled part; lowering gave back nothing, so the only way to
    get it back was to cancel and place again (losing the order's place in the queue)."""
    await core.limits.set_member_limits(ALICE, {"max_daily_notional": Decimal(2000)})
    rest = await trade_order(core, ALICE, "buy", "10", "limit", limit_price="150")
    assert rest.ok and rest.order is not None
    await core.trading.change_order(ALICE, None, "paper", rest.order.id, change_of("5", None, None))
    assert (await trade(core, ALICE, "6")).ok  # $750 + $1,200.60


async def test_an_order_ended_by_another_process_as_it_was_confirmed_says_why(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Confirm, while another process ended the order unsent (its connection removed at that
    moment): the answer said "we keep checking and will message you the outcome", and no
    message ever came."""
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    checks = core.trading._pretrade

    async def checked_then_ended(*args: Any, **kw: Any) -> Any:
        gate = await checks(*args, **kw)
        async with core.db.transaction() as s:
            await s.execute(
                sa_update(OrderIntent)
                .where(OrderIntent.id == p.intent_id)
                .values(
                    status=IntentStatus.FAILED,
                    error_code="connection-removed",
                    error_message="Not sent: its connection was disconnected.",
                )
            )
        return gate

    monkeypatch.setattr(core.trading, "_pretrade", checked_then_ended)
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert not out.ok and out.message == "Not sent: its connection was disconnected.", out.message
    assert await paper_orders(core) == 0
