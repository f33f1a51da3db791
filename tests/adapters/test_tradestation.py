"""The TradeStation adapter against the TradeStation emulator (127.0.0.1 only).

Every test runs with the emulator validating requests against the vendor's OpenAPI file and
its own answers too; the autouse fixture fails any test whose traffic did not conform.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.base import AdapterContext, HttpResponse
from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerError,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    MarketClosed,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotReplaceable,
    OrderStateUnknown,
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
from adapters.tradestation import (
    JOURNAL,
    STATUS_MAP,
    TradeStationAdapter,
    map_order,
    map_status,
    rejection_error,
    vendor_symbol,
)
from emulators.common import Fault
from emulators.tradestation import TradeStationEmulator
from emulators.tradestation.spec import SPEC_PATH
from emulators.tradestation.testing import EmulatorTokens, sign_in

LIVE, PAPER = Environment.LIVE, Environment.PAPER
CASH = AccountRef("11827341", AccountType.CASH, LIVE)
MARGIN = AccountRef("11827342", AccountType.MARGIN, LIVE)
FUTURES = AccountRef("11827343", AccountType.FUTURES, LIVE)
CRYPTO = AccountRef("11827344C", AccountType.CRYPTO, LIVE)
SIM_MARGIN = AccountRef("SIM1182734M", AccountType.MARGIN, PAPER)
SIM_FUTURES = AccountRef("SIM1182734F", AccountType.FUTURES, PAPER)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[TradeStationEmulator]:
    kwargs: dict[str, Any] = {"validate_responses": True, "heartbeat_interval": 3600}
    if "clock" in request.fixturenames:
        kwargs["clock"] = request.getfixturevalue("clock")
    emulator = TradeStationEmulator(**kwargs)
    await emulator.start()
    yield emulator
    await emulator.stop()
    # Every request the adapter sent, and every answer, conformed to the vendor's spec.
    assert emulator.spec_violations == []
    assert emulator.response_violations == []


@pytest.fixture(autouse=True)
def _fresh_journal() -> None:
    JOURNAL.clear()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def tokens(emu: TradeStationEmulator, session: aiohttp.ClientSession) -> EmulatorTokens:
    return EmulatorTokens(session, emu.token_url, await sign_in(session, emu))


def make_adapter(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, tokens: EmulatorTokens, **ctx: Any
) -> TradeStationAdapter:
    return TradeStationAdapter(
        AdapterContext(session=session, api_urls=emu.api_urls, tokens=tokens, **ctx)
    )


@pytest.fixture
def adapter(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, tokens: EmulatorTokens
) -> TradeStationAdapter:
    return make_adapter(emu, session, tokens)


def buy(symbol: str, qty: int | str, **kw: Any) -> OrderRequest:
    return OrderRequest(symbol=symbol, side=Side.BUY, quantity=Decimal(str(qty)), **kw)


def sell(symbol: str, qty: int | str, **kw: Any) -> OrderRequest:
    return OrderRequest(symbol=symbol, side=Side.SELL, quantity=Decimal(str(qty)), **kw)


def posted(emu: TradeStationEmulator) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in emu.requests_to(r"/orderexecution/orders$", "POST")]


# -- declarations ------------------------------------------------------------------------


def test_declarations() -> None:
    assert get_adapter_class("tradestation") is TradeStationAdapter
    oauth = TradeStationAdapter.oauth
    assert oauth is not None
    assert oauth.authorize_url == "https://signin.tradestation.com/authorize"
    assert oauth.token_url == "https://signin.tradestation.com/oauth/token"
    assert oauth.revoke_url == "https://signin.tradestation.com/oauth/revoke"
    assert oauth.extra_authorize_params == {"audience": "https://api.tradestation.com"}
    assert set(oauth.scopes) == {"openid", "offline_access", "ReadAccount", "MarketData", "Trade"}
    assert oauth.pkce is False and oauth.client_auth == "client_secret_post"
    assert TradeStationAdapter.default_api_urls == {
        LIVE: "https://api.tradestation.com",
        PAPER: "https://sim-api.tradestation.com",
    }
    caps = TradeStationAdapter.capabilities
    assert caps.account_types_for(AssetClass.FUTURE) == [AccountType.FUTURES]
    assert caps.account_types_for(AssetClass.EQUITY) == [AccountType.CASH, AccountType.MARGIN]
    assert caps.order_stream and caps.brackets and not caps.fractional
    # Whole shares and contracts: a quantity takes no decimals.
    assert caps.max_quantity_decimals(AssetClass.FUTURE) == 0
    assert caps.max_quantity_decimals(AssetClass.EQUITY) == 0
    assert caps.bracket_trailing_stop
    for asset in (AssetClass.EQUITY, AssetClass.FUTURE):
        assert OrderType.TRAILING_STOP in caps.order_types_for(asset)
    limits = {r.bucket: (r.requests, r.seconds) for r in caps.rate_limits}
    assert limits == {
        "accounts": (250, 300.0),
        "balances": (250, 300.0),
        "positions": (250, 300.0),
        "orders": (250, 300.0),
        "quotes": (30, 60.0),
    }


def _spec_statuses() -> dict[str, str]:
    """Code -> category, from the HistoricalStatus table of the vendor's OpenAPI file."""
    spec = json.loads(
        (
            Path(__file__).parents[2] / "emulators/specs/tradestation/"
            "tradestation-webapi-v3-openapi.json"
        ).read_text()
    )
    schema = spec["components"]["schemas"]["HistoricalStatus"]
    out: dict[str, str] = {}
    category = ""
    for line in schema["description"].splitlines():
        text = line.strip()
        if text.startswith("- ") and text.endswith(":"):
            category = text[2:-1]
        elif text.startswith("- ") and not text.startswith("- ~"):  # ~CSN~ is deprecated
            out[text[2:].split()[0]] = category
    assert sorted(out) == sorted(schema["enum"])
    return out


def test_status_table_maps_every_vendor_code() -> None:
    statuses = _spec_statuses()
    assert set(STATUS_MAP) == set(statuses) | {"CSN"}  # and the deprecated Cancel Sent
    statuses["CSN"] = "Open"
    pending = {"ACK", "PLA", "DON", "SUS"}  # Received, Sending, Queued, Suspended
    for code, category in statuses.items():
        if category == "Open":
            expected = {"FPR": OrderStatus.PARTIALLY_FILLED}.get(
                code, OrderStatus.PENDING if code in pending else OrderStatus.OPEN
            )
        elif category == "Canceled":
            expected = {"EXP": OrderStatus.EXPIRED, "UCH": OrderStatus.REPLACED}.get(
                code, OrderStatus.CANCELLED
            )
        else:
            expected = {"Rejected": OrderStatus.REJECTED, "Filled": OrderStatus.FILLED}[category]
        assert map_status(code) is expected, code


def _vendor_order(status: str, ordered: str, executed: str) -> dict[str, Any]:
    return {
        "AccountID": "11827342",
        "OrderID": "286179829",
        "Status": status,
        "OrderType": "Limit",
        "LimitPrice": "140",
        "Duration": "GTC",
        "FilledPrice": "139.9" if executed != "0" else "0",
        "Legs": [
            {
                "AssetType": "STOCK",
                "BuyOrSell": "Buy",
                "ExecQuantity": executed,
                "OpenOrClose": "Open",
                "QuantityOrdered": ordered,
                "Symbol": "MSFT",
            }
        ],
    }


def test_a_replaced_order_reads_as_replaced_not_cancelled() -> None:
    order = map_order(_vendor_order("UCH", "10", "0"))
    assert order.status is OrderStatus.REPLACED and order.status.is_final
    # TradeStation's order names no successor (no such field in its Order schema).
    assert order.replaced_by is None


def test_fills_decide_between_partial_filled_and_ended() -> None:
    # "Partial Fill (UROut)": 4 of 10 filled, the rest is out, so the order ended unfilled.
    flp = map_order(_vendor_order("FLP", "10", "4"))
    assert flp.status is OrderStatus.CANCELLED and flp.filled_quantity == 4
    assert map_order(_vendor_order("FLP", "10", "10")).status is OrderStatus.FILLED
    # Still working after a partial fill, whatever the open code says.
    for code in ("UCN", "RSN", "OPN", "DON"):
        assert map_order(_vendor_order(code, "10", "4")).status is OrderStatus.PARTIALLY_FILLED
    assert map_order(_vendor_order("ACK", "10", "0")).status is OrderStatus.PENDING
    assert map_order(_vendor_order("FLL", "10", "10")).status is OrderStatus.FILLED


def test_the_deprecated_cancel_sent_code_reads_as_a_cancel_on_its_way() -> None:
    """The deprecated "~CSN - Cancel Sent~" was logged as unknown and read as plainly open: a
    /modify of it was then sent, not told that a cancel is being carried out."""
    for code in ("CSN", "UCN"):
        order = map_order(_vendor_order(code, "10", "0"))
        assert (order.status, order.cancel_pending) == (OrderStatus.OPEN, True), code
        partly = map_order(_vendor_order(code, "10", "4"))
        assert (partly.status, partly.cancel_pending) == (OrderStatus.PARTIALLY_FILLED, True)
    assert not map_order(_vendor_order("OPN", "10", "0")).cancel_pending


