"""Start-up: local mode driven by a script, and the refusals that stop a bad start."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pty
import re
import signal
import sys
import time
from pathlib import Path

import discord
import pytest
import yarl

from bot.local import BANNER, run_local
from bot.settings import Settings
from bot.vault import generate_key_spec
from emulators.discord import DiscordEmulator

# Each starts the bot in a process of its own: seconds apiece (tests/conftest.py).
pytestmark = pytest.mark.first


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "TRADECORD_"))}
    env.update(
        TRADECORD_DATA_DIR=str(tmp_path / "data"),
        WEB_PORT="0",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return env


async def test_malformed_setting_stops_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path) | {"WEB_PORT": "eighty"}
    code, _, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [
        "tradecord: WEB_PORT: a TCP port number between 1 and 65535 (0 picks a free port)"
    ]


async def test_real_token_without_key_refuses_before_connecting(tmp_path: Path) -> None:
    async with DiscordEmulator(bot_token="real-token") as emu:
        emu.record_requests(True)
        env = base_env(tmp_path) | {
            "DISCORD_TOKEN": "real-token",
            "DISCORD_API_BASE": emu.api_base,
            "DISCORD_GATEWAY_URL": emu.gateway_url,
        }
        code, _, err = await run_cli("run", env=env, cwd=tmp_path)
        assert emu.record_requests(True) == []  # refused before any call to Discord
    assert code == 2
    assert "TRADECORD_KEYS" in err and "tradecord keys generate" in err
    assert not (tmp_path / "data" / "tradecord.key").exists()


async def test_bad_token_is_refused_with_advice(tmp_path: Path) -> None:
    async with DiscordEmulator(bot_token="the-right-token") as emu:
        env = base_env(tmp_path) | {
            "DISCORD_TOKEN": "a-wrong-token",
            "TRADECORD_KEYS": generate_key_spec("k1"),
            "DISCORD_API_BASE": emu.api_base,
            "DISCORD_GATEWAY_URL": emu.gateway_url,
        }
        code, _, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 2
    assert "DISCORD_TOKEN: Discord refused this token" in err
    assert "a-wrong-token" not in err


async def test_members_intent_not_turned_on_in_the_portal_is_said_in_one_line(
    tmp_path: Path,
) -> None:
    async with DiscordEmulator(bot_token="the-token", privileged_intents=0) as emu:
        env = base_env(tmp_path) | {
            "DISCORD_TOKEN": "the-token",
            "DISCORD_MEMBERS_INTENT": "true",
            "TRADECORD_KEYS": generate_key_spec("k1"),
            "DISCORD_API_BASE": emu.api_base,
            "DISCORD_GATEWAY_URL": emu.gateway_url,
        }
        code, _, err = await run_cli("run", env=env, cwd=tmp_path)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "tradecord: DISCORD_MEMBERS_INTENT: Discord refused the Server Members intent. Turn it "
        "on for the application in the Developer Portal (Bot → Privileged Gateway Intents), "
        "or set DISCORD_MEMBERS_INTENT=false."
    ), err


async def test_keys_generate_prints_a_usable_key(tmp_path: Path) -> None:
    code, out, _ = await run_cli(
        "keys", "generate", "--id", "prod1", env=base_env(tmp_path), cwd=tmp_path
    )
    assert code == 0 and out.startswith("prod1:")
    from bot.settings import parse_keys

    assert len(parse_keys(out.strip())[0].key) == 32


async def test_keys_rotate_reports_credentials_and_sign_in_states(tmp_path: Path) -> None:
    keys = f"{generate_key_spec('new')},{generate_key_spec('old')}"
    env = base_env(tmp_path) | {"TRADECORD_KEYS": keys}
    code, out, err = await run_cli("keys", "rotate", env=env, cwd=tmp_path)
    assert code == 0, err
    assert "Re-encrypted 0 credential rows and 0 sign-in states under key 'new'." in out
    assert "safe to remove from TRADECORD_KEYS: old" in out


async def test_db_upgrade_command(tmp_path: Path) -> None:
    code, out, err = await run_cli("db", "upgrade", env=base_env(tmp_path), cwd=tmp_path)
    assert code == 0, err
    assert "Database is at revision" in out
    assert (tmp_path / "data" / "tradecord.db").exists()


@pytest.fixture
def restore_discord_urls() -> object:
    old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE = old[0]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(old[1]))


async def test_local_mode_driven_by_a_script(
    settings: Settings, tmp_path: Path, restore_discord_urls: object
) -> None:
    script = tmp_path / "demo.txt"
    script.write_text(
        "# a demo\n/help\n/accounts\n/trade symbol:AAPL side:buy quantity:10\npress 1\n"
        "/positions\n/positions share:true\n/trade symbol:AAPL side:buy quantity:abc\n/nope\n"
        "press 9\n/strategy create name:Bob's EMA cross\n"
        "/trade symbol:AAPL side:buy quantity:1 quantity:2\n"
        "/trade symbol:AAPL side:buy quantity:1 qty:3\nquit\n"
        "/never-run\n"
    )
    local = settings.model_copy(update={"tradecord_keys": None, "discord_token": None})
    out = io.StringIO()
    assert await run_local(local, script=script, out=out) == 0
    text = out.getvalue()
    assert text.splitlines()[0] == BANNER
    assert "you> /help" in text and "Tradecord connects your brokerage accounts" in text
    assert "Paper account:" in text
    assert "PAPER ORDER PREVIEW" in text and "[1] Confirm  [2] Cancel" in text
    assert "Filled: buy 10 AAPL" in text
    assert "AAPL    long" in text
    # The public summary, once: as posted in #general, not again as the command's answer.
    assert text.count("SERVER OWNER'S POSITIONS") == 1, text
    assert "must be a number" in text
    assert "! /nope is not a Tradecord command" in text
    assert "! the last message has no buttons or menus" in text or "! press a number" in text
    # As in Discord, a value runs to the next option, apostrophes included.
    assert "Created Bob's EMA cross." in text
    assert "! quantity is given twice" in text
    # A misspelt option is named, not taken as part of the value before it ("1 qty:3").
    assert "! unknown option qty; options: symbol, side, quantity, amount, order_type" in text
    assert "“1 qty:3” is not" not in text
    assert "**" not in text  # markdown shows as Discord shows it
    assert "/never-run" not in text.split("you> quit")[1]
    assert (settings.tradecord_data_dir / "tradecord.key").exists()


async def test_a_missing_script_stops_with_one_line(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        "run", "--script", "demo.txt", env=base_env(tmp_path), cwd=tmp_path
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "tradecord: --script: no file demo.txt (- reads standard input)"
    ]
    (tmp_path / "demos").mkdir()
    code, _, err = await run_cli("run", "--script", "demos", env=base_env(tmp_path), cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines() == ["tradecord: --script: demos is a folder; name a file in it"]


@pytest.mark.parametrize("role", ["web", "all"])
async def test_web_port_in_use_stops_with_one_line(tmp_path: Path, role: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(tmp_path) | {"WEB_PORT": str(port)}
        args = ("run", "--role", role) + (("--script", os.devnull) if role == "all" else ())
        code, _, err = await run_cli(*args, env=env, cwd=tmp_path)
    assert code == 2
    assert f"tradecord: WEB_PORT: 127.0.0.1:{port} is already in use" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("role", ["bot", "worker"])
async def test_a_role_that_calls_brokers_is_refused_on_sqlite(tmp_path: Path, role: str) -> None:
    """Each would keep its own broker rate-limit buckets in memory: beside another process on
    the same SQLite file, together they sent up to twice a broker's published limit."""
    env = base_env(tmp_path) | {"DISCORD_TOKEN": "MTAw.real.token"}
    code, _, err = await run_cli("run", "--role", role, env=env, cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"tradecord: --role {role}: splitting Tradecord into processes needs PostgreSQL "
        "(DATABASE_URL=postgresql+asyncpg://...); on SQLite one `tradecord run` does everything"
    )


