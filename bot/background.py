"""A process's background work: run queued signal jobs, settle orders whose state is unknown,
sweep resting paper orders, follow working orders at brokers, remind members before fixed
authorizations end, tell strategy owners of refused signals, end the subscriptions of members
who left a guild or lost the role that gave them.

Everything here reads and writes the database, so any number of processes may run it: the
claims and compare-and-sets in the services keep each effect single.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from bot.services.order_updates import OrderUpdates
from bot.services.refusals import tell_refusals
from bot.services.tokens import remind_expiring

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger("tradecord.background")


class Background:
    def __init__(
        self,
        core: Core,
        *,
        reconcile_every: float = 30.0,
        sweep_every: float = 2.0,
        remind_every: float = 3600.0,
        purge_every: float = 3600.0,
        refusals_every: float = 60.0,
        members_every: float = 3600.0,
        follow_orders: bool = True,
    ) -> None:
        self.core = core
        self.stop = asyncio.Event()
        self.updates = OrderUpdates(core)
        self._loops: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("reconcile", core.trading.reconcile, reconcile_every),
            ("paper sweep", self.updates.sweep_paper, sweep_every),
            ("authorization reminders", lambda: remind_expiring(core), remind_every),
            ("signal log retention", core.signals.purge_log, purge_every),
            ("refused signal notices", lambda: tell_refusals(core), refusals_every),
            ("alert lines left over", core.signals.alerts.post_leftovers, refusals_every),
            ("signal results left untold", core.signals.alerts.tell_untold, refusals_every),
        ]
        # Asks Discord about every follower, in one process an hour (a keyed job), and not at
        # start, when every process starts at once.
        self._later: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("member access", core.strategies.schedule_member_check, members_every),
        ]
        self.follow_orders = follow_orders
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, name: str, work: Callable[[], Awaitable[object]], every: float) -> None:
        self._loops.append((name, work, every))

    def start(self) -> None:
        from bot.services.jobs import run_worker

        for name, work, every in self._loops:
            self._tasks.append(asyncio.create_task(self._every(name, work, every)))
        for name, work, every in self._later:
            self._tasks.append(asyncio.create_task(self._every(name, work, every, wait=True)))
        # Signal jobs from the durable queue (claimed with row locks: safe in any process).
        self._tasks.append(asyncio.create_task(run_worker(self.core, stop=self.stop)))
        if self.follow_orders:
            self._tasks.append(asyncio.create_task(self.updates.supervise(self.stop)))

    async def _every(
        self, name: str, work: Callable[[], Awaitable[object]], every: float, *, wait: bool = False
    ) -> None:
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)
        while not self.stop.is_set():
            try:
                await work()
            except Exception:
                log.exception("Background %s failed; retrying in %.0f s", name, every)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)

    async def close(self) -> None:
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
