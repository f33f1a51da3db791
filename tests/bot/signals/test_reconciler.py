"""The reconciler's passes: what each takes up, in what order, and what it records."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.models import OrderRequest, OrderType, Side, TimeInForce
from adapters.symbols import asset_class_of
from bot.automation_models import ExecutionStatus
from bot.core import Core
from bot.models import AuditEvent, Connection, ConnectionStatus, IntentStatus, OrderIntent
from bot.services.oauth import TokenSet
from tests.bot.conftest import stored_connection
from tests.bot.signals.conftest import OWNER, execution, make_strategy, send, subscribe
from tests.support import FakeClock


def intent_row(
    member_id: int, connection_id: int, broker: str, account: str, status: str, at: datetime
) -> dict[str, Any]:
    """An order intent as stored, for a pass to find."""
    return dict(
        id=str(uuid.uuid4()),
        client_order_id=uuid.uuid4().hex[:20],
        member_id=member_id,
        connection_id=connection_id,
        broker=broker,
        mode="live" if broker != "paper" else "paper",
        account_id=account,
        source="discord",
        symbol="AAPL",
        asset_class="equity",
        side="buy",
        quantity=Decimal(1),
        order_type="limit",
        limit_price=Decimal(100),
        time_in_force="gtc",
        extra={"sent_at": at.isoformat()},
        status=status,
        broker_order_id="B" + uuid.uuid4().hex[:10] if status == IntentStatus.ACCEPTED else None,
        filled_quantity=Decimal(0),
        created_at=at,
        updated_at=at,
    )


async def in_doubt(core: Core, at: datetime) -> str:
    """A paper order whose sending process died before the broker got it."""
    paper = await core.connections.resolve(OWNER, None, "paper")
    row = intent_row(
        paper.connection.member_id,
        paper.connection.id,
        "paper",
        paper.account.account_id,
        IntentStatus.SUBMITTED,
        at,
    )
    async with core.db.transaction() as s:
        await s.execute(OrderIntent.__table__.insert(), [row])
    return str(row["id"])


async def test_five_hundred_resting_orders_do_not_starve_an_order_in_doubt(
    core: Core, clock: FakeClock
) -> None:
    """Each pass took the 500 oldest intents, and reading a resting order back stamped it
    anew: with 500 resting orders the same 500 came back every pass, and the member whose
    order was in doubt never heard. Orders in doubt come first now."""
    for i in range(500):
        target = await core.connections.resolve(10_000 + i % 50, None, "paper")
        request = OrderRequest(
            "AAPL",
            Side.BUY,
            Decimal(1),
            OrderType.LIMIT,
            TimeInForce.GTC,
            limit_price=Decimal(100),
            asset_class=asset_class_of("AAPL"),
        )
        out = await core.trading.place(target, request, source="discord", idempotency_key=f"{i}")
        assert out.intent.status == IntentStatus.ACCEPTED, out.message
    clock.advance(seconds=1)
    stuck = await in_doubt(core, clock())
    clock.advance(seconds=31)
    await core.trading.reconcile()
    assert (await core.trading.get_intent(stuck)).status == IntentStatus.FAILED


async def test_a_connection_to_relink_is_left_out_of_the_passes(
    core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing can be read with a lapsed sign-in, yet each pass asked the broker for every
    order of such a connection (taking a slot of its rate limit each time: 40 orders made a
    pass 20 s long), and ahead of everyone else's."""
    tokens = TokenSet("at", "rt", clock() + timedelta(hours=1), "trade")
    account = {"mode": "live", "account_id": "11827342", "account_type": "margin", "label": "TS"}
    cid = await stored_connection(core, 7001, tokens, accounts=[account])
    lapsed = await core.members.ensure(7001)
    long_ago = clock() - timedelta(days=3)
    async with core.db.transaction() as s:
        await s.execute(
            update(Connection)
            .where(Connection.id == cid)
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )
        rows = [
            intent_row(lapsed, cid, "tradestation", "11827342", IntentStatus.ACCEPTED, long_ago)
            for _ in range(3)
        ]
        await s.execute(OrderIntent.__table__.insert(), rows)
    stuck = await in_doubt(core, clock() - timedelta(minutes=1))
    tried: list[int | None] = []
    one = core.trading._reconcile_one

    async def recorded(intent: OrderIntent) -> None:
        tried.append(intent.connection_id)
        await one(intent)

    monkeypatch.setattr(core.trading, "_reconcile_one", recorded)
    await core.trading.reconcile()
    assert cid not in tried, tried
    assert (await core.trading.get_intent(stuck)).status == IntentStatus.FAILED


async def test_a_resting_order_read_again_records_no_new_phase(
    core: Core, clock: FakeClock
) -> None:
    """Each pass that read a resting order back recorded "accepted" again: /signal show of a
    limit entry left for a day listed about 2,900 "entry accepted" steps."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER)
    ack = await send(
        core, url, {"ticker": "AAPL", "action": "buy", "orderType": "limit", "limitPrice": 150}
    )
    await core.jobs.drain()
    assert (await execution(core, ack.body["id"], sub)).status == ExecutionStatus.ACCEPTED
    for _ in range(3):
        clock.advance(seconds=31)
        await core.trading.reconcile()
    async with core.db.session() as s:
        kinds = Counter(
            await s.scalars(select(AuditEvent.kind).where(AuditEvent.intent_id.is_not(None)))
        )
    assert kinds["order.accepted"] == 1, kinds
    [mine] = (await core.signals.signal_report(ack.body["id"], OWNER)).subscriptions
    assert [p.name for p in mine.phases].count("entry accepted") == 1, mine.phases


async def test_an_answer_another_process_stored_first_still_reaches_the_caller(
    core: Core,
) -> None:
    """A worker's stream stored the order's acceptance before the placing process applied its
    own answer: the answer was "nothing new" and the caller's copy stayed "submitted", so
    /trade reported an order in doubt that was working."""
    from bot.services.trading import OrderInput

    p = await core.trading.preview(
        OWNER, OrderInput("AAPL", "buy", "1", "limit", limit_price="150", time_in_force="gtc")
    )
    placed = await core.trading.confirm(p.intent_id, OWNER)
    assert placed.intent.status == IntentStatus.ACCEPTED and placed.order is not None
    stale = await core.trading.get_intent(p.intent_id)
    stale.status = IntentStatus.SUBMITTED  # this process's copy, from before the answer
    await core.trading._apply_order(stale, placed.order, told=True)
    assert stale.status == IntentStatus.ACCEPTED
    assert stale.broker_order_id == placed.order.id
