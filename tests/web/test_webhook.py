"""The webhook over real HTTP (aiohttp's test server on 127.0.0.1): authentication, size,
allow-list, duplicates, stale signals, rate limit, and a fuzzed body that never yields a 5xx
or a job."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.automation_models import Job, ReceivedSignal, SignalStatus, Strategy
from bot.core import Core
from bot.models import OrderIntent
from bot.signal_format import MAX_BODY_BYTES, Signal, parse
from tests.bot.signals.conftest import OWNER, count, make_strategy, split, subscribe
from tests.support import FakeClock
from web.app import app_runner, create_app, start_site
from web.webhook import TRUSTED_PROXIES, parse_trusted_proxies

GUILD = 555
SPEC = Path(__file__).resolve().parents[2] / "emulators/specs/traderspost-webhook-openapi.json"


@asynccontextmanager
async def serve(core: Core, trusted: str = "") -> AsyncIterator[TestClient]:
    app = create_app(core)
    app[TRUSTED_PROXIES] = parse_trusted_proxies(trusted)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def client(core: Core) -> AsyncIterator[TestClient]:
    async with serve(core) as c:
        yield c


def path(url: Any) -> str:
    strategy_id, secret = split(url)
    return f"/webhook/{strategy_id}/{secret}"


def body(**fields: Any) -> bytes:
    return json.dumps({"ticker": "AAPL", "action": "buy", **fields}).encode()


async def post(client: TestClient, where: str, data: bytes, **headers: str) -> tuple[int, Any]:
    resp = await client.post(where, data=data, headers=headers)
    return resp.status, await resp.json()


async def test_a_signal_is_stored_with_its_job_before_the_202(
    core: Core, client: TestClient
) -> None:
    url = await make_strategy(core)
    status, answer = await post(client, path(url), body(quantity=3, price="199.5"))
    assert status == 202
    assert answer["success"] is True and answer["id"] == answer["logId"]
    assert answer["payload"] == {"ticker": "AAPL", "action": "buy", "quantity": 3, "price": 199.5}
    async with core.db.session() as s:
        row = await s.get(ReceivedSignal, answer["id"])
        job = await s.scalar(select(Job).where(Job.dedupe_key == f"signal:{answer['id']}"))
    assert row is not None and row.status == SignalStatus.QUEUED and row.ticker == "AAPL"
    assert row.source_ip == "127.0.0.1"
    assert job is not None and job.payload == {"signal_id": answer["id"]}


async def test_the_202_comes_before_any_broker_call_and_the_job_trades_after(
    core: Core, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a subscriber who would trade, the webhook still only stores and answers: no
    adapter is built (so no broker is called) until the queued job runs."""
    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    adapter_for = core.connections.adapter_for
    built = 0

    async def counted(connection: Any) -> Any:
        nonlocal built
        built += 1
        return await adapter_for(connection)

    monkeypatch.setattr(core.connections, "adapter_for", counted)
    status, answer = await post(client, path(url), body(quantity=1))
    assert status == 202
    assert built == 0 and await count(core, OrderIntent) == 0
    async with core.db.session() as s:
        row = await s.get(ReceivedSignal, answer["id"])
    assert row is not None and row.status == SignalStatus.QUEUED
    await core.jobs.drain()
    # The same path the job takes to the broker: the count above could have moved.
    assert built > 0 and await count(core, OrderIntent) == 1


async def test_unknown_strategy_and_wrong_secret_get_the_identical_401(
    core: Core, client: TestClient
) -> None:
    url = await make_strategy(core)
    strategy_id, secret = split(url)
    wrong = secret[:-1] + ("y" if secret.endswith("x") else "x")  # one character off
    answers = []
    for where in (
        f"/webhook/{strategy_id}/{wrong}",
        f"/webhook/{uuid.uuid4()}/{secret}",
        f"/webhook/not-a-uuid/{secret}",
        f"/webhook/{strategy_id}/{secret}{secret}",
    ):
        resp = await client.post(where, data=body())
        answers.append((resp.status, resp.content_type, await resp.read()))
    assert len(set(answers)) == 1
    status, ctype, raw = answers[0]
    assert status == 401 and ctype == "application/json"
    assert json.loads(raw)["messageCode"] == "invalid-password"
    assert await count(core, ReceivedSignal) == 0  # nothing stored for an unauthenticated call
    await core.strategies.settle()
    async with core.db.session() as s:  # the strategy's wrong secrets counted, for its owner
        row = await s.get(Strategy, strategy_id)
        assert row is not None and row.bad_secret == 2


