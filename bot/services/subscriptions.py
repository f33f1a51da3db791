"""Subscriptions: a member routes a strategy's signals to one of their connections, with their
own sizing, allowed sides, approval and position rules. Also the member's alert preferences.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from adapters import symbols
from adapters.base import ASSET_WORDS, caps_list
from adapters.models import AccountType, AssetClass
from adapters.registry import get_adapter_class
from bot.automation_models import AlertPreference, Strategy, Subscription
from bot.db_types import plain
from bot.errors import InvalidInput, NotFound, PermissionDenied
from bot.models import Connection, ConnectionAccount, Member
from bot.services import audit
from bot.services.approvals import close_withdrawn, withdraw_approvals
from bot.services.connections import MODES, Target
from bot.services.strategies import StrategyInfo, upsert, visible
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
    account_type: str | None = None  # of the account chosen for its mode; None: none chosen
    builtin: bool = False  # on Tradecord Paper, whose account trades every asset class
    warning: str | None = None  # from subscribe: tickers of the strategy it cannot trade

    @property
    def account(self) -> str:
        """Its mode and the type of account it trades in, as replies say it: “live, margin
        account” (a futures strategy there is refused). Tradecord Paper's type says nothing:
        it trades everything."""
        if self.builtin:
            return self.mode
        if self.account_type is None:
            return f"{self.mode}, no account chosen"
        return f"{self.mode}, {self.account_type} account"


def subscribe_command(strategy: str, connection: str, mode: str, option: str) -> str:
    """/subscribe naming one subscription exactly, as a member types it (Discord's options
    take spaces as they are): “/subscribe strategy:Gap fill connection:TS mode:live …”."""
    return f"/subscribe strategy:{strategy} connection:{connection} mode:{mode} {option}"


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
        mode: str | None = None,
        settings: SubscriptionSettings | None = None,
        changes: Mapping[str, Any] | None = None,
        enabled: bool | None = None,
        roles: Collection[int] = (),
        sizing_unit: str | None = None,
    ) -> SubscriptionInfo:
        """Subscribe one of the member's connections (paper or live account) to a strategy the
        member owns or that was shared with them. Subscribing again changes the settings;
        ``previous`` of the answer is the subscription before.

        Without ``connection`` and ``mode``: the member's one subscription to the strategy
        (several: refused, naming them), else a new one on Tradecord Paper. ``mode`` alone
        defaults to paper.

        ``settings`` replaces them all; ``changes`` (setting name → value) only those named,
        the others keep their values (a new subscription takes NEW_SUBSCRIPTION's).
        ``enabled``: False pauses it (it takes no signals, its settings are kept), True
        resumes it; None keeps it as it is (a new one takes signals). ``roles``: the member's
        in the guild, for a strategy shared with a role. ``sizing_unit``: "$" or "%" as the
        member typed the sizing value, which must then be dollars or percent of equity.

        Only a new subscription, or one resumed, must be able to trade now: one on a
        connection to re-link can still be paused or changed."""
        info = await self.core.strategies.get(guild_id, discord_user_id, strategy, roles=roles)
        member_id = await self.core.members.ensure(discord_user_id)
        tickers = await self._subscribable(info.id, info.name, member_id, roles)
        if mode is not None:
            mode = mode.strip().lower()
            if mode not in MODES:
                raise InvalidInput("Mode must be paper or live.")
        previous = await self._existing(discord_user_id, member_id, info.id, connection, mode)
        target: Target | None = None
        warning = None
        if previous is None:
            target = await self.core.connections.resolve(discord_user_id, connection, mode)
            warning = await self._check_tickers(discord_user_id, info, tickers, target)
            conn_id, on_mode, broker = target.connection.id, target.mode, target.connection.broker
        else:
            if enabled:  # resumed: it trades from now on
                target = await self.core.connections.resolve(
                    discord_user_id, previous.connection_name, previous.mode
                )
            conn_id, on_mode, broker = previous.connection_id, previous.mode, previous.broker
        where = (
            (Subscription.strategy_id == info.id)
            & (Subscription.connection_id == conn_id)
            & (Subscription.mode == on_mode)
        )
        if changes is not None:
            settings = _changed(previous.settings if previous else NEW_SUBSCRIPTION, changes)
        # The unit first: "$500" on percent sizing is no percent above 100 to refuse.
        _check_unit(sizing_unit, settings or SubscriptionSettings())
        s_settings = (settings or SubscriptionSettings()).validated()
        _check_whole_units(s_settings, broker)
        _check_default_exits(s_settings, broker)
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
            if target is None:  # unsubscribed meanwhile: not to be made again unchecked
                raise NotFound("That subscription no longer exists. See /subscriptions.")
            try:
                async with self.core.db.transaction() as s:
                    s.add(
                        Subscription(
                            strategy_id=info.id,
                            member_id=member_id,
                            connection_id=conn_id,
                            mode=on_mode,
                            created_at=now,
                            **values,
                        )
                    )
                    await s.flush()
                    audit.record(
                        s,
                        "subscription.created",
                        member_id=member_id,
                        connection_id=conn_id,
                        strategy_id=info.id,
                        mode=on_mode,
                    )
            except IntegrityError:
                continue
            break
        return replace(await self._one(where), previous=previous, warning=warning)

    async def _subscribable(
        self, strategy_id: str, name: str, member_id: int, roles: Collection[int]
    ) -> list[str]:
        """The strategy's allowed tickers, if the member may subscribe to it now: theirs, or
        shared with them or a role they have. A subscription alone is no access: one who lost
        the role keeps seeing it only to /unsubscribe."""
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(Strategy.allowed_tickers).where(
                        Strategy.id == strategy_id, visible(member_id, roles, subscribed=False)
                    )
                )
            ).first()
        if row is None:
            raise PermissionDenied(
                f"“{name}” is no longer shared with you or a role you have, so you cannot "
                f"change or add subscriptions to it. /unsubscribe strategy:{name} stops yours."
            )
        return list(row[0] or ())

    async def _existing(
        self,
        discord_user_id: int,
        member_id: int,
        strategy_id: str,
        connection: str | None,
        mode: str | None,
    ) -> SubscriptionInfo | None:
        """The member's subscription to the strategy that /subscribe's options name, found
        without asking whether its connection can trade (a re-link due, an account unchosen):
        pausing or changing one must not need that. None: there is none."""
        subs = await self._many(
            (Subscription.strategy_id == strategy_id) & (Subscription.member_id == member_id)
        )
        if connection is None and mode is None:
            if len(subs) > 1:
                options = " or ".join(
                    f"connection:{sub.connection_name} mode:{sub.mode}" for sub in subs
                )
                raise InvalidInput(
                    f"You subscribe to “{subs[0].strategy_name}” more than once: "
                    f"{_places(subs)}. Give connection: and mode: to choose which: {options}."
                )
            return subs[0] if subs else None
        mode = mode or "paper"
        if connection:
            conn: Connection | None = await self.core.connections.owned(discord_user_id, connection)
        else:  # as ``resolve`` picks it; several or none: it says which to give
            mine = await self.core.connections.list_for(discord_user_id)
            if mode == "paper":
                conn = next(c for c in mine if c.builtin)
            else:
                live = [c for c in mine if c.account("live")]
                conn = live[0] if len(live) == 1 else None
        return next(
            (s for s in subs if conn is not None and s.connection_id == conn.id and s.mode == mode),
            None,
        )

    async def _check_tickers(
        self, discord_user_id: int, info: StrategyInfo, tickers: Sequence[str], target: Target
    ) -> str | None:
        """Refuse a new subscription whose account can trade none of the strategy's allowed
        tickers: each signal would be refused there. When it cannot trade some, a warning.
        Only the owner sees the allow-list, so only they are told its tickers."""
        cls = get_adapter_class(target.connection.broker)
        caps = cls.capabilities
        kind = AccountType(target.account.account_type)
        unfit: dict[AssetClass, list[str]] = {}
        for ticker in tickers:
            asset = symbols.asset_class_of(ticker)
            if not caps.can_trade(kind, asset):
                unfit.setdefault(asset, []).append(ticker)
        if not unfit:
            return None
        assets = " or ".join(ASSET_WORDS[a] for a in unfit)
        listed = [t for ts in unfit.values() for t in ts]
        shown = f" ({', '.join(listed)})" if info.is_owner else ""
        name, account = target.connection.name, f"{kind.value} account"
        where = " ".join(
            f"At {cls.display_name}, {ASSET_WORDS[a]} trade in a {caps_list(kinds)} account."
            if (kinds := caps.account_types_for(a))
            else f"{cls.display_name} does not offer {ASSET_WORDS[a]} trading."
            for a in unfit
        )
        if len(listed) < len(tickers):
            return (
                f"Some tickers “{info.name}” allows are {assets}{shown}, which the {account} "
                f"of “{name}” ({target.mode}) cannot trade: their signals will be refused "
                f"there. {where}"
            )
        if any(caps.account_types_for(a) for a in unfit):
            todo = (
                f"Choose that account for “{name}” in /accounts, or subscribe another "
                "connection (connection:)."
            )
        else:
            todo = "Subscribe a connection at a broker that trades them (connection:)."
        instead = await self.core.connections.trading_instead(
            discord_user_id, target, next(iter(unfit))
        )
        raise InvalidInput(
            f"“{name}” ({target.mode}) trades in a {account}, which cannot trade {assets}, and "
            f"all the tickers “{info.name}” allows are {assets}{shown}: each of its signals "
            f"would be refused there. {where} {todo}{instead}"
        )

    async def unsubscribe(
        self,
        guild_id: int | None,
        discord_user_id: int,
        strategy: str,
        *,
        connection: str | None = None,
        mode: str | None = None,
        roles: Collection[int] = (),
        left: Callable[[int], Awaitable[bool]] | None = None,
    ) -> SubscriptionInfo:
        """Stop one of the member's subscriptions to ``strategy``; the one stopped.

        ``connection`` and ``mode`` only narrow the choice: with one subscription to the
        strategy, neither is needed. The connection need not be tradable (an account unchosen,
        a re-link due), since stopping is always allowed; nor the strategy still shared with
        them. ``roles``: the member's in the guild, so that a strategy shared with one of them
        is found (and said to have no subscription of theirs).

        ``left`` says whether Tradecord is no longer in a guild: a strategy of such a guild
        can no longer be unsubscribed there, so it is found from DMs (``guild_id`` None) or
        any other guild, among the member's own subscriptions only."""
        info = await self._to_stop(guild_id, discord_user_id, strategy, roles, left)
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

    async def _to_stop(
        self,
        guild_id: int | None,
        discord_user_id: int,
        strategy: str,
        roles: Collection[int],
        left: Callable[[int], Awaitable[bool]] | None,
    ) -> StrategyInfo | _Elsewhere:
        """The strategy /unsubscribe names: the guild's, else one of a guild Tradecord left
        that the member subscribes to."""
        missing: NotFound | None = None
        if guild_id is not None:
            try:
                return await self.core.strategies.get(
                    guild_id, discord_user_id, strategy, roles=roles
                )
            except NotFound as e:
                if left is None:
                    raise
                missing = e
        found = await self.core.strategies.subscribed_elsewhere(discord_user_id, strategy, guild_id)
        gone = [row for row in found if left is not None and await left(row[2])]
        if len({strategy_id for strategy_id, _, _ in gone}) > 1:
            ids = ", ".join(strategy_id for strategy_id, _, _ in gone)
            raise InvalidInput(
                f"You subscribe to more than one “{gone[0][1]}” of servers Tradecord was "
                f"removed from: give its id as strategy: instead, one of {ids}."
            )
        if gone:
            return _Elsewhere(gone[0][0], gone[0][1])
        if missing is not None:
            raise missing
        shown = strategy.strip()[:60]
        if found:
            raise InvalidInput(
                f"“{found[0][1]}” belongs to a server Tradecord is still in: run "
                f"/unsubscribe strategy:{found[0][1]} there."
            )
        raise NotFound(
            f"You have no subscription to “{shown}”. /subscriptions here lists yours in every "
            "server."
        )

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

    async def on_connection(self, connection_id: int) -> list[SubscriptionInfo]:
        """The subscriptions that trade on a connection, in either mode."""
        return await self._many(Subscription.connection_id == connection_id)

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
    ) -> str | None:
        """Whether public trade alerts in this server may name this member, and the name to
        use (plain text, never a mention). Off by default, and in every other server. Returns
        the name alerts will show (None: none)."""
        member_id = await self.core.members.ensure(discord_user_id)
        name = _alert_name(display_name) if show else None  # not kept when not shown
        if show and not name:
            raise InvalidInput("Give the name to show in alerts.")
        async with self.core.db.transaction() as s:
            # One statement: saved twice at once, an update then an insert both inserted.
            await s.execute(
                upsert(
                    self.core.db,
                    AlertPreference,
                    {"member_id": member_id, "guild_id": guild_id},
                    {"alerts_show_name": show, "display_name": name, "updated_at": self.clock()},
                    ["member_id", "guild_id"],
                )
            )
        return name

    async def refresh_alert_name(
        self, discord_user_id: int, guild_id: int, display_name: str | None
    ) -> bool:
        """The member's name in the guild is ``display_name`` now: alerts that name them show
        it from now on, so one who renames to stop showing a name stops showing it. One
        statement that changes nothing for a member not named there; True if it changed."""
        name = _alert_name(display_name)
        if name is None:
            return False
        async with self.core.db.transaction() as s:
            result = await s.execute(
                update(AlertPreference)
                .where(
                    AlertPreference.member_id.in_(
                        select(Member.id).where(Member.discord_user_id == discord_user_id)
                    ),
                    AlertPreference.guild_id == guild_id,
                    AlertPreference.alerts_show_name.is_(True),
                    AlertPreference.display_name != name,
                )
                .values(display_name=name, updated_at=self.clock())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

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
                        Connection.builtin,
                        ConnectionAccount.account_type,
                    )
                    .join(Strategy, Strategy.id == Subscription.strategy_id)
                    .join(Connection, Connection.id == Subscription.connection_id)
                    .outerjoin(
                        ConnectionAccount,
                        (ConnectionAccount.connection_id == Subscription.connection_id)
                        & (ConnectionAccount.mode == Subscription.mode),
                    )
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
                account_type=account_type,
                builtin=builtin,
            )
            for sub, sname, gid, cname, broker, builtin, account_type in rows
        ]


