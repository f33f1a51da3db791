"""How prices and percentages read on cards and tables."""

from __future__ import annotations

from decimal import Decimal

import pytest

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
