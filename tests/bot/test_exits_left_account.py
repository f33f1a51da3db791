"""A bracket's exits working at an account the member has since left in /accounts: the
watcher follows the chosen accounts only, so their fill went untold and the connection stayed
watched for ever. The reconciler follows them at their own account, as it does intents."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select

from adapters.models import Bracket
from bot.core import Core
from bot.db import Database
from bot.models import BracketExit, IntentStatus
from bot.services.notify import RecordingNotifier
from bot.services.order_updates import OrderUpdates
from bot.services.trading import Outcome
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import open_cores
from tests.bot.test_order_updates import (
    choose_cash_account,
    linked_margin_account,
    msft_limit,
    poll_now,
    texts,
)


async def _filled_bracket_then_left(core: Core, ts: TradeStationEmulator) -> tuple[Outcome, str]:
    """A bracket whose entry filled at the margin account, its exits working there; then the
    member chooses the cash account. Returns the entry's outcome and its take-profit's id."""
    target = await linked_margin_account(core, ts)
    req = msft_limit(Bracket(Decimal("500"), Decimal("250")))
    out = await core.trading.place(target, req, source="discord", idempotency_key="tsx")
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    cid = out.intent.connection_id
    ts.fill(out.intent.broker_order_id or "", 10, "300")
    await poll_now(core, cid)
    assert (await core.trading.get_intent(out.intent.id)).status == IntentStatus.FILLED
    await choose_cash_account(core, cid)
    async with core.db.session() as s:
        exits = list(await s.scalars(select(BracketExit.broker_order_id)))
    assert len(exits) == 2, exits
    take_profit = next(e for e in exits if ts.world.orders[e].limit_price == Decimal("500"))
    return out, take_profit


async def test_a_bracket_exit_at_a_left_account_is_told_when_it_fills(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out, take_profit = await _filled_bracket_then_left(core, ts)
        cid = out.intent.connection_id
        updates = OrderUpdates(core)
        # Still working there: nothing to tell, and still watched.
        await core.trading.reconcile(older_than=timedelta(0))
        assert not [t for t in texts(notifier) if "bracket exit" in t]
        assert await updates.watched_connections() == [cid]
        ts.fill(take_profit, 10, "500.25")
        await poll_now(core, cid)
        await core.trading.reconcile(older_than=timedelta(0))
        assert [t for t in texts(notifier) if "bracket exit" in t] == [
            "🔴 Live bracket exit filled: the take-profit sell 10 MSFT at $500.25, the exit of "
            f"your buy 10 MSFT at $300.00 (intent {out.intent.id[:8]}). P&L +$2,002.50 before "
            "fees."
        ]
        # The stop-loss was cancelled with it (one-cancels-other): nothing left to follow.
        await core.trading.reconcile(older_than=timedelta(0))
        assert await updates.watched_connections() == []
        assert len([t for t in texts(notifier) if "bracket exit" in t]) == 1
    finally:
        await core.close()


async def test_a_bracket_exit_at_an_account_the_login_lost_is_told_once_and_unwatched(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The login no longer reaches the old account: its exits can no longer be followed, so
    the member is told once to check there, and the connection stops being watched."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        out, _ = await _filled_bracket_then_left(core, ts)
        ts.world.accounts["11827342"].user_id = "someone-else"
        told = len(notifier.dms)
        await core.trading.reconcile(older_than=timedelta(0))
        await core.trading.reconcile(older_than=timedelta(0))
        said = texts(notifier)[told:]
        assert said == [
            "🔴 Live bracket exits not followed: the live account of “TS” changed, and the "
            "broker no longer shows Tradecord the old account, so the exits of your buy 10 MSFT "
            f"at $300.00 (intent {out.intent.id[:8]}) can no longer be followed: they may still "
            "be working at ••••7342, and a fill there is not told. Check that account at the "
            "broker."
        ]
        assert await OrderUpdates(core).watched_connections() == []
    finally:
        await core.close()
