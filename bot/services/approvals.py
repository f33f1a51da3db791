"""The manual approval of a signal's orders: the drafts a subscription asks its member to
approve, their Approve or Reject, the approvals waiting, and their expiry."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from adapters import symbols
from adapters.base import BrokerAdapter
from bot.automation_models import (
    LEGS,
    AlertPreference,
    ExecutionStatus,
    ReceivedSignal,
    SignalExecution,
    Strategy,
    Subscription,
    intent_key,
)
from bot.brokers import connect_command
from bot.components import approval_buttons
from bot.errors import Conflict, LimitReached, NotFound, PermissionDenied
from bot.models import (
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    IntentStatus,
    Member,
    OrderIntent,
    short_id,
)
from bot.services.connections import Target
from bot.services.notify import Notifier, buttons_of
from bot.services.signal_alerts import outcome_words
from bot.services.signal_plans import ExecContext, Plan, Result
from bot.services.trading import Refusal as OrderRefusal
from bot.services.trading import intent_terms, qty, request_of
from bot.signal_format import Signal
from bot.wording import plain

if TYPE_CHECKING:
    from bot.services.signals import SignalService

# Its log lines are the signals', as before the flow had its own module.
log = logging.getLogger("tradecord.signals")

JOB_APPROVED = "signal.approved"
JOB_APPROVAL_EXPIRY = "signal.approval_expiry"
# A late click, a second process's click and the expired card itself all say it alike.
APPROVAL_EXPIRED = "This approval expired; nothing was placed."
APPROVAL_WITHDRAWN = (
    "This approval was withdrawn: its subscription ended or its connection was removed, so "
    "nothing was placed."
)


# The Approve/Reject cards of approvals withdrawn: (member's Discord id, their drafts' ids).
Withdrawn = list[tuple[int, list[str]]]


async def withdraw_approvals(
    s: AsyncSession, subscriptions: Select[tuple[int]], at: datetime
) -> Withdrawn:
    """In the transaction that ends ``subscriptions`` (ids): their approvals waiting end and
    their drafts are discarded. Deleting a subscription only unlinks its executions, so an
    Approve pressed after would otherwise find no execution, and its drafts stay for ever.
    Returns the cards to close once it commits (``close_withdrawn``)."""
    waiting = (
        await s.execute(
            update(SignalExecution)
            .where(
                SignalExecution.status == ExecutionStatus.WAITING_APPROVAL,
                SignalExecution.subscription_id.in_(subscriptions),
            )
            .values(
                status=ExecutionStatus.SKIPPED,
                reason_code="subscription-ended",
                reason="Its subscription ended before it was approved; nothing was placed.",
                notified_status=ExecutionStatus.SKIPPED,
                updated_at=at,
            )
            .returning(SignalExecution.signal_id, SignalExecution.subscription_id)
        )
    ).all()
    keys = [intent_key(w.signal_id, w.subscription_id, leg) for w in waiting for leg in LEGS]
    cards: dict[tuple[int, str], list[str]] = {}  # (member, signal) → drafts: one card each
    for i in range(0, len(keys), 500):
        discarded = await s.execute(
            update(OrderIntent)
            .where(
                OrderIntent.idempotency_key.in_(keys[i : i + 500]),
                OrderIntent.status == IntentStatus.DRAFT,
            )
            .values(status=IntentStatus.DISCARDED, updated_at=at)
            .returning(OrderIntent.id, OrderIntent.member_id, OrderIntent.idempotency_key)
        )
        for intent_id, member_id, key in discarded:
            signal_id = (key or "").partition(":")[0]
            cards.setdefault((member_id, signal_id), []).append(intent_id)
    if not cards:
        return []
    found = await s.execute(
        select(Member.id, Member.discord_user_id).where(
            Member.id.in_({member for member, _ in cards})
        )
    )
    discord_ids = {member_id: discord_id for member_id, discord_id in found}
    return [(discord_ids[member], ids) for (member, _), ids in cards.items()]


async def close_withdrawn(notifier: Notifier | None, withdrawn: Withdrawn) -> None:
    """Take the buttons off the withdrawn approvals' cards, saying why (a press on one left
    in place still answers ``APPROVAL_WITHDRAWN``, so failing here only costs a log line)."""
    if notifier is None:
        return
    for discord_id, intent_ids in withdrawn:
        buttons = [c for i in intent_ids for c in buttons_of(approval_buttons(i))]
        try:
            await notifier.close_dm_card(discord_id, buttons, APPROVAL_WITHDRAWN)
        except Exception:
            log.warning("Could not close a withdrawn approval card", exc_info=True)


@dataclass(frozen=True, slots=True)
class PendingApproval:
    """An execution waiting for its member: what the approval card shows."""

    execution_id: int
    signal_id: str
    discord_user_id: int
    strategy_name: str
    connection_name: str
    mode: str
    summary: str
    intent_ids: tuple[str, ...]  # drafts, in placing order; approve/reject take any of them
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    execution_id: int
    signal_id: str
    status: str
    message: str


class Approvals:
    def __init__(self, signals: SignalService) -> None:
        self.signals = signals
        self.core = signals.core
        self.core.jobs.register(JOB_APPROVED, self._job_approved, self._approved_gave_up)
        self.core.jobs.register(JOB_APPROVAL_EXPIRY, self._job_expiry)

    async def request(
        self,
        ctx: ExecContext,
        adapter: BrokerAdapter,
        target: Target,
        plan: Plan,
        existing: dict[str, OrderIntent],
    ) -> Result:
        drafts = []
        try:
            for leg in plan.legs:
                drafts.append(
                    await self.signals.place_leg(
                        ctx, adapter, target, leg, plan, existing.get(leg.name), submit=False
                    )
                )
        except BaseException:
            await self.signals.discard_drafts(ctx)  # no half-drafted plan waits for approval
            raise
        # As /trade's preview does: a card for an order bound to be refused (paused, the kill
        # switch, a limit) would ask a click that places nothing.
        for draft in drafts:
            extra = dict(draft.extra or {})
            refusal = await self.core.trading.refusal(
                target, request_of(draft), adapter, source="signal", extra=extra
            )
            if refusal is not None:
                await self.signals.discard_drafts(ctx)
                said = f"Not placed: {plan.summary(ctx.signal.ticker)}. {refusal.message}"
                return Result(ExecutionStatus.FAILED, refusal.code, said, plan)
        expires = self.signals.clock() + timedelta(seconds=ctx.subscription.approval_ttl_seconds)
        self.signals.phase(ctx, "approval requested", plan.summary(ctx.signal.ticker))
        return Result(
            ExecutionStatus.WAITING_APPROVAL,
            "approval-required",
            # /signal show says this: where to answer, and by when (it said neither).
            f"Waiting for your approval: {plan.summary(ctx.signal.ticker)}. Approve or Reject "
            f"it on the card in your DMs before it expires <t:{int(expires.timestamp())}:R>; "
            "after that nothing is placed.",
            plan,
            approval_expires_at=expires,
            orders=drafts,
        )

    async def approve(self, intent_id: str, discord_user_id: int) -> ApprovalResult:
        """The member approves the signal's orders for their subscription (any of the drafts'
        ids will do). Exactly one click wins, in any process; the orders are placed by a job."""
        ex = await self._owned_execution(intent_id, discord_user_id)
        await self._expire_if_due(ex)
        if ex.status == ExecutionStatus.WAITING_APPROVAL:
            await self._refuse_if_superseded(ex)
            # Approved while paused, the click said "being placed" and the DM after it "Not
            # placed: your trading is paused". Refused here, the approval still waits (the
            # card keeps its buttons) for a click once the member may trade again.
            stopped = await self.core.trading.stopped(ex.member_id)
            if stopped is not None:
                raise LimitReached(_not_approved_yet(stopped, ex.approval_expires_at))
            from bot.services.subscriptions import subscribe_command  # it imports this module

            # The subscription, named in the hints exactly: the member may have several
            # subscriptions to the strategy, and /subscribe without connection: and mode:
            # changes the only one or none.
            async with self.core.db.session() as s:
                sub = (
                    await s.execute(
                        select(
                            Strategy.name,
                            Connection.name,
                            Connection.broker,
                            Connection.status,
                            Subscription.mode,
                            Subscription.enabled,
                            Subscription.sides,
                            ConnectionAccount.id,
                        )
                        .join(Subscription, Subscription.strategy_id == Strategy.id)
                        .join(Connection, Connection.id == Subscription.connection_id)
                        .outerjoin(
                            ConnectionAccount,
                            (ConnectionAccount.connection_id == Connection.id)
                            & (ConnectionAccount.mode == Subscription.mode),
                        )
                        .where(Subscription.id == ex.subscription_id)
                    )
                ).first()
            by = _before(ex.approval_expires_at)
            sides = both_sides = None
            if sub is not None:
                strategy, conn, broker, status, mode, enabled, sides, account = sub
                named = (plain(strategy), plain(conn), mode)
                both_sides = subscribe_command(*named, "sides:both")
                # A paused subscription takes no signals: one waiting when it was paused neither.
                if not enabled:
                    raise LimitReached(
                        f"Not approved: your subscription to **{plain(strategy)}** is paused, "
                        f"so it takes no signals. Resume it "
                        f"({subscribe_command(*named, 'active:true')}), then press Approve "
                        f"again{by}."
                    )
                # A connection to re-link, or with no account for the mode, would skip the run
                # after "being placed", the approval spent; refused here, the card waits for a
                # click once it can trade again.
                if status == ConnectionStatus.NEEDS_REAUTH:
                    raise LimitReached(
                        f"Not approved yet: “{conn}” needs to be re-linked "
                        f"({connect_command(broker)}); then press Approve again{by}."
                    )
                if account is None:
                    raise LimitReached(
                        f"Not approved yet: “{conn}” has no {mode} account chosen, so its orders "
                        f"cannot be placed. Choose one in /accounts, then press Approve again{by}."
                    )
            async with self.core.db.session() as s:
                drafts = list(
                    await s.scalars(
                        select(OrderIntent.status).where(
                            OrderIntent.idempotency_key.in_(
                                [intent_key(ex.signal_id, ex.subscription_id, leg) for leg in LEGS]
                            )
                        )
                    )
                )
                entry_side = await s.scalar(
                    select(OrderIntent.side).where(
                        OrderIntent.idempotency_key
                        == intent_key(ex.signal_id, ex.subscription_id, "entry")
                    )
                )
            ruled_out = {"long": "sell", "short": "buy"}.get(sides or "both")
            if entry_side is not None and entry_side == ruled_out:
                # The member turned these entries off since the card (sides long or short).
                kind = "short" if entry_side == "sell" else "long"
                raise LimitReached(
                    f"Not approved: this subscription takes {sides} entries only now, and the "
                    f"card would open a {kind} position. Reject it, or allow both sides with "
                    f"{both_sides} and press Approve again{by}."
                )
            if drafts and all(d == IntentStatus.DISCARDED for d in drafts):
                # /paper reset (or a disconnect) discarded its orders: nothing is left to place.
                async with self.core.db.transaction() as s:
                    skipped = (
                        await s.execute(
                            update(SignalExecution)
                            .where(
                                SignalExecution.id == ex.id,
                                SignalExecution.status == ExecutionStatus.WAITING_APPROVAL,
                            )
                            .values(
                                status=ExecutionStatus.SKIPPED,
                                reason_code="orders-discarded",
                                reason="Its orders were discarded before the approval.",
                                notified_status=ExecutionStatus.SKIPPED,
                                updated_at=self.signals.clock(),
                            )
                        )
                    ).rowcount  # type: ignore[attr-defined]
                if not skipped:
                    # A Reject on another device, or the expiry, ended it (and discarded its
                    # drafts) during the checks above: say that, not "your account was reset".
                    raise Conflict(await self._already(ex.id))
                raise Conflict(
                    "These orders were discarded since the card was sent (your paper account "
                    "was reset, or its connection removed): nothing was placed. The "
                    "strategy's next signal trades as usual."
                )
        now = self.signals.clock()
        async with self.core.db.transaction() as s:
            won = (
                await s.execute(
                    update(SignalExecution)
                    .where(
                        SignalExecution.id == ex.id,
                        SignalExecution.status == ExecutionStatus.WAITING_APPROVAL,
                        # Its window may have closed during the checks above.
                        SignalExecution.approval_expires_at.is_(None)
                        | (SignalExecution.approval_expires_at > now),
                    )
                    .values(
                        status=ExecutionStatus.APPROVED,
                        updated_at=self.signals.clock(),
                        phases=[*(ex.phases or []), self.signals.phase_entry("approved", None)],
                    )
                )
            ).rowcount  # type: ignore[attr-defined]
            if won:
                strategy_id = await s.scalar(
                    select(ReceivedSignal.strategy_id).where(ReceivedSignal.id == ex.signal_id)
                )
                await s.execute(
                    self.core.jobs.insert_statement(
                        JOB_APPROVED,
                        {"execution_id": ex.id},
                        key=f"approved:{ex.id}",
                        # In line with the strategy's signal jobs (``SignalService.receive``):
                        # run beside its next signal, or another approved card, each saw the
                        # position before the other traded (an exit finding nothing to close,
                        # two entries each planned from no position).
                        serial=f"strategy:{strategy_id}",
                    )
                )
        if not won:
            async with self.core.db.session() as s:
                now_ex = await s.get(SignalExecution, ex.id)
            if now_ex is not None:
                await self._expire_if_due(now_ex)
            raise Conflict(await self._already(ex.id))
        self.core.jobs.wake()
        return ApprovalResult(
            ex.id,
            ex.signal_id,
            ExecutionStatus.APPROVED,
            # A reversal's card approves its exit and its entry: both are placed.
            "Approved: the order is being placed; you will get a DM with the result."
            if len(Plan.from_json(ex.plan or {}).legs) < 2
            else "Approved: the exit and then the entry are being placed; you will get a DM "
            "with the result.",
        )

    async def reject(self, intent_id: str, discord_user_id: int) -> ApprovalResult:
        """The member declines: nothing is placed."""
        ex = await self._owned_execution(intent_id, discord_user_id)
        await self._expire_if_due(ex)
        if not await self._close_approval(
            ex.id,
            ExecutionStatus.DECLINED,
            "declined",
            "You declined this signal; nothing was placed.",
            tell=False,  # the card they pressed says so: a DM on top would say it again
        ):
            raise Conflict(await self._already(ex.id))
        return ApprovalResult(
            ex.id, ex.signal_id, ExecutionStatus.DECLINED, "Declined: nothing was placed."
        )

    async def pending_approvals(self, discord_user_id: int) -> list[PendingApproval]:
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.session() as s:
            rows = (
                (
                    await s.execute(
                        select(SignalExecution.id)
                        .where(
                            SignalExecution.member_id == member_id,
                            SignalExecution.status == ExecutionStatus.WAITING_APPROVAL,
                        )
                        .order_by(SignalExecution.id)
                    )
                )
                .scalars()
                .all()
            )
        out = []
        for ex_id in rows:
            pending = await self.pending(ex_id)
            if pending is not None:
                out.append(pending)
        return out

    async def pending(self, execution_id: int) -> PendingApproval | None:
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(
                        SignalExecution,
                        Strategy.name,
                        Member.discord_user_id,
                        Connection.name,
                        ReceivedSignal.ticker,
                    )
                    .join(ReceivedSignal, ReceivedSignal.id == SignalExecution.signal_id)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .join(Member, Member.id == SignalExecution.member_id)
                    .outerjoin(Connection, Connection.id == SignalExecution.connection_id)
                    .where(SignalExecution.id == execution_id)
                )
            ).first()
            if row is None:
                return None
            ex, sname, discord_id, cname, ticker = row
            keys = [intent_key(ex.signal_id, ex.subscription_id or 0, leg) for leg in LEGS]
            intents = {
                i.idempotency_key: i.id
                for i in await s.scalars(
                    select(OrderIntent).where(OrderIntent.idempotency_key.in_(keys))
                )
            }
        plan = Plan.from_json(ex.plan or {})
        return PendingApproval(
            execution_id=ex.id,
            signal_id=ex.signal_id,
            discord_user_id=discord_id,
            strategy_name=sname,
            connection_name=cname or "(removed)",
            mode=ex.mode,
            summary=plan.summary(ticker or ""),
            intent_ids=tuple(intents[k] for k in keys if k in intents),
            expires_at=ex.approval_expires_at or self.signals.clock(),
        )

    async def _owned_execution(self, intent_id: str, discord_user_id: int) -> SignalExecution:
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(OrderIntent.idempotency_key, Member.discord_user_id, OrderIntent.status)
                    .join(Member, Member.id == OrderIntent.member_id)
                    .where(OrderIntent.id == intent_id, OrderIntent.source == "signal")
                )
            ).first()
            if row is None:
                raise NotFound("That signal order no longer exists.")
            key, owner, status = row
            if owner != discord_user_id:
                raise PermissionDenied("This approval belongs to someone else.")
            signal_id, _, rest = (key or "").partition(":")
            sub_id = rest.partition(":")[0]
            ex = await s.scalar(
                select(SignalExecution).where(
                    SignalExecution.signal_id == signal_id,
                    SignalExecution.subscription_id == int(sub_id or 0),
                )
            )
        if ex is None:
            if status == IntentStatus.DISCARDED:
                raise Conflict(APPROVAL_WITHDRAWN)
            raise NotFound("That signal order no longer exists.")
        return ex

    async def _refuse_if_superseded(self, ex: SignalExecution) -> None:
        """End an approval whose subscription has run a newer signal of the strategy for the
        same instrument since, without asking: its orders were planned before that signal,
        which may have exited what this one enters (and found nothing to exit then). Approved
        anyway, it left a position the strategy had closed, which none of its signals would
        close."""
        async with self.core.db.session() as s:
            this = (
                await s.execute(
                    select(ReceivedSignal.ticker).where(ReceivedSignal.id == ex.signal_id)
                )
            ).first()
            side = await s.scalar(
                select(OrderIntent.side)
                .where(
                    OrderIntent.idempotency_key.in_(
                        [intent_key(ex.signal_id, ex.subscription_id or 0, leg) for leg in LEGS]
                    )
                )
                .limit(1)
            )
            if this is None or not this.ticker or ex.subscription_id is None or side is None:
                return
            newer = (
                await s.execute(
                    select(
                        ReceivedSignal.id,
                        ReceivedSignal.ticker,
                        ReceivedSignal.action,
                        SignalExecution.phases,
                    )
                    .join(SignalExecution, SignalExecution.signal_id == ReceivedSignal.id)
                    .where(
                        SignalExecution.subscription_id == ex.subscription_id,
                        # Its runs are made by the strategy's signal jobs, one at a time in
                        # the order the signals came: a later run is a newer signal's.
                        SignalExecution.id > ex.id,
                        ReceivedSignal.test.is_(False),
                    )
                    .order_by(SignalExecution.id)
                )
            ).all()
        key = symbols.instrument_key(this.ticker)
        # What undoes the card's orders: an exit, a cancel, or a signal the other way. One the
        # same way (an add, a repeated buy) agrees with it.
        against = {"exit", "cancel", "sell" if side == "buy" else "buy"}
        later = next(
            (
                n
                for n in newer
                if n.ticker
                and symbols.instrument_key(n.ticker) == key
                and n.action in against
                # A newer card is the member's to weigh: whichever is approved first trades,
                # and the other finds the position changed. Not one that ran without asking.
                and not any(p.get("phase") == "approval requested" for p in n.phases or [])
            ),
            None,
        )
        if later is None:
            return
        said = (
            f"Not placed: a newer signal of this strategy for {this.ticker} "
            f"({later.action or 'signal'}, `{short_id(later.id)}`) came since this card, so its "
            "orders no longer follow the strategy. /signal show "
            f"`{short_id(later.id)}` says what the newer signal did."
        )
        if not await self._close_approval(
            ex.id,
            ExecutionStatus.SKIPPED,
            "superseded",
            f"A newer signal for {this.ticker} (`{short_id(later.id)}`) came before the "
            "approval; nothing was placed.",
            tell=False,  # the card pressed says so
        ):
            raise Conflict(await self._already(ex.id))
        raise Conflict(said)

    async def _expire_if_due(self, ex: SignalExecution) -> None:
        due = ex.approval_expires_at
        if ex.status == ExecutionStatus.WAITING_APPROVAL and due and self.signals.clock() >= due:
            await self._close_approval(
                ex.id,
                ExecutionStatus.EXPIRED,
                "expired",
                "The approval expired; nothing was placed.",
            )
            raise Conflict(APPROVAL_EXPIRED)

    async def _already(self, execution_id: int) -> str:
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(SignalExecution.status, SignalExecution.signal_id).where(
                        SignalExecution.id == execution_id
                    )
                )
            ).first()
        status, signal_id = row if row is not None else (None, "")
        # A second click (another process took the first) read "already handled (it is
        # approved)", as if something had gone wrong: it says where the order is instead.
        return {
            ExecutionStatus.EXPIRED: APPROVAL_EXPIRED,
            ExecutionStatus.DECLINED: "This signal was declined; nothing was placed.",
            ExecutionStatus.APPROVED: "You approved this signal already: its order is being "
            "placed, and you will get a DM with the result.",
        }.get(
            status or "",
            "This signal was already handled: it is "
            f"{outcome_words(status) if status else 'gone'}. "
            f"/signal show `{short_id(signal_id)}` has every step.",
        )

    async def _close_approval(
        self,
        execution_id: int,
        status: str,
        phase: str,
        reason: str,
        *,
        tell: bool = True,
        card: str | None = None,
    ) -> bool:
        """End a waiting approval (declined or expired) and discard its drafts, once; ``tell``:
        DM the member the reason; ``card``: the outcome to put on the Approve/Reject card in
        their DMs in place of its buttons (a press answers that itself, so only the job does)."""
        async with self.core.db.transaction() as s:
            ex = await s.scalar(select(SignalExecution).where(SignalExecution.id == execution_id))
            if ex is None:
                return False
            won = (
                await s.execute(
                    update(SignalExecution)
                    .where(
                        SignalExecution.id == execution_id,
                        SignalExecution.status == ExecutionStatus.WAITING_APPROVAL,
                    )
                    .values(
                        status=status,
                        reason_code=f"approval-{status}",
                        reason=reason,
                        notified_status=status,
                        updated_at=self.signals.clock(),
                        phases=[*(ex.phases or []), self.signals.phase_entry(phase, None)],
                    )
                )
            ).rowcount  # type: ignore[attr-defined]
            if not won:
                return False
            keys = [intent_key(ex.signal_id, ex.subscription_id or 0, leg) for leg in LEGS]
            drafts = OrderIntent.idempotency_key.in_(keys), OrderIntent.status == IntentStatus.DRAFT
            # What the card asked, for a DM that may come long after it: which strategy, which
            # order. (The card is far up the DMs by then, and a member may have several.)
            discarded = list(await s.scalars(select(OrderIntent).where(*drafts)))
            asked = [f"{i.side} {qty(i.quantity)} {i.symbol}{intent_terms(i)}" for i in discarded]
            name = await s.scalar(
                select(Strategy.name)
                .join(ReceivedSignal, ReceivedSignal.strategy_id == Strategy.id)
                .where(ReceivedSignal.id == ex.signal_id)
            )
            await s.execute(
                update(OrderIntent)
                .where(*drafts)
                .values(status=IntentStatus.DISCARDED, updated_at=self.signals.clock())
            )
            discord_id = await s.scalar(
                select(Member.discord_user_id).where(Member.id == ex.member_id)
            )
        if discord_id is not None and tell:
            what = f"**{plain(name)}** " if name else ""
            what += f"{'; '.join(asked)}: " if asked else ""
            await self.signals.alerts.dm(
                discord_id, f"🕓 {what}{reason} (signal `{short_id(ex.signal_id)}`)"
            )
        if discord_id is not None and card is not None and self.core.notifier is not None:
            # The card names any of the drafts (approval_buttons); a press on buttons left in
            # place is still answered, so failing here only costs a log line.
            buttons = [
                custom_id for i in discarded for custom_id in buttons_of(approval_buttons(i.id))
            ]
            try:
                await self.core.notifier.close_dm_card(discord_id, buttons, card)
            except Exception:
                log.warning("Could not close the approval card of %s", execution_id, exc_info=True)
        return True

    async def _job_expiry(self, payload: Mapping[str, Any]) -> None:
        execution_id = int(payload["execution_id"])
        async with self.core.db.session() as s:
            due = await s.scalar(
                select(SignalExecution.approval_expires_at).where(
                    SignalExecution.id == execution_id
                )
            )
        if due is not None and self.signals.clock() >= due:
            await self._close_approval(
                execution_id,
                ExecutionStatus.EXPIRED,
                "expired",
                "The approval expired; nothing was placed.",
                card=APPROVAL_EXPIRED,
            )
        elif due is not None:
            # Not due by this process's clock yet: look again then.
            await self.core.jobs.enqueue(
                JOB_APPROVAL_EXPIRY,
                {"execution_id": execution_id},
                key=f"expiry:{execution_id}:{due.timestamp()}",
                run_after=due,
            )

    async def _job_approved(self, payload: Mapping[str, Any]) -> None:
        execution_id = int(payload["execution_id"])
        ctx = await self._context_for(execution_id)
        if ctx is None:
            # Its subscription ended between the click and this job (unsubscribed, the
            # strategy unshared or deleted): the click promised a DM with the result.
            await self._end_unplaced(
                execution_id,
                ExecutionStatus.SKIPPED,
                "subscription-ended",
                "Its subscription ended after the approval, so nothing was placed.",
            )
            return
        ctx.approved = True
        await self.signals.execute(ctx)

    async def _approved_gave_up(self, payload: Mapping[str, Any], error: str) -> None:
        """An approved order whose job kept failing: the member was told a DM would bring the
        result, so one does. With no order stored for it, the run ends as failed."""
        execution_id = int(payload["execution_id"])
        log.error("Approved execution %s was given up: %s", execution_id, error)
        reason = (
            "Tradecord kept failing while placing this approved order and stopped trying; "
            "nothing was placed."
        )
        await self._end_unplaced(
            execution_id, ExecutionStatus.FAILED, "processing-failed", reason, gave_up=True
        )

    async def _end_unplaced(
        self,
        execution_id: int,
        status: str,
        code: str,
        reason: str,
        *,
        gave_up: bool = False,
    ) -> None:
        """End an approved run that will place nothing more: its drafts discarded, the run
        ``status`` with ``reason`` (if nothing was placed), and its member told by DM."""
        async with self.core.db.transaction() as s:
            row = (
                await s.execute(
                    select(SignalExecution, Member.discord_user_id, Strategy.name)
                    .join(Member, Member.id == SignalExecution.member_id)
                    .join(ReceivedSignal, ReceivedSignal.id == SignalExecution.signal_id)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .where(SignalExecution.id == execution_id)
                )
            ).first()
            if row is None or row[0].status != ExecutionStatus.APPROVED:
                return
            ex, discord_id, strategy_name = row
            if ex.subscription_id is not None:
                ours = OrderIntent.idempotency_key.in_(
                    [intent_key(ex.signal_id, ex.subscription_id, leg) for leg in LEGS]
                )
            else:  # its subscription was deleted (SET NULL): its orders by what they were for
                ours = (
                    OrderIntent.idempotency_key.startswith(f"{ex.signal_id}:")
                    & (OrderIntent.member_id == ex.member_id)
                    & (OrderIntent.connection_id == ex.connection_id)
                    & (OrderIntent.mode == ex.mode)
                )
            placed = await s.scalar(
                select(OrderIntent.id)
                .where(
                    ours,
                    OrderIntent.status.not_in([IntentStatus.DRAFT, IntentStatus.DISCARDED]),
                )
                .limit(1)
            )
            if placed is None:
                # Its drafts (the orders shown for approval) will never be sent.
                await s.execute(
                    update(OrderIntent)
                    .where(ours, OrderIntent.status == IntentStatus.DRAFT)
                    .values(status=IntentStatus.DISCARDED)
                )
                await s.execute(
                    update(SignalExecution)
                    .where(
                        SignalExecution.id == execution_id,
                        SignalExecution.status == ExecutionStatus.APPROVED,
                    )
                    .values(
                        status=status,
                        reason_code=code,
                        reason=reason,
                        notified_status=status,
                        updated_at=self.signals.clock(),
                    )
                )
        what = (
            f"Your approved order for signal `{short_id(ex.signal_id)}` of "
            f"**{plain(strategy_name)}**"
        )
        if placed is None:
            text = f"⚠️ {what} could not be placed: {reason[0].lower()}{reason[1:]}"
        elif gave_up:
            text = (
                f"⚠️ {what} did not finish: Tradecord stopped trying. It may have placed an "
                "order; see /orders."
            )
        else:
            return  # under way already: its orders' own updates tell the member
        await self.signals.alerts.dm(discord_id, text)

    async def _context_for(self, execution_id: int) -> ExecContext | None:
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(
                        SignalExecution,
                        ReceivedSignal,
                        Strategy,
                        Subscription,
                        Member.discord_user_id,
                        AlertPreference,
                    )
                    .join(ReceivedSignal, ReceivedSignal.id == SignalExecution.signal_id)
                    .join(Strategy, Strategy.id == ReceivedSignal.strategy_id)
                    .join(Subscription, Subscription.id == SignalExecution.subscription_id)
                    .join(Member, Member.id == SignalExecution.member_id)
                    .outerjoin(
                        AlertPreference,
                        (AlertPreference.member_id == SignalExecution.member_id)
                        & (AlertPreference.guild_id == Strategy.guild_id),
                    )
                    .where(SignalExecution.id == execution_id)
                )
            ).first()
            if row is None:
                return None
            ex, record, strategy, sub, discord_id, pref = row
            if ex.status != ExecutionStatus.APPROVED:
                return None
            conn = await s.scalar(
                select(Connection)
                .where(Connection.id == sub.connection_id)
                .options(selectinload(Connection.accounts))
            )
        return ExecContext(
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
            public_name=pref.display_name if pref and pref.alerts_show_name else None,
            channel_id=await self.core.strategies.alert_channel(strategy.guild_id, strategy.id),
            phases=list(ex.phases or []),
            received_at=record.received_at,
        )


def _not_approved_yet(stopped: OrderRefusal, expires_at: datetime | None) -> str:
    """What to do about an approval that cannot be given now (paused, the kill switch)."""
    by = _before(expires_at)
    if stopped.code == "member-paused":
        return (
            "Not approved: your trading is paused, so its order would not be sent. Run /resume, "
            f"then press Approve again{by}."
        )
    if stopped.code == "kill-switch":
        return (
            "Not approved: trading is stopped for everyone by the bot owner (kill switch), so "
            f"its order would not be sent. Press Approve again once trading is back"
            f"{by and ','}{by}."
        )
    return f"Not approved: {stopped.message}"


def _before(expires_at: datetime | None) -> str:
    return f" before it expires <t:{int(expires_at.timestamp())}:R>" if expires_at else ""
