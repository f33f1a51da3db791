from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from adapters.errors import (
    BrokerUnavailable,
    InsufficientBuyingPower,
    InvalidOrder,
    OrderNotFound,
    OrderStateUnknown,
    RateLimited,
    SymbolNotFound,
)
from adapters.models import AssetClass, OrderType, mask_account
from adapters.paper.broker import PaperBroker
from adapters.paper.models import PaperOrder
from bot.background import Background
from bot.core import Core
from bot.db import Database
from bot.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from bot.models import AuditEvent, ConnectionAccount, IntentStatus, OrderIntent
from bot.services.notify import RecordingNotifier
from bot.services.trading import OrderInput, fill_price
from bot.settings import Settings
from tests.support import FakeClock, in_session, trading_contract

ES, MES = trading_contract("ES"), trading_contract("MES")

ALICE, BOB = 1001, 1002


@pytest.fixture
async def core(settings: Settings, db: Database) -> AsyncIterator[Core]:
    c = await Core.open(settings, migrate=False)
    clock = FakeClock()
    c.trading.clock = c.connections.clock = c.simulated_feed.clock = clock
    c.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    yield c
    await c.close()


async def order_count(core: Core, client_order_id: str | None = None) -> int:
    async with core.db.session() as s:
        q = select(func.count()).select_from(PaperOrder)
        if client_order_id:
            q = q.where(PaperOrder.client_order_id == client_order_id)
        return int(await s.scalar(q) or 0)


async def phases(core: Core, intent_id: str) -> list[str]:
    async with core.db.session() as s:
        rows = await s.scalars(
            select(AuditEvent.kind).where(AuditEvent.intent_id == intent_id).order_by(AuditEvent.id)
        )
        return list(rows)


async def test_preview_stores_a_draft_and_prices_it(core: Core) -> None:
    p = await core.trading.preview(ALICE, OrderInput("aapl", "buy", "10"))
    assert p.request.symbol == "AAPL"
    assert p.estimated_price == Decimal("200.10")  # a market buy pays the ask
    assert p.estimated_cost == Decimal("2001.00")
    assert p.buying_power == Decimal("100000")
    assert p.buying_power_after == Decimal("97999.00")
    assert p.simulated and p.target.mode == "paper"
    intent = await core.trading.get_intent(p.intent_id)
    assert intent.status == IntentStatus.DRAFT
    assert len(intent.client_order_id) <= 22 and intent.client_order_id.isalnum()
    assert await order_count(core) == 0  # nothing reaches the broker before Confirm


async def test_confirm_fills_and_records_every_phase(core: Core) -> None:
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "10"))
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.ok and out.intent.status == IntentStatus.FILLED
    assert "Filled: buy 10 AAPL at $200.00" in out.message  # paper fills at the mid by default
    assert await phases(core, p.intent_id) == [
        "order.validated",
        "order.submitted",
        "order.accepted",
        "order.filled",
    ]


async def test_double_confirm_places_one_order(core: Core) -> None:
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    results = await asyncio.gather(
        core.trading.confirm(p.intent_id, ALICE),
        core.trading.confirm(p.intent_id, ALICE),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Conflict) for r in results) == 1
    assert await order_count(core) == 1


async def test_someone_else_cannot_confirm(core: Core) -> None:
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    with pytest.raises(PermissionDenied):
        await core.trading.confirm(p.intent_id, BOB)
    assert await order_count(core) == 0
    assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.DRAFT


async def test_expired_preview_sends_nothing(core: Core) -> None:
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    core.trading.clock.advance(seconds=61)  # type: ignore[attr-defined]
    with pytest.raises(Conflict, match="expired"):
        await core.trading.confirm(p.intent_id, ALICE)
    assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.DISCARDED
    assert await order_count(core) == 0


async def test_discarded_preview_cannot_be_confirmed(core: Core) -> None:
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    await core.trading.discard(p.intent_id, ALICE)
    with pytest.raises(Conflict, match="cancelled, expired"):
        await core.trading.confirm(p.intent_id, ALICE)


async def test_a_preview_made_before_a_paper_reset_cannot_be_confirmed_after_it(
    core: Core,
) -> None:
    """Its "sell to close" would open a short on the reset account, which nobody previewed."""
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "10"))
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok
    closing = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "10"))
    await core.trading.reset_paper(ALICE)
    with pytest.raises(Conflict, match="paper account was reset"):
        await core.trading.confirm(closing.intent_id, ALICE)
    assert (await core.trading.get_intent(closing.intent_id)).status == IntentStatus.DISCARDED
    assert (await core.trading.holdings(ALICE, None, "paper")).positions == []


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (OrderInput("AAPL", "buy", "0"), "more than zero"),
        (OrderInput("AAPL", "buy", "-5"), "more than zero"),
        (OrderInput("AAPL", "buy", "ten"), "must be a number"),
        (OrderInput("AAPL", "buy", "1.5"), "whole number"),
        (OrderInput("BTCUSD", "buy", "0.123456789"), "at most 8 decimals"),
        (OrderInput("AAPL", "hold", "1"), "Side must be"),
        (OrderInput("AAPL", "buy", "1", "limit"), "needs limit_price"),
        (OrderInput("AAPL", "buy", "1", "market", limit_price="10"), "limit_price only applies"),
        (
            OrderInput("AAPL", "buy", "1", "limit", limit_price="10", stop_price="9"),
            "stop_price only applies",
        ),
        (OrderInput("AAPL", "buy", "1", "stop"), "needs stop_price"),
        (OrderInput("AAPL", "buy", "1", "stop_limit", stop_price="9"), "needs limit_price"),
        (OrderInput("AAPL", "buy", "1", "limit", limit_price="-1"), "more than zero"),
        (OrderInput("AAPL", "buy", "1", "trailing"), "Order type must be"),
        # Neither distance: saying "not both" would tell them off for what they did not do.
        (
            OrderInput("AAPL", "sell", "1", "trailing_stop"),
            r"needs how far it trails: add trail_amount \(a price distance\) or trail_percent\.$",
        ),
        (
            OrderInput("AAPL", "sell", "1", "trailing_stop", trail_amount="2", trail_percent="5"),
            "trail_amount .* or trail_percent, not both: remove one",
        ),
        (OrderInput("AAPL", "buy", "1", time_in_force="forever"), "Time in force must be"),
        (OrderInput("$$$", "buy", "1"), "is not a symbol"),
        (OrderInput("AAPL", "buy", "1", mode="margin"), "Mode must be paper or live"),
    ],
)
async def test_bad_input_is_refused_with_advice_and_stores_nothing(
    core: Core, order: OrderInput, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await core.trading.preview(ALICE, order)
    async with core.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(OrderIntent)) == 0


