"""Tradecord Paper, the built-in paper broker. Importing the package registers the adapter.

Public API: ``PaperBroker`` (the adapter, key "paper"), ``sweep_all`` / ``sweep_account`` (re-check
working orders), ``reset`` (back to the starting state), ``QuoteSource`` and ``SimulatedFeed``
(prices), ``PriceType`` and ``FillHours`` (the two settings), ``paper_account_id``.
"""

from adapters.paper.broker import PaperBroker, PaperTestHooks
from adapters.paper.engine import PriceType
from adapters.paper.feed import QuoteSource, SimulatedFeed
from adapters.paper.hours import FillHours
from adapters.paper.store import (
    DEFAULT_STARTING_CASH,
    SETTLEMENT_PREFIX,
    Market,
    ensure_account,
    paper_account_id,
    reset,
    sweep_account,
    sweep_all,
)

__all__ = [
    "DEFAULT_STARTING_CASH",
    "SETTLEMENT_PREFIX",
    "FillHours",
    "Market",
    "PaperBroker",
    "PaperTestHooks",
    "PriceType",
    "QuoteSource",
    "SimulatedFeed",
    "ensure_account",
    "paper_account_id",
    "reset",
    "sweep_account",
    "sweep_all",
]