def closed_port() -> int:
    """A port nobody listens on: not one from port 0, where another test worker's emulator
    may be listening by now."""
    from tests.support import free_port

    return free_port()


@pytest.mark.parametrize("args", [("db", "upgrade"), ("run", "--role", "worker")])
async def test_unreachable_database_stops_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    url = f"postgresql+asyncpg://tc:hunter2secret@127.0.0.1:{closed_port()}/tradecord"
    env = base_env(tmp_path) | {"DATABASE_URL": url}
    code, _, err = await run_cli(*args, env=env, cwd=tmp_path)
    assert code == 2
    assert "tradecord: DATABASE_URL: cannot connect to the database" in err
    assert "Traceback" not in err and "hunter2secret" not in err


async def test_database_from_a_newer_tradecord_stops_with_one_line(tmp_path: Path) -> None:
    import sqlite3

    env = base_env(tmp_path)
    code, _, err = await run_cli("db", "upgrade", env=env, cwd=tmp_path)
    assert code == 0, err
    with sqlite3.connect(tmp_path / "data" / "tradecord.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    for args in (("db", "upgrade"), ("run", "--script", os.devnull)):
        code, _, err = await run_cli(*args, env=env, cwd=tmp_path)
        assert code == 2
        assert "tradecord: DATABASE_URL: the database is at revision 9999" in err
        assert "Traceback" not in err


async def test_local_mode_accepts_a_plain_http_public_url_on_the_lan(tmp_path: Path) -> None:
    # Settings allow http:// off loopback in local mode (nothing leaves the machine's own
    # Discord); trying it from another computer on the LAN must not be refused at start.
    env = base_env(tmp_path) | {"PUBLIC_URL": "http://192.168.1.50:8080"}
    code, out, err = await run_cli("run", "--script", os.devnull, env=env, cwd=tmp_path)
    assert code == 0, err
    assert "Signed in as" in out


@pytest.mark.parametrize("args", [("run",), ("sync", "--global")])
async def test_discord_unreachable_at_start_stops_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    port = closed_port()
    env = base_env(tmp_path) | {
        "DISCORD_TOKEN": "a-token-that-never-leaves",
        "TRADECORD_KEYS": generate_key_spec("k1"),
        "DISCORD_API_BASE": f"http://127.0.0.1:{port}/api/v10",
        "DISCORD_GATEWAY_URL": f"ws://127.0.0.1:{port}/",
    }
    code, _, err = await run_cli(*args, env=env, cwd=tmp_path)
    assert code == 2
    assert f"tradecord: DISCORD_API_BASE: cannot reach Discord at 127.0.0.1:{port}" in err
    assert "Traceback" not in err and "a-token-that-never-leaves" not in err


@pytest.mark.parametrize(("content", "mode"), [("junk\n", 0o600), (None, 0o644)])
async def test_bad_local_key_file_stops_with_one_line(
    tmp_path: Path, content: str | None, mode: int
) -> None:
    key_file = tmp_path / "data" / "tradecord.key"
    key_file.parent.mkdir()
    key_file.write_text(content or generate_key_spec("local") + "\n")
    key_file.chmod(mode)
    for args in (("run", "--script", os.devnull), ("keys", "rotate")):
        code, _, err = await run_cli(*args, env=base_env(tmp_path), cwd=tmp_path)
        assert code == 2
        assert "Traceback" not in err
        assert f"tradecord: {key_file}" in err


@pytest.mark.parametrize("host", ["no-such-host.invalid", "10.255.255.1"])
async def test_web_host_not_on_this_machine_stops_with_one_line(tmp_path: Path, host: str) -> None:
    env = base_env(tmp_path) | {"WEB_HOST": host}
    code, _, err = await run_cli("run", "--role", "web", env=env, cwd=tmp_path)
    assert code == 2
    assert f"tradecord: WEB_HOST: {host} is not an address of this machine" in err
    assert "Traceback" not in err


async def test_data_dir_that_is_a_file_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder")
    for args in (("run", "--script", os.devnull), ("db", "upgrade")):
        code, _, err = await run_cli(*args, env=base_env(tmp_path), cwd=tmp_path)
        assert code == 2
        assert "Traceback" not in err
        assert "tradecord: TRADECORD_DATA_DIR: cannot " in err


async def test_keys_generate_refuses_an_id_tradecord_keys_would_refuse(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "keys", "generate", "--id", "prod key!", env=base_env(tmp_path), cwd=tmp_path
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "tradecord: --id: letters, digits, _ and - only, at most 32 characters"
    ]


def test_discords_missing_voice_warning_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """discord.py warns at each start that PyNaCl and davey are missing: Tradecord has no voice,
    and a WARNING on the first screen reads as something to fix."""
    from bot.cli import setup_logging

    log = logging.getLogger("discord.client")
    saved = list(log.filters)
    try:
        setup_logging("INFO")
        with caplog.at_level(logging.INFO, logger="discord.client"):
            log.warning("PyNaCl is not installed, voice will NOT be supported")
            log.warning("Shard ID None heartbeat blocked for more than 10 seconds.")
        assert [r.getMessage() for r in caplog.records] == [
            "Shard ID None heartbeat blocked for more than 10 seconds."
        ]
    finally:
        log.filters[:] = saved


async def test_ctrl_c_at_the_local_chat_prompt_stops_tradecord(tmp_path: Path) -> None:
    """Before: the prompt read stdin in asyncio's default executor, and asyncio.run waited at
    exit for that thread, blocked in readline: Ctrl-C left Tradecord running."""
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=base_env(tmp_path),
        cwd=tmp_path,
        stdin=slave,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    os.close(slave)
    try:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        while b"Type help" not in seen and time.monotonic() < deadline:
            seen += await asyncio.wait_for(proc.stdout.read(4096), 60)
        assert b"Type help" in seen, seen
        await asyncio.sleep(0.5)  # at the prompt, waiting for a line
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 15)
        assert code == 130
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)