@pytest.mark.parametrize("typed", ["1e30", "12345678901234567890123456789"])
async def test_a_huge_quantity_is_refused_with_a_message(core: Core, typed: str) -> None:
    with pytest.raises(
        InvalidInput, match=r"Quantity is too large: .* less than 1,000,000,000,000"
    ):
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", typed))


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (OrderInput("AAPL", "buy", "1", "limit", limit_price="1e30"), "limit_price is too large"),
        (OrderInput("AAPL", "sell", "1", "stop", stop_price="1e30"), "stop_price is too large"),
        # More digits than a 28-digit context holds are not rounded away into a valid order.
        (OrderInput("AAPL", "buy", "1.0000000000000000000000000001"), "whole number"),
        (OrderInput("BTCUSD", "buy", "0.123456780000000000000000000001"), "at most 8 decimals"),
    ],
)
async def test_numbers_too_large_or_too_long_are_refused(
    core: Core, order: OrderInput, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await core.trading.preview(ALICE, order)


async def test_the_largest_quantity_is_taken_to_the_buying_power_check(core: Core) -> None:
    with pytest.raises(InsufficientBuyingPower):
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "999999999999"))
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1.000000000000000000000000"))
    assert p.request.quantity == 1 and str(p.request.quantity) == "1"


async def test_unknown_symbol(core: Core) -> None:
    with pytest.raises(SymbolNotFound):
        await core.trading.preview(ALICE, OrderInput("ZZZQX", "buy", "1"))


async def test_insufficient_buying_power(core: Core) -> None:
    with pytest.raises(InsufficientBuyingPower, match=r"needs about \$200,100.00"):
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1000"))


async def test_a_futures_preview_needs_initial_margin_not_the_notional(core: Core) -> None:
    core.simulated_feed.set_quote(ES, Decimal("5900.00"), Decimal("5900.50"))
    p = await core.trading.preview(ALICE, OrderInput(ES, "buy", "1"))
    assert p.estimated_cost == Decimal("295025.00")  # the card still shows the notional
    margin = Decimal("29502.50")  # what Paper holds back: 10 % initial margin
    assert p.buying_power_required == margin
    assert p.buying_power_after == Decimal("100000") - margin
    # Confirmed, the broker agrees: it fills, holding back the margin.
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok


async def test_a_futures_order_beyond_the_margin_is_still_refused(core: Core) -> None:
    core.simulated_feed.set_quote(ES, Decimal("5900.00"), Decimal("5900.50"))
    with pytest.raises(
        InsufficientBuyingPower, match=r"needs about \$118,010.00 and .* has \$100,000.00"
    ):
        await core.trading.preview(ALICE, OrderInput(ES, "buy", "4"))


async def test_closing_a_futures_position_frees_its_margin(core: Core) -> None:
    core.simulated_feed.set_quote("/ES", Decimal("5900.00"), Decimal("5900.50"))
    await core.trading.confirm(
        (await core.trading.preview(ALICE, OrderInput("/ES", "buy", "2"))).intent_id, ALICE
    )
    p = await core.trading.preview(ALICE, OrderInput("@ES", "sell", "2"))
    assert p.position_quantity == 2
    assert p.buying_power_after == p.buying_power + Decimal("59000.00")  # 2 × 5900 × 50 × 10 %


async def test_preview_of_a_flip_accepts_what_the_broker_accepts(core: Core) -> None:
    core.simulated_feed.set_quote("AAPL", Decimal("100.00"), Decimal("100.00"))
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "100"))
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok
    p = await core.trading.preview(
        ALICE, OrderInput("AAPL", "sell", "1000", "limit", limit_price="100")
    )
    # 90,000 + 10,000 the closing 100 bring in − 90,000 the short of 900 holds.
    assert p.buying_power_after == Decimal(10000)
    # One share more than buying power allows: the refusal names the flip's own need.
    with pytest.raises(InsufficientBuyingPower, match=r"needs about \$90,100\.00 .* \$90,000"):
        await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "1101"))


@pytest.mark.parametrize(
    ("opened", "flip", "after"),
    [
        (OrderInput("AAPL", "buy", "100"), OrderInput("AAPL", "sell", "1050"), "5000"),
        (OrderInput("AAPL", "sell", "100"), OrderInput("AAPL", "buy", "1000"), "10000"),
        (OrderInput(ES, "sell", "3"), OrderInput(ES, "buy", "7"), "0"),
        (OrderInput(ES, "buy", "2"), OrderInput(ES, "sell", "3"), "75000"),
    ],
)
async def test_a_flips_preview_says_what_the_broker_leaves(
    core: Core, opened: OrderInput, flip: OrderInput, after: str
) -> None:
    """Confirmed, the flip fills at the price previewed and leaves the buying power it said."""
    core.simulated_feed.set_quote("AAPL", Decimal("100.00"), Decimal("100.00"))
    core.simulated_feed.set_quote(ES, Decimal("5000.00"), Decimal("5000.00"))
    p = await core.trading.preview(ALICE, opened)
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok
    p = await core.trading.preview(ALICE, flip)
    assert p.buying_power_after == Decimal(after)
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.ok and out.intent.status == IntentStatus.FILLED
    balance = (await core.trading.portfolio(ALICE, None, "paper")).balance
    assert balance.buying_power == Decimal(after)


async def test_a_flip_the_broker_would_refuse_is_refused_at_preview(core: Core) -> None:
    core.simulated_feed.set_quote("AAPL", Decimal("100.00"), Decimal("100.00"))
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "100"))
    assert (await core.trading.confirm(p.intent_id, ALICE)).ok
    with pytest.raises(InsufficientBuyingPower):  # opens 1001 (100,100), frees 10,000
        await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "1101"))
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "sell", "1100"))
    assert p.buying_power_after == 0


@pytest.mark.parametrize(
    ("held", "side", "quantity", "after"),
    [
        ("0", "buy", "100", "40000"),  # opens: its notional
        ("100", "sell", "100", "60000"),  # closes: frees its notional
        ("-100", "buy", "40", "54000"),  # covers part of a short
        ("100", "sell", "300", "40000"),  # flips: 200 open (−20,000), 100 close (+10,000)
        ("-100", "buy", "250", "45000"),  # flips the other way: 150 open, 100 close
    ],
)
def test_a_real_brokers_preview_charges_only_what_opens(
    held: str, side: str, quantity: str, after: str
) -> None:
    """Real brokers go through the same ``buying_power_after``, with their notional."""
    from adapters.alpaca import AlpacaAdapter
    from adapters.base import AdapterContext
    from adapters.models import OrderRequest, Side
    from bot.services.trading import buying_power_after

    adapter = AlpacaAdapter(AdapterContext())
    request = OrderRequest("AAPL", Side(side), Decimal(quantity))
    required = adapter.buying_power_required(request, Decimal(100))
    assert buying_power_after(Decimal(50000), request, Decimal(held), required) == Decimal(after)


