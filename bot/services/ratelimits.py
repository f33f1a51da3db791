"""Broker rate limits shared by every process of a deployment.

A broker's published limit (Alpaca 200 requests a minute per account, Tradier's per-app quota)
holds for all of Tradecord's processes together: with several bot and worker processes on
PostgreSQL, a limiter in each process's memory would let them send N times the limit. Here each
limit is a leaky bucket (aiolimiter's, the one a single process uses) kept in one row, read and
written under its row lock, so every process sees what the others sent. Takes from many buckets
at once go in one transaction (``Database.shared``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

from adapters.base import RateLimit, bucket
from bot.db import Database
from bot.models import BrokerRateBucket
from bot.services.jobs import insert_ignoring


@dataclass(frozen=True, slots=True)
class _Take:
    key: str
    capacity: float
    per_second: float
    amount: float


class SharedLimiters:
    """``LimiterRegistry``'s interface, with the buckets in the database."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db, self.clock = db, clock

    def get(self, broker: str, rule: RateLimit, owner: str) -> SharedLimiter:
        who = owner if rule.scope == "account" else "*app*"
        return SharedLimiter(self, f"{broker}:{rule.bucket}:{who}", rule)

    async def take(self, take: _Take) -> float:
        """Take ``take.amount`` from its bucket if there is room: 0; else the seconds until
        there will be (nothing taken)."""
        return await self.db.shared("broker-rate-limits", self._take_many)(take)

    async def _take_many(self, takes: Sequence[_Take]) -> list[float]:
        """``take`` for many at once, in order, in one transaction."""
        now = self.clock()
        keys = sorted({t.key for t in takes})  # one lock order everywhere: no deadlock
        table = BrokerRateBucket.__table__
        async with self.db.transaction() as s:
            new = [{"key": k, "level": 0.0, "at": now} for k in keys]
            await s.execute(insert_ignoring(self.db, BrokerRateBucket, [], ["key"]), new)
            rows = await s.execute(
                select(table.c.key, table.c.level, table.c.at)
                .where(table.c.key.in_(keys))
                .order_by(table.c.key)
                .with_for_update()
            )
            levels = {key: (level, at) for key, level, at in rows}
            waits = []
            for t in takes:
                level, at = levels[t.key]
                level = max(level - max(now - at, 0.0) * t.per_second, 0.0)
                if level + t.amount <= t.capacity:
                    level, wait = level + t.amount, 0.0
                else:
                    wait = (level + t.amount - t.capacity) / t.per_second
                levels[t.key] = (level, max(now, at))
                waits.append(wait)
            await s.execute(
                update(table)
                .where(table.c.key == bindparam("k"))
                .values(level=bindparam("l"), at=bindparam("a")),
                [{"k": k, "l": level, "a": at} for k, (level, at) in levels.items()],
            )
        return waits


class SharedLimiter:
    def __init__(self, registry: SharedLimiters, key: str, rule: RateLimit) -> None:
        self.registry, self.key = registry, key
        self.capacity, self.per_second = bucket(rule)

    async def acquire(self, amount: float = 1) -> None:
        """Wait until the bucket has room for ``amount`` requests, then take it."""
        take = _Take(self.key, self.capacity, self.per_second, amount)
        while True:
            wait = await self.registry.take(take)
            if wait <= 0:
                return
            # Other processes' requests drain with time: nothing here could signal it sooner.
            await asyncio.sleep(wait)
