"""Answers that are not the broker's usual ones: a placement's 2xx cut short, an HTML page from
a proxy in front of the API, a rate limit with the broker's own reset header, and an open
circuit breaker. Each must end in what the caller can act on safely: an order looked up (not
rejected), a transient failure (not a revoked connection), a wait (not a tight loop), and a
cancel that still goes out."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters import base
from adapters.alpaca import AlpacaAdapter
from adapters.base import AdapterContext, CircuitBreaker, StaticToken
from adapters.errors import (
    AuthorizationExpired,
    BrokerUnavailable,
    OrderStateUnknown,
    RateLimited,
)
from adapters.models import (
    AccountRef,
    AccountType,
    Environment,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from adapters.tradier import TradierAdapter
from emulators.alpaca import AlpacaEmulator
from emulators.common import Fault, Handler
from emulators.tradier import EmulatorTokenProvider, TradierEmulator

LIVE, PAPER = Environment.LIVE, Environment.PAPER
D = Decimal
# A 200 whose JSON stops mid-way: the order was made, the answer cannot say which.
CUT_SHORT = b'{"order": {"id": 12'
WAF_PAGE = "<html><head><title>403 Forbidden</title></head><body>403 Forbidden</body></html>"


def answer_instead(
    path: str, method: str, status: int, body: bytes | str, content_type: str, *, times: int = 1
) -> Any:
    """An emulator middleware: the request is processed as usual, then its answer is replaced
    (``times`` times) by ``status`` with ``body``, as a proxy or a cut connection would."""
    left = [times]

    @web.middleware
    async def replace(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if left[0] > 0 and request.method == method and re.search(path, request.path):
            left[0] -= 1
            data = body.encode() if isinstance(body, str) else body
            return web.Response(status=status, body=data, headers={"Content-Type": content_type})
        return response

    return replace


class RecordingTradierTokens(EmulatorTokenProvider):
    """Notes every token the adapter reports as refused for good."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.refusals: list[str] = []

    async def refused(self, token: str, reason: str) -> None:
        self.refusals.append(reason)


class RecordingStaticToken(StaticToken):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.refusals: list[str] = []

    async def refused(self, token: str, reason: str) -> None:
        self.refusals.append(reason)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def tradier_emu() -> TradierEmulator:
    """Not started: a test adds its middleware first (the app freezes them at start)."""
    return TradierEmulator(heartbeat_interval=3600)


def tradier(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    *,
    scope: str = "read market trade stream",
    **ctx: Any,
) -> tuple[TradierAdapter, RecordingTradierTokens, AccountRef]:
    grant = emu.issue_tokens("id-demo", LIVE, scope)
    tokens = RecordingTradierTokens(
        http,
        emu.refresh_url_for(LIVE),
        emu.client_id,
        emu.client_secret,
        grant["access_token"],
        grant.get("refresh_token"),
    )
    adapter = TradierAdapter(
        AdapterContext(session=http, api_urls={LIVE: emu.api_url(LIVE)}, tokens=tokens, **ctx)
    )
    acct = next(
        a
        for a in emu.accounts.values()
        if a.environment is LIVE and a.type == "margin" and a.user_id == "id-demo"
    )
    return adapter, tokens, AccountRef(acct.number, AccountType.MARGIN, LIVE)


async def alpaca(
    emu: AlpacaEmulator, http: aiohttp.ClientSession, **ctx: Any
) -> tuple[AlpacaAdapter, RecordingStaticToken, AccountRef]:
    tokens = RecordingStaticToken(emu.issue_token("demo"))
    adapter = AlpacaAdapter(
        AdapterContext(
            session=http,
            api_urls={e: emu.api_url(e) for e in (LIVE, PAPER)},
            tokens=tokens,
            extra={"data_url": emu.data_url},
            **ctx,
        )
    )
    [paper] = [a.ref() for a in await adapter.fetch_accounts() if a.environment is PAPER]
    return adapter, tokens, paper


def resting_limit(cid: str) -> OrderRequest:
    return OrderRequest(
        "F",
        Side.BUY,
        D(2),
        OrderType.LIMIT,
        limit_price=D(5),
        time_in_force=TimeInForce.GTC,
        client_order_id=cid,
    )


# -- a placement's answer cut short ------------------------------------------------------------


async def test_tradier_placement_answer_cut_short_is_looked_up_not_rejected(
    tradier_emu: TradierEmulator, http: aiohttp.ClientSession
):
    emu = tradier_emu
    emu.app.middlewares.append(
        answer_instead(r"/orders$", "POST", 200, CUT_SHORT, "application/json")
    )
    async with emu:
        adapter, _, margin = tradier(emu, http)
        with pytest.raises(OrderStateUnknown):
            await adapter.create_order(margin, resting_limit("CUT00001"))
        assert len(emu.orders) == 1
        # What the caller does next finds it by its tag.
        found = await adapter.fetch_order(margin, client_order_id="CUT00001")
        assert found.status is OrderStatus.OPEN


async def test_alpaca_placement_answer_cut_short_is_looked_up_not_a_crash(
    http: aiohttp.ClientSession,
):
    emu = AlpacaEmulator()
    emu.app.middlewares.append(
        answer_instead(r"/v2/orders$", "POST", 200, CUT_SHORT, "application/json")
    )
    async with emu:
        adapter, _, paper = await alpaca(emu, http)
        with pytest.raises(OrderStateUnknown):
            await adapter.create_order(paper, resting_limit("cut-a-1"))
        assert len(emu.broker.orders) == 1
        found = await adapter.fetch_order(paper, client_order_id="cut-a-1")
        assert found.limit_price == D(5)


