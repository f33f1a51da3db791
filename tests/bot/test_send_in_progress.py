"""An order's outcome reaches its member even when Discord or the broker is slow or away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import discord
import pytest
from sqlalchemy import select

from adapters.errors import BrokerUnavailable
from adapters.paper.broker import PaperBroker
from adapters.tradier import TradierAdapter
from bot.core import Core
from bot.db import Database
from bot.models import AuditEvent, IntentStatus
from bot.services import trading
from bot.services.notify import Outgoing, RecordingNotifier
from bot.services.trading import OrderInput
from bot.settings import Settings
from emulators.common import Fault
from emulators.tradier import TradierEmulator
from tests.bot.conftest import MEMBER, open_cores
from tests.bot.test_preview_position_rules import connect
from tests.bot.test_trading import ALICE, core
from tests.support import FakeClock

__all__ = ["core"]  # the paper fixture, with its clock and AAPL quote


class FailingDms(RecordingNotifier):
    """Refuses the first ``len(failures)`` DMs with those errors, then delivers."""

    def __init__(self, *failures: Exception) -> None:
        super().__init__()
        self.failures = list(failures)
        self.tries = 0

    async def dm(self, discord_user_id: int, message: Outgoing) -> None:
        self.tries += 1
        if self.failures:
            raise self.failures.pop(0)
        await super().dm(discord_user_id, message)


def discord_error(kind: type[discord.HTTPException], status: int, reason: str) -> Exception:
    return kind(SimpleNamespace(status=status, reason=reason), "upstream connect error")


async def lost_answer(
    core: Core, monkeypatch: pytest.MonkeyPatch, order: OrderInput = OrderInput("AAPL", "buy", "1")
) -> str:
    """A confirmed order the broker placed, whose answer and lookup were both lost."""
    place = PaperBroker.create_order

    async def lose_answer(self: PaperBroker, account: Any, request: Any) -> Any:
        await place(self, account, request)
        raise BrokerUnavailable(maybe_sent=True)

    async def refuse(*_: Any, **__: Any) -> Any:
        raise BrokerUnavailable(maybe_sent=False)

    p = await core.trading.preview(ALICE, order)
    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", lose_answer)
        patch.setattr(PaperBroker, "fetch_order", refuse)
        out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.intent.status == IntentStatus.UNKNOWN
    return p.intent_id


# -- an order update's DM that Discord failed to take -------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        discord_error(discord.DiscordServerError, 503, "Service Unavailable"),
        TimeoutError(),
        ConnectionResetError("reset by peer"),
    ],
    ids=["503", "timeout", "network"],
)
async def test_an_update_discord_failed_to_deliver_is_sent_again_by_the_next_pass(
    core: Core, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Before: the update was marked told before its DM, and a 503 (which discord.py does not
    retry) lost it for ever: the member, told they would hear the outcome, never did."""
    core.notifier = notifier = FailingDms(failure)
    intent_id = await lost_answer(core, monkeypatch)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(intent_id)).status == IntentStatus.FILLED
    assert notifier.tries == 1 and notifier.dms == []  # not tried again in the same pass
    for _ in range(3):  # the next passes, as Background runs them
        core.trading.clock.advance(seconds=31)  # type: ignore[attr-defined]
        await core.trading.reconcile()
    told = [m.content or "" for _, m in notifier.dms]
    assert len(told) == 1 and told[0].startswith("📝 Paper order update: Filled"), told
    assert notifier.tries == 2


async def test_a_working_orders_update_discord_failed_to_deliver_is_sent_again(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resting order is read at every pass, so tell_untold never finds it old enough: the
    reconciler's own pass sends its owed DM."""
    core.notifier = notifier = FailingDms(
        discord_error(discord.DiscordServerError, 503, "Service Unavailable")
    )
    limit = OrderInput("AAPL", "buy", "1", order_type="limit", limit_price="150")
    intent_id = await lost_answer(core, monkeypatch, limit)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(intent_id)).status == IntentStatus.ACCEPTED
    assert notifier.tries == 1 and notifier.dms == []
    for _ in range(3):
        core.trading.clock.advance(seconds=31)  # type: ignore[attr-defined]
        await core.trading.reconcile()
    told = [m.content or "" for _, m in notifier.dms]
    assert len(told) == 1 and "Accepted" in told[0], told


