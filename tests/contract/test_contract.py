"""The adapter contract: the same scenarios for every broker, through its harness.

Harness attributes (see ``conftest.Harness``) absorb what legitimately differs between brokers;
the scenarios never ask which broker they are running against.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.errors import (
    AssetClassNotSupported,
    AuthorizationExpired,
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    OrderNotFound,
    RateLimited,
    SymbolNotFound,
)
from adapters.models import (
    AccountRef,
    AssetClass,
    Balance,
    Bracket,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Side,
    SubmissionHint,
    TimeInForce,
)
from emulators.common import Fault
from tests.contract.conftest import ASK, BID, SYMBOL, Harness

D = Decimal
ORDERS_POST = r"/orders$"  # order placement at every HTTP broker; paper matches on the method
UNKNOWN_SYMBOL = "QZXQW"
FUTURE = "/ESZ25"
# (limit, stop) prices that keep a buy resting with the quote at 99.95/100.05.
RESTING: dict[OrderType, tuple[Decimal | None, Decimal | None]] = {
    OrderType.LIMIT: (D("50"), None),
    OrderType.STOP: (None, D("150")),
    OrderType.STOP_LIMIT: (D("151"), D("150")),
}


def new_cid() -> str:
    return "ct" + uuid.uuid4().hex[:18]  # 20 letters and digits: fits every broker


def buy(
    quantity: int | str = 1,
    order_type: OrderType = OrderType.MARKET,
    *,
    symbol: str = SYMBOL,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    cid: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        symbol,
        Side.BUY,
        D(quantity),
        order_type,
        TimeInForce.DAY,
        limit_price=limit_price,
        stop_price=stop_price,
        client_order_id=cid or new_cid(),
    )


def equity(h: Harness) -> AccountRef:
    return h.accounts["equity"]


async def held(h: Harness, symbol: str = SYMBOL) -> Decimal:
    positions = await h.adapter.fetch_positions(equity(h))
    return sum((p.quantity for p in positions if p.symbol == symbol), D(0))


async def open_ids(h: Harness) -> set[str]:
    return {o.id for o in await h.adapter.fetch_open_orders(equity(h))}


# -- reads ---------------------------------------------------------------------------------


async def test_reads_everything(harness: Harness) -> None:
    h, adapter = harness, harness.adapter
    accounts = {a.id: a for a in await adapter.fetch_accounts()}
    for ref in h.accounts.values():
        assert accounts[ref.id].ref() == ref
    for ref in set(h.accounts.values()):
        balance = await adapter.fetch_balance(ref)
        assert isinstance(balance, Balance) and balance.account_id == ref.id
        assert all(
            isinstance(v, Decimal) for v in (balance.cash, balance.buying_power, balance.equity)
        )
        assert balance.buying_power > 0
        positions = await adapter.fetch_positions(ref)
        assert all(isinstance(p, Position) and isinstance(p.quantity, Decimal) for p in positions)
        assert all(
            isinstance(o, Order) and not o.status.is_final
            for o in await adapter.fetch_open_orders(ref)
        )
        assert all(
            isinstance(o, Order) and o.status.is_final
            for o in await adapter.fetch_orders(ref, limit=20)
        )
    quote = await adapter.fetch_quote(SYMBOL)
    assert (quote.symbol, quote.bid, quote.ask) == (SYMBOL, BID, ASK)


# -- placing and cancelling ----------------------------------------------------------------


async def test_market_order_fills(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    before = await held(h)
    request = buy(1)
    placed = await adapter.create_order(ref, request)
    assert placed.client_order_id == request.client_order_id
    order = await adapter.fetch_order(ref, order_id=placed.id)
    assert (order.status, order.filled_quantity) == (OrderStatus.FILLED, D(1))
    # Within the quoted market: brokers fill at the ask, Tradecord Paper at the mid by default.
    assert order.average_fill_price is not None and BID <= order.average_fill_price <= ASK
    assert (order.symbol, order.side, order.order_type) == (SYMBOL, Side.BUY, OrderType.MARKET)
    assert await held(h) == before + 1
    assert placed.id in {o.id for o in await adapter.fetch_orders(ref, limit=20)}
    assert placed.id not in await open_ids(h)
    by_cid = await adapter.fetch_order(ref, client_order_id=request.client_order_id)
    assert by_cid.id == placed.id


async def test_one_position_reads_as_in_the_list(harness: Harness) -> None:
    adapter, ref = harness.adapter, equity(harness)
    await adapter.create_order(ref, buy(2))
    listed = next(p for p in await adapter.fetch_positions(ref) if p.symbol == SYMBOL)
    one = await adapter.fetch_position(ref, SYMBOL)
    assert one is not None
    assert (one.symbol, one.quantity, one.average_price, one.asset_class) == (
        listed.symbol,
        listed.quantity,
        listed.average_price,
        listed.asset_class,
    )
    assert await adapter.fetch_position(ref, UNKNOWN_SYMBOL) is None


@pytest.mark.parametrize("order_type", list(RESTING))
async def test_resting_order_then_cancel(harness: Harness, order_type: OrderType) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    if order_type not in h.order_types:
        pytest.skip(f"{adapter.display_name} does not take {order_type} orders")
    count = await h.broker_order_count(ref)
    limit, stop = RESTING[order_type]
    placed = await adapter.create_order(ref, buy(2, order_type, limit_price=limit, stop_price=stop))
    assert placed.status in (OrderStatus.PENDING, OrderStatus.OPEN)
    assert (placed.order_type, placed.quantity) == (order_type, D(2))
    assert (placed.limit_price, placed.stop_price) == (limit, stop)
    assert placed.id in await open_ids(h)
    assert await h.broker_order_count(ref) == count + 1
    await adapter.cancel_order(ref, placed.id)
    cancelled = await adapter.fetch_order(ref, order_id=placed.id)
    assert (cancelled.status, cancelled.filled_quantity) == (OrderStatus.CANCELLED, D(0))
    assert placed.id not in await open_ids(h)
    assert placed.id in {o.id for o in await adapter.fetch_orders(ref, limit=20)}


async def test_resting_limit_fills_when_the_price_comes(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    before = await held(h)
    placed = await adapter.create_order(ref, buy(1, OrderType.LIMIT, limit_price=D("99")))
    assert placed.id in await open_ids(h)
    await h.move_quote(SYMBOL, D("98.90"), D("98.98"))
    filled = await adapter.fetch_order(ref, order_id=placed.id)
    assert filled.status is OrderStatus.FILLED
    assert filled.average_fill_price is not None and filled.average_fill_price <= D("99")
    assert await held(h) == before + 1


async def test_a_trailing_stop_loss_bracket_works_or_is_refused_before_sending(
    harness: Harness,
) -> None:
    """Where the broker takes a trailing stop-loss in a bracket, the entry's fill leaves a
    trailing stop working for what it filled, by the trail sent; elsewhere the order is refused
    before anything reaches the broker."""
    h, adapter, ref = harness, harness.adapter, equity(harness)
    request = buy(1, OrderType.LIMIT, limit_price=D("99"))
    request.time_in_force = TimeInForce.GTC
    request.bracket = Bracket(D("110"), D("97"), stop_loss_trail_amount=D("2"))
    if not adapter.capabilities.bracket_trailing_stop:
        count = await h.broker_order_count(ref)
        with pytest.raises(InvalidOrder, match="takes no trailing stop-loss"):
            await adapter.create_order(ref, request)
        assert await h.broker_order_count(ref) == count
        return
    placed = await adapter.create_order(ref, request)
    await h.move_quote(SYMBOL, D("98.90"), D("98.98"))
    assert (await adapter.fetch_order(ref, order_id=placed.id)).status is OrderStatus.FILLED
    working = [o for o in await adapter.fetch_open_orders(ref) if o.side is Side.SELL]
    assert sorted(o.order_type for o in working) == [OrderType.LIMIT, OrderType.TRAILING_STOP]
    [stop] = [o for o in working if o.order_type is OrderType.TRAILING_STOP]
    assert (stop.side, stop.quantity, stop.trail_amount) == (Side.SELL, D(1), D(2))
    assert stop.stop_price is not None and stop.stop_price < D("99")


# -- rejections ----------------------------------------------------------------------------


async def test_insufficient_buying_power(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    before = await held(h)
    buying_power = (await adapter.fetch_balance(ref)).buying_power
    quantity = int(buying_power / ASK) * 10 + 1000
    with pytest.raises(InsufficientBuyingPower) as e:
        await adapter.create_order(ref, buy(quantity))
    assert "buying power" in e.value.user_message.lower()
    assert await held(h) == before
    assert not await open_ids(h)


async def test_unknown_symbol(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    with pytest.raises(SymbolNotFound):
        await adapter.create_order(ref, buy(1, symbol=UNKNOWN_SYMBOL))
    with pytest.raises(SymbolNotFound):
        await adapter.fetch_quote(UNKNOWN_SYMBOL)
    assert not await open_ids(h)


async def test_futures_on_a_non_futures_account(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    caps = adapter.capabilities
    if caps.can_trade(ref.type, AssetClass.FUTURE):
        pytest.skip(
            f"the {adapter.display_name} {ref.type} account trades futures too: "
            "there is no wrong account to pick"
        )
    count = await h.broker_order_count(ref)
    with pytest.raises(AssetClassNotSupported) as e:
        await adapter.create_order(ref, buy(1, symbol=FUTURE))
    message = e.value.user_message
    if caps.account_types_for(AssetClass.FUTURE):
        # The broker has futures, in another kind of account: say where to choose it.
        assert "/accounts" in message and "futures" in message
    else:
        assert f"{adapter.display_name} does not offer futures" in message
    assert await h.broker_order_count(ref) == count  # refused before anything was sent


# -- tokens --------------------------------------------------------------------------------


async def test_expired_token_is_refreshed_mid_call(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    if not h.supports_tokens:
        pytest.skip(f"{adapter.display_name} has no access tokens")
    if not h.token_refreshable:
        pytest.skip(
            f"{adapter.display_name} access tokens cannot be refreshed; "
            "test_unrefreshable_expired_token_asks_to_relink covers them"
        )
    tokens = adapter.ctx.tokens
    assert tokens is not None
    first = await tokens.access_token()
    await h.expire_token()
    assert (await adapter.fetch_balance(ref)).account_id == ref.id
    second = await tokens.access_token()
    assert second != first
    # A write refused for the token is retried once after the refresh: exactly one order.
    await h.expire_token()
    count = await h.broker_order_count(ref)
    placed = await adapter.create_order(ref, buy(1, OrderType.LIMIT, limit_price=D("50")))
    assert await tokens.access_token() not in (first, second)
    assert await h.broker_order_count(ref) == count + 1
    assert placed.id in await open_ids(h)


async def test_unrefreshable_expired_token_asks_to_relink(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    if not h.supports_tokens:
        pytest.skip(f"{adapter.display_name} has no access tokens")
    if h.token_refreshable:
        pytest.skip(
            f"{adapter.display_name} refreshes expired tokens; "
            "test_expired_token_is_refreshed_mid_call covers them"
        )
    count = await h.broker_order_count(ref)
    await h.expire_token()
    with pytest.raises(AuthorizationExpired) as e:
        await adapter.fetch_balance(ref)
    assert "/connect" in e.value.user_message
    with pytest.raises(AuthorizationExpired):
        await adapter.create_order(ref, buy(1))
    assert await h.broker_order_count(ref) == count


# -- rate limits ---------------------------------------------------------------------------


async def test_rate_limited_read(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    fault = h.inject(
        Fault(
            kind="status",
            status=429,
            method="GET",
            path=r"/positions$",
            times=1,
            headers={"Retry-After": "0"},
        )
    )
    if h.retries_reads:
        positions = await adapter.fetch_positions(ref)
        assert fault.hits == 1  # the 429 was answered, then the retry succeeded
        assert isinstance(positions, list)
    else:
        with pytest.raises(RateLimited) as e:
            await adapter.fetch_positions(ref)
        assert e.value.retry_after == 0
        assert isinstance(await adapter.fetch_positions(ref), list)


async def test_rate_limited_create_places_nothing(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    count = await h.broker_order_count(ref)
    h.inject(
        Fault(
            kind="status",
            status=429,
            method="POST",
            path=ORDERS_POST,
            times=1,
            headers={"Retry-After": "1"},
        )
    )
    request = buy(1)
    with pytest.raises(RateLimited) as e:
        await adapter.create_order(ref, request)
    assert e.value.retry_after == 1
    assert await h.broker_order_count(ref) == count
    with pytest.raises(OrderNotFound):
        await adapter.fetch_order(ref, client_order_id=request.client_order_id)


# -- doubt ---------------------------------------------------------------------------------


async def test_lost_response_on_create_then_lookup_finds_one_order(harness: Harness) -> None:
    h, adapter, ref = harness, harness.adapter, equity(harness)
    count = await h.broker_order_count(ref)
    h.inject(Fault(kind="lose_response", method="POST", path=ORDERS_POST, times=1))
    request = buy(1)
    with pytest.raises(BrokerUnavailable) as e:
        await adapter.create_order(ref, request)
    assert e.value.maybe_sent is True
    found = await adapter.fetch_order(ref, client_order_id=request.client_order_id)
    assert found.client_order_id == request.client_order_id
    assert (found.symbol, found.side, found.quantity) == (SYMBOL, Side.BUY, D(1))
    assert await h.broker_order_count(ref) == count + 1


async def test_lookup_after_restart_uses_the_hint(harness: Harness) -> None:
    h, ref = harness, equity(harness)
    count = await h.broker_order_count(ref)
    h.inject(Fault(kind="lose_response", method="POST", path=ORDERS_POST, times=1))
    sent = buy(3, OrderType.LIMIT, limit_price=D("61.37"))
    sent_at = datetime.now(UTC)
    with pytest.raises(BrokerUnavailable) as e:
        await h.adapter.create_order(ref, sent)
    assert e.value.maybe_sent is True
    fresh = await h.fresh_adapter()  # the process that sent it is gone
    try:
        found = await fresh.fetch_order(
            ref, client_order_id=sent.client_order_id, hint=SubmissionHint(sent, sent_at)
        )
        assert (found.quantity, found.limit_price) == (D(3), D("61.37"))
        assert found.client_order_id == sent.client_order_id
        assert await h.broker_order_count(ref) == count + 1
        never = buy(2, OrderType.LIMIT, limit_price=D("62.41"))
        with pytest.raises(OrderNotFound):
            await fresh.fetch_order(
                ref,
                client_order_id=never.client_order_id,
                hint=SubmissionHint(never, datetime.now(UTC)),
            )
    finally:
        await fresh.close()


async def test_a_hint_must_describe_the_order_looked_up(harness: Harness) -> None:
    request = buy(1)
    with pytest.raises(ValueError, match="another client order id"):
        await harness.adapter.fetch_order(
            equity(harness),
            client_order_id=new_cid(),
            hint=SubmissionHint(request, datetime.now(UTC)),
        )
