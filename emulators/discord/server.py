"""The HTTP side: Discord's REST routes, rate-limit headers, the CDN and unmodelled-route tracking.

Every route answers with Discord's JSON (``Content-Type: application/json`` exactly, which
discord.py requires) and Discord's error bodies. A request that matches no route is answered
``{"message": "404: Not Found", "code": 0}`` and recorded, so a test can fail on it.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import BodyPartReader, web

from . import permissions as P
from .errors import (
    CANNOT_DM,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    UNAUTHORIZED,
    UNKNOWN_MESSAGE,
    APIError,
    unknown,
)
from .gateway import GUILD_MEMBERS, GatewayHub
from .interactions import InteractionManager
from .messages import UploadedFile, edit_changes, resolve_attachments
from .oauth import Grant, OAuthProvider
from .state import (
    DM,
    GUILD_CATEGORY,
    GUILD_FORUM,
    JSON,
    Channel,
    Message,
    RawJSON,
    StoredCommand,
    World,
    dumps,
    token_hash,
)
from .validation import (
    CREATE_FLAGS,
    FormErrors,
    ensure_not_empty,
    validate_command,
    validate_message,
)

API_PREFIXES = ("/api/v10", "/api/v9", "/api")
_JSON_HEADERS = {"Content-Type": "application/json"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Auth = Literal["bot", "none", "any"]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON with exactly ``Content-Type: application/json`` (discord.py compares it verbatim)."""
    text = data if isinstance(data, RawJSON) else dumps(data)
    return web.Response(
        body=text.encode(), status=status, headers={**_JSON_HEADERS, **(headers or {})}
    )


def no_content() -> web.Response:
    return web.Response(status=204)


class RateLimited(Exception):
    def __init__(self, headers: dict[str, str], retry_after: float) -> None:
        super().__init__(retry_after)
        self.headers = headers
        self.retry_after = retry_after


