"""The Tradier adapter against the Tradier emulator (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from adapters import base
from adapters.base import AdapterContext, HttpResponse, RateLimit, StaticToken
from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    MarketClosed,
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
    ExtendedReach,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Side,
    TimeInForce,
)
from adapters.registry import get_adapter_class
from adapters.tradier import (
    TradierAdapter,
    error_messages,
    extended_duration,
    items,
    order_from,
    orders_from,
)
from emulators.common import Fault
from emulators.tradier import EmulatorTokenProvider, TradierEmulator, iso_ms

LIVE, PAPER = Environment.LIVE, Environment.PAPER
SPEC = json.loads(
    (Path(__file__).parents[2] / "emulators/specs/tradier/documented-examples.json").read_text()
)


@pytest.fixture
async def emu() -> AsyncIterator[TradierEmulator]:
    emulator = TradierEmulator(heartbeat_interval=3600)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def connect(
    emu: TradierEmulator,
    session: aiohttp.ClientSession,
    env: Environment = LIVE,
    user: str = "id-demo",
) -> tuple[TradierAdapter, EmulatorTokenProvider]:
    grant = emu.issue_tokens(user, env)
    tokens = EmulatorTokenProvider(
        session,
        emu.refresh_url_for(env),
        emu.client_id,
        emu.client_secret,
        grant["access_token"],
        grant.get("refresh_token"),
    )
    ctx = AdapterContext(session=session, api_urls={env: emu.api_url(env)}, tokens=tokens)
    return TradierAdapter(ctx), tokens


@pytest.fixture
def adapter(emu: TradierEmulator, session: aiohttp.ClientSession) -> TradierAdapter:
    return connect(emu, session)[0]


def ref(
    emu: TradierEmulator, kind: str, env: Environment = LIVE, user: str = "id-demo"
) -> AccountRef:
    acct = next(
        a
        for a in emu.accounts.values()
        if a.environment is env and a.type == kind and a.user_id == user
    )
    mapped = AccountType.CASH if kind == "cash" else AccountType.MARGIN
    return AccountRef(acct.number, mapped, env)


def order_posts(emu: TradierEmulator) -> list[dict[str, list[str]]]:
    return [parse_qs(r.body.decode()) for r in emu.requests_to(r"/orders$", "POST")]


# -- declarations -------------------------------------------------------------------------------


def test_declarations() -> None:
    assert get_adapter_class("tradier") is TradierAdapter
    spec = TradierAdapter.oauth
    assert spec is not None
    assert spec.authorize_url == "https://api.tradier.com/v1/oauth/authorize"
    assert spec.token_url == "https://api.tradier.com/v1/oauth/accesstoken"
    assert spec.refresh_url == "https://api.tradier.com/v1/oauth/refreshtoken"
    assert spec.revoke_url is None
    assert spec.scopes == ("read", "market", "trade", "stream") and "write" not in spec.scopes
    assert spec.scope_separator == ","
    assert spec.pkce is False and spec.client_auth == "client_secret_basic"
    assert TradierAdapter.default_api_urls == {
        LIVE: "https://api.tradier.com/v1",
        PAPER: "https://sandbox.tradier.com/v1",
    }
    caps = TradierAdapter.capabilities
    assert caps.order_stream and caps.quotes and caps.brackets
    assert caps.account_types_for(AssetClass.FUTURE) == []
    assert caps.account_types_for(AssetClass.CRYPTO) == []
    assert caps.time_in_force[AssetClass.EQUITY] == {TimeInForce.DAY, TimeInForce.GTC}
    limits = {r.bucket: r.requests for r in caps.rate_limits}
    assert limits["standard:live"] == 120 and limits["standard:paper"] == 60
    assert limits["trading:live"] == limits["trading:paper"] == 60


# -- reads --------------------------------------------------------------------------------------


async def test_every_request_asks_for_json(emu: TradierEmulator, adapter: TradierAdapter):
    await adapter.fetch_accounts()
    await adapter.fetch_quote("AAPL")
    assert emu.requests and all(r.headers.get("Accept") == "application/json" for r in emu.requests)


async def test_fetch_accounts_maps_types_and_environment(
    emu: TradierEmulator,
    session: aiohttp.ClientSession,
    adapter: TradierAdapter,
):
    accounts = await adapter.fetch_accounts()
    assert [(a.id, a.type, a.environment) for a in accounts] == [
        (ref(emu, "margin").id, AccountType.MARGIN, LIVE),
        (ref(emu, "cash").id, AccountType.CASH, LIVE),
    ]
    assert accounts[0].info["classification"] == "individual"
    # A single account arrives as an object, and pdt is a margin account.
    pat, _ = connect(emu, session, user="id-pat")
    (only,) = await pat.fetch_accounts()
    assert only.type is AccountType.MARGIN and only.info["type"] == "pdt"
    # The sandbox is another host with another token: its own accounts only.
    paper, _ = connect(emu, session, env=PAPER)
    assert {a.environment for a in await paper.fetch_accounts()} == {PAPER}
    assert [r.path for r in emu.requests_to("profile")] == [
        "/api/v1/user/profile",
        "/api/v1/user/profile",
        "/sandbox/v1/user/profile",
    ]


async def test_fetch_balance_reads_the_account_type_block(
    emu: TradierEmulator,
    session: aiohttp.ClientSession,
    adapter: TradierAdapter,
):
    margin = await adapter.fetch_balance(ref(emu, "margin"))
    assert margin.cash == Decimal("100000") and margin.equity == Decimal("101900")
    assert margin.buying_power == Decimal("201900") and margin.market_value == Decimal("1900")
    assert margin.unrealized_pnl == Decimal("400") and margin.realized_pnl == 0
    cash = await adapter.fetch_balance(ref(emu, "cash"))
    assert cash.buying_power == Decimal("25000") and cash.info["cash"]["cash_available"] == 25000
    pat, _ = connect(emu, session, user="id-pat")
    pdt = await pat.fetch_balance(ref(emu, "pdt", user="id-pat"))
    assert pdt.buying_power == Decimal("100000")


async def test_fetch_positions_object_array_null_and_shorts(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin, cash = ref(emu, "margin"), ref(emu, "cash")
    (aapl,) = await adapter.fetch_positions(margin)
    assert (aapl.symbol, aapl.quantity, aapl.average_price, aapl.cost_basis) == (
        "AAPL",
        Decimal(10),
        Decimal(150),
        Decimal(1500),
    )
    assert str(aapl.quantity) == "10"  # Tradier's 10.0 shows as whole shares
    # Marked to the last trade by one quotes request: the P&L the balances report (400).
    assert (aapl.market_price, aapl.market_value, aapl.unrealized_pnl) == (
        Decimal(190),
        Decimal(1900),
        Decimal(400),
    )
    assert await adapter.fetch_positions(cash) == []  # {"positions": "null"}
    emu.add_position(margin.id, "F", Decimal(-100), Decimal("10.99"))
    positions = {p.symbol: p for p in await adapter.fetch_positions(margin)}
    assert positions["F"].quantity == -100 and positions["F"].side == "short"
    assert positions["F"].average_price == Decimal("10.99")
    last = Decimal(str(emu.quotes["F"].last))
    assert positions["F"].unrealized_pnl == -100 * last - positions["F"].cost_basis


async def test_positions_are_listed_unpriced_when_quotes_fail(
    emu: TradierEmulator, adapter: TradierAdapter
):
    emu.faults.add(Fault(kind="status", path=r"/markets/quotes$", method="GET", status=503))
    (aapl,) = await adapter.fetch_positions(ref(emu, "margin"))
    assert aapl.cost_basis == 1500 and aapl.market_price is None and aapl.unrealized_pnl is None


async def test_fetch_quote(emu: TradierEmulator, adapter: TradierAdapter):
    quote = await adapter.fetch_quote("aapl")
    assert (quote.symbol, quote.bid, quote.ask, quote.last) == (
        "AAPL",
        Decimal("189.95"),
        Decimal("190.05"),
        Decimal("190"),
    )
    assert quote.time.tzinfo is not None
    emu.set_quote("AAPL", "191.01", "191.03", "191.02")
    assert (await adapter.fetch_quote("AAPL")).mid == Decimal("191.02")
    with pytest.raises(SymbolNotFound):
        await adapter.fetch_quote("ZZZZ")
    before = len(emu.requests)
    with pytest.raises(AssetClassNotSupported, match="futures"):
        await adapter.fetch_quote("ESZ25")
    assert len(emu.requests) == before
    # Tradier quotes options by their OCC symbol.
    emu.set_quote("AAPL250117C00150000", "40.1", "40.3", "40.2", type="option")
    option = await adapter.fetch_quote("aapl250117c00150000")
    assert (option.symbol, option.last) == ("AAPL250117C00150000", Decimal("40.2"))


async def test_a_share_class_is_one_stock_however_typed(
    emu: TradierEmulator, adapter: TradierAdapter
):
    # Tradier writes Berkshire's class B BRK/B: BRK-B and BRK.B name it too.
    margin = ref(emu, "margin")
    emu.set_quote("BRK/B", "449.9", "450.1", "450")
    assert adapter.canonical_symbol("BRK-B") == adapter.canonical_symbol("BRK.B") == "BRK/B"
    assert (await adapter.fetch_quote("BRK.B")).symbol == "BRK/B"
    await adapter.create_order(margin, OrderRequest("BRK.B", Side.BUY, Decimal(3)))
    assert order_posts(emu)[-1]["symbol"] == ["BRK/B"]
    held = await adapter.fetch_position(margin, adapter.canonical_symbol("BRK-B"))
    assert held is not None and held.quantity == 3


async def test_fetch_market_state(emu: TradierEmulator, adapter: TradierAdapter):
    assert await adapter.fetch_market_state() == "open"
    emu.set_market_open(False)
    assert await adapter.fetch_market_state() == "closed"


# -- orders -------------------------------------------------------------------------------------


async def test_market_order_is_form_encoded_tagged_and_read_back(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    order = await adapter.create_order(
        margin, OrderRequest("msft", Side.BUY, Decimal(5), client_order_id="TC0000000000000000001")
    )
    assert order.status is OrderStatus.FILLED
    assert (order.symbol, order.side, order.quantity, order.filled_quantity) == (
        "MSFT",
        Side.BUY,
        Decimal(5),
        Decimal(5),
    )
    assert order.average_fill_price == Decimal("420.05")
    assert order.client_order_id == "TC0000000000000000001"
    (post,) = emu.requests_to(r"/orders$", "POST")
    assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(post.body.decode()) == {
        "class": ["equity"],
        "symbol": ["MSFT"],
        "side": ["buy"],
        "quantity": ["5"],
        "type": ["market"],
        "duration": ["day"],
        "tag": ["TC0000000000000000001"],
    }


async def test_limit_stop_and_stop_limit_orders(emu: TradierEmulator, adapter: TradierAdapter):
    margin = ref(emu, "margin")
    limit = await adapter.create_order(
        margin,
        OrderRequest(
            "TSLA",
            Side.BUY,
            Decimal(2),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("240.10"),
            client_order_id="L1",
        ),
    )
    stop = await adapter.create_order(
        margin,
        OrderRequest(
            "AAPL",
            Side.SELL,
            Decimal(10),
            OrderType.STOP,
            stop_price=Decimal("180"),
            client_order_id="S1",
        ),
    )
    stop_limit = await adapter.create_order(
        margin,
        OrderRequest(
            "NVDA",
            Side.BUY,
            Decimal(3),
            OrderType.STOP_LIMIT,
            limit_price=Decimal("146"),
            stop_price=Decimal("145.5"),
            client_order_id="SL1",
        ),
    )
    assert [o.status for o in (limit, stop, stop_limit)] == [OrderStatus.OPEN] * 3
    assert limit.limit_price == Decimal("240.10") and limit.time_in_force is TimeInForce.GTC
    assert stop.stop_price == Decimal(180) and stop.limit_price is None
    assert (stop_limit.limit_price, stop_limit.stop_price) == (Decimal(146), Decimal("145.5"))
    posts = order_posts(emu)
    assert posts[0]["price"] == ["240.10"] and "stop" not in posts[0]
    assert posts[1]["stop"] == ["180"] and posts[1]["side"] == ["sell"]
    assert (posts[2]["price"], posts[2]["stop"]) == (["146"], ["145.5"])
    opened = await adapter.fetch_open_orders(margin)
    assert {o.client_order_id for o in opened} == {"L1", "S1", "SL1"}
    emu.set_quote("TSLA", "239.90", "240.00")
    assert (await adapter.fetch_order(margin, order_id=limit.id)).status is OrderStatus.FILLED


async def test_sides_are_decided_from_the_position(emu: TradierEmulator, adapter: TradierAdapter):
    margin = ref(emu, "margin")
    await adapter.create_order(margin, OrderRequest("AAPL", Side.SELL, Decimal(4)))
    await adapter.create_order(margin, OrderRequest("F", Side.SELL, Decimal(10)))
    await adapter.create_order(margin, OrderRequest("F", Side.SELL, Decimal(5)))
    await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(15)))
    await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(1)))
    assert [p["side"][0] for p in order_posts(emu)] == [
        "sell",
        "sell_short",
        "sell_short",
        "buy_to_cover",
        "buy",
    ]
    assert emu.accounts[margin.id].positions["F"].quantity == 1


@pytest.mark.parametrize(
    ("kind", "held", "request_", "message"),
    [
        ("margin", 10, OrderRequest("AAPL", Side.SELL, Decimal(15)), "Sell 10 first"),
        ("margin", -5, OrderRequest("AAPL", Side.BUY, Decimal(8)), "Buy 5 to cover first"),
        ("cash", 0, OrderRequest("F", Side.SELL, Decimal(1)), "short selling in cash accounts"),
    ],
)
async def test_orders_tradier_cannot_take_are_refused_before_sending(
    emu: TradierEmulator,
    adapter: TradierAdapter,
    kind: str,
    held: int,
    request_: OrderRequest,
    message: str,
):
    account = ref(emu, kind)
    emu.accounts[account.id].positions.clear()
    if held:
        emu.add_position(account.id, request_.symbol, Decimal(held), Decimal(100))
    with pytest.raises(InvalidOrder, match=message):
        await adapter.create_order(account, request_)
    assert order_posts(emu) == []


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (
            OrderRequest("ESZ25", Side.BUY, Decimal(1)),
            AssetClassNotSupported,
            "Tradier does not offer futures trading",
        ),
        (OrderRequest("BTCUSD", Side.BUY, Decimal(1)), AssetClassNotSupported, "crypto"),
        (
            OrderRequest("F", Side.BUY, Decimal(1), time_in_force=TimeInForce.IOC),
            InvalidOrder,
            "take time in force day, gtc, not ioc",
        ),
        (
            OrderRequest("F", Side.BUY, Decimal(1), time_in_force=TimeInForce.FOK),
            InvalidOrder,
            "not fok",
        ),
        (OrderRequest("F", Side.BUY, Decimal("0.5")), InvalidOrder, "whole quantities"),
    ],
)
async def test_shared_checks_refuse_before_sending(
    emu: TradierEmulator,
    adapter: TradierAdapter,
    request_: OrderRequest,
    error: type[Exception],
    message: str,
):
    with pytest.raises(error, match=message):
        await adapter.create_order(ref(emu, "margin"), request_)
    assert emu.requests == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            OrderRequest("F", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal("12.005")),
            "The limit price 12.005 has too many decimals. F prices of $1 or more go in whole "
            "cents: use 12.00 or 12.01.",
        ),
        (
            OrderRequest(
                "F",
                Side.BUY,
                Decimal(1),
                OrderType.STOP_LIMIT,
                limit_price=Decimal("0.50001"),
                stop_price=Decimal("0.5"),
            ),
            "The limit price 0.50001 has too many decimals. F prices under $1 go in steps of "
            "0.0001 (4 decimals): use 0.5000 or 0.5001.",
        ),
        (
            OrderRequest(
                "F",
                Side.BUY,
                Decimal(1),
                OrderType.LIMIT,
                limit_price=Decimal(12),
                bracket=Bracket(take_profit=Decimal("13.125")),
            ),
            "The take-profit price 13.125 has too many decimals",
        ),
    ],
)
async def test_sub_penny_stock_prices_are_refused_before_sending(
    emu: TradierEmulator, adapter: TradierAdapter, request_: OrderRequest, message: str
):
    # SEC Rule 612; Tradier does not publish how it words the refusal.
    with pytest.raises(InvalidOrder) as e:
        await adapter.create_order(ref(emu, "margin"), request_)
    assert message in e.value.user_message
    assert order_posts(emu) == []
    await adapter.create_order(
        ref(emu, "margin"),
        OrderRequest("F", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal("0.1234")),
    )
    assert order_posts(emu)[0]["price"] == ["0.1234"]


async def test_vendor_rejections_become_our_errors(emu: TradierEmulator, adapter: TradierAdapter):
    margin = ref(emu, "margin")
    with pytest.raises(InsufficientBuyingPower, match=r"enough buying power.*check /balances"):
        await adapter.create_order(margin, OrderRequest("NVDA", Side.BUY, Decimal(5000)))
    with pytest.raises(SymbolNotFound, match="ZZZZ: symbol not found"):
        await adapter.create_order(margin, OrderRequest("ZZZZ", Side.BUY, Decimal(1)))
    with pytest.raises(InvalidOrder, match="Tradier rejected the order: Extended hours"):
        await adapter.request(
            "POST",
            f"/accounts/{margin.id}/orders",
            environment=LIVE,
            bucket="trading:live",
            write=True,
            form={
                "class": "equity",
                "symbol": "F",
                "side": "buy",
                "quantity": "1",
                "type": "market",
                "duration": "pre",
            },
        )


def test_error_body_shapes() -> None:
    for example in SPEC["error_shape_observed"]["examples"]:
        assert error_messages(example)
    assert error_messages({"errors": {"error": ["a", "b"]}}) == ["a", "b"]
    assert error_messages("Invalid Access Token") == []
    adapter = TradierAdapter(AdapterContext())
    closed = adapter.vendor_error(
        HttpResponse(
            400, {}, {"errors": {"error": "Market is closed."}}, "POST", "/accounts/X/orders"
        )
    )
    assert closed is not None and closed.code == "market-closed"
    other = adapter.vendor_error(
        HttpResponse(400, {}, {"errors": {"error": ["Invalid date"]}}, "GET", "/accounts/X/history")
    )
    assert other is not None and "Invalid date" in other.user_message


async def test_cancel(emu: TradierEmulator, adapter: TradierAdapter):
    margin = ref(emu, "margin")
    order = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    await adapter.cancel_order(margin, order.id)
    assert (await adapter.fetch_order(margin, order_id=order.id)).status is OrderStatus.CANCELLED
    with pytest.raises(OrderNotCancelable, match="it is canceled"):
        await adapter.cancel_order(margin, order.id)
    with pytest.raises(OrderNotFound):
        await adapter.cancel_order(margin, "987654")
    assert len(emu.requests_to(r"/orders/", "DELETE")) == 3


async def test_fetch_order_by_id_and_by_client_id(emu: TradierEmulator, adapter: TradierAdapter):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(
        margin, OrderRequest("F", Side.BUY, Decimal(1), client_order_id="abcDEF123")
    )
    assert (await adapter.fetch_order(margin, order_id=placed.id)).client_order_id == "abcDEF123"
    found = await adapter.fetch_order(margin, client_order_id="abcDEF123")
    assert found.id == placed.id
    listing = emu.requests_to(r"/orders$", "GET")[-1]
    assert listing.query["includeTags"] == "true"  # tags are hidden otherwise
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(margin, client_order_id="nope")
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(margin, order_id="999999")
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(margin, order_id="not-a-number")


async def test_client_id_lookup_pages_through_every_order(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    emu.accounts[margin.id].cash = Decimal(10_000_000)
    emu.set_rate_limit("trading", 1000)
    for i in range(101):
        # An unthrottled bucket: this is set-up, not the adapter under test.
        await adapter.request(
            "POST",
            f"/accounts/{margin.id}/orders",
            environment=LIVE,
            bucket="setup",
            write=True,
            form={
                "class": "equity",
                "symbol": "F",
                "side": "buy",
                "quantity": "1",
                "type": "market",
                "duration": "day",
                "tag": f"T{i}",
            },
        )
    assert (await adapter.fetch_order(margin, client_order_id="T100")).client_order_id == "T100"
    pages = [r.query["page"] for r in emu.requests_to(r"/orders$", "GET")]
    assert pages == ["1", "2"]


async def test_fetch_orders_is_closed_history_newest_first(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    ids = []
    for qty in (1, 2, 3):
        ids.append(
            (await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(qty)))).id
        )
    working = await adapter.create_order(
        margin, OrderRequest("F", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal(5))
    )
    history = await adapter.fetch_orders(margin)
    assert [o.id for o in history] == ids[::-1]
    assert working.id not in {o.id for o in history}
    assert [o.id for o in await adapter.fetch_orders(margin, limit=2)] == ids[:0:-1]
    future = datetime.now(UTC) + timedelta(days=1)
    assert await adapter.fetch_orders(margin, since=future) == []


async def test_history_is_of_orders_that_ended_in_the_window(
    emu: TradierEmulator, adapter: TradierAdapter
) -> None:
    """/history days:1 left out a GTC order placed three days ago and filled today: it was
    judged by create_date, not transaction_date ("Date the order was last updated",
    broker-specs/tradier/documented-examples.json, order_fields)."""
    margin = ref(emu, "margin")
    placed = await adapter.create_order(
        margin,
        OrderRequest(
            "AAPL",
            Side.BUY,
            Decimal(1),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("1.00"),
        ),
    )
    emu.orders[int(placed.id)].create_date = iso_ms(time.time() - 3 * 86400)
    emu.fill(placed.id, 1, "1.00")  # today
    history = await adapter.fetch_orders(margin, since=datetime.now(UTC) - timedelta(days=1))
    assert [o.id for o in history] == [placed.id]


async def test_order_created_while_reading_back_fails_is_still_returned(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    emu.faults.add(Fault(kind="status", path=r"/orders/\d+$", method="GET", status=503))
    order = await adapter.create_order(
        ref(emu, "margin"), OrderRequest("F", Side.BUY, Decimal(1), client_order_id="RB1")
    )
    assert order.status is OrderStatus.PENDING and order.client_order_id == "RB1"
    assert len(emu.orders) == 1


# -- no idempotency: the tag lookup is what prevents duplicates -----------------------------


async def test_lost_create_response_then_lookup_finds_exactly_one(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    emu.faults.add(Fault(kind="lose_response", path=r"/orders$", method="POST", times=1))
    request = OrderRequest("F", Side.BUY, Decimal(3), client_order_id="LOST0001")
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(margin, request)
    assert info.value.maybe_sent is True
    assert len(emu.requests_to(r"/orders$", "POST")) == 1  # never resent by the adapter
    found = await adapter.fetch_order(margin, client_order_id="LOST0001")
    assert found.quantity == 3 and found.status is OrderStatus.FILLED
    assert len(emu.orders_for(margin.id)) == 1


async def test_tradier_does_not_deduplicate_tags_so_the_lookup_must_come_first(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    request = OrderRequest(
        "F",
        Side.BUY,
        Decimal(1),
        OrderType.LIMIT,
        limit_price=Decimal(5),
        client_order_id="DUP00001",
    )
    emu.faults.add(Fault(kind="lose_response", path=r"/orders$", method="POST", times=1))
    with pytest.raises(BrokerUnavailable):
        await adapter.create_order(margin, request)
    # The caller's rule: look up by client order id before any resubmission.
    first = await adapter.fetch_order(margin, client_order_id="DUP00001")
    assert len(emu.orders_for(margin.id)) == 1
    # Resending blindly would have made a second order: the broker does not stop it.
    await adapter.create_order(margin, request)
    assert len(emu.orders_for(margin.id)) == 2
    assert (await adapter.fetch_order(margin, client_order_id="DUP00001")).id == first.id


# -- auth, limits, retries ------------------------------------------------------------------


async def test_expired_token_is_refreshed_mid_call(
    emu: TradierEmulator,
    session: aiohttp.ClientSession,
):
    adapter, tokens = connect(emu, session)
    before = await tokens.access_token()
    emu.expire_access_tokens()
    balance = await adapter.fetch_balance(ref(emu, "margin"))
    assert balance.equity == Decimal(101900)
    assert tokens.refreshes == 1 and emu.oauth[LIVE].refresh_requests == 1
    assert await tokens.access_token() != before
    assert len(emu.requests_to("/oauth/refreshtoken", "POST")) == 1
    assert emu.requests_to("/oauth/accesstoken") == []


async def test_an_order_is_resent_once_after_a_refresh(
    emu: TradierEmulator,
    session: aiohttp.ClientSession,
):
    adapter, tokens = connect(emu, session)
    margin = ref(emu, "margin")
    emu.expire_access_tokens()
    order = await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(1)))
    assert order.status is OrderStatus.FILLED and tokens.refreshes == 1
    assert len(emu.orders_for(margin.id)) == 1  # the 401 attempt created nothing


async def test_unrefreshable_token_means_reconnect(
    emu: TradierEmulator, session: aiohttp.ClientSession
):
    ctx = AdapterContext(
        session=session, api_urls={LIVE: emu.api_url(LIVE)}, tokens=StaticToken("not-a-token")
    )
    with pytest.raises(AuthorizationExpired, match="/connect"):
        await TradierAdapter(ctx).fetch_accounts()


async def test_partner_without_refresh_tokens_gets_authorization_expired(
    session: aiohttp.ClientSession,
):
    async with TradierEmulator(refresh_tokens=False) as emu:
        assert isinstance(emu, TradierEmulator)
        adapter, _ = connect(emu, session)
        emu.expire_access_tokens()
        with pytest.raises(AuthorizationExpired):
            await adapter.fetch_accounts()


async def test_account_of_the_other_environment(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    sandbox = ref(emu, "margin", env=PAPER)
    live_url = {LIVE: emu.api_url(LIVE)}
    assert adapter.ctx.api_urls == live_url
    with pytest.raises(BrokerUnavailable, match="paper is not available"):
        await adapter.fetch_balance(sandbox)
    wrong = AccountRef(sandbox.id, sandbox.type, LIVE)
    with pytest.raises(AuthorizationExpired, match="live and sandbox"):
        await adapter.fetch_balance(wrong)


async def test_429_with_retry_after_is_retried_on_reads(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    emu.faults.add(
        Fault(
            kind="status",
            path="/balances$",
            status=429,
            times=1,
            headers={"Retry-After": "0"},
            body={"fault": "rate"},
        )
    )
    assert (await adapter.fetch_balance(ref(emu, "margin"))).cash == 100000
    assert len(emu.requests_to("/balances$")) == 2


async def test_tradier_429_becomes_rate_limited_with_reset_time(
    emu: TradierEmulator,
    adapter: TradierAdapter,
    monkeypatch: pytest.MonkeyPatch,
):
    margin = ref(emu, "margin")
    waits = NoWait()
    monkeypatch.setattr(base.asyncio, "sleep", waits)
    emu.set_rate_limit("trading", 1)
    await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(1)))
    with pytest.raises(RateLimited) as info:
        await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(1)))
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
    assert len(emu.requests_to(r"/orders$", "POST")) == 2  # the write was not retried
    emu.set_rate_limit("standard", 1)  # already used by the orders' reads
    with pytest.raises(RateLimited) as info:
        await adapter.fetch_balance(margin)
    # Not retried into a window that X-Ratelimit-Expiry says is still closed (it would only
    # be refused again): the member is told how long instead.
    assert info.value.retry_after is not None and 30 < info.value.retry_after <= 60
    assert "before the next request" in info.value.user_message
    assert len(emu.requests_to("/balances$")) == 1 and waits.waits == []


async def test_5xx_on_read_is_retried_and_on_write_is_not(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    emu.faults.add(Fault(kind="status", path="/positions$", status=502, times=2))
    assert len(await adapter.fetch_positions(margin)) == 1
    assert len(emu.requests_to("/positions$")) == 3
    emu.faults.add(Fault(kind="status", path=r"/orders$", method="POST", status=503, times=1))
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(1)))
    assert info.value.maybe_sent is True
    assert len(emu.requests_to(r"/orders$", "POST")) == 1


class NoWait:
    """Stands in for ``asyncio.sleep`` while the HTTP layer retries: notes each positive wait
    and yields at once, so a test sees the delays without sitting them out."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._sleep = asyncio.sleep

    async def __call__(self, delay: float, result: Any = None) -> Any:
        if delay > 0:
            self.waits.append(delay)
        return await self._sleep(0, result)


