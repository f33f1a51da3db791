"""Linking and managing broker connections: /connect, account choice, /rename, /disconnect,
/my-plan and /plan set."""

from __future__ import annotations

import re
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.brokers import broker_catalog
from bot.client import Tradecord, report_error
from bot.components import ACCOUNT_SELECT
from bot.errors import PermissionDenied
from bot.models import ConnectionStatus
from bot.wording import plural
from cogs.ui import ConfirmView, as_text, broker_connection_names, can_manage, in_time, reply

PLAN_HELP = "A server admin (Manage Server) can change it with /plan set."


class AccountSelect(discord.ui.DynamicItem[discord.ui.Select[Any]], template=ACCOUNT_SELECT):
    """Choosing a connection's live or paper account: works from /accounts and from the DM sent
    after linking, in any bot process; ownership is checked against the database."""

    def __init__(
        self, connection_id: int, mode: str, select: discord.ui.Select[Any] | None = None
    ) -> None:
        super().__init__(select or discord.ui.Select(custom_id=f"tc:acct:{connection_id}:{mode}"))
        self.connection_id = connection_id
        self.mode = mode

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Select[Any], match: re.Match[str]
    ) -> AccountSelect:
        return cls(int(match["connection"]), match["mode"], item)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Tradecord = interaction.client  # type: ignore[assignment]
        private = interaction.guild is not None
        try:
            result = await in_time(
                interaction,
                bot.core.connections.choose_account(
                    interaction.user.id, self.connection_id, self.mode, self.item.values[0]
                ),
                ephemeral=private,
                thinking=True,  # the answer is a message of its own; the menus stay
            )
        except Exception as e:
            await report_error(interaction, e)
            return
        lines = [
            f"✅ **{result.connection.name}** will trade {self.mode} in "
            f"{result.account.type.value} account {result.account.masked}."
        ]
        if result.warning:
            lines.append(f"⚠️ {result.warning}")
        if result.notice:
            lines.append(f"ℹ️ {result.notice}")
        await reply(interaction, content="\n".join(lines), ephemeral=private)


def menus_view(rows: list[dict[str, Any]]) -> discord.ui.View:
    """The same menus as ``account_menus`` JSON, as a discord.py view for interaction replies."""
    view = discord.ui.View(timeout=None)
    for row in rows:
        spec = row["components"][0]
        m = re.fullmatch(ACCOUNT_SELECT, spec["custom_id"])
        assert m is not None
        select: discord.ui.Select[Any] = discord.ui.Select(
            custom_id=spec["custom_id"],
            placeholder=spec["placeholder"],
            options=[
                discord.SelectOption(
                    label=o["label"],
                    value=o["value"],
                    description=o["description"],
                    default=o["default"],
                )
                for o in spec["options"]
            ],
        )
        view.add_item(AccountSelect(int(m["connection"]), m["mode"], select))
    return view


class ConfirmDisconnect(ConfirmView):
    def __init__(self, owner_id: int, bot: Tradecord, connection_id: int) -> None:
        super().__init__(owner_id, timeout=60)
        # By id: a rename while the question is open must not aim it at another connection.
        self.bot, self.connection = bot, connection_id

    @discord.ui.button(label="Disconnect", style=discord.ButtonStyle.danger)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        result = await in_time(
            interaction,
            self.bot.core.connections.disconnect(interaction.user.id, self.connection),
            ephemeral=True,
        )
        if result.sharing:
            others = ", ".join(f"“{n}”" for n in result.sharing)
            revoke = (
                f"Tradecord's access at {result.broker} stays authorized: {result.broker} "
                f"withdraws it from a whole login at once, which would also cut off {others} "
                "if it signs in with the same login. Once you no longer use Tradecord there, "
                f"remove it in your {result.broker} account settings"
            )
        elif result.revoked is True:
            revoke = f"Tradecord's access at {result.broker} was revoked"
        elif result.revoked is False:
            revoke = (
                f"{result.broker} did not confirm the revocation, so also remove "
                f"Tradecord's access in your {result.broker} account settings"
            )
        else:
            revoke = (
                f"{result.broker} offers no way for apps to revoke their access; remove "
                f"Tradecord in your {result.broker} account settings if you wish"
            )
        text = (
            f"Disconnected “{result.name}”: its stored tokens are deleted. {revoke}. "
            "Its history stays in the audit trail."
        )
        if result.unsent:
            # Not "see /orders": the connection is gone, so /orders cannot show them.
            text += (
                f" {result.unsent} order{plural(result.unsent)} stored but not yet sent: "
                f"failed, nothing was sent to {result.broker}."
            )
        if result.in_doubt:
            text += (
                f" {result.in_doubt} order{plural(result.in_doubt)} whose sending was never "
                f"confirmed may be at {result.broker}: check there, Tradecord can no "
                "longer follow them."
            )
        await self.answer(interaction, text)

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self.answer(interaction, "Nothing was changed.")


