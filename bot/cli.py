"""The ``tradecord`` command: run, db upgrade, keys generate|rotate, sync."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import discord

from bot.core import resolve_keys
from bot.db import Database
from bot.errors import ConfigurationError
from bot.settings import KEY_ID_RE, Settings, load_settings
from bot.vault import Vault, generate_key_spec

log = logging.getLogger("tradecord")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    # authlib's framework integrations log PKCE verifiers at DEBUG; never let them through.
    logging.getLogger("authlib").setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("discord").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # discord.py warns at every start that voice libraries are missing; Tradecord has no voice.
    logging.getLogger("discord.client").addFilter(_no_voice_warning)


def _no_voice_warning(record: logging.LogRecord) -> bool:
    return "voice will NOT be supported" not in record.getMessage()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradecord", description="Trade from Discord.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start Tradecord (local mode when DISCORD_TOKEN is unset)")
    run.add_argument(
        "--script", type=Path, help="local mode: read chat lines from FILE (- = stdin)"
    )
    run.add_argument(
        "--role",
        choices=("all", "bot", "web", "worker"),
        default="all",
        help="all (default): one process does everything; or one part of it",
    )
    run.add_argument("--shards", help="with --role bot: the gateway shards to own, e.g. 0-3/8")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations up to the newest")

    keys = sub.add_parser("keys", help="encryption keys for stored broker tokens")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="print a new key line for TRADECORD_KEYS")
    gen.add_argument("--id", dest="key_id", help="key id (default: random)")
    keys_sub.add_parser("rotate", help="re-encrypt every stored token under the first key")

    sync = sub.add_parser("sync", help="push slash commands to Discord, on purpose")
    target = sync.add_mutually_exclusive_group(required=True)
    target.add_argument("--guild", type=int, help="one guild (instant)")
    target.add_argument(
        "--global",
        dest="global_",
        action="store_true",
        help="every guild (Discord may take up to an hour to show them)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keys" and args.keys_command == "generate":
        # Before the settings: the printed line is what fixes a broken TRADECORD_KEYS, and
        # another bad setting must not keep an admin from making the key they were told to.
        # A line TRADECORD_KEYS would refuse at the next start is no use to print.
        if args.key_id is not None and not KEY_ID_RE.match(args.key_id):
            print(
                "tradecord: --id: letters, digits, _ and - only, at most 32 characters",
                file=sys.stderr,
            )
            return 2
        print(generate_key_spec(args.key_id))
        return 0
    try:
        settings = load_settings()
    except ConfigurationError as e:
        print(f"tradecord: {e.user_message}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        if args.command == "db":
            return asyncio.run(_db_upgrade(settings))
        if args.command == "keys":
            return asyncio.run(_keys_rotate(settings))
        if args.command == "sync":
            return asyncio.run(_sync(settings, args.guild, args.global_))
        # Options a role has no use for were ignored without a word: --script with a token
        # went onto real Discord instead of local mode, and --shards with --role all had every
        # shard process serve the web pages and run the background work too.
        options: dict[str, object] = {"role": args.role}
        if args.shards:
            if args.role in ("web", "worker"):
                raise ConfigurationError(
                    "--shards: only with --role bot (web and worker processes own no shards)"
                )
            from bot.roles import parse_shards

            try:
                shard_ids, count = parse_shards(args.shards)
            except ValueError as e:
                raise ConfigurationError(str(e)) from None
            if args.role == "all" and shard_ids != list(range(count)):
                raise ConfigurationError(
                    f"--shards {args.shards}: --role all is the only process, so it owns every "
                    f"shard (0-{count - 1}/{count}); to split shards run --role bot processes"
                )
            options.update(shard_ids=shard_ids, shard_count=count)
        if args.script is not None and not settings.local_mode:
            raise ConfigurationError(
                "--script: plays local mode's chat, but DISCORD_TOKEN is set; unset it "
                "(or run without --script to go on Discord)"
            )
        if args.script is not None and args.role != "all":
            raise ConfigurationError(
                f"--script: local mode runs as one process, not --role {args.role}"
            )
        if args.role in ("bot", "worker") and settings.resolved_database_url.startswith("sqlite"):
            # Processes that call brokers keep their rate-limit buckets in memory on SQLite:
            # beside another, together they would send up to twice a broker's published limit.
            raise ConfigurationError(
                f"--role {args.role}: splitting Tradecord into processes needs PostgreSQL "
                "(DATABASE_URL=postgresql+asyncpg://...); on SQLite one `tradecord run` does "
                "everything"
            )
        if args.role == "web":
            from bot.roles import run_web

            return asyncio.run(run_web(settings))
        if args.role == "worker":
            from bot.roles import run_worker_role

            return asyncio.run(run_worker_role(settings))
        if settings.local_mode:
            if args.role != "all":
                raise ConfigurationError("DISCORD_TOKEN: --role bot needs a real bot token")
            script = args.script
            # Checked before anything starts: a typo is one line, not a traceback after it.
            if script is not None and str(script) != "-" and not script.exists():
                raise ConfigurationError(f"--script: no file {script} (- reads standard input)")
            if script is not None and script.is_dir():
                raise ConfigurationError(f"--script: {script} is a folder; name a file in it")
            if script is not None and str(script) != "-":
                _check_script(script)
            from bot.local import run_local

            # A migration's every step at the first start buries the chat's first lines.
            logging.getLogger("alembic").setLevel(logging.WARNING)
            return asyncio.run(run_local(settings, script=script))
        return asyncio.run(run_bot(settings, **options))
    except ConfigurationError as e:
        print(f"tradecord: {e.user_message}", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print(
            "tradecord: DISCORD_MEMBERS_INTENT: Discord refused the Server Members intent. Turn "
            "it on for the application in the Developer Portal (Bot → Privileged Gateway "
            "Intents), or set DISCORD_MEMBERS_INTENT=false.",
            file=sys.stderr,
        )
        return 2
    except discord.LoginFailure:
        print(
            "tradecord: DISCORD_TOKEN: Discord refused this token. Copy the bot token again from "
            "the Developer Portal (Bot → Reset Token) into .env.",
            file=sys.stderr,
        )
        return 2
    except aiohttp.ClientConnectorError as e:
        # Discord (or DISCORD_API_BASE) not answering at login; the bot has no state yet, so
        # stopping with a line beats a traceback. Other hosts' errors stay tracebacks.
        if e.host != urlsplit(settings.discord_api_base).hostname:
            raise
        print(
            f"tradecord: DISCORD_API_BASE: cannot reach Discord at {e.host}:{e.port} "
            f"({e.os_error.strerror or type(e.os_error).__name__}); check the network, or "
            "the URL if you changed it.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _check_script(script: Path) -> None:
    """Read the script now: a file that is not UTF-8 failed with a traceback after the whole
    of Tradecord had started."""
    try:
        script.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigurationError(
            f"--script: {script} is not UTF-8 text (line {line}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigurationError(
            f"--script: cannot read {script} ({e.strerror}); check its permissions"
        ) from None


async def _db_upgrade(settings: Settings) -> int:
    db = Database(settings.resolved_database_url)
    try:
        await db.upgrade()
        print(f"Database is at revision {await db.current_revision()}.")
    finally:
        await db.close()
    return 0


async def _keys_rotate(settings: Settings) -> int:
    from bot.services.credentials import rotate_keys

    vault = Vault(resolve_keys(settings))
    db = Database(settings.resolved_database_url)
    try:
        await db.upgrade()
        report = await rotate_keys(db, vault)
    finally:
        await db.close()
    print(
        f"Re-encrypted {report.rows['credentials']} credential rows and "
        f"{report.rows['oauth_states']} sign-in states under key {vault.primary_key_id!r}."
    )
    for key_id in sorted(set(report.before) | set(report.after)):
        print(
            f"  {key_id}: {report.before[key_id]} ciphertexts before, {report.after[key_id]} after"
        )
    if report.unused_keys:
        print(
            "No ciphertext uses these keys any more; they are safe to remove from "
            f"TRADECORD_KEYS: {', '.join(report.unused_keys)}"
        )
    status = 0
    if report.unknown_keys:
        print(
            "Ciphertexts use keys that are not configured (add them back to rotate those rows): "
            f"{', '.join(report.unknown_keys)}"
        )
        status = 1
    if report.unreadable:
        print(
            f"{sum(report.unreadable.values())} ciphertexts did not decrypt (altered, or copied "
            "from another row) and were left as they are; their members must link again: "
            + ", ".join(f"{k}: {n}" for k, n in sorted(report.unreadable.items()))
        )
        status = 1
    return status


async def _sync(settings: Settings, guild_id: int | None, global_: bool) -> int:
    from bot.client import create_bot, sync_to_guild

    if settings.discord_token is None:
        raise ConfigurationError("DISCORD_TOKEN: sync needs the bot token of a real application")
    bot = create_bot(settings, sync_only=True)
    async with bot:
        await bot.login(settings.discord_token.get_secret_value())
        if global_:
            synced = await bot.tree.sync()
            print(f"Synced {len(synced)} commands globally (Discord may take up to an hour).")
        else:
            assert guild_id is not None
            synced = await sync_to_guild(bot, guild_id, "--guild")
            print(f"Synced {len(synced)} commands to guild {guild_id}.")
    return 0


async def run_bot(settings: Settings, **options: object) -> int:
    """Connect to Discord with the token and run until SIGINT/SIGTERM."""
    from bot.client import create_bot
    from bot.roles import stop_on_signals

    assert settings.discord_token is not None
    resolve_keys(settings)  # refuse before connecting anywhere when no key is configured
    bot = create_bot(settings, **options)
    stop = stop_on_signals()
    async with bot:
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            stopper.cancel()
            runner.result()  # re-raise LoginFailure and friends
        else:
            log.info("Shutting down")
            await bot.close()
            await runner
    return 0


if __name__ == "__main__":
    sys.exit(main())
