"""Token vault: AES-256-GCM envelopes bound to the row they belong to.

Envelope (ASCII, stored in a text column): ``tc1.<key_id>.<nonce b64url>.<ciphertext b64url>``.
The key id travels with the ciphertext so rotation never depends on key-list order, and the
associated data names table, column, row, member and broker: a ciphertext copied into another
row or column fails with ``InvalidTag`` instead of decrypting as someone else's token.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.settings import KeySpec, parse_keys

ENVELOPE_VERSION = "tc1"
KEY_FILE_NAME = "tradecord.key"


class VaultError(Exception):
    """A ciphertext could not be opened: unknown key id, tampering, or a moved ciphertext."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What a ciphertext is bound to (the AES-GCM associated data)."""

    table: str
    column: str
    row_id: int | str
    discord_user_id: int
    broker: str

    def aad(self) -> bytes:
        return "|".join(
            (
                ENVELOPE_VERSION,
                self.table,
                self.column,
                str(self.row_id),
                str(self.discord_user_id),
                self.broker,
            )
        ).encode()


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key_spec(key_id: str | None = None) -> str:
    """A new ``key_id:base64key`` entry for ``TRADECORD_KEYS``."""
    kid = key_id or f"k{secrets.token_hex(4)}"
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def envelope_key_id(envelope: str) -> str:
    parts = envelope.split(".")
    if len(parts) != 4 or parts[0] != ENVELOPE_VERSION:
        raise VaultError("not a Tradecord ciphertext")
    return parts[1]


class Vault:
    """Encrypts under the first key; decrypts under any key it holds."""

    def __init__(self, keys: Iterable[KeySpec]) -> None:
        specs = list(keys)
        if not specs:
            raise ValueError("a vault needs at least one key")
        self.primary_key_id = specs[0].key_id
        self._ciphers = {s.key_id: AESGCM(s.key) for s in specs}
        self.key_ids = [s.key_id for s in specs]

    def encrypt(self, plaintext: str, binding: Binding) -> str:
        nonce = os.urandom(12)
        ct = self._ciphers[self.primary_key_id].encrypt(nonce, plaintext.encode(), binding.aad())
        return ".".join((ENVELOPE_VERSION, self.primary_key_id, _b64e(nonce), _b64e(ct)))

    def decrypt(self, envelope: str, binding: Binding) -> str:
        key_id = envelope_key_id(envelope)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise VaultError(f"ciphertext was made with key {key_id!r}, which is not configured")
        _, _, nonce, ct = envelope.split(".")
        try:
            return cipher.decrypt(_b64d(nonce), _b64d(ct), binding.aad()).decode()
        except (InvalidTag, ValueError):
            # ValueError: base64 cut short or a nonce of the wrong length (a truncated column).
            # Callers handle VaultError alone; any other error stopped key rotation at this row.
            raise VaultError("ciphertext does not belong to this row or was altered") from None

    def needs_rewrap(self, envelope: str) -> bool:
        return envelope_key_id(envelope) != self.primary_key_id


LOCAL_KEY_ID = "local"  # the id of local mode's key, so a refusal can say whose it is


def load_or_create_local_key(data_dir: Path) -> tuple[list[KeySpec], bool]:
    """Local mode only: read ``data_dir/tradecord.key`` or create it with mode 0600.

    Returns the keys and whether the file was created now.
    """
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise VaultError(f"{path} must be readable by its owner only (chmod 600 {path})")
        return parse_keys(path.read_text().strip()), False
    data_dir.mkdir(parents=True, exist_ok=True)
    line = generate_key_spec(LOCAL_KEY_ID)
    # Written whole under another name, then linked into place: a start killed (or out of
    # disk) mid-write left an empty key file that every later start refused for good.
    fd, tmp = tempfile.mkstemp(prefix=f".{KEY_FILE_NAME}.", dir=data_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails, unlike a rename, if another process made one first
        except FileExistsError:
            return parse_keys(path.read_text().strip()), False
        except OSError:  # a file system without hard links: no other start to race there
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return parse_keys(line), True
