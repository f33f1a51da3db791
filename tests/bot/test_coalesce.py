from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot.coalesce import Coalescer


class Recorder:
    """A batch function that records its batches; items below zero are refused, and an item
    of 99 makes the whole batch fail."""

    def __init__(self, pause: asyncio.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self.pause = pause

    async def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if self.pause is not None:
                await self.pause.wait()
            if 99 in items:
                raise RuntimeError("the batch's transaction failed")
            return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]
        finally:
            self.running -= 1


async def test_concurrent_calls_are_one_batch_and_each_gets_its_own_result() -> None:
    run = Recorder()
    coalesce = Coalescer(run)
    assert await asyncio.gather(*(coalesce(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]
    assert await coalesce(7) == 70  # a lone call is a batch of one
    assert run.batches[-1] == [7]


async def test_an_items_error_reaches_only_its_caller() -> None:
    coalesce = Coalescer(Recorder())
    results = await asyncio.gather(*(coalesce(i) for i in (1, -2, 3)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -2"


async def test_a_failed_batch_runs_again_one_item_at_a_time() -> None:
    run = Recorder()
    coalesce = Coalescer(run)
    results = await asyncio.gather(*(coalesce(i) for i in (1, 99, 3)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 30
    assert isinstance(results[1], RuntimeError)
    assert run.batches == [[1, 99, 3], [1], [99], [3]]


async def test_one_batch_at_a_time_and_latecomers_make_the_next() -> None:
    pause = asyncio.Event()
    run = Recorder(pause)
    coalesce = Coalescer(run, max_batch=3)
    first = [asyncio.create_task(coalesce(i)) for i in range(4)]
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(coalesce(i)) for i in range(10, 13)]
    await asyncio.sleep(0.01)
    assert run.batches == [[0, 1, 2]]  # the first batch is still running
    pause.set()
    assert await asyncio.gather(*first, *later) == [0, 10, 20, 30, 100, 110, 120]
    assert run.batches == [[0, 1, 2], [3, 10, 11], [12]]
    assert run.most_at_once == 1


async def test_callers_of_a_cancelled_worker_are_not_left_waiting() -> None:
    pause = asyncio.Event()
    coalesce = Coalescer(Recorder(pause))
    call = asyncio.create_task(coalesce(1))
    await asyncio.sleep(0.01)
    assert coalesce._worker is not None
    coalesce._worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    pause.set()
    assert await coalesce(2) == 20  # a new worker serves later calls
