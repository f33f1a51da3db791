"""Contract months and last trading days of the futures Tradecord knows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from adapters.base import AdapterContext
from adapters.models import AssetClass
from adapters.symbols import (
    FUTURES,
    asset_class_of,
    contract,
    front_contract,
    instrument_key,
    is_business_day,
    is_symbol,
    multiplier,
    share_class,
    unknown_future,
)
from adapters.tradestation import TradeStationAdapter

NOV_2026 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("symbol", "last_day"),
    [
        ("ESZ25", date(2025, 12, 19)),  # third Friday
        ("MNQH27", date(2027, 3, 19)),
        # 25 Dec 2026 is a Friday but Christmas, not a business day: 4 business days before
        # (cmegroup.com, Crude Oil Futures contract specs, "Termination of Trading").
        ("CLF27", date(2026, 12, 21)),
        ("CLF26", date(2025, 12, 19)),  # 25 Dec 2025, a Thursday holiday: the same rule
        ("CLK27", date(2027, 4, 20)),  # 25 Apr 2027 is a Sunday: 4 business days before
        ("MCLF27", date(2026, 12, 18)),  # the business day before crude oil
        ("GCZ26", date(2026, 12, 29)),  # third-last business day of the month
        ("GCX26", date(2026, 11, 25)),  # ... skipping Thanksgiving, Thu 26 Nov 2026
        ("NGF27", date(2026, 12, 29)),  # 3 business days before the 1st
        ("ZNH27", date(2027, 3, 19)),  # 7 business days before the last, Good Friday skipped
        ("6EH27", date(2027, 3, 15)),  # 2 business days before the third Wednesday
    ],
)
def test_last_trading_days_follow_the_exchange_rules(symbol: str, last_day: date) -> None:
    c = contract(symbol, NOV_2026)
    assert c is not None and c.last_trading_day == last_day


def test_exchange_holidays_are_not_business_days() -> None:
    # The day after Wednesday 25 Nov 2026 that counts is Friday 27: Thursday is Thanksgiving.
    assert [is_business_day(date(2026, 11, d)) for d in (25, 26, 27, 28)] == [
        True,
        False,
        True,
        False,
    ]
    assert not is_business_day(date(2026, 7, 3))  # Independence Day (a Saturday) observed
    assert not is_business_day(date(2027, 3, 26))  # Good Friday


def test_a_contract_ends_at_its_exchange_time_on_its_last_day() -> None:
    c = contract("ESZ26", NOV_2026)
    assert c is not None
    assert c.expires_at == datetime(2026, 12, 18, 14, 30, tzinfo=UTC)  # 08:30 Chicago


@pytest.mark.parametrize(
    ("written", "symbol"),
    [
        ("ESZ6", "ESZ26"),
        ("esz5", "ESZ25"),
        ("ESZ0", "ESZ30"),
        ("ESZ2026", "ESZ26"),
        ("@ESH27", "ESH27"),
    ],
)
def test_a_contract_is_named_with_a_two_digit_year(written: str, symbol: str) -> None:
    c = contract(written, NOV_2026)
    assert c is not None and c.symbol == symbol


@pytest.mark.parametrize("symbol", ["/ES", "ES", "AAPL", "BTCUSD", "XXZ26"])
def test_only_dated_contracts_of_known_futures_are_contracts(symbol: str) -> None:
    assert contract(symbol, NOV_2026) is None


def test_index_futures_list_quarterly_months_only() -> None:
    assert contract("ESH27", NOV_2026).listed  # type: ignore[union-attr]
    assert not contract("ESF27", NOV_2026).listed  # type: ignore[union-attr]
    assert contract("CLF27", NOV_2026).listed  # type: ignore[union-attr]


def test_the_front_contract_rolls_on_the_last_trading_day() -> None:
    assert front_contract("ES", datetime(2026, 12, 18, 14, 29, tzinfo=UTC)) == "ESZ26"
    assert front_contract("ES", datetime(2026, 12, 18, 14, 30, tzinfo=UTC)) == "ESH27"
    for root in FUTURES:
        c = contract(front_contract(root, NOV_2026), NOV_2026)
        assert c is not None and c.listed and c.expires_at > NOV_2026


@pytest.mark.parametrize("symbol", ["ZCZ25", "HGZ2025", "KEZ5", "@ZCZ25", "6BZ25"])
def test_a_contract_of_an_unknown_future_is_named_as_a_future_not_taken_for_a_stock(
    symbol: str,
) -> None:
    """Taken for a stock, corn (ZCZ25) was refused on the futures account it belongs on and
    the member sent to the margin account."""
    message = unknown_future(symbol)
    assert message is not None and "future" in message and "ES" in message


@pytest.mark.parametrize(
    "symbol", ["AAPL", "F", "T", "BRK.B", "ESZ25", "/ES", "BTCUSD", "ZC", "/AAPL", "/ZC"]
)
def test_tickers_and_known_futures_are_not_unknown_futures(symbol: str) -> None:
    assert unknown_future(symbol) is None


@pytest.mark.parametrize(
    ("typed", "dot", "slash"),
    [
        ("BRK-B", "BRK.B", "BRK/B"),
        ("brk/b", "BRK.B", "BRK/B"),
        ("BRK.B", "BRK.B", "BRK/B"),
        ("BF-B", "BF.B", "BF/B"),
        ("AAPL", "AAPL", "AAPL"),
        # Not share classes: crypto pairs and futures keep their slash or dash.
        ("BTC/USD", "BTC/USD", "BTC/USD"),
        ("ETH-USD", "ETH-USD", "ETH-USD"),
        ("/ES", "/ES", "/ES"),
        ("@ES", "@ES", "@ES"),
        ("ESZ25", "ESZ25", "ESZ25"),
    ],
)
def test_a_share_class_is_written_as_the_broker_writes_it(typed: str, dot: str, slash: str) -> None:
    assert share_class(typed) == dot
    assert share_class(typed, "/") == slash


OCC = "AAPL250117C00150000"  # AAPL 17 Jan 2025 150 call, as Tradier lists it


def test_an_occ_option_symbol_is_an_option_of_100_shares() -> None:
    assert asset_class_of(OCC) is AssetClass.OPTION
    assert asset_class_of("SPY251219P00500000") is AssetClass.OPTION
    assert multiplier(OCC) == Decimal(100)
    assert is_symbol(OCC) and unknown_future(OCC) is None
    assert asset_class_of("AAPL") is AssetClass.EQUITY and multiplier("AAPL") == 1


@pytest.mark.parametrize(
    ("short", "full"),
    [("ESZ5", "ESZ25"), ("MESH6", "MESH26"), ("/ESZ5", "/ESZ25"), ("@MNQU6", "@MNQU26")],
)
def test_a_one_digit_year_names_the_same_contract_as_two(short: str, full: str) -> None:
    """Bought as MESH6, a position came back from TradeStation as MESH26 and /close found
    nothing to close."""
    assert instrument_key(short) == instrument_key(full)


def test_tradestation_writes_a_contract_with_a_two_digit_year() -> None:
    adapter = TradeStationAdapter(AdapterContext())
    assert adapter.canonical_symbol("MESH6") == "MESH26"
    assert adapter.canonical_symbol("/ESZ5") == "@ESZ25"


def test_a_one_digit_year_is_read_around_the_time_asked_not_today() -> None:
    c = contract("ESZ9", datetime(2036, 6, 1, tzinfo=UTC))
    assert c is not None and c.year == 2039 and c.symbol == "ESZ39"