async def test_an_update_to_a_member_whose_dms_are_closed_is_not_tried_again(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord refuses DMs to a member who closed them: trying at every pass only wastes
    Discord's rate limit."""
    core.notifier = notifier = FailingDms(
        discord_error(discord.Forbidden, 403, "Forbidden"),
        discord_error(discord.Forbidden, 403, "Forbidden"),
    )
    intent_id = await lost_answer(core, monkeypatch)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(intent_id)).status == IntentStatus.FILLED
    core.trading.clock.advance(seconds=31)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert notifier.tries == 1 and notifier.dms == []


# -- a send that is slow, and one that takes too long ------------------------------------------


@pytest.fixture
async def tradier_core(tradier_settings: Settings, db: Database) -> AsyncIterator[Core]:
    [c] = await open_cores(tradier_settings, 1)
    c.trading.clock = c.connections.clock = FakeClock()
    c.notifier = RecordingNotifier()
    yield c
    await c.close()


async def phases(core: Core, intent_id: str) -> list[str]:
    async with core.db.session() as s:
        rows = await s.scalars(
            select(AuditEvent.kind).where(AuditEvent.intent_id == intent_id).order_by(AuditEvent.id)
        )
        return list(rows)


def dms(core: Core) -> list[str]:
    notifier = core.notifier
    assert isinstance(notifier, RecordingNotifier)
    return [m.content or "" for _, m in notifier.dms]


async def test_the_reconciler_does_not_fail_an_order_still_being_sent(
    tradier_core: Core, tradier: TradierEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tradier reads the positions inside the send, before the order's POST. Before: with that
    read slow, the reconciler found no order 30 s after the send began, failed it and told the
    member "Not placed"; then the POST landed and the order filled."""
    core = tradier_core
    await connect(core, tradier, "margin")
    held, sending = asyncio.Event(), asyncio.Event()
    create = TradierAdapter._create_order

    async def slow_read(self: TradierAdapter, account: Any, request: Any) -> Any:
        tradier.faults.add(Fault(kind="latency", path=r"/positions$", until=held, times=1))
        sending.set()
        return await create(self, account, request)

    monkeypatch.setattr(TradierAdapter, "_create_order", slow_read)
    p = await core.trading.preview(
        MEMBER, OrderInput("F", "buy", "1", connection="Tradier", mode="live")
    )
    confirming = asyncio.create_task(core.trading.confirm(p.intent_id, MEMBER))
    try:
        async with asyncio.timeout(30):  # a hang guard, not a speed check
            await sending.wait()
        core.trading.clock.advance(seconds=31)  # type: ignore[attr-defined]
        await core.trading.reconcile(older_than=timedelta(seconds=30))
    finally:
        held.set()
        async with asyncio.timeout(30):
            out = await confirming
    assert out.ok, out.message
    assert "order.failed" not in await phases(core, p.intent_id)
    assert not any("Not placed" in text for text in dms(core)), dms(core)


@pytest.mark.parametrize("arrived", [True, False])
async def test_a_send_past_its_limit_is_in_doubt_and_settled_by_lookup(
    core: Core, monkeypatch: pytest.MonkeyPatch, arrived: bool
) -> None:
    """The whole send is bounded, so that SEND_SETTLED_AFTER holds for every process: past
    SEND_LIMIT it is abandoned, and the order looked up by client order id, never failed at
    once (the broker may have it) nor sent again."""
    core.notifier = RecordingNotifier()
    # Long enough for the paper broker to take the order on a busy machine (PostgreSQL under
    # the parallel suite): only the answer that never comes is to be abandoned.
    monkeypatch.setattr(trading, "SEND_LIMIT", timedelta(seconds=2))
    place = PaperBroker.create_order
    stuck = asyncio.Event()  # never set: the send hangs until abandoned

    async def hang(self: PaperBroker, account: Any, request: Any) -> Any:
        if arrived:  # the broker took it; its answer never comes
            await place(self, account, request)
        await stuck.wait()

    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", hang)
        async with asyncio.timeout(30):  # a hang guard, not a speed check
            out = await core.trading.confirm(p.intent_id, ALICE)
    assert "order.failed" not in await phases(core, p.intent_id)
    if arrived:
        assert out.ok and out.intent.status == IntentStatus.FILLED, out.message
        return
    assert out.intent.status == IntentStatus.UNKNOWN and "We will not resend it" in out.message
    core.trading.clock.advance(seconds=31)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.FAILED
    assert [text for text in dms(core) if "Not placed" in text]
