"""What Tradecord's HTTP adapters add on top of the broker, and how close they run to the
broker's rate limits.

    python -m benchmarks.adapter_overhead [--calls 1000] [--orders 1000] [--accounts 100]

**Added latency.** For each broker emulator, ``fetch_positions`` and ``create_order`` are
called ``--calls`` times through the adapter, and the very same HTTP requests (recorded from
the adapter at the emulator, then replayed with a fresh client order id and the new order id
substituted) are sent ``--calls`` times with plain aiohttp, over the same session, against the
same emulator in the same run. Adapter and raw calls alternate (adapter first on even pairs,
raw first on odd ones) so both see the same emulator state and machine noise. A raw call reads
the body but does not parse it: parsing and mapping are part of what Tradecord adds. Reported:
p50/p99 of each, added p50/p99 = adapter - raw, and the median of the paired differences.
Spec validation and the emulators' rate limits are off, and the adapters' limiters are lifted
(still acquired) so nothing waits.

**Throughput.** ``--orders`` market orders spread over ``--accounts`` accounts, each its own
connection (token, per-account limiters; one process-wide ``LimiterRegistry``), all submitted
at once. Each rate limit in the adapter's capabilities (N requests per T seconds, per account
or per app) is shortened to its per-second rate: 1 request every T/N seconds, so the window's
burst allowance (which 10 orders per account would never exhaust) is gone and the run takes
seconds, at the vendor's average rate. Allowed = the most orders those limits let through in
the elapsed time, given how many limited requests an order takes in each bucket (counted);
achieved/allowed is the ratio. The emulator runs in its own process here, as a broker would
not share our CPU; it keeps its own (vendor-window) limits, and any 429 it answers is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import multiprocessing
import statistics
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any, ClassVar

import aiohttp

from adapters.alpaca import AlpacaAdapter
from adapters.base import (
    AdapterContext,
    HttpBrokerAdapter,
    LimiterRegistry,
    RateLimit,
    StaticToken,
)
from adapters.models import AccountRef, AccountType, Environment, OrderRequest, OrderType, Side
from adapters.tradestation import TradeStationAdapter
from adapters.tradier import TradierAdapter
from emulators.alpaca import AlpacaEmulator
from emulators.common import BaseEmulator, RecordedRequest
from emulators.tradestation import DEFAULT_CLIENT_ID, TradeStationEmulator
from emulators.tradier import TradierEmulator

D = Decimal
CASH = D(10) ** 9  # no order in a run is ever short of buying power
SYMBOL = "AAPL"
HELD = (("MSFT", 20, "400"), ("NVDA", 50, "120"), ("SPY", 5, "580"))
LIFTED = 10**9
WARMUP = 50
TARGET_ADDED_P50_MS = 1.0
TARGET_THROUGHPUT = 0.90
DROP_HEADERS = frozenset({"host", "content-length"})
SPAWN = multiprocessing.get_context("spawn")  # a clean interpreter, whatever the platform


def lifted(rules: Sequence[RateLimit]) -> tuple[RateLimit, ...]:
    return tuple(replace(r, requests=LIFTED) for r in rules)


def per_second(rules: Sequence[RateLimit]) -> tuple[RateLimit, ...]:
    """N per T seconds as one request every T/N seconds: the vendor's rate, without its burst."""
    return tuple(replace(r, requests=1, seconds=r.seconds / r.requests) for r in rules)


def with_limits(
    cls: type[HttpBrokerAdapter], rules: tuple[RateLimit, ...]
) -> type[HttpBrokerAdapter]:
    caps = replace(cls.capabilities, rate_limits=rules)
    return type(cls.__name__, (cls,), {"capabilities": caps})


class CountingLimiters(LimiterRegistry):
    """Counts limiter acquisitions per bucket (``HttpBrokerAdapter._acquire`` gets, then
    acquires, one limiter per matching rule per attempt)."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired: Counter[str] = Counter()

    def get(self, broker: str, rule: RateLimit, owner: str) -> Any:
        self.acquired[rule.bucket] += 1
        return super().get(broker, rule, owner)


# -- one broker each --------------------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """One funded account at the emulator and a token that reaches it."""

    ref: AccountRef
    token: str


@dataclass(frozen=True)
class Endpoint:
    """Where the adapter finds the emulator. Seats and endpoints cross from the emulator's
    process to the benchmark's, so they hold plain data."""

    api_urls: dict[Environment, str]
    extra: dict[str, Any] = field(default_factory=dict)


