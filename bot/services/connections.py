"""Connections: finding a member's connection by name, and opening its broker adapter.

The OAuth linking flow, renaming, account choice and disconnecting live here too; this module
is the only place that turns stored credentials into a working adapter.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from adapters import symbols
from adapters.base import (
    AdapterContext,
    BrokerAdapter,
    CircuitBreaker,
    LimiterRegistry,
    Limiters,
)
from adapters.models import Account, AccountRef, AccountType, AssetClass, Environment
from adapters.paper.engine import PriceType
from adapters.paper.feed import BrokerPrices, QuoteSource
from adapters.paper.store import PRICE_TYPE_SETTING
from adapters.registry import all_adapters, get_adapter_class
from bot.brokers import connect_command
from bot.components import tradable
from bot.db import lock_name
from bot.errors import Conflict, InvalidInput, NotFound
from bot.models import (
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    Credential,
    IntentStatus,
    Member,
    OrderIntent,
)
from bot.services import audit
from bot.services.ratelimits import SharedLimiters
from bot.wording import name_problem

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.core import Core

log = logging.getLogger("tradecord.connections")

MODES = ("paper", "live")
QUOTE_SOURCE_SETTING = "quote_source_connection_id"  # key in a paper connection's settings
# The quote source that means "no broker: the built-in simulated feed". It wins over a
# connection of that name, so a member can always get back to the feed.
SIMULATED_SOURCE = "simulated"


NAME_EXAMPLE = "e.g. “Alpaca Stocks” or “TS Futures #2”"


def check_name(name: str) -> None:
    """``InvalidInput`` for a new connection name Discord would show otherwise than typed."""
    problem = name_problem(name, "A connection name", NAME_EXAMPLE)
    if problem is not None:
        raise InvalidInput(problem)


def name_key(name: str) -> str:
    """How connection names compare: case and runs of whitespace ignored, as /rename
    stores them."""
    return " ".join(name.split()).casefold()


def linked_modes(conn: Connection) -> set[str]:
    """The modes a connection can have an account for: what its login was authorized for
    (/connect environment:), and paper only for Tradecord Paper."""
    if conn.builtin:
        return {"paper"}
    env = (conn.settings or {}).get("environment")
    return set(MODES) if env in (None, "both") else {env}


# One query with the accounts joined: every command starts here. Built once, so each
# command skips building the statement and its cache key.
_CONNECTIONS_OF = (
    select(Connection)
    .where(Connection.member_id == bindparam("member_id"))
    .options(joinedload(Connection.accounts))
    .order_by(Connection.id)
)


@dataclass(slots=True)
class RenameResult:
    old: str
    new: str
    # (another connection's default name, a free name after its account); may be empty
    suggestions: list[tuple[str, str]]
    shares_broker: bool = False  # another of the member's connections is at this broker


@dataclass(slots=True)
class ChoiceResult:
    connection: Connection
    account: Account
    warning: str | None
    notice: str | None = None  # subscriptions whose signals now trade in the new account


@dataclass(slots=True)
class DisconnectResult:
    name: str
    broker: str
    revoked: bool | None  # None: the broker has no revocation endpoint
    unsent: int = 0  # its orders stored but never sent, failed by the disconnect
    in_doubt: int = 0  # its orders whose sending was never settled: maybe at the broker
    # Access left authorized: revoking would cut these, which may share the login.
    sharing: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PaperSettings:
    """How a member's Tradecord Paper connection prices market orders, and from where."""

    connection: Connection
    price_type: PriceType
    quote_source: Connection | None  # None: the built-in simulated feed
    quote_source_broker: str | None  # the source's broker display name


@dataclass(slots=True)
class Target:
    """A connection and the account a command acts on."""

    connection: Connection
    account: ConnectionAccount
    mode: str

    @property
    def ref(self) -> AccountRef:
        return AccountRef(
            self.account.account_id,
            AccountType(self.account.account_type),
            Environment.LIVE if self.mode == "live" else Environment.PAPER,
        )


