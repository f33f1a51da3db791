"""Speed of signal automation.

    python -m benchmarks.signals [--requests 20000] [--concurrency 16] [--paper 1000]
                                 [--alpaca 300] [--latency 0.05] [--database-url URL]

**Acknowledgement.** One server process runs two aiohttp apps side by side: Tradecord's real
web app (``web.app.create_app``) and a bare app whose handler returns 200 without reading the
body. The benchmark process is the client for both: the same aiohttp session settings, the same
bodies (a TradingView strategy alert of about 200 bytes, each one different so none is a
duplicate), ``--requests`` requests at ``--concurrency`` connections and then a tenth of them
one at a time, each in three rounds alternating bare and webhook so both meet the same moments
of a shared machine. Every webhook answer must be 202, and afterwards the stored signals are
counted: each acknowledged signal is in the database with its job. Requests are spread over
600 strategies so the per-strategy rate limit (60/min, kept on) is never the bottleneck. No
worker runs during this part. Latency is measured at the client (request start to body read);
the server also reports its CPU time per request, which a busy machine disturbs far less than
throughput.

**Fan-out.** In this process: one signal, acknowledged through the same service the webhook
calls, then the job queue drained. Reported: from acknowledgement until every subscription's
execution is recorded, and until the last broker order was accepted (audit trail).
- ``--paper`` subscriptions, each a different member's Tradecord Paper account (market buy 1
  AAPL at a pinned quote).
- ``--alpaca`` subscriptions, each a different user's Alpaca paper account at the Alpaca
  emulator, running in its own process with ``--latency`` seconds added to every request and
  Alpaca's own rate limit (200/min per account) on. Tokens come from the emulator's control API
  and are stored through ``DbTokenProvider.store``. Rate-limit waiting is the time spent in the
  adapters' limiters (summed over requests, and the longest single wait).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, insert, make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.base import LimiterRegistry, RateLimit
from bot.automation_models import ExecutionStatus, ReceivedSignal, SignalExecution, Subscription
from bot.core import Core
from bot.db import Database
from bot.models import AuditEvent, Connection, ConnectionAccount, ConnectionStatus, Credential
from bot.roles import settle_heap
from bot.services.oauth import TokenSet
from bot.services.tokens import DbTokenProvider
from bot.settings import Settings, load_settings
from bot.vault import generate_key_spec

SPAWN = multiprocessing.get_context("spawn")
GUILD = 1
OWNER = 1
STRATEGIES = 600
ROUNDS = 3


def settings_for(data_dir: Path, database_url: str, key_line: str, **extra: Any) -> Settings:
    return load_settings(
        tradecord_data_dir=data_dir,
        database_url=database_url,
        tradecord_keys=key_line,
        web_port=0,
        discord_token=None,
        **extra,
    )


def alert(i: int) -> bytes:
    """A TradingView strategy alert as traders write them, unique per ``i``."""
    return json.dumps(
        {
            "ticker": "AAPL",
            "action": "buy",
            "sentiment": "long",
            "quantity": "1",
            "price": "199.87",
            "orderType": "market",
            "timeInForce": "day",
            "extras": {"strategy": "EMA cross", "bar": i},
        }
    ).encode()


# -- acknowledgement ---------------------------------------------------------------------------


def _serve(data_dir: str, database_url: str, key_line: str, pipe: Pipe) -> None:
    asyncio.run(_serve_until_told(Path(data_dir), database_url, key_line, pipe))


async def _serve_until_told(data_dir: Path, database_url: str, key_line: str, pipe: Pipe) -> None:
    core = await Core.open(settings_for(data_dir, database_url, key_line))
    paths = []
    for i in range(STRATEGIES):
        url = await core.strategies.create(GUILD, OWNER, f"bench {i}")
        paths.append("/webhook/" + "/".join(url.url.rsplit("/", 2)[-2:]))

    async def bare_handler(request: web.Request) -> web.Response:
        return web.Response(status=200)

    bare = web.Application()
    bare.router.add_post("/bare", bare_handler)
    runners = [web.AppRunner(a, access_log=None) for a in (bare, _tradecord_app(core))]
    ports = []
    for runner in runners:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    settle_heap()  # as a web process does once it has started
    pipe.send((ports[0], ports[1], paths))
    loop = asyncio.get_running_loop()
    # Answer "cpu" with this process's CPU time (all threads) until told to stop.
    while await loop.run_in_executor(None, pipe.recv) == "cpu":
        pipe.send(time.process_time())
    for runner in runners:
        await runner.cleanup()
    await core.close()


def _tradecord_app(core: Core) -> web.Application:
    from web.app import create_app

    return create_app(core)


@dataclass
class Load:
    name: str
    concurrency: int
    latencies: list[float]
    elapsed: float
    statuses: Counter[int]
    server_cpu: float = 0.0  # seconds of the server process's CPU while this load ran

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / len(self.latencies) * 1e6

    def __add__(self, other: Load) -> Load:
        return Load(
            self.name,
            self.concurrency,
            self.latencies + other.latencies,
            self.elapsed + other.elapsed,
            self.statuses + other.statuses,
            self.server_cpu + other.server_cpu,
        )

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def load(
    name: str, url_of: Callable[[int], str], start: int, n: int, concurrency: int
) -> Load:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    counter = iter(range(start, start + n))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            for i in counter:
                body = alert(i)
                t0 = time.perf_counter()
                async with http.post(
                    url_of(i), data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - t0)
                statuses[resp.status] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return Load(name, concurrency, latencies, elapsed, statuses)


async def acknowledgement(
    work: Path, database_url: str, key_line: str, requests: int, concurrency: int
) -> tuple[list[Load], int, int]:
    loop = asyncio.get_running_loop()
    pipe, child = SPAWN.Pipe()
    server = SPAWN.Process(
        target=_serve, args=(str(work), database_url, key_line, child), daemon=True
    )
    server.start()
    try:
        bare_port, hook_port, paths = await loop.run_in_executor(None, pipe.recv)
        bare = f"http://127.0.0.1:{bare_port}/bare"
        hook = f"http://127.0.0.1:{hook_port}"

        def bare_url(i: int) -> str:
            return bare

        def hook_url(i: int) -> str:
            return hook + paths[i % len(paths)]

        async def measured(
            name: str, url_of: Callable[[int], str], start: int, n: int, conc: int
        ) -> Load:
            pipe.send("cpu")
            before = await loop.run_in_executor(None, pipe.recv)
            result = await load(name, url_of, start, n, conc)
            pipe.send("cpu")
            result.server_cpu = await loop.run_in_executor(None, pipe.recv) - before
            return result

        await load("warm-up", bare_url, 0, 500, concurrency)
        warm = await load("warm-up", hook_url, 10**7, 500, concurrency)
        # Alternating rounds, so both handlers see the same moments of a shared machine.
        results = []
        sent = 0
        for conc, total in ((concurrency, requests), (1, max(300, requests // 10))):
            per_round = total // ROUNDS
            bare_total = hook_total = None
            for _ in range(ROUNDS):
                b = await measured("bare aiohttp", bare_url, 0, per_round, conc)
                h = await measured("webhook", hook_url, sent, per_round, conc)
                sent += per_round
                bare_total = b if bare_total is None else bare_total + b
                hook_total = h if hook_total is None else hook_total + h
            assert bare_total is not None and hook_total is not None
            results += [bare_total, hook_total]
    finally:
        pipe.send("stop")
        await loop.run_in_executor(None, server.join, 30)
    db = Database(database_url)
    try:
        async with db.session() as s:
            stored = int(
                await s.scalar(
                    select(func.count())
                    .select_from(ReceivedSignal)
                    .where(ReceivedSignal.status == "queued")
                )
                or 0
            )
    finally:
        await db.close()
    acknowledged = sum(r.statuses[202] for r in results if r.name == "webhook")
    return results, acknowledged + warm.statuses[202], stored


# -- fan-out -----------------------------------------------------------------------------------


@dataclass
class Fanout:
    name: str
    subscriptions: int
    executed: float  # s from acknowledgement to every execution recorded
    last_accepted: float  # s from acknowledgement to the last order.accepted
    statuses: Counter[str]
    limiter_wait: float = 0.0
    longest_wait: float = 0.0
    broker_429: int = 0


class TimedLimiters(LimiterRegistry):
    """The adapters' limiters, timing each acquire (the wait for a rate limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = 0.0
        self.longest = 0.0

    def get(self, broker: str, rule: RateLimit, owner: str) -> Any:
        return _TimedLimiter(super().get(broker, rule, owner), self)


