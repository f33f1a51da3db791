"""The emulated world: users, guilds, roles, channels, members, messages and app commands.

Everything here is plain data plus the JSON shapes Discord puts on the wire for it. The world
knows nothing about HTTP or the gateway; it announces message changes to subscribers (the
gateway hub and the driver's waiters) so that each front end can react.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from . import permissions as P
from .errors import EmulatorError
from .snowflake import SnowflakeGenerator, iso, snowflake_time

JSON = dict[str, Any]

#: Compact JSON as Discord sends it.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class RawJSON(str):
    """Already-serialized JSON, passed through without re-encoding (hot paths)."""


def splice(obj: str, extra: JSON) -> str:
    """Add keys to a serialized JSON object without decoding and re-encoding it."""
    if not extra:
        return obj
    if obj == "{}":
        return dumps(extra)
    return obj[:-1] + "," + dumps(extra)[1:]


# Channel types used here.
GUILD_TEXT = 0
DM = 1
GUILD_VOICE = 2
GUILD_CATEGORY = 4
GUILD_ANNOUNCEMENT = 5
GUILD_STAGE_VOICE = 13
GUILD_FORUM = 15
TEXT_LIKE = frozenset({GUILD_TEXT, DM, GUILD_VOICE, GUILD_ANNOUNCEMENT, GUILD_STAGE_VOICE})

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15

# Component types.
ACTION_ROW = 1
BUTTON = 2
STRING_SELECT = 3
TEXT_INPUT = 4
USER_SELECT = 5
ROLE_SELECT = 6
MENTIONABLE_SELECT = 7
CHANNEL_SELECT = 8
SECTION = 9
TEXT_DISPLAY = 10
CONTAINER = 17
LABEL = 18
SELECT_TYPES = frozenset(
    {STRING_SELECT, USER_SELECT, ROLE_SELECT, MENTIONABLE_SELECT, CHANNEL_SELECT}
)


@dataclass
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    avatar: str | None = None
    email: str | None = None
    locale: str = "en-US"
    #: Whether the user accepts DMs from server members (Discord's privacy toggle).
    dms_open: bool = True

    def __setattr__(self, name: str, value: Any) -> None:
        # Any change invalidates the cached wire form (it is built on every interaction).
        object.__setattr__(self, "_wire", None)
        object.__setattr__(self, name, value)

    def to_json(self) -> JSON:
        """The user object. A fresh dict each call; the template is cached until a change."""
        wire = getattr(self, "_wire", None)
        if wire is None:
            wire = self._build_json()
            object.__setattr__(self, "_wire", wire)
        return dict(wire)

    def _build_json(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "username": self.username,
            "avatar": self.avatar,
            "discriminator": "0",
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "global_name": self.global_name,
            "avatar_decoration_data": None,
            "collectibles": None,
            "banner_color": None,
            "clan": None,
            "primary_guild": None,
        }
        if self.bot:
            data["bot"] = True
        return data

    @property
    def display_name(self) -> str:
        return self.global_name or self.username


@dataclass
class Role:
    id: int
    guild_id: int
    name: str
    permissions: int
    position: int = 0
    color: int = 0
    hoist: bool = False
    mentionable: bool = False
    managed: bool = False
    bot_id: int | None = None

    def to_json(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "name": self.name,
            "description": None,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {
                "primary_color": self.color,
                "secondary_color": None,
                "tertiary_color": None,
            },
            "hoist": self.hoist,
            "managed": self.managed,
            "mentionable": self.mentionable,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass
class Overwrite:
    id: int
    type: Literal[0, 1]  # 0 role, 1 member
    allow: int = 0
    deny: int = 0

    def to_json(self) -> JSON:
        return {
            "id": str(self.id),
            "type": self.type,
            "allow": str(self.allow),
            "deny": str(self.deny),
        }


@dataclass
class Channel:
    id: int
    type: int
    name: str | None
    guild_id: int | None = None
    position: int = 0
    topic: str | None = None
    parent_id: int | None = None
    nsfw: bool = False
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    recipient_id: int | None = None
    last_message_id: int | None = None

    def to_json(self, world: World) -> JSON:
        if self.type == DM:
            recipient = world.users[self.recipient_id] if self.recipient_id else None
            return {
                "id": str(self.id),
                "type": DM,
                "last_message_id": _opt_str(self.last_message_id),
                "flags": 0,
                "recipients": [recipient.to_json()] if recipient else [],
            }
        data: JSON = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "position": self.position,
            "flags": 0,
            "parent_id": _opt_str(self.parent_id),
            "permission_overwrites": [o.to_json() for o in self.overwrites.values()],
            "nsfw": self.nsfw,
        }
        if self.type in (GUILD_TEXT, GUILD_ANNOUNCEMENT, GUILD_FORUM):
            data["topic"] = self.topic
            data["rate_limit_per_user"] = 0
            data["last_message_id"] = _opt_str(self.last_message_id)
            data["default_auto_archive_duration"] = 1440
        if self.type in (GUILD_VOICE, GUILD_STAGE_VOICE):
            data.update(
                bitrate=64000,
                user_limit=0,
                rtc_region=None,
                rate_limit_per_user=0,
                last_message_id=_opt_str(self.last_message_id),
            )
        if self.type == GUILD_FORUM:
            data.update(available_tags=[], default_reaction_emoji=None, default_sort_order=None)
            data["default_forum_layout"] = 0
        return data


@dataclass
class Member:
    guild_id: int
    user_id: int
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso)

    def to_json(self, world: World, *, with_user: bool = True) -> JSON:
        data: JSON = {
            "avatar": None,
            "banner": None,
            "communication_disabled_until": None,
            "flags": 0,
            "joined_at": self.joined_at,
            "nick": self.nick,
            "pending": False,
            "premium_since": None,
            "roles": [str(r) for r in self.roles],
            "unusual_dm_activity_until": None,
            "deaf": False,
            "mute": False,
        }
        if with_user:
            data["user"] = world.users[self.user_id].to_json()
        return data


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, Role] = field(default_factory=dict)
    channel_ids: list[int] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    joined_at: str = field(default_factory=iso)
    preferred_locale: str = "en-US"

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]


@dataclass(frozen=True)
class MessageVersion:
    """One earlier state of an edited message (what it looked like before an edit)."""

    content: str
    embeds: list[JSON]
    components: list[JSON]
    flags: int
    attachments: list[JSON]
    timestamp: str


class Button(NamedTuple):
    custom_id: str | None
    label: str | None
    style: int
    disabled: bool
    url: str | None


@dataclass(eq=False)
class Message:
    """A stored message. Live: edits made by the bot are visible on the same object.

    Its lists and dicts are replaced on edit, never changed in place, so earlier versions
    (``edits``) and JSON already handed out stay as they were.
    """

    id: int
    channel_id: int
    author_id: int
    guild_id: int | None = None
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    flags: int = 0
    allowed_mentions: JSON | None = None
    attachments: list[JSON] = field(default_factory=list)
    type: int = 0
    tts: bool = False
    nonce: str | int | None = None
    timestamp: str = field(default_factory=iso)
    edited_timestamp: str | None = None
    edits: list[MessageVersion] = field(default_factory=list)
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    #: Set for interaction responses and followups.
    webhook_id: int | None = None
    interaction_id: int | None = None
    interaction_metadata: JSON | None = None
    interaction_legacy: JSON | None = None
    #: For ephemeral messages: the only user who can see it.
    visible_to: int | None = None
    reference: JSON | None = None
    deleted: bool = False
    _wire: RawJSON | None = field(default=None, repr=False, compare=False)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """A deferred response still showing "Bot is thinking..."."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def created_at(self) -> datetime.datetime:
        return snowflake_time(self.id)

    def iter_components(self) -> Iterator[JSON]:
        return iter_components(self.components)

    def buttons(self) -> list[Button]:
        """Every button on the message as ``(custom_id, label, style, disabled, url)``."""
        return [
            Button(
                c.get("custom_id"),
                c.get("label"),
                int(c.get("style", 1)),
                bool(c.get("disabled", False)),
                c.get("url"),
            )
            for c in self.iter_components()
            if c.get("type") == BUTTON
        ]

    def selects(self) -> list[JSON]:
        return [c for c in self.iter_components() if c.get("type") in SELECT_TYPES]

    def text(self) -> str:
        """Everything a person can read on the message, one block per line (for asserts)."""
        parts: list[str] = []
        if self.content:
            parts.append(self.content)
        for embed in self.embeds:
            parts.extend(embed_text(embed))
        for component in self.iter_components():
            if component.get("type") == TEXT_DISPLAY and component.get("content"):
                parts.append(component["content"])
        for attachment in self.attachments:
            parts.append(f"[attachment: {attachment.get('filename')}]")
        return "\n".join(parts)

    def snapshot(self) -> MessageVersion:
        return MessageVersion(
            content=self.content,
            embeds=self.embeds,
            components=self.components,
            flags=self.flags,
            attachments=self.attachments,
            timestamp=self.edited_timestamp or self.timestamp,
        )


