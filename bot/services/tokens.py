"""Broker access tokens for adapters: read through the vault, refreshed once per connection.

Refresh is single-flight across coroutines (an asyncio lock) and across processes (the
credential row is locked for the refresh, and the token re-read under the lock: whoever waited
finds the new token and uses it). The new refresh token is committed before the new access
token is handed out, so a crash can never lose a rotated refresh token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import select

from adapters.errors import AuthorizationExpired
from adapters.registry import get_adapter_class
from bot.db import Database, lock_row
from bot.models import Connection, ConnectionStatus, Credential, Member
from bot.services import audit, oauth
from bot.services.credentials import binding
from bot.services.notify import Outgoing
from bot.vault import VaultError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.core import Core

log = logging.getLogger("tradecord.tokens")
LEEWAY = timedelta(seconds=60)
_CREDENTIALS = (
    select(Credential, Connection, Member)
    .join(Connection, Connection.id == Credential.connection_id)
    .join(Member, Member.id == Connection.member_id)
)
Stored = tuple[Credential, Connection, Member]


def _checked(row: Stored | None) -> Stored:
    if row is None:
        raise AuthorizationExpired(
            "This connection has no stored authorization. Run /connect to link it again."
        )
    conn = row[1]
    if conn.status == ConnectionStatus.NEEDS_REAUTH:
        raise AuthorizationExpired(
            f"“{conn.name}” needs to be re-linked. Run /connect {conn.broker} again."
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
                f"Run /connect {conn.broker} to link it again, or ask the server admin to "
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
        lock = self.core.connections.refresh_lock(self.connection_id)
        async with lock:
            reauth = False
            async with self.core.db.transaction() as s:
                await lock_row(s, Credential, Credential.connection_id == self.connection_id)
                cred, conn, member = await self._load(s)
                current = self._open(cred, conn, member, "access_token")
                now = self.core.connections.clock()
                fresh = cred.expires_at is None or cred.expires_at - now >= LEEWAY
                if current is not None and current != rejected_token and fresh:
                    return current  # another caller (or process) refreshed while we waited
                refresh_token = self._open(cred, conn, member, "refresh_token")
                if refresh_token is None:
                    reauth = True
                else:
                    ep = oauth.endpoints(get_adapter_class(conn.broker), self.core.settings)
                    try:
                        tokens = await oauth.refresh(ep, refresh_token)
                    except oauth.ReauthorizationNeeded:
                        reauth = True
                    else:
                        # Saved (and committed on leaving this block) before anyone uses it.
                        self.store(cred, conn, member, tokens)
                        audit.record(
                            s,
                            "connection.token_refreshed",
                            member_id=member.id,
                            connection_id=conn.id,
                        )
                        return tokens.access_token
                if reauth:
                    conn.status = ConnectionStatus.NEEDS_REAUTH
                    audit.record(
                        s, "connection.needs_reauth", member_id=member.id, connection_id=conn.id
                    )
            await self._tell_reauth(conn, member)
            raise AuthorizationExpired(
                f"{conn.name}: the broker no longer accepts our authorization. "
                f"Run /connect {conn.broker} to link it again."
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

    async def _tell_reauth(self, conn: Connection, member: Member) -> None:
        notifier = self.core.notifier
        if notifier is None:
            return
        try:
            await notifier.dm(
                member.discord_user_id,
                Outgoing(
                    content=f"⛔ **{conn.name}** was disconnected by the broker: our authorization "
                    f"expired or was revoked. Run `/connect {conn.broker}` to link it again. "
                    "Nothing will be retried until you do."
                ),
            )
        except Exception:
            log.warning("Could not tell member about re-authorization of connection %s", conn.id)


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
            await core.notifier.dm(
                member.discord_user_id,
                Outgoing(
                    content=(
                        f"⏳ Your authorization for **{conn.name}** ends in about {hours} "
                        "hour(s); the broker does not let it be extended. Run "
                        f"`/connect {conn.broker}` before then to keep trading on it without "
                        "interruption."
                    )
                ),
            )
        sent += 1
    return sent