async def test_a_429_read_waits_a_short_retry_after_and_says_a_long_one(
    emu: TradierEmulator, adapter: TradierAdapter, monkeypatch: pytest.MonkeyPatch
):
    margin = ref(emu, "margin")
    waits = NoWait()
    monkeypatch.setattr(base.asyncio, "sleep", waits)

    def limited(after: str) -> None:
        emu.faults.add(
            Fault(
                kind="status",
                path="/balances$",
                status=429,
                times=1,
                headers={"Retry-After": after},
                body={"fault": "rate"},
            )
        )

    limited("2")
    assert (await adapter.fetch_balance(margin)).cash == 100000
    assert waits.waits == [2.0] and len(emu.requests_to("/balances$")) == 2
    # A member's command never hangs on an hour-long header, nor retries what would only be
    # refused again: the member is told how long.
    limited("3600")
    with pytest.raises(RateLimited, match="asks us to wait 60 minutes before the next request"):
        await adapter.fetch_balance(margin)
    assert waits.waits == [2.0] and len(emu.requests_to("/balances$")) == 3


async def test_read_retries_back_off_exponentially_with_jitter_up_to_a_cap(
    emu: TradierEmulator,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
):
    adapter, _ = connect(emu, session)
    adapter.ctx.read_retries = 10
    margin = ref(emu, "margin")
    waits = NoWait()
    monkeypatch.setattr(base.asyncio, "sleep", waits)
    doubling = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 4.0, 4.0, 4.0]  # capped at 4 s
    # The jitter factor is 0.5 + random(): 1.0 at the midpoint, 0.5 at the bottom.
    for draw, factor in ((0.5, 1.0), (0.0, 0.5)):
        monkeypatch.setattr(base.random, "random", lambda draw=draw: draw)
        waits.waits.clear()
        emu.faults.add(Fault(kind="status", path="/positions$", status=502, times=9))
        assert len(await adapter.fetch_positions(margin)) == 1
        assert waits.waits == pytest.approx([d * factor for d in doubling])


