"""Tradecord as a deployment runs it: separate OS processes (``python -m bot.cli run --role
...``) on one PostgreSQL database, with the local Discord, a TradeStation emulator and a small
load balancer in the calling process. Used by tests/scale and benchmarks/scale.py.

Every process gets its settings as environment variables only, its own ``WEB_PORT``, and its
output in a log file (a pipe nobody reads would block a chatty process). ``PUBLIC_URL`` is the
load balancer's address: links, OAuth redirects and webhook URLs all point at it, and the
balancer forwards each request to one web process, round-robin or where a test pins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp import web
from multidict import CIMultiDict

from bot.core import Core
from bot.settings import Settings, load_settings
from bot.vault import generate_key_spec
from emulators.discord import DiscordEmulator
from emulators.discord.snowflake import one_per_shard
from emulators.tradestation import TradeStationEmulator
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.emulated.tradecord-scale-token"
DISCORD_CLIENT_SECRET = "discord-oauth-secret-for-scale-tests"
TS_CLIENT_ID = "tradecord-scale"
TS_CLIENT_SECRET = "ts-secret-for-scale-tests"
# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp recomputes for the new body.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


def child_environment(values: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment without any Tradecord setting, plus ``values``: a child never
    picks up a developer's DATABASE_URL or token by accident."""
    fields = set(Settings.model_fields)
    env = {k: v for k, v in os.environ.items() if k.lower() not in fields}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(values)
    return env


class ProcessFailed(AssertionError):
    pass


async def wait_until(
    condition: Callable[[], Awaitable[bool] | bool],
    what: str,
    *,
    timeout: float = 60.0,  # noqa: ASYNC109
    watch: Sequence[Proc] = (),
    every: float = 0.05,
) -> None:
    """Poll ``condition`` until true; fail early with their output if a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        for proc in watch:
            if not proc.alive:
                raise ProcessFailed(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Proc:
    """One ``python -m bot.cli`` process."""

    name: str
    args: list[str]
    env: dict[str, str]
    workdir: Path
    port: int | None = None
    process: asyncio.subprocess.Process | None = None
    retired: bool = False  # ended on purpose (killed or stopped): not a failure
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                *self.args,
                env=self.env,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no handler runs, no lease is given back, no transaction is finished."""
        if self.alive:
            assert self.process is not None
            self.retired = True
            self.process.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 15.0) -> int | None:  # noqa: ASYNC109
        """SIGTERM (the roles' clean shutdown), then SIGKILL if it does not end in time."""
        if self.process is None:
            return None
        self.retired = True
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.kill()
        return await self.process.wait()

    async def run_to_end(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Start a one-shot command and require exit status 0."""
        await self.start()
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if code != 0:
            raise ProcessFailed(f"{self.name} exited with {code}:\n{self.tail()}")


class RefreshGate:
    """A TradeStation emulator (refresh tokens rotate) whose token endpoint, once armed, holds
    every request until each of the given processes has been refused (401) by the API.

    That makes "both workers need a new token at once" a fact instead of a likely timing:
    the first refresher waits at the broker while it holds the credential's row lock, and the
    second process has already seen its 401 and asked for the same refresh.
    """

    API_PATH = re.compile(r"^/(live|sim)/")
    TOKEN_PATH = "/signin/oauth/token"

    def __init__(self) -> None:
        self.refused: set[int] = set()  # pids refused with a stale token since arming
        self.held = 0  # token requests that waited at the gate
        self._waiting_for: set[int] = set()
        self._armed = False
        self._all_refused = asyncio.Event()

    def emulator(self) -> TradeStationEmulator:
        ts = TradeStationEmulator(rotation=True)
        ts.auto_fill = False  # orders rest, so there is something to follow
        ts.app.middlewares.insert(0, self._middleware)  # outermost: sees the final status
        return ts

    def arm(self, pids: Sequence[int]) -> None:
        self.refused.clear()
        self.held = 0
        self._waiting_for = set(pids)
        self._all_refused.clear()
        self._armed = True

    def disarm(self) -> None:
        self._armed = False
        self._all_refused.set()

    def _pid_of(self, request: web.Request) -> int | None:
        """Which watched process owns the client end of this request's TCP connection."""
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if not peer:
            return None
        for pid in self._waiting_for:
            with contextlib.suppress(psutil.Error):
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.laddr and conn.laddr.port == peer[1]:
                        return pid
        return None

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self._armed and request.path == self.TOKEN_PATH:
            self.held += 1
            # Bounded: if a process never asks, the test fails on its assertions, not a hang.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_refused.wait(), 30)
        response = await handler(request)
        if self._armed and response.status == 401 and self.API_PATH.match(request.path):
            pid = self._pid_of(request)
            if pid is not None:
                self.refused.add(pid)
            if self.refused >= self._waiting_for:
                self._all_refused.set()
        return response


class LoadBalancer:
    """An HTTP reverse proxy at ``PUBLIC_URL``: what a deployment puts in front of its web
    processes. Forwards every request unchanged (Host, cookies, body; redirects are passed
    back, not followed) to one backend: round-robin, or the one a test pinned."""

    def __init__(self, backends: Mapping[str, str]) -> None:
        self.backends = dict(backends)
        self.port = free_port()
        self.log: list[tuple[str, str, str]] = []  # (backend, method, path)
        self._pinned: str | None = None
        self._cycle = itertools.cycle(list(self.backends))
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def pin(self, backend: str) -> Iterator[None]:
        """Send every request to ``backend`` until the block ends."""
        assert backend in self.backends
        self._pinned = backend
        try:
            yield
        finally:
            self._pinned = None

    def served_by(self, path_prefix: str) -> list[str]:
        return [b for b, _, path in self.log if path.startswith(path_prefix)]

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), auto_decompress=False
        )
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        backend = self._pinned or next(self._cycle)
        self.log.append((backend, request.method, request.path))
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS
        )
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
        body = await request.read()
        async with self._session.request(
            request.method,
            self.backends[backend] + request.rel_url.raw_path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS
            )
            return web.Response(status=upstream.status, headers=out, body=payload)


