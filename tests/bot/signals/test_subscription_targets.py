"""Which subscription /subscribe changes, where it trades, and what may change it: the
subscription a bare /subscribe finds, the account type a strategy's tickers need, a sizing
typed in dollars or percent, a lost role, a connection to re-link, an account no longer chosen."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import delete, update

from bot.automation_models import ExecutionStatus
from bot.core import Core
from bot.db import Database
from bot.errors import InvalidInput, LimitReached, NotFound, PermissionDenied
from bot.models import Connection, ConnectionAccount, ConnectionStatus
from bot.services.linking import Linked
from bot.services.subscriptions import Sizing
from bot.settings import Settings
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import MEMBER, connection, link
from tests.bot.signals.conftest import (
    ALICE,
    GUILD,
    OWNER,
    execution,
    intents,
    make_strategy,
    open_core,
    send,
    subscribe,
)
from tests.support import FakeClock, trading_contract
from web.connect import _dropped

PREMIUM = 777


async def broker_connection(core: Core, member: int, name: str = "TS", **accounts: str) -> int:
    """A TradeStation connection of ``member``'s with an account of the given type per mode
    (``live="margin"``), as /accounts leaves it; no broker is called to subscribe."""
    member_id = await core.members.ensure(member)
    async with core.db.transaction() as s:
        conn = Connection(
            member_id=member_id,
            broker="tradestation",
            name=name,
            name_key=name.casefold(),
            status=ConnectionStatus.ACTIVE,
        )
        s.add(conn)
        await s.flush()
        for mode, kind in accounts.items():
            s.add(
                ConnectionAccount(
                    connection_id=conn.id,
                    mode=mode,
                    account_id=f"{conn.id}{mode}",
                    account_type=kind,
                    label=f"TradeStation ••{conn.id:02d}{mode[0]}",
                )
            )
        return conn.id


async def needs_relinking(core: Core, connection_id: int) -> None:
    async with core.db.transaction() as s:
        await s.execute(
            update(Connection)
            .where(Connection.id == connection_id)
            .values(status=ConnectionStatus.NEEDS_REAUTH)
        )


async def test_a_bare_subscribe_changes_the_one_subscription_there_is(core: Core) -> None:
    """Before: /subscribe strategy:X active:false made a paused subscription on Tradecord
    Paper, and the live one it meant to pause went on trading."""
    url = await make_strategy(core)
    sid = url.strategy.id
    await broker_connection(core, OWNER, live="margin")
    await core.subscriptions.subscribe(GUILD, OWNER, sid, connection="TS", mode="live")
    paused = await core.subscriptions.subscribe(GUILD, OWNER, sid, enabled=False)
    assert (paused.connection_name, paused.mode, paused.enabled) == ("TS", "live", False)
    assert paused.previous is not None and paused.previous.enabled
    [only] = await core.subscriptions.list_for(OWNER, GUILD)
    assert only.id == paused.id and only.account == "live, margin account"
    # A mode or a connection names another one: a new subscription there.
    paper = await core.subscriptions.subscribe(GUILD, OWNER, sid, mode="paper")
    assert (paper.connection_name, paper.previous, paper.account) == (
        "Tradecord Paper",
        None,
        "paper",
    )
    with pytest.raises(InvalidInput) as several:
        await core.subscriptions.subscribe(GUILD, OWNER, sid, changes={"sides": "long"})
    assert several.value.user_message == (
        "You subscribe to “NQ breakout” more than once: “TS” (live), “Tradecord Paper” "
        "(paper). Give connection: and mode: to choose which: connection:TS mode:live or "
        "connection:Tradecord Paper mode:paper."
    )
    # None yet: a new one on Tradecord Paper, as before.
    other = await make_strategy(core, "Gap fill")
    new = await core.subscriptions.subscribe(GUILD, OWNER, other.strategy.id)
    assert (new.connection_name, new.mode, new.previous) == ("Tradecord Paper", "paper", None)


async def test_a_strategy_whose_tickers_the_account_cannot_trade_is_refused(core: Core) -> None:
    """Before: a futures strategy subscribed silently on a margin account, and every signal
    was refused there."""
    es, nq = trading_contract("ES"), trading_contract("NQ")
    url = await make_strategy(core, "Futures")
    sid = url.strategy.id
    await core.strategies.configure(GUILD, OWNER, sid, allowed_tickers=[es, nq])
    await broker_connection(core, OWNER, live="margin")
    with pytest.raises(InvalidInput) as refused:
        await core.subscriptions.subscribe(GUILD, OWNER, sid, connection="TS", mode="live")
    assert refused.value.user_message == (
        f"“TS” (live) trades in a margin account, which cannot trade futures, and all the "
        f"tickers “Futures” allows are futures ({es}, {nq}): each of its signals would be "
        "refused there. At TradeStation, futures trade in a futures account. Choose that "
        "account for “TS” in /accounts, or subscribe another connection (connection:)."
    )
    assert await core.subscriptions.list_for(OWNER, GUILD) == []
    # The member's connection that can is named.
    await broker_connection(core, OWNER, "TS Futures", live="futures")
    with pytest.raises(InvalidInput, match=r"which can: add connection:TS Futures\.$"):
        await core.subscriptions.subscribe(GUILD, OWNER, sid, connection="TS", mode="live")
    there = await core.subscriptions.subscribe(
        GUILD, OWNER, sid, connection="TS Futures", mode="live"
    )
    assert there.warning is None and there.account == "live, futures account"
    # Tradecord Paper trades every asset class.
    paper = await core.subscriptions.subscribe(GUILD, OWNER, sid, mode="paper")
    assert paper.warning is None

    # Some tickers it cannot trade: subscribed, with a warning. A member it is shared with
    # is not shown the owner's allow-list.
    await core.strategies.configure(GUILD, OWNER, sid, allowed_tickers=["AAPL", es])
    mixed = await core.subscriptions.subscribe(GUILD, OWNER, sid, connection="TS", mode="live")
    assert mixed.warning == (
        f"Some tickers “Futures” allows are futures ({es}), which the margin account of “TS” "
        "(live) cannot trade: their signals will be refused there. At TradeStation, futures "
        "trade in a futures account."
    )
    await core.strategies.share(GUILD, OWNER, sid, ALICE)
    await broker_connection(core, ALICE, live="margin")
    shared = await core.subscriptions.subscribe(GUILD, ALICE, sid, connection="TS", mode="live")
    assert shared.warning is not None and es not in shared.warning
    assert shared.warning.startswith("Some tickers “Futures” allows are futures, which")


async def test_a_sizing_value_in_dollars_or_percent_must_match_the_sizing(core: Core) -> None:
    """Before: “$50” on percent-of-equity sizing was taken as 50% of the equity."""
    url = await make_strategy(core)
    sid = url.strategy.id
    await subscribe(core, url, OWNER, sizing="percent_of_equity", sizing_value=Decimal(5))
    with pytest.raises(InvalidInput) as dollars:
        await core.subscriptions.subscribe(
            GUILD, OWNER, sid, changes={"sizing_value": Decimal(50)}, sizing_unit="$"
        )
    assert dollars.value.user_message == (
        "sizing_value $50.00 is dollars, but the sizing is percent of equity: type 50 for 50% "
        "of equity, or give sizing:dollar_amount for $50.00 per entry."
    )
    # "$500" is refused as dollars, not as a percent above 100.
    with pytest.raises(InvalidInput, match=r"^sizing_value \$500\.00 is dollars"):
        await core.subscriptions.subscribe(
            GUILD, OWNER, sid, changes={"sizing_value": Decimal(500)}, sizing_unit="$"
        )
    [sub] = await core.subscriptions.list_for(OWNER, GUILD)
    assert sub.settings.sizing_value == 5
    percent = await core.subscriptions.subscribe(
        GUILD, OWNER, sid, changes={"sizing_value": Decimal(8)}, sizing_unit="%"
    )
    assert percent.settings.sizing_value == 8
    with pytest.raises(InvalidInput, match=r"^sizing_value 8% is a percent, but the sizing is "):
        await core.subscriptions.subscribe(
            GUILD,
            OWNER,
            sid,
            changes={"sizing": Sizing.DOLLAR_AMOUNT, "sizing_value": Decimal(8)},
            sizing_unit="%",
        )
    dollar = await core.subscriptions.subscribe(
        GUILD,
        OWNER,
        sid,
        changes={"sizing": Sizing.DOLLAR_AMOUNT, "sizing_value": Decimal(50)},
        sizing_unit="$",
    )
    assert (dollar.settings.sizing, dollar.settings.sizing_value) == (Sizing.DOLLAR_AMOUNT, 50)


async def test_a_member_who_lost_the_role_can_only_unsubscribe(core: Core) -> None:
    """Before: the subscription itself counted as access, so one whose role was taken away
    (and not yet noticed) could still resize it and subscribe more connections."""
    url = await make_strategy(core)
    sid = url.strategy.id
    await core.strategies.share_role(GUILD, OWNER, sid, PREMIUM)
    await core.subscriptions.subscribe(GUILD, ALICE, sid, roles={GUILD, PREMIUM})
    await broker_connection(core, ALICE, live="margin")
    for where in ({}, {"connection": "TS", "mode": "live"}):
        with pytest.raises(PermissionDenied) as refused:
            await core.subscriptions.subscribe(
                GUILD, ALICE, sid, changes={"sizing_value": Decimal(9)}, roles={GUILD}, **where
            )
        assert refused.value.user_message == (
            "“NQ breakout” is no longer shared with you or a role you have, so you cannot "
            "change or add subscriptions to it. /unsubscribe strategy:NQ breakout stops yours."
        )
    [sub] = await core.subscriptions.list_for(ALICE, GUILD)
    assert sub.settings.sizing_value == 1
    gone = await core.subscriptions.unsubscribe(GUILD, ALICE, sid, roles={GUILD})
    assert gone.id == sub.id


async def test_a_subscription_on_a_connection_to_relink_can_be_paused_and_changed(
    core: Core,
) -> None:
    """Before: pausing it ran the checks of a connection that must trade, and was refused
    ("needs to be re-linked"): the member could only unsubscribe."""
    url = await make_strategy(core)
    sid = url.strategy.id
    cid = await broker_connection(core, OWNER, live="margin")
    await core.subscriptions.subscribe(GUILD, OWNER, sid, connection="TS", mode="live")
    await needs_relinking(core, cid)
    paused = await core.subscriptions.subscribe(
        GUILD, OWNER, sid, connection="TS", mode="live", enabled=False
    )
    assert not paused.enabled
    resized = await core.subscriptions.subscribe(
        GUILD, OWNER, sid, changes={"sizing_value": Decimal(3)}
    )
    assert resized.settings.sizing_value == 3 and not resized.enabled
    # Resuming it, or a new subscription there, must trade: refused until it is re-linked.
    for strategy, enabled in ((sid, True), ((await make_strategy(core, "Gap")).strategy.id, None)):
        with pytest.raises(InvalidInput, match="“TS” needs to be re-linked"):
            await core.subscriptions.subscribe(
                GUILD, OWNER, strategy, connection="TS", mode="live", enabled=enabled
            )
    [sub] = await core.subscriptions.list_for(OWNER, GUILD)
    assert not sub.enabled


async def test_a_run_skipped_for_a_relink_names_the_connect_command_as_typed(
    core: Core,
) -> None:
    """Before: “(/connect tradestation)”, the broker's internal key, which /connect does not
    offer."""
    url = await make_strategy(core)
    cid = await broker_connection(core, OWNER, live="margin")
    sub = await core.subscriptions.subscribe(
        GUILD, OWNER, url.strategy.id, connection="TS", mode="live"
    )
    await needs_relinking(core, cid)
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub.id)
    assert (ex.status, ex.reason) == (
        ExecutionStatus.SKIPPED,
        "“TS” needs to be re-linked (/connect broker:TradeStation).",
    )


async def test_unsubscribing_a_strategy_shared_through_a_role_says_there_is_no_subscription(
    core: Core,
) -> None:
    """Before: "No strategy … that you own or that was shared with you", though it was."""
    url = await make_strategy(core)
    await core.strategies.share_role(GUILD, OWNER, url.strategy.id, PREMIUM)
    with pytest.raises(NotFound) as none:
        await core.subscriptions.unsubscribe(GUILD, ALICE, "NQ breakout", roles={PREMIUM})
    assert none.value.user_message == (
        "You have no subscription to “NQ breakout”. See /subscriptions."
    )


async def approval_waiting(core: Core) -> tuple[str, int, str]:
    """OWNER's approval of a buy on Tradecord Paper: the draft's id, the subscription's and
    the signal's."""
    url = await make_strategy(core)
    sub = await subscribe(core, url, OWNER, manual_approval=True, sizing_value=Decimal(2))
    ack = await send(core, url, {"ticker": "AAPL", "action": "buy"})
    await core.jobs.drain()
    ex = await execution(core, ack.body["id"], sub)
    assert ex.status == ExecutionStatus.WAITING_APPROVAL, ex.reason
    [draft] = await intents(core)
    return draft.id, sub, ack.body["id"]


