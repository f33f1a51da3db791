"""Tradecord end to end: the local Discord emulator, the real bot, and failure guards.

discord.py only logs exceptions raised in handlers, and an unanswered interaction just times
out; the harness turns ERROR records (discord.py's and ours) and calls to routes the emulator
does not model into test failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import discord
import yarl

from bot.client import Tradecord, create_bot
from bot.core import Core
from bot.settings import Settings, load_settings
from emulators.discord import DiscordEmulator, InteractionResult, Message
from tests.support import free_port

TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.emulated.tradecord-test-token"


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.expected: list[re.Pattern[str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern, re.S))

    def unexpected(self) -> list[str]:
        out = []
        for r in self.records:
            text = f"{r.name}: {r.getMessage()}"
            if r.exc_info and r.exc_info[1] is not None:
                text += f" | {type(r.exc_info[1]).__name__}: {r.exc_info[1]}"
            if not any(p.search(text) for p in self.expected):
                out.append(text)
        return out


@dataclass
class Harness:
    emu: DiscordEmulator
    bot: Tradecord
    core: Core
    errors: ErrorLog
    members: dict[str, int] = field(default_factory=dict)
    sandbox: Any = None

    @property
    def guild_id(self) -> int:
        return self.emu.guild.id

    def user(self, name: str) -> int:
        """A guild member, created on first use."""
        if name not in self.members:
            user = self.emu.add_user(name)
            self.emu.add_member(self.guild_id, user.id)
            self.members[name] = user.id
        return self.members[name]

    async def slash(self, user: int | str, command: str, **options: Any) -> InteractionResult:
        uid = self.user(user) if isinstance(user, str) else user
        return await self.emu.slash(
            uid, command, options=options, guild_id=self.guild_id, channel_id=self.emu.general.id
        )

    async def reply(self, user: int | str, command: str, **options: Any) -> Message:
        result = await self.slash(user, command, **options)
        return await result.message(timeout=10)


def settings_for(base: Settings, emu: DiscordEmulator, **overrides: Any) -> Settings:
    values = {k: v for k, v in base.model_dump().items() if v is not None}
    values.update(
        discord_token=TOKEN,
        discord_api_base=emu.api_base,
        discord_gateway_url=emu.gateway_url,
        discord_dev_guild_id=emu.guild.id,
        web_port=0,
    )
    values.pop("discord_client_secret", None)
    values.update(overrides)
    return load_settings(**values)


DISCORD_CLIENT_SECRET = "discord-oauth-secret-for-tests"


@contextlib.asynccontextmanager
async def running_tradecord(
    base: Settings, *, brokers: bool = False, public_path: str = "", **overrides: Any
) -> AsyncIterator[Harness]:
    """The bot on a fresh local Discord. ``brokers=True`` also starts the sandbox brokers and
    serves the web pages on a fixed port, with Login with Discord configured: the whole
    /connect flow works (at ``PUBLIC_URL`` = the port plus ``public_path``)."""
    errors = ErrorLog()
    for name in ("discord", "tradecord"):
        logging.getLogger(name).addHandler(errors)
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    emu = DiscordEmulator(bot_token=TOKEN)
    await emu.start()
    stack = contextlib.AsyncExitStack()
    if brokers:
        from emulators.sandbox import start_sandbox_brokers

        port = free_port()
        public = f"http://127.0.0.1:{port}{public_path}"
        sandbox = await start_sandbox_brokers(public)
        stack.push_async_callback(sandbox.stop)
        emu.register_oauth_client(
            str(emu.application_id), DISCORD_CLIENT_SECRET, [f"{public}/auth/discord/callback"]
        )
        overrides = {
            **sandbox.settings_overrides,
            "web_port": port,
            "public_url": public,
            "discord_client_id": str(emu.application_id),
            "discord_client_secret": DISCORD_CLIENT_SECRET,
            "discord_authorize_url": f"{emu.base_url}/oauth2/authorize",
            **overrides,
        }
    settings = settings_for(base, emu, **overrides)
    core = await Core.open(settings, migrate=False)
    bot = create_bot(settings, core=core, guild_ready_timeout=0.05)
    task = asyncio.create_task(bot.start(TOKEN))
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
        assert ready in done, "the bot was not ready in time"
        harness = Harness(emu, bot, core, errors)
        harness.sandbox = sandbox if brokers else None
        yield harness
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        await core.close()
        await stack.aclose()
        await emu.stop()
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(old_gateway))
        for name in ("discord", "tradecord"):
            logging.getLogger(name).removeHandler(errors)
    if emu.unmodelled_requests:
        raise AssertionError(f"the bot called unmodelled Discord routes: {emu.unmodelled_requests}")
    problems = errors.unexpected()
    if problems:
        raise AssertionError("errors were logged:\n" + "\n".join(problems))
