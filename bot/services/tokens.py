"""Broker access tokens for adapters: read through the vault, refreshed once per connection.

Refresh is single-flight across coroutines (an asyncio lock) and across processes (a lease on
the credential row). No database lock is held while the broker is called: on SQLite that lock
is the whole database's single write lock, and a slow token endpoint would stall every writer
of every process (webhook acknowledgements first). Instead:

1. a short locked transaction (``lock_row``) re-reads the token: one stored since ours was
   refused is used as it is; a live lease of another caller is waited for (polling, re-reading);
   otherwise we take the lease and commit;
2. the broker is called outside any transaction;
3. a second short locked transaction stores the new tokens if the lease is still ours, and
   clears it. The new refresh token is committed before the new access token is handed out.
   Once the broker has answered, a rotating broker has already retired the refresh token we
   hold, so the answer exists only in our memory: a failed store (database locked or briefly
   unreachable) is retried with backoff, in a task the caller's cancellation cannot abandon,
   until shortly before our lease could be taken over. If it still fails, the lease is left to
   run out; the taker then presents the retired token and gets ``invalid_grant``: the
   connection needs re-linking, as after a crash between answer and commit.

A lease left by a holder that died is taken over once expired. If that holder's request reached
the broker, a rotating broker has already replaced the refresh token we still hold: the takeover
then gets ``invalid_grant`` and the connection needs re-linking, as after any lost refresh
response. ``LEASE`` is far longer than a live holder can take, so only a dead one is taken over.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from adapters.errors import AuthorizationExpired, BrokerUnavailable
from adapters.registry import get_adapter_class
from bot.brokers import connect_command
from bot.db import Database, lock_row
from bot.models import Connection, ConnectionStatus, Credential, Member
from bot.services import audit, oauth
from bot.services.credentials import binding
from bot.services.notify import Outgoing
from bot.sqlite_driver import BUSY_WAIT_SECONDS
from bot.vault import VaultError
from bot.wording import plural

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.core import Core

log = logging.getLogger("tradecord.tokens")
LEEWAY = timedelta(seconds=60)
# The broker call's hard limit: httpx's timeout (oauth.TIMEOUT) bounds each phase of the
# exchange, not the whole of it.
CALL_LIMIT = 20.0
# A holder needs at most CALL_LIMIT plus the wait for the write lock to store the result
# (bot.sqlite_driver.BUSY_WAIT_SECONDS on SQLite): with room to spare, a live holder's lease
# never expires.
LEASE = timedelta(seconds=90)
_POLL_FIRST, _POLL_MAX = 0.02, 0.5  # seconds between re-reads while another process refreshes
# Storing an answer is retried until this long before our lease could be taken over: a taker
# would present the refresh token the broker just retired (and a broker detecting its reuse
# revokes the whole grant, our unsaved tokens included). It leaves room for one attempt's busy
# wait and some clock disagreement.
STORE_MARGIN = timedelta(seconds=BUSY_WAIT_SECONDS + 5)
_STORE_FIRST, _STORE_MAX = 0.05, 2.0  # seconds between attempts to store refreshed tokens
# Database failures worth another attempt (locked, connection lost, server restarting).
_TRANSIENT = (SQLAlchemyError, OSError)
# Stores in flight: a task needs a strong reference until it finishes.
_storing: set[asyncio.Task[str | None]] = set()
_CREDENTIALS = (
    select(Credential, Connection, Member)
    .join(Connection, Connection.id == Credential.connection_id)
    .join(Member, Member.id == Connection.member_id)
)
Stored = tuple[Credential, Connection, Member]


@dataclass(frozen=True, slots=True)
class _Lease:
    """Our claim to refresh a connection's tokens, with what the broker call needs."""

    owner: str
    refresh_token: str = field(repr=False)  # a repr reaches logs through any %r or traceback
    endpoints: oauth.Endpoints
    store_by: float  # time.monotonic() after which no new attempt to store the answer starts


