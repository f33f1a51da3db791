"""A signal's alerts: its posts in the strategy's alert channel, in as few messages as fit, and
the result DMs to the members it ran for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from adapters import symbols
from bot.automation_models import ChannelLine, ExecutionStatus, ReceivedSignal, Strategy
from bot.components import approval_buttons
from bot.models import IntentStatus, OrderIntent, short_id
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
    from bot.services.signals import SignalService

# Its log lines are the signals', as before the alerts had their own module.
log = logging.getLogger("tradecord.signals")

CHANNEL_STATUSES = {
    ExecutionStatus.ACCEPTED: ("📨", "Order placed"),
    ExecutionStatus.PARTIALLY_FILLED: ("🟡", "Partly filled"),
    ExecutionStatus.FILLED: ("✅", "Filled"),
    ExecutionStatus.REJECTED: ("⛔", "Rejected"),
    ExecutionStatus.FAILED: ("⛔", "Not placed"),
    ExecutionStatus.CANCELLED: ("🚫", "Cancelled"),
    ExecutionStatus.ORDER_EXPIRED: ("⌛", "Expired"),
    # Sent, the broker's answer lost: its end is posted once the reconciler settles it.
    ExecutionStatus.UNCONFIRMED: ("⏳", "Not confirmed yet"),
}


# A waiting channel line older than this was left by a run that will not post it.
LEFTOVER_AGE = timedelta(minutes=2)
# How long lines Discord failed to take are tried again: later, they would be old news.
RETRY_FOR = timedelta(minutes=30)

# Refusals that are Tradecord's own safety checks at the moment of sending, not the broker's.
HELD_BACK = frozenset({"position-changed", "cancel-pending"})


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

    async def notify(self, ctx: ExecContext, result: Result) -> None:
        notifier = self.core.notifier
        buttons: list[dict[str, Any]] = []
        if result.status == ExecutionStatus.WAITING_APPROVAL:
            pending = await self.signals.approvals.pending(ctx.execution_id)
            if pending is not None and pending.intent_ids:
                # Handled by the bot's dynamic buttons, in whichever process gets the click.
                buttons = approval_buttons(pending.intent_ids[0])
        if notifier is None:
            return
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
        head = {
            ExecutionStatus.SKIPPED: "⏭️ Skipped",
            ExecutionStatus.TEST: "🧪 Test signal",
            ExecutionStatus.WAITING_APPROVAL: "🕓 Waiting for your approval",
            ExecutionStatus.DONE: "✅ Done",
        }.get(result.status) or " ".join(CHANNEL_STATUSES.get(result.status, ("•", result.status)))
        if result.status is ExecutionStatus.REJECTED and result.reason_code in HELD_BACK:
            head = "⛔ Not placed"  # Tradecord held it back: no broker (nor member) refused it
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
        if result.orders:
            await self.core.trading.mark_announced(list(result.orders))
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
            parts.append(f"at {money(signal.reference_price)}")
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
    public = CHANNEL_STATUSES.get(status)
    if public is None:
        return None
    who = plain(public_name) if public_name else "A subscriber"
    line = f"{public[0]} {public[1]} · {who} ({mode}): {'; '.join(trades)}"
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
    elif intent.status == IntentStatus.PARTIALLY_FILLED:
        text += f"{intent_terms(intent)} ({qty(intent.filled_quantity)} filled)"
    elif intent.status == IntentStatus.ACCEPTED:
        text += intent_terms(intent)  # working: its price is what members watch for
    elif intent.status in (IntentStatus.CANCELLED, IntentStatus.EXPIRED) and intent.filled_quantity:
        # Ended after filling in part: the subscriber holds those, unlike a plain cancel.
        at = f" at {fill_price(intent.average_fill_price)}" if intent.average_fill_price else ""
        text += f" ({qty(intent.filled_quantity)} filled{at})"
    return text


def _planned_trades(signal: Signal, plan: Plan | None) -> list[str]:
    """For a channel, when no order exists: the planned legs with their prices, named "exit: "
    and "entry: " when both (as ``_leg_label`` does for orders), else the signal itself."""
    if plan is not None and plan.legs:
        both = len(plan.legs) > 1
        return [f"{leg.name}: " * both + leg.describe(signal.ticker) for leg in plan.legs]
    return [f"{signal.action.value} {signal.ticker}"]
