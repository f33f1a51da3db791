"""Shared Discord UI pieces: views that only their owner can use, and embed helpers."""

from __future__ import annotations

import asyncio
import logging
import secrets
import weakref
from collections.abc import Awaitable
from typing import Any, TypeVar

import discord
from discord import app_commands

from bot.client import report_error
from bot.errors import Conflict, PermissionDenied

PAPER_COLOUR = discord.Colour.blurple()
LIVE_COLOUR = discord.Colour.red()
OK_COLOUR = discord.Colour.green()

T = TypeVar("T")
log = logging.getLogger(__name__)

# Discord drops an interaction not answered within 3 s. Work done sooner is answered directly;
# past this, the member sees "thinking…" (or the card stays as it is) until the answer comes.
DEFER_AFTER = 1.5
# Autocomplete cannot be deferred: an answer later than 3 s is refused and the member reads
# "Loading options failed". Choices that need a broker give up before then.
CHOICES_WITHIN = 2.5


async def choices_in_time(work: Awaitable[T]) -> T | None:
    """``work``'s result, or None if it would come too late for an autocomplete answer."""
    try:
        return await asyncio.wait_for(work, CHOICES_WITHIN)
    except TimeoutError:
        return None


def may_post_here(interaction: discord.Interaction) -> None:
    """``share:true`` posts for the member in the channel: not where the server lets them send
    no messages (a read-only channel, a mute), which the bot would otherwise post around."""
    if interaction.guild is not None and not interaction.permissions.send_messages:
        raise PermissionDenied(
            "You cannot send messages in this channel, so Tradecord does not post there for "
            "you. Run it without share:true to see it privately, or share it in a channel "
            "where you can post."
        )


def roles_of(interaction: discord.Interaction) -> frozenset[int]:
    """The member's roles where they run the command, @everyone (the guild's id) included:
    a strategy shared with one of them is theirs to see and subscribe to."""
    user = interaction.user
    return frozenset(r.id for r in user.roles) if isinstance(user, discord.Member) else frozenset()


def role_text(role: discord.Role) -> str:
    """A role as replies name it (with mentions disabled, a mention shows its name)."""
    return "everyone in this server" if role.is_default() else role.mention


def as_text(name: str) -> str:
    """A member's display name, which they write, as plain text in a message: "**Bob**" not
    bold, "<@123>" not a mention's pill (allowed_mentions only stops the ping)."""
    return discord.utils.escape_mentions(discord.utils.escape_markdown(name))


def as_title(name: str) -> str:
    """A member's display name as plain text in an embed title. Titles render markdown but
    not mentions, so "<@123>" already shows as typed; escaping it as ``as_text`` does would
    only add an invisible character to what the reader copies."""
    return discord.utils.escape_markdown(name)


async def in_time(
    interaction: discord.Interaction,
    work: Awaitable[T],
    *,
    ephemeral: bool,
    thinking: bool | None = None,
) -> T:
    """``work``'s result, deferring the interaction only if it takes longer than DEFER_AFTER.

    A fast answer is then one request to Discord instead of two, and the member never sees a
    "thinking…" placeholder flash. ``reply`` and ``update`` answer either way. ``thinking``:
    whether the answer is a new message (the default for commands) rather than an update of
    the component's message (the default for components)."""
    loop = asyncio.get_running_loop()
    deferring: list[asyncio.Task[Any]] = []
    if thinking is None:
        thinking = interaction.type is discord.InteractionType.application_command

    def defer() -> None:
        if not interaction.response.is_done():
            deferring.append(
                loop.create_task(interaction.response.defer(ephemeral=ephemeral, thinking=thinking))
            )

    timer = loop.call_later(DEFER_AFTER, defer)
    try:
        return await work
    finally:
        timer.cancel()
        if deferring:
            # A failed deferral (the interaction expired) must not hide the work's own result
            # or error; the answer that follows meets the same failure and reports it.
            await asyncio.gather(deferring[0], return_exceptions=True)


