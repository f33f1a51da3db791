"""Signals: the webhook's acknowledgement, processing from the job queue, each subscription's
execution in TradersPost's order. Manual approval is ``bot.services.approvals``, the alerts
``bot.services.signal_alerts`` and the execution report (``/signal show``)
``bot.services.signal_report``.

Acknowledgement (``receive``): the request is parsed and checked against the strategy's rules,
then stored with its job in one transaction (``bot.services.acks``); the answer (202 with the
id) goes out after the commit.

Execution (job ``signal``): every enabled subscription gets a ``SignalExecution`` row and runs
concurrently and independently. Per subscription, as TradersPost documents it: cancel the
ticker's open orders before sending new orders (buy, sell, exit; ``cancel`` overrides; a
signal that sends nothing cancels nothing, except action cancel), exit an opposite or closing
position and wait for that order to be final, then enter; with nothing to do, skip with a
reason. Every order goes through ``TradingService.place`` with the key
``{signal}:{subscription}:{leg}``: a re-run job (a worker died, a lease expired) finds the same
intents and resumes them instead of ordering again. The plan travels in each intent's ``extra``
so a re-run follows the plan it started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import flag_modified

from adapters import symbols
from adapters.base import ASSET_WORDS, BrokerAdapter
from adapters.errors import BrokerError, InvalidOrder, OrderNotFound
from adapters.models import (
    AUCTIONS,
    AssetClass,
    Bracket,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    Side,
    mask_account,
)
from adapters.paper import PaperBroker
from bot import signal_format
from bot.automation_models import (
    LEGS,
    AlertPreference,
    ChannelLine,
    ExecutionStatus,
    ReceivedSignal,
    SignalExecution,
    SignalStatus,
    Strategy,
    Subscription,
    intent_key,
)
from bot.brokers import connect_command
from bot.errors import (
    Conflict,
    TradecordError,
)
from bot.models import (
    Connection,
    ConnectionStatus,
    IntentStatus,
    Member,
    OrderIntent,
    short_id,
    time_ordered_uuid,
)
from bot.services.acks import AckStore, RateLimited, duplicate_window
from bot.services.approvals import (
    JOB_APPROVAL_EXPIRY,
    ApprovalResult,
    Approvals,
    PendingApproval,
)
from bot.services.connections import Target
from bot.services.jobs import RunAgainAt, insert_ignoring
from bot.services.signal_alerts import (
    ChannelDigest,
    SignalAlerts,
    public_order,
    result_line,
    simulated_note,
)
from bot.services.signal_plans import ExecContext, Leg, Plan, Result, decimal_text
from bot.services.signal_report import (
    ENDED_BY_REASON,
    RECENT_SIGNALS,
    SignalLine,
    SignalReport,
    SignalReports,
)
from bot.services.strategies import WebhookAuth
from bot.services.subscriptions import Sides, Sizing, parse_entry_order, sizing_amount
from bot.services.trading import (
    ACCOUNT_CHANGED,
    PENDING_SEND_LIMIT,
    SIMULATED_NOTE,
    OrderInput,
    Origin,
    all_or_first_error,
    describe_intent,
    estimate_price,
    exit_kind,
    fill_price,
    order_text,
    price_text,
    qty,
    request_of,
    send_settles_at,
    stop_passed,
)
from bot.signal_format import Action, QuantityType, Refusal, Sentiment, Signal, StopLossType
from bot.trading_windows import in_windows, next_start, parse_windows
from bot.wording import plain, plural

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger("tradecord.signals")

# Subscriptions of one signal that trade at once. Their orders wait mostly on brokers' round
# trips, so a few hundred in flight cost little; the broker session's socket limit matches.
FANOUT_CONCURRENCY = 500
DUST_USD = Decimal("1.50")  # crypto positions worth this or less do not count (TradersPost)
JOB_SIGNAL = "signal"
# Tries of a signal's job before it is given up: about 13 minutes of backoff, so a database
# busy for a while does not drop the signal. A run that comes too late trades nothing: every
# subscription ends as stale, with the reason told (_stale).
SIGNAL_ATTEMPTS = 10
# Why a run ends with its signal's job given up (``_signal_gave_up``).
GAVE_UP_REASON = (
    "Tradecord kept failing on this signal and stopped trying: nothing more will be placed for "
    "it. See /orders for anything it had placed."
)
# Executions whose order may still change at the broker after the run recorded them.
LATER = frozenset(
    {ExecutionStatus.ACCEPTED, ExecutionStatus.PARTIALLY_FILLED, ExecutionStatus.UNCONFIRMED}
)


# -- results and plans ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    """The webhook's answer, shaped as TradersPost's."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class _Skip(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


@dataclass(slots=True)
class Snapshot:
    positions: list[Position]
    position: Decimal  # signed quantity in the signal's ticker (crypto dust counts as none)
    ticker_orders: list[Order]
    average: Decimal | None = None  # the position's average price, when it is one position
    read_at: datetime | None = None  # when the positions were asked for


# -- the service ---------------------------------------------------------------------------------


