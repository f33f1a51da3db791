"""Connections: finding a member's connection by name, and opening its broker adapter.

The OAuth linking flow, renaming, account choice and disconnecting live here too; this module
is the only place that turns stored credentials into a working adapter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapters.base import AdapterContext, BrokerAdapter, CircuitBreaker, LimiterRegistry
from adapters.models import AccountRef, AccountType, Environment
from adapters.registry import get_adapter_class
from bot.errors import InvalidInput, NotFound
from bot.models import Connection, ConnectionAccount, ConnectionStatus, Member

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger("tradecord.connections")

MODES = ("paper", "live")


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
        # Shared by every adapter in this process so a broker app's limits hold across members.
        self.limiters = LimiterRegistry()
        self.breakers: dict[str, CircuitBreaker] = {}
        self._refresh_locks: dict[int, asyncio.Lock] = {}

    # -- lookup -------------------------------------------------------------------------

    async def list_for(self, discord_user_id: int) -> list[Connection]:
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.session() as s:
            rows = await s.scalars(
                select(Connection)
                .where(Connection.member_id == member_id)
                .options(selectinload(Connection.accounts))
                .order_by(Connection.id)
            )
            return list(rows)

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
            key = name.strip().casefold()
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
                f"authorization. Run /connect {conn.broker} to link it again."
            )
        account = conn.account(mode)
        if account is None:
            other = "live" if mode == "paper" else "paper"
            hint = f" It has a {other} account: add mode:{other}." if conn.account(other) else ""
            raise InvalidInput(
                f"“{conn.name}” has no {mode} account chosen, so trading on it is off.{hint} "
                "Choose one in /accounts."
            )
        return Target(conn, account, mode)

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
        ctx.extra["broker_config"] = cfg

    async def _paper_extra(self, connection: Connection) -> dict[str, Any]:
        settings = connection.settings or {}
        source: Any = None
        source_id = settings.get("quote_source_connection_id")
        if source_id:
            async with self.core.db.session() as s:
                src = await s.get(Connection, source_id)
            if src is not None and src.member_id == connection.member_id and not src.builtin:
                source = await self.adapter_for(src)
        return {
            "db": self.core.db,
            "connection_id": connection.id,
            "quote_source": source or self.core.simulated_feed,
            "market_price_type": settings.get("market_price_type", "mid"),
            "starting_cash": Decimal(str(self.core.settings.paper_starting_cash)),
            "fill_hours": self.core.settings.paper_fill_hours,
            "clock": self.clock,
        }

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