class Bench(ABC):
    """How to run one broker's adapter against its emulator."""

    name: ClassVar[str]
    adapter_cls: ClassVar[type[HttpBrokerAdapter]]

    @abstractmethod
    def emulator(self, *, vendor_limits: bool) -> BaseEmulator: ...

    @abstractmethod
    def seat(self, emu: Any, i: int) -> Seat: ...

    @abstractmethod
    def endpoint(self, emu: Any) -> Endpoint: ...

    @abstractmethod
    def order_id_of(self, body: Any) -> str:
        """The new order's id in the vendor's placement answer."""

    def adapter(
        self,
        cls: type[HttpBrokerAdapter],
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        seat: Seat,
        limiters: LimiterRegistry,
    ) -> HttpBrokerAdapter:
        return cls(
            AdapterContext(
                session=session,
                api_urls=endpoint.api_urls,
                tokens=StaticToken(seat.token),
                limiters=limiters,
                owner=f"{self.name}-{seat.ref.id}",
                extra=dict(endpoint.extra),
            )
        )


class TradeStationBench(Bench):
    name = "TradeStation"
    adapter_cls = TradeStationAdapter

    def emulator(self, *, vendor_limits: bool) -> BaseEmulator:
        return TradeStationEmulator(
            validate_requests=False,
            heartbeat_interval=3600,
            rate_limits=None if vendor_limits else {},
        )

    def seat(self, emu: TradeStationEmulator, i: int) -> Seat:
        user, account = f"bench{i}", f"3{i:07d}"
        emu.add_user(user)
        emu.add_account(user, account, "Margin", cash=CASH)
        for symbol, qty, price in HELD:
            emu.set_position(account, symbol, qty, price)
        core = emu.oauth
        code = core.issue_code(
            DEFAULT_CLIENT_ID, None, user, "openid offline_access ReadAccount MarketData Trade"
        )
        token = core.exchange_code(core.client(DEFAULT_CLIENT_ID), code, None)["access_token"]
        return Seat(AccountRef(account, AccountType.MARGIN, Environment.LIVE), token)

    def endpoint(self, emu: TradeStationEmulator) -> Endpoint:
        return Endpoint({Environment.LIVE: emu.api_url(Environment.LIVE)})

    def order_id_of(self, body: Any) -> str:
        return str(body["Orders"][0]["OrderID"])


class AlpacaBench(Bench):
    name = "Alpaca"
    adapter_cls = AlpacaAdapter

    def emulator(self, *, vendor_limits: bool) -> BaseEmulator:
        return AlpacaEmulator(validate_requests=False, rate_limit=200 if vendor_limits else LIFTED)

    def seat(self, emu: AlpacaEmulator, i: int) -> Seat:
        user = f"bench{i}"
        emu.add_user(user)
        account = emu.add_account(user, "paper", cash=CASH, account_number=f"PABENCH{i:05d}")
        for symbol, qty, price in HELD:
            emu.set_position(account, symbol, D(qty), D(price))
        token = emu.issue_token(user, env="paper")
        return Seat(
            AccountRef(account.account_number, AccountType.MARGIN, Environment.PAPER), token
        )

    def endpoint(self, emu: AlpacaEmulator) -> Endpoint:
        return Endpoint({Environment.PAPER: emu.api_url("paper")}, {"data_url": emu.data_url})

    def order_id_of(self, body: Any) -> str:
        return str(body["id"])


