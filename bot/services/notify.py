"""How services reach members and channels without knowing Discord.

Services hand an ``Outgoing`` message to the ``Notifier`` the process was given: the bot
process posts through its own REST client; web and worker processes through Discord's REST
API as well, never through another process's memory.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("tradecord.notify")


@dataclass(slots=True)
class Outgoing:
    content: str | None = None
    embeds: list[dict[str, Any]] = field(default_factory=list)  # Discord embed JSON
    # Discord component JSON (action rows). Buttons carry ``tc:`` custom ids that the bot's
    # dynamic items handle, so a click works whichever bot process receives it.
    components: list[dict[str, Any]] = field(default_factory=list)


class ChannelUnavailable(Exception):
    """A channel refuses Tradecord's posts until someone acts: it was deleted, or Tradecord
    may no longer see it or post in it. Unlike a passing failure (Discord down, a rate limit),
    retrying will not help."""


def buttons_of(components: list[dict[str, Any]]) -> set[str]:
    """The custom ids of the buttons in a message's action rows."""
    return {
        str(c["custom_id"])
        for row in components
        for c in row.get("components") or []
        if c.get("custom_id")
    }


def closed_card(content: str, outcome: str) -> str:
    """A card whose question has ended: its text, then the outcome (within Discord's 2000)."""
    return f"{content}\n\n**{outcome}**"[-2000:]


class Notifier(Protocol):
    async def dm(self, discord_user_id: int, message: Outgoing) -> None: ...

    async def post(self, channel_id: int, message: Outgoing) -> None: ...

    async def close_dm_card(
        self, discord_user_id: int, custom_ids: Collection[str], outcome: str
    ) -> bool:
        """Take the buttons off the member's recent DM that carries one of ``custom_ids`` and
        add ``outcome`` below its text; False when none of their recent DMs carries them."""

    async def member_roles(self, guild_id: int, discord_user_id: int) -> frozenset[int] | None:
        """The member's roles in the guild, its @everyone (the guild's id) included; None when
        they are not a member. Raises when Discord cannot say: not knowing is not gone."""

    async def guild_name(self, guild_id: int) -> str | None:
        """The guild's name, for a DM that names it; None when Discord cannot say."""


async def dm_quietly(
    notifier: Notifier | None, discord_user_id: int, message: Outgoing, *, about: str
) -> None:
    """A DM that is news, not the outcome of anything: the work it reports is done whether it
    arrives or not, so a member who refuses DMs (or Discord away) only costs a log line."""
    if notifier is None:
        return
    try:
        await notifier.dm(discord_user_id, message)
    except Exception:
        log.warning("Could not DM a member about %s", about, exc_info=True)


class RecordingNotifier:
    """Keeps what would have been sent; for processes with no Discord and for tests."""

    def __init__(self) -> None:
        self.dms: list[tuple[int, Outgoing]] = []
        self.posts: list[tuple[int, Outgoing]] = []
        self.unavailable: set[int] = set()  # channels that refuse posts (tests set it)
        # Members' roles per (guild, user), tests set them; a member not in it has none.
        self.roles: dict[tuple[int, int], set[int]] = {}
        self.gone: set[tuple[int, int]] = set()  # (guild, user): not a member
        self.guild_names: dict[int, str] = {}

    async def dm(self, discord_user_id: int, message: Outgoing) -> None:
        self.dms.append((discord_user_id, message))

    async def post(self, channel_id: int, message: Outgoing) -> None:
        if channel_id in self.unavailable:
            raise ChannelUnavailable(f"channel {channel_id}")
        self.posts.append((channel_id, message))

    async def close_dm_card(
        self, discord_user_id: int, custom_ids: Collection[str], outcome: str
    ) -> bool:
        for uid, message in reversed(self.dms):
            if uid == discord_user_id and buttons_of(message.components) & set(custom_ids):
                message.content = closed_card(message.content or "", outcome)
                message.components = []
                return True
        return False

    async def member_roles(self, guild_id: int, discord_user_id: int) -> frozenset[int] | None:
        if (guild_id, discord_user_id) in self.gone:
            return None
        return frozenset({guild_id, *self.roles.get((guild_id, discord_user_id), ())})

    async def guild_name(self, guild_id: int) -> str | None:
        return self.guild_names.get(guild_id)
