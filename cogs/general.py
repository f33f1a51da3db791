"""/help: what Tradecord does, every command, and which brokers this server offers."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.brokers import broker_catalog
from bot.client import Tradecord
from cogs.ui import answer_expired

ABOUT = (
    "Tradecord connects your brokerage accounts to Discord so you can check them and trade "
    "from here. Every member starts with **Tradecord Paper**, a practice account with "
    "simulated money. Link a real broker with `/connect`; Tradecord can read balances, "
    "positions and orders, and place, change and cancel orders. It never moves money in or out."
)


def _walk(commands_: list[app_commands.Command | app_commands.Group]) -> list[str]:
    lines: list[str] = []
    for cmd in sorted(commands_, key=lambda c: c.name):
        if isinstance(cmd, app_commands.Group):
            lines.extend(_walk(list(cmd.commands)))
        else:
            lines.append(f"`/{cmd.qualified_name}` — {cmd.description}")
    return lines


class General(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot
        self._help: discord.Embed | None = None

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        await answer_expired(interaction)

    def help_embed(self) -> discord.Embed:
        # Commands and settings do not change while the bot runs: build once.
        if self._help is None:
            embed = discord.Embed(title="Tradecord", description=ABOUT, colour=0x5865F2)
            cmds = [
                c
                for c in self.bot.tree.get_commands()
                if isinstance(c, app_commands.Command | app_commands.Group)
            ]
            text = "\n".join(_walk(cmds))
            for i, chunk in enumerate(_chunks(text.splitlines(), 1000)):
                embed.add_field(name="Commands" if i == 0 else "\u200b", value=chunk, inline=False)
            catalog = broker_catalog(self.bot.settings)
            available = [b.name for b in catalog if b.configured]
            missing = [b.name for b in catalog if not b.configured]
            embed.add_field(name="Brokers available", value=", ".join(available), inline=False)
            if missing:
                embed.add_field(
                    name="Not configured on this server",
                    value=", ".join(missing)
                    + "\n(the bot's owner enables them by setting their client ids)",
                    inline=False,
                )
            # share:true posts a summary in the channel: "only visible to you" alone was false.
            embed.set_footer(
                text="Replies about your accounts are only visible to you, unless you add "
                "share:true to /positions, /balances, /orders, /history or /quote (a summary "
                "without account numbers, amounts only with show_amounts:true)."
            )
            self._help = embed
        return self._help

    @app_commands.command(name="help", description="What Tradecord does and every command")
    async def help(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=self.help_embed(), ephemeral=True)


def _chunks(lines: list[str], limit: int) -> list[str]:
    out: list[str] = []
    current = ""
    for line in lines:
        if current and len(current) + len(line) + 1 > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(General(bot))
