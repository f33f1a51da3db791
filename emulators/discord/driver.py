"""Acting as Discord users: slash commands, autocomplete, buttons, selects, modals, messages.

Every call builds the interaction exactly as the Discord client would send it and refuses
(with :class:`EmulatorError`) what a real user could not do: an un-synced command, an unknown
option, a disabled button, a message they cannot see, a channel they cannot view.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import permissions as P
from .errors import EmulatorError
from .gateway import GatewayHub
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    Callback,
    InteractionManager,
    InteractionTimeout,
    PendingInteraction,
)
from .messages import ATTACHMENT_SIZE_LIMIT, attachment_json, store_upload
from .state import (
    BUTTON,
    CHANNEL_SELECT,
    DM,
    JSON,
    LABEL,
    MENTIONABLE_SELECT,
    OPTION_ATTACHMENT,
    OPTION_BOOLEAN,
    OPTION_CHANNEL,
    OPTION_INTEGER,
    OPTION_MENTIONABLE,
    OPTION_NUMBER,
    OPTION_ROLE,
    OPTION_STRING,
    OPTION_SUB_COMMAND,
    OPTION_SUB_COMMAND_GROUP,
    OPTION_USER,
    ROLE_SELECT,
    SELECT_TYPES,
    STRING_SELECT,
    TEXT_DISPLAY,
    TEXT_INPUT,
    TEXT_LIKE,
    USER_SELECT,
    Channel,
    Message,
    MessageEvent,
    StoredCommand,
    World,
    dumps,
)

RADIO_GROUP = 21
CHECKBOX_GROUP = 22
CHECKBOX = 23
FILE_UPLOAD = 19

#: Discord's INTEGER options take -2^53+1 .. 2^53-1 and NUMBER options -2^53 .. 2^53.
MAX_SAFE_NUMBER = 2**53

MessageRef = Message | int
OptionValue = Any


@dataclass(frozen=True)
class InteractionResponse:
    """What the bot answered to an interaction (its callback)."""

    type: int
    name: str
    message: Message | None
    ephemeral: bool
    deferred: bool
    modal: JSON | None
    choices: list[JSON] | None


class InteractionResult:
    """Handle on one interaction sent to the bot: wait for and read what the bot answered."""

    def __init__(self, driver: Driver, pending: PendingInteraction) -> None:
        self._driver = driver
        self._pending = pending

    def __repr__(self) -> str:
        return f"<InteractionResult id={self.id} callback={self.callback}>"

    @property
    def id(self) -> int:
        return self._pending.id

    @property
    def token(self) -> str:
        return self._pending.token

    @property
    def user_id(self) -> int:
        return self._pending.user_id

    @property
    def shard_id(self) -> int | None:
        """The shard whose gateway session received the interaction."""
        return self._pending.shard_id

    @property
    def payload(self) -> JSON:
        """The INTERACTION_CREATE ``d`` exactly as it was sent to the bot."""
        return self._pending.payload

    @property
    def callback(self) -> Callback | None:
        return self._pending.callback

    @property
    def pending(self) -> PendingInteraction:
        return self._pending

    async def response(self, timeout: float = 5.0) -> InteractionResponse:  # noqa: ASYNC109
        """Wait for the callback. For types 4 and 7 ``message`` is the message shown."""
        callback = await self._pending.wait(lambda: self._pending.callback, timeout, "callback")
        message = None
        if (
            callback.type in (CHANNEL_MESSAGE, UPDATE_MESSAGE, DEFERRED_CHANNEL_MESSAGE)
            and callback.message_id
        ):
            message = self._driver.world.messages.get(callback.message_id)
        return InteractionResponse(
            type=callback.type,
            name=callback.name,
            message=message,
            ephemeral=callback.ephemeral,
            deferred=callback.deferred,
            modal=callback.modal,
            choices=callback.choices,
        )

    async def message(self, timeout: float = 5.0) -> Message:  # noqa: ASYNC109
        """The message this interaction shows once it has content.

        After a deferral that is the edited original response; after a deferred update, the
        component's message once the bot has edited it.
        """
        world = self._driver.world
        pending = self._pending

        def visible() -> Message | None:
            callback = pending.callback
            if callback is None:
                return None
            if callback.type in (AUTOCOMPLETE_RESULT, MODAL):
                raise EmulatorError(
                    f"the bot answered with {callback.name}, which shows no message"
                )
            message = world.messages.get(pending.original_message_id or 0)
            if message is None:
                return None
            if message.deleted:
                raise EmulatorError(f"the bot deleted the response message {message.id}")
            if callback.type == DEFERRED_CHANNEL_MESSAGE and message.loading:
                return None
            if (
                callback.type == DEFERRED_UPDATE_MESSAGE
                and len(message.edits) <= pending.source_edits_at_start
            ):
                return None
            return message

        return await pending.wait(visible, timeout, "message content")

    @property
    def followups(self) -> list[Message]:
        world = self._driver.world
        return [
            world.messages[m] for m in self._pending.followup_ids if not world.messages[m].deleted
        ]

    async def followup(self, index: int = 0, timeout: float = 5.0) -> Message:  # noqa: ASYNC109
        """Wait for the ``index``-th followup message (0 = the first one)."""
        world = self._driver.world
        pending = self._pending

        def ready() -> Message | None:
            if len(pending.followup_ids) > index:
                return world.messages[pending.followup_ids[index]]
            return None

        return await pending.wait(ready, timeout, f"followup #{index + 1}")

    @property
    def original(self) -> Message | None:
        """The current original response message, if any."""
        return self._driver.world.messages.get(self._pending.original_message_id or 0)

    @property
    def ephemeral(self) -> bool:
        callback = self._require_callback()
        return callback.ephemeral

    @property
    def modal(self) -> JSON | None:
        return self._require_callback().modal

    @property
    def choices(self) -> list[JSON] | None:
        return self._require_callback().choices

    def _require_callback(self) -> Callback:
        if self._pending.callback is None:
            raise EmulatorError("the bot has not answered yet; await result.response() first")
        return self._pending.callback


class Driver:
    """The in-process driving API shared by tests, benchmarks and the terminal chat."""

    def __init__(self, world: World, hub: GatewayHub, interactions: InteractionManager) -> None:
        self.world = world
        self.hub = hub
        self.interactions = interactions
        self.default_guild_id: int | None = None
        self._message_waiters: list[tuple[Callable[[Message], bool], asyncio.Future[Message]]] = []
        # Permissions computed during one driving call (the world cannot change within it).
        self._perm_memo: dict[tuple[int, int], int] = {}
        world.subscribe(self._on_message_event)

    def _perms(self, channel_id: int, user_id: int) -> int:
        key = (channel_id, user_id)
        perms = self._perm_memo.get(key)
        if perms is None:
            perms = self._perm_memo[key] = self.world.channel_permissions(channel_id, user_id)
        return perms

    # ------------------------------------------------------------------ reading

    def messages(self, channel_id: int, *, visible_to: int | None = None) -> list[Message]:
        """Messages in a channel, oldest first; ``visible_to`` hides others' ephemeral ones."""
        self.world.channel(channel_id)
        return self.world.channel_history(channel_id, visible_to=visible_to)

    def dm_messages(self, user_id: int) -> list[Message]:
        """The bot's DM conversation with a user (empty if none was opened)."""
        self.world.user(user_id)
        channel_id = self.world.dm_channels.get(user_id)
        return [] if channel_id is None else self.world.channel_history(channel_id)

    def message(self, message_id: int) -> Message:
        try:
            return self.world.messages[message_id]
        except KeyError:
            raise EmulatorError(f"no message with id {message_id}") from None

    async def wait_for_message(
        self,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        include_existing: bool = False,
    ) -> Message:
        """Wait for a message created or edited from now on that matches ``predicate``.

        With ``include_existing`` the messages already stored are checked first, oldest first.
        """
        check = predicate or (lambda m: True)
        if include_existing:
            for message in list(self.world.messages.values()):
                if not message.deleted and check(message):
                    return message
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        entry = (check, future)
        self._message_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise InteractionTimeout(f"no matching message within {timeout:g}s") from None
        finally:
            with contextlib.suppress(ValueError):
                self._message_waiters.remove(entry)

    def _on_message_event(self, event: MessageEvent, message: Message) -> None:
        if event == "delete" or not self._message_waiters:
            return
        for check, future in list(self._message_waiters):
            if future.done():
                continue
            try:
                matched = check(message)
            except Exception as exc:  # a broken predicate fails the waiting test, visibly
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(message)

    # ------------------------------------------------------------------ posting as a user

    async def post(self, user_id: int, channel_id: int, content: str) -> Message:
        """A user writes a message in a channel (or the bot's DM): MESSAGE_CREATE to the bot."""
        self._perm_memo.clear()
        channel = self.world.channel(channel_id)
        self._check_can_view(user_id, channel, need=P.SEND_MESSAGES)
        if not content.strip():
            raise EmulatorError("Discord does not send empty messages")
        if len(content) > 2000:
            raise EmulatorError("Discord's client refuses messages over 2000 characters")
        return self.world.create_message(channel_id=channel.id, author_id=user_id, content=content)

    # ------------------------------------------------------------------ context

    def _context(
        self, user_id: int, guild_id: int | None, channel_id: int | None, dm: bool
    ) -> tuple[int | None, Channel]:
        world = self.world
        user = world.user(user_id)
        if user.bot:
            raise EmulatorError("bots cannot use application commands or components")
        if dm:
            if guild_id is not None or channel_id is not None:
                raise EmulatorError("dm=True takes no guild_id or channel_id")
            return None, world.open_dm(user_id)
        if channel_id is not None:
            channel = world.channel(channel_id)
            if channel.type == DM:
                if channel.recipient_id != user_id:
                    raise EmulatorError(f"channel {channel_id} is another user's DM with the bot")
                return None, channel
            if guild_id is not None and channel.guild_id != guild_id:
                raise EmulatorError(f"channel {channel_id} is not in guild {guild_id}")
            self._check_can_view(user_id, channel)
            return channel.guild_id, channel
        if guild_id is None:
            default = self.default_guild_id
            if default is None or user_id not in world.guilds[default].members:
                return None, world.open_dm(user_id)
            guild_id = default
        guild = world.guild(guild_id)
        world.member(guild_id, user_id)
        for cid in guild.channel_ids:
            channel = world.channels[cid]
            if channel.type in TEXT_LIKE and self._perms(cid, user_id) & P.VIEW_CHANNEL:
                return guild_id, channel
        raise EmulatorError(f"user {user_id} can see no text channel in guild {guild_id}")

    def _check_can_view(self, user_id: int, channel: Channel, *, need: int = 0) -> None:
        world = self.world
        if channel.type == DM:
            if channel.recipient_id != user_id:
                raise EmulatorError(f"user {user_id} cannot see another user's DM with the bot")
            return
        if channel.guild_id is None or user_id not in world.guilds[channel.guild_id].members:
            raise EmulatorError(
                f"user {user_id} is not a member of the guild of channel {channel.id}"
            )
        if channel.type not in TEXT_LIKE:
            raise EmulatorError(f"channel {channel.id} is not a text channel")
        perms = self._perms(channel.id, user_id)
        if not perms & P.VIEW_CHANNEL:
            raise EmulatorError(f"user {user_id} cannot view channel #{channel.name}")
        if need and (perms & need) != need:
            raise EmulatorError(f"user {user_id} lacks permission {need} in #{channel.name}")

    def _base_payload(
        self, itype: int, user_id: int, guild_id: int | None, channel: Channel, data: JSON
    ) -> JSON:
        world = self.world
        iid = world.next_id()
        token = _interaction_token(iid)
        user_perms = str(self._perms(channel.id, user_id))
        channel_json = channel.to_json(world)
        if guild_id is not None:
            channel_json["permissions"] = user_perms
        payload: JSON = {
            "app_permissions": str(self._perms(channel.id, world.bot.id)),
            "application_id": str(world.application_id),
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "authorizing_integration_owners": {"0": str(guild_id) if guild_id else "0"},
            "channel": channel_json,
            "channel_id": str(channel.id),
            "context": 0 if guild_id else 1,
            "data": data,
            "entitlement_sku_ids": [],
            "entitlements": [],
            "id": str(iid),
            "locale": world.users[user_id].locale,
            "token": token,
            "type": itype,
            "version": 1,
        }
        if guild_id is not None:
            guild = world.guilds[guild_id]
            payload["guild"] = {
                "features": [],
                "id": str(guild_id),
                "locale": guild.preferred_locale,
            }
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = guild.preferred_locale
            member = world.member(guild_id, user_id).to_json(world)
            member["permissions"] = user_perms
            payload["member"] = member
        else:
            payload["user"] = world.users[user_id].to_json()
        return payload

    def _send(
        self,
        payload: JSON,
        *,
        user_id: int,
        guild_id: int | None,
        channel: Channel,
        command_name: str | None = None,
        source_message_id: int | None = None,
        origin: PendingInteraction | None = None,
    ) -> InteractionResult:
        session = self.hub.session_for(guild_id)
        wire = dumps(payload)
        pending = PendingInteraction(
            id=int(payload["id"]),
            token=payload["token"],
            type=payload["type"],
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel.id,
            payload=wire,
            command_name=command_name,
            source_message_id=source_message_id,
            origin=origin,
        )
        pending.shard_id = session.shard_id
        self.interactions.register(pending)
        session.dispatch("INTERACTION_CREATE", wire)
        return InteractionResult(self, pending)

    # ------------------------------------------------------------------ application commands

    async def slash(
        self,
        user_id: int,
        command: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        guild_id: int | None = None,
        channel_id: int | None = None,
        dm: bool = False,
    ) -> InteractionResult:
        """Run ``/command`` ("paper reset" = subcommand) as ``user_id``; returns without waiting."""
        self._perm_memo.clear()
        gid, channel = self._context(user_id, guild_id, channel_id, dm)
        stored, path, leaf = self._resolve_command(user_id, command, gid, channel)
        resolved: JSON = {}
        values = self._build_options(
            leaf, dict(options or {}), gid, channel, user_id, resolved, focused=None
        )
        data = self._command_data(stored, path, values, resolved, gid)
        payload = self._base_payload(APPLICATION_COMMAND, user_id, gid, channel, data)
        return self._send(
            payload, user_id=user_id, guild_id=gid, channel=channel, command_name=" ".join(path)
        )

    async def autocomplete(
        self,
        user_id: int,
        command: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        focused: str,
        guild_id: int | None = None,
        channel_id: int | None = None,
        dm: bool = False,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[JSON]:
        """Type into an autocomplete option and return the choices the bot suggested."""
        result = await self.start_autocomplete(
            user_id,
            command,
            options,
            focused=focused,
            guild_id=guild_id,
            channel_id=channel_id,
            dm=dm,
        )
        response = await result.response(timeout)
        if response.choices is None:
            raise EmulatorError(f"the bot answered autocomplete with {response.name}")
        return response.choices

    async def start_autocomplete(
        self,
        user_id: int,
        command: str,
        options: Mapping[str, OptionValue] | None = None,
        *,
        focused: str,
        guild_id: int | None = None,
        channel_id: int | None = None,
        dm: bool = False,
    ) -> InteractionResult:
        """Like :meth:`autocomplete` but returns the interaction without waiting."""
        self._perm_memo.clear()
        gid, channel = self._context(user_id, guild_id, channel_id, dm)
        stored, path, leaf = self._resolve_command(user_id, command, gid, channel)
        given = dict(options or {})
        given.setdefault(focused, "")
        resolved: JSON = {}
        values = self._build_options(leaf, given, gid, channel, user_id, resolved, focused=focused)
        data = self._command_data(stored, path, values, resolved, gid)
        payload = self._base_payload(AUTOCOMPLETE, user_id, gid, channel, data)
        return self._send(
            payload, user_id=user_id, guild_id=gid, channel=channel, command_name=" ".join(path)
        )

    def _resolve_command(
        self, user_id: int, command: str, guild_id: int | None, channel: Channel
    ) -> tuple[StoredCommand, list[str], JSON]:
        tokens = command.strip().lstrip("/").split()
        if not tokens:
            raise EmulatorError("empty command name")
        world = self.world
        stored = world.commands.find_chat_input(tokens[0], guild_id)
        if stored is None:
            known = world.commands.all_names()
            raise EmulatorError(
                f"/{tokens[0]} is not a synced command here (Discord would not offer it); "
                f"synced: {known or 'none - did the bot call tree.sync()?'}"
            )
        data = stored.data
        if stored.guild_id is None:
            contexts = data.get("contexts") or [0, 1, 2]
            if guild_id is not None and 0 not in contexts:
                raise EmulatorError(f"/{stored.name} is not available in servers")
            if guild_id is None and 1 not in contexts:
                raise EmulatorError(f"/{stored.name} is not available in DMs (guild only)")
        if guild_id is not None:
            self._check_command_permission(stored, guild_id, user_id, channel)
        node: JSON = data
        path = [stored.name]
        for token in tokens[1:]:
            subs = [
                o
                for o in node.get("options", [])
                if o["type"] in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)
            ]
            match = next((o for o in subs if o["name"] == token), None)
            if match is None:
                names = [o["name"] for o in subs]
                raise EmulatorError(
                    f"/{' '.join(path)} has no subcommand {token!r}; it has {names}"
                )
            node = match
            path.append(token)
        remaining = [
            o
            for o in node.get("options", [])
            if o["type"] in (OPTION_SUB_COMMAND, OPTION_SUB_COMMAND_GROUP)
        ]
        if remaining:
            names = [o["name"] for o in remaining]
            raise EmulatorError(f"/{' '.join(path)} needs a subcommand: one of {names}")
        return stored, path, node

    def _check_command_permission(
        self, stored: StoredCommand, guild_id: int, user_id: int, channel: Channel
    ) -> None:
        world = self.world
        perms = self._perms(channel.id, user_id)
        if not perms & P.USE_APPLICATION_COMMANDS:
            raise EmulatorError(f"user {user_id} lacks Use Application Commands in #{channel.name}")
        base = world.base_permissions(guild_id, user_id)
        if base & P.ADMINISTRATOR:
            return
        overrides = world.commands.overrides.get((guild_id, stored.id), {})
        member = world.member(guild_id, user_id)
        own = overrides.get(user_id)
        if own is not None:
            allowed = own.allow
        else:
            role_rules = [overrides[r].allow for r in member.roles if r in overrides]
            if role_rules:
                allowed = any(role_rules)
            elif guild_id in overrides:
                allowed = overrides[guild_id].allow
            else:
                required = stored.data.get("default_member_permissions")
                allowed = required is None or (base & int(required)) == int(required)
        if not allowed:
            raise EmulatorError(
                f"/{stored.name} is hidden from user {user_id} (default_member_permissions or a "
                "server override); Discord would not let them run it"
            )

    def _command_data(
        self,
        stored: StoredCommand,
        path: list[str],
        values: list[JSON],
        resolved: JSON,
        guild_id: int | None,
    ) -> JSON:
        options: list[JSON] = values
        node = stored.data
        nested: list[tuple[str, int]] = []
        for name in path[1:]:
            node = next(o for o in node["options"] if o["name"] == name)
            nested.append((name, node["type"]))
        for name, otype in reversed(nested):
            options = [{"name": name, "type": otype, "options": options}]
        data: JSON = {"id": str(stored.id), "name": stored.name, "type": 1}
        if options:
            data["options"] = options
        if resolved:
            data["resolved"] = resolved
        if stored.guild_id is not None:
            data["guild_id"] = str(stored.guild_id)
        return data

    def _build_options(
        self,
        leaf: JSON,
        given: dict[str, OptionValue],
        guild_id: int | None,
        channel: Channel,
        user_id: int,
        resolved: JSON,
        *,
        focused: str | None,
    ) -> list[JSON]:
        definitions = {o["name"]: o for o in leaf.get("options", [])}
        for name in given:
            if name not in definitions:
                raise EmulatorError(f"unknown option {name!r}; the command has {list(definitions)}")
        if focused is not None:
            definition = definitions.get(focused)
            if definition is None or not definition.get("autocomplete"):
                raise EmulatorError(f"option {focused!r} has no autocomplete")
        result: list[JSON] = []
        for name, definition in definitions.items():
            if name not in given:
                if definition.get("required") and focused is None:
                    raise EmulatorError(f"required option {name!r} is missing")
                continue
            otype = definition["type"]
            if name == focused:
                result.append(
                    {"name": name, "type": otype, "value": str(given[name]), "focused": True}
                )
                continue
            value = self._option_value(
                definition, given[name], guild_id, channel, user_id, resolved
            )
            result.append({"name": name, "type": otype, "value": value})
        return result

    def _option_value(
        self,
        definition: JSON,
        raw: OptionValue,
        guild_id: int | None,
        channel: Channel,
        user_id: int,
        resolved: JSON,
    ) -> Any:
        name = definition["name"]
        otype = definition["type"]
        world = self.world
        if otype == OPTION_STRING:
            if not isinstance(raw, str):
                raise EmulatorError(f"option {name!r} is a string option; got {raw!r}")
            if not raw.strip():
                raise EmulatorError(f"option {name!r} cannot be blank")
            low, high = definition.get("min_length", 0), definition.get("max_length", 6000)
            if not low <= len(raw) <= high:
                raise EmulatorError(f"option {name!r} must be {low}-{high} characters")
            value: Any = raw
        elif otype == OPTION_INTEGER:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise EmulatorError(f"option {name!r} is an integer option; got {raw!r}")
            if abs(raw) >= MAX_SAFE_NUMBER:
                raise EmulatorError(f"option {name!r}: Discord takes integers within ±(2^53 - 1)")
            value = raw
        elif otype == OPTION_NUMBER:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise EmulatorError(f"option {name!r} is a number option; got {raw!r}")
            # The client sends no NaN or infinity (not even valid JSON) and nothing past ±2^53.
            if not math.isfinite(raw) or abs(raw) > MAX_SAFE_NUMBER:
                raise EmulatorError(f"option {name!r}: Discord takes numbers within ±2^53")
            value = raw
        elif otype == OPTION_BOOLEAN:
            if not isinstance(raw, bool):
                raise EmulatorError(f"option {name!r} is a boolean option; got {raw!r}")
            value = raw
        elif otype in (OPTION_USER, OPTION_MENTIONABLE, OPTION_ROLE):
            target = _snowflake_of(raw)
            if otype != OPTION_ROLE and target in world.users:
                self._resolve_user(target, guild_id, channel, resolved)
            elif (
                otype != OPTION_USER
                and guild_id is not None
                and target in world.guilds[guild_id].roles
            ):
                resolved.setdefault("roles", {})[str(target)] = (
                    world.guilds[guild_id].roles[target].to_json()
                )
            else:
                kind = {
                    OPTION_USER: "user",
                    OPTION_ROLE: "role",
                    OPTION_MENTIONABLE: "user or role",
                }[otype]
                raise EmulatorError(f"option {name!r}: {raw!r} is not a {kind} here")
            value = str(target)
        elif otype == OPTION_CHANNEL:
            target = _snowflake_of(raw)
            target_channel = world.channels.get(target)
            if target_channel is None or (
                guild_id is not None and target_channel.guild_id != guild_id
            ):
                raise EmulatorError(f"option {name!r}: {raw!r} is not a channel of this server")
            allowed_types = definition.get("channel_types")
            if allowed_types and target_channel.type not in allowed_types:
                raise EmulatorError(f"option {name!r} accepts channel types {allowed_types} only")
            resolved.setdefault("channels", {})[str(target)] = _resolved_channel(
                world.partial_channel_json(target, user_id)
            )
            value = str(target)
        elif otype == OPTION_ATTACHMENT:
            filename, data, content_type = _upload_of(name, raw)
            blob = store_upload(world, filename, data, content_type)
            resolved.setdefault("attachments", {})[str(blob.id)] = attachment_json(
                world, blob, channel.id, ephemeral=True
            )
            value = str(blob.id)
        else:
            raise EmulatorError(f"option {name!r} has unsupported type {otype}")
        choices = definition.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise EmulatorError(
                f"option {name!r} only offers {[c['value'] for c in choices]}; got {value!r}"
            )
        if otype in (OPTION_INTEGER, OPTION_NUMBER):
            low, high = definition.get("min_value"), definition.get("max_value")
            if (low is not None and value < low) or (high is not None and value > high):
                raise EmulatorError(f"option {name!r} must be between {low} and {high}")
        return value

    def _resolve_user(
        self, target: int, guild_id: int | None, channel: Channel, resolved: JSON
    ) -> None:
        world = self.world
        resolved.setdefault("users", {})[str(target)] = world.users[target].to_json()
        if guild_id is not None and target in world.guilds[guild_id].members:
            member = world.member_json(guild_id, target, channel_id=channel.id)
            member.pop("user", None)
            for key in ("deaf", "mute"):
                member.pop(key, None)
            resolved.setdefault("members", {})[str(target)] = member

    # ------------------------------------------------------------------ components

    def _visible_message(self, user_id: int, message: MessageRef) -> Message:
        world = self.world
        mid = message if isinstance(message, int) else message.id
        stored = world.messages.get(mid)
        if stored is None or stored.deleted:
            raise EmulatorError(f"message {mid} does not exist (or was deleted)")
        if stored.visible_to is not None and stored.visible_to != user_id:
            raise EmulatorError(
                f"message {mid} is ephemeral: only user {stored.visible_to} can see it"
            )
        if stored.author_id != world.bot.id:
            raise EmulatorError("only the bot's messages carry its components")
        channel = world.channels[stored.channel_id]
        if channel.type != DM:
            self._check_can_view(user_id, channel)
        elif channel.recipient_id != user_id:
            raise EmulatorError(f"message {mid} is in another user's DM with the bot")
        return stored

    def _component_payload(
        self, user_id: int, message: Message, data: JSON
    ) -> tuple[JSON, int | None, Channel]:
        channel = self.world.channels[message.channel_id]
        guild_id = channel.guild_id
        payload = self._base_payload(MESSAGE_COMPONENT, user_id, guild_id, channel, data)
        payload["message"] = self.world.message_json(message)
        return payload, guild_id, channel

    async def click(
        self,
        user_id: int,
        message: MessageRef,
        custom_id: str | None = None,
        *,
        label: str | None = None,
    ) -> InteractionResult:
        """Press a button (found by ``custom_id`` or by its visible ``label``)."""
        self._perm_memo.clear()
        stored = self._visible_message(user_id, message)
        buttons = [c for c in stored.iter_components() if c.get("type") == BUTTON]
        if custom_id is not None:
            matches = [b for b in buttons if b.get("custom_id") == custom_id]
        elif label is not None:
            matches = [b for b in buttons if b.get("label") == label]
        else:
            raise EmulatorError("click() needs custom_id or label")
        if not matches:
            shown = [(b.get("custom_id"), b.get("label")) for b in buttons]
            raise EmulatorError(
                f"no button {custom_id or label!r} on message {stored.id}; buttons: {shown}"
            )
        if len(matches) > 1:
            raise EmulatorError(f"several buttons are labelled {label!r}; use custom_id")
        button = matches[0]
        if button.get("disabled"):
            raise EmulatorError(
                f"button {button.get('label') or button.get('custom_id')!r} is disabled"
            )
        if button.get("style") == 5:
            raise EmulatorError(
                f"a link button opens {button.get('url')} in the browser; no interaction"
            )
        if button.get("style") == 6:
            raise EmulatorError("a premium button opens the store; no interaction")
        data = {"custom_id": button["custom_id"], "component_type": BUTTON}
        payload, guild_id, channel = self._component_payload(user_id, stored, data)
        return self._send(
            payload,
            user_id=user_id,
            guild_id=guild_id,
            channel=channel,
            source_message_id=stored.id,
        )

    async def select(
        self,
        user_id: int,
        message: MessageRef,
        values: Sequence[Any],
        custom_id: str | None = None,
    ) -> InteractionResult:
        """Choose ``values`` in a select menu (the only one, or the one with ``custom_id``)."""
        self._perm_memo.clear()
        stored = self._visible_message(user_id, message)
        selects = stored.selects()
        if custom_id is not None:
            selects = [s for s in selects if s.get("custom_id") == custom_id]
        if not selects:
            raise EmulatorError(f"no select {custom_id!r} on message {stored.id}")
        if len(selects) > 1:
            raise EmulatorError("the message has several selects; pass custom_id")
        select = selects[0]
        if select.get("disabled"):
            raise EmulatorError(f"select {select.get('custom_id')!r} is disabled")
        channel = self.world.channels[stored.channel_id]
        resolved: JSON = {}
        chosen = self._select_values(select, list(values), channel, user_id, resolved)
        data: JSON = {
            "custom_id": select["custom_id"],
            "component_type": select["type"],
            "values": chosen,
        }
        if resolved:
            data["resolved"] = resolved
        payload, guild_id, channel = self._component_payload(user_id, stored, data)
        return self._send(
            payload,
            user_id=user_id,
            guild_id=guild_id,
            channel=channel,
            source_message_id=stored.id,
        )

    def _select_values(
        self, select: JSON, values: list[Any], channel: Channel, user_id: int, resolved: JSON
    ) -> list[str]:
        world = self.world
        low = select.get("min_values", 1)
        high = select.get("max_values", 1)
        if not low <= len(values) <= high:
            raise EmulatorError(
                f"select {select.get('custom_id')!r} takes {low}-{high} values; got {len(values)}"
            )
        stype = select["type"]
        if stype == STRING_SELECT:
            offered = [o["value"] for o in select.get("options", [])]
            for value in values:
                if value not in offered:
                    raise EmulatorError(
                        f"{value!r} is not an option of the select; options: {offered}"
                    )
            if len(set(values)) != len(values):
                raise EmulatorError("a select value can be chosen only once")
            return [str(v) for v in values]
        guild_id = channel.guild_id
        chosen: list[str] = []
        for raw in values:
            target = _snowflake_of(raw)
            if stype in (USER_SELECT, MENTIONABLE_SELECT) and target in world.users:
                self._resolve_user(target, guild_id, channel, resolved)
            elif (
                stype in (ROLE_SELECT, MENTIONABLE_SELECT)
                and guild_id is not None
                and target in world.guilds[guild_id].roles
            ):
                resolved.setdefault("roles", {})[str(target)] = (
                    world.guilds[guild_id].roles[target].to_json()
                )
            elif (
                stype == CHANNEL_SELECT
                and target in world.channels
                and world.channels[target].guild_id == guild_id
            ):
                types = select.get("channel_types")
                if types and world.channels[target].type not in types:
                    raise EmulatorError(f"the select accepts channel types {types} only")
                resolved.setdefault("channels", {})[str(target)] = _resolved_channel(
                    world.partial_channel_json(target, user_id)
                )
            else:
                raise EmulatorError(f"{raw!r} cannot be chosen in a select of type {stype}")
            chosen.append(str(target))
        return chosen

    # ------------------------------------------------------------------ modals

    async def submit_modal(
        self,
        user_id: int,
        interaction_or_modal: InteractionResult | JSON,
        values: Mapping[str, Any],
    ) -> InteractionResult:
        """Fill in and submit a modal the bot showed to ``user_id``.

        ``values`` maps each input's custom_id to text (text inputs, radio groups), a list
        (selects, checkbox groups), a bool (checkbox) or ``(filename, bytes)`` items (file upload).
        """
        self._perm_memo.clear()
        origin = self._modal_origin(user_id, interaction_or_modal)
        modal = origin.callback.modal if origin.callback else None
        assert modal is not None
        if origin.user_id != user_id:
            raise EmulatorError(f"the modal was shown to user {origin.user_id}, not {user_id}")
        if origin.modal_submitted:
            raise EmulatorError("this modal was already submitted (Discord closes it on submit)")
        channel = self.world.channels[origin.channel_id]
        guild_id = channel.guild_id
        given = dict(values)
        resolved: JSON = {}
        components = [
            self._modal_component(c, given, channel, user_id, resolved) for c in modal["components"]
        ]
        if given:
            raise EmulatorError(f"the modal has no inputs {sorted(given)}")
        data: JSON = {"custom_id": modal["custom_id"], "components": components}
        if resolved:
            data["resolved"] = resolved
        payload = self._base_payload(MODAL_SUBMIT, user_id, guild_id, channel, data)
        source = None
        if origin.type == MESSAGE_COMPONENT and origin.source_message_id is not None:
            message = self.world.messages.get(origin.source_message_id)
            if message is not None and not message.deleted:
                payload["message"] = self.world.message_json(message)
                source = message.id
        origin.modal_submitted = True
        return self._send(
            payload,
            user_id=user_id,
            guild_id=guild_id,
            channel=channel,
            source_message_id=source,
            origin=origin,
        )

    def _modal_origin(self, user_id: int, ref: InteractionResult | JSON) -> PendingInteraction:
        if isinstance(ref, InteractionResult):
            pending = ref.pending
            if pending.callback is None or pending.callback.type != MODAL:
                raise EmulatorError(
                    "that interaction was not answered with a modal (await result.response() first)"
                )
            return pending
        custom_id = ref.get("custom_id")
        for pending in reversed(self.interactions.by_id.values()):
            callback = pending.callback
            if (
                callback is not None
                and callback.type == MODAL
                and pending.user_id == user_id
                and callback.modal is not None
                and callback.modal.get("custom_id") == custom_id
                and not pending.modal_submitted
            ):
                return pending
        raise EmulatorError(f"no open modal {custom_id!r} was shown to user {user_id}")

    def _modal_component(
        self, component: JSON, given: dict[str, Any], channel: Channel, user_id: int, resolved: JSON
    ) -> JSON:
        ctype = component.get("type")
        if ctype == 1:
            return {
                "type": 1,
                "id": component.get("id"),
                "components": [
                    self._modal_component(c, given, channel, user_id, resolved)
                    for c in component.get("components", [])
                ],
            }
        if ctype == LABEL:
            return {
                "type": LABEL,
                "id": component.get("id"),
                "component": self._modal_component(
                    component["component"], given, channel, user_id, resolved
                ),
            }
        if ctype == TEXT_DISPLAY:
            return {"type": TEXT_DISPLAY, "id": component.get("id")}
        custom_id = str(component.get("custom_id"))
        raw = given.pop(custom_id, None)
        required = component.get("required", True)
        base = {"type": ctype, "id": component.get("id"), "custom_id": custom_id}
        if ctype == TEXT_INPUT:
            text = (component.get("value") or "") if raw is None else raw
            if not isinstance(text, str):
                raise EmulatorError(f"input {custom_id!r} takes text")
            if required and not text:
                raise EmulatorError(f"input {custom_id!r} is required")
            low, high = component.get("min_length", 0), component.get("max_length", 4000)
            if text and not low <= len(text) <= high:
                raise EmulatorError(f"input {custom_id!r} must be {low}-{high} characters")
            return {**base, "value": text}
        if ctype in SELECT_TYPES:
            chosen = list(raw) if raw is not None else []
            if not chosen and not required:
                return {**base, "values": []}
            return {
                **base,
                "values": self._select_values(component, chosen, channel, user_id, resolved),
            }
        if ctype == RADIO_GROUP:
            offered = [o["value"] for o in component.get("options", [])]
            if raw is None and required:
                raise EmulatorError(f"radio group {custom_id!r} is required")
            if raw is not None and raw not in offered:
                raise EmulatorError(
                    f"{raw!r} is not an option of {custom_id!r}; options: {offered}"
                )
            return {**base, "value": raw}
        if ctype == CHECKBOX_GROUP:
            offered = [o["value"] for o in component.get("options", [])]
            chosen = list(raw or [])
            if any(v not in offered for v in chosen):
                raise EmulatorError(
                    f"{chosen!r} are not all options of {custom_id!r}; options: {offered}"
                )
            return {**base, "values": chosen}
        if ctype == CHECKBOX:
            return {**base, "value": bool(raw)}
        if ctype == FILE_UPLOAD:
            uploads = list(raw or [])
            if required and not uploads:
                raise EmulatorError(f"file upload {custom_id!r} is required")
            ids = []
            for item in uploads:
                filename, data, content_type = _upload_of(str(custom_id), item)
                blob = store_upload(self.world, filename, data, content_type)
                resolved.setdefault("attachments", {})[str(blob.id)] = attachment_json(
                    self.world, blob, channel.id, ephemeral=True
                )
                ids.append(str(blob.id))
            return {**base, "values": ids}
        raise EmulatorError(f"modal component type {ctype} cannot be filled in")

    # ------------------------------------------------------------------ tokens

    def expire_interaction(self, result: InteractionResult) -> None:
        """Age an interaction past its 15-minute token lifetime (webhook calls then get 50027)."""
        self.interactions.expire(result.pending)


def _interaction_token(interaction_id: int) -> str:
    prefix = (
        base64.urlsafe_b64encode(f"interaction:{interaction_id}:".encode()).decode().rstrip("=")
    )
    return f"{prefix}{secrets.token_urlsafe(64)}"


def _snowflake_of(raw: Any) -> int:
    value = getattr(raw, "id", raw)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EmulatorError(f"{raw!r} is not a Discord object or id") from None


def _resolved_channel(channel: JSON) -> JSON:
    keep = (
        "id",
        "name",
        "type",
        "permissions",
        "last_message_id",
        "nsfw",
        "parent_id",
        "guild_id",
        "flags",
        "rate_limit_per_user",
        "topic",
        "position",
    )
    return {k: channel[k] for k in keep if k in channel}


def _upload_of(name: str, raw: Any) -> tuple[str, bytes, str | None]:
    if (
        isinstance(raw, tuple)
        and len(raw) in (2, 3)
        and isinstance(raw[0], str)
        and isinstance(raw[1], bytes)
    ):
        return raw[0], raw[1], raw[2] if len(raw) == 3 else None
    raise EmulatorError(
        f"{name!r} takes (filename, bytes[, content_type]); got {type(raw).__name__}"
    )
