"""An order the member replaces in Alpaca's own app (PATCH: a new order, a new id) is followed
by its intent: not cancelled, recorded, and its later fills told as usual."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from adapters.alpaca import AlpacaAdapter
from adapters.models import (
    AccountRef,
    OrderChange,
    OrderRequest,
    OrderType,
    OrderUpdate,
    Side,
    TimeInForce,
)
from adapters.symbols import asset_class_of
from bot.core import Core
from bot.db import Database
from bot.models import AuditEvent, Connection, IntentStatus
from bot.services.notify import RecordingNotifier
from bot.services.oauth import TokenSet
from bot.services.order_updates import OrderUpdates
from bot.settings import Settings, load_settings
from emulators.alpaca import AlpacaEmulator
from emulators.alpaca.server import DEFAULT_CLIENT_ID
from tests.bot.conftest import MEMBER, connection, stored_connection
from tests.bot.test_order_updates import texts, until

ACCOUNT = "PA3KX7T9QW2M"  # the emulator's "demo" paper account


@pytest.fixture
async def alpaca() -> AsyncIterator[AlpacaEmulator]:
    emu = AlpacaEmulator()
    await emu.start()
    yield emu
    assert emu.spec_violations == []
    await emu.stop()


@pytest.fixture
async def core(settings: Settings, db: Database, alpaca: AlpacaEmulator) -> AsyncIterator[Core]:
    with_alpaca = load_settings(
        **{k: v for k, v in settings.model_dump().items() if v is not None},
        tradecord_alpaca_client_id=DEFAULT_CLIENT_ID,
        tradecord_alpaca_api_url=alpaca.api_url("live"),
        tradecord_alpaca_paper_api_url=alpaca.api_url("paper"),
        tradecord_alpaca_data_url=alpaca.data_url,
    )
    c = await Core.open(with_alpaca, migrate=False)
    c.notifier = RecordingNotifier()
    yield c
    await c.close()


async def alpaca_paper_connection(core: Core, alpaca: AlpacaEmulator) -> int:
    """The member's "Alpaca" connection, trading the emulator's demo paper account: its id."""
    return await stored_connection(
        core,
        MEMBER,
        TokenSet(alpaca.issue_token("demo", env="paper"), None, None, "trading data"),
        broker="alpaca",
        name="Alpaca",
        settings={"environment": "paper"},
        accounts=[
            {"mode": "paper", "account_id": ACCOUNT, "account_type": "margin", "label": "paper"}
        ],
    )


async def placed_limit(core: Core, alpaca: AlpacaEmulator) -> tuple[str, int]:
    """A working buy limit of 10 F at $9, placed through Tradecord: the intent's id and its
    connection's."""
    cid = await alpaca_paper_connection(core, alpaca)
    target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
    req = OrderRequest(
        "F",
        Side.BUY,
        Decimal(10),
        OrderType.LIMIT,
        TimeInForce.GTC,
        limit_price=Decimal(9),
        asset_class=asset_class_of("F"),
    )
    out = await core.trading.place(target, req, source="discord", idempotency_key="r1")
    assert out.intent.status == IntentStatus.ACCEPTED, out.message
    return out.intent.id, cid


async def replace_in_alpacas_app(alpaca: AlpacaEmulator, order_id: str, **body: str) -> str:
    headers = {"Authorization": f"Bearer {alpaca.issue_token('demo', env='paper')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.patch(
            alpaca.api_url("paper") + f"/v2/orders/{order_id}", json=body, headers=headers
        ) as r,
    ):
        assert r.status == 200
        return str((await r.json())["id"])


async def replaced_events(core: Core, intent_id: str) -> list[dict[str, str]]:
    async with core.db.session() as s:
        rows = await s.scalars(
            select(AuditEvent).where(
                AuditEvent.intent_id == intent_id, AuditEvent.kind == "order.replaced"
            )
        )
        return [e.detail for e in rows]


