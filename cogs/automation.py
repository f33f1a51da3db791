"""Automation commands: /strategy, /subscribe, /unsubscribe, /alerts, /signal show, and the
Approve / Reject buttons of signals that wait for their member."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import Tradecord, report_error
from bot.components import APPROVAL_BUTTON
from bot.errors import InvalidInput, PermissionDenied
from bot.services.subscriptions import Sides, Sizing, SubscriptionSettings
from cogs import format as fmt
from cogs.ui import OwnedView, broker_connection_names, connection_names, in_time, reply

SIZING_HELP = {
    "fixed_quantity": "shares/contracts per entry",
    "dollar_amount": "dollars per entry",
    "percent_of_equity": "percent of the account's equity per entry",
    "signal": "multiplier on the signal's own quantity",
}


def guild_of(interaction: discord.Interaction) -> int:
    if interaction.guild_id is None:
        raise InvalidInput("Strategies belong to a server: use this command in one.")
    return interaction.guild_id


def can_manage(interaction: discord.Interaction) -> bool:
    """Checked at run time: server admins can override a command's default permissions."""
    perms = getattr(interaction.user, "guild_permissions", None)
    return bool(perms and (perms.manage_guild or perms.administrator))


class ApprovalButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=APPROVAL_BUTTON):
    def __init__(
        self, action: str, intent_id: str, item: discord.ui.Button[Any] | None = None
    ) -> None:
        super().__init__(
            item
            or discord.ui.Button(label=action.title(), custom_id=f"tc:appr:{action}:{intent_id}")
        )
        self.action, self.intent_id = action, intent_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> ApprovalButton:
        return cls(match["action"], match["intent"], item)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Tradecord = interaction.client  # type: ignore[assignment]
        signals = bot.core.signals
        try:
            run = signals.approve if self.action == "approve" else signals.reject
            result = await run(self.intent_id, interaction.user.id)
        except Exception as e:
            await report_error(interaction, e)
            return
        # The card keeps its text and loses its buttons: it cannot be pressed twice.
        content = (
            f"{interaction.message.content if interaction.message else ''}\n\n**{result.message}**"
        )
        await interaction.response.edit_message(content=content[-2000:], view=None)


class ConfirmDelete(OwnedView):
    def __init__(self, owner_id: int, bot: Tradecord, guild_id: int, strategy: str) -> None:
        super().__init__(owner_id, timeout=60)
        self.bot, self.guild_id, self.strategy = bot, guild_id, strategy

    @discord.ui.button(label="Delete strategy", style=discord.ButtonStyle.danger)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        self.stop()
        await self.bot.core.strategies.delete(self.guild_id, interaction.user.id, self.strategy)
        await interaction.response.edit_message(
            content="Deleted: its webhook URL stops working and its subscriptions end.", view=None
        )

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        self.stop()
        await interaction.response.edit_message(content="Nothing was deleted.", view=None)


def url_message(name: str, url: str, verb: str) -> str:
    return (
        f"{verb} **{name}**. Its webhook URL, shown only now — paste it into the alert's "
        f"webhook field in TradingView and keep it secret:\n`{url}`\n"
        "Lost it? /strategy rotate-secret makes a new one (the old one stops working)."
    )


