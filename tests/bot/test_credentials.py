from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.db import Database
from bot.errors import ConfigurationError
from bot.models import Connection, ConnectLink, Credential, Member, OAuthState
from bot.roles import open_core
from bot.services.credentials import binding, rotate_keys, verifier_binding
from bot.services.members import MemberService
from bot.settings import Settings, load_settings, parse_keys
from bot.vault import Vault, envelope_key_id, generate_key_spec
from tests.conftest import requires_sqlite

PLANTED = "PLANTED-ACCESS-TOKEN-4f1c2b9e77d0"
PLANTED_REFRESH = "PLANTED-REFRESH-TOKEN-a81d0c33f5e2"


async def _store(db: Database, vault: Vault, discord_id: int, broker: str = "alpaca") -> int:
    member_id = await MemberService(db).ensure(discord_id)
    async with db.transaction() as s:
        member = await s.get(Member, member_id)
        assert member is not None
        conn = Connection(
            member_id=member_id,
            broker=broker,
            name=f"{broker} {discord_id}",
            name_key=f"{broker} {discord_id}",
        )
        s.add(conn)
        await s.flush()
        s.add(
            Credential(
                connection_id=conn.id,
                access_token=vault.encrypt(PLANTED, binding(conn, member, "access_token")),
                refresh_token=vault.encrypt(
                    PLANTED_REFRESH, binding(conn, member, "refresh_token")
                ),
            )
        )
        return conn.id


@requires_sqlite
async def test_no_plaintext_token_in_database_file(
    db: Database, vault: Vault, tmp_path: Path
) -> None:
    await _store(db, vault, 1)
    await db.close()  # checkpoint the WAL so everything is in files we scan
    files = [p for p in tmp_path.iterdir() if p.name.startswith("tradecord.db")]  # noqa: ASYNC240
    blobs = b"".join(p.read_bytes() for p in files)
    assert blobs, "database file not found"
    assert PLANTED.encode() not in blobs
    assert PLANTED_REFRESH.encode() not in blobs
    assert b"tc1.test." in blobs  # the envelopes are there


async def test_row_swap_fails_to_decrypt(db: Database, vault: Vault) -> None:
    a = await _store(db, vault, 1)
    b = await _store(db, vault, 2)
    async with db.transaction() as s:
        ca, cb = await s.get(Credential, a), await s.get(Credential, b)
        assert ca and cb
        ca.access_token, cb.access_token = cb.access_token, ca.access_token
    async with db.session() as s:
        conn = await s.get(Connection, a)
        member = await s.get(Member, conn.member_id) if conn else None
        cred = await s.get(Credential, a)
        assert conn and member and cred
        try:
            vault.decrypt(cred.access_token, binding(conn, member, "access_token"))
        except Exception as e:
            assert "does not belong" in str(e)
        else:
            raise AssertionError("a swapped ciphertext decrypted")
        # Column swap within a row fails too.
        try:
            vault.decrypt(cred.refresh_token or "", binding(conn, member, "access_token"))
        except Exception as e:
            assert "does not belong" in str(e)
        else:
            raise AssertionError("a ciphertext from another column decrypted")


async def test_rotation_rewraps_everything_and_reports_unused_keys(db: Database) -> None:
    old = parse_keys(generate_key_spec("old"))
    new = parse_keys(generate_key_spec("new"))
    ids = [await _store(db, Vault(old), i) for i in range(1, 4)]
    ring = Vault(new + old)
    report = await rotate_keys(db, ring, batch=2)  # several batches
    assert report.rows == {"credentials": 3}
    assert report.before == {"old": 6}
    assert report.after == {"new": 6}
    assert report.unused_keys == ["old"]
    async with db.session() as s:
        for cid in ids:
            cred = await s.get(Credential, cid)
            conn = await s.get(Connection, cid)
            assert cred and conn
            member = await s.scalar(select(Member).where(Member.id == conn.member_id))
            assert member
            assert envelope_key_id(cred.access_token) == "new"
            assert (
                Vault(new).decrypt(cred.access_token, binding(conn, member, "access_token"))
                == PLANTED
            )
    again = await rotate_keys(db, ring)
    assert again.before == {"new": 6} and again.unused_keys == ["old"]


async def test_rotation_reports_keys_it_does_not_hold(db: Database) -> None:
    lost = parse_keys(generate_key_spec("lost"))
    await _store(db, Vault(lost), 1)
    report = await rotate_keys(db, Vault(parse_keys(generate_key_spec("new"))))
    assert report.unknown_keys == ["lost"]
    assert report.after == {"lost": 2}