async def test_alpaca_change_answer_cut_short_is_read_again_not_a_crash(
    http: aiohttp.ClientSession,
):
    emu = AlpacaEmulator()
    emu.app.middlewares.append(
        answer_instead(r"/v2/orders/[^/]+$", "PATCH", 200, CUT_SHORT, "application/json")
    )
    async with emu:
        adapter, _, paper = await alpaca(emu, http)
        placed = await adapter.create_order(paper, resting_limit("cut-a-2"))
        old = await adapter.fetch_order(paper, order_id=placed.id)
        with pytest.raises(BrokerUnavailable) as info:
            await adapter.replace_order(paper, old, OrderChange(limit_price=D(6)))
        assert info.value.maybe_sent is True  # the caller reads the order again
        assert len(emu.broker.orders) == 2  # the old order and its replacement
        assert (await adapter.fetch_order(paper, order_id=old.id)).replaced_by is not None


# -- an open circuit breaker pauses new orders only ----------------------------------------------


async def open_breaker(emu: TradierEmulator, adapter: TradierAdapter, margin: AccountRef) -> None:
    """Consecutive failing reads (one request each) until the breaker opens."""
    threshold = CircuitBreaker().threshold
    emu.faults.add(Fault(kind="status", path="/balances$", status=503, times=threshold))
    for _ in range(threshold):
        with pytest.raises(BrokerUnavailable):
            await adapter.fetch_balance(margin)
    assert adapter.breaker(LIVE).open


async def test_tradier_cancel_and_change_go_out_while_new_orders_are_paused(
    tradier_emu: TradierEmulator, http: aiohttp.ClientSession
):
    emu = tradier_emu
    async with emu:
        adapter, _, margin = tradier(emu, http, breakers={}, read_retries=1)
        working = await adapter.create_order(margin, resting_limit("BRK00001"))
        await open_breaker(emu, adapter, margin)
        changed = await adapter.replace_order(margin, working, OrderChange(limit_price=D("5.5")))
        assert changed.limit_price == D("5.5")
        await open_breaker(emu, adapter, margin)
        await adapter.cancel_order(margin, working.id)
        assert emu.orders[int(working.id)].status == "canceled"


async def test_tradier_new_orders_fail_fast_while_the_breaker_is_open(
    tradier_emu: TradierEmulator, http: aiohttp.ClientSession
):
    """Before anything is sent: the position read a Tradier order starts with must not probe
    (and close) the breaker on the order's behalf."""
    emu = tradier_emu
    async with emu:
        adapter, _, margin = tradier(emu, http, breakers={}, read_retries=1)
        await open_breaker(emu, adapter, margin)
        before = len(emu.requests)
        with pytest.raises(BrokerUnavailable, match="new orders are paused") as info:
            await adapter.create_order(margin, resting_limit("BRK00002"))
        assert info.value.maybe_sent is False
        assert len(emu.requests) == before and emu.orders == {}


# -- a rate limit waits for the broker's own reset -----------------------------------------------


async def test_tradier_429_is_not_retried_before_its_window_resets(
    tradier_emu: TradierEmulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
):
    waits: list[float] = []
    real_sleep = base.asyncio.sleep

    async def no_wait(delay: float, result: Any = None) -> Any:
        waits.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(base.asyncio, "sleep", no_wait)
    emu = tradier_emu
    async with emu:
        adapter, _, margin = tradier(emu, http)
        emu.set_rate_limit("standard", 1)
        await adapter.fetch_balance(margin)
        with pytest.raises(RateLimited) as info:
            await adapter.fetch_balance(margin)
        assert info.value.retry_after is not None and info.value.retry_after > 30
        assert len(emu.requests_to("/balances$")) == 2
        assert waits == []


# -- an HTML page in front of the API is not the broker refusing the token -----------------------


async def test_tradier_html_403_from_a_proxy_is_transient(
    tradier_emu: TradierEmulator, http: aiohttp.ClientSession
):
    emu = tradier_emu
    emu.app.middlewares.append(answer_instead("/balances$", "GET", 403, WAF_PAGE, "text/html"))
    async with emu:
        adapter, tokens, margin = tradier(emu, http)
        with pytest.raises(BrokerUnavailable) as info:
            await adapter.fetch_balance(margin)
        assert not isinstance(info.value, AuthorizationExpired)
        assert tokens.refusals == [] and tokens.refreshes == 0
        assert (await adapter.fetch_balance(margin)).equity > 0


async def test_tradier_s_own_403_still_means_the_token_is_refused(
    tradier_emu: TradierEmulator, http: aiohttp.ClientSession
):
    emu = tradier_emu
    async with emu:
        adapter, tokens, margin = tradier(emu, http, scope="market trade stream")
        with pytest.raises(AuthorizationExpired):
            await adapter.fetch_balance(margin)
        assert len(tokens.refusals) == 1


async def test_alpaca_html_403_from_a_proxy_is_transient(http: aiohttp.ClientSession):
    emu = AlpacaEmulator()
    emu.app.middlewares.append(
        answer_instead("/v2/positions$", "GET", 403, WAF_PAGE, "text/html; charset=utf-8")
    )
    async with emu:
        adapter, tokens, paper = await alpaca(emu, http)
        with pytest.raises(BrokerUnavailable) as info:
            await adapter.fetch_positions(paper)
        assert not isinstance(info.value, AuthorizationExpired)
        assert tokens.refusals == []
        assert [p.symbol for p in await adapter.fetch_positions(paper)] == ["AAPL"]