class Automation(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ApprovalButton)

    async def strategy_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        if interaction.guild_id is None:
            return []
        infos = await self.bot.core.strategies.list(interaction.guild_id, interaction.user.id)
        cur = current.casefold()
        return [
            app_commands.Choice(name=i.name, value=i.name)
            for i in infos
            if cur in i.name.casefold()
        ][:25]

    strategy = app_commands.Group(
        name="strategy", description="Webhook strategies", guild_only=True
    )

    @strategy.command(name="create", description="A new strategy with its own webhook URL")
    @app_commands.describe(name="A name you will recognise (unique in this server)")
    async def create(
        self, interaction: discord.Interaction, name: app_commands.Range[str, 1, 50]
    ) -> None:
        made = await self.bot.core.strategies.create(
            guild_of(interaction), interaction.user.id, name
        )
        await interaction.response.send_message(
            url_message(made.strategy.name, made.url, "Created"), ephemeral=True
        )

    @strategy.command(name="list", description="Strategies you own or that were shared with you")
    async def list_(self, interaction: discord.Interaction) -> None:
        infos = await self.bot.core.strategies.list(guild_of(interaction), interaction.user.id)
        if not infos:
            await interaction.response.send_message(
                "You have no strategies here. Make one with /strategy create.", ephemeral=True
            )
            return
        rows = [
            [
                i.name,
                "owner" if i.is_owner else "shared",
                str(i.subscriptions),
                ", ".join(i.allowed_sources) or "any",
                f"{i.rate_limit_per_minute}/min",
            ]
            for i in infos
        ]
        embed = discord.Embed(
            title="Strategies",
            colour=0x5865F2,
            description=fmt.table(["Name", "You", "Subs", "Sources", "Limit"], rows, {2}),
        )
        embed.set_footer(text="Webhook URLs are shown once; /strategy rotate-secret for a new one")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @strategy.command(name="rotate-secret", description="A new webhook URL; the old one stops")
    @app_commands.autocomplete(strategy=strategy_names)
    async def rotate(self, interaction: discord.Interaction, strategy: str) -> None:
        made = await self.bot.core.strategies.rotate_secret(
            guild_of(interaction), interaction.user.id, strategy
        )
        await interaction.response.send_message(
            url_message(made.strategy.name, made.url, "New secret for"), ephemeral=True
        )

    @strategy.command(name="delete", description="Delete a strategy you own")
    @app_commands.autocomplete(strategy=strategy_names)
    async def delete(self, interaction: discord.Interaction, strategy: str) -> None:
        info = await self.bot.core.strategies.get(
            guild_of(interaction), interaction.user.id, strategy
        )
        if not info.is_owner:
            raise PermissionDenied("Only the strategy's owner can delete it.")
        view = ConfirmDelete(interaction.user.id, self.bot, guild_of(interaction), info.id)
        await interaction.response.send_message(
            f"Delete **{info.name}**? Its {info.subscriptions} subscription(s) end and its "
            "webhook URL stops working.",
            view=view,
            ephemeral=True,
        )
        view.message = await interaction.original_response()

    @strategy.command(name="share", description="Let another member of this server subscribe")
    @app_commands.autocomplete(strategy=strategy_names)
    async def share(
        self, interaction: discord.Interaction, strategy: str, member: discord.Member
    ) -> None:
        info = await self.bot.core.strategies.share(
            guild_of(interaction), interaction.user.id, strategy, member.id
        )
        await interaction.response.send_message(
            f"**{info.name}** is shared with {member.display_name}; they can now /subscribe.",
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(
        name="subscribe", description="Route a strategy's signals to a connection"
    )
    @app_commands.guild_only()
    @app_commands.describe(
        strategy="A strategy you own or that was shared with you",
        connection="Which connection trades it (default: Tradecord Paper)",
        mode="paper (default) or live",
        sizing="How big each entry is",
        sizing_value="The number for the sizing (e.g. 10 shares, 500 dollars, 5 percent)",
        sides="Which entries to take",
        approval="Ask me (by DM) before each order",
        max_positions="TradersPost's max strategy positions (counts every open position)",
    )
    @app_commands.autocomplete(strategy=strategy_names, connection=connection_names)
    async def subscribe(
        self,
        interaction: discord.Interaction,
        strategy: str,
        connection: str | None = None,
        mode: Literal["paper", "live"] = "paper",
        sizing: Literal[
            "fixed_quantity", "dollar_amount", "percent_of_equity", "signal"
        ] = "signal",
        sizing_value: str = "1",
        sides: Literal["both", "long", "short"] = "both",
        approval: bool = False,
        max_positions: app_commands.Range[int, 1, 1000] | None = None,
    ) -> None:
        try:
            value = Decimal(sizing_value.strip())
        except InvalidOperation:
            raise InvalidInput(f"sizing_value must be a number ({SIZING_HELP[sizing]}).") from None
        info = await self.bot.core.subscriptions.subscribe(
            guild_of(interaction),
            interaction.user.id,
            strategy,
            connection=connection,
            mode=mode,
            settings=SubscriptionSettings(
                Sizing(sizing), value, Sides(sides), approval, max_positions=max_positions
            ),
        )
        await interaction.response.send_message(
            f"**{info.connection_name}** ({info.mode}) now trades **{info.strategy_name}**: "
            f"{fmt.qty(info.settings.sizing_value)} {SIZING_HELP[info.settings.sizing.value]}, "
            f"{info.settings.sides.value} side(s)"
            + (
                ", each order waits for your approval by DM"
                if info.settings.manual_approval
                else ", orders are sent automatically"
            )
            + (
                f", at most {info.settings.max_positions} open position(s)"
                if info.settings.max_positions
                else ""
            )
            + ".",
            ephemeral=True,
        )

    @app_commands.command(name="unsubscribe", description="Stop a connection trading a strategy")
    @app_commands.guild_only()
    @app_commands.autocomplete(strategy=strategy_names, connection=broker_connection_names)
    async def unsubscribe(
        self, interaction: discord.Interaction, strategy: str, connection: str | None = None
    ) -> None:
        await self.bot.core.subscriptions.unsubscribe(
            guild_of(interaction), interaction.user.id, strategy, connection=connection
        )
        await interaction.response.send_message(
            "Unsubscribed; no new orders from it.", ephemeral=True
        )

    # Hidden from members by default; still checked at run time (server admins can change who
    # sees a command).
    alerts = app_commands.Group(
        name="alerts",
        description="Trade alerts in channels",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @alerts.command(name="channel", description="Where this server's trade alerts go (admins)")
    @app_commands.describe(
        channel="The channel (leave out to stop posting)",
        strategy="Only this strategy's alerts (default: all)",
    )
    @app_commands.autocomplete(strategy=strategy_names)
    async def alerts_channel(
        self,
        interaction: discord.Interaction,
        channel: discord.TextChannel | None = None,
        strategy: str | None = None,
    ) -> None:
        if not can_manage(interaction):
            raise PermissionDenied("Only members with Manage Server choose the alert channel.")
        await self.bot.core.strategies.set_alert_channel(
            guild_of(interaction), channel.id if channel else None, strategy=strategy
        )
        scope = f"**{strategy}**" if strategy else "all strategies"
        where = channel.mention if channel else "nowhere (posting stopped)"
        await interaction.response.send_message(
            f"Trade alerts for {scope} go to {where}.", ephemeral=True
        )

    @alerts.command(name="show-my-name", description="Whether alerts may name you")
    async def show_name(self, interaction: discord.Interaction, show: bool) -> None:
        await self.bot.core.subscriptions.set_alerts_show_name(
            interaction.user.id, show, interaction.user.display_name
        )
        await interaction.response.send_message(
            "Alerts will name you (as plain text, never a mention)."
            if show
            else "Alerts will say “a subscriber” instead of your name.",
            ephemeral=True,
        )

    signal = app_commands.Group(name="signal", description="Webhook signals")

    @signal.command(name="show", description="Every step of one signal, with timings")
    @app_commands.describe(id="The signal id (from the webhook answer or your DM)")
    async def show(self, interaction: discord.Interaction, id: str) -> None:
        report = await in_time(
            interaction,
            self.bot.core.signals.signal_report(id.strip(), interaction.user.id),
            ephemeral=True,
        )
        embed = discord.Embed(
            title=f"Signal {report.signal_id[:8]} · {report.strategy_name}",
            description=f"{report.action or '?'} {report.ticker or ''} · {report.status}"
            + (f"\n{report.message_code}: {report.message}" if report.message_code else ""),
            colour=0x5865F2,
        )
        embed.add_field(
            name="Signal",
            value=fmt.table(
                ["Phase", "ms"], [[p.name, str(p.elapsed_ms)] for p in report.phases], {1}
            ),
            inline=False,
        )
        for sub in report.subscriptions[:20]:
            lines = [
                [p.name + (f" ({p.detail})" if p.detail else ""), str(p.elapsed_ms)]
                for p in sub.phases
            ]
            orders = "; ".join(
                f"{o.side} {fmt.qty(o.quantity)} {o.symbol} → {o.status}" for o in sub.orders
            )
            name = f"{sub.connection_name or 'removed'} ({sub.mode}) · {sub.status}"
            value = fmt.table(["Step", "ms"], lines, {1})
            if orders:
                value += orders
            if sub.reason:
                value += f"\n{sub.reason}"
            embed.add_field(name=name[:256], value=value[:1024], inline=False)
        await reply(interaction, embed=embed, ephemeral=True)


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(Automation(bot))