class _TimedLimiter:
    def __init__(self, inner: Any, registry: TimedLimiters) -> None:
        self.inner, self.registry = inner, registry

    async def acquire(self, amount: float = 1) -> None:
        t0 = time.perf_counter()
        await self.inner.acquire(amount)
        waited = time.perf_counter() - t0
        self.registry.waited += waited
        self.registry.longest = max(self.registry.longest, waited)


async def _fan_out(core: Core, url: str, name: str, n: int) -> Fanout:
    auth = await core.strategies.authenticate(*_split(url))
    assert auth is not None
    # A worker (or bot) process settles its heap once started; the setup above stands for
    # what it did before this signal came in.
    settle_heap()
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    ack = await core.signals.receive(auth, alert(0), source_ip="127.0.0.1")
    assert ack.status == 202, ack.body
    await core.jobs.drain(concurrency=1)
    executed = time.perf_counter() - t0
    async with core.db.session() as s:
        statuses: Counter[str] = Counter(
            {
                status: c
                for status, c in await s.execute(
                    select(SignalExecution.status, func.count()).group_by(SignalExecution.status)
                )
            }
        )
        last = await s.scalar(
            select(func.max(AuditEvent.at)).where(AuditEvent.kind == "order.accepted")
        )
    return Fanout(
        name, n, executed, (last - started).total_seconds() if last else float("nan"), statuses
    )