def embed_text(embed: JSON) -> list[str]:
    parts: list[str] = []
    author = embed.get("author") or {}
    for key in ("name",):
        if author.get(key):
            parts.append(str(author[key]))
    for key in ("title", "description"):
        if embed.get(key):
            parts.append(str(embed[key]))
    for f in embed.get("fields") or []:
        parts.append(f"{f.get('name', '')}: {f.get('value', '')}")
    footer = embed.get("footer") or {}
    if footer.get("text"):
        parts.append(str(footer["text"]))
    return parts


def iter_components(components: Iterable[JSON]) -> Iterator[JSON]:
    """Depth-first walk over rows, sections, containers and labels (Discord's component tree)."""
    for component in components:
        if not isinstance(component, dict):
            continue  # refused by validation; never stored
        yield component
        children = component.get("components")
        if isinstance(children, list):
            yield from iter_components(children)
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, dict):
                yield from iter_components([child])


@dataclass
class AttachmentBlob:
    id: int
    filename: str
    content_type: str
    data: bytes


MessageEvent = Literal["create", "update", "delete"]
MessageListener = Callable[[MessageEvent, Message], None]

_USER_MENTION = re.compile(r"<@!?(\d{15,20})>")
_ROLE_MENTION = re.compile(r"<@&(\d{15,20})>")
_EVERYONE = re.compile(r"@(everyone|here)")


