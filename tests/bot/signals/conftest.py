"""Fixtures for signal automation: a Core on the test database with one fake clock everywhere
and a recording notifier, plus helpers to make strategies and send signals through the service
the webhook calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from adapters.paper.models import PaperOrder
from bot.automation_models import Job, SignalExecution
from bot.core import Core
from bot.db import Database
from bot.models import OrderIntent
from bot.services.notify import RecordingNotifier
from bot.services.signals import Ack
from bot.services.strategies import WebhookUrl
from bot.services.subscriptions import SubscriptionSettings
from bot.settings import Settings
from tests.support import FakeClock

GUILD = 555
OWNER, ALICE, BOB, CAROL = 1001, 1002, 1003, 1004


def use_clock(core: Core, clock: FakeClock) -> None:
    for service in (
        core.trading,
        core.connections,
        core.simulated_feed,
        core.jobs,
        core.strategies,
        core.subscriptions,
        core.signals,
    ):
        service.clock = clock


async def open_core(settings: Settings, clock: FakeClock) -> Core:
    core = await Core.open(settings, migrate=False)
    use_clock(core, clock)
    core.notifier = RecordingNotifier()
    core.signals.exit_timeout = 2.0
    core.signals.exit_poll_interval = 0.02
    core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    core.simulated_feed.set_quote("MSFT", Decimal("399.90"), Decimal("400.10"))
    core.simulated_feed.set_quote("TSLA", Decimal("249.90"), Decimal("250.10"))
    return core


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def core(settings: Settings, db: Database, clock: FakeClock) -> AsyncIterator[Core]:
    c = await open_core(settings, clock)
    yield c
    await c.close()


def notifier(core: Core) -> RecordingNotifier:
    assert isinstance(core.notifier, RecordingNotifier)
    return core.notifier


def split(url: WebhookUrl) -> tuple[str, str]:
    strategy_id, secret = url.url.rsplit("/", 2)[-2:]
    return strategy_id, secret


async def make_strategy(core: Core, name: str = "NQ breakout", owner: int = OWNER) -> WebhookUrl:
    return await core.strategies.create(GUILD, owner, name)


async def subscribe(core: Core, url: WebhookUrl, member: int, **settings: Any) -> int:
    info = await core.subscriptions.subscribe(
        GUILD, member, url.strategy.id, settings=SubscriptionSettings(**settings)
    )
    return info.id


async def send(
    core: Core, url: WebhookUrl, body: dict[str, Any] | bytes, source_ip: str | None = "127.0.0.1"
) -> Ack:
    strategy_id, secret = split(url)
    auth = await core.strategies.authenticate(strategy_id, secret)
    assert auth is not None
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await core.signals.receive(auth, raw, source_ip=source_ip)


async def count(core: Core, model: Any, *where: Any) -> int:
    async with core.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def orders(core: Core) -> list[PaperOrder]:
    async with core.db.session() as s:
        return list(
            await s.scalars(select(PaperOrder).order_by(PaperOrder.created_at, PaperOrder.seq))
        )


async def intents(core: Core) -> list[OrderIntent]:
    async with core.db.session() as s:
        return list(await s.scalars(select(OrderIntent).order_by(OrderIntent.created_at)))


async def execution(core: Core, signal_id: str, subscription_id: int) -> SignalExecution:
    async with core.db.session() as s:
        ex = await s.scalar(
            select(SignalExecution).where(
                SignalExecution.signal_id == signal_id,
                SignalExecution.subscription_id == subscription_id,
            )
        )
    assert ex is not None
    return ex


async def jobs(core: Core) -> list[Job]:
    async with core.db.session() as s:
        return list(await s.scalars(select(Job).order_by(Job.id)))