class TradierBench(Bench):
    name = "Tradier"
    adapter_cls = TradierAdapter

    def emulator(self, *, vendor_limits: bool) -> BaseEmulator:
        emu = TradierEmulator(heartbeat_interval=3600)
        if not vendor_limits:
            for bucket in ("standard", "market", "trading"):
                emu.set_rate_limit(bucket, LIFTED)
        return emu

    def seat(self, emu: TradierEmulator, i: int) -> Seat:
        user = f"bench{i}"
        emu.add_user(user, f"Bench {i}")
        account = emu.add_account(user, Environment.LIVE, "margin", cash=CASH)
        for symbol, qty, price in HELD:
            emu.add_position(account.number, symbol, D(qty), D(price))
        token = emu.issue_tokens(user, Environment.LIVE)["access_token"]
        return Seat(AccountRef(account.number, AccountType.MARGIN, Environment.LIVE), token)

    def endpoint(self, emu: TradierEmulator) -> Endpoint:
        return Endpoint({Environment.LIVE: emu.api_url(Environment.LIVE)})

    def order_id_of(self, body: Any) -> str:
        return str(body["order"]["id"])


BENCHES: dict[str, Bench] = {
    b.name.lower(): b for b in (TradeStationBench(), AlpacaBench(), TradierBench())
}


def market_buy(cid: str) -> OrderRequest:
    return OrderRequest(SYMBOL, Side.BUY, D(1), OrderType.MARKET, client_order_id=cid)


def new_cid() -> str:
    return "bn" + uuid.uuid4().hex[:18]


# -- added latency ----------------------------------------------------------------------------


