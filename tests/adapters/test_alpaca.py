"""The Alpaca adapter against the Alpaca emulator: every verb, the mapping of Alpaca's quirks,
every vendor error to our type and message, token loss, rate limits, retries, a lost order
response, the stream, and zero OpenAPI violations for everything the adapter sends."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from adapters.alpaca import AlpacaAdapter, parse_time, replacement_client_order_id
from adapters.base import AdapterContext, CircuitBreaker, HttpResponse, StaticToken
from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerError,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotReplaceable,
    RateLimited,
    SymbolNotFound,
)
from adapters.models import (
    AccountRef,
    AccountType,
    AssetClass,
    Bracket,
    Environment,
    Order,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
    SubmissionHint,
    TimeInForce,
)
from adapters.registry import get_adapter_class
from emulators.alpaca import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT,
    AlpacaEmulator,
)
from emulators.common import Fault
from tests.contract.harness_alpaca import make_adapter, make_harness

LIVE, PAPER = Environment.LIVE, Environment.PAPER
D = Decimal


@pytest.fixture
async def emu() -> AsyncIterator[AlpacaEmulator]:
    emulator = AlpacaEmulator()
    await emulator.start()
    yield emulator
    # Everything any adapter test sent conformed to Alpaca's OpenAPI (defects fixed).
    assert emulator.spec_violations == []
    await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def adapter(emu: AlpacaEmulator, http: aiohttp.ClientSession) -> AlpacaAdapter:
    return make_adapter(emu, http, emu.issue_token("demo"))


@pytest.fixture
async def refs(adapter: AlpacaAdapter) -> dict[Environment, AccountRef]:
    return {a.environment: a.ref() for a in await adapter.fetch_accounts()}


@pytest.fixture
def paper(refs: dict[Environment, AccountRef]) -> AccountRef:
    return refs[PAPER]


def order(symbol: str, qty: str, side: Side = Side.BUY, **kw: Any) -> OrderRequest:
    return OrderRequest(symbol, side, D(qty), **kw)


def posts(emu: AlpacaEmulator) -> int:
    return len(emu.requests_to(r"/v2/orders$", "POST"))


async def until(check: Callable[[], bool]) -> None:
    """Wait for a state change in the emulator (synchronisation, not a timing assertion)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


# -- declarations -----------------------------------------------------------------------------


def test_declarations() -> None:
    cls = get_adapter_class("alpaca")
    assert cls is AlpacaAdapter
    caps = cls.capabilities
    assert caps.can_trade(AccountType.CASH, AssetClass.CRYPTO)
    assert caps.can_trade(AccountType.MARGIN, AssetClass.EQUITY)
    assert caps.account_types_for(AssetClass.FUTURE) == []
    assert OrderType.TRAILING_STOP in caps.order_types_for(AssetClass.EQUITY)
    assert caps.order_types_for(AssetClass.CRYPTO) == {
        OrderType.MARKET,
        OrderType.LIMIT,
        OrderType.STOP_LIMIT,
    }
    assert caps.time_in_force[AssetClass.CRYPTO] == {TimeInForce.GTC, TimeInForce.IOC}
    assert AssetClass.EQUITY in caps.fractional and caps.brackets and caps.order_stream
    assert {(r.bucket, r.requests, r.seconds) for r in caps.rate_limits} == {
        ("trading", 200, 60.0),
        ("data", 200, 60.0),
    }
    spec = cls.oauth
    assert spec is not None
    assert spec.authorize_url == "https://app.alpaca.markets/oauth/authorize"
    assert spec.token_url == "https://api.alpaca.markets/oauth/token"
    assert spec.scopes == ("trading", "data") and "account:write" not in spec.scopes
    assert spec.pkce is False and spec.revoke_url is None
    assert cls.default_api_urls == {
        LIVE: "https://api.alpaca.markets",
        PAPER: "https://paper-api.alpaca.markets",
    }
    assert cls.default_data_url == "https://data.alpaca.markets"


def test_parse_time_keeps_nanosecond_and_offset_stamps() -> None:
    assert parse_time("2022-02-04T16:53:29.53427917Z") == datetime(
        2022, 2, 4, 16, 53, 29, 534279, tzinfo=UTC
    )
    assert parse_time("2024-01-02T09:30:00-05:00") == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    assert parse_time(None) is None and parse_time("garbage") is None


async def test_oauth_spec_drives_authlib_through_the_emulator(
    emu: AlpacaEmulator,
    http: aiohttp.ClientSession,
) -> None:
    spec = AlpacaAdapter.oauth
    assert spec is not None
    client = AsyncOAuth2Client(
        client_id=DEFAULT_CLIENT_ID,
        client_secret=DEFAULT_CLIENT_SECRET,
        redirect_uri=DEFAULT_REDIRECT,
        scope=" ".join(spec.scopes),
        token_endpoint_auth_method=spec.client_auth,
    )
    url, state = client.create_authorization_url(emu.authorize_url, env="paper")
    async with http.get(url) as r:
        page = await r.text()
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    assert hidden["env"] == "paper" and hidden["scope"] == "trading data"
    async with http.post(
        emu.authorize_url,
        data={**hidden, "user_id": "demo", "decision": "approve"},
        allow_redirects=False,
    ) as r:
        callback = r.headers["Location"]
    token = await client.fetch_token(emu.token_url, authorization_response=callback, state=state)
    await client.aclose()
    assert token["token_type"] == "bearer" and "refresh_token" not in token
    adapter = make_adapter(emu, http, token["access_token"])
    accounts = await adapter.fetch_accounts()
    # Authorized for paper only: the live host refuses the token and is skipped.
    assert [(a.environment, a.type) for a in accounts] == [(PAPER, AccountType.MARGIN)]


# -- reads -----------------------------------------------------------------------------------


async def test_fetch_accounts_reads_each_host(
    adapter: AlpacaAdapter, emu: AlpacaEmulator, http: aiohttp.ClientSession
) -> None:
    accounts = await adapter.fetch_accounts()
    assert [(a.id, a.type, a.environment, a.status) for a in accounts] == [
        ("611093251", AccountType.MARGIN, LIVE, "active"),
        ("PA3KX7T9QW2M", AccountType.MARGIN, PAPER, "active"),
    ]
    assert accounts[0].info["multiplier"] == "2" and accounts[0].masked == "••••3251"
    cash = make_adapter(emu, http, emu.issue_token("casey", env="live"))
    [only] = await cash.fetch_accounts()
    assert (only.type, only.environment) == (AccountType.CASH, LIVE)
    emu.account("casey", "live").trading_blocked = True
    assert (await cash.fetch_accounts())[0].status == "blocked"


