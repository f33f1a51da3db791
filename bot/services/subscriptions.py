"""Subscriptions: a member routes a strategy's signals to one of their connections, with their
own sizing, allowed sides, approval and position rules. Also the member's alert preferences.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from adapters import symbols
from adapters.registry import get_adapter_class
from bot.automation_models import AlertPreference, Strategy, Subscription
from bot.db_types import plain
from bot.errors import InvalidInput, NotFound, PermissionDenied
from bot.models import Connection
from bot.services import audit
from bot.services.approvals import close_withdrawn, withdraw_approvals
from bot.services.connections import MODES
from bot.signal_format import (
    MAX_DECIMALS,
    MAX_NUMBER,
    distance,
    exit_default,
    exit_default_text,
)
from bot.trading_windows import parse_windows, windows_text
from bot.wording import money, qty

if TYPE_CHECKING:
    from bot.core import Core


class Sizing(StrEnum):
    FIXED_QUANTITY = "fixed_quantity"  # value: units per entry
    DOLLAR_AMOUNT = "dollar_amount"  # value: dollars per entry
    PERCENT_OF_EQUITY = "percent_of_equity"  # value: percent of the account's equity
    SIGNAL = "signal"  # value: multiplier applied to the signal's own quantity


class Sides(StrEnum):
    BOTH = "both"
    LONG = "long"
    SHORT = "short"


@dataclass(frozen=True, slots=True)
class SubscriptionSettings:
    sizing: Sizing = Sizing.FIXED_QUANTITY
    sizing_value: Decimal = Decimal(1)
    sides: Sides = Sides.BOTH
    manual_approval: bool = False
    approval_ttl_seconds: int = 300
    max_positions: int | None = None  # TradersPost's deprecated "max strategy positions"
    subtract_exit_quantity: bool = False  # a reversal enters the signal's quantity less the exit
    trading_windows: str | None = None  # New York times entries may be placed ("09:45-15:30")
    take_profit: str | None = None  # for entries whose signal has none: "5%", "2.50"
    stop_loss: str | None = None  # likewise: "2%", "1.50", "trail 2%"
    # Entries whose signal names no order type (TradersPost's entry order type): None, market;
    # "limit" at the quote; "limit +0.2%" / "limit +0.05" up to that far past it.
    entry_order: str | None = None
    signal_take_profit: bool = True  # TradersPost's "Use signal take profit"

    def validated(self) -> SubscriptionSettings:
        sizing, sides = Sizing(self.sizing), Sides(self.sides)
        value = Decimal(self.sizing_value)
        # More decimals than a quantity may have would be stored rounded (to 0, at worst).
        if (
            not value.is_finite()
            or not 0 < value < MAX_NUMBER
            or -int(value.normalize().as_tuple().exponent) > MAX_DECIMALS
        ):
            raise InvalidInput(
                f"The sizing value must be a positive number below {MAX_NUMBER:,} with at "
                f"most {MAX_DECIMALS} decimals; {value:f} is not."
            )
        if sizing is Sizing.PERCENT_OF_EQUITY and value > 100:
            raise InvalidInput(
                f"Percent of equity must be more than 0 and at most 100; {value:f} is not."
            )
        if not 30 <= self.approval_ttl_seconds <= 86400:
            raise InvalidInput("Approvals expire after 30 seconds to 24 hours.")
        if self.max_positions is not None and not 1 <= self.max_positions <= 1000:
            raise InvalidInput("Max strategy positions must be between 1 and 1000.")
        if self.subtract_exit_quantity and sizing is not Sizing.SIGNAL:
            raise InvalidInput(
                "subtract_exit_quantity takes what a reversal exited off the signal's own "
                f"quantity, so it needs sizing:signal ({sizing.value.replace('_', ' ')} sizing "
                "gives every entry its own size): choose sizing:signal, or "
                "subtract_exit_quantity:false."
            )
        return SubscriptionSettings(
            sizing,
            value,
            sides,
            bool(self.manual_approval),
            int(self.approval_ttl_seconds),
            self.max_positions,
            bool(self.subtract_exit_quantity),
            windows_text(parse_windows(self.trading_windows)) if self.trading_windows else None,
            _exit_text(self.take_profit, "take_profit"),
            _exit_text(self.stop_loss, "stop_loss"),
            entry_order_text(parse_entry_order(self.entry_order)) if self.entry_order else None,
            bool(self.signal_take_profit),
        )


@dataclass(frozen=True, slots=True)
class EntryLimit:
    """Entries as limit orders at the quote (the ask to buy, the bid to sell), allowing up to
    ``percent`` or ``amount`` past it: a market order's fill, with a cap on the slippage."""

    percent: Decimal | None = None
    amount: Decimal | None = None

    def price(self, symbol: str, quote: Decimal, buy: bool) -> Decimal:
        """The limit price: ``quote`` moved by the allowance against the member (up to buy,
        down to sell), on the symbol's price step."""
        allowance = self.amount or quote * (self.percent or Decimal(0)) / 100
        return symbols.price_away(symbol, quote, allowance, 1 if buy else -1)