def _split(url: str) -> tuple[str, str]:
    strategy_id, secret = url.rsplit("/", 2)[-2:]
    return strategy_id, secret


async def _subscribe_all(core: Core, connection_ids: Sequence[tuple[int, int]]) -> str:
    """One strategy with a subscription per connection; returns its webhook URL."""
    url = await core.strategies.create(GUILD, OWNER, "Fan-out")
    now = datetime.now(UTC)
    async with core.db.transaction() as s:
        await s.execute(
            insert(Subscription),
            [
                dict(
                    strategy_id=url.strategy.id,
                    member_id=member_id,
                    connection_id=conn_id,
                    mode="paper",
                    sizing="fixed_quantity",
                    sizing_value=Decimal(1),
                    sides="both",
                    manual_approval=False,
                    approval_ttl_seconds=300,
                    enabled=True,
                    created_at=now,
                    updated_at=now,
                )
                for member_id, conn_id in connection_ids
            ],
        )
    return url.url


async def paper_fanout(work: Path, database_url: str, key_line: str, n: int) -> Fanout:
    core = await Core.open(settings_for(work, database_url, key_line))
    try:
        core.simulated_feed.set_quote("AAPL", Decimal("199.85"), Decimal("199.89"))
        pairs = []
        for i in range(n):
            target = await core.connections.resolve(10_000 + i, None, "paper")
            pairs.append((target.connection.member_id, target.connection.id))
        url = await _subscribe_all(core, pairs)
        return await _fan_out(core, url, f"{n} Tradecord Paper subscriptions", n)
    finally:
        await core.close()


def _alpaca(n: int, latency: float, pipe: Pipe) -> None:
    asyncio.run(_alpaca_until_told(n, latency, pipe))


