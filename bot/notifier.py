"""Delivering service messages to Discord over its REST API (discord.py's HTTP client).

Works in any process that has the bot token, with or without a gateway connection, so a web
or worker process never needs a bot process's memory to reach a member.
"""

from __future__ import annotations

import logging

import discord
from discord.http import HTTPClient, handle_message_parameters

from bot.services.notify import ChannelUnavailable, Outgoing

log = logging.getLogger("tradecord.notifier")


class DiscordNotifier:
    def __init__(self, http: HTTPClient) -> None:
        self.http = http
        # DM channel ids: a cache that saves a call, rebuilt from Discord after a restart.
        self._dm_channels: dict[int, int] = {}

    async def dm(self, discord_user_id: int, message: Outgoing) -> None:
        channel_id = self._dm_channels.get(discord_user_id)
        if channel_id is None:
            data = await self.http.start_private_message(discord_user_id)
            channel_id = self._dm_channels[discord_user_id] = int(data["id"])
        await self._send(channel_id, message)

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