MAX_ENTRY_ALLOWANCE_PERCENT = Decimal(10)
_ENTRY_ORDER_HOW = (
    "entry_order is market, limit (at the quote: the ask to buy, the bid to sell), or a limit "
    "that may go past the quote by a percent or dollars: limit 0.2% or limit 0.05"
)


def parse_entry_order(text: str | None) -> EntryLimit | None:
    """``entry_order`` as members type it: None for market entries."""
    raw = (text or "").strip().casefold()
    if raw in ("", "market"):
        return None
    if not raw.startswith("limit"):
        raise InvalidInput(f"{_ENTRY_ORDER_HOW}; “{text}” is not.")
    rest = raw.removeprefix("limit").strip().removeprefix("+").strip()
    if not rest:
        return EntryLimit()
    value, percent = distance(rest)
    if value <= 0 or value > (MAX_ENTRY_ALLOWANCE_PERCENT if percent else MAX_NUMBER):
        most = f" (at most {MAX_ENTRY_ALLOWANCE_PERCENT}%)" if percent else ""
        raise InvalidInput(f"{_ENTRY_ORDER_HOW}{most}; “{text}” is not.")
    return EntryLimit(percent=value) if percent else EntryLimit(amount=value)


def entry_order_text(limit: EntryLimit | None) -> str | None:
    """``parse_entry_order``'s canonical text: stored, and shown to members."""
    if limit is None:
        return None
    if limit.percent is not None:
        return f"limit +{limit.percent.normalize():f}%"
    if limit.amount is not None:
        cents = limit.amount.quantize(Decimal("0.01"))
        return f"limit +{cents if cents == limit.amount else plain(limit.amount)}"
    return "limit"


def _exit_text(text: str | None, what: str) -> str | None:
    if not text:
        return None
    try:
        return exit_default_text(exit_default(text, what))
    except ValueError as e:
        raise InvalidInput(str(e)) from None


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    id: int
    strategy_id: str
    strategy_name: str
    guild_id: int
    connection_id: int
    connection_name: str
    broker: str
    mode: str
    settings: SubscriptionSettings
    enabled: bool
    previous: SubscriptionInfo | None = None  # from subscribe: as it was; None if it is new


def sizing_amount(sizing: Sizing | str, value: Decimal) -> str:
    """A sizing's value as members read it: “$1,500.00” for a dollar amount, “10%” of equity,
    “12,000”. Takes a signal's quantityType too (“50%” of the position)."""
    if sizing in (Sizing.DOLLAR_AMOUNT, "risk_dollar_amount"):
        return money(value)
    if sizing in (Sizing.PERCENT_OF_EQUITY, "percent_of_position"):
        return f"{qty(value)}%"
    return qty(value)


# /subscribe's defaults for a new subscription: the signal's own quantity, both sides.
NEW_SUBSCRIPTION = SubscriptionSettings(Sizing.SIGNAL, Decimal(1))


