"""Many concurrent calls, one batch: group commit for units of work.

A signal fanned out to a thousand subscriptions makes a thousand tasks ask the database for
the same kind of work at the same moment. Run one by one, each pays SQLAlchemy's fixed cost per
statement and per transaction; run as one batch, the statements become a few ``IN (…)`` reads
and ``executemany`` writes. ``Coalescer`` collects the calls that arrive while one batch runs
(and those ready in the same turn of the event loop) and serves them with one call of the batch
function (DataLoader's idea, applied to writes, with group commit's one batch at a time).
A batch that fails is run again one item at a time, so an item's error is its own (a batch
function must leave nothing behind when it raises: one transaction). A lone call costs one
extra turn of the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# One result per item, in order: a value, or the exception that item raises.
BatchFunction = Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    def __init__(self, run_many: BatchFunction[T, R], *, max_batch: int = 200) -> None:
        self._run_many = run_many
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain())
        # A caller that is cancelled leaves its item in the batch: like a request already on
        # the wire, it may still take effect.
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._queue:
                await asyncio.sleep(0)  # callers ready in this turn join the batch
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._serve(batch)
                batch = []
        finally:
            self._worker = None
            # Only when the worker itself was cancelled (the loop is closing) is anything left.
            stranded, self._queue = [*batch, *self._queue], []
            for _, future in stranded:
                future.cancel()

    async def _alone(self, item: T) -> R | BaseException:
        try:
            return (await self._run_many([item]))[0]
        except Exception as e:
            return e

    async def _serve(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        results: Sequence[R | BaseException]
        try:
            results = await self._run_many([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as e:
            if len(batch) == 1:
                results = [e]
            else:  # each item alone, so one item's error is its own
                results = [await self._alone(item) for item, _ in batch]
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
