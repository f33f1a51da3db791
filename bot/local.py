"""Local mode: the real bot against the built-in Discord (and sandbox brokers), with a chat in
the terminal. Anyone can try Tradecord without a Discord application.

Lines are slash commands as typed in Discord (``/trade symbol:AAPL side:buy quantity:10``; a
value runs to the next option, so ``/strategy create name:EMA cross`` works),
``press N`` / ``select N[,M]`` (``select K N`` for menu K of several) for the components of
the last message, ``help`` and ``quit``. A line starting with ``#``, and a `` # `` tail, are
notes. ``--script FILE`` plays a file.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import os
import re
import secrets
import shlex
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from bot.client import create_bot
from bot.core import Core, resolve_keys
from bot.roles import check_keys
from bot.settings import Settings, load_settings
from emulators.discord import (
    DiscordEmulator,
    EmulatorError,
    InteractionResult,
    InteractionTimeout,
    Message,
    components_index,
    render_message,
)

# Not a secret: it only opens the emulator that this process starts on 127.0.0.1.
LOCAL_TOKEN = "TG9jYWxNb2Rl.local.tradecord-local-mode"  # noqa: S105
BANNER = (
    "Tradecord local mode: no DISCORD_TOKEN is set, so Tradecord runs against a built-in "
    "Discord on this machine. To run on real Discord, put your bot token in .env as "
    "DISCORD_TOKEN=... (see README)."
)
USAGE = """Type slash commands as in Discord, for example:
  /help
  /accounts
  /trade symbol:AAPL side:buy quantity:10
  /connect broker:tradestation      (sandbox brokers run locally too)