# Discord's answer to a followup or edit once the interaction's 15-minute token has expired.
INVALID_WEBHOOK_TOKEN = 50027


def token_expired(error: discord.HTTPException) -> bool:
    return error.code == INVALID_WEBHOOK_TOKEN


async def by_dm(interaction: discord.Interaction, message: dict[str, Any]) -> discord.Message:
    """A result that outlived the interaction's token: sent privately by DM instead, since
    Discord accepts no followup or edit after 15 minutes."""
    message.pop("ephemeral", None)
    message.pop("wait", None)
    return await interaction.user.send(**message)


async def reply(
    interaction: discord.Interaction, *, ephemeral: bool, wait: bool = False, **message: Any
) -> discord.Message | None:
    """Answer a command whether or not ``in_time`` deferred it; the message when ``wait``.
    Past the interaction's token lifetime the answer goes by DM."""
    if interaction.response.is_done():
        try:
            return await interaction.followup.send(ephemeral=ephemeral, wait=wait, **message)
        except discord.HTTPException as e:
            if not token_expired(e):
                raise
            return await by_dm(interaction, message)
    sent = await interaction.response.send_message(ephemeral=ephemeral, **message)
    resource = sent.resource if wait else None
    return resource if isinstance(resource, discord.InteractionMessage) else None


async def update(interaction: discord.Interaction, **message: Any) -> None:
    """Replace the message a component sits on, whether or not ``in_time`` deferred it.
    Past the interaction's token lifetime the new content goes by DM instead."""
    if interaction.response.is_done():
        try:
            await interaction.edit_original_response(**message)
        except discord.HTTPException as e:
            if not token_expired(e):
                raise
            await by_dm(interaction, message)
    else:
        await interaction.response.edit_message(**message)


async def connection_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the member's connection names containing what they typed."""
    bot: Any = interaction.client
    conns = await bot.core.connections.list_for(interaction.user.id)
    cur = current.casefold()
    return [app_commands.Choice(name=c.name, value=c.name) for c in conns if cur in c.name_key][:25]


async def broker_connection_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete without Tradecord Paper (for renaming, unlinking, choosing accounts)."""
    bot: Any = interaction.client
    builtin = {
        c.name for c in await bot.core.connections.list_for(interaction.user.id) if c.builtin
    }
    return [c for c in await connection_names(interaction, current) if c.name not in builtin]


def can_manage(interaction: discord.Interaction) -> bool:
    """Manage Server, checked at run time: server admins can override a command's default
    permissions."""
    perms = getattr(interaction.user, "guild_permissions", None)
    return bool(perms and (perms.manage_guild or perms.administrator))


async def _strategies(
    interaction: discord.Interaction, current: str, *, owned: bool
) -> list[app_commands.Choice[str]]:
    if interaction.guild_id is None:
        return []
    bot: Any = interaction.client
    infos = await bot.core.strategies.list(
        interaction.guild_id, interaction.user.id, roles=roles_of(interaction)
    )
    cur = current.casefold()
    return [
        app_commands.Choice(name=i.name, value=i.name)
        for i in infos
        if (i.is_owner or not owned) and cur in i.name.casefold()
    ][:25]


async def managed_strategy_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the strategies the member owns; a server admin's, all of the server's."""
    if interaction.guild_id is None or not can_manage(interaction):
        return await _strategies(interaction, current, owned=True)
    bot: Any = interaction.client
    cur = current.casefold()
    names = await bot.core.strategies.names(interaction.guild_id)
    return [app_commands.Choice(name=n, value=n) for n in names if cur in n.casefold()][:25]


async def strategy_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: this server's strategies the member can see (own and shared)."""
    return await _strategies(interaction, current, owned=False)


async def owned_strategy_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: this server's strategies the member owns."""
    return await _strategies(interaction, current, owned=True)


