"""Member-facing wording shared by the services and the cogs."""

from __future__ import annotations

from decimal import Decimal


def plural(count: int | Decimal) -> str:
    """The noun's ending for ``count``: f"{n} order{plural(n)}" reads "1 order", "2 orders"."""
    return "" if count == 1 else "s"


def qty(value: Decimal) -> str:
    """A quantity as members read it: "12,000", "1,234.5", "0.00012" (never as typed back:
    option and autocomplete values keep plain numbers)."""
    return format((value + 0).normalize(), ",f")  # + 0: a -0 left by arithmetic reads "0"


def money(value: Decimal | None, currency: str = "USD") -> str:
    """“$1,500,000.00”, “-$12.50”, “1,000.00 EUR”; “—” for an amount not known."""
    if value is None:
        return "—"
    sign = "-" if value < 0 else ""
    if currency == "USD":
        return f"{sign}${abs(value):,.2f}"
    return f"{sign}{abs(value):,.2f} {currency}"
