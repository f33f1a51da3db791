"""Scale-out as deployed: real `tradecord run --role ...` processes on one PostgreSQL database.

Two web processes sit behind a load balancer at PUBLIC_URL (in this process, see harness.py),
two workers run the job queue and follow orders, two bot processes own one gateway shard each
of a two-guild Discord. The calling process only drives browsers, webhooks and the emulators,
and reads the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import urljoin

import aiohttp
import pytest
from sqlalchemy import func, literal, select

from adapters.models import OrderType, Side
from adapters.paper.models import PaperOrder
from adapters.paper.store import paper_account_id
from bot.automation_models import Job, JobStatus, ReceivedSignal, SignalStatus
from bot.models import (
    AuditEvent,
    Connection,
    ConnectionStatus,
    IntentStatus,
    OrderIntent,
    OrderWatcher,
)
from bot.services.subscriptions import Sizing, SubscriptionSettings
from bot.services.trading import OrderInput
from tests.conftest import TEST_DB
from tests.scale.harness import Cluster, RefreshGate, free_port, wait_until

pytestmark = [
    pytest.mark.skipif(
        TEST_DB != "postgresql",
        reason="several processes share one database only on PostgreSQL "
        "(run with TRADECORD_TEST_DB=postgresql)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
    # One deployment for the module: its tests on one worker (scripts/test's --dist loadgroup).
    pytest.mark.xdist_group("scale"),
    pytest.mark.first,
]

TICKERS = ("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "AMD", "NFLX", "SPY", "QQQ")
SIGNALS = 1000


# -- signals ------------------------------------------------------------------------------


class Sub(NamedTuple):
    strategy: int  # index into Fleet.urls
    account: str  # paper account id
    multiplier: int  # sizing: this many times the signal's quantity
    member: int  # Discord user id


@dataclass
class Fleet:
    """Strategies the test posts signals to, each with its own paper subscribers.

    Signal i goes to strategy i % len(urls). Many strategies because one accepts at most
    60 signals a minute (the highest limit /strategy settings allows). A strategy with two
    subscribers makes a re-run after a crash find one subscription done and the other not;
    each subscriber sizes at a different multiple of the signal's quantity, so that every
    (signal, subscription) makes an order no other one makes.
    """

    urls: list[str]
    subscriptions: dict[int, Sub] = field(default_factory=dict)  # by subscription id

    @property
    def accounts(self) -> set[str]:
        return {sub.account for sub in self.subscriptions.values()}

    def of(self, i: int) -> dict[int, Sub]:
        """The subscriptions signal ``i`` reaches."""
        strategy = i % len(self.urls)
        return {k: sub for k, sub in self.subscriptions.items() if sub.strategy == strategy}


def signal_body(i: int) -> dict[str, Any]:
    """Signal ``i``: a bullish add (never an exit, so exactly one order per subscription) with
    a (ticker, quantity) no other signal has."""
    return {
        "ticker": TICKERS[i % len(TICKERS)],
        "action": "add",
        "sentiment": "bullish",
        "quantity": i // len(TICKERS) + 1,
    }


async def make_fleet(cluster: Cluster, name: str, groups: list[list[int]]) -> Fleet:
    """One strategy per group of members; each member of a group subscribes their paper
    account to it, the first owning it and sharing it with the others."""
    core, guild = cluster.core, cluster.guild_ids[0]
    fleet = Fleet(urls=[])
    for k, (owner, *others) in enumerate(groups):
        url = await core.strategies.create(guild, owner, f"{name} {k}")
        for other in others:
            await core.strategies.share(guild, owner, url.strategy.id, other)
        for multiplier, member in enumerate((owner, *others), start=1):
            info = await core.subscriptions.subscribe(
                guild,
                member,
                url.strategy.id,
                settings=SubscriptionSettings(
                    sizing=Sizing.SIGNAL, sizing_value=Decimal(multiplier)
                ),
            )
            fleet.subscriptions[info.id] = Sub(
                k, paper_account_id(info.connection_id), multiplier, member
            )
        fleet.urls.append(url.url)
    return fleet


async def post_signals(cluster: Cluster, fleet: Fleet, count: int) -> dict[str, int]:
    """POST signals 0..count-1 to the load balancer (round-robin over the web processes);
    returns signal id -> i. Every one must be acknowledged 202."""
    ids: dict[str, int] = {}
    semaphore = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as http:

        async def post(i: int) -> None:
            async with semaphore:
                url = fleet.urls[i % len(fleet.urls)]
                async with http.post(url, data=json.dumps(signal_body(i))) as r:
                    body = await r.json()
                    assert r.status == 202, (i, r.status, body)
                    ids[body["id"]] = i

        await asyncio.gather(*(post(i) for i in range(count)))
    return ids


def expected_orders(
    fleet: Fleet, signals: dict[str, int]
) -> Counter[tuple[str, str, str, Decimal]]:
    """(account, side, symbol, quantity) of every order the signals must make, once each."""
    want: Counter[tuple[str, str, str, Decimal]] = Counter()
    for i in signals.values():
        body = signal_body(i)
        for sub in fleet.of(i).values():
            want[
                (sub.account, "buy", body["ticker"], Decimal(body["quantity"] * sub.multiplier))
            ] += 1
    return want


def expected_keys(fleet: Fleet, signals: dict[str, int]) -> set[str]:
    return {f"{sid}:{sub}:entry" for sid, i in signals.items() for sub in fleet.of(i)}


async def paper_orders(cluster: Cluster, fleet: Fleet) -> Counter[tuple[str, str, str, Decimal]]:
    async with cluster.core.db.session() as s:
        rows = await s.execute(
            select(
                PaperOrder.account_id, PaperOrder.side, PaperOrder.symbol, PaperOrder.quantity
            ).where(PaperOrder.account_id.in_(fleet.accounts))
        )
        return Counter((a, side, sym, Decimal(q)) for a, side, sym, q in rows)


async def paper_order_count(cluster: Cluster, fleet: Fleet) -> int:
    async with cluster.core.db.session() as s:
        return int(
            await s.scalar(
                select(func.count())
                .select_from(PaperOrder)
                .where(PaperOrder.account_id.in_(fleet.accounts))
            )
            or 0
        )


async def unfinished(cluster: Cluster, signals: dict[str, int]) -> int:
    """Signals of this batch not yet done, plus their jobs not yet done."""
    keys = [f"signal:{sid}" for sid in signals]
    async with cluster.core.db.session() as s:
        open_signals = await s.scalar(
            select(func.count())
            .select_from(ReceivedSignal)
            .where(ReceivedSignal.id.in_(list(signals)), ReceivedSignal.status != SignalStatus.DONE)
        )
        open_jobs = await s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.dedupe_key.in_(keys), Job.status != JobStatus.DONE)
        )
    return int(open_signals or 0) + int(open_jobs or 0)


async def running_job_owners(cluster: Cluster) -> dict[int, str]:
    async with cluster.core.db.session() as s:
        rows = await s.execute(
            select(Job.id, Job.lease_owner).where(Job.status == JobStatus.RUNNING)
        )
        return {job_id: owner or "" for job_id, owner in rows}


async def sending(cluster: Cluster, pid: int) -> bool:
    """Whether a job leased by process ``pid`` has an order marked sent (SUBMITTED) and not
    yet answered by the broker."""
    async with cluster.core.db.session() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(OrderIntent)
            .join(
                Job,
                Job.dedupe_key
                == literal("signal:") + func.split_part(OrderIntent.idempotency_key, ":", 1),
            )
            .where(
                OrderIntent.status == IntentStatus.SUBMITTED,
                Job.status == JobStatus.RUNNING,
                Job.lease_owner.like(f"%:{pid}:%"),
            )
        )
    return bool(count)


def owner_pid(lease_owner: str) -> int:
    """Worker names are host:pid:random (bot.services.jobs.worker_name)."""
    return int(lease_owner.split(":")[-2])


async def intents_by_key(cluster: Cluster, keys: set[str]) -> dict[str, OrderIntent]:
    found: dict[str, OrderIntent] = {}
    wanted = sorted(keys)
    async with cluster.core.db.session() as s:
        for start in range(0, len(wanted), 1000):
            for intent in await s.scalars(
                select(OrderIntent).where(
                    OrderIntent.idempotency_key.in_(wanted[start : start + 1000])
                )
            ):
                found[intent.idempotency_key or ""] = intent
    return found


class OrdersMissing(AssertionError):
    """Orders the signals should have placed and did not: nothing else was wrong."""


async def unplaced(cluster: Cluster, fleet: Fleet, signals: dict[str, int]) -> list[OrderIntent]:
    """Check that no order was placed twice or without being asked for, and that every paper
    order is the one its intent (keyed signal:subscription:leg) asked for; return the intents
    whose order is missing."""
    placed = await paper_orders(cluster, fleet)
    wanted = expected_orders(fleet, signals)
    assert not placed - wanted, f"orders placed twice or never asked for: {placed - wanted}"
    keys = expected_keys(fleet, signals)
    intents = await intents_by_key(cluster, keys)
    assert set(intents) == keys  # every subscription of every signal got its one intent
    async with cluster.core.db.session() as s:
        client_ids = Counter(
            await s.scalars(
                select(PaperOrder.client_order_id).where(PaperOrder.account_id.in_(fleet.accounts))
            )
        )
    assert set(client_ids) <= {i.client_order_id for i in intents.values()}
    assert max(client_ids.values()) == 1
    missing = [i for i in intents.values() if i.client_order_id not in client_ids]
    assert len(missing) == (wanted - placed).total()
    assert {i.status for i in intents.values() if i not in missing} == {IntentStatus.FILLED}
    return missing


async def explain(cluster: Cluster, intents: list[OrderIntent]) -> str:
    """Each missing order's intent with its audit trail (what the processes decided)."""
    lines = []
    async with cluster.core.db.session() as s:
        for intent in intents:
            trail = await s.execute(
                select(AuditEvent.at, AuditEvent.kind, AuditEvent.detail)
                .where(AuditEvent.intent_id == intent.id)
                .order_by(AuditEvent.id)
            )
            steps = "; ".join(f"{at:%H:%M:%S.%f} {kind} {detail}" for at, kind, detail in trail)
            lines.append(f"{intent.idempotency_key} {intent.status}: {steps}")
    return "\n".join(lines)


