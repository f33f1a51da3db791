"""The Discord client: one typed bot object that owns the core, the web server and the cogs."""

from __future__ import annotations

import functools
import importlib
import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import discord
import yarl
from aiohttp import web
from discord import app_commands
from discord.ext import commands

from bot.core import Core
from bot.errors import ConfigurationError, TradecordError
from bot.settings import Settings
from bot.wording import clip

if TYPE_CHECKING:
    from bot.background import Background

log = logging.getLogger("tradecord.bot")

COGS = (
    "cogs.general",
    "cogs.accounts",
    "cogs.trading",
    "cogs.connections",
    "cogs.automation",
    "cogs.limits",
)


def point_at_discord(settings: Settings) -> None:
    """Aim discord.py's REST and gateway at ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL``.

    discord.py reads both from class attributes, so this is process-wide by design.
    """
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class Tradecord(commands.Bot):
    """The bot. ``core`` is opened in ``setup_hook`` unless one is passed in (tests, workers).

    ``role="all"`` (one process) also serves the web pages and runs the background work;
    ``role="bot"`` only answers Discord, leaving those to web and worker processes.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        core: Core | None = None,
        sync_only: bool = False,
        role: str = "all",
        **options: Any,
    ) -> None:
        options.setdefault(
            "intents", discord.Intents(guilds=True, members=settings.discord_members_intent)
        )
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(command_prefix=commands.when_mentioned, help_command=None, **options)
        self.settings = settings
        self._core = core
        self._owns_core = core is None
        self.sync_only = sync_only
        self.role = role
        self.web_runner: web.AppRunner | None = None
        self.background: Background | None = None
        self.web_port: int | None = None
        self.tree.on_error = self.on_app_command_error

    @property
    def core(self) -> Core:
        if self._core is None:
            raise RuntimeError("the core is not open yet")
        return self._core

    async def setup_hook(self) -> None:
        for name in COGS:
            # Imported once per process, not re-run per bot as load_extension does: each
            # test (and each shard's bot) would compile and build every command again.
            await importlib.import_module(name).setup(self)
        if self.sync_only:
            return
        if self._core is None:
            from bot.roles import open_core  # bot.roles imports this module

            self._core = await open_core(self.settings)
        if self._core.notifier is None:
            from bot.notifier import DiscordNotifier

            self._core.notifier = DiscordNotifier(self.http)
        if self.role == "all":
            await self.start_web()
            from bot.background import Background

            self.background = Background(self._core)
            self.background.start()
        if self.settings.discord_dev_guild_id:
            guild_id = self.settings.discord_dev_guild_id
            synced = await sync_to_guild(self, guild_id, "DISCORD_DEV_GUILD_ID")
            log.info("Synced %d commands to dev guild %s", len(synced), guild_id)
        from bot.roles import settle_heap

        settle_heap()

    async def start_web(self) -> None:
        from web.app import app_runner

        self.web_runner = app_runner(self.core)
        await self.web_runner.setup()
        self.web_port = await bind_web(self.web_runner, self.settings)
        # Webhook URLs and /connect links are built from PUBLIC_URL: when it was not given,
        # from the port actually bound, not the default's 8080.
        self.settings = self.settings.bound_to(self.web_port)
        self.core.settings = self.core.settings.bound_to(self.web_port)
        log.info("Web server on http://%s:%s", self.settings.web_host, self.web_port)

    async def close(self) -> None:
        # Reverse order of start: stop taking requests, then Discord, then the core.
        if self.web_runner is not None:
            await self.web_runner.cleanup()
            self.web_runner = None
        if self.background is not None:
            await self.background.close()
            self.background = None
        await super().close()
        if self._core is not None and self._owns_core:
            await self._core.close()
            self._core = None

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        await report_error(interaction, original)

    def add_dynamic_items(self, *items: type[discord.ui.DynamicItem[Any]]) -> None:
        for item in items:
            answer_errors(item)
        super().add_dynamic_items(*items)


_ANSWERS_ERRORS = "_tradecord_answers_errors"


def answer_errors(item: type[discord.ui.DynamicItem[Any]]) -> None:
    """Send an error escaping ``item``'s callback to ``report_error``, as the tree's handler
    does for commands. discord.py only logs it ("Ignoring exception in dynamic item
    callback"), so the member saw "This interaction failed", though the account may have been
    chosen or the order sent."""
    callback = item.callback
    if getattr(callback, _ANSWERS_ERRORS, False):
        return

    @functools.wraps(callback)
    async def answering(self: discord.ui.DynamicItem[Any], interaction: discord.Interaction) -> Any:
        try:
            return await callback(self, interaction)
        except Exception as e:
            await report_error(interaction, e)

    setattr(answering, _ANSWERS_ERRORS, True)
    item.callback = answering  # type: ignore[method-assign]


ERROR_TEXT_MAX = 1900  # under Discord's 2,000 characters a message may have


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """The one place errors meet members: domain errors as their own message, privately;
    anything else logged with an incident id, and only the id shown."""
    if isinstance(error, TradecordError):
        text = error.user_message
    elif isinstance(error, app_commands.CheckFailure):
        text = str(error) or "You cannot use this command here."
    elif isinstance(error, app_commands.TransformerError):
        text = transformer_message(error)
    else:
        incident = secrets.token_hex(4).upper()
        command = interaction.command.qualified_name if interaction.command else "component"
        log.error("Incident %s in %s", incident, command, exc_info=error)
        # Not "nothing was changed": the error may come after a broker took an order or a
        # cancel, and a member told otherwise would place the order a second time.
        text = (
            f"Something went wrong on our side (incident {incident}). If you were placing, "
            "cancelling or changing something, check whether it was done (/orders, /accounts) "
            "before trying again. Give this id to the bot's owner if it keeps happening."
        )
    # A broker's refusal quoted in full can pass Discord's 2,000 characters, and a message
    # Discord refuses leaves the member with "This interaction failed".
    text = clip(text, ERROR_TEXT_MAX)
    try:
        if interaction.response.is_done():
            await drop_public_placeholder(interaction)
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("Could not deliver an error message for interaction %s", interaction.id)


def transformer_message(error: app_commands.TransformerError) -> str:
    """What to do when discord.py cannot turn an option into what the command takes.

    Discord lets members pick any user it knows for a member option, including people who
    are not (or no longer) in the server; discord.py then has a user, not a member.
    """
    if error.type is discord.AppCommandOptionType.user:
        return "That member is not in this server. Choose someone from its member list."
    if error.type is discord.AppCommandOptionType.channel:
        return (
            "Tradecord cannot use that channel. Choose a text channel of this server that "
            "Tradecord can see."
        )
    return (
        "Tradecord could not read one of the options you gave. Check it against the option's "
        "description and try again."
    )


async def drop_public_placeholder(interaction: discord.Interaction) -> None:
    """Delete a public "thinking…" message that is still waiting for its answer.

    Discord makes the first followup after a deferral the deferred message itself, public if
    the deferral was (``share``), whatever the followup's own flags say. Once that message is
    deleted, a followup is a message of its own and its ephemeral flag holds. A failed look-up
    raises, so an error is never sent when it might land in the channel."""
    if interaction.response.type is not discord.InteractionResponseType.deferred_channel_message:
        return
    original = await interaction.original_response()
    if original.flags.loading and not original.flags.ephemeral:
        await interaction.delete_original_response()


async def sync_to_guild(
    bot: commands.Bot, guild_id: int, setting: str
) -> list[app_commands.AppCommand]:
    """Push the commands to one guild. A guild Discord does not know (10004) or the bot may not
    add commands to (50001: not in it, or invited without applications.commands) is a setting
    to fix, said in one line rather than discord.py's traceback."""
    guild = discord.Object(guild_id)
    bot.tree.copy_global_to(guild=guild)
    try:
        return await bot.tree.sync(guild=guild)
    except (discord.NotFound, discord.Forbidden) as e:
        why = (
            f"Discord knows no server with id {guild_id}"
            if isinstance(e, discord.NotFound)
            else f"the bot may not add commands to server {guild_id}"
        )
        raise ConfigurationError(
            f"{setting}: {why}. Check the id (Developer Mode on, then right-click the server → "
            "Copy Server ID), and invite the bot there with the bot and applications.commands "
            "scopes."
        ) from None


async def bind_web(runner: web.AppRunner, settings: Settings) -> int:
    """``start_site`` on WEB_HOST:WEB_PORT; a port in use that PUBLIC_URL names too says so,
    or the admin changes WEB_PORT alone and every link points at the old port."""
    from web.app import start_site

    try:
        return await start_site(runner, settings.web_host, settings.web_port)
    except ConfigurationError as e:
        url = urlsplit(settings.public_url)
        try:
            public_port = url.port or {"http": 80, "https": 443}.get(url.scheme)
        except ValueError:
            public_port = None
        if (
            "already in use" in e.user_message
            and settings.public_url_set
            and public_port == settings.web_port
        ):
            raise ConfigurationError(
                f"{e.user_message} (PUBLIC_URL, {settings.public_url}, names it too: change both)"
            ) from None
        raise


class ShardedTradecord(Tradecord, commands.AutoShardedBot):  # type: ignore[misc]
    """The same bot over a range of Discord's gateway shards (``--shards 0-3/8``)."""


def create_bot(settings: Settings, **options: Any) -> Tradecord:
    """Build the bot; ``options`` go to ``commands.Bot`` (connector, intents, ...). With
    ``shard_ids`` and ``shard_count`` it is an ``AutoShardedBot`` owning those shards."""
    point_at_discord(settings)
    if "shard_ids" in options or "shard_count" in options:
        return ShardedTradecord(settings, **options)
    return Tradecord(settings, **options)
