"""Shared Discord UI pieces: views that only their owner can use, and embed helpers."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.client import report_error

PAPER_COLOUR = discord.Colour.blurple()
LIVE_COLOUR = discord.Colour.red()
OK_COLOUR = discord.Colour.green()


async def connection_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the member's connection names containing what they typed."""
    bot: Any = interaction.client
    conns = await bot.core.connections.list_for(interaction.user.id)
    cur = current.casefold()
    return [app_commands.Choice(name=c.name, value=c.name) for c in conns if cur in c.name_key][:25]


async def broker_connection_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete without Tradecord Paper (for renaming, unlinking, choosing accounts)."""
    bot: Any = interaction.client
    builtin = {
        c.name for c in await bot.core.connections.list_for(interaction.user.id) if c.builtin
    }
    return [c for c in await connection_names(interaction, current) if c.name not in builtin]


class OwnedView(discord.ui.View):
    """A view whose components work only for the member who asked for it."""

    def __init__(self, owner_id: int, *, timeout: float | None = 60.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.message: discord.InteractionMessage | discord.WebhookMessage | None = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message(
            "These buttons belong to someone else's command. Run the command yourself to get "
            "your own.",
            ephemeral=True,
        )
        return False

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await report_error(interaction, error)

    def disable_all(self) -> None:
        for child in self.children:
            if isinstance(child, discord.ui.Button | discord.ui.Select):
                child.disabled = True

    async def on_timeout(self) -> None:
        self.disable_all()
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                pass  # the message is gone or no longer ours to edit: nothing to disable
