"""A signal job retaken after its worker died carries on only in the account its orders were
stored for: if the member chose another account meanwhile (/accounts), nothing is sent to the
new one, an order never sent ends failed, and one that may be at the old account is left for
the member to check there, who is told."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from adapters.tradestation import TradeStationAdapter
from bot.automation_models import ExecutionStatus
from bot.core import Core
from bot.db import Database
from bot.errors import Conflict
from bot.models import ConnectionAccount, IntentStatus, OrderIntent
from bot.services.subscriptions import SubscriptionSettings
from bot.services.trading import TradingService
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import MEMBER, link
from tests.bot.signals.conftest import (
    GUILD,
    execution,
    intents,
    notifier,
    open_core,
    send,
)
from tests.support import FakeClock

OLD, NEW = "11827342", "11827341"  # the "demo" login's live margin and cash accounts
SIGNAL = {"ticker": "MSFT", "action": "buy", "orderType": "limit", "limitPrice": 300}


class Crash(BaseException):
    """The process dies here (not an error the code could handle)."""


async def die(*_: Any, **__: Any) -> Any:
    raise Crash


async def subscribed(core: Core, ts: TradeStationEmulator, **settings: Any) -> tuple[Any, int, int]:
    """MEMBER's strategy, subscribed live on TradeStation account OLD: its URL, the
    connection's id and the subscription's."""
    cid = await link(core, ts, member=MEMBER)
    async with core.db.transaction() as s:
        s.add(
            ConnectionAccount(
                connection_id=cid,
                mode="live",
                account_id=OLD,
                account_type="margin",
                label="TradeStation ••7342",
            )
        )
    url = await core.strategies.create(GUILD, MEMBER, "NQ breakout")
    sub = await core.subscriptions.subscribe(
        GUILD,
        MEMBER,
        url.strategy.id,
        connection="TS",
        mode="live",
        settings=SubscriptionSettings(sizing_value=Decimal(2), **settings),
    )
    return url, cid, sub.id


async def crashed_then_moved(
    settings: Settings,
    clock: FakeClock,
    ts: TradeStationEmulator,
    dies: tuple[Any, str],
    how: Callable[..., Awaitable[Any]] = die,
) -> tuple[Core, str, int]:
    """A live subscription on TradeStation account OLD whose worker died at ``dies`` (object,
    attribute); then the member chose NEW. The second process, the signal's id and the
    subscription's."""
    first = await open_core(settings, clock)
    url, cid, sub = await subscribed(first, ts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(*dies, how)
        ack = await send(first, url, SIGNAL)
        with pytest.raises(Crash):
            await first.jobs.drain()
    await first.close()

    second = await open_core(settings, clock)
    chosen = await second.connections.choose_account(MEMBER, cid, "live", NEW)
    assert chosen.account.id == NEW
    clock.advance(seconds=61)  # the dead worker's lease and its send have ended
    return second, ack.body["id"], sub


async def signal_intent(core: Core) -> OrderIntent:
    [intent] = [i for i in await intents(core) if i.source == "signal"]
    return intent


async def test_an_order_never_sent_is_not_sent_to_the_account_chosen_since(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    second, signal_id, sub = await crashed_then_moved(
        ts_settings, clock, ts, (TradingService, "submit")
    )
    try:
        assert await second.jobs.drain() == 1
        assert ts.world.orders == {}  # neither account got it
        intent = await signal_intent(second)
        assert (intent.status, intent.account_id) == (IntentStatus.FAILED, OLD)
        assert intent.error_code == "account-changed"
        ex = await execution(second, signal_id, sub)
        assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "account-changed")
        assert "nothing was sent" in (ex.reason or "")
        assert any("account" in m.content for _, m in notifier(second).dms)
    finally:
        await second.close()


async def test_an_order_a_dead_worker_was_sending_is_not_resent_to_the_account_chosen_since(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    second, signal_id, sub = await crashed_then_moved(
        ts_settings, clock, ts, (TradeStationAdapter, "create_order")
    )
    try:
        assert (await signal_intent(second)).status == IntentStatus.SUBMITTED
        assert await second.jobs.drain() == 1
        assert ts.world.orders == {}  # not resent to NEW (nor OLD: it may be there)
        intent = await signal_intent(second)
        assert (intent.status, intent.account_id) == (IntentStatus.SUBMITTED, OLD)
        ex = await execution(second, signal_id, sub)
        assert (ex.status, ex.reason_code) == (ExecutionStatus.UNCONFIRMED, "account-changed")
        assert "followed there" in (ex.reason or "")
        assert any("account" in m.content for _, m in notifier(second).dms)
        # Looked up at OLD, read-only: the broker never got it, so it failed, unsent.
        await reconciled(second, clock)
        assert (await signal_intent(second)).status == IntentStatus.FAILED
        assert ts.world.orders == {}
        ex = await execution(second, signal_id, sub)
        assert ex.status == ExecutionStatus.FAILED
        assert "Not placed: buy 2 MSFT" in told(second)[-1]
    finally:
        await second.close()


async def test_an_approved_order_is_not_sent_to_the_account_chosen_since_the_card(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    core = await open_core(ts_settings, clock)
    try:
        url, cid, sub = await subscribed(core, ts, manual_approval=True)
        ack = await send(core, url, SIGNAL)
        await core.jobs.drain()
        draft = await signal_intent(core)
        assert draft.status == IntentStatus.DRAFT
        await core.connections.choose_account(MEMBER, cid, "live", NEW)
        await core.signals.approve(draft.id, MEMBER)
        await core.jobs.drain()
        assert ts.world.orders == {}
        intent = await signal_intent(core)
        assert (intent.status, intent.error_code) == (IntentStatus.FAILED, "account-changed")
        ex = await execution(core, ack.body["id"], sub)
        assert (ex.status, ex.reason_code) == (ExecutionStatus.FAILED, "account-changed")
    finally:
        await core.close()


async def test_a_run_that_had_placed_its_order_reports_it_as_placed_in_the_old_account(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    """The worker died after placing the order, before recording the execution: the retaken
    job sends nothing more and records the order as it stands in the old account."""
    first = await open_core(ts_settings, clock)
    url, cid, sub = await subscribed(first, ts)
    ack = await send(first, url, SIGNAL)
    await first.jobs.claim("doomed", 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(first.signals, "_finish", die)
        with pytest.raises(Crash):
            await first.signals.process(ack.body["id"])
    await first.close()

    second = await open_core(ts_settings, clock)
    try:
        await second.connections.choose_account(MEMBER, cid, "live", NEW)
        clock.advance(seconds=61)
        assert await second.jobs.drain() == 1
        assert [o.account.id for o in ts.world.orders.values()] == [OLD]
        intent = await signal_intent(second)
        assert (intent.status, intent.error_code) == (IntentStatus.ACCEPTED, None)
        ex = await execution(second, ack.body["id"], sub)
        assert (ex.status, ex.reason_code) == (ExecutionStatus.ACCEPTED, "account-changed")
    finally:
        await second.close()


# -- followed at the old account, as a /trade order is (the reconciler) -----------------------


async def reconciled(core: Core, clock: FakeClock) -> None:
    clock.advance(seconds=31)  # past the reconciler's quiet period
    await core.trading.reconcile()


def told(core: Core) -> list[str]:
    return [m.content or "" for _, m in notifier(core).dms]


async def test_a_working_order_is_followed_at_the_old_account_until_it_fills(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    core = await open_core(ts_settings, clock)
    try:
        url, cid, sub = await subscribed(core, ts)
        ack = await send(core, url, SIGNAL)
        await core.jobs.drain()
        intent = await signal_intent(core)
        assert intent.status == IntentStatus.ACCEPTED
        await core.connections.choose_account(MEMBER, cid, "live", NEW)
        [order] = ts.world.orders.values()
        ts.fill(order.id, 2, 300)
        before = len(told(core))
        await reconciled(core, clock)
        assert (await signal_intent(core)).status == IntentStatus.FILLED
        ex = await execution(core, ack.body["id"], sub)
        assert ex.status == ExecutionStatus.FILLED
        assert [m for m in told(core)[before:] if "Filled: buy 2 MSFT" in m]
    finally:
        await core.close()


async def placed_then_die(self: TradeStationAdapter, *args: Any, **kwargs: Any) -> Any:
    """The broker got the order; the process died before storing its answer."""
    await PLACE(self, *args, **kwargs)
    raise Crash


PLACE = TradeStationAdapter.create_order


@pytest.mark.parametrize("ending", ["filled", "cancelled"])
async def test_an_order_a_dead_worker_sent_is_followed_at_the_old_account(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator, ending: str
) -> None:
    """The worker died right after the old account got the order; the member chose another
    account before the job was retaken. The retaken job sends nothing more; the order is
    followed at the old account, and its end reaches the intent, the execution and the
    member, as for a /trade order."""
    second, signal_id, sub = await crashed_then_moved(
        ts_settings, clock, ts, (TradeStationAdapter, "create_order"), placed_then_die
    )
    try:
        assert await second.jobs.drain() == 1
        [order] = ts.world.orders.values()
        assert order.account.id == OLD  # nothing sent to NEW, nor again to OLD
        ex = await execution(second, signal_id, sub)
        assert (ex.status, ex.reason_code) == (ExecutionStatus.UNCONFIRMED, "account-changed")
        assert "followed there" in (ex.reason or "")
        if ending == "filled":
            ts.fill(order.id, 2, 300)
        else:
            ts.world.cancel(order.id)
        before = len(told(second))
        await reconciled(second, clock)
        intent = await signal_intent(second)
        status = IntentStatus.FILLED if ending == "filled" else IntentStatus.CANCELLED
        assert (intent.status, intent.error_code) == (status, None)
        ex = await execution(second, signal_id, sub)
        assert ex.status == (
            ExecutionStatus.FILLED if ending == "filled" else ExecutionStatus.CANCELLED
        )
        news = told(second)[before:]
        word = "Filled" if ending == "filled" else "Cancelled"
        # Which strategy's order it is, and which signal (the result DM was long before).
        assert len(news) == 1, news
        assert f"Live order update · **NQ breakout**: {word}: buy 2 MSFT" in news[0], news
        assert news[0].endswith(f"\nSignal `{signal_id[-8:]}` · /signal show for every step.")
        assert len(ts.world.orders) == 1
    finally:
        await second.close()


async def test_an_account_chosen_while_the_exit_works_stops_the_entry(
    ts_settings: Settings,
    db: Database,
    clock: FakeClock,
    ts: TradeStationEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reversal waits for its exit to fill at OLD; meanwhile the member chooses NEW. The exit
    is still followed at OLD until it fills; the entry goes to neither account, and the member
    hears why instead of an entry silently placed where they no longer trade."""
    core = await open_core(ts_settings, clock)
    try:
        url, cid, sub = await subscribed(core, ts)
        ts.set_position(OLD, "MSFT", 5, 300)
        signal = {"ticker": "MSFT", "action": "sell", "orderType": "limit", "limitPrice": 1000}
        wait = core.signals._await_final

        async def moved_meanwhile(*args: Any) -> OrderIntent:
            # The exit rests at OLD as the run starts waiting for it to fill.
            await core.connections.choose_account(MEMBER, cid, "live", NEW)
            [order] = ts.world.orders.values()
            ts.fill(order.id, 5, 1000)
            return await wait(*args)

        monkeypatch.setattr(core.signals, "_await_final", moved_meanwhile)
        ack = await send(core, url, signal)
        assert await core.jobs.drain() == 1
        assert [(o.account.id, o.action) for o in ts.world.orders.values()] == [(OLD, "SELL")]
        [exit_intent] = [i for i in await intents(core) if i.source == "signal"]
        assert exit_intent.status == IntentStatus.FILLED
        ex = await execution(core, ack.body["id"], sub)
        assert (ex.status, ex.reason_code) == (ExecutionStatus.FILLED, "account-changed")
        assert "nothing more was sent" in (ex.reason or "")
        assert any("nothing more was sent" in m for m in told(core))
    finally:
        await core.close()


async def test_disconnecting_withdraws_the_approvals_waiting_on_the_connection(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    """Before: its drafts were discarded but the execution waited until its deadline, whose
    DM said the approval expired, and the card kept its buttons."""
    core = await open_core(ts_settings, clock)
    try:
        url, _, _ = await subscribed(core, ts, manual_approval=True)
        await send(core, url, SIGNAL)
        await core.jobs.drain()
        draft = await signal_intent(core)
        await core.connections.disconnect(MEMBER, "TS")
        [card] = [m for _, m in notifier(core).dms if "Waiting for your approval" in m.content]
        assert card.components == [] and "This approval was withdrawn" in card.content
        assert (await signal_intent(core)).status == IntentStatus.DISCARDED
        with pytest.raises(Conflict, match="withdrawn"):
            await core.signals.approve(draft.id, MEMBER)
        told = len(notifier(core).dms)
        clock.advance(seconds=3600)
        await core.jobs.drain()
        assert notifier(core).dms[told:] == [] and ts.world.orders == {}
    finally:
        await core.close()