@dataclass
class LatencyRow:
    broker: str
    verb: str
    requests: int  # HTTP requests per call
    adapter_ms: list[float]
    raw_ms: list[float]
    paired_ms: list[float]


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Replay:
    """Sends recorded requests again with plain aiohttp: what the verb costs without us."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        template: list[RecordedRequest],
        order_id_of: Callable[[Any], str],
        cid: str | None = None,
        order_id: str | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.template = template
        self.order_id_of = order_id_of
        self.cid = cid
        self.order_id = order_id
        self.headers = [
            {k: v for k, v in r.headers.items() if k.lower() not in DROP_HEADERS} for r in template
        ]

    async def __call__(self) -> None:
        cid = new_cid()
        new_id: str | None = None
        for req, headers in zip(self.template, self.headers, strict=True):
            path, query, body = req.path, req.query, req.body
            if self.cid:
                body = body.replace(self.cid.encode(), cid.encode())
                query = {k: v.replace(self.cid, cid) for k, v in query.items()}
            if new_id and self.order_id:
                path = "/".join(
                    new_id if part == self.order_id else part for part in path.split("/")
                )
            async with self.session.request(
                req.method,
                self.base_url + path,
                params=query or None,
                data=body or None,
                headers=headers,
            ) as r:
                raw = await r.read()
                if r.status >= 300:
                    raise RuntimeError(f"raw {req.method} {path} answered {r.status}: {raw!r}")
            if req.method == "POST" and self.order_id:
                new_id = self.order_id_of(json.loads(raw))


async def paired(
    adapter_call: Callable[[], Awaitable[Any]], raw_call: Callable[[], Awaitable[Any]], calls: int
) -> tuple[list[float], list[float]]:
    adapter_ms: list[float] = []
    raw_ms: list[float] = []
    for i in range(WARMUP + calls):
        first, second = (adapter_call, raw_call) if i % 2 == 0 else (raw_call, adapter_call)
        t0 = time.perf_counter_ns()
        await first()
        t1 = time.perf_counter_ns()
        await second()
        t2 = time.perf_counter_ns()
        if i < WARMUP:
            continue
        a, r = (t1 - t0, t2 - t1) if i % 2 == 0 else (t2 - t1, t1 - t0)
        adapter_ms.append(a / 1e6)
        raw_ms.append(r / 1e6)
    return adapter_ms, raw_ms


async def latency(bench: Bench, calls: int) -> list[LatencyRow]:
    emu = bench.emulator(vendor_limits=False)
    await emu.start()
    rows: list[LatencyRow] = []
    try:
        async with aiohttp.ClientSession() as session:
            seat = bench.seat(emu, 0)
            cls = with_limits(bench.adapter_cls, lifted(bench.adapter_cls.capabilities.rate_limits))
            adapter = bench.adapter(cls, session, bench.endpoint(emu), seat, LimiterRegistry())
            ref = seat.ref

            mark = len(emu.requests)
            await adapter.fetch_positions(ref)
            template = emu.requests[mark:]
            replay = Replay(session, emu.base_url, template, bench.order_id_of)
            rows.append(
                await _row(
                    bench.name,
                    "fetch_positions",
                    len(template),
                    lambda: adapter.fetch_positions(ref),
                    replay,
                    calls,
                )
            )

            cid = new_cid()
            mark = len(emu.requests)
            placed = await adapter.create_order(ref, market_buy(cid))
            template = emu.requests[mark:]
            replay = Replay(session, emu.base_url, template, bench.order_id_of, cid, placed.id)
            rows.append(
                await _row(
                    bench.name,
                    "create_order",
                    len(template),
                    lambda: adapter.create_order(ref, market_buy(new_cid())),
                    replay,
                    calls,
                )
            )
    finally:
        await emu.stop()
    return rows


async def _row(
    broker: str,
    verb: str,
    requests: int,
    adapter_call: Callable[[], Awaitable[Any]],
    raw_call: Callable[[], Awaitable[Any]],
    calls: int,
) -> LatencyRow:
    gc.collect()
    adapter_ms, raw_ms = await paired(adapter_call, raw_call, calls)
    diffs = [a - r for a, r in zip(adapter_ms, raw_ms, strict=True)]
    return LatencyRow(broker, verb, requests, adapter_ms, raw_ms, diffs)


# -- throughput -------------------------------------------------------------------------------


@dataclass
class ThroughputRow:
    broker: str
    accounts: int
    orders: int
    placed: int
    failed: Counter[str]
    elapsed: float
    allowed: float
    limits: str
    statuses_429: int

    @property
    def ratio(self) -> float:
        return self.placed / self.allowed if self.allowed else 0.0


def allowed_orders(
    rules: Sequence[RateLimit], acquired: Counter[str], orders: int, accounts: int, elapsed: float
) -> tuple[float, list[str]]:
    """The most orders the limits let through in ``elapsed`` seconds: per rule, its burst
    plus what drains meanwhile, divided by the limited requests an order takes in its bucket."""
    bounds: list[float] = []
    notes: list[str] = []
    for rule in rules:
        per_order = acquired[rule.bucket] / orders if orders else 0
        if per_order == 0:
            continue
        rate = rule.requests / rule.seconds
        per_owner = (rule.requests + rate * elapsed) / per_order
        owners = accounts if rule.scope == "account" else 1
        bounds.append(per_owner * owners)
        notes.append(f"{rule.bucket} {rate:.3g}/s per {rule.scope} x{per_order:g}/order")
    return (min(bounds) if bounds else math.inf), notes


def _serve(key: str, accounts: int, conn: Connection) -> None:
    """The emulator's own process: on a deployment the broker does not share our CPU."""
    asyncio.run(_serve_until_told(key, accounts, conn))


async def _serve_until_told(key: str, accounts: int, conn: Connection) -> None:
    bench = BENCHES[key]
    emu = bench.emulator(vendor_limits=True)
    await emu.start()
    try:
        conn.send((bench.endpoint(emu), [bench.seat(emu, i) for i in range(accounts)]))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    finally:
        await emu.stop()


