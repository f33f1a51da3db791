"""The contract-suite harness for Tradecord Paper does what the suite expects of it."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest

from adapters.errors import BrokerUnavailable, RateLimited
from adapters.models import OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from emulators.common import Fault
from tests.contract.harness_paper import make_harness

D = Decimal


async def test_harness_faults_quotes_and_counts() -> None:
    async with aiohttp.ClientSession() as session:
        h = await make_harness(session)
        try:
            ref = h.accounts["equity"]
            assert h.emulator is None and h.supports_tokens is False
            assert h.order_types == frozenset(OrderType)

            h.inject(Fault(kind="lose_response", method="POST", path="/orders"))
            with pytest.raises(BrokerUnavailable) as e:
                await h.adapter.create_order(
                    ref, OrderRequest("AAPL", Side.BUY, D(1), client_order_id="c1")
                )
            assert e.value.maybe_sent
            assert (await h.adapter.fetch_order(ref, client_order_id="c1")).filled_quantity == 1
            assert await h.broker_order_count(ref) == 1

            h.inject(Fault(kind="status", status=429, method="POST", headers={"Retry-After": "3"}))
            with pytest.raises(RateLimited) as rl:
                await h.adapter.create_order(ref, OrderRequest("AAPL", Side.BUY, D(1)))
            assert rl.value.retry_after == 3.0
            assert await h.broker_order_count(ref) == 1

            await h.move_quote("MSFT", D("500.00"), D("500.10"))
            order = await h.adapter.create_order(
                ref,
                OrderRequest("MSFT", Side.BUY, D(1), OrderType.LIMIT, TimeInForce.GTC, D("490")),
            )
            assert order.status is OrderStatus.OPEN
            await h.move_quote("MSFT", D("489.00"), D("489.10"))
            filled = await h.adapter.fetch_order(ref, order_id=order.id)
            assert (filled.status, filled.average_fill_price) == (OrderStatus.FILLED, D("489.05"))

            with pytest.raises(ValueError, match="no 'drop' fault"):
                h.inject(Fault(kind="drop"))
            with pytest.raises(pytest.skip.Exception):
                await h.expire_token()
        finally:
            await h.close()
        assert not h.directory.exists()
