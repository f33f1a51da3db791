"""Pre-trade controls: /killswitch (the bot owner's), /pause and /resume, /limits.

Thin: the trading service enforces all of these as each order is sent; here they are only
set and shown. Replies are private: a member's limits are their own business.
"""

from __future__ import annotations

from typing import Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import Tradecord
from bot.errors import InvalidInput, PermissionDenied
from bot.services.limits import (
    LIMIT_NAMES,
    KillSwitch,
    MemberLimits,
    StrategyLimits,
    describe_limit,
    limit_label,
    limit_value,
    parse_limit,
)
from bot.wording import qty
from cogs.ui import OK_COLOUR, owned_strategy_names

STOPPED_COLOUR = discord.Colour.red()


def killswitch_text(state: KillSwitch, changed: bool) -> str:
    if state.on:
        head = "🛑 Kill switch is **ON**" + (" now" if changed else "")
        body = (
            ": every new order, manual or from signals, is refused before it reaches a "
            "broker, in every Tradecord process. Cancelling orders still works. "
            "`/killswitch state:off` lets trading resume."
        )
    else:
        head = "✅ Kill switch is **off**" + (" now" if changed else "")
        body = ": trading is allowed (members' own pauses and limits still apply)."
    when = (
        f"\nLast changed {discord.utils.format_dt(state.changed_at, 'R')} by <@{state.changed_by}>."
        if state.changed_at is not None and state.changed_by is not None
        else ""
    )
    return head + body + when


def limits_embed(m: MemberLimits, *, changed: bool = False, stopped: bool = False) -> discord.Embed:
    """``stopped``: the owner's kill switch is on, which holds back every order whatever
    these limits say; the member checking why theirs are refused must read it here."""
    description = (
        "⏸️ **Your trading is paused** until you run /resume: no strategy signal trades for "
        "you, and only your own orders that close a position are sent."
        if m.paused
        else "The stricter of yours and the server's applies, checked as each order is "
        "sent (manual trades and strategy signals alike)."
    )
    if stopped:
        description = (
            "🛑 **The bot owner's kill switch is on**: no new order is sent for anyone until "
            f"they turn it off.\n{description}"
        )
    embed = discord.Embed(
        title="Your trading limits" + (" saved" if changed else ""),
        description=description,
        colour=OK_COLOUR if changed else discord.Colour.blurple(),
    )
    # One field a limit, one short line a value: a phone stacks fields, and three columns of
    # "max notional per order: $1,500,000.00" wrapped mid-phrase there.
    for name in LIMIT_NAMES:
        embed.add_field(
            name=limit_label(name).capitalize(),
            value=f"Applied: **{limit_value(name, getattr(m.effective, name))}**\n"
            f"Yours: {limit_value(name, getattr(m.own, name))}\n"
            f"Server: {limit_value(name, getattr(m.server, name))}",
            inline=False,
        )
    embed.set_footer(
        text="Per day: orders sent since 00:00 UTC, paper and live counted apart, except "
        "rejected or failed ones, orders that only closed a position, and the unfilled part "
        "of cancelled or expired ones.\n"
        "Change yours with /limits set (0 removes one; you cannot go above the server's)."
    )
    return embed


def strategy_text(s: StrategyLimits, changed: bool) -> str:
    most = "no limit" if s.max_quantity is None else qty(s.max_quantity)
    return (
        f"{'Saved. ' if changed else ''}Limits of “{discord.utils.escape_markdown(s.name)}”, "
        "per subscriber, on the entries its signals place:\n"
        f"max quantity per order: {most} (set with /strategy settings)\n"
        f"{describe_limit('max_order_notional', s.max_order_notional)}\n"
        f"{describe_limit('max_daily_notional', s.max_daily_notional)}"
    )


