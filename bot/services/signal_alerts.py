"""A signal's alerts: its posts in the strategy's alert channel, in as few messages as fit, and
the result DMs to the members it ran for."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, select, update

from adapters import symbols
from bot.automation_models import (
    LEGS,
    ChannelLine,
    ExecutionStatus,
    ReceivedSignal,
    SignalExecution,
    Strategy,
    Subscription,
    intent_key,
)
from bot.components import approval_buttons
from bot.models import Connection, IntentStatus, Member, OrderIntent, short_id
from bot.services.notify import ChannelUnavailable, Outgoing, dm_quietly
from bot.services.signal_plans import ExecContext, Plan, Result
from bot.services.trading import (
    SIMULATED_NOTE,
    describe_intent,
    fill_price,
    intent_terms,
    mask_account,
    money,
    price_text,
    qty,
)
from bot.signal_format import Signal
from bot.wording import clip, plain, plural

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.services.signals import SignalService

# Its log lines are the signals', as before the alerts had their own module.
log = logging.getLogger("tradecord.signals")

# One name per outcome of a subscription's run, wherever it is said: its DM's head, the alert
# channel's line, /signal list, /signal show and its autocomplete (``outcome``).
OUTCOMES = {
    ExecutionStatus.PENDING: ("⏳", "Under way"),
    ExecutionStatus.WAITING_APPROVAL: ("🕓", "Waiting for approval"),
    ExecutionStatus.APPROVED: ("⏳", "Approved"),
    ExecutionStatus.SKIPPED: ("⏭️", "Skipped"),
    ExecutionStatus.DONE: ("✅", "Done"),
    ExecutionStatus.ACCEPTED: ("📨", "Order placed"),
    ExecutionStatus.PARTIALLY_FILLED: ("🟡", "Partially filled"),
    ExecutionStatus.FILLED: ("✅", "Filled"),
    ExecutionStatus.REJECTED: ("⛔", "Rejected"),
    ExecutionStatus.FAILED: ("⛔", "Not placed"),
    # Sent, the broker's answer lost: its end is posted once the reconciler settles it.
    ExecutionStatus.UNCONFIRMED: ("⏳", "Not confirmed yet"),
    ExecutionStatus.CANCELLED: ("🚫", "Cancelled"),
    ExecutionStatus.ORDER_EXPIRED: ("⌛", "Expired"),
    ExecutionStatus.EXPIRED: ("⌛", "Approval expired"),
    ExecutionStatus.DECLINED: ("🚫", "Declined"),
    ExecutionStatus.TEST: ("🧪", "Test signal"),
}
# The outcomes the alert channel hears (``result_line``).
CHANNEL_STATUSES = frozenset(
    {
        ExecutionStatus.ACCEPTED,
        ExecutionStatus.PARTIALLY_FILLED,
        ExecutionStatus.FILLED,
        ExecutionStatus.REJECTED,
        ExecutionStatus.FAILED,
        ExecutionStatus.CANCELLED,
        ExecutionStatus.ORDER_EXPIRED,
        ExecutionStatus.UNCONFIRMED,
    }
)

# A waiting channel line older than this was left by a run that will not post it; so is a
# result saved this long ago and not told (``tell_untold``).
LEFTOVER_AGE = timedelta(minutes=2)
# The signals whose untold results the background pass looks for: an approval can be answered
# up to a day after its signal (the longest approval_ttl_seconds), and its result comes then.
UNTOLD_WITHIN = timedelta(days=2)
# Results a run records and then tells; PENDING and APPROVED runs are still going.
TOLD_STATUSES = ExecutionStatus.FINAL | {ExecutionStatus.WAITING_APPROVAL}
# How long lines Discord failed to take are tried again: later, they would be old news.
RETRY_FOR = timedelta(minutes=30)

# Refusals that are Tradecord's own safety checks at the moment of sending, not the broker's.
HELD_BACK = frozenset({"position-changed", "cancel-pending"})


def outcome(status: str, reason_code: str | None = None) -> tuple[str, str]:
    """A run's result as members read it (``OUTCOMES``): its emoji and its words."""
    if status == ExecutionStatus.REJECTED and reason_code in HELD_BACK:
        # Tradecord held it back: no broker (nor member) refused it.
        status = ExecutionStatus.FAILED
    elif status == ExecutionStatus.FAILED and reason_code == "signal-given-up":
        # It may have placed an order before Tradecord stopped trying (its DM says so).
        return "⚠️", "Did not finish"
    return OUTCOMES.get(status, ("•", status.replace("_", " ")))


