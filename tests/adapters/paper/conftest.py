"""Fixtures for Tradecord Paper: a member with the built-in paper connection, a settable clock,
a simulated feed the tests can pin, and a factory for adapters on the same database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from adapters.base import AdapterContext
from adapters.models import AccountRef
from adapters.paper import PaperBroker, SimulatedFeed, store
from adapters.paper.engine import conservation_residual
from adapters.paper.models import PaperAccount, PaperPosition
from bot.db import Database
from bot.models import Connection
from bot.services.members import MemberService
from tests.support import WEEKDAY_SESSION, FakeClock

# Saturday 28 November 2026: both closed.
SATURDAY = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(WEEKDAY_SESSION)


@pytest.fixture
def feed(clock: FakeClock) -> SimulatedFeed:
    return SimulatedFeed(clock)


async def new_paper_connection(db: Database, discord_user_id: int) -> int:
    member_id = await MemberService(db).ensure(discord_user_id)
    async with db.session() as s:
        cid = await s.scalar(
            select(Connection.id).where(
                Connection.member_id == member_id, Connection.broker == "paper"
            )
        )
    assert cid is not None
    return cid


@pytest.fixture
async def connection_id(db: Database) -> int:
    return await new_paper_connection(db, 1001)


BrokerFactory = Callable[..., PaperBroker]


@pytest.fixture
def make_broker(
    db: Database, connection_id: int, feed: SimulatedFeed, clock: FakeClock
) -> BrokerFactory:
    def make(**extra: Any) -> PaperBroker:
        ctx_extra: dict[str, Any] = {
            "db": db,
            "connection_id": connection_id,
            "quote_source": feed,
            "clock": clock,
        }
        ctx_extra.update(extra)
        return PaperBroker(AdapterContext(extra=ctx_extra))

    return make


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> PaperBroker:
    return make_broker()


@pytest.fixture
async def ref(broker: PaperBroker) -> AccountRef:
    [account] = await broker.fetch_accounts()
    return account.ref()


async def stored_residual(db: Database, account_id: str) -> Decimal:
    """The conservation invariant computed from the stored rows (always zero)."""
    async with db.session() as s:
        account = await s.get(PaperAccount, account_id)
        rows = (
            await s.scalars(select(PaperPosition).where(PaperPosition.account_id == account_id))
        ).all()
    assert account is not None
    return conservation_residual(
        store.account_state(account), [store.position_state(r) for r in rows]
    )
