"""Following working orders until they end, and telling members once per change.

Real brokers: the vendor's order stream where it has one (TradeStation's HTTP stream, Alpaca
``trade_updates``, Tradier account events), reconnected with backoff, with a poll once the
broker says the stream is subscribed to catch what happened before (Alpaca and Tradier send no
snapshot); polling with backoff where there is no stream. Tradecord
Paper: its resting orders are swept against moving quotes. Every update goes through
``TradingService.apply_update``, whose compare-and-set makes each announcement happen once.
With several processes, one at a time follows a connection, under a lease it renews
(``order_watchers``): a broker may allow one stream per login (Tradier), and the reconciler
still reads every working order meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from adapters.base import BrokerAdapter
from adapters.errors import BrokerError, OrderNotFound
from adapters.models import OrderStatus, OrderUpdate, Side
from adapters.paper import SETTLEMENT_PREFIX, sweep_all
from adapters.paper.models import PaperAccount
from adapters.registry import get_adapter_class
from bot.models import (
    BracketExit,
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    IntentStatus,
    Member,
    OrderIntent,
    OrderWatcher,
)
from bot.services.connections import Target
from bot.services.jobs import insert_ignoring, worker_name
from bot.services.notify import Outgoing
from bot.services.trading import MAX_REPLACEMENTS, SIMULATED_NOTE, fill_price, qty

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger("tradecord.order_updates")

WATCHED = [
    IntentStatus.SUBMITTED,
    IntentStatus.ACCEPTED,
    IntentStatus.PARTIALLY_FILLED,
    IntentStatus.UNKNOWN,
]
MAX_BACKOFF = 30.0
# How long a connection stays a silent process's before another follows it (renewed at every
# supervision, a few seconds apart).
WATCH_LEASE = timedelta(seconds=30)


class OrderUpdates:
    def __init__(
        self, core: Core, *, supervise_every: float = 2.0, poll_start: float = 2.0
    ) -> None:
        self.core = core
        self.supervise_every = supervise_every
        self.poll_start = poll_start
        self._watchers: dict[int, asyncio.Task[None]] = {}
        # The accounts each watcher follows: an account chosen since (in any process) means a
        # new watcher, or its orders would be neither streamed nor polled.
        self._following: dict[int, frozenset[tuple[str, str]]] = {}
        self.holder = worker_name()

    # -- paper ----------------------------------------------------------------------------

    async def sweep_paper(self) -> int:
        """Re-check resting paper orders against current quotes; returns updates applied."""

        async def source(connection_id: int) -> Any:
            async with self.core.db.session() as s:
                conn = await s.get(Connection, connection_id)
            if conn is None:
                return self.core.simulated_feed
            return await self.core.connections.paper_prices(conn)

        updates = await sweep_all(
            self.core.db,
            source,
            fill_hours=self.core.settings.paper_fill_hours,
            clock=self.core.connections.clock,
        )
        for update in updates:
            if (update.order.client_order_id or "").startswith(SETTLEMENT_PREFIX):
                await self._tell_settled(update)
            else:
                await self.core.trading.apply_update("paper", update)
        return len(updates)

    async def _tell_settled(self, update: OrderUpdate) -> None:
        """A position closed because its contract expired: no intent placed that order, so
        its owner is told here (the sweep that settles it is the only one to see it)."""
        notifier = self.core.notifier
        if notifier is None:
            return
        order = update.order
        async with self.core.db.session() as s:
            row = (
                await s.execute(
                    select(Member.discord_user_id, Connection.name)
                    .join(Connection, Connection.member_id == Member.id)
                    .join(PaperAccount, PaperAccount.connection_id == Connection.id)
                    .where(PaperAccount.id == order.account_id)
                )
            ).first()
        if row is None:
            return
        held = "long" if order.side is Side.SELL else "short"
        note = f" · {SIMULATED_NOTE}" if order.info.get("simulated") else ""
        # Priced and counted as every other message: "$5,890.00", not the bare "5,890".
        final = order.average_fill_price if update.fill_price is None else update.fill_price
        price = f" at the final price {fill_price(final)}" if final is not None else ""
        try:
            await notifier.dm(
                int(row.discord_user_id),
                Outgoing(
                    content=f"📝 Paper · {row.name}: {order.symbol} stopped trading, so your "
                    f"{held} position of {qty(order.quantity)} was settled{price} "
                    f"({order.side.value} {qty(order.quantity)} to close).{note}"
                ),
            )
        except Exception as e:  # the position is settled either way; only the news is lost
            log.warning("Could not tell of a settled %s: %s", order.symbol, type(e).__name__)

    # -- real brokers ----------------------------------------------------------------------

    async def watched_connections(self) -> list[int]:
        """Connections with working orders: intents, and the exits of their brackets."""
        # Its tokens are refused until the member links it again (/connect makes it active and
        # it is watched again): a watcher would only retry forever.
        usable = (OrderIntent.broker != "paper", Connection.status != ConnectionStatus.NEEDS_REAUTH)
        joined = select(OrderIntent.connection_id).join(
            Connection, Connection.id == OrderIntent.connection_id
        )
        async with self.core.db.session() as s:
            rows = await s.scalars(
                joined.where(OrderIntent.status.in_(WATCHED), *usable).union(
                    joined.join(BracketExit, BracketExit.intent_id == OrderIntent.id).where(
                        BracketExit.notified_status.is_(None), *usable
                    )
                )
            )
            return sorted({int(r) for r in rows if r is not None})

    async def _accounts_of(self, connection_ids: set[int]) -> dict[int, frozenset[tuple[str, str]]]:
        if not connection_ids:
            return {}
        async with self.core.db.session() as s:
            rows = await s.execute(
                select(
                    ConnectionAccount.connection_id,
                    ConnectionAccount.mode,
                    ConnectionAccount.account_id,
                ).where(ConnectionAccount.connection_id.in_(connection_ids))
            )
            found: dict[int, set[tuple[str, str]]] = {cid: set() for cid in connection_ids}
            for cid, mode, account in rows:
                found[cid].add((mode, account))
        return {cid: frozenset(accounts) for cid, accounts in found.items()}

    async def supervise(self, stop: asyncio.Event) -> None:
        """Keep one watcher per connection that has working orders, following the accounts
        chosen for it now; stop the others."""
        try:
            while not stop.is_set():
                try:
                    wanted = await self._lease(set(await self.watched_connections()))
                    accounts = await self._accounts_of(wanted)
                except Exception:
                    log.exception("Could not list connections with working orders")
                    wanted, accounts = set(self._watchers), dict(self._following)
                for cid in wanted & set(self._watchers):
                    if accounts.get(cid) != self._following.get(cid):
                        self._watchers.pop(cid).cancel()  # started again below
                for cid in wanted - set(self._watchers):
                    self._watchers[cid] = asyncio.create_task(self._watch(cid))
                    self._following[cid] = accounts.get(cid, frozenset())
                for cid in set(self._watchers) - wanted:
                    self._watchers.pop(cid).cancel()
                    self._following.pop(cid, None)
                for cid, task in list(self._watchers.items()):
                    if task.done():
                        self._watchers.pop(cid)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.supervise_every)
        finally:
            for task in self._watchers.values():
                task.cancel()
            await asyncio.gather(*self._watchers.values(), return_exceptions=True)
            self._watchers.clear()
            self._following.clear()
            with contextlib.suppress(Exception):  # expired, they pass on anyway
                await self._lease(set())

    async def _lease(self, wanted: set[int]) -> set[int]:
        """Of the connections with working orders, the ones this process follows: those whose
        lease it holds (renewed) or takes (free, or expired with a process that stopped).
        Leases of connections no longer wanted are given up."""
        now = self.core.connections.clock()
        mine = OrderWatcher.holder == self.holder
        async with self.core.db.transaction() as s:
            await s.execute(
                delete(OrderWatcher).where(mine, OrderWatcher.connection_id.not_in(wanted))
            )
            if not wanted:
                return set()
            rows = [
                {"connection_id": cid, "holder": self.holder, "lease_expires_at": now}
                for cid in sorted(wanted)
            ]
            await s.execute(insert_ignoring(self.core.db, OrderWatcher, rows, ["connection_id"]))
            await s.execute(
                sa.update(OrderWatcher)
                .where(
                    OrderWatcher.connection_id.in_(wanted),
                    mine | (OrderWatcher.lease_expires_at <= now),
                )
                .values(holder=self.holder, lease_expires_at=now + WATCH_LEASE)
            )
            held = await s.scalars(
                select(OrderWatcher.connection_id).where(
                    mine, OrderWatcher.connection_id.in_(wanted)
                )
            )
            return set(held)

    async def _watch(self, connection_id: int) -> None:
        backoff = self.poll_start
        while True:
            # Read again at every reconnect: its accounts and authorization may have changed.
            async with self.core.db.session() as s:
                conn = await s.scalar(
                    select(Connection)
                    .where(Connection.id == connection_id)
                    .options(selectinload(Connection.accounts))
                )
            if conn is None:
                return
            streams = get_adapter_class(conn.broker).capabilities.order_stream
            try:
                adapter = await self.core.connections.adapter_for(conn)
                try:
                    if streams:
                        await self._stream(conn, adapter)
                        backoff = self.poll_start  # the stream ran: reconnect promptly
                    else:
                        await self.poll(conn, adapter)
                finally:
                    await adapter.close()
            except asyncio.CancelledError:
                raise
            except BrokerError as e:
                log.info("Order updates for connection %s paused: %s", connection_id, e.code)
            except Exception:
                log.exception("Order updates for connection %s failed", connection_id)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def _stream(self, conn: Connection, adapter: BrokerAdapter) -> None:
        """Follow the broker's stream, and poll once the broker says it is subscribed.

        A change before the subscription is only in the poll, one after it is in the stream
        (in both at worst, which applying ignores): polling before connecting left a gap.
        A stream that ends or fails before it was ever subscribed is still followed by a
        poll, so streams that keep failing never leave working orders unchecked. A failed
        poll ends the attempt (as it always has): the watcher retries both after backoff."""
        refs = [Target(conn, a, a.mode).ref for a in conn.accounts]
        ready = asyncio.Event()

        async def consume() -> None:
            async for update in adapter.stream_order_updates(refs, ready=ready):
                intent = await asyncio.shield(
                    self.core.trading.apply_update(conn.broker, update, connection_id=conn.id)
                )
                if (
                    intent is not None
                    and update.order.status is OrderStatus.REPLACED
                    and intent.broker_order_id == update.order.replaced_by
                ):
                    # The new order's own reports may have come first and been set aside
                    # (the intent still followed the old one): ask for its state now.
                    await self._check(conn, adapter, intent)

        stream = asyncio.create_task(consume())

        async def poll_once_subscribed() -> None:
            subscribed = asyncio.create_task(ready.wait())
            try:
                await asyncio.wait({subscribed, stream}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                subscribed.cancel()
            await self.poll(conn, adapter)

        poller = asyncio.create_task(poll_once_subscribed())
        try:
            pending: set[asyncio.Task[None]] = {stream, poller}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if poller in done and stream in pending:
                    poller.result()  # a failed poll ends the attempt; the stream is stopped below
            error = stream.exception()
            if error is not None:
                if poller.exception() is not None:
                    log.info(
                        "Poll of connection %s after its stream failed also failed: %s",
                        conn.id,
                        type(poller.exception()).__name__,
                    )
                raise error  # the stream's own failure is what the watcher reports
            poller.result()
        finally:
            for task in (stream, poller):
                task.cancel()
            await asyncio.gather(stream, poller, return_exceptions=True)

    async def poll(self, conn: Connection, adapter: BrokerAdapter) -> None:
        """Ask the broker about each working order of this connection (catches stream gaps)."""
        async with self.core.db.session() as s:
            intents = list(
                await s.scalars(
                    select(OrderIntent).where(
                        OrderIntent.connection_id == conn.id,
                        OrderIntent.status.in_(WATCHED),
                        OrderIntent.broker_order_id.is_not(None),
                    )
                )
            )
        for intent in intents:
            await self._check(conn, adapter, intent)
        async with self.core.db.session() as s:
            exits = (
                await s.execute(
                    select(BracketExit.broker_order_id, OrderIntent)
                    .join(OrderIntent, OrderIntent.id == BracketExit.intent_id)
                    .where(
                        OrderIntent.connection_id == conn.id,
                        BracketExit.notified_status.is_(None),
                    )
                )
            ).all()
        for exit_id, intent in exits:
            await self._check_exit(conn, adapter, intent, exit_id)

    async def _check_exit(
        self, conn: Connection, adapter: BrokerAdapter, intent: OrderIntent, exit_id: str
    ) -> None:
        """Ask the broker about a working exit of an intent's bracket (a stream gap would
        otherwise leave its fill untold and the connection watched for ever)."""
        account = conn.account(intent.mode)
        if account is None or account.account_id != intent.account_id:
            # At an account the member has since left: the reconciler follows it there, as it
            # does intents (or tells the member to check it, if the login no longer reaches it).
            return
        try:
            order = await adapter.fetch_order(
                Target(conn, account, intent.mode).ref, order_id=exit_id
            )
        except OrderNotFound:
            log.info("Exit %s of intent %s not found at the broker", exit_id, intent.id)
            return
        update = OrderUpdate(order, "poll")
        await asyncio.shield(
            self.core.trading.apply_update(conn.broker, update, connection_id=conn.id)
        )

    async def _check(self, conn: Connection, adapter: BrokerAdapter, intent: OrderIntent) -> None:
        """Ask the broker about one working order and apply what it says; an order replaced
        meanwhile is followed to the one that replaced it, whose state is asked for too."""
        account = conn.account(intent.mode)
        if account is None or account.account_id != intent.account_id:
            # At an account the member has since left: the reconciler follows it there
            # (if the login still reaches it); asking this account would find nothing.
            return
        ref = Target(conn, account, intent.mode).ref
        for _ in range(MAX_REPLACEMENTS + 1):
            try:
                order = await adapter.fetch_order(ref, order_id=intent.broker_order_id)
            except OrderNotFound:
                # This one order (purged, or from an account since replaced) says nothing of
                # the others: raising would skip them, and the stream after the poll, each time.
                log.info(
                    "Order %s of intent %s not found at the broker",
                    intent.broker_order_id,
                    intent.id,
                )
                return
            # Shielded: the supervisor may cancel this watcher the moment the order ends, and
            # an update half applied (stored, not yet told) would never be announced.
            await asyncio.shield(self.core.trading.apply_order_state(intent, order))
            if order.status is not OrderStatus.REPLACED or (
                intent.broker_order_id != order.replaced_by
            ):
                return