@dataclass
class Cluster:
    """The running deployment. ``core`` is the operator's own connection to the same database
    (setting things up, counting rows); it runs no background work."""

    workdir: Path
    env: dict[str, str]
    discord: DiscordEmulator
    tradestation: TradeStationEmulator
    lb: LoadBalancer
    core: Core
    guild_ids: list[int]
    member_ids: list[int]
    procs: dict[str, Proc] = field(default_factory=dict)

    def proc(self, name: str) -> Proc:
        return self.procs[name]

    def by_role(self, role: str) -> list[Proc]:
        return [p for p in self.procs.values() if p.args[1:3] == ["--role", role]]

    def new_process(self, name: str, role: str, *extra: str) -> Proc:
        port = free_port()
        env = {**self.env, "WEB_PORT": str(port)}
        proc = Proc(name, ["run", "--role", role, *extra], child_environment(env), self.workdir)
        proc.port = port
        self.procs[name] = proc
        return proc

    async def start_process(self, name: str, role: str, *extra: str) -> Proc:
        proc = self.new_process(name, role, *extra)
        await proc.start()
        await self.until_ready(proc)
        return proc

    async def until_ready(self, proc: Proc, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        role = proc.args[2]
        if role in ("web", "all"):
            await wait_until(
                lambda: healthy(proc.url), f"{proc.name} /healthz", watch=[proc], timeout=timeout
            )
        if role in ("worker", "all"):
            await wait_until(
                lambda: re.search(r"Worker \S+ started", proc.output()) is not None,
                f"{proc.name} to start its job worker",
                watch=[proc],
                timeout=timeout,
            )
        elif role == "bot":
            shards = proc.args[proc.args.index("--shards") + 1]
            ids = shards.split("/")[0].split("-")
            wanted = {(s, int(shards.split("/")[1])) for s in range(int(ids[0]), int(ids[-1]) + 1)}
            # A session is what the emulator routes this shard's guilds to; the process logs
            # "Shard ID n has connected" once its setup hook (cogs, core) has run.
            await wait_until(
                lambda: (
                    wanted
                    <= {(s.shard_id, s.shard_count) for s in self.discord.sessions if s.connected}
                    and all(f"Shard ID {s} has connected" in proc.output() for s, _ in wanted)
                ),
                f"{proc.name} to own shards {shards}",
                watch=[proc],
                timeout=timeout,
            )

    def check_alive(self) -> None:
        dead = [p for p in self.procs.values() if not p.alive and not p.retired]
        if dead:
            raise ProcessFailed(
                "processes exited: " + "\n".join(f"== {p.name}\n{p.tail()}" for p in dead)
            )

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.procs.values()), return_exceptions=True)


