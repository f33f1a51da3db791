"""Automation commands: /strategy, /subscribe, /unsubscribe, /alerts, /signal show, and the
Approve / Reject buttons of signals that wait for their member."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.automation_models import SignalStatus
from bot.client import Tradecord, report_error
from bot.components import APPROVAL_BUTTON
from bot.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from bot.models import short_id
from bot.services.limits import describe_limit, without_thousands
from bot.services.notify import closed_card
from bot.services.signal_alerts import outcome_words
from bot.services.signal_report import (
    ENDED_BY_REASON,
    Phase,
    SignalLine,
    SignalReport,
    SubscriptionReport,
)
from bot.services.strategies import (
    MAX_LAG_SECONDS,
    MAX_RATE_LIMIT,
    MIN_LAG_SECONDS,
    MIN_RATE_LIMIT,
    TRADINGVIEW,
    StrategyInfo,
)
from bot.services.subscriptions import (
    Sides,
    Sizing,
    SubscriptionInfo,
    SubscriptionSettings,
    sizing_amount,
    subscribe_command,
)
from bot.trading_windows import NEW_YORK, parse_windows, windows_phrase
from bot.wording import plain, plural
from cogs import format as fmt
from cogs.trading import send_pages
from cogs.ui import (
    ConfirmView,
    as_text,
    can_manage,
    connection_names,
    in_time,
    managed_strategy_names,
    owned_strategy_names,
    reply,
    role_text,
    roles_of,
    strategy_names,
    update,
)

log = logging.getLogger("tradecord.automation")

# Members whose names are remembered per process before starting over (one statement each then).
ALERT_NAMES_KEPT = 50_000

SIZING_HELP = {
    "fixed_quantity": "shares/contracts per entry",
    "dollar_amount": "dollars per entry",
    "percent_of_equity": "percent of the account's equity per entry",
    "signal": "multiplier on the signal's own quantity",
}


def sizing_text(sizing: str, value: Decimal) -> str:
    """3 shares/contracts per entry; 1× the signal's own quantity (not "1 multiplier on")."""
    if sizing == "signal":
        return f"{fmt.qty(value)}× the signal's own quantity"
    if sizing == "dollar_amount":
        return f"{fmt.money(value)} per entry"
    return f"{fmt.qty(value)} {SIZING_HELP[sizing]}"


SIDES_TEXT = {
    "both": "long and short entries",
    "long": "long entries only",
    "short": "short entries only",
}


# What setting_words says for a setting left off (None there), in a list of changes.
SETTING_OFF = (
    None,
    None,
    None,
    "no max positions",
    "reversals enter the whole signal quantity",
    "entries at any time",
    "no default take-profit or stop-loss",
    "market entries",
    "a signal's takeProfit is used",
)


def setting_words(
    settings: SubscriptionSettings,
) -> tuple[str, str, str, str | None, str | None, str | None, str | None, str | None, str | None]:
    """A subscription's sizing, sides, approval, max positions, reversal sizing, trading
    windows, default exits and entry order type in words (None: a setting left off, not
    said)."""
    defaults = (("take-profit", settings.take_profit), ("stop-loss", settings.stop_loss))
    exits = [f"{name} {value}" for name, value in defaults if value]
    return (
        sizing_text(settings.sizing.value, settings.sizing_value),
        SIDES_TEXT[settings.sides.value],
        # How long it waits: a card approved after that places nothing.
        f"each order waits {_duration(settings.approval_ttl_seconds)} for your approval by DM, "
        "then is not placed"
        if settings.manual_approval
        else "orders are sent automatically",
        f"at most {settings.max_positions} open position{plural(settings.max_positions)}"
        if settings.max_positions
        else None,
        "a reversal enters the signal's quantity less what it exited"
        if settings.subtract_exit_quantity
        else None,
        f"entries only {windows_phrase(settings.trading_windows)}"
        if settings.trading_windows
        else None,
        f"entries whose signal has none get a {' and a '.join(exits)} from the entry price"
        if exits
        else None,
        entry_order_words(settings.entry_order),
        None if settings.signal_take_profit else "a signal's takeProfit is ignored",
    )


def entry_order_words(entry_order: str | None) -> str | None:
    """ "limit +0.2%" in words (None: market entries)."""
    if not entry_order:
        return None
    allowance = entry_order.removeprefix("limit").strip().removeprefix("+")
    if allowance and not allowance.endswith("%"):
        allowance = f"${allowance}"
    past = f", or up to {allowance} past it" if allowance else ""
    return (
        "entries whose signal names no order type are limit orders at the quote (the ask to "
        f"buy, the bid to sell{past})"
    )


def _duration(seconds: int) -> str:
    """An approval's time to live as a member reads it: "5 min", "90 s", "2 h"."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def subscription_changes(before: SubscriptionInfo, after: SubscriptionInfo) -> list[str]:
    """What subscribing again changed: "old → new" per setting, and a resume."""
    words = zip(
        setting_words(before.settings), setting_words(after.settings), SETTING_OFF, strict=True
    )
    changes = [f"{a or off} → {b or off}" for a, b, off in words if a != b]
    if not before.enabled and after.enabled:
        changes.append("resumed (it was paused)")
    if before.enabled and not after.enabled:
        changes.append("paused")
    return changes


# Option values that remove a list or a limit ("any" reads better for an allow-list).
CLEAR = frozenset({"none", "any"})
BLURPLE = 0x5865F2


def guild_of(interaction: discord.Interaction) -> int:
    if interaction.guild_id is None:
        raise InvalidInput("Strategies belong to a server: use this command in one.")
    return interaction.guild_id


def list_option(text: str, example: str) -> list[str]:
    """A list option's entries, split at commas or spaces; "none" removes the list."""
    if text.strip().casefold() in CLEAR:
        return []
    entries = [e for e in re.split(r"[,\s]+", text) if e]
    if not entries:
        raise InvalidInput(f"List entries separated by commas, like {example}, or none.")
    return entries


def quantity_option(text: str) -> Decimal | None:
    if text.strip().casefold() in CLEAR:
        return None
    try:  # "12,000", as /strategy settings shows it, reads as 12000
        return Decimal(without_thousands(text.strip(), "max_quantity"))
    except InvalidOperation:
        raise InvalidInput(
            "max_quantity must be a number, like 100, or none to remove the limit."
        ) from None


def joined(items: Sequence[str], empty: str, limit: int = 1024) -> str:
    """Items on one line, cut to an embed field's size with a count of the rest."""
    text = ", ".join(items)
    if not items:
        return empty
    if len(text) <= limit:
        return text
    shown: list[str] = []
    for item in items:
        rest = f" … and {len(items) - len(shown)} more"
        if len(", ".join([*shown, item])) + len(rest) > limit:
            break
        shown.append(item)
    return ", ".join(shown) + f" … and {len(items) - len(shown)} more"


def cannot_post(channel: int, since: datetime, again: str) -> str:
    """The rest of a sentence on an alert channel posts were found to fail in (``again``: the
    options that choose it again, after ``channel:``)."""
    return (
        f"but I cannot post there since {discord.utils.format_dt(since)}: the channel was "
        "deleted, or I may no longer see it or send messages in it. Give me View Channel and "
        f"Send Messages there and choose it again (/alerts-channel channel:<#{channel}>{again}), "
        "or choose another channel. Signals still trade."
    )


def shared_with(info: StrategyInfo) -> str:
    """Mentions (shown as names; nothing pings in an embed), @everyone for the guild's role."""
    roles = ["@everyone" if r == info.guild_id else f"<@&{r}>" for r in info.shared_with_roles]
    members = [f"<@{m}>" for m in info.shared_with]
    return joined([*roles, *members], "nobody: /strategy share lets a member or a role subscribe")