@pytest.mark.parametrize("fixed", [True, False])
async def test_local_mode_links_name_the_port_the_web_server_is_on(
    settings: Settings, tmp_path: Path, restore_discord_urls: object, fixed: bool
) -> None:
    """Before: PUBLIC_URL's default, http://127.0.0.1:8080, was in every webhook URL and
    /connect link whatever WEB_PORT was (0 included)."""
    from tests.support import free_port

    port = free_port() if fixed else 0
    script = tmp_path / "links.txt"
    script.write_text("/strategy create name:Breakout\n/connect broker:tradestation\n")
    local = settings.model_copy(
        update={"tradecord_keys": None, "discord_token": None, "web_port": port}
    )
    out = io.StringIO()
    assert await run_local(local, script=script, out=out) == 0
    text = out.getvalue()
    if not fixed:
        found = re.search(r"http://127\.0\.0\.1:(\d+)/webhook/", text)
        assert found is not None, text
        port = int(found.group(1))
        assert port not in (0, 8080)
    assert f"http://127.0.0.1:{port}/webhook/" in text, text
    assert f"http://127.0.0.1:{port}/connect/" in text, text
    assert ":8080/" not in text


async def test_port_in_use_names_public_url_when_it_names_that_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = base_env(tmp_path) | {
            "WEB_PORT": str(port),
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
        }
        code, _, err = await run_cli("run", "--script", os.devnull, env=env, cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        f"tradecord: WEB_PORT: 127.0.0.1:{port} is already in use; stop what listens there or "
        f"choose another port (PUBLIC_URL, http://127.0.0.1:{port}, names it too: change both)"
    ), err


