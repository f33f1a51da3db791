"""The contract suite runs every scenario against each broker through its harness
(``harness_<broker>.py``: ``async make_harness(session) -> Harness``)."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, Protocol

import aiohttp
import pytest

from adapters.base import BrokerAdapter
from adapters.models import AccountRef, OrderType
from emulators.common import Fault

BROKERS = ("paper", "tradestation", "alpaca", "tradier")
SYMBOL = "AAPL"
BID, ASK = Decimal("99.95"), Decimal("100.05")


class Harness(Protocol):
    """What every harness gives the suite. Broker differences the scenarios must know about
    are these attributes, never the broker's name."""

    adapter: BrokerAdapter
    emulator: Any  # the broker emulator, None for the built-in paper broker
    accounts: dict[str, AccountRef]  # "equity" always; "margin", "cash", "futures" if any
    order_types: frozenset[OrderType]
    supports_tokens: bool  # the connection holds an OAuth access token
    token_refreshable: bool  # an expired access token is refreshed, not fatal
    retries_reads: bool  # a 429 on a read is retried rather than raised
    replace_method: str  # the HTTP method of the broker's replace

    async def expire_token(self) -> None: ...

    def inject(self, fault: Fault) -> Fault: ...

    async def broker_order_count(self, account: AccountRef) -> int: ...

    async def move_quote(self, symbol: str, bid: Decimal, ask: Decimal) -> None: ...

    async def fresh_adapter(self) -> BrokerAdapter: ...

    async def close(self) -> None: ...


@pytest.fixture(params=BROKERS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    module = importlib.import_module(f"tests.contract.harness_{request.param}")
    async with aiohttp.ClientSession() as session:
        h: Harness = await module.make_harness(session)
        try:
            # Every scenario starts from the same market, whatever the emulator's seed.
            await h.move_quote(SYMBOL, BID, ASK)
            yield h
            if h.emulator is not None:
                # Whatever the adapter sent must conform to the vendor's published API.
                assert h.emulator.spec_violations == []
        finally:
            await h.close()
