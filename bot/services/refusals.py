"""Telling a strategy's owner that its signals are being refused.

A sender such as TradingView shows nothing of a webhook's answer, so an alert with a typo
(``"action": "hold"``), a stale time or a ticker the strategy does not allow is refused (400)
and its owner would never know. A background sweep DMs the owner of each strategy with refused
signals not yet told: how many, the newest one's reason, and where to see each one. At most one
DM an hour per strategy; refusals in between are counted in the next one. Requests turned away
before they are stored, over the rate limit (429) or with a wrong secret (401: an alert still
sending the URL from before /strategy rotate-secret), are only counted on the strategy, and
told in the same DM. An owner may turn these DMs off (``Strategy.refusal_notices``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import ColumnElement, CompoundSelect, Row, case, or_, select, text, union, update

from bot.automation_models import REFUSALS_UNTOLD, ReceivedSignal, Strategy
from bot.models import Member
from bot.services.notify import Outgoing, dm_quietly
from bot.services.signal_report import as_sent
from bot.services.strategies import BAD_SECRET_CAP
from bot.wording import plain, plural

if TYPE_CHECKING:
    from bot.core import Core

NOTICE_EVERY = timedelta(hours=1)
# Older refusals are not news: a bot that was down for a week does not tell them now.
NEWS_FOR = timedelta(days=1)
UNTOLD = text(REFUSALS_UNTOLD)  # as the partial index has it, so the index serves


async def tell_refusals(core: Core) -> int:
    """DM each strategy's owner about its refused signals, and the requests turned away before
    they were stored (``COUNTED``), not yet told, where an hour has passed since the last such
    DM; returns the number of DMs. Safe with several processes: one claims each notice."""
    now = core.signals.clock()
    async with core.db.session() as s:
        strategies = sorted(set(await s.scalars(untold_strategies(now))))
    told = 0
    for strategy_id in strategies:
        told += await _tell(core, strategy_id, now)
    return told


def untold_strategies(now: datetime) -> CompoundSelect:
    """The strategies with refusals to tell now."""
    refused = (
        select(ReceivedSignal.strategy_id)
        .where(UNTOLD)
        .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
        .where(_may_tell(now))
    )
    turned_away = select(Strategy.id).where(
        or_(*(getattr(Strategy, c) > 0 for c in COUNTED)), _may_tell(now)
    )
    return union(refused, turned_away)


def _may_tell(now: datetime) -> ColumnElement[bool]:
    return or_(Strategy.refusals_told_at.is_(None), Strategy.refusals_told_at <= now - NOTICE_EVERY)


# Requests turned away before they are stored, counted on the strategy (with ``<name>_since``):
# over its rate limit (429), and with a wrong secret (401).
COUNTED = ("over_rate", "bad_secret")


class Counted(NamedTuple):
    count: int
    since: datetime


async def _tell(core: Core, strategy_id: str, now: datetime) -> int:
    async with core.db.transaction() as s:
        found = await s.execute(
            select(
                Strategy.name,
                Strategy.refusal_notices,
                Strategy.rate_limit_per_minute,
                Member.discord_user_id,
                *(getattr(Strategy, c) for c in COUNTED),
                *(getattr(Strategy, f"{c}_since") for c in COUNTED),
            )
            .join(Member, Member.id == Strategy.owner_member_id)
            .where(Strategy.id == strategy_id)
        )
        strategy = found.one()._mapping
        # A strategy refused all hour long holds thousands: bodies (16 KiB) only for the newest.
        refused = (
            await s.execute(
                select(ReceivedSignal.id, ReceivedSignal.received_at, ReceivedSignal.message_code)
                .where(UNTOLD, ReceivedSignal.strategy_id == strategy_id)
                .order_by(ReceivedSignal.received_at.desc())
            )
        ).all()
        news = [r for r in refused if r.received_at > now - NEWS_FOR]
        counts = {c: strategy[c] for c in COUNTED if strategy[c]}
        counted = {
            c: Counted(n, since)
            for c, n in counts.items()
            if (since := strategy[f"{c}_since"]) is not None and since > now - NEWS_FOR
        }
        tell = strategy["refusal_notices"] and bool(news or counted)
        if tell:
            # Of two processes, the second finds the notice given (the row's lock) and stops.
            # Requests turned away meanwhile stay counted for the next notice.
            values: dict[str, Any] = {"refusals_told_at": now}
            for c, n in counts.items():
                column = getattr(Strategy, c)
                values |= {c: column - n, f"{c}_since": case((column > n, now))}
            claimed = await s.execute(
                update(Strategy).where(Strategy.id == strategy_id, _may_tell(now)).values(values)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return 0
        elif counts:
            await s.execute(
                update(Strategy)
                .where(Strategy.id == strategy_id)
                .values({k: v for c in counts for k, v in ((c, 0), (f"{c}_since", None))})
            )
        ids = [r.id for r in refused]
        for start in range(0, len(ids), 500):  # within any database's bound-parameter limit
            await s.execute(
                update(ReceivedSignal)
                .where(ReceivedSignal.id.in_(ids[start : start + 500]))
                .values(announced=True)
            )
        if not tell:
            return 0
        message, body = None, ""
        if news:
            message, body = (
                await s.execute(
                    select(ReceivedSignal.message, ReceivedSignal.body).where(
                        ReceivedSignal.id == news[0].id
                    )
                )
            ).one()
    text_ = notice(
        strategy["name"],
        news,
        message,
        body,
        over_rate=counted.get("over_rate"),
        rate_limit=strategy["rate_limit_per_minute"],
        bad_secret=counted.get("bad_secret"),
    )
    await dm_quietly(
        core.notifier,
        strategy["discord_user_id"],
        Outgoing(content=text_),
        about=f"refused signals of strategy {strategy_id}",
    )
    return 1


def notice(
    strategy_name: str,
    refused: Sequence[Row[Any]],
    message: str | None,
    body: str,
    *,
    over_rate: Counted | None = None,
    rate_limit: int = 0,
    bad_secret: Counted | None = None,
) -> str:
    """The DM: how many since when (``refused``, newest first), the newest one's reason
    (``message``) and what its ``body`` sent, the others' codes counted; then the requests
    turned away unstored: ``over_rate`` (over ``rate_limit`` a minute), with a ``bad_secret``."""
    name = plain(strategy_name)
    lines = []
    if refused:
        newest, first = refused[0], refused[-1]
        n = len(refused)
        what = " ".join(filter(None, [as_sent(body, "action"), as_sent(body, "ticker")]))
        lines += [
            f"⚠️ **{name}** refused {n} signal{plural(n)} since "
            f"{_utc(first.received_at, '%Y-%m-%d %H:%M')} UTC, and nothing was traded for "
            f"{'them' if n > 1 else 'it'}: a sender such as TradingView is not told why.",
            f"Newest, at {_utc(newest.received_at, '%H:%M:%S')} UTC"
            + (f" ({what})" if what else "")
            + f": `{newest.message_code}`: {plain(message or '')}",
        ]
        others = Counter(r.message_code for r in refused[1:])
        if others:
            lines.append(
                "Before it: "
                + ", ".join(f"`{code}` ×{count}" for code, count in others.most_common())
            )
    for counted in (over_rate, bad_secret):
        if counted is None:
            continue
        n = counted.count
        they = "they were" if n > 1 else "it was"
        if counted is over_rate:
            why = (
                f"over its limit of {rate_limit} a minute (`rate-limited`, 429): {they} not "
                "stored and nothing was traded. Send fewer signals, or raise the limit with "
                "/strategy settings rate_limit_per_minute."
            )
        else:
            why = (
                f"with a wrong secret (`invalid-password`, 401): {they} not stored and nothing "
                "was traded. An alert may still send the URL from before /strategy "
                "rotate-secret: give it the current one. If you sent none of them, someone "
                "has this strategy's id but not its secret."
            )
        # Past the cap they are no longer counted.
        many = f"{n} or more" if counted is bad_secret and n >= BAD_SECRET_CAP else str(n)
        since = f"{_utc(counted.since, '%Y-%m-%d %H:%M')} UTC"
        lines.append(
            f"Also {many} request{plural(n)} since {since} came {why}"
            if lines
            else f"⚠️ **{name}** turned away {many} request{plural(n)} since {since} that "
            f"came {why} A sender such as TradingView is not told why."
        )
    lines.append(
        (f"/signal list strategy:{name} shows each one. " if refused else "")
        + "Refusals are told at most once an hour; /strategy settings refusal_notices:False "
        "turns these messages off."
    )
    return "\n".join(lines)[:2000]


def _utc(at: datetime, pattern: str) -> str:
    return at.astimezone(UTC).strftime(pattern)
