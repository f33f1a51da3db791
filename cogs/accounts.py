"""/accounts: the member's connections and the accounts chosen for each."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.brokers import broker_catalog
from bot.client import Tradecord
from bot.models import Connection, ConnectionStatus

STATUS_TEXT = {
    ConnectionStatus.ACTIVE: "✅ active",
    ConnectionStatus.NEEDS_ACCOUNT: "⚠️ choose an account to trade",
    ConnectionStatus.NEEDS_REAUTH: "⛔ needs re-linking (/connect)",
}


def connection_field(conn: Connection, broker_name: str) -> tuple[str, str]:
    live, paper = conn.account("live"), conn.account("paper")
    lines = [
        f"Broker: {broker_name}",
        f"Status: {STATUS_TEXT.get(conn.status, conn.status)}",
        f"Live account: {f'{live.label} ({live.account_type})' if live else '—'}",
        f"Paper account: {f'{paper.label} ({paper.account_type})' if paper else '—'}",
    ]
    return conn.name, "\n".join(lines)


class Accounts(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot

    @app_commands.command(name="accounts", description="Your broker connections and their accounts")
    async def accounts(self, interaction: discord.Interaction) -> None:
        member = await self.bot.core.members.get_with_connections(interaction.user.id)
        names = {b.key: b.name for b in broker_catalog(self.bot.settings)}
        embed = discord.Embed(title="Your connections", colour=0x5865F2)
        for conn in member.connections:
            name, value = connection_field(conn, names.get(conn.broker, conn.broker))
            embed.add_field(name=name, value=value, inline=False)
        embed.set_footer(text="Link a broker with /connect · rename with /rename")
        await interaction.response.send_message(embed=embed, ephemeral=True)


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(Accounts(bot))