async def test_approving_with_no_account_chosen_for_the_mode_keeps_the_card_waiting(
    core: Core,
) -> None:
    """Before: "Approved: the order is being placed", then the run was skipped for the
    account no longer chosen, the approval spent."""
    draft, sub, signal_id = await approval_waiting(core)
    [intent] = await intents(core)
    async with core.db.transaction() as s:  # as if its account were no longer chosen
        await s.execute(
            delete(ConnectionAccount).where(ConnectionAccount.connection_id == intent.connection_id)
        )
    with pytest.raises(LimitReached) as refused:
        await core.signals.approve(draft, OWNER)
    assert refused.value.user_message.startswith(
        "Not approved yet: “Tradecord Paper” has no paper account chosen, so its orders cannot "
        "be placed. Choose one in /accounts, then press Approve again before it expires <t:"
    ), refused.value.user_message
    await core.jobs.drain()
    ex = await execution(core, signal_id, sub)
    assert ex.status == ExecutionStatus.WAITING_APPROVAL


async def test_approvals_name_the_subscription_to_change_exactly(core: Core) -> None:
    """Before: “/subscribe strategy:NQ breakout active:true”, which changed the member's only
    subscription, or made a new one on Tradecord Paper."""
    draft, sub, _ = await approval_waiting(core)
    await core.subscriptions.set_enabled(OWNER, sub, False)
    with pytest.raises(LimitReached) as paused:
        await core.signals.approve(draft, OWNER)
    assert (
        "Resume it (/subscribe strategy:NQ breakout connection:Tradecord Paper mode:paper "
        "active:true), then press Approve again" in paused.value.user_message
    ), paused.value.user_message
    await core.subscriptions.set_enabled(OWNER, sub, True)
    await core.subscriptions.subscribe(GUILD, OWNER, "NQ breakout", changes={"sides": "short"})
    with pytest.raises(LimitReached) as sides:
        await core.signals.approve(draft, OWNER)
    assert (
        "allow both sides with /subscribe strategy:NQ breakout connection:Tradecord Paper "
        "mode:paper sides:both and press Approve again" in sides.value.user_message
    ), sides.value.user_message


