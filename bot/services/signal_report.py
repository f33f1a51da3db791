"""The ``/signal show`` report: every phase of a signal with its time, per subscription, as its
strategy's owner or one of its subscribers may see it."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.automation_models import (
    LEGS,
    AlertPreference,
    ExecutionStatus,
    ReceivedSignal,
    SignalExecution,
    SignalStatus,
    Strategy,
    intent_key,
)
from bot.errors import InvalidInput, NotFound
from bot.models import AuditEvent, Connection, Member, OrderIntent
from bot.services.signal_alerts import OUTCOMES, intents_of_removed, outcome_words
from bot.services.trading import fill_price
from bot.wording import qty

if TYPE_CHECKING:
    from bot.core import Core

# Execution phases whose detail is the result's reason (``_finish``).
ENDED_BY_REASON = frozenset(
    {ExecutionStatus.SKIPPED, ExecutionStatus.REJECTED, ExecutionStatus.FAILED}
)


def _code_only(phase: str, reason_code: str | None) -> str | None:
    return reason_code if phase in ENDED_BY_REASON else None


ORDER_PHASES = {
    "order.submitted": "submitted",
    "order.accepted": "accepted",
    "order.filled": "filled",
    "order.partially_filled": "partially filled",
    "order.rejected": "rejected",
    "order.failed": "failed",
    "order.unknown": "unconfirmed",
    "order.cancelled": "cancelled",
    "order.expired": "expired",
    # A bracket's take-profit or stop-loss: named by its kind, not by the entry's leg.
    "order.exit_filled": "filled",
}

# The steps runs used to log for an order's later outcome (``_on_order_update``), besides the
# order's own event that says it in words ("entry filled"): such a step is not shown again.
LATER_STEPS = {
    ExecutionStatus.FILLED: "filled",
    ExecutionStatus.PARTIALLY_FILLED: "partially filled",
    ExecutionStatus.CANCELLED: "cancelled",
    ExecutionStatus.ORDER_EXPIRED: "expired",
    ExecutionStatus.REJECTED: "rejected",
    ExecutionStatus.FAILED: "failed",
}

RECENT_SIGNALS = 50  # /signal list: the newest this many
# What a refused body's own ticker and action may show of themselves: a sender wrote them.
SHOWABLE = re.compile(r"[^A-Za-z0-9._:/!^-]")

# A signal's id as the alerts and DMs show it: its first 8 characters (up to the full 36).
SHORT_ID = re.compile(r"[0-9a-f-]{8,35}")


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    at: datetime
    elapsed_ms: int  # since the signal was received
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class OrderLine:
    leg: str
    intent_id: str
    side: str
    quantity: Decimal
    symbol: str
    order_type: str
    status: str
    filled_quantity: Decimal
    average_fill_price: Decimal | None
    error: str | None


@dataclass(frozen=True, slots=True)
class SubscriptionReport:
    execution_id: int
    subscription_id: int | None
    member_discord_id: int
    connection_name: str | None
    mode: str
    status: str
    reason_code: str | None
    reason: str | None
    phases: tuple[Phase, ...]
    orders: tuple[OrderLine, ...]
    own: bool = False  # the viewer's: only then are connection_name and details set
    # The member's name in alerts, when they chose to be named there (others' only).
    public_name: str | None = None


@dataclass(frozen=True, slots=True)
class SignalReport:
    signal_id: str
    strategy_id: str
    strategy_name: str
    viewer_is_owner: bool
    status: str
    ticker: str | None
    action: str | None
    sentiment: str | None
    test: bool
    message_code: str | None
    message: str | None
    received_at: datetime
    signal_time: datetime | None
    latency_ms: int | None  # from the alert's own time to our receipt
    phases: tuple[Phase, ...]
    subscriptions: tuple[SubscriptionReport, ...]
    duplicate_of: str | None = None  # the signal a duplicate repeats (it traded nothing)


@dataclass(frozen=True, slots=True)
class SignalLine:
    """One signal of ``/signal list``: what came in and what became of it."""

    signal_id: str
    strategy_name: str
    received_at: datetime
    action: str | None
    ticker: str | None
    test: bool
    status: str
    message_code: str | None
    duplicate_of: str | None
    # Its subscriptions' results in words (``outcome_words``), counted, as many as the viewer
    # may see: most first.
    results: tuple[tuple[str, int], ...]


class SignalReports:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _signal_by_short_id(self, s: AsyncSession, part: str, member_id: int) -> str | None:
        """The one signal whose id ends with ``part`` (as messages show it), or starts with it
        (as they did before time-ordered ids), that the member may see (its strategy's owner,
        or a subscriber it ran for); None if none; refused if several."""
        mine = select(SignalExecution.id).where(
            SignalExecution.signal_id == ReceivedSignal.id,
            SignalExecution.member_id == member_id,
        )
        ids = list(
            await s.scalars(
                select(ReceivedSignal.id)
                .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                .where(
                    ReceivedSignal.id.endswith(part, autoescape=True)
                    | ReceivedSignal.id.startswith(part, autoescape=True)
                )
                .where((Strategy.owner_member_id == member_id) | mine.exists())
                .limit(2)
            )
        )
        if len(ids) > 1:
            raise InvalidInput(
                f"More than one of your signals has {part} in its id: give the full id, from "
                "the signal's DM or the webhook's answer."
            )
        return ids[0] if ids else None

    async def recent(
        self, discord_user_id: int, *, strategy_id: str | None = None, limit: int = RECENT_SIGNALS
    ) -> list[SignalLine]:
        """The newest signals this member may see, newest first: every signal of a strategy
        they own, refused ones and duplicates included (why an alert did not trade is the
        owner's question), and of other strategies those that ran for them, with their own
        results only, as ``signal_report`` shows them. ``strategy_id``: that strategy's only."""
        member_id = await self.core.members.ensure(discord_user_id)
        query = select(
            ReceivedSignal.id,
            Strategy.name,
            ReceivedSignal.received_at,
            ReceivedSignal.action,
            ReceivedSignal.ticker,
            ReceivedSignal.test,
            ReceivedSignal.status,
            ReceivedSignal.message_code,
            ReceivedSignal.duplicate_of,
            # Only a refused signal's body is read (for its ticker): a body is up to 16 KiB.
            case((ReceivedSignal.status == SignalStatus.REFUSED, ReceivedSignal.body)).label(
                "body"
            ),
            Strategy.owner_member_id,
        ).join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
        if strategy_id is not None:
            query = query.where(ReceivedSignal.strategy_id == strategy_id)
        newest = (ReceivedSignal.received_at.desc(), ReceivedSignal.id.desc())
        owned = select(Strategy.id).where(Strategy.owner_member_id == member_id)
        if strategy_id is not None:
            owned = owned.where(Strategy.id == strategy_id)
        # Others' strategies: the member's newest executions (their ids grow with time), two
        # per signal at most when two of their connections subscribe.
        ran = (
            query.join(SignalExecution, SignalExecution.signal_id == ReceivedSignal.id)
            .where(SignalExecution.member_id == member_id, Strategy.owner_member_id != member_id)
            .order_by(SignalExecution.id.desc())
            .limit(limit * 2)
        )
        async with self.core.db.session() as s:
            # Each owned strategy's newest along its (strategy_id, received_at) index: the log
            # keeps a year, and autocomplete asks on every keystroke, so nothing sorts it whole.
            rows: list[Row[Any]] = []
            for owned_id in list(await s.scalars(owned)):
                rows += (
                    await s.execute(
                        query.where(ReceivedSignal.strategy_id == owned_id)
                        .order_by(*newest)
                        .limit(limit)
                    )
                ).all()
            rows += {r.id: r for r in (await s.execute(ran)).all()}.values()
            rows.sort(key=lambda r: (r.received_at, r.id), reverse=True)
            rows = rows[:limit]
            results: dict[str, Counter[str]] = {r.id: Counter() for r in rows}
            for own, ids in (
                (True, [r.id for r in rows if r.owner_member_id == member_id]),
                (False, [r.id for r in rows if r.owner_member_id != member_id]),
            ):
                if not ids:
                    continue
                # By reason code too: a refusal held back by Tradecord is "not placed".
                by = (
                    SignalExecution.signal_id,
                    SignalExecution.status,
                    SignalExecution.reason_code,
                )
                counts = (
                    select(*by, func.count())
                    .where(SignalExecution.signal_id.in_(ids))
                    .group_by(*by)
                )
                if not own:
                    counts = counts.where(SignalExecution.member_id == member_id)
                for signal_id, status, code, n in await s.execute(counts):
                    results[signal_id][outcome_words(status, code)] += n
        return [
            SignalLine(
                signal_id=r.id,
                strategy_name=r.name,
                received_at=r.received_at,
                action=r.action or as_sent(r.body, "action"),
                ticker=r.ticker or as_sent(r.body, "ticker"),
                test=r.test,
                status=r.status,
                message_code=r.message_code,
                duplicate_of=r.duplicate_of,
                results=tuple(results[r.id].most_common()),
            )
            for r in rows
        ]

    async def signal_report(self, signal_id: str, discord_user_id: int) -> SignalReport:
        """Every phase of a signal with its time, like TradersPost's execution panel. The
        strategy's owner sees every subscription; a subscriber sees their own."""
        member_id = await self.core.members.ensure(discord_user_id)
        # Not "see its alert": the alert channel is public, the report is not.
        nothing = NotFound(
            "No signal with that id that you can see: /signal show shows the signals of your "
            "strategies and those that ran for you (/signal list has their ids)."
        )
        wanted = signal_id.strip().lower()
        async with self.core.db.session() as s:
            if SHORT_ID.fullmatch(wanted):
                # The 8-character id the alerts, DMs and this report's title show.
                wanted = await self._signal_by_short_id(s, wanted, member_id) or wanted
            row = (
                await s.execute(
                    select(ReceivedSignal, Strategy)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .where(ReceivedSignal.id == wanted)
                )
            ).first()
            if row is None:
                raise nothing
            record, strategy = row
            is_owner = strategy.owner_member_id == member_id
            named = AlertPreference.display_name.label("public_name")
            query = (
                select(SignalExecution, Member.discord_user_id, Connection.name, named)
                .join(Member, Member.id == SignalExecution.member_id)
                .outerjoin(Connection, Connection.id == SignalExecution.connection_id)
                # The name a member chose to show in this server's alerts, as its channel does.
                .outerjoin(
                    AlertPreference,
                    (AlertPreference.member_id == SignalExecution.member_id)
                    & (AlertPreference.guild_id == strategy.guild_id)
                    & AlertPreference.alerts_show_name.is_(True),
                )
                .where(SignalExecution.signal_id == record.id)
                .order_by(SignalExecution.id)
            )
            if not is_owner:
                query = query.where(SignalExecution.member_id == member_id)
            executions = (await s.execute(query)).all()
            if not is_owner and not executions:
                raise nothing
            runs = [ex for ex, *_ in executions]
            keys = {
                intent_key(record.id, ex.subscription_id, leg): (ex.id, leg)
                for ex in runs
                if ex.subscription_id is not None
                for leg in LEGS
            }
            intents = (
                list(
                    await s.scalars(
                        select(OrderIntent).where(OrderIntent.idempotency_key.in_(list(keys)))
                    )
                )
                if keys
                else []
            )
            # Intent id -> (execution id, leg): what each order was placed for.
            placed_for = {i.id: keys[i.idempotency_key or ""] for i in intents}
            removed = [ex for ex in runs if ex.subscription_id is None]
            if removed:
                found = await intents_of_removed(s, record.id, removed, set(keys))
                intents += [i for i, _ in found]
                placed_for.update({i.id: of for i, of in found})
            events = (
                list(
                    await s.scalars(
                        select(AuditEvent)
                        .where(AuditEvent.intent_id.in_([i.id for i in intents]))
                        .order_by(AuditEvent.at, AuditEvent.id)
                    )
                )
                if intents
                else []
            )
        t0 = record.received_at

        def phase(name: str, at: datetime, detail: str | None = None) -> Phase:
            return Phase(name, at, int((at - t0).total_seconds() * 1000), detail)

        top = [phase("received", t0)]
        if record.validated_at:
            top.append(
                phase(
                    "refused" if record.status == SignalStatus.REFUSED else "validated",
                    record.validated_at,
                    record.message_code,
                )
            )
        if record.started_at:
            top.append(phase("processing", record.started_at))
        if record.finished_at:
            # Named after how it ended: a signal given up is "failed", not "done".
            top.append(phase(record.status, record.finished_at))
        by_intent = {i.id: i for i in intents}
        subs = []
        for ex, discord_id, cname, public_name in executions:
            # Details can quote a member's balance, P&L, equity or account: the owner sees
            # another member's phases by name and their refusals by code, as the channel does.
            own = ex.member_id == member_id
            mine = sorted(
                (i for i in intents if placed_for[i.id][0] == ex.id),
                key=lambda i: LEGS.index(placed_for[i.id][1]),
            )
            lines = tuple(
                OrderLine(
                    leg=placed_for[i.id][1],
                    intent_id=i.id,
                    side=i.side,
                    quantity=i.quantity,
                    symbol=i.symbol,
                    order_type=i.order_type,
                    status=i.status,
                    filled_quantity=i.filled_quantity,
                    average_fill_price=i.average_fill_price,
                    error=i.error_message if own else None,
                )
                for i in mine
            )
            said = {
                ORDER_PHASES[e.kind]
                for e in events
                if e.kind in ORDER_PHASES and by_intent.get(e.intent_id or "") in mine
            }
            steps = [
                p
                for p in ex.phases or []
                # Runs stored before now logged an order's later outcome as a bare step too
                # ("filled", "partially_filled"): its order's event says it, in words.
                if (p.get("detail") is not None or LATER_STEPS.get(p["phase"]) not in said)
                # And "sized" for a plan with nothing to size: its note, the run's reason.
                and not (p["phase"] == "sized" and ex.plan is not None and not ex.plan.get("legs"))
            ]
            logged = {p["phase"] for p in steps}
            phases = [
                phase(
                    # Named by the run's result ("failed"): in the words its DM says it in.
                    outcome_words(p["phase"], ex.reason_code)
                    if p["phase"] in OUTCOMES
                    else p["phase"],
                    datetime.fromisoformat(p["at"]),
                    p.get("detail") if own else _code_only(p["phase"], ex.reason_code),
                )
                for p in steps
            ]
            for e in events:
                intent = by_intent.get(e.intent_id or "")
                if intent is None or intent not in mine or e.kind not in ORDER_PHASES:
                    continue
                leg, word = placed_for[intent.id][1], ORDER_PHASES[e.kind]
                if e.kind == "order.exit_filled":
                    leg = str(e.detail.get("exit") or "exit")
                # What the execution logged itself ("exit filled" with its fill, "rejected"
                # with the reason) is not said a second time by the order's own event.
                if f"{leg} {word}" in logged or (word in ENDED_BY_REASON and word in logged):
                    continue
                detail = _event_detail(e, intent) if own else None
                if word in ENDED_BY_REASON:  # an order never placed is "not placed" too
                    word = outcome_words(word)
                phases.append(phase(f"{leg} {word}", e.at, detail))
            phases.sort(key=lambda p: p.at)
            subs.append(
                SubscriptionReport(
                    execution_id=ex.id,
                    subscription_id=ex.subscription_id,
                    member_discord_id=discord_id,
                    # Which connection is the member's own to see (its name may say who).
                    connection_name=cname if own else None,
                    mode=ex.mode,
                    status=ex.status,
                    reason_code=ex.reason_code,
                    reason=ex.reason if own else ex.reason_code,
                    phases=tuple(phases),
                    orders=lines,
                    own=own,
                    public_name=None if own else public_name,
                )
            )
        latency = (
            int((t0 - record.signal_time).total_seconds() * 1000) if record.signal_time else None
        )
        return SignalReport(
            signal_id=record.id,
            strategy_id=strategy.id,
            strategy_name=strategy.name,
            viewer_is_owner=is_owner,
            status=record.status,
            ticker=record.ticker or as_sent(record.body, "ticker"),
            action=record.action or as_sent(record.body, "action"),
            sentiment=(record.payload or {}).get("sentiment"),
            test=record.test,
            message_code=record.message_code,
            message=record.message if is_owner else None,
            received_at=t0,
            signal_time=record.signal_time,
            latency_ms=latency,
            phases=tuple(top),
            subscriptions=tuple(subs),
            duplicate_of=record.duplicate_of,
        )


def _event_detail(event: AuditEvent, intent: OrderIntent) -> str | None:
    """An order event's detail, for its member: the broker's reason, or how much a partial
    fill (or a bracket's exit) filled and at what price."""
    d = event.detail or {}
    if event.kind == "order.partially_filled" and d.get("filled_quantity") is not None:
        at = d.get("average_fill_price")
        price = f" at {fill_price(Decimal(str(at)))}" if at is not None else ""
        filled = Decimal(str(d["filled_quantity"]))
        return f"{qty(filled)} of {qty(intent.quantity)} filled{price}"
    if event.kind == "order.exit_filled" and d.get("quantity") is not None:
        at = d.get("price")
        price = f" @ {fill_price(Decimal(str(at)))}" if at is not None else ""
        # An exit that ended after filling part: the rest of the position was not closed.
        ended = f", then {d['ended']}" if d.get("ended") else ""
        return f"{qty(Decimal(str(d['quantity'])))}{price}{ended}"
    detail = d.get("reason") or d.get("error")
    return str(detail) if detail else None


def as_sent(body: str | None, field: str) -> str | None:
    """A refused signal's field as its body has it, when it is a string: the owner tells
    their alerts apart by it. Only plain characters, cut short."""
    try:
        value = json.loads(body or "").get(field)
    except (ValueError, AttributeError):
        return None
    if not isinstance(value, str):
        return None
    return SHOWABLE.sub("", value)[:16] or None
