"""Storing tokens through the vault, and re-encrypting them under a new key."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from bot.db import Database
from bot.models import Connection, Credential, Member
from bot.vault import Binding, Vault, envelope_key_id

ENCRYPTED_COLUMNS = ("access_token", "refresh_token")


def binding(credential_connection: Connection, member: Member, column: str) -> Binding:
    return Binding(
        table="credentials",
        column=column,
        row_id=credential_connection.id,
        discord_user_id=member.discord_user_id,
        broker=credential_connection.broker,
    )


@dataclass
class RotationReport:
    rows: int
    before: Counter[str]  # ciphertexts per key id before rotation
    after: Counter[str]
    unused_keys: list[str]  # configured keys no ciphertext uses any more: safe to remove
    unknown_keys: list[str]  # key ids found in the database but not configured


async def rotate_keys(db: Database, vault: Vault, *, batch: int = 500) -> RotationReport:
    """Re-encrypt every ciphertext under the primary key, in batches, each batch atomic."""
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    rows = 0
    last_id = 0
    while True:
        async with db.transaction() as s:
            result = await s.execute(
                select(Credential, Connection, Member)
                .join(Connection, Connection.id == Credential.connection_id)
                .join(Member, Member.id == Connection.member_id)
                .where(Credential.connection_id > last_id)
                .order_by(Credential.connection_id)
                .limit(batch)
                .with_for_update(of=Credential)
            )
            chunk = result.all()
            for cred, conn, member in chunk:
                rows += 1
                for column in ENCRYPTED_COLUMNS:
                    envelope = getattr(cred, column)
                    if envelope is None:
                        continue
                    before[envelope_key_id(envelope)] += 1
                    if vault.needs_rewrap(envelope) and envelope_key_id(envelope) in vault.key_ids:
                        b = binding(conn, member, column)
                        envelope = vault.encrypt(vault.decrypt(envelope, b), b)
                        setattr(cred, column, envelope)
                    after[envelope_key_id(envelope)] += 1
                last_id = cred.connection_id
        if len(chunk) < batch:
            break
    unused = [k for k in vault.key_ids if k != vault.primary_key_id and after[k] == 0]
    unknown = sorted(k for k in before if k not in vault.key_ids)
    return RotationReport(rows, before, after, unused, unknown)
