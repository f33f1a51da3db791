"""Strategies: named webhooks owned by a member of a guild, shared with other members who may
subscribe, and where their trade alerts are posted.

The webhook URL is ``PUBLIC_URL/webhook/{strategy_id}/{secret}``. The secret (192 random bits)
is shown once, at creation and at rotation; only its SHA-256 is stored, and the webhook compares
digests in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.automation_models import (
    AlertChannel,
    ReceivedSignal,
    Strategy,
    StrategyRoleShare,
    StrategyShare,
    Subscription,
)
from bot.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from bot.models import Member
from bot.services import audit
from bot.services.approvals import Withdrawn, close_withdrawn, withdraw_approvals
from bot.services.notify import Outgoing, dm_quietly
from bot.signal_format import MAX_DECIMALS, MAX_NUMBER, normalize_ticker
from bot.wording import name_problem, plain, plural

log = logging.getLogger("tradecord.strategies")

if TYPE_CHECKING:
    from bot.core import Core
    from bot.db import Database

# TradingView's published webhook source addresses (the "tradingview" allow-list preset).
TRADINGVIEW_IPS: Final = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")
TRADINGVIEW = "tradingview"
MAX_SOURCES = 50
MAX_TICKERS = 200
# Bounds of the webhook settings; the command offers the same ranges. The maximums are the
# security requirement's (skew over 300 s is refused, at most 60 signals a minute per hook) and
# also the defaults: an owner may only tighten them. Migration 0007 brought older rows within.
MIN_LAG_SECONDS, MAX_LAG_SECONDS = 5, 300
MIN_RATE_LIMIT, MAX_RATE_LIMIT = 1, 60
NAME_MAX = 100
# Compared against when the strategy does not exist, so both refusals cost the same.
_DUMMY_HASH = hashlib.sha256(b"tradecord: no such strategy").hexdigest()


# Built once: the webhook runs it for every request.
_AUTH = select(
    Strategy.id,
    Strategy.name,
    Strategy.guild_id,
    Strategy.secret_hash,
    Strategy.allowed_sources,
    Strategy.allowed_tickers,
    Strategy.max_lag_seconds,
    Strategy.rate_limit_per_minute,
    Strategy.max_quantity,
    Strategy.bad_secret,
).where(Strategy.id == bindparam("id"))
# Wrong-secret requests counted per strategy, at most: past it, a flood costs no writes.
BAD_SECRET_CAP = 100


class _Unset:
    """A setting left as it is (``None`` is a value: "no limit")."""


UNSET: Final = _Unset()


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def parse_sources(entries: Sequence[str]) -> list[str]:
    """Allow-list entries: the preset ``tradingview`` or IPv4/IPv6 addresses and CIDR ranges."""
    out: list[str] = []
    for raw in entries:
        text = raw.strip()
        if not text:
            continue
        if text.lower() == TRADINGVIEW:
            entry = TRADINGVIEW
        else:
            try:
                entry = str(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise InvalidInput(
                    f"“{text[:60]}” is not an IP address or range. Use addresses like "
                    "203.0.113.7, ranges like 203.0.113.0/24, or the preset tradingview."
                ) from None
        if entry not in out:
            out.append(entry)
    if len(out) > MAX_SOURCES:
        raise InvalidInput(
            f"An allow-list takes at most {MAX_SOURCES} entries; cover neighbouring addresses "
            "with a range like 203.0.113.0/24."
        )
    return out


def parse_tickers(entries: Sequence[str]) -> list[str]:
    """Allowed tickers as the webhook compares them (``NASDAQ:aapl`` is ``AAPL``)."""
    out: list[str] = []
    for raw in entries:
        if not raw.strip():
            continue
        try:
            norm = normalize_ticker(raw)
        except ValueError as e:
            raise InvalidInput(f"Allowed tickers: “{raw.strip()[:30]}”: {e}") from None
        if norm not in out:
            out.append(norm)
    if len(out) > MAX_TICKERS:
        raise InvalidInput(
            f"A strategy takes at most {MAX_TICKERS} allowed tickers; list fewer, or remove "
            "the list to accept every ticker."
        )
    return out


def source_networks(
    sources: Sequence[str],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for entry in sources:
        if entry == TRADINGVIEW:
            nets.extend(ipaddress.ip_network(ip) for ip in TRADINGVIEW_IPS)
        else:
            nets.append(ipaddress.ip_network(entry, strict=False))
    return nets


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """What the webhook needs about a strategy whose secret checked out."""

    id: str
    name: str
    guild_id: int
    allowed_sources: tuple[str, ...]
    allowed_tickers: frozenset[str]
    max_lag_seconds: int
    rate_limit_per_minute: int
    max_quantity: Decimal | None


@dataclass(frozen=True, slots=True)
class Unshared:
    """A member's direct share removed: how many of their subscriptions ``ended``, and how
    many they ``kept`` because a role of theirs still has the strategy shared."""

    info: StrategyInfo
    ended: int
    kept: int


@dataclass(frozen=True, slots=True)
class StrategyInfo:
    id: str
    name: str
    guild_id: int
    owner_discord_id: int
    is_owner: bool
    # Whom it is shared with, its allow-list and (but for a server admin) its subscription
    # count are its owner's to see: empty, or 0, for anyone else.
    shared_with: tuple[int, ...]  # Discord user ids
    shared_with_roles: tuple[int, ...]  # Discord role ids (the guild's id: @everyone)
    subscriptions: int
    allowed_sources: tuple[str, ...]
    allowed_tickers: tuple[str, ...]
    max_lag_seconds: int
    rate_limit_per_minute: int
    max_quantity: Decimal | None
    max_order_notional: Decimal | None  # per subscriber, on what its signals open
    max_daily_notional: Decimal | None
    created_at: datetime
    secret_rotated_at: datetime
    last_signal_at: datetime | None = None  # the newest request its webhook stored
    refusal_notices: bool = True  # whether its owner is DMed about refused signals
    owner_left_at: datetime | None = None  # when its owner was found gone from the guild


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One subscription to a strategy as its owner sees it: who, paper or live, whether it
    takes signals. Which connection and how it sizes are the subscriber's own business."""

    discord_user_id: int
    mode: str
    enabled: bool
    since: datetime


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """Returned only by ``create`` and ``rotate_secret``: show it once, privately."""

    strategy: StrategyInfo
    url: str

    def __repr__(self) -> str:  # never log the secret
        return f"WebhookUrl(strategy={self.strategy.id!r}, url=<hidden>)"


@dataclass(frozen=True)
class AlertRoutes:
    default: int | None  # the server's alert channel
    strategies: tuple[tuple[str, int], ...]  # (strategy name, its own channel), by name
    # The channels posts were found to fail in for good, since when (until one works again).
    failing: Mapping[int, datetime] = field(default_factory=dict)