class PretradeControls(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot

    @app_commands.command(
        name="killswitch", description="Stop or allow all trading for everyone (bot owner)"
    )
    @app_commands.describe(state="on: refuse every new order; off: allow trading; status")
    async def killswitch(
        self, interaction: discord.Interaction, state: Literal["on", "off", "status"]
    ) -> None:
        # Checked at run time, not by command permissions: server admins can override those,
        # and this switch stops every member of every server.
        if not await self.bot.is_owner(interaction.user):
            raise PermissionDenied(
                "Only the bot's owner can use the kill switch. To stop your own trading, "
                "strategy signals included, run /pause."
            )
        limits = self.bot.core.limits
        if state == "status":
            current = await limits.kill_switch()
            changed = False
        else:
            current = await limits.set_kill_switch(state == "on", by=interaction.user.id)
            changed = True
        await interaction.response.send_message(
            killswitch_text(current, changed),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="pause", description="Pause all your trading, signals included")
    async def pause(self, interaction: discord.Interaction) -> None:
        changed = await self.bot.core.limits.pause(interaction.user.id)
        await interaction.response.send_message(
            ("⏸️ Your trading is paused" if changed else "⏸️ Your trading was already paused")
            + ": no strategy signal trades for you (exits included), and no order of yours "
            "that adds risk is sent. Orders that only close a position still go (/close, "
            "/flatten), open orders stay open and /cancel still works. Run /resume to trade "
            "again.",
            ephemeral=True,
        )

    @app_commands.command(name="resume", description="Resume your trading after /pause")
    async def resume(self, interaction: discord.Interaction) -> None:
        limits = self.bot.core.limits
        changed = await limits.resume(interaction.user.id)
        text = (
            "▶️ Your trading is resumed: new orders are sent again (within your /limits)."
            if changed
            else "Your trading was not paused; nothing changed."
        )
        # "Sent again" would be false while the owner's switch stops every order.
        if (await limits.kill_switch()).on:
            text = (
                ("▶️ Your pause is lifted" if changed else "Your trading was not paused")
                + ", but the bot owner's kill switch is on: no new order is sent for anyone "
                "until they turn it off. Cancelling open orders still works."
            )
        await interaction.response.send_message(text, ephemeral=True)

    limits = app_commands.Group(name="limits", description="Your pre-trade limits")

    @limits.command(name="show", description="Your limits per order and per day")
    async def limits_show(self, interaction: discord.Interaction) -> None:
        limits = self.bot.core.limits
        result = await limits.member_limits(interaction.user.id)
        stopped = (await limits.kill_switch()).on
        await interaction.response.send_message(
            embed=limits_embed(result, stopped=stopped), ephemeral=True
        )

    @limits.command(name="set", description="Set your own, stricter limits (0 removes one)")
    @app_commands.describe(
        max_order_quantity="Largest quantity of one order (0: none of your own)",
        max_order_notional="Largest USD value of one order (0: none of your own)",
        max_daily_notional="Largest USD value sent per UTC day (0: none of your own)",
    )
    async def limits_set(
        self,
        interaction: discord.Interaction,
        max_order_quantity: str | None = None,
        max_order_notional: str | None = None,
        max_daily_notional: str | None = None,
    ) -> None:
        given = {
            "max_order_quantity": max_order_quantity,
            "max_order_notional": max_order_notional,
            "max_daily_notional": max_daily_notional,
        }
        changes = {n: parse_limit(text, n) for n, text in given.items() if text is not None}
        if not changes:
            raise InvalidInput(
                "Give at least one limit, e.g. /limits set max_order_notional:5000. "
                "See yours with /limits show."
            )
        limits = self.bot.core.limits
        result = await limits.set_member_limits(interaction.user.id, changes)
        stopped = (await limits.kill_switch()).on
        await interaction.response.send_message(
            embed=limits_embed(result, changed=True, stopped=stopped), ephemeral=True
        )

    @limits.command(name="strategy", description="A strategy's notional limits (its owner)")
    @app_commands.describe(
        strategy="Your strategy",
        max_order_notional="Largest USD value of one entry per subscriber (0: no limit)",
        max_daily_notional="Largest USD value of entries per subscriber per UTC day (0: none)",
    )
    @app_commands.autocomplete(strategy=owned_strategy_names)
    async def limits_strategy(
        self,
        interaction: discord.Interaction,
        strategy: str,
        max_order_notional: str | None = None,
        max_daily_notional: str | None = None,
    ) -> None:
        # Discord offers a subcommand wherever its group is, DMs included: guild_only() on
        # one is ignored, so this is checked here.
        if interaction.guild_id is None:
            raise InvalidInput(
                "Strategies belong to a server: run /limits strategy in a channel of the "
                "server where the strategy was created."
            )
        service = self.bot.core.limits
        changes = {
            name: parse_limit(text, name)
            for name, text in (
                ("max_order_notional", max_order_notional),
                ("max_daily_notional", max_daily_notional),
            )
            if text is not None
        }
        if changes:
            result = await service.set_strategy_limits(
                interaction.guild_id, interaction.user.id, strategy, changes
            )
        else:
            result = await service.strategy_limits(
                interaction.guild_id, interaction.user.id, strategy
            )
        await interaction.response.send_message(
            strategy_text(result, bool(changes)),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(PretradeControls(bot))
