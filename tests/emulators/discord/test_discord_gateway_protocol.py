"""The gateway at the frame level: HELLO, IDENTIFY, READY, close codes, RESUME, compression."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from emulators.discord import DiscordEmulator
from emulators.discord.gateway import GUILD_MEMBERS, GUILDS

TOKEN = "MTAw.gateway.bot-token"


@pytest.fixture
async def gateway() -> AsyncIterator[DiscordEmulator]:
    async with DiscordEmulator(bot_token=TOKEN) as emu:
        yield emu


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def _identify(ws: aiohttp.ClientWebSocketResponse, **extra: Any) -> None:
    data = {"token": TOKEN, "intents": GUILDS, "properties": {"os": "linux"}, **extra}
    await ws.send_json({"op": 2, "d": data})


async def test_hello_identify_ready_and_heartbeat(gateway: DiscordEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(gateway.gateway_url + "?v=10&encoding=json") as ws:
            hello = await _receive(ws)
            assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
            await ws.send_json({"op": 1, "d": None})
            assert (await _receive(ws))["op"] == 11
            await _identify(ws)
            ready = await _receive(ws)
            assert (ready["op"], ready["t"], ready["s"]) == (0, "READY", 1)
            data = ready["d"]
            assert data["v"] == 10 and data["user"]["id"] == str(gateway.bot_user.id)
            assert data["guilds"] == [{"id": str(gateway.guild.id), "unavailable": True}]
            assert data["resume_gateway_url"] == gateway.gateway_url.rstrip("/")
            assert data["application"]["id"] == str(gateway.application_id)
            assert "shard" not in data
            create = await _receive(ws)
            assert (create["t"], create["s"]) == ("GUILD_CREATE", 2)
            guild = create["d"]
            everyone = next(r for r in guild["roles"] if r["name"] == "@everyone")
            assert everyone["id"] == guild["id"] == str(gateway.guild.id)
            assert guild["owner_id"] == str(gateway.owner.id)
            assert {c["name"] for c in guild["channels"]} == {"general", "trade-alerts"}
            assert all("permission_overwrites" in c for c in guild["channels"])
            # Without GUILD_MEMBERS only the bot's own member is sent.
            assert [m["user"]["id"] for m in guild["members"]] == [str(gateway.bot_user.id)]
            assert guild["member_count"] == 2


async def test_identify_with_shard_and_members(gateway: DiscordEmulator) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(gateway.gateway_url) as ws:
        await _receive(ws)
        shard = (gateway.guild.id >> 22) % 3
        await _identify(ws, shard=[shard, 3], intents=GUILDS | GUILD_MEMBERS)
        ready = (await _receive(ws))["d"]
        assert ready["shard"] == [shard, 3]
        assert [g["id"] for g in ready["guilds"]] == [str(gateway.guild.id)]
        guild = (await _receive(ws))["d"]
        assert {m["user"]["id"] for m in guild["members"]} == {
            str(gateway.bot_user.id),
            str(gateway.owner.id),
        }
        await ws.send_json(
            {
                "op": 8,
                "d": {"guild_id": str(gateway.guild.id), "query": "", "limit": 0, "nonce": "n1"},
            }
        )
        chunk = await _receive(ws)
        assert chunk["t"] == "GUILD_MEMBERS_CHUNK"
        assert (chunk["d"]["nonce"], chunk["d"]["chunk_index"], chunk["d"]["chunk_count"]) == (
            "n1",
            0,
            1,
        )
        assert len(chunk["d"]["members"]) == 2


@pytest.mark.parametrize(
    ("identify", "code"),
    [
        ({"token": "wrong", "intents": GUILDS}, 4004),
        ({"token": TOKEN}, 4013),
        ({"token": TOKEN, "intents": GUILDS, "shard": [2, 2]}, 4010),
    ],
)
async def test_identify_close_codes(
    gateway: DiscordEmulator, identify: dict[str, Any], code: int
) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(gateway.gateway_url) as ws:
        await _receive(ws)
        await ws.send_json({"op": 2, "d": identify})
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and ws.close_code == code


async def test_commands_before_identify_and_unknown_opcodes(gateway: DiscordEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(gateway.gateway_url) as ws:
            await _receive(ws)
            await ws.send_json({"op": 8, "d": {"guild_id": "1"}})
            await ws.receive(timeout=5)
            assert ws.close_code == 4003
        async with session.ws_connect(gateway.gateway_url) as ws:
            await _receive(ws)
            await ws.send_str("not json")
            await ws.receive(timeout=5)
            assert ws.close_code == 4002


async def test_resume_replays_missed_events(gateway: DiscordEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(gateway.gateway_url) as ws:
            await _receive(ws)
            await _identify(ws)
            ready = (await _receive(ws))["d"]
            await _receive(ws)  # GUILD_CREATE, s=2
            await ws.close(code=4000)
        # While disconnected the session keeps events for the RESUME.
        gateway.add_channel(gateway.guild.id, "missed")
        async with session.ws_connect(ready["resume_gateway_url"]) as ws:
            await _receive(ws)
            await ws.send_json(
                {"op": 6, "d": {"token": TOKEN, "session_id": ready["session_id"], "seq": 2}}
            )
            missed = await _receive(ws)
            assert (missed["t"], missed["s"], missed["d"]["name"]) == (
                "CHANNEL_CREATE",
                3,
                "missed",
            )
            assert (await _receive(ws))["t"] == "RESUMED"
        async with session.ws_connect(gateway.gateway_url) as ws:
            await _receive(ws)
            await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": "nope", "seq": 1}})
            invalid = await _receive(ws)
            assert (invalid["op"], invalid["d"]) == (9, False)


async def test_zlib_stream_compression_is_opt_in(gateway: DiscordEmulator) -> None:
    query = "?v=10&encoding=json&compress=zlib-stream"
    async with aiohttp.ClientSession() as session:
        # By default frames stay plain text (discord.py reads both); compression costs CPU.
        async with session.ws_connect(gateway.gateway_url + query) as ws:
            assert (await _receive(ws))["op"] == 10
        async with DiscordEmulator(bot_token=TOKEN, gateway_compression=True) as emu:
            async with session.ws_connect(emu.gateway_url + query) as ws:
                inflate = zlib.decompressobj()
                msg = await ws.receive(timeout=5)
                assert msg.type is aiohttp.WSMsgType.BINARY and msg.data.endswith(
                    b"\x00\x00\xff\xff"
                )
                assert json.loads(inflate.decompress(msg.data))["op"] == 10
                await _identify(ws)
                msg = await ws.receive(timeout=5)
                assert json.loads(inflate.decompress(msg.data))["t"] == "READY"


async def test_disallowed_privileged_intents(
    discord_errors: Any, pointed_at: Callable[..., Any]
) -> None:
    async with DiscordEmulator(bot_token=TOKEN, privileged_intents=0) as emu:
        with pointed_at(emu):
            bot = commands.Bot(
                command_prefix="!", intents=discord.Intents.all(), guild_ready_timeout=0.05
            )
            try:
                with pytest.raises(discord.PrivilegedIntentsRequired):
                    await bot.start(TOKEN)
            finally:
                await bot.close()


async def test_member_chunking_with_members_intent(
    discord_errors: Any, pointed_at: Callable[..., Any], run_bot: Callable[..., Any]
) -> None:
    async with DiscordEmulator(bot_token=TOKEN) as emu:
        for name in ("alice", "bob", "carol"):
            emu.add_member(emu.guild.id, emu.add_user(name).id)
        with pointed_at(emu):
            intents = discord.Intents.default()
            intents.members = True
            bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
            async with run_bot(bot, TOKEN):
                guild = bot.get_guild(emu.guild.id)
                assert guild is not None and guild.chunked and guild.member_count == 5
                found = await guild.query_members("car")
                assert [m.name for m in found] == ["carol"]
                fetched = await guild.fetch_member(emu.owner.id)
                assert fetched.id == emu.owner.id
        assert emu.unmodelled_requests == []


async def test_discord_py_over_zlib_stream(
    discord_errors: Any, pointed_at: Callable[..., Any], run_bot: Callable[..., Any]
) -> None:
    async with DiscordEmulator(bot_token=TOKEN, gateway_compression=True) as emu:
        alice = emu.add_user("alice")
        emu.add_member(emu.guild.id, alice.id)
        with pointed_at(emu):
            bot = commands.Bot(
                command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05
            )

            @bot.tree.command(description="Ping")
            async def ping(interaction: discord.Interaction) -> None:
                await interaction.response.send_message("pong")

            async with run_bot(bot, TOKEN):
                await bot.tree.sync()
                result = await emu.slash(alice.id, "ping")
                assert (await result.message()).content == "pong"