class Connections(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot
        configured = [b for b in broker_catalog(bot.settings) if b.configured and not b.builtin]
        # Only brokers with a client id are offered: the choice list is built from settings.
        self.connect._params["broker"].choices = [
            app_commands.Choice(name=b.name, value=b.key) for b in configured
        ] or [app_commands.Choice(name="(no broker configured)", value="none")]

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(AccountSelect)

    @app_commands.command(name="connect", description="Link a broker account (private link)")
    @app_commands.describe(
        broker="The broker to link",
        environment="live, paper or both, where the broker separates them (default: both)",
    )
    async def connect(
        self,
        interaction: discord.Interaction,
        broker: str,
        environment: Literal["live", "paper", "both"] | None = None,
    ) -> None:
        url = await self.bot.core.linking.start(interaction.user.id, broker, environment)
        name = self.bot.core.linking.broker_name(broker)
        view = discord.ui.View()
        view.add_item(discord.ui.Button(label=f"Connect {name}", url=url))
        text = f"Open this private link to connect {name}."
        # /connect repairs a connection whose authorization ended rather than adding one:
        # say which, so a member with two at this broker knows what the link will do.
        again = await self.bot.core.linking.relink_target(interaction.user.id, broker)
        if again is not None:
            why = (
                f"{name} no longer accepts its authorization"
                if again.status == ConnectionStatus.NEEDS_REAUTH
                else "its authorization ends soon"
            )
            text = (
                f"Open this private link to link “{again.name}” again ({why}): it keeps its "
                "name, accounts and subscriptions, and no connection is added."
            )
        await interaction.response.send_message(
            f"{text} It works once, only for you, and expires in 10 minutes; a newer /connect "
            f"replaces it. You will sign in with Discord first, then at {name}.",
            view=view,
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),  # the name is the member's text
        )

    @app_commands.command(name="rename", description="Rename one of your connections")
    @app_commands.describe(
        connection="The connection",
        new_name="1 to 50 characters, e.g. Alpaca Stocks; none of * _ ~ ` | < > @ [ ] \\",
    )
    @app_commands.autocomplete(connection=broker_connection_names)
    async def rename(
        self,
        interaction: discord.Interaction,
        connection: str,
        new_name: app_commands.Range[str, 1, 100],
    ) -> None:
        result = await self.bot.core.connections.rename(interaction.user.id, connection, new_name)
        text = f"Renamed “{result.old}” to “{result.new}”."
        if result.shares_broker:
            text += (
                "\nYou have more than one connection at this broker; descriptive names "
                "avoid trading in the wrong one"
            )
            if result.suggestions:
                text += ", e.g. " + ", ".join(
                    f"/rename “{now}” to “{better}”" for now, better in result.suggestions
                )
            text += "."
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="disconnect", description="Unlink a broker connection")
    @app_commands.describe(connection="The connection to unlink")
    @app_commands.autocomplete(connection=broker_connection_names)
    async def disconnect(self, interaction: discord.Interaction, connection: str) -> None:
        conn = await self.bot.core.connections.owned(interaction.user.id, connection)
        if conn.builtin:
            await interaction.response.send_message(
                "Tradecord Paper cannot be disconnected; /paper reset starts it over.",
                ephemeral=True,
            )
            return
        view = ConfirmDisconnect(interaction.user.id, self.bot, conn.id)
        text = (
            f"Disconnect “{conn.name}”? Tradecord will revoke its access at the broker where "
            "the broker allows it and delete the stored tokens. Open orders at the broker stay "
            "open."
        )
        if await self.bot.core.connections.prices_paper(conn.id):
            text += (
                " Tradecord Paper takes its prices from it: it will use simulated prices "
                "instead (/paper settings chooses another source)."
            )
        # Its subscriptions are deleted with it: say which strategies stop trading here.
        strategies = await self.bot.core.connections.subscribed_strategies(conn.id)
        if strategies:
            # A few named, the rest counted: the question must fit Discord's 2,000 characters,
            # or there would be no way to disconnect at all.
            named = ", ".join(f"“{n}”" for n in strategies[:5])
            more = (
                f" and {len(strategies) - 5} more (/subscriptions)" if len(strategies) > 5 else ""
            )
            text += (
                f" Its subscriptions end too: signals of {named}{more} will no longer trade on it."
            )
        await interaction.response.send_message(
            text,
            view=view,
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),  # strategy names are members' text
        )
        view.message = await interaction.original_response()

    @app_commands.command(
        name="my-plan", description="Your plan and how many connections it allows"
    )
    async def my_plan(self, interaction: discord.Interaction) -> None:
        plan = await self.bot.core.linking.plan_of(interaction.user.id)
        over = (
            f" That is {plan.used - plan.limit} more than it allows: they keep working, but "
            f"/connect adds no connection until you /disconnect {plan.to_remove} of them."
            if plan.used > plan.limit
            else ""
        )
        retired = f" {plan.retired_note}" if plan.retired else ""
        await interaction.response.send_message(
            f"Your plan is **{plan.name}**: {plan.used} of {plan.limit} broker "
            f"connection{plural(plan.limit)} in use (Tradecord Paper does not count).{retired}"
            f"{over} {PLAN_HELP}",
            ephemeral=True,
        )

    # Admins only, so hidden from members by default (Discord sets permissions per top-level
    # command: members see their own plan with /my-plan). Server admins can override defaults,
    # so plan_set checks Manage Server again when it runs.
    plan = app_commands.Group(
        name="plan",
        description="Members' connection plans (server admins)",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    @plan.command(name="set", description="Set a member's plan (server admins)")
    @app_commands.describe(member="The member", plan="The plan")
    async def plan_set(
        self, interaction: discord.Interaction, member: discord.Member, plan: str
    ) -> None:
        # Checked here, at run time: default permissions can be overridden by server admins.
        owner = await self.bot.is_owner(interaction.user)
        if not can_manage(interaction) and not owner:
            raise PermissionDenied(
                "Only server admins (Manage Server) or the bot owner can set plans."
            )
        # A plan counts in every server the bot is in, so an admin of one cannot raise their own.
        if member.id == interaction.user.id and not owner:
            raise PermissionDenied(
                "Server admins cannot change their own plan; ask the bot's owner, or another admin."
            )
        guild = interaction.guild  # None when Discord sent the interaction without it
        # The member's DM goes out first: deferred if Discord is slow to take it.
        now, changed = await in_time(
            interaction,
            self.bot.core.linking.set_plan(
                member.id, plan, by=interaction.user.id, guild_name=guild.name if guild else None
            ),
            ephemeral=True,
        )
        # "Is now on" for a plan they had would read as a change the admin did not make.
        verb = "is now" if changed else "was already"
        over = (
            f" They have {now.used}: those keep working, but /connect adds none for them until "
            f"they /disconnect {now.to_remove} of them."
            if now.used > now.limit
            else ""
        )
        await reply(
            interaction,
            content=f"{as_text(member.display_name)} {verb} on the **{now.name}** plan "
            f"({now.limit} broker connection{plural(now.limit)}).{over}",
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @plan_set.autocomplete("plan")
    async def plan_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=f"{p} ({n})", value=p)
            for p, n in self.bot.settings.plans.items()
            if current.lower() in p
        ][:25]


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(Connections(bot))