async def _alpaca_until_told(n: int, latency: float, pipe: Pipe) -> None:
    from emulators.alpaca import AlpacaEmulator
    from emulators.common import Fault

    emu = AlpacaEmulator(validate_requests=False)
    await emu.start()
    seats = []
    for i in range(n):
        user = f"bench{i}"
        emu.add_user(user)
        account = emu.add_account(user, "paper", account_number=f"PA{i:010d}")
        seats.append((emu.issue_token(user, env="paper"), account.account_number))
    emu.faults.add(Fault("latency", seconds=latency))
    pipe.send((emu.api_url("live"), emu.api_url("paper"), emu.data_url, seats))
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    pipe.send(emu.rate_limited)
    await emu.stop()


async def alpaca_fanout(
    work: Path, database_url: str, key_line: str, n: int, latency: float
) -> Fanout:
    loop = asyncio.get_running_loop()
    pipe, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_alpaca, args=(n, latency, child), daemon=True)
    proc.start()
    live, paper, data, seats = await loop.run_in_executor(None, pipe.recv)
    settings = settings_for(
        work,
        database_url,
        key_line,
        tradecord_alpaca_client_id="tradecord-local",
        tradecord_alpaca_api_url=live,
        tradecord_alpaca_paper_api_url=paper,
        tradecord_alpaca_data_url=data,
    )
    core = await Core.open(settings)
    limiters = TimedLimiters()
    core.connections.limiters = limiters
    try:
        pairs = []
        for i, (token, account_number) in enumerate(seats):
            member_id = await core.members.ensure(20_000 + i)
            async with core.db.transaction() as s:
                conn = Connection(
                    member_id=member_id,
                    broker="alpaca",
                    name="Alpaca",
                    name_key="alpaca",
                    status=ConnectionStatus.ACTIVE,
                    settings={"environment": "paper"},
                )
                s.add(conn)
                await s.flush()
                s.add(
                    ConnectionAccount(
                        connection_id=conn.id,
                        mode="paper",
                        account_id=account_number,
                        account_type="margin",
                        label="Alpaca paper",
                    )
                )
                cred = Credential(connection_id=conn.id, access_token="")
                s.add(cred)
                member = await core.connections.member_of(conn)
                DbTokenProvider(core, conn.id).store(
                    cred, conn, member, TokenSet(token, None, None, "trading data")
                )
                pairs.append((member_id, conn.id))
        url = await _subscribe_all(core, pairs)
        result = await _fan_out(core, url, f"{n} Alpaca subscriptions, +{latency * 1000:g} ms", n)
        result.limiter_wait, result.longest_wait = limiters.waited, limiters.longest
    finally:
        await core.close()
        pipe.send("stop")
        result_429 = await loop.run_in_executor(None, pipe.recv)
        await loop.run_in_executor(None, proc.join, 30)
    result.broker_429 = int(result_429)
    return result


@asynccontextmanager
async def databases(
    server_url: str | None, work: Path
) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """A fresh database per part: SQLite files, or databases created on the PostgreSQL server
    ``server_url`` points at (and dropped afterwards)."""
    if server_url is None:

        async def sqlite(name: str) -> str:
            return f"sqlite+aiosqlite:///{work / name}.db"

        yield sqlite
        return
    base = make_url(server_url)
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    async def postgres(name: str) -> str:
        db = f"tradecord_bench_{name}_{uuid.uuid4().hex[:8]}"
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{db}"'))
        made.append(db)
        return base.set(database=db).render_as_string(hide_password=False)

    try:
        yield postgres
    finally:
        async with admin.connect() as conn:
            for db in made:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        await admin.dispose()


# -- report ------------------------------------------------------------------------------------