# -- tests ------------------------------------------------------------------------------------


async def test_each_guilds_slash_command_is_answered_by_the_process_owning_its_shard(
    cluster: Cluster,
) -> None:
    cluster.check_alive()
    member = cluster.member_ids[8]
    for shard, guild_id in enumerate(cluster.guild_ids):
        channel = cluster.discord.world.guilds[guild_id].channel_ids[0]
        result = await cluster.discord.slash(
            member, "accounts", guild_id=guild_id, channel_id=channel
        )
        answer = await result.message(timeout=20)
        assert "Tradecord Paper" in answer.text()
        assert result.shard_id == shard
        # The emulator gave this shard's session to exactly one process: the one started with
        # --shards n-n/2, which logged the session id it was given.
        [session] = [s for s in cluster.discord.sessions if s.shard_id == shard]
        assert session.shard_count == 2
        owners = [p.name for p in cluster.by_role("bot") if session.session_id in p.output()]
        assert owners == [f"bot-{shard}"]


async def test_a_web_process_takes_webhooks_while_discords_api_is_down(cluster: Cluster) -> None:
    """Webhooks and OAuth pages do not need Discord: a web process starts without it."""
    cluster.check_alive()
    proc = cluster.new_process("web-offline", "web")
    proc.env["DISCORD_API_BASE"] = f"http://127.0.0.1:{free_port()}/api/v10"  # nobody listens
    await proc.start()
    try:
        await cluster.until_ready(proc)
        assert "Discord's API did not answer at start" in proc.output()
        owner = cluster.member_ids[8]
        url = await cluster.core.strategies.create(cluster.guild_ids[0], owner, "Offline")
        path = url.url.removeprefix(cluster.lb.url)
        async with (
            aiohttp.ClientSession() as http,
            http.post(proc.url + path, data=json.dumps(signal_body(0))) as r,
        ):
            assert r.status == 202, await r.text()
    finally:
        await proc.stop()