# A short-lived view's buttons and selects carry this prefix and an id of their own. A press
# on one whose view has ended (timed out, answered, or gone with a restart) reaches no view;
# without an answer Discord only says "This interaction failed".
VIEW_PREFIX = "tc:view:"
_VIEWS: weakref.WeakValueDictionary[str, OwnedView] = weakref.WeakValueDictionary()
EXPIRED = (
    "These buttons have expired: they last a few minutes, and not past a restart of "
    "Tradecord. Nothing was done. Run the command again."
)


async def answer_expired(interaction: discord.Interaction) -> None:
    """Answer a press on a short-lived view that no longer listens. discord.py hands the same
    interaction to the view first, so one that was answered there is left alone."""
    if interaction.type is not discord.InteractionType.component:
        return
    custom_id = str((interaction.data or {}).get("custom_id", ""))
    if not custom_id.startswith(VIEW_PREFIX):
        return
    view = _VIEWS.get(custom_id)
    if (view is not None and not view.is_finished()) or interaction.response.is_done():
        return
    try:
        await interaction.response.send_message(EXPIRED, ephemeral=True)
    except (discord.InteractionResponded, discord.HTTPException) as e:
        log.debug("A press on an ended view was answered elsewhere: %s", e)


class OwnedView(discord.ui.View):
    """A view whose components work only for the member who asked for it."""

    def __init__(self, owner_id: int, *, timeout: float | None = 60.0) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.message: discord.Message | None = None
        for child in self.children:
            self._name(child)

    def add_item(self, item: discord.ui.Item[Any]) -> OwnedView:
        self._name(item)
        super().add_item(item)
        return self

    def _name(self, item: discord.ui.Item[Any]) -> None:
        # Persistent items (tc:trade:…, tc:appr:…) keep theirs: they outlive a restart.
        if isinstance(item, discord.ui.Button | discord.ui.Select) and not (
            isinstance(item, discord.ui.Button) and item.url
        ):
            if not item.custom_id.startswith("tc:"):
                item.custom_id = VIEW_PREFIX + secrets.token_hex(8)
            if item.custom_id.startswith(VIEW_PREFIX):
                _VIEWS[item.custom_id] = self

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.owner_id:
            return True
        await interaction.response.send_message(
            "These buttons belong to someone else's command. Run the command yourself to get "
            "your own.",
            ephemeral=True,
        )
        return False

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        await report_error(interaction, error)

    def disable_all(self) -> None:
        for child in self.children:
            if isinstance(child, discord.ui.Button | discord.ui.Select):
                child.disabled = True

    async def on_timeout(self) -> None:
        self.disable_all()
        if self.message is not None:
            try:
                await self.message.edit(view=self)
            except discord.HTTPException:
                pass  # the message is gone or no longer ours to edit: nothing to disable


class ConfirmView(OwnedView):
    """A question answered once: the first press of any of its buttons acts, and a later one
    is told so privately, as a second press of a /trade card is.

    A quick second press (a double click) reaches discord.py before the first press has
    removed the buttons, and ``stop()`` does not recall a click already dispatched; so the
    answer is claimed in ``interaction_check``, with no await between reading and setting the
    flag. ``answer`` stops the view only once the buttons are gone: until then a second press
    must still reach this view and be answered, not fail in Discord.
    """

    def __init__(self, owner_id: int, *, timeout: float | None = 60.0) -> None:
        super().__init__(owner_id, timeout=timeout)
        self.answered = False

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.owner_id:
            return await super().interaction_check(interaction)
        if self.answered:
            await report_error(
                interaction,
                Conflict("You already pressed a button here; your first press counts."),
            )
            return False
        self.answered = True
        return True

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        if interaction.user.id == self.owner_id:  # their answer failed: they may try again
            self.answered = False
        await super().on_error(interaction, error, item)

    async def answer(self, interaction: discord.Interaction, content: str) -> None:
        """Replace the question (a card too) with its outcome, without buttons, and stop
        listening."""
        await update(interaction, content=content, embed=None, view=None)
        self.stop()
