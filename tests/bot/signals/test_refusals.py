"""A strategy's owner hears of refused signals by DM, at most once an hour per strategy."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import update

from bot.automation_models import Strategy
from bot.core import Core
from bot.services.refusals import tell_refusals, untold_strategies
from bot.services.strategies import BAD_SECRET_CAP
from tests.bot.signals.conftest import GUILD, OWNER, make_strategy, notifier, open_core, send, split
from tests.support import FakeClock


async def test_the_owner_is_told_once_then_hourly_with_the_refusals_since(core: Core) -> None:
    url = await make_strategy(core, "Breakout")
    await make_strategy(core, "Quiet")  # nothing refused: nothing said
    assert await tell_refusals(core) == 0

    first = await send(core, url, {"ticker": "AAPL", "action": "hold"})
    assert first.status == 400
    assert (await send(core, url, {"ticker": "AAPL", "action": "buy"})).status == 202
    assert await tell_refusals(core) == 1
    [(to, dm)] = notifier(core).dms
    assert to == OWNER and dm.content is not None
    assert dm.content.startswith("⚠️ **Breakout** refused 1 signal since ")
    assert "(hold AAPL): `invalid-action`: " in dm.content
    assert "/signal list strategy:Breakout shows each one." in dm.content
    assert await tell_refusals(core) == 0  # told: not again

    # Within the hour, refusals wait; after it, they are told together, the newest first.
    core.signals.clock.advance(minutes=10)  # type: ignore[attr-defined]
    await send(core, url, {"ticker": "AAPL", "action": "hold", "quantity": 1})
    await send(core, url, {"ticker": "AAPL", "action": "buy", "quantity": -1})
    assert await tell_refusals(core) == 0
    core.signals.clock.advance(minutes=51)  # type: ignore[attr-defined]
    assert await tell_refusals(core) == 1
    later = notifier(core).dms[-1][1].content or ""
    assert "refused 2 signals since" in later and "nothing was traded for them" in later
    assert "(buy AAPL): `invalid-quantity`" in later, later
    assert "Before it: `invalid-action` ×1" in later
    assert len(notifier(core).dms) == 2


async def test_refusals_a_day_old_are_not_news(core: Core) -> None:
    url = await make_strategy(core, "Breakout")
    await send(core, url, {"ticker": "AAPL", "action": "hold"})
    core.signals.clock.advance(hours=25)  # type: ignore[attr-defined]
    assert await tell_refusals(core) == 0
    assert notifier(core).dms == []
    # Marked told all the same, and the next refusal is told at once.
    await send(core, url, {"ticker": "AAPL", "action": "hold"})
    assert await tell_refusals(core) == 1
    assert "refused 1 signal since" in (notifier(core).dms[0][1].content or "")


async def test_two_processes_tell_a_refusal_once(core: Core, clock: FakeClock) -> None:
    url = await make_strategy(core, "Breakout")
    for _ in range(3):
        await send(core, url, {"ticker": "AAPL", "action": "hold", "time": "x"})
    other = await open_core(core.settings, clock)
    try:
        told = await asyncio.gather(tell_refusals(core), tell_refusals(other))
    finally:
        await other.close()
    assert sorted(told) == [0, 1]
    assert len(notifier(core).dms) + len(notifier(other).dms) == 1


async def test_the_sweep_reads_the_partial_index(core: Core) -> None:
    """The signal log keeps a year: the sweep must not read all of it every minute."""
    if not core.db.is_sqlite:
        return  # PostgreSQL's planner picks by statistics; the index exists (migrations test)
    query = untold_strategies(core.signals.clock()).compile(dialect=core.db.engine.dialect)
    async with core.db.engine.connect() as conn:
        plan = " ".join(
            str(row[-1])
            for row in await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {query}", tuple(None for _ in query.positiontup or ())
            )
        )
    assert "ix_signals_refusals_untold" in plan, plan


async def test_requests_turned_away_over_the_rate_are_counted_and_told(core: Core) -> None:
    """A 429 stores nothing, so /signal list cannot show it: the strategy counts them, and
    its owner hears how many, with the limit to raise."""
    url = await make_strategy(core, "Scalper")
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, rate_limit_per_minute=2)
    statuses = [
        (await send(core, url, {"ticker": "AAPL", "action": "buy", "quantity": i + 1})).status
        for i in range(5)
    ]
    assert statuses == [202, 202, 429, 429, 429]
    assert await tell_refusals(core) == 1
    [(to, dm)] = notifier(core).dms
    content = dm.content or ""
    assert content.startswith("⚠️ **Scalper** turned away 3 requests since "), content
    assert to == OWNER and "over its limit of 2 a minute (`rate-limited`, 429)" in content
    assert "/strategy settings rate_limit_per_minute" in content
    assert await tell_refusals(core) == 0  # the count was reset

    # Told with the refusals of the next hour, as their own line.
    core.signals.clock.advance(hours=1)  # type: ignore[attr-defined]
    await send(core, url, {"ticker": "AAPL", "action": "hold"})
    await send(core, url, {"ticker": "AAPL", "action": "buy", "quantity": 9})
    assert (await send(core, url, {"ticker": "AAPL", "action": "buy", "quantity": 8})).status == 429
    assert await tell_refusals(core) == 1
    later = notifier(core).dms[-1][1].content or ""
    assert later.startswith("⚠️ **Scalper** refused 1 signal since "), later
    assert "Also 1 request since " in later and "it was not stored" in later, later


async def test_an_owner_who_turned_refusal_notices_off_is_not_told(core: Core) -> None:
    url = await make_strategy(core, "Noisy")
    info = await core.strategies.configure(
        GUILD, OWNER, url.strategy.id, refusal_notices=False, rate_limit_per_minute=1
    )
    assert info.refusal_notices is False
    await send(core, url, {"ticker": "AAPL", "action": "hold"})
    assert (await send(core, url, {"ticker": "AAPL", "action": "hold", "q": 1})).status == 429
    assert await tell_refusals(core) == 0
    assert notifier(core).dms == []
    # What was refused meanwhile is not told later, when the notices are turned back on.
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, refusal_notices=True)
    async with core.db.session() as s:
        assert list(await s.scalars(untold_strategies(core.signals.clock()))) == []


async def test_requests_with_a_wrong_secret_are_counted_and_told(core: Core) -> None:
    """An alert left with the URL from before /strategy rotate-secret gets 401s its sender
    never shows: its owner hears of them, and what to do."""
    url = await make_strategy(core, "Swing")
    strategy_id, _ = split(url)
    for _ in range(2):
        assert await core.strategies.authenticate(strategy_id, "an-old-secret") is None
    assert await core.strategies.authenticate(str(uuid.uuid4()), "x") is None  # no strategy
    await core.strategies.settle()  # counted after the answer
    assert await tell_refusals(core) == 1
    content = notifier(core).dms[0][1].content or ""
    assert content.startswith("⚠️ **Swing** turned away 2 requests since "), content
    assert "with a wrong secret (`invalid-password`, 401): they were not stored" in content
    assert "from before /strategy rotate-secret: give it the current one" in content
    assert await tell_refusals(core) == 0


async def test_wrong_secrets_past_the_cap_cost_no_writes(core: Core) -> None:
    url = await make_strategy(core, "Swing")
    strategy_id, _ = split(url)
    async with core.db.transaction() as s:
        await s.execute(
            update(Strategy)
            .where(Strategy.id == strategy_id)
            .values(bad_secret=BAD_SECRET_CAP, bad_secret_since=core.signals.clock())
        )
    assert await core.strategies.authenticate(strategy_id, "guess") is None
    assert not core.strategies._counting  # nothing to count: no write
    assert await tell_refusals(core) == 1
    content = notifier(core).dms[0][1].content or ""
    assert f"turned away {BAD_SECRET_CAP} or more requests since" in content, content