def test_rejection_texts_map_to_our_errors() -> None:
    assert isinstance(
        rejection_error("Order failed. Reason: Insufficient buying power."), InsufficientBuyingPower
    )
    assert isinstance(
        rejection_error("Order failed. Reason: Market is closed for AAPL."), MarketClosed
    )
    assert isinstance(
        rejection_error(
            "Order failed. Reason: Futures orders are not supported for account type Margin."
        ),
        AssetClassNotSupported,
    )
    assert isinstance(rejection_error("Order failed. Reason: Invalid symbol XYZ."), SymbolNotFound)
    err = rejection_error(
        "Order failed. Reason: Type = LMT has invalid Price greater than absolute maximum"
    )
    assert type(err) is InvalidOrder
    assert "absolute maximum" in err.user_message


def test_vendor_symbols() -> None:
    assert vendor_symbol("/es") == "@ES"
    assert vendor_symbol("esz25") == "ESZ25"
    assert vendor_symbol("AAPL") == "AAPL"


# -- reads -------------------------------------------------------------------------------


async def test_fetch_accounts_lists_live_and_sim(adapter: TradeStationAdapter) -> None:
    accounts = {a.id: a for a in await adapter.fetch_accounts()}
    assert {a: (x.type, x.environment) for a, x in accounts.items()} == {
        "11827341": (AccountType.CASH, LIVE),
        "11827342": (AccountType.MARGIN, LIVE),
        "11827343": (AccountType.FUTURES, LIVE),
        "11827344C": (AccountType.CRYPTO, LIVE),
        "SIM1182734M": (AccountType.MARGIN, PAPER),
        "SIM1182734F": (AccountType.FUTURES, PAPER),
    }
    assert accounts["11827342"].status == "active"
    assert accounts["11827342"].info["AccountDetail"]["EnrolledInRegTProgram"] is True