async def test_a_deleted_strategys_url_is_not_told_to_rotate_its_secret_only(
    core: Core, client: TestClient
) -> None:
    """Before: a deleted strategy's URL answered "The password in your webhook URL is not
    correct. If you lost the URL, make a new one with /strategy rotate-secret." — a command
    that cannot work for a strategy that is gone."""
    url = await make_strategy(core)
    await core.strategies.delete(GUILD, OWNER, url.strategy.id)
    status, answer = await post(client, path(url), body())
    assert (status, answer["messageCode"]) == (401, "invalid-password")
    assert "or its strategy was deleted" in answer["message"]
    assert "/strategy list" in answer["message"]


async def test_a_declared_oversize_body_is_refused_unread(core: Core, client: TestClient) -> None:
    url = await make_strategy(core)
    status, answer = await post(client, path(url), b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert (status, answer["messageCode"]) == (413, "payload-too-large")
    assert await count(core, ReceivedSignal) == 0


async def test_a_streamed_oversize_body_is_cut_off_while_reading(
    core: Core, client: TestClient
) -> None:
    url = await make_strategy(core)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"ticker": "AAPL", "action": "buy", "extras": {"pad": "'
        for _ in range(64):  # 256 KiB in all, without a Content-Length
            sent += 4096
            yield b"x" * 4096
        yield b'"}}'

    resp = await client.post(path(url), data=chunks())
    assert resp.status == 413
    assert (await resp.json())["messageCode"] == "payload-too-large"
    assert await count(core, ReceivedSignal) == 0


async def test_a_compressed_body_is_limited_as_it_inflates(core: Core, client: TestClient) -> None:
    """Requirement 23 against a gzip bomb: 8 MiB that travel as a few KiB."""
    import gzip

    url = await make_strategy(core)
    inner = b'{"ticker":"AAPL","action":"buy","pad":"' + b"x" * (8 * 1024 * 1024) + b'"}'
    packed = gzip.compress(inner)
    assert len(packed) < MAX_BODY_BYTES
    resp = await client.post(
        path(url),
        data=packed,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status == 413
    assert await count(core, ReceivedSignal) == 0


async def test_a_body_of_exactly_the_limit_is_read(core: Core, client: TestClient) -> None:
    url = await make_strategy(core)
    raw = body()
    raw = raw[:-1] + b" " * (MAX_BODY_BYTES - len(raw)) + b"}"
    assert len(raw) == MAX_BODY_BYTES
    status, _ = await post(client, path(url), raw)
    assert status == 202


async def test_only_post(core: Core, client: TestClient) -> None:
    url = await make_strategy(core)
    resp = await client.get(path(url))
    assert resp.status == 400
    assert (await resp.json())["messageCode"] == "post-required"


# -- allow-list and forwarded addresses ------------------------------------------------------


async def allow(core: Core, url: Any, sources: Sequence[str]) -> None:
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, allowed_sources=sources)


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_refused(core: Core) -> None:
    url = await make_strategy(core)
    await allow(core, url, ["tradingview"])
    async with serve(core, trusted="") as client:
        status, answer = await post(
            client, path(url), body(), **{"X-Forwarded-For": "52.89.214.238"}
        )
    assert (status, answer["messageCode"]) == (403, "not-trading-view")
    assert await count(core, ReceivedSignal) == 0


async def test_the_hop_a_trusted_proxy_appended_is_honoured(core: Core) -> None:
    url = await make_strategy(core)
    await allow(core, url, ["tradingview"])
    async with serve(core, trusted="10.0.0.0/8, 127.0.0.1") as client:
        ok = await post(client, path(url), body(), **{"X-Forwarded-For": "52.89.214.238"})
        # The client wrote the TradingView address itself; our proxy appended the real one.
        spoofed = await post(
            client,
            path(url),
            body(quantity=2),
            **{"X-Forwarded-For": "52.89.214.238, 198.51.100.7"},
        )
        # Proxies of our own are skipped right to left until the first outside hop.
        chained = await post(
            client, path(url), body(quantity=3), **{"X-Forwarded-For": "34.212.75.30, 10.1.2.3"}
        )
        garbage = await post(
            client, path(url), body(quantity=4), **{"X-Forwarded-For": "52.89.214.238, not-an-ip"}
        )
    assert ok[0] == 202
    assert (spoofed[0], spoofed[1]["messageCode"]) == (403, "not-trading-view")
    assert chained[0] == 202
    assert (garbage[0], garbage[1]["messageCode"]) == (400, "invalid-ip-address-format")
    async with core.db.session() as s:
        sources = set(await s.scalars(select(ReceivedSignal.source_ip)))
    assert sources == {"52.89.214.238", "34.212.75.30"}


async def test_an_explicit_allow_list(core: Core) -> None:
    url = await make_strategy(core)
    await allow(core, url, ["203.0.113.0/24", "2001:db8::1"])
    async with serve(core, trusted="127.0.0.1") as client:
        inside = await post(client, path(url), body(), **{"X-Forwarded-For": "203.0.113.77"})
        v6 = await post(client, path(url), body(quantity=2), **{"X-Forwarded-For": "2001:db8::1"})
        outside = await post(
            client, path(url), body(quantity=3), **{"X-Forwarded-For": "203.0.114.1"}
        )
    assert inside[0] == 202 and v6[0] == 202
    assert (outside[0], outside[1]["messageCode"]) == (403, "invalid-ip-address")
    # Before: only "did not come from one of this strategy's allowed IP addresses."
    assert outside[1]["message"].endswith(
        "It came from 203.0.114.1. Its owner can add the address with /strategy settings "
        "allowed_sources (none allows any address)."
    )


# -- replay, staleness, rate ---------------------------------------------------------------


async def test_an_identical_body_within_30_s_is_a_duplicate_without_a_second_order(
    core: Core, client: TestClient, clock: FakeClock
) -> None:
    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    raw = body(quantity=1)
    first = await post(client, path(url), raw)
    await core.jobs.drain()
    clock.advance(seconds=29)  # a retry, or the alert set up twice
    again = await post(client, path(url), raw)
    assert first[0] == 202
    assert again[0] == 200 and again[1]["duplicate"] is True
    assert again[1]["id"] == first[1]["id"] and again[1]["logId"] != first[1]["id"]
    # Before: only "… will not be traded twice.", and a strategy that re-enters on purpose
    # was left to guess why nothing traded.
    assert again[1]["message"].endswith(
        "To repeat an order on purpose, send a time field (TradingView: {{timenow}}) so each "
        "alert differs."
    )
    await core.jobs.drain()
    assert await count(core, OrderIntent) == 1
    assert await count(core, Job) == 1
    # An alert without a time field sends the same body again on purpose a bar later: traded,
    # as TradersPost trades it (a day's window dropped an indicator's second "buy").
    clock.advance(seconds=31)
    later = await post(client, path(url), raw)
    assert later[0] == 202 and later[1]["id"] != first[1]["id"]


async def test_a_timed_alert_delivered_again_is_a_duplicate_while_its_time_is_accepted(
    core: Core, client: TestClient, clock: FakeClock
) -> None:
    """An alert with its own time is unique per alert: the same body again is a re-delivery
    (a relay's retry, a replay), not a new signal, for as long as the time check would let
    that time through (the strategy's maximum lag either side). It was traded again after
    30 s."""
    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    raw = body(quantity=1, time=clock().isoformat().replace("+00:00", "Z"))
    first = await post(client, path(url), raw)
    await core.jobs.drain()
    clock.advance(seconds=60)
    again = await post(client, path(url), raw)
    await core.jobs.drain()
    assert first[0] == 202
    assert again[0] == 200 and again[1]["duplicate"] is True, again
    assert again[1]["id"] == first[1]["id"]
    assert "time field included" in again[1]["message"]
    assert await count(core, OrderIntent) == 1
    # Past the maximum lag (300 s) the time check refuses it as stale instead.
    clock.advance(seconds=241)
    late = await post(client, path(url), raw)
    assert (late[0], late[1]["messageCode"]) == (400, "stale-signal")


async def test_a_stale_or_future_time_is_refused(
    core: Core, client: TestClient, clock: FakeClock
) -> None:
    url = await make_strategy(core)

    def at(seconds: float) -> str:
        return (clock() + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    stale = await post(client, path(url), body(time=at(-301)))
    fresh = await post(client, path(url), body(time=at(-299)))
    future = await post(client, path(url), body(time=at(400)))
    assert (stale[0], stale[1]["messageCode"]) == (400, "stale-signal")
    assert fresh[0] == 202
    assert (future[0], future[1]["messageCode"]) == (400, "signal-time-in-future")
    # An owner may tighten the window (300 s is the most allowed).
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, max_lag_seconds=60)
    tightened = await post(client, path(url), body(time=at(-120)))
    assert (tightened[0], tightened[1]["messageCode"]) == (400, "stale-signal")
    assert (await post(client, path(url), body(time=at(-50))))[0] == 202
    assert await count(core, Job) == 2


async def test_a_stale_or_future_time_is_told_in_readable_units_with_what_to_send(
    core: Core, client: TestClient, clock: FakeClock
) -> None:
    """Before: "The signal's time is 217929446 s old, …", and nothing said which time to send."""
    url = await make_strategy(core)

    def at(seconds: float) -> str:
        return (clock() + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    old = await post(client, path(url), body(time=at(-3 * 86400 - 5)))
    hour = await post(client, path(url), body(time=at(-3600)))
    future = await post(client, path(url), body(time=at(7200)))
    assert old[1]["message"].startswith("The signal's time is 3 days old, more than this")
    assert "{{timenow}}" in old[1]["message"]
    assert hour[1]["message"].startswith("The signal's time is 60 min old")
    assert future[1]["message"].startswith("The signal's time is 2 h in the future")


async def test_the_61st_signal_in_a_minute_gets_429(
    core: Core, client: TestClient, clock: FakeClock
) -> None:
    url = await make_strategy(core)
    statuses = []
    for i in range(61):
        statuses.append((await post(client, path(url), body(quantity=i + 1)))[0])
        clock.advance(seconds=0.5)
    assert statuses[:60] == [202] * 60
    resp = await client.post(path(url), data=body(quantity=99))
    assert statuses[60] == 429 and resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    assert (await resp.json())["messageCode"] == "rate-limited"
    assert await count(core, ReceivedSignal) == 60  # refused requests are not stored
    async with core.db.session() as s:  # only counted, for the owner's notice
        row = await s.get(Strategy, url.strategy.id)
        assert row is not None and row.over_rate == 2 and row.over_rate_since is not None
    clock.advance(seconds=31)  # the first signals leave the window
    assert (await post(client, path(url), body(quantity=100)))[0] == 202


async def test_refusals_carry_the_log_id_and_are_stored(core: Core, client: TestClient) -> None:
    url = await make_strategy(core)
    await core.strategies.configure(GUILD, OWNER, url.strategy.id, allowed_tickers=["AAPL"])
    status, answer = await post(client, path(url), body(ticker="MSFT"))
    assert (status, answer["messageCode"]) == (400, "unsupported-ticker")
    # Before: "The provided ticker symbol is not allowed …" — with {{ticker}} in the alert,
    # the sender could not tell which symbol, nor which setting to change.
    assert answer["message"] == (
        "The ticker MSFT is not allowed on this strategy. Its owner can add it with /strategy "
        "settings allowed_tickers."
    )
    async with core.db.session() as s:
        row = await s.get(ReceivedSignal, answer["logId"])
    assert row is not None and row.status == SignalStatus.REFUSED
    assert await count(core, Job) == 0


# -- fuzzing ------------------------------------------------------------------------------

FORMAT_FIELDS = [
    "ticker",
    "action",
    "sentiment",
    "quantity",
    "quantityType",
    "orderType",
    "limitPrice",
    "stopPrice",
    "timeInForce",
    "price",
    "signalPrice",
    "takeProfit",
    "stopLoss",
    "cancel",
    "time",
    "test",
    "extras",
    "trailAmount",
    "trailPercent",
    "extendedHours",
    "ignoreTradingWindows",
    "optionType",
    "expiration",
    "strikePrice",
]
WORDS = st.sampled_from(
    [
        "buy",
        "sell",
        "exit",
        "cancel",
        "add",
        "AAPL",
        "BTCUSD",
        "nq1!",
        "long",
        "short",
        "flat",
        "bullish",
        "limit",
        "market",
        "stop",
        "stop_limit",
        "gtc",
        "day",
        "opg",
        "1",
        "0",
        "-1",
        "1e999",
        "NaN",
        "2024-01-15T14:30:00Z",
        "fixed_quantity",
        "dollar_amount",
        "\u0000",
        "\ud800",
        "percent_of_position",
        "true",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | WORDS
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=10) | WORDS, inner, max_size=4)
    ),
    max_leaves=10,
)
OBJECTS = st.dictionaries(st.sampled_from(FORMAT_FIELDS) | st.text(max_size=8), VALUES, max_size=10)
NUMBERS = (
    st.integers(1, 1000)
    | st.floats(0.0001, 10000)
    | st.sampled_from(["12.5", "3", "0"])
    | st.integers(-5, 0)
)
PLAUSIBLE = {
    "sentiment": st.sampled_from(["bullish", "bearish", "flat", "long", "short", "up"]),
    "quantity": NUMBERS,
    "quantityType": st.sampled_from(
        [
            "fixed_quantity",
            "dollar_amount",
            "percent_of_equity",
            "percent_of_position",
            "risk_dollar_amount",
        ]
    ),
    "orderType": st.sampled_from(["market", "limit", "stop", "stop_limit", "trailing_stop"]),
    "trailAmount": NUMBERS,
    "trailPercent": NUMBERS,
    "limitPrice": NUMBERS,
    "stopPrice": NUMBERS,
    "price": NUMBERS,
    "signalPrice": NUMBERS,
    "timeInForce": st.sampled_from(["day", "gtc", "ioc", "fok", "opg"]),
    "takeProfit": st.fixed_dictionaries(
        {}, optional={"percent": NUMBERS, "amount": NUMBERS, "limitPrice": NUMBERS}
    ),
    "stopLoss": st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["stop", "stop_limit", "trailing_stop"]),
            "percent": NUMBERS,
            "amount": NUMBERS,
            "stopPrice": NUMBERS,
            "limitPrice": NUMBERS,
        },
    ),
    "cancel": st.booleans(),
    "test": st.booleans(),
    "extendedHours": st.booleans(),
    "extras": st.dictionaries(st.text(max_size=5), VALUES, max_size=3),
}
BODIES = (
    OBJECTS.map(lambda o: json.dumps(o).encode())
    | st.fixed_dictionaries(
        {"ticker": st.sampled_from(["AAPL", "MSFT", "BTCUSD", "ESZ26"]), "action": WORDS},
        optional={f: VALUES for f in FORMAT_FIELDS[2:]},
    ).map(lambda o: json.dumps(o).encode())
    | st.fixed_dictionaries(
        {
            "ticker": st.sampled_from(["AAPL", "NASDAQ:MSFT", "BTC/USD", "ESZ26", "$", ""]),
            "action": st.sampled_from(["buy", "sell", "exit", "cancel", "add"]),
        },
        optional=PLAUSIBLE,
    ).map(lambda o: json.dumps(o).encode())
    | st.tuples(
        st.sampled_from(["AAPL", "BTCUSD", "ESZ26"]),
        st.sampled_from(["buy", "sell", "exit", "cancel", "add"]),
        st.lists(st.sampled_from(sorted(PLAUSIBLE)), max_size=3, unique=True).flatmap(
            lambda keys: st.fixed_dictionaries({k: PLAUSIBLE[k] for k in keys})
        ),
    ).map(lambda t: json.dumps({"ticker": t[0], "action": t[1], **t[2]}).encode())
    | st.binary(max_size=200)
    | VALUES.map(lambda v: json.dumps(v).encode())
)
# JSON numbers no decimal can hold (1e99999999999999999999), or whose arithmetic overflows.
HUGE_NUMBERS = st.tuples(
    st.sampled_from([*FORMAT_FIELDS[2:], "extras"]),
    st.from_regex(r"-?[1-9](\.[0-9])?[eE][-+]?[0-9]{7,22}", fullmatch=True),
).map(
    lambda t: (
        f'{{"ticker": "AAPL", "action": "buy", "{t[0]}": '
        + (f'{{"n": {t[1]}}}' if t[0] == "extras" else t[1])
        + "}"
    ).encode()
)