def settings_embed(info: StrategyInfo) -> discord.Embed:
    sources = [
        "TradingView (its published addresses)" if s == TRADINGVIEW else s
        for s in info.allowed_sources
    ]
    embed = discord.Embed(title=f"Webhook settings · {info.name}"[:256], colour=BLURPLE)
    embed.add_field(name="Allowed sources", value=joined(sources, "any address"), inline=False)
    embed.add_field(
        name="Allowed tickers", value=joined(info.allowed_tickers, "every ticker"), inline=False
    )
    embed.add_field(name="Maximum signal age", value=f"{info.max_lag_seconds} s")
    embed.add_field(name="Rate limit", value=f"{info.rate_limit_per_minute} signals a minute")
    embed.add_field(
        name="Maximum quantity",
        value=fmt.qty(info.max_quantity) if info.max_quantity is not None else "no limit",
    )
    embed.add_field(
        name="Notional limits (per subscriber)",
        value=f"{describe_limit('max_order_notional', info.max_order_notional)}\n"
        f"{describe_limit('max_daily_notional', info.max_daily_notional)}",
        inline=False,
    )
    embed.add_field(name="Shared with", value=shared_with(info), inline=False)
    embed.add_field(
        name="Refusal DMs",
        value="on: refused signals are DMed to you, at most hourly"
        if info.refusal_notices
        else "off: /signal list still shows refused signals",
        inline=False,
    )
    embed.set_footer(
        text="Change with /strategy settings (notional limits: /limits strategy); the value "
        "none removes a list or the quantity limit. Signals whose time is older than the "
        "maximum age are refused, and one that waited longer than that to run places nothing."
    )
    return embed


SIZING_SHORT = {
    "fixed_quantity": "{} qty",
    "dollar_amount": "{}",
    "percent_of_equity": "{} equity",  # sizing_amount says "10%"
    "signal": "{}× signal",
}


def windows_column(text: str | None) -> str:
    """A subscription's trading windows, with their time zone (New York's: NY)."""
    if not text:
        return "any"
    return text if parse_windows(text).zone != NEW_YORK else f"{text} NY"


def subscription_rows(subs: Sequence[SubscriptionInfo]) -> list[list[str]]:
    """No account numbers: the connection's own name and the mode say where orders go."""
    return [
        [
            _cut(sub.strategy_name, 24),
            _cut(sub.connection_name, 24),
            mode_column(sub),
            SIZING_SHORT[sub.settings.sizing.value].format(
                sizing_amount(sub.settings.sizing, sub.settings.sizing_value)
            )
            + (" − exit" if sub.settings.subtract_exit_quantity else ""),
            sub.settings.sides.value,
            ("approve" if sub.settings.manual_approval else "auto")
            + (f", {sub.settings.entry_order}" if sub.settings.entry_order else ""),
            default_exits(sub.settings.take_profit, sub.settings.stop_loss),
            str(sub.settings.max_positions or "-"),
            windows_column(sub.settings.trading_windows),  # wide: fmt.paged pages by size
            "on" if sub.enabled else "paused",
        ]
        for sub in subs
    ]


def mode_column(sub: SubscriptionInfo) -> str:
    """The mode and the account type it trades in ("live, margin"): a futures strategy in a
    margin account is refused. Tradecord Paper's trades everything: its mode alone."""
    return sub.account.removesuffix(" account").replace("no account chosen", "no account")


def default_exits(take_profit: str | None, stop_loss: str | None) -> str:
    """/subscriptions' Exits column: the defaults an entry without its own exits gets."""
    parts = [f"TP {take_profit}" if take_profit else "", f"SL {stop_loss}" if stop_loss else ""]
    return " ".join(filter(None, parts)) or "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# An order's state in /signal show, where the stored words mean nothing to a member ("→ draft")
# or name its run's outcome otherwise ("failed": never placed, as the DM says).
ORDER_STATES = {"draft": "awaiting approval", "discarded": "not placed", "failed": "not placed"}


def clock(at: datetime, day: str) -> str:
    """UTC to the millisecond; the date only when it is not the report's own day."""
    utc = at.astimezone(UTC)
    stamp = f"{utc:%H:%M:%S}.{utc.microsecond // 1000:03d}"
    return stamp if f"{utc:%Y-%m-%d}" == day else f"{utc:%Y-%m-%d} {stamp}"


def outcome(report: SignalReport) -> str:
    """What became of the signal: "done" only says it was processed, and read as all went well
    when the order was rejected. Its subscriptions' results, counted when they differ."""
    if report.status != SignalStatus.DONE or not report.subscriptions:
        return report.status
    counts = Counter(outcome_words(sub.status, sub.reason_code) for sub in report.subscriptions)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def line_outcome(line: SignalLine) -> str:
    """/signal list's outcome column: why a signal did not trade, or its results counted."""
    if line.status == SignalStatus.REFUSED:
        return f"refused: {line.message_code}"
    if line.status == SignalStatus.DUPLICATE:
        return f"duplicate of {short_id(line.duplicate_of or '')}"
    if line.status != SignalStatus.DONE:
        return line.status  # queued or processing
    if not line.results:
        return "no subscription ran it"
    if sum(n for _, n in line.results) == 1:
        return line.results[0][0]
    return ", ".join(f"{n} {words}" for words, n in line.results)