class World:
    """All emulated Discord state for one application (bot)."""

    def __init__(
        self,
        *,
        application_id: int | None,
        bot_user_id: int | None,
        bot_name: str,
        snowflakes: SnowflakeGenerator | None = None,
    ) -> None:
        self.snowflakes = snowflakes or SnowflakeGenerator()
        self.application_id = application_id or self.snowflakes.next()
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.channel_messages: dict[int, list[int]] = {}
        self.dm_channels: dict[int, int] = {}
        self.attachments: dict[int, AttachmentBlob] = {}
        self.commands = CommandRegistry(self)
        #: Where attachment URLs point (the emulator's own base URL once it listens).
        self.cdn_base = "http://127.0.0.1"
        self._listeners: list[MessageListener] = []
        bot_id = bot_user_id or self.application_id
        self.bot = self._store_user(User(id=bot_id, username=bot_name, bot=True))
        self.app_owner = self.add_user("owner", global_name="Server Owner")

    # ---------------------------------------------------------------- world setup

    def next_id(self) -> int:
        return self.snowflakes.next()

    def _store_user(self, user: User) -> User:
        if user.id in self.users:
            raise EmulatorError(f"user id {user.id} already exists")
        self.users[user.id] = user
        return user

    def add_user(
        self,
        name: str,
        *,
        bot: bool = False,
        global_name: str | None = None,
        user_id: int | None = None,
        email: str | None = None,
        locale: str = "en-US",
    ) -> User:
        if not name or len(name) > 32:
            raise EmulatorError("a username is 1-32 characters")
        return self._store_user(
            User(
                id=user_id or self.next_id(),
                username=name.lower(),
                global_name=global_name if global_name is not None else name,
                bot=bot,
                email=email or f"{name.lower()}@users.local",
                locale=locale,
            )
        )

    def add_guild(
        self,
        name: str,
        *,
        owner_id: int | None = None,
        guild_id: int | None = None,
        channels: Iterable[str] = ("general",),
    ) -> Guild:
        """A server with the bot in it and, like a new Discord server, a #general channel."""
        gid = guild_id or self.next_id()
        if gid in self.guilds:
            raise EmulatorError(f"guild id {gid} already exists")
        owner = owner_id or self.app_owner.id
        self.user(owner)
        guild = Guild(id=gid, name=name, owner_id=owner)
        guild.roles[gid] = Role(
            id=gid, guild_id=gid, name="@everyone", permissions=P.DEFAULT_EVERYONE
        )
        self.guilds[gid] = guild
        bot_role = self.add_role(gid, self.bot.username, P.DEFAULT_BOT)
        bot_role.managed = True
        bot_role.bot_id = self.bot.id
        guild.members[owner] = Member(guild_id=gid, user_id=owner)
        guild.members[self.bot.id] = Member(guild_id=gid, user_id=self.bot.id, roles=[bot_role.id])
        for channel_name in channels:
            self.add_channel(gid, channel_name)
        return guild

    def add_role(
        self,
        guild_id: int,
        name: str,
        permissions: int,
        *,
        color: int = 0,
        mentionable: bool = False,
    ) -> Role:
        guild = self.guild(guild_id)
        position = max((r.position for r in guild.roles.values()), default=0) + 1
        role = Role(
            id=self.next_id(),
            guild_id=guild_id,
            name=name,
            permissions=permissions,
            position=position,
            color=color,
            mentionable=mentionable,
        )
        guild.roles[role.id] = role
        return role

    def add_channel(
        self,
        guild_id: int,
        name: str,
        type: int = GUILD_TEXT,
        *,
        topic: str | None = None,
        parent_id: int | None = None,
    ) -> Channel:
        guild = self.guild(guild_id)
        if type == DM:
            raise EmulatorError("DM channels are opened with open_dm(), not add_channel()")
        if parent_id is not None and self.channel(parent_id).type != GUILD_CATEGORY:
            raise EmulatorError("parent_id must be a category channel")
        channel = Channel(
            id=self.next_id(),
            type=type,
            name=name,
            guild_id=guild_id,
            position=len(guild.channel_ids),
            topic=topic,
            parent_id=parent_id,
        )
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        guild.channel_ids.append(channel.id)
        return channel

    def add_member(
        self,
        guild_id: int,
        user_id: int,
        *,
        roles: Iterable[int] = (),
        permissions: int | None = None,
        nick: str | None = None,
    ) -> Member:
        guild = self.guild(guild_id)
        user = self.user(user_id)
        role_ids = list(roles)
        for role_id in role_ids:
            if role_id not in guild.roles or role_id == guild.id:
                raise EmulatorError(f"role {role_id} is not a role of guild {guild_id}")
        if permissions is not None:
            # Discord has no per-member permissions; a personal role is how a server grants them.
            role_ids.append(self.add_role(guild_id, f"{user.username} permissions", permissions).id)
        member = guild.members.get(user_id)
        if member is None:
            member = Member(guild_id=guild_id, user_id=user_id, roles=role_ids, nick=nick)
            guild.members[user_id] = member
        else:
            member.roles = list(dict.fromkeys([*member.roles, *role_ids]))
            if nick is not None:
                member.nick = nick
        return member

    def set_overwrite(
        self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0
    ) -> Overwrite:
        channel = self.channel(channel_id)
        if channel.guild_id is None:
            raise EmulatorError("permission overwrites exist only on guild channels")
        guild = self.guild(channel.guild_id)
        if target_id in guild.roles:
            kind: Literal[0, 1] = 0
        elif target_id in guild.members:
            kind = 1
        else:
            raise EmulatorError(f"{target_id} is neither a role nor a member of the guild")
        overwrite = Overwrite(id=target_id, type=kind, allow=allow, deny=deny)
        channel.overwrites[target_id] = overwrite
        return overwrite

    def open_dm(self, user_id: int) -> Channel:
        """The bot's DM channel with ``user_id`` (created on first use, like Discord)."""
        existing = self.dm_channels.get(user_id)
        if existing is not None:
            return self.channels[existing]
        self.user(user_id)
        channel = Channel(id=self.next_id(), type=DM, name=None, recipient_id=user_id)
        self.channels[channel.id] = channel
        self.channel_messages[channel.id] = []
        self.dm_channels[user_id] = channel.id
        return channel

    # ---------------------------------------------------------------- lookups

    def user(self, user_id: int) -> User:
        try:
            return self.users[int(user_id)]
        except KeyError:
            raise EmulatorError(f"no user with id {user_id}") from None

    def guild(self, guild_id: int) -> Guild:
        try:
            return self.guilds[int(guild_id)]
        except KeyError:
            raise EmulatorError(f"no guild with id {guild_id}") from None

    def channel(self, channel_id: int) -> Channel:
        try:
            return self.channels[int(channel_id)]
        except KeyError:
            raise EmulatorError(f"no channel with id {channel_id}") from None

    def member(self, guild_id: int, user_id: int) -> Member:
        member = self.guild(guild_id).members.get(int(user_id))
        if member is None:
            raise EmulatorError(f"user {user_id} is not a member of guild {guild_id}")
        return member

    def shares_guild(self, user_id: int) -> bool:
        return any(user_id in g.members for g in self.guilds.values())

    # ---------------------------------------------------------------- permissions

    def base_permissions(self, guild_id: int, user_id: int) -> int:
        guild = self.guild(guild_id)
        if user_id == guild.owner_id:
            return P.ALL
        member = self.member(guild_id, user_id)
        perms = guild.everyone.permissions
        for role_id in member.roles:
            role = guild.roles.get(role_id)
            if role is not None:
                perms |= role.permissions
        return P.ALL if perms & P.ADMINISTRATOR else perms

    def channel_permissions(self, channel_id: int, user_id: int) -> int:
        channel = self.channel(channel_id)
        if channel.guild_id is None:
            return P.BOT_DM if user_id == self.bot.id else P.VIEW_CHANNEL | P.SEND_MESSAGES
        base = self.base_permissions(channel.guild_id, user_id)
        if base & P.ADMINISTRATOR:
            return P.ALL
        member = self.member(channel.guild_id, user_id)
        ow = channel.overwrites
        # A channel in a category without its own overwrites would be synced; we keep it explicit.
        everyone = ow.get(channel.guild_id)
        role_ows = [(ow[r].allow, ow[r].deny) for r in member.roles if r in ow]
        own = ow.get(user_id)
        return P.apply_overwrites(
            base,
            everyone=(everyone.allow, everyone.deny) if everyone else None,
            roles=role_ows,
            member=(own.allow, own.deny) if own and own.type == 1 else None,
        )

    # ---------------------------------------------------------------- JSON shapes

    def member_json(self, guild_id: int, user_id: int, *, channel_id: int | None = None) -> JSON:
        """A member as interactions carry it: with ``permissions`` computed for the channel."""
        data = self.member(guild_id, user_id).to_json(self)
        if channel_id is not None:
            data["permissions"] = str(self.channel_permissions(channel_id, user_id))
        return data

    def guild_json(self, guild_id: int, *, with_counts: bool = False) -> JSON:
        """The REST guild object (``GET /guilds/{id}``)."""
        guild = self.guild(guild_id)
        data: JSON = {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "icon_hash": None,
            "description": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "owner_id": str(guild.owner_id),
            "application_id": None,
            "region": "deprecated",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": _opt_str(guild.channel_ids[0] if guild.channel_ids else None),
            "system_channel_flags": 0,
            "widget_enabled": False,
            "widget_channel_id": None,
            "verification_level": 0,
            "roles": [r.to_json() for r in guild.roles.values()],
            "default_message_notifications": 0,
            "mfa_level": 0,
            "explicit_content_filter": 0,
            "max_presences": None,
            "max_members": 25000000,
            "max_stage_video_channel_users": 50,
            "max_video_channel_users": 25,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": guild.preferred_locale,
            "rules_channel_id": None,
            "safety_alerts_channel_id": None,
            "public_updates_channel_id": None,
            "hub_type": None,
            "premium_progress_bar_enabled": False,
            "latest_onboarding_question_id": None,
            "nsfw": False,
            "nsfw_level": 0,
            "emojis": [],
            "stickers": [],
            "features": [],
            "incidents_data": None,
            "inventory_settings": None,
            "embed_enabled": False,
            "embed_channel_id": None,
        }
        if with_counts:
            data["approximate_member_count"] = len(guild.members)
            data["approximate_presence_count"] = 0
        return data

    def guild_create_json(self, guild_id: int, *, members: bool, presences: bool) -> JSON:
        """The gateway GUILD_CREATE payload.

        Without the GUILD_MEMBERS intent Discord only includes the bot's own member.
        """
        guild = self.guild(guild_id)
        data = self.guild_json(guild_id)
        member_ids = list(guild.members) if members else [self.bot.id]
        data.update(
            joined_at=guild.joined_at,
            large=False,
            unavailable=False,
            member_count=len(guild.members),
            members=[guild.members[u].to_json(self) for u in member_ids if u in guild.members],
            channels=[
                {k: v for k, v in self.channels[c].to_json(self).items() if k != "guild_id"}
                for c in guild.channel_ids
            ],
            threads=[],
            # Presences are not emulated: nobody is online.
            presences=[],
            voice_states=[],
            stage_instances=[],
            guild_scheduled_events=[],
            soundboard_sounds=[],
            embedded_activities=[],
            activity_instances=[],
            application_command_counts={},
            lazy=True,
            version=0,
        )
        return data

    def partial_channel_json(self, channel_id: int, user_id: int) -> JSON:
        """A channel as interactions (and ``resolved``) carry it: with the user's permissions."""
        channel = self.channel(channel_id)
        data = channel.to_json(self)
        if channel.guild_id is not None:
            data["permissions"] = str(self.channel_permissions(channel_id, user_id))
        return data

    def message_wire(self, message: Message) -> RawJSON:
        """``message_json`` serialized, cached per version."""
        cached = message._wire
        if cached is None:
            cached = RawJSON(dumps(self.message_json(message)))
            if message.reference is None:
                message._wire = cached
        return cached

    def message_json(self, message: Message) -> JSON:
        """The message object as REST returns it (nested values are shared: read-only)."""
        author = self.users[message.author_id]
        data: JSON = {
            "type": message.type,
            "content": message.content,
            "mentions": [self.users[u].to_json() for u in message.mentions if u in self.users],
            "mention_roles": [str(r) for r in message.mention_roles],
            "attachments": message.attachments,
            "embeds": message.embeds,
            "timestamp": message.timestamp,
            "edited_timestamp": message.edited_timestamp,
            "flags": message.flags,
            "components": message.components,
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": author.to_json(),
            "pinned": False,
            "mention_everyone": message.mention_everyone,
            "tts": message.tts,
        }
        if message.webhook_id is not None:
            data["webhook_id"] = str(message.webhook_id)
            data["application_id"] = str(self.application_id)
        if message.interaction_metadata is not None:
            data["interaction_metadata"] = message.interaction_metadata
        if message.interaction_legacy is not None:
            data["interaction"] = message.interaction_legacy
        if message.nonce is not None:
            data["nonce"] = message.nonce
        if message.reference is not None:
            data["message_reference"] = dict(message.reference)
            ref_id = int(message.reference["message_id"])
            ref = self.messages.get(ref_id)
            data["referenced_message"] = (
                None if ref is None or ref.deleted else self.message_json(ref)
            )
        return data

    # ---------------------------------------------------------------- messages

    def subscribe(self, listener: MessageListener) -> None:
        self._listeners.append(listener)

    def _announce(self, event: MessageEvent, message: Message) -> None:
        for listener in list(self._listeners):
            listener(event, message)

    def create_message(
        self,
        *,
        channel_id: int,
        author_id: int,
        content: str = "",
        embeds: list[JSON] | None = None,
        components: list[JSON] | None = None,
        flags: int = 0,
        allowed_mentions: JSON | None = None,
        attachments: list[JSON] | None = None,
        type: int = 0,
        tts: bool = False,
        nonce: str | int | None = None,
        webhook_id: int | None = None,
        interaction_id: int | None = None,
        interaction_metadata: JSON | None = None,
        interaction_legacy: JSON | None = None,
        visible_to: int | None = None,
        reference: JSON | None = None,
        message_id: int | None = None,
        announce: bool = True,
    ) -> Message:
        channel = self.channel(channel_id)
        message = Message(
            id=message_id or self.next_id(),
            channel_id=channel_id,
            guild_id=channel.guild_id,
            author_id=author_id,
            content=content,
            embeds=normalize_embeds(embeds or []),
            components=assign_component_ids(components or []),
            flags=flags,
            allowed_mentions=allowed_mentions,
            attachments=attachments or [],
            type=type,
            tts=tts,
            nonce=nonce,
            webhook_id=webhook_id,
            interaction_id=interaction_id,
            interaction_metadata=interaction_metadata,
            interaction_legacy=interaction_legacy,
            visible_to=visible_to,
            reference=reference,
        )
        self._compute_mentions(message)
        self.messages[message.id] = message
        self.channel_messages.setdefault(channel_id, []).append(message.id)
        if not message.ephemeral:
            channel.last_message_id = message.id
        if announce:
            self._announce("create", message)
        return message

    def edit_message(self, message: Message, changes: JSON, *, announce: bool = True) -> Message:
        """Apply a PATCH body (only the keys present change), keeping the old version."""
        message.edits.append(message.snapshot())
        message._wire = None
        if "content" in changes:
            message.content = changes["content"] or ""
        if "embeds" in changes:
            message.embeds = normalize_embeds(changes["embeds"] or [])
        if "components" in changes:
            message.components = assign_component_ids(changes["components"] or [])
        if "attachments" in changes:
            message.attachments = changes["attachments"] or []
        if "allowed_mentions" in changes or "content" in changes:
            # Edit Message: new content without allowed_mentions is parsed "with default
            # allowances", whatever the message was created with.
            message.allowed_mentions = changes.get("allowed_mentions")
        if "flags" in changes and changes["flags"] is not None:
            # Only SUPPRESS_EMBEDS may be toggled on edit; ephemeral/V2 state is kept.
            keep = message.flags & ~FLAG_SUPPRESS_EMBEDS & ~FLAG_LOADING
            message.flags = keep | (int(changes["flags"]) & FLAG_SUPPRESS_EMBEDS)
        message.flags &= ~FLAG_LOADING
        message.edited_timestamp = iso()
        self._compute_mentions(message)
        if announce:
            self._announce("update", message)
        return message

    def delete_message(self, message: Message) -> None:
        if message.deleted:
            return
        message.deleted = True
        message._wire = None
        self._announce("delete", message)

    def get_message(self, channel_id: int, message_id: int) -> Message | None:
        message = self.messages.get(message_id)
        if message is None or message.deleted or message.channel_id != channel_id:
            return None
        return message

    def channel_history(self, channel_id: int, *, visible_to: int | None = None) -> list[Message]:
        result = []
        for mid in self.channel_messages.get(channel_id, []):
            message = self.messages[mid]
            if message.deleted:
                continue
            if visible_to is not None and message.visible_to not in (None, visible_to):
                continue
            result.append(message)
        return result

    def _compute_mentions(self, message: Message) -> None:
        """Resolve who a message pings, honouring ``allowed_mentions`` as Discord does."""
        if "@" not in message.content:
            message.mentions, message.mention_roles, message.mention_everyone = [], [], False
            return
        am = message.allowed_mentions
        if am is None:
            parse = {"users", "roles", "everyone"}
            allowed_users: set[int] | None = None
            allowed_roles: set[int] | None = None
        else:
            parse = set(am.get("parse") or [])
            allowed_users = {int(u) for u in am.get("users") or []}
            allowed_roles = {int(r) for r in am.get("roles") or []}
        text = message.content
        users: list[int] = []
        for match in _USER_MENTION.finditer(text):
            uid = int(match.group(1))
            if (
                uid in self.users
                and uid not in users
                and ("users" in parse or (allowed_users is not None and uid in allowed_users))
            ):
                users.append(uid)
        roles: list[int] = []
        guild = self.guilds.get(message.guild_id) if message.guild_id else None
        if guild is not None:
            for match in _ROLE_MENTION.finditer(text):
                rid = int(match.group(1))
                if (
                    rid in guild.roles
                    and rid not in roles
                    and ("roles" in parse or (allowed_roles is not None and rid in allowed_roles))
                ):
                    roles.append(rid)
        everyone = False
        if guild is not None and "everyone" in parse and _EVERYONE.search(text):
            everyone = bool(
                self.channel_permissions(message.channel_id, message.author_id) & P.MENTION_EVERYONE
            )
        message.mentions = users
        message.mention_roles = roles
        message.mention_everyone = everyone

    # ---------------------------------------------------------------- attachments

    def store_attachment(self, filename: str, content_type: str, data: bytes) -> AttachmentBlob:
        blob = AttachmentBlob(
            id=self.next_id(), filename=filename, content_type=content_type, data=data
        )
        self.attachments[blob.id] = blob
        return blob