@pytest.mark.parametrize(
    ("typed", "standard"), [("/ES", "/ES"), ("@es", "/ES"), (f"/{MES}", MES), ("@6E", "/6E")]
)
async def test_futures_written_with_a_prefix_are_symbols(
    core: Core, typed: str, standard: str
) -> None:
    p = await core.trading.preview(ALICE, OrderInput(typed, "buy", "1"))
    assert p.request.symbol == standard
    assert p.asset_class is AssetClass.FUTURE


@pytest.mark.parametrize("typed", ["/AAPL", "@", "/", "@ZZZZ"])
async def test_a_prefix_on_anything_but_a_future_is_not_a_symbol(core: Core, typed: str) -> None:
    with pytest.raises(InvalidInput, match="is not a symbol"):
        await core.trading.preview(ALICE, OrderInput(typed, "buy", "1"))


@pytest.mark.parametrize(
    ("held", "bought", "typed"),
    [
        ("BRK.B", "190", "BRK-B"),
        ("BRK.B", "190", "brk/b"),
        ("BTCUSD", "0.5", "BTC/USD"),
        ("BTCUSD", "0.5", "btc-usd"),
    ],
)
async def test_a_closing_sell_in_another_spelling_closes_the_position(
    core: Core, held: str, bought: str, typed: str
) -> None:
    core.simulated_feed.set_quote(held, Decimal("479.90"), Decimal("480.10"))
    core.simulated_feed.set_quote("BTCUSD", Decimal("90000"), Decimal("90010"))
    opened = await core.trading.preview(ALICE, OrderInput(held, "buy", bought))
    assert (await core.trading.confirm(opened.intent_id, ALICE)).ok
    # Spend what is left, so that only a sell that closes can pass the buying-power check.
    left = opened.buying_power_after
    await core.trading.confirm(
        (
            await core.trading.preview(ALICE, OrderInput("AAPL", "buy", str(int(left // 201))))
        ).intent_id,
        ALICE,
    )
    p = await core.trading.preview(ALICE, OrderInput(typed, "sell", bought))
    assert p.request.symbol == held
    assert p.position_quantity == Decimal(bought)
    assert p.buying_power_after > p.buying_power  # closing frees buying power
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.ok
    positions = (await core.trading.holdings(ALICE, None, "paper")).positions
    assert [x.symbol for x in positions] == ["AAPL"]  # the position was closed, not shorted


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (OrderInput(MES, "buy", "1", "limit", limit_price="5800.10"), "ticks of 0.25"),
        (OrderInput("/ES", "buy", "1", "stop", stop_price="5900.3"), "ticks of 0.25"),
        (
            OrderInput("AAPL", "buy", "1", "limit", limit_price="100.123456789"),
            "at most 8 decimals",
        ),
        (
            OrderInput("AAPL", "buy", "1", "limit", limit_price="100.12345"),
            r"whole cents: use 100\.12 or 100\.13",
        ),
        (
            OrderInput("AAPL", "buy", "1", "stop", stop_price="210", time_in_force="ioc"),
            "IOC works with market and limit orders only",
        ),
        (OrderInput("ESZ25", "buy", "1"), r"ESZ25 .* stopped trading on Fri 19 Dec 2025"),
    ],
)
async def test_the_brokers_own_checks_run_before_the_preview(
    core: Core, order: OrderInput, message: str
) -> None:
    with pytest.raises(InvalidOrder, match=message):
        await core.trading.preview(ALICE, order)
    async with core.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(OrderIntent)) == 0


@pytest.mark.parametrize(("typed", "whole"), [("1.0", 1), ("10.00", 10), ("100.000", 100)])
async def test_a_whole_quantity_may_be_written_with_zeros_after_the_point(
    core: Core, typed: str, whole: int
) -> None:
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", typed))
    assert p.request.quantity == whole
    assert str(p.request.quantity) == str(whole)


async def test_a_fraction_of_a_share_is_refused_as_typed(core: Core) -> None:
    """Before: "use a whole number, not 1E-7"."""
    with pytest.raises(InvalidInput, match=r"whole number, not 0\.0000001\.$"):
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "0.0000001"))


async def test_connection_must_be_the_members(core: Core) -> None:
    await core.members.ensure(BOB)
    with pytest.raises(NotFound, match="no connection named “Bob's Alpaca”"):
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1", connection="Bob's Alpaca"))


async def test_live_mode_needs_a_live_account(core: Core) -> None:
    with pytest.raises(NotFound, match="no connection with a live account"):
        await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1", mode="live"))


# -- faults: at most one broker order per intent, whatever fails ---------------------------

# "unknown": the broker answers, but without saying whether it took the order.
FAULTS = st.sampled_from(["ok", "refuse", "rate", "lose", "timeout_after", "unknown"])


class FaultyAdapter:
    """Wraps an adapter and makes each broker call fail in a drawn way.

    refuse: fails before the broker acts (5xx, not sent); rate: 429; lose: the broker acts and
    the answer is lost; timeout_after: the broker acts and the call times out.
    """

    def __init__(self, inner: Any, plan: list[str], core: Core, resends: list[str]) -> None:
        self._inner = inner
        self._plan = plan
        self._core = core
        self._resends = resends

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in (
            "create_order",
            "fetch_order",
            "fetch_quote",
            "fetch_balance",
            "fetch_positions",
        ):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            fault = self._plan.pop(0) if self._plan else "ok"
            if fault == "refuse":
                raise BrokerUnavailable(maybe_sent=False)
            if fault == "rate":
                raise RateLimited(retry_after=1)
            if name == "create_order":
                # Paper dedupes client order ids, so count resends ourselves: a create for an
                # order the broker already holds is exactly the blind retry we forbid.
                cid = args[1].client_order_id
                if await order_count(self._core, cid):
                    self._resends.append(cid)
            result = await attr(*args, **kwargs)
            if fault == "lose":
                raise BrokerUnavailable(maybe_sent=True)
            if fault == "timeout_after":
                raise TimeoutError
            if fault == "unknown" and name == "create_order":
                raise OrderStateUnknown
            return result

        return call


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=st.lists(FAULTS, min_size=0, max_size=8))
async def test_any_failure_sequence_places_at_most_one_order(core: Core, plan: list[str]) -> None:
    original = core.connections.adapter_for
    remaining = list(plan)
    resends: list[str] = []

    async def faulty(connection: Any) -> Any:
        return FaultyAdapter(await original(connection), remaining, core, resends)

    core.connections.adapter_for = faulty  # type: ignore[method-assign]
    try:
        try:
            p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
        except (BrokerUnavailable, RateLimited, TimeoutError):
            return  # refused before any intent: nothing to place
        intent_id = p.intent_id
        client_id = (await core.trading.get_intent(intent_id)).client_order_id
        try:
            await core.trading.confirm(intent_id, ALICE)
        except Conflict:
            pass
        for _ in range(3):  # the reconciler runs while faults may still happen
            core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
            await core.trading.reconcile()
        assert await order_count(core, client_id) <= 1
        assert resends == []
        remaining.clear()
        core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
        await core.trading.reconcile()
        intent = await core.trading.get_intent(intent_id)
        placed = await order_count(core, client_id)
        assert placed <= 1 and resends == []
        # Once the broker answers again, our record agrees with the broker.
        if placed:
            assert intent.status in (IntentStatus.FILLED, IntentStatus.ACCEPTED)
        else:
            assert intent.status in (IntentStatus.FAILED, IntentStatus.REJECTED)
    finally:
        core.connections.adapter_for = original  # type: ignore[method-assign]