def _checked(row: Stored | None) -> Stored:
    if row is None:
        raise AuthorizationExpired(
            "This connection has no stored authorization. Run /connect to link it again."
        )
    conn = row[1]
    if conn.status == ConnectionStatus.NEEDS_REAUTH:
        raise AuthorizationExpired(
            f"“{conn.name}” needs to be re-linked. Run {connect_command(conn.broker)} again."
        )
    return row


async def _read_many(db: Database, connection_ids: Sequence[int]) -> list[Stored | None]:
    query = _CREDENTIALS.where(Credential.connection_id.in_(sorted(set(connection_ids))))
    async with db.session() as s:
        found = {cred.connection_id: (cred, conn, m) for cred, conn, m in await s.execute(query)}
    return [found.get(i) for i in connection_ids]


class DbTokenProvider:
    """Tokens of one connection for one adapter (one unit of work).

    The access token read for the first request serves the adapter's later ones until it
    nears expiry or the broker refuses it: one read and decryption per adapter, not one per
    request. A token another process refreshed meanwhile is found through ``refresh`` when
    the broker refuses the old one."""

    def __init__(self, core: Core, connection_id: int) -> None:
        self.core = core
        self.connection_id = connection_id
        self._token: str | None = None
        self._expires_at: datetime | None = None
        self._reading = asyncio.Lock()  # concurrent first requests share one read

    async def _load(self, s: AsyncSession) -> Stored:
        query = _CREDENTIALS.where(Credential.connection_id == self.connection_id)
        rows = (await s.execute(query.execution_options(populate_existing=True))).all()
        return _checked((rows[0][0], rows[0][1], rows[0][2]) if rows else None)

    def _open(self, cred: Credential, conn: Connection, member: Member, column: str) -> str | None:
        envelope = getattr(cred, column)
        if envelope is None:
            return None
        try:
            return self.core.vault.decrypt(envelope, binding(conn, member, column))
        except VaultError as e:
            # Most likely a key still in use was removed from TRADECORD_KEYS: the admin can put
            # it back; until then the member can only link the account again.
            log.warning("connection %s: stored %s unreadable: %s", conn.id, column, e)
            raise AuthorizationExpired(
                f"Tradecord can no longer read its stored authorization for “{conn.name}”. "
                f"Run {connect_command(conn.broker)} to link it again, or ask the bot's owner to "
                "check the bot's encryption keys."
            ) from None

    async def access_token(self) -> str:
        async with self._reading:
            if self._token is not None and not self._expiring(self._expires_at):
                return self._token
            # A fan-out's adapters read their credentials together (bot.coalesce).
            db = self.core.db
            reads = db.shared("credentials", partial(_read_many, db))
            cred, conn, member = _checked(await reads(self.connection_id))
            token = self._open(cred, conn, member, "access_token")
            assert token is not None
            if cred.refresh_token and self._expiring(cred.expires_at):
                return await self.refresh(token)
            self._token, self._expires_at = token, cred.expires_at
            return token

    def _expiring(self, expires_at: datetime | None) -> bool:
        return expires_at is not None and expires_at - self.core.connections.clock() < LEEWAY

    async def refresh(self, rejected_token: str) -> str:
        self._token = None  # the next request reads what the refresh stored
        async with self.core.connections.refresh_lock(self.connection_id):
            pause = _POLL_FIRST
            # A live lease ends within LEASE by its holder's clock; this bounds the wait should
            # the processes' clocks disagree.
            give_up = time.monotonic() + 2 * LEASE.total_seconds()
            while True:
                step = await self._claim(rejected_token)
                if isinstance(step, str):
                    return step
                if step is not None:
                    token = await self._refresh_leased(step)
                    if token is not None:
                        return token
                    continue  # lease lost: see what its new holder does
                if time.monotonic() > give_up:
                    raise BrokerUnavailable(
                        "Another Tradecord process is still renewing our authorization with "
                        "the broker. Try again in a minute."
                    )
                await asyncio.sleep(pause)
                pause = min(pause * 2, _POLL_MAX)

    async def _claim(self, rejected_token: str) -> str | _Lease | None:
        """One short locked transaction: the token stored since ``rejected_token`` was refused,
        or the lease to refresh it ourselves, or None while another caller holds the lease."""
        async with self.core.db.transaction() as s:
            await lock_row(s, Credential, Credential.connection_id == self.connection_id)
            cred, conn, member = await self._load(s)
            current = self._open(cred, conn, member, "access_token")
            now = self.core.connections.clock()
            fresh = cred.expires_at is None or cred.expires_at - now >= LEEWAY
            if current is not None and current != rejected_token and fresh:
                return current  # another caller (or process) refreshed while we waited
            if cred.refresh_lease_until is not None and cred.refresh_lease_until > now:
                return None
            refresh_token = self._open(cred, conn, member, "refresh_token")
            if refresh_token is not None:
                if cred.refresh_lease_owner is not None:
                    log.warning(
                        "connection %s: taking over a token refresh abandoned at %s",
                        conn.id,
                        cred.refresh_lease_until,
                    )
                ep = oauth.endpoints(get_adapter_class(conn.broker), self.core.settings)
                store_by = time.monotonic() + (LEASE - STORE_MARGIN).total_seconds()
                lease = _Lease(uuid.uuid4().hex, refresh_token, ep, store_by)
                cred.refresh_lease_until = now + LEASE
                cred.refresh_lease_owner = lease.owner
                return lease
            self._mark_reauth(s, conn, member)
        raise await self._reauth_needed(conn, member)

    async def _refresh_leased(self, lease: _Lease) -> str | None:
        """Call the broker under ``lease`` (no transaction open) and store what it answers:
        the new access token, or None if the lease was lost meanwhile (nothing stored)."""
        try:
            async with asyncio.timeout(CALL_LIMIT):
                tokens: oauth.TokenSet | None = await oauth.refresh(
                    lease.endpoints, lease.refresh_token
                )
        except oauth.ReauthorizationNeeded:
            tokens = None
        except BaseException as e:
            # Failed or cancelled: free the lease so the next caller tries at once. If the
            # broker did rotate the token, that caller gets invalid_grant (see the module doc).
            await self._release(lease.owner)
            if isinstance(e, TimeoutError):
                log.warning("Refresh of connection %s timed out", self.connection_id)
                raise BrokerUnavailable(
                    "The broker did not answer while renewing our authorization. "
                    "Try again in a minute."
                ) from None
            raise
        # Shielded: a caller cancelled now (an interaction timing out) must not drop the answer.
        task = asyncio.create_task(self._settle(lease, tokens))
        _storing.add(task)
        task.add_done_callback(_forget)
        return await asyncio.shield(task)

    async def _settle(self, lease: _Lease, tokens: oauth.TokenSet | None) -> str | None:
        """Store the broker's answer, retrying transient database failures while the lease
        is surely still ours; then give up with a clear, deterministic error."""
        pause, attempts = _STORE_FIRST, 0
        while True:
            attempts += 1
            try:
                return await self._store_answer(lease, tokens)
            except _TRANSIENT as e:
                # The class only: a statement's text and parameters carry ciphertexts.
                failure = type(e).__name__
            if time.monotonic() + pause >= lease.store_by:
                break
            log.warning(
                "connection %s: storing refreshed tokens failed (%s), attempt %d; retrying",
                self.connection_id,
                failure,
                attempts,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, _STORE_MAX)
        if tokens is None:
            outcome = "The broker refused the refresh token; the next refresh will be refused too."
        elif tokens.refresh_token in (None, lease.refresh_token):
            outcome = "The stored refresh token is still valid: the next refresh can succeed."
        else:
            outcome = (
                "The broker retired the stored refresh token: the next refresh will be "
                "refused and the member must run /connect again."
            )
        log.error(
            "connection %s: storing the broker's answer to a token refresh failed %d times "
            "(last: %s); giving up before our refresh lease runs out. %s",
            self.connection_id,
            attempts,
            failure,
            outcome,
        )
        if tokens is None:
            # Not "run /connect" yet: the connection could not be marked, and /connect repairs
            # only a marked one. The next refresh after our lease runs out marks it and says so.
            raise AuthorizationExpired(
                "The broker refused Tradecord's authorization, but Tradecord could not record "
                "that (its database is not answering). Try again in a few minutes: you will then "
                "be told how to link the account again."
            )
        raise BrokerUnavailable(
            "Tradecord could not save the broker's renewed authorization (its database is not "
            "answering). Try again in a few minutes; if the broker then refuses, run /connect "
            "to link the account again."
        )

    async def _store_answer(self, lease: _Lease, tokens: oauth.TokenSet | None) -> str | None:
        """One locked transaction storing the broker's answer under ``lease``: the new access
        token, or None if the lease was lost meanwhile (nothing stored)."""
        async with self.core.db.transaction() as s:
            await lock_row(s, Credential, Credential.connection_id == self.connection_id)
            cred, conn, member = await self._load(s)
            if cred.refresh_lease_owner != lease.owner:
                # Taken over as expired (or the member linked the account again): whatever
                # the broker answered us is not to be stored over the newer state.
                log.warning("connection %s: refresh lease lost before storing", conn.id)
                return None
            if tokens is not None:
                # Saved (and committed on leaving this block) before anyone uses it.
                self.store(cred, conn, member, tokens)
                audit.record(
                    s, "connection.token_refreshed", member_id=member.id, connection_id=conn.id
                )
                return tokens.access_token
            cred.refresh_lease_until = cred.refresh_lease_owner = None
            self._mark_reauth(s, conn, member)
        raise await self._reauth_needed(conn, member)

    async def refused(self, token: str, reason: str) -> None:
        """The broker refused ``token`` for good (401 though just refreshed, or 403 for a
        scope the member did not grant): mark the connection for re-linking, so the /connect
        the member is told to run repairs it instead of adding a second connection. Once,
        under the row lock: the first process to see the refusal marks, audits and tells the
        member (``reason``, the adapter's message); a token stored since (a refresh or re-link
        by someone else) is left alone."""
        self._token = None
        query = _CREDENTIALS.where(Credential.connection_id == self.connection_id)
        async with self.core.db.transaction() as s:
            await lock_row(s, Credential, Credential.connection_id == self.connection_id)
            row = (await s.execute(query.execution_options(populate_existing=True))).first()
            if row is None:
                return
            cred, conn, member = row
            if conn.status == ConnectionStatus.NEEDS_REAUTH:
                return
            if self._open(cred, conn, member, "access_token") != token:
                return
            log.warning("connection %s: the broker refused its current token", conn.id)
            self._mark_reauth(s, conn, member)
        await self._tell_reauth(conn, member, reason)

    async def _release(self, owner: str) -> None:
        async with self.core.db.transaction() as s:
            await s.execute(
                update(Credential)
                .where(
                    Credential.connection_id == self.connection_id,
                    Credential.refresh_lease_owner == owner,
                )
                .values(refresh_lease_until=None, refresh_lease_owner=None)
            )

    @staticmethod
    def _mark_reauth(s: AsyncSession, conn: Connection, member: Member) -> None:
        conn.status = ConnectionStatus.NEEDS_REAUTH
        audit.record(s, "connection.needs_reauth", member_id=member.id, connection_id=conn.id)

    async def _reauth_needed(self, conn: Connection, member: Member) -> AuthorizationExpired:
        """Tell the member (after the status is committed) and give the error to raise."""
        await self._tell_reauth(conn, member)
        return AuthorizationExpired(
            f"{conn.name}: the broker no longer accepts our authorization. "
            f"Run {connect_command(conn.broker)} to link it again."
        )

    def store(
        self, cred: Credential, conn: Connection, member: Member, tokens: oauth.TokenSet
    ) -> None:
        vault = self.core.vault
        cred.access_token = vault.encrypt(
            tokens.access_token, binding(conn, member, "access_token")
        )
        if tokens.refresh_token:
            cred.refresh_token = vault.encrypt(
                tokens.refresh_token, binding(conn, member, "refresh_token")
            )
        cred.expires_at = tokens.expires_at
        if tokens.scope:
            cred.scope = tokens.scope[:200]
        # New tokens end any refresh in flight: its holder finds its lease gone and stores
        # nothing over them.
        cred.refresh_lease_until = cred.refresh_lease_owner = None

    async def _tell_reauth(
        self, conn: Connection, member: Member, reason: str | None = None
    ) -> None:
        notifier = self.core.notifier
        if notifier is None:
            return
        why = reason or (
            "the broker no longer accepts our authorization (it expired or was revoked). "
            f"Run `{connect_command(conn.broker)}` to link it again."
        )
        try:
            await notifier.dm(
                member.discord_user_id,
                Outgoing(
                    content=f"⛔ **{conn.name}** was disconnected: {why} "
                    "Nothing will be retried until you do."
                ),
            )
        except Exception:
            log.warning("Could not tell member about re-authorization of connection %s", conn.id)


