"""Member-facing wording shared by the services and the cogs."""

from __future__ import annotations

from decimal import Decimal


def plural(count: int | Decimal) -> str:
    """The noun's ending for ``count``: f"{n} order{plural(n)}" reads "1 order", "2 orders"."""
    return "" if count == 1 else "s"