class RecordingLimiters:
    """Notes every take (broker, bucket, owner) and never makes a request wait."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, str, str]] = []

    def get(self, broker: str, rule: RateLimit, owner: str) -> RecordingLimiters.Take:
        return RecordingLimiters.Take(self.taken, (broker, rule.bucket, owner))

    class Take:
        def __init__(self, taken: list[tuple[str, str, str]], key: tuple[str, str, str]) -> None:
            self.taken, self.key = taken, key

        async def acquire(self, amount: float = 1) -> None:
            self.taken.append(self.key)


async def test_every_request_takes_from_its_published_bucket(
    emu: TradierEmulator, session: aiohttp.ClientSession
):
    """Reads, orders and cancels each take one token from the declared per-token bucket of
    their host: a bucket name with no declared limit would go unlimited."""
    adapter, _ = connect(emu, session)
    limiters = RecordingLimiters()
    adapter.ctx.limiters, adapter.ctx.owner = limiters, "conn-7"
    margin = ref(emu, "margin")
    await adapter.fetch_balance(margin)
    order = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    await adapter.cancel_order(margin, order.id)
    # One take per request sent, from the bucket of its kind (Tradier's trading quota for
    # order writes, the standard one for reads).
    sent = [(r.method, r.path.rsplit("/", 1)[-1]) for r in emu.requests]
    assert list(zip(sent, [bucket for _, bucket, _ in limiters.taken], strict=True)) == [
        (("GET", "balances"), "standard:live"),
        (("GET", "positions"), "standard:live"),
        (("POST", "orders"), "trading:live"),
        (("GET", order.id), "standard:live"),
        (("DELETE", order.id), "trading:live"),
    ]
    assert {(b, o) for b, _, o in limiters.taken} == {("tradier", "conn-7")}


# -- the account-events stream ------------------------------------------------------------------


class Stream:
    """Runs ``stream_order_updates`` in a task and hands out updates as they arrive."""

    def __init__(self, adapter: TradierAdapter, accounts: list[AccountRef]) -> None:
        self.updates: asyncio.Queue[OrderUpdate] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run(adapter, accounts))

    async def _run(self, adapter: TradierAdapter, accounts: list[AccountRef]) -> None:
        async for update in adapter.stream_order_updates(accounts, ready=self.ready):
            self.updates.put_nowait(update)

    async def next(self) -> OrderUpdate:
        return await asyncio.wait_for(self.updates.get(), 5)


async def start_stream(
    emu: TradierEmulator, adapter: TradierAdapter, accounts: list[AccountRef]
) -> Stream:
    stream = Stream(adapter, accounts)
    for _ in range(500):
        if emu.stream_count:
            return stream
        await asyncio.sleep(0.01)
    raise AssertionError("the stream did not subscribe")


async def test_stream_fill_partial_cancel_reject_and_clean_end(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin = ref(emu, "margin")
    stream = await start_stream(emu, adapter, [margin])
    # Tradier answers a subscription with nothing: it is ready once sent.
    await asyncio.wait_for(stream.ready.wait(), 5)
    market = await adapter.create_order(
        margin, OrderRequest("F", Side.BUY, Decimal(5), client_order_id="M1")
    )
    new, fill = await stream.next(), await stream.next()
    assert (new.event, new.order.id, new.order.status) == ("new", market.id, OrderStatus.OPEN)
    assert (fill.event, fill.fill_quantity, fill.fill_price) == ("fill", 5, Decimal("11.01"))
    assert (fill.order.symbol, fill.order.client_order_id, fill.order.side) == ("F", "M1", Side.BUY)
    assert fill.execution_id == f"{market.id}-5"
    limit = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    assert (await stream.next()).event == "new"
    emu.send_heartbeat()  # ignored
    emu.fill(limit.id, 4, "10.40")
    partial = await stream.next()
    assert (partial.event, partial.fill_quantity, partial.fill_price) == (
        "partial_fill",
        4,
        Decimal("10.40"),
    )
    assert partial.order.status is OrderStatus.PARTIALLY_FILLED
    assert partial.order.remaining_quantity == 6
    emu.fill(limit.id, 6, "10.45")
    rest = await stream.next()
    assert (rest.event, rest.fill_quantity, rest.fill_price) == ("fill", 6, Decimal("10.45"))
    assert rest.order.average_fill_price == Decimal("10.43")
    to_cancel = await adapter.create_order(
        margin, OrderRequest("F", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal(5))
    )
    await stream.next()
    await adapter.cancel_order(margin, to_cancel.id)
    canceled = await stream.next()
    assert (canceled.event, canceled.order.status) == ("canceled", OrderStatus.CANCELLED)
    assert canceled.fill_quantity is None
    to_reject = await adapter.create_order(
        margin, OrderRequest("F", Side.BUY, Decimal(1), OrderType.LIMIT, limit_price=Decimal(5))
    )
    await stream.next()
    emu.reject(to_reject.id, "Order rejected by risk")
    rejected = await stream.next()
    assert rejected.event == "rejected"
    assert rejected.order.reject_reason == "Order rejected by risk"  # read from the order
    await emu.drop_streams()
    await asyncio.wait_for(stream.task, 5)  # ends cleanly; reconnecting is the caller's job
    assert stream.updates.empty()
    # Per order: one read-back after placing, one read of the fields events lack; plus one
    # read for the rejection reason. Not one read per event.
    assert len(emu.requests_to(r"/orders/\d+$", "GET")) == 4 + 4 + 1
    assert emu.spec_violations == []


async def test_stream_reports_only_the_accounts_asked_for(
    emu: TradierEmulator,
    adapter: TradierAdapter,
):
    margin, cash = ref(emu, "margin"), ref(emu, "cash")
    stream = await start_stream(emu, adapter, [cash])
    await adapter.create_order(margin, OrderRequest("F", Side.BUY, Decimal(1)))
    order = await adapter.create_order(cash, OrderRequest("F", Side.BUY, Decimal(1)))
    update = await stream.next()
    assert update.order.id == order.id and update.order.account_id == cash.id
    stream.task.cancel()


async def test_stream_refused_session_raises(emu: TradierEmulator, adapter: TradierAdapter):
    ticks = itertools.count(start=time.time(), step=301)
    emu.clock = lambda: next(ticks)  # every session is older than five minutes at connect time
    adapter.stream_idle_timeout = 5  # fail fast if the refusal were missed
    with pytest.raises(BrokerUnavailable, match="refused the session"):
        async for _ in adapter.stream_order_updates([ref(emu, "margin")]):
            pass


async def test_documented_events_map_without_fill_details(adapter: TradierAdapter):
    """The documented events carry no symbol, side or last fill price, and last_fill_quantity
    0.0 even on the fill: the adapter reads the order once and derives the fill."""
    margin = AccountRef("6YA", AccountType.MARGIN, LIVE)
    adapter._order_details[("6YA", "1107075")] = {
        "symbol": "SPY",
        "side": "buy",
        "quantity": 2.0,
        "duration": "day",
        "tag": "X1",
    }
    seen: dict[str, tuple[Decimal, Decimal]] = {}
    events = SPEC["account_events_ws"]["order_events"]
    updates = [await adapter._update_from_event(margin, e, seen) for e in events]
    assert [u.event for u in updates] == ["new", "pending", "fill"]
    fill = updates[-1]
    assert (fill.fill_quantity, fill.fill_price) == (Decimal(2), Decimal(10))
    assert fill.order.symbol == "SPY" and fill.order.client_order_id == "X1"
    assert fill.order.limit_price == Decimal(10) and fill.order.stop_price is None
    assert fill.at == datetime(2021, 8, 9, 20, 5, 35, 277000, tzinfo=UTC)


def test_order_mapping_quirks() -> None:
    assert items("null", "order") == []
    assert items({"order": {"id": 1}}, "order") == [{"id": 1}]
    raw: dict[str, Any] = {
        "id": 228175,
        "type": "limit",
        "symbol": "AAPL",
        "side": "sell_short",
        "quantity": 50.0,
        "status": "expired",
        "duration": "pre",
        "price": 22.0,
        "avg_fill_price": 0.0,
        "exec_quantity": 0.0,
        "last_fill_price": 0.0,
        "last_fill_quantity": 0.0,
        "remaining_quantity": 0.0,
        "create_date": "2018-06-01T12:02:29.682Z",
        "transaction_date": "2018-06-01T12:30:02.385Z",
        "class": "equity",
    }
    order = order_from(raw, "VA1")
    assert (order.side, order.status, order.time_in_force) == (
        Side.SELL,
        OrderStatus.EXPIRED,
        TimeInForce.DAY,
    )
    assert order.average_fill_price is None and order.limit_price == Decimal(22)
    assert order_from({**raw, "status": "error"}, "VA1").status is OrderStatus.REJECTED
    option = order_from(
        {**raw, "class": "option", "option_symbol": "AAPL250117C00150000", "side": "buy_to_open"},
        "VA1",
    )
    assert option.asset_class is AssetClass.OPTION and option.symbol == "AAPL250117C00150000"
    assert option.side is Side.BUY


# -- brackets: Tradier's otoco and oto advanced orders -------------------------------------------


def bracketed(
    side: Side = Side.BUY,
    order_type: OrderType = OrderType.LIMIT,
    bracket: Bracket | None = None,
    **kw: Any,
) -> OrderRequest:
    """10 F with a limit entry at 10.50 (it rests), take profit 12, stop loss 10."""
    if order_type is OrderType.LIMIT:
        kw.setdefault("limit_price", Decimal("10.50"))
    return OrderRequest(
        "F",
        side,
        Decimal(10),
        order_type,
        TimeInForce.GTC,
        bracket=bracket or Bracket(Decimal(12), Decimal(10)),
        **kw,
    )


def legs_of(post: dict[str, list[str]], index: int) -> dict[str, str]:
    return {k[: -len(f"[{index}]")]: v[0] for k, v in post.items() if k.endswith(f"[{index}]")}


async def test_a_bracket_is_sent_as_the_documented_otoco_and_read_back_with_its_exits(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    order = await adapter.create_order(margin, bracketed(client_order_id="BR1"))
    (post,) = order_posts(emu)
    assert post == {
        "class": ["otoco"],
        "duration": ["gtc"],
        "symbol[0]": ["F"],
        "side[0]": ["buy"],
        "quantity[0]": ["10"],
        "type[0]": ["limit"],
        "price[0]": ["10.50"],
        "symbol[1]": ["F"],
        "side[1]": ["sell"],
        "quantity[1]": ["10"],
        "type[1]": ["limit"],
        "price[1]": ["12"],
        "symbol[2]": ["F"],
        "side[2]": ["sell"],
        "quantity[2]": ["10"],
        "type[2]": ["stop"],
        "stop[2]": ["10"],
        "tag": ["BR1"],
    }
    (advanced,) = emu.advanced.values()
    entry_leg, tp_leg, sl_leg = advanced.legs
    # The entry under the id Tradier answered with (the one to look up and cancel); its exits
    # named by their own ids, so that their fills can be told.
    assert (order.id, order.status, order.client_order_id) == (
        str(advanced.id),
        OrderStatus.OPEN,
        "BR1",
    )
    assert (order.symbol, order.side, order.quantity, order.limit_price) == (
        "F",
        Side.BUY,
        Decimal(10),
        Decimal("10.50"),
    )
    assert order.exit_ids == (str(tp_leg), str(sl_leg)) and order.parent_id is None
    opened = {o.id: o for o in await adapter.fetch_open_orders(margin)}
    assert set(opened) == {str(advanced.id), str(tp_leg), str(sl_leg)}
    tp, sl = opened[str(tp_leg)], opened[str(sl_leg)]
    assert (tp.order_type, tp.limit_price, tp.side, tp.status) == (
        OrderType.LIMIT,
        Decimal(12),
        Side.SELL,
        OrderStatus.PENDING,  # held until the entry fills
    )
    assert (sl.order_type, sl.stop_price, sl.quantity) == (OrderType.STOP, Decimal(10), 10)
    assert tp.parent_id == sl.parent_id == str(advanced.id)
    assert tp.client_order_id is None and sl.client_order_id is None  # not the entry's intent
    assert str(entry_leg) not in opened  # the entry's own leg is the entry, listed once
    assert (await adapter.fetch_order(margin, client_order_id="BR1")).id == order.id
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("request_", "klass", "exits"),
    [
        (
            bracketed(bracket=Bracket(Decimal(12), Decimal(10), Decimal("9.90"))),
            "otoco",
            [
                {"type": "limit", "price": "12", "side": "sell"},
                {"type": "stop_limit", "stop": "10", "price": "9.90", "side": "sell"},
            ],
        ),
        (
            bracketed(bracket=Bracket(take_profit=Decimal(12))),
            "oto",
            [{"type": "limit", "price": "12", "side": "sell"}],
        ),
        (
            bracketed(bracket=Bracket(stop_loss=Decimal(10))),
            "oto",
            [{"type": "stop", "stop": "10", "side": "sell"}],
        ),
        (
            OrderRequest(
                "F",
                Side.SELL,
                Decimal(10),
                OrderType.STOP,
                stop_price=Decimal("10.80"),
                bracket=Bracket(Decimal(9), Decimal(12)),
            ),
            "otoco",
            [
                {"type": "limit", "price": "9", "side": "buy_to_cover"},
                {"type": "stop", "stop": "12", "side": "buy_to_cover"},
            ],
        ),
    ],
)
async def test_bracket_forms_for_each_kind_of_exit(
    emu: TradierEmulator,
    adapter: TradierAdapter,
    request_: OrderRequest,
    klass: str,
    exits: list[dict[str, str]],
):
    order = await adapter.create_order(ref(emu, "margin"), request_)
    (post,) = order_posts(emu)
    assert post["class"] == [klass] and "symbol" not in post and "type" not in post
    for i, expected in enumerate(exits, start=1):
        assert legs_of(post, i) == {"symbol": "F", "quantity": "10", **expected}
    assert not legs_of(post, len(exits) + 1)
    assert len(order.exit_ids) == len(exits)
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (bracketed(order_type=OrderType.MARKET), "only on a limit, stop or stop-limit entry"),
        (bracketed(bracket=Bracket()), "needs a take-profit price, a stop-loss price, or both"),
        (
            bracketed(bracket=Bracket(Decimal(12), None, Decimal("9.9"))),
            "stop-loss limit price needs a stop-loss price",
        ),
        (bracketed(bracket=Bracket(Decimal(0), Decimal(10))), "more than zero"),
        (
            bracketed(bracket=Bracket(Decimal(12), Decimal(10), stop_loss_trail_amount=Decimal(1))),
            "Tradier takes no trailing stop-loss in a take-profit/stop-loss bracket",
        ),
    ],
)
async def test_brackets_tradier_does_not_take_are_refused_before_sending(
    emu: TradierEmulator, adapter: TradierAdapter, request_: OrderRequest, message: str
):
    with pytest.raises(InvalidOrder, match=message):
        await adapter.create_order(ref(emu, "margin"), request_)
    assert emu.requests == []


async def test_a_bracket_on_an_order_that_closes_a_position_is_refused(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")  # holds 10 AAPL
    sell = OrderRequest(
        "AAPL",
        Side.SELL,
        Decimal(10),
        OrderType.LIMIT,
        limit_price=Decimal(200),
        bracket=Bracket(Decimal(180), Decimal(210)),
    )
    with pytest.raises(InvalidOrder, match="needs an order that opens a position"):
        await adapter.create_order(margin, sell)
    assert order_posts(emu) == []


async def test_a_bracket_is_followed_from_entry_to_the_exit_that_fills(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(margin, bracketed(client_order_id="BR2"))
    tp_id, sl_id = placed.exit_ids
    emu.set_quote("F", "10.40", "10.45")
    entry = await adapter.fetch_order(margin, order_id=placed.id)
    assert (entry.status, entry.filled_quantity, entry.average_fill_price) == (
        OrderStatus.FILLED,
        Decimal(10),
        Decimal("10.45"),
    )
    assert entry.exit_ids == (tp_id, sl_id) and entry.client_order_id == "BR2"
    assert [(await adapter.fetch_order(margin, order_id=i)).status for i in (tp_id, sl_id)] == [
        OrderStatus.OPEN,
        OrderStatus.OPEN,
    ]
    emu.set_quote("F", "12.00", "12.05")
    tp = await adapter.fetch_order(margin, order_id=tp_id)
    sl = await adapter.fetch_order(margin, order_id=sl_id)
    assert (tp.status, tp.filled_quantity, tp.average_fill_price) == (
        OrderStatus.FILLED,
        Decimal(10),
        Decimal(12),
    )
    assert sl.status is OrderStatus.CANCELLED and tp.parent_id == sl.parent_id == placed.id
    assert await adapter.fetch_open_orders(margin) == []
    history = {o.id: o.status for o in await adapter.fetch_orders(margin)}
    assert history == {
        placed.id: OrderStatus.FILLED,
        tp_id: OrderStatus.FILLED,
        sl_id: OrderStatus.CANCELLED,
    }
    assert emu.spec_violations == []


async def test_cancelling_an_exit_cancels_the_bracket_s_working_orders(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(margin, bracketed(limit_price=Decimal("11.05")))
    assert placed.status is OrderStatus.FILLED  # a marketable entry: its exits work
    tp_id, sl_id = placed.exit_ids
    await adapter.cancel_order(margin, tp_id)
    assert [(await adapter.fetch_order(margin, order_id=i)).status for i in (tp_id, sl_id)] == [
        OrderStatus.CANCELLED,
        OrderStatus.CANCELLED,
    ]
    with pytest.raises(OrderNotCancelable, match="it is cancelled"):
        await adapter.cancel_order(margin, sl_id)
    # The leg was refused, then the bracket cancelled by the id Tradier placed it under.
    deletes = [r.path.rsplit("/", 1)[1] for r in emu.requests_to(r"/orders/", "DELETE")]
    assert deletes == [tp_id, placed.id, sl_id]
    assert emu.accounts[margin.id].positions["F"].quantity == 10
    resting = await adapter.create_order(margin, bracketed())
    await adapter.cancel_order(margin, resting.id)
    assert (await adapter.fetch_order(margin, order_id=resting.id)).status is (
        OrderStatus.CANCELLED
    )
    assert {(await adapter.fetch_order(margin, order_id=i)).status for i in resting.exit_ids} == {
        OrderStatus.CANCELLED
    }


async def test_stream_reports_a_bracket_s_entry_and_exits_as_tradecord_s_orders(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    stream = await start_stream(emu, adapter, [margin])
    await asyncio.wait_for(stream.ready.wait(), 5)
    placed = await adapter.create_order(margin, bracketed(client_order_id="BR3"))
    tp_id, sl_id = placed.exit_ids
    opened = [await stream.next() for _ in range(3)]
    assert [(u.order.id, u.order.status) for u in opened] == [
        (placed.id, OrderStatus.OPEN),
        (tp_id, OrderStatus.PENDING),
        (sl_id, OrderStatus.PENDING),
    ]
    assert opened[0].order.client_order_id == "BR3" and opened[0].order.exit_ids == (tp_id, sl_id)
    emu.set_quote("F", "10.40", "10.45")
    fill, *started = [await stream.next() for _ in range(3)]
    assert (fill.order.id, fill.event, fill.fill_quantity, fill.fill_price) == (
        placed.id,
        "fill",
        Decimal(10),
        Decimal("10.45"),
    )
    assert (fill.order.symbol, fill.order.client_order_id) == ("F", "BR3")
    assert [(u.order.id, u.event) for u in started] == [(tp_id, "new"), (sl_id, "new")]
    emu.set_quote("F", "9.90", "9.95")
    stopped, cancelled = await stream.next(), await stream.next()
    assert (stopped.order.id, stopped.event, stopped.fill_quantity, stopped.fill_price) == (
        sl_id,
        "fill",
        Decimal(10),
        Decimal("9.90"),
    )
    assert (stopped.order.side, stopped.order.parent_id) == (Side.SELL, placed.id)
    assert stopped.order.client_order_id is None  # an exit is not the entry's intent
    assert (cancelled.order.id, cancelled.event) == (tp_id, "canceled")
    stream.task.cancel()
    assert emu.spec_violations == []


async def test_an_event_about_the_bracket_as_a_whole_reports_its_entry(
    emu: TradierEmulator, adapter: TradierAdapter
):
    """Tradier documents no fields of an otoco's own: should an event carry its id, the
    entry is read again rather than the event's status believed."""
    margin = ref(emu, "margin")
    placed = await adapter.create_order(margin, bracketed(client_order_id="BR4"))
    whole = {"id": int(placed.id), "event": "order", "status": "filled", "exec_quantity": 10.0}
    update = await adapter._update_from_event(margin, {**whole, "account": margin.id}, {})
    assert (update.order.id, update.order.status, update.fill_quantity) == (
        placed.id,
        OrderStatus.OPEN,
        None,
    )
    assert update.order.client_order_id == "BR4" and update.order.exit_ids == placed.exit_ids