@pytest.mark.first
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=BODIES | HUGE_NUMBERS | HUGE_NUMBERS)  # the rare numbers get a fair share
async def test_fuzzed_bodies_never_5xx_and_only_valid_ones_get_a_job(
    core: Core, client: TestClient, clock: FakeClock, raw: bytes
) -> None:
    url = getattr(core, "_fuzz_url", None)
    if url is None:
        url = await make_strategy(core)
        core._fuzz_url = url  # type: ignore[attr-defined]
    clock.advance(seconds=61)  # keep clear of the rate limit
    jobs_before = await count(core, Job)
    resp = await client.post(path(url), data=raw)
    answer = await resp.json()
    assert resp.status in (200, 202, 400), (resp.status, answer)
    event(f"HTTP {resp.status} {answer.get('messageCode', '')}")
    jobs_after = await count(core, Job)
    parsed = parse(raw)
    if resp.status == 202:
        assert isinstance(parsed, Signal)
        assert jobs_after == jobs_before + 1
        async with core.db.session() as s:
            row = await s.get(ReceivedSignal, answer["id"])
        assert row is not None and row.payload == parsed.to_record()
    else:
        assert jobs_after == jobs_before
        if resp.status == 400:
            assert answer["success"] is False and answer["messageCode"]
    assert await count(core, OrderIntent) == 0