async def throughput(key: str, orders: int, accounts: int) -> ThroughputRow:
    bench = BENCHES[key]
    loop = asyncio.get_running_loop()
    conn, child_conn = SPAWN.Pipe()
    server = SPAWN.Process(target=_serve, args=(key, accounts, child_conn), daemon=True)
    server.start()
    statuses: Counter[int] = Counter()

    async def on_end(
        _s: Any,
        _ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        statuses[params.response.status] += 1

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    rules = per_second(bench.adapter_cls.capabilities.rate_limits)
    cls = with_limits(bench.adapter_cls, rules)
    limiters = CountingLimiters()
    failed: Counter[str] = Counter()
    try:
        endpoint, seats = await loop.run_in_executor(None, conn.recv)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
            adapters = [bench.adapter(cls, session, endpoint, s, limiters) for s in seats]

            async def place(n: int) -> bool:
                i = n % accounts
                try:
                    await adapters[i].create_order(seats[i].ref, market_buy(new_cid()))
                except Exception as e:  # counted and reported, never hidden
                    failed[type(e).__name__] += 1
                    return False
                return True

            started = time.perf_counter()
            results = await asyncio.gather(*(place(n) for n in range(orders)))
            elapsed = time.perf_counter() - started
    finally:
        conn.send("stop")
        await loop.run_in_executor(None, server.join, 30)
        if server.is_alive():
            server.terminate()
    allowed, notes = allowed_orders(rules, limiters.acquired, orders, accounts, elapsed)
    return ThroughputRow(
        bench.name,
        accounts,
        orders,
        sum(results),
        failed,
        elapsed,
        allowed,
        "; ".join(notes) or "none declared",
        statuses[429],
    )


# -- report -----------------------------------------------------------------------------------


def print_latency(rows: list[LatencyRow], calls: int) -> None:
    print(
        f"\nAdded latency: {calls} adapter calls vs {calls} raw aiohttp replays of the same "
        "HTTP requests, interleaved (ms)"
    )
    head = (
        f"{'broker':<13}{'verb':<17}{'http':>5}{'raw p50':>9}{'raw p99':>9}"
        f"{'adp p50':>9}{'adp p99':>9}{'add p50':>9}{'add p99':>9}{'pair p50':>10}  target"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        added50 = pct(r.adapter_ms, 50) - pct(r.raw_ms, 50)
        added99 = pct(r.adapter_ms, 99) - pct(r.raw_ms, 99)
        ok = "ok" if added50 < TARGET_ADDED_P50_MS else "MISSED"
        print(
            f"{r.broker:<13}{r.verb:<17}{r.requests:>5}{pct(r.raw_ms, 50):>9.3f}"
            f"{pct(r.raw_ms, 99):>9.3f}{pct(r.adapter_ms, 50):>9.3f}{pct(r.adapter_ms, 99):>9.3f}"
            f"{added50:>9.3f}{added99:>9.3f}{statistics.median(r.paired_ms):>10.3f}  {ok}"
        )
    print(
        f"target: added p50 < {TARGET_ADDED_P50_MS} ms; 'pair p50' is the median of "
        "(adapter - raw) over the interleaved pairs"
    )


def print_throughput(rows: list[ThroughputRow]) -> None:
    print(
        "\nThroughput under the vendors' limits, each shortened to its per-second rate "
        "(1 request every T/N s, no burst)"
    )
    head = (
        f"{'broker':<13}{'accounts':>9}{'orders':>8}{'placed':>8}{'seconds':>9}"
        f"{'allowed':>9}{'achieved':>10}{'429s':>6}  target"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ok = "ok" if r.ratio >= TARGET_THROUGHPUT else "MISSED"
        print(
            f"{r.broker:<13}{r.accounts:>9}{r.orders:>8}{r.placed:>8}{r.elapsed:>9.2f}"
            f"{r.allowed:>9.1f}{r.ratio:>9.1%} {r.statuses_429:>6}  {ok}"
        )
    for r in rows:
        failures = ", ".join(f"{k} x{v}" for k, v in r.failed.items()) or "none"
        print(f"  {r.broker}: limits {r.limits}; failures: {failures}")
    print(
        f"target: achieved >= {TARGET_THROUGHPUT:.0%} of allowed (allowed = what the limits "
        "let through in the elapsed time)"
    )


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.adapter_overhead",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument(
        "--brokers", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES)
    )
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    keys = [b.strip().lower() for b in args.brokers.split(",") if b.strip()]
    unknown = [k for k in keys if k not in BENCHES]
    if unknown or not keys:
        parser.error(f"--brokers takes {', '.join(BENCHES)}; not {', '.join(unknown) or 'none'}")
    rows: list[LatencyRow] = []
    for key in keys:
        rows += await latency(BENCHES[key], args.calls)
    print_latency(rows, args.calls)
    if not args.skip_throughput:
        print_throughput([await throughput(key, args.orders, args.accounts) for key in keys])


if __name__ == "__main__":
    asyncio.run(main())