class RateLimiter:
    """Per-bucket fixed windows, reported with Discord's ``X-RateLimit-*`` headers."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, list[float]] = {}
        self._hashes: dict[str, str] = {}

    def hit(self, route_key: str, major: str) -> dict[str, str]:
        bucket = self._hashes.get(route_key)
        if bucket is None:
            bucket = self._hashes[route_key] = token_hash(route_key)
        now = time.time()
        key = f"{bucket}:{major}"
        state = self._windows.get(key)
        if state is None or state[0] <= now:
            state = self._windows[key] = [now + self.window, 0.0]
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
        reset_after = max(state[0] - now, 0.0)
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Reset": f"{state[0]:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }
        if state[1] >= self.limit:
            headers["X-RateLimit-Remaining"] = "0"
            headers["X-RateLimit-Scope"] = "user"
            headers["Retry-After"] = str(math.ceil(reset_after))
            headers["Via"] = "1.1 google"
            raise RateLimited(headers, reset_after)
        state[1] += 1
        headers["X-RateLimit-Remaining"] = str(int(self.limit - state[1]))
        return headers


@dataclass
class ServerContext:
    world: World
    hub: GatewayHub
    interactions: InteractionManager
    oauth: OAuthProvider
    bot_token: str
    application_flags: int
    privileged_intents: int
    recommended_shards: int
    ratelimiter: RateLimiter
    unmodelled: list[tuple[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    record_requests: bool = False


class RestApi:
    """Route handlers bound to one emulator's state."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.world = ctx.world
        self._nonces: dict[tuple[int, str], int] = {}

    # ------------------------------------------------------------------ plumbing

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        r = app.router
        oauth = self.ctx.oauth
        for prefix in API_PREFIXES:
            add = self._adder(r, prefix)
            add("GET", "/gateway", self.get_gateway, auth="none")
            add("GET", "/gateway/bot", self.get_gateway_bot)
            add("GET", "/users/@me", self.get_me, auth="any")
            add("GET", "/users/@me/guilds", self.get_my_guilds, auth="any")
            add("POST", "/users/@me/channels", self.create_dm)
            add("GET", "/users/{user_id}", self.get_user)
            add("GET", "/oauth2/applications/@me", self.get_application)
            add("GET", "/applications/@me", self.get_application)
            add("GET", "/oauth2/@me", self.get_authorization, auth="any")
            add("GET", "/applications/{app_id}/commands", self.list_commands)
            add("PUT", "/applications/{app_id}/commands", self.bulk_commands)
            add("POST", "/applications/{app_id}/commands", self.create_command)
            add("GET", "/applications/{app_id}/commands/{command_id}", self.get_command)
            add("PATCH", "/applications/{app_id}/commands/{command_id}", self.edit_command)
            add("DELETE", "/applications/{app_id}/commands/{command_id}", self.delete_command)
            g = "/applications/{app_id}/guilds/{guild_id}/commands"
            add("GET", g, self.list_commands)
            add("PUT", g, self.bulk_commands)
            add("POST", g, self.create_command)
            add("GET", g + "/permissions", self.list_command_permissions)
            add("GET", g + "/{command_id}", self.get_command)
            add("PATCH", g + "/{command_id}", self.edit_command)
            add("DELETE", g + "/{command_id}", self.delete_command)
            add("GET", g + "/{command_id}/permissions", self.get_command_permissions)
            add(
                "POST",
                "/interactions/{interaction_id}/{token}/callback",
                self.interaction_callback,
                auth="none",
            )
            w = "/webhooks/{app_id}/{token}"
            add("POST", w, self.webhook_execute, auth="none")
            add("GET", w + "/messages/{message_id}", self.webhook_get, auth="none")
            add("PATCH", w + "/messages/{message_id}", self.webhook_edit, auth="none")
            add("DELETE", w + "/messages/{message_id}", self.webhook_delete, auth="none")
            c = "/channels/{channel_id}"
            add("GET", c, self.get_channel)
            add("GET", c + "/messages", self.get_messages)
            add("POST", c + "/messages", self.create_message)
            add("GET", c + "/messages/{message_id}", self.get_message)
            add("PATCH", c + "/messages/{message_id}", self.edit_message)
            add("DELETE", c + "/messages/{message_id}", self.delete_message)
            add("POST", c + "/typing", self.typing)
            add("GET", "/guilds/{guild_id}", self.get_guild)
            add("GET", "/guilds/{guild_id}/channels", self.get_guild_channels)
            add("GET", "/guilds/{guild_id}/roles", self.get_guild_roles)
            add("GET", "/guilds/{guild_id}/members", self.list_members)
            add("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member)
            r.add_route("POST", prefix + "/oauth2/token", oauth.token)
            r.add_route("POST", prefix + "/oauth2/token/revoke", oauth.revoke)
            r.add_route("GET", prefix + "/oauth2/authorize", oauth.authorize_page)
            r.add_route("POST", prefix + "/oauth2/authorize", oauth.authorize_submit)
        r.add_route("GET", "/oauth2/authorize", oauth.authorize_page)
        r.add_route("POST", "/oauth2/authorize", oauth.authorize_submit)
        r.add_route("GET", "/attachments/{channel_id}/{attachment_id}/{filename}", self.cdn)
        r.add_route("GET", "/", self.gateway_or_root)
        r.add_route("*", "/{tail:.*}", self.unmodelled)
        return app

    def _adder(self, router: web.UrlDispatcher, prefix: str) -> Callable[..., None]:
        def add(
            method: str,
            path: str,
            handler: Callable[[web.Request], Awaitable[Any]],
            *,
            auth: Auth = "bot",
        ) -> None:
            route_key = f"{method} {path}"
            router.add_route(method, prefix + path, self._wrap(handler, auth, route_key))

        return add

    def _wrap(
        self, handler: Callable[[web.Request], Awaitable[Any]], auth: Auth, route_key: str
    ) -> Handler:
        ctx = self.ctx
        bot_header = f"Bot {ctx.bot_token}"

        async def wrapper(request: web.Request) -> web.StreamResponse:
            if ctx.record_requests:
                ctx.requests.append((request.method, request.path))
            rl_headers: dict[str, str] = {}
            try:
                if auth == "bot" and request.headers.get("Authorization") != bot_header:
                    raise UNAUTHORIZED
                match = request.match_info
                major = match.get("channel_id") or match.get("guild_id") or match.get("token") or ""
                rl_headers = ctx.ratelimiter.hit(route_key, major)
                result = await handler(request)
            except APIError as exc:
                return json_response(exc.body(), exc.status, rl_headers)
            except RateLimited as exc:
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": round(exc.retry_after, 3),
                    "global": False,
                }
                return json_response(body, 429, exc.headers)
            if isinstance(result, web.StreamResponse):
                result.headers.update(rl_headers)
                return result
            return json_response(result, 200, rl_headers)

        return wrapper

    async def _body(self, request: web.Request) -> tuple[JSON, list[UploadedFile]]:
        """A JSON body, or multipart ``payload_json`` + ``files[n]`` parts."""
        if request.content_type == "multipart/form-data":
            body: Any = {}
            files: list[UploadedFile] = []
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name or ""
                data = await part.read()
                if name == "payload_json":
                    body = _loads(data)
                    continue
                m = re.fullmatch(r"files\[(\d+)\]|file(\d*)", name)
                if m:
                    index = int(m.group(1) or m.group(2) or 0)
                    files.append(
                        UploadedFile(
                            index=index,
                            filename=part.filename or f"file{index}",
                            content_type=part.headers.get(
                                "Content-Type", "application/octet-stream"
                            ),
                            data=bytes(data),
                        )
                    )
            if not isinstance(body, dict):
                raise APIError(400, 50109, "The request body contains invalid JSON.")
            return body, files
        raw = await request.read()
        if not raw:
            return {}, []
        body = _loads(raw)
        if not isinstance(body, dict):
            raise APIError(400, 50109, "The request body contains invalid JSON.")
        return body, []

    async def _json_any(self, request: web.Request) -> Any:
        raw = await request.read()
        return _loads(raw) if raw else None

    def _grant(self, request: web.Request) -> Grant | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.ctx.oauth.bearer(header[7:])
        return None

    def _is_bot(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.ctx.bot_token}"

    def _gateway_url(self, request: web.Request) -> str:
        host = request.host
        if host.split(":")[0] in ("discord.com", "discordapp.com"):
            return "wss://gateway.discord.gg"
        return f"{'wss' if request.secure else 'ws'}://{host}"

    def _app(self, request: web.Request) -> None:
        if _int(request.match_info["app_id"]) != self.world.application_id:
            raise MISSING_ACCESS

    def _guild_scope(self, request: web.Request) -> int | None:
        raw = request.match_info.get("guild_id")
        if raw is None:
            return None
        guild_id = _int(raw)
        if guild_id not in self.world.guilds:
            raise unknown("Guild", 10004)
        return guild_id

    # ------------------------------------------------------------------ gateway, users, application

    async def gateway_or_root(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.ctx.hub.handle(request, self._gateway_url(request))
        return await self.unmodelled(request)

    async def get_gateway(self, request: web.Request) -> JSON:
        return {"url": self._gateway_url(request)}

    async def get_gateway_bot(self, request: web.Request) -> JSON:
        return {
            "url": self._gateway_url(request),
            "shards": self.ctx.recommended_shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 1000 - min(len(self.ctx.hub.sessions), 999),
                "reset_after": 14400000,
                "max_concurrency": 1,
            },
        }

    async def get_me(self, request: web.Request) -> JSON:
        if self._is_bot(request):
            data = self.world.bot.to_json()
            data.update(verified=True, mfa_enabled=False, email=None, locale="en-US", bio="")
            return data
        grant = self._grant(request)
        if grant is None:
            raise UNAUTHORIZED
        return self.ctx.oauth.me(grant)

    async def get_my_guilds(self, request: web.Request) -> list[JSON]:
        if self._is_bot(request):
            world = self.world
            return [
                {
                    "id": str(g.id),
                    "name": g.name,
                    "icon": None,
                    "banner": None,
                    "owner": False,
                    "permissions": str(world.base_permissions(g.id, world.bot.id)),
                    "features": [],
                }
                for g in world.guilds.values()
            ]
        grant = self._grant(request)
        if grant is None:
            raise UNAUTHORIZED
        return self.ctx.oauth.guilds(grant)

    async def get_authorization(self, request: web.Request) -> JSON:
        grant = self._grant(request)
        if grant is None:
            raise UNAUTHORIZED
        return self.ctx.oauth.authorization_info(grant)

    async def get_user(self, request: web.Request) -> JSON:
        user = self.world.users.get(_int(request.match_info["user_id"]))
        if user is None:
            raise unknown("User", 10013)
        return user.to_json()

    async def create_dm(self, request: web.Request) -> JSON:
        body, _ = await self._body(request)
        raw = body.get("recipient_id")
        if raw is None:
            errors = FormErrors()
            errors.required(["recipient_id"])
            errors.raise_if_any()
        try:
            user_id = int(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            errors = FormErrors()
            errors.add(["recipient_id"], "NUMBER_TYPE_COERCE", f'Value "{raw}" is not snowflake.')
            errors.raise_if_any()
            raise
        if user_id not in self.world.users:
            raise unknown("User", 10013)
        if user_id == self.world.bot.id:
            raise APIError(400, 50007, "Cannot send messages to this user")
        return self.world.open_dm(user_id).to_json(self.world)

    async def get_application(self, request: web.Request) -> JSON:
        world = self.world
        app_id = str(world.application_id)
        client = self.ctx.oauth.clients.get(app_id)
        install = {"scopes": ["bot", "applications.commands"], "permissions": str(P.DEFAULT_BOT)}
        return {
            "id": app_id,
            "name": world.bot.username,
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "is_monetized": False,
            "is_verified": False,
            "is_discoverable": False,
            "hook": True,
            "storefront_available": False,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": token_hash(app_id) * 2,
            "flags": self.ctx.application_flags,
            "owner": world.app_owner.to_json(),
            "team": None,
            "redirect_uris": list(client.redirect_uris) if client else [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "event_webhooks_url": None,
            "event_webhooks_status": 1,
            "tags": [],
            "install_params": install,
            "integration_types_config": {"0": {"oauth2_install_params": install}},
            "approximate_guild_count": len(world.guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "bot": world.bot.to_json(),
        }

    # ------------------------------------------------------------------ application commands

    async def list_commands(self, request: web.Request) -> list[JSON]:
        self._app(request)
        guild_id = self._guild_scope(request)
        app_id = self.world.application_id
        return [c.to_json(app_id) for c in self.world.commands.in_scope(guild_id)]

    async def bulk_commands(self, request: web.Request) -> list[JSON]:
        self._app(request)
        guild_id = self._guild_scope(request)
        payload = await self._json_any(request)
        errors = FormErrors()
        if not isinstance(payload, list):
            errors.add([], "BASE_TYPE_ARRAY", "Must be an array.")
            errors.raise_if_any()
        assert isinstance(payload, list)
        if len(payload) > 100:
            errors.add([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        seen: set[tuple[str, int]] = set()
        for i, command in enumerate(payload):
            validate_command(command, errors, [i])
            if isinstance(command, dict) and command.get("type", 1) in (None, 1, 2, 3, 4):
                key = (str(command.get("name")), int(command.get("type") or 1))
                if key in seen:
                    errors.add(
                        [i, "name"],
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        f"Application command names must be unique ({key[0]})",
                    )
                seen.add(key)
        errors.raise_if_any()
        app_id = self.world.application_id
        return [c.to_json(app_id) for c in self.world.commands.bulk_overwrite(guild_id, payload)]

    async def create_command(self, request: web.Request) -> web.Response:
        self._app(request)
        guild_id = self._guild_scope(request)
        body, _ = await self._body(request)
        errors = FormErrors()
        validate_command(body, errors)
        errors.raise_if_any()
        command, created = self.world.commands.upsert(guild_id, body)
        return json_response(command.to_json(self.world.application_id), 201 if created else 200)

    def _command(self, request: web.Request) -> tuple[int | None, StoredCommand]:
        self._app(request)
        guild_id = self._guild_scope(request)
        command = self.world.commands.by_id(guild_id, _int(request.match_info["command_id"]))
        if command is None:
            raise unknown("application command", 10063)
        return guild_id, command

    async def get_command(self, request: web.Request) -> JSON:
        _, command = self._command(request)
        return command.to_json(self.world.application_id)

    async def edit_command(self, request: web.Request) -> JSON:
        guild_id, command = self._command(request)
        body, _ = await self._body(request)
        merged = {**command.data, **body}
        errors = FormErrors()
        validate_command(merged, errors)
        errors.raise_if_any()
        if merged["name"] != command.name:
            self.world.commands.delete(guild_id, command.id)
            updated, _ = self.world.commands.upsert(guild_id, merged)
            updated.id = command.id
        else:
            updated, _ = self.world.commands.upsert(guild_id, merged)
        return updated.to_json(self.world.application_id)

    async def delete_command(self, request: web.Request) -> web.Response:
        guild_id, command = self._command(request)
        self.world.commands.delete(guild_id, command.id)
        return no_content()

    def _permissions_json(self, guild_id: int, command_id: int) -> JSON | None:
        overrides = self.world.commands.overrides.get((guild_id, command_id))
        if not overrides:
            return None
        guild = self.world.guilds[guild_id]
        return {
            "id": str(command_id),
            "application_id": str(self.world.application_id),
            "guild_id": str(guild_id),
            "permissions": [
                {
                    "id": str(o.target_id),
                    "type": 1 if o.target_id in guild.roles else 2,
                    "permission": o.allow,
                }
                for o in overrides.values()
            ],
        }

    async def list_command_permissions(self, request: web.Request) -> list[JSON]:
        self._app(request)
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        result = []
        for gid, cid in self.world.commands.overrides:
            if gid == guild_id:
                data = self._permissions_json(gid, cid)
                if data is not None:
                    result.append(data)
        return result

    async def get_command_permissions(self, request: web.Request) -> JSON:
        self._app(request)
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        data = self._permissions_json(guild_id, _int(request.match_info["command_id"]))
        if data is None:
            raise unknown("application command permissions", 10066)
        return data

    # ------------------------------------------------------------------ interactions

    async def interaction_callback(self, request: web.Request) -> web.Response:
        body, files = await self._body(request)
        result = self.ctx.interactions.callback(
            _int(request.match_info["interaction_id"]), request.match_info["token"], body, files
        )
        if _truthy(request.query.get("with_response")):
            return json_response(result)
        return no_content()

    async def webhook_execute(self, request: web.Request) -> web.Response:
        body, files = await self._body(request)
        message = self.ctx.interactions.execute(
            _int(request.match_info["app_id"]), request.match_info["token"], body, files
        )
        # Interaction followups always return the message ("wait is always true").
        return json_response(self.world.message_wire(message))

    async def webhook_get(self, request: web.Request) -> RawJSON:
        m = request.match_info
        message = self.ctx.interactions.get(_int(m["app_id"]), m["token"], m["message_id"])
        return self.world.message_wire(message)

    async def webhook_edit(self, request: web.Request) -> RawJSON:
        m = request.match_info
        body, files = await self._body(request)
        message = self.ctx.interactions.edit(
            _int(m["app_id"]), m["token"], m["message_id"], body, files
        )
        return self.world.message_wire(message)

    async def webhook_delete(self, request: web.Request) -> web.Response:
        m = request.match_info
        self.ctx.interactions.delete(_int(m["app_id"]), m["token"], m["message_id"])
        return no_content()

    # ------------------------------------------------------------------ channels and messages

    def _channel(self, request: web.Request, need: int = 0) -> Channel:
        channel = self.world.channels.get(_int(request.match_info["channel_id"]))
        if channel is None:
            raise unknown("Channel", 10003)
        if channel.type == DM:
            return channel
        perms = self.world.channel_permissions(channel.id, self.world.bot.id)
        if not perms & P.VIEW_CHANNEL:
            raise MISSING_ACCESS
        if need and perms & need != need:
            raise MISSING_PERMISSIONS
        return channel

    def _channel_message(self, request: web.Request, channel: Channel) -> Message:
        message = self.world.get_message(channel.id, _int(request.match_info["message_id"]))
        if message is None or message.ephemeral:
            raise UNKNOWN_MESSAGE
        return message

    async def get_channel(self, request: web.Request) -> JSON:
        return self._channel(request).to_json(self.world)

    async def get_messages(self, request: web.Request) -> list[JSON]:
        channel = self._channel(request)
        if channel.type != DM and not (
            self.world.channel_permissions(channel.id, self.world.bot.id) & P.READ_MESSAGE_HISTORY
        ):
            return []
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            limit = 50
        if not 1 <= limit <= 100:
            errors = FormErrors()
            errors.add(["limit"], "NUMBER_TYPE_MAX", "int value should be <= 100 and >= 1.")
            errors.raise_if_any()
        history = [m for m in self.world.channel_history(channel.id) if not m.ephemeral]
        q = request.query
        if "before" in q:
            before = _int(q["before"])
            history = [m for m in history if m.id < before][-limit:]
        elif "after" in q:
            after = _int(q["after"])
            history = [m for m in history if m.id > after][:limit]
        elif "around" in q:
            around = _int(q["around"])
            older = [m for m in history if m.id < around][-(limit // 2) :] if limit > 1 else []
            newer = [m for m in history if m.id >= around][: limit - len(older)]
            history = older + newer
        else:
            history = history[-limit:]
        return [self.world.message_json(m) for m in reversed(history)]

    async def create_message(self, request: web.Request) -> RawJSON:
        world = self.world
        channel = self._channel(request, P.SEND_MESSAGES)
        if channel.type in (GUILD_CATEGORY, GUILD_FORUM):
            raise APIError(400, 50008, "Cannot send messages in a non-text channel")
        if channel.type == DM:
            recipient = world.users.get(channel.recipient_id or 0)
            if (
                recipient is None
                or recipient.bot
                or not recipient.dms_open
                or not world.shares_guild(recipient.id)
            ):
                raise CANNOT_DM
        body, files = await self._body(request)
        if (
            files
            and channel.type != DM
            and not world.channel_permissions(channel.id, world.bot.id) & P.ATTACH_FILES
        ):
            raise MISSING_PERMISSIONS
        errors = FormErrors()
        flags = validate_message(body, errors, allowed_flags=CREATE_FLAGS)
        reference = body.get("message_reference")
        ref: JSON | None = None
        if isinstance(reference, dict) and reference.get("message_id") is not None:
            target = world.get_message(
                int(reference.get("channel_id") or channel.id), _int(str(reference["message_id"]))
            )
            if target is None or target.ephemeral:
                if reference.get("fail_if_not_exists", True):
                    errors.add(
                        ["message_reference"],
                        "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                        "Unknown message",
                    )
            else:
                ref = {
                    "type": 0,
                    "channel_id": str(target.channel_id),
                    "message_id": str(target.id),
                }
                if target.guild_id is not None:
                    ref["guild_id"] = str(target.guild_id)
        errors.raise_if_any()
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            existing = self._nonces.get((channel.id, str(nonce)))
            if existing is not None and existing in world.messages:
                return world.message_wire(world.messages[existing])
        attachments = resolve_attachments(
            world, body, files, channel_id=channel.id, existing=None, ephemeral=False
        )
        ensure_not_empty(
            {**body, "flags": flags, "attachments": attachments}, has_files=bool(files)
        )
        message = world.create_message(
            channel_id=channel.id,
            author_id=world.bot.id,
            content=body.get("content") or "",
            embeds=body.get("embeds"),
            components=body.get("components"),
            flags=flags,
            allowed_mentions=body.get("allowed_mentions"),
            attachments=attachments or [],
            type=19 if ref is not None else 0,
            tts=bool(body.get("tts", False)),
            nonce=nonce,
            reference=ref,
        )
        if nonce is not None:
            self._nonces[(channel.id, str(nonce))] = message.id
        return world.message_wire(message)

    async def get_message(self, request: web.Request) -> RawJSON:
        channel = self._channel(request, 0 if self._is_dm(request) else P.READ_MESSAGE_HISTORY)
        return self.world.message_wire(self._channel_message(request, channel))

    def _is_dm(self, request: web.Request) -> bool:
        channel = self.world.channels.get(_int(request.match_info["channel_id"]))
        return channel is not None and channel.type == DM

    async def edit_message(self, request: web.Request) -> RawJSON:
        world = self.world
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        body, files = await self._body(request)
        if message.author_id != world.bot.id:
            if set(body) - {"flags"}:
                raise APIError(403, 50005, "Cannot edit a message authored by another user")
            if not world.channel_permissions(channel.id, world.bot.id) & P.MANAGE_MESSAGES:
                raise MISSING_PERMISSIONS
        errors = FormErrors()
        validate_message(body, errors, allowed_flags=CREATE_FLAGS)
        errors.raise_if_any()
        attachments = resolve_attachments(
            world, body, files, channel_id=channel.id, existing=message.attachments, ephemeral=False
        )
        after = {
            "content": body.get("content", message.content),
            "embeds": body.get("embeds", message.embeds),
            "components": body.get("components", message.components),
            "attachments": attachments if attachments is not None else message.attachments,
            "flags": message.flags,
        }
        ensure_not_empty(after)
        world.edit_message(message, edit_changes(body, attachments))
        return world.message_wire(message)

    async def delete_message(self, request: web.Request) -> web.Response:
        world = self.world
        channel = self._channel(request)
        message = self._channel_message(request, channel)
        if message.author_id != world.bot.id and channel.type != DM:
            if not world.channel_permissions(channel.id, world.bot.id) & P.MANAGE_MESSAGES:
                raise MISSING_PERMISSIONS
        elif message.author_id != world.bot.id:
            raise APIError(403, 50003, "Cannot execute action on a DM channel")
        world.delete_message(message)
        return no_content()

    async def typing(self, request: web.Request) -> web.Response:
        self._channel(request, P.SEND_MESSAGES)
        return no_content()

    # ------------------------------------------------------------------ guilds

    async def get_guild(self, request: web.Request) -> JSON:
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        return self.world.guild_json(
            guild_id, with_counts=_truthy(request.query.get("with_counts"))
        )

    async def get_guild_channels(self, request: web.Request) -> list[JSON]:
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        world = self.world
        return [world.channels[c].to_json(world) for c in world.guilds[guild_id].channel_ids]

    async def get_guild_roles(self, request: web.Request) -> list[JSON]:
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        return [r.to_json() for r in self.world.guilds[guild_id].roles.values()]

    async def list_members(self, request: web.Request) -> list[JSON]:
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        if not self.ctx.privileged_intents & GUILD_MEMBERS:
            raise MISSING_ACCESS
        try:
            limit = int(request.query.get("limit", "1"))
        except ValueError:
            limit = 1
        if not 1 <= limit <= 1000:
            errors = FormErrors()
            errors.add(["limit"], "NUMBER_TYPE_MAX", "int value should be <= 1000 and >= 1.")
            errors.raise_if_any()
        after = _int(request.query.get("after", "0"))
        members = sorted(self.world.guilds[guild_id].members.values(), key=lambda m: m.user_id)
        return [m.to_json(self.world) for m in members if m.user_id > after][:limit]

    async def get_member(self, request: web.Request) -> JSON:
        guild_id = self._guild_scope(request)
        assert guild_id is not None
        member = self.world.guilds[guild_id].members.get(_int(request.match_info["user_id"]))
        if member is None:
            raise unknown("Member", 10007)
        return member.to_json(self.world)

    # ------------------------------------------------------------------ CDN and fallback

    async def cdn(self, request: web.Request) -> web.Response:
        blob = self.world.attachments.get(_int(request.match_info["attachment_id"], default=0))
        if blob is None or blob.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=blob.data, headers={"Content-Type": blob.content_type})

    async def unmodelled(self, request: web.Request) -> web.Response:
        self.ctx.unmodelled.append((request.method, request.path))
        if self._path_known(request):
            return json_response({"message": "405: Method Not Allowed", "code": 0}, 405)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    def _path_known(self, request: web.Request) -> bool:
        path = request.path
        for resource in request.app.router.resources():
            info = resource.get_info()
            if info.get("path") == path and path != "/":
                return True
            pattern = info.get("pattern")
            if (
                isinstance(pattern, re.Pattern)
                and "tail" not in pattern.pattern
                and pattern.fullmatch(path)
            ):
                return True
        return False


def _loads(raw: bytes | bytearray | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise APIError(400, 50109, "The request body contains invalid JSON.") from None


def _int(value: str, *, default: int | None = None) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        if default is not None:
            return default
        errors = FormErrors()
        errors.add(["id"], "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
        errors.raise_if_any()
        raise


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "t", "yes", "y")