def report(loads: list[Load], acknowledged: int, stored: int, fanouts: list[Fanout]) -> None:
    print("\nWebhook acknowledgement (client-measured, 127.0.0.1)")
    print(
        f"{'handler':<14}{'conc.':>6}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'server CPU us/req':>19}{'statuses':>18}"
    )
    for r in loads:
        codes = ",".join(f"{k}x{v}" for k, v in sorted(r.statuses.items()))
        print(
            f"{r.name:<14}{r.concurrency:>6}{len(r.latencies):>10}{r.rps:>10.0f}"
            f"{r.pct(0.5):>9.2f}{r.pct(0.99):>9.2f}{r.cpu_us:>19.0f}{codes:>18}"
        )
    by = {(r.name, r.concurrency): r for r in loads}
    for c in sorted({r.concurrency for r in loads}, reverse=True):
        bare, hook = by[("bare aiohttp", c)], by[("webhook", c)]
        print(
            f"  concurrency {c}: webhook throughput {hook.rps / bare.rps:.0%} of bare's; by "
            f"server CPU per request (steadier on a shared machine) {bare.cpu_us / hook.cpu_us:.0%}"
        )
    print(f"  acknowledged 202: {acknowledged}, stored as queued with a job: {stored}")
    loaded = max(r.concurrency for r in loads)
    bare, hook = by[("bare aiohttp", loaded)], by[("webhook", loaded)]
    share, p99 = hook.rps / bare.rps, hook.pct(0.99)
    print(
        f"  issue 6's targets at {loaded} connections: throughput at least 40% of bare's: "
        f"{_verdict(share >= 0.4)} ({share:.0%}); p99 under 10 ms: {_verdict(p99 < 10)} "
        f"({p99:.1f} ms)"
    )
    print("\nFan-out of one signal")
    print(
        f"{'scenario':<40}{'executed s':>11}{'last accepted s':>16}{'limiter wait s':>15}"
        f"{'longest wait s':>15}{'429s':>6}  statuses"
    )
    for f in fanouts:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(f.statuses.items()))
        print(
            f"{f.name:<40}{f.executed:>11.2f}{f.last_accepted:>16.2f}{f.limiter_wait:>15.2f}"
            f"{f.longest_wait:>15.3f}{f.broker_429:>6}  {statuses}"
        )
    for f in fanouts:
        # Paper: under 2 s; a broker: under 1 s plus the time spent waiting on its rate limit.
        limit = 2.0 if "Paper" in f.name else 1.0 + f.limiter_wait
        print(
            f"  {f.name}: every order accepted in under {limit:.2f} s: "
            f"{_verdict(f.last_accepted < limit)} ({f.last_accepted:.2f} s)"
        )


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--paper", type=int, default=1000)
    parser.add_argument("--alpaca", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server (postgresql+asyncpg://user@host/db, allowed to create "
        "databases): each part gets a fresh database there; default: SQLite files",
    )
    args = parser.parse_args(argv)
    if args.requests > STRATEGIES * 45:
        parser.error(f"at most {STRATEGIES * 45} requests keep every strategy under its limit")
    key_line = generate_key_spec("bench")
    with tempfile.TemporaryDirectory(prefix="tradecord-bench-") as tmp:
        work = Path(tmp)

        async with databases(args.database_url, work) as url:
            loads, acknowledged, stored = await acknowledgement(
                work, await url("ack"), key_line, args.requests, args.concurrency
            )
            fanouts = []  # 0 subscriptions skips a fan-out
            if args.paper:
                fanouts.append(await paper_fanout(work, await url("paper"), key_line, args.paper))
            if args.alpaca:
                fanouts.append(
                    await alpaca_fanout(
                        work, await url("alpaca"), key_line, args.alpaca, args.latency
                    )
                )
    print(f"\nDatabase: {'PostgreSQL' if args.database_url else 'SQLite (WAL)'}")
    report(loads, acknowledged, stored, fanouts)
    for f in fanouts:
        pending = f.subscriptions - sum(f.statuses.values())
        if pending or set(f.statuses) - {ExecutionStatus.FILLED, ExecutionStatus.ACCEPTED}:
            print(f"  note: {f.name}: not every execution was placed ({dict(f.statuses)})")


if __name__ == "__main__":
    asyncio.run(main())
