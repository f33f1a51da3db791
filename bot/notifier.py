"""Delivering service messages to Discord over its REST API (discord.py's HTTP client).

Works in any process that has the bot token, with or without a gateway connection, so a web
or worker process never needs a bot process's memory to reach a member.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import discord
from discord.http import HTTPClient, handle_message_parameters

from bot.services.notify import ChannelUnavailable, Outgoing, buttons_of, closed_card

log = logging.getLogger("tradecord.notifier")

# How far back close_dm_card looks for a card (Discord's largest page of history): a card with
# more DMs after it than this is left as it is; its buttons still answer when pressed.
RECENT_DMS = 100
UNKNOWN_MEMBER = 10007  # Discord's JSON error code


class DiscordNotifier:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http
        # DM channel ids: a cache that saves a call, rebuilt from Discord after a restart.
        self._dm_channels: dict[int, int] = {}

    async def dm(self, discord_user_id: int, message: Outgoing) -> None:
        await self._send(await self._dm_channel(discord_user_id), message)

    async def close_dm_card(
        self, discord_user_id: int, custom_ids: Collection[str], outcome: str
    ) -> bool:
        channel_id = await self._dm_channel(discord_user_id)
        wanted = set(custom_ids)
        for data in await self.http.logs_from(channel_id, RECENT_DMS):
            if not buttons_of(list(data.get("components") or [])) & wanted:
                continue
            with handle_message_parameters(
                content=closed_card(data.get("content") or "", outcome),
                allowed_mentions=discord.AllowedMentions.none(),
            ) as params:
                if params.payload is not None:
                    params.payload["components"] = []  # an empty list removes the buttons
                await self.http.edit_message(channel_id, int(data["id"]), params=params)
            return True
        return False

    async def member_roles(self, guild_id: int, discord_user_id: int) -> frozenset[int] | None:
        # One member at a time works without the privileged Server Members intent.
        try:
            data = await self.http.get_member(guild_id, discord_user_id)
        except discord.NotFound as e:
            if e.code == UNKNOWN_MEMBER:
                return None
            raise  # Unknown Guild: the bot left it, which says nothing of the member
        return frozenset({guild_id, *(int(r) for r in data.get("roles") or [])})

    async def guild_name(self, guild_id: int) -> str | None:
        try:
            return str((await self.http.get_guild(guild_id))["name"])
        except discord.HTTPException:
            return None

    async def _dm_channel(self, discord_user_id: int) -> int:
        channel_id = self._dm_channels.get(discord_user_id)
        if channel_id is None:
            data = await self.http.start_private_message(discord_user_id)
            channel_id = self._dm_channels[discord_user_id] = int(data["id"])
        return channel_id

    async def post(self, channel_id: int, message: Outgoing) -> None:
        try:
            await self._send(channel_id, message)
        except (discord.Forbidden, discord.NotFound) as e:
            # Deleted, or no longer visible or writable to the bot: the services tell someone.
            raise ChannelUnavailable(f"channel {channel_id}: {e.code}") from e

    async def _send(self, channel_id: int, message: Outgoing) -> None:
        embeds = [discord.Embed.from_dict(e) for e in message.embeds]
        with handle_message_parameters(
            content=message.content,
            embeds=embeds or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions.none(),
        ) as params:
            if message.components and params.payload is not None:
                params.payload["components"] = message.components
            await self.http.send_message(channel_id, params=params)