async def test_the_served_app_logs_no_webhook_url(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL's path holds the strategy's secret: the runner every process serves with keeps
    no access log, whatever the log level."""
    url = await make_strategy(core)
    _, secret = split(url)
    runner = app_runner(core)
    await runner.setup()
    try:
        port = await start_site(runner, "127.0.0.1", 0)
        with caplog.at_level("DEBUG"):
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"http://127.0.0.1:{port}{path(url)}", data=body()) as resp,
            ):
                assert resp.status == 202
    finally:
        await runner.cleanup()
    assert secret not in caplog.text


async def test_answers_have_the_contracts_bodies(core: Core, client: TestClient) -> None:
    """Bodies and message codes are TradersPost's; statuses are those our security
    requirements name (202 stored, 200 duplicate, identical 401)."""
    spec = json.loads(SPEC.read_text())
    responses = spec["paths"]["/trading/webhook/{uuid}/{password}"]["post"]["responses"]
    ok_schema = responses["200"]["content"]["application/json"]["schema"]
    refused_schema = responses["400"]["content"]["application/json"]["schema"]
    codes = refused_schema["properties"]["messageCode"]["enum"]
    url = await make_strategy(core)
    strategy_id, secret = split(url)
    received = await post(client, path(url), body(quantity=5))
    duplicate = await post(client, path(url), body(quantity=5))
    wrong = await post(client, f"/webhook/{strategy_id}/{secret}x", body())
    refused = await post(client, path(url), body(action="hold"))
    assert (received[0], duplicate[0], wrong[0], refused[0]) == (202, 200, 401, 400)
    for _, answer in (received, duplicate):
        assert set(ok_schema["required"]) <= set(answer)
    assert duplicate[1]["duplicate"] is True and "duplicate" not in received[1]
    for _, answer in (wrong, refused):
        assert set(refused_schema["required"]) <= set(answer) and answer["messageCode"] in codes
    assert wrong[1]["messageCode"] == "invalid-password"
