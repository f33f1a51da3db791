"""Tradecord Paper under the shared contract suite.

Paper is built in: no HTTP, no emulator, no tokens. The harness gives it a fresh SQLite
database with one member and their paper connection (made by the real ``MemberService``) and
a simulated feed the suite can move. One paper account (margin) trades stocks, crypto and
futures, so "equity" and "margin" are the same account and there is no separate "futures".

Faults map onto the adapter's test hooks (``PaperBroker.test_hooks``):
``lose_response`` → the next ``create_order`` (``replace_order`` for PUT) commits, then raises
``BrokerUnavailable(maybe_sent=True)``; ``status`` 429 → ``RateLimited`` (``Retry-After`` from
the fault's headers), 5xx → ``BrokerUnavailable``, raised before the verb does anything.
The fault's ``method`` picks the verb (POST: create_order, DELETE: cancel_order, PUT:
replace_order, GET: reads; none: any); its ``path`` is an HTTP path and means nothing here.
Paper faults are one-shot unless ``times`` says more.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from adapters.base import AdapterContext, LimiterRegistry
from adapters.errors import BrokerError, BrokerUnavailable, RateLimited
from adapters.models import AccountRef, OrderType
from adapters.paper import PaperBroker, SimulatedFeed
from adapters.paper.models import PaperOrder
from bot.db import Database
from bot.models import Connection
from bot.services.members import MemberService
from emulators.common import Fault

VERBS_BY_METHOD = {
    "POST": frozenset({"create_order"}),
    "DELETE": frozenset({"cancel_order"}),
    "PUT": frozenset({"replace_order"}),
    "GET": frozenset({"read"}),
}


@dataclass
class Harness:
    adapter: PaperBroker
    accounts: dict[str, AccountRef]
    feed: SimulatedFeed
    db: Database
    directory: Path
    emulator: None = None
    order_types: frozenset[OrderType] = field(default_factory=lambda: frozenset(OrderType))
    # Paper has no OAuth tokens: the suite skips its token scenarios for this harness.
    supports_tokens: bool = False
    token_refreshable: bool = False
    # The HTTP method of the broker's replace (a fault with it hits replace_order).
    replace_method: str = "PUT"
    # A refusal surfaces as RateLimited at once: there is no HTTP layer to retry a read.
    retries_reads: bool = False

    async def expire_token(self) -> None:
        pytest.skip("Tradecord Paper has no access tokens to expire")

    async def fresh_adapter(self) -> PaperBroker:
        """A new adapter as a new process builds it: everything it needs is in the database."""
        return PaperBroker(replace(self.adapter.ctx, limiters=LimiterRegistry(), breakers={}))

    def inject(self, fault: Fault) -> Fault:
        times = fault.times or 1
        hooks = self.adapter.test_hooks
        if fault.kind == "lose_response":
            if fault.method and fault.method.upper() == "PUT":
                hooks.lose_next_replace_response(times)
            else:
                hooks.lose_next_create_response(times)
            return fault
        if fault.kind != "status":
            raise ValueError(f"the paper harness has no {fault.kind!r} fault")
        verbs = VERBS_BY_METHOD.get(fault.method.upper()) if fault.method else None
        for _ in range(times):
            hooks.refuse_next(_status_error(fault), verbs)
        return fault

    async def broker_order_count(self, account: AccountRef) -> int:
        async with self.db.session() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(PaperOrder)
                .where(PaperOrder.account_id == account.id)
            )
        return int(n or 0)

    async def move_quote(self, symbol: str, bid: Decimal, ask: Decimal) -> None:
        self.feed.set_quote(symbol, bid, ask)
        # A real broker re-checks resting orders when prices move; paper does it on a sweep.
        await self.adapter.sweep()

    async def close(self) -> None:
        await self.adapter.close()
        await self.db.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _status_error(fault: Fault) -> BrokerError:
    if fault.status == 429:
        after = fault.headers.get("Retry-After")
        return RateLimited(retry_after=float(after) if after else None)
    if fault.status >= 500:
        return BrokerUnavailable()
    raise ValueError(f"the paper harness maps status 429 and 5xx, not {fault.status}")


async def make_harness(session: aiohttp.ClientSession) -> Harness:
    directory = Path(tempfile.mkdtemp(prefix="tradecord-paper-"))
    db = Database(f"sqlite+aiosqlite:///{directory / 't.db'}")
    await db.upgrade()
    member_id = await MemberService(db).ensure(4242)
    async with db.session() as s:
        connection_id = await s.scalar(
            select(Connection.id).where(
                Connection.member_id == member_id, Connection.broker == "paper"
            )
        )
    feed = SimulatedFeed()
    adapter = PaperBroker(
        AdapterContext(
            session=session,
            owner="contract-paper",
            extra={"db": db, "connection_id": connection_id, "quote_source": feed},
        )
    )
    [account] = await adapter.fetch_accounts()
    ref = account.ref()
    return Harness(
        adapter=adapter,
        accounts={"equity": ref, "margin": ref},
        feed=feed,
        db=db,
        directory=directory,
        order_types=PaperBroker.capabilities.order_types,
    )