def outcome_words(status: str, reason_code: str | None = None) -> str:
    """``outcome``'s words within a line or a table: "not placed"."""
    return outcome(status, reason_code)[1].lower()


@dataclass(frozen=True, slots=True)
class _Claim:
    """A saved result to tell (``SignalAlerts._claim``): its status, and its orders' ids with
    the state the DM says of each."""

    execution_id: int
    status: str
    orders: tuple[tuple[str, str], ...]


class ChannelDigest:
    """One signal's subscriber results for its alert channel, in as few posts as fit.

    A fan-out to hundreds of subscribers would otherwise be hundreds of posts, which Discord's
    per-channel rate limit (five posts per five seconds) stretches over minutes. Identical
    lines (unnamed subscribers with the same trade) are counted instead of repeated, and each
    post carries as many lines as one message holds.
    """

    LIMIT = 2000  # Discord's message length

    def __init__(self, channel_id: int, strategy_name: str) -> None:
        self.channel_id = channel_id
        self.strategy_name = strategy_name
        self.title = f"**{plain(strategy_name)}**"
        self._lines: dict[str, int] = {}  # in arrival order

    def add(self, line: str) -> None:
        self._lines[line] = self._lines.get(line, 0) + 1

    def messages(self) -> list[str]:
        lines = [line if n == 1 else f"{line} ×{n}" for line, n in self._lines.items()]
        if len(lines) == 1:
            return [f"{self.title} {lines[0]}"]
        out: list[str] = []
        current = self.title
        for line in lines:
            if len(current) + 1 + len(line) > self.LIMIT:
                out.append(current)
                current = self.title
            current += "\n" + line
        if current != self.title:
            out.append(current)
        return out

    def take(self) -> list[str]:
        """The posts for the lines so far; the digest starts over."""
        out = self.messages()
        self._lines.clear()
        return out


