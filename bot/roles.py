"""Processes other than the all-in-one bot: web (OAuth pages and webhooks, several behind a
load balancer) and worker (signal jobs, order updates, reconciliation). Both reach Discord only
through its REST API; all shared state is in the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import discord
from aiohttp import web

from bot.client import point_at_discord
from bot.core import Core
from bot.notifier import DiscordNotifier
from bot.settings import Settings

log = logging.getLogger("tradecord.roles")


def parse_shards(spec: str) -> tuple[list[int], int]:
    """``0-3/8`` → shards 0, 1, 2, 3 of 8; ``5/8`` → shard 5 of 8."""
    try:
        ids, count_text = spec.split("/")
        count = int(count_text)
        if "-" in ids:
            low, high = (int(x) for x in ids.split("-"))
        else:
            low = high = int(ids)
    except ValueError:
        raise ValueError("--shards takes FIRST-LAST/COUNT, e.g. 0-3/8") from None
    if not (0 <= low <= high < count):
        raise ValueError(f"--shards {spec}: shard ids must be within 0..{count - 1}")
    return list(range(low, high + 1)), count


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.asynccontextmanager
async def rest_core(settings: Settings) -> AsyncIterator[Core]:
    """A core whose notifier talks to Discord's REST API with the bot token (no gateway)."""
    point_at_discord(settings)
    core = await Core.open(settings)
    client = discord.Client(intents=discord.Intents.none())
    try:
        if settings.discord_token is not None:
            await client.login(settings.discord_token.get_secret_value())
            core.notifier = DiscordNotifier(client.http)
        yield core
    finally:
        await client.close()
        await core.close()


async def run_web(settings: Settings, stop: asyncio.Event | None = None) -> int:
    from web.app import create_app

    stop = stop or stop_on_signals()
    async with rest_core(settings) as core:
        runner = web.AppRunner(create_app(core), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.web_host, settings.web_port)
        await site.start()
        log.info("Web role on http://%s:%s", settings.web_host, settings.web_port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
    return 0


async def run_worker_role(settings: Settings, stop: asyncio.Event | None = None) -> int:
    from bot.background import Background

    stop = stop or stop_on_signals()
    async with rest_core(settings) as core:
        background = Background(core)
        background.start()
        log.info("Worker role started")
        try:
            await stop.wait()
        finally:
            await background.close()
    return 0
