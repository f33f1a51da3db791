"""The emulator object: lifecycle, addresses, world setup, and the gateway side of world changes."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from types import TracebackType

from aiohttp import web

from .driver import Driver
from .errors import EmulatorError
from .gateway import (
    GUILD_MEMBERS,
    GUILD_PRESENCES,
    GUILDS,
    MESSAGE_CONTENT,
    PRIVILEGED,
    GatewayHub,
    GatewaySession,
)
from .interactions import InteractionManager
from .oauth import OAuthClient, OAuthProvider
from .server import RateLimiter, RestApi, ServerContext
from .state import (
    GUILD_TEXT,
    JSON,
    Channel,
    CommandOverride,
    Guild,
    Member,
    Message,
    MessageEvent,
    Overwrite,
    Role,
    User,
    World,
    dumps,
    splice,
)

# Application flags for an unverified bot with the privileged intents toggled on.
_FLAG_PRESENCE_LIMITED = 1 << 13
_FLAG_GUILD_MEMBERS_LIMITED = 1 << 15
_FLAG_MESSAGE_CONTENT_LIMITED = 1 << 19
_FLAG_COMMAND_BADGE = 1 << 23


class DiscordEmulator(Driver):
    """A local Discord (REST, gateway, OAuth2) that an unpatched discord.py bot talks to.

    It starts with one guild, "Tradecord Local" (``emu.guild``), with ``#general`` and
    ``#trade-alerts`` and an owner member (``emu.owner``).
    """

    def __init__(
        self,
        *,
        bot_token: str,
        application_id: int | None = None,
        bot_user_id: int | None = None,
        bot_name: str = "Tradecord",
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        privileged_intents: int = PRIVILEGED,
        recommended_shards: int = 1,
        ack_deadline: float = 3.0,
        token_lifetime: float = 900.0,
        rate_limit: tuple[int, float] = (10_000, 1.0),
        gateway_compression: bool = False,
    ) -> None:
        if not bot_token:
            raise EmulatorError("bot_token is required")
        world = World(application_id=application_id, bot_user_id=bot_user_id, bot_name=bot_name)
        app_flags = _FLAG_COMMAND_BADGE
        if privileged_intents & GUILD_PRESENCES:
            app_flags |= _FLAG_PRESENCE_LIMITED
        if privileged_intents & GUILD_MEMBERS:
            app_flags |= _FLAG_GUILD_MEMBERS_LIMITED
        if privileged_intents & MESSAGE_CONTENT:
            app_flags |= _FLAG_MESSAGE_CONTENT_LIMITED
        hub = GatewayHub(
            world,
            bot_token=bot_token,
            application_flags=app_flags,
            privileged_intents=privileged_intents,
            compression=gateway_compression,
        )
        interactions = InteractionManager(
            world, ack_deadline=ack_deadline, token_lifetime=token_lifetime
        )
        super().__init__(world, hub, interactions)
        self.oauth = OAuthProvider(world)
        self._ctx = ServerContext(
            world=world,
            hub=hub,
            interactions=interactions,
            oauth=self.oauth,
            bot_token=bot_token,
            application_flags=app_flags,
            privileged_intents=privileged_intents,
            recommended_shards=recommended_shards,
            ratelimiter=RateLimiter(*rate_limit),
        )
        self._ssl = ssl_context
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        world.subscribe(self._publish)

        self.owner: User = world.app_owner
        self.guild: Guild = world.add_guild("Tradecord Local", owner_id=self.owner.id)
        self.general: Channel = world.channels[self.guild.channel_ids[0]]
        self.trade_alerts: Channel = world.add_channel(self.guild.id, "trade-alerts")
        self.default_guild_id = self.guild.id

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise EmulatorError("the emulator is already running")
        app = RestApi(self._ctx).build_app()
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port, ssl_context=self._ssl)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if not sockets:
            await runner.cleanup()
            raise EmulatorError("the emulator could not bind a socket")
        self._port = int(sockets[0].getsockname()[1])
        self._runner = runner
        self.world.cdn_base = self.base_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self.hub.close()
        await runner.cleanup()

    async def __aenter__(self) -> DiscordEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmulatorError("the emulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self._host}:{self.port}"

    @property
    def api_base(self) -> str:
        """Set ``discord.http.Route.BASE`` to this."""
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """Set ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`` to ``yarl.URL(this)``."""
        return f"{'wss' if self._ssl else 'ws'}://{self._host}:{self.port}/"

    # ------------------------------------------------------------------ identity

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def bot_user(self) -> User:
        return self.world.bot

    @property
    def unmodelled_requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request that matched no modelled route."""
        return self._ctx.unmodelled

    @property
    def sessions(self) -> list[GatewaySession]:
        """Live gateway sessions (one per connected shard and process)."""
        return self.hub.live_sessions()

    def record_requests(self, enabled: bool = True) -> list[tuple[str, str]]:
        """Start (or stop) logging every REST call as (method, path); returns the live log."""
        self._ctx.record_requests = enabled
        return self._ctx.requests

    # ------------------------------------------------------------------ world setup

    def add_user(
        self, name: str, *, bot: bool = False, global_name: str | None = None, locale: str = "en-US"
    ) -> User:
        return self.world.add_user(name, bot=bot, global_name=global_name, locale=locale)

    def add_guild(
        self,
        name: str,
        *,
        owner_id: int | None = None,
        guild_id: int | None = None,
        channels: Iterable[str] = ("general",),
    ) -> Guild:
        """A new server with the bot in it (GUILD_CREATE to the owning shard if connected)."""
        guild = self.world.add_guild(name, owner_id=owner_id, guild_id=guild_id, channels=channels)
        for session in self.hub.sessions_for(guild.id):
            if session.has(GUILDS):
                session.dispatch(
                    "GUILD_CREATE",
                    self.world.guild_create_json(
                        guild.id,
                        members=session.has(GUILD_MEMBERS),
                        presences=session.has(GUILD_PRESENCES),
                    ),
                )
        return guild

    def add_channel(
        self, guild_id: int, name: str, type: int = GUILD_TEXT, *, topic: str | None = None
    ) -> Channel:
        channel = self.world.add_channel(guild_id, name, type, topic=topic)
        self.hub.dispatch_guild(guild_id, "CHANNEL_CREATE", channel.to_json(self.world))
        return channel

    def add_role(
        self, guild_id: int, name: str, permissions: int, *, mentionable: bool = False
    ) -> Role:
        role = self.world.add_role(guild_id, name, permissions, mentionable=mentionable)
        self.hub.dispatch_guild(
            guild_id, "GUILD_ROLE_CREATE", {"guild_id": str(guild_id), "role": role.to_json()}
        )
        return role

    def remove_member(self, guild_id: int, user_id: int) -> None:
        """``user_id`` leaves the guild, or is kicked or banned: GUILD_MEMBER_REMOVE to a bot
        with the Server Members intent."""
        guild = self.world.guild(guild_id)
        if guild.members.pop(user_id, None) is None:
            raise EmulatorError(f"user {user_id} is not a member of guild {guild_id}")
        data = {"guild_id": str(guild_id), "user": self.world.user(user_id).to_json()}
        self.hub.dispatch_guild(guild_id, "GUILD_MEMBER_REMOVE", data, intent=GUILD_MEMBERS)

    def delete_role(self, guild_id: int, role_id: int) -> None:
        """A server admin deletes a role: its members lose it with no GUILD_MEMBER_UPDATE;
        GUILD_ROLE_DELETE alone tells the bot."""
        guild = self.world.guild(guild_id)
        if role_id == guild.id or guild.roles.pop(role_id, None) is None:
            raise EmulatorError(f"guild {guild_id} has no role {role_id} to delete")
        for member in guild.members.values():
            if role_id in member.roles:
                member.roles.remove(role_id)
        payload = {"guild_id": str(guild_id), "role_id": str(role_id)}
        self.hub.dispatch_guild(guild_id, "GUILD_ROLE_DELETE", payload)

    def remove_member_role(self, guild_id: int, user_id: int, role_id: int) -> Member:
        """A role taken from a member (by an admin, or by a paid community's billing bot):
        GUILD_MEMBER_UPDATE to a bot with the Server Members intent."""
        member = self.world.guild(guild_id).members.get(user_id)
        if member is None or role_id not in member.roles:
            raise EmulatorError(f"user {user_id} has no role {role_id} in guild {guild_id}")
        member.roles.remove(role_id)
        data = member.to_json(self.world)
        data["guild_id"] = str(guild_id)
        self.hub.dispatch_guild(guild_id, "GUILD_MEMBER_UPDATE", data, intent=GUILD_MEMBERS)
        return member

    def add_member(
        self,
        guild_id: int,
        user_id: int,
        *,
        roles: Iterable[int] = (),
        permissions: int | None = None,
        nick: str | None = None,
    ) -> Member:
        """Make ``user_id`` a member. ``permissions`` grants them via a personal role."""
        existed = user_id in self.world.guild(guild_id).members
        before = set(self.world.guild(guild_id).roles)
        member = self.world.add_member(
            guild_id, user_id, roles=roles, permissions=permissions, nick=nick
        )
        guild = self.world.guild(guild_id)
        for role_id in set(guild.roles) - before:
            payload = {"guild_id": str(guild_id), "role": guild.roles[role_id].to_json()}
            self.hub.dispatch_guild(guild_id, "GUILD_ROLE_CREATE", payload)
        data = member.to_json(self.world)
        data["guild_id"] = str(guild_id)
        if existed:
            self.hub.dispatch_guild(guild_id, "GUILD_MEMBER_UPDATE", data, intent=GUILD_MEMBERS)
        else:
            self.hub.dispatch_guild(guild_id, "GUILD_MEMBER_ADD", data, intent=GUILD_MEMBERS)
        return member

    def set_permission_overwrite(
        self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0
    ) -> Overwrite:
        """Allow/deny permissions for a role or member in one channel (CHANNEL_UPDATE)."""
        overwrite = self.world.set_overwrite(channel_id, target_id, allow=allow, deny=deny)
        channel = self.world.channel(channel_id)
        assert channel.guild_id is not None
        self.hub.dispatch_guild(channel.guild_id, "CHANNEL_UPDATE", channel.to_json(self.world))
        return overwrite

    def set_command_permission(
        self, guild_id: int, command: str, target_id: int, *, allow: bool
    ) -> None:
        """A server admin's override (Integrations settings) for a synced command.

        ``target_id`` is a role id, a user id, or the guild id for @everyone.
        """
        stored = self.world.commands.find_chat_input(command, guild_id)
        if stored is None:
            raise EmulatorError(f"/{command} is not synced")
        self.world.guild(guild_id)
        self.world.commands.overrides.setdefault((guild_id, stored.id), {})[target_id] = (
            CommandOverride(target_id=target_id, allow=allow)
        )

    def set_dms_open(self, user_id: int, open: bool) -> None:
        """The user's "allow DMs from server members" privacy setting (off: the bot gets 50007)."""
        self.world.user(user_id).dms_open = open

    # ------------------------------------------------------------------ OAuth2

    def register_oauth_client(
        self, client_id: str | int, client_secret: str, redirect_uris: list[str] | tuple[str, ...]
    ) -> OAuthClient:
        return self.oauth.register_client(client_id, client_secret, redirect_uris)

    def oauth_login_as(self, user_id: int | None) -> None:
        """Browsers without their own emulator session are signed in as this user."""
        self.oauth.login_as(user_id)

    # ------------------------------------------------------------------ gateway helpers

    def request_reconnect(self, shard_id: int | None = None) -> int:
        """Send op 7 RECONNECT (the bot reconnects and RESUMEs); returns the sessions told."""
        return self.hub.request_reconnect(shard_id)

    async def wait_until_connected(
        self,
        *,
        shard_count: int | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> None:
        """Wait until every shard (0..count-1) has an identified, connected session."""

        def ready() -> bool:
            sessions = [s for s in self.hub.live_sessions() if s.connected]
            if not sessions:
                return False
            count = shard_count or max(s.shard_count for s in sessions)
            return {s.shard_id for s in sessions if s.shard_count == count} >= set(range(count))

        await self.hub.wait_for(ready, timeout)

    # ------------------------------------------------------------------ message events

    def _publish(self, event: MessageEvent, message: Message) -> None:
        if message.ephemeral:
            return
        world = self.world
        guild_id = message.guild_id
        extra: JSON = {}
        if guild_id is not None:
            extra["guild_id"] = str(guild_id)
        if event == "delete":
            data = {"id": str(message.id), "channel_id": str(message.channel_id), **extra}
            body = dumps(data)
        else:
            member = world.guilds[guild_id].members.get(message.author_id) if guild_id else None
            if member is not None and message.webhook_id is None:
                extra["member"] = member.to_json(world, with_user=False)
            body = splice(world.message_wire(message), extra)

        def redacted() -> str:
            data = {**world.message_json(message), **extra}
            if event != "delete":
                data.update(content="", embeds=[], attachments=[], components=[])
            return dumps(data)

        names = {"create": "MESSAGE_CREATE", "update": "MESSAGE_UPDATE", "delete": "MESSAGE_DELETE"}
        self.hub.dispatch_message(
            names[event],
            body,
            guild_id=guild_id,
            author_id=message.author_id,
            mentions_bot=world.bot.id in message.mentions,
            redacted=redacted,
        )