class SignalAlerts:
    def __init__(self, signals: SignalService) -> None:
        self.signals = signals
        self.core = signals.core

    async def notify(self, ctx: ExecContext, result: Result) -> bool:
        """DM the member the result ``_finish`` saved (an approval card with its buttons), once
        across runs and processes: the result is saved untold, and only the one who claims it
        (``_claim``) sends it. A run that dies before that leaves it to its job's re-run or to
        the background pass (``tell_untold``). True when this call told it."""
        notifier = self.core.notifier
        if notifier is None:
            return False  # left for a process that can tell it (tell_untold)
        buttons: list[dict[str, Any]] = []
        if result.status == ExecutionStatus.WAITING_APPROVAL:
            pending = await self.signals.approvals.pending(ctx.execution_id)
            if pending is not None and pending.intent_ids:
                # Handled by the bot's dynamic buttons, in whichever process gets the click.
                buttons = approval_buttons(pending.intent_ids[0])
        if not await self._claim(ctx.execution_id, result):
            return False
        what = _orders_text(result.orders)
        if result.status == ExecutionStatus.WAITING_APPROVAL and result.plan is not None:
            what = result.plan.summary(ctx.signal.ticker)
            entry = result.plan.leg("entry")
            if entry is not None and entry.sized_at is not None and not result.plan.note:
                # Sized from the price then: the member judges whether it still holds.
                cost = entry.quantity * entry.sized_at * symbols.multiplier(ctx.signal.ticker)
                priced = f"sized at {price_text(entry.sized_at)}, about {money(cost)}"
                what += f" at the market ({priced})"
            if result.approval_expires_at is not None:
                what += f" · expires <t:{int(result.approval_expires_at.timestamp())}:R>"
            if result.orders:
                # Where the click sends it, as /trade's card says: a live one unmistakably.
                where = mask_account(result.orders[0].account_id)
                live = ctx.subscription.mode == "live"
                what += f"\nAccount {where}" + (" · ⚠️ **LIVE: real money**" if live else " · paper")
        head = (
            "🕓 Waiting for your approval"  # theirs to give
            if result.status == ExecutionStatus.WAITING_APPROVAL
            else " ".join(outcome(result.status, result.reason_code))
        )
        conn = ctx.connection.name if ctx.connection else "(removed connection)"
        lines = [
            f"{head}: **{plain(ctx.strategy_name)}** → {plain(conn)} ({ctx.subscription.mode})"
            + simulated_note(result.orders)
        ]
        if what:
            lines.append(what)
        # Not said twice: a broker's refusal is in its order's text already, and a waiting
        # plan's summary is the line above.
        waiting = result.status == ExecutionStatus.WAITING_APPROVAL
        if result.reason and not waiting and result.reason.rstrip(".") not in what:
            # A broker's refusal quoted whole can pass a message's 2,000 characters.
            lines.append(clip(result.reason, 800))
        if ctx.cancelled and ctx.cancelled not in (result.reason or ""):
            lines.append(ctx.cancelled)
        if result.status == ExecutionStatus.UNCONFIRMED and not result.reason:
            lines.append(
                "Tradecord never sends it twice: you will get a DM once the broker says how it "
                "ended. See /orders meanwhile."
            )
        lines.append(f"Signal `{ctx.signal_id}` · /signal show for every step.")
        try:
            await notifier.dm(
                ctx.member_discord_id, Outgoing(content="\n".join(lines), components=buttons)
            )
        except Exception:
            # Members may close their DMs: the channel still hears the result below.
            log.warning("Could not DM about execution %s", ctx.execution_id, exc_info=True)
        if not ctx.in_fanout and ctx.channel_id is not None:
            # Alone (an approved order, a re-run): its line goes now; a fan-out's go together.
            await self.post_lines(
                ctx.guild_id,
                ctx.strategy_id,
                ctx.strategy_name,
                ctx.signal_id,
                f"execution {ctx.execution_id}",
                execution_id=ctx.execution_id,
            )
        return True

    async def _claim(self, execution_id: int, result: Result) -> bool:
        """Take the telling of a saved result (compare-and-set on its ``notified_status``), so
        no two runs or processes both DM it. Not an approval whose time ran out meanwhile: its
        expiry's DM says what it asked. With the claim, its orders count as told in the state
        the DM says (as ``TradingService.mark_announced`` did, in the same commit): a later
        update in that state is not news. A fan-out's claims go together (``_claim_many``)."""
        orders = tuple((i.id, f"{i.status}:{i.filled_quantity}") for i in result.orders)
        claim = _Claim(execution_id, result.status, orders)
        return await self.core.db.shared("signals.result-claims", self._claim_many)(claim)

    async def _claim_many(self, claims: Sequence[_Claim]) -> list[bool]:
        """``_claim`` for many at once, in one transaction: an ``UPDATE … RETURNING`` per status
        claimed, and the orders' told states in one ``executemany`` (no row is loaded)."""
        now = self.signals.clock()
        table, intents = SignalExecution.__table__, OrderIntent.__table__
        won: set[int] = set()
        async with self.core.db.transaction() as s:
            for status in sorted({c.status for c in claims}):
                ids = sorted({c.execution_id for c in claims if c.status == status})
                where = [
                    table.c.id.in_(ids),
                    table.c.status == status,  # changed since: whoever changed it tells that
                    table.c.notified_status.is_(None) | (table.c.notified_status != status),
                ]
                if status == ExecutionStatus.WAITING_APPROVAL:
                    where.append(
                        table.c.approval_expires_at.is_(None) | (table.c.approval_expires_at > now)
                    )
                won.update(
                    await s.scalars(
                        update(table)
                        .where(*where)
                        # Telling it does not change the result: its time stays.
                        .values(notified_status=status, updated_at=table.c.updated_at)
                        .returning(table.c.id)
                    )
                )
            told = [
                {"intent": intent_id, "told": state}
                for c in claims
                if c.execution_id in won
                for intent_id, state in c.orders
            ]
            if told:
                await s.execute(
                    update(intents)
                    .where(intents.c.id == bindparam("intent"))
                    .values(notified_status=bindparam("told")),
                    told,
                )
        # Two claims of one execution in a batch (two runs at once): the first one wins.
        first: dict[int, int] = {}
        for n, c in enumerate(claims):
            first.setdefault(c.execution_id, n)
        return [c.execution_id in won and first[c.execution_id] == n for n, c in enumerate(claims)]

    async def tell_untold(
        self, *, signal_id: str | None = None, older_than: timedelta = LEFTOVER_AGE
    ) -> int:
        """Tell the results that runs saved and did not tell (the process died in between), each
        once (``notify`` claims it): an approval card still waiting comes with its buttons, one
        that expired meanwhile not at all. ``signal_id``: that signal's, whatever their age (its
        job's re-run: the run before it is over). Else the recent signals' results saved more
        than ``older_than`` ago: a run may still be telling a newer one. Returns how many it
        told."""
        if self.core.notifier is None:
            return 0  # left for a process that can tell them
        now = self.signals.clock()
        untold = [
            SignalExecution.status.in_(TOLD_STATUSES),
            SignalExecution.notified_status.is_(None)
            | (SignalExecution.notified_status != SignalExecution.status),
            (SignalExecution.status != ExecutionStatus.WAITING_APPROVAL)
            | SignalExecution.approval_expires_at.is_(None)
            | (SignalExecution.approval_expires_at > now),
        ]
        if signal_id is not None:
            untold.append(SignalExecution.signal_id == signal_id)
        else:
            # Along the (signal_id, subscription_id) index: signal ids grow with the time they
            # were made (wall-clock time), and the log keeps a year of executions.
            wall = time.time()
            untold += [
                SignalExecution.signal_id.between(
                    _first_id_at(wall - UNTOLD_WITHIN.total_seconds()),
                    _first_id_at(wall + 86400),  # another process's clock may be ahead
                ),
                SignalExecution.updated_at <= now - older_than,
            ]
        async with self.core.db.session() as s:
            rows = (
                await s.execute(
                    select(
                        SignalExecution,
                        ReceivedSignal,
                        Strategy,
                        Member.discord_user_id,
                        Subscription,
                        Connection,
                    )
                    .join(ReceivedSignal, ReceivedSignal.id == SignalExecution.signal_id)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .join(Member, Member.id == SignalExecution.member_id)
                    .outerjoin(Subscription, Subscription.id == SignalExecution.subscription_id)
                    .outerjoin(Connection, Connection.id == SignalExecution.connection_id)
                    .where(*untold)
                    .order_by(SignalExecution.id)
                    .limit(200)
                )
            ).all()
            keys = {
                intent_key(ex.signal_id, ex.subscription_id, leg): (ex.id, leg)
                for ex, *_ in rows
                if ex.subscription_id is not None
                for leg in LEGS
            }
            orders: dict[int, list[OrderIntent]] = {}
            if keys:
                for intent in await s.scalars(
                    select(OrderIntent)
                    .where(OrderIntent.idempotency_key.in_(list(keys)))
                    .where(OrderIntent.status != IntentStatus.DISCARDED)
                ):
                    ex_id, _ = keys[intent.idempotency_key or ""]
                    orders.setdefault(ex_id, []).append(intent)
            # Runs whose subscription went since (/unsubscribe): their orders' keys name it.
            removed: dict[str, list[SignalExecution]] = {}
            for ex, *_ in rows:
                if ex.subscription_id is None:
                    removed.setdefault(ex.signal_id, []).append(ex)
            for signal_id, runs in removed.items():
                for intent, (ex_id, leg) in await intents_of_removed(s, signal_id, runs, set()):
                    if intent.status != IntentStatus.DISCARDED:
                        keys[intent.idempotency_key or ""] = (ex_id, leg)
                        orders.setdefault(ex_id, []).append(intent)
        told = 0
        for ex, record, strategy, discord_id, sub, conn in rows:
            waiting = ex.status == ExecutionStatus.WAITING_APPROVAL
            mine = sorted(
                (
                    i
                    for i in orders.get(ex.id, [])
                    # The drafts an approval card shows; else what was sent.
                    if (i.status == IntentStatus.DRAFT) == waiting
                ),
                key=lambda i: LEGS.index(keys[i.idempotency_key or ""][1]),
            )
            if sub is None:
                # Deleted since: its member still hears what it did. The DM needs its mode.
                sub = Subscription(mode=ex.mode)
            ctx = ExecContext(
                signal_id=record.id,
                signal=Signal.from_record(record.payload or {}),
                strategy_id=strategy.id,
                strategy_name=strategy.name,
                guild_id=strategy.guild_id,
                max_quantity=strategy.max_quantity,
                execution_id=ex.id,
                subscription=sub,
                connection=conn,
                member_discord_id=discord_id,
                public_name=None,
                channel_id=None,  # its channel line has its own outbox (post_lines)
                in_fanout=True,
                phases=list(ex.phases or []),
                cancelled=_cancelled_note(ex.phases or [], ex.reason),
            )
            result = Result(
                ex.status,
                ex.reason_code,
                ex.reason,
                Plan.from_json(ex.plan) if ex.plan else None,
                approval_expires_at=ex.approval_expires_at,
                orders=mine,
            )
            try:
                told += await self.notify(ctx, result)
            except Exception:
                log.warning("Could not tell the result of execution %s", ex.id, exc_info=True)
        return told

    def channel_line(self, ctx: ExecContext, result: Result) -> str | None:
        """The subscriber's result for the alert channel, if it has one. Refusals before the
        broker has any order (the order check, a changed position) are results the channel
        hears too; skips are not (nothing was tried)."""
        refused = result.status in (ExecutionStatus.REJECTED, ExecutionStatus.FAILED)
        # A cancel-only run's result too: the orders it cancelled are counted, not described
        # (they may be the member's own, placed by hand).
        cancel_only = (
            result.status == ExecutionStatus.DONE and ctx.cancelled_count > 0 and not result.orders
        )
        if ctx.channel_id is None or not (result.orders or refused or cancel_only):
            return None
        n = ctx.cancelled_count
        trades = (
            [_leg_label(i, result.orders) + public_order(i) for i in result.orders]
            if result.orders
            else [f"{n} open {ctx.signal.ticker} order{plural(n)}"]
            if cancel_only
            else _planned_trades(ctx.signal, result.plan)
        )
        line = result_line(
            ctx.public_name,
            ctx.subscription.mode,
            ExecutionStatus.CANCELLED if cancel_only else result.status,
            trades,
            result.reason_code,
        )
        return line + simulated_note(result.orders) if line is not None else None

    async def announce(
        self, record: ReceivedSignal, strategy: Strategy, signal: Signal, channel_id: int | None
    ) -> None:
        """ "Signal received" in the alert channel, once per signal across re-runs."""
        if channel_id is None or self.core.notifier is None:
            return
        async with self.core.db.transaction() as s:
            won = (
                await s.execute(
                    update(ReceivedSignal)
                    .where(ReceivedSignal.id == record.id, ReceivedSignal.announced.is_(False))
                    .values(announced=True)
                )
            ).rowcount  # type: ignore[attr-defined]
        if not won:
            return
        parts = [f"{signal.action.value.upper()} {signal.ticker}"]
        if signal.sentiment:
            parts.append(f"sentiment {signal.sentiment.value}")
        if signal.reference_price is not None:
            parts.append(f"at {price_text(signal.reference_price)}")  # a price, not money
        if signal.test:
            parts.append("test, nothing will be placed")
        text = (
            f"📡 **{plain(strategy.name)}** signal received: {' · '.join(parts)} "
            f"(`{short_id(record.id)}`)"
        )
        await self._to_channel(
            strategy.guild_id, strategy.id, strategy.name, channel_id, [text], "a signal"
        )

    async def post_digest(
        self, guild_id: int, strategy_id: str, digest: ChannelDigest, what: str
    ) -> bool:
        """True when Discord failed before any of it went out (worth another try)."""
        texts = digest.take()
        return await self._to_channel(
            guild_id, strategy_id, digest.strategy_name, digest.channel_id, texts, what
        )

    async def post_lines(
        self,
        guild_id: int,
        strategy_id: str,
        strategy_name: str,
        signal_id: str,
        what: str,
        *,
        execution_id: int | None = None,
    ) -> None:
        """Post a signal's waiting result lines (``ChannelLine``), or one execution's, in as
        few messages as fit. Each is taken (deleted) before it is posted, so no two processes
        post the same line. When Discord fails before any of them went out (an outage beyond
        discord.py's own retries), they are put back for the background pass to try again,
        for up to ``RETRY_FOR``; a post that failed part way is not repeated."""
        if self.core.notifier is None:
            return  # left for a process that can post them
        where = [ChannelLine.signal_id == signal_id]
        if execution_id is not None:
            where.append(ChannelLine.execution_id == execution_id)
        async with self.core.db.transaction() as s:
            taken = sorted(
                (
                    await s.execute(
                        delete(ChannelLine)
                        .where(*where)
                        .returning(
                            ChannelLine.id,
                            ChannelLine.execution_id,
                            ChannelLine.line,
                            ChannelLine.created_at,
                        )
                    )
                ).all()
            )
        if not taken:
            return
        # Where the channel is now: an admin who moved it meanwhile wants the results there.
        channel_id = await self.core.strategies.alert_channel(guild_id, strategy_id)
        if channel_id is None:
            return
        digest = ChannelDigest(channel_id, strategy_name)
        for _, _, line, _ in taken:
            digest.add(line)
        if not await self.post_digest(guild_id, strategy_id, digest, what):
            return
        since = self.signals.clock() - RETRY_FOR
        again = [
            ChannelLine(signal_id=signal_id, execution_id=ex, line=line, created_at=at)
            for _, ex, line, at in taken
            if at >= since
        ]
        try:
            async with self.core.db.transaction() as s:
                s.add_all(again)
        except Exception:  # its execution deleted meanwhile, with its signal
            log.warning("Could not keep %s for another try", what, exc_info=True)

    async def post_leftovers(self, *, older_than: timedelta = LEFTOVER_AGE) -> int:
        """Post the lines no run posted (its process died after recording them, and no re-run
        of its job came): an approved order's, a fan-out's whose job was given up. Returns
        how many signals had some."""
        cutoff = self.signals.clock() - older_than
        async with self.core.db.session() as s:
            rows = (
                await s.execute(
                    select(Strategy.guild_id, Strategy.id, Strategy.name, ChannelLine.signal_id)
                    .join(ReceivedSignal, ReceivedSignal.id == ChannelLine.signal_id)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .where(ChannelLine.created_at < cutoff)
                    .distinct()
                    .limit(100)
                )
            ).all()
        for guild_id, strategy_id, name, signal_id in rows:
            await self.post_lines(
                guild_id, strategy_id, name, signal_id, f"signal {signal_id}'s results"
            )
        return len(rows)

    async def _to_channel(
        self,
        guild_id: int,
        strategy_id: str,
        strategy_name: str,
        channel_id: int,
        texts: Sequence[str],
        what: str,
    ) -> bool:
        """Post to a strategy's alert channel. Never raises: trading goes on whatever the
        channel does. A channel that refuses posts for good (deleted, permissions taken away)
        is reported to the strategy's owner once, until a post there works again. True when
        another error stopped it before any text went out."""
        notifier = self.core.notifier
        if notifier is None or not texts:
            return False
        posted = 0
        try:
            for text in texts:
                await notifier.post(channel_id, Outgoing(content=text))
                posted += 1
            failing = False
        except ChannelUnavailable:
            log.warning("Alert channel %s refuses posts (%s)", channel_id, what)
            failing = True
        except Exception:
            log.warning("Could not post %s to its alert channel", what, exc_info=True)
            return posted == 0
        try:
            owner = await self.core.strategies.alert_channel_failing(
                guild_id, strategy_id, channel_id, failing
            )
        except Exception:
            log.warning("Could not record the state of alert channel %s", channel_id, exc_info=True)
            return False
        if owner is not None:
            await self.dm(
                owner,
                f"⚠️ Trade alerts for **{plain(strategy_name)}** cannot be posted in "
                f"<#{channel_id}>: the channel was deleted, or Tradecord may no longer see it "
                "or post there. Ask a server admin to let Tradecord view and send messages "
                "there, or to choose another channel with /alerts-channel. Signals still trade, "
                "and subscribers still get their DMs.",
            )
        return False

    async def dm(self, discord_user_id: int, text: str) -> None:
        await dm_quietly(self.core.notifier, discord_user_id, Outgoing(text), about="a signal")


