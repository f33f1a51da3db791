"""Member-facing wording shared by the services and the cogs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.wording import money, name_problem, plain, plural, qty


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("12000", "12,000"),
        ("1500000", "1,500,000"),
        ("1234.50", "1,234.5"),  # fractional quantities had no separator at all
        ("0.00012", "0.00012"),
        ("1E+3", "1,000"),
        ("-2500", "-2,500"),
        ("-0", "0"),
    ],
)
def test_quantities_read_with_thousands_separators(value: str, shown: str) -> None:
    assert qty(Decimal(value)) == shown


def test_plural() -> None:
    assert f"1 order{plural(1)}, 2 order{plural(2)}" == "1 order, 2 orders"


def test_money() -> None:
    assert money(Decimal("1500000")) == "$1,500,000.00"
    assert money(Decimal("-12.5")) == "-$12.50"
    assert money(Decimal("-1000"), "EUR") == "-1,000.00 EUR"
    assert money(None) == "—"


def test_plain_leaves_no_link_nor_anything_invisible() -> None:
    """A display name shown in an alert: "https://…" was a live link in the bot's post, and a
    right-to-left override turned the rest of the line around."""
    assert (
        plain("Free shares at https://evil.example") == "Free shares at https:\u200b//evil.example"
    )
    assert plain("Scalper \u202eLLES") == "Scalper LLES"
    assert plain("Break\u200bout") == "Breakout"


@pytest.mark.parametrize("name", ["Break\u200bout", "Scalper \u202e", "\u3164", "a\u2800b"])
def test_names_with_invisible_characters_are_refused(name: str) -> None:
    problem = name_problem(name, "A strategy name", "e.g. “NQ breakout”")
    assert problem is not None and "invisible characters" in problem
