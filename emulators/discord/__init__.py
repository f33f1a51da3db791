"""A local Discord for tests, benchmarks and local mode.

A real, unpatched discord.py bot connects to :class:`DiscordEmulator` (REST, gateway and
OAuth2 on one aiohttp server) and the test drives it as Discord users would::

    async with DiscordEmulator(bot_token=TOKEN) as emu:
        discord.http.Route.BASE = emu.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emu.gateway_url)
        ...
        result = await emu.slash(user.id, "trade", {"symbol": "AAPL", "quantity": 10})
        message = await result.message()
"""

from . import permissions
from .driver import InteractionResponse, InteractionResult
from .emulator import DiscordEmulator
from .errors import APIError, EmulatorError
from .gateway import GatewaySession
from .interactions import Callback, InteractionTimeout
from .oauth import OAuthClient
from .render import IndexedComponent, components_index, render_message
from .state import Button, Channel, Guild, Member, Message, MessageVersion, Overwrite, Role, User

__all__ = [
    "APIError",
    "Button",
    "Callback",
    "Channel",
    "DiscordEmulator",
    "EmulatorError",
    "GatewaySession",
    "Guild",
    "IndexedComponent",
    "InteractionResponse",
    "InteractionResult",
    "InteractionTimeout",
    "Member",
    "Message",
    "MessageVersion",
    "OAuthClient",
    "Overwrite",
    "Role",
    "User",
    "components_index",
    "permissions",
    "render_message",
]