async def intents_of_removed(
    s: AsyncSession, signal_id: str, removed: Sequence[SignalExecution], known: set[str]
) -> list[tuple[OrderIntent, tuple[int, str]]]:
    """The orders of runs whose subscription was deleted since (/unsubscribe, /disconnect:
    SET NULL), each with its run and leg. Their keys name a subscription id the run no longer
    has: they are found by the signal's key prefix and the run's member, and told to their
    run by the execution id each was placed with (two removed runs of one member may share
    the connection, NULL once it is gone, and the mode)."""
    candidates = await s.scalars(
        select(OrderIntent).where(
            OrderIntent.idempotency_key.startswith(f"{signal_id}:", autoescape=True),
            OrderIntent.member_id.in_({ex.member_id for ex in removed}),
        )
    )
    runs = {ex.id: ex for ex in removed}
    found = []
    for intent in candidates:
        key = intent.idempotency_key or ""
        leg = key.rpartition(":")[2]
        extra = intent.extra if isinstance(intent.extra, dict) else {}
        run = runs.get(extra.get("execution_id"))
        if key not in known and leg in LEGS and run is not None:
            found.append((intent, (run.id, leg)))
    return found


def _first_id_at(unix_time: float) -> str:
    """The least signal id ``time_ordered_uuid`` makes at that time: as text, the ids made
    before it sort before it, and those made after, after it (their time comes first)."""
    millis = int(unix_time * 1000) & (1 << 48) - 1
    return str(uuid.UUID(int=millis << 80))