async def test_fetch_balance(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    balance = await adapter.fetch_balance(paper)
    assert balance.account_id == paper.id and balance.currency == "USD"
    assert balance.cash == D(100000) and balance.equity == D(101900)
    assert balance.market_value == D(1900) and balance.buying_power == D(405700)
    assert isinstance(balance.info["cash"], str)
    # Day P&L from the equity at the last close: 1,900 since the account opened with cash.
    assert balance.day_pnl == D(1900)
    emu.close_market()  # the close sets last_equity
    assert (await adapter.fetch_balance(paper)).day_pnl == D(0)
    stale = AccountRef("PA0000000000", AccountType.MARGIN, PAPER)
    with pytest.raises(BrokerError, match=r"now reaches account ••••QW2M.*/accounts"):
        await adapter.fetch_balance(stale)


async def test_crypto_is_checked_against_cash_not_margin(
    adapter: AlpacaAdapter, paper: AccountRef
) -> None:
    """Crypto is "traded using cash only" in a margin account [spec Account]: a preview
    against the 4x buying power let through orders Alpaca refuses."""
    balance = await adapter.fetch_balance(paper)
    cash_only = D(balance.info["non_marginable_buying_power"])
    assert cash_only < balance.buying_power
    assert await adapter.fetch_buying_power(paper, AssetClass.CRYPTO) == cash_only
    assert await adapter.fetch_buying_power(paper, AssetClass.EQUITY) == balance.buying_power


def test_a_calculated_order_with_nothing_filled_is_not_partly_filled(
    adapter: AlpacaAdapter,
) -> None:
    """ "calculated": done for the day, settlement pending. With no fill it is not partly
    filled (it resumes next session, as done_for_day does)."""
    body = {
        "id": "o1",
        "client_order_id": "c1",
        "symbol": "AAPL",
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "limit_price": "100",
        "qty": "10",
        "status": "calculated",
        "created_at": "2026-11-27T15:00:00Z",
    }
    for filled, status in (("0", OrderStatus.OPEN), ("4", OrderStatus.PARTIALLY_FILLED)):
        order = adapter.map_order({**body, "filled_qty": filled}, "PA1")
        assert (order.status, order.filled_quantity) == (status, D(filled))


async def test_fetch_positions_maps_crypto_and_shorts(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    account = emu.account("demo", "paper")
    emu.set_position(account, "BTC/USD", D("0.25"), D(90000))
    emu.set_position(account, "F", D(-20), D("10.5"))
    positions = {p.symbol: p for p in await adapter.fetch_positions(paper)}
    assert set(positions) == {"AAPL", "BTC/USD", "F"}
    btc = positions["BTC/USD"]
    assert (btc.asset_class, btc.quantity, btc.average_price) == (
        AssetClass.CRYPTO,
        D("0.25"),
        D(90000),
    )
    assert btc.info["symbol"] == "BTCUSD"
    # However the member writes the pair, it is the symbol the position is read back with:
    # a sell of held coins is a closing order, not a new short.
    for typed in ("BTCUSD", "BTC-USD", "btc/usd"):
        held = await adapter.fetch_position(paper, adapter.canonical_symbol(typed))
        assert held is not None and held.quantity == D("0.25"), typed
    assert adapter.canonical_symbol("brk.b") == "BRK.B"
    short = positions["F"]
    assert short.quantity == D(-20) and short.side == "short"
    assert short.market_value == D(-200) and short.unrealized_pnl == D(10)
    aapl = positions["AAPL"]
    assert (aapl.market_price, aapl.cost_basis, aapl.unrealized_pnl) == (
        D(190),
        D("1802.5"),
        D("97.5"),
    )


async def test_fetch_quote(adapter: AlpacaAdapter, emu: AlpacaEmulator) -> None:
    emu.set_quote("NVDA", D("131.10"), D("131.12"), D("131.11"))
    quote = await adapter.fetch_quote("nvda")
    assert (quote.symbol, quote.bid, quote.ask, quote.last) == (
        "NVDA",
        D("131.1"),
        D("131.12"),
        D("131.11"),
    )
    assert quote.time.tzinfo is not None
    crypto = await adapter.fetch_quote("ETH-USD")
    assert crypto.symbol == "ETH/USD" and crypto.ask == D("3400.01")
    with pytest.raises(SymbolNotFound, match="no market data for ZZZZ"):
        await adapter.fetch_quote("ZZZZ")
    with pytest.raises(AssetClassNotSupported, match="no futures"):
        await adapter.fetch_quote("ESZ5")
    assert not emu.requests_to("ESZ5")


async def test_data_scope_missing(emu: AlpacaEmulator, http: aiohttp.ClientSession) -> None:
    adapter = make_adapter(emu, http, emu.issue_token("demo", scope="trading"))
    with pytest.raises(AuthorizationExpired, match="allow market data access"):
        await adapter.fetch_quote("AAPL")


# -- orders ------------------------------------------------------------------------------------


async def test_market_order_lifecycle(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    placed = await adapter.create_order(paper, order("MSFT", "3", client_order_id="tc1"))
    assert placed.status is OrderStatus.PENDING and placed.client_order_id == "tc1"
    assert (placed.account_id, placed.symbol, placed.quantity) == (paper.id, "MSFT", D(3))
    assert placed.created_at is not None and placed.info["status"] == "pending_new"
    by_id = await adapter.fetch_order(paper, order_id=placed.id)
    by_cid = await adapter.fetch_order(paper, client_order_id="tc1")
    assert by_id.id == by_cid.id == placed.id
    assert by_id.status is OrderStatus.FILLED
    assert by_id.filled_quantity == D(3) and by_id.average_fill_price == D("420.01")
    history = await adapter.fetch_orders(paper)
    assert [o.id for o in history] == [placed.id]
    assert await adapter.fetch_open_orders(paper) == []
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(paper, client_order_id="nope")
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(paper, order_id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(OrderNotFound, match="Copy the id from /orders"):
        await adapter.fetch_order(paper, order_id="not-an-id")
    sent = emu.requests_to(r"/v2/orders$", "POST")[0]
    assert b'"qty": "3"' in sent.body and b'"client_order_id": "tc1"' in sent.body


async def test_generated_client_order_id(adapter: AlpacaAdapter, paper: AccountRef) -> None:
    request = order("F", "1")
    placed = await adapter.create_order(paper, request)
    assert request.client_order_id and re.fullmatch(r"[0-9a-f]{22}", request.client_order_id)
    assert placed.client_order_id == request.client_order_id


async def test_limit_order_rests_partially_fills_and_cancels(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
) -> None:
    placed = await adapter.create_order(
        paper,
        order(
            "TSLA",
            "10",
            order_type=OrderType.LIMIT,
            limit_price=D("200"),
            time_in_force=TimeInForce.GTC,
        ),
    )
    [working] = await adapter.fetch_open_orders(paper)
    assert working.status is OrderStatus.OPEN and working.limit_price == D(200)
    assert working.time_in_force is TimeInForce.GTC
    emu.fill(placed.id, D(4), D("199.5"))
    [working] = await adapter.fetch_open_orders(paper)
    assert working.status is OrderStatus.PARTIALLY_FILLED
    assert working.remaining_quantity == D(6)
    await adapter.cancel_order(paper, placed.id)
    done = await adapter.fetch_order(paper, order_id=placed.id)
    assert done.status is OrderStatus.CANCELLED and done.filled_quantity == D(4)
    with pytest.raises(OrderNotCancelable, match=r"\(it is canceled\)"):
        await adapter.cancel_order(paper, placed.id)
    with pytest.raises(OrderNotFound):
        await adapter.cancel_order(paper, "00000000-0000-4000-8000-000000000000")


async def test_history_since_and_limit(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    first = await adapter.create_order(paper, order("F", "1"))
    second = await adapter.create_order(paper, order("F", "2"))
    third = await adapter.create_order(paper, order("F", "3"))
    assert [o.id for o in await adapter.fetch_orders(paper, limit=2)] == [third.id, second.id]
    two_hours_ago = time.time() - 7200
    placed = emu.order(first.id)  # placed and filled two hours ago
    placed.submitted_at = placed.updated_at = placed.filled_at = two_hours_ago
    since = datetime.now(UTC) - timedelta(hours=1)
    assert [o.id for o in await adapter.fetch_orders(paper, since=since)] == [third.id, second.id]
    naive = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None)  # read as UTC
    assert len(await adapter.fetch_orders(paper, since=naive)) == 3


async def test_history_is_of_orders_that_ended_in_the_window(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    """/history days:1 left out a GTC order placed three days ago and filled today: Alpaca's
    `after` is by submission time (GET /v2/orders: "only ones submitted after this
    timestamp"); TradeStation's history is by close time, as /history means."""
    placed = await adapter.create_order(
        paper,
        OrderRequest(
            "F",
            Side.BUY,
            D(1),
            order_type=OrderType.LIMIT,
            limit_price=D("1.00"),
            time_in_force=TimeInForce.GTC,
        ),
    )
    three_days_ago = time.time() - 3 * 86400
    emu.order(placed.id).submitted_at = emu.order(placed.id).created_at = three_days_ago
    emu.fill(placed.id)  # today
    history = await adapter.fetch_orders(paper, since=datetime.now(UTC) - timedelta(days=1))
    assert [o.id for o in history] == [placed.id]


async def test_crypto_and_fractional_orders(adapter: AlpacaAdapter, paper: AccountRef) -> None:
    coin = await adapter.create_order(
        paper, order("BTCUSD", "0.015", time_in_force=TimeInForce.GTC)
    )
    assert coin.symbol == "BTC/USD" and coin.asset_class is AssetClass.CRYPTO
    assert coin.quantity == D("0.015")
    share = await adapter.create_order(paper, order("AAPL", "0.5"))
    assert share.quantity == D("0.5")
    positions = {p.symbol: p.quantity for p in await adapter.fetch_positions(paper)}
    assert positions == {"AAPL": D("10.5"), "BTC/USD": D("0.015")}


async def test_quantities_to_nine_decimals_are_declared_and_closed(
    adapter: AlpacaAdapter, paper: AccountRef
) -> None:
    # /close of 0.001049999 BTC: what build_request allows comes from the capabilities.
    caps = AlpacaAdapter.capabilities
    assert caps.max_quantity_decimals(AssetClass.CRYPTO) == 9
    assert caps.max_quantity_decimals(AssetClass.EQUITY) == 9
    held = D("0.001049999")
    await adapter.create_order(paper, order("BTCUSD", str(held), time_in_force=TimeInForce.GTC))
    closed = await adapter.create_order(
        paper, order("BTC/USD", str(held), Side.SELL, time_in_force=TimeInForce.GTC)
    )
    assert closed.quantity == held and closed.status is not OrderStatus.REJECTED
    with pytest.raises(InvalidOrder, match="at most 9 decimals"):
        adapter.check_order(paper, order("BTCUSD", "0.0010499991", time_in_force=TimeInForce.GTC))


async def test_a_share_class_is_one_stock_however_typed(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    # Alpaca's assets write Berkshire's class B BRK.B; pairs keep their slash.
    emu.add_asset("BRK.B", exchange="NYSE", price=D(450))
    assert adapter.canonical_symbol("BRK-B") == adapter.canonical_symbol("BRK/B") == "BRK.B"
    assert adapter.canonical_symbol("BTC-USD") == "BTC/USD"
    assert adapter.vendor_symbol("BRK-B", AssetClass.EQUITY) == "BRK.B"
    await adapter.create_order(paper, order("BRK-B", "2"))
    held = await adapter.fetch_position(paper, adapter.canonical_symbol("BRK-B"))
    assert held is not None and held.symbol == "BRK.B" and held.quantity == 2


async def test_sub_penny_stock_prices_are_refused_before_the_card(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    # As at TradeStation and Tradier: the preview's check_order refuses it, not Confirm.
    with pytest.raises(InvalidOrder, match=r"limit price 150\.001 has too many decimals"):
        adapter.check_order(
            paper, order("AAPL", "1", order_type=OrderType.LIMIT, limit_price=D("150.001"))
        )
    with pytest.raises(InvalidOrder, match=r"stop-loss price 180\.001"):
        await adapter.create_order(
            paper, order("AAPL", "1", bracket=Bracket(take_profit=D(200), stop_loss=D("180.001")))
        )
    assert posts(emu) == 0
    # Crypto prices are not stocks': finer steps go.
    adapter.check_order(
        paper,
        order(
            "BTCUSD",
            "0.1",
            order_type=OrderType.LIMIT,
            limit_price=D("60000.005"),
            time_in_force=TimeInForce.GTC,
        ),
    )


async def test_market_closed_orders_wait_as_pending(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    emu.close_market()
    placed = await adapter.create_order(paper, order("AMZN", "1"))
    got = await adapter.fetch_order(paper, order_id=placed.id)
    assert got.status is OrderStatus.PENDING and got.info["status"] == "accepted"
    emu.open_market()
    assert (await adapter.fetch_order(paper, order_id=placed.id)).status is OrderStatus.FILLED


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
async def test_brackets_both_sides(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator, side: Side
) -> None:
    buy = side is Side.BUY
    bracket = Bracket(
        take_profit=D(200) if buy else D(180),
        stop_loss=D(185) if buy else D(195),
        stop_loss_limit=D("184.5") if buy else None,
    )
    placed = await adapter.create_order(
        paper, order("AAPL", "5", side, bracket=bracket, time_in_force=TimeInForce.GTC)
    )
    sent = emu.requests_to(r"/v2/orders$", "POST")[-1].body
    assert b'"order_class": "bracket"' in sent
    legs = placed.info["legs"]
    assert [leg["type"] for leg in legs] == ["limit", "stop_limit" if buy else "stop"]
    assert all(leg["side"] == ("sell" if buy else "buy") for leg in legs)
    open_orders = await adapter.fetch_open_orders(paper)
    assert len(open_orders) == 2  # the exits work once the entry filled
    exit_price = D("200.10") if buy else D("179.80")
    emu.set_quote("AAPL", exit_price, exit_price + D("0.02"))
    assert await adapter.fetch_open_orders(paper) == []
    history = {
        o.order_type: o.status
        for o in await adapter.fetch_orders(paper, limit=10)
        if o.id != placed.id
    }
    assert history[OrderType.LIMIT] is OrderStatus.FILLED
    assert OrderStatus.CANCELLED in history.values()


async def test_a_trailing_stop_follows_the_high_and_sells_when_the_price_falls_back(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    emu.set_quote("AAPL", D("199.99"), D("200.01"), D("200"))
    await adapter.create_order(paper, order("AAPL", "4"))
    placed = await adapter.create_order(
        paper,
        order(
            "AAPL",
            "4",
            Side.SELL,
            order_type=OrderType.TRAILING_STOP,
            trail_percent=D(5),
            time_in_force=TimeInForce.GTC,
        ),
    )
    sent = emu.requests_to(r"/v2/orders$", "POST")[-1].body
    assert b'"type": "trailing_stop"' in sent and b'"trail_percent": "5"' in sent
    assert placed.order_type is OrderType.TRAILING_STOP and placed.stop_price == D(190)
    assert (placed.trail_percent, placed.trail_amount) == (D(5), None)
    emu.set_quote("AAPL", D("219.99"), D("220.01"), D("220"))  # up: the stop follows
    [working] = await adapter.fetch_open_orders(paper)
    assert (working.stop_price, working.info["hwm"]) == (D(209), "220")
    emu.set_quote("AAPL", D("208.99"), D("209.01"), D("209"))  # back to the stop: it sells
    assert await adapter.fetch_open_orders(paper) == []
    [filled] = [o for o in await adapter.fetch_orders(paper, limit=5) if o.id == placed.id]
    assert filled.status is OrderStatus.FILLED and filled.average_fill_price == D("208.99")


async def test_one_exit_is_one_triggers_other(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    await adapter.create_order(paper, order("AAPL", "1", bracket=Bracket(stop_loss=D(150))))
    sent = emu.requests_to(r"/v2/orders$", "POST")[-1].body
    assert b'"order_class": "oto"' in sent and b"take_profit" not in sent


# -- checks before sending ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (order("ESZ5", "1"), AssetClassNotSupported, "Alpaca does not offer futures trading"),
        (order("/MES", "1"), AssetClassNotSupported, "does not offer futures"),
        (order("BTC/USD", "1"), InvalidOrder, "take time in force gtc, ioc, not day"),
        (
            order(
                "BTC/USD",
                "1",
                order_type=OrderType.STOP,
                stop_price=D(99000),
                time_in_force=TimeInForce.GTC,
            ),
            InvalidOrder,
            "allowed: limit, market, stop_limit",
        ),
        (order("AAPL", "0.5", time_in_force=TimeInForce.GTC), InvalidOrder, "day orders only"),
        (
            order("AAPL", "0.5", bracket=Bracket(take_profit=D(250), stop_loss=D(150))),
            InvalidOrder,
            "whole number of shares for a bracket",
        ),
        (
            order(
                "ETH/USD", "1", time_in_force=TimeInForce.GTC, bracket=Bracket(take_profit=D(5000))
            ),
            InvalidOrder,
            "no take-profit/stop-loss brackets for crypto",
        ),
        (order("AAPL", "1", bracket=Bracket()), InvalidOrder, "needs a take-profit price"),
        (
            order(
                "AAPL",
                "1",
                bracket=Bracket(D(250), D(150), stop_loss_trail_percent=D(2)),
            ),
            InvalidOrder,
            "Alpaca takes no trailing stop-loss in a take-profit/stop-loss bracket",
        ),
        (
            order("AAPL", "1", time_in_force=TimeInForce.IOC, bracket=Bracket(take_profit=D(250))),
            InvalidOrder,
            "day or gtc",
        ),
        (order("AAPL", "1", order_type=OrderType.LIMIT), InvalidOrder, "needs a limit price"),
        (order("AAPL", "0"), InvalidOrder, "more than zero"),
        (
            order("BTC/USD", "0.0000000001", time_in_force=TimeInForce.GTC),
            InvalidOrder,
            "at most 9 decimals",
        ),
        (
            order("AAPL", "1", order_type=OrderType.LIMIT, limit_price=D(-1)),
            InvalidOrder,
            "Prices must be more than zero",
        ),
        (order("AAPL", "1", client_order_id="has spaces"), InvalidOrder, "client order id"),
    ],
)
async def test_refused_before_sending(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
    request_: OrderRequest,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        await adapter.create_order(paper, request_)
    assert posts(emu) == 0


# -- Alpaca's rejections -----------------------------------------------------------------------


async def _reject(
    adapter: AlpacaAdapter,
    ref: AccountRef,
    request: OrderRequest,
    error: type[BrokerError],
    message: str,
    code: str | None,
) -> BrokerError:
    with pytest.raises(error, match=message) as info:
        await adapter.create_order(ref, request)
    assert info.value.vendor_code == code
    return info.value


async def test_vendor_rejections_become_our_errors(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
    http: aiohttp.ClientSession,
) -> None:
    err = await _reject(
        adapter,
        paper,
        order("SPY", "1000"),
        InsufficientBuyingPower,
        r"needs about \$590,010\.00; the account has \$405,700\.00.*/balances",
        "40310000",
    )
    assert type(err) is InsufficientBuyingPower
    await _reject(
        adapter,
        paper,
        order("ZZZZNOTREAL", "1"),
        SymbolNotFound,
        r"Alpaca does not know ZZZZNOTREAL\. Check the ticker",
        "42210000",
    )
    # More than the 10 held, and no other order holds any: a flip, which Alpaca never takes.
    err = await _reject(
        adapter,
        paper,
        order("AAPL", "12", Side.SELL),
        InvalidOrder,
        r"You asked to sell 12; 10 AAPL can be sold now\. You hold 10 AAPL; Alpaca cannot sell "
        r"and go short in one order\. Sell 10 first, then sell short the rest\.",
        "40310000",
    )
    assert "open orders" not in err.user_message
    await _reject(
        adapter,
        paper,
        order("MSFT", "0.5", Side.SELL),
        InvalidOrder,
        "cannot sell short a fractional quantity",
        "42210000",
    )
    await _reject(
        adapter,
        paper,
        order("EIDO", "3", Side.SELL),
        InvalidOrder,
        "no shares of this symbol to borrow",
        "42210000",
    )
    await _reject(
        adapter,
        paper,
        order("AAPL", "1", order_type=OrderType.STOP, stop_price=D(150)),
        InvalidOrder,
        r"wrong side of the market \(stop 150, market 190\)",
        "42210000",
    )
    # Alpaca's own sub-penny refusals, should one get past check_order (it refuses them now).
    with pytest.raises(InvalidOrder, match=r"The limit price 189\.999 is refused: .*whole cents"):
        await adapter._create_order(
            paper, order("AAPL", "1", order_type=OrderType.LIMIT, limit_price=D("189.999"))
        )
    # A leg's refusal names take_profit: it was told as a take-profit on the wrong side.
    with pytest.raises(InvalidOrder, match=r"The take-profit price 200\.005 is refused") as e:
        await adapter._create_order(
            paper, order("AAPL", "1", bracket=Bracket(take_profit=D("200.005"), stop_loss=D(180)))
        )
    assert e.value.vendor_code == "42210000"
    await _reject(
        adapter,
        paper,
        order("AAPL", "1", bracket=Bracket(take_profit=D(150), stop_loss=D(100))),
        InvalidOrder,
        r"take_profit\.limit_price must be >= base_price",
        "42210000",
    )
    await _reject(
        adapter,
        paper,
        order("ETH/USD", "5", Side.SELL, time_in_force=TimeInForce.GTC),
        InvalidOrder,
        "Not enough to sell",
        "40310000",
    )
    # Alpaca's own refusal, should a fraction reach it (its asset lookup failed, say).
    with pytest.raises(InvalidOrder, match=r"does not take fractional quantities of BRK\.A") as e:
        await adapter._create_order(paper, order("BRK.A", "0.01"))
    assert e.value.vendor_code == "42210000"
    cash_adapter = make_adapter(emu, http, emu.issue_token("casey", env="live"))
    [cash] = [a.ref() for a in await cash_adapter.fetch_accounts()]
    await _reject(
        cash_adapter,
        cash,
        order("F", "5", Side.SELL),
        InvalidOrder,
        "cannot sell short",
        "40310000",
    )
    emu.account("casey", "live").trading_blocked = True
    await _reject(
        cash_adapter,
        cash,
        order("F", "1"),
        BrokerError,
        "does not let this account trade",
        "40310000",
    )


async def test_a_sell_of_shares_other_orders_hold_says_so_and_only_then(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    """Alpaca's "insufficient qty available" was always told as shares held by other open
    orders; only the position tells whether they are the reason."""
    held_back = await adapter.create_order(
        paper, order("AAPL", "4", Side.SELL, order_type=OrderType.LIMIT, limit_price=D(999))
    )
    err = await _reject(
        adapter,
        paper,
        order("AAPL", "8", Side.SELL),
        InvalidOrder,
        r"You asked to sell 8; 6 AAPL can be sold now\. Quantities held by other open orders "
        r"do not count: lower the quantity, or cancel those orders in /orders\.",
        "40310000",
    )
    assert "sell short" not in err.user_message
    # A change (PATCH) refused so is told the same way (the emulator checks no replaced
    # sell, so Alpaca's refusal of a new one stands in): 12 is more than the 10 held.
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/v2/orders/.+",
            method="PATCH",
            times=1,
            status=403,
            body={
                "available": "10",
                "code": 40310000,
                "message": "insufficient qty available for order (requested: 12, available: 10)",
                "symbol": "AAPL",
            },
        )
    )
    with pytest.raises(InvalidOrder, match=r"Sell 10 first, then sell short the rest") as info:
        await adapter.replace_order(paper, held_back, OrderChange(quantity=D(12)))
    assert "open orders" not in info.value.user_message


async def test_wash_trade(adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator) -> None:
    emu.close_market()
    await adapter.create_order(paper, order("AAPL", "1"))
    await _reject(
        adapter,
        paper,
        order("AAPL", "1", Side.SELL),
        InvalidOrder,
        r"potential wash trade \(opposite side market/stop order exists\)",
        "40310000",
    )


async def test_pattern_day_trading(emu: AlpacaEmulator, http: aiohttp.ClientSession) -> None:
    emu.add_account("pdt", "paper", cash=D(20000), multiplier="2").daytrade_count = 3
    adapter = make_adapter(emu, http, emu.issue_token("pdt", env="paper"), envs=(PAPER,))
    [ref] = [a.ref() for a in await adapter.fetch_accounts()]
    await adapter.create_order(ref, order("F", "10"))
    err = await _reject(
        adapter,
        ref,
        order("F", "10", Side.SELL),
        BrokerError,
        "pattern day trading protection.*3 day trades",
        "40310000",
    )
    assert type(err) is BrokerError


async def test_trading_scope_missing(emu: AlpacaEmulator, http: aiohttp.ClientSession) -> None:
    adapter = make_adapter(emu, http, emu.issue_token("demo", scope="data"))
    [_, paper] = [a.ref() for a in await adapter.fetch_accounts()]
    with pytest.raises(AuthorizationExpired, match="approve trading access"):
        await adapter.create_order(paper, order("F", "1"))


# -- tokens, limits, retries, lost responses ----------------------------------------------------


async def test_lost_token_means_relink_and_no_refresh(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
) -> None:
    emu.oauth.expire_access_tokens()
    with pytest.raises(AuthorizationExpired, match="/connect"):
        await adapter.fetch_positions(paper)
    with pytest.raises(AuthorizationExpired):
        await adapter.fetch_accounts()
    with pytest.raises(AuthorizationExpired):
        await adapter.create_order(paper, order("F", "1"))
    assert emu.oauth.refresh_requests == 0 and posts(emu) == 1  # refused, nothing placed
    assert emu.broker.orders == {}


async def test_a_401_after_a_new_token_is_still_authorization_expired(
    emu: AlpacaEmulator,
    http: aiohttp.ClientSession,
) -> None:
    class Rotating(StaticToken):
        """A provider that hands out another (also dead) token once."""

        async def refresh(self, rejected_token: str) -> str:
            self._token = "also-dead"
            return self._token

    adapter = AlpacaAdapter(
        AdapterContext(
            session=http,
            api_urls={PAPER: emu.api_url(PAPER)},
            tokens=Rotating("dead"),
            extra={"data_url": emu.data_url},
        )
    )
    with pytest.raises(AuthorizationExpired, match="Alpaca links do not renew"):
        await adapter.fetch_accounts()


async def test_read_retries_a_429_after_the_window_resets(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
) -> None:
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/v2/positions$",
            times=1,
            status=429,
            body={"code": 42910000, "message": "rate limit exceeded"},
            headers={"X-RateLimit-Reset": str(int(time.time()))},
        )
    )
    assert len(await adapter.fetch_positions(paper)) == 1
    assert len(emu.requests_to(r"/v2/positions$")) == 2


async def test_rate_limited_when_retries_run_out(http: aiohttp.ClientSession) -> None:
    async with AlpacaEmulator(rate_limit=1, rate_window=60.0) as emu:
        assert isinstance(emu, AlpacaEmulator)
        adapter = make_adapter(emu, http, emu.issue_token("demo"), envs=(PAPER,), read_retries=1)
        [paper] = [a.ref() for a in await adapter.fetch_accounts()]
        # Its window resets in about a minute: said, not waited out inside the call.
        with pytest.raises(RateLimited, match=r"200 requests a minute.*Wait \d+ seconds") as info:
            await adapter.fetch_positions(paper)
        assert info.value.vendor_code == "42910000"
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 61
        with pytest.raises(RateLimited):  # an order is refused, not queued or retried
            await adapter.create_order(paper, order("F", "1"))
        assert emu.rate_limited == 2 and emu.broker.orders == {}


async def test_server_error_on_read_is_retried(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/v2/orders$",
            method="GET",
            times=2,
            status=503,
            body={"message": "service unavailable"},
        )
    )
    assert await adapter.fetch_open_orders(paper) == []
    assert len(emu.requests_to(r"/v2/orders$", "GET")) == 3


async def test_server_error_on_create_is_not_retried(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/v2/orders$",
            method="POST",
            times=1,
            status=500,
            body={"code": 50010000, "message": "internal server error"},
        )
    )
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(paper, order("F", "1", client_order_id="boom1"))
    assert info.value.maybe_sent is True and posts(emu) == 1


async def test_req19_consecutive_5xx_open_the_breaker_orders_fail_fast_and_reads_go_on(
    emu: AlpacaEmulator, http: aiohttp.ClientSession
) -> None:
    """K consecutive 5xx open the breaker for the broker: every connection's new orders then
    fail fast, never reaching it, while reads (what the reconciler does) still probe."""
    breakers: dict[str, CircuitBreaker] = {}
    one = make_adapter(emu, http, emu.issue_token("demo"), breakers=breakers, read_retries=1)
    other = make_adapter(emu, http, emu.issue_token("demo"), breakers=breakers, read_retries=1)
    [paper] = [a.ref() for a in await one.fetch_accounts() if a.environment is PAPER]
    threshold = CircuitBreaker().threshold
    emu.faults.add(
        Fault(kind="status", path=r"/v2/orders$", method="GET", times=threshold, status=503)
    )
    for _ in range(threshold):
        with pytest.raises(BrokerUnavailable):
            await one.fetch_open_orders(paper)
    for adapter in (one, other):
        with pytest.raises(BrokerUnavailable, match="new orders are paused") as info:
            await adapter.create_order(paper, order("F", "1"))
        assert info.value.maybe_sent is False
    assert posts(emu) == 0 and emu.broker.orders == {}
    assert await other.fetch_open_orders(paper) == []  # a read probes and closes it again
    placed = await one.create_order(paper, order("F", "1", client_order_id="after-breaker"))
    assert placed.client_order_id == "after-breaker" and posts(emu) == 1


async def test_lost_response_on_create_then_lookup_finds_exactly_one(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
) -> None:
    emu.faults.add(Fault(kind="lose_response", path=r"/v2/orders$", method="POST", times=1))
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(paper, order("AAPL", "2", client_order_id="lost42"))
    assert info.value.maybe_sent is True and posts(emu) == 1
    found = await adapter.fetch_order(paper, client_order_id="lost42")
    assert found.status is OrderStatus.FILLED and found.quantity == D(2)
    assert sum(1 for o in emu.broker.orders.values() if o.client_order_id == "lost42") == 1
    # Resending the same key cannot create a second order: the answer is the first one.
    again = await adapter.create_order(paper, order("AAPL", "2", client_order_id="lost42"))
    assert again.id == found.id and len(emu.broker.orders) == 1


async def test_dropped_connection_on_read_is_retried(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    emu.faults.add(Fault(kind="drop", path=r"/v2/account$", times=1))
    assert (await adapter.fetch_balance(paper)).cash == D(100000)


# -- the stream ---------------------------------------------------------------------------------


class Consumer:
    """Runs ``stream_order_updates`` in a task and collects what it yields."""

    def __init__(self, adapter: AlpacaAdapter, accounts: list[AccountRef]) -> None:
        self.updates: asyncio.Queue[OrderUpdate] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run(adapter, accounts))

    async def _run(self, adapter: AlpacaAdapter, accounts: list[AccountRef]) -> None:
        try:
            async for update in adapter.stream_order_updates(accounts, ready=self.ready):
                await self.updates.put(update)
        except BrokerError as e:
            self.error = e
        finally:
            self.ended.set()

    async def next(self, *events: str) -> list[OrderUpdate]:
        got = [await asyncio.wait_for(self.updates.get(), 5) for _ in events]
        assert [u.event for u in got] == list(events)
        return got

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def consumer_factory() -> AsyncIterator[Callable[..., Awaitable[Consumer]]]:
    made: list[Consumer] = []

    async def make(
        adapter: AlpacaAdapter,
        accounts: list[AccountRef],
        emu: AlpacaEmulator | None = None,
        listeners: int = 0,
    ) -> Consumer:
        consumer = Consumer(adapter, accounts)
        made.append(consumer)
        if emu is not None:
            await until(lambda: emu.stream_listeners() == listeners)
        return consumer

    yield make
    for consumer in made:
        await consumer.close()


async def test_stream_fill_partial_cancel_reject(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
    consumer_factory: Callable[..., Awaitable[Consumer]],
) -> None:
    stream = await consumer_factory(adapter, [paper], emu, 1)
    placed = await adapter.create_order(paper, order("F", "3"))
    _, fill = await stream.next("new", "fill")
    assert fill.order.id == placed.id and fill.order.account_id == paper.id
    assert fill.order.status is OrderStatus.FILLED
    assert (fill.fill_quantity, fill.fill_price) == (D(3), D("10.01"))
    assert fill.execution_id and fill.at is not None
    resting = await adapter.create_order(
        paper, order("F", "10", order_type=OrderType.LIMIT, limit_price=D(9))
    )
    await stream.next("new")
    emu.fill(resting.id, D(4), D(9))
    [partial] = await stream.next("partial_fill")
    assert partial.order.status is OrderStatus.PARTIALLY_FILLED
    assert partial.fill_quantity == D(4) and partial.order.filled_quantity == D(4)
    await adapter.cancel_order(paper, resting.id)
    [canceled] = await stream.next("canceled")
    assert canceled.order.status is OrderStatus.CANCELLED
    doomed = await adapter.create_order(
        paper, order("F", "1", order_type=OrderType.LIMIT, limit_price=D(8))
    )
    await stream.next("new")
    emu.reject(doomed.id)
    [rejected] = await stream.next("rejected")
    assert rejected.order.status is OrderStatus.REJECTED and rejected.order.id == doomed.id


async def test_a_replaced_order_names_its_successor_and_is_not_cancelled(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
    http: aiohttp.ClientSession,
    consumer_factory: Callable[..., Awaitable[Consumer]],
) -> None:
    """Replaced in Alpaca's app (PATCH): the old order ends "replaced" naming the new one, the
    new one names the old; neither reads as a cancel, on the stream or when fetched."""
    stream = await consumer_factory(adapter, [paper], emu, 1)
    placed = await adapter.create_order(
        paper, order("F", "10", order_type=OrderType.LIMIT, limit_price=D(9))
    )
    await stream.next("new")
    async with http.patch(
        emu.api_url("paper") + f"/v2/orders/{placed.id}",
        json={"qty": "12", "limit_price": "9.5"},
        headers={"Authorization": f"Bearer {emu.issue_token('demo')}"},
    ) as r:
        assert r.status == 200
        new_id = (await r.json())["id"]
    replaced, new = await stream.next("replaced", "new")
    assert replaced.order.id == placed.id and replaced.order.status is OrderStatus.REPLACED
    assert replaced.order.replaced_by == new_id and replaced.order.status.is_final
    assert new.order.id == new_id and new.order.replaces == placed.id
    assert new.order.status is OrderStatus.OPEN
    assert (new.order.quantity, new.order.limit_price) == (D(12), D("9.5"))
    assert new.order.client_order_id != placed.client_order_id  # Alpaca makes up a new one
    old = await adapter.fetch_order(paper, order_id=placed.id)
    assert old.status is OrderStatus.REPLACED and old.replaced_by == new_id
    by_client = await adapter.fetch_order(paper, client_order_id=placed.client_order_id)
    assert by_client.id == placed.id and by_client.replaced_by == new_id
    [working] = await adapter.fetch_open_orders(paper)
    assert working.id == new_id and working.replaces == placed.id


async def test_stream_merges_live_text_and_paper_binary_and_ends_on_drop(
    adapter: AlpacaAdapter,
    refs: dict[Environment, AccountRef],
    emu: AlpacaEmulator,
    consumer_factory: Callable[..., Awaitable[Consumer]],
) -> None:
    stream = await consumer_factory(adapter, [refs[LIVE], refs[PAPER]], emu, 2)
    await adapter.create_order(refs[LIVE], order("F", "1"))
    live_updates = await stream.next("new", "fill")
    assert {u.order.account_id for u in live_updates} == {refs[LIVE].id}
    await adapter.create_order(refs[PAPER], order("F", "2"))
    paper_updates = await stream.next("new", "fill")
    assert {u.order.account_id for u in paper_updates} == {refs[PAPER].id}
    await emu.drop_streams()
    await asyncio.wait_for(stream.ended.wait(), 5)
    assert stream.error is None  # ended cleanly; reconnecting is the caller's job
    await until(lambda: emu.stream_connections == 0)


async def test_stream_is_ready_once_every_environment_listens(
    adapter: AlpacaAdapter,
    refs: dict[Environment, AccountRef],
    emu: AlpacaEmulator,
    consumer_factory: Callable[..., Awaitable[Consumer]],
) -> None:
    """Alpaca sends no snapshot: only its ``listening`` answer says changes are now sent."""
    emu.listen_gate = gate = asyncio.Event()
    stream = await consumer_factory(adapter, [refs[LIVE], refs[PAPER]])
    await until(lambda: emu.listens_received == 2)
    await asyncio.sleep(0.05)
    assert not stream.ready.is_set()  # asked to listen, not yet answered
    gate.set()
    await asyncio.wait_for(stream.ready.wait(), 5)
    assert emu.stream_listeners() == 2


async def test_stream_with_a_dead_token(
    emu: AlpacaEmulator, http: aiohttp.ClientSession, paper: AccountRef
) -> None:
    dead = make_adapter(emu, http, "not-a-token")
    ready = asyncio.Event()
    with pytest.raises(AuthorizationExpired):
        async for _ in dead.stream_order_updates([paper], ready=ready):
            pass
    assert not ready.is_set()


async def test_stream_host_unreachable(
    emu: AlpacaEmulator, http: aiohttp.ClientSession, paper: AccountRef
) -> None:
    adapter = AlpacaAdapter(
        AdapterContext(
            session=http, api_urls={PAPER: "http://127.0.0.1:9"}, tokens=StaticToken("t")
        )
    )
    with pytest.raises(BrokerUnavailable, match="order stream"):
        async for _ in adapter.stream_order_updates([paper]):
            pass


# -- the contract harness and the whole surface under spec validation ----------------------------


async def test_every_verb_conforms_to_the_spec(http: aiohttp.ClientSession) -> None:
    harness = await make_harness(http)
    try:
        a, equity, cash = harness.adapter, harness.accounts["equity"], harness.accounts["cash"]
        assert (equity.type, cash.type) == (AccountType.MARGIN, AccountType.CASH)
        await a.fetch_accounts()
        await a.fetch_balance(equity)
        await a.fetch_positions(cash)
        await a.fetch_quote("AAPL")
        await a.fetch_quote("SOL/USD")
        placed = await a.create_order(
            equity,
            order(
                "AAPL", "1", order_type=OrderType.LIMIT, limit_price=D(150), client_order_id="x1"
            ),
        )
        await a.create_order(
            equity,
            order(
                "AAPL",
                "1",
                order_type=OrderType.STOP_LIMIT,
                stop_price=D(200),
                limit_price=D("200.5"),
                time_in_force=TimeInForce.FOK,
            ),
        )
        await a.create_order(
            equity, order("AAPL", "2", bracket=Bracket(D(220), D(170), D("169.5")))
        )
        await a.create_order(
            cash,
            order(
                "DOGE/USD",
                "100",
                order_type=OrderType.LIMIT,
                limit_price=D("0.3"),
                time_in_force=TimeInForce.GTC,
            ),
        )
        await a.fetch_open_orders(equity)
        await a.fetch_orders(equity, since=datetime.now(UTC) - timedelta(hours=1), limit=10)
        await a.fetch_order(equity, order_id=placed.id)
        await a.fetch_order(equity, client_order_id="x1")
        await a.cancel_order(equity, placed.id)
        await harness.move_quote("AAPL", D(149), D("149.1"))
        assert await harness.broker_order_count(equity) == 5  # 3 placed + 2 bracket exits
        assert await harness.broker_order_count(cash) == 1
        harness.inject(Fault(kind="status", path="/v2/account", times=1, status=502))
        await a.fetch_balance(equity)
        await harness.expire_token()
        with pytest.raises(AuthorizationExpired):
            await a.fetch_positions(equity)
        assert harness.emulator.spec_violations == []
    finally:
        await harness.close()


@pytest.mark.parametrize(
    ("asset", "side", "tif", "bracket", "exiting", "allowed"),
    [
        ("us_equity", "buy", "day", False, False, True),  # a simple day buy
        ("us_equity", "sell", "day", False, True, True),  # a sell of shares held
        ("us_equity", "sell", "day", False, False, False),  # would sell short
        ("us_equity", "buy", "day", False, True, False),  # a cover of a (whole) short
        ("us_equity", "buy", "gtc", False, False, False),  # fractions are day orders only
        ("us_equity", "buy", "day", True, False, False),  # and never bracketed
        ("crypto", "sell", "gtc", False, False, True),  # crypto: always
    ],
)
def test_which_orders_alpaca_takes_a_fraction_of_a_unit_for(
    asset: str, side: str, tif: str, bracket: bool, exiting: bool, allowed: bool
) -> None:
    from adapters.models import AssetClass, Side, TimeInForce

    cls = AssetClass.EQUITY if asset == "us_equity" else AssetClass.CRYPTO
    adapter = AlpacaAdapter(AdapterContext())
    got = adapter.fraction_allowed(
        cls, Side(side), TimeInForce(tif), bracket=bracket, exiting=exiting
    )
    assert got is allowed


async def test_a_stock_that_is_not_fractionable_takes_whole_shares(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    emu.add_asset("NOFR", exchange="NYSE", price=D(50), fractionable=False)

    def allowed(symbol: str) -> bool:
        return adapter.fraction_allowed(
            AssetClass.EQUITY,
            Side.BUY,
            TimeInForce.DAY,
            bracket=False,
            exiting=False,
            symbol=symbol,
        )

    # A quote looks the asset up: an amount then sizes in whole shares, a fraction is refused
    # at the preview's checks, before the card.
    await adapter.fetch_quote("NOFR")
    await adapter.fetch_quote("AAPL")
    assert not allowed("NOFR") and allowed("AAPL") and allowed("MSFT")  # MSFT: not looked up
    typed = dataclasses.replace(order("NOFR", "2.5"), asset_class=AssetClass.EQUITY)
    with pytest.raises(InvalidOrder, match=r"NOFR in whole shares only.*such as 2 or 3"):
        adapter.check_position(paper, typed, D(0))
    with pytest.raises(InvalidOrder, match="whole shares only"):
        adapter.check_order(paper, order("NOFR", "2.5"))
    adapter.check_position(paper, dataclasses.replace(typed, quantity=D(2)), D(0))
    # Looked up once per adapter.
    await adapter.fetch_quote("NOFR")
    assert len(emu.requests_to(r"/v2/assets/NOFR$", "GET")) == 1
    # Placed without a quote first (a signal's fixed quantity): refused before sending.
    fresh = make_adapter(emu, adapter.ctx.session, emu.issue_token("demo"))
    with pytest.raises(InvalidOrder, match="not fractionable"):
        await fresh.create_order(paper, order("NOFR", "0.5"))
    assert posts(emu) == 0
    # A fraction of a fractionable stock still goes, and whole shares of this one too.
    await fresh.create_order(paper, order("NOFR", "2"))
    await fresh.create_order(paper, order("AAPL", "0.5"))
    assert posts(emu) == 2


# -- changing a working order (PATCH) -----------------------------------------------------------


def patches(emu: AlpacaEmulator) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in emu.requests_to(r"/v2/orders/[^/]+$", "PATCH")]


async def resting(
    adapter: AlpacaAdapter, ref: AccountRef, qty: str = "5", cid: str | None = "tc-a"
) -> Order:
    placed = await adapter.create_order(
        ref,
        order(
            "AAPL",
            qty,
            order_type=OrderType.LIMIT,
            limit_price=D(100),
            time_in_force=TimeInForce.DAY if "." in qty else TimeInForce.GTC,
            client_order_id=cid,
        ),
    )
    return await adapter.fetch_order(ref, order_id=placed.id)


def test_replacement_client_order_ids_count_up_within_128_characters() -> None:
    assert AlpacaAdapter.capabilities.replace == {"quantity", "limit_price", "stop_price"}
    assert replacement_client_order_id("tc1") == "tc1-r1"
    assert replacement_client_order_id("tc1-r1") == "tc1-r2"
    assert replacement_client_order_id("tc1-r9") == "tc1-r10"
    longest = replacement_client_order_id("x" * 128)
    assert len(longest) == 128 and longest.endswith("x-r1")
    assert replacement_client_order_id("y" * 125 + "-r9") == "y" * 124 + "-r10"


async def test_replace_sends_only_the_change_and_returns_the_new_order(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    old = await resting(adapter, paper)
    new = await adapter.replace_order(paper, old, OrderChange(limit_price=D("100.5")))
    assert patches(emu) == [{"limit_price": "100.5", "client_order_id": "tc-a-r1"}]
    assert new.id != old.id and new.replaces == old.id and new.client_order_id == "tc-a-r1"
    # As of acceptance (pending_new), as POST answers.
    assert (new.quantity, new.limit_price, new.status) == (D(5), D("100.5"), OrderStatus.PENDING)
    assert (new.symbol, new.side, new.time_in_force) == ("AAPL", Side.BUY, TimeInForce.GTC)
    before = await adapter.fetch_order(paper, order_id=old.id)
    assert before.status is OrderStatus.REPLACED and before.replaced_by == new.id
    newer = await adapter.replace_order(paper, new, OrderChange(quantity=D(7)))
    assert patches(emu)[1] == {"qty": "7", "client_order_id": "tc-a-r2"}
    assert (newer.quantity, newer.limit_price, newer.replaces) == (D(7), D("100.5"), new.id)
    [working] = await adapter.fetch_open_orders(paper)
    assert (working.id, working.status) == (newer.id, OrderStatus.OPEN)


async def test_a_partly_filled_order_is_replaced_by_what_is_left(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    """Alpaca's new order starts unfilled and, without a qty, takes the old one's original
    qty: the rest is always sent, and a new total becomes what is left of it."""
    old = await resting(adapter, paper, "10")
    emu.fill(old.id, D(4), D(100))
    old = await adapter.fetch_order(paper, order_id=old.id)
    new = await adapter.replace_order(paper, old, OrderChange(limit_price=D(99)))
    assert patches(emu)[0] == {"qty": "6", "limit_price": "99", "client_order_id": "tc-a-r1"}
    assert (new.quantity, new.filled_quantity) == (D(6), D(0))
    emu.fill(new.id, D(1), D(99))
    new = await adapter.fetch_order(paper, order_id=new.id)
    newer = await adapter.replace_order(paper, new, OrderChange(quantity=D(4)))
    assert patches(emu)[1] == {"qty": "3", "client_order_id": "tc-a-r2"}
    assert newer.quantity == D(3)


async def test_replace_refusals_before_sending(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
    http: aiohttp.ClientSession,
) -> None:
    whole = await resting(adapter, paper, "2", cid="w")
    with pytest.raises(InvalidOrder, match=r"whole shares only; 1\.5 has a fraction"):
        await adapter.replace_order(paper, whole, OrderChange(quantity=D("1.5")))
    part = await resting(adapter, paper, "0.5", cid="p")
    with pytest.raises(InvalidOrder, match="quantity of a fractional share order"):
        await adapter.replace_order(paper, part, OrderChange(quantity=D(1)))
    emu.fill(part.id, D("0.2"), D(100))
    part = await adapter.fetch_order(paper, order_id=part.id)
    with pytest.raises(InvalidOrder, match="partly filled fractional share order"):
        await adapter.replace_order(paper, part, OrderChange(limit_price=D(99)))
    async with http.post(
        emu.api_url("paper") + "/v2/orders",
        json={
            "symbol": "AAPL",
            "notional": "100",
            "side": "buy",
            "type": "limit",
            "limit_price": "100",
            "time_in_force": "day",
        },
        headers={"Authorization": f"Bearer {emu.issue_token('demo')}"},
    ) as r:
        dollars = await adapter.fetch_order(paper, order_id=(await r.json())["id"])
    with pytest.raises(InvalidOrder, match="placed for a dollar amount"):
        await adapter.replace_order(paper, dollars, OrderChange(limit_price=D(99)))
    with pytest.raises(OrderNotFound, match="Copy the id from /orders"):
        await adapter.replace_order(
            paper, dataclasses.replace(whole, id="not-an-id"), OrderChange(limit_price=D(99))
        )
    assert patches(emu) == []


async def test_alpacas_refusals_of_a_replace_become_our_errors(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    """Each order read before its state changed, so the refusal is Alpaca's."""
    ended = await resting(adapter, paper, cid="e")
    await adapter.cancel_order(paper, ended.id)
    with pytest.raises(OrderNotReplaceable, match=r"\(it is canceled\)") as info:
        await adapter.replace_order(paper, ended, OrderChange(limit_price=D(99)))
    assert info.value.vendor_code == "42210000"
    emu.cancel_delay = 30  # the cancel does not land during the test
    cancelling = await resting(adapter, paper, cid="c")
    await adapter.cancel_order(paper, cancelling.id)
    with pytest.raises(OrderNotReplaceable, match=r"\(it is pending cancel\)"):
        await adapter.replace_order(paper, cancelling, OrderChange(limit_price=D(99)))
    stale = await resting(adapter, paper, cid="s")
    with pytest.raises(InvalidOrder, match="nothing to change") as unchanged:
        await adapter.replace_order(
            paper, dataclasses.replace(stale, limit_price=D(98)), OrderChange(limit_price=D(100))
        )
    assert type(unchanged.value) is InvalidOrder
    emu.close_market()
    queued = await resting(adapter, paper, cid="q")
    assert queued.status is OrderStatus.PENDING
    with pytest.raises(OrderNotReplaceable, match="until it has reached the exchange"):
        await adapter.replace_order(paper, queued, OrderChange(limit_price=D(99)))
    assert len(patches(emu)) == 4
    assert not any(o.replaces for o in await adapter.fetch_open_orders(paper))


async def test_lost_response_on_replace_then_the_new_order_is_found_by_its_client_id(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    cid = "k" * 128  # the replacement's id stays within Alpaca's limit (no spec violation)
    old = await resting(adapter, paper, cid=cid)
    emu.faults.add(Fault(kind="lose_response", path=r"/v2/orders/", method="PATCH", times=1))
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.replace_order(paper, old, OrderChange(limit_price=D(99)))
    assert info.value.maybe_sent is True and len(patches(emu)) == 1
    found = await adapter.fetch_order(paper, client_order_id=replacement_client_order_id(cid))
    assert found.replaces == old.id and found.limit_price == D(99)
    assert (await adapter.fetch_order(paper, order_id=old.id)).replaced_by == found.id


# -- extended hours ------------------------------------------------------------------------------


def extended(symbol: str, qty: str, limit: str, **kw: Any) -> OrderRequest:
    return order(
        symbol, qty, order_type=OrderType.LIMIT, limit_price=D(limit), extended_hours=True, **kw
    )


async def test_extended_hours_is_sent_only_when_asked_and_fills_with_the_market_closed(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    assert AlpacaAdapter.capabilities.extended_hours
    emu.close_market()
    ext = await adapter.create_order(paper, extended("AAPL", "2", "191", client_order_id="ext"))
    plain = await adapter.create_order(
        paper,
        order("MSFT", "1", order_type=OrderType.LIMIT, limit_price=D(421), client_order_id="pl"),
    )
    sent_ext, sent_plain = (json.loads(r.body) for r in emu.requests_to(r"/v2/orders$", "POST"))
    assert sent_ext["extended_hours"] is True and sent_ext["type"] == "limit"
    assert sent_ext["time_in_force"] == "day"
    assert "extended_hours" not in sent_plain
    assert ext.extended_hours and not plain.extended_hours
    # The extended-hours limit fills before the open; the plain one waits for it.
    got = await adapter.fetch_order(paper, order_id=ext.id)
    assert (got.status, got.extended_hours) == (OrderStatus.FILLED, True)
    assert got.average_fill_price == D("190.01")
    waiting = await adapter.fetch_order(paper, order_id=plain.id)
    assert (waiting.status, waiting.extended_hours) == (OrderStatus.PENDING, False)
    # A lookup after a lost answer reads the flag back too (Alpaca needs no hint for it).
    hint = SubmissionHint(extended("AAPL", "2", "191", client_order_id="ext"), datetime.now(UTC))
    found = await adapter.fetch_order(paper, client_order_id="ext", hint=hint)
    assert (found.id, found.extended_hours) == (ext.id, True)
    emu.open_market()
    assert (await adapter.fetch_order(paper, order_id=plain.id)).status is OrderStatus.FILLED


async def test_a_resting_extended_hours_order_works_after_the_close_and_keeps_the_flag(
    adapter: AlpacaAdapter, paper: AccountRef, emu: AlpacaEmulator
) -> None:
    placed = await adapter.create_order(paper, extended("TSLA", "3", "240", client_order_id="x"))
    plain = await adapter.create_order(
        paper, order("TSLA", "1", order_type=OrderType.LIMIT, limit_price=D(239))
    )
    working = await adapter.fetch_order(paper, order_id=placed.id)
    # PATCH carries no extended_hours: Alpaca keeps what it does not override.
    new = await adapter.replace_order(paper, working, OrderChange(limit_price=D(241)))
    assert patches(emu) == [{"limit_price": "241", "client_order_id": "x-r1"}]
    assert new.extended_hours
    emu.close_market()
    assert (await adapter.fetch_order(paper, order_id=plain.id)).status is OrderStatus.EXPIRED
    [still] = await adapter.fetch_open_orders(paper)
    assert (still.id, still.extended_hours) == (new.id, True)
    emu.set_quote("TSLA", D("240.50"), D("240.90"))
    done = await adapter.fetch_order(paper, order_id=new.id)
    assert (done.status, done.average_fill_price) == (OrderStatus.FILLED, D("240.9"))


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            order("AAPL", "1", extended_hours=True),
            "Extended-hours orders must be limit orders",
        ),
        (
            extended("AAPL", "1", "191", time_in_force=TimeInForce.GTC),
            "Extended-hours orders are day orders",
        ),
        (
            extended("AAPL", "1", "191", bracket=Bracket(D(200), D(180))),
            "cannot be placed for extended hours",
        ),
    ],
)
async def test_extended_hours_refused_before_sending(
    adapter: AlpacaAdapter,
    paper: AccountRef,
    emu: AlpacaEmulator,
    request_: OrderRequest,
    message: str,
) -> None:
    with pytest.raises(InvalidOrder, match=re.escape(message)):
        await adapter.create_order(paper, request_)
    assert posts(emu) == 0


# -- auction orders (opg, cls) ---------------------------------------------------------------

NEW_YORK = ZoneInfo("America/New_York")
OPG, CLS = TimeInForce.OPG, TimeInForce.CLS


class Clock:
    """The emulator's clock, set to a moment of Tuesday 10 March 2026 in New York time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.at(9)

    def at(self, hour: int, minute: int = 0) -> None:
        self.now = datetime(2026, 3, 10, hour, minute, tzinfo=NEW_YORK).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def timed(
    clock: Clock, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[AlpacaEmulator, AlpacaAdapter, AccountRef]]:
    """An emulator on ``clock`` (Alpaca's auction windows are by the time of day), an adapter
    for the demo user, and the paper account."""
    async with AlpacaEmulator(clock=clock) as emu:
        assert isinstance(emu, AlpacaEmulator)
        adapter = make_adapter(emu, http, emu.issue_token("demo", env="paper"))
        [ref] = [a.ref() for a in await adapter.fetch_accounts()]
        yield emu, adapter, ref
        assert emu.spec_violations == []


async def test_an_opg_order_is_sent_as_opg_reads_back_as_opg_and_trades_at_the_open(
    timed: tuple[AlpacaEmulator, AlpacaAdapter, AccountRef], clock: Clock
) -> None:
    emu, adapter, paper = timed
    assert {OPG, CLS} <= AlpacaAdapter.capabilities.time_in_force[AssetClass.EQUITY]
    emu.close_market()
    clock.at(9, 0)  # before Alpaca's 9:28am cut-off
    moo = await adapter.create_order(paper, order("AAPL", "2", time_in_force=OPG))
    loo = await adapter.create_order(
        paper,
        order("MSFT", "1", order_type=OrderType.LIMIT, limit_price=D(400), time_in_force=OPG),
    )
    sent = [json.loads(r.body) for r in emu.requests_to(r"/v2/orders$", "POST")]
    assert [b["time_in_force"] for b in sent] == ["opg", "opg"]
    assert (moo.time_in_force, moo.status) == (OPG, OrderStatus.PENDING)
    working = {o.id: o.time_in_force for o in await adapter.fetch_open_orders(paper)}
    assert working == {moo.id: OPG, loo.id: OPG}
    # The auction trades at the last price: AAPL's 191.50; MSFT's 420, above the limit's 400.
    emu.set_quote("AAPL", D("191.40"), D("191.60"), D("191.50"))
    clock.at(9, 30)
    emu.open_market()
    done = await adapter.fetch_order(paper, order_id=moo.id)
    assert (done.status, done.filled_quantity, done.average_fill_price, done.time_in_force) == (
        OrderStatus.FILLED,
        D(2),
        D("191.5"),
        OPG,
    )
    unfilled = await adapter.fetch_order(paper, order_id=loo.id)
    assert (unfilled.status, unfilled.filled_quantity) == (OrderStatus.CANCELLED, D(0))


async def test_a_cls_order_works_through_the_session_and_trades_at_the_close(
    timed: tuple[AlpacaEmulator, AlpacaAdapter, AccountRef], clock: Clock
) -> None:
    emu, adapter, paper = timed
    clock.at(10)
    moc = await adapter.create_order(paper, order("TSLA", "3", time_in_force=CLS))
    assert json.loads(emu.requests_to(r"/v2/orders$", "POST")[0].body)["time_in_force"] == "cls"
    got = await adapter.fetch_order(paper, order_id=moc.id)
    assert (got.status, got.time_in_force) == (OrderStatus.OPEN, CLS)  # not filled in session
    clock.at(16)
    emu.set_quote("TSLA", D("252.40"), D("252.60"), D("252.55"))
    emu.close_market()
    done = await adapter.fetch_order(paper, order_id=moc.id)
    assert (done.status, done.average_fill_price, done.time_in_force) == (
        OrderStatus.FILLED,
        D("252.55"),
        CLS,
    )


@pytest.mark.parametrize(
    ("tif", "hour", "minute", "message"),
    [
        (
            OPG,
            10,
            0,
            "Too late for today's opening auction. Alpaca takes opening-auction (opg) orders "
            "from 7:00pm until 9:28am New York time, for the next opening auction; from 9:28am "
            "to 7:00pm it refuses them. Place it again after 7:00pm, or use time in force day",
        ),
        (
            CLS,
            15,
            55,
            "Too late for today's closing auction. Alpaca takes closing-auction (cls) orders "
            "from 7:00pm until 3:50pm New York time",
        ),
    ],
)
async def test_alpaca_refuses_an_auction_order_after_its_cut_off(
    timed: tuple[AlpacaEmulator, AlpacaAdapter, AccountRef],
    clock: Clock,
    tif: TimeInForce,
    hour: int,
    minute: int,
    message: str,
) -> None:
    emu, adapter, paper = timed
    clock.at(hour, minute)
    await _reject(
        adapter,
        paper,
        order("AAPL", "1", time_in_force=tif),
        InvalidOrder,
        re.escape(message),
        "40310000",
    )
    assert posts(emu) == 1  # sent: Alpaca's clock decides, not ours


def test_alpacas_other_auction_refusals_say_what_an_auction_order_must_be() -> None:
    adapter = AlpacaAdapter(AdapterContext())
    refused = adapter.vendor_error(
        HttpResponse(
            422,
            {},
            {"code": 42210000, "message": "opg orders must be market or limit orders"},
            "POST",
            "/v2/orders",
        )
    )
    assert isinstance(refused, InvalidOrder) and refused.vendor_code == "42210000"
    assert refused.user_message == (
        "Alpaca refused this opening-auction (opg) order: it must be a market or limit order "
        "for a stock, without take-profit/stop-loss or extended hours. Alpaca takes "
        "opening-auction (opg) orders from 7:00pm until 9:28am New York time, for the next "
        "opening auction; from 9:28am to 7:00pm it refuses them."
    )
    # Alpaca's own times win over the documented ones (a paper log has said 3:55pm for cls).
    late = adapter.vendor_error(
        HttpResponse(
            403,
            {},
            {
                "code": 40310000,
                "message": "cls orders must be submitted after 7:00pm and before 3:55pm",
            },
            "POST",
            "/v2/orders",
        )
    )
    assert isinstance(late, InvalidOrder) and "until 3:55pm New York time" in late.user_message
    # A ticker named CLS is not an auction.
    unknown = adapter.vendor_error(
        HttpResponse(
            422, {}, {"code": 42210000, "message": 'asset "CLS" not found'}, "POST", "/v2/orders"
        )
    )
    assert isinstance(unknown, SymbolNotFound)