def _opt_str(value: int | None) -> str | None:
    return None if value is None else str(value)


def normalize_embeds(embeds: list[JSON]) -> list[JSON]:
    """Embeds as Discord echoes them: ``type`` defaulted to ``rich``, nulls dropped."""
    result = []
    for embed in embeds:
        clean = {k: v for k, v in embed.items() if v is not None}
        clean.setdefault("type", "rich")
        if "fields" in clean:
            clean["fields"] = [
                {
                    "name": f.get("name"),
                    "value": f.get("value"),
                    "inline": bool(f.get("inline", False)),
                }
                for f in clean["fields"]
            ]
        result.append(clean)
    return result


def assign_component_ids(components: list[JSON]) -> list[JSON]:
    """Number components depth-first as Discord does when the sender left ``id`` out.

    Works in place: the components come from a freshly parsed request body.
    """
    used = {c["id"] for c in iter_components(components) if isinstance(c.get("id"), int)}
    counter = 0
    for component in iter_components(components):
        if not isinstance(component.get("id"), int):
            counter += 1
            while counter in used:
                counter += 1
            component["id"] = counter
    return components


# ==================================================================== application commands

COMMAND_CHAT_INPUT = 1
OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11


@dataclass
class StoredCommand:
    id: int
    name: str
    type: int
    guild_id: int | None
    version: int
    data: JSON

    def to_json(self, application_id: int) -> JSON:
        body = copy.deepcopy(self.data)
        body.update(
            id=str(self.id),
            application_id=str(application_id),
            version=str(self.version),
        )
        if self.guild_id is not None:
            body["guild_id"] = str(self.guild_id)
        return body