async def test_the_stream_follows_a_replaced_order_to_its_fill(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    intent_id, _ = await placed_limit(core, alpaca)
    old_id = (await core.trading.get_intent(intent_id)).broker_order_id
    assert old_id
    alpaca.fill(old_id, Decimal(4), Decimal(9))  # part fills before the replace
    updates = OrderUpdates(core, supervise_every=0.05, poll_start=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(updates.supervise(stop))
    try:
        await until(lambda: alpaca.stream_listeners() == 1)
        new_id = await replace_in_alpacas_app(alpaca, old_id, qty="6", limit_price="9.5")

        async def followed() -> bool:
            # Two events: the old order's "replaced" moves the intent, the new order's "new"
            # brings its terms.
            intent = await core.trading.get_intent(intent_id)
            return (intent.broker_order_id, intent.limit_price) == (new_id, Decimal("9.5"))

        async with asyncio.timeout(10):
            while not await followed():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        intent = await core.trading.get_intent(intent_id)
        assert intent.status == IntentStatus.PARTIALLY_FILLED  # not cancelled
        assert (intent.quantity, intent.limit_price) == (Decimal(10), Decimal("9.5"))
        assert intent.filled_quantity == Decimal(4)
        assert await replaced_events(core, intent_id) == [
            {
                "replaced_order_id": old_id,
                "broker_order_id": new_id,
                "filled_quantity": "4",
            }
        ]
        alpaca.fill(new_id, Decimal(6), Decimal("9.5"))
        notifier = core.notifier
        assert isinstance(notifier, RecordingNotifier)
        await until(lambda: any("Filled" in t for t in texts(notifier)))
    finally:
        stop.set()
        await task
    intent = await core.trading.get_intent(intent_id)
    assert intent.status == IntentStatus.FILLED and intent.broker_order_id == new_id
    assert intent.filled_quantity == Decimal(10)
    assert intent.average_fill_price == Decimal("9.3")  # 4 at 9 and 6 at 9.5
    assert not any("ancel" in t for t in texts(notifier))
    assert texts(notifier)[-1] == "📝 Paper order update: Filled: buy 10 F at $9.30."


async def test_a_poll_and_the_reconciler_follow_a_replacement_they_missed(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """No stream saw it: a poll reads the old order as replaced and moves on to the new one;
    replaced twice, the reconciler walks the chain from the first order's client order id."""
    intent_id, cid = await placed_limit(core, alpaca)
    intent = await core.trading.get_intent(intent_id)
    old_id = intent.broker_order_id
    assert old_id
    middle = await replace_in_alpacas_app(alpaca, old_id, limit_price="8.5")
    updates = OrderUpdates(core)
    conn = await connection(core, cid)
    adapter = await core.connections.adapter_for(conn)
    try:
        await updates.poll(conn, adapter)
    finally:
        await adapter.close()
    intent = await core.trading.get_intent(intent_id)
    assert (intent.status, intent.broker_order_id) == (IntentStatus.ACCEPTED, middle)
    assert intent.limit_price == Decimal("8.5")  # the poll asked for the new order too
    newest = await replace_in_alpacas_app(alpaca, middle, qty="7")
    alpaca.fill(newest, Decimal(7), Decimal("8.5"))
    changed = await core.trading.reconcile(older_than=timedelta(seconds=-60))
    assert [i.id for i in changed] == [intent_id]
    intent = await core.trading.get_intent(intent_id)
    assert intent.status == IntentStatus.FILLED and intent.broker_order_id == newest
    assert (intent.quantity, intent.filled_quantity) == (Decimal(7), Decimal(7))
    assert [e["broker_order_id"] for e in await replaced_events(core, intent_id)] == [
        middle,
        newest,
    ]


async def test_a_replacing_order_is_not_followed_before_the_old_one_says_replaced(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """A replace can still be refused (the old order fills first): the new order's report
    alone does not move the intent, and the old order's fill then counts."""
    intent_id, cid = await placed_limit(core, alpaca)
    old_id = (await core.trading.get_intent(intent_id)).broker_order_id
    assert old_id
    async with core.db.session() as s:
        conn = await s.get(Connection, cid, options=[selectinload(Connection.accounts)])
    assert conn is not None
    target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
    adapter = await core.connections.adapter_for(conn)
    old = await adapter.fetch_order(target.ref, order_id=old_id)
    early = dataclasses.replace(old, id="a-replacement", client_order_id="x", replaces=old_id)
    assert await core.trading.apply_update("alpaca", OrderUpdate(early, "new")) is not None
    intent = await core.trading.get_intent(intent_id)
    assert (intent.broker_order_id, intent.status) == (old_id, IntentStatus.ACCEPTED)
    alpaca.fill(old_id, Decimal(10), Decimal(9))
    filled = await adapter.fetch_order(target.ref, order_id=old_id)
    await core.trading.apply_update("alpaca", OrderUpdate(filled, "fill"))
    intent = await core.trading.get_intent(intent_id)
    assert (intent.status, intent.filled_quantity) == (IntentStatus.FILLED, Decimal(10))
    assert await replaced_events(core, intent_id) == []


async def test_a_replacing_orders_reports_that_came_first_are_asked_for_again(
    core: Core, alpaca: AlpacaEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream told the new order's fill before the old order's "replaced": set aside then
    (the intent still followed the old order), it is asked for once the intent follows."""
    intent_id, cid = await placed_limit(core, alpaca)
    old_id = (await core.trading.get_intent(intent_id)).broker_order_id
    assert old_id
    new_id = await replace_in_alpacas_app(alpaca, old_id, limit_price="9.5")
    alpaca.fill(new_id, Decimal(10), Decimal("9.5"))
    conn = await connection(core, cid)
    target = await core.connections.resolve(MEMBER, "Alpaca", "paper")
    adapter = await core.connections.adapter_for(conn)
    try:
        reports = [
            OrderUpdate(await adapter.fetch_order(target.ref, order_id=new_id), "fill"),
            OrderUpdate(await adapter.fetch_order(target.ref, order_id=old_id), "replaced"),
        ]
    finally:
        await adapter.close()

    async def out_of_order(
        self: AlpacaAdapter, accounts: list[AccountRef], *, ready: asyncio.Event | None = None
    ) -> AsyncIterator[OrderUpdate]:
        for update in reports:
            yield update
        await asyncio.Event().wait()  # never subscribed: no poll runs

    monkeypatch.setattr(AlpacaAdapter, "stream_order_updates", out_of_order)
    updates = OrderUpdates(core, supervise_every=0.05, poll_start=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(updates.supervise(stop))
    notifier = core.notifier
    assert isinstance(notifier, RecordingNotifier)
    try:
        await until(lambda: any("Filled" in t for t in texts(notifier)))
    finally:
        stop.set()
        await task
    intent = await core.trading.get_intent(intent_id)
    assert (intent.status, intent.broker_order_id) == (IntentStatus.FILLED, new_id)
    assert (intent.filled_quantity, intent.limit_price) == (Decimal(10), Decimal("9.5"))


async def test_a_change_made_with_modify_is_followed_to_the_new_order(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    intent_id, _ = await placed_limit(core, alpaca)
    old_id = (await core.trading.get_intent(intent_id)).broker_order_id
    assert old_id
    alpaca.fill(old_id, Decimal(4), Decimal(9))
    change = OrderChange(quantity=Decimal(12), limit_price=Decimal("9.5"))
    made = await core.trading.change_order(MEMBER, "Alpaca", "paper", old_id, change)
    assert made.after is not None and made.after.replaces == old_id
    # Alpaca's new order is for what is left: 12 in all, 4 filled, 8 to go.
    assert (made.after.quantity, made.after.limit_price) == (Decimal(8), Decimal("9.5"))
    intent = await core.trading.get_intent(intent_id)
    assert (intent.broker_order_id, intent.status) == (made.after.id, IntentStatus.PARTIALLY_FILLED)
    assert (intent.quantity, intent.limit_price, intent.filled_quantity) == (
        Decimal(12),
        Decimal("9.5"),
        Decimal(4),
    )
    assert [e["replaced_order_id"] for e in await replaced_events(core, intent_id)] == [old_id]
    async with core.db.session() as s:
        changed = await s.scalar(select(AuditEvent).where(AuditEvent.kind == "order.changed"))
    assert changed is not None and changed.detail["changed"] == {
        "quantity": ["10", "12"],
        "limit_price": ["9", "9.5"],
    }


async def test_the_reconciler_tells_each_further_partial_fill_it_finds(
    core: Core, alpaca: AlpacaEmulator
) -> None:
    """With no stream, the reconciler is how a member hears of fills: 4 of 10, then 7 of 10
    is news too, though the order stays partly filled."""
    intent_id, _ = await placed_limit(core, alpaca)
    intent = await core.trading.get_intent(intent_id)
    assert intent.broker_order_id
    notifier = core.notifier
    assert isinstance(notifier, RecordingNotifier)
    for filled in (4, 7):
        alpaca.fill(intent.broker_order_id, Decimal(3 if filled == 7 else 4), Decimal(9))
        await core.trading.reconcile(older_than=timedelta(seconds=-60))
        assert texts(notifier)[-1] == (
            f"📝 Paper order update: Partially filled: {filled} of buy 10 F at an average of $9.00."
        ), texts(notifier)
    intent = await core.trading.get_intent(intent_id)
    assert (intent.status, intent.filled_quantity) == (IntentStatus.PARTIALLY_FILLED, Decimal(7))
