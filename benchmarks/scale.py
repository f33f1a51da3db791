"""Signals per second end to end, as the deployment grows: 1, 2 and 4 worker processes on
PostgreSQL, against one all-in-one process on SQLite.

    python -m benchmarks.scale [--signals 600] [--strategies 20] [--workers 1,2,4] [--no-sqlite]

Each configuration gets a fresh database and its own processes, started as a deployment runs
them (tests/scale/harness.py): PostgreSQL with two ``--role web`` processes behind a load
balancer and N ``--role worker`` processes (a throw-away cluster from tests/pg.py); SQLite with
one ``tradecord run`` doing everything. The local Discord, the load balancer and the client
run in this process.

``--strategies`` strategies each have one paper subscriber (a different member, as in a real
community: orders for one paper account serialize on its row). After a warm-up signal per
strategy, ``--signals`` TradingView-style signals (a bullish ``add``, never an exit: exactly one
market order each) are posted through the load balancer as fast as 32 connections go, while the
workers run. Measured:

- end to end: signals / (last order accepted at the paper broker - first POST);
- acknowledgement: signals / (last 202 - first POST), with the workers competing for CPU;
- latency from each signal's 202 to its order's acceptance (``paper_orders.created_at``);
- CPU seconds per signal of the worker and web processes and of this process (Discord,
  load balancer, client); "machine" is the whole host's busy time per signal, PostgreSQL's
  backends included, and its utilization of all cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import psutil
from sqlalchemy import func, select

from adapters.paper.models import PaperOrder
from adapters.paper.store import paper_account_id
from bot.models import OrderIntent
from bot.services.subscriptions import Sizing, SubscriptionSettings
from tests.scale.harness import Cluster, Proc, running_cluster

TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "SPY", "QQQ")


@dataclass
class Row:
    label: str
    signals: int
    end_to_end: float  # signals per second
    acknowledged: float  # signals per second
    p50_ms: float
    p95_ms: float
    worker_cpu_ms: float  # per signal
    web_cpu_ms: float
    local_cpu_ms: float
    postgres_cpu_ms: float
    machine_cpu_ms: float
    utilization: float  # of all cores, 0..1


def cpu_seconds(procs: Sequence[Proc]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = psutil.Process(proc.pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def postgres_seconds(postmaster: int | None) -> float:
    """CPU of the PostgreSQL server: the postmaster, its live backends, and (counted into
    the postmaster when they exit) the backends that ended."""
    if postmaster is None:
        return 0.0
    root = psutil.Process(postmaster)
    times = root.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in root.children():
        try:
            ct = child.cpu_times()
        except psutil.Error:
            continue
        total += ct.user + ct.system
    return total


def machine_busy() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def setup_strategies(cluster: Cluster, count: int) -> tuple[list[str], set[str]]:
    """``count`` strategies, each with one member's paper subscription; their webhook URLs
    and the paper accounts."""
    core, guild = cluster.core, cluster.guild_ids[0]
    urls: list[str] = []
    accounts: set[str] = set()
    for k in range(count):
        member = cluster.member_ids[k]
        url = await core.strategies.create(guild, member, f"Bench {k}")
        info = await core.subscriptions.subscribe(
            guild,
            member,
            url.strategy.id,
            settings=SubscriptionSettings(sizing=Sizing.FIXED_QUANTITY, sizing_value=Decimal(1)),
        )
        urls.append(url.url)
        accounts.add(paper_account_id(info.connection_id))
    return urls, accounts


async def orders_placed(cluster: Cluster, accounts: set[str]) -> int:
    async with cluster.core.db.session() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(PaperOrder)
                .where(PaperOrder.account_id.in_(accounts))
            )
            or 0
        )


async def post(urls: list[str], first: int, count: int) -> dict[str, float]:
    """POST signals first..first+count-1 round-robin over the strategies; signal id -> the
    wall time its 202 arrived."""
    acked: dict[str, float] = {}
    semaphore = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:

        async def one(i: int) -> None:
            body = {
                "ticker": TICKERS[i % len(TICKERS)],
                "action": "add",
                "sentiment": "bullish",
                "quantity": 1,
                "extras": {"n": i},  # every body differs: no duplicate within 24 h
            }
            async with semaphore, http.post(urls[i % len(urls)], data=json.dumps(body)) as r:
                answer = await r.json()
                if r.status != 202:
                    raise RuntimeError(f"signal {i}: {r.status} {answer}")
                acked[answer["id"]] = time.time()

        await asyncio.gather(*(one(i) for i in range(first, first + count)))
    return acked


async def wait_for_orders(cluster: Cluster, accounts: set[str], count: int) -> None:
    deadline = time.monotonic() + 900
    while await orders_placed(cluster, accounts) < count:
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} orders were not placed in 15 minutes")
        await asyncio.sleep(0.25)


async def accepted_at(cluster: Cluster, signal_ids: set[str]) -> dict[str, datetime]:
    """Signal id -> when its order was accepted at the paper broker."""
    async with cluster.core.db.session() as s:
        rows = await s.execute(
            select(OrderIntent.idempotency_key, PaperOrder.created_at).join(
                PaperOrder, PaperOrder.client_order_id == OrderIntent.client_order_id
            )
        )
        out = {}
        for key, at in rows:
            signal_id = (key or "").split(":")[0]
            if signal_id in signal_ids:
                out[signal_id] = at
        return out


async def measure(
    cluster: Cluster, label: str, signals: int, strategies: int, postmaster: int | None
) -> Row:
    urls, accounts = await setup_strategies(cluster, strategies)
    # Warm-up: every paper account opened, every process's statements prepared.
    await post(urls, 0, strategies)
    await wait_for_orders(cluster, accounts, strategies)

    workers = [p for p in cluster.procs.values() if p.args[2] in ("worker", "all")]
    webs = [p for p in cluster.procs.values() if p.args[2] == "web"]
    me = psutil.Process(os.getpid())

    def cpu() -> tuple[float, ...]:
        return (
            cpu_seconds(workers),
            cpu_seconds(webs),
            sum(me.cpu_times()[:2]),
            postgres_seconds(postmaster),
            machine_busy(),
        )

    cpu0 = cpu()
    started = time.time()
    acked = await post(urls, strategies, signals)
    last_ack = max(acked.values())
    await wait_for_orders(cluster, accounts, strategies + signals)
    cpu1 = cpu()
    accepted = await accepted_at(cluster, set(acked))
    assert len(accepted) == signals, (len(accepted), signals)
    finished = max(at.timestamp() for at in accepted.values())
    latencies = sorted((accepted[sid].timestamp() - t) * 1000 for sid, t in acked.items())
    elapsed = finished - started
    per = [(b - a) * 1000 / signals for a, b in zip(cpu0, cpu1, strict=True)]
    return Row(
        label=label,
        signals=signals,
        end_to_end=signals / elapsed,
        acknowledged=signals / (last_ack - started),
        p50_ms=statistics.median(latencies),
        p95_ms=latencies[int(len(latencies) * 0.95) - 1],
        worker_cpu_ms=per[0],
        web_cpu_ms=per[1],
        local_cpu_ms=per[2],
        postgres_cpu_ms=per[3],
        machine_cpu_ms=per[4],
        utilization=(cpu1[4] - cpu0[4]) / (elapsed * (psutil.cpu_count() or 1)),
    )


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'configuration':<34} {'signals/s':>9} {'ack/s':>7} {'p50 ms':>8} {'p95 ms':>8}"
        f" {'worker':>7} {'web':>5} {'local':>6} {'pg':>5} {'machine':>8} {'busy':>5}"
    )
    print(f"\n{'':<70}CPU ms per signal")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.label:<34} {r.end_to_end:>9.1f} {r.acknowledged:>7.1f} {r.p50_ms:>8.0f}"
            f" {r.p95_ms:>8.0f} {r.worker_cpu_ms:>7.0f} {r.web_cpu_ms:>5.0f}"
            f" {r.local_cpu_ms:>6.0f} {r.postgres_cpu_ms:>5.0f} {r.machine_cpu_ms:>8.0f}"
            f" {r.utilization:>5.0%}"
        )


async def run(args: argparse.Namespace) -> list[Row]:
    from tests.pg import fresh_database, postgres_cluster

    rows: list[Row] = []
    members = args.strategies
    with tempfile.TemporaryDirectory(prefix="tradecord-scale-") as tmp:
        base = Path(tmp)
        if args.workers:
            with postgres_cluster() as executor:
                pid_file = Path(executor.datadir) / "postmaster.pid"
                postmaster = int(pid_file.read_text().split()[0])
                for n in args.workers:
                    with fresh_database(executor) as url:
                        async with running_cluster(
                            url, base / f"pg-{n}", workers=n, bot_shards=0, members=members
                        ) as cluster:
                            label = f"PostgreSQL, 2 web + {n} worker{'s' * (n > 1)}"
                            rows.append(
                                await measure(cluster, label, args.signals, members, postmaster)
                            )
                            print(f"  {label}: {rows[-1].end_to_end:.1f} signals/s", flush=True)
        if args.sqlite:
            db = base / "sqlite" / "tradecord.db"
            async with running_cluster(
                f"sqlite+aiosqlite:///{db}", db.parent, all_in_one=True, members=members
            ) as cluster:
                label = "SQLite, 1 all-in-one process"
                rows.append(await measure(cluster, label, args.signals, members, None))
                print(f"  {label}: {rows[-1].end_to_end:.1f} signals/s", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signals", type=int, default=600)
    parser.add_argument("--strategies", type=int, default=20)
    parser.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[1, 2, 4],
        help="worker process counts to measure on PostgreSQL (empty: none)",
    )
    parser.add_argument("--no-sqlite", dest="sqlite", action="store_false")
    args = parser.parse_args(argv)
    # Each strategy takes a warm-up signal and its share of --signals; a webhook accepts at most
    # 60 signals a minute (requirement 24), so more per strategy would be refused with 429.
    if args.signals > args.strategies * 59:
        parser.error(
            "at most 59 signals per strategy: each webhook accepts 60 a minute, one of them the "
            f"warm-up. Use --strategies {-(-args.signals // 59)} or more, or fewer --signals"
        )
    print(
        f"{psutil.cpu_count()} CPUs, Python {sys.version.split()[0]}; {args.signals} signals "
        f"over {args.strategies} strategies, one paper subscription each"
    )
    rows = asyncio.run(run(args))
    print_table(rows)


if __name__ == "__main__":
    main()