class ConnectionService:
    def __init__(self, core: Core, *, clock: Callable[[], datetime] | None = None) -> None:
        self.core = core
        self.clock = clock or (lambda: datetime.now(UTC))
        # Shared by every adapter so a broker app's limits hold across members. One process (on
        # SQLite) keeps them in memory, exactly; several processes (on PostgreSQL) share
        # buckets in the database, so together they stay under each published limit.
        self.limiters: Limiters = (
            LimiterRegistry() if core.db.is_sqlite else SharedLimiters(core.db)
        )
        self.breakers: dict[str, CircuitBreaker] = {}
        # Every broker module is imported now, not on a signal's first order to that broker:
        # importing one takes tens of milliseconds of a fan-out's time.
        all_adapters()
        self._refresh_locks: dict[int, asyncio.Lock] = {}

    # -- lookup -------------------------------------------------------------------------

    async def list_for(self, discord_user_id: int) -> list[Connection]:
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.session() as s:
            rows = await s.scalars(_CONNECTIONS_OF, {"member_id": member_id})
            return list(rows.unique())

    async def resolve(self, discord_user_id: int, name: str | None, mode: str | None) -> Target:
        """The connection named ``name`` (any case) and its account for ``mode``.

        Without a name: the built-in paper connection for paper mode, or the only connection
        with a live account for live mode.
        """
        mode = (mode or "paper").lower()
        if mode not in MODES:
            raise InvalidInput("Mode must be paper or live.")
        connections = await self.list_for(discord_user_id)
        if name:
            key = name_key(name)
            conn = next((c for c in connections if c.name_key == key), None)
            if conn is None:
                names = ", ".join(f"“{c.name}”" for c in connections)
                raise NotFound(
                    f"You have no connection named “{name.strip()}”. Your connections: {names}. "
                    "See /accounts."
                )
        elif mode == "paper":
            conn = next(c for c in connections if c.builtin)
        else:
            live = [c for c in connections if c.account("live")]
            if not live:
                raise NotFound(
                    "You have no connection with a live account. Link a broker with /connect, "
                    "then choose its live account in /accounts."
                )
            if len(live) > 1:
                names = ", ".join(f"“{c.name}”" for c in live)
                raise InvalidInput(f"Which connection? Add connection: one of {names}.")
            conn = live[0]
        if conn.status == ConnectionStatus.NEEDS_REAUTH:
            raise InvalidInput(
                f"“{conn.name}” needs to be re-linked: the broker no longer accepts our "
                f"authorization. Run {connect_command(conn.broker)} to link it again."
            )
        account = conn.account(mode)
        if account is None:
            other = "live" if mode == "paper" else "paper"
            if mode not in linked_modes(conn):  # /accounts cannot offer one: no menu there
                has = f" Add mode:{other}." if conn.account(other) else ""
                broker = get_adapter_class(conn.broker).display_name
                again = (
                    f" To trade {mode} at {broker}, link it again with /connect "
                    f"environment:{mode}; that adds a connection."
                    if not conn.builtin
                    and mode in get_adapter_class(conn.broker).connect_environments
                    else ""
                )
                raise InvalidInput(
                    f"“{conn.name}” is for {other} trading only: it has no {mode} account."
                    f"{has}{again}"
                )
            if conn.account(other):  # trading is on, in the other mode only
                raise InvalidInput(
                    f"“{conn.name}” has no {mode} account chosen: it trades {other} only. "
                    f"Add mode:{other}, or choose a {mode} account in /accounts."
                )
            raise InvalidInput(
                f"“{conn.name}” has no {mode} account chosen, so trading on it is off. "
                "Choose one in /accounts."
            )
        return Target(conn, account, mode)

    async def trading_instead(self, discord_user_id: int, target: Target, asset: AssetClass) -> str:
        """A hint for an order the target's account type cannot take: the member's other
        connection at the same broker whose account (same mode) can, named; else empty."""
        caps = get_adapter_class(target.connection.broker).capabilities
        for c in await self.list_for(discord_user_id):
            acct = c.account(target.mode)
            if (
                c.id == target.connection.id
                or c.broker != target.connection.broker
                or c.status == ConnectionStatus.NEEDS_REAUTH
                or acct is None
                or not caps.can_trade(AccountType(acct.account_type), asset)
            ):
                continue
            return (
                f" Your connection “{c.name}” trades {target.mode} in {acct.account_type} "
                f"account {acct.label.rsplit(' ', 1)[-1]}, which can: add connection:{c.name}."
            )
        return ""

    # -- adapters -----------------------------------------------------------------------

    async def adapter_for(self, connection: Connection) -> BrokerAdapter:
        """A ready adapter for ``connection`` (cheap: adapters share the HTTP session)."""
        cls = get_adapter_class(connection.broker)
        ctx = AdapterContext(
            session=self.core.http,
            limiters=self.limiters,
            breakers=self.breakers,
            owner=str(connection.id),
        )
        if connection.broker == "paper":
            ctx.extra.update(await self._paper_extra(connection))
            ctx.api_urls = {Environment.PAPER: "internal:paper"}
        else:
            self._configure_remote(cls, connection, ctx)
        return cls(ctx)

    def _configure_remote(
        self, cls: type[BrokerAdapter], connection: Connection, ctx: AdapterContext
    ) -> None:
        from bot.services.tokens import DbTokenProvider

        cfg = self.core.settings.broker(connection.broker)
        urls = {
            Environment.LIVE: cfg.url("api_url", cls.default_api_urls.get(Environment.LIVE)),
            Environment.PAPER: cfg.url(
                "paper_api_url", cls.default_api_urls.get(Environment.PAPER)
            ),
        }
        # A token authorized for one environment (Tradier, Alpaca with env=) reaches only it.
        env = (connection.settings or {}).get("environment")
        ctx.api_urls = {
            e: u for e, u in urls.items() if u and (env in (None, "both") or env == e.value)
        }
        ctx.tokens = DbTokenProvider(self.core, connection.id)
        # Vendors with a separate market-data host (Alpaca) take it from settings too.
        data_url = cfg.urls.get("data_url")
        if data_url:
            ctx.extra["data_url"] = data_url

    async def paper_prices(self, paper: Connection) -> QuoteSource:
        """Where a Tradecord Paper connection's prices come from: the member's chosen broker
        (see ``BrokerPrices``), else the simulated feed."""
        source_id = (paper.settings or {}).get(QUOTE_SOURCE_SETTING)
        if source_id:
            async with self.core.db.session() as s:
                src = await s.get(Connection, source_id)
            if src is not None and src.member_id == paper.member_id and not src.builtin:
                caps = get_adapter_class(src.broker).capabilities
                return BrokerPrices(
                    await self.adapter_for(src),
                    src.name,
                    set().union(*caps.asset_classes.values()),
                    self.core.simulated_feed,
                )
        return self.core.simulated_feed

    async def _paper_extra(self, connection: Connection) -> dict[str, Any]:
        settings = connection.settings or {}
        return {
            "db": self.core.db,
            "connection_id": connection.id,
            "quote_source": await self.paper_prices(connection),
            "market_price_type": settings.get(PRICE_TYPE_SETTING, "mid"),
            "starting_cash": Decimal(str(self.core.settings.paper_starting_cash)),
            "fill_hours": self.core.settings.paper_fill_hours,
            "clock": self.clock,
        }

    # -- paper settings -----------------------------------------------------------------

    @staticmethod
    def serves_quotes(connection: Connection) -> bool:
        """Whether ``connection`` can price paper orders: a linked broker (not Tradecord Paper
        itself) whose adapter serves quotes and still accepts our authorization."""
        return (
            not connection.builtin
            and connection.status != ConnectionStatus.NEEDS_REAUTH
            and get_adapter_class(connection.broker).capabilities.quotes
        )

    async def prices_paper(self, connection_id: int) -> bool:
        """Whether the connection is its member's Tradecord Paper price source."""
        async with self.core.db.session() as s:
            conn = await s.get(Connection, connection_id)
            if conn is None:
                return False
            paper = await s.scalar(
                select(Connection).where(
                    Connection.member_id == conn.member_id, Connection.builtin.is_(True)
                )
            )
        return paper is not None and (paper.settings or {}).get(QUOTE_SOURCE_SETTING) == conn.id

    async def quote_sources(self, discord_user_id: int) -> list[Connection]:
        """The member's connections that can be their paper connection's quote source."""
        return [c for c in await self.list_for(discord_user_id) if self.serves_quotes(c)]

    async def paper_settings(self, discord_user_id: int) -> PaperSettings:
        connections = await self.list_for(discord_user_id)
        return self._paper_settings(next(c for c in connections if c.builtin), connections)

    def _paper_settings(self, paper: Connection, connections: list[Connection]) -> PaperSettings:
        settings = paper.settings or {}
        try:
            price_type = PriceType(settings.get(PRICE_TYPE_SETTING, PriceType.MID))
        except ValueError:
            price_type = PriceType.MID  # what a bad stored value would be refused as anyway
        # Show the source as _paper_extra uses it: a source that is gone or not the
        # member's means the simulated feed.
        source_id = settings.get(QUOTE_SOURCE_SETTING)
        source = next((c for c in connections if c.id == source_id and not c.builtin), None)
        broker = get_adapter_class(source.broker).display_name if source else None
        return PaperSettings(paper, price_type, source, broker)

    async def set_paper_settings(
        self,
        discord_user_id: int,
        *,
        price_type: str | None = None,
        quote_source: str | None = None,
    ) -> PaperSettings:
        """Change the member's paper market price type and/or quote source (a connection name,
        or ``SIMULATED_SOURCE``); options left None keep their value. Returns the settings
        as they are now."""
        connections = await self.list_for(discord_user_id)
        paper = next(c for c in connections if c.builtin)
        before = self._paper_settings(paper, connections)
        if price_type is None and quote_source is None:
            return before
        new_type = before.price_type
        if price_type is not None:
            try:
                new_type = PriceType(price_type.strip().lower())
            except ValueError:
                choices = ", ".join(p.value for p in PriceType)
                raise InvalidInput(
                    f"“{price_type}” is not a market price type. Choose one of: {choices}."
                ) from None
        new_source = before.quote_source
        if quote_source is not None:
            new_source = self._quote_source(quote_source, connections)
        settings = dict(paper.settings or {})
        settings[PRICE_TYPE_SETTING] = new_type.value
        if new_source is None:
            settings.pop(QUOTE_SOURCE_SETTING, None)
        else:
            settings[QUOTE_SOURCE_SETTING] = new_source.id
        async with self.core.db.transaction() as s:
            row = await s.get(Connection, paper.id)
            assert row is not None
            row.settings = settings  # a new dict: JSON columns do not track in-place changes
            audit.record(
                s,
                "paper.settings_changed",
                member_id=paper.member_id,
                connection_id=paper.id,
                price_type=new_type.value,
                previous_price_type=before.price_type.value,
                quote_source=new_source.name if new_source else SIMULATED_SOURCE,
                quote_source_connection_id=new_source.id if new_source else None,
                previous_quote_source=(
                    before.quote_source.name if before.quote_source else SIMULATED_SOURCE
                ),
            )
        paper.settings = settings
        return self._paper_settings(paper, connections)

    def _quote_source(self, name: str, connections: list[Connection]) -> Connection | None:
        key = name_key(name)
        if key == SIMULATED_SOURCE:
            return None
        eligible = [c for c in connections if self.serves_quotes(c)]
        usable = ", ".join([*(f"“{c.name}”" for c in eligible), SIMULATED_SOURCE])
        conn = next((c for c in connections if c.name_key == key), None)
        if conn is None:
            raise NotFound(
                f"You have no connection named “{name.strip()}”. Quote sources you can use: "
                f"{usable}. Link a broker with /connect to use its prices."
            )
        if conn.builtin:
            raise InvalidInput(
                f"{conn.name} cannot price itself. Choose a linked broker ({usable}); "
                f"{SIMULATED_SOURCE} is the built-in feed."
            )
        if conn.status == ConnectionStatus.NEEDS_REAUTH:
            raise InvalidInput(
                f"“{conn.name}” needs to be re-linked before its prices can be used: the broker "
                "no longer accepts our authorization. Run "
                f"{connect_command(conn.broker)}, or choose another source ({usable})."
            )
        if not self.serves_quotes(conn):
            broker = get_adapter_class(conn.broker).display_name
            raise InvalidInput(
                f"{broker} does not serve quotes, so “{conn.name}” cannot price paper orders. "
                f"Choose one of: {usable}."
            )
        return conn

    # -- managing connections -----------------------------------------------------------

    async def owned(self, discord_user_id: int, name_or_id: str | int) -> Connection:
        """The member's connection by name (any case), or by id when given an int; ``NotFound``
        otherwise.

        Text is always a name, even all digits: members name their connections and never see
        ids (autocomplete offers names), so "1" must not reach whichever connection has id 1.
        Ids come only from the bot's own components, as ints."""
        connections = await self.list_for(discord_user_id)
        if isinstance(name_or_id, int):
            found = next((c for c in connections if c.id == name_or_id), None)
        else:
            key = name_key(name_or_id)
            found = next((c for c in connections if c.name_key == key), None)
        if found is None and isinstance(name_or_id, int):
            # A menu sent before the connection was unlinked: its id means nothing to members.
            raise NotFound(
                "That connection no longer exists (it was disconnected). See /accounts for "
                "your connections."
            )
        if found is None:
            names = ", ".join(f"“{c.name}”" for c in connections)
            raise NotFound(
                f"You have no connection named “{str(name_or_id).strip()}”. Your connections: "
                f"{names}. See /accounts."
            )
        return found

    async def rename(self, discord_user_id: int, connection: str, new_name: str) -> RenameResult:
        conn = await self.owned(discord_user_id, connection)
        # First: no name would do, so the member is not asked to fix one.
        if conn.builtin:
            raise InvalidInput("Tradecord Paper keeps its name; rename your broker connections.")
        name = " ".join(new_name.split())
        if not 1 <= len(name) <= 50:
            raise InvalidInput(
                f"A connection name has 1 to 50 characters ({len(name)} given), {NAME_EXAMPLE}."
            )
        if len(name.casefold()) > 50:  # the unique key (name_key) is 50 characters too
            raise InvalidInput(
                "That name is too long: letters like ß count as two when names are compared. "
                "Use at most 50 characters, counting those twice."
            )
        if not name.isprintable():
            raise InvalidInput(
                f"A connection name can only have printable characters, {NAME_EXAMPLE}."
            )
        check_name(name)
        old = conn.name
        try:
            async with self.core.db.transaction() as s:
                row = await s.get(Connection, conn.id)
                assert row is not None
                row.name, row.name_key = name, name.casefold()
                await s.flush()
                audit.record(
                    s,
                    "connection.renamed",
                    member_id=row.member_id,
                    connection_id=row.id,
                    old=old,
                    new=name,
                )
        except IntegrityError:
            raise Conflict(
                f"You already have a connection named “{name}” (names ignore case). Pick another."
            ) from None
        mine = await self.list_for(discord_user_id)
        siblings = [c for c in mine if c.broker == conn.broker and c.id != conn.id]
        taken = {c.name_key for c in mine if c.id != conn.id} | {name_key(name)}
        return RenameResult(
            old, name, self._suggestions(conn, siblings, taken), shares_broker=bool(siblings)
        )

    def _suggestions(
        self, conn: Connection, siblings: list[Connection], taken: set[str]
    ) -> list[tuple[str, str]]:
        """Descriptive names for the member's other connections at this broker that still
        carry the name /connect gave them ("TradeStation 2"): named after the account each
        trades in, never a name in use (nor our ids), nor for the one just named."""
        broker = get_adapter_class(conn.broker).display_name
        default = re.compile(rf"{re.escape(broker)}( \d+)?", re.IGNORECASE)
        kinds = {"futures": "Futures", "margin": "Stocks", "cash": "Stocks", "crypto": "Crypto"}
        out: list[tuple[str, str]] = []
        for c in siblings:
            acct = c.account("live") or c.account("paper")
            if acct is None or not default.fullmatch(c.name):
                continue
            name = f"{broker} {kinds.get(acct.account_type, acct.account_type.title())}"
            if name_key(name) not in taken:
                out.append((c.name, name))
                taken.add(name_key(name))
        return out

    async def broker_accounts(
        self, discord_user_id: int, connection: str | int
    ) -> tuple[Connection, list[Account]]:
        conn = await self.owned(discord_user_id, connection)
        adapter = await self.adapter_for(conn)
        try:
            return conn, await adapter.fetch_accounts()
        finally:
            await adapter.close()

    async def choose_account(
        self, discord_user_id: int, connection_id: int, mode: str, account_id: str
    ) -> ChoiceResult:
        """Make ``account_id`` the connection's live or paper account, after checking it is one
        of the member's accounts at the broker of the right environment, and not linked to
        another member. Trading on the connection turns on."""
        if mode not in MODES:
            raise InvalidInput("Mode must be live or paper.")
        conn, accounts = await self.broker_accounts(discord_user_id, connection_id)
        if conn.builtin:
            raise InvalidInput("Tradecord Paper's account is fixed.")
        account = next((a for a in accounts if a.id == account_id), None)
        if account is None:
            raise NotFound(
                "That account is not one this broker login can use. Run /accounts "
                "again to see the current list."
            )
        if account.environment.value != mode:
            raise InvalidInput(
                f"{account.masked} is a {account.environment.value} account; "
                f"choose it as the {account.environment.value} account."
            )
        if not tradable(conn.broker, account):
            broker = get_adapter_class(conn.broker).display_name
            raise InvalidInput(
                f"{account.masked} is a {account.type.value} account, and {broker} does not let "
                "apps trade in it or read it. Choose another of your accounts in /accounts."
            )
        async with self.core.db.transaction() as s:
            # Two members choosing one account at once: the second waits, then finds it taken.
            await lock_name(s, f"account:{conn.broker}:{account.id}")
            taken = await s.scalar(
                select(Member.discord_user_id)
                .join(Connection, Connection.member_id == Member.id)
                .join(ConnectionAccount, ConnectionAccount.connection_id == Connection.id)
                .where(
                    Connection.broker == conn.broker,
                    ConnectionAccount.account_id == account.id,
                    Connection.member_id != conn.member_id,
                )
            )
            if taken is not None:
                raise Conflict(
                    f"{account.masked} is already linked to another Discord member. "
                    "One brokerage account belongs to one member here."
                )
            # A connection is one account: the same login linked twice must not put one
            # account behind two names (counted twice, and traded twice by subscriptions).
            sibling = await s.scalar(
                select(Connection.name)
                .join(ConnectionAccount, ConnectionAccount.connection_id == Connection.id)
                .where(
                    Connection.member_id == conn.member_id,
                    Connection.broker == conn.broker,
                    Connection.id != conn.id,
                    ConnectionAccount.account_id == account.id,
                )
            )
            if sibling is not None:
                raise Conflict(
                    f"{account.masked} is already the account of your connection “{sibling}”. "
                    f"Trade it there, or choose another account for “{conn.name}” (or "
                    "/disconnect it if you linked the same login twice)."
                )
            label = f"{get_adapter_class(conn.broker).display_name} {account.masked}"
            notice = await self._moved_subscriptions(s, conn, mode, account, label)
            await s.execute(
                delete(ConnectionAccount).where(
                    ConnectionAccount.connection_id == conn.id, ConnectionAccount.mode == mode
                )
            )
            s.add(
                ConnectionAccount(
                    connection_id=conn.id,
                    mode=mode,
                    account_id=account.id,
                    account_type=account.type.value,
                    label=label,
                )
            )
            row = await s.get(Connection, conn.id)
            assert row is not None
            if row.status == ConnectionStatus.NEEDS_ACCOUNT:
                row.status = ConnectionStatus.ACTIVE
            audit.record(
                s,
                "connection.account_chosen",
                member_id=conn.member_id,
                connection_id=conn.id,
                mode=mode,
                account=account.masked,
                account_type=account.type.value,
            )
            # Which of the member's other connections already trades each account, so the
            # warning points at it rather than at an account this one cannot take.
            held = await self._held(s, conn)
        return ChoiceResult(
            conn, account, self._mismatch_warning(conn, account, accounts, held), notice
        )

    @staticmethod
    async def _moved_subscriptions(
        s: AsyncSession, conn: Connection, mode: str, account: Account, label: str
    ) -> str | None:
        """What to tell the member when strategies' signals start trading in the chosen
        account: subscriptions route by connection and mode, so their signals follow the
        change. Also with no account before (a re-link's login could not reach it): they
        were skipped meanwhile, and now trade in an account that may not suit them (a futures
        strategy in a margin account)."""
        from bot.automation_models import Strategy, Subscription

        before = await s.scalar(
            select(ConnectionAccount).where(
                ConnectionAccount.connection_id == conn.id, ConnectionAccount.mode == mode
            )
        )
        if before is not None and before.account_id == account.id:
            return None
        names = list(
            await s.scalars(
                select(Strategy.name)
                .join(Subscription, Subscription.strategy_id == Strategy.id)
                .where(Subscription.connection_id == conn.id, Subscription.mode == mode)
                .order_by(Strategy.name)
            )
        )
        if not names:
            return None
        listed = ", ".join(f"“{n}”" for n in names)
        now = f"{label} ({account.type.value} account)"
        if before is None:
            return (
                f"Signals of {listed} on “{conn.name}” ({mode}) trade again, now in {now}. If "
                "that account cannot trade what they send, choose another, or /unsubscribe."
            )
        return (
            f"Signals of {listed} on “{conn.name}” ({mode}) now trade in {now} instead of "
            f"{before.label} ({before.account_type} account). If you did not mean that, choose "
            f"{before.label} again, or /unsubscribe."
        )

    async def held_elsewhere(self, conn: Connection) -> dict[str, str]:
        """Account id → the member's other connection at this broker that trades in it."""
        async with self.core.db.session() as s:
            return await self._held(s, conn)

    @staticmethod
    async def _held(s: AsyncSession, conn: Connection) -> dict[str, str]:
        rows = await s.execute(
            select(ConnectionAccount.account_id, Connection.name)
            .join(Connection, ConnectionAccount.connection_id == Connection.id)
            .where(
                Connection.member_id == conn.member_id,
                Connection.broker == conn.broker,
                Connection.id != conn.id,
            )
        )
        return {account_id: name for account_id, name in rows.all()}

    @staticmethod
    def _mismatch_warning(
        conn: Connection, chosen: Account, accounts: list[Account], held: dict[str, str]
    ) -> str | None:
        """The classic mistake: a margin (or cash) account chosen where a futures one exists.
        ``held``: account id → the member's other connection (same broker) trading in it."""
        if chosen.type not in (AccountType.MARGIN, AccountType.CASH):
            return None
        futures = [
            a
            for a in accounts
            if a.type is AccountType.FUTURES and a.environment is chosen.environment
        ]
        if not futures:
            return None
        broker = get_adapter_class(conn.broker).display_name
        sibling = held.get(futures[0].id)
        if sibling is not None:
            return (
                f"You chose a {chosen.type.value} account: futures orders on “{conn.name}” "
                f"will be refused. At {broker}, futures such as "
                f"{symbols.example_contract()} or /ES trade only in the futures account "
                f"({futures[0].masked}), which your connection “{sibling}” trades in: use "
                f"connection:{sibling} for them."
            )
        return (
            f"You chose a {chosen.type.value} account. At {broker}, futures such as "
            f"{symbols.example_contract()} or /ES "
            f"trade only in the futures account ({futures[0].masked}); futures orders on "
            f"“{conn.name}” will be refused. If you meant to trade futures, choose the futures "
            f"account instead, or keep this one for stocks and /connect again for a second "
            f"connection (e.g. “{broker} Futures”)."
        )

    async def subscribed_strategies(self, connection_id: int) -> list[str]:
        """The names of the strategies subscribed on a connection (its subscriptions go when
        it does)."""
        from bot.automation_models import Strategy, Subscription

        async with self.core.db.session() as s:
            names = await s.scalars(
                select(Strategy.name)
                .join(Subscription, Subscription.strategy_id == Strategy.id)
                .where(Subscription.connection_id == connection_id)
                .order_by(Strategy.name)
            )
            return list(dict.fromkeys(names))  # one strategy may be subscribed live and paper

    async def disconnect(self, discord_user_id: int, connection: str | int) -> DisconnectResult:
        """Revoke at the broker where it can (RFC 7009), then delete the credentials and the
        connection whatever the broker said; the audit trail keeps both outcomes."""
        conn = await self.owned(discord_user_id, connection)
        if conn.builtin:
            raise InvalidInput(
                "Tradecord Paper cannot be disconnected; /paper reset starts it over."
            )
        cls = get_adapter_class(conn.broker)
        revoked: bool | None = None
        async with self.core.db.session() as s:
            cred = await s.get(Credential, conn.id)
        sharing = await self.sharing_login(conn.member_id, conn.broker, but=conn.id)
        if cred is not None and cls.oauth is not None and not sharing:
            try:
                revoked = await self._revoke(conn, cls, cred)
            except Exception as e:  # the token, keys or settings are gone: delete regardless
                log.warning(
                    "Could not revoke connection %s at %s: %s",
                    conn.id,
                    conn.broker,
                    type(e).__name__,
                )
                revoked = False
        from bot.automation_models import Subscription
        from bot.services.approvals import close_withdrawn, withdraw_approvals

        async with self.core.db.transaction() as s:
            # Its subscriptions go with it (CASCADE): their approvals waiting too.
            withdrawn = await withdraw_approvals(
                s,
                select(Subscription.id).where(Subscription.connection_id == conn.id),
                self.clock(),
            )
            # Its unconfirmed previews go with it: deleting the connection only unlinks them
            # (SET NULL), and a Confirm would then leave a pending order nothing can send.
            discarded = await s.execute(
                update(OrderIntent)
                .where(
                    OrderIntent.connection_id == conn.id,
                    OrderIntent.status == IntentStatus.DRAFT,
                )
                .values(status=IntentStatus.DISCARDED)
            )
            # Its orders stored but not yet sent (their process died in between) would stay
            # pending for ever: the reconciler that sends them follows only orders that have
            # a connection. They end failed here, with the reason for /orders.
            unsent = list(
                await s.scalars(
                    update(OrderIntent)
                    .where(
                        OrderIntent.connection_id == conn.id,
                        OrderIntent.status == IntentStatus.PENDING,
                    )
                    .values(
                        status=IntentStatus.FAILED,
                        error_code="connection-removed",
                        error_message=(
                            f"“{conn.name}” was disconnected before this order was sent; "
                            "nothing was sent."
                        ),
                        updated_at=self.clock(),
                    )
                    .returning(OrderIntent.id)
                )
            )
            for intent_id in unsent:
                audit.record(
                    s,
                    "order.failed",
                    member_id=conn.member_id,
                    connection_id=conn.id,
                    intent_id=intent_id,
                    error="connection-removed",
                    reason="its connection was disconnected before it was sent",
                )
            # Left as they are (they may be at the broker), but the member hears of them.
            in_doubt = await s.scalar(
                select(func.count())
                .select_from(OrderIntent)
                .where(
                    OrderIntent.connection_id == conn.id,
                    OrderIntent.status.in_([IntentStatus.SUBMITTED, IntentStatus.UNKNOWN]),
                )
            )
            row = await s.get(Connection, conn.id)
            if row is not None:
                await s.delete(row)
            # Paper's price source is kept by id, and SQLite hands a freed id out again: the
            # next connection linked would become the price source unasked.
            paper = await s.scalar(
                select(Connection).where(
                    Connection.member_id == conn.member_id, Connection.builtin.is_(True)
                )
            )
            if paper is not None and (paper.settings or {}).get(QUOTE_SOURCE_SETTING) == conn.id:
                paper.settings = {
                    k: v for k, v in (paper.settings or {}).items() if k != QUOTE_SOURCE_SETTING
                }
            audit.record(
                s,
                "connection.disconnected",
                member_id=conn.member_id,
                connection_id=conn.id,
                broker=conn.broker,
                name=conn.name,
                revoked=revoked,
                previews_discarded=discarded.rowcount,  # type: ignore[attr-defined]
                unsent_failed=len(unsent),
            )
        await close_withdrawn(self.core.notifier, withdrawn)
        return DisconnectResult(
            conn.name, cls.display_name, revoked, len(unsent), in_doubt or 0, sharing
        )

    async def sharing_login(self, member_id: int, broker: str, *, but: int | None) -> list[str]:
        """The member's other connections at ``broker`` when revoking a token there revokes
        the whole login's (``OAuthSpec.revokes_login``): they may sign in with the same login
        (a second account, "/connect again"), which a revocation would cut off too. Empty
        where revocation is per token."""
        spec = get_adapter_class(broker).oauth
        if spec is None or not spec.revokes_login:
            return []
        async with self.core.db.session() as s:
            names = await s.scalars(
                select(Connection.name)
                .where(
                    Connection.member_id == member_id,
                    Connection.broker == broker,
                    Connection.id != (but if but is not None else -1),
                )
                .order_by(Connection.id)
            )
            return list(names)

    async def _revoke(
        self, conn: Connection, cls: type[BrokerAdapter], cred: Credential
    ) -> bool | None:
        """RFC 7009 at the broker's revocation endpoint (settings may name one); ``None`` when
        the broker has none."""
        from bot.services import oauth
        from bot.services.credentials import binding

        ep = oauth.endpoints(cls, self.core.settings)
        if not ep.revoke_url:
            return None
        token_column = "refresh_token" if cred.refresh_token else "access_token"
        member = await self.member_of(conn)
        token = self.core.vault.decrypt(
            getattr(cred, token_column), binding(conn, member, token_column)
        )
        return await oauth.revoke(ep, token, hint=token_column)

    def refresh_lock(self, connection_id: int) -> asyncio.Lock:
        lock = self._refresh_locks.get(connection_id)
        if lock is None:
            lock = self._refresh_locks[connection_id] = asyncio.Lock()
        return lock

    async def member_of(self, connection: Connection) -> Member:
        async with self.core.db.session() as s:
            member = await s.get(Member, connection.member_id)
        assert member is not None
        return member
