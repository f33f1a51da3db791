"""Shared Discord UI pieces: views that only their owner can use, and embed helpers."""

from __future__ import annotations

from typing import Any

import discord

from bot.client import report_error

PAPER_COLOUR = discord.Colour.blurple()
LIVE_COLOUR = discord.Colour.red()
OK_COLOUR = discord.Colour.green()


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
                pass