@dataclass
class CommandOverride:
    target_id: int
    allow: bool


class CommandRegistry:
    """Synced application commands, global and per guild, with Discord's upsert semantics."""

    def __init__(self, world: World) -> None:
        self._world = world
        self.global_commands: dict[tuple[str, int], StoredCommand] = {}
        self.guild_commands: dict[int, dict[tuple[str, int], StoredCommand]] = {}
        self.overrides: dict[tuple[int, int], dict[int, CommandOverride]] = {}

    def scope(self, guild_id: int | None) -> dict[tuple[str, int], StoredCommand]:
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.setdefault(guild_id, {})

    def in_scope(self, guild_id: int | None) -> list[StoredCommand]:
        return list(self.scope(guild_id).values())

    def upsert(self, guild_id: int | None, payload: JSON) -> tuple[StoredCommand, bool]:
        """Create or update by (name, type). Returns the command and whether it was created."""
        scope = self.scope(guild_id)
        data = normalize_command(payload, guild=guild_id is not None)
        key = (data["name"], data["type"])
        existing = scope.get(key)
        if existing is not None:
            if existing.data != data:
                existing.data = data
                existing.version = self._world.next_id()
            return existing, False
        command = StoredCommand(
            id=self._world.next_id(),
            name=data["name"],
            type=data["type"],
            guild_id=guild_id,
            version=self._world.next_id(),
            data=data,
        )
        scope[key] = command
        return command, True

    def bulk_overwrite(self, guild_id: int | None, payloads: list[JSON]) -> list[StoredCommand]:
        keep: list[StoredCommand] = [self.upsert(guild_id, p)[0] for p in payloads]
        scope = self.scope(guild_id)
        keys = {(c.name, c.type) for c in keep}
        for key in [k for k in scope if k not in keys]:
            del scope[key]
        return keep

    def by_id(self, guild_id: int | None, command_id: int) -> StoredCommand | None:
        for command in self.scope(guild_id).values():
            if command.id == command_id:
                return command
        return None

    def delete(self, guild_id: int | None, command_id: int) -> bool:
        scope = self.scope(guild_id)
        for key, command in list(scope.items()):
            if command.id == command_id:
                del scope[key]
                return True
        return False

    def find_chat_input(self, name: str, guild_id: int | None) -> StoredCommand | None:
        if guild_id is not None:
            command = self.guild_commands.get(guild_id, {}).get((name, COMMAND_CHAT_INPUT))
            if command is not None:
                return command
        return self.global_commands.get((name, COMMAND_CHAT_INPUT))

    def all_names(self) -> list[str]:
        names = {c.name for c in self.global_commands.values()}
        for scope in self.guild_commands.values():
            names.update(c.name for c in scope.values())
        return sorted(names)


