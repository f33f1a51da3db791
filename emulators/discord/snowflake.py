"""Discord snowflakes and timestamps."""

from __future__ import annotations

import datetime
import time

DISCORD_EPOCH_MS = 1420070400000


class SnowflakeGenerator:
    """Monotonic snowflakes with Discord's layout (ms since 2015 << 22 | worker | process | inc).

    Ids must be strictly increasing: discord.py sorts and compares them, and the embedded
    timestamp is what ``created_at`` (and an interaction's expiry) is computed from.
    """

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._prefix = ((worker & 0x1F) << 17) | ((process & 0x1F) << 12)
        self._last_ms = 0
        self._inc = 0

    def next(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        if ms <= self._last_ms:
            ms = self._last_ms
            self._inc += 1
            if self._inc > 0xFFF:
                ms += 1
                self._inc = 0
        else:
            self._inc = 0
        self._last_ms = ms
        return (ms << 22) | self._prefix | self._inc


def snowflake_time(snowflake: int) -> datetime.datetime:
    ms = (snowflake >> 22) + DISCORD_EPOCH_MS
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


def iso(dt: datetime.datetime | None = None) -> str:
    """Discord's timestamp format: ``2024-05-01T12:00:00.123000+00:00``."""
    return (dt or datetime.datetime.now(datetime.UTC)).isoformat(timespec="microseconds")


def one_per_shard(count: int) -> list[int]:
    """``count`` guild ids, a month old, whose shard (Discord's ``(id >> 22) % count``) is
    0, 1, ... count-1 in that order: a sharded deployment with one guild on each shard."""
    base_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS - 30 * 86_400_000
    ids = []
    for shard in range(count):
        ms = base_ms + shard * 1000
        ms += (shard - ms) % count
        ids.append(ms << 22)
    return ids
