"""Shared pieces of the Discord round-trip benchmarks: a bare discord.py bot that answers "ok",
Tradecord on its own emulator, latency statistics, and an interleaved runner so both bots see
the same machine noise."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import Tradecord, create_bot
from bot.core import Core
from bot.roles import settle_heap
from bot.settings import load_settings
from bot.vault import generate_key_spec
from emulators.discord import DiscordEmulator

TOKEN = "YmVuY2htYXJr.bench.token"

RoundTrip = Callable[[], Awaitable[None]]


@dataclass
class Stats:
    name: str
    samples: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p99(self) -> float:
        s = sorted(self.samples)
        return s[min(len(s) - 1, int(len(s) * 0.99))] * 1000

    @property
    def throughput(self) -> float:
        return len(self.samples) / sum(self.samples) if self.samples else 0.0


class _Press(discord.ui.View):
    @discord.ui.button(label="OK")
    async def press(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content="ok", view=None)


def add_bare_command(bot: commands.Bot) -> None:
    """The baseline: a plain discord.py command answering "ok", on the same bot, emulator
    and event loop as the command measured against it; and ``okpress``, a card with a button
    whose press replaces it (the shape of /trade + Confirm, with nothing behind it)."""

    @app_commands.command(name="ok", description="answers ok")
    async def ok(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ok", ephemeral=True)

    @app_commands.command(name="okpress", description="answers with a button")
    async def okpress(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("press", view=_Press(), ephemeral=True)

    bot.tree.add_command(ok)
    bot.tree.add_command(okpress)


async def _start(bot: commands.Bot) -> asyncio.Task[None]:
    task = asyncio.create_task(bot.start(TOKEN))
    ready = asyncio.create_task(bot.wait_until_ready())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    return task


@contextlib.asynccontextmanager
async def tradecord_bot(**settings: object) -> AsyncIterator[tuple[DiscordEmulator, Tradecord]]:
    emu = DiscordEmulator(bot_token=TOKEN)
    await emu.start()
    with tempfile.TemporaryDirectory() as tmp:
        s = load_settings(
            discord_token=TOKEN,
            discord_api_base=emu.api_base,
            discord_gateway_url=emu.gateway_url,
            discord_dev_guild_id=emu.guild.id,
            tradecord_data_dir=Path(tmp),
            tradecord_keys=generate_key_spec("bench"),
            web_port=0,
            **settings,
        )
        core = await Core.open(s)
        bot = create_bot(s, core=core, guild_ready_timeout=0.05)
        original_setup = bot.setup_hook

        async def setup_with_baseline() -> None:
            add_bare_command(bot)  # before setup_hook syncs the dev guild
            await original_setup()

        bot.setup_hook = setup_with_baseline  # type: ignore[method-assign]
        task = await _start(bot)
        try:
            yield emu, bot
        finally:
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await core.close()
            await emu.stop()


def slash(emu: DiscordEmulator, user_id: int, command: str, **options: object) -> RoundTrip:
    async def once() -> None:
        result = await emu.slash(
            user_id, command, options=options, guild_id=emu.guild.id, channel_id=emu.general.id
        )
        await result.message(timeout=30)

    return once


async def sequential(trip: RoundTrip, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await trip()
        out.append(time.perf_counter() - t)
    return out


async def concurrent(trip: RoundTrip, n: int, in_flight: int) -> tuple[list[float], float]:
    """``n`` round trips with ``in_flight`` at a time; returns latencies and wall time."""
    sem = asyncio.Semaphore(in_flight)
    out: list[float] = []

    async def one() -> None:
        async with sem:
            t = time.perf_counter()
            await trip()
            out.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return out, time.perf_counter() - start


async def interleaved(
    trips: dict[str, RoundTrip], n: int, chunk: int = 50
) -> dict[str, list[float]]:
    """Alternate chunks of each kind so both meet the same noise (GC, the other core)."""
    results: dict[str, list[float]] = {k: [] for k in trips}
    done = 0
    while done < n:
        size = min(chunk, n - done)
        for name, trip in trips.items():
            results[name].extend(await sequential(trip, size))
        done += size
    return results


def quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("discord", "tradecord", "alembic", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def settle() -> None:
    """After the warm-up, what the bot does after start-up (``bot.roles.settle_heap``): what
    the warm-up built stays out of the collector's scans too."""
    settle_heap()


def table(rows: list[tuple[str, Stats, Stats | None]]) -> str:
    lines = [f"{'run':<38}{'p50 ms':>9}{'p99 ms':>9}{'ratio p50':>11}{'ratio p99':>11}"]
    for name, stats, base in rows:
        r50 = f"{stats.p50 / base.p50:.2f}" if base else "—"
        r99 = f"{stats.p99 / base.p99:.2f}" if base else "—"
        lines.append(f"{name:<38}{stats.p50:>9.2f}{stats.p99:>9.2f}{r50:>11}{r99:>11}")
    return "\n".join(lines)