Then:  press N        press button N of the last message (or press Confirm: its label)
       select N[,M]   choose options of the last message's menu
       select K N     choose option N of menu K, when it has several
       help           this text          quit   leave"""
TRAILING_COMMENT = re.compile(r"\s+#\s.*$", re.DOTALL)
OPTION_NAME = re.compile(r"[a-z][a-z0-9_-]*")  # as Discord allows them, lower case
OPTION_TYPES = {
    3: "string",
    4: "integer",
    5: "boolean",
    6: "user",
    7: "channel",
    8: "role",
    10: "number",
}


class ChatError(Exception):
    """A line the chat cannot run; printed, never fatal."""


class Chat:
    def __init__(self, emu: DiscordEmulator, user_id: int, out: TextIO) -> None:
        self.emu = emu
        self.user_id = user_id
        self.out = out
        self.last: Message | None = None
        self._shown: set[tuple[int, int]] = set()  # (message id, edit count) already printed
        self._ours: set[int] = set()  # messages that answer our own interactions
        emu.world.subscribe(self._on_message)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _on_message(self, event: str, message: Message) -> None:
        """DMs to us and public posts (fills, alerts) appear as they arrive."""
        if event == "delete" or message.id in self._ours or message.loading:
            return
        if message.author_id == self.user_id:
            return
        channel = self.emu.world.channels.get(message.channel_id)
        is_dm = channel is not None and channel.type == 1
        if message.ephemeral or (channel is None) or (is_dm and not self._dm_with_us(channel)):
            return
        key = (message.id, len(message.edits))
        if key in self._shown:
            return
        self._shown.add(key)
        where = "DM" if is_dm else f"#{channel.name}"
        self.say(f"[{where}]\n{render_message(message, names=self._name)}")
        if message.components:
            self.last = message

    def _name(self, kind: str, snowflake: int) -> str | None:
        """What Discord shows for a mention: the user's, role's or channel's name."""
        world = self.emu.world
        if kind == "user":
            user = world.users.get(snowflake)
            return (user.global_name or user.username) if user else None
        if kind == "channel":
            channel = world.channels.get(snowflake)
            return channel.name if channel else None
        role = next(
            (g.roles[snowflake] for g in world.guilds.values() if snowflake in g.roles), None
        )
        return role.name if role else None

    def _dm_with_us(self, channel: Any) -> bool:
        return bool(channel.recipient_id == self.user_id)

    async def handle(self, line: str) -> bool:
        """Run one line; ``False`` means quit."""
        # "press 1   # a note" as the README's examples write it: a " # " tail is a comment.
        # A # with no space after it is kept, as in channel:#general.
        line = TRAILING_COMMENT.sub("", line).strip()
        if not line or line.startswith("#"):
            return True
        word = line.split()[0].lower()
        try:
            if word in ("quit", "exit"):
                return False
            if word in ("help", "?"):
                self.say(USAGE)
            elif word == "press":
                await self._press(line)
            elif word == "select":
                await self._select(line)
            elif line.startswith("/"):
                await self._slash(line[1:])
            else:
                self.say("Commands start with / (try /help), or type help.")
        except InteractionTimeout:  # an EmulatorError too: caught first, or never shown
            self.say("! Tradecord did not answer in time.")
        except (ChatError, EmulatorError) as e:
            self.say(f"! {e}")
        return True

    async def _slash(self, text: str) -> None:
        try:
            tokens = shlex.split(text)
        except ValueError:  # an apostrophe, as in "Bob's strategy", is text in Discord
            tokens = text.split()
        words = list(itertools.takewhile(lambda t: ":" not in t, tokens))
        definitions = self._definitions(words)
        raw = self._options(tokens[len(words) :], definitions)
        options = {name: self._convert(name, value, definitions) for name, value in raw.items()}
        result = await self.emu.slash(
            self.user_id,
            " ".join(words),
            options=options,
            guild_id=self.emu.guild.id,
            channel_id=self.emu.general.id,
        )
        await self._show(result)

    def _definitions(self, words: list[str]) -> dict[str, dict[str, Any]]:
        if not words:
            raise ChatError("which command? try /help")
        stored = self.emu.world.commands.find_chat_input(words[0], self.emu.guild.id)
        if stored is None:
            raise ChatError(f"/{words[0]} is not a Tradecord command; try /help")
        node = stored.data
        for i, word in enumerate(words[1:], start=1):
            subs = [o for o in node.get("options", []) if o["type"] in (1, 2)]  # subcommands
            match = next((o for o in subs if o["name"] == word), None)
            if match is not None:
                node = match
                continue
            said = "/" + " ".join(words[:i])
            if subs:
                names = ", ".join(o["name"] for o in subs)
                raise ChatError(f"{said} has no subcommand {word}; its subcommands: {names}")
            # "/killswitch on": a value typed without its option's name.
            options = [o["name"] for o in node.get("options", []) if o["type"] in OPTION_TYPES]
            example = f", e.g. {said} {options[0]}:{word}" if options else ""
            raise ChatError(f"options are written name:value{example}")
        return {o["name"]: o for o in node.get("options", []) if o["type"] in OPTION_TYPES}

    @staticmethod
    def _options(tokens: list[str], defs: dict[str, dict[str, Any]]) -> dict[str, str]:
        """``name:value`` pairs. As in Discord, a value may hold spaces: the words up to the
        next of the command's option names belong to it."""
        raw: dict[str, str] = {}
        current: str | None = None
        for token in tokens:
            name, colon, value = token.partition(":")
            # A misspelt option (qty:3) would run into the value before it ("1 qty:3 is not a
            # number"); Discord offers no such option at all, so neither does the chat. A
            # word:value in a value is kept when it cannot be an option's name (a URL).
            typo = OPTION_NAME.fullmatch(name) and not value.startswith("//")
            if colon and name not in defs and (current is None or typo):
                raise ChatError(f"unknown option {name}; options: {', '.join(defs) or 'none'}")
            if colon and (current is None or name in defs):
                if name in raw:
                    raise ChatError(f"{name} is given twice; give each option once")
                current, raw[name] = name, value
            else:
                assert current is not None  # the first token holds a colon
                raw[current] += " " + token
        return raw

    def _convert(self, name: str, value: str, defs: dict[str, dict[str, Any]]) -> Any:
        d = defs.get(name)
        if d is None:
            raise ChatError(f"unknown option {name}; options: {', '.join(defs) or 'none'}")
        kind = OPTION_TYPES[d["type"]]
        if d.get("choices"):
            return self._choice(name, value, d["choices"])
        try:
            if kind == "integer":
                return int(value)
            if kind == "number":
                return float(value)
        except ValueError:
            raise ChatError(f"{name} must be {'an' if kind == 'integer' else 'a'} {kind}") from None
        if kind == "boolean":
            word = value.lower()
            if word not in ("true", "yes", "1", "on", "false", "no", "0", "off"):
                raise ChatError(f"{name} takes true or false, as Discord offers it; not {value}")
            return word in ("true", "yes", "1", "on")
        if kind == "channel":
            wanted = value.lstrip("#")
            for ch in self.emu.world.channels.values():
                if ch.guild_id == self.emu.guild.id and ch.name == wanted:
                    return ch.id
            raise ChatError(f"no channel #{wanted}")
        if kind == "user":
            wanted = value.lstrip("@")
            for user in self.emu.world.users.values():
                if user.username == wanted:
                    return user.id
            raise ChatError(f"no member @{wanted}")
        if kind == "role":
            wanted = value.lstrip("@").casefold()
            for role in self.emu.world.guild(self.emu.guild.id).roles.values():
                if role.name.lstrip("@").casefold() == wanted:  # @everyone's name has its @
                    return role.id
            raise ChatError(f"no role @{value.lstrip('@')}")
        return value

    @staticmethod
    def _choice(name: str, value: str, choices: list[dict[str, Any]]) -> Any:
        """One of an option's choices, by its value or the name Discord shows for it; else
        what it offers, in words (the emulator's refusal shows a Python list)."""
        wanted = value.casefold()
        for choice in choices:
            if wanted in (str(choice["value"]).casefold(), str(choice["name"]).casefold()):
                return choice["value"]
        offered = [str(c["value"]) for c in choices]
        words = ", ".join(offered[:-1]) + " or " + offered[-1] if len(offered) > 1 else offered[0]
        raise ChatError(f"{name} takes {words}; not {value}")

    def _components(self) -> list[Any]:
        if self.last is None or not components_index(self.last):
            raise ChatError("the last message has no buttons or menus")
        return components_index(self.last)

    async def _press(self, line: str) -> None:
        wanted = line.partition(" ")[2].strip()
        index = self._components()
        buttons = [c for c in index if c.kind in ("button", "link")]
        # A button's label works as well as its number: "press Confirm" is what one types.
        named = [c for c in buttons if str(c.component.get("label", "")).lower() == wanted.lower()]
        if named:
            item = named[0]
        elif wanted.isdigit() and 1 <= int(wanted) <= len(index):
            item = index[int(wanted) - 1]
        else:
            labels = ", ".join(str(c.component.get("label")) for c in buttons[:3])
            raise ChatError(
                f"press a number from 1 to {len(index)}"
                + (f" or a button's label ({labels})" if labels else "")
            )
        if item.kind == "link":
            url = item.component.get("url")
            self.say(f"Open this link in your browser: {url}")
            return
        if item.kind != "button":
            raise ChatError(f"{item.number} is a menu: use select")
        assert self.last is not None
        await self._show(await self.emu.click(self.user_id, self.last, item.custom_id))

    async def _select(self, line: str) -> None:
        """``select N[,M]`` in the first menu; ``select MENU N[,M]`` in the menu numbered MENU,
        as a message with two menus (a connection's live and paper account) needs."""
        index = self._components()
        menus = [c for c in index if c.kind == "select"]
        if not menus:
            raise ChatError("the last message has no menu")
        words = line.split()[1:]
        menu = menus[0]
        if len(words) == 2:
            number = words.pop(0)
            chosen = [c for c in menus if str(c.number) == number]
            if not chosen:
                numbers = ", ".join(str(c.number) for c in menus)
                raise ChatError(f"{number} is not a menu of the last message; its menus: {numbers}")
            menu = chosen[0]
        options = menu.component.get("options", [])
        try:
            numbers = [int(n) for n in words[0].split(",")]
            if min(numbers) < 1:  # options[-1] would quietly pick the last option
                raise IndexError
            picks = [options[n - 1]["value"] for n in numbers]
        except (IndexError, ValueError):
            hint = f"choose numbers from 1 to {len(options)}, e.g. select 1"
            if len(menus) > 1:
                hint += f" (or select {menus[1].number} 1 for menu {menus[1].number})"
            raise ChatError(hint) from None
        assert self.last is not None
        await self._show(await self.emu.select(self.user_id, self.last, picks, menu.custom_id))

    async def _show(self, result: InteractionResult) -> None:
        response = await result.response(timeout=30)
        if response.modal is not None:
            raise ChatError("this step opens a form, which the terminal chat cannot fill")
        if response.choices is not None:
            return
        message = await result.message(timeout=30)
        self._ours.add(message.id)
        key = (message.id, len(message.edits))
        # A public answer (share:true) may have been printed already as it was posted.
        if key not in self._shown:
            self._shown.add(key)
            self.say(render_message(message, author="Tradecord", names=self._name))
        self.last = message if message.components else self.last


