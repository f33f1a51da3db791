"""The simulated feed, the symbol universe and the fill-hours rules."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from adapters.errors import SymbolNotFound
from adapters.models import AssetClass
from adapters.paper.feed import QuoteSource, SimulatedFeed, reference_price
from adapters.paper.hours import CHICAGO, FillHours, day_order_expiry, is_open, next_open
from adapters.paper.universe import equity_list, resolve
from adapters.symbols import FUTURES, example_contract

from .conftest import SATURDAY, WEEKDAY_SESSION

# exchange_calendars trips a pandas 3.1 deprecation inside its own code; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:.*drops timezone information:DeprecationWarning")
D = Decimal
EXCHANGE, ALWAYS = FillHours.EXCHANGE, FillHours.ALWAYS


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- universe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical", "asset_class", "kind"),
    [
        ("aapl", "AAPL", AssetClass.EQUITY, "stock"),
        ("BRK-B", "BRK.B", AssetClass.EQUITY, "stock"),
        ("spy", "SPY", AssetClass.EQUITY, "etf"),
        ("BTC/USD", "BTCUSD", AssetClass.CRYPTO, "crypto"),
        ("eth-usdt", "ETHUSDT", AssetClass.CRYPTO, "crypto"),
        ("@ES", "/ES", AssetClass.FUTURE, "future"),
        ("mesh7", "MESH27", AssetClass.FUTURE, "future"),
    ],
)
def test_symbols_resolve_to_one_canonical_instrument(
    written: str, canonical: str, asset_class: AssetClass, kind: str
) -> None:
    inst = resolve(written)
    assert (inst.symbol, inst.asset_class, inst.kind) == (canonical, asset_class, kind)


def test_futures_carry_multiplier_and_tick() -> None:
    inst = resolve("NQZ6")
    assert (inst.multiplier, inst.tick) == (FUTURES["NQ"].multiplier, FUTURES["NQ"].tick)


def test_unknown_symbols_say_what_paper_trades() -> None:
    with pytest.raises(SymbolNotFound) as e:
        resolve("ZZZQX")
    assert "does not know the symbol ZZZQX" in str(e.value)
    assert "BTCUSD" in str(e.value) and "/ES" in str(e.value)
    with pytest.raises(
        SymbolNotFound, match=rf"write /NQ or a contract like {example_contract('NQ')}"
    ):
        resolve("NQ")  # a bare root is no contract
    assert resolve("ES").asset_class is AssetClass.EQUITY  # Eversource, as at any broker


def test_bundled_list_is_large_and_sane() -> None:
    known = equity_list()
    assert len(known.stocks) > 400 and len(known.etfs) > 50
    for ticker in ("AAPL", "MSFT", "NVDA", "JPM", "XOM"):
        assert ticker in known.stocks
    for etf in ("SPY", "QQQ", "IWM", "GLD", "TLT"):
        assert etf in known.etfs
    assert set(known.reference_prices) <= known.stocks | known.etfs


# -- simulated feed -------------------------------------------------------------------------


async def test_same_symbol_and_minute_give_the_same_quote_anywhere() -> None:
    at = WEEKDAY_SESSION + timedelta(seconds=5)
    a = SimulatedFeed(lambda: at)
    b = SimulatedFeed(lambda: at + timedelta(seconds=50))  # another process, same minute
    qa, qb = await a.fetch_quote("AAPL"), await b.fetch_quote("aapl")
    assert (qa.bid, qa.ask, qa.last, qa.time) == (qb.bid, qb.ask, qb.last, qb.time)
    assert qa.simulated and qa.info["source"] == "simulated"
    later = a.quote_at("AAPL", at + timedelta(minutes=1))
    assert (later.bid, later.ask) != (qa.bid, qa.ask) or later.time != qa.time


async def test_many_quotes_at_once_match_one_by_one_and_leave_out_unknown_symbols() -> None:
    at = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
    feed = SimulatedFeed(clock=lambda: at)
    feed.set_quote("MSFT", Decimal("410.10"), Decimal("410.20"))
    batch = feed.quotes(["AAPL", "MSFT", "BTCUSD", "NOPE123"])
    assert set(batch) == {"AAPL", "MSFT", "BTCUSD"}
    for symbol, quote in batch.items():
        assert quote == await feed.fetch_quote(symbol)


def test_quotes_are_plausible_for_each_asset_class() -> None:
    feed = SimulatedFeed()
    for minute in range(0, 3 * 1440, 97):
        at = WEEKDAY_SESSION + timedelta(minutes=minute)
        for symbol in ("AAPL", "SPY", "MMM", "BTCUSD", "SHIBUSD", "/ES", "ZNH7", "6EM7"):
            q = feed.quote_at(symbol, at)
            inst = resolve(symbol)
            ref = reference_price(inst)
            assert 0 < q.bid < q.ask and q.bid <= q.last <= q.ask
            assert abs(q.bid / ref - 1) < D("0.12"), (symbol, q.bid, ref)
            if inst.asset_class is AssetClass.FUTURE:
                assert inst.tick is not None
                assert q.ask - q.bid == inst.tick and q.bid % inst.tick == 0
            elif inst.asset_class is AssetClass.EQUITY:
                assert q.bid == q.bid.quantize(D("0.01"))
                assert (q.ask - q.bid) / q.bid < D("0.0015")
            else:
                assert (q.ask - q.bid) / q.bid < D("0.002")


def test_a_continuous_future_quotes_as_its_front_month() -> None:
    """/ES and the contract it stands for wandered apart (each its own price path), so the
    same position read two ways showed two prices."""
    from adapters.symbols import front_contract

    feed = SimulatedFeed()
    for minute in range(0, 2 * 1440, 131):
        at = WEEKDAY_SESSION + timedelta(minutes=minute)
        front = front_contract("ES", at)
        continuous, dated = feed.quote_at("/ES", at), feed.quote_at(front, at)
        assert (continuous.bid, continuous.ask, continuous.last) == (
            dated.bid,
            dated.ask,
            dated.last,
        ), (at, front)
        assert continuous.symbol == "/ES"


def test_reference_prices_come_from_the_tables_or_a_stable_hash() -> None:
    assert reference_price(resolve("AAPL")) == equity_list().reference_prices["AAPL"]
    assert reference_price(resolve("/CL")) == FUTURES["CL"].reference_price
    assert reference_price(resolve("BTCUSD")) == D(95000)
    unlisted_price = reference_price(resolve("MMM"))
    assert D(10) <= unlisted_price <= D(400)
    assert unlisted_price == reference_price(resolve("MMM"))


async def test_overrides_pin_a_quote_until_cleared() -> None:
    feed = SimulatedFeed(lambda: WEEKDAY_SESSION)
    feed.set_quote("btc/usd", D(100), D(101))
    q = await feed.fetch_quote("BTCUSD")
    assert (q.bid, q.ask, q.last, q.simulated) == (D(100), D(101), D("100.5"), True)
    feed.clear_quote("BTC-USD")
    assert (await feed.fetch_quote("BTCUSD")).bid != D(100)
    with pytest.raises(ValueError):
        feed.set_quote("AAPL", D(101), D(100))
    with pytest.raises(SymbolNotFound):
        await feed.fetch_quote("NOPE1")
    assert isinstance(feed, QuoteSource)


# -- hours ----------------------------------------------------------------------------------


def test_24_7_is_always_open_and_day_ends_at_4pm_new_york() -> None:
    for asset in AssetClass:
        assert is_open(asset, SATURDAY, ALWAYS)
    # 10:00 New York → 16:00 the same day (EST: 21:00 UTC).
    assert day_order_expiry(AssetClass.EQUITY, WEEKDAY_SESSION, ALWAYS) == utc(2026, 12, 1, 21)
    # After 16:00 the order belongs to the next day.
    assert day_order_expiry(AssetClass.FUTURE, utc(2026, 12, 1, 21), ALWAYS) == utc(2026, 12, 2, 21)
    # Summer time: 16:00 EDT is 20:00 UTC.
    assert day_order_expiry(AssetClass.EQUITY, utc(2026, 7, 1, 12), ALWAYS) == utc(2026, 7, 1, 20)
    # Across the November DST change the end stays at 16:00 local.
    before_dst_change = utc(2026, 10, 31, 21)
    assert day_order_expiry(AssetClass.EQUITY, before_dst_change, ALWAYS) == utc(2026, 11, 1, 21)


def test_exchange_hours_follow_the_calendars() -> None:
    assert not is_open(AssetClass.EQUITY, SATURDAY, EXCHANGE)
    assert not is_open(AssetClass.FUTURE, SATURDAY, EXCHANGE)
    assert is_open(AssetClass.CRYPTO, SATURDAY, EXCHANGE)
    assert is_open(AssetClass.EQUITY, WEEKDAY_SESSION, EXCHANGE)
    assert not is_open(AssetClass.EQUITY, utc(2026, 12, 1, 22), EXCHANGE)
    # CME Globex reopens Sunday 17:00 Chicago (23:00 UTC in winter); the NYSE does not.
    sunday_evening = utc(2026, 11, 29, 23, 30)
    assert is_open(AssetClass.FUTURE, sunday_evening, EXCHANGE)
    assert not is_open(AssetClass.EQUITY, sunday_evening, EXCHANGE)
    # Thanksgiving is closed; the day after closes early at 13:00 New York.
    assert not is_open(AssetClass.EQUITY, utc(2026, 11, 26, 16), EXCHANGE)
    assert not is_open(AssetClass.EQUITY, utc(2026, 11, 27, 18, 30), EXCHANGE)
    assert next_open(AssetClass.EQUITY, SATURDAY, EXCHANGE) == utc(2026, 11, 30, 14, 30)
    assert next_open(AssetClass.EQUITY, WEEKDAY_SESSION, EXCHANGE) is None


def test_exchange_day_orders_live_until_the_session_close() -> None:
    assert day_order_expiry(AssetClass.EQUITY, WEEKDAY_SESSION, EXCHANGE) == utc(2026, 12, 1, 21)
    # Placed on a Saturday: the Monday session's close.
    assert day_order_expiry(AssetClass.EQUITY, SATURDAY, EXCHANGE) == utc(2026, 11, 30, 21)
    # Early close after Thanksgiving.
    assert day_order_expiry(AssetClass.EQUITY, utc(2026, 11, 27, 15), EXCHANGE) == utc(
        2026, 11, 27, 18
    )
    # Futures: the Globex session takes orders until its 16:00 Chicago halt.
    assert day_order_expiry(AssetClass.FUTURE, WEEKDAY_SESSION, EXCHANGE) == utc(2026, 12, 1, 22)
    # Placed in the halt: the next session's day.
    assert day_order_expiry(AssetClass.FUTURE, utc(2026, 12, 1, 22, 30), EXCHANGE) == utc(
        2026, 12, 2, 22
    )


@pytest.mark.parametrize(
    "at",
    [
        utc(2026, 12, 1, 22, 30),  # Tuesday 16:30 Chicago: the daily maintenance halt
        utc(2026, 12, 4, 22, 30),  # Friday 16:30 Chicago: Globex closed for the weekend
        utc(2026, 3, 9, 21, 0),  # the Monday after the clocks went forward: 16:00 Chicago
    ],
)
def test_paper_futures_do_not_fill_in_globex_s_halt(at: datetime) -> None:
    """Before: CMES's sessions run 17:00 to 17:00 Chicago, and paper futures filled through
    the daily halt and on Friday evening, after Globex had closed for the weekend."""
    assert not is_open(AssetClass.FUTURE, at, EXCHANGE)
    opens = next_open(AssetClass.FUTURE, at, EXCHANGE)
    assert opens is not None and opens > at
    assert opens.astimezone(CHICAGO).time() == time(17, 0)


def test_calendars_outside_the_default_range_work() -> None:
    assert is_open(AssetClass.EQUITY, utc(2031, 3, 4, 15), EXCHANGE)
    assert not is_open(AssetClass.EQUITY, utc(2031, 3, 8, 15), EXCHANGE)  # a Saturday


def test_extended_hours_run_from_the_pre_market_to_after_hours() -> None:
    stock = AssetClass.EQUITY
    tuesday_7am = utc(2026, 12, 1, 12)  # 07:00 New York: pre-market
    assert not is_open(stock, tuesday_7am, EXCHANGE)
    assert is_open(stock, tuesday_7am, EXCHANGE, extended=True)
    assert is_open(stock, utc(2026, 12, 1, 9), EXCHANGE, extended=True)  # 04:00 opens it
    assert not is_open(stock, utc(2026, 12, 1, 8, 59), EXCHANGE, extended=True)
    assert is_open(stock, utc(2026, 12, 2, 0, 59), EXCHANGE, extended=True)  # 19:59
    assert not is_open(stock, utc(2026, 12, 2, 1), EXCHANGE, extended=True)  # 20:00 ends it
    assert not is_open(stock, SATURDAY, EXCHANGE, extended=True)
    # After the early close of the day after Thanksgiving (13:00), after-hours end at 17:00.
    assert is_open(stock, utc(2026, 11, 27, 21, 30), EXCHANGE, extended=True)
    assert not is_open(stock, utc(2026, 11, 27, 22), EXCHANGE, extended=True)
    # Futures keep their own sessions: extended hours are a stock market's.
    assert not is_open(AssetClass.FUTURE, SATURDAY, EXCHANGE, extended=True)


def test_an_extended_hours_day_order_lives_until_after_hours_end() -> None:
    stock = AssetClass.EQUITY
    expiry = day_order_expiry(stock, utc(2026, 12, 1, 12), EXCHANGE, extended=True)
    assert expiry == utc(2026, 12, 2, 1)  # 20:00 New York
    # Placed at 21:00 New York: the next day's after-hours.
    late = day_order_expiry(stock, utc(2026, 12, 2, 2), EXCHANGE, extended=True)
    assert late == utc(2026, 12, 3, 1)
    assert day_order_expiry(stock, WEEKDAY_SESSION, ALWAYS, extended=True) == utc(2026, 12, 2, 1)