def normalize_command(payload: JSON, *, guild: bool) -> JSON:
    """The stored (and echoed) form of a command, with Discord's defaults filled in."""
    ctype = int(payload.get("type") or COMMAND_CHAT_INPUT)
    dm_permission = payload.get("dm_permission")
    contexts = payload.get("contexts")
    if guild:
        contexts = None
    elif contexts is None:
        contexts = [0] if dm_permission is False else [0, 1, 2]
    dmp = payload.get("default_member_permissions")
    data: JSON = {
        "type": ctype,
        "name": payload["name"],
        "name_localizations": payload.get("name_localizations") or None,
        "description": payload.get("description", "") if ctype == COMMAND_CHAT_INPUT else "",
        "description_localizations": payload.get("description_localizations") or None,
        "default_member_permissions": None if dmp is None else str(dmp),
        "dm_permission": True if guild or dm_permission is None else bool(dm_permission),
        "contexts": contexts,
        "integration_types": payload.get("integration_types") or [0],
        "nsfw": bool(payload.get("nsfw", False)),
    }
    options = payload.get("options")
    if options and ctype == COMMAND_CHAT_INPUT:
        data["options"] = [_normalize_option(o) for o in options]
    return data


def _normalize_option(option: JSON) -> JSON:
    data = {k: v for k, v in option.items() if v is not None and v != []}
    if not data.get("required"):
        data.pop("required", None)
    if not data.get("autocomplete"):
        data.pop("autocomplete", None)
    for key in ("name_localizations", "description_localizations"):
        if not data.get(key):
            data.pop(key, None)
    if "options" in data:
        data["options"] = [_normalize_option(o) for o in data["options"]]
    return data


def token_hash(value: str) -> str:
    """Stable short hash (rate-limit bucket ids, cookie keys) without exposing the input."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]