async def test_balance_strings_become_decimals(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    bal = await adapter.fetch_balance(MARGIN)
    assert bal.cash == Decimal(50_000)
    assert bal.equity == Decimal(50_000) + 10 * Decimal("228.5")
    assert bal.market_value == Decimal("2285")
    assert bal.unrealized_pnl == Decimal("285")
    assert bal.buying_power == 2 * bal.equity - Decimal("2285")
    assert isinstance(bal.info["CashBalance"], str)
    # The day's P&L from /bodbalances: the position came after the day started with cash.
    assert bal.day_pnl == Decimal("2285")
    fut = await adapter.fetch_balance(FUTURES)
    assert fut.buying_power == Decimal(100_000)
    assert "InitialMargin" in fut.info["BalanceDetail"]
    emu.world.start_day()
    emu.set_quote("AAPL", "230.40", "230.60", "230.5")
    assert (await adapter.fetch_balance(MARGIN)).day_pnl == 10 * Decimal(2)
    assert (await adapter.fetch_balance(FUTURES)).day_pnl == 0


async def test_crypto_account_is_not_served(adapter: TradeStationAdapter) -> None:
    with pytest.raises(BrokerError, match="Request not supported for account type"):
        await adapter.fetch_balance(CRYPTO)
    with pytest.raises(BrokerError, match="/accounts"):
        await adapter.fetch_positions(CRYPTO)
    assert await adapter.fetch_open_orders(CRYPTO) == []


async def test_positions_long_short_and_futures(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.set_position("11827342", "TSLA", -5, "350")
    emu.set_position("11827343", "ESZ25", 2, "5890")
    positions = {p.symbol: p for p in await adapter.fetch_positions(MARGIN)}
    assert positions["AAPL"].quantity == 10 and positions["AAPL"].side == "long"
    assert positions["AAPL"].average_price == Decimal(200)
    assert positions["TSLA"].quantity == -5 and positions["TSLA"].side == "short"
    assert positions["TSLA"].unrealized_pnl == Decimal(50)
    (es,) = await adapter.fetch_positions(FUTURES)
    assert es.asset_class is AssetClass.FUTURE and es.multiplier == 50
    assert es.unrealized_pnl == (Decimal(5900) - Decimal(5890)) * 2 * 50


async def test_a_share_class_is_one_stock_however_typed(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    # TradeStation writes Berkshire's class B BRK.B: /close BRK-B finds the BRK.B position.
    emu.set_position("11827342", "BRK.B", 4, "450")
    assert adapter.canonical_symbol("BRK-B") == adapter.canonical_symbol("brk/b") == "BRK.B"
    held = await adapter.fetch_position(MARGIN, adapter.canonical_symbol("BRK-B"))
    assert held is not None and held.quantity == 4
    assert vendor_symbol("BRK-B") == "BRK.B" and vendor_symbol("/ES") == "@ES"
    # A continuous future as TradeStation writes it too: orders, positions and /close agree.
    assert adapter.canonical_symbol("/ES") == adapter.canonical_symbol("@ES") == "@ES"


async def test_a_market_data_404_is_an_unknown_symbol_not_an_order(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/marketdata/quotes/",
            method="GET",
            status=404,
            body={"Error": "NotFound", "Message": "Resource not found."},
            times=1,
        )
    )
    with pytest.raises(SymbolNotFound, match="does not know the symbol ZZZQ") as e:
        await adapter.fetch_quote("ZZZQ")
    assert "order" not in e.value.user_message
    # An order's 404 is still an order not found.
    with pytest.raises(OrderNotFound, match="no such order"):
        await adapter.cancel_order(MARGIN, "999999")


async def test_quote_and_unknown_symbol(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.set_quote("AAPL", "230.10", "230.14", "230.12")
    q = await adapter.fetch_quote("aapl")
    assert (q.bid, q.ask, q.last) == (Decimal("230.1"), Decimal("230.14"), Decimal("230.12"))
    assert q.time.tzinfo is not None
    es = await adapter.fetch_quote("/ES")
    assert es.symbol == "@ES" and es.last == Decimal(5900)
    with pytest.raises(SymbolNotFound, match="ZZZZ"):
        await adapter.fetch_quote("ZZZZ")


# -- orders ------------------------------------------------------------------------------


async def test_market_order_fills_at_the_ask(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    order = await adapter.create_order(MARGIN, buy("MSFT", 10, client_order_id="abc123XYZ"))
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == 10 and order.average_fill_price == Decimal("415.22")
    assert order.client_order_id == "abc123XYZ" and order.symbol == "MSFT"
    assert order.side is Side.BUY and order.time_in_force is TimeInForce.DAY
    (body,) = posted(emu)
    assert body == {
        "AccountID": "11827342",
        "Symbol": "MSFT",
        "Quantity": "10",
        "OrderType": "Market",
        "TradeAction": "BUY",
        "TimeInForce": {"Duration": "DAY"},
        "Route": "Intelligent",
        "OrderConfirmID": "abc123XYZ",
    }
    again = await adapter.fetch_order(MARGIN, client_order_id="abc123XYZ")
    assert again.id == order.id


async def test_limit_and_stop_orders_carry_string_prices(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    lim = await adapter.create_order(
        MARGIN,
        buy(
            "NVDA",
            3,
            order_type=OrderType.LIMIT,
            limit_price=Decimal("140.50"),
            time_in_force=TimeInForce.GTC,
        ),
    )
    assert lim.status is OrderStatus.OPEN and lim.limit_price == Decimal("140.5")
    stp = await adapter.create_order(
        MARGIN,
        sell(
            "AAPL",
            5,
            order_type=OrderType.STOP_LIMIT,
            stop_price=Decimal("220"),
            limit_price=Decimal("219.5"),
        ),
    )
    assert stp.status is OrderStatus.OPEN and stp.order_type is OrderType.STOP_LIMIT
    bodies = posted(emu)
    assert bodies[0]["LimitPrice"] == "140.5" and bodies[0]["TimeInForce"] == {"Duration": "GTC"}
    assert bodies[1]["OrderType"] == "StopLimit" and bodies[1]["StopPrice"] == "220"
    assert bodies[1]["TradeAction"] == "SELL"
    emu.set_quote("NVDA", "139.90", "140.00")
    filled = await adapter.fetch_order(MARGIN, order_id=lim.id)
    assert filled.status is OrderStatus.FILLED and filled.average_fill_price == Decimal(140)
    with pytest.raises(InvalidOrder, match="limit price"):
        await adapter.create_order(MARGIN, buy("NVDA", 1, order_type=OrderType.LIMIT))


def trail(symbol: str, qty: int, side: Side, **kw: Any) -> OrderRequest:
    return OrderRequest(
        symbol=symbol,
        side=side,
        quantity=Decimal(qty),
        order_type=OrderType.TRAILING_STOP,
        time_in_force=TimeInForce.GTC,
        **kw,
    )


async def test_a_trailing_stop_follows_the_high_and_sells_when_the_price_falls_back(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.set_quote("AAPL", "199.98", "200.02", "200")
    placed = await adapter.create_order(
        MARGIN, trail("AAPL", 10, Side.SELL, trail_percent=Decimal(5))
    )
    (body,) = posted(emu)
    assert body == {
        "AccountID": "11827342",
        "Symbol": "AAPL",
        "Quantity": "10",
        "OrderType": "StopMarket",
        "TradeAction": "SELL",
        "TimeInForce": {"Duration": "GTC"},
        "Route": "Intelligent",
        "AdvancedOptions": {"TrailingStop": {"Percent": "5"}},
    }
    assert placed.order_type is OrderType.TRAILING_STOP and placed.stop_price == Decimal(190)
    assert placed.info["TrailingStop"] == {"Percent": "5"}
    emu.set_quote("AAPL", "219.98", "220.02", "220")  # up: the stop follows
    [working] = await adapter.fetch_open_orders(MARGIN)
    assert (working.order_type, working.stop_price) == (OrderType.TRAILING_STOP, Decimal(209))
    emu.set_quote("AAPL", "208.96", "209.04", "209")  # back to the stop: it sells at market
    assert await adapter.fetch_open_orders(MARGIN) == []
    filled = await adapter.fetch_order(MARGIN, order_id=placed.id)
    assert filled.status is OrderStatus.FILLED and filled.average_fill_price == Decimal("208.96")
    assert filled.order_type is OrderType.TRAILING_STOP


async def test_a_trailing_buy_by_amount_is_found_by_its_reference_among_plain_stops(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    # An open plain stop of the same size: the lookup must tell the two StopMarkets apart.
    await adapter.create_order(
        MARGIN, buy("TSLA", 1, order_type=OrderType.STOP, stop_price=Decimal(350))
    )
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=1)
    )
    request = trail("TSLA", 1, Side.BUY, trail_amount=Decimal("2.50"), client_order_id="trail1")
    with pytest.raises(BrokerUnavailable):
        await adapter.create_order(MARGIN, request)
    assert posted(emu)[-1]["AdvancedOptions"] == {"TrailingStop": {"Amount": "2.5"}}
    assert "StopPrice" not in posted(emu)[-1]
    found = await adapter.fetch_order(MARGIN, client_order_id="trail1")
    assert found.order_type is OrderType.TRAILING_STOP and found.stop_price == Decimal("342.5")
    assert found.info["TrailingStop"] == {"Amount": "2.5"}


async def test_trailing_stops_tradestation_would_refuse_are_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    cases = [
        (trail("AAPL", 1, Side.SELL), "exactly one of the two"),
        (
            trail("AAPL", 1, Side.SELL, trail_amount=Decimal(1), trail_percent=Decimal(5)),
            "exactly one",
        ),
        (trail("AAPL", 1, Side.SELL, trail_amount=Decimal(0)), "more than zero"),
        (trail("AAPL", 1, Side.SELL, trail_percent=Decimal(100)), "less than 100"),
        (
            trail("AAPL", 1, Side.SELL, trail_percent=Decimal(5), stop_price=Decimal(200)),
            "leave out",
        ),
        (
            sell(
                "AAPL",
                1,
                order_type=OrderType.LIMIT,
                limit_price=Decimal(250),
                trail_percent=Decimal(5),
            ),
            "for trailing stops only",
        ),
    ]
    for request, message in cases:
        with pytest.raises(InvalidOrder, match=message):
            await adapter.create_order(MARGIN, request)
    assert posted(emu) == []


def test_the_vendors_trailing_stop_order_reads_back_as_one() -> None:
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    example = spec["paths"]["/v3/brokerage/accounts/{accounts}/orders"]["get"]["responses"]
    vendor = example["200"]["content"]["application/json"]["example"]["Orders"][4]
    order = map_order(vendor)
    assert (order.order_type, order.stop_price) == (OrderType.TRAILING_STOP, Decimal("215.06"))
    assert order.side is Side.SELL and order.info["TrailingStop"] == {"Percent": "5.0"}
    assert (order.trail_percent, order.trail_amount) == (Decimal(5), None)
    plain = map_order({k: v for k, v in vendor.items() if k != "TrailingStop"})
    assert plain.order_type is OrderType.STOP and plain.trail_percent is None


async def test_trade_action_follows_the_position(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    await adapter.create_order(MARGIN, sell("AAPL", 10))  # closes the seeded long
    await adapter.create_order(MARGIN, sell("TSLA", 2))  # flat: opens a short
    await adapter.create_order(MARGIN, buy("TSLA", 2))  # short: covers
    await adapter.create_order(FUTURES, sell("MESZ25", 1))  # futures: plain SELL
    actions = [b["TradeAction"] for b in posted(emu)]
    assert actions == ["SELL", "SELLSHORT", "BUYTOCOVER", "SELL"]
    # Intelligent routing is the stocks' default route [spec]; a future is sent without one.
    assert [b.get("Route") for b in posted(emu)] == ["Intelligent"] * 3 + [None]
    assert await adapter.fetch_positions(MARGIN) == []


def test_a_reversal_is_refused_before_the_card(adapter: TradeStationAdapter) -> None:
    """The preview's check, with the position it read (signed): what _trade_action refused
    only when sending, after the card had offered Confirm."""
    aapl = sell("AAPL", 15, asset_class=AssetClass.EQUITY)
    with pytest.raises(InvalidOrder, match=r"You hold 10 AAPL.*Sell 10 first, then sell short"):
        adapter.check_position(MARGIN, aapl, Decimal(10))
    cover = buy("TSLA", 5, asset_class=AssetClass.EQUITY)
    with pytest.raises(InvalidOrder, match="Buy 3 to cover first, then buy the rest"):
        adapter.check_position(MARGIN, cover, Decimal(-3))
    adapter.check_position(MARGIN, sell("AAPL", 10, asset_class=AssetClass.EQUITY), Decimal(10))
    adapter.check_position(MARGIN, sell("TSLA", 2, asset_class=AssetClass.EQUITY), Decimal(0))
    adapter.check_position(MARGIN, cover, Decimal(-5))
    # Futures have no opening or closing action: one order may cross.
    adapter.check_position(FUTURES, sell("MESZ25", 3, asset_class=AssetClass.FUTURE), Decimal(1))


async def test_raising_a_closing_sell_past_the_position_is_refused_unsent(
    adapter: TradeStationAdapter,
    emu: TradeStationEmulator,
    session: aiohttp.ClientSession,
    tokens: EmulatorTokens,
) -> None:
    """/modify quantity:15 of a sell of the 10 AAPL held showed "once the order fills you are
    short 5", and Confirm then met "Sell quantity 15 exceeds the long position of 10"."""
    placed = await adapter.create_order(
        MARGIN, sell("AAPL", 10, order_type=OrderType.LIMIT, limit_price=Decimal(999))
    )
    [order] = [o for o in await adapter.fetch_open_orders(MARGIN) if o.id == placed.id]
    with pytest.raises(InvalidOrder, match=r"you hold 10 AAPL.*Keep it at 10 or less.*/trade"):
        adapter.check_change(order, OrderChange(quantity=Decimal(15)))
    adapter.check_change(order, OrderChange(limit_price=Decimal(990)))
    adapter.check_change(order, OrderChange(quantity=Decimal(8)))
    # Not listed first (Confirm reads the order alone): checked before the PUT, not sent.
    fresh = make_adapter(emu, session, tokens)
    with pytest.raises(InvalidOrder, match="Keep it at 10 or less"):
        await fresh.replace_order(MARGIN, order, OrderChange(quantity=Decimal(15)))
    assert emu.requests_to(r"/orderexecution/orders/", "PUT") == []
    emu.set_position("11827342", "AAPL", 20, "200")
    changed = await fresh.replace_order(MARGIN, order, OrderChange(quantity=Decimal(15)))
    assert changed.quantity == 15


async def test_reversal_and_cash_short_are_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    with pytest.raises(InvalidOrder, match="two orders"):
        await adapter.create_order(MARGIN, sell("AAPL", 15))
    emu.set_position("11827342", "TSLA", -3, "340")
    with pytest.raises(InvalidOrder, match="Buy 3 to cover first"):
        await adapter.create_order(MARGIN, buy("TSLA", 5))
    with pytest.raises(InvalidOrder, match="cannot sell short"):
        await adapter.create_order(CASH, sell("MSFT", 1))
    assert posted(emu) == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (
            buy("AAPL", 1, order_type=OrderType.LIMIT, limit_price=Decimal("190.125")),
            "The limit price 190.125 has too many decimals. AAPL prices of $1 or more go in "
            "whole cents: use 190.12 or 190.13.",
        ),
        (
            buy("AAPL", 1, order_type=OrderType.STOP, stop_price=Decimal("0.12345")),
            "The stop price 0.12345 has too many decimals. AAPL prices under $1 go in steps "
            "of 0.0001 (4 decimals): use 0.1234 or 0.1235.",
        ),
        (
            buy(
                "AAPL",
                1,
                order_type=OrderType.LIMIT,
                limit_price=Decimal("190"),
                bracket=Bracket(take_profit=Decimal("200"), stop_loss=Decimal("180.001")),
            ),
            "The stop-loss price 180.001 has too many decimals",
        ),
    ],
)
async def test_sub_penny_stock_prices_are_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator, request_: OrderRequest, message: str
) -> None:
    # SEC Rule 612; TradeStation does not publish how it words the refusal.
    with pytest.raises(InvalidOrder) as e:
        await adapter.create_order(MARGIN, request_)
    assert message in str(e.value.user_message)
    assert posted(emu) == []
    # Whole cents (and 4 decimals under $1) go through; futures keep their own ticks.
    await adapter.create_order(
        MARGIN, buy("AAPL", 1, order_type=OrderType.LIMIT, limit_price=Decimal("190.10"))
    )
    await adapter.create_order(
        MARGIN, buy("AAPL", 1, order_type=OrderType.LIMIT, limit_price=Decimal("0.1234"))
    )
    assert [b["LimitPrice"] for b in posted(emu)] == ["190.1", "0.1234"]


async def test_futures_on_margin_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    with pytest.raises(AssetClassNotSupported, match="futures trade in a futures account"):
        await adapter.create_order(MARGIN, buy("ESZ25", 1))
    with pytest.raises(AssetClassNotSupported):
        await adapter.create_order(FUTURES, buy("AAPL", 1))
    assert posted(emu) == []


async def test_futures_on_margin_rejected_by_the_broker_when_bypassed(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    request = buy("ESZ25", 1, asset_class=AssetClass.FUTURE)
    with pytest.raises(AssetClassNotSupported, match="account type Margin"):
        await adapter._create_order(MARGIN, request)  # skips the capability check on purpose
    assert len(posted(emu)) == 1 and emu.orders_for("11827342") == []


async def test_futures_trade_in_the_futures_account(adapter: TradeStationAdapter) -> None:
    order = await adapter.create_order(FUTURES, buy("MESZ25", 2, client_order_id="fut1"))
    assert order.status is OrderStatus.FILLED and order.asset_class is AssetClass.FUTURE
    (pos,) = await adapter.fetch_positions(FUTURES)
    assert pos.symbol == "MESZ25" and pos.quantity == 2 and pos.multiplier == 5
    sim = await adapter.create_order(SIM_FUTURES, sell("ESH6", 1))
    assert sim.status is OrderStatus.FILLED and sim.account_id == "SIM1182734F"


async def test_a_future_needs_its_initial_margin_not_its_notional(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    # /trade /ES 1 on a $100,000 futures account: ~$295k of notional, a fraction in margin.
    price = Decimal("5900.25")
    es = buy("/ES", 1, asset_class=AssetClass.FUTURE)
    needed = adapter.buying_power_required(es, price)
    assert needed == price * 50 * Decimal("0.10")  # Tradecord Paper's rate, with no better
    assert needed < await adapter.fetch_buying_power(FUTURES) < price * 50
    assert adapter.buying_power_required(replace(es, quantity=Decimal(3)), price) == 3 * needed
    # Stocks still take their notional.
    assert adapter.buying_power_required(buy("AAPL", 10), Decimal(200)) == 2000
    # Once TradeStation has said what a contract takes (a position's InitialRequirement),
    # its own figure is the one used.
    emu.set_position("11827343", "ESZ25", 2, "5890")
    (pos,) = await adapter.fetch_positions(FUTURES)
    per_contract = Decimal(pos.info["InitialRequirement"]) / 2
    assert per_contract != price * 50 * Decimal("0.10")
    more = buy("ESZ25", 1, asset_class=AssetClass.FUTURE)
    assert adapter.buying_power_required(more, price) == per_contract


async def test_business_rejections(adapter: TradeStationAdapter, emu: TradeStationEmulator) -> None:
    with pytest.raises(InsufficientBuyingPower, match="/balances"):
        await adapter.create_order(CASH, buy("SPY", 100, client_order_id="bp1"))
    rejected = await adapter.fetch_order(CASH, client_order_id="bp1")
    assert rejected.status is OrderStatus.REJECTED
    assert "buying power" in (rejected.reject_reason or "")
    emu.market_open = False
    with pytest.raises(MarketClosed):
        await adapter.create_order(MARGIN, buy("MSFT", 1))
    emu.market_open = True
    with pytest.raises(SymbolNotFound):
        await adapter.create_order(MARGIN, buy("NOSUCH", 1))
    with pytest.raises(InvalidOrder, match="LimitPrice must be greater than zero"):
        await adapter.create_order(
            MARGIN, buy("MSFT", 1, order_type=OrderType.LIMIT, limit_price=Decimal("-1"))
        )


async def test_open_orders_cancel_and_not_cancelable(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    o = await adapter.create_order(
        MARGIN, buy("AMD", 4, order_type=OrderType.LIMIT, limit_price=Decimal("100"))
    )
    filled = await adapter.create_order(MARGIN, buy("AMD", 1))
    open_ids = [x.id for x in await adapter.fetch_open_orders(MARGIN)]
    assert open_ids == [o.id]
    await adapter.cancel_order(MARGIN, o.id)
    assert (await adapter.fetch_order(MARGIN, order_id=o.id)).status is OrderStatus.CANCELLED
    await adapter.cancel_order(MARGIN, o.id)  # a repeated cancel is not an error
    with pytest.raises(OrderNotCancelable):
        await adapter.cancel_order(MARGIN, filled.id)
    with pytest.raises(OrderNotFound):
        await adapter.cancel_order(MARGIN, "999")
    assert await adapter.fetch_open_orders(MARGIN) == []


async def test_a_cancel_not_yet_carried_out_is_still_open_and_marked(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.cancel_delay = 0.2
    o = await adapter.create_order(
        MARGIN, buy("AMD", 4, order_type=OrderType.LIMIT, limit_price=Decimal("100"))
    )
    assert not o.cancel_pending
    await adapter.cancel_order(MARGIN, o.id)
    [pending] = await adapter.fetch_open_orders(MARGIN)  # "Cancel Sent": still working
    assert pending.status is OrderStatus.OPEN and pending.cancel_pending
    await asyncio.sleep(0.3)
    done = await adapter.fetch_order(MARGIN, order_id=o.id)
    assert done.status is OrderStatus.CANCELLED and not done.cancel_pending


async def test_history_spans_today_and_earlier_days(
    clock: Clock, emu: TradeStationEmulator, session: aiohttp.ClientSession, tokens: EmulatorTokens
) -> None:
    adapter = make_adapter(emu, session, tokens)
    clock.advance(-3 * 86400)
    old = await adapter.create_order(MARGIN, buy("MSFT", 1))
    clock.advance(86400)
    mid = await adapter.create_order(MARGIN, buy("MSFT", 2))
    clock.advance(2 * 86400)
    await adapter.create_order(
        MARGIN, buy("MSFT", 3, order_type=OrderType.LIMIT, limit_price=Decimal(1))
    )  # open: not history
    new = await adapter.create_order(MARGIN, buy("MSFT", 4))
    history = await adapter.fetch_orders(MARGIN)
    assert [o.id for o in history] == [new.id, mid.id, old.id]
    assert [o.id for o in await adapter.fetch_orders(MARGIN, limit=2)] == [new.id, mid.id]
    since = datetime.fromtimestamp(clock.now, UTC) - timedelta(days=2, hours=12)
    assert [o.id for o in await adapter.fetch_orders(MARGIN, since=since)] == [new.id, mid.id]
    assert (await adapter.fetch_order(MARGIN, order_id=old.id)).quantity == 1
    history_calls = emu.requests_to(r"/historicalorders")
    assert history_calls and all("since" in r.query for r in history_calls)
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(MARGIN, order_id="123")


async def test_history_pages_with_next_token(
    adapter: TradeStationAdapter, emu: TradeStationEmulator, clock: Clock
) -> None:
    clock.advance(-86400)
    ids = [(await adapter.create_order(MARGIN, buy("AMD", 1))).id for _ in range(5)]
    clock.advance(86400)
    since = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    history = await adapter._paged(
        MARGIN, "/v3/brokerage/accounts/11827342/historicalorders", {"since": since}, 5, page_size=2
    )
    assert sorted(o["OrderID"] for o in history) == sorted(ids)
    assert any("nextToken" in r.query for r in emu.requests_to(r"/historicalorders"))


# -- idempotency and lookup by client order id -------------------------------------------


async def test_lost_response_then_lookup_finds_exactly_one(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=1)
    )
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(MARGIN, buy("MSFT", 7, client_order_id="lost1"))
    assert info.value.maybe_sent is True
    found = await adapter.fetch_order(MARGIN, client_order_id="lost1")
    assert found.quantity == 7 and found.status is OrderStatus.FILLED
    assert found.client_order_id == "lost1"
    assert len(emu.orders_for("11827342")) == 1
    assert emu.order_by_confirm_id("lost1").id == found.id  # type: ignore[union-attr]
    assert len(posted(emu)) == 1


async def test_dropped_request_lookup_proves_absence(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(Fault(kind="drop", path=r"/orderexecution/orders$", method="POST", times=1))
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(MARGIN, buy("MSFT", 7, client_order_id="gone1"))
    assert info.value.maybe_sent is True
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(MARGIN, client_order_id="gone1")
    assert emu.orders_for("11827342") == []


async def test_duplicate_confirm_id_returns_the_existing_order(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    first = await adapter.create_order(MARGIN, buy("AMD", 2, client_order_id="dup1"))
    second = await adapter.create_order(MARGIN, buy("AMD", 2, client_order_id="dup1"))
    assert second.id == first.id and second.client_order_id == "dup1"
    assert len(emu.orders_for("11827342")) == 1 and len(posted(emu)) == 2


async def test_duplicate_after_lost_response_and_lost_journal(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=1)
    )
    with pytest.raises(BrokerUnavailable):
        await adapter.create_order(MARGIN, buy("AMD", 2, client_order_id="dup2"))
    JOURNAL.clear()  # as after a restart
    again = await adapter.create_order(MARGIN, buy("AMD", 2, client_order_id="dup2"))
    assert len(emu.orders_for("11827342")) == 1
    assert again.id == emu.orders_for("11827342")[0].id


async def test_lookup_without_a_record_is_unknown_until_told(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=1)
    )
    request = buy(
        "MSFT",
        3,
        order_type=OrderType.LIMIT,
        limit_price=Decimal("400"),
        client_order_id="restart1",
    )
    sent_at = datetime.now(UTC)
    with pytest.raises(BrokerUnavailable):
        await adapter.create_order(MARGIN, request)
    JOURNAL.clear()
    with pytest.raises(OrderStateUnknown):
        await adapter.fetch_order(MARGIN, client_order_id="restart1")
    adapter.remember_submission(MARGIN, request, sent_at)
    found = await adapter.fetch_order(MARGIN, client_order_id="restart1")
    assert found.limit_price == Decimal(400) and found.quantity == 3


async def test_identical_orders_are_ambiguous_not_absent(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=2)
    )
    for cid in ("twin1", "twin2"):
        with pytest.raises(BrokerUnavailable):
            await adapter.create_order(MARGIN, buy("MSFT", 1, client_order_id=cid))
    with pytest.raises(OrderStateUnknown):
        await adapter.fetch_order(MARGIN, client_order_id="twin1")


# -- tokens, limits, failures ------------------------------------------------------------


async def test_expired_token_is_refreshed_mid_call(
    adapter: TradeStationAdapter, emu: TradeStationEmulator, tokens: EmulatorTokens
) -> None:
    await adapter.fetch_balance(MARGIN)
    emu.expire_access_tokens()
    assert (await adapter.fetch_balance(MARGIN)).cash == 50_000
    assert tokens.refreshes == 1 and emu.oauth.refresh_requests == 1
    emu.expire_access_tokens()
    order = await adapter.create_order(MARGIN, buy("AMD", 1, client_order_id="afterexp"))
    assert order.status is OrderStatus.FILLED and tokens.refreshes == 2
    assert len(emu.orders_for("11827342")) == 1


async def test_revoked_grant_becomes_authorization_expired(
    adapter: TradeStationAdapter,
    emu: TradeStationEmulator,
    tokens: EmulatorTokens,
    session: aiohttp.ClientSession,
) -> None:
    async with session.post(
        emu.revoke_url,
        data={
            "client_id": tokens.client_id,
            "client_secret": tokens.client_secret,
            "token": tokens.refresh_token,
        },
    ) as r:
        assert r.status == 200
    assert await adapter.fetch_accounts()  # the access token lives on until it expires
    emu.expire_access_tokens()
    with pytest.raises(AuthorizationExpired):
        await adapter.fetch_accounts()


async def test_429_retry_after_is_honoured(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, tokens: EmulatorTokens
) -> None:
    emu.rate_limits["quotes"] = (1, 1.0)
    adapter = make_adapter(emu, session, tokens)
    await adapter.fetch_quote("AAPL")
    assert (await adapter.fetch_quote("MSFT")).symbol == "MSFT"
    assert len(emu.requests_to(r"/marketdata/quotes/")) == 3  # one 429, then the retry


async def test_429_surfaces_as_rate_limited(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, tokens: EmulatorTokens
) -> None:
    emu.rate_limits["balances"] = (1, 300.0)
    adapter = make_adapter(emu, session, tokens, read_retries=1)
    await adapter.fetch_balance(MARGIN)
    with pytest.raises(RateLimited) as info:
        await adapter.fetch_balance(MARGIN)
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 300


async def test_5xx_on_read_is_retried(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/brokerage/accounts$",
            status=503,
            times=1,
            body={"Error": "ServiceUnavailable", "Message": "Try again."},
        )
    )
    assert len(await adapter.fetch_accounts()) == 6
    assert len(emu.requests_to(r"/live/v3/brokerage/accounts$")) == 2


async def test_5xx_on_create_is_not_retried(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(
            kind="status",
            path=r"/orderexecution/orders$",
            method="POST",
            status=503,
            times=1,
            body={"Error": "ServiceUnavailable", "Message": "Try again."},
        )
    )
    with pytest.raises(BrokerUnavailable) as info:
        await adapter.create_order(MARGIN, buy("AMD", 1, client_order_id="fivexx"))
    assert info.value.maybe_sent is True
    assert len(emu.requests_to(r"/orderexecution/orders$", "POST")) == 1
    with pytest.raises(OrderNotFound):  # the fault answered before the broker acted
        await adapter.fetch_order(MARGIN, client_order_id="fivexx")


async def test_forbidden_and_bad_request_bodies(adapter: TradeStationAdapter) -> None:
    forbidden = adapter.vendor_error(
        HttpResponse(403, {}, {"Error": "Forbidden", "Message": "Insufficient scope"})
    )
    assert isinstance(forbidden, AuthorizationExpired) and "/connect" in forbidden.user_message
    bad = adapter.vendor_error(
        HttpResponse(400, {}, {"Error": "BadRequest", "Message": "Invalid Quantity"})
    )
    assert isinstance(bad, InvalidOrder) and "Invalid Quantity" in bad.user_message
    assert adapter.vendor_error(HttpResponse(503, {}, {"Error": "ServiceUnavailable"})) is None


async def test_missing_trade_scope_is_authorization_expired(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    grant = await sign_in(session, emu, scope="openid offline_access ReadAccount MarketData")
    adapter = make_adapter(emu, session, EmulatorTokens(session, emu.token_url, grant))
    assert await adapter.fetch_positions(MARGIN)
    with pytest.raises(AuthorizationExpired, match="trading"):
        await adapter.create_order(MARGIN, buy("AMD", 1))


# -- brackets ----------------------------------------------------------------------------


async def test_bracket_is_an_oso_with_a_brk_group(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    request = buy(
        "AMD",
        10,
        client_order_id="brk1",
        bracket=Bracket(take_profit=Decimal("150"), stop_loss=Decimal("130")),
    )
    entry = await adapter.create_order(MARGIN, request)
    assert entry.status is OrderStatus.FILLED
    (body,) = posted(emu)
    (oso,) = body["OSOs"]
    assert oso["Type"] == "BRK"
    assert [
        (o["OrderType"], o["TradeAction"], o.get("LimitPrice"), o.get("StopPrice"))
        for o in oso["Orders"]
    ] == [("Limit", "SELL", "150", None), ("StopMarket", "SELL", None, "130")]
    open_orders = await adapter.fetch_open_orders(MARGIN)
    assert {o.order_type for o in open_orders} == {OrderType.LIMIT, OrderType.STOP}
    emu.set_quote("AMD", "150.10", "150.20")
    assert await adapter.fetch_open_orders(MARGIN) == []
    statuses = sorted(o.status for o in emu.orders_for("11827342"))
    assert statuses == ["CAN", "FLL", "FLL"]
    assert [p.symbol for p in await adapter.fetch_positions(MARGIN)] == ["AAPL"]


async def test_an_exit_that_names_its_entry_is_linked_to_it(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    """An exit's ConditionalOrders "OSP" (linked parent) was ignored, so the exits of a bracket
    placed in TradeStation's own platform, which Tradecord holds no record of, stood alone."""
    emu.world.exits_name_entry = True
    request = buy("AMD", 10, bracket=Bracket(take_profit=Decimal(150), stop_loss=Decimal(130)))
    entry = await adapter.create_order(MARGIN, request)
    exits = await adapter.fetch_open_orders(MARGIN)
    assert len(exits) == 2 and {o.parent_id for o in exits} == {entry.id}
    assert set(entry.exit_ids) == {o.id for o in exits}


async def test_short_bracket_covers(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    await adapter.create_order(
        MARGIN,
        sell(
            "TSLA",
            1,
            bracket=Bracket(
                take_profit=Decimal("300"), stop_loss=Decimal("360"), stop_loss_limit=Decimal("362")
            ),
        ),
    )
    (body,) = posted(emu)
    assert body["TradeAction"] == "SELLSHORT"
    assert [(o["OrderType"], o["TradeAction"]) for o in body["OSOs"][0]["Orders"]] == [
        ("Limit", "BUYTOCOVER"),
        ("StopLimit", "BUYTOCOVER"),
    ]
    with pytest.raises(InvalidOrder, match="opens a position"):
        await adapter.create_order(
            MARGIN, sell("AAPL", 1, bracket=Bracket(take_profit=Decimal("100")))
        )


@pytest.mark.parametrize(
    ("trail", "vendor", "first_stop", "risen_stop"),
    [
        ({"stop_loss_trail_amount": Decimal(2)}, {"Amount": "2"}, "96.98", "103"),
        ({"stop_loss_trail_percent": Decimal(5)}, {"Percent": "5"}, "94.03", "99.75"),
    ],
)
async def test_a_trailing_stop_loss_goes_out_as_the_trail_and_trails_from_the_entry_fill(
    adapter: TradeStationAdapter,
    emu: TradeStationEmulator,
    trail: dict[str, Decimal],
    vendor: dict[str, str],
    first_stop: str,
    risen_stop: str,
) -> None:
    emu.set_quote("AMD", "99.98", "100.02", "100")
    # stop_loss is where Tradecord expects the stop to start: shown, never sent.
    bracket = Bracket(take_profit=Decimal(110), stop_loss=Decimal(97), **trail)
    request = buy("AMD", 10, order_type=OrderType.LIMIT, limit_price=Decimal(99), bracket=bracket)
    entry = await adapter.create_order(MARGIN, request)
    (body,) = posted(emu)
    (oso,) = body["OSOs"]
    assert oso["Type"] == "BRK"
    assert oso["Orders"][1] == {
        "AccountID": "11827342",
        "Symbol": "AMD",
        "Quantity": "10",
        "OrderType": "StopMarket",
        "TradeAction": "SELL",
        "TimeInForce": {"Duration": "GTC"},
        "Route": "Intelligent",
        "AdvancedOptions": {"TrailingStop": vendor},
    }
    tp_id, sl_id = entry.exit_ids
    queued = await adapter.fetch_order(MARGIN, order_id=sl_id)
    assert (queued.status, queued.order_type) == (OrderStatus.PENDING, OrderType.TRAILING_STOP)
    assert queued.stop_price is None  # no stop until the exit works
    assert (queued.trail_amount, queued.trail_percent) == (
        trail.get("stop_loss_trail_amount"),
        trail.get("stop_loss_trail_percent"),
    )

    emu.set_quote("AMD", "98.96", "99.00", "98.98")  # the entry fills; the exits work
    working = await adapter.fetch_order(MARGIN, order_id=sl_id)
    assert (working.status, working.stop_price) == (OrderStatus.OPEN, Decimal(first_stop))
    emu.set_quote("AMD", "104.98", "105.02", "105")  # up: the stop follows the high
    working = await adapter.fetch_order(MARGIN, order_id=sl_id)
    assert working.stop_price == Decimal(risen_stop)
    emu.set_quote("AMD", "99.48", "99.52", "99.5")  # back through the stop: a market sell
    stopped = await adapter.fetch_order(MARGIN, order_id=sl_id)
    assert (stopped.status, stopped.average_fill_price) == (OrderStatus.FILLED, Decimal("99.48"))
    assert stopped.order_type is OrderType.TRAILING_STOP
    assert stopped.info["TrailingStop"] == vendor
    assert (await adapter.fetch_order(MARGIN, order_id=tp_id)).status is OrderStatus.CANCELLED
    assert "AMD" not in [p.symbol for p in await adapter.fetch_positions(MARGIN)]


async def test_a_trailing_stop_loss_with_a_limit_price_is_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    bracket = Bracket(
        take_profit=Decimal(110),
        stop_loss=Decimal(97),
        stop_loss_limit=Decimal(96),
        stop_loss_trail_amount=Decimal(2),
    )
    with pytest.raises(InvalidOrder, match="takes no limit price"):
        await adapter.create_order(MARGIN, buy("AMD", 10, bracket=bracket))
    assert emu.requests_to(r"/v3/") == []  # not even the position read


@pytest.mark.parametrize(("held", "side"), [(2, Side.SELL), (-2, Side.BUY)])
async def test_a_futures_bracket_on_an_order_that_closes_is_refused(
    adapter: TradeStationAdapter, emu: TradeStationEmulator, held: int, side: Side
) -> None:
    """Futures trade as plain BUY/SELL: the broker would start the exits after a closing fill
    too, and either would open a position nobody asked for."""
    emu.set_position("11827343", "ESZ25", held, "5890")
    request = OrderRequest(
        "ESZ25",
        side,
        Decimal(2),
        bracket=Bracket(take_profit=Decimal(5900), stop_loss=Decimal(5880)),
    )
    with pytest.raises(InvalidOrder, match="opens a position"):
        await adapter.create_order(FUTURES, request)
    assert posted(emu) == []
    # Adding to the position is opening: its bracket is placed.
    adding = OrderRequest("ESZ25", Side.BUY if held > 0 else Side.SELL, Decimal(1))
    await adapter.create_order(FUTURES, replace(adding, bracket=request.bracket))
    assert posted(emu)[0]["OSOs"][0]["Orders"]


# -- the order stream --------------------------------------------------------------------


async def collect(stream: AsyncIterator[OrderUpdate], until: int) -> list[OrderUpdate]:
    out: list[OrderUpdate] = []
    async for update in stream:
        out.append(update)
        if len(out) >= until:
            break
    return out


async def wait_for_streams(emu: TradeStationEmulator, count: int) -> None:
    for _ in range(500):
        if emu.open_streams >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stream did not open")


async def test_stream_snapshot_fills_partials_cancels_rejects_and_expiry(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    done = await adapter.create_order(MARGIN, buy("AMD", 1))
    stream = adapter.stream_order_updates([MARGIN])
    first = await stream.__anext__()  # the snapshot replays today's orders
    assert first.order.id == done.id and first.event == "fill"
    assert first.execution_id == f"{done.id}:1"
    emu.auto_fill = False
    resting = await adapter.create_order(MARGIN, buy("MSFT", 10))
    assert (await stream.__anext__()).event == "new"
    emu.fill(resting.id, 4, "415")
    emu.fill(resting.id, 6, "416")
    part, full = await stream.__anext__(), await stream.__anext__()
    assert (part.event, part.fill_quantity, part.fill_price) == ("partial_fill", 4, Decimal(415))
    assert part.order.status is OrderStatus.PARTIALLY_FILLED
    assert (full.event, full.fill_quantity, full.fill_price) == ("fill", 6, Decimal(416))
    assert full.order.average_fill_price == Decimal("415.6")
    to_cancel = await adapter.create_order(
        MARGIN, buy("NVDA", 1, order_type=OrderType.LIMIT, limit_price=Decimal(1))
    )
    to_reject = await adapter.create_order(
        MARGIN, buy("NVDA", 2, order_type=OrderType.LIMIT, limit_price=Decimal(1))
    )
    to_expire = await adapter.create_order(
        MARGIN, buy("NVDA", 3, order_type=OrderType.LIMIT, limit_price=Decimal(1))
    )
    await adapter.cancel_order(MARGIN, to_cancel.id)
    emu.reject(to_reject.id, "Exchange rejected the order.")
    emu.expire_day_orders()
    events = [(u.order.id, u.event) for u in await collect(stream, 6)]
    assert events == [
        (to_cancel.id, "new"),
        (to_reject.id, "new"),
        (to_expire.id, "new"),
        (to_cancel.id, "canceled"),
        (to_reject.id, "rejected"),
        (to_expire.id, "expired"),
    ]
    await stream.aclose()


async def test_stream_goaway_ends_the_iterator(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    async def run() -> list[OrderUpdate]:
        return [u async for u in adapter.stream_order_updates([MARGIN, SIM_MARGIN])]

    task = asyncio.create_task(run())
    await wait_for_streams(emu, 2)
    emu.go_away()
    assert await asyncio.wait_for(task, 10) == []
    for _ in range(500):
        if emu.open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert emu.open_streams == 0


async def test_stream_merges_live_and_sim(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    ready = asyncio.Event()
    stream = adapter.stream_order_updates([MARGIN, SIM_MARGIN], ready=ready)
    task = asyncio.ensure_future(collect(stream, 4))
    await asyncio.wait_for(ready.wait(), 5)  # both answered; each sends its snapshot
    await wait_for_streams(emu, 2)
    live = await adapter.create_order(MARGIN, buy("AMD", 1))
    sim = await adapter.create_order(SIM_MARGIN, buy("AMD", 1))
    updates = await asyncio.wait_for(task, 10)
    assert {(u.order.id, u.event) for u in updates} == {
        (live.id, "new"),
        (live.id, "fill"),
        (sim.id, "new"),
        (sim.id, "fill"),
    }
    await stream.aclose()


async def test_stream_drop_raises_broker_unavailable(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    stream = adapter.stream_order_updates([MARGIN])
    task = asyncio.ensure_future(collect(stream, 1))
    await wait_for_streams(emu, 1)
    emu.drop_streams()
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(task, 10)


async def test_stream_refreshes_an_expired_token(
    adapter: TradeStationAdapter, emu: TradeStationEmulator, tokens: EmulatorTokens
) -> None:
    emu.expire_access_tokens()
    stream = adapter.stream_order_updates([MARGIN])
    task = asyncio.ensure_future(collect(stream, 1))
    await wait_for_streams(emu, 1)
    assert tokens.refreshes == 1
    emu.go_away()
    assert await asyncio.wait_for(task, 10) == []


async def test_stream_heartbeats_are_silent(
    emu: TradeStationEmulator, adapter: TradeStationAdapter
) -> None:
    emu.heartbeat_interval = 0.01
    stream = adapter.stream_order_updates([MARGIN])
    task = asyncio.ensure_future(collect(stream, 1))
    await wait_for_streams(emu, 1)
    await asyncio.sleep(0.05)
    order = await adapter.create_order(MARGIN, buy("AMD", 1))
    (update,) = await asyncio.wait_for(task, 10)
    assert update.order.id == order.id and update.event == "new"


# -- spec conformance --------------------------------------------------------------------


async def test_every_adapter_request_conforms_to_the_spec(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    await adapter.fetch_accounts()
    for account in (CASH, MARGIN, FUTURES, SIM_MARGIN):
        await adapter.fetch_balance(account)
        await adapter.fetch_positions(account)
        await adapter.fetch_open_orders(account)
        await adapter.fetch_orders(account, limit=5)
    order = await adapter.create_order(
        MARGIN,
        buy(
            "AMD",
            2,
            order_type=OrderType.STOP_LIMIT,
            stop_price=Decimal(150),
            limit_price=Decimal(151),
            time_in_force=TimeInForce.GTC,
            client_order_id="spec1",
        ),
    )
    await adapter.fetch_order(MARGIN, order_id=order.id)
    await adapter.fetch_order(MARGIN, client_order_id="spec1")
    await adapter.cancel_order(MARGIN, order.id)
    await adapter.create_order(
        FUTURES,
        buy(
            "ESZ25",
            1,
            time_in_force=TimeInForce.IOC,
            bracket=Bracket(take_profit=Decimal(6000), stop_loss=Decimal(5800)),
        ),
    )
    await adapter.fetch_quote("AAPL")
    stream = adapter.stream_order_updates([MARGIN, FUTURES, SIM_MARGIN])
    await collect(stream, 1)
    await stream.aclose()
    paths = {r.path for r in emu.requests}
    assert any("/historicalorders" in p for p in paths)
    assert any("/stream/" in p for p in paths)
    assert emu.spec_violations == [] and emu.response_violations == []


# -- replace ---------------------------------------------------------------------------------


def put_bodies(emu: TradeStationEmulator) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in emu.requests_to(r"/orderexecution/orders/\d+$", "PUT")]


async def resting(adapter: TradeStationAdapter, qty: int = 5, price: str = "400") -> Order:
    placed = await adapter.create_order(
        MARGIN, buy("MSFT", qty, order_type=OrderType.LIMIT, limit_price=Decimal(price))
    )
    return await adapter.fetch_order(MARGIN, order_id=placed.id)


async def test_replace_sends_the_vendor_body_and_returns_the_order_read_back(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    assert TradeStationAdapter.capabilities.replace == {"quantity", "limit_price", "stop_price"}
    old = await resting(adapter)
    new = await adapter.replace_order(
        MARGIN, old, OrderChange(quantity=Decimal(7), limit_price=Decimal("401.50"))
    )
    assert put_bodies(emu) == [{"Quantity": "7", "LimitPrice": "401.5"}]
    # TradeStation's replace keeps the order: same id, changed, still working.
    assert new.id == old.id and new.status is OrderStatus.OPEN
    assert (new.quantity, new.limit_price) == (Decimal(7), Decimal("401.5"))
    assert [o.id for o in await adapter.fetch_open_orders(MARGIN)] == [old.id]
    stop = await adapter.create_order(
        MARGIN, buy("MSFT", 1, order_type=OrderType.STOP, stop_price=Decimal(450))
    )
    stop = await adapter.replace_order(MARGIN, stop, OrderChange(stop_price=Decimal("440.25")))
    assert put_bodies(emu)[-1] == {"StopPrice": "440.25"}
    assert (stop.order_type, stop.stop_price) == (OrderType.STOP, Decimal("440.25"))


async def test_replace_of_an_order_that_ended_meanwhile_is_not_replaceable(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.auto_fill = False
    old = await resting(adapter)
    emu.fill(old.id, 5, "399")  # ``old`` is now a stale reading
    with pytest.raises(OrderNotReplaceable, match=r"ended \(filled\)") as e:
        await adapter.replace_order(MARGIN, old, OrderChange(limit_price=Decimal(398)))
    assert isinstance(e.value.__cause__, InvalidOrder)  # the vendor's 400, translated
    emu.cancel_delay = 60.0
    pending = await resting(adapter)
    await adapter.cancel_order(MARGIN, pending.id)  # "Cancel Sent": still working
    with pytest.raises(OrderNotReplaceable, match="cancel sent"):
        await adapter.replace_order(MARGIN, pending, OrderChange(limit_price=Decimal(398)))


async def test_a_change_already_being_made_is_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    old = await resting(adapter)
    emu.order(old.id).status = "RSN"  # "Replace Sent"
    changing = await adapter.fetch_order(MARGIN, order_id=old.id)
    assert changing.status is OrderStatus.OPEN
    with pytest.raises(OrderNotReplaceable, match="still being carried out"):
        await adapter.replace_order(MARGIN, changing, OrderChange(limit_price=Decimal(401)))
    assert put_bodies(emu) == []


async def test_replace_refusals_for_a_working_order_keep_their_meaning(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.auto_fill = False
    old = await resting(adapter, qty=10)
    emu.fill(old.id, 4, "400")  # more filled than ``old`` knows
    with pytest.raises(InvalidOrder, match="more than the 4 filled") as e:
        await adapter.replace_order(MARGIN, old, OrderChange(quantity=Decimal(3)))
    assert not isinstance(e.value, OrderNotReplaceable)
    # Refused in a 200 OrderResponse: what the account cannot carry.
    with pytest.raises(InsufficientBuyingPower):
        await adapter.replace_order(MARGIN, old, OrderChange(quantity=Decimal(5000)))
    now = await adapter.fetch_order(MARGIN, order_id=old.id)
    assert (now.quantity, now.status) == (Decimal(10), OrderStatus.PARTIALLY_FILLED)


async def test_a_limit_replaced_through_the_market_fills(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    old = await resting(adapter, qty=2)
    new = await adapter.replace_order(MARGIN, old, OrderChange(limit_price=Decimal(420)))
    assert new.status is OrderStatus.FILLED
    assert new.average_fill_price == Decimal("415.22")  # the ask, as for a new marketable limit


async def test_a_replace_is_sent_once_and_a_failed_read_back_still_tells_the_change(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, tokens: EmulatorTokens
) -> None:
    adapter = make_adapter(emu, session, tokens, read_retries=1)
    old = await resting(adapter)
    emu.faults.add(
        Fault(
            kind="status",
            method="GET",
            path=r"/orders/\d+$",
            status=503,
            body={"Error": "ServiceUnavailable", "Message": "Service unavailable."},
        )
    )
    new = await adapter.replace_order(MARGIN, old, OrderChange(limit_price=Decimal(401)))
    assert (new.id, new.limit_price, new.quantity) == (old.id, Decimal(401), Decimal(5))
    assert new.info["Replace"] == {"OrderID": old.id, "Message": "Cancel/Replace order sent."}
    assert len(put_bodies(emu)) == 1
    assert emu.order(old.id).limit_price == Decimal(401)


# -- extended hours --------------------------------------------------------------------------


def extended(price: str = "420", **kw: Any) -> OrderRequest:
    return buy(
        "MSFT", 2, order_type=OrderType.LIMIT, limit_price=Decimal(price), extended_hours=True, **kw
    )


def test_plus_durations_read_back_as_extended_hours() -> None:
    def read(duration: str | None) -> tuple[TimeInForce, bool]:
        order = map_order({**_vendor_order("OPN", "10", "0"), "Duration": duration})
        return order.time_in_force, order.extended_hours

    day, gtc = TimeInForce.DAY, TimeInForce.GTC
    assert read("DYP") == read("Day+") == (day, True)
    assert read("GCP") == read("GDP") == read("GTC+") == (gtc, True)
    assert read("DAY") == read("Day") == read(None) == (day, False)
    assert read("GTC") == read("GTD") == (gtc, False)


async def test_an_extended_hours_order_goes_out_as_day_plus(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    assert TradeStationAdapter.capabilities.extended_hours
    emu.set_session("post")
    plus = await adapter.create_order(MARGIN, extended())
    plain = await adapter.create_order(
        MARGIN, buy("MSFT", 2, order_type=OrderType.LIMIT, limit_price=Decimal(420))
    )
    assert [b["TimeInForce"] for b in posted(emu)] == [{"Duration": "DYP"}, {"Duration": "DAY"}]
    # Day Plus fills after the close; the DAY order waits for the open.
    assert (plus.status, plus.time_in_force, plus.extended_hours) == (
        OrderStatus.FILLED,
        TimeInForce.DAY,
        True,
    )
    assert (plain.status, plain.extended_hours) == (OrderStatus.OPEN, False)
    [waiting] = await adapter.fetch_open_orders(MARGIN)
    assert waiting.id == plain.id and not waiting.extended_hours
    # What TradeStation takes only as a limit is refused before sending.
    with pytest.raises(InvalidOrder, match="must be limit orders"):
        await adapter.create_order(MARGIN, buy("MSFT", 1, extended_hours=True))
    assert len(posted(emu)) == 2


async def test_an_order_claimed_by_another_intent_is_never_adopted_after_a_restart(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    # Two identical buys; the second's POST never reached TradeStation.
    sent_at = datetime.now(UTC)
    first = buy("AAPL", 3, client_order_id="twin1")
    second = replace(first, client_order_id="twin2")
    placed = await adapter.create_order(MARGIN, first)
    emu.faults.add(Fault(kind="drop", path=r"/orderexecution/orders$", method="POST", times=1))
    with pytest.raises(BrokerUnavailable):
        await adapter.create_order(MARGIN, second)
    JOURNAL.clear()  # another process, or after a restart: only the database remains
    # Told the first intent owns its order, the second finds none: it was not placed.
    claimed = SubmissionHint(second, sent_at, claimed=frozenset({placed.id}))
    with pytest.raises(OrderNotFound, match="not placed"):
        await adapter.fetch_order(MARGIN, client_order_id="twin2", hint=claimed)
    # Without being told, the first's order would be taken for the second's.
    JOURNAL.clear()
    adopted = await adapter.fetch_order(
        MARGIN, client_order_id="twin2", hint=SubmissionHint(second, sent_at)
    )
    assert adopted.id == placed.id
    # Still fails closed when more than one unclaimed twin remains.
    JOURNAL.clear()
    third = await adapter.create_order(MARGIN, replace(first, client_order_id="twin3"))
    fourth = await adapter.create_order(MARGIN, replace(first, client_order_id="twin4"))
    JOURNAL.clear()
    with pytest.raises(OrderStateUnknown, match="several identical orders"):
        await adapter.fetch_order(MARGIN, client_order_id="twin2", hint=claimed)
    # With all but one claimed, the one left is the answer.
    only = SubmissionHint(second, sent_at, claimed=frozenset({placed.id, third.id}))
    assert (await adapter.fetch_order(MARGIN, client_order_id="twin2", hint=only)).id == fourth.id


async def test_an_extended_order_is_found_by_its_hint_apart_from_a_regular_twin(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=2)
    )
    sent_at = datetime.now(UTC)
    plus = extended("400", client_order_id="ext2")
    plain = replace(plus, extended_hours=False, client_order_id="reg2")
    for request in (plus, plain):
        with pytest.raises(BrokerUnavailable):
            await adapter.create_order(MARGIN, request)
    JOURNAL.clear()  # as after a restart: only the hints the caller kept
    twin = await adapter.fetch_order(
        MARGIN, client_order_id="reg2", hint=SubmissionHint(plain, sent_at)
    )
    found = await adapter.fetch_order(
        MARGIN, client_order_id="ext2", hint=SubmissionHint(plus, sent_at)
    )
    durations = {o.id: o.duration for o in emu.orders_for(MARGIN.id)}
    assert (durations[found.id], durations[twin.id]) == ("DYP", "DAY")
    assert (found.extended_hours, twin.extended_hours) == (True, False)


async def test_an_extended_order_changes_and_stays_extended(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    old = await adapter.create_order(MARGIN, extended("400"))
    new = await adapter.replace_order(MARGIN, old, OrderChange(limit_price=Decimal(401)))
    assert put_bodies(emu) == [{"LimitPrice": "401"}]  # the duration is the order's own
    assert (new.id, new.limit_price, new.time_in_force, new.extended_hours) == (
        old.id,
        Decimal(401),
        TimeInForce.DAY,
        True,
    )
    assert emu.order(old.id).duration == "DYP"
    # After the close it still works, and a limit moved through the market fills.
    emu.set_session("post")
    moved = await adapter.replace_order(MARGIN, new, OrderChange(limit_price=Decimal(420)))
    assert (moved.status, moved.extended_hours) == (OrderStatus.FILLED, True)


# -- auction orders (opg, cls) ---------------------------------------------------------------


def test_auction_durations_read_back_as_opg_and_cls_and_stocks_alone_take_them() -> None:
    def read(duration: str) -> TimeInForce:
        return map_order({**_vendor_order("OPN", "10", "0"), "Duration": duration}).time_in_force

    opg, cls = TimeInForce.OPG, TimeInForce.CLS
    assert (read("OPG"), read("CLO"), read("clo")) == (opg, cls, cls)
    tifs = TradeStationAdapter.capabilities.time_in_force
    assert {TimeInForce.OPG, TimeInForce.CLS} <= tifs[AssetClass.EQUITY]
    assert not {TimeInForce.OPG, TimeInForce.CLS} & tifs[AssetClass.FUTURE]


async def test_an_opg_market_order_goes_out_as_opg_and_fills_in_the_opening_auction(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.set_session("pre")
    order = await adapter.create_order(
        MARGIN, buy("MSFT", 10, time_in_force=TimeInForce.OPG, client_order_id="opg1")
    )
    (body,) = posted(emu)
    assert (body["OrderType"], body["TimeInForce"]) == ("Market", {"Duration": "OPG"})
    assert (order.status, order.time_in_force) == (OrderStatus.OPEN, TimeInForce.OPG)
    # The pre-market trades on; the order waits for the auction, whose price is the open.
    emu.set_quote("MSFT", "419.90", "420.10", "420")
    assert (await adapter.fetch_order(MARGIN, order_id=order.id)).status is OrderStatus.OPEN
    emu.set_session("regular")
    filled = await adapter.fetch_order(MARGIN, client_order_id="opg1")
    assert (filled.id, filled.status, filled.time_in_force) == (
        order.id,
        OrderStatus.FILLED,
        TimeInForce.OPG,
    )
    assert filled.filled_quantity == 10 and filled.average_fill_price == Decimal(420)


async def test_an_opg_limit_not_reached_at_the_open_ends_unfilled(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.set_session("closed")
    request = buy(
        "MSFT",
        5,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(400),
        time_in_force=TimeInForce.OPG,
    )
    order = await adapter.create_order(MARGIN, request)
    assert posted(emu)[0]["TimeInForce"] == {"Duration": "OPG"}
    emu.set_session("regular")  # opens at 415.20, above the limit
    ended = await adapter.fetch_order(MARGIN, order_id=order.id)
    assert (ended.status, ended.filled_quantity) == (OrderStatus.CANCELLED, 0)
    assert ended.time_in_force is TimeInForce.OPG
    # Nor does it work on in the session when the price comes down to it.
    emu.set_quote("MSFT", "399", "399.50")
    assert await adapter.fetch_open_orders(MARGIN) == []


async def test_a_cls_order_goes_out_as_clo_and_fills_at_the_close(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    order = await adapter.create_order(MARGIN, sell("AAPL", 4, time_in_force=TimeInForce.CLS))
    (body,) = posted(emu)
    assert (body["TradeAction"], body["TimeInForce"]) == ("SELL", {"Duration": "CLO"})
    # A market order in regular hours, yet it waits for the closing auction.
    assert (order.status, order.time_in_force) == (OrderStatus.OPEN, TimeInForce.CLS)
    emu.set_quote("AAPL", "230.90", "231.10", "231")
    emu.set_session("post")
    filled = await adapter.fetch_order(MARGIN, order_id=order.id)
    assert (filled.status, filled.average_fill_price) == (OrderStatus.FILLED, Decimal(231))
    assert filled.time_in_force is TimeInForce.CLS


async def test_auction_orders_tradestation_would_refuse_are_refused_before_sending(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    # Futures are not offered the auctions at all: the capability set refuses them.
    for tif in (TimeInForce.OPG, TimeInForce.CLS):
        with pytest.raises(InvalidOrder, match=f"take time in force .*, not {tif.value}") as e:
            await adapter.create_order(FUTURES, buy("ESZ25", 1, time_in_force=tif))
        assert "opg" not in e.value.user_message.split("not")[0]
    with pytest.raises(InvalidOrder, match="market or limit"):
        await adapter.create_order(
            MARGIN,
            buy(
                "MSFT",
                1,
                order_type=OrderType.STOP,
                stop_price=Decimal(450),
                time_in_force=TimeInForce.OPG,
            ),
        )
    assert posted(emu) == []


async def test_tradestations_auction_refusals_tell_the_member_why(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    # In regular hours the day's opening has passed.
    with pytest.raises(InvalidOrder, match="Too late for today's opening auction") as late:
        await adapter.create_order(MARGIN, buy("MSFT", 1, time_in_force=TimeInForce.OPG))
    assert "time in force day" in late.value.user_message
    emu.set_session("post")
    with pytest.raises(InvalidOrder, match="Too late for today's closing auction"):
        await adapter.create_order(MARGIN, buy("MSFT", 1, time_in_force=TimeInForce.CLS))
    # What the base check refuses, TradeStation refuses too when it is sent anyway.
    emu.set_session("pre")
    stop = buy(
        "MSFT", 1, order_type=OrderType.STOP, stop_price=Decimal(450), time_in_force=TimeInForce.OPG
    )
    with pytest.raises(InvalidOrder, match="refused this opening-auction") as kind:
        await adapter._create_order(MARGIN, stop)  # skips the capability check on purpose
    assert "market or limit" in kind.value.user_message
    future = buy("ESZ25", 1, time_in_force=TimeInForce.CLS, asset_class=AssetClass.FUTURE)
    with pytest.raises(InvalidOrder, match="listed stocks"):
        await adapter._create_order(FUTURES, future)
    assert len(posted(emu)) == 4 and emu.orders_for(MARGIN.id) == []


def test_auction_refusal_texts_map_to_invalid_order() -> None:
    named = rejection_error("Order failed. Reason: Duration CLO is not valid for this route.")
    assert type(named) is InvalidOrder and "closing-auction (cls)" in named.user_message
    # Unnamed, the refusal is read as about the auction only when an auction order was sent.
    vague = "Order failed. Reason: Invalid duration for this order."
    assert "opening-auction" in rejection_error(vague, TimeInForce.OPG).user_message
    assert "auction" not in rejection_error(vague, TimeInForce.DAY).user_message
    assert isinstance(
        rejection_error("Order failed. Reason: Insufficient buying power.", TimeInForce.OPG),
        InsufficientBuyingPower,
    )


async def test_an_auction_order_is_found_by_its_hint_apart_from_a_day_twin(
    adapter: TradeStationAdapter, emu: TradeStationEmulator
) -> None:
    emu.set_session("pre")
    emu.faults.add(
        Fault(kind="lose_response", path=r"/orderexecution/orders$", method="POST", times=2)
    )
    sent_at = datetime.now(UTC)
    opening = buy(
        "MSFT",
        2,
        order_type=OrderType.LIMIT,
        limit_price=Decimal(400),
        time_in_force=TimeInForce.OPG,
        client_order_id="auc1",
    )
    day = replace(opening, time_in_force=TimeInForce.DAY, client_order_id="day1")
    for request in (opening, day):
        with pytest.raises(BrokerUnavailable):
            await adapter.create_order(MARGIN, request)
    JOURNAL.clear()  # as after a restart: only the hints the caller kept
    twin = await adapter.fetch_order(
        MARGIN, client_order_id="day1", hint=SubmissionHint(day, sent_at)
    )
    found = await adapter.fetch_order(
        MARGIN, client_order_id="auc1", hint=SubmissionHint(opening, sent_at)
    )
    assert (found.time_in_force, twin.time_in_force) == (TimeInForce.OPG, TimeInForce.DAY)
    assert emu.order(found.id).duration == "OPG" and emu.order(twin.id).duration == "DAY"


async def test_a_character_split_across_stream_chunks_is_read_whole(
    session: aiohttp.ClientSession,
) -> None:
    """Chunks split anywhere; decoded one by one, the en dash of "Condition Met – …" cut in
    two broke the stream (UnicodeDecodeError) and forced a reconnect."""
    from aiohttp import web

    from adapters.base import StaticToken

    body = json.dumps(
        {"OrderID": "1", "StatusDescription": "Condition Met – triggered"}, ensure_ascii=False
    ).encode()
    cut = body.index("–".encode()) + 1  # inside the character's three bytes

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "application/vnd.tradestation.streams.v3+json"}
        )
        await resp.prepare(request)
        await resp.write(body[:cut])
        await asyncio.sleep(0.05)
        await resp.write(body[cut:])
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v3/brokerage/stream/accounts/{ids}/orders", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        adapter = TradeStationAdapter(
            AdapterContext(
                session=session,
                api_urls={LIVE: f"http://127.0.0.1:{port}"},
                tokens=StaticToken("t"),
            )
        )
        got = [obj async for obj in adapter._stream_objects(LIVE, ["1"])]
    finally:
        await runner.cleanup()
    assert got == [{"OrderID": "1", "StatusDescription": "Condition Met – triggered"}]