def _free_port(host: str) -> int:
    """A port free on ``host`` now, or 0 when ``host`` is not this machine's: binding it
    again then refuses with its own line."""
    try:
        family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    except OSError:
        return 0


def _feed_stdin(fd: int, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    """Read standard input on a daemon thread: asyncio.run joins its executor's threads at
    exit, and one blocked in readline made Ctrl-C at the prompt hang. ``os.read`` holds no
    lock of ``sys.stdin``'s, which the interpreter's shutdown would wait for."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, chunk)
        except RuntimeError:  # the loop is closed: Tradecord is stopping
            return
        if not chunk:
            return


async def _stdin_lines() -> AsyncIterator[str]:
    chunks: asyncio.Queue[bytes] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    threading.Thread(target=_feed_stdin, args=(fd, loop, chunks), daemon=True).start()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        chunk = await chunks.get()
        pending += decoder.decode(chunk, final=not chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line + "\n"
        if not chunk:
            if pending:
                yield pending
            return


async def _lines(script: Path | None, out: TextIO) -> AsyncIterator[str]:
    if script is not None and str(script) != "-":
        # utf-8-sig: a script saved "UTF-8 with BOM" (Windows editors) keeps its first line.
        for line in script.read_text(encoding="utf-8-sig").splitlines():  # noqa: ASYNC240 - a small local file
            if line.strip() and not line.startswith("#"):
                print(f"you> {line}", file=out, flush=True)
            yield line
        return
    interactive = script is None and sys.stdin.isatty()
    lines = _stdin_lines()
    for count in itertools.count():
        if interactive:
            print("you> ", end="", file=out, flush=True)
        line = await anext(lines, "")
        if not line:
            if script is None and not interactive and count == 0:
                # Started by a service manager or with < /dev/null: it stopped at once, unsaid.
                print(
                    "Nothing to read: stdin is not a terminal and gave no lines. Run tradecord "
                    "in a terminal to chat, or use --script FILE to play a file.",
                    file=out,
                    flush=True,
                )
            return
        if not interactive:
            print(f"you> {line.rstrip()}", file=out, flush=True)
        yield line


async def run_local(
    settings: Settings, *, script: Path | None = None, out: TextIO = sys.stdout
) -> int:
    print(BANNER, file=out, flush=True)
    keys = resolve_keys(settings)  # creates the local key file on first start
    public_url = settings.public_url
    if not settings.public_url_set:
        # The sandbox brokers and the built-in Discord take their redirect URIs before the
        # web server binds: a port chosen now (WEB_PORT=0) lets PUBLIC_URL name it already.
        port = settings.web_port or _free_port(settings.web_host)
        settings = settings.model_copy(update={"web_port": port})
        public_url = settings.bound_public_url(port)
    emu = DiscordEmulator(bot_token=LOCAL_TOKEN)
    await emu.start()
    stack = contextlib.AsyncExitStack()
    try:
        overrides: dict[str, Any] = {}
        try:
            from emulators.sandbox import start_sandbox_brokers
        except ImportError:
            start_sandbox_brokers = None  # type: ignore[assignment]
        if start_sandbox_brokers is not None:
            sandbox = await start_sandbox_brokers(public_url)
            stack.push_async_callback(sandbox.stop)
            overrides.update(sandbox.settings_overrides)
            hours = asyncio.create_task(sandbox.follow_the_exchange())
            stack.callback(hours.cancel)
        # "Login with Discord" on the /connect pages, against the built-in Discord.
        oauth_secret = secrets.token_urlsafe(24)
        emu.register_oauth_client(
            str(emu.application_id),
            oauth_secret,
            [f"{public_url.rstrip('/')}/auth/discord/callback"],
        )
        overrides.update(
            discord_client_id=str(emu.application_id),
            discord_client_secret=oauth_secret,
            discord_authorize_url=f"{emu.base_url}/oauth2/authorize",
        )
        values = {k: v for k, v in settings.model_dump().items() if v is not None}
        if not settings.public_url_set:
            del values["public_url"]  # derived from the bound port (Tradecord.start_web)
        values.update(overrides)
        values.update(
            discord_api_base=emu.api_base,
            discord_gateway_url=emu.gateway_url,
            discord_dev_guild_id=emu.guild.id,
        )
        # Validated as local mode (no token), then given the built-in Discord's token: with a
        # token the https rule for PUBLIC_URL would apply, and it is for real Discord only.
        local = load_settings(**values).model_copy(update={"discord_token": SecretStr(LOCAL_TOKEN)})
        core = await Core.open(local, keys=keys)
        stack.push_async_callback(core.close)
        # As every other process checks at start (bot.roles.open_core): log the keys in use,
        # and refuse while stored tokens are under a key no longer configured.
        await check_keys(core)
        bot = create_bot(local, core=core, guild_ready_timeout=0.05)
        runner = asyncio.create_task(bot.start(LOCAL_TOKEN))

        async def stop_bot() -> None:
            await bot.close()
            if not runner.done():
                runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

        stack.push_async_callback(stop_bot)
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            ready.cancel()
            runner.result()  # the reason the bot stopped
        chat = Chat(emu, emu.owner.id, out)
        print(
            f"Signed in as {emu.owner.username} on the server “{emu.guild.name}”. "
            "Type help for how this works.",
            file=out,
            flush=True,
        )
        async for line in _lines(script, out):
            if not await chat.handle(line):
                break
    finally:
        await stack.aclose()
        await emu.stop()
    return 0