def _alert_name(display_name: str | None) -> str | None:
    """A display name as alerts show it: spaces collapsed, within the column's 64."""
    return " ".join((display_name or "").split())[:64] or None


@dataclass(frozen=True, slots=True)
class _Elsewhere:
    """A strategy of a guild Tradecord was removed from, as /unsubscribe needs it."""

    id: str
    name: str


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


_UNITS = {"$": Sizing.DOLLAR_AMOUNT, "%": Sizing.PERCENT_OF_EQUITY}
_UNIT_WORDS = {"$": "dollars", "%": "a percent"}


def _sized(sizing: Sizing, value: Decimal) -> str:
    """What a sizing value gives, as the refusal offers it: “50% of equity”."""
    return {
        Sizing.FIXED_QUANTITY: f"{qty(value)} shares/contracts per entry",
        Sizing.DOLLAR_AMOUNT: f"{money(value)} per entry",
        Sizing.PERCENT_OF_EQUITY: f"{qty(value)}% of equity",
        Sizing.SIGNAL: f"{qty(value)}× the signal's own quantity",
    }[sizing]


def _check_unit(unit: str | None, settings: SubscriptionSettings) -> None:
    """A sizing value typed “$50” is dollars and “5%” a percent: refused with another sizing,
    which would take the bare number (50% of equity) silently."""
    if unit is None:
        return
    wanted, sizing, value = _UNITS[unit], Sizing(settings.sizing), Decimal(settings.sizing_value)
    if sizing is wanted:
        return
    typed = money(value) if unit == "$" else f"{qty(value)}%"
    raise InvalidInput(
        f"sizing_value {typed} is {_UNIT_WORDS[unit]}, but the sizing is "
        f"{sizing.value.replace('_', ' ')}: type {qty(value)} for {_sized(sizing, value)}, or "
        f"give sizing:{wanted.value} for {_sized(wanted, value)}."
    )


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
