"""Interaction lifecycle on Discord's side: the callback and the interaction webhook.

An interaction must be acknowledged once within ``ack_deadline`` (3 s on Discord); its token
then works for followups and edits of the original response for ``token_lifetime`` (15 min).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import (
    ALREADY_ACKNOWLEDGED,
    INVALID_WEBHOOK_TOKEN,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    EmulatorError,
)
from .messages import UploadedFile, edit_changes, resolve_attachments
from .state import (
    FLAG_COMPONENTS_V2,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    JSON,
    Message,
    MessageEvent,
    RawJSON,
    World,
    assign_component_ids,
    dumps,
)
from .validation import (
    INTERACTION_FLAGS,
    FormErrors,
    ensure_not_empty,
    validate_choices,
    validate_message,
    validate_modal,
)

T = TypeVar("T")

PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

CALLBACK_NAMES = {
    1: "PONG",
    4: "CHANNEL_MESSAGE_WITH_SOURCE",
    5: "DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE",
    6: "DEFERRED_UPDATE_MESSAGE",
    7: "UPDATE_MESSAGE",
    8: "APPLICATION_COMMAND_AUTOCOMPLETE_RESULT",
    9: "MODAL",
    10: "PREMIUM_REQUIRED",
    12: "LAUNCH_ACTIVITY",
}

#: Callback types Discord accepts per interaction type (6/7 need a message to update).
ALLOWED_CALLBACKS: dict[int, frozenset[int]] = {
    APPLICATION_COMMAND: frozenset({4, 5, 9}),
    MESSAGE_COMPONENT: frozenset({4, 5, 6, 7, 9}),
    AUTOCOMPLETE: frozenset({8}),
    MODAL_SUBMIT: frozenset({4, 5, 6, 7}),
}

MAX_TRACKED = 50_000


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class InteractionTimeout(EmulatorError, TimeoutError):
    """The bot did not answer in time (Discord shows "The application did not respond")."""


@dataclass
class Callback:
    """How the bot acknowledged an interaction."""

    type: int
    message_id: int | None = None
    ephemeral: bool = False
    modal: JSON | None = None
    choices: list[JSON] | None = None

    @property
    def name(self) -> str:
        return CALLBACK_NAMES.get(self.type, str(self.type))

    @property
    def deferred(self) -> bool:
        return self.type in (DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE)


class PendingInteraction:
    """Discord's record of one interaction: token, acknowledgement and the messages it owns."""

    def __init__(
        self,
        *,
        id: int,
        token: str,
        type: int,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        payload: str,
        command_name: str | None = None,
        source_message_id: int | None = None,
        origin: PendingInteraction | None = None,
    ) -> None:
        self.id = id
        self.token = token
        self.type = type
        self.user_id = user_id
        self.guild_id = guild_id
        self.channel_id = channel_id
        # Kept serialized: thousands of pending interactions as dict trees would make every
        # garbage collection walk them. Decoded on first access.
        self.payload_wire = payload
        self._payload: JSON | None = None
        self.command_name = command_name
        self.source_message_id = source_message_id
        #: For a modal submit: the interaction that opened the modal.
        self.origin = origin
        self.created = time.monotonic()
        self.callback: Callback | None = None
        self.callback_at: float | None = None
        self.original_message_id: int | None = None
        self.followup_ids: list[int] = []
        self.forced_expired = False
        self.modal_submitted = False
        self.source_edits_at_start = 0
        #: The shard (of the gateway session) the interaction was delivered to.
        self.shard_id: int | None = None
        self._waiters: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []

    def __repr__(self) -> str:
        return f"<PendingInteraction id={self.id} type={self.type} callback={self.callback}>"

    @property
    def payload(self) -> JSON:
        """The INTERACTION_CREATE ``d`` as sent to the bot."""
        if self._payload is None:
            self._payload = json.loads(self.payload_wire)
        return self._payload

    async def wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:  # noqa: ASYNC109
        """Wait until ``predicate`` returns something other than None (event-driven, no polling)."""
        value = predicate()
        if value is not None:
            return value
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        # A bare timer rather than asyncio.timeout(): this sits on the benchmarks' hot path.
        timer = loop.call_later(timeout, _expire, future)
        try:
            return await future
        except TimeoutError:
            raise InteractionTimeout(self._timeout_message(what, timeout)) from None
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _timeout_message(self, what: str, timeout: float) -> str:
        label = f"/{self.command_name}" if self.command_name else f"interaction type {self.type}"
        if self.callback is None:
            return (
                f"the bot did not acknowledge {label} within {timeout:g}s "
                "(Discord would show 'The application did not respond'); "
                "check the bot's logs for an exception in the handler"
            )
        return f"{label} was answered with {self.callback.name} but no {what} within {timeout:g}s"

    def notify(self) -> None:
        for predicate, future in list(self._waiters):
            if future.done():
                continue
            try:
                value = predicate()
            except Exception as exc:  # surfaces to the waiting test instead of being lost
                future.set_exception(exc)
                continue
            if value is not None:
                future.set_result(value)