def test_an_otoco_maps_from_its_legs() -> None:
    """The entry and exits come from the legs, whatever the advanced order itself carries."""
    leg = {
        "type": "limit",
        "symbol": "SPY",
        "quantity": 5.0,
        "duration": "gtc",
        "avg_fill_price": 0.0,
        "exec_quantity": 0.0,
        "create_date": "2024-06-12T21:13:36.076Z",
        "transaction_date": "2024-06-12T21:13:36.076Z",
        "class": "equity",
    }
    raw = {
        "id": 500,
        "status": "open",
        "class": "otoco",
        "num_legs": 3,
        "tag": "T5",
        "leg": [
            {**leg, "id": 501, "side": "sell_short", "price": 600.0, "status": "open"},
            {**leg, "id": 502, "side": "buy_to_cover", "price": 550.0, "status": "pending"},
            {
                **leg,
                "id": 503,
                "side": "buy_to_cover",
                "type": "stop",
                "stop_price": 620.0,
                "status": "pending",
            },
        ],
    }
    entry, take_profit, stop_loss = orders_from(raw, "VA1")
    assert (entry.id, entry.symbol, entry.side, entry.quantity) == ("500", "SPY", Side.SELL, 5)
    assert (entry.limit_price, entry.client_order_id, entry.exit_ids) == (
        Decimal(600),
        "T5",
        ("502", "503"),
    )
    assert (take_profit.side, take_profit.limit_price) == (Side.BUY, Decimal(550))
    assert (stop_loss.order_type, stop_loss.stop_price) == (OrderType.STOP, Decimal(620))
    assert stop_loss.parent_id == "500" and stop_loss.status is OrderStatus.PENDING
    assert orders_from({**raw, "class": "multileg"}, "VA1")[0].exit_ids == ()  # not a bracket