class StrategyService:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        self._counting: set[asyncio.Task[None]] = set()
        core.jobs.register(JOB_CHECK_MEMBERS, self._job_check_members)
        # Guild names, for DMs (they change seldom; a stale one only names the server oddly).
        self._guild_names: dict[int, str] = {}

    # -- the webhook's view ---------------------------------------------------------------------

    async def authenticate(self, strategy_id: str, secret: str) -> WebhookAuth | None:
        """The strategy if ``secret`` is its secret; None for a wrong secret *or* an unknown
        strategy, after the same constant-time comparison either way."""
        row: Mapping[str, Any] | None = None
        if _is_uuid(strategy_id):
            fast = self.core.signals.acks.fast
            if fast is not None:
                row = await fast.strategy(strategy_id)
            else:
                async with self.core.db.engine.connect() as conn:
                    found = (await conn.execute(_AUTH, {"id": strategy_id})).first()
                row = found._mapping if found is not None else None
        stored = row["secret_hash"] if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(hash_secret(secret), stored)
        if row is None:
            return None
        if not matches:
            if row["bad_secret"] < BAD_SECRET_CAP:
                # Counted after the answer, so a wrong secret is answered as fast as an
                # unknown strategy.
                task = asyncio.get_running_loop().create_task(
                    self._count_bad_secret(row["id"], self.core.signals.clock())
                )
                self._counting.add(task)
                task.add_done_callback(self._counting.discard)
            return None
        return _webhook_auth(row)

    async def settle(self) -> None:
        """Wait for the wrong-secret counts still being written (before the database closes)."""
        await asyncio.gather(*self._counting)

    async def _count_bad_secret(self, strategy_id: str, at: datetime) -> None:
        try:
            await self.core.signals.acks.count_bad_secret(strategy_id, at)
        except Exception:  # a lost count is not worth a failed request, nor a crash
            log.warning("Could not count a wrong-secret request", exc_info=True)

    # -- management -------------------------------------------------------------------------------

    async def create(self, guild_id: int, discord_user_id: int, name: str) -> WebhookUrl:
        clean = _clean_name(name)
        owner_id = await self.core.members.ensure(discord_user_id)
        secret = new_secret()
        now = self.clock()
        strategy = Strategy(
            id=str(uuid.uuid4()),
            guild_id=guild_id,
            owner_member_id=owner_id,
            name=clean,
            name_key=_name_key(clean),
            secret_hash=hash_secret(secret),
            secret_rotated_at=now,
            allowed_sources=[],
            allowed_tickers=[],
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.core.db.transaction() as s:
                s.add(strategy)
                await s.flush()
                audit.record(
                    s,
                    "strategy.created",
                    member_id=owner_id,
                    strategy_id=strategy.id,
                    guild_id=guild_id,
                )
        except IntegrityError:
            raise Conflict(
                f"This server already has a strategy named “{clean}”. Pick another name."
            ) from None
        info = await self.get(guild_id, discord_user_id, strategy.id)
        return WebhookUrl(info, self.webhook_url(strategy.id, secret))

    def webhook_url(self, strategy_id: str, secret: str) -> str:
        return f"{self.core.settings.public_url.rstrip('/')}/webhook/{strategy_id}/{secret}"

    async def names(self, guild_id: int) -> list[str]:
        """Every strategy of the guild, by name (for its admins)."""
        async with self.core.db.session() as s:
            return list(
                await s.scalars(
                    select(Strategy.name)
                    .where(Strategy.guild_id == guild_id)
                    .order_by(Strategy.name_key)
                )
            )

    async def list(
        self,
        guild_id: int,
        discord_user_id: int,
        *,
        roles: Collection[int] = (),
        everyone: bool = False,
    ) -> list[StrategyInfo]:
        """The guild's strategies this member can see (``visible``); all of them for a server
        admin who asks for ``everyone`` (the caller checks)."""
        member_id = await self.core.members.ensure(discord_user_id)
        query = select(Strategy).where(Strategy.guild_id == guild_id)
        if not everyone:
            query = query.where(visible(member_id, roles))
        async with self.core.db.session() as s:
            rows = list(await s.scalars(query.order_by(Strategy.name_key)))
        return [await self._info(r, member_id, moderator=everyone) for r in rows]

    async def owner_auth(self, guild_id: int, discord_user_id: int, strategy: str) -> WebhookAuth:
        """The webhook's view of a strategy, for its owner to send it a signal from Discord
        (``/strategy test``) as the webhook would with the secret."""
        member_id = await self.core.members.ensure(discord_user_id)
        row = await self._find(guild_id, strategy)
        if row.owner_member_id != member_id:
            if await self._sees(row.id, member_id):
                raise PermissionDenied(
                    f"Only the owner of “{row.name}” sends it test signals: they reach "
                    "every subscriber."
                )
            raise NotFound(_not_found(strategy))
        async with self.core.db.engine.connect() as conn:
            return _webhook_auth((await conn.execute(_AUTH, {"id": row.id})).one()._mapping)

    async def get(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        *,
        roles: Collection[int] = (),
        moderator: bool = False,
    ) -> StrategyInfo:
        """A strategy by name or id that this member can see (``visible``, with ``roles``
        theirs in the guild); any of the guild's for a ``moderator`` (a server admin: the
        caller checks)."""
        member_id = await self.core.members.ensure(discord_user_id)
        row = await self._find(guild_id, strategy)
        if (
            not moderator
            and row.owner_member_id != member_id
            and not await self._sees(row.id, member_id, roles)
        ):
            raise NotFound(_not_found(strategy))
        return await self._info(row, member_id, moderator=moderator)

    async def rotate_secret(
        self, guild_id: int, discord_user_id: int, strategy: str, *, roles: Collection[int] = ()
    ) -> WebhookUrl:
        """A new secret; the old URL stops working at once. (``roles``: the member's, to tell
        one who sees it through a role that it is not theirs.)"""
        row = await self._owned(guild_id, discord_user_id, strategy, roles)
        secret = new_secret()
        now = self.clock()
        async with self.core.db.transaction() as s:
            await s.execute(
                update(Strategy)
                .where(Strategy.id == row.id)
                .values(secret_hash=hash_secret(secret), secret_rotated_at=now, updated_at=now)
            )
            audit.record(
                s, "strategy.secret_rotated", member_id=row.owner_member_id, strategy_id=row.id
            )
        info = await self.get(guild_id, discord_user_id, row.id)
        return WebhookUrl(info, self.webhook_url(row.id, secret))

    async def delete(
        self, guild_id: int, discord_user_id: int, strategy: str, *, moderator: bool = False
    ) -> None:
        """Delete with its subscriptions and signal log; approvals waiting on it are withdrawn.
        A ``moderator`` (a server admin: the caller checks) may delete any of the guild's, for
        one whose owner left the server or that should not be there; its owner is told."""
        if moderator:
            row = await self._find(guild_id, strategy)
            by = await self.core.members.ensure(discord_user_id)
        else:
            row = await self._owned(guild_id, discord_user_id, strategy)
            by = row.owner_member_id
        async with self.core.db.transaction() as s:
            withdrawn = await withdraw_approvals(
                s, select(Subscription.id).where(Subscription.strategy_id == row.id), self.clock()
            )
            subscribers = set(
                await s.scalars(
                    select(Member.discord_user_id)
                    .join(Subscription, Subscription.member_id == Member.id)
                    .where(
                        Subscription.strategy_id == row.id,
                        Subscription.member_id != row.owner_member_id,
                    )
                )
            )
            owner = await s.scalar(
                select(Member.discord_user_id).where(Member.id == row.owner_member_id)
            )
            await s.execute(delete(Strategy).where(Strategy.id == row.id))
            audit.record(
                s,
                "strategy.deleted",
                member_id=by,
                strategy_id=row.id,
                name=row.name,
                owner_member_id=row.owner_member_id,
            )
        await close_withdrawn(self.core.notifier, withdrawn)
        who = "its owner" if by == row.owner_member_id else "a server admin"
        # Its subscribers would otherwise learn it only from signals that stop coming.
        ended = Outgoing(
            f"🗑️ The strategy “{row.name}” was deleted by {who}, so your subscription to "
            "it has ended: its signals no longer trade for you. Orders already placed and "
            "positions stay as they are."
        )
        for discord_id in sorted(subscribers):
            await dm_quietly(self.core.notifier, discord_id, ended, about="a deleted strategy")
        if by != row.owner_member_id and owner is not None:
            await dm_quietly(
                self.core.notifier,
                owner,
                Outgoing(
                    f"🗑️ A server admin deleted your strategy “{row.name}”: its webhook URL "
                    "stopped working and its subscriptions ended. Orders already placed and "
                    "positions stay as they are."
                ),
                about="a strategy a server admin deleted",
            )

    async def share(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        with_discord_user_id: int,
        *,
        guild_name: str | None = None,
    ) -> StrategyInfo:
        """Let another member subscribe; they are told, in the guild named ``guild_name``."""
        row = await self._owned(guild_id, discord_user_id, strategy)
        if with_discord_user_id == discord_user_id:
            raise InvalidInput("You own this strategy already; share it with someone else.")
        other = await self.core.members.ensure(with_discord_user_id)
        try:
            async with self.core.db.transaction() as s:
                s.add(StrategyShare(strategy_id=row.id, member_id=other, created_at=self.clock()))
                await s.flush()
                audit.record(
                    s,
                    "strategy.shared",
                    member_id=row.owner_member_id,
                    strategy_id=row.id,
                    with_member_id=other,
                )
        except IntegrityError:  # already shared: sharing twice is the same as once, told once
            return await self.get(guild_id, discord_user_id, row.id)
        info = await self.get(guild_id, discord_user_id, row.id)
        await dm_quietly(
            self.core.notifier,
            with_discord_user_id,
            Outgoing(
                f"<@{info.owner_discord_id}> shared the strategy **{plain(row.name)}** with "
                f"you. To trade its signals, run /subscribe strategy:{plain(row.name)} in "
                + (f"**{plain(guild_name)}**" if guild_name else "that server")
                + ": you choose the connection and the size."
            ),
            about="a strategy shared with a member",
        )
        return info

    async def subscribers(
        self, guild_id: int, discord_user_id: int, strategy: str, *, moderator: bool = False
    ) -> tuple[StrategyInfo, list[Subscriber]]:
        """Who subscribes to a strategy: for its owner, or a ``moderator`` (a server admin: the
        caller checks). Oldest first."""
        member_id = await self.core.members.ensure(discord_user_id)
        row = await self._find(guild_id, strategy)
        if not moderator and row.owner_member_id != member_id:
            if not await self._sees(row.id, member_id):
                raise NotFound(_not_found(strategy))
            raise PermissionDenied(
                f"Only the owner of “{row.name}” and server admins see who subscribes to it."
            )
        async with self.core.db.session() as s:
            rows = await s.execute(
                select(
                    Member.discord_user_id,
                    Subscription.mode,
                    Subscription.enabled,
                    Subscription.created_at,
                )
                .join(Member, Member.id == Subscription.member_id)
                .where(Subscription.strategy_id == row.id)
                .order_by(Subscription.created_at, Subscription.id)
            )
            found = [Subscriber(*r) for r in rows]
        return await self._info(row, member_id, moderator=moderator), found

    async def share_role(
        self, guild_id: int, discord_user_id: int, strategy: str, role_id: int
    ) -> StrategyInfo:
        """Let the members of a role subscribe (the guild's id: everyone in it) while they have
        it: a paid community's role gives its members the strategy, and one who loses the role
        loses the subscriptions it gave (``reconcile_access``)."""
        row = await self._owned(guild_id, discord_user_id, strategy)
        with contextlib.suppress(IntegrityError):  # already shared with it: the same as once
            async with self.core.db.transaction() as s:
                s.add(
                    StrategyRoleShare(strategy_id=row.id, role_id=role_id, created_at=self.clock())
                )
                await s.flush()
                audit.record(
                    s,
                    "strategy.shared",
                    member_id=row.owner_member_id,
                    strategy_id=row.id,
                    with_role_id=role_id,
                )
        return await self.get(guild_id, discord_user_id, row.id)

    async def unshare_role(
        self, guild_id: int, discord_user_id: int, strategy: str, role_id: int
    ) -> tuple[StrategyInfo, int]:
        """Stop sharing with a role; the subscriptions of its members who have no other way to
        it (a share of their own, another role it is shared with) end, and they are told.
        Returns the strategy and how many subscribers lost it."""
        row = await self._owned(guild_id, discord_user_id, strategy)
        lost = await self._drop_role_share(row, role_id, by=row.owner_member_id)
        return await self.get(guild_id, discord_user_id, row.id), lost

    async def role_deleted(self, guild_id: int, role_id: int) -> int:
        """A server admin deleted a role: the strategies shared with it no longer are, as with
        ``unshare_role``. Returns how many subscribers lost a strategy."""
        async with self.core.db.session() as s:
            rows = list(
                await s.scalars(
                    select(Strategy).where(
                        Strategy.guild_id == guild_id,
                        Strategy.id.in_(
                            select(StrategyRoleShare.strategy_id).where(
                                StrategyRoleShare.role_id == role_id
                            )
                        ),
                    )
                )
            )
        return sum([await self._drop_role_share(row, role_id, by=None) for row in rows])

    async def _drop_role_share(self, row: Strategy, role_id: int, *, by: int | None) -> int:
        async with self.core.db.transaction() as s:
            dropped = await s.execute(
                delete(StrategyRoleShare).where(
                    StrategyRoleShare.strategy_id == row.id, StrategyRoleShare.role_id == role_id
                )
            )
            if not dropped.rowcount:  # type: ignore[attr-defined]
                if by is None:  # a deleted role another process has already dealt with
                    return 0
                raise InvalidInput(
                    f"“{row.name}” is not shared with that role. /strategy settings lists "
                    "whom it is shared with."
                )
            audit.record(
                s,
                "strategy.unshared",
                member_id=by if by is not None else row.owner_member_id,
                strategy_id=row.id,
                with_role_id=role_id,
                **({"reason": "the role was deleted"} if by is None else {}),
            )
            subscribers = set(
                await s.scalars(
                    select(Member.discord_user_id)
                    .join(Subscription, Subscription.member_id == Member.id)
                    .where(
                        Subscription.strategy_id == row.id,
                        Subscription.member_id != row.owner_member_id,
                    )
                )
            )
        lost = 0
        for subscriber in sorted(subscribers):
            lost += bool(await self.check_member(row.guild_id, subscriber, only=row.id))
        return lost

    async def schedule_member_check(self) -> bool:
        """Queue this hour's ``check_members``: every process asks each hour, one runs it. Not
        with the Server Members intent: the bot then hears of every departure and role change
        as it happens, and of those while it was away when it starts."""
        if self.core.settings.discord_members_intent:
            return False
        hour = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H")
        return await self.core.jobs.enqueue(JOB_CHECK_MEMBERS, {}, key=f"members:{hour}")

    async def _job_check_members(self, payload: Mapping[str, Any]) -> None:
        await self.check_members()

    async def check_members(self) -> int:
        """Ask Discord, member by member, whether those who follow another member's strategy
        still may, and whether those followed are still there: a member no longer in the guild
        is handled as ``member_left``, one who lost a role as ``reconcile_access``. This needs
        no privileged intent, so it also finds what a bot without the Server Members intent
        never hears of. Returns how many subscriptions ended."""
        async with self.core.db.session() as s:
            guilds = list(await s.scalars(select(Strategy.guild_id).distinct()))
        ended = 0
        for guild_id in guilds:
            try:
                ended += await self._check_guild(guild_id)
            except Exception as e:
                if getattr(e, "code", None) in GUILD_GONE:
                    # Removed while no process heard GUILD_DELETE: as the event would have.
                    paused = await self.guild_removed(guild_id)
                    log.info("Not in guild %s: %d subscriptions paused", guild_id, paused)
                    continue
                log.warning("Could not check the members of guild %s: %r", guild_id, e)
        return ended

    async def _check_guild(self, guild_id: int) -> int:
        notifier = self.core.notifier
        if notifier is None:
            return 0
        ended = 0
        members = await self.followers(guild_id) | await self.followed(guild_id)
        if not members:
            # Only owners trading their own strategies: ask after one, which also says
            # whether Tradecord is still in the guild.
            async with self.core.db.session() as s:
                owner = await s.scalar(
                    select(Member.discord_user_id)
                    .join(Subscription, Subscription.member_id == Member.id)
                    .join(Strategy, Strategy.id == Subscription.strategy_id)
                    .where(Strategy.guild_id == guild_id, Subscription.enabled.is_(True))
                    .limit(1)
                )
            members = {owner} if owner is not None else set()
        for discord_user_id in sorted(members):
            roles = await notifier.member_roles(guild_id, discord_user_id)
            ended += len(await self.reconcile_access(guild_id, discord_user_id, roles))
        return ended

    async def followed(self, guild_id: int) -> set[int]:
        """The owners of the guild's strategies that other members subscribe to: whose leaving
        their subscribers hear of."""
        async with self.core.db.session() as s:
            found = await s.scalars(
                select(Member.discord_user_id)
                .join(Strategy, Strategy.owner_member_id == Member.id)
                .join(Subscription, Subscription.strategy_id == Strategy.id)
                .where(Strategy.guild_id == guild_id, Subscription.member_id != Member.id)
                .distinct()
            )
            return set(found)

    async def check_member(
        self, guild_id: int, discord_user_id: int, *, only: str | None = None
    ) -> list[str]:
        """``reconcile_access`` with the member's roles as Discord has them now (``only``: for
        this strategy alone, whose role share was removed); a member Discord cannot answer for
        is left as they are (the hourly check asks again)."""
        notifier = self.core.notifier
        if notifier is None:
            return []
        try:
            roles = await notifier.member_roles(guild_id, discord_user_id)
        except Exception as e:
            log.warning("Could not read a member's roles in guild %s: %r", guild_id, e)
            return []
        return await self.reconcile_access(guild_id, discord_user_id, roles, only=only)

    async def _guild_name(self, guild_id: int, given: str | None) -> str | None:
        """``given``, or the guild's name as Discord has it, for a DM to name the server."""
        if given is not None:
            self._guild_names[guild_id] = given
            return given
        if guild_id not in self._guild_names and self.core.notifier is not None:
            name = await self.core.notifier.guild_name(guild_id)
            if name is None:
                return None
            self._guild_names[guild_id] = name
        return self._guild_names.get(guild_id)

    async def reconcile_access(
        self,
        guild_id: int,
        discord_user_id: int,
        roles: frozenset[int] | None,
        *,
        guild_name: str | None = None,
        only: str | None = None,
    ) -> list[str]:
        """The member's roles changed to ``roles`` (None: they are no longer a member, see
        ``member_left``): their subscriptions to strategies nothing shares with them any more
        (a role they no longer have, a role share removed), end, and they are told. Returns
        the names of those strategies."""
        if roles is None:
            return await self.member_left(guild_id, discord_user_id, guild_name)
        async with self.core.db.transaction() as s:
            member_id = await s.scalar(
                select(Member.id).where(Member.discord_user_id == discord_user_id)
            )
            if member_id is None:
                return []
            await s.execute(  # a member found gone is back: their strategies have an owner
                update(Strategy)
                .where(
                    Strategy.guild_id == guild_id,
                    Strategy.owner_member_id == member_id,
                    Strategy.owner_left_at.is_not(None),
                )
                .values(owner_left_at=None)
            )
            # Every strategy they may no longer see, not only those still shared with some
            # role: one whose last role share was removed while Discord could not say who had
            # the role keeps its subscriptions until this finds them (``only``: just that one).
            lost = select(Strategy.id).where(
                Strategy.guild_id == guild_id, ~visible(member_id, roles, subscribed=False)
            )
            if only is not None:
                lost = lost.where(Strategy.id == only)
            theirs = (Subscription.member_id == member_id) & Subscription.strategy_id.in_(lost)
            names, withdrawn = await self._end(
                s, member_id, theirs, "lost the role it was shared with"
            )
        await close_withdrawn(self.core.notifier, withdrawn)
        ended = sorted(names.values(), key=str.casefold)
        if ended:
            guild_name = await self._guild_name(guild_id, guild_name)
            where = f" in **{plain(guild_name)}**" if guild_name else ""
            listed = ", ".join(f"**{plain(n)}**" for n in ended)
            await dm_quietly(
                self.core.notifier,
                discord_user_id,
                Outgoing(
                    f"You no longer have a role{where} that {listed} "
                    f"{'is' if len(ended) == 1 else 'are'} shared with, so "
                    f"{'its' if len(ended) == 1 else 'their'} signals no longer trade for you: "
                    f"your subscription{plural(len(ended))} ended. Your connections, open "
                    "orders and positions are unchanged (/orders, /positions)."
                ),
                about="subscriptions ended on losing a role",
            )
        return ended

    async def followers(self, guild_id: int) -> set[int]:
        """The members (Discord ids) the guild's strategies are shared with or that subscribe
        to another member's: whom leaving the guild concerns."""
        async with self.core.db.session() as s:
            shared = select(StrategyShare.member_id).join(
                Strategy, Strategy.id == StrategyShare.strategy_id
            )
            subscribed = select(Subscription.member_id).join(
                Strategy, Strategy.id == Subscription.strategy_id
            )
            found = await s.scalars(
                select(Member.discord_user_id).where(
                    Member.id.in_(shared.where(Strategy.guild_id == guild_id))
                    | Member.id.in_(
                        subscribed.where(
                            Strategy.guild_id == guild_id,
                            Subscription.member_id != Strategy.owner_member_id,
                        )
                    )
                )
            )
            return set(found)

    async def transfer(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        to_discord_user_id: int,
        *,
        moderator: bool = False,
    ) -> StrategyInfo:
        """Give the strategy to another member of the guild: by its owner, or by a
        ``moderator`` (a server admin: the caller checks) for one whose owner left. Its webhook
        URL, settings and subscriptions stay; the former owner keeps it shared with them, so a
        subscription of theirs goes on, unless they left the server: then theirs ends. Both
        are told."""
        row = (
            await self._find(guild_id, strategy)
            if moderator
            else await self._owned(guild_id, discord_user_id, strategy)
        )
        new_owner = await self.core.members.ensure(to_discord_user_id)
        if new_owner == row.owner_member_id:
            raise InvalidInput(f"“{row.name}” is theirs already; pick another member.")
        by = await self.core.members.ensure(discord_user_id)
        async with self.core.db.transaction() as s:
            former = await s.scalar(
                select(Member.discord_user_id).where(Member.id == row.owner_member_id)
            )
            await s.execute(
                update(Strategy)
                .where(Strategy.id == row.id)
                .values(owner_member_id=new_owner, owner_left_at=None, updated_at=self.clock())
            )
            await s.execute(
                delete(StrategyShare).where(
                    StrategyShare.strategy_id == row.id, StrategyShare.member_id == new_owner
                )
            )
            left = row.owner_left_at is not None
            ended: dict[str, str] = {}
            withdrawn: Withdrawn = []
            if left:
                # Gone from the server: as ``member_left`` would have, had it not been theirs.
                theirs = (Subscription.member_id == row.owner_member_id) & (
                    Subscription.strategy_id == row.id
                )
                ended, withdrawn = await self._end(
                    s, row.owner_member_id, theirs, "left the server"
                )
            else:
                s.add(
                    StrategyShare(
                        strategy_id=row.id, member_id=row.owner_member_id, created_at=self.clock()
                    )
                )
            audit.record(
                s,
                "strategy.transferred",
                member_id=by,
                strategy_id=row.id,
                from_member_id=row.owner_member_id,
                to_member_id=new_owner,
            )
        await close_withdrawn(self.core.notifier, withdrawn)
        name = plain(row.name)
        # Which server and who gave it: strategy names are unique only within a server.
        guild_name = await self._guild_name(guild_id, None)
        where = f" in **{plain(guild_name)}**" if guild_name else ""
        giver = "A server admin" if moderator else f"<@{discord_user_id}>"
        await dm_quietly(
            self.core.notifier,
            to_discord_user_id,
            Outgoing(
                f"{giver} gave you the strategy **{name}**{where}: you now own it, and its "
                "settings and subscriptions are yours to change. Its webhook URL stays as it "
                "was, so the alerts that send it go on; /strategy rotate-secret gives you a URL "
                "of your own and stops the old one."
            ),
            about="a strategy given to a member",
        )
        if former is not None and former != discord_user_id:
            if left:
                guild_name = await self._guild_name(guild_id, None)
                where = f"**{plain(guild_name)}**" if guild_name else "that server"
                told = (
                    f"You are no longer a member of {where}, so a server admin gave your "
                    f"strategy **{name}** to another member"
                    + (
                        ", and your subscription to it ended. Your connections, open orders "
                        "and positions are unchanged (/orders, /positions)."
                        if ended
                        else "."
                    )
                )
            else:
                told = (
                    f"A server admin gave your strategy **{name}** to another member. It stays "
                    "shared with you, so your subscription to it goes on."
                )
            await dm_quietly(
                self.core.notifier,
                former,
                Outgoing(told),
                about="a strategy a server admin gave away",
            )
        return await self._info(await self._find(guild_id, row.id), by, moderator=moderator)

    async def member_left(
        self, guild_id: int, discord_user_id: int, guild_name: str | None = None
    ) -> list[str]:
        """A member left the guild, or was kicked or banned: its strategies (those of other
        members) are no longer shared with them, and their subscriptions to them end, as a
        paid community expects of a member it removed; they are told, where a DM reaches
        them. The subscribers of strategies they own are told those go on without them.
        Returns the names of the strategies whose subscriptions ended. Their connections,
        orders and positions stay theirs."""
        async with self.core.db.transaction() as s:
            member_id = await s.scalar(
                select(Member.id).where(Member.discord_user_id == discord_user_id)
            )
            if member_id is None:
                return []
            # RETURNING, here and below: what this call changed, so that of two processes that
            # find the same departure (an event and the hourly check), one tells.
            marked = list(
                await s.scalars(
                    update(Strategy)
                    .where(
                        Strategy.guild_id == guild_id,
                        Strategy.owner_member_id == member_id,
                        Strategy.owner_left_at.is_(None),
                    )
                    .values(owner_left_at=self.clock())
                    .returning(Strategy.id)
                )
            )
            orphaned = (
                await s.execute(
                    select(Strategy.name, Member.discord_user_id)
                    .join(Subscription, Subscription.strategy_id == Strategy.id)
                    .join(Member, Member.id == Subscription.member_id)
                    .where(Strategy.id.in_(marked), Subscription.member_id != member_id)
                    .distinct()
                )
            ).all()
            guilds = select(Strategy.id).where(
                Strategy.guild_id == guild_id, Strategy.owner_member_id != member_id
            )
            theirs = (Subscription.member_id == member_id) & Subscription.strategy_id.in_(guilds)
            shares = (StrategyShare.member_id == member_id) & StrategyShare.strategy_id.in_(guilds)
            names, withdrawn = await self._end(s, member_id, theirs, "left the server")
            await s.execute(delete(StrategyShare).where(shares))
        await close_withdrawn(self.core.notifier, withdrawn)
        if names or orphaned:
            guild_name = await self._guild_name(guild_id, guild_name)
        where = f"**{plain(guild_name)}**" if guild_name else "a server"
        ended = sorted(names.values(), key=str.casefold)
        if ended:
            listed = ", ".join(f"**{plain(n)}**" for n in ended)
            await dm_quietly(
                self.core.notifier,
                discord_user_id,
                Outgoing(
                    f"You are no longer a member of {where}, so its strategies no longer trade "
                    f"for you: your subscription{plural(len(ended))} to {listed} ended. Your "
                    "connections, open orders and positions are unchanged (/orders, /positions)."
                ),
                about="subscriptions ended on leaving a server",
            )
        for name, subscriber in orphaned:
            await dm_quietly(
                self.core.notifier,
                subscriber,
                Outgoing(
                    f"The owner of **{plain(name)}** left {where}. Its signals still trade for "
                    "you while its alerts send them, but nobody there can change its settings "
                    f"now. /unsubscribe strategy:{plain(name)} stops them; a server admin can "
                    "give it to another member (/strategy transfer) or delete it."
                ),
                about="a strategy whose owner left",
            )
        return ended

    async def guild_removed(self, guild_id: int, guild_name: str | None = None) -> int:
        """Tradecord was removed from the guild (Discord no longer lets it in): every
        subscription to its strategies is paused, so nothing trades for them, and kept, for
        its member to remove (``subscriptions.unsubscribe`` finds it from anywhere) or, if
        Tradecord is added back, to resume. Subscribers and owners are told. Returns how
        many were paused: of two processes that find the same removal (the event, the
        hourly check), the one whose update paused them tells."""
        now = self.clock()
        async with self.core.db.transaction() as s:
            paused = (
                await s.execute(
                    update(Subscription)
                    .where(
                        Subscription.enabled.is_(True),
                        Subscription.strategy_id.in_(
                            select(Strategy.id).where(Strategy.guild_id == guild_id)
                        ),
                    )
                    .values(enabled=False, updated_at=now)
                    .returning(Subscription.member_id, Subscription.strategy_id)
                )
            ).all()
            if not paused:
                return 0
            for member_id, strategy_id in paused:
                audit.record(
                    s,
                    "subscription.paused",
                    member_id=member_id,
                    strategy_id=strategy_id,
                    reason="Tradecord was removed from the server",
                )
            strategies = {
                row.id: (row.name, row.owner)
                for row in await s.execute(
                    select(Strategy.id, Strategy.name, Member.discord_user_id.label("owner"))
                    .join(Member, Member.id == Strategy.owner_member_id)
                    .where(Strategy.id.in_({strategy_id for _, strategy_id in paused}))
                )
            }
            people = dict(
                (
                    await s.execute(
                        select(Member.id, Member.discord_user_id).where(
                            Member.id.in_({member_id for member_id, _ in paused})
                        )
                    )
                ).all()
            )
        guild_name = await self._guild_name(guild_id, guild_name)
        where = f"**{plain(guild_name)}**" if guild_name else "a server"
        # Who subscribes to what (an owner's own subscription is said in the owner's DM).
        followed: dict[int, set[str]] = {}
        counts: dict[str, int] = {}
        others: dict[str, int] = {}
        for member_id, strategy_id in paused:
            name, owner = strategies[strategy_id]
            counts[strategy_id] = counts.get(strategy_id, 0) + 1
            if people[member_id] != owner:
                others[strategy_id] = others.get(strategy_id, 0) + 1
                followed.setdefault(people[member_id], set()).add(name)
        how = "here in our DMs, or in any server Tradecord is in"
        for discord_id, names in sorted(followed.items()):
            listed = sorted(names, key=str.casefold)
            one = len(listed) == 1
            shown = ", ".join(f"**{plain(n)}**" for n in listed)
            name = plain(listed[0]) if one else "<name>"
            await dm_quietly(
                self.core.notifier,
                discord_id,
                Outgoing(
                    f"Tradecord was removed from {where}, so {shown} no longer "
                    + (
                        "trades for you: your subscription to it is paused."
                        if one
                        else "trade for you: your subscriptions to them are paused."
                    )
                    + " Orders already placed and positions stay as they are. To remove "
                    + f"{'it' if one else 'one'}: /unsubscribe strategy:{name} ({how}). If "
                    + "Tradecord is added back to that server, "
                    + (
                        "it stays paused until you resume it"
                        if one
                        else "they stay paused until you resume each"
                    )
                    + f" there: /subscribe strategy:{name} active:true."
                ),
                about="subscriptions paused when Tradecord left a server",
            )
        for strategy_id, count in sorted(counts.items()):
            name, owner = strategies[strategy_id]
            told = (
                ", and its subscribers were told how to remove theirs"
                if others.get(strategy_id)
                else ""
            )
            yours = (
                f" To remove yours: /unsubscribe strategy:{plain(name)} ({how})."
                if others.get(strategy_id, 0) < count
                else ""
            )
            await dm_quietly(
                self.core.notifier,
                owner,
                Outgoing(
                    f"Tradecord was removed from {where}, so your strategy **{plain(name)}** "
                    f"no longer trades for anyone: its {count} subscription{plural(count)} "
                    f"{'is' if count == 1 else 'are'} paused{told}.{yours} If Tradecord is "
                    "added back to that server, each stays paused until its member resumes "
                    f"it there (/subscribe strategy:{plain(name)} active:true)."
                ),
                about="a strategy paused when Tradecord left a server",
            )
        return len(paused)

    async def subscribed_elsewhere(
        self, discord_user_id: int, strategy: str, guild_id: int | None
    ) -> list[tuple[str, str, int]]:
        """The strategies named ``strategy`` (or with that id) of guilds other than
        ``guild_id`` that the member subscribes to: (id, name, guild id). Only their own
        subscriptions, so no other server's strategy is disclosed."""
        member_id = await self.core.members.ensure(discord_user_id)
        match = Strategy.name_key == _name_key(strategy)
        if _is_uuid(strategy.strip()):
            match |= Strategy.id == strategy.strip()
        query = (
            select(Strategy.id, Strategy.name, Strategy.guild_id)
            .join(Subscription, Subscription.strategy_id == Strategy.id)
            .where(Subscription.member_id == member_id, match)
            .distinct()
        )
        if guild_id is not None:
            query = query.where(Strategy.guild_id != guild_id)
        async with self.core.db.session() as s:
            return [(row.id, row.name, row.guild_id) for row in await s.execute(query)]

    async def _end(
        self, s: AsyncSession, member_id: int, theirs: ColumnElement[bool], reason: str
    ) -> tuple[dict[str, str], Withdrawn]:
        """In the caller's transaction: end the member's subscriptions ``theirs`` selects, with
        their approvals waiting, audited. Returns the strategies' names by id, and the cards
        to close once it commits. RETURNING: of two processes that see the same change, the
        one that ended them tells the member."""
        withdrawn = await withdraw_approvals(s, select(Subscription.id).where(theirs), self.clock())
        gone = set(
            await s.scalars(delete(Subscription).where(theirs).returning(Subscription.strategy_id))
        )
        names = {
            row.id: row.name
            for row in await s.execute(
                select(Strategy.id, Strategy.name).where(Strategy.id.in_(gone))
            )
        }
        for strategy_id in names:
            audit.record(
                s,
                "subscription.ended",
                member_id=member_id,
                strategy_id=strategy_id,
                reason=reason,
            )
        return names, withdrawn

    async def unshare(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        with_discord_user_id: int,
        *,
        roles: Collection[int] = (),
    ) -> Unshared:
        """Stop sharing with a member. Their subscriptions to it end too, unless one of their
        ``roles`` still has it shared: then they keep them, as they could subscribe again."""
        row = await self._owned(guild_id, discord_user_id, strategy)
        other = await self.core.members.ensure(with_discord_user_id)
        if other == row.owner_member_id:  # else it would end the owner's own subscriptions
            raise InvalidInput(
                "You own this strategy, so it is not shared with you: pick a member it is "
                f"shared with. To stop it trading for you: /unsubscribe strategy:{row.name}."
            )
        theirs = (Subscription.strategy_id == row.id) & (Subscription.member_id == other)
        async with self.core.db.transaction() as s:
            shared = await s.execute(
                delete(StrategyShare).where(
                    StrategyShare.strategy_id == row.id, StrategyShare.member_id == other
                )
            )
            kept = (
                bool(roles)
                and await s.scalar(
                    select(Strategy.id).where(
                        Strategy.id == row.id, visible(other, roles, subscribed=False)
                    )
                )
                is not None
            )
            subscribed = await s.scalar(
                select(func.count()).select_from(Subscription).where(theirs)
            )
            if not shared.rowcount and kept:  # type: ignore[attr-defined]
                raise InvalidInput(
                    f"“{row.name}” is shared with them only through a role they have. "
                    "/strategy unshare with that role stops it for everyone who has it."
                )
            if not shared.rowcount and not subscribed:  # type: ignore[attr-defined]
                raise InvalidInput(
                    f"“{row.name}” is not shared with them. /strategy settings lists whom it "
                    "is shared with."
                )
            withdrawn: Withdrawn = []
            ended = 0
            if not kept:
                withdrawn = await withdraw_approvals(
                    s, select(Subscription.id).where(theirs), self.clock()
                )
                ended = (await s.execute(delete(Subscription).where(theirs))).rowcount  # type: ignore[attr-defined]
            audit.record(
                s,
                "strategy.unshared",
                member_id=row.owner_member_id,
                strategy_id=row.id,
                with_member_id=other,
                kept_by_role=kept,
            )
        await close_withdrawn(self.core.notifier, withdrawn)
        if ended:
            await dm_quietly(
                self.core.notifier,
                with_discord_user_id,
                Outgoing(
                    f"The owner of **{plain(row.name)}** stopped sharing it with you, so its "
                    f"signals no longer trade for you: your subscription{plural(ended)} ended. "
                    "Orders already placed and positions stay as they are."
                ),
                about="a strategy no longer shared with a member",
            )
        info = await self.get(guild_id, discord_user_id, row.id)
        return Unshared(info, ended=ended, kept=subscribed if kept else 0)

    async def configure(
        self,
        guild_id: int,
        discord_user_id: int,
        strategy: str,
        *,
        allowed_sources: Sequence[str] | _Unset = UNSET,
        allowed_tickers: Sequence[str] | _Unset = UNSET,
        max_lag_seconds: int | _Unset = UNSET,
        rate_limit_per_minute: int | _Unset = UNSET,
        max_quantity: Decimal | _Unset | None = UNSET,
        refusal_notices: bool | _Unset = UNSET,
        roles: Collection[int] = (),
    ) -> StrategyInfo:
        """Change the webhook's rules; arguments left out stay as they are. (``roles``: the
        member's, as for ``rotate_secret``.)"""
        row = await self._owned(guild_id, discord_user_id, strategy, roles)
        values: dict[str, Any] = {}
        if not isinstance(allowed_sources, _Unset):
            values["allowed_sources"] = parse_sources(allowed_sources)
        if not isinstance(allowed_tickers, _Unset):
            values["allowed_tickers"] = parse_tickers(allowed_tickers)
        if not isinstance(max_lag_seconds, _Unset):
            if not MIN_LAG_SECONDS <= max_lag_seconds <= MAX_LAG_SECONDS:
                raise InvalidInput(
                    f"The maximum signal age must be between {MIN_LAG_SECONDS} and "
                    f"{MAX_LAG_SECONDS} seconds ({MAX_LAG_SECONDS // 60} minutes, the most "
                    f"Tradecord allows); {max_lag_seconds} is not. Pick a value in that range."
                )
            values["max_lag_seconds"] = max_lag_seconds
        if not isinstance(rate_limit_per_minute, _Unset):
            if not MIN_RATE_LIMIT <= rate_limit_per_minute <= MAX_RATE_LIMIT:
                raise InvalidInput(
                    f"The rate limit must be between {MIN_RATE_LIMIT} and {MAX_RATE_LIMIT} "
                    f"signals a minute ({MAX_RATE_LIMIT} is the most Tradecord allows); "
                    f"{rate_limit_per_minute} is not. Pick a value in that range."
                )
            values["rate_limit_per_minute"] = rate_limit_per_minute
        if not isinstance(max_quantity, _Unset):
            if max_quantity is not None and not (
                max_quantity.is_finite()
                and 0 < max_quantity < MAX_NUMBER
                and -int(max_quantity.normalize().as_tuple().exponent) <= MAX_DECIMALS
            ):
                raise InvalidInput(
                    f"The maximum quantity must be a positive number below {MAX_NUMBER:,} "
                    f"with at most {MAX_DECIMALS} decimals, like 100; or remove the limit."
                )
            values["max_quantity"] = max_quantity
        if not isinstance(refusal_notices, _Unset):
            values["refusal_notices"] = refusal_notices
        if values:
            values["updated_at"] = self.clock()
            async with self.core.db.transaction() as s:
                await s.execute(update(Strategy).where(Strategy.id == row.id).values(values))
                audit.record(
                    s,
                    "strategy.configured",
                    member_id=row.owner_member_id,
                    strategy_id=row.id,
                    changed=sorted(k for k in values if k != "updated_at"),
                )
        return await self.get(guild_id, discord_user_id, row.id)

    # -- alert channels -----------------------------------------------------------------------

    async def set_alert_channel(
        self, guild_id: int, channel_id: int | None, *, strategy: str | None = None
    ) -> int | None:
        """Post the guild's trade alerts (or one strategy's) to ``channel_id``; None stops
        (for one strategy: its alerts go to the guild's channel again, if there is one).
        Returns the channel the alerts now go to.

        Who may do this is the guild's business: the command checks the member's permissions.
        """
        strategy_id = (
            (await self._find(guild_id, strategy, any_of_guild=True)).id if strategy else None
        )
        scope = strategy_id or "*"
        async with self.core.db.transaction() as s:
            if channel_id is None:
                await s.execute(
                    delete(AlertChannel).where(
                        AlertChannel.guild_id == guild_id, AlertChannel.scope == scope
                    )
                )
            else:
                # One statement: two admins saving at once both succeed (a delete then an
                # insert collided on the unique key under READ COMMITTED). A channel chosen
                # again starts afresh: nothing known of it failing.
                await s.execute(
                    upsert(
                        self.core.db,
                        AlertChannel,
                        {"guild_id": guild_id, "scope": scope, "strategy_id": strategy_id},
                        {
                            "channel_id": channel_id,
                            "failing_since": None,
                            "updated_at": self.clock(),
                        },
                        ["guild_id", "scope"],
                    )
                )
        return await self.alert_channel(guild_id, strategy_id)

    async def alert_routes(self, guild_id: int) -> AlertRoutes:
        """Where the guild's alerts go: its channel, and the strategies with one of their own."""
        async with self.core.db.session() as s:
            result = await s.execute(
                select(
                    AlertChannel.scope,
                    AlertChannel.channel_id,
                    Strategy.name,
                    AlertChannel.failing_since,
                )
                .outerjoin(Strategy, Strategy.id == AlertChannel.strategy_id)
                .where(AlertChannel.guild_id == guild_id)
                .order_by(Strategy.name_key)
            )
            rows = list(result)
        default = next((channel for scope, channel, _, _ in rows if scope == "*"), None)
        own = tuple((name, channel) for scope, channel, name, _ in rows if scope != "*")
        failing: dict[int, datetime] = {}
        for _, channel, _, since in rows:
            if since is not None:
                failing[channel] = min(since, failing.get(channel, since))
        return AlertRoutes(default, own, failing)

    async def strategy_alerts(
        self, guild_id: int, strategy: str
    ) -> tuple[str, int | None, bool, datetime | None]:
        """One strategy's alerts: its name, the channel they go to, whether that channel is
        the strategy's own (else the server's, or None), and since when posts there fail."""
        row = await self._find(guild_id, strategy, any_of_guild=True)
        routes = await self.alert_routes(guild_id)
        own = next((channel for name, channel in routes.strategies if name == row.name), None)
        channel = own if own is not None else routes.default
        failing = routes.failing.get(channel) if channel is not None else None
        return row.name, channel, own is not None, failing

    async def alert_channel(self, guild_id: int, strategy_id: str | None = None) -> int | None:
        """The strategy's own alert channel, else the guild's, else None."""
        scopes = ["*"] if strategy_id is None else [strategy_id, "*"]
        async with self.core.db.session() as s:
            result = await s.execute(
                select(AlertChannel.scope, AlertChannel.channel_id).where(
                    AlertChannel.guild_id == guild_id, AlertChannel.scope.in_(scopes)
                )
            )
            rows = {scope: channel for scope, channel in result}
        return next((rows[sc] for sc in scopes if sc in rows), None)

    async def alert_channel_failing(
        self, guild_id: int, strategy_id: str, channel_id: int, failing: bool
    ) -> int | None:
        """Record whether posts to the strategy's alert channel ``channel_id`` fail for good.
        When it starts failing: the Discord id of the strategy's owner, to be told (once, in
        any process: the row changes once); else None."""
        row = AlertChannel.__table__.c
        where = [
            row.guild_id == guild_id,
            row.scope.in_([strategy_id, "*"]),
            row.channel_id == channel_id,
            row.failing_since.is_(None) if failing else row.failing_since.is_not(None),
        ]
        if not failing:  # the common case, a post that worked: read, write only if flagged
            async with self.core.db.session() as s:
                if await s.scalar(select(row.id).where(*where).limit(1)) is None:
                    return None
        async with self.core.db.transaction() as s:
            changed = (
                await s.execute(
                    update(AlertChannel)
                    .where(*where)
                    .values(failing_since=self.clock() if failing else None)
                )
            ).rowcount  # type: ignore[attr-defined]
            if not (changed and failing):
                return None
            owner: int | None = await s.scalar(
                select(Member.discord_user_id)
                .join(Strategy, Strategy.owner_member_id == Member.id)
                .where(Strategy.id == strategy_id)
            )
            return owner

    # -- helpers --------------------------------------------------------------------------------

    async def named(self, guild_id: int, strategy: str) -> tuple[str, str]:
        """A strategy's id and name, by id or name, whoever may see it: for what only the
        member's own records show of it (the signals that ran for them). NotFound if none."""
        row = await self._find(guild_id, strategy)
        return row.id, row.name

    async def _find(self, guild_id: int, strategy: str, *, any_of_guild: bool = False) -> Strategy:
        """By id or name. ``any_of_guild``: asked by a server admin of any of the guild's, who
        is not to hear of their own or shared ones when there is none."""
        key = _name_key(strategy)  # as stored: "Gap  fill" finds "Gap fill"
        async with self.core.db.session() as s:
            query = select(Strategy).where(Strategy.guild_id == guild_id)
            if _is_uuid(strategy.strip()):
                query = query.where((Strategy.id == strategy.strip()) | (Strategy.name_key == key))
            else:
                query = query.where(Strategy.name_key == key)
            row = await s.scalar(query.limit(1))
        if row is None:
            if any_of_guild:
                raise NotFound(
                    f"This server has no strategy “{strategy.strip()[:60]}”. /strategy list "
                    "everyone:true lists them all."
                )
            raise NotFound(_not_found(strategy))
        return row

    async def _owned(
        self, guild_id: int, discord_user_id: int, strategy: str, roles: Collection[int] = ()
    ) -> Strategy:
        """The member's own strategy; one they see otherwise (with ``roles`` theirs in the
        guild) is refused as not theirs to change, any other as not found."""
        member_id = await self.core.members.ensure(discord_user_id)
        row = await self._find(guild_id, strategy)
        if row.owner_member_id != member_id:
            if await self._sees(row.id, member_id, roles):
                raise PermissionDenied(
                    f"“{row.name}” was shared with you, but only its owner can change it. How "
                    f"your subscription trades it changes with /subscribe strategy:{row.name}."
                )
            raise NotFound(_not_found(strategy))
        return row

    async def _sees(self, strategy_id: str, member_id: int, roles: Collection[int] = ()) -> bool:
        """``visible`` for one strategy: shared with them (or a role of theirs), or theirs
        to subscribe to already."""
        async with self.core.db.session() as s:
            return (
                await s.scalar(
                    select(Strategy.id).where(Strategy.id == strategy_id, visible(member_id, roles))
                )
            ) is not None

    async def _info(
        self, row: Strategy, viewer_member_id: int, *, moderator: bool = False
    ) -> StrategyInfo:
        """As ``viewer_member_id`` may see it: whom it is shared with and its allow-list are
        its owner's (as ``/strategy settings`` shows them to the owner alone); how many
        subscribe is its owner's and a ``moderator``'s (a server admin's)."""
        async with self.core.db.session() as s:
            owner = await s.scalar(
                select(Member.discord_user_id).where(Member.id == row.owner_member_id)
            )
            shared = list(
                await s.scalars(
                    select(Member.discord_user_id)
                    .join(StrategyShare, StrategyShare.member_id == Member.id)
                    .where(StrategyShare.strategy_id == row.id)
                    .order_by(Member.discord_user_id)
                )
            )
            roles = list(
                await s.scalars(
                    select(StrategyRoleShare.role_id)
                    .where(StrategyRoleShare.strategy_id == row.id)
                    .order_by(StrategyRoleShare.role_id)
                )
            )
            subs = await s.scalar(
                select(func.count())
                .select_from(Subscription)
                .where(Subscription.strategy_id == row.id)
            )
            last_signal = await s.scalar(
                select(func.max(ReceivedSignal.received_at)).where(
                    ReceivedSignal.strategy_id == row.id
                )
            )
        is_owner = row.owner_member_id == viewer_member_id
        return StrategyInfo(
            id=row.id,
            name=row.name,
            guild_id=row.guild_id,
            owner_discord_id=int(owner or 0),
            is_owner=is_owner,
            shared_with=tuple(shared) if is_owner else (),
            shared_with_roles=tuple(roles) if is_owner else (),
            subscriptions=int(subs or 0) if is_owner or moderator else 0,
            allowed_sources=tuple(row.allowed_sources or ()) if is_owner else (),
            allowed_tickers=tuple(row.allowed_tickers or ()),
            max_lag_seconds=row.max_lag_seconds,
            rate_limit_per_minute=row.rate_limit_per_minute,
            max_quantity=row.max_quantity,
            max_order_notional=row.max_order_notional,
            max_daily_notional=row.max_daily_notional,
            created_at=row.created_at,
            secret_rotated_at=row.secret_rotated_at,
            last_signal_at=last_signal,
            refusal_notices=row.refusal_notices,
            owner_left_at=row.owner_left_at,
        )


JOB_CHECK_MEMBERS = "strategies.check_members"
# Discord's JSON error codes (Unknown Guild, Missing Access) for a guild Tradecord is not in,
# as the notifier's errors carry them.
GUILD_GONE: Final = frozenset({10004, 50001})


def visible(
    member_id: int, roles: Collection[int], *, subscribed: bool = True
) -> ColumnElement[bool]:
    """Which strategies a member sees: those they own, that were shared with them or with one
    of their ``roles``, and (``subscribed``) those they subscribe to, so that one whose role
    went away is still theirs to stop until the bot has noticed."""
    seen = (Strategy.owner_member_id == member_id) | Strategy.id.in_(
        select(StrategyShare.strategy_id).where(StrategyShare.member_id == member_id)
    )
    if roles:
        seen |= Strategy.id.in_(
            select(StrategyRoleShare.strategy_id).where(StrategyRoleShare.role_id.in_(roles))
        )
    if subscribed:
        seen |= Strategy.id.in_(
            select(Subscription.strategy_id).where(Subscription.member_id == member_id)
        )
    return seen


def _webhook_auth(row: Mapping[str, Any]) -> WebhookAuth:
    """A row of ``_AUTH`` as the webhook needs it."""
    return WebhookAuth(
        id=row["id"],
        name=row["name"],
        guild_id=row["guild_id"],
        allowed_sources=tuple(row["allowed_sources"] or ()),
        allowed_tickers=frozenset(row["allowed_tickers"] or ()),
        max_lag_seconds=row["max_lag_seconds"],
        rate_limit_per_minute=row["rate_limit_per_minute"],
        max_quantity=row["max_quantity"],
    )


def upsert(
    db: Database,
    table: type[Any],
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    unique: list[str],
) -> Any:
    """INSERT of ``key`` and ``values`` that, when a row with the same ``unique`` columns
    exists, sets ``values`` on it instead (both dialects): unlike an update, then an insert
    if none, two at once cannot both insert."""
    if db.is_sqlite:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    stmt = dialect_insert(table).values({**key, **values})
    return stmt.on_conflict_do_update(index_elements=unique, set_=dict(values))


def new_secret() -> str:
    return secrets.token_urlsafe(24)  # 192 bits from the OS CSPRNG


def _clean_name(name: str) -> str:
    clean = " ".join(name.split())
    if not clean:
        raise InvalidInput("Give the strategy a name, like “NQ breakout”.")
    if len(clean) > NAME_MAX:
        raise InvalidInput(f"Strategy names are at most {NAME_MAX} characters.")
    if len(_name_key(clean)) > NAME_MAX:  # the unique key (name_key) holds NAME_MAX too
        raise InvalidInput(
            "That name is too long: letters like ß count as two when names are compared (ﬃ "
            f"as three). Use at most {NAME_MAX} characters, counting those that way."
        )
    if any(ord(c) < 32 for c in clean):
        raise InvalidInput("Strategy names cannot contain control characters.")
    # As connection names: alerts show it in the channel, and must show it as typed.
    problem = name_problem(clean, "A strategy name", "e.g. “NQ breakout” or “ES scalper v2”")
    if problem is not None:
        raise InvalidInput(problem)
    return clean


def _name_key(name: str) -> str:
    """How names are compared, when stored and when looked up: spaces collapsed, case folded.
    (Not NFKC: existing keys would need a migration.)"""
    return " ".join(name.split()).casefold()


def _not_found(strategy: str | None) -> str:
    shown = (strategy or "").strip()[:60]
    return (
        f"No strategy “{shown}” here that you own or that was shared with you. See /strategy list."
    )


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return len(text) == 36