async def healthy(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r,
        ):
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def base_environment(
    *,
    database_url: str,
    workdir: Path,
    discord_emu: DiscordEmulator,
    ts: TradeStationEmulator,
    public_url: str,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Settings every process shares (the deployment's .env)."""
    return {
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": "20",
        "DATABASE_MAX_OVERFLOW": "10",
        "TRADECORD_KEYS": generate_key_spec("scale"),
        "TRADECORD_DATA_DIR": str(workdir / "data"),
        "DISCORD_TOKEN": TOKEN,
        "DISCORD_API_BASE": discord_emu.api_base,
        "DISCORD_GATEWAY_URL": discord_emu.gateway_url,
        "DISCORD_CLIENT_ID": str(discord_emu.application_id),
        "DISCORD_CLIENT_SECRET": DISCORD_CLIENT_SECRET,
        "DISCORD_AUTHORIZE_URL": f"{discord_emu.base_url}/oauth2/authorize",
        "WEB_HOST": "127.0.0.1",
        "PUBLIC_URL": public_url,
        "LOG_LEVEL": "INFO",
        # A killed worker's jobs pass to another after this; the default 60 s only slows tests.
        "JOB_LEASE_SECONDS": "20",
        # Thousands of signal orders per account: cash must never be what stops one.
        "PAPER_STARTING_CASH": "1000000000000",
        "TRADECORD_TRADESTATION_CLIENT_ID": TS_CLIENT_ID,
        "TRADECORD_TRADESTATION_CLIENT_SECRET": TS_CLIENT_SECRET,
        "TRADECORD_TRADESTATION_AUTHORIZE_URL": ts.authorize_url,
        "TRADECORD_TRADESTATION_TOKEN_URL": ts.token_url,
        "TRADECORD_TRADESTATION_REVOKE_URL": ts.revoke_url,
        "TRADECORD_TRADESTATION_API_URL": ts.api_url("live"),
        "TRADECORD_TRADESTATION_PAPER_API_URL": ts.api_url("paper"),
        **(extra or {}),
    }


def operator_settings(env: Mapping[str, str]) -> Settings:
    """The same settings for the calling process's own ``Core`` (no Discord: it only reads
    and writes the database)."""
    values: dict[str, Any] = {k.lower(): v for k, v in env.items()}
    values["discord_token"] = None
    return load_settings(**values)


@contextlib.asynccontextmanager
async def running_cluster(
    database_url: str,
    workdir: Path,
    *,
    webs: int = 2,
    workers: int = 2,
    bot_shards: int = 2,
    members: int = 12,
    all_in_one: bool = False,
    ts: TradeStationEmulator | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """Start the emulators, the load balancer and the processes; stop everything on exit.
    ``all_in_one``: one ``tradecord run`` process (web, jobs and the gateway) instead of the
    roles, the load balancer's only backend."""
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    stack = contextlib.AsyncExitStack()
    async with stack:
        emu = DiscordEmulator(bot_token=TOKEN)
        guild_ids = one_per_shard(max(bot_shards, 1))
        for n, guild_id in enumerate(guild_ids):
            emu.add_guild(f"Scale {n}", guild_id=guild_id, channels=("general", "trade-alerts"))
        member_ids = [emu.add_user(f"member{n}").id for n in range(members)]
        for guild_id in guild_ids:
            for uid in member_ids:
                emu.add_member(guild_id, uid)
        await emu.start()
        stack.push_async_callback(emu.stop)

        names = ["all"] if all_in_one else [f"web-{chr(97 + i)}" for i in range(webs)]
        web_ports = {name: free_port() for name in names}
        lb = LoadBalancer({name: f"http://127.0.0.1:{port}" for name, port in web_ports.items()})
        await lb.start()
        stack.push_async_callback(lb.stop)
        emu.register_oauth_client(
            str(emu.application_id), DISCORD_CLIENT_SECRET, [f"{lb.url}/auth/discord/callback"]
        )

        if ts is None:
            ts = TradeStationEmulator(rotation=True)
        ts.register_client(
            TS_CLIENT_ID, TS_CLIENT_SECRET, [f"{lb.url}/oauth/tradestation/callback"]
        )
        await ts.start()
        stack.push_async_callback(ts.stop)

        env = base_environment(
            database_url=database_url,
            workdir=workdir,
            discord_emu=emu,
            ts=ts,
            public_url=lb.url,
            extra=extra_env,
        )
        # The one deploy step: push the slash commands. Migrations are left to the processes,
        # which all start at once on the empty database (see bot.roles.open_core).
        if bot_shards and not all_in_one:
            sync = Proc("sync", ["sync", "--global"], child_environment(env), workdir)
            await sync.run_to_end()

        core = await Core.open(operator_settings(env), migrate=False)
        stack.push_async_callback(core.close)
        cluster = Cluster(workdir, env, emu, ts, lb, core, guild_ids, member_ids)
        stack.push_async_callback(cluster.stop)
        for name, port in web_ports.items():
            proc = cluster.new_process(name, "all" if all_in_one else "web")
            proc.port = port
            proc.env["WEB_PORT"] = str(port)
        for i in range(0 if all_in_one else workers):
            cluster.new_process(f"worker-{i + 1}", "worker")
        for shard in range(0 if all_in_one else bot_shards):
            cluster.new_process(f"bot-{shard}", "bot", "--shards", f"{shard}-{shard}/{bot_shards}")
        await asyncio.gather(*(p.start() for p in cluster.procs.values()))
        await asyncio.gather(*(cluster.until_ready(p) for p in list(cluster.procs.values())))
        yield cluster
