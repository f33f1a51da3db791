"""Pre-trade controls: the global kill switch, a member's pause, and quantity/notional limits
per order and per day (the member's, the server's default, and a strategy's).

Everything is stored in the database and read again for every order, so a switch flipped in
one process stops the orders of all of them. The trading service enforces these at submit
time (``TradingService.submit`` and the reconciler's send); this service only stores them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from sqlalchemy import select, update

from bot.automation_models import Strategy
from bot.errors import InvalidInput, PermissionDenied
from bot.models import Member, Switch
from bot.services import audit
from bot.settings import Settings
from bot.wording import money, qty

if TYPE_CHECKING:
    from bot.core import Core

KILL_SWITCH: Final = "kill_switch"
# Larger than any real order, small enough for every column (NUMERIC(38, 18)).
MAX_LIMIT: Final = Decimal("1e15")
CENT: Final = Decimal("0.01")
# As fine as any quantity a broker takes (Alpaca: 9); the database keeps 18.
LIMIT_DECIMALS: Final = 9
LIMIT_NAMES: Final = ("max_order_quantity", "max_order_notional", "max_daily_notional")


@dataclass(frozen=True, slots=True)
class Limits:
    """``None``: no limit."""

    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_daily_notional: Decimal | None = None

    def stricter(self, other: Limits) -> Limits:
        return Limits(*(_min(getattr(self, n), getattr(other, n)) for n in LIMIT_NAMES))


@dataclass(frozen=True, slots=True)
class KillSwitch:
    on: bool
    changed_at: datetime | None
    changed_by: int | None  # Discord user id


@dataclass(frozen=True, slots=True)
class MemberLimits:
    """What /limits show says: the server's defaults, the member's own, and what applies."""

    server: Limits
    own: Limits
    paused: bool

    @property
    def effective(self) -> Limits:
        return self.own.stricter(self.server)


@dataclass(frozen=True, slots=True)
class StrategyLimits:
    name: str
    max_quantity: Decimal | None
    max_order_notional: Decimal | None
    max_daily_notional: Decimal | None


def server_limits(settings: Settings) -> Limits:
    """The server-wide defaults; 0 in the settings means no limit."""
    return Limits(
        *(getattr(settings, f"limit_{n}") or None for n in LIMIT_NAMES)  # 0 → None
    )


def _min(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d*)?$")


def without_thousands(text: str, what: str) -> str:
    """ "1,000.5" as 1000.5. A comma anywhere else is refused: "1,5" is one and a half where
    the comma is the decimal mark, and must not become 15 (as the webhook's parser does)."""
    if "," in text and not _THOUSANDS.match(text):
        raise InvalidInput(
            f"{what} takes a point for decimals, like 2.5 — “{text}” has a comma that does not "
            "separate thousands (as in 1,000)."
        )
    return text.replace(",", "")


def parse_limit(text: str | None, what: str) -> Decimal | None:
    """A limit as typed: a positive number, or 0/none/off to remove it."""
    raw = without_thousands((text or "").strip().removeprefix("$"), what)
    if raw.lower() in ("", "0", "none", "off", "no limit"):
        return None
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise InvalidInput(
            f"{what} must be a number like 5000, or 0 to remove it — “{text}” is not."
        ) from None
    if not value.is_finite() or value < 0 or value >= MAX_LIMIT:
        raise InvalidInput(f"{what} must be a positive number below {MAX_LIMIT:,.0f}, or 0.")
    if value == 0:
        return None
    if "notional" in what and value < CENT:
        # It would read "$0.00" and refuse every order, though 0 means no limit.
        raise InvalidInput(f"{what} is in USD: at least 0.01, or 0 to remove it.")
    if int(value.as_tuple().exponent) < -LIMIT_DECIMALS:
        raise InvalidInput(f"{what} takes at most {LIMIT_DECIMALS} decimals — “{text}” has more.")
    return value


class LimitsService:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))

    # -- kill switch (the bot owner's) ---------------------------------------------------

    async def kill_switch(self) -> KillSwitch:
        async with self.core.db.session() as s:
            row = await s.get(Switch, KILL_SWITCH)
        if row is None:
            return KillSwitch(False, None, None)
        return KillSwitch(row.on, row.changed_at, row.changed_by)

    async def set_kill_switch(self, on: bool, *, by: int) -> KillSwitch:
        """The caller checked that ``by`` is the bot owner."""
        now = self.clock()
        async with self.core.db.transaction() as s:
            row = await s.get(Switch, KILL_SWITCH, with_for_update=True)
            if row is None:
                row = Switch(name=KILL_SWITCH)
                s.add(row)
            row.on, row.changed_at, row.changed_by = on, now, by
            audit.record(s, "kill_switch.on" if on else "kill_switch.off", by_discord_user_id=by)
        return KillSwitch(on, now, by)

    # -- a member's pause and limits -------------------------------------------------------

    async def pause(self, discord_user_id: int) -> bool:
        """Pause the member's trading; False if it already was."""
        return await self._set_paused(discord_user_id, self.clock())

    async def resume(self, discord_user_id: int) -> bool:
        """Resume the member's trading; False if it was not paused."""
        return await self._set_paused(discord_user_id, None)

    async def _set_paused(self, discord_user_id: int, at: datetime | None) -> bool:
        member_id = await self.core.members.ensure(discord_user_id)
        now_paused = Member.paused_at.is_(None) if at is not None else Member.paused_at.is_not(None)
        async with self.core.db.transaction() as s:
            changed = (
                await s.execute(
                    update(Member).where(Member.id == member_id, now_paused).values(paused_at=at)
                )
            ).rowcount  # type: ignore[attr-defined]
            if changed:
                audit.record(s, "member.paused" if at else "member.resumed", member_id=member_id)
        return bool(changed)

    async def member_limits(self, discord_user_id: int) -> MemberLimits:
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.session() as s:
            member = await s.get(Member, member_id)
        assert member is not None
        return MemberLimits(
            server_limits(self.core.settings),
            Limits(*(getattr(member, n) for n in LIMIT_NAMES)),
            member.paused_at is not None,
        )

    async def set_member_limits(
        self, discord_user_id: int, changes: dict[str, Decimal | None]
    ) -> MemberLimits:
        """Set (a Decimal) or remove (None) the member's own limits named in ``changes``.
        A limit looser than the server's is refused: the server's default is the ceiling."""
        server = server_limits(self.core.settings)
        for name, value in changes.items():
            if name not in LIMIT_NAMES:
                raise InvalidInput(f"There is no limit “{name}”.")
            ceiling = getattr(server, name)
            if value is not None and ceiling is not None and value > ceiling:
                raise InvalidInput(
                    f"The server's {limit_label(name)} is {limit_value(name, ceiling)}; yours "
                    "can only be the same or lower. Nothing was changed."
                )
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.transaction() as s:
            member = await s.get(Member, member_id)
            assert member is not None
            for name, value in changes.items():
                setattr(member, name, value)
            audit.record(
                s,
                "member.limits_set",
                member_id=member_id,
                **{n: v for n, v in changes.items()},
            )
        return await self.member_limits(discord_user_id)

    # -- a strategy's limits (its owner's) --------------------------------------------------

    async def strategy_limits(
        self, guild_id: int, discord_user_id: int, strategy: str
    ) -> StrategyLimits:
        info = await self.core.strategies.get(guild_id, discord_user_id, strategy)
        async with self.core.db.session() as s:
            row = await s.get(Strategy, info.id)
        assert row is not None
        return StrategyLimits(
            row.name, row.max_quantity, row.max_order_notional, row.max_daily_notional
        )

    async def set_strategy_limits(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        changes: dict[str, Decimal | None],
    ) -> StrategyLimits:
        info = await self.core.strategies.get(guild_id, discord_user_id, strategy)
        if not info.is_owner:
            raise PermissionDenied(
                f"“{info.name}” was shared with you, but only its owner can change its limits. "
                "Your own /limits set applies to every order you place, signals included."
            )
        async with self.core.db.transaction() as s:
            row = await s.get(Strategy, info.id)
            assert row is not None
            for name, value in changes.items():
                if name not in ("max_order_notional", "max_daily_notional"):
                    raise InvalidInput(f"There is no strategy limit “{name}”.")
                setattr(row, name, value)
            owner = await s.scalar(
                select(Member.id).where(Member.discord_user_id == discord_user_id)
            )
            audit.record(s, "strategy.limits_set", member_id=owner, strategy_id=info.id, **changes)
        return await self.strategy_limits(guild_id, discord_user_id, strategy)


def limit_label(name: str) -> str:
    return {
        "max_order_quantity": "max quantity per order",
        "max_order_notional": "max notional per order",
        "max_daily_notional": "max notional per day",
    }[name]


def _show(name: str, value: Decimal) -> str:
    if name == "max_order_quantity":
        return qty(value)
    return money(value)


def limit_value(name: str, value: Decimal | None) -> str:
    """“$5,000.00”, “100” or “no limit”."""
    return "no limit" if value is None else _show(name, value)


def describe_limit(name: str, value: Decimal | None) -> str:
    """For members: “max notional per order: $5,000.00” or “… : no limit”."""
    return f"{limit_label(name)}: {limit_value(name, value)}"