def _cancelled_note(phases: Sequence[Any], reason: str | None) -> str | None:
    """What a run cancelled, for its result told later: its "cancelled" step's count (the run's
    own note, naming the orders, lived in its memory), unless its reason is that note."""
    if (reason or "").startswith("Cancelled "):
        return None
    for p in phases:
        if isinstance(p, dict) and p.get("phase") == "cancelled" and p.get("detail"):
            return f"Cancelled {p['detail']}."
    return None


def _orders_text(intents: Sequence[OrderIntent]) -> str:
    """For the member's own DM: includes the broker's reasons. A sentence, so it ends with
    a period (a reason quoted at its end would read as cut off without one)."""
    text = "; ".join(_leg_label(i, intents) + describe_intent(i).rstrip(".") for i in intents)
    return f"{text}." if text else text


def _leg_label(intent: OrderIntent, intents: Sequence[OrderIntent]) -> str:
    """ "exit: " / "entry: " when a signal placed both (a reversal): its two orders are often
    the same side, quantity and price, and would read as one order said twice."""
    leg = (intent.extra or {}).get("leg")
    return f"{leg}: " if len(intents) > 1 and leg in ("exit", "entry") else ""


def result_line(
    public_name: str | None,
    mode: str,
    status: str,
    trades: Sequence[str],
    reason_code: str | None,
) -> str | None:
    """A subscriber's result for the alert channel: the trades only (``public_order``,
    ``_planned_trades``), and the member's name only if they chose to be named. Broker
    messages can quote balances, so never those: a refusal shows its code."""
    if status not in CHANNEL_STATUSES:
        return None
    emoji, words = outcome(status, reason_code)
    who = plain(public_name) if public_name else "A subscriber"
    line = f"{emoji} {words} · {who} ({mode}): {'; '.join(trades)}"
    if status in (ExecutionStatus.REJECTED, ExecutionStatus.FAILED):
        line += f" ({reason_code or 'rejected'})"
    return line