class InteractionManager:
    """Callbacks and interaction-webhook calls, with Discord's errors for each misuse."""

    def __init__(self, world: World, *, ack_deadline: float, token_lifetime: float) -> None:
        self.world = world
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.by_id: OrderedDict[int, PendingInteraction] = OrderedDict()
        self.by_token: dict[str, PendingInteraction] = {}
        self._watchers: dict[int, set[int]] = {}
        world.subscribe(self._on_message_event)

    # ------------------------------------------------------------------ bookkeeping

    def register(self, pending: PendingInteraction) -> None:
        self._evict()
        self.by_id[pending.id] = pending
        self.by_token[pending.token] = pending
        if pending.source_message_id is not None:
            self._watch(pending.source_message_id, pending)
            source = self.world.messages.get(pending.source_message_id)
            pending.source_edits_at_start = len(source.edits) if source else 0

    def _evict(self) -> None:
        now = time.monotonic()
        while self.by_id:
            oldest = next(iter(self.by_id.values()))
            if len(self.by_id) < MAX_TRACKED and now - oldest.created < self.token_lifetime:
                break
            self.by_id.popitem(last=False)
            self.by_token.pop(oldest.token, None)
            for mid in [oldest.original_message_id, oldest.source_message_id, *oldest.followup_ids]:
                if mid is not None and mid in self._watchers:
                    self._watchers[mid].discard(oldest.id)
                    if not self._watchers[mid]:
                        del self._watchers[mid]

    def _watch(self, message_id: int, pending: PendingInteraction) -> None:
        self._watchers.setdefault(message_id, set()).add(pending.id)

    def _on_message_event(self, event: MessageEvent, message: Message) -> None:
        for iid in list(self._watchers.get(message.id, ())):
            pending = self.by_id.get(iid)
            if pending is not None:
                pending.notify()

    def token_valid(self, pending: PendingInteraction) -> bool:
        return (
            not pending.forced_expired and time.monotonic() - pending.created < self.token_lifetime
        )

    def expire(self, pending: PendingInteraction) -> None:
        pending.forced_expired = True

    # ------------------------------------------------------------------ callback

    def callback(
        self, interaction_id: int, token: str, body: JSON, files: list[UploadedFile]
    ) -> RawJSON:
        """Handle ``POST /interactions/{id}/{token}/callback``; returns the with_response body."""
        pending = self.by_id.get(interaction_id)
        if pending is None or pending.token != token:
            raise UNKNOWN_INTERACTION
        if pending.callback is not None:
            raise ALREADY_ACKNOWLEDGED
        if pending.forced_expired or time.monotonic() - pending.created > self.ack_deadline:
            raise UNKNOWN_INTERACTION
        ctype = body.get("type")
        data = body.get("data") or {}
        errors = FormErrors()
        if not isinstance(data, dict):
            errors.add(["data"], "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            errors.raise_if_any()
        allowed = ALLOWED_CALLBACKS.get(pending.type, frozenset())
        if pending.type == MODAL_SUBMIT and pending.source_message_id is None:
            allowed = allowed - {6, 7}
        if not isinstance(ctype, int) or ctype not in allowed:
            valid = ", ".join(str(t) for t in sorted(allowed))
            errors.add(["type"], "BASE_TYPE_CHOICES", f"Value must be one of ({valid}).")
            errors.raise_if_any()
        assert isinstance(ctype, int)
        world = self.world
        interaction: JSON = {"id": str(pending.id), "type": pending.type}
        resource: JSON = {"type": ctype}
        message: Message | None = None

        if ctype == CHANNEL_MESSAGE:
            flags = validate_message(data, errors, ["data"], allowed_flags=INTERACTION_FLAGS)
            errors.raise_if_any()
            ephemeral = bool(flags & FLAG_EPHEMERAL)
            attachments = resolve_attachments(
                world,
                data,
                files,
                channel_id=pending.channel_id,
                existing=None,
                ephemeral=ephemeral,
                prefix=("data",),
            )
            ensure_not_empty({**data, "flags": flags, "attachments": attachments})
            message = self._create_message(pending, data, flags, attachments or [])
            pending.original_message_id = message.id
            pending.callback = Callback(ctype, message.id, ephemeral)
        elif ctype == DEFERRED_CHANNEL_MESSAGE:
            flags = int(data.get("flags") or 0) & FLAG_EPHEMERAL
            message = self._create_message(pending, {}, flags | FLAG_LOADING, [])
            pending.original_message_id = message.id
            pending.callback = Callback(ctype, message.id, bool(flags))
            interaction["response_message_loading"] = True
        elif ctype == DEFERRED_UPDATE_MESSAGE:
            source = self._source(pending)
            pending.original_message_id = source.id
            pending.callback = Callback(ctype, source.id, source.ephemeral)
        elif ctype == UPDATE_MESSAGE:
            source = self._source(pending)
            validate_message(data, errors, ["data"], allowed_flags=INTERACTION_FLAGS)
            errors.raise_if_any()
            attachments = resolve_attachments(
                world,
                data,
                files,
                channel_id=source.channel_id,
                existing=source.attachments,
                ephemeral=source.ephemeral,
                prefix=("data",),
            )
            self._ensure_edit_not_empty(source, data, attachments)
            message = world.edit_message(source, edit_changes(data, attachments))
            pending.original_message_id = source.id
            pending.callback = Callback(ctype, source.id, source.ephemeral)
        elif ctype == AUTOCOMPLETE_RESULT:
            choices = validate_choices(data, errors)
            errors.raise_if_any()
            pending.callback = Callback(ctype, choices=choices)
        else:  # MODAL
            validate_modal(data, errors)
            errors.raise_if_any()
            modal = dict(data)
            modal["components"] = assign_component_ids(modal.get("components") or [])
            pending.callback = Callback(ctype, modal=modal)

        pending.callback_at = time.monotonic()
        if pending.original_message_id is not None:
            self._watch(pending.original_message_id, pending)
        if message is not None or ctype == DEFERRED_UPDATE_MESSAGE:
            interaction["response_message_id"] = str(pending.original_message_id)
            interaction.setdefault("response_message_loading", False)
            interaction["response_message_ephemeral"] = pending.callback.ephemeral
        resource_json = dumps(resource)
        if message is not None and ctype in (CHANNEL_MESSAGE, UPDATE_MESSAGE):
            resource_json = resource_json[:-1] + ',"message":' + world.message_wire(message) + "}"
        pending.notify()
        return RawJSON(f'{{"interaction":{dumps(interaction)},"resource":{resource_json}}}')

    def _source(self, pending: PendingInteraction) -> Message:
        source = self.world.messages.get(pending.source_message_id or 0)
        if source is None or source.deleted:
            raise UNKNOWN_MESSAGE
        return source

    def _metadata(
        self,
        pending: PendingInteraction,
        *,
        followup_of: int | None = None,
        user: JSON | None = None,
    ) -> JSON:
        user = user or self.world.users[pending.user_id].to_json()
        owners = {"0": str(pending.guild_id) if pending.guild_id else "0"}
        meta: JSON = {
            "id": str(pending.id),
            "type": pending.type,
            "user": user,
            "authorizing_integration_owners": owners,
        }
        if pending.type == APPLICATION_COMMAND and pending.command_name:
            meta["name"] = pending.command_name
            meta["command_type"] = 1
        if pending.source_message_id is not None:
            meta["interacted_message_id"] = str(pending.source_message_id)
        if pending.origin is not None:
            meta["triggering_interaction_metadata"] = self._metadata(pending.origin)
        if followup_of is not None:
            meta["original_response_message_id"] = str(followup_of)
        return meta

    def _create_message(
        self,
        pending: PendingInteraction,
        data: JSON,
        flags: int,
        attachments: list[JSON],
        *,
        followup_of: int | None = None,
    ) -> Message:
        legacy = None
        user = self.world.users[pending.user_id].to_json()  # shared: stored JSON is read-only
        if pending.type == APPLICATION_COMMAND:
            legacy = {
                "id": str(pending.id),
                "type": pending.type,
                "name": pending.command_name or "",
                "user": user,
            }
        ephemeral = bool(flags & FLAG_EPHEMERAL)
        return self.world.create_message(
            channel_id=pending.channel_id,
            author_id=self.world.bot.id,
            content=data.get("content") or "",
            embeds=data.get("embeds"),
            components=data.get("components"),
            flags=flags,
            allowed_mentions=data.get("allowed_mentions"),
            attachments=attachments,
            type=20 if pending.type == APPLICATION_COMMAND else 0,
            tts=bool(data.get("tts", False)),
            webhook_id=self.world.application_id,
            interaction_id=pending.id,
            interaction_metadata=self._metadata(pending, followup_of=followup_of, user=user),
            interaction_legacy=legacy,
            visible_to=pending.user_id if ephemeral else None,
        )

    def _ensure_edit_not_empty(
        self, message: Message, changes: JSON, attachments: list[JSON] | None
    ) -> None:
        after = {
            "content": changes.get("content", message.content),
            "embeds": changes.get("embeds", message.embeds),
            "components": changes.get("components", message.components),
            "attachments": attachments if attachments is not None else message.attachments,
            "flags": message.flags & ~FLAG_LOADING,
        }
        if message.flags & FLAG_COMPONENTS_V2:
            after["flags"] |= FLAG_COMPONENTS_V2
        ensure_not_empty(after)

    # ------------------------------------------------------------------ webhook

    def _by_webhook(self, application_id: int, token: str) -> PendingInteraction:
        if application_id != self.world.application_id:
            raise UNKNOWN_WEBHOOK
        pending = self.by_token.get(token)
        if pending is None or not self.token_valid(pending):
            raise INVALID_WEBHOOK_TOKEN
        if pending.callback is None or pending.callback.type in (AUTOCOMPLETE_RESULT, MODAL):
            # No webhook exists until a message-bearing acknowledgement.
            raise UNKNOWN_WEBHOOK
        return pending

    def _owned_message(self, pending: PendingInteraction, message_id: str) -> Message:
        if message_id == "@original":
            mid = pending.original_message_id
        else:
            try:
                mid = int(message_id)
            except ValueError:
                raise UNKNOWN_MESSAGE from None
            if mid != pending.original_message_id and mid not in pending.followup_ids:
                raise UNKNOWN_MESSAGE
        message = self.world.messages.get(mid or 0)
        if message is None or message.deleted:
            raise UNKNOWN_MESSAGE
        return message

    def execute(
        self, application_id: int, token: str, body: JSON, files: list[UploadedFile]
    ) -> Message:
        """``POST /webhooks/{app}/{token}``: a followup (or, after a defer, the first answer)."""
        pending = self._by_webhook(application_id, token)
        errors = FormErrors()
        flags = validate_message(body, errors, allowed_flags=INTERACTION_FLAGS)
        errors.raise_if_any()
        original = self.world.messages.get(pending.original_message_id or 0)
        if (
            pending.callback is not None
            and pending.callback.type == DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and not original.deleted
            and original.loading
        ):
            # Discord's documented compatibility rule: the first followup after a defer edits
            # the loading message, keeping the ephemeral state chosen when deferring.
            attachments = resolve_attachments(
                self.world,
                body,
                files,
                channel_id=original.channel_id,
                existing=original.attachments,
                ephemeral=original.ephemeral,
            )
            self._ensure_edit_not_empty(original, body, attachments)
            message = self.world.edit_message(original, edit_changes(body, attachments))
            pending.notify()
            return message
        ephemeral = bool(flags & FLAG_EPHEMERAL)
        attachments = resolve_attachments(
            self.world,
            body,
            files,
            channel_id=pending.channel_id,
            existing=None,
            ephemeral=ephemeral,
        )
        ensure_not_empty({**body, "flags": flags, "attachments": attachments})
        message = self._create_message(
            pending, body, flags, attachments or [], followup_of=pending.original_message_id
        )
        pending.followup_ids.append(message.id)
        self._watch(message.id, pending)
        pending.notify()
        return message

    def get(self, application_id: int, token: str, message_id: str) -> Message:
        pending = self._by_webhook(application_id, token)
        return self._owned_message(pending, message_id)

    def edit(
        self,
        application_id: int,
        token: str,
        message_id: str,
        body: JSON,
        files: list[UploadedFile],
    ) -> Message:
        pending = self._by_webhook(application_id, token)
        message = self._owned_message(pending, message_id)
        errors = FormErrors()
        validate_message(body, errors, allowed_flags=INTERACTION_FLAGS)
        errors.raise_if_any()
        attachments = resolve_attachments(
            self.world,
            body,
            files,
            channel_id=message.channel_id,
            existing=message.attachments,
            ephemeral=message.ephemeral,
        )
        self._ensure_edit_not_empty(message, body, attachments)
        self.world.edit_message(message, edit_changes(body, attachments))
        pending.notify()
        return message

    def delete(self, application_id: int, token: str, message_id: str) -> None:
        pending = self._by_webhook(application_id, token)
        message = self._owned_message(pending, message_id)
        self.world.delete_message(message)
        pending.notify()

    def find(self, token_or_id: str | int) -> PendingInteraction:
        pending = (
            self.by_token.get(token_or_id)
            if isinstance(token_or_id, str)
            else self.by_id.get(token_or_id)
        )
        if pending is None:
            raise EmulatorError(f"no interaction {token_or_id!r} is tracked")
        return pending