async def test_the_bots_web_server_gives_public_url_its_bound_port(
    settings: Settings, db: object, restore_discord_urls: object
) -> None:
    """The normal start (role all) too: PUBLIC_URL unset and WEB_PORT=0 gave :8080 links."""
    from bot.client import create_bot
    from bot.core import Core

    assert not settings.public_url_set and settings.web_port == 0
    core = await Core.open(settings, migrate=False)
    bot = create_bot(settings, core=core)
    try:
        await bot.start_web()
        assert bot.web_port not in (None, 0, 8080)
        assert core.settings.public_url == f"http://127.0.0.1:{bot.web_port}"
        assert core.strategies.webhook_url("1", "s").startswith(
            f"http://127.0.0.1:{bot.web_port}/webhook/"
        )
    finally:
        await bot.close()
        await core.close()


@pytest.mark.parametrize("args", [("sync", "--guild", "4242"), ("run",)])
async def test_a_guild_id_discord_does_not_know_stops_with_one_line(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Before: discord.py's NotFound traceback (10004 Unknown Guild)."""
    async with DiscordEmulator(bot_token="the-token") as emu:
        env = base_env(tmp_path) | {
            "DISCORD_TOKEN": "the-token",
            "TRADECORD_KEYS": generate_key_spec("k1"),
            "DISCORD_API_BASE": emu.api_base,
            "DISCORD_GATEWAY_URL": emu.gateway_url,
            "DISCORD_DEV_GUILD_ID": "4242",
        }
        code, _, err = await run_cli(*args, env=env, cwd=tmp_path)
    setting = "--guild" if args[0] == "sync" else "DISCORD_DEV_GUILD_ID"
    assert code == 2, err
    assert "Traceback" not in err and "the-token" not in err
    assert err.strip().splitlines()[-1] == (
        f"tradecord: {setting}: Discord knows no server with id 4242. Check the id (Developer "
        "Mode on, then right-click the server → Copy Server ID), and invite the bot there with "
        "the bot and applications.commands scopes."
    ), err


async def test_a_guild_the_bot_may_not_reach_stops_with_one_line(
    settings: Settings, restore_discord_urls: object
) -> None:
    """Discord answers 50001 Missing Access for a server the bot is not in."""
    from unittest import mock

    from bot.client import create_bot, sync_to_guild
    from bot.errors import ConfigurationError

    bot = create_bot(settings, sync_only=True)
    response = mock.Mock(status=403, reason="Forbidden")
    missing = discord.Forbidden(response, {"code": 50001, "message": "Missing Access"})
    with (
        mock.patch.object(bot.tree, "sync", side_effect=missing),
        pytest.raises(ConfigurationError) as refused,
    ):
        await sync_to_guild(bot, 4242, "--guild")
    assert refused.value.user_message.startswith(
        "--guild: the bot may not add commands to server 4242. Check the id"
    )


async def test_local_mode_checks_the_keys_as_every_process_does(
    settings: Settings,
    db: object,
    tmp_path: Path,
    restore_discord_urls: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: local mode opened the core without bot.roles' key check, and started with
    tokens under a key TRADECORD_KEYS no longer held (each member found out at their turn)."""
    from pydantic import SecretStr

    from bot.db import Database
    from bot.errors import ConfigurationError
    from bot.settings import parse_keys
    from bot.vault import Vault
    from tests.bot.test_credentials import _store

    assert isinstance(db, Database)
    old, new = generate_key_spec("old"), generate_key_spec("new")
    await _store(db, Vault(parse_keys(old)), 1)
    out = io.StringIO()
    script = tmp_path / "empty.txt"
    script.write_text("")
    local = settings.model_copy(update={"discord_token": None})
    with pytest.raises(ConfigurationError) as refused:
        newer = local.model_copy(update={"tradecord_keys": SecretStr(new)})
        await run_local(newer, script=script, out=out)
    assert "encrypted under keys it no longer holds (2 under key old)" in str(refused.value)
    assert "Signed in as" not in out.getvalue()
    caplog.set_level(logging.INFO, "tradecord.roles")
    both = local.model_copy(update={"tradecord_keys": SecretStr(f"{new},{old}")})
    assert await run_local(both, script=script, out=out) == 0
    assert "Encryption keys in use: new (primary): 0, old: 2" in caplog.text


async def test_a_script_that_is_not_utf8_stops_with_one_line(tmp_path: Path) -> None:
    """Before: a UnicodeDecodeError traceback, once everything had started."""
    (tmp_path / "demo.txt").write_bytes(b"/help\n/strategy create name:Caf\xe9\n")
    code, out, err = await run_cli(
        "run", "--script", "demo.txt", env=base_env(tmp_path), cwd=tmp_path
    )
    assert code == 2
    assert err.strip().splitlines() == [
        "tradecord: --script: demo.txt is not UTF-8 text (line 2); save it as UTF-8"
    ]
    assert BANNER not in out  # refused before starting anything


def readme() -> str:
    return (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_local_mode_lines() -> list[str]:
    block = readme().split("## Local mode", 1)[1].split("```\n", 2)[1]
    return [line.removeprefix("you> ") for line in block.splitlines()]


async def test_the_readmes_local_mode_lines_play_as_a_script(
    settings: Settings, tmp_path: Path, restore_discord_urls: object
) -> None:
    """Before: their " # ..." notes were read as part of the command ("press 1  # press the
    first button" was refused, "amount:500  # or size it in dollars" was not a number)."""
    lines = readme_local_mode_lines()
    assert any(" # " in line for line in lines)  # the notes this is about
    # Before: "/strategy settings refusal_notices:False", without the strategy it requires.
    turn_off = re.findall(r"`(/strategy settings [^`]*refusal_notices[^`]*)`", readme())
    assert turn_off
    lines += ["/strategy create name:NAME", *turn_off]
    script = tmp_path / "readme.txt"
    script.write_text("\n".join(lines) + "\n")
    local = settings.model_copy(update={"tradecord_keys": None, "discord_token": None})
    out = io.StringIO()
    assert await run_local(local, script=script, out=out) == 0
    text = out.getvalue()
    assert "Filled: buy 10 AAPL" in text, text  # "press 1" confirmed the first order
    assert "! press a number" not in text and "must be a number" not in text, text
    assert "Amount must be" not in text, text
    assert "off: /signal list still shows refused signals" in text, text
