from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bot.settings import parse_keys
from bot.vault import (
    Binding,
    Vault,
    VaultError,
    envelope_key_id,
    generate_key_spec,
    load_or_create_local_key,
)

B = Binding("credentials", "access_token", 7, 1111, "tradestation")


def test_round_trip_and_envelope_shape(vault: Vault) -> None:
    env = vault.encrypt("secret-token", B)
    assert env.startswith("tc1.test.")
    assert "secret-token" not in env
    assert vault.decrypt(env, B) == "secret-token"


def test_nonces_differ(vault: Vault) -> None:
    assert vault.encrypt("x", B) != vault.encrypt("x", B)


@pytest.mark.parametrize(
    "other",
    [
        Binding("credentials", "access_token", 8, 1111, "tradestation"),  # another row
        Binding("credentials", "refresh_token", 7, 1111, "tradestation"),  # another column
        Binding("credentials", "access_token", 7, 2222, "tradestation"),  # another member
        Binding("credentials", "access_token", 7, 1111, "alpaca"),  # another broker
        Binding("other_table", "access_token", 7, 1111, "tradestation"),
    ],
)
def test_ciphertext_moved_elsewhere_fails(vault: Vault, other: Binding) -> None:
    env = vault.encrypt("secret-token", B)
    with pytest.raises(VaultError, match="does not belong"):
        vault.decrypt(env, other)


def test_tampered_ciphertext_fails(vault: Vault) -> None:
    env = vault.encrypt("secret-token", B)
    head, ct = env.rsplit(".", 1)
    flipped = ct[:-2] + ("A" if ct[-2] != "A" else "B") + ct[-1]
    with pytest.raises(VaultError):
        vault.decrypt(f"{head}.{flipped}", B)


def test_first_key_encrypts_all_decrypt() -> None:
    old = parse_keys(generate_key_spec("old"))
    new = parse_keys(generate_key_spec("new"))
    env_old = Vault(old).encrypt("t", B)
    ring = Vault(new + old)
    assert ring.decrypt(env_old, B) == "t"
    assert ring.needs_rewrap(env_old)
    assert envelope_key_id(ring.encrypt("t", B)) == "new"
    with pytest.raises(VaultError, match="not configured"):
        Vault(new).decrypt(env_old, B)


def test_local_key_file_created_private(tmp_path: Path) -> None:
    keys, created = load_or_create_local_key(tmp_path / "data")
    assert created and keys[0].key_id == "local"
    path = tmp_path / "data" / "tradecord.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = load_or_create_local_key(tmp_path / "data")
    assert not created_again and again[0].key == keys[0].key


def test_local_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_local_key(tmp_path)
    os.chmod(tmp_path / "tradecord.key", 0o644)
    with pytest.raises(VaultError, match="chmod 600"):
        load_or_create_local_key(tmp_path)


def test_key_repr_hides_material() -> None:
    spec = parse_keys(generate_key_spec("k1"))[0]
    assert "k1" in repr(spec) and spec.key.hex() not in repr(spec)


@pytest.mark.parametrize(
    "mangled",
    [
        "tc1.test.!!!!.AAAA",  # not base64 at all
        "tc1.test.AAAA.AAAAAAAAAAAAAAAAAAAAAAAA",  # a nonce of 3 bytes, not 12
        "tc1.test.A.AAAA",  # base64 cut off mid-character
    ],
)
def test_mangled_ciphertext_is_a_vault_error(vault: Vault, mangled: str) -> None:
    # Callers (token use, key rotation) treat VaultError as "cannot be read: link again" and
    # go on; a ValueError escaping instead stopped rotation at that row on every run.
    with pytest.raises(VaultError, match="does not belong"):
        vault.decrypt(mangled, B)


def test_local_key_file_never_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A start killed (or out of disk) while writing the key left an empty tradecord.key, and
    # every later start refused it with "restore it from a backup" though none existed.
    def failing_fdopen(*args: object, **kwargs: object) -> object:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(OSError):
        load_or_create_local_key(tmp_path / "data")
    monkeypatch.undo()
    assert not (tmp_path / "data" / "tradecord.key").exists()
    assert os.listdir(tmp_path / "data") == []
    keys, created = load_or_create_local_key(tmp_path / "data")
    assert created and keys[0].key_id == "local"
