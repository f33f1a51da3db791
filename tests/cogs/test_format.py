"""How prices and percentages read on cards and tables."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cogs import format as fmt
from cogs.format import order_price, pct


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        ("250.123", "250.123"),  # every decimal typed is what the broker gets
        ("250", "250.00"),
        ("0.5001", "0.5001"),  # was "0.500100": zeros nobody typed
        ("0.5", "0.50"),
        ("0.000123", "0.000123"),
        ("1234.5", "1,234.50"),
    ],
)
def test_an_order_price_shows_what_was_typed_and_cents(typed: str, shown: str) -> None:
    assert order_price(Decimal(typed)) == shown


@pytest.mark.parametrize(
    ("gain", "basis", "shown"),
    [
        ("-0.00001", "100", "+0.00%"),  # was "-0.00%"
        ("-1", "100", "-1.00%"),
        ("0.004", "1", "+0.40%"),
        ("5", "-100", "+5.00%"),  # a short's basis is negative: the sign is the gain's
        (None, "100", "—"),
        ("1", "0", "—"),
    ],
)
def test_a_percentage_has_the_sign_of_what_it_rounds_to(
    gain: str | None, basis: str, shown: str
) -> None:
    assert pct(Decimal(gain) if gain else None, Decimal(basis)) == shown


def test_pages_of_wide_rows_fit_an_embed_description() -> None:
    """Before: fifteen rows a page whatever their width: one subscription with eight trading
    windows widened every line past 4,096 characters, and /subscriptions failed."""
    rows = [[f"s{n}", "x" * 300] for n in range(15)]
    pages = fmt.paged("T", "paper", "head", rows, ["A", "B"], set(), "f", empty="none")
    assert len(pages) > 1
    assert all(len(p.description or "") <= 4096 for p in pages)
    shown = "".join(p.description or "" for p in pages)
    assert all(f"s{n} " in shown for n in range(15))  # every row on some page
    assert pages[0].footer.text.startswith(f"Page 1/{len(pages)}")


# Wide cells, some on several lines: pages near the 4,096-character limit are the ones tested.
cells = st.one_of(
    st.integers(0, 700).map(lambda n: "a" * n),
    st.lists(st.integers(0, 300).map(lambda n: "b" * n), min_size=2, max_size=4).map("\n".join),
    st.text(alphabet="ab \n", max_size=20),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(cells, min_size=2, max_size=2), max_size=40), st.text(max_size=300))
def test_each_page_is_as_full_as_an_embed_allows(rows: list[list[str]], header: str) -> None:
    """Pages are found without building the table once per row (that was quadratic): each
    page still fits, and each but the last is full (its row limit, or the next row would
    not fit)."""
    headers, right = ["A", "B"], {1}
    pages = fmt.paged("T", "paper", header, rows, headers, right, "f", empty="none")
    room = fmt.DESCRIPTION_MAX - len(header) - 1
    start = 0
    for n, page in enumerate(pages):
        body = (page.description or "")[len(header) + 1 :]
        # The rows this page shows: the first run of rows whose table is its body.
        size = next(
            k
            for k in range(len(rows) - start + 1)
            if not rows or fmt.table(headers, rows[start : start + k], right) == body
        )
        assert len(page.description or "") <= 4096 or size == 1
        if n < len(pages) - 1:
            wider = fmt.table(headers, rows[start : start + size + 1], right)
            assert size == fmt.PAGE_ROWS or len(wider) > room
        start += size
    assert start == len(rows)


def test_a_pnl_that_rounds_to_zero_reads_zero_beside_its_percentage() -> None:
    """Before: "-$0.00" beside "+0.00%": the sign was taken before rounding to cents."""
    from adapters.models import AssetClass, Position

    tiny = Position(
        symbol="AAPL",
        asset_class=AssetClass.EQUITY,
        quantity=Decimal(10),
        average_price=Decimal(200),
        market_price=Decimal(200),
        market_value=Decimal(2000),
        cost_basis=Decimal(2000),
        unrealized_pnl=Decimal("-0.004"),
    )
    [row] = fmt.position_rows([tiny])
    assert row[-2:] == ["$0.00", "+0.00%"]
    assert fmt.signed_money(Decimal("0.004")) == "$0.00"
    assert fmt.money(Decimal("-0.004")) == "$0.00"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("6.125", "$6.13"),  # 0.5 × 12.25: was "$6.12", a half cent rounded to even
        ("6.135", "$6.14"),
        ("-6.125", "-$6.13"),
        ("0.005", "$0.01"),
    ],
)
def test_half_a_cent_rounds_up(value: str, shown: str) -> None:
    assert fmt.money(Decimal(value)) == shown
    assert fmt.signed_money(Decimal(value)) == ("+" if shown[0] != "-" else "") + shown


def test_a_half_hundredth_of_a_percent_rounds_up() -> None:
    assert pct(Decimal("0.00125"), Decimal(1)) == "+0.13%"  # was "+0.12%"


def test_a_large_percentage_has_thousands_separators() -> None:
    assert pct(Decimal(1000), Decimal("1")) == "+100,000.00%"  # was "+100000.00%"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("0.495", "0.495"),  # was "0.495000": zeros nobody typed
        ("0.5", "0.50"),
        ("0.00012345", "0.00012345"),
        ("0.000123456789", "0.00012346"),  # at most 8 places below $1
        ("270.285", "270.285"),
        ("250", "250.00"),
        ("1234.56789", "1,234.5679"),  # at most 4 places from $1
    ],
)
def test_a_price_shows_cents_and_only_the_places_it_has(value: str, shown: str) -> None:
    assert fmt.price(Decimal(value)) == shown
