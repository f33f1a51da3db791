"""Sharding: guilds and their interactions reach the shard that owns them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import discord
from discord.ext import commands

from emulators.discord import DiscordEmulator
from emulators.discord.snowflake import one_per_shard

TOKEN = "MTAw.sharded.bot-token"


def guild_ids_one_per_shard(count: int) -> list[int]:
    ids = one_per_shard(count)
    assert [(i >> 22) % count for i in ids] == list(range(count))
    return ids


def add_where_command(bot: commands.Bot, seen: list[tuple[str, int | None, int]]) -> None:
    @bot.tree.command(description="Which shard am I on")
    async def where(interaction: discord.Interaction) -> None:
        shard = interaction.guild.shard_id if interaction.guild else 0
        seen.append((type(bot).__name__ + str(bot.shard_id), interaction.guild_id, shard))
        await interaction.response.send_message(f"shard {shard}")


class FastAutoShardedBot(commands.AutoShardedBot):
    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # Discord allows one IDENTIFY per 5 s per bucket; the emulator does not enforce it.
        return None


async def test_autosharded_bot_receives_each_guild_on_its_shard(
    discord_errors: Any, pointed_at: Callable[..., Any], run_bot: Callable[..., Any]
) -> None:
    emu = DiscordEmulator(bot_token=TOKEN, recommended_shards=2)
    zero_id, one_id = guild_ids_one_per_shard(2)
    alice = emu.add_user("alice")
    for guild_id, name in ((zero_id, "Shard Zero"), (one_id, "Shard One")):
        emu.add_guild(name, guild_id=guild_id)
        emu.add_member(guild_id, alice.id)
    seen: list[tuple[str, int | None, int]] = []
    async with emu:
        with pointed_at(emu):
            bot = FastAutoShardedBot(
                command_prefix=commands.when_mentioned,
                intents=discord.Intents.default(),
                guild_ready_timeout=0.05,
            )
            add_where_command(bot, seen)
            async with run_bot(bot, TOKEN):
                await bot.tree.sync()
                assert bot.shard_count == 2
                assert sorted((s.shard_id, s.shard_count) for s in emu.sessions) == [(0, 2), (1, 2)]
                assert bot.get_guild(zero_id).shard_id == 0 and bot.get_guild(one_id).shard_id == 1

                for guild_id, shard in ((zero_id, 0), (one_id, 1)):
                    result = await emu.slash(alice.id, "where", guild_id=guild_id)
                    assert (await result.message()).content == f"shard {shard}"
                    assert result.shard_id == shard
                dm = await emu.slash(alice.id, "where", dm=True)
                assert (await dm.message()).content == "shard 0" and dm.shard_id == 0
    assert [s[1:] for s in seen] == [(zero_id, 0), (one_id, 1), (None, 0)]
    assert emu.unmodelled_requests == []


async def test_two_processes_each_get_only_their_shards(
    discord_errors: Any, pointed_at: Callable[..., Any], run_bot: Callable[..., Any]
) -> None:
    emu = DiscordEmulator(bot_token=TOKEN)
    zero_id, one_id = guild_ids_one_per_shard(2)
    alice = emu.add_user("alice")
    for guild_id in (zero_id, one_id):
        emu.add_guild(f"guild {guild_id}", guild_id=guild_id)
        emu.add_member(guild_id, alice.id)
    seen: list[tuple[str, int | None, int]] = []
    async with emu:
        with pointed_at(emu):
            bots = [
                commands.Bot(
                    command_prefix=commands.when_mentioned,
                    intents=discord.Intents.default(),
                    guild_ready_timeout=0.05,
                    shard_id=shard,
                    shard_count=2,
                )
                for shard in (0, 1)
            ]
            for bot in bots:
                add_where_command(bot, seen)
            async with contextlib.AsyncExitStack() as stack:
                for bot in bots:
                    await stack.enter_async_context(run_bot(bot, TOKEN))
                await bots[0].tree.sync()
                assert {g.id for g in bots[0].guilds} >= {zero_id} and one_id not in {
                    g.id for g in bots[0].guilds
                }
                assert one_id in {g.id for g in bots[1].guilds} and zero_id not in {
                    g.id for g in bots[1].guilds
                }
                for guild_id in (zero_id, one_id):
                    result = await emu.slash(alice.id, "where", guild_id=guild_id)
                    await result.message()
    assert seen == [("Bot0", zero_id, 0), ("Bot1", one_id, 1)]