async def recent_signal_ids(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete for /signal show: the member's newest signals matching what they typed
    (an id's end, a ticker, a strategy, an outcome)."""
    bot: Any = interaction.client
    typed = current.strip().casefold()
    choices = []
    for line in await bot.core.signals.recent_signals(interaction.user.id):
        label = (
            f"{line.received_at.astimezone(UTC):%m-%d %H:%M} {short_id(line.signal_id)} · "
            f"{line_signal(line)} · {line.strategy_name} · {line_outcome(line)}"
        )
        if typed in label.casefold() or typed in line.signal_id:
            choices.append(app_commands.Choice(name=_cut(label, 100), value=line.signal_id))
    return choices[:25]


def line_signal(line: SignalLine) -> str:
    what = " ".join(filter(None, [line.action, line.ticker])) or "unreadable"
    return _cut(what, 18) + (" (test)" if line.test else "")


def phase_table(phases: Sequence[Phase], day: str, budget: int) -> str:
    """Each phase with its UTC time and ms since receipt, cut to ``budget`` characters from
    the end (the first phases say the most about what happened)."""
    rows = [
        [
            p.name + (f" ({_cut(p.detail, 60)})" if p.detail else ""),
            clock(p.at, day),
            since_receipt(p.elapsed_ms),
        ]
        for p in phases
    ]
    headers = ["Phase", "UTC", "ms"]
    for shown in range(len(rows), -1, -1):
        more = [[f"… {len(rows) - shown} more", "", ""]] if shown < len(rows) else []
        text = fmt.table(headers, rows[:shown] + more, {2})
        if len(text) <= budget:
            return text
    return ""


def since_receipt(ms: int) -> str:
    """Milliseconds up to a minute; later steps (a fill hours on) as "4 m 10 s", "4 h 0 m"."""
    if ms < 60_000:
        return str(ms)
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60} m {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} m"


# Discord's embed limits: characters in all, fields, a field's name and value.
EMBED_CHARS, EMBED_FIELDS, FIELD_NAME, FIELD_VALUE = 6000, 25, 256, 1024


def subscription_label(sub: SubscriptionReport) -> str:
    """Whose run it is: the viewer's own by its connection; another member's never by theirs
    (its name is the member's own, and may say who they are), only by the name they chose to
    show in alerts, as the alert channel does."""
    status = outcome_words(sub.status, sub.reason_code)
    if sub.own:
        return f"You · {sub.connection_name or 'removed connection'} ({sub.mode}) · {status}"
    who = plain(sub.public_name) if sub.public_name else "A subscriber"
    return f"{who} ({sub.mode}) · {status}"


def subscription_field(sub: SubscriptionReport, day: str) -> tuple[str, str]:
    """A subscription's embed field: its steps, then its orders and why it ended. The reason
    is said once, in full below the steps: not also on the step it ended with ("skipped"),
    where the table cuts it."""
    orders = "; ".join(
        (f"{o.leg}: " if len(sub.orders) > 1 else "")
        + f"{o.side} {fmt.qty(o.quantity)} {o.symbol} → "
        + ORDER_STATES.get(o.status, o.status.replace("_", " "))
        # The broker's message is the member's own to see (it can quote their balance).
        + (f" ({o.error})" if sub.own and o.error and o.error not in (sub.reason or "") else "")
        for o in sub.orders
    )
    reason = sub.reason
    steps = [
        # A stored reason is cut to 500 characters; its step's detail is not.
        replace(p, detail=None) if reason and (p.detail or "")[:500] == reason else p
        for p in sub.phases
    ]
    extra = _cut("\n".join(filter(None, [orders, reason])), 400 if sub.own else 300)
    # On its own line after the table: text right after a closing ``` reads as part of the
    # block's last line.
    value = "\n".join(filter(None, [phase_table(steps, day, FIELD_VALUE - 1 - len(extra)), extra]))
    return _cut(subscription_label(sub), FIELD_NAME), value or "-"


def grouped_field(subs: Sequence[SubscriptionReport]) -> tuple[str, str] | None:
    """The subscriptions that did not fit one field each, counted by outcome ("18
    subscribers · filled"), most first."""
    if not subs:
        return None
    counts = Counter(
        (
            sub.own,
            outcome_words(sub.status, sub.reason_code),
            sub.reason_code if sub.status in ENDED_BY_REASON else None,
        )
        for sub in subs
    )
    lines = [
        f"{n} {'of yours' if own else f'subscriber{plural(n)}'} · {status}"
        + (f" ({code})" if code else "")
        for (own, status, code), n in counts.most_common()
    ]
    value = ""
    for shown, line in enumerate(lines):
        more = f"\n… {len(lines) - shown} more outcomes"
        if len(value) + 1 + len(line) + len(more) > FIELD_VALUE:
            value += more
            break
        value += ("\n" if value else "") + line
    return f"{len(subs)} more subscription{plural(len(subs))}", value


def signal_embed(report: SignalReport) -> discord.Embed:
    """/signal show: the signal's steps, then each subscription's, the viewer's own first (on
    a signal with hundreds of subscribers, theirs was often among those cut); the others that
    do not fit one field each are counted by outcome, within Discord's embed limits."""
    day = f"{report.received_at.astimezone(UTC):%Y-%m-%d}"
    head = [
        f"{report.action or '?'} {report.ticker or ''} · {outcome(report)}",
        f"Received {day} {clock(report.received_at, day)} UTC",
    ]
    if report.signal_time is not None:
        head.append(f"Alert time {clock(report.signal_time, day)} UTC")
        if report.latency_ms is not None:
            head[-1] += f" · {report.latency_ms} ms to reach us"
    if report.message_code:
        code = report.message_code
        head.append(f"{code}: {report.message}" if report.message else code)
    if report.duplicate_of:
        first = short_id(report.duplicate_of)
        head.append(f"Duplicate of `{first}`: /signal show id:{first} for what it traded")
    embed = discord.Embed(
        title=f"Signal {short_id(report.signal_id)} · {report.strategy_name}"[:256],
        description="\n".join(head)[:4096],
        colour=BLURPLE,
    )
    embed.add_field(name="Signal", value=phase_table(report.phases, day, 1024), inline=False)
    # The viewer's own first, the others in their order (a stable sort).
    subs = sorted(report.subscriptions, key=lambda sub: not sub.own)
    fields: list[tuple[str, str]] = []
    used = len(embed)

    def fits(more: Sequence[tuple[str, str] | None]) -> bool:
        added = [*fields, *(f for f in more if f is not None)]
        chars = used + sum(len(name) + len(value) for name, value in added)
        return chars <= EMBED_CHARS and len(embed.fields) + len(added) <= EMBED_FIELDS

    for n, sub in enumerate(subs):
        field = subscription_field(sub, day)
        if not fits([field, grouped_field(subs[n + 1 :])]):
            break
        fields.append(field)
    rest = grouped_field(subs[len(fields) :])
    for name, value in [*fields, *([rest] if rest else [])]:
        embed.add_field(name=name, value=value, inline=False)
    return embed


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=APPROVAL_BUTTON):
    def __init__(
        self, action: str, intent_id: str, item: discord.ui.Button[Any] | None = None
    ) -> None:
        super().__init__(
            item
            or discord.ui.Button(label=action.title(), custom_id=f"tc:appr:{action}:{intent_id}")
        )
        self.action, self.intent_id = action, intent_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> ApprovalButton:
        return cls(match["action"], match["intent"], item)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Tradecord = interaction.client  # type: ignore[assignment]
        signals = bot.core.signals
        try:
            run = signals.approve if self.action == "approve" else signals.reject
            # An expired card's press DMs "expired" before it returns: deferred if that is slow.
            result = await in_time(
                interaction, run(self.intent_id, interaction.user.id), ephemeral=True
            )
        except (Conflict, NotFound) as e:
            # Expired, already decided or gone: no later press can do anything either, so the
            # card says why and loses its buttons, as an expired /trade card does.
            await self._close(interaction, e.user_message)
            return
        except Exception as e:
            await report_error(interaction, e)
            return
        await self._close(interaction, result.message)

    @staticmethod
    async def _close(interaction: discord.Interaction, outcome: str) -> None:
        """The card keeps its text, gains the outcome and loses its buttons."""
        card = interaction.message.content if interaction.message else ""
        await update(interaction, content=closed_card(card, outcome), view=None)


class ConfirmDelete(ConfirmView):
    def __init__(
        self, owner_id: int, bot: Tradecord, guild_id: int, strategy: str, *, moderator: bool
    ) -> None:
        super().__init__(owner_id, timeout=60)
        self.bot, self.guild_id, self.strategy = bot, guild_id, strategy
        self.moderator = moderator  # a server admin deleting another member's strategy

    @discord.ui.button(label="Delete strategy", style=discord.ButtonStyle.danger)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        if self.moderator and not can_manage(interaction):  # checked again at the press
            raise PermissionDenied("Only server admins (Manage Server) delete others' strategies.")
        # Its subscribers are told by DM before this returns: deferred if that runs long.
        await in_time(
            interaction,
            self.bot.core.strategies.delete(
                self.guild_id, interaction.user.id, self.strategy, moderator=self.moderator
            ),
            ephemeral=True,
        )
        await self.answer(
            interaction, "Deleted: its webhook URL stops working and its subscriptions end."
        )

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self.answer(interaction, "Nothing was deleted.")


def url_message(name: str, url: str, verb: str, *, replaced: bool = False) -> str:
    """``replaced``: the URL replaces one whose alerts now fail, which the owner must fix."""
    old = (
        "The old URL stopped working just now: put this one in every alert that used it.\n"
        if replaced
        else ""
    )
    return (
        f"{verb} **{name}**. Its webhook URL, shown only now — paste it into the alert's "
        f"webhook field in TradingView and keep it secret:\n`{url}`\n{old}"
        "Lost it? /strategy rotate-secret makes a new one (the old one stops working).\n"
        "The alert's message, for a TradingView strategy (an indicator's alert writes its "
        f"own action):\n```json\n{ALERT_TEMPLATE}\n```"
        f"/strategy test sends a test signal to **{name}** now: nothing is placed."
    )


