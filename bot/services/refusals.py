"""Telling a strategy's owner that its signals are being refused.

A sender such as TradingView shows nothing of a webhook's answer, so an alert with a typo
(``"action": "hold"``), a stale time or a ticker the strategy does not allow is refused (400)
and its owner would never know. A background sweep DMs the owner of each strategy with refused
signals not yet told: how many, the newest one's reason, and where to see each one. At most one
DM an hour per strategy; refusals in between are counted in the next one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Row, Select, or_, select, text, update

from bot.automation_models import REFUSALS_UNTOLD, ReceivedSignal, Strategy
from bot.models import Member
from bot.services.notify import Outgoing, dm_quietly
from bot.services.signal_report import as_sent
from bot.wording import plain, plural

if TYPE_CHECKING:
    from bot.core import Core

NOTICE_EVERY = timedelta(hours=1)
# Older refusals are not news: a bot that was down for a week does not tell them now.
NEWS_FOR = timedelta(days=1)
UNTOLD = text(REFUSALS_UNTOLD)  # as the partial index has it, so the index serves


async def tell_refusals(core: Core) -> int:
    """DM each strategy's owner about its refused signals not yet told, where an hour has
    passed since the last such DM; returns the number of DMs. Safe with several processes:
    one claims each strategy's notice."""
    now = core.signals.clock()
    async with core.db.session() as s:
        strategies = list(await s.scalars(untold_strategies(now)))
    told = 0
    for strategy_id in strategies:
        told += await _tell(core, strategy_id, now)
    return told


def untold_strategies(now: datetime) -> Select[tuple[str]]:
    """The strategies with refusals to tell now."""
    return (
        select(ReceivedSignal.strategy_id)
        .where(UNTOLD)
        .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
        .where(_may_tell(now))
        .distinct()
    )


def _may_tell(now: datetime) -> ColumnElement[bool]:
    return or_(Strategy.refusals_told_at.is_(None), Strategy.refusals_told_at <= now - NOTICE_EVERY)


async def _tell(core: Core, strategy_id: str, now: datetime) -> int:
    async with core.db.transaction() as s:
        # A strategy refused all hour long holds thousands: bodies (16 KiB) only for the newest.
        refused = (
            await s.execute(
                select(ReceivedSignal.id, ReceivedSignal.received_at, ReceivedSignal.message_code)
                .where(UNTOLD, ReceivedSignal.strategy_id == strategy_id)
                .order_by(ReceivedSignal.received_at.desc())
            )
        ).all()
        news = [r for r in refused if r.received_at > now - NEWS_FOR]
        if news:
            # Of two processes, the second finds the notice given (the row's lock) and stops.
            claimed = await s.execute(
                update(Strategy)
                .where(Strategy.id == strategy_id, _may_tell(now))
                .values(refusals_told_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return 0
        ids = [r.id for r in refused]
        for start in range(0, len(ids), 500):  # within any database's bound-parameter limit
            await s.execute(
                update(ReceivedSignal)
                .where(ReceivedSignal.id.in_(ids[start : start + 500]))
                .values(announced=True)
            )
        name, owner = (
            await s.execute(
                select(Strategy.name, Member.discord_user_id)
                .join(Member, Member.id == Strategy.owner_member_id)
                .where(Strategy.id == strategy_id)
            )
        ).one()
        if not news:
            return 0
        message, body = (
            await s.execute(
                select(ReceivedSignal.message, ReceivedSignal.body).where(
                    ReceivedSignal.id == news[0].id
                )
            )
        ).one()
    await dm_quietly(
        core.notifier,
        owner,
        Outgoing(content=notice(name, news, message, body)),
        about=f"refused signals of strategy {strategy_id}",
    )
    return 1


def notice(strategy_name: str, refused: Sequence[Row[Any]], message: str | None, body: str) -> str:
    """The DM: how many since when (``refused``, newest first), the newest one's reason
    (``message``) and what its ``body`` sent, the others' codes counted."""
    newest, first = refused[0], refused[-1]
    n = len(refused)
    what = " ".join(filter(None, [as_sent(body, "action"), as_sent(body, "ticker")]))
    lines = [
        f"⚠️ **{plain(strategy_name)}** refused {n} signal{plural(n)} since "
        f"{first.received_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, and nothing was traded for "
        f"{'them' if n > 1 else 'it'}: a sender such as TradingView is not told why.",
        f"Newest, at {newest.received_at.astimezone(UTC):%H:%M:%S} UTC"
        + (f" ({what})" if what else "")
        + f": `{newest.message_code}`: {plain(message or '')}",
    ]
    others = Counter(r.message_code for r in refused[1:])
    if others:
        lines.append(
            "Before it: " + ", ".join(f"`{code}` ×{count}" for code, count in others.most_common())
        )
    lines.append(
        f"/signal list strategy:{plain(strategy_name)} shows each one. Refusals are told at "
        "most once an hour."
    )
    return "\n".join(lines)[:2000]