# -- spec conformance ---------------------------------------------------------------------------


async def test_every_adapter_request_conforms(emu: TradierEmulator, adapter: TradierAdapter):
    margin, cash = ref(emu, "margin"), ref(emu, "cash")
    stream = await start_stream(emu, adapter, [margin, cash])
    await adapter.fetch_accounts()
    await adapter.fetch_balance(margin)
    await adapter.fetch_balance(cash)
    await adapter.fetch_positions(margin)
    await adapter.fetch_quote("SPY")
    await adapter.fetch_market_state()
    for req in (
        OrderRequest("F", Side.BUY, Decimal(2), client_order_id="C1"),
        OrderRequest(
            "F",
            Side.SELL,
            Decimal(2),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("10.99"),
        ),
        OrderRequest("F", Side.SELL, Decimal(2), OrderType.STOP, stop_price=Decimal("9.5")),
        OrderRequest(
            "F",
            Side.BUY,
            Decimal(2),
            OrderType.STOP_LIMIT,
            limit_price=Decimal("12.25"),
            stop_price=Decimal("12"),
        ),
    ):
        await adapter.create_order(margin, req)
    open_orders = await adapter.fetch_open_orders(margin)
    await adapter.cancel_order(margin, open_orders[0].id)
    await adapter.fetch_orders(margin, since=datetime.now(UTC) - timedelta(hours=1))
    await adapter.fetch_order(margin, client_order_id="C1")
    await adapter.fetch_order(margin, order_id=open_orders[-1].id)
    await stream.next()
    await emu.drop_streams()
    await asyncio.wait_for(stream.task, 5)
    assert emu.spec_violations == []