async def test_place_is_once_per_idempotency_key(core: Core) -> None:
    from adapters.models import OrderRequest, Side
    from adapters.symbols import asset_class_of

    target = await core.connections.resolve(ALICE, None, "paper")
    req = OrderRequest("AAPL", Side.BUY, Decimal(2))
    req.asset_class = asset_class_of("AAPL")
    first, second = await asyncio.gather(
        core.trading.place(target, req, source="signal", idempotency_key="sig1:sub1"),
        core.trading.place(target, req, source="signal", idempotency_key="sig1:sub1"),
    )
    assert sorted([bool(first.extra.get("duplicate")), bool(second.extra.get("duplicate"))]) == [
        False,
        True,
    ]
    assert await order_count(core) == 1


def bracketed_buy() -> Any:
    from adapters.models import Bracket, OrderRequest, Side
    from adapters.symbols import asset_class_of

    bracket = Bracket(Decimal("210"), Decimal("190"), None)
    return OrderRequest(
        "AAPL", Side.BUY, Decimal(1), asset_class=asset_class_of("AAPL"), bracket=bracket
    )


async def test_brackets_are_stored_and_rebuilt_for_the_broker(core: Core) -> None:
    from adapters.models import Bracket
    from bot.services.trading import request_of

    target = await core.connections.resolve(ALICE, None, "paper")
    req = bracketed_buy()
    out = await core.trading.place(target, req, source="signal", idempotency_key="b1")
    stored = await core.trading.get_intent(out.intent.id)
    assert request_of(stored).bracket == Bracket(Decimal("210"), Decimal("190"), None)
    # Tradecord Paper placed it: the entry, then its two exits once it filled.
    assert stored.status == IntentStatus.FILLED, stored.error_message
    assert await order_count(core) == 3