async def test_a_web_process_stops_on_a_token_discord_refuses(cluster: Cluster) -> None:
    proc = cluster.new_process("web-bad-token", "web")
    proc.env["DISCORD_TOKEN"] = "MTAw.not-this-bots.token"
    await proc.start()
    assert proc.process is not None
    assert await asyncio.wait_for(proc.process.wait(), 60) == 2
    proc.retired = True
    assert "DISCORD_TOKEN: Discord refused this token" in proc.output()


@pytest.mark.timeout(240)
async def test_a_thousand_signals_make_one_order_per_subscription_though_a_worker_is_killed(
    cluster: Cluster,
) -> None:
    """1,000 signals through both web processes; two workers run them; one is SIGKILLed while
    it sends an order (its leased jobs stranded mid-run) and a replacement started. Afterwards
    there is exactly one paper order per subscription per signal."""
    cluster.check_alive()
    # One strategy with two subscribers, three with one, five times over: 20 strategies keep
    # each under its 60 signals a minute. The fan-out and its re-runs are covered, and 1,250
    # orders fit the time this suite may take on two cores.
    members = cluster.member_ids[:5]
    groups = [members[0:2], members[2:3], members[3:4], members[4:5]] * 5
    assert SIGNALS / len(groups) <= 60
    fleet = await make_fleet(cluster, "Scale", groups)
    served_before = len(cluster.lb.log)
    signals = await post_signals(cluster, fleet, SIGNALS)
    assert len(signals) == SIGNALS
    served = Counter(b for b, _, path in cluster.lb.log[served_before:] if "/webhook/" in path)
    assert served == {"web-a": SIGNALS // 2, "web-b": SIGNALS // 2}

    workers = [p for p in cluster.by_role("worker") if p.alive]
    survivor, victim = workers
    names = {w.pid: w.name for w in workers}
    ran_on: set[str] = set()
    total = sum(expected_orders(fleet, signals).values())

    async def victim_under_way() -> bool:
        owners = {owner_pid(o) for o in (await running_job_owners(cluster)).values() if o}
        ran_on.update(names[pid] for pid in owners if pid in names)
        return victim.pid in owners and await paper_order_count(cluster, fleet) >= total // 10

    await wait_until(
        victim_under_way, "the victim to be under way", timeout=120, watch=workers, every=0.2
    )
    # The worst moment: an order of the victim's is on its way to the broker.
    await wait_until(
        lambda: sending(cluster, victim.pid),
        "the victim to send an order",
        watch=workers,
        every=0.01,
    )
    victim.kill()
    assert ran_on == {survivor.name, victim.name}  # both took jobs
    assert await asyncio.wait_for(victim.process.wait(), 10) == -9  # type: ignore[union-attr]
    stranded = {
        job_id
        for job_id, owner in (await running_job_owners(cluster)).items()
        if owner and owner_pid(owner) == victim.pid
    }
    assert stranded, "the killed worker held no job"
    # A replacement starts while the dead worker's leases still run (JOB_LEASE_SECONDS).
    replacement = await cluster.start_process("worker-3", "worker")

    async def finished() -> bool:
        return await unfinished(cluster, signals) == 0

    await wait_until(
        finished,
        "every signal to be done",
        timeout=200,
        watch=[survivor, replacement],
        every=1.0,
    )
    missing = await unplaced(cluster, fleet, signals)
    async with cluster.core.db.session() as s:
        jobs = {
            job_id: (status, attempts)
            for job_id, status, attempts in await s.execute(
                select(Job.id, Job.status, Job.attempts).where(
                    Job.dedupe_key.in_([f"signal:{sid}" for sid in signals])
                )
            )
        }
    assert {status for status, _ in jobs.values()} == {JobStatus.DONE}
    # Stranded jobs ran again once their leases expired; no other job was claimed twice.
    assert all(jobs[j][1] >= 2 for j in stranded)
    assert {attempts for j, (_, attempts) in jobs.items() if j not in stranded} == {1}

    # Members hear of each execution at most once (a DM over Discord's REST API from the
    # worker that finished it); only a run cut off by the kill may have lost its DM.
    async with cluster.core.db.session() as s:
        cut_off = set(
            await s.scalars(
                select(ReceivedSignal.id)
                .join(Job, Job.dedupe_key == "signal:" + ReceivedSignal.id)
                .where(Job.id.in_(stranded))
            )
        )
    told: Counter[tuple[int, str]] = Counter()
    pattern = re.compile(r"Signal `([0-9a-f-]{36})`")
    for channel in cluster.discord.world.channels.values():
        if channel.type == 1 and channel.recipient_id in members:
            for message in cluster.discord.messages(channel.id):
                m = pattern.search(message.content or "")
                if m and m.group(1) in signals:
                    told[(channel.recipient_id, m.group(1))] += 1
    assert max(told.values()) == 1
    expected_dms = {(sub.member, sid) for sid, i in signals.items() for sub in fleet.of(i).values()}
    assert {sid for _, sid in expected_dms - set(told)} <= cut_off
    if missing:
        raise OrdersMissing(
            f"{len(missing)} of {total} orders never placed:\n{await explain(cluster, missing)}"
        )


# -- /connect and tokens ------------------------------------------------------------------------


class Browser:
    """A cookie-keeping client that follows nothing by itself (each hop is the test's)."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def get(self, url: str) -> tuple[int, str, str]:
        async with self.session.get(url, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def submit(self, page_url: str, page: str, **fields: str) -> tuple[int, str, str]:
        m = re.search(r'<form[^>]*method="post"[^>]*action="([^"]+)"', page)
        assert m, page[:500]
        action = html.unescape(m.group(1))
        data = {
            k: html.unescape(v)
            for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
        }
        data.update(fields)
        async with self.session.post(
            urljoin(page_url, action), data=data, allow_redirects=False
        ) as r:
            return r.status, r.headers.get("Location", ""), await r.text()

    async def close(self) -> None:
        await self.session.close()


async def connect_link(cluster: Cluster, member: int, guild_index: int) -> str:
    guild_id = cluster.guild_ids[guild_index]
    channel = cluster.discord.world.guilds[guild_id].channel_ids[0]
    result = await cluster.discord.slash(
        member, "connect", options={"broker": "tradestation"}, guild_id=guild_id, channel_id=channel
    )
    message = await result.message(timeout=20)
    assert result.shard_id == guild_index
    [button] = message.buttons()
    assert button.url and button.url.startswith(cluster.lb.url)
    return button.url


async def link_tradestation(
    cluster: Cluster, member: int, broker_user: str, *, hops: tuple[str, str, str] | None = None
) -> None:
    """/connect in Discord, then the browser's trip: our link page (and its POST), Discord's
    sign-in, our Discord callback, TradeStation's consent, our broker callback. ``hops``
    pins (link page, Discord callback, broker callback) to web processes; else round-robin."""
    lb = cluster.lb

    def via(hop: int) -> contextlib.AbstractContextManager[None]:
        return lb.pin(hops[hop]) if hops else contextlib.nullcontext()

    link = await connect_link(cluster, member, guild_index=1)
    browser = Browser()
    try:
        with via(0):
            status, _, page = await browser.get(link)
            assert status == 200, page
            status, authorize, page = await browser.submit(link, page)
            assert status == 303, page
        assert authorize.startswith(cluster.discord.base_url)
        _, _, consent = await browser.get(authorize)
        status, callback, page = await browser.submit(
            authorize, consent, user_id=str(member), action="authorize"
        )
        assert status in (302, 303) and callback.startswith(lb.url), page
        with via(1):
            status, broker_authorize, page = await browser.get(callback)
            assert status == 303, page
        assert broker_authorize.startswith(cluster.tradestation.base_url)
        _, _, consent = await browser.get(broker_authorize)
        status, callback, page = await browser.submit(
            broker_authorize, consent, user_id=broker_user, decision="approve"
        )
        assert status in (302, 303) and callback.startswith(lb.url), page
        with via(2):
            status, _, page = await browser.get(callback)
        assert status == 200 and "is linked" in page, page
    finally:
        await browser.close()


async def choose_paper_account(cluster: Cluster, member: int) -> Connection:
    """Pick the SIM account in the DM the linking web process sent (a DM interaction: shard
    0's process handles it)."""
    dm = await cluster.discord.wait_for_message(
        lambda m: (
            "is linked" in (m.content or "")
            and bool(m.components)
            and cluster.discord.world.channels[m.channel_id].recipient_id == member
        ),
        include_existing=True,
        timeout=20,
    )
    menu = next(s for s in dm.selects() if s["custom_id"].endswith(":paper"))
    chose = await cluster.discord.select(
        member, dm, [menu["options"][0]["value"]], custom_id=menu["custom_id"]
    )
    answer = await chose.message(timeout=20)
    assert chose.shard_id == 0 and "paper" in answer.text()
    [conn] = [c for c in await cluster.core.connections.list_for(member) if not c.builtin]
    assert conn.status == ConnectionStatus.ACTIVE and conn.account("paper") is not None
    return conn


async def test_an_oauth_flow_started_on_one_web_process_completes_on_the_other(
    cluster: Cluster,
) -> None:
    cluster.check_alive()
    member = cluster.member_ids[9]
    mark = len(cluster.lb.log)
    # Discord sign-in: started (state, cookie) on web-a, its callback on web-b. TradeStation:
    # started (state, PKCE where used) on web-b, its callback on web-a.
    await link_tradestation(cluster, member, "demo", hops=("web-a", "web-b", "web-a"))
    hops = [(b, m, p.split("/")[1]) for b, m, p in cluster.lb.log[mark:]]
    assert hops == [
        ("web-a", "GET", "connect"),
        ("web-a", "POST", "connect"),
        ("web-b", "GET", "auth"),
        ("web-a", "GET", "oauth"),
    ]
    conn = await choose_paper_account(cluster, member)
    assert conn.broker == "tradestation"


async def test_two_processes_needing_a_new_token_at_once_refresh_it_once(
    cluster: Cluster, refresh_gate: RefreshGate
) -> None:
    """The worker streaming a connection's order and another process reading its orders both
    find the access token dead at once: one refresh between them (a rotating refresh token
    used twice would be revoked). One worker streams a connection (``order_watchers``), so
    the second process is this test's own Core, as a bot process answering /orders."""
    cluster.check_alive()
    ts = cluster.tradestation
    workers = [p for p in cluster.by_role("worker") if p.alive]
    assert len(workers) == 2
    member = cluster.member_ids[10]
    await link_tradestation(cluster, member, "alice")
    conn = await choose_paper_account(cluster, member)

    # A resting order: one worker follows it (a poll, then TradeStation's order stream).
    core = cluster.core
    target = await core.connections.resolve(member, conn.name, "paper")
    adapter = await core.connections.adapter_for(target.connection)
    try:
        request = core.trading.build_request(
            OrderInput(
                symbol="AAPL",
                side=Side.BUY.value,
                quantity="1",
                order_type=OrderType.LIMIT.value,
                limit_price="1.00",
            ),
            adapter,
        )
    finally:
        await adapter.close()
    outcome = await core.trading.place(
        target, request, source="test", idempotency_key=f"scale-refresh:{conn.id}"
    )
    assert outcome.intent.status == IntentStatus.ACCEPTED
    await wait_until(lambda: ts.open_streams == 1, "a worker to stream the order", watch=workers)
    async with core.db.session() as s:
        holder = await s.scalar(
            select(OrderWatcher.holder).where(OrderWatcher.connection_id == conn.id)
        )
    assert holder is not None
    streamer = int(holder.split(":")[1])  # worker_name(): host:pid:random
    assert streamer in {w.pid for w in workers}

    refreshes = ts.oauth.refresh_requests
    refresh_gate.arm([streamer, os.getpid()])
    try:
        # Every access token dies and the stream is cut: the worker reconnects with its stored
        # token and /orders reads with it; both get 401 and must refresh, and the first refresh
        # waits at the broker until both have been refused.
        ts.expire_access_tokens()
        ts.drop_streams()
        reading = asyncio.create_task(core.trading.open_orders(member, conn.name, "paper"))
        await wait_until(
            lambda: refresh_gate.held >= 1 and ts.open_streams == 1 and reading.done(),
            "the worker to stream again and /orders to read, with a refreshed token",
            timeout=60,
            watch=workers,
        )
        _, _, orders = reading.result()
        assert [o.id for o in orders] == [outcome.intent.broker_order_id]
    finally:
        refresh_gate.disarm()
    assert refresh_gate.refused == {streamer, os.getpid()}
    assert ts.oauth.refresh_requests - refreshes == 1
    async with core.db.session() as s:
        refreshed = await s.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.connection_id == conn.id,
                AuditEvent.kind == "connection.token_refreshed",
            )
        )
        status = await s.scalar(select(Connection.status).where(Connection.id == conn.id))
    assert refreshed == 1 and status == ConnectionStatus.ACTIVE