def _changed(base: SubscriptionSettings, changes: Mapping[str, Any]) -> SubscriptionSettings:
    """``base`` with ``changes`` applied. A new sizing needs its own value: 3 shares must not
    silently become 3 dollars or 3 percent."""
    sizing = changes.get("sizing")
    if sizing is not None and Sizing(sizing) is not base.sizing and "sizing_value" not in changes:
        raise InvalidInput(
            f"Give sizing_value with the new sizing ({Sizing(sizing).value.replace('_', ' ')}): "
            f"the current value, {sizing_amount(base.sizing, base.sizing_value)}, was for "
            f"{base.sizing.value.replace('_', ' ')}."
        )
    return replace(base, **changes)


class SubscriptionService:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))

    async def subscribe(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        *,
        connection: str | None = None,
        mode: str = "paper",
        settings: SubscriptionSettings | None = None,
        changes: Mapping[str, Any] | None = None,
        enabled: bool | None = None,
        roles: Collection[int] = (),
    ) -> SubscriptionInfo:
        """Subscribe one of the member's connections (paper or live account) to a strategy the
        member owns or that was shared with them. Subscribing again changes the settings;
        ``previous`` of the answer is the subscription before.

        ``settings`` replaces them all; ``changes`` (setting name → value) only those named,
        the others keep their values (a new subscription takes NEW_SUBSCRIPTION's).
        ``enabled``: False pauses it (it takes no signals, its settings are kept), True
        resumes it; None keeps it as it is (a new one takes signals). ``roles``: the member's
        in the guild, for a strategy shared with a role."""
        info = await self.core.strategies.get(guild_id, discord_user_id, strategy, roles=roles)
        target = await self.core.connections.resolve(discord_user_id, connection, mode)
        where = (
            (Subscription.strategy_id == info.id)
            & (Subscription.connection_id == target.connection.id)
            & (Subscription.mode == target.mode)
        )
        # Only for the answer and the base of ``changes``: a concurrent subscribe changing it
        # meanwhile is harmless (the last one wins, as it would anyway).
        previous = next(iter(await self._many(where)), None)
        if changes is not None:
            settings = _changed(previous.settings if previous else NEW_SUBSCRIPTION, changes)
        s_settings = (settings or SubscriptionSettings()).validated()
        _check_whole_units(s_settings, target.connection.broker)
        _check_default_exits(s_settings, target.connection.broker)
        member_id = target.connection.member_id
        now = self.clock()
        values = dict(
            sizing=s_settings.sizing.value,
            sizing_value=s_settings.sizing_value,
            sides=s_settings.sides.value,
            manual_approval=s_settings.manual_approval,
            approval_ttl_seconds=s_settings.approval_ttl_seconds,
            max_positions=s_settings.max_positions,
            subtract_exit_quantity=s_settings.subtract_exit_quantity,
            trading_windows=s_settings.trading_windows,
            take_profit=s_settings.take_profit,
            stop_loss=s_settings.stop_loss,
            entry_order=s_settings.entry_order,
            signal_take_profit=s_settings.signal_take_profit,
            enabled=enabled if enabled is not None else previous is None or previous.enabled,
            updated_at=now,
        )
        for _ in range(2):  # a concurrent subscribe may insert first: then update it
            async with self.core.db.transaction() as s:
                result = await s.execute(update(Subscription).where(where).values(values))
            if result.rowcount:  # type: ignore[attr-defined]
                break
            try:
                async with self.core.db.transaction() as s:
                    s.add(
                        Subscription(
                            strategy_id=info.id,
                            member_id=member_id,
                            connection_id=target.connection.id,
                            mode=target.mode,
                            created_at=now,
                            **values,
                        )
                    )
                    await s.flush()
                    audit.record(
                        s,
                        "subscription.created",
                        member_id=member_id,
                        connection_id=target.connection.id,
                        strategy_id=info.id,
                        mode=target.mode,
                    )
            except IntegrityError:
                continue
            break
        return replace(await self._one(where), previous=previous)

    async def unsubscribe(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        *,
        connection: str | None = None,
        mode: str | None = None,
    ) -> SubscriptionInfo:
        """Stop one of the member's subscriptions to ``strategy``; the one stopped.

        ``connection`` and ``mode`` only narrow the choice: with one subscription to the
        strategy, neither is needed. The connection need not be tradable (an account unchosen,
        a re-link due), since stopping is always allowed."""
        info = await self.core.strategies.get(guild_id, discord_user_id, strategy)
        if mode is not None:
            mode = mode.strip().lower()
            if mode not in MODES:
                raise InvalidInput("Mode must be paper or live.")
        conn = (
            await self.core.connections.owned(discord_user_id, connection) if connection else None
        )
        member_id = await self.core.members.ensure(discord_user_id)
        subs = await self._many(
            (Subscription.strategy_id == info.id) & (Subscription.member_id == member_id)
        )
        matching = [
            sub
            for sub in subs
            if (conn is None or sub.connection_id == conn.id) and mode in (None, sub.mode)
        ]
        if not matching:
            if not subs:
                raise NotFound(f"You have no subscription to “{info.name}”. See /subscriptions.")
            where = f"“{conn.name}”" if conn else "any connection"
            raise NotFound(
                f"“{info.name}” is not subscribed on {where}"
                + (f" in {mode} mode" if mode else "")
                + f". You subscribe to it on {_places(subs)}: name one with connection: and mode:."
            )
        if len(matching) > 1:
            add = "mode:" if conn else "connection: and mode:"
            raise InvalidInput(
                f"You subscribe to “{info.name}” more than once: {_places(matching)}. "
                f"Add {add} to choose which to stop."
            )
        [sub] = matching
        mine = (Subscription.id == sub.id) & (Subscription.member_id == member_id)
        async with self.core.db.transaction() as s:
            withdrawn = await withdraw_approvals(
                s, select(Subscription.id).where(mine), self.clock()
            )
            result = await s.execute(delete(Subscription).where(mine))
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound("That subscription no longer exists. See /subscriptions.")
            audit.record(
                s,
                "subscription.deleted",
                member_id=member_id,
                connection_id=sub.connection_id,
                strategy_id=info.id,
                mode=sub.mode,
            )
        await close_withdrawn(self.core.notifier, withdrawn)
        return sub

    async def set_enabled(self, discord_user_id: int, subscription_id: int, enabled: bool) -> None:
        """Pause or resume a subscription (paused ones receive no signals)."""
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.transaction() as s:
            result = await s.execute(
                update(Subscription)
                .where(Subscription.id == subscription_id, Subscription.member_id == member_id)
                .values(enabled=enabled, updated_at=self.clock())
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound("You have no such subscription. See /subscriptions.")

    async def list_for(
        self, discord_user_id: int, guild_id: int | None = None
    ) -> list[SubscriptionInfo]:
        member_id = await self.core.members.ensure(discord_user_id)
        cond = Subscription.member_id == member_id
        if guild_id is not None:
            cond = cond & (Strategy.guild_id == guild_id)
        return await self._many(cond)

    async def list_for_strategy(
        self, guild_id: int, discord_user_id: int, strategy: str
    ) -> list[SubscriptionInfo]:
        """All subscriptions of a strategy: for its owner only."""
        info = await self.core.strategies.get(guild_id, discord_user_id, strategy)
        if not info.is_owner:
            raise PermissionDenied("Only the strategy's owner can see who subscribes to it.")
        return await self._many(Subscription.strategy_id == info.id)

    # -- alert preferences ------------------------------------------------------------------------

    async def set_alerts_show_name(
        self, discord_user_id: int, guild_id: int, show: bool, display_name: str | None = None
    ) -> None:
        """Whether public trade alerts in this server may name this member, and the name to
        use (plain text, never a mention). Off by default, and in every other server."""
        member_id = await self.core.members.ensure(discord_user_id)
        name = " ".join((display_name or "").split())[:64] or None
        if show and not name:
            raise InvalidInput("Give the name to show in alerts.")
        now = self.clock()
        async with self.core.db.transaction() as s:
            result = await s.execute(
                update(AlertPreference)
                .where(AlertPreference.member_id == member_id, AlertPreference.guild_id == guild_id)
                .values(alerts_show_name=show, display_name=name, updated_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                s.add(
                    AlertPreference(
                        member_id=member_id,
                        guild_id=guild_id,
                        alerts_show_name=show,
                        display_name=name,
                        updated_at=now,
                    )
                )

    # -- reads ------------------------------------------------------------------------------------

    async def _one(self, cond: object) -> SubscriptionInfo:
        rows = await self._many(cond)
        if not rows:
            raise NotFound("That subscription no longer exists.")
        return rows[0]

    async def _many(self, cond: object) -> list[SubscriptionInfo]:
        async with self.core.db.session() as s:
            rows = (
                await s.execute(
                    select(
                        Subscription,
                        Strategy.name,
                        Strategy.guild_id,
                        Connection.name,
                        Connection.broker,
                    )
                    .join(Strategy, Strategy.id == Subscription.strategy_id)
                    .join(Connection, Connection.id == Subscription.connection_id)
                    .where(cond)  # type: ignore[arg-type]
                    .order_by(Strategy.name_key, Subscription.id)
                )
            ).all()
        return [
            SubscriptionInfo(
                id=sub.id,
                strategy_id=sub.strategy_id,
                strategy_name=sname,
                guild_id=gid,
                connection_id=sub.connection_id,
                connection_name=cname,
                broker=broker,
                mode=sub.mode,
                settings=settings_of(sub),
                enabled=sub.enabled,
            )
            for sub, sname, gid, cname, broker in rows
        ]


def settings_of(sub: Subscription) -> SubscriptionSettings:
    return SubscriptionSettings(
        sizing=Sizing(sub.sizing),
        sizing_value=sub.sizing_value,
        sides=Sides(sub.sides),
        manual_approval=sub.manual_approval,
        approval_ttl_seconds=sub.approval_ttl_seconds,
        max_positions=sub.max_positions,
        subtract_exit_quantity=sub.subtract_exit_quantity,
        trading_windows=sub.trading_windows,
        take_profit=sub.take_profit,
        stop_loss=sub.stop_loss,
        entry_order=sub.entry_order,
        signal_take_profit=sub.signal_take_profit,
    )


def _places(subs: list[SubscriptionInfo]) -> str:
    """Where subscriptions trade, as the member names them: “TS” (live), …"""
    return ", ".join(f"“{sub.connection_name}” ({sub.mode})" for sub in subs)


def _check_default_exits(settings: SubscriptionSettings, broker: str) -> None:
    """Refuse default exits the connection's broker cannot place: every entry would be skipped."""
    if not settings.take_profit and not settings.stop_loss:
        return
    cls = get_adapter_class(broker)
    if not cls.capabilities.brackets:
        raise InvalidInput(
            f"{cls.display_name} takes no take-profit/stop-loss brackets, so this connection "
            "cannot have a default take_profit or stop_loss."
        )
    trailing = (settings.stop_loss or "").startswith("trail")
    if trailing and not cls.capabilities.bracket_trailing_stop:
        raise InvalidInput(
            f"{cls.display_name} takes no trailing stop-loss in a bracket: give stop_loss as a "
            "fixed distance (2% or 1.50) for this connection."
        )


def _check_whole_units(settings: SubscriptionSettings, broker: str) -> None:
    """Refuse a fractional fixed quantity at a broker that trades no fractions of anything:
    every signal would round it down (to zero below 1) and be skipped. A broker with
    fractional crypto (or shares) keeps it, since the strategy may trade what it fractions."""
    value = settings.sizing_value
    if settings.sizing is not Sizing.FIXED_QUANTITY or value == value.to_integral_value():
        return
    cls = get_adapter_class(broker)
    if cls.capabilities.fractional:
        return
    raise InvalidInput(
        f"{cls.display_name} trades whole shares and contracts only, so a fixed quantity of "
        f"{qty(value)} cannot be traded as sized. Use a whole number, or dollar_amount sizing."
    )