async def test_rotation_skips_a_ciphertext_it_cannot_open_and_finishes_the_rest(
    db: Database,
) -> None:
    # One damaged row (here: two access tokens swapped between rows) must not stop rotation
    # for ever at that row: it stays as it is, is reported, and its key is not called unused.
    old = parse_keys(generate_key_spec("old"))
    new = parse_keys(generate_key_spec("new"))
    a, b, c = [await _store(db, Vault(old), i) for i in range(1, 4)]
    async with db.transaction() as s:
        ca, cb = await s.get(Credential, a), await s.get(Credential, b)
        assert ca and cb
        ca.access_token, cb.access_token = cb.access_token, ca.access_token
    report = await rotate_keys(db, Vault(new + old), batch=2)
    assert report.unreadable == {"old": 2}
    assert report.after == {"new": 4, "old": 2}
    assert report.unused_keys == []
    async with db.session() as s:
        cred = await s.get(Credential, c)
        assert cred and envelope_key_id(cred.access_token) == "new"


async def _store_verifier(db: Database, vault: Vault, discord_id: int, verifier: str) -> str:
    """A sign-in state whose PKCE verifier is encrypted under ``vault``; returns its id."""
    member_id = await MemberService(db).ensure(discord_id)
    now = datetime.now(UTC)
    async with db.transaction() as s:
        member = await s.get(Member, member_id)
        assert member is not None
        link = ConnectLink(
            token_hash=hashlib.sha256(f"link {discord_id}".encode()).hexdigest(),
            member_id=member_id,
            broker="tradestation",
            environment="live",
            created_at=now,
            expires_at=now + timedelta(minutes=10),
        )
        s.add(link)
        await s.flush()
        row = OAuthState(
            state_hash=hashlib.sha256(f"state {discord_id}".encode()).hexdigest(),
            kind="broker",
            link_id=link.id,
            member_id=member_id,
            broker="tradestation",
            browser_hash="c" * 64,
            created_at=now,
            expires_at=now + timedelta(minutes=10),
        )
        s.add(row)
        await s.flush()
        row.code_verifier = vault.encrypt(verifier, verifier_binding(row, member))
        return row.id


async def test_req12_rotation_does_not_call_a_key_removable_while_rows_reference_it(
    db: Database,
) -> None:
    old, new = parse_keys(generate_key_spec("old")), parse_keys(generate_key_spec("new"))
    await _store(db, Vault(old), 1)
    state_ids = [await _store_verifier(db, Vault(old), i, f"verifier-{i}" * 8) for i in (2, 3, 4)]
    report = await rotate_keys(db, Vault(new + old), batch=2)  # several batches
    async with db.session() as s:
        for i, state_id in zip((2, 3, 4), state_ids, strict=True):
            row = await s.get(OAuthState, state_id)
            assert row is not None and row.code_verifier is not None
            member = await s.get(Member, row.member_id)
            assert member is not None
            # Under the primary now: the new key alone opens it.
            assert envelope_key_id(row.code_verifier) == "new"
            assert Vault(new).decrypt(row.code_verifier, verifier_binding(row, member)) == (
                f"verifier-{i}" * 8
            )
    assert report.rows == {"credentials": 1, "oauth_states": 3}
    assert (report.before, report.after) == ({"old": 5}, {"new": 5})
    assert report.unused_keys == ["old"]


async def test_req12_a_process_will_not_start_without_a_key_its_rows_still_use(
    db: Database, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Removing a key that tokens are still encrypted under made every member behind them
    link again, found one by one as each used their connection. Now the start says so."""
    old_line, new_line = generate_key_spec("old"), generate_key_spec("new")
    await _store(db, Vault(parse_keys(old_line)), 1)

    def with_keys(line: str) -> Settings:
        given = {k: v for k, v in settings.model_dump().items() if v is not None}
        return load_settings(**(given | {"tradecord_keys": line}))

    with pytest.raises(ConfigurationError) as refused:
        await open_core(with_keys(new_line))
    assert "encrypted under keys it no longer holds (2 under key old)" in str(refused.value)
    caplog.set_level(logging.INFO, "tradecord.roles")
    core = await open_core(with_keys(f"{new_line},{old_line}"))
    await core.close()
    assert "Encryption keys in use: new (primary): 0, old: 2" in caplog.text


async def test_tokens_under_local_modes_key_say_where_that_key_is(
    db: Database, settings: Settings
) -> None:
    """Local mode tried in the data directory, then a real start with TRADECORD_KEYS: the
    refusal named a key "local" nobody was given. It now says whose it is and what to do."""
    await _store(db, Vault(parse_keys(generate_key_spec("local"))), 1)
    given = {k: v for k, v in settings.model_dump().items() if v is not None}
    with pytest.raises(ConfigurationError) as refused:
        await open_core(load_settings(**(given | {"tradecord_keys": generate_key_spec("prod")})))
    message = str(refused.value)
    assert "(2 under key local)" in message
    assert "Key local is local mode's, in tradecord.key of the data directory" in message
    assert "give a real deployment a fresh TRADECORD_DATA_DIR or DATABASE_URL" in message