# TradingView's placeholders for a strategy's order fill (TradersPost's template). The time
# makes each alert differ, so a repeated order is not taken for a duplicate.
ALERT_TEMPLATE = (
    '{"ticker": "{{ticker}}", "action": "{{strategy.order.action}}", '
    '"sentiment": "{{strategy.market_position}}", '
    '"quantity": "{{strategy.order.contracts}}", "price": "{{close}}", "time": "{{timenow}}"}'
)


class Automation(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot
        # (guild, member) -> the display name last refreshed for alerts, so that most
        # interactions cost no statement.
        self._alert_names: dict[tuple[int, int], str] = {}

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ApprovalButton)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Members who left while the bot was away: with the Server Members intent, discord.py
        has every guild's member list by now (it chunks them before this event)."""
        if self.bot.intents.members:
            await self.reconcile_members()

    async def reconcile_members(self) -> None:
        """Who left, or lost a role a strategy is shared with, while the bot was away; and
        which owners others follow left."""
        strategies = self.bot.core.strategies
        for guild in self.bot.guilds:
            if not guild.chunked:
                continue  # not all of its members are known: absent is not gone
            for user_id in await strategies.followers(guild.id) | await strategies.followed(
                guild.id
            ):
                member = guild.get_member(user_id)
                roles = None if member is None else frozenset(r.id for r in member.roles)
                await strategies.reconcile_access(guild.id, user_id, roles, guild_name=guild.name)

    @commands.Cog.listener()
    async def on_raw_member_remove(self, payload: discord.RawMemberRemoveEvent) -> None:
        """Sent only with the Server Members intent (DISCORD_MEMBERS_INTENT)."""
        guild = self.bot.get_guild(payload.guild_id)
        await self.bot.core.strategies.member_left(
            payload.guild_id, payload.user.id, guild.name if guild is not None else None
        )

    @commands.Cog.listener()
    async def on_member_join(self, member: discord.Member) -> None:
        """Sent only with the Server Members intent: an owner who left and came back owns
        their strategies again (no longer "left the server"), so a next departure is news."""
        await self.bot.core.strategies.reconcile_access(
            member.guild.id,
            member.id,
            frozenset(r.id for r in member.roles),
            guild_name=member.guild.name,
        )

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        """Tradecord was removed from the server (kicked, banned, or the server deleted):
        nothing of its strategies may trade on, and their people hear it. Not sent for a
        server that is only unavailable (a Discord outage)."""
        await self.bot.core.strategies.guild_removed(guild.id, guild.name)

    async def _left(self, guild_id: int) -> bool:
        """Whether Tradecord is no longer in the guild. Asked of Discord when this process
        does not have it: with several shards, another process may."""
        if self.bot.get_guild(guild_id) is not None:
            return False
        try:
            await self.bot.fetch_guild(guild_id)
        except (discord.NotFound, discord.Forbidden):
            return True
        except discord.HTTPException:  # Discord cannot say: not known to be gone
            return False
        return False

    @commands.Cog.listener()
    async def on_guild_role_delete(self, role: discord.Role) -> None:
        """Its members lost it without a member update: the strategies shared with it stop
        being, and the subscriptions it alone gave end."""
        await self.bot.core.strategies.role_deleted(role.guild.id, role.id)

    @commands.Cog.listener()
    async def on_member_update(self, before: discord.Member, after: discord.Member) -> None:
        """Sent only with the Server Members intent: one who lost a role a strategy is shared
        with loses the subscriptions it gave them at once (without the intent, within the
        hour: ``StrategyService.check_members``)."""
        roles = frozenset(r.id for r in after.roles)
        if {r.id for r in before.roles} - roles:
            await self.bot.core.strategies.reconcile_access(
                after.guild.id, after.id, roles, guild_name=after.guild.name
            )
        if before.display_name != after.display_name:
            await self._refresh_alert_name(after)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Without the Server Members intent no member update says a member renamed: each of
        their interactions in a server carries their name there, so alerts follow it then."""
        if isinstance(interaction.user, discord.Member):
            try:
                await self._refresh_alert_name(interaction.user)
            except Exception:  # the command goes on; the next one tries again
                log.warning("Could not refresh a member's name for alerts", exc_info=True)

    async def _refresh_alert_name(self, member: discord.Member) -> None:
        """The name alerts show for ``member`` in their guild, as it is now. A statement only
        when the name differs from the last one this process saw for them there."""
        key = (member.guild.id, member.id)
        if self._alert_names.get(key) == member.display_name:
            return
        await self.bot.core.subscriptions.refresh_alert_name(
            member.id, member.guild.id, member.display_name
        )
        if len(self._alert_names) >= ALERT_NAMES_KEPT:
            self._alert_names.clear()
        self._alert_names[key] = member.display_name

    strategy = app_commands.Group(
        name="strategy", description="Webhook strategies", guild_only=True
    )

    @strategy.command(name="create", description="A new strategy with its own webhook URL")
    @app_commands.describe(name="A name you will recognise (unique in this server)")
    async def create(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 50]
    ) -> None:
        made = await self.bot.core.strategies.create(
            guild_of(interaction), interaction.user.id, name
        )
        await interaction.response.send_message(
            url_message(made.strategy.name, made.url, "Created"), ephemeral=True
        )

    @strategy.command(name="list", description="Strategies you own or that were shared with you")
    @app_commands.describe(everyone="Server admins: every strategy of this server, with its owner")
    async def list_(self, interaction: discord.Interaction, everyone: bool = False) -> None:
        if everyone:
            await self._list_everyones(interaction)
            return
        infos = await self.bot.core.strategies.list(
            guild_of(interaction), interaction.user.id, roles=roles_of(interaction)
        )
        if not infos:
            await interaction.response.send_message(
                "You have no strategies here. Make one with /strategy create.", ephemeral=True
            )
            return
        # Names run to 100 characters and allow-lists to 50 addresses: cut and paged, the
        # table fits Discord's embed limits however many strategies a member sees.
        rows = [
            [
                _cut(i.name, 32),
                "owner" if i.is_owner else "shared",
                # Its owner's to see (/strategy settings shows them to the owner alone).
                str(i.subscriptions) if i.is_owner else "-",
                _cut(", ".join(i.allowed_sources) or "any", 24) if i.is_owner else "-",
                f"{i.rate_limit_per_minute}/min",
                f"{i.last_signal_at.astimezone(UTC):%m-%d %H:%M}" if i.last_signal_at else "never",
            ]
            for i in infos
        ]
        pages = fmt.paged(
            "Strategies",
            "paper",
            "Strategies you own or that were shared with you.",
            rows,
            ["Name", "You", "Subs", "Sources", "Limit", "Last signal (UTC)"],
            {2},
            "Webhook URLs are shown once; /strategy rotate-secret for a new one · /signal list",
            empty="You have no strategies here. Make one with /strategy create.",
        )
        for page in pages:
            page.colour = discord.Colour(BLURPLE)
        await send_pages(interaction, pages)

    async def _list_everyones(self, interaction: discord.Interaction) -> None:
        """For moderation: owners as mentions (shown as names, never pinging), which a table's
        code block cannot show."""
        if not can_manage(interaction):
            raise PermissionDenied(
                "Only server admins (Manage Server) see every strategy of the server; "
                "/strategy list shows yours and those shared with you."
            )
        infos = await self.bot.core.strategies.list(
            guild_of(interaction), interaction.user.id, everyone=True
        )
        lines = [
            f"**{plain(i.name)}** · <@{i.owner_discord_id}>"
            + (" (left the server)" if i.owner_left_at else "")
            + f" · {i.subscriptions} "
            f"subscription{plural(i.subscriptions)} · last signal "
            + (
                f"{i.last_signal_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                if i.last_signal_at
                else "never"
            )
            for i in infos
        ]
        chunks = [lines[n : n + fmt.PAGE_ROWS] for n in range(0, len(lines), fmt.PAGE_ROWS)]
        pages = [
            discord.Embed(
                title="Every strategy of this server",
                description="\n".join(chunk) or "This server has no strategies.",
                colour=BLURPLE,
            ).set_footer(
                text=f"Page {n} of {len(chunks)} · a server admin may /strategy delete any"
                if len(chunks) > 1
                else "A server admin may /strategy delete any of them."
            )
            for n, chunk in enumerate(chunks or [[]], 1)
        ]
        await send_pages(interaction, pages)

    @strategy.command(
        name="subscribers", description="Who subscribes to a strategy of yours (server admins: any)"
    )
    @app_commands.autocomplete(strategy=managed_strategy_names)
    async def subscribers(self, interaction: discord.Interaction, strategy: str) -> None:
        info, subs = await self.bot.core.strategies.subscribers(
            guild_of(interaction), interaction.user.id, strategy, moderator=can_manage(interaction)
        )
        lines = [
            f"<@{s.discord_user_id}> · {s.mode}"
            + ("" if s.enabled else " · paused")
            + f" · since {s.since.astimezone(UTC):%Y-%m-%d}"
            for s in subs
        ]
        live = sum(s.mode == "live" for s in subs)
        summary = (
            f"{len(subs)} subscription{plural(len(subs))}, {live} live · which connection and "
            "how much is theirs alone to see"
            if subs
            else "/strategy share lets a member or a role subscribe."
        )
        chunks = [lines[n : n + fmt.PAGE_ROWS] for n in range(0, len(lines), fmt.PAGE_ROWS)]
        pages = [
            discord.Embed(
                title=f"Subscribers · {info.name}"[:256],
                description="\n".join(chunk) or "Nobody subscribes to it.",
                colour=BLURPLE,
            ).set_footer(
                text=summary + (f" · page {n} of {len(chunks)}" if len(chunks) > 1 else "")
            )
            for n, chunk in enumerate(chunks or [[]], 1)
        ]
        await send_pages(interaction, pages)

    @strategy.command(name="rotate-secret", description="A new webhook URL; the old one stops")
    @app_commands.autocomplete(strategy=strategy_names)
    async def rotate(self, interaction: discord.Interaction, strategy: str) -> None:
        made = await self.bot.core.strategies.rotate_secret(
            guild_of(interaction), interaction.user.id, strategy, roles=roles_of(interaction)
        )
        await interaction.response.send_message(
            url_message(made.strategy.name, made.url, "New secret for", replaced=True),
            ephemeral=True,
        )

    @strategy.command(
        name="delete", description="Delete a strategy you own (server admins: any of this server's)"
    )
    @app_commands.autocomplete(strategy=managed_strategy_names)
    async def delete(self, interaction: discord.Interaction, strategy: str) -> None:
        admin = can_manage(interaction)
        # With their roles: one it is shared with through a role hears it is not theirs.
        info = await self.bot.core.strategies.get(
            guild_of(interaction),
            interaction.user.id,
            strategy,
            roles=roles_of(interaction),
            moderator=admin,
        )
        if not info.is_owner and not admin:
            raise PermissionDenied(
                f"“{info.name}” was shared with you, but only its owner can delete it. To stop "
                f"its signals trading for you: /unsubscribe strategy:{info.name}."
            )
        whose = (
            "" if info.is_owner else f", <@{info.owner_discord_id}>'s strategy, as a server admin"
        )
        view = ConfirmDelete(
            interaction.user.id,
            self.bot,
            guild_of(interaction),
            info.id,
            moderator=not info.is_owner,
        )
        await interaction.response.send_message(
            f"Delete **{info.name}**{whose}? Its {info.subscriptions} "
            f"subscription{plural(info.subscriptions)} will end and its webhook URL will "
            "stop working" + (" and its owner is told." if not info.is_owner else "."),
            view=view,
            ephemeral=True,
        )
        view.message = await interaction.original_response()

    @strategy.command(name="settings", description="See or change a strategy's webhook rules")
    @app_commands.describe(
        strategy="A strategy you own",
        allowed_sources="tradingview, or addresses/ranges like 203.0.113.0/24; none: any",
        allowed_tickers="Tickers like AAPL, /ES, BTCUSD, comma-separated; none: every ticker",
        max_lag_seconds="Refuse signals older than this (by their time, or their arrival)",
        rate_limit_per_minute="Signals accepted a minute (429 past that)",
        max_quantity="Refuse fixed quantities above this; none: no limit",
        refusal_notices="DM you, at most hourly, when signals are refused (default: on)",
    )
    @app_commands.autocomplete(strategy=strategy_names)
    async def settings(
        self,
        interaction: discord.Interaction,
        strategy: str,
        allowed_sources: str | None = None,
        allowed_tickers: str | None = None,
        max_lag_seconds: app_commands.Range[int, MIN_LAG_SECONDS, MAX_LAG_SECONDS] | None = None,
        rate_limit_per_minute: app_commands.Range[int, MIN_RATE_LIMIT, MAX_RATE_LIMIT]
        | None = None,
        max_quantity: str | None = None,
        refusal_notices: bool | None = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if allowed_sources is not None:
            changes["allowed_sources"] = list_option(allowed_sources, "tradingview, 203.0.113.7")
        if allowed_tickers is not None:
            changes["allowed_tickers"] = list_option(allowed_tickers, "AAPL, BTCUSD")
        if max_lag_seconds is not None:
            changes["max_lag_seconds"] = max_lag_seconds
        if rate_limit_per_minute is not None:
            changes["rate_limit_per_minute"] = rate_limit_per_minute
        if max_quantity is not None:
            changes["max_quantity"] = quantity_option(max_quantity)
        if refusal_notices is not None:
            changes["refusal_notices"] = refusal_notices
        strategies = self.bot.core.strategies
        guild = guild_of(interaction)
        roles = roles_of(interaction)
        if changes:
            info = await strategies.configure(
                guild, interaction.user.id, strategy, roles=roles, **changes
            )
            content = "Saved; the webhook applies these from the next signal."
        else:
            info = await strategies.get(guild, interaction.user.id, strategy, roles=roles)
            if not info.is_owner:
                raise PermissionDenied(
                    f"“{info.name}” was shared with you, but only its owner can see its webhook "
                    "settings. /subscriptions shows how your subscription trades it."
                )
            content = None
        await interaction.response.send_message(
            content,
            embed=settings_embed(info),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @strategy.command(name="test", description="Send a test signal: nothing is placed")
    @app_commands.describe(
        strategy="Your strategy",
        ticker="The symbol, as an alert would send it (AAPL, BTCUSD, ESZ2026)",
        action="What the signal says to do",
        quantity="The signal's quantity (default: each subscription's own sizing)",
    )
    @app_commands.autocomplete(strategy=owned_strategy_names)
    async def test(
        self,
        interaction: discord.Interaction,
        strategy: str,
        ticker: app_commands.Range[str, 1, 32],
        action: Literal["buy", "sell", "exit", "cancel", "add"],
        quantity: app_commands.Range[str, 1, 20] | None = None,
    ) -> None:
        core = self.bot.core
        auth = await core.strategies.owner_auth(
            guild_of(interaction), interaction.user.id, strategy
        )
        ack = await core.signals.send_test(auth, ticker.strip(), action, quantity)
        name = as_text(auth.name)
        if ack.status == 202:
            signal_id = short_id(str(ack.body["id"]))
            content = (
                f"Sent a test signal to **{name}**: {action} {ack.body['payload']['ticker']}"
                + (f" × {quantity.strip()}" if quantity else "")
                + ". Each subscription works out what it would do, and its member is told; "
                f"nothing is placed. /signal show id:{signal_id} shows each step."
            )
        elif ack.status == 400:
            content = (
                f"**{name}** refused the test signal, as it would the same alert: "
                f"`{ack.body['messageCode']}`: {ack.body['message']}"
            )
        else:  # 429: the strategy's signals of the last minute
            content = str(ack.body["message"])
        await interaction.response.send_message(content, ephemeral=True)

    @strategy.command(
        name="share", description="Let a member, or the members of a role, subscribe to it"
    )
    @app_commands.describe(
        strategy="A strategy you own",
        member="A member of this server",
        role="A role: its members may subscribe while they have it (@everyone: everyone here)",
    )
    @app_commands.autocomplete(strategy=owned_strategy_names)
    async def share(
        self,
        interaction: discord.Interaction,
        strategy: str,
        member: discord.Member | None = None,
        role: discord.Role | None = None,
    ) -> None:
        strategies = self.bot.core.strategies
        guild = guild_of(interaction)
        if (member is None) == (role is None):
            raise InvalidInput("Choose a member or a role to share it with (one of them).")
        if role is not None:
            info = await in_time(
                interaction,
                strategies.share_role(guild, interaction.user.id, strategy, role.id),
                ephemeral=True,
            )
            # Without the Server Members intent the hourly check finds it (StrategyService).
            when = "at once" if self.bot.intents.members else "within the hour"
            text = (
                f"**{info.name}** is shared with {role_text(role)}: its members can now "
                "/subscribe while they have the role. One who loses it, or leaves the server, "
                f"loses their subscription {when} and is told."
                if not role.is_default()
                else f"**{info.name}** is shared with everyone in this server: any member can "
                f"now /subscribe. One who leaves the server loses their subscription {when} and "
                "is told."
            )
        else:
            assert member is not None
            if member.bot:
                raise InvalidInput("A bot cannot subscribe to a strategy; pick a member.")
            # The member is told by DM before this returns: deferred if that runs long.
            info = await in_time(
                interaction,
                strategies.share(
                    guild,
                    interaction.user.id,
                    strategy,
                    member.id,
                    guild_name=interaction.guild.name if interaction.guild else None,
                ),
                ephemeral=True,
            )
            text = (
                f"**{info.name}** is shared with {as_text(member.display_name)}; they can now "
                "/subscribe."
            )
        await reply(
            interaction,
            content=text,
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @strategy.command(name="unshare", description="Stop sharing a strategy with a member or role")
    @app_commands.describe(
        strategy="A strategy you own",
        member="A member it is shared with: their subscriptions end, unless a role still gives it",
        role="A role it is shared with: the subscriptions it gave end",
    )
    @app_commands.autocomplete(strategy=owned_strategy_names)
    async def unshare(
        self,
        interaction: discord.Interaction,
        strategy: str,
        member: discord.Member | None = None,
        role: discord.Role | None = None,
    ) -> None:
        strategies = self.bot.core.strategies
        guild = guild_of(interaction)
        if (member is None) == (role is None):
            raise InvalidInput("Choose the member or the role to stop sharing it with.")
        if role is not None:
            # Each subscriber's roles are asked of Discord: slow with many of them.
            await interaction.response.defer(ephemeral=True, thinking=True)
            info, lost = await strategies.unshare_role(
                guild, interaction.user.id, strategy, role.id
            )
            text = f"**{info.name}** is no longer shared with {role_text(role)}. " + (
                f"{lost} subscriber{plural(lost)} with no other way to it lost "
                f"{'their subscriptions' if lost != 1 else 'their subscription'} and "
                f"{'were' if lost != 1 else 'was'} told."
                if lost
                else "No subscriber lost it: none had it through this role alone."
            )
            await interaction.followup.send(
                text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
            )
            return
        assert member is not None
        done = await in_time(  # the member is told by DM before this returns
            interaction,
            strategies.unshare(
                guild, interaction.user.id, strategy, member.id, roles={r.id for r in member.roles}
            ),
            ephemeral=True,
        )
        who = as_text(member.display_name)
        if done.kept:
            after = (
                f"A role of theirs still has it shared, so they keep their subscription"
                f"{plural(done.kept)}: /strategy unshare with that role ends it."
            )
        elif done.ended:
            after = f"Their subscription{plural(done.ended)} to it ended, and they were told."
        else:
            after = "They had no subscription to it."
        await reply(
            interaction,
            ephemeral=True,
            content=f"**{done.info.name}** is no longer shared with {who}. {after}",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @strategy.command(
        name="transfer", description="Give a strategy to another member (server admins: any)"
    )
    @app_commands.describe(strategy="The strategy", member="Its new owner, a member of this server")
    @app_commands.autocomplete(strategy=managed_strategy_names)
    async def transfer(
        self, interaction: discord.Interaction, strategy: str, member: discord.Member
    ) -> None:
        if member.bot:
            raise InvalidInput("A bot cannot own a strategy; pick a member.")
        info = await in_time(  # the new owner is told by DM before this returns
            interaction,
            self.bot.core.strategies.transfer(
                guild_of(interaction),
                interaction.user.id,
                strategy,
                member.id,
                moderator=can_manage(interaction),
            ),
            ephemeral=True,
        )
        await reply(
            interaction,
            ephemeral=True,
            content=f"**{info.name}** now belongs to {as_text(member.display_name)}, who was "
            "told. Its webhook URL, settings and subscriptions stay as they were.",
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(
        name="subscribe", description="Route a strategy's signals to a connection"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        strategy="A strategy you own or that was shared with you",
        connection="Which connection trades it (default: the one it trades on, else Tradecord "
        "Paper)",
        mode="paper or live (default: the one it trades in, else paper)",
        sizing="How big each entry is (new: the signal's quantity; else unchanged)",
        sizing_value="The number for the sizing (e.g. 10 shares, $500, 5%)",
        sides="Which entries to take (new: both; else unchanged)",
        approval="Ask me (by DM) before each order (new: no; else unchanged)",
        approval_minutes="With approval: how long an order waits for it (1 to 1440; new: 5)",
        max_positions="Max strategy positions: every open position on the account, and entries "
        "sent; 0: none",
        subtract_exit_quantity="sizing signal: a reversal enters the signal's quantity less the "
        "exit (long 5, sell 10: short 5)",
        trading_windows="Times for entries: mon-fri 09:45-15:30 (New York's), or 08:00-16:30 "
        "london; none: any",
        take_profit="For signals without one: 5% or 2.50 from the entry price (none: no default)",
        signal_take_profit="Use a signal's own takeProfit (TradersPost's Use signal take "
        "profit; new: yes)",
        stop_loss="For signals without one: 2%, 1.50, or trailing: trail 2% (none: no default)",
        entry_order="For signals naming no order type: market (default), limit at the quote, "
        "or limit 0.2%",
        active="false pauses it (no signals; its settings are kept), true resumes it",
    )
    @app_commands.autocomplete(strategy=strategy_names, connection=connection_names)
    async def subscribe(
        self,
        interaction: discord.Interaction,
        strategy: str,
        connection: str | None = None,
        mode: Literal["paper", "live"] | None = None,
        sizing: Literal["fixed_quantity", "dollar_amount", "percent_of_equity", "signal"]
        | None = None,
        sizing_value: str | None = None,
        sides: Literal["both", "long", "short"] | None = None,
        approval: bool | None = None,
        approval_minutes: app_commands.Range[int, 1, 1440] | None = None,
        max_positions: app_commands.Range[int, 0, 1000] | None = None,
        subtract_exit_quantity: bool | None = None,
        trading_windows: str | None = None,
        take_profit: str | None = None,
        signal_take_profit: bool | None = None,
        stop_loss: str | None = None,
        entry_order: app_commands.Range[str, 1, 40] | None = None,
        active: bool | None = None,
    ) -> None:
        # Options left out keep what the subscription has: changing one must not reset others.
        changes: dict[str, Any] = {}
        if sizing is not None:
            changes["sizing"] = Sizing(sizing)
        unit = None
        if sizing_value is not None:
            # "1,500" as /subscriptions shows it; "$1,500" for a dollar amount, "5%" of equity.
            # The service checks "$" or "%" against the sizing, which only it may know.
            raw = sizing_value.strip()
            if raw.startswith("$"):
                unit, raw = "$", raw.removeprefix("$").strip()
            elif raw.endswith("%"):
                unit, raw = "%", raw.removesuffix("%").strip()
            raw = without_thousands(raw, "sizing_value")
            try:
                changes["sizing_value"] = Decimal(raw)
            except InvalidOperation:
                # Without sizing: the subscription's own, which only the service knows.
                help_ = f" ({SIZING_HELP[sizing]})" if sizing is not None else ""
                raise InvalidInput(
                    f"sizing_value must be a number{help_}, like 10 or 2.5 — “{sizing_value}” "
                    "is not."
                ) from None
        if sides is not None:
            changes["sides"] = Sides(sides)
        if approval is not None:
            changes["manual_approval"] = approval
        if approval_minutes is not None:
            # A day trader's signal is stale in a minute, a swing trader's in an hour.
            changes["approval_ttl_seconds"] = approval_minutes * 60
        if max_positions is not None:
            changes["max_positions"] = max_positions or None
        if subtract_exit_quantity is not None:
            changes["subtract_exit_quantity"] = subtract_exit_quantity
        if signal_take_profit is not None:
            changes["signal_take_profit"] = signal_take_profit
        for name, value in (
            ("trading_windows", trading_windows),
            ("take_profit", take_profit),
            ("stop_loss", stop_loss),
            ("entry_order", entry_order),
        ):
            if value is not None:
                changes[name] = None if value.strip().casefold() in CLEAR else value
        info = await self.bot.core.subscriptions.subscribe(
            guild_of(interaction),
            interaction.user.id,
            strategy,
            connection=connection,
            mode=mode,
            changes=changes,
            enabled=active,
            roles=roles_of(interaction),
            sizing_unit=unit,
        )
        where = f"**{info.connection_name}** ({info.account})"
        terms = ", ".join(w for w in setting_words(info.settings) if w)
        if info.previous is None:
            # As at TradersPost, a position is the account's: said once, before it surprises.
            text = (
                f"{where} now trades **{info.strategy_name}**: {terms}. Its exits close the "
                "account's whole position in a symbol, shares you traded yourself included."
            )
        else:
            # It existed: say so, and list what changed (options left out kept their values).
            changed = subscription_changes(info.previous, info)
            text = f"Updated: {where} trades **{info.strategy_name}**: {terms}. " + (
                f"Changed: {'; '.join(changed)}." if changed else "Nothing changed."
            )
        if not info.enabled:
            resume = subscribe_command(
                info.strategy_name, info.connection_name, info.mode, "active:true"
            )
            text += f" It is paused: it takes no signals until you resume it ({resume})."
        if info.warning:
            text += f"\n⚠️ {info.warning}"
        await interaction.response.send_message(text, ephemeral=True)

    # Not guild_only: a strategy of a server Tradecord was removed from is stopped from DMs.
    @app_commands.command(name="unsubscribe", description="Stop a connection trading a strategy")
    @app_commands.describe(
        strategy="The strategy to stop",
        connection="Which connection stops (needed only if several trade the strategy)",
        mode="paper or live (needed only if the connection trades it in both)",
    )
    # Every connection, Tradecord Paper included: its subscriptions can be stopped too.
    @app_commands.autocomplete(strategy=strategy_names, connection=connection_names)
    async def unsubscribe(
        self,
        interaction: discord.Interaction,
        strategy: str,
        connection: str | None = None,
        mode: Literal["paper", "live"] | None = None,
    ) -> None:
        sub = await self.bot.core.subscriptions.unsubscribe(
            interaction.guild_id,
            interaction.user.id,
            strategy,
            connection=connection,
            mode=mode,
            roles=roles_of(interaction),
            left=self._left,
        )
        await interaction.response.send_message(
            f"Unsubscribed **{sub.connection_name}** ({sub.mode}) from **{sub.strategy_name}**; "
            "no new orders from it. Orders already placed and positions stay as they are.",
            ephemeral=True,
        )

    @app_commands.command(
        name="subscriptions", description="Your subscriptions and their settings (private)"
    )
    async def subscriptions(self, interaction: discord.Interaction) -> None:
        # In a server: that server's strategies; in DMs: every server's.
        subs = await self.bot.core.subscriptions.list_for(interaction.user.id, interaction.guild_id)
        if not subs:
            await interaction.response.send_message(
                "You have no subscriptions"
                + (" in this server" if interaction.guild_id else "")
                + ". Subscribe a connection with /subscribe.",
                ephemeral=True,
            )
            return
        live = any(sub.mode == "live" for sub in subs)
        pages = fmt.paged(
            "Your subscriptions",
            "live" if live else "paper",
            "Where each strategy's signals trade, and how.",
            subscription_rows(subs),
            [
                "Strategy",
                "Connection",
                "Mode",
                "Sizing",
                "Sides",
                "Orders",
                "Exits",
                "Max",
                "Entries",
                "Status",
            ],
            {7},
            f"{len(subs)} subscription{plural(len(subs))} · change with /subscribe, stop with "
            "/unsubscribe",
            empty="You have no subscriptions. Subscribe a connection with /subscribe.",
        )
        await send_pages(interaction, pages)

    # Members' own alert settings. Choosing the channel is a command of its own: Discord sets
    # default permissions per top-level command, and members must still see this group.
    alerts = app_commands.Group(
        name="alerts", description="Trade alerts in channels", guild_only=True
    )

    # Hidden from members by default; server admins can override that, so it checks Manage
    # Server again when it runs.
    @app_commands.command(
        name="alerts-channel", description="Where this server's trade alerts go (admins)"
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.describe(
        channel="The channel (leave out, and off, to see where alerts go now)",
        strategy="Only this strategy's alerts (default: all)",
        off="Stop posting (for a strategy: its alerts go to the server's channel again)",
    )
    # Any of the server's: choosing where alerts go is an admin's, not the strategy owner's.
    @app_commands.autocomplete(strategy=managed_strategy_names)
    async def alerts_channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        strategy: str | None = None,
        off: bool = False,
    ) -> None:
        if not can_manage(interaction):
            raise PermissionDenied("Only members with Manage Server choose the alert channel.")
        if channel is not None and off:
            raise InvalidInput("Give a channel to post in, or off:true to stop posting; not both.")
        if channel is None and not off:
            # Asking where alerts go must not change where they go.
            content = await self._alert_routes_text(guild_of(interaction), strategy)
            await interaction.response.send_message(content, ephemeral=True)
            return
        await self.bot.core.strategies.set_alert_channel(
            guild_of(interaction), channel.id if channel else None, strategy=strategy
        )
        # Said as a bare /alerts-channel says it: for the server, the strategies with their own
        # channel too ("all strategies go to nowhere" was not true while they posted); for a
        # strategy, by its own name, and where its alerts go now.
        content = "Saved. " + await self._alert_routes_text(guild_of(interaction), strategy)
        # Alerts that cannot be posted are only logged (the signals still trade): say so now,
        # while the admin is here to fix the channel's permissions.
        me = channel.guild.me if channel is not None else None
        if channel is not None and me is not None:
            perms = channel.permissions_for(me)
            missing = [
                label
                for label, has in (
                    ("View Channel", perms.view_channel),
                    ("Send Messages", perms.send_messages),
                )
                if not has
            ]
            if missing:
                content += (
                    f"\nI cannot post there yet: I need {' and '.join(missing)} in "
                    f"{channel.mention}. Until then no alerts appear (signals still trade)."
                )
        await interaction.response.send_message(content, ephemeral=True)

    async def _alert_routes_text(self, guild_id: int, strategy: str | None) -> str:
        strategies = self.bot.core.strategies
        if strategy:
            name, channel, own, failing = await strategies.strategy_alerts(guild_id, strategy)
            if channel is None:
                return (
                    f"Trade alerts for **{name}** are not posted: it has no channel of its own "
                    "and the server has none (its signals still trade). Choose one with "
                    f"/alerts-channel channel:#channel strategy:{name}."
                )
            whose = "its own channel" if own else "the server's alert channel"
            said = f"Trade alerts for **{name}** go to <#{channel}> ({whose})."
            if failing is not None:
                again = f" strategy:{name}" if own else ""
                said = (
                    f"Trade alerts for **{name}** should go to <#{channel}> ({whose}), "
                    + cannot_post(channel, failing, again)
                )
            return said
        routes = await strategies.alert_routes(guild_id)
        if routes.default is None:
            posted = "only the strategies below post" if routes.strategies else "nothing is posted"
            head = (
                f"This server has no alert channel: signals trade, but {posted}. "
                "Choose one with /alerts-channel channel:#channel."
            )
        elif routes.default in routes.failing:
            head = f"Trade alerts should go to <#{routes.default}>, " + cannot_post(
                routes.default, routes.failing[routes.default], ""
            )
        else:
            head = f"Trade alerts go to <#{routes.default}>."
        lines: list[str] = []
        flagged = False
        for name, channel in routes.strategies:
            line = f"• **{name}** → <#{channel}>"
            if channel in routes.failing:
                since = discord.utils.format_dt(routes.failing[channel])
                line += f" ⚠️ I cannot post there since {since}"
            # A message holds 2,000 characters: at most 15 lines, and not past 1,300 of them.
            if len(lines) == 15 or sum(len(x) + 1 for x in lines) + len(line) > 1300:
                lines.append(f"• and {len(routes.strategies) - len(lines)} more")
                break
            lines.append(line)
            flagged |= channel in routes.failing
        if lines:
            head += "\nStrategies with a channel of their own:\n" + "\n".join(lines)
            if flagged:
                head += "\n/alerts-channel strategy:<name> says how to fix a channel marked ⚠️."
        if routes.default is None:
            # off:true alone would not stop a strategy's own channel.
            tail = "To stop one: /alerts-channel off:true strategy:<name>." if lines else ""
        else:
            tail = "To stop posting: /alerts-channel off:true" + (
                "; for a strategy's own channel, add strategy:<name>." if lines else "."
            )
        return "\n".join(filter(None, [head, tail]))

    @alerts.command(name="show-my-name", description="Whether alerts may name you")
    async def show_name(self, interaction: discord.Interaction, show: bool) -> None:
        assert interaction.guild_id is not None  # a server command
        name = await self.bot.core.subscriptions.set_alerts_show_name(
            interaction.user.id, interaction.guild_id, show, interaction.user.display_name
        )
        if name is None:
            content = "Alerts in this server will say “a subscriber” instead of your name."
        else:
            # Without the Server Members intent no member update says they renamed.
            when = "" if self.bot.intents.members else " from your next Tradecord command here"
            content = (
                f"Alerts in this server will name you as “{as_text(name)}”, your name here (as "
                "plain text, never a mention). They follow it: change your server nickname and "
                f"they show the new one{when}. Other servers still say “a subscriber”."
            )
        await interaction.response.send_message(content, ephemeral=True)

    signal = app_commands.Group(name="signal", description="Webhook signals")

    @signal.command(name="list", description="The latest signals and what became of them")
    @app_commands.describe(strategy="Only this strategy's (default: every strategy you can see)")
    @app_commands.autocomplete(strategy=strategy_names)
    async def list_signals(
        self, interaction: discord.Interaction, strategy: str | None = None
    ) -> None:
        core = self.bot.core
        info, gone = None, None
        if strategy:
            try:
                info = await core.strategies.get(
                    guild_of(interaction),
                    interaction.user.id,
                    strategy,
                    roles=roles_of(interaction),
                )
            except NotFound:
                # No longer shared with them: the signals that ran for them are still theirs
                # to read, as /signal list without strategy: shows them.
                gone = await core.strategies.named(guild_of(interaction), strategy)
        lines = await in_time(
            interaction,
            core.signals.recent_signals(
                interaction.user.id, strategy_id=info.id if info else gone and gone[0]
            ),
            ephemeral=True,
        )
        if gone is not None and not lines:
            raise NotFound(
                f"No strategy “{plain(strategy or '')}” here that you own or that was shared "
                "with you, and none of its signals ran for you. See /strategy list."
            )
        names = {line.strategy_name for line in lines}
        by_strategy = info is None and gone is None and len(names) > 1
        rows = [
            [
                f"{line.received_at.astimezone(UTC):%m-%d %H:%M:%S}",
                short_id(line.signal_id),
                line_signal(line),
                *([_cut(line.strategy_name, 16)] if by_strategy else []),
                _cut(line_outcome(line), 48),
            ]
            for line in lines
        ]
        if gone is not None:
            header = (
                f"{len(lines)} signal{plural(len(lines))} of {as_text(gone[1])} that ran for "
                "you, newest first (it is no longer shared with you)."
            )
            empty = ""
        elif info is None:
            header = (
                f"{len(lines)} signal{plural(len(lines))} of your strategies, newest first, "
                "and of shared ones those that ran for you."
            )
            empty = (
                "No signals yet. A strategy's signals arrive at its webhook URL "
                "(/strategy list shows your strategies)."
            )
        else:
            whose = "" if info.is_owner else ", those that ran for you"
            header = (
                f"{len(lines)} signal{plural(len(lines))} of {as_text(info.name)}{whose}, "
                "newest first."
            )
            empty = (
                f"No signals of {as_text(info.name)} yet."
                if info.is_owner
                else f"None of {as_text(info.name)}'s signals has run for you yet."
            )
        if not lines:
            await reply(interaction, content=empty, ephemeral=True)
            return
        pages = fmt.paged(
            "Signals",
            "paper",
            header,
            rows,
            ["UTC", "Id", "Signal", *(["Strategy"] if by_strategy else []), "Outcome"],
            set(),
            "/signal show id: every step of one signal",
            empty=empty,
        )
        for page in pages:
            page.colour = discord.Colour(BLURPLE)
        await send_pages(interaction, pages)

    @signal.command(name="show", description="Every step of one signal, with timings")
    @app_commands.describe(id="The signal id (from the webhook answer or your DM)")
    @app_commands.autocomplete(id=recent_signal_ids)
    async def show(self, interaction: discord.Interaction, id: str) -> None:
        report = await in_time(
            interaction,
            self.bot.core.signals.signal_report(id.strip(), interaction.user.id),
            ephemeral=True,
        )
        await reply(interaction, embed=signal_embed(report), ephemeral=True)


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(Automation(bot))
