"""/accounts: the member's connections and the accounts chosen for each."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from adapters.models import AccountType
from bot.brokers import broker_catalog, connect_command
from bot.client import Tradecord
from bot.components import account_menus, no_accounts_text
from bot.models import Connection, ConnectionStatus
from bot.services.connections import linked_modes
from cogs.ui import broker_connection_names, in_time, reply

STATUS_TEXT = {
    ConnectionStatus.ACTIVE: "✅ active",
    ConnectionStatus.NEEDS_ACCOUNT: "⚠️ choose an account to trade",
}


def connection_field(conn: Connection, broker_name: str) -> tuple[str, str]:
    live, paper = conn.account("live"), conn.account("paper")
    # The /connect that repairs it, as the other re-link messages name it.
    status = (
        f"⛔ needs re-linking: {connect_command(conn.broker)}"
        if conn.status == ConnectionStatus.NEEDS_REAUTH
        else STATUS_TEXT.get(conn.status, conn.status)
    )
    lines = [
        f"Broker: {broker_name}",
        f"Status: {status}",
        f"Live account: {f'{live.label} ({live.account_type})' if live else '—'}",
        f"Paper account: {f'{paper.label} ({paper.account_type})' if paper else '—'}",
    ]
    return conn.name, "\n".join(lines)


SHOWN_CONNECTIONS = 12  # fields of a few lines each: well inside the embed's 6,000


def _lines(names: list[str], prefix: str, limit: int = 700) -> str:
    """One line per name, cut with "… and N more" to fit a field."""
    out: list[str] = []
    for i, name in enumerate(names):
        line = f"{prefix}{name}"
        if sum(len(x) + 1 for x in out) + len(line) > limit:
            return "\n".join([*out, f"… and {len(names) - i} more"])
        out.append(line)
    return "\n".join(out)


class Accounts(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot

    @app_commands.command(name="accounts", description="Your connections; choose their accounts")
    @app_commands.describe(connection="Choose the live and paper account of this connection")
    @app_commands.autocomplete(connection=broker_connection_names)
    async def accounts(
        self, interaction: discord.Interaction, connection: str | None = None
    ) -> None:
        if connection:
            await self.choose(interaction, connection)
            return
        member = await self.bot.core.members.get_with_connections(interaction.user.id)
        names = {b.key: b.name for b in broker_catalog(self.bot.settings)}
        embed = discord.Embed(title="Your connections", colour=0x5865F2)
        # Discord takes 25 fields of 1,024 characters in 6,000 in all: a pro plan's 25
        # connections (and Tradecord Paper) do not all fit, so the rest are named.
        shown = member.connections[:SHOWN_CONNECTIONS]
        for conn in shown:
            name, value = connection_field(conn, names.get(conn.broker, conn.broker))
            embed.add_field(name=name, value=value, inline=False)
        rest = member.connections[SHOWN_CONNECTIONS:]
        if rest:
            embed.add_field(
                name=f"And {len(rest)} more",
                value=_lines([c.name for c in rest], "")
                + "\n/accounts connection:<name> shows one.",
                inline=False,
            )
        waiting = [c.name for c in member.connections if c.status == ConnectionStatus.NEEDS_ACCOUNT]
        if waiting:
            embed.add_field(
                name="Trading is off until you choose an account",
                value=_lines(waiting, "/accounts connection:"),
                inline=False,
            )
        embed.set_footer(text="Link a broker with /connect · rename with /rename")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    async def choose(self, interaction: discord.Interaction, connection: str) -> None:
        from cogs.connections import menus_view

        conn, accounts = await in_time(
            interaction,
            self.bot.core.connections.broker_accounts(interaction.user.id, connection),
            ephemeral=True,
        )
        if conn.builtin:
            await reply(
                interaction,
                content="Tradecord Paper has one paper account, already chosen.",
                ephemeral=True,
            )
            return
        rows = account_menus(conn, accounts, await self.bot.core.connections.held_elsewhere(conn))
        if not rows:
            await reply(
                interaction,
                content=no_accounts_text(conn.name),
                ephemeral=True,
            )
            return
        # Only the modes this login was linked for: a paper-only link has no live menu.
        modes = [m for m in ("live", "paper") if m in linked_modes(conn)]
        chosen = "; ".join(
            f"{m} in: {a.label if (a := conn.account(m)) else 'no account yet'}" for m in modes
        )
        only = f" (linked for {modes[0]} only)" if len(modes) == 1 else ""
        # Said only where it can be got wrong: a login that has futures accounts.
        futures = any(a.type is AccountType.FUTURES for a in accounts)
        await reply(
            interaction,
            content=f"**{conn.name}** trades {chosen}{only}. Choose below."
            + (" Futures trade only in a futures account." if futures else ""),
            view=menus_view(rows),
            ephemeral=True,
        )


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(Accounts(bot))