async def test_an_account_chosen_after_a_relink_dropped_one_names_what_trades_there(
    ts_settings: Settings, db: Database, clock: FakeClock, ts: TradeStationEmulator
) -> None:
    """A re-link with a login that cannot reach the futures account drops it and keeps the
    subscriptions. Before: nothing said they trade nothing meanwhile, and choosing the margin
    account said nothing either (there was no account before), so the futures strategy
    silently traded there."""
    core = await open_core(ts_settings, clock)
    try:
        cid = await link(core, ts, member=MEMBER)
        _, accounts = await core.connections.broker_accounts(MEMBER, cid)
        futures = next(a for a in accounts if a.id == "11827343")
        await core.connections.choose_account(MEMBER, cid, "live", futures.id)
        url = await core.strategies.create(GUILD, MEMBER, "ES breakout")
        await core.subscriptions.subscribe(
            GUILD, MEMBER, url.strategy.id, connection="TS", mode="live"
        )
        linked = Linked(
            await connection(core, cid),
            accounts=[a for a in accounts if a.id != futures.id],
            relinked=True,
        )
        await core.linking._drop_unreachable(linked)
        assert await _dropped(core, linked) == (
            f"The login you signed in with cannot reach TradeStation {futures.masked}, so "
            "“TS” no longer trades there; choose its account again. Until you do, nothing "
            "trades for its subscriptions to “ES breakout” (live)."
        )
        chosen = await core.connections.choose_account(MEMBER, cid, "live", "11827342")
        assert chosen.notice == (
            f"Signals of “ES breakout” on “TS” (live) trade again, now in TradeStation "
            f"{chosen.account.masked} (margin account). If that account cannot trade what "
            "they send, choose another, or /unsubscribe."
        )
    finally:
        await core.close()