async def test_brackets_are_refused_before_anything_where_the_broker_has_none(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from adapters.paper import PaperBroker

    monkeypatch.setattr(  # a broker without brackets
        PaperBroker, "capabilities", dataclasses.replace(PaperBroker.capabilities, brackets=False)
    )
    target = await core.connections.resolve(ALICE, None, "paper")
    req = bracketed_buy()
    out = await core.trading.place(target, req, source="signal", idempotency_key="b2")
    stored = await core.trading.get_intent(out.intent.id)
    assert stored.status == IntentStatus.REJECTED
    assert "brackets" in (stored.error_message or "")
    assert await order_count(core) == 0


async def test_the_preview_reads_at_once_and_a_failed_read_stops_the_others() -> None:
    from bot.services.trading import all_or_first_error

    stopped = asyncio.Event()

    async def slow() -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise
        return 1

    async def fails() -> int:
        await asyncio.sleep(0)
        raise BrokerUnavailable("down")

    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(all_or_first_error(slow(), fails(), slow()), 5)
    assert stopped.is_set()
    # Each read waits for the other two to have started: only concurrent reads get through.
    together = asyncio.Barrier(3)

    async def value(v: int) -> int:
        await together.wait()
        return v

    assert await asyncio.wait_for(all_or_first_error(value(1), value(2), value(3)), 5) == (1, 2, 3)


async def test_balances_reads_the_balance_and_the_positions_at_once(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a real broker that is one round trip of waiting instead of two."""
    together = asyncio.Barrier(2)

    def meeting(read: Any) -> Any:
        async def wait_for_the_other(self: PaperBroker, *args: Any) -> Any:
            await together.wait()  # only a concurrent read gets past this
            return await read(self, *args)

        return wait_for_the_other

    monkeypatch.setattr(PaperBroker, "fetch_balance", meeting(PaperBroker.fetch_balance))
    monkeypatch.setattr(PaperBroker, "fetch_positions", meeting(PaperBroker.fetch_positions))
    pf = await asyncio.wait_for(core.trading.portfolio(ALICE, None, "paper"), 5)
    assert pf.balance.cash > 0 and pf.positions == []


# -- reconciler: exactly once across processes, one intent's trouble is its own ---------------


async def pending(core: Core, discord_user_id: int) -> OrderIntent:
    """A confirmed intent whose process died before calling the broker (still pending)."""
    p = await core.trading.preview(discord_user_id, OrderInput("AAPL", "buy", "1"))
    await core.trading.claim(p.intent_id, discord_user_id)
    return await core.trading.get_intent(p.intent_id)


async def unknown(
    core: Core, discord_user_id: int, monkeypatch: pytest.MonkeyPatch, *, placed: bool = True
) -> OrderIntent:
    """A confirmed intent the broker placed (``placed``; else never got), whose answer and
    lookup were both lost."""
    place = PaperBroker.create_order

    async def lose_answer(self: PaperBroker, account: Any, request: Any) -> Any:
        if placed:
            await place(self, account, request)
        raise BrokerUnavailable(maybe_sent=True)

    async def refuse(*_: Any, **__: Any) -> Any:
        raise BrokerUnavailable(maybe_sent=False)

    p = await core.trading.preview(discord_user_id, OrderInput("AAPL", "buy", "1"))
    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", lose_answer)
        patch.setattr(PaperBroker, "fetch_order", refuse)
        out = await core.trading.confirm(p.intent_id, discord_user_id)
    assert out.intent.status == IntentStatus.UNKNOWN
    return out.intent


async def change_paper_account(core: Core, intent: OrderIntent) -> None:
    """The member picked another account in /accounts after the preview."""
    async with core.db.transaction() as s:
        await s.execute(
            update(ConnectionAccount)
            .where(
                ConnectionAccount.connection_id == intent.connection_id,
                ConnectionAccount.mode == "paper",
            )
            .values(account_id="another-account")
        )


async def test_two_reconcilers_send_a_pending_intent_once(
    core: Core, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes reconcile at once; both find no order for the pending intent. Only the
    one that wins the claim may call the broker (Tradier would place both copies)."""
    intent = await pending(core, ALICE)
    other = await Core.open(settings, migrate=False)
    other.trading.clock = other.connections.clock = core.trading.clock
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    look_up, place = PaperBroker.fetch_order, PaperBroker.create_order
    both_looked = asyncio.Barrier(2)
    creates: list[str | None] = []

    async def look_up_together(self: PaperBroker, *args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(5):
            await both_looked.wait()
        return await look_up(self, *args, **kwargs)

    async def counted(self: PaperBroker, account: Any, request: Any) -> Any:
        creates.append(request.client_order_id)
        return await place(self, account, request)

    monkeypatch.setattr(PaperBroker, "fetch_order", look_up_together)
    monkeypatch.setattr(PaperBroker, "create_order", counted)
    try:
        await asyncio.gather(core.trading.reconcile(), other.trading.reconcile())
    finally:
        await other.close()
    assert creates == [intent.client_order_id]
    assert await order_count(core, intent.client_order_id) == 1
    assert (await core.trading.get_intent(intent.id)).status == IntentStatus.FILLED
    assert (await phases(core, intent.id)).count("order.submitted") == 1


async def test_a_confirmed_order_never_sent_is_sent_late_only_within_five_minutes(
    core: Core,
) -> None:
    """Tradecord stopped between the Confirm and the broker call. Back within minutes, the
    reconciler sends the order; back after longer, it ends the order unsent and tells the
    member why: the price they agreed to is history."""
    clock = core.trading.clock
    soon = await pending(core, ALICE)
    late = await pending(core, BOB)
    clock.advance(minutes=4)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(soon.id)).status == IntentStatus.FILLED
    assert (await core.trading.get_intent(late.id)).status == IntentStatus.FILLED
    never = await pending(core, ALICE)
    clock.advance(minutes=6)  # type: ignore[attr-defined]
    changed = await core.trading.reconcile()
    ended = await core.trading.get_intent(never.id)
    assert [i.id for i in changed] == [never.id]
    assert (ended.status, ended.error_code) == (IntentStatus.FAILED, "order-too-late")
    assert "confirmed 6 minutes ago" in (ended.error_message or "")
    assert "Place it again" in (ended.error_message or "")
    assert await order_count(core, never.client_order_id) == 0


async def test_a_confirm_that_stalled_past_the_reconciler_does_not_send_again(
    core: Core,
) -> None:
    """The press moved the intent to pending, then its process stalled; the reconciler sent
    it. When the press's submit resumes it must not send a second copy."""
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    intent = await core.trading.claim(p.intent_id, ALICE)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(intent.id)).status == IntentStatus.FILLED
    late = await core.trading.submit(intent)
    assert not late.ok and "will not resend" in late.message
    assert await order_count(core, intent.client_order_id) == 1
    assert (await phases(core, intent.id)).count("order.submitted") == 1


@pytest.mark.parametrize("first", ["pending", "unknown"])
async def test_an_intent_whose_account_changed_does_not_stop_the_reconciler(
    core: Core, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    core.notifier = notifier = RecordingNotifier()
    if first == "pending":
        stuck = await pending(core, ALICE)
    else:
        stuck = await unknown(core, ALICE, monkeypatch)
    later = await unknown(core, BOB, monkeypatch)  # another member's, after it in the pass
    await change_paper_account(core, stuck)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    assert (await core.trading.get_intent(later.id)).status == IntentStatus.FILLED
    stuck = await core.trading.get_intent(stuck.id)
    told = [m.content for user, m in notifier.dms if user == ALICE]
    if first == "pending":
        # Never sent, and now it cannot be: it fails with the reason, and the member is told.
        assert stuck.status == IntentStatus.FAILED
        assert "changed since this order was prepared" in (stuck.error_message or "")
        assert await order_count(core, stuck.client_order_id) == 0
        assert len(told) == 1 and "nothing was sent" in (told[0] or "")
    else:
        # The broker login still reaches the old account: it is followed there.
        assert stuck.status == IntentStatus.FILLED
        assert len(told) == 1 and "Filled" in (told[0] or "")


async def test_an_unknown_intent_whose_account_changed_is_settled_at_its_own_account(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order reached the old account and filled there; the member then chose another
    account. The reconciler looks the order up at the old account and tells the member."""
    core.notifier = notifier = RecordingNotifier()
    stuck = await unknown(core, ALICE, monkeypatch)
    await change_paper_account(core, stuck)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    changed = await core.trading.reconcile()
    intent = await core.trading.get_intent(stuck.id)
    assert [i.id for i in changed] == [stuck.id]
    assert (intent.status, intent.error_code) == (IntentStatus.FILLED, None)
    assert intent.average_fill_price == Decimal("200.00")
    assert (await phases(core, stuck.id))[-1] == "order.filled"
    assert [m.content for _, m in notifier.dms] == [
        "📝 Paper order update: Filled: buy 1 AAPL at $200.00. · simulated prices"
    ]
    assert await order_count(core, stuck.client_order_id) == 1  # not sent again anywhere
    await core.trading.reconcile()
    assert len(notifier.dms) == 1


async def test_a_working_order_at_the_old_account_is_followed_until_it_fills(
    core: Core,
) -> None:
    core.notifier = notifier = RecordingNotifier()
    p = await core.trading.preview(
        ALICE, OrderInput("AAPL", "buy", "1", order_type="limit", limit_price="160")
    )
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.intent.status == IntentStatus.ACCEPTED
    await change_paper_account(core, out.intent)
    clock = core.trading.clock
    clock.advance(seconds=60)  # type: ignore[attr-defined]
    assert await core.trading.reconcile() == []  # still working at the old account
    # The market reaches the limit; the fill is only at the broker (no update applied).
    core.simulated_feed.set_quote("AAPL", Decimal("159.90"), Decimal("160.00"))
    [conn] = [c for c in await core.connections.list_for(ALICE) if c.builtin]
    adapter = await core.connections.adapter_for(conn)
    try:
        assert len(await adapter.sweep()) == 1  # type: ignore[attr-defined]
    finally:
        await adapter.close()
    clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    intent = await core.trading.get_intent(p.intent_id)
    assert intent.status == IntentStatus.FILLED and intent.filled_quantity == 1
    told = [m.content or "" for _, m in notifier.dms]
    assert len(told) == 1 and told[0].startswith("📝 Paper order update: Filled: buy 1 AAPL")
    assert await order_count(core) == 1


@pytest.mark.parametrize("status", ["unknown", "accepted"])
async def test_an_old_account_the_broker_no_longer_serves_is_reported_once(
    core: Core, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, status: str
) -> None:
    """The login no longer lists the old account: the order may be there, out of sight. The
    member hears so once; later passes neither tell again nor log it again."""
    core.notifier = notifier = RecordingNotifier()
    if status == "unknown":
        stuck = await unknown(core, ALICE, monkeypatch)
    else:
        p = await core.trading.preview(
            ALICE, OrderInput("AAPL", "buy", "1", order_type="limit", limit_price="160")
        )
        stuck = (await core.trading.confirm(p.intent_id, ALICE)).intent
        assert stuck.status == IntentStatus.ACCEPTED
    await change_paper_account(core, stuck)

    async def no_accounts(self: PaperBroker) -> list[Any]:
        return []

    monkeypatch.setattr(PaperBroker, "fetch_accounts", no_accounts)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    intent = await core.trading.get_intent(stuck.id)
    assert (intent.status, intent.error_code) == (IntentStatus.UNKNOWN, "account-changed")
    masked = mask_account(stuck.account_id)
    assert f"may be at {masked}. Check that account at the broker" in (intent.error_message or "")
    assert (await phases(core, stuck.id))[-1] == "order.unknown"
    told = [m.content or "" for _, m in notifier.dms]
    assert len(told) == 1 and told[0].startswith("📝 Paper order update: Not followed")
    assert masked in told[0]
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="tradecord.trading"):
        assert await core.trading.reconcile() == []
    assert stuck.id not in caplog.text and "skipped" not in caplog.text
    assert len(notifier.dms) == 1
    assert (await core.trading.get_intent(stuck.id)).status == IntentStatus.UNKNOWN


async def test_an_order_the_old_account_never_got_is_sent_to_no_account(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Following an intent at its old account only ever reads: an order the broker never got
    ends failed, and is not sent to the new account, nor again to the old one."""
    core.notifier = notifier = RecordingNotifier()
    stuck = await unknown(core, ALICE, monkeypatch, placed=False)
    await change_paper_account(core, stuck)
    sent: list[Any] = []

    async def record(self: PaperBroker, account: Any, request: Any) -> Any:
        sent.append(account)
        raise AssertionError("nothing may be sent")

    monkeypatch.setattr(PaperBroker, "create_order", record)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile()
    intent = await core.trading.get_intent(stuck.id)
    assert intent.status == IntentStatus.FAILED
    assert sent == [] and await order_count(core) == 0
    told = [m.content or "" for _, m in notifier.dms]
    assert len(told) == 1 and "Not placed" in told[0]


async def test_an_unexpected_error_for_one_intent_is_logged_without_its_message(
    core: Core, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = await unknown(core, ALICE, monkeypatch)
    later = await unknown(core, BOB, monkeypatch)
    adapter_for = core.connections.adapter_for

    async def broken(connection: Any) -> Any:
        if connection.id == stuck.connection_id:
            raise RuntimeError("token=s3cret")
        return await adapter_for(connection)

    monkeypatch.setattr(core.connections, "adapter_for", broken)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="tradecord.trading"):
        await core.trading.reconcile()
    assert (await core.trading.get_intent(later.id)).status == IntentStatus.FILLED
    assert (await core.trading.get_intent(stuck.id)).status == IntentStatus.UNKNOWN
    assert f"Reconcile of {stuck.id} failed: RuntimeError" in caplog.text
    assert "s3cret" not in caplog.text


async def test_background_work_reconciles_at_startup_and_tells_each_owner(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that stopped mid-send left one intent unknown and one submitted, both placed
    at the broker. The next process settles both in its first pass, before any interval has
    passed (a week here), and tells each owner."""
    core.notifier = notifier = RecordingNotifier()
    lost = await unknown(core, ALICE, monkeypatch)
    died = await unknown(core, BOB, monkeypatch)
    async with core.db.transaction() as s:  # its process died before even marking it unknown
        await s.execute(
            update(OrderIntent)
            .where(OrderIntent.id == died.id)
            .values(status=IntentStatus.SUBMITTED)
        )
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    passed = asyncio.Event()
    reconcile = core.trading.reconcile

    async def reconcile_once_noted(**kwargs: Any) -> list[OrderIntent]:
        changed = await reconcile(**kwargs)
        passed.set()
        return changed

    # Background takes the bound method when built: wrap it first, to wait for the pass.
    monkeypatch.setattr(core.trading, "reconcile", reconcile_once_noted)
    week = 7 * 24 * 3600.0
    background = Background(
        core, reconcile_every=week, sweep_every=week, remind_every=week, follow_orders=False
    )
    background.start()
    try:
        async with asyncio.timeout(30):  # a hang guard, not a speed check
            await passed.wait()
    finally:
        await background.close()
    for intent in (lost, died):
        settled = await core.trading.get_intent(intent.id)
        assert settled.status == IntentStatus.FILLED
        assert await order_count(core, intent.client_order_id) == 1
    told = sorted((who, m.content or "") for who, m in notifier.dms)
    assert [who for who, _ in told] == [ALICE, BOB]
    assert all(text.startswith("📝 Paper order update: Filled") for _, text in told)


@pytest.mark.parametrize("arrives", [True, False])
async def test_an_order_not_found_right_after_a_timeout_is_not_yet_proof(
    core: Core, monkeypatch: pytest.MonkeyPatch, arrives: bool
) -> None:
    """The send timed out while the broker was still working on it: the lookup at once finds
    nothing. Only once SEND_SETTLED_AFTER has passed does not found mean never placed."""
    core.notifier = notifier = RecordingNotifier()
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    place = PaperBroker.create_order
    late: list[tuple[PaperBroker, Any, Any]] = []

    async def time_out(self: PaperBroker, account: Any, request: Any) -> Any:
        late.append((self, account, request))
        raise TimeoutError

    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", time_out)
        out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.intent.status == IntentStatus.UNKNOWN and not out.ok
    assert "We will not resend it" in out.message
    core.trading.clock.advance(seconds=20)  # type: ignore[attr-defined]
    await core.trading.reconcile(older_than=timedelta(0))
    assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.UNKNOWN
    if arrives:  # the broker finishes the request we gave up on
        adapter, account, request = late[0]
        await place(adapter, account, request)
    core.trading.clock.advance(seconds=20)  # type: ignore[attr-defined]
    await core.trading.reconcile(older_than=timedelta(0))
    intent = await core.trading.get_intent(p.intent_id)
    told = [m.content or "" for _, m in notifier.dms]
    if arrives:
        assert intent.status == IntentStatus.FILLED
        assert len(told) == 1 and told[0].startswith("📝 Paper order update: Filled")
    else:
        assert intent.status == IntentStatus.FAILED
        assert len(told) == 1 and "Not placed" in told[0]
    assert await order_count(core, intent.client_order_id) == (1 if arrives else 0)


@pytest.mark.parametrize("answer", ["not cancelable", "not found"])
async def test_cancel_all_goes_on_past_an_order_that_filled_meanwhile(
    core: Core, monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """Paper answers a cancel of a filled order "not cancelable"; Alpaca and Tradier may answer
    "not found". Either way the others are cancelled and the filled one is reported."""
    for limit in ("150", "160", "170"):
        p = await core.trading.preview(
            ALICE, OrderInput("AAPL", "buy", "1", order_type="limit", limit_price=limit)
        )
        await core.trading.confirm(p.intent_id, ALICE)
    [filled_id] = [o.id for o in await _open_orders(core) if o.limit_price == Decimal("160")]
    cancel = PaperBroker.cancel_order

    async def fills_first(self: PaperBroker, account: Any, order_id: str) -> None:
        if order_id == filled_id:  # the market reaches this limit between listing and cancel
            core.simulated_feed.set_quote("AAPL", Decimal("159.90"), Decimal("160.00"))
            await self.sweep()
            core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
            if answer == "not found":
                raise OrderNotFound()
        await cancel(self, account, order_id)

    monkeypatch.setattr(PaperBroker, "cancel_order", fills_first)
    _, results = await core.trading.cancel(ALICE, None, None)
    assert sorted(o.status.value for o in results) == ["cancelled", "cancelled", "filled"]
    assert await _open_orders(core) == []


async def _open_orders(core: Core) -> list[Any]:
    return (await core.trading.open_orders(ALICE, None, None))[2]


async def test_a_broker_outage_defers_following_the_old_account(
    core: Core, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not being able to ask is not an answer: the intent waits for the next pass."""
    stuck = await unknown(core, ALICE, monkeypatch)
    await change_paper_account(core, stuck)
    list_accounts = PaperBroker.fetch_accounts

    async def down(self: PaperBroker) -> list[Any]:
        raise BrokerUnavailable()

    monkeypatch.setattr(PaperBroker, "fetch_accounts", down)
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO, logger="tradecord.trading"):
        await core.trading.reconcile()
    assert f"Reconcile of {stuck.id} deferred: broker-unavailable" in caplog.text
    intent = await core.trading.get_intent(stuck.id)
    assert (intent.status, intent.error_code) == (IntentStatus.UNKNOWN, None)
    monkeypatch.setattr(PaperBroker, "fetch_accounts", list_accounts)
    await core.trading.reconcile()
    assert (await core.trading.get_intent(stuck.id)).status == IntentStatus.FILLED


async def test_the_intent_is_stored_with_its_client_order_id_before_the_broker_call(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever happens to this process during the call, the database already names the
    order the broker may be holding (the reconciler looks it up by that id)."""
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    place = PaperBroker.create_order
    seen: list[tuple[str, str | None]] = []

    async def look_first(self: PaperBroker, account: Any, request: Any) -> Any:
        async with core.db.session() as s:  # a session of its own: only what is committed
            row = await s.get(OrderIntent, p.intent_id)
            assert row is not None
            seen.append((row.status, row.client_order_id))
        assert request.client_order_id == row.client_order_id
        return await place(self, account, request)

    monkeypatch.setattr(PaperBroker, "create_order", look_first)
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.ok and out.intent.status == IntentStatus.FILLED
    assert seen == [(IntentStatus.SUBMITTED, out.intent.client_order_id)]
    assert await order_count(core, out.intent.client_order_id) == 1


async def test_a_lost_answer_whose_lookup_fails_is_left_unknown_for_the_reconciler(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker took the order but its answer was lost, and the lookup by client order id
    fails too: nothing proves either way, so the intent is unknown, never resent, and the
    reconciler settles it once the broker answers."""
    core.notifier = notifier = RecordingNotifier()
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    place, lookup = PaperBroker.create_order, PaperBroker.fetch_order
    creates = 0

    async def lose_answer(self: PaperBroker, account: Any, request: Any) -> Any:
        nonlocal creates
        creates += 1
        await place(self, account, request)
        raise BrokerUnavailable(maybe_sent=True)

    async def unavailable(self: PaperBroker, *args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable(maybe_sent=False)

    with monkeypatch.context() as patch:
        patch.setattr(PaperBroker, "create_order", lose_answer)
        patch.setattr(PaperBroker, "fetch_order", unavailable)
        out = await core.trading.confirm(p.intent_id, ALICE)
        assert not out.ok and out.intent.status == IntentStatus.UNKNOWN
        assert "We will not resend it" in out.message
        core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
        await core.trading.reconcile(older_than=timedelta(0))  # still cannot look it up
        assert (await core.trading.get_intent(p.intent_id)).status == IntentStatus.UNKNOWN
    assert PaperBroker.fetch_order is lookup
    core.trading.clock.advance(seconds=60)  # type: ignore[attr-defined]
    await core.trading.reconcile(older_than=timedelta(0))
    intent = await core.trading.get_intent(p.intent_id)
    assert intent.status == IntentStatus.FILLED
    assert creates == 1 and await order_count(core, intent.client_order_id) == 1
    told = [m.content or "" for _, m in notifier.dms]
    assert len(told) == 1 and told[0].startswith("📝 Paper order update: Filled")


async def test_an_answer_that_says_nothing_of_the_order_is_looked_up_not_rejected(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TradeStation can answer 200 with neither Orders nor Errors: the order may be there, so
    it is looked up by client order id, like a lost answer, and never taken as rejected."""
    p = await core.trading.preview(ALICE, OrderInput("AAPL", "buy", "1"))
    place = PaperBroker.create_order

    async def say_nothing(self: PaperBroker, account: Any, request: Any) -> Any:
        await place(self, account, request)
        raise OrderStateUnknown

    monkeypatch.setattr(PaperBroker, "create_order", say_nothing)
    out = await core.trading.confirm(p.intent_id, ALICE)
    assert out.ok and out.intent.status == IntentStatus.FILLED, out.message
    assert await order_count(core, out.intent.client_order_id) == 1


@pytest.mark.parametrize(
    ("price", "text"),
    [
        ("270.285", "$270.285"),  # a midpoint fill: its half cent is part of what it cost
        ("270.28333333", "$270.2833"),  # an average of fills: four places are enough
        ("1234.5", "$1,234.50"),
        ("0.00012345", "$0.00012345"),
    ],
)
def test_a_fill_price_keeps_the_fraction_of_a_cent_it_has(price: str, text: str) -> None:
    assert fill_price(Decimal(price)) == text


def test_order_terms_name_each_price() -> None:
    """A stop-limit's two prices were shown as '535 / 530' (or only one of them), leaving the
    member to guess which was the stop."""
    from bot.services.trading import order_terms

    assert order_terms(OrderType.MARKET, None, None) == "market"
    assert order_terms(OrderType.LIMIT, Decimal("150"), None) == "limit at $150.00"
    assert order_terms(OrderType.STOP, None, Decimal("0.0012")) == "stop at $0.0012"
    assert (
        order_terms(OrderType.STOP_LIMIT, Decimal("535"), Decimal("530"))
        == "stop limit (stop $530.00, limit $535.00)"
    )
    assert (
        order_terms(OrderType.TRAILING_STOP, None, Decimal("95"), Decimal("2.5"))
        == "trailing stop ($2.50 behind the best price)"
    )


async def test_a_future_on_the_margin_connection_names_the_connection_that_trades_futures(
    ts_settings: Settings, ts: Any
) -> None:
    """/trade ESZ6 mode:live connection:"TS" (margin) said only "choose that account for this
    connection in /accounts", though that account is “TS Futures”'s and /accounts refuses it
    there: the refusal names the connection to trade futures on."""
    from adapters.errors import AssetClassNotSupported
    from tests.bot.conftest import MEMBER, link

    core = await Core.open(ts_settings, migrate=False)
    try:
        first = await link(core, ts)
        second = await link(core, ts, name="TS Futures")
        _, accounts = await core.connections.broker_accounts(MEMBER, first)
        live = {a.type.value: a for a in accounts if a.environment.value == "live"}
        await core.connections.choose_account(MEMBER, first, "live", live["margin"].id)
        order = OrderInput("ESZ6", "buy", "1", connection="TS", mode="live")
        with pytest.raises(AssetClassNotSupported) as alone:
            await core.trading.preview(MEMBER, order)
        assert "connection:" not in alone.value.user_message  # no other connection can
        await core.connections.choose_account(MEMBER, second, "live", live["futures"].id)
        with pytest.raises(AssetClassNotSupported) as refused:
            await core.trading.preview(MEMBER, order)
        text = refused.value.user_message
        assert "margin account chosen for this connection cannot trade futures" in text, text
        assert "Your connection “TS Futures” trades live in futures account" in text, text
        assert "add connection:TS Futures." in text, text
        assert "/accounts" not in text, text  # choosing it there would be refused
    finally:
        await core.close()


def test_counts_read_as_words() -> None:
    from bot.wording import plural

    assert [f"{n} order{plural(n)}" for n in (0, 1, 2)] == ["0 orders", "1 order", "2 orders"]
    assert f"{Decimal(1)} share{plural(Decimal(1))}" == "1 share"


@pytest.mark.parametrize(
    ("side", "tif", "bracket", "quantity"),
    [
        ("buy", "day", False, "3.33333333"),  # Alpaca takes a fraction of a share here
        ("sell", "day", False, "3"),  # a fractional sell may not be of shares held
        ("buy", "gtc", False, "3"),  # fractions are day orders only
        ("buy", "day", True, "3"),  # and never bracketed
    ],
)
def test_an_amount_buys_a_fraction_of_a_share_only_where_alpaca_takes_one(
    side: str, tif: str, bracket: bool, quantity: str
) -> None:
    from adapters.alpaca import AlpacaAdapter
    from adapters.base import AdapterContext
    from adapters.models import Bracket, OrderRequest, Side, TimeInForce
    from bot.services.trading import sized_by_amount

    request = OrderRequest("AAPL", Side(side), Decimal(1), time_in_force=TimeInForce(tif))
    request.asset_class = AssetClass.EQUITY
    if bracket:
        request.bracket = Bracket(take_profit=Decimal(400))
    sized = sized_by_amount(request, Decimal(1000), Decimal(300), AlpacaAdapter(AdapterContext()))
    assert format(sized.quantity, "f") == quantity


def test_already_closing_counts_a_brackets_exits_once_and_never_a_held_one() -> None:
    """The card summed every open sell: a bracket's take-profit and stop-loss (listed apart,
    each for the whole quantity) counted twice, and exits held for their entry's fill too."""
    from adapters.models import Order, OrderStatus, Side, TimeInForce
    from bot.services.trading import already_closing

    def order(
        qty: str,
        *,
        parent: str | None = None,
        status: OrderStatus = OrderStatus.OPEN,
        side: Side = Side.SELL,
    ) -> Order:
        return Order(
            f"o{qty}{parent}{status}",
            "A1",
            "F",
            side,
            Decimal(qty),
            OrderType.LIMIT,
            TimeInForce.GTC,
            status,
            parent_id=parent,
        )

    bracket = [order("10", parent="e1"), order("10", parent="e1")]
    held_for_entry = [order("7", parent="e2", status=OrderStatus.PENDING)]
    alone = [order("3"), order("4", side=Side.BUY)]
    orders = bracket + held_for_entry + alone
    assert already_closing(orders, Side.SELL, follow=False) == 13  # 10 once, and 3
    assert already_closing(orders, Side.SELL, follow=True) == 3  # exits make room


async def test_paper_practice_uses_up_no_live_daily_allowance(
    ts_settings: Settings, ts: Any
) -> None:
    """$4,002 of paper AAPL under a $5,000 day left $998 for live trading, and the refusal
    did not say paper had been counted. Each mode now has its own day."""
    from bot.errors import LimitReached
    from tests.bot.conftest import MEMBER, link

    core = await Core.open(ts_settings, migrate=False)
    try:
        core.trading.clock = in_session()  # TradeStation takes market orders in hours only
        core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
        cid = await link(core, ts)
        _, accounts = await core.connections.broker_accounts(MEMBER, cid)
        live = {a.type.value: a for a in accounts if a.environment.value == "live"}
        await core.connections.choose_account(MEMBER, cid, "live", live["margin"].id)
        await core.limits.set_member_limits(MEMBER, {"max_daily_notional": Decimal(5000)})
        for _ in range(2):
            p = await core.trading.preview(MEMBER, OrderInput("AAPL", "buy", "10", mode="paper"))
            assert (await core.trading.confirm(p.intent_id, MEMBER)).ok
        p = await core.trading.preview(
            MEMBER, OrderInput("AAPL", "buy", "5", connection="TS", mode="live")
        )
        assert p.target.mode == "live"
        with pytest.raises(LimitReached) as e:  # paper's own day is nearly used up
            await core.trading.preview(MEMBER, OrderInput("AAPL", "buy", "5", mode="paper"))
        assert "$4,002.00 of paper orders was already sent today" in e.value.user_message
    finally:
        await core.close()


@pytest.mark.parametrize("typed", ["ES1!", "nq2!"])
async def test_tradingviews_continuous_future_typed_by_hand_says_what_to_type(
    core: Core, typed: str
) -> None:
    """ES1! (which signals map to today's contract) was refused in /trade as "not a symbol",
    which read like a typo."""
    with pytest.raises(InvalidInput) as e:
        await core.trading.preview(ALICE, OrderInput(typed, "buy", "1"))
    root = typed[:2].upper()
    assert f"is TradingView's continuous {root} future" in e.value.user_message
    assert f"or /{root}." in e.value.user_message