class SignalService:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        self.exit_timeout = 30.0  # seconds to wait for an exit to fill before not entering
        self.exit_poll_interval = 0.25
        self.fanout_concurrency = FANOUT_CONCURRENCY
        self.acks = AckStore(core.db)
        self.reports = SignalReports(core)
        self.alerts = SignalAlerts(self)
        core.jobs.register(JOB_SIGNAL, self._job_signal, self._signal_gave_up)
        core.trading.listeners.append(self._on_order_update)
        core.trading.exit_listeners.append(self._on_exit_filled)
        core.trading.origin_of = self._origin
        self.approvals = Approvals(self)

    # == acknowledgement ===========================================================================

    async def receive(
        self,
        auth: WebhookAuth,
        body: bytes,
        *,
        source_ip: str | None,
        received_at: datetime | None = None,
    ) -> Ack:
        """Store an authenticated request and answer it: 202 queued, 200 duplicate, 400 refused,
        429 over the strategy's rate. Nothing is answered before it is committed."""
        received = received_at or self.clock()
        parsed = signal_format.parse(body)
        refusal = parsed if isinstance(parsed, Refusal) else self._refusal(parsed, auth, received)
        signal = parsed if isinstance(parsed, Signal) else None
        valid = signal if refusal is None else None
        validated = self.clock()
        signal_id = time_ordered_uuid()
        record = valid.to_record() if valid else None
        # The answer's echo is built before the commit: nothing may fail after a stored
        # signal and answer 500, which the sender would retry.
        echo = valid.echo(record) if valid else None
        row = dict(
            id=signal_id,
            strategy_id=auth.id,
            received_at=received,
            validated_at=validated,
            body_hash=hashlib.sha256(body).hexdigest(),
            body=_body_text(body),
            payload=record,
            status=SignalStatus.REFUSED,
            message_code=refusal.code if refusal else None,
            message=refusal.message[:400] if refusal else None,
            duplicate_of=None,
            ticker=signal.ticker if signal else None,
            action=signal.action.value if signal else None,
            test=bool(signal and signal.test),
            signal_time=signal.time if signal else None,
            source_ip=source_ip,
            announced=False,
        )
        job = self.core.jobs.row(
            JOB_SIGNAL,
            {"signal_id": signal_id},
            key=f"signal:{signal_id}",
            # A strategy's signals trade in the order they came: an exit and the entry sent
            # right after it must not run side by side, or the entry sees the old position.
            serial=f"strategy:{auth.id}",
            max_attempts=SIGNAL_ATTEMPTS,
        )
        try:
            _, original = await self.acks.store(auth, row, job, valid is not None)
        except RateLimited:
            return Ack(
                429,
                {
                    "success": False,
                    "messageCode": "rate-limited",
                    "message": f"This strategy accepts {auth.rate_limit_per_minute} signals a "
                    "minute; this one was not stored. Send fewer signals, or raise the "
                    "limit with /strategy settings.",
                },
                {"Retry-After": "60"},
            )
        if refusal is not None:
            return Ack(
                400,
                {
                    "success": False,
                    "logId": signal_id,
                    "messageCode": refusal.code,
                    "message": refusal.message,
                },
            )
        assert signal is not None
        if original is not None:
            window = duplicate_window(signal.time, auth.max_lag_seconds).total_seconds()
            if signal.time is None:
                message = (
                    f"The same signal was received in the last {_age(window)}; it is "
                    "acknowledged and will not be traded twice. To repeat an order on "
                    "purpose, send a time field (TradingView: {{timenow}}) so each alert differs."
                )
            else:
                message = (
                    "This signal, time field included, was already received (within "
                    f"{_age(window)}): it is acknowledged and will not be traded twice. Each "
                    "alert's own time ({{timenow}}) makes it a new signal."
                )
            return Ack(
                200,
                {
                    "success": True,
                    "id": original,
                    "logId": signal_id,
                    "duplicate": True,
                    "payload": echo,
                    "message": message,
                },
            )
        self.core.jobs.wake()
        return Ack(
            202,
            {"success": True, "id": signal_id, "logId": signal_id, "payload": echo},
        )

    async def send_test(
        self, auth: WebhookAuth, ticker: str, action: str, quantity: str | None = None
    ) -> Ack:
        """A test signal (``"test": true``) from the strategy's owner, down the webhook's own
        path (its checks, rate limit and log): each subscription works out what it would do
        and its member is told; nothing is placed."""
        body: dict[str, Any] = {
            "ticker": ticker,
            "action": action,
            "test": True,
            "time": self.clock().isoformat(),  # to the microsecond: never a duplicate
        }
        if quantity is not None:
            body["quantity"] = quantity
        ack = await self.receive(auth, json.dumps(body).encode(), source_ip=None)
        # Its owner reads a refusal in the answer: no DM about it later.
        if ack.status == 400:
            async with self.core.db.transaction() as s:
                await s.execute(
                    update(ReceivedSignal)
                    .where(ReceivedSignal.id == ack.body["logId"])
                    .values(announced=True)
                )
        elif ack.status == 429:
            # Counted with the requests turned away, which the hourly notice reports as alerts
            # lost: this one was the owner's own test, told at once.
            async with self.core.db.transaction() as s:
                await s.execute(
                    update(Strategy)
                    .where(Strategy.id == auth.id, Strategy.over_rate > 0)
                    .values(
                        over_rate=Strategy.over_rate - 1,
                        over_rate_since=case(
                            (Strategy.over_rate == 1, None), else_=Strategy.over_rate_since
                        ),
                    )
                )
        return ack

    def _refusal(self, signal: Signal, auth: WebhookAuth, now: datetime) -> Refusal | None:
        """The strategy's own rules, after the format's."""
        if auth.allowed_tickers and signal.ticker not in auth.allowed_tickers:
            return Refusal(
                "unsupported-ticker",
                f"The ticker {signal.ticker} is not allowed on "
                "this strategy. Its owner can add it with "
                "/strategy settings allowed_tickers.",
            )
        if (
            auth.max_quantity is not None
            # Only an add opens for sure: a buy or sell may first exit (a reversal), and an
            # exit is never held back by a limit. Their entries are capped as each
            # subscription plans them (``quantity-over-limit`` in its result).
            and signal.action is Action.ADD
            and signal.quantity is not None
            and signal.effective_quantity_type is QuantityType.FIXED_QUANTITY
            and signal.quantity > auth.max_quantity
        ):
            return Refusal(
                "quantity-over-limit",
                f"The quantity is above this strategy's limit of {qty(auth.max_quantity)}: "
                "send a smaller one, or its owner raises the limit with /strategy settings "
                "max_quantity.",
            )
        if signal.time is not None:
            lag = (now - signal.time).total_seconds()
            if lag > auth.max_lag_seconds:
                return Refusal(
                    "stale-signal",
                    f"The signal's time is {_age(lag)} old, more "
                    f"than this strategy's {auth.max_lag_seconds} s: "
                    "it was not traded. A delayed alert should not "
                    "trade on an old price. Send the alert's own time "
                    "(TradingView: {{timenow}}; {{time}} is when the bar "
                    "opened) and check the sender's clock.",
                )
            if -lag > auth.max_lag_seconds:
                return Refusal(
                    "signal-time-in-future",
                    "The signal's time is "
                    f"{_age(-lag)} in the future; check the "
                    "sender's clock and time zone.",
                )
        return None

    # == processing ================================================================================

    async def _job_signal(self, payload: Mapping[str, Any]) -> None:
        await self.process(str(payload["signal_id"]))

    async def _signal_gave_up(self, payload: Mapping[str, Any], error: str) -> None:
        """A signal whose job kept failing ends as failed, and the people waiting on it hear
        so: its strategy's owner, the members whose run of it had not ended, and the alert
        channel, which would otherwise end at "signal received"."""
        signal_id = str(payload["signal_id"])
        log.error("Signal %s was given up: %s", signal_id, error)
        async with self.core.db.transaction() as s:
            ended = await s.execute(
                update(ReceivedSignal)
                .where(
                    ReceivedSignal.id == signal_id,
                    ReceivedSignal.status.in_([SignalStatus.QUEUED, SignalStatus.PROCESSING]),
                )
                .values(status=SignalStatus.FAILED, finished_at=self.clock())
            )
            if not ended.rowcount:  # type: ignore[attr-defined]
                return
            strategy = await s.scalar(
                select(Strategy)
                .join(ReceivedSignal, ReceivedSignal.strategy_id == Strategy.id)
                .where(ReceivedSignal.id == signal_id)
            )
            assert strategy is not None
            owner = await s.scalar(
                select(Member.discord_user_id).where(Member.id == strategy.owner_member_id)
            )
            pending = (
                await s.execute(
                    select(SignalExecution.id, SignalExecution.phases, Member.discord_user_id)
                    .join(Member, Member.id == SignalExecution.member_id)
                    .where(
                        SignalExecution.signal_id == signal_id,
                        SignalExecution.status == ExecutionStatus.PENDING,
                    )
                )
            ).all()
            if pending:
                # Their runs end with the signal: /signal show said "pending" for ever. Told
                # by the DM below (notified).
                step = self.phase_entry(ExecutionStatus.FAILED, GAVE_UP_REASON)
                table = SignalExecution.__table__
                await s.execute(
                    # Core, one executemany: the ORM's bulk update takes no compare-and-set.
                    update(table)
                    .where(
                        table.c.id == bindparam("execution_id"),
                        table.c.status == ExecutionStatus.PENDING,
                    )
                    .values(
                        status=ExecutionStatus.FAILED,
                        reason_code="signal-given-up",
                        reason=GAVE_UP_REASON,
                        notified_status=ExecutionStatus.FAILED,
                        updated_at=self.clock(),
                        phases=bindparam("steps"),
                    ),
                    [{"execution_id": i, "steps": [*(p or []), step]} for i, p, _ in pending],
                )
            waiting = list(dict.fromkeys(member for _, _, member in pending))
        name = plain(strategy.name)
        what = f"Signal `{short_id(signal_id)}` of **{name}** could not be processed"
        if owner is not None:
            await self.alerts.dm(
                owner,
                f"⚠️ {what}: Tradecord kept failing on it (its log has the error) and stopped "
                "trying. Subscriptions it had not reached placed nothing for it; if it still "
                f"applies, send it again. /signal show {short_id(signal_id)} shows what ran.",
            )
        for member in waiting:
            if member != owner:
                await self.alerts.dm(
                    member,
                    f"⚠️ {what}, and your run of it did not finish: nothing more will be "
                    "placed for it. See /orders for anything it had placed.",
                )
        # The results of the subscriptions it did reach first.
        await self.alerts.post_lines(
            strategy.guild_id,
            strategy.id,
            strategy.name,
            signal_id,
            f"signal {signal_id}'s results",
        )
        channel_id = await self.core.strategies.alert_channel(strategy.guild_id, strategy.id)
        if channel_id is not None:
            digest = ChannelDigest(channel_id, strategy.name)
            digest.add(
                f"⚠️ Signal `{short_id(signal_id)}` could not be processed: "
                "subscriptions it had not reached placed nothing."
            )
            await self.alerts.post_digest(
                strategy.guild_id, strategy.id, digest, f"signal {signal_id}'s failure"
            )

    async def process(self, signal_id: str) -> None:
        """Run a queued signal for every enabled subscription of its strategy."""
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(ReceivedSignal, Strategy)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .where(ReceivedSignal.id == signal_id)
                )
            ).first()
        if row is None:
            return  # the strategy was deleted with its signals
        record, strategy = row
        if record.status not in (SignalStatus.QUEUED, SignalStatus.PROCESSING):
            return
        signal = Signal.from_record(record.payload or {})
        rerun = record.status == SignalStatus.PROCESSING
        now = self.clock()
        async with self.core.db.transaction() as s:
            await s.execute(
                update(ReceivedSignal)
                .where(ReceivedSignal.id == signal_id)
                .values(
                    status=SignalStatus.PROCESSING,
                    started_at=func.coalesce(ReceivedSignal.started_at, now),
                )
            )
        channel_id = await self.core.strategies.alert_channel(strategy.guild_id, strategy.id)
        # Posted while the subscriptions trade: Discord being slow or down (rate limits,
        # retried 5xx) must not hold up their orders. Awaited before their results' post.
        announcing = asyncio.create_task(self.alerts.announce(record, strategy, signal, channel_id))
        contexts = await self._contexts(record, strategy, signal, channel_id)
        stale = _stale(record, signal, strategy.max_lag_seconds, now)
        for ctx in contexts:
            ctx.in_fanout, ctx.stale = True, stale
        semaphore = asyncio.Semaphore(self.fanout_concurrency)

        async def run(ctx: ExecContext) -> None:
            await self.execute(ctx, semaphore)

        results = await asyncio.gather(*(run(c) for c in contexts), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # the process is going down: let the job's lease bring it back
        await announcing
        if rerun:
            # Results a run before this one saved and died before telling (it is over: its
            # lease passed to this run). A first run's results are all told or claimed by now.
            await self.alerts.tell_untold(signal_id=signal_id)
        # Also those of a run before this one that died before posting them.
        await self.alerts.post_lines(
            strategy.guild_id,
            strategy.id,
            strategy.name,
            signal_id,
            f"signal {signal_id}'s results",
        )
        failed = [r for r in results if isinstance(r, Exception)]
        later = [r.when for r in failed if isinstance(r, RunAgainAt)]
        if len(later) < len(failed):
            # Recording a result failed (the database?): the job runs again and resumes.
            raise next(r for r in failed if not isinstance(r, RunAgainAt))
        if later:
            raise RunAgainAt(max(later))  # the signal stays in processing until then
        async with self.core.db.transaction() as s:
            finished = (
                await s.execute(
                    update(ReceivedSignal)
                    .where(
                        ReceivedSignal.id == signal_id,
                        ReceivedSignal.status == SignalStatus.PROCESSING,
                    )
                    .values(status=SignalStatus.DONE, finished_at=self.clock())
                )
            ).rowcount  # type: ignore[attr-defined]
        if finished and channel_id is not None and not signal.test:
            # Skips post nothing of their own: without this, "signal received" would be the
            # channel's last word, and an admin could not tell a skipped signal from a stuck one.
            line = await self._nothing_placed(signal_id)
            if line is not None:
                skipped = ChannelDigest(channel_id, strategy.name)
                skipped.add(line)
                await self.alerts.post_digest(
                    strategy.guild_id, strategy.id, skipped, f"signal {signal_id}'s skips"
                )

    async def purge_log(self, *, batch: int = 500) -> int:
        """Forget signals older than SIGNAL_LOG_DAYS, with their executions (cascade): the
        signal log would otherwise keep every webhook request for good. A signal still being
        processed, or one whose orders may still change at the broker (a resting order), stays.
        In batches, each its own short transaction: SQLite's one writer is never held long."""
        days = self.core.settings.signal_log_days
        if days <= 0:
            return 0
        cutoff = self.clock() - timedelta(days=days)
        live = select(SignalExecution.id).where(
            SignalExecution.signal_id == ReceivedSignal.id, SignalExecution.status.in_(LATER)
        )
        old = (
            select(ReceivedSignal.id)
            .where(
                ReceivedSignal.received_at < cutoff,
                ReceivedSignal.status.not_in([SignalStatus.QUEUED, SignalStatus.PROCESSING]),
                ~live.exists(),
            )
            .limit(batch)
        )
        gone = 0
        while True:
            async with self.core.db.transaction() as s:
                ids = list(await s.scalars(old))
                if ids:
                    await s.execute(delete(ReceivedSignal).where(ReceivedSignal.id.in_(ids)))
            gone += len(ids)
            if len(ids) < batch:
                return gone

    async def _nothing_placed(self, signal_id: str) -> str | None:
        """The channel's line for a signal no subscriber placed an order for: there is none,
        or every one skipped it or waits to approve it. How many, and why by reason code (as
        refusals are shown there: no names, nothing of any account). None when any subscriber
        did something else, whose own line the channel has."""
        async with self.core.db.session() as s:
            rows = (
                await s.execute(
                    select(SignalExecution.status, SignalExecution.reason_code).where(
                        SignalExecution.signal_id == signal_id
                    )
                )
            ).all()
        if not rows:
            return (
                "⏭️ No order placed · no subscription trades this strategy (none yet, or all "
                "paused). Members subscribe with /subscribe."
            )
        quiet = (ExecutionStatus.SKIPPED, ExecutionStatus.WAITING_APPROVAL)
        if any(status not in quiet for status, _ in rows):
            return None
        asked = sum(status == ExecutionStatus.WAITING_APPROVAL for status, _ in rows)
        reasons = Counter(
            code or "skipped" for status, code in rows if status == ExecutionStatus.SKIPPED
        )
        skipped = sum(reasons.values())
        why = ", ".join(code if n == 1 else f"{code} ×{n}" for code, n in sorted(reasons.items()))
        # A public channel: only the strategy's owner and the members it ran for can open it.
        every_step = f"see every step with /signal show `{short_id(signal_id)}`."
        if not asked:
            return (
                f"⏭️ No order placed · {skipped} subscriber{plural(skipped)} skipped this "
                f"signal ({why}). Each subscriber's DM says why; its owner and subscribers "
                f"{every_step}"
            )
        # Approvals come long after the signal: until one is given, this is the last word.
        also = f"; {skipped} skipped it ({why})" if skipped else ""
        return (
            f"🕓 No order placed yet · {asked} subscriber{plural(asked)} "
            f"{'was' if asked == 1 else 'were'} asked to approve this signal in a DM{also}. "
            f"Its owner and subscribers {every_step}"
        )

    async def _contexts(
        self, record: ReceivedSignal, strategy: Strategy, signal: Signal, channel_id: int | None
    ) -> list[ExecContext]:
        """One context per enabled subscription with work left, creating missing executions,
        and per paused one whose run of this signal was under way (see below)."""
        under_way = (
            select(SignalExecution.subscription_id)
            .where(
                SignalExecution.signal_id == record.id,
                SignalExecution.status == ExecutionStatus.PENDING,
            )
            .scalar_subquery()
        )
        async with self.core.db.session() as s:
            subs = (
                await s.execute(
                    select(Subscription, Member.discord_user_id, AlertPreference)
                    .join(Member, Member.id == Subscription.member_id)
                    .outerjoin(
                        AlertPreference,
                        (AlertPreference.member_id == Subscription.member_id)
                        & (AlertPreference.guild_id == strategy.guild_id),
                    )
                    .where(
                        Subscription.strategy_id == strategy.id,
                        Subscription.enabled.is_(True) | Subscription.id.in_(under_way),
                    )
                    .order_by(Subscription.id)
                )
            ).all()
        if subs:
            now = self.clock()
            rows = [
                dict(
                    signal_id=record.id,
                    subscription_id=sub.id,
                    member_id=sub.member_id,
                    connection_id=sub.connection_id,
                    mode=sub.mode,
                    status=ExecutionStatus.PENDING,
                    phases=[],
                    created_at=now,
                    updated_at=now,
                )
                for sub, _, _ in subs
                if sub.enabled
            ]
            # Parameters, not a VALUES list: one cached statement run as an executemany.
            ignoring = insert_ignoring(
                self.core.db, SignalExecution, [], ["signal_id", "subscription_id"]
            )
            if rows:  # a re-run may find only paused subscriptions with runs under way
                async with self.core.db.transaction() as s:
                    await s.execute(ignoring, rows)
        async with self.core.db.session() as s:
            executions = {
                e.subscription_id: e
                for e in await s.scalars(
                    select(SignalExecution).where(SignalExecution.signal_id == record.id)
                )
            }
            connections = {
                c.id: c
                for c in await s.scalars(
                    select(Connection)
                    .where(Connection.id.in_([sub.connection_id for sub, _, _ in subs]))
                    .options(selectinload(Connection.accounts))
                )
            }
        contexts = []
        left = await self._left_behind(record.id, [sub.id for sub, _, _ in subs])
        for sub, discord_id, pref in subs:
            ex = executions.get(sub.id)
            if ex is None or ex.status != ExecutionStatus.PENDING:
                continue  # done already, or in the hands of its member (approval)
            if not sub.enabled and sub.id not in left:
                # Paused before its run stored an order: nothing under way to carry on. One
                # that did (a worker died sending it) is carried on, or its order is left
                # half sent for the reconciler to fail (or to send, if never sent) unrecorded.
                continue
            contexts.append(
                ExecContext(
                    signal_id=record.id,
                    signal=signal,
                    strategy_id=strategy.id,
                    strategy_name=strategy.name,
                    guild_id=strategy.guild_id,
                    max_quantity=strategy.max_quantity,
                    execution_id=ex.id,
                    subscription=sub,
                    connection=connections.get(sub.connection_id),
                    member_discord_id=discord_id,
                    public_name=pref.display_name if pref and pref.alerts_show_name else None,
                    channel_id=channel_id,
                    owner_member_id=strategy.owner_member_id,
                    existing=left.get(sub.id, {}),
                    received_at=record.received_at,
                )
            )
        return contexts

    async def _left_behind(
        self, signal_id: str, subscription_ids: list[int]
    ) -> dict[int, dict[str, OrderIntent]]:
        """Intents earlier runs of this signal placed, per subscription and leg: one query
        for the whole fan-out instead of one per subscription."""
        keys = {
            intent_key(signal_id, sub_id, leg): (sub_id, leg)
            for sub_id in subscription_ids
            for leg in LEGS
        }
        found: dict[int, dict[str, OrderIntent]] = {}
        names = list(keys)
        async with self.core.db.session() as s:
            for i in range(0, len(names), 500):
                for intent in await s.scalars(
                    select(OrderIntent).where(OrderIntent.idempotency_key.in_(names[i : i + 500]))
                ):
                    sub_id, leg = keys[intent.idempotency_key or ""]
                    found.setdefault(sub_id, {})[leg] = intent
        return found

    async def execute(self, ctx: ExecContext, slot: asyncio.Semaphore | None = None) -> None:
        """One subscription, start to finish. Never raises an ``Exception``: what goes wrong is
        this subscription's result, not its neighbours'. ``slot`` bounds a fan-out's trading;
        the result is recorded and told outside it, so slow DMs (Discord's rate limits) do not
        hold up the next subscriptions' orders."""
        async with slot if slot is not None else contextlib.nullcontext():
            try:
                result = await self._execute(ctx)
            except RunAgainAt:
                raise  # unfinished: the job runs again and carries it on
            except _Skip as e:
                result = Result(ExecutionStatus.SKIPPED, e.code, e.reason)
            except BrokerError as e:
                result = Result(ExecutionStatus.FAILED, e.code, e.user_message, ctx.plan)
            except TradecordError as e:
                result = Result(ExecutionStatus.REJECTED, e.code, e.user_message, ctx.plan)
            except Exception:
                log.exception(
                    "Signal %s, subscription %s failed", ctx.signal_id, ctx.subscription.id
                )
                result = Result(
                    ExecutionStatus.FAILED,
                    "internal-error",
                    "Something went wrong on our side; nothing more will be tried for this signal.",
                )
        await self._finish(ctx, result)

    def _target(self, ctx: ExecContext) -> Target:
        conn = ctx.connection
        if conn is None:
            raise _Skip("connection-unavailable", "The subscribed connection was removed.")
        if conn.status == ConnectionStatus.NEEDS_REAUTH:
            raise _Skip(
                "connection-unavailable",
                f"“{conn.name}” needs to be re-linked ({connect_command(conn.broker)}).",
            )
        account = conn.account(ctx.subscription.mode)
        if account is None:
            raise _Skip(
                "connection-unavailable",
                f"“{conn.name}” has no {ctx.subscription.mode} account chosen (see /accounts).",
            )
        return Target(conn, account, ctx.subscription.mode)

    async def _execute(self, ctx: ExecContext) -> Result:
        if ctx.stale is not None and not ctx.approved and not ctx.existing:
            raise _Skip("stale-signal", ctx.stale)  # a run already under way finishes its plan
        target = self._target(ctx)
        adapter = await self.core.connections.adapter_for(target.connection)
        try:
            existing = ctx.existing if ctx.existing is not None else await self._intents(ctx)
            carried = next(
                (
                    i.extra.get("plan")
                    for i in existing.values()
                    if isinstance(i.extra, dict) and i.extra.get("plan")
                ),
                None,
            )
            moved = [
                existing[leg]
                for leg in LEGS
                if leg in existing
                and existing[leg].status != IntentStatus.DISCARDED
                and not _stored_for(existing[leg], target)
            ]
            if moved:
                # The member chose another account since this run stored its orders: carrying
                # on would send them (or the rest of the plan) where they were never meant to go.
                plan = Plan.from_json(carried) if carried is not None else None
                return await self._account_changed(ctx, moved, plan)
            started = any(
                i.status not in (IntentStatus.DRAFT, IntentStatus.DISCARDED)
                for i in existing.values()
            )
            if ctx.approved and not started:
                late = self._approved_too_long_ago(ctx)
                if late is not None:
                    await self.discard_drafts(ctx)
                    plan = Plan.from_json(carried) if carried is not None else None
                    return Result(ExecutionStatus.SKIPPED, "order-too-late", late, plan)
            snapshot = await self._snapshot(ctx, adapter, target)
            if carried is not None:
                plan = Plan.from_json(carried)  # a re-run follows the plan it started
            else:
                plan = await self._plan(ctx, adapter, target, snapshot)
                if plan.legs:  # a plan of none has only its note, which the run ends with
                    self.phase(ctx, "sized", plan.summary(ctx.signal.ticker))
            ctx.plan = plan
            if ctx.signal.test:
                # The status says "test" (the DM's head: "Test signal"): not said again here.
                summary = plan.summary(ctx.signal.ticker)
                summary += "" if summary.endswith((".", ")")) else "."  # a note ends its own
                would = (
                    f"Nothing placed. A real one would: {summary}"
                    if plan.legs or plan.cancels
                    else f"Nothing placed, and a real one would place nothing either: {summary}"
                )
                return Result(ExecutionStatus.TEST, plan.note_code, would, plan)
            if not plan.legs and not plan.cancels:
                return Result(ExecutionStatus.SKIPPED, plan.note_code, plan.note, plan)
            # Approval guards new orders. A cancel-only plan runs at once: cancelling never
            # opens or enlarges a position, and holding a cancel for a click only leaves
            # orders the strategy has withdrawn working (and fillable) meanwhile. It has no
            # draft for the approval card either. Nor does an order an earlier run stored to
            # send (approval switched on since): it may be at the broker already, and the
            # reconciler sends a pending one whatever the card says, so the run carries it on.
            if ctx.subscription.manual_approval and not ctx.approved and plan.legs and not started:
                return await self.approvals.request(ctx, adapter, target, plan, existing)
            return await self._carry_out(ctx, adapter, target, plan, snapshot, existing)
        finally:
            await adapter.close()

    def _approved_too_long_ago(self, ctx: ExecContext) -> str | None:
        """Why an approved order that nothing has sent yet is not placed now: approved longer
        ago than a confirmed /trade order may wait (its worker stopped, or the queue was down).
        None while it may still go."""
        approved = [p["at"] for p in ctx.phases if p.get("phase") == "approved"]
        if not approved:
            return None
        waited = self.clock() - datetime.fromisoformat(approved[-1])
        if waited <= PENDING_SEND_LIMIT:
            return None
        return (
            f"Not placed: you approved this order {int(waited.total_seconds() // 60)} minutes "
            "ago, but Tradecord stopped before placing it; an order that late would trade at "
            "prices you never saw. Place it with /trade if you still want it."
        )

    async def _account_changed(
        self, ctx: ExecContext, moved: list[OrderIntent], plan: Plan | None
    ) -> Result:
        """End a run whose orders were stored for an account no longer chosen: none is sent
        anywhere, and the member hears which may still be at the old account."""
        assert ctx.connection is not None
        trading = self.core.trading
        moved = [
            i if await trading.strand(i, ctx.connection.name) else await trading.get_intent(i.id)
            for i in moved
        ]
        # As a run ends on its orders: the first that did not go through, else the last.
        statuses = [_leg_status(i) for i in moved]
        status = next((st for st, ok in statuses if not ok), statuses[-1][0])
        changed = (
            f"The {ctx.subscription.mode} account of “{ctx.connection.name}” changed since this "
            "signal's orders were placed; nothing more was sent."
        )
        # One that may be at the old account is the reconciler's now, as a /trade order is: it
        # is followed there, and its end updates this execution and reaches the member.
        followed = [
            i
            for i in moved
            if i.status not in IntentStatus.FINAL and i.error_code != ACCOUNT_CHANGED
        ]
        if followed:
            reason = (
                f"{changed} Its order at {mask_account(followed[0].account_id)} is followed "
                "there; you will hear how it ends."
            )
        else:
            reason = (
                next((i.error_message for i in moved if i.error_code == ACCOUNT_CHANGED), None)
                or changed
            )
        self.phase(ctx, "account changed", reason)
        return Result(status, ACCOUNT_CHANGED, reason, plan, orders=moved)

    async def _intents(self, ctx: ExecContext) -> dict[str, OrderIntent]:
        keys = {intent_key(ctx.signal_id, ctx.subscription.id, leg): leg for leg in LEGS}
        async with self.core.db.session() as s:
            rows = await s.scalars(
                select(OrderIntent).where(OrderIntent.idempotency_key.in_(list(keys)))
            )
            return {keys[r.idempotency_key or ""]: r for r in rows}

    async def _snapshot(self, ctx: ExecContext, adapter: BrokerAdapter, target: Target) -> Snapshot:
        sig = ctx.signal
        read_at = self.clock()
        positions: list[Position] = []
        working: list[Order] = []
        wants_positions, wants_orders = sig.action is not Action.CANCEL, _cancels(sig)
        if wants_positions and wants_orders:  # at a real broker: one round trip of waiting
            positions, working = await all_or_first_error(
                adapter.fetch_positions(target.ref), adapter.fetch_open_orders(target.ref)
            )
        elif wants_positions:
            positions = await adapter.fetch_positions(target.ref)
        elif wants_orders:
            working = await adapter.fetch_open_orders(target.ref)
        key = symbols.instrument_key(sig.ticker)
        held = [p for p in positions if symbols.instrument_key(p.symbol) == key and not _is_dust(p)]
        position = sum((p.quantity for p in held), Decimal(0))
        orders = [o for o in working if symbols.instrument_key(o.symbol) == key]
        if orders and ctx.received_at is not None:
            orders = await self._older_than_signal(ctx, target, orders)
        average = held[0].average_price if len(held) == 1 else None
        return Snapshot(positions, position, orders, average, read_at)

    async def _older_than_signal(
        self, ctx: ExecContext, target: Target, orders: list[Order]
    ) -> list[Order]:
        """The orders this signal may cancel: not those Tradecord placed after it arrived (a
        newer signal's, or one placed by hand meanwhile), which it never knew of. A queue
        that was slow, a run retaken after a crash, or two signals run side by side would
        otherwise cancel the newer orders. Told apart by our own clock, not the broker's."""
        ids = [o.client_order_id for o in orders if o.client_order_id]
        if not ids:
            return orders
        async with self.core.db.session() as s:
            newer = set(
                await s.scalars(
                    select(OrderIntent.client_order_id).where(
                        OrderIntent.connection_id == target.connection.id,
                        OrderIntent.client_order_id.in_(ids),
                        OrderIntent.created_at > ctx.received_at,
                    )
                )
            )
        return [o for o in orders if o.client_order_id not in newer]

    # -- planning (TradersPost's order behaviour) ----------------------------------------------

    async def _plan(
        self, ctx: ExecContext, adapter: BrokerAdapter, target: Target, snap: Snapshot
    ) -> Plan:
        ctx.quote = None  # each plan prices from a quote of its own moment
        plan = await self._plan_orders(ctx, adapter, target, snap)
        # TradersPost cancels open orders "before submitting new orders": a signal that
        # submits nothing (already in position, entry refused) leaves them, or a repeated
        # entry signal would strip a position of its protective stop. Action cancel is the
        # one signal that cancels without ordering.
        if plan.legs or ctx.signal.action is Action.CANCEL:
            plan.cancels = [o.id for o in snap.ticker_orders]
        return plan

    async def _plan_orders(
        self, ctx: ExecContext, adapter: BrokerAdapter, target: Target, snap: Snapshot
    ) -> Plan:
        """The legs (or the note saying why there are none); ``_plan`` adds the cancels."""
        sig = ctx.signal
        plan = Plan(planned_from=snap.position)
        held = snap.position
        if sig.action is Action.CANCEL:
            if not snap.ticker_orders:
                plan.note_code, plan.note = "no-open-orders", f"No open {sig.ticker} orders."
            return plan
        if sig.action is Action.EXIT:
            if held == 0:
                plan.note_code = "no-position-to-exit"
                plan.note = f"No open {sig.ticker} position to exit."
                return plan
            # Flat, or the other side's sentiment ("bearish: the position after should be
            # bearish or flat"): no position left, whatever quantity the signal sends.
            partial = sig.sentiment is not Sentiment.FLAT and _direction(sig.sentiment) * held >= 0
            plan.legs.append(await self._exit_leg(ctx, adapter, target, snap, partial=partial))
            return plan
        if sig.action is Action.ADD:
            direction = _direction(sig.sentiment) or (1 if held > 0 else -1 if held < 0 else 0)
            if direction == 0:
                plan.note_code = "no-position-to-add-to"
                plan.note = (
                    f"No open {sig.ticker} position to add to. An add opens one only when it "
                    "says which way: sentiment bullish (long) or bearish (short)."
                )
                return plan
            if held * direction < 0:
                plan.note_code = "position-is-opposite"
                plan.note = (
                    f"The open {sig.ticker} position is "
                    f"{'short' if held < 0 else 'long'}; add would not add to it."
                )
                return plan
            await self._add_entry(ctx, adapter, target, snap, plan, direction, exiting=False)
            return plan
        # buy / sell
        direction = 1 if sig.action is Action.BUY else -1
        keeps_opposite = _direction(sig.sentiment) == -direction  # e.g. buy + bearish
        if held * direction < 0:  # a position on the other side: exit it first
            # TradersPost with the signal's quantity: below the position it is a partial exit
            # (no entry follows); flat closes it all, whatever the quantity.
            # Risk dollars size the entry: the position is exited whole first.
            signal_sized = _percent_of_position(ctx) or (
                ctx.subscription.sizing == Sizing.SIGNAL
                and sig.quantity is not None
                and sig.effective_quantity_type is not QuantityType.RISK_DOLLAR_AMOUNT
            )
            # A sentiment for this side ("bullish: the position after should be bullish or
            # flat") leaves nothing of the other side: a full exit, then the entry.
            partial = keeps_opposite or (signal_sized and sig.sentiment is None)
            exit_leg = await self._exit_leg(
                ctx, adapter, target, snap, partial=partial, sized=keeps_opposite
            )
            plan.legs.append(exit_leg)
            if keeps_opposite or sig.sentiment is Sentiment.FLAT:
                plan.note_code = "no-entry-sentiment"
                plan.note = f"Exit only: sentiment {sig.sentiment} does not enter a new position."
            elif exit_leg.quantity < abs(held):
                plan.note_code = "exit-partial-position"
                plan.note = "Partial exit: the opposite side is entered only after a full exit."
            else:
                await self._add_entry(ctx, adapter, target, snap, plan, direction, exiting=True)
            return plan
        if held * direction > 0 and (keeps_opposite or sig.sentiment is Sentiment.FLAT):
            # Said as "Already short; send action add" before: the signal meant to exit, not add.
            exits, held_side = ("long", "short") if direction < 0 else ("short", "long")
            plan.note_code = "no-position-to-exit"
            plan.note = (
                f"No open {sig.ticker} {exits} to exit: {sig.action.value} with sentiment "
                f"{sig.sentiment} exits a {exits}, and the position "
                f"is {held_side}. Send action exit to close it."
            )
            return plan
        if held * direction > 0:
            plan.note_code = "already-in-position"
            held_side = "long" if held > 0 else "short"
            if await self._sends_its_signals(ctx):
                plan.note = f"Already {held_side} {sig.ticker}; send action add to add to it."
            else:  # a subscriber has no signal to send
                plan.note = (
                    f"Already {held_side} {sig.ticker}: the strategy's {sig.action.value} "
                    "signal adds nothing to a position already open."
                )
            return plan
        if keeps_opposite or sig.sentiment is Sentiment.FLAT:
            plan.note_code = "no-position-to-exit"
            plan.note = f"No open {sig.ticker} position to exit (sentiment {sig.sentiment})."
            return plan
        await self._add_entry(ctx, adapter, target, snap, plan, direction, exiting=False)
        return plan

    async def _sends_its_signals(self, ctx: ExecContext) -> bool:
        """Whether the subscription's member owns the strategy, whose signals only its owner
        sends."""
        owner = ctx.owner_member_id
        if owner is None:
            async with self.core.db.session() as s:
                owner = await s.scalar(
                    select(Strategy.owner_member_id).where(Strategy.id == ctx.strategy_id)
                )
        return owner == ctx.subscription.member_id

    async def _exit_leg(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        snap: Snapshot,
        *,
        partial: bool,
        sized: bool = False,
    ) -> Leg:
        """Close the position, or part of it when the signal (or sentiment) says how much."""
        held = snap.position
        amount = abs(held)
        side = Side.SELL if held > 0 else Side.BUY
        wanted: Decimal | None = None
        by_risk = ctx.signal.effective_quantity_type is QuantityType.RISK_DOLLAR_AMOUNT
        if not by_risk and (
            sized
            or (partial and ctx.subscription.sizing == Sizing.SIGNAL and ctx.signal.quantity)
            or (partial and _percent_of_position(ctx))
        ):
            wanted = await self._size(ctx, adapter, target, snap, side, exiting=True)
        quantity = amount if wanted is None else min(wanted, amount)
        if quantity <= 0:
            raise _Skip("quantity-zero", "The exit quantity comes to zero.")
        leg = self._leg(ctx, "exit", side, quantity)
        leg.position_average = snap.average
        return leg

    async def _add_entry(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        snap: Snapshot,
        plan: Plan,
        direction: int,
        *,
        exiting: bool,
    ) -> None:
        """Append the entry leg, or a note saying which rule refused it."""
        sig, sub = ctx.signal, ctx.subscription
        side = Side.BUY if direction > 0 else Side.SELL
        if (direction > 0 and sub.sides == Sides.SHORT) or (
            direction < 0 and sub.sides == Sides.LONG
        ):
            plan.note_code = "side-not-allowed"
            plan.note = (
                f"{'Long' if direction > 0 else 'Short'} entries are off for this subscription."
            )
            return
        outside = self._outside_windows(ctx)
        if outside is not None:
            plan.note_code, plan.note = "outside-trading-window", outside
            return
        if _sizes_position(ctx):
            # A percent of the position is a part of it to close: as an entry size it would be
            # a percent of nothing (flat), or of the position this signal has just exited.
            plan.note_code = "percent-of-position-entry"
            plan.note = (
                "quantityType percent_of_position sizes a part of the open position to exit; "
                "it does not size a new entry. Send fixed_quantity, dollar_amount or "
                "percent_of_equity to enter."
            )
            return
        opens = exiting or snap.position == 0
        if opens and sub.max_positions is not None:
            open_now = _open_positions(snap.positions, exclude=sig.ticker)
            if open_now >= sub.max_positions:
                plan.note_code = "max-strategy-positions"
                plan.note = (
                    f"Max strategy positions reached: {open_now} open "
                    f"position{plural(open_now)} on the account, limit {sub.max_positions}. "
                    "No new position entered."
                )
                return
        try:
            quantity = await self._size(ctx, adapter, target, snap, side)
        except _Skip as e:  # an exit planned before still happens
            plan.note_code, plan.note = e.code, e.reason
            return
        exit_leg = plan.leg("exit")
        if exiting and exit_leg is not None and sub.subtract_exit_quantity:
            # A TradingView strategy's reversal alert sends one quantity for the exit and the
            # entry together (long 5, sell 10 means short 5).
            sized, quantity = quantity, quantity - exit_leg.quantity
            if quantity <= 0:
                plan.note_code = "nothing-left-to-enter"
                plan.note = (
                    f"Exit only: the signal's {qty(sized)} less the {qty(exit_leg.quantity)} "
                    "exited leaves nothing to enter on the other side (this subscription "
                    "subtracts the exit quantity)."
                )
                return
        if ctx.max_quantity is not None and quantity > ctx.max_quantity:
            plan.note_code = "quantity-over-limit"
            plan.note = (
                f"The entry of {qty(quantity)} is above the strategy's limit of "
                f"{qty(ctx.max_quantity)}; no entry was placed. Lower this subscription's "
                "sizing (/subscribe) or ask the strategy's owner to raise the limit "
                "(/strategy settings)."
            )
            return
        leg = self._leg(ctx, "entry", side, quantity)
        leg.opens_position = opens
        entry_limit = parse_entry_order(sub.entry_order)
        if entry_limit is not None and ctx.signal.order_type is None:
            # The subscription's entry order type, for a signal that names none.
            quote = await self._price(ctx, adapter, side)
            leg.order_type = OrderType.LIMIT
            leg.limit_price = entry_limit.price(ctx.signal.ticker, quote, side is Side.BUY)
            if leg.limit_price <= 0:
                plan.note_code = "no-price"
                plan.note = f"No price to place a limit entry at: the quote is {price_text(quote)}."
                return
        if leg.order_type is OrderType.MARKET:
            leg.sized_at = ctx.sized_at
        if ctx.take_profit or ctx.stop_loss:
            if not adapter.capabilities.brackets:
                plan.note_code = "brackets-unsupported"
                plan.note = (
                    f"takeProfit/stopLoss brackets cannot be placed at "
                    f"{adapter.display_name}; the entry was not placed."
                )
                return
            sl = ctx.stop_loss
            trailing = sl is not None and sl.type is StopLossType.TRAILING_STOP
            if trailing and not adapter.capabilities.bracket_trailing_stop:
                plan.note_code = "trailing-stop-loss-unsupported"
                plan.note = (
                    f"{adapter.display_name} takes no trailing stop-loss in a bracket; the entry "
                    "was not placed. Send stopLoss type stop (a fixed stop-loss) for this "
                    "broker."
                )
                return
            try:
                leg.bracket = ctx.sized_bracket or await self._bracket(ctx, adapter, side)
            except _Skip as e:
                plan.note_code, plan.note = e.code, e.reason
                return
        plan.legs.append(leg)

    def _leg(self, ctx: ExecContext, name: str, side: Side, quantity: Decimal) -> Leg:
        sig = ctx.signal
        return Leg(
            name=name,
            side=side,
            quantity=quantity,
            order_type=sig.order_type or OrderType.MARKET,
            limit_price=sig.limit_price,
            stop_price=sig.stop_price,
            time_in_force=sig.time_in_force,
            trail_amount=sig.trail_amount,
            trail_percent=sig.trail_percent,
            extended_hours=sig.extended_hours,
        )

    async def _size(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        snap: Snapshot,
        side: Side,
        *,
        exiting: bool = False,
    ) -> Decimal:
        """Units for an entry (or a sized exit) under the subscription's sizing."""
        sig, sub = ctx.signal, ctx.subscription
        value = sub.sizing_value
        ctx.sized_at = ctx.sized_bracket = None  # set below if the quote sizes it
        kind: QuantityType
        if exiting and _percent_of_position(ctx):
            # A part of the position, whatever sizes this subscription's entries.
            kind, amount = QuantityType.PERCENT_OF_POSITION, sig.quantity or Decimal(100)
        elif sub.sizing == Sizing.SIGNAL:
            kind = sig.effective_quantity_type or QuantityType.FIXED_QUANTITY
            amount = sig.quantity or Decimal(1)  # no quantity: 1, as TradersPost does
            # The multiplier scales what the strategy trades, not a share of what is held: the
            # position was sized by it already, and "exit 100%" at 0.5× must not leave half.
            if kind is not QuantityType.PERCENT_OF_POSITION:
                amount *= value
        else:
            kind = QuantityType(sub.sizing)
            amount = value
        if kind is QuantityType.FIXED_QUANTITY:
            units = amount
        elif kind is QuantityType.PERCENT_OF_POSITION:
            units = abs(snap.position) * amount / 100
        elif kind is QuantityType.RISK_DOLLAR_AMOUNT:
            units = amount / await self._risk_per_unit(ctx, adapter, side)
        else:
            if kind is QuantityType.PERCENT_OF_EQUITY:
                balance = await adapter.fetch_balance(target.ref)
                amount = balance.equity * amount / 100
            price = ctx.sized_at = await self._price(ctx, adapter, side)
            units = amount / (price * symbols.multiplier(sig.ticker))
        asset = symbols.asset_class_of(sig.ticker)
        bracket = not exiting and bool(ctx.take_profit or ctx.stop_loss)
        fraction = adapter.fraction_allowed(
            asset, side, sig.time_in_force, bracket=bracket, exiting=exiting, symbol=sig.ticker
        )
        places = adapter.capabilities.max_quantity_decimals(asset) if fraction else 0
        units = units.quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
        if units <= 0:
            words = kind.value.replace("_", " ")
            # Amounts as members read them elsewhere: "$1,500.00", "10%", not a bare "1,500".
            signal_amount = sizing_amount(kind, sig.quantity or Decimal(1))
            if sub.sizing != Sizing.SIGNAL:
                sizing = f"The subscription's {words} sizing ({sizing_amount(kind, value)})"
            elif kind is QuantityType.PERCENT_OF_POSITION:  # not multiplied (see above)
                sizing = f"The signal's {signal_amount} of the position"
            else:  # the subscription's multiplier is the member's part: said too
                sizing = f"{qty(value)}× the signal's quantity ({signal_amount}, {words})"
            raise _Skip(
                "quantity-zero",
                f"{sizing} comes to less than one tradable unit of {sig.ticker}.",
            )
        return units

    async def _price(self, ctx: ExecContext, adapter: BrokerAdapter, side: Side) -> Decimal:
        """Entry price estimate: the order's own price, else the broker's quote. The contract
        uses the sender's price (signalPrice, then price) only where the broker has no quote:
        an alert's {{close}} may be far from the market by the time the order goes."""
        sig = ctx.signal
        for p in (sig.limit_price, sig.stop_price):
            if p is not None:
                return p
        price = Decimal(0)
        if adapter.capabilities.quotes:
            try:
                quote = await self._quote(ctx, adapter)
            except BrokerError:
                if sig.reference_price is None:
                    raise
            else:
                price = quote.ask if side is Side.BUY else quote.bid
                if price <= 0:
                    price = quote.last
        if price <= 0 and sig.reference_price is not None:
            price = sig.reference_price
        if price <= 0:
            raise _Skip(
                "no-price",
                f"No price for {sig.ticker} to size the order with; send "
                "price or signalPrice in the signal.",
            )
        return price

    async def _quote(self, ctx: ExecContext, adapter: BrokerAdapter) -> Quote:
        """The signal's ticker's quote, asked once per plan (a failure is not kept)."""
        if ctx.quote is None:
            ctx.quote = await adapter.fetch_quote(ctx.signal.ticker)
        return ctx.quote

    async def _risk_per_unit(self, ctx: ExecContext, adapter: BrokerAdapter, side: Side) -> Decimal:
        """What one unit loses if the stop loss fills: from the entry price the bracket counts
        from to the stop loss it places (TradersPost: quantity = risk / (entry - stop))."""
        sig = ctx.signal
        entry = await self._bracket_entry(ctx, adapter, side)
        bracket = await self._bracket(ctx, adapter, side, entry)
        assert bracket.stop_loss is not None  # the format requires a stop loss with this type
        distance = (entry - bracket.stop_loss) * (1 if side is Side.BUY else -1)
        if distance <= 0:
            raise _Skip(
                "invalid-bracket",
                f"The stop loss {price_text(bracket.stop_loss)} is not "
                f"{'below' if side is Side.BUY else 'above'} the entry price {price_text(entry)}, "
                "so risk_dollar_amount cannot size the entry. Send a stop loss on the losing "
                "side of the entry.",
            )
        ctx.sized_at, ctx.sized_bracket = entry, bracket
        return distance * symbols.multiplier(sig.ticker)

    async def _bracket_entry(self, ctx: ExecContext, adapter: BrokerAdapter, side: Side) -> Decimal:
        """The entry price relative take-profit and stop-loss prices count from. The contract:
        the order's own price; for a market order, the quote's bid/ask midpoint; the sender's
        price only where the broker has no quote."""
        sig = ctx.signal
        for p in (sig.limit_price, sig.stop_price):
            if p is not None:
                return p
        try:
            quote = await self._quote(ctx, adapter)
        except BrokerError:
            if sig.reference_price is None:
                raise
            return sig.reference_price
        if quote.bid > 0 and quote.ask > 0:
            return quote.mid
        # A one-sided or empty quote: the sender's price, else what the quote does have.
        one_side = quote.ask if side is Side.BUY else quote.bid
        for price in (sig.reference_price, one_side, quote.last):
            if price is not None and price > 0:
                return price
        raise _Skip(
            "no-price",
            f"No price for {sig.ticker} to place the bracket from; send "
            "price or signalPrice in the signal.",
        )

    async def _bracket(
        self, ctx: ExecContext, adapter: BrokerAdapter, side: Side, entry: Decimal | None = None
    ) -> Bracket:
        """The signal's take-profit and stop-loss prices, relative ones counted from ``entry``
        (by default, ``_bracket_entry``'s)."""
        sig = ctx.signal
        if entry is None:
            entry = await self._bracket_entry(ctx, adapter, side)
        up = 1 if side is Side.BUY else -1

        def offset(
            name: str, price_field: str, percent: Decimal | None, amount: Decimal | None, sign: int
        ) -> Decimal:
            delta = entry * percent / 100 if percent is not None else amount or Decimal(0)
            price = symbols.price_away(sig.ticker, entry, delta, sign)
            given = f"{qty(percent)}%" if percent is not None else price_text(amount or Decimal(0))
            if price <= 0:
                raise _Skip(
                    "invalid-bracket",
                    f"The {name} of {given} from the entry price {price_text(entry)} comes to "
                    f"a price at or below zero; the bracketed entry was not placed. Send a smaller "
                    f"percent or amount, or the price itself as {price_field}.",
                )
            if (price - entry) * sign <= 0:
                # Too small a step for the price's precision: sent, it would be the entry price
                # itself (or beyond it), an exit that fills at once or that the broker refuses.
                raise _Skip(
                    "invalid-bracket",
                    f"The {name} of {given} from the entry price {price_text(entry)} rounds to "
                    f"{price_text(price)} at {sig.ticker}'s price steps of "
                    f"{format(symbols.price_tick(sig.ticker, entry + sign * delta), 'f')}, "
                    f"not {'above' if sign > 0 else 'below'} it; the bracketed entry was not "
                    "placed. "
                    f"Send a larger percent or amount, or the price itself as {price_field}.",
                )
            return price

        bracket = Bracket()
        tp, sl = ctx.take_profit, ctx.stop_loss
        if tp:
            bracket.take_profit = tp.limit_price or offset(
                "take-profit", "takeProfit.limitPrice", tp.percent, tp.amount, up
            )
        if sl and sl.type is StopLossType.TRAILING_STOP:
            bracket.stop_loss_trail_amount = sl.trail_amount
            bracket.stop_loss_trail_percent = sl.trail_percent
            # Where it starts, from the entry price: what risk sizing and the cards count from.
            bracket.stop_loss = offset(
                "trailing stop-loss",
                "stopLoss.stopPrice (type stop)",
                sl.trail_percent,
                sl.trail_amount,
                -up,
            )
        elif sl:
            bracket.stop_loss = sl.stop_price or offset(
                "stop-loss", "stopLoss.stopPrice", sl.percent, sl.amount, -up
            )
            if sl.type is StopLossType.STOP_LIMIT:
                bracket.stop_loss_limit = sl.limit_price
        return bracket

    # -- carrying out -----------------------------------------------------------------------------

    async def _carry_out(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        plan: Plan,
        snap: Snapshot,
        existing: dict[str, OrderIntent],
    ) -> Result:
        sig = ctx.signal
        cancelled = 0
        pending_cancels = True

        async def cancel_open_orders(
            *, ordering: bool, leg: Leg | None = None, order: OrderRequest | None = None
        ) -> Result | None:
            """Once, right before the first order this run sends (or alone for action
            cancel): a leg refused or skipped at placing time cancels nothing. A refusal when
            the order must not go out: an open order filled before its cancel landed (the
            position is no longer the one the orders were planned from), or a cancel the
            broker has not carried out (that order may still fill, beside the new one)."""
            nonlocal cancelled, pending_cancels
            if not pending_cancels:
                return None
            pending_cancels = False
            filled_before = {o.id: o.filled_quantity for o in snap.ticker_orders}
            # A re-run finds the ones it cancelled gone already.
            wanted = [order_id for order_id in plan.cancels if order_id in filled_before]
            if not wanted:
                return None
            if ordering and leg is not None and order is not None:
                # The order will be refused (kill switch, pause, a limit): it sends nothing, so
                # it cancels nothing either; keep what protects.
                refusal = await self.core.trading.refusal(
                    target,
                    order,
                    adapter,
                    source="signal",
                    extra={"strategy_id": ctx.strategy_id, "leg": leg.name},
                )
                if refusal is not None:
                    return None
            # The run's result DM names what it cancelled (``ctx.cancelled``): one DM, not one
            # per order and then the result.
            done = await self.core.trading.cancel_open(target, adapter, wanted, dm=False)
            cancelled = done.count
            if cancelled:
                self.phase(
                    ctx, "cancelled", f"{cancelled} open {sig.ticker} order{plural(cancelled)}"
                )
            # Said cancelled once the broker has carried it out: a pending one is said below.
            confirmed = cancelled - done.unconfirmed
            if confirmed:
                brackets = done.brackets
                gone = [
                    order_text(o, brackets.get(o.id))
                    for o in done.ended
                    if o.status is OrderStatus.CANCELLED
                ]
                named = f": {'; '.join(gone)}" if gone else ""
                note = f"Cancelled {confirmed} open {sig.ticker} order{plural(confirmed)}{named}."
                note += _unprotected(plan, snap, done.ended)
                # The strategy's own signal orders have their own "cancelled" line in its
                # channel (``_on_order_update``): counted there, not again here.
                ctx.cancelled, ctx.cancelled_count = (
                    note,
                    sum(
                        1
                        for o in done.ended
                        if o.status is OrderStatus.CANCELLED
                        and not _signal_order_of(done.intents.get(o.id), ctx.strategy_id)
                    ),
                )
                result.reason = result.reason or note
            wait = f"{self.core.trading.cancel_wait:g} s"
            if done.unconfirmed:
                self.phase(ctx, "cancel pending", f"{done.unconfirmed} not confirmed in {wait}")
                if not ordering:
                    result.reason = (
                        f"Cancel of {done.unconfirmed} open {sig.ticker} "
                        f"order{plural(done.unconfirmed)} requested; the broker had not "
                        f"carried it out after {wait}. Check /orders."
                    )
            if any(o.filled_quantity > filled_before[o.id] for o in done.ended):
                return Result(
                    ExecutionStatus.REJECTED,
                    "position-changed",
                    f"An open {sig.ticker} order filled before its cancel went through, so "
                    f"the {sig.ticker} position changed; nothing was placed. Check /positions.",
                    plan,
                )
            if ordering and done.unconfirmed:
                return Result(
                    ExecutionStatus.REJECTED,
                    "cancel-pending",
                    f"The broker had not carried out the cancel of {done.unconfirmed} open "
                    f"{sig.ticker} order{plural(done.unconfirmed)} after {wait}; nothing was "
                    "placed, because that order could still fill beside the new one. Check "
                    "/orders, and send the signal again once it is cancelled.",
                    plan,
                )
            return None

        result = Result(ExecutionStatus.DONE, plan.note_code, plan.note, plan)
        sent = any(
            i.status not in (IntentStatus.DRAFT, IntentStatus.DISCARDED) for i in existing.values()
        )
        if ctx.approved and not sent and plan.planned_from not in (None, snap.position):
            # The card showed orders planned from that position: another card approved first,
            # or a trade by hand, would make them double it, close it, or turn it around.
            await self.discard_drafts(ctx)
            return Result(
                ExecutionStatus.REJECTED,
                "position-changed",
                f"The {sig.ticker} position changed since the signal (it was "
                f"{qty(plan.planned_from or Decimal(0))}, it is {qty(snap.position)}); nothing was "
                "placed. The strategy's next signal trades from the position as it is.",
                plan,
            )
        entry = plan.leg("entry")
        if entry is not None and plan.leg("exit") is not None and "entry" not in existing:
            # The entry waits for the exit to fill, but the broker's own checks of it need not:
            # one it would refuse stops the plan here, before the exit is sent.
            await self._request(ctx, adapter, target, entry)
        if not plan.legs:
            # Nothing is placed after a cancel-only run, so an order that filled before its
            # cancel is not a refusal, but the member must hear of it (the position changed).
            filled = await cancel_open_orders(ordering=False)
            if filled is not None:
                result.reason_code = filled.reason_code
                result.reason = (
                    f"{result.reason} {filled.reason}" if result.reason else filled.reason
                )
        for leg in plan.legs:
            intent = existing.get(leg.name)
            unsent = intent is None or intent.status == IntentStatus.DRAFT
            if leg.name == "exit" and unsent:
                fresh = self._exit_against(leg, snap)
                if intent is not None and (fresh is None or fresh.quantity < intent.quantity):
                    await self.discard_drafts(ctx)
                    return Result(
                        ExecutionStatus.REJECTED,
                        "position-changed",
                        f"The {sig.ticker} position changed since the signal; nothing was placed.",
                        plan,
                    )
                if fresh is None:
                    self.phase(ctx, "exit skipped", "the position is already closed")
                    continue
                leg = fresh
            cap = None
            if leg.name == "entry" and leg.opens_position and unsent:
                limit = ctx.subscription.max_positions
                open_now = _open_positions(snap.positions, exclude=sig.ticker)
                if limit is not None and open_now >= limit:
                    await self.discard_drafts(ctx)
                    result.reason_code, result.reason = (
                        "max-strategy-positions",
                        (
                            f"Max strategy positions reached ({open_now} of {limit}); no new "
                            "position entered."
                        ),
                    )
                    break
                if limit is not None:
                    cap = _positions_cap(limit, snap, sig.ticker)
            request = None
            if unsent and intent is not None and ctx.approved:
                # Priced when the signal came; the market may have moved by the click.
                moved = await self._moved_past(adapter, request_of(intent))
                if moved is not None:
                    await self.discard_drafts(ctx)
                    # An exit this run filled before the entry is still said in the result.
                    return Result(
                        ExecutionStatus.REJECTED, "price-moved", moved, plan, orders=result.orders
                    )
            if unsent:
                # The broker's own checks of the order come before any cancel: a refused order
                # leaves the open ones (a protective stop) alone.
                request = await self._request(ctx, adapter, target, leg) if intent is None else None
                refused = await cancel_open_orders(
                    ordering=True,
                    leg=leg,
                    order=request if intent is None else request_of(intent),
                )
                if refused is not None:
                    await self.discard_drafts(ctx)
                    return refused
            intent = await self.place_leg(
                ctx, adapter, target, leg, plan, intent, request=request, cap=cap
            )
            result.orders.append(intent)
            status, ok = _leg_status(intent)
            result.status = status
            if not ok:
                result.reason_code = intent.error_code or f"order-{status}"
                result.reason = intent.error_message or describe_intent(intent)
                return result
            if leg.name == "exit" and plan.leg("entry") is not None:
                intent = await self._await_final(ctx, adapter, target, intent)
                status, ok = _leg_status(intent)
                result.status = status
                if intent.status != IntentStatus.FILLED:
                    result.reason_code = "exit-not-filled"
                    if intent.status in IntentStatus.FINAL:
                        state = intent.status.replace("_", " ")
                        result.reason = f"The exit order is {state}; the entry was not placed."
                    else:
                        result.reason = (
                            f"The exit order had not filled after {self.exit_timeout:g} s, so "
                            "the entry was not placed, nor will it be once the exit fills. The "
                            "exit order is still working: see /orders (/cancel order cancels it)."
                        )
                    return result
                self.phase(ctx, "exit filled", describe_intent(intent))
                if await self.core.trading.account_changed(intent):
                    # Chosen while the exit worked: the entry goes neither to the new account
                    # nor to the old one, as when a retaken run finds the account changed.
                    return await self._account_changed(ctx, result.orders, plan)
        if not result.orders and not cancelled:
            if not plan.legs and not result.reason:
                # Action cancel whose orders all ended on their own before the cancel reached them.
                result.reason_code = result.reason_code or "no-open-orders"
                result.reason = f"No open {sig.ticker} orders were left to cancel."
            return Result(
                ExecutionStatus.SKIPPED,
                result.reason_code or "no-position-to-exit",
                result.reason or f"No open {sig.ticker} position to exit.",
                plan,
            )
        return result

    def _outside_windows(self, ctx: ExecContext) -> str | None:
        """Why an entry is not placed now: the signal came outside the subscription's trading
        windows (judged when it came, not when its job ran). Exits are never held back: a
        position left open past a window would carry the very risk windows are set to avoid."""
        text = ctx.subscription.trading_windows
        if not text or ctx.signal.ignore_trading_windows:
            return None
        schedule = parse_windows(text)
        at = ctx.received_at or self.clock()
        if in_windows(schedule, at):
            return None
        opens, local = next_start(schedule, at), at.astimezone(schedule.zone)
        return (
            f"The signal came {local:%a} at {local:%H:%M} {schedule.zone_name} time, outside "
            f"this subscription's trading windows ({text}); no entry was placed (exits still "
            f"are). The next window opens {opens:%a %d %b} at {opens:%H:%M}. A signal with "
            "ignoreTradingWindows: true enters anyway."
        )

    async def discard_drafts(self, ctx: ExecContext) -> None:
        """The execution's unsent drafts are dropped (a refused or expired approval)."""
        keys = [intent_key(ctx.signal_id, ctx.subscription.id, leg) for leg in LEGS]
        async with self.core.db.transaction() as s:
            await s.execute(
                update(OrderIntent)
                .where(
                    OrderIntent.idempotency_key.in_(keys), OrderIntent.status == IntentStatus.DRAFT
                )
                .values(status=IntentStatus.DISCARDED, updated_at=self.clock())
            )

    def _exit_against(self, leg: Leg, snap: Snapshot) -> Leg | None:
        """The exit as the position is now (a plan may be older than the position)."""
        held = snap.position
        closes = (leg.side is Side.SELL and held > 0) or (leg.side is Side.BUY and held < 0)
        if not closes:
            return None
        leg = Leg.from_json(leg.to_json())
        leg.quantity = min(leg.quantity, abs(held))
        return leg

    async def place_leg(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        leg: Leg,
        plan: Plan,
        intent: OrderIntent | None,
        *,
        submit: bool = True,
        request: OrderRequest | None = None,
        cap: dict[str, Any] | None = None,
    ) -> OrderIntent:
        """Store-then-send one leg once; an intent that already exists is resumed instead.
        ``request``: the leg's order, if the caller built (and checked) it already. ``cap``:
        an entry's max strategy positions (``_positions_cap``), checked again as it is sent."""
        if intent is None:
            request = request or await self._request(ctx, adapter, target, leg)
            outcome = await self.core.trading.place(
                target,
                request,
                source="signal",
                idempotency_key=intent_key(ctx.signal_id, ctx.subscription.id, leg.name),
                extra={
                    "signal_id": ctx.signal_id,
                    "subscription_id": ctx.subscription.id,
                    "execution_id": ctx.execution_id,
                    "strategy_id": ctx.strategy_id,
                    "leg": leg.name,
                    "plan": plan.to_json(),
                    "bracket": leg.to_json()["bracket"],
                    "simulated": isinstance(adapter, PaperBroker)
                    and adapter.simulates(request.symbol),
                    # Its fill says the P&L against this (trading.describe).
                    **(
                        {"position_average": str(leg.position_average)}
                        if leg.position_average is not None
                        else {}
                    ),
                    **({"max_positions": cap} if cap is not None else {}),
                },
                submit=submit,
                adapter=adapter,
            )
            if not outcome.extra.get("duplicate"):
                return outcome.intent
            intent = outcome.intent
        return await self._resume(ctx, adapter, target, intent, cap) if submit else intent

    async def _request(
        self, ctx: ExecContext, adapter: BrokerAdapter, target: Target, leg: Leg
    ) -> OrderRequest:
        limit, stop = leg.limit_price, leg.stop_price
        if leg.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and limit is None:
            limit = await self._price(ctx, adapter, leg.side)  # the contract: market price
        if leg.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and stop is None:
            stop = await self._price(ctx, adapter, leg.side)
        tif = leg.time_in_force
        asset = symbols.asset_class_of(ctx.signal.ticker)
        taken = adapter.capabilities.time_in_force.get(asset)
        if tif is not None and tif not in AUCTIONS and taken is not None and tif not in taken:
            # The contract: a time in force the broker does not take falls back to the default.
            # (An auction's does not: trading now is not what an opening-auction order meant.)
            self.phase(
                ctx,
                "time in force",
                f"{tif} is not taken for {ASSET_WORDS[asset]} at {adapter.display_name}: "
                "sent with the default",
            )
            tif = None
        request = self.core.trading.build_request(
            OrderInput(
                symbol=ctx.signal.ticker,
                side=leg.side.value,
                quantity=str(leg.quantity),
                order_type=leg.order_type.value,
                limit_price=decimal_text(limit),
                stop_price=decimal_text(stop),
                # A bracket's exits take its time in force: gtc unless the signal says, so the
                # protection does not end with the trading day.
                time_in_force=tif.value if tif else ("gtc" if leg.bracket else None),
                trail_amount=decimal_text(leg.trail_amount),
                trail_percent=decimal_text(leg.trail_percent),
            ),
            adapter,
        )
        request.bracket = leg.bracket
        request.extended_hours = leg.extended_hours
        adapter.check_order(target.ref, request)  # refuse here, before any intent is stored
        if leg.stop_price is not None:  # a stop priced from the market is the contract's own
            await self._check_stop_side(ctx, adapter, request)
        return request

    async def _check_stop_side(
        self, ctx: ExecContext, adapter: BrokerAdapter, request: OrderRequest
    ) -> None:
        """Refuse the signal's stop the market has already passed, as /trade does: it would
        trigger at once and fill at the market, not near the stopPrice the strategy sent."""
        if not adapter.capabilities.quotes:
            return
        try:
            quote = await adapter.fetch_quote(request.symbol)
        except BrokerError:
            return  # no quote to judge by: the broker's own checks still apply
        now = stop_passed(request, quote)
        if now is None:
            return
        buy = request.side is Side.BUY
        assert request.stop_price is not None
        raise InvalidOrder(
            f"The {request.side.value} stop at {price_text(request.stop_price)} was not placed: "
            f"{request.symbol} is at {price_text(now)} now, so it would trigger at once and "
            f"fill at the market price. A {request.side.value} stop needs a stopPrice "
            f"{'above' if buy else 'below'} the market; use orderType limit to "
            f"{request.side.value} at {price_text(request.stop_price)} or "
            f"{'less' if buy else 'more'}."
        )

    async def _moved_past(self, adapter: BrokerAdapter, request: OrderRequest) -> str | None:
        """Why an approved order is not placed: the market has passed its stop, or its
        bracket's take-profit or stop-loss (priced from the market when the signal came), so
        it would trigger or exit at once. None when it may go, or with no quote to judge by."""
        if not adapter.capabilities.quotes:
            return None
        try:
            quote = await adapter.fetch_quote(request.symbol)
        except BrokerError:
            return None
        sym, buy = request.symbol, request.side is Side.BUY
        after = "Place it with /trade if you still want it."
        now = stop_passed(request, quote)
        if now is not None:
            assert request.stop_price is not None
            return (
                f"Not placed: {sym} is at {price_text(now)} now, past the {request.side.value} "
                f"stop at {price_text(request.stop_price)} you approved, so it would trigger at "
                f"once and fill at the market price. {after}"
            )
        price, b = estimate_price(request, quote), request.bracket
        if price is None or b is None:
            return None
        for name, level, above in (
            ("take-profit", b.take_profit, buy),
            ("stop-loss", b.stop_loss, not buy),
        ):
            if level is not None and ((level <= price) if above else (level >= price)):
                return (
                    f"Not placed: {sym} is at {price_text(price)} now, past the {name} at "
                    f"{price_text(level)} priced when the signal came, so the {name} would "
                    f"fill as soon as the entry did. {after}"
                )
        return None

    async def _resume(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        intent: OrderIntent,
        cap: dict[str, Any] | None = None,
    ) -> OrderIntent:
        """Carry an intent a previous run left behind to where the broker is; never resend an
        order the broker may have. ``cap``: an approved entry's, read again at the approval."""
        trading = self.core.trading
        if intent.status == IntentStatus.DRAFT and ctx.approved:
            extra = intent.extra if cap is None else {**intent.extra, "max_positions": cap}
            async with self.core.db.transaction() as s:
                claimed = (
                    await s.execute(
                        update(OrderIntent)
                        .where(
                            OrderIntent.id == intent.id, OrderIntent.status == IntentStatus.DRAFT
                        )
                        .values(status=IntentStatus.PENDING, extra=extra, updated_at=self.clock())
                    )
                ).rowcount  # type: ignore[attr-defined]
            if claimed:
                intent.status, intent.extra = IntentStatus.PENDING, extra
                return (await trading.submit(intent)).intent
            intent = await trading.get_intent(intent.id)
        if intent.status in (IntentStatus.PENDING, IntentStatus.SUBMITTED, IntentStatus.UNKNOWN):
            try:
                order = await adapter.fetch_order(
                    target.ref,
                    client_order_id=intent.client_order_id,
                    hint=await self.core.trading.hint(intent),
                )
            except OrderNotFound:
                if intent.status == IntentStatus.PENDING:
                    # Stored, never sent: the process died between the two.
                    return (await trading.submit(intent, target=target, adapter=adapter)).intent
                if intent.status == IntentStatus.SUBMITTED:
                    # The process sending it died; the broker has nothing under its client
                    # order id. This job's lease makes us the only one to send it again, once
                    # that send has surely ended: until then, not found proves nothing.
                    if self.clock() < send_settles_at(intent):
                        raise RunAgainAt(send_settles_at(intent)) from None
                    try:
                        return (await trading.resend_lost(intent, target=target)).intent
                    except Conflict:
                        return await trading.get_intent(intent.id)
                return intent  # in doubt: the reconciler settles it, we never resend
            except BrokerError:
                return intent
            await trading.apply_order_state(intent, order)
        return intent

    async def _await_final(
        self, ctx: ExecContext, adapter: BrokerAdapter, target: Target, intent: OrderIntent
    ) -> OrderIntent:
        """Poll the exit until it is final (or the timeout): the entry waits for it."""
        deadline = time.monotonic() + self.exit_timeout
        while intent.status not in IntentStatus.FINAL and time.monotonic() < deadline:
            await asyncio.sleep(self.exit_poll_interval)
            try:
                order = await adapter.fetch_order(
                    target.ref,
                    client_order_id=intent.client_order_id,
                    hint=await self.core.trading.hint(intent),
                )
            except BrokerError:
                continue
            if order.status.is_final or order.filled_quantity != intent.filled_quantity:
                await self.core.trading.apply_order_state(intent, order)
        return intent

    # -- approval -------------------------------------------------------------------------------

    async def approve(self, intent_id: str, discord_user_id: int) -> ApprovalResult:
        """``Approvals.approve``, where the cogs ask for it."""
        return await self.approvals.approve(intent_id, discord_user_id)

    async def reject(self, intent_id: str, discord_user_id: int) -> ApprovalResult:
        """``Approvals.reject``, where the cogs ask for it."""
        return await self.approvals.reject(intent_id, discord_user_id)

    async def pending_approvals(self, discord_user_id: int) -> list[PendingApproval]:
        """``Approvals.pending_approvals``, where the cogs ask for it."""
        return await self.approvals.pending_approvals(discord_user_id)

    # -- finishing, alerts ----------------------------------------------------------------------

    def phase_entry(self, name: str, detail: str | None) -> dict[str, Any]:
        """One step of /signal show's trail, stamped now."""
        return {"phase": name, "at": self.clock().isoformat(), "detail": detail}

    def phase(self, ctx: ExecContext, name: str, detail: str | None) -> None:
        ctx.phases.append(self.phase_entry(name, detail))

    async def _finish(self, ctx: ExecContext, result: Result) -> None:
        if result.status in ENDED_BY_REASON:
            self.phase(ctx, result.status, result.reason)
        from_status = ExecutionStatus.APPROVED if ctx.approved else ExecutionStatus.PENDING
        # Saved untold (notified_status as it was): told once its DM is claimed
        # (``SignalAlerts.notify``), so a process that dies before that leaves it to the job's
        # re-run or the background pass instead of losing it.
        values: dict[str, Any] = dict(
            status=result.status,
            reason_code=result.reason_code,
            reason=(result.reason or None) and result.reason[:500],
            phases=ctx.phases,
            updated_at=self.clock(),
        )
        if result.plan is not None:
            values["plan"] = result.plan.to_json()
        if result.approval_expires_at is not None:
            values["approval_expires_at"] = result.approval_expires_at

        # The order that speaks for the execution (as in _on_order_update). An update to it
        # that lands while the execution is still pending is left to this run, so the status
        # is re-read under the intent's lock: an earlier update is seen here, a later one
        # waits for this commit and then finds the execution recorded.
        last = result.orders[-1] if result.orders else None
        plan_legs = result.plan.legs if result.plan is not None else []
        speaking = (
            last
            if last is not None
            and result.status in LATER
            and plan_legs
            and isinstance(last.extra, dict)
            and last.extra.get("leg") == plan_legs[-1].name
            else None
        )
        rows: list[tuple[type[Any], Any]] = [(SignalExecution, ctx.execution_id)]
        if speaking is not None:
            rows.append((OrderIntent, speaking.id))

        async def write(s: AsyncSession) -> bool:
            row = await s.get(SignalExecution, ctx.execution_id)
            if row is None or row.status != from_status:
                return False
            if speaking is not None:
                now = await s.get(OrderIntent, speaking.id)
                if now is not None and (now.status, now.filled_quantity) != (
                    speaking.status,
                    speaking.filled_quantity,
                ):
                    speaking.status, speaking.filled_quantity = now.status, now.filled_quantity
                    speaking.average_fill_price = now.average_fill_price
                    speaking.error_code, speaking.error_message = now.error_code, now.error_message
                    status, ok = _leg_status(speaking)
                    result.status = values["status"] = status
                    if not ok:
                        result.reason_code = speaking.error_code or f"order-{status}"
                        result.reason = speaking.error_message or describe_intent(speaking)
                        values["reason_code"] = result.reason_code
                        values["reason"] = result.reason[:500]
            for name, value in values.items():
                setattr(row, name, value)
            # Written even when equal to the stored time (a run within the same microsecond):
            # unwritten, the column's onupdate would take the wall clock, not this service's,
            # and the background pass's grace (tell_untold) reads it.
            flag_modified(row, "updated_at")
            line = self.alerts.channel_line(ctx, result)
            if line is not None:
                s.add(
                    ChannelLine(
                        signal_id=ctx.signal_id,
                        execution_id=ctx.execution_id,
                        line=line,
                        created_at=values["updated_at"],
                    )
                )
            if result.approval_expires_at is not None:
                await s.execute(
                    self.core.jobs.insert_statement(
                        JOB_APPROVAL_EXPIRY,
                        {"execution_id": ctx.execution_id},
                        key=f"expiry:{ctx.execution_id}",
                        run_after=result.approval_expires_at,
                    )
                )
            return True

        # The fan-out's subscriptions record their results together (group commit).
        won = await self.core.db.group_commit(write, rows=rows)
        if not won:
            return  # another run finished it (or the member acted): it has told them
        try:
            await self.alerts.notify(ctx, result)
        except Exception:
            log.warning("Could not send alerts for execution %s", ctx.execution_id, exc_info=True)

    async def _on_order_update(self, intent: OrderIntent) -> None:
        """A signal's order changed after its execution was recorded (a resting order filled,
        the reconciler settled an unconfirmed one). The trading service has told the member;
        this updates the execution and the alert channel, once (compare-and-set)."""
        extra = intent.extra if isinstance(intent.extra, dict) else {}
        if intent.source != "signal" or "execution_id" not in extra:
            return
        status, ok = _leg_status(intent)
        async with self.core.db.transaction() as s:
            row = (await s.execute(_with_alerting(int(extra["execution_id"])))).first()
            if row is None:
                return
            ex, strategy, pref = row
            plan = Plan.from_json(ex.plan or {})
            last = plan.legs[-1].name if plan.legs else None
            if ex.status not in LATER or ex.status == status:
                return  # while the run goes on, its orders are its own business
            speaks = extra.get("leg") == last
            if not speaks and last is not None:
                # A run that ended before placing its last leg (an exit that had not filled in
                # time: no entry) is spoken for by the order it left working.
                # The run's legs share their key but for the leg: from this order's own key,
                # since the run's subscription may be gone (/unsubscribe sets it NULL).
                run_key = (intent.idempotency_key or "").rsplit(":", 1)[0]
                later_leg = await s.scalar(
                    select(OrderIntent.id).where(
                        OrderIntent.idempotency_key == f"{run_key}:{last}",
                        OrderIntent.status.not_in([IntentStatus.DRAFT, IntentStatus.DISCARDED]),
                    )
                )
                speaks = later_leg is None
            if not speaks:
                return
            # No step of its own: the order's audit event is the step ("entry filled"), with
            # the broker's reason; a second one said it twice, as a raw status.
            values: dict[str, Any] = dict(
                status=status, notified_status=status, updated_at=self.clock()
            )
            if not ok:
                # As _finish says a refusal: the broker's reason, not an empty one.
                values["reason_code"] = intent.error_code or f"order-{status}"
                values["reason"] = (intent.error_message or describe_intent(intent))[:500]
            won = (
                await s.execute(
                    update(SignalExecution)
                    .where(SignalExecution.id == ex.id, SignalExecution.status == ex.status)
                    .values(**values)
                )
            ).rowcount  # type: ignore[attr-defined]
            if won:
                # Its line waiting for the fan-out's post ("Order placed") is outdated by this
                # one: posted after it, it would read as the last word on a filled order.
                await s.execute(delete(ChannelLine).where(ChannelLine.execution_id == ex.id))
        if not won:
            return
        channel = await self.core.strategies.alert_channel(strategy.guild_id, strategy.id)
        line = result_line(
            pref.display_name if pref and pref.alerts_show_name else None,
            ex.mode,
            status,
            [public_order(intent)],
            intent.error_code,
        )
        if channel is not None and line is not None:
            line += simulated_note([intent])
            digest = ChannelDigest(channel, strategy.name)
            digest.add(line)
            await self.alerts.post_digest(
                strategy.guild_id, strategy.id, digest, f"an order update of execution {ex.id}"
            )

    async def _origin(self, intent: OrderIntent) -> Origin | None:
        """The strategy and signal a signal's order came from, for the DMs about its later
        updates (a limit entry that fills an hour on, an order that expires at the broker):
        "Paper order update: Filled: buy 5 AAPL" did not say which strategy bought."""
        extra = intent.extra if isinstance(intent.extra, dict) else {}
        if intent.source != "signal" or not extra.get("signal_id"):
            return None
        async with self.core.db.session() as s:
            name = await s.scalar(
                select(Strategy.name).where(Strategy.id == extra.get("strategy_id"))
            )
            running = extra.get("execution_id") is not None and await s.scalar(
                select(SignalExecution.status).where(
                    SignalExecution.id == int(extra["execution_id"])
                )
            ) in (ExecutionStatus.PENDING, ExecutionStatus.APPROVED)
        short = short_id(str(extra["signal_id"]))
        return Origin(
            f" · **{plain(name)}**" if name else "",
            f"\nSignal `{short}` · /signal show for every step.",
            run_tells=bool(running),
        )

    async def _on_exit_filled(self, intent: OrderIntent, order: Order) -> None:
        """The take-profit or stop-loss of a signal's bracket filled: the alert channel hears
        it as it heard the entry (the trading service calls this once per exit)."""
        extra = intent.extra if isinstance(intent.extra, dict) else {}
        if intent.source != "signal" or "execution_id" not in extra:
            return
        async with self.core.db.session() as s:
            row = (await s.execute(_with_alerting(int(extra["execution_id"])))).first()
        if row is None:
            return
        _, strategy, pref = row
        channel = await self.core.strategies.alert_channel(strategy.guild_id, strategy.id)
        if channel is None:
            return
        who = plain(pref.display_name) if pref and pref.alerts_show_name else "A subscriber"
        price = f" at {fill_price(order.average_fill_price)}" if order.average_fill_price else ""
        if price and order.info.get("simulated"):
            price += f" · {SIMULATED_NOTE}"
        kind = exit_kind(order)
        digest = ChannelDigest(channel, strategy.name)
        digest.add(
            f"🎯 {kind[0].upper()}{kind[1:]} filled · {who} ({intent.mode}): "
            f"{order.side.value} {qty(order.filled_quantity)} {order.symbol}{price}"
        )
        await self.alerts.post_digest(
            strategy.guild_id, strategy.id, digest, f"an exit of execution {extra['execution_id']}"
        )

    # == the report ================================================================================

    async def signal_report(self, signal_id: str, discord_user_id: int) -> SignalReport:
        """``SignalReports.signal_report``, where the cogs ask for it."""
        return await self.reports.signal_report(signal_id, discord_user_id)

    async def recent_signals(
        self, discord_user_id: int, *, strategy_id: str | None = None, limit: int = RECENT_SIGNALS
    ) -> list[SignalLine]:
        """``SignalReports.recent``, where the cogs ask for it."""
        return await self.reports.recent(discord_user_id, strategy_id=strategy_id, limit=limit)


# -- helpers ---------------------------------------------------------------------------------


def _body_text(body: bytes) -> str:
    # PostgreSQL text cannot hold NUL; a refused body may contain anything.
    return body.decode("utf-8", "replace").replace("\x00", "\ufffd")


def _direction(sentiment: Sentiment | None) -> int:
    return {Sentiment.BULLISH: 1, Sentiment.BEARISH: -1}.get(sentiment, 0) if sentiment else 0


def _percent_of_position(ctx: ExecContext) -> bool:
    """The signal sends a percent of the position: the part of it an exit closes, whatever
    sizes the subscription's entries (a percent of a position does not depend on them)."""
    return (
        ctx.signal.quantity is not None
        and ctx.signal.effective_quantity_type is QuantityType.PERCENT_OF_POSITION
    )


def _sizes_position(ctx: ExecContext) -> bool:
    """Whether this subscription sizes by the signal and the signal sends a percent of the
    position (a subscription with its own sizing ignores the signal's quantity)."""
    return (
        ctx.subscription.sizing == Sizing.SIGNAL
        and ctx.signal.effective_quantity_type is QuantityType.PERCENT_OF_POSITION
    )


def _stale(record: ReceivedSignal, signal: Signal, max_lag: int, now: datetime) -> str | None:
    """Why a signal is too old to trade on when its turn comes: the age limit the webhook
    applies to the alert's time applies again after a wait in the queue (a worker that was
    down or behind), measured from the alert's time, or from its arrival without one."""
    since = signal.time or record.received_at
    waited = (now - since).total_seconds()
    if waited <= max_lag:
        return None
    return (
        f"The signal is {int(waited)} s old by the time it could run, more than this strategy's "
        f"maximum signal age of {max_lag} s (Tradecord was down or behind): nothing was placed. "
        "A delayed signal should not trade on an old price."
    )


def _unprotected(plan: Plan, snap: Snapshot, ended: Sequence[Order]) -> str:
    """A partial exit cancels the ticker's open orders first, as TradersPost does, stop-losses
    included: the part of the position left then has none, and the member must know."""
    leg = plan.leg("exit")
    left = abs(snap.position) - (leg.quantity if leg is not None else abs(snap.position))
    closing = [
        o
        for o in ended
        if o.status is OrderStatus.CANCELLED and leg is not None and o.side is leg.side
    ]
    if left <= 0 or not closing:
        return ""
    return (
        f" The {qty(left)} {closing[0].symbol} left after this exit "
        f"{'is' if left == 1 else 'are'} no longer covered by "
        f"{'it' if len(closing) == 1 else 'them'}: place a new stop-loss with /trade if "
        f"{'it' if left == 1 else 'they'} should have one."
    )


def _cancels(sig: Signal) -> bool:
    """Whether the ticker's open orders are cancelled first (TradersPost: for buy, sell and
    exit unless ``cancel`` is false; for add only when ``cancel`` is true)."""
    if sig.action is Action.CANCEL:
        return True
    if sig.cancel is not None:
        return sig.cancel
    return sig.action in (Action.BUY, Action.SELL, Action.EXIT)


def _position_value(p: Position) -> Decimal | None:
    if p.market_value is not None:
        return abs(p.market_value)
    price = p.market_price if p.market_price is not None else p.average_price
    return abs(p.quantity * price * p.multiplier) if price else None


def _is_dust(p: Position) -> bool:
    """A crypto position worth 1.50 USD or less (unpriced positions are never dust)."""
    if p.asset_class is not AssetClass.CRYPTO:
        return False
    value = _position_value(p)
    return value is not None and value <= DUST_USD


def _open_positions(positions: Sequence[Position], *, exclude: str) -> int:
    """Open positions as TradersPost counts them for max strategy positions: every one on the
    account, from Tradecord or not, except crypto dust; ``exclude`` is being closed."""
    key = symbols.instrument_key(exclude)
    return sum(
        1
        for p in positions
        if p.quantity != 0 and not _is_dust(p) and symbols.instrument_key(p.symbol) != key
    )


def _positions_cap(limit: int, snap: Snapshot, ticker: str) -> dict[str, Any]:
    """What the trading service needs to count an entry's max strategy positions again as it
    sends it, under the member's lock: the instruments held when the positions were read
    (crypto dust and the entry's own instrument aside) and when that was. Entries sent since
    (by another strategy, at the same moment) are counted from their intents."""
    key = symbols.instrument_key(ticker)
    held = [p for p in snap.positions if p.quantity != 0]
    counted = {symbols.instrument_key(p.symbol) for p in held if not _is_dust(p)}
    dust = {symbols.instrument_key(p.symbol) for p in held if _is_dust(p)}
    return {
        "limit": limit,
        "held": sorted(counted - {key}),
        "dust": sorted(dust - counted),  # held, but not a position for this rule
        "read_at": snap.read_at.isoformat() if snap.read_at is not None else None,
    }


def _stored_for(intent: OrderIntent, target: Target) -> bool:
    """Whether ``intent`` was stored for the account ``target`` trades in now."""
    return (intent.connection_id, intent.mode, intent.account_id) == (
        target.connection.id,
        target.mode,
        target.account.account_id,
    )


def _leg_status(intent: OrderIntent) -> tuple[str, bool]:
    """The execution status an intent stands for, and whether it went through."""
    return {
        IntentStatus.FILLED: (ExecutionStatus.FILLED, True),
        IntentStatus.PARTIALLY_FILLED: (ExecutionStatus.PARTIALLY_FILLED, True),
        IntentStatus.ACCEPTED: (ExecutionStatus.ACCEPTED, True),
        IntentStatus.DRAFT: (ExecutionStatus.WAITING_APPROVAL, True),
        # Sent, answer not settled yet: the reconciler settles it; never resent.
        IntentStatus.SUBMITTED: (ExecutionStatus.UNCONFIRMED, True),
        IntentStatus.UNKNOWN: (ExecutionStatus.UNCONFIRMED, True),
        IntentStatus.PENDING: (ExecutionStatus.UNCONFIRMED, True),
        IntentStatus.FAILED: (ExecutionStatus.FAILED, False),
        # Ended unfilled, not refused: said as such in the channel and the DM.
        IntentStatus.CANCELLED: (ExecutionStatus.CANCELLED, False),
        IntentStatus.EXPIRED: (ExecutionStatus.ORDER_EXPIRED, False),
    }.get(intent.status, (ExecutionStatus.REJECTED, False))


def _signal_order_of(intent: OrderIntent | None, strategy_id: str) -> bool:
    """Whether ``intent`` is an order a signal of the strategy placed."""
    extra = intent.extra if intent is not None and isinstance(intent.extra, dict) else {}
    return (
        intent is not None and intent.source == "signal" and extra.get("strategy_id") == strategy_id
    )


def _age(seconds: float) -> str:
    """A signal's age as a sender reads it: "301 s", "75 min", "30 h", "2522 days"."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _with_alerting(execution_id: int) -> Any:
    """An execution with its strategy and its member's alert preference (or None): what a
    post to the strategy's alert channel needs."""
    return (
        select(SignalExecution, Strategy, AlertPreference)
        .join(ReceivedSignal, ReceivedSignal.id == SignalExecution.signal_id)
        .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
        .outerjoin(
            AlertPreference,
            (AlertPreference.member_id == SignalExecution.member_id)
            & (AlertPreference.guild_id == Strategy.guild_id),
        )
        .where(SignalExecution.id == execution_id)
    )
