"""Storing tokens through the vault, and re-encrypting every vault ciphertext under a new key."""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select

from bot.db import Database
from bot.models import Connection, Credential, Member, OAuthState
from bot.vault import (
    KEY_FILE_NAME,
    LOCAL_KEY_ID,
    Binding,
    Vault,
    VaultError,
    envelope_key_id,
)

ENCRYPTED_COLUMNS = ("access_token", "refresh_token")


def binding(credential_connection: Connection, member: Member, column: str) -> Binding:
    return Binding(
        table="credentials",
        column=column,
        row_id=credential_connection.id,
        discord_user_id=member.discord_user_id,
        broker=credential_connection.broker,
    )


def verifier_binding(state: OAuthState, member: Member) -> Binding:
    """The binding of a sign-in's PKCE verifier; defined here so rotation rewraps exactly what
    linking encrypts."""
    return Binding("oauth_states", "code_verifier", state.id, member.discord_user_id, state.broker)


@dataclass
class RotationReport:
    rows: Counter[str]  # rows holding ciphertexts, per table
    before: Counter[str]  # ciphertexts per key id before rotation
    after: Counter[str]
    unused_keys: list[str]  # configured keys no ciphertext uses any more: safe to remove
    unknown_keys: list[str]  # key ids found in the database but not configured
    unreadable: Counter[str]  # ciphertexts per key id that did not decrypt (altered or moved)


class _Rewrap:
    """Moves ciphertexts to the primary key and counts them per key id, before and after."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.rows: Counter[str] = Counter()
        self.before: Counter[str] = Counter()
        self.after: Counter[str] = Counter()
        self.unreadable: Counter[str] = Counter()

    def __call__(self, envelope: str, b: Binding) -> str:
        key_id = envelope_key_id(envelope)
        self.before[key_id] += 1
        # A key we do not hold stays as it is and is reported as unknown.
        if self.vault.needs_rewrap(envelope) and key_id in self.vault.key_ids:
            try:
                envelope = self.vault.encrypt(self.vault.decrypt(envelope, b), b)
            except VaultError:
                # Left as it is and reported: raising would roll back its batch and stop every
                # later run at the same row, so the old key could never be retired.
                self.unreadable[key_id] += 1
        self.after[envelope_key_id(envelope)] += 1
        return envelope


async def key_usage(db: Database) -> Counter[str]:
    """How many stored ciphertexts each key id encrypts (credentials' tokens, sign-in states'
    PKCE verifiers): a key may be removed from TRADECORD_KEYS only once it encrypts none."""
    usage: Counter[str] = Counter()
    columns = (Credential.access_token, Credential.refresh_token, OAuthState.code_verifier)
    async with db.session() as s:
        for column in columns:
            for envelope in await s.scalars(select(column).where(column.is_not(None))):
                with contextlib.suppress(VaultError):  # not ours: rotation reports those
                    usage[envelope_key_id(envelope)] += 1
    return usage


def retired_keys_in_use(usage: Counter[str], vault: Vault) -> str | None:
    """Why this process must not start: ciphertexts under keys no longer configured, which
    nothing could read (every member behind them would have to link again). None if none."""
    missing = {k: n for k, n in sorted(usage.items()) if k not in vault.key_ids}
    if not missing:
        return None
    held = ", ".join(f"{n} under key {k}" for k, n in missing.items())
    local = (
        f" Key {LOCAL_KEY_ID} is local mode's, in {KEY_FILE_NAME} of the data directory: a "
        "database where local mode was tried is for trying; give a real deployment a fresh "
        "TRADECORD_DATA_DIR or DATABASE_URL."
        if LOCAL_KEY_ID in missing
        else ""
    )
    return (
        f"TRADECORD_KEYS: stored broker tokens are encrypted under keys it no longer holds "
        f"({held}). Put those keys back in TRADECORD_KEYS (after the primary), run `tradecord "
        f"keys rotate`, and remove a key only once rotate reports it unused.{local}"
    )


async def rotate_keys(db: Database, vault: Vault, *, batch: int = 500) -> RotationReport:
    """Re-encrypt every vault ciphertext under the primary key, in batches, each batch atomic:
    the credentials' tokens and the sign-in states' PKCE verifiers."""
    rewrap = _Rewrap(vault)
    await _rotate_credentials(db, rewrap, batch)
    await _rotate_verifiers(db, rewrap, batch)
    after = rewrap.after
    unused = [k for k in vault.key_ids if k != vault.primary_key_id and after[k] == 0]
    unknown = sorted(k for k in rewrap.before if k not in vault.key_ids)
    return RotationReport(rewrap.rows, rewrap.before, after, unused, unknown, rewrap.unreadable)


async def _rotate_credentials(db: Database, rewrap: _Rewrap, batch: int) -> None:
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
                rewrap.rows["credentials"] += 1
                for column in ENCRYPTED_COLUMNS:
                    envelope = getattr(cred, column)
                    if envelope is not None:
                        setattr(cred, column, rewrap(envelope, binding(conn, member, column)))
                last_id = cred.connection_id
        if len(chunk) < batch:
            break


async def _rotate_verifiers(db: Database, rewrap: _Rewrap, batch: int) -> None:
    # Spent and expired states keep their verifier too: until rewrapped they pin the old key.
    last_id = ""
    while True:
        async with db.transaction() as s:
            result = await s.execute(
                select(OAuthState, Member)
                .join(Member, Member.id == OAuthState.member_id)
                .where(OAuthState.code_verifier.is_not(None), OAuthState.id > last_id)
                .order_by(OAuthState.id)
                .limit(batch)
                .with_for_update(of=OAuthState)
            )
            chunk = result.all()
            for state, member in chunk:
                rewrap.rows["oauth_states"] += 1
                assert state.code_verifier is not None
                state.code_verifier = rewrap(state.code_verifier, verifier_binding(state, member))
                last_id = state.id
        if len(chunk) < batch:
            break
