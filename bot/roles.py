"""Processes other than the all-in-one bot: web (OAuth pages and webhooks, several behind a
load balancer) and worker (signal jobs, order updates, reconciliation). Both reach Discord only
through its REST API; all shared state is in the database."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator

import aiohttp
import discord
from discord.http import HTTPClient

from bot.client import bind_web, point_at_discord
from bot.core import Core
from bot.errors import ConfigurationError
from bot.notifier import DiscordNotifier
from bot.services.credentials import key_usage, retired_keys_in_use
from bot.settings import Settings

log = logging.getLogger("tradecord.roles")

# How long a web or worker process waits for Discord's API at start before going on without.
LOGIN_TIMEOUT = 10.0


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


async def open_core(settings: Settings) -> Core:
    """``Core.open`` for a process that may start at the same moment as others on one
    PostgreSQL database (a deployment starting all its processes): one applies the migrations
    while the others wait on an advisory lock, then find nothing left to do. Without the lock
    they all create the same tables at once, and all but one crash on a fresh database."""
    core = await Core.open(settings, migrate=False)
    try:
        await core.db.upgrade()
        await check_keys(core)
    except BaseException:
        await core.close()
        raise
    return core


async def check_keys(core: Core) -> None:
    """Log how many stored ciphertexts each key encrypts, and refuse to start when some are
    under a key TRADECORD_KEYS no longer holds (security requirement 12)."""
    usage = await key_usage(core.db)
    primary = core.vault.primary_key_id
    log.info(
        "Encryption keys in use: %s",
        ", ".join(
            f"{k}{' (primary)' if k == primary else ''}: {usage.get(k, 0)}"
            for k in core.vault.key_ids
        ),
    )
    problem = retired_keys_in_use(usage, core.vault)
    if problem is not None:
        raise ConfigurationError(problem)


def settle_heap() -> None:
    """Move what start-up built (modules, models, compiled SQL) out of the collector's way:
    without this every full collection walks it again, and those pauses are the slowest
    replies."""
    gc.collect()
    gc.freeze()
    # A full collection waits until a quarter of the (unfrozen) heap is new survivors; with
    # start-up frozen that heap is small, so one came every 10th middle collection, several a
    # second in a fan-out, each walking everything built since. Every 100th spaces them again.
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, 100)


async def discord_rest(settings: Settings) -> HTTPClient | None:
    """discord.py's REST client logged in with the bot token (no gateway, no client state),
    or None in local mode.

    A token Discord refuses stops the start (``LoginFailure``), as it does for a bot process.
    Discord not answering does not: webhooks, OAuth pages and jobs do not need it, and each
    message to a member is its own request that works once Discord is back.
    """
    if settings.discord_token is None:
        return None
    token = settings.discord_token.get_secret_value()
    http = HTTPClient(asyncio.get_running_loop())
    try:
        await asyncio.wait_for(http.static_login(token), LOGIN_TIMEOUT)
    except discord.LoginFailure:
        await http.close()
        raise
    except (OSError, aiohttp.ClientError, discord.HTTPException, TimeoutError) as e:
        http.token = token  # static_login forgets the token after an HTTP error
        log.warning(
            "Discord's API did not answer at start (%s); going on without it: messages to "
            "members are sent once it answers",
            type(e).__name__,
        )
    return http


@contextlib.asynccontextmanager
async def rest_core(settings: Settings) -> AsyncIterator[Core]:
    """A core whose notifier talks to Discord's REST API with the bot token (no gateway)."""
    point_at_discord(settings)
    core = await open_core(settings)
    http: HTTPClient | None = None
    try:
        http = await discord_rest(settings)
        if http is not None:
            core.notifier = DiscordNotifier(http)
        settle_heap()  # once per process, after start-up (the bot role: end of setup_hook)
        yield core
    finally:
        if http is not None:
            await http.close()
        await core.close()


async def run_web(settings: Settings, stop: asyncio.Event | None = None) -> int:
    from web.app import app_runner

    stop = stop or stop_on_signals()
    async with rest_core(settings) as core:
        runner = app_runner(core)
        await runner.setup()
        try:
            port = await bind_web(runner, settings)
            core.settings = core.settings.bound_to(port)  # PUBLIC_URL unset: the bound port
            log.info("Web role on http://%s:%s", settings.web_host, port)
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