def simulated_note(intents: Sequence[OrderIntent]) -> str:
    """ " · simulated prices" when a fill price said is the simulated feed's (Tradecord Paper
    with no broker for its prices), as every message priced by it says."""
    simulated = any(
        i.average_fill_price is not None and (i.extra or {}).get("simulated") for i in intents
    )
    return f" · {SIMULATED_NOTE}" if simulated else ""


def public_order(intent: OrderIntent) -> str:
    """For a channel: the trade only. Broker messages can quote balances, so none here."""
    text = f"{intent.side} {qty(intent.quantity)} {intent.symbol}"
    if intent.status == IntentStatus.FILLED and intent.average_fill_price is not None:
        text += f" at {fill_price(intent.average_fill_price)}"
    elif intent.status == IntentStatus.ACCEPTED:
        text += intent_terms(intent)  # working: its price is what members watch for
    elif intent.filled_quantity and intent.status in (
        IntentStatus.PARTIALLY_FILLED,
        IntentStatus.CANCELLED,
        IntentStatus.EXPIRED,
    ):
        # Filled in part (the subscriber holds those, unlike a plain cancel): a working one
        # still says its price too.
        at = f" at {fill_price(intent.average_fill_price)}" if intent.average_fill_price else ""
        working = intent_terms(intent) if intent.status == IntentStatus.PARTIALLY_FILLED else ""
        text += f"{working} ({qty(intent.filled_quantity)} filled{at})"
    return text


def _planned_trades(signal: Signal, plan: Plan | None) -> list[str]:
    """For a channel, when no order exists: the planned legs with their prices, named "exit: "
    and "entry: " when both (as ``_leg_label`` does for orders), else the signal itself."""
    if plan is not None and plan.legs:
        both = len(plan.legs) > 1
        return [f"{leg.name}: " * both + leg.describe(signal.ticker) for leg in plan.legs]
    return [f"{signal.action.value} {signal.ticker}"]