def _forget(task: asyncio.Task[str | None]) -> None:
    _storing.discard(task)
    if not task.cancelled():
        task.exception()  # reported by _settle or its awaiting caller, not as "never retrieved"


async def remind_expiring(core: Core, *, ahead: timedelta = timedelta(days=1)) -> int:
    """DM members whose broker authorization has a fixed end within ``ahead``, once each."""
    from sqlalchemy import update

    now = core.connections.clock()
    async with core.db.session() as s:
        rows = (
            await s.execute(
                select(Credential, Connection, Member)
                .join(Connection, Connection.id == Credential.connection_id)
                .join(Member, Member.id == Connection.member_id)
                .where(
                    Credential.refresh_expires_at.is_not(None),
                    Credential.refresh_expires_at <= now + ahead,
                    Credential.refresh_reminded_at.is_(None),
                    Connection.status != ConnectionStatus.NEEDS_REAUTH,
                )
            )
        ).all()
    sent = 0
    for cred, conn, member in rows:
        async with core.db.transaction() as s:
            claimed = await s.execute(
                update(Credential)
                .where(
                    Credential.connection_id == cred.connection_id,
                    Credential.refresh_reminded_at.is_(None),
                )
                .values(refresh_reminded_at=now)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another process reminded
        assert cred.refresh_expires_at is not None
        hours = max(0, int((cred.refresh_expires_at - now).total_seconds() // 3600))
        if core.notifier is not None:
            try:
                await core.notifier.dm(
                    member.discord_user_id,
                    Outgoing(
                        content=(
                            f"⏳ Your authorization for **{conn.name}** ends in about {hours} "
                            f"hour{plural(hours)}; the broker does not let it be extended. Run "
                            f"`{connect_command(conn.broker)}` before then to keep trading on "
                            "it without interruption."
                        )
                    ),
                )
            except Exception:
                # Discord away or DMs closed: this member's reminder is tried again next pass,
                # and the others' are still sent in this one.
                log.warning("Could not DM an expiry reminder; retried later", exc_info=True)
                async with core.db.transaction() as s:
                    await s.execute(
                        update(Credential)
                        .where(
                            Credential.connection_id == cred.connection_id,
                            Credential.refresh_reminded_at == now,
                        )
                        .values(refresh_reminded_at=None)
                    )
                continue
        sent += 1
    return sent