# -- changing a working order (PUT /accounts/{id}/orders/{order_id}) ----------------------------


def order_puts(emu: TradierEmulator) -> list[dict[str, list[str]]]:
    return [parse_qs(r.body.decode()) for r in emu.requests_to(r"/orders/\d+$", "PUT")]


def test_tradier_changes_prices_not_quantities() -> None:
    assert TradierAdapter.capabilities.replace == {"limit_price", "stop_price"}


async def test_replace_sends_the_order_s_type_and_duration_with_its_prices_as_changed(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(
        margin,
        OrderRequest(
            "F",
            Side.BUY,
            Decimal(10),
            OrderType.STOP_LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal("12.25"),
            stop_price=Decimal("12"),
        ),
    )
    old = await adapter.fetch_order(margin, order_id=placed.id)
    new = await adapter.replace_order(margin, old, OrderChange(stop_price=Decimal("11.90")))
    assert order_puts(emu) == [
        {"type": ["stop_limit"], "duration": ["gtc"], "price": ["12.25"], "stop": ["11.90"]}
    ]
    assert (new.id, new.status, new.order_type) == (old.id, OrderStatus.OPEN, old.order_type)
    assert (new.limit_price, new.stop_price, new.quantity) == (
        Decimal("12.25"),
        Decimal("11.9"),
        Decimal(10),
    )
    # Tradier's pre and post durations are kept, though Tradecord shows them as day (a pre
    # order placed at Tradier itself: Tradecord places day and gtc orders only).
    placed = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    emu.orders[int(placed.id)].duration = "pre"
    pre = await adapter.fetch_order(margin, order_id=placed.id)
    assert pre.time_in_force is TimeInForce.DAY
    await adapter.replace_order(margin, pre, OrderChange(limit_price=Decimal("12.30")))
    assert order_puts(emu)[-1] == {"type": ["limit"], "duration": ["pre"], "price": ["12.30"]}
    assert emu.spec_violations == []


async def test_replacing_an_order_that_ended_meanwhile_is_order_not_replaceable(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    stale = await adapter.fetch_order(margin, order_id=placed.id)
    emu.fill(placed.id, 10, "10.5")
    with pytest.raises(OrderNotReplaceable, match="it is filled") as e:
        await adapter.replace_order(margin, stale, OrderChange(limit_price=Decimal("10.6")))
    assert isinstance(e.value.__cause__, InvalidOrder)
    assert "cannot be changed: it is filled" in e.value.__cause__.user_message
    assert len(order_puts(emu)) == 1  # sent, refused by Tradier, never resent


async def test_a_refusal_of_a_working_order_stays_the_vendor_s_reason(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    old = await adapter.fetch_order(margin, order_id=placed.id)
    emu.faults.add(
        Fault(
            kind="status",
            method="PUT",
            status=400,
            body={"errors": {"error": "Price is too far from the market."}},
            times=1,
        )
    )
    with pytest.raises(InvalidOrder, match="Tradier refused the change: Price is too far") as e:
        await adapter.replace_order(margin, old, OrderChange(limit_price=Decimal("10.6")))
    assert not isinstance(e.value, OrderNotReplaceable)
    with pytest.raises(InsufficientBuyingPower):
        await adapter.replace_order(margin, old, OrderChange(limit_price=Decimal("99999")))


async def test_a_change_not_read_back_is_still_returned(
    emu: TradierEmulator, adapter: TradierAdapter
):
    margin = ref(emu, "margin")
    adapter.ctx.read_retries = 1
    placed = await adapter.create_order(
        margin,
        OrderRequest("F", Side.BUY, Decimal(10), OrderType.LIMIT, limit_price=Decimal("10.5")),
    )
    old = await adapter.fetch_order(margin, order_id=placed.id)
    emu.faults.add(Fault(kind="status", method="GET", path=r"/orders", status=503))
    new = await adapter.replace_order(margin, old, OrderChange(limit_price=Decimal("10.6")))
    assert (new.id, new.limit_price) == (old.id, Decimal("10.6"))
    assert emu.orders[int(old.id)].price == Decimal("10.6")


async def test_an_order_of_a_bracket_is_not_changed(emu: TradierEmulator, adapter: TradierAdapter):
    margin = ref(emu, "margin")
    placed = await adapter.create_order(margin, bracketed())
    entry = await adapter.fetch_order(margin, order_id=placed.id)
    exit_ = await adapter.fetch_order(margin, order_id=entry.exit_ids[0])
    for order in (entry, exit_):
        with pytest.raises(InvalidOrder, match="bracket"):
            await adapter.replace_order(margin, order, OrderChange(limit_price=Decimal("10.6")))
    assert order_puts(emu) == []


# -- extended hours -----------------------------------------------------------------------------

# exchange_calendars trips a pandas deprecation inside its own code; nothing to act on here.
CALENDAR_WARNING = pytest.mark.filterwarnings(
    "ignore:.*drops timezone information:DeprecationWarning"
)
NEW_YORK_TZ = ZoneInfo("America/New_York")


def new_york(*args: int) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK_TZ)  # type: ignore[misc]


def extended(symbol: str = "F", limit: str = "11.50", **kw: Any) -> OrderRequest:
    return OrderRequest(
        symbol,
        Side.BUY,
        Decimal(2),
        OrderType.LIMIT,
        limit_price=Decimal(limit),
        extended_hours=True,
        **kw,
    )


def at(adapter: TradierAdapter, when: datetime) -> None:
    adapter.ctx.extra["clock"] = lambda: when


@CALENDAR_WARNING
@pytest.mark.parametrize(
    ("when", "duration"),
    [
        (new_york(2026, 12, 1, 6, 59), None),  # overnight on a trading day
        (new_york(2026, 12, 1, 7, 0), "pre"),
        (new_york(2026, 12, 1, 9, 23, 59), "pre"),
        (new_york(2026, 12, 1, 9, 24), "day"),  # the pre-market is over: wait for the open
        (new_york(2026, 12, 1, 15, 59), "day"),
        (new_york(2026, 12, 1, 16, 0), "post"),
        (new_york(2026, 12, 1, 19, 54, 59), "post"),
        (new_york(2026, 12, 1, 19, 55), None),
        (new_york(2026, 11, 27, 13, 0), "post"),  # the day after Thanksgiving closes at 13:00
        (new_york(2026, 11, 27, 16, 55), None),
        (new_york(2026, 11, 26, 10, 0), None),  # Thanksgiving
        (new_york(2026, 11, 28, 10, 0), None),  # Saturday
    ],
)
def test_extended_duration_by_the_session(when: datetime, duration: str | None) -> None:
    assert extended_duration(when) == duration


@CALENDAR_WARNING
@pytest.mark.parametrize(
    ("when", "reach"),
    [
        (new_york(2026, 12, 1, 8, 0), ExtendedReach("pre-market", new_york(2026, 12, 1, 9, 24))),
        (new_york(2026, 12, 1, 11, 0), ExtendedReach("regular", new_york(2026, 12, 1, 16, 0))),
        # The day after Thanksgiving closes at 13:00: so does a day order sent then.
        (new_york(2026, 11, 27, 11, 0), ExtendedReach("regular", new_york(2026, 11, 27, 13, 0))),
        (new_york(2026, 12, 1, 17, 0), None),  # a post order ends with the day, as elsewhere
    ],
)
def test_an_extended_order_at_tradier_works_in_one_session(
    adapter: TradierAdapter, when: datetime, reach: ExtendedReach | None
) -> None:
    """A pre order expires as the pre-market ends, a day order sent in regular hours at the
    close: the card says so, since Alpaca's and TradeStation's carry on through the day."""
    at(adapter, when)
    assert adapter.extended_hours_reach() == reach


@CALENDAR_WARNING
@pytest.mark.parametrize(
    ("when", "state", "duration", "status"),
    [
        # A pre or post limit fills in its session; one sent in regular hours is a day order.
        (new_york(2026, 12, 1, 8, 0), "premarket", "pre", OrderStatus.FILLED),
        (new_york(2026, 12, 1, 9, 26), "premarket", "day", OrderStatus.OPEN),
        (new_york(2026, 12, 1, 11, 0), "open", "day", OrderStatus.FILLED),
        (new_york(2026, 12, 1, 17, 0), "postmarket", "post", OrderStatus.FILLED),
    ],
)
async def test_an_extended_hours_order_goes_out_for_the_session_it_is_sent_in(
    emu: TradierEmulator,
    adapter: TradierAdapter,
    when: datetime,
    state: str,
    duration: str,
    status: OrderStatus,
) -> None:
    margin = ref(emu, "margin")
    at(adapter, when)
    emu.set_market_state(state)
    order = await adapter.create_order(margin, extended(client_order_id="TC00000000000000000x1"))
    assert order_posts(emu)[-1]["duration"] == [duration]
    assert order.status is status
    assert order.extended_hours is (duration != "day")
    assert order.time_in_force is TimeInForce.DAY
    found = await adapter.fetch_order(margin, client_order_id="TC00000000000000000x1")
    assert (found.id, found.extended_hours) == (order.id, order.extended_hours)
    assert emu.spec_violations == []


@CALENDAR_WARNING
@pytest.mark.parametrize(
    ("when", "opens"),
    [
        (new_york(2026, 12, 1, 3, 0), "Tuesday 1 December at 07:00"),  # overnight
        (new_york(2026, 12, 1, 19, 58), "Wednesday 2 December at 07:00"),  # after the post
        (new_york(2026, 11, 28, 12, 0), "Monday 30 November at 07:00"),  # weekend
        (new_york(2026, 11, 26, 12, 0), "Friday 27 November at 07:00"),  # Thanksgiving
    ],
)
async def test_an_extended_hours_order_is_refused_when_no_session_is_left(
    emu: TradierEmulator, adapter: TradierAdapter, when: datetime, opens: str
) -> None:
    margin = ref(emu, "margin")
    at(adapter, when)
    with pytest.raises(MarketClosed, match=f"next pre-market session opens {opens} New York"):
        adapter.check_order(margin, extended())
    with pytest.raises(MarketClosed, match="a day or GTC order, which waits for the open"):
        await adapter.create_order(margin, extended())
    assert order_posts(emu) == []
    # Without extended hours it is an ordinary day order, left to wait for the open.
    adapter.check_order(margin, dataclasses.replace(extended(), extended_hours=False))


@pytest.mark.parametrize(
    ("duration", "tif", "is_extended"),
    [
        ("pre", TimeInForce.DAY, True),
        ("post", TimeInForce.DAY, True),
        ("day", TimeInForce.DAY, False),
        ("gtc", TimeInForce.GTC, False),
    ],
)
def test_pre_and_post_read_back_as_extended_hours_day_orders(
    duration: str, tif: TimeInForce, is_extended: bool
) -> None:
    raw = {"id": 7, "type": "limit", "symbol": "F", "side": "buy", "quantity": 2.0}
    order = order_from({**raw, "price": 11.5, "duration": duration, "status": "open"}, "A1")
    assert (order.time_in_force, order.extended_hours) == (tif, is_extended)


@CALENDAR_WARNING
async def test_a_pre_market_order_keeps_its_duration_when_changed(
    emu: TradierEmulator, adapter: TradierAdapter
) -> None:
    margin = ref(emu, "margin")
    at(adapter, new_york(2026, 12, 1, 8, 0))
    emu.set_market_state("premarket")
    placed = await adapter.create_order(margin, extended(limit="10.50"))
    assert placed.status is OrderStatus.OPEN and placed.extended_hours
    # The replace sends the order's own duration, whatever the clock says by then.
    at(adapter, new_york(2026, 12, 1, 9, 0))
    changed = await adapter.replace_order(margin, placed, OrderChange(limit_price=Decimal("10.6")))
    assert order_puts(emu)[-1]["duration"] == ["pre"]
    assert (changed.limit_price, changed.extended_hours) == (Decimal("10.6"), True)
    assert emu.orders[int(placed.id)].duration == "pre"
