from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from bot.core import Core
from bot.db import Database
from bot.models import AuditEvent, Connection, ConnectionAccount, Credential
from bot.services.connections import ConnectionService
from bot.settings import Settings, load_settings
from bot.vault import Vault, generate_key_spec, parse_keys
from emulators.tradestation import TradeStationEmulator
from tests.bot.conftest import MEMBER, link
from tests.support import in_session


async def test_remote_adapters_take_every_url_from_settings(
    settings: Settings, db: Database
) -> None:
    values = {k: v for k, v in settings.model_dump().items() if v is not None}
    values.update(
        tradecord_alpaca_client_id="id",
        tradecord_alpaca_api_url="http://127.0.0.1:1/l",
        tradecord_alpaca_paper_api_url="http://127.0.0.1:1/p",
        tradecord_alpaca_data_url="http://127.0.0.1:1/d",
    )
    core = await Core.open(load_settings(**values), migrate=False)
    try:
        member_id = await core.members.ensure(9)
        conn = Connection(
            id=77,
            member_id=member_id,
            broker="alpaca",
            name="A",
            name_key="a",
            settings={"environment": "paper"},
        )
        adapter = await core.connections.adapter_for(conn)
        assert adapter.data_url == "http://127.0.0.1:1/d"  # type: ignore[attr-defined]
        # A token authorized for paper only reaches the paper host.
        assert {e.value: u for e, u in adapter.ctx.api_urls.items()} == {
            "paper": "http://127.0.0.1:1/p"
        }
    finally:
        await core.close()


async def _credential_left(core: Core, cid: int) -> bool:
    async with core.db.session() as s:
        return await s.get(Credential, cid) is not None


async def test_disconnect_revokes_at_the_configured_endpoint(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    core = await Core.open(ts_settings, migrate=False)
    try:
        cid = await link(core, ts)
        result = await core.connections.disconnect(MEMBER, "TS")
        assert result.revoked is True and ts.revocations == 1
        # RFC 7009: the refresh token, said to be one (security requirement 10).
        from urllib.parse import parse_qs

        [revoke] = ts.requests_to(r"/oauth/revoke$", "POST")
        form = parse_qs(revoke.body.decode())
        assert form["token_type_hint"] == ["refresh_token"], form
        assert ts.oauth.tokens[form["token"][0]].kind == "refresh"
        assert not await _credential_left(core, cid)
    finally:
        await core.close()


@pytest.mark.parametrize("breakage", ["broker no longer configured", "encryption key gone"])
async def test_disconnect_deletes_the_tokens_when_revocation_cannot_even_start(
    ts_settings: Settings, ts: TradeStationEmulator, breakage: str
) -> None:
    core = await Core.open(ts_settings, migrate=False)
    try:
        cid = await link(core, ts)
        if breakage == "broker no longer configured":
            values = {k: v for k, v in ts_settings.model_dump().items() if v is not None}
            values.pop("tradecord_tradestation_client_id")
            core.settings = load_settings(**values)
        else:
            core.vault = Vault(parse_keys(generate_key_spec("other")))
        result = await core.connections.disconnect(MEMBER, "TS")
        assert result.revoked is False
        assert not await _credential_left(core, cid)
        async with core.db.session() as s:
            assert await s.get(Connection, cid) is None
            events = list(
                await s.scalars(select(AuditEvent).where(AuditEvent.connection_id == cid))
            )
        assert [e.detail["revoked"] for e in events if e.kind == "connection.disconnected"] == [
            False
        ]
    finally:
        await core.close()


async def test_two_members_choosing_one_account_at_once_get_it_once(
    ts_settings: Settings, ts: TradeStationEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that no other member holds the account and the insert are one step: without
    a lock, two members whose checks both ran before either insert would both get it."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        first = await link(core, ts)
        second = await link(core, ts, member=MEMBER + 1)  # the same broker login
        [account] = [
            a
            for a in (await core.connections.broker_accounts(MEMBER, first))[1]
            if a.environment.value == "live" and a.type.value == "margin"
        ]
        arrived: list[int] = []
        both = asyncio.Event()
        listed = ConnectionService.broker_accounts

        async def together(self: ConnectionService, user: int, cid: int) -> Any:
            found = await listed(self, user, cid)
            arrived.append(user)
            if len(arrived) == 2:
                both.set()
            await both.wait()  # both checks start at the same moment
            return found

        monkeypatch.setattr(ConnectionService, "broker_accounts", together)
        results = await asyncio.gather(
            core.connections.choose_account(MEMBER, first, "live", account.id),
            core.connections.choose_account(MEMBER + 1, second, "live", account.id),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["ChoiceResult", "Conflict"], results
        async with core.db.session() as s:
            holders = await s.scalars(
                select(ConnectionAccount).where(ConnectionAccount.account_id == account.id)
            )
            assert len(list(holders)) == 1
    finally:
        await core.close()


async def test_changing_an_account_says_which_subscriptions_now_trade_in_the_new_one(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """Subscriptions route by connection and mode, so choosing another live account moves
    where the strategy's signals trade: the member must be told, not find out from a fill."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        cid = await link(core, ts)
        _, accounts = await core.connections.broker_accounts(MEMBER, cid)
        live = [a for a in accounts if a.environment.value == "live"]
        first, second = live[0], live[1]
        chosen = await core.connections.choose_account(MEMBER, cid, "live", first.id)
        assert chosen.notice is None  # nothing was routed to the connection yet
        url = await core.strategies.create(1, MEMBER, "ES breakout")
        await core.subscriptions.subscribe(1, MEMBER, url.strategy.id, connection="TS", mode="live")
        same = await core.connections.choose_account(MEMBER, cid, "live", first.id)
        assert same.notice is None  # the same account again moves nothing
        moved = await core.connections.choose_account(MEMBER, cid, "live", second.id)
        assert moved.notice is not None
        assert "ES breakout" in moved.notice and second.masked in moved.notice
        assert first.masked in moved.notice
    finally:
        await core.close()


async def test_disconnect_discards_the_connections_unconfirmed_previews(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """A preview of the removed connection must not be left a draft that Confirm turns into
    a pending order nothing will ever send or settle (its connection is gone)."""
    from bot.errors import Conflict
    from bot.models import IntentStatus, OrderIntent
    from bot.services.trading import OrderInput

    core = await Core.open(ts_settings, migrate=False)
    try:
        core.trading.clock = in_session()  # TradeStation takes market orders in hours only
        cid = await link(core, ts)
        _, accounts = await core.connections.broker_accounts(MEMBER, cid)
        margin = next(
            a for a in accounts if a.environment.value == "live" and a.type.value == "margin"
        )
        await core.connections.choose_account(MEMBER, cid, "live", margin.id)
        preview = await core.trading.preview(
            MEMBER, OrderInput("AAPL", "buy", "1", connection="TS", mode="live")
        )
        await core.connections.disconnect(MEMBER, "TS")
        with pytest.raises(Conflict):
            await core.trading.confirm(preview.intent_id, MEMBER)
        async with core.db.session() as s:
            intent = await s.get(OrderIntent, preview.intent_id)
        assert intent is not None and intent.status == IntentStatus.DISCARDED
    finally:
        await core.close()


async def test_disconnect_fails_the_connections_orders_stored_but_never_sent(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """An order confirmed but not yet sent (its process died in between) is sent later by the
    reconciler, which follows only orders with a connection: once /disconnect unlinks it, it
    would stay pending for ever, the member never hearing of it. It ends failed instead, in
    the disconnect's transaction, and the member is told."""
    from datetime import timedelta

    from sqlalchemy import update

    from bot.models import IntentStatus, OrderIntent
    from bot.services.trading import OrderInput

    core = await Core.open(ts_settings, migrate=False)
    try:
        core.trading.clock = in_session()  # TradeStation takes market orders in hours only
        cid = await link(core, ts)
        await core.connections.choose_account(MEMBER, cid, "live", "11827342")
        preview = await core.trading.preview(
            MEMBER, OrderInput("AAPL", "buy", "1", connection="TS", mode="live")
        )
        async with core.db.transaction() as s:  # confirmed; the process died before sending
            await s.execute(
                update(OrderIntent)
                .where(OrderIntent.id == preview.intent_id)
                .values(status=IntentStatus.PENDING)
            )
        result = await core.connections.disconnect(MEMBER, "TS")
        intent = await core.trading.get_intent(preview.intent_id)
        assert (intent.status, intent.error_code) == (IntentStatus.FAILED, "connection-removed")
        assert "nothing was sent" in (intent.error_message or "")
        assert result.unsent == 1
        async with core.db.session() as s:
            events = list(
                await s.scalars(select(AuditEvent).where(AuditEvent.intent_id == intent.id))
            )
        assert [e.kind for e in events][-1] == "order.failed"
        assert await core.trading.reconcile(older_than=timedelta(0)) == []
    finally:
        await core.close()


async def test_a_name_whose_case_folded_key_is_longer_still_renames_or_is_refused_clearly(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """Names are unique ignoring case through a case-folded key of at most 50 characters;
    folding can lengthen a name (ß → ss), so a 50-character name must not overflow it."""
    from bot.errors import InvalidInput

    core = await Core.open(ts_settings, migrate=False)
    try:
        await link(core, ts)
        with pytest.raises(InvalidInput, match="50"):
            await core.connections.rename(MEMBER, "TS", "ß" * 50)
        done = await core.connections.rename(MEMBER, "TS", "ß" * 25)
        assert done.new == "ß" * 25
        assert (await core.connections.owned(MEMBER, "SS" * 25)).name == "ß" * 25
    finally:
        await core.close()


async def test_a_connection_is_found_by_its_name_typed_with_extra_spaces(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """/rename stores names with runs of spaces collapsed, so a name typed with them (as
    /rename accepted it) must find the connection, not say it does not exist."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        cid = await link(core, ts)
        await core.connections.rename(MEMBER, "TS", "TS   Futures")
        assert (await core.connections.owned(MEMBER, " ts  futures ")).id == cid
        await core.connections.choose_account(
            MEMBER,
            cid,
            "live",
            next(
                a.id
                for a in (await core.connections.broker_accounts(MEMBER, cid))[1]
                if a.environment.value == "live"
            ),
        )
        target = await core.connections.resolve(MEMBER, "TS  futures", "live")
        assert target.connection.id == cid
    finally:
        await core.close()


async def test_one_account_is_the_account_of_one_of_a_members_connections(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """A connection is one account at one broker: the same login linked twice must not give
    one account to two connections (two names, counted twice against the plan)."""
    import aiohttp

    from bot.errors import Conflict
    from bot.services.oauth import TokenSet
    from emulators.tradestation.testing import sign_in
    from tests.bot.conftest import stored_connection

    core = await Core.open(ts_settings, migrate=False)
    try:
        first = await link(core, ts)
        async with aiohttp.ClientSession() as http:
            tokens = await sign_in(http, ts)  # the same login again
        second = await stored_connection(
            core,
            MEMBER,
            TokenSet(tokens["access_token"], tokens["refresh_token"], None, tokens["scope"]),
            name="TS 2",
        )
        _, accounts = await core.connections.broker_accounts(MEMBER, first)
        live = next(a for a in accounts if a.environment.value == "live")
        await core.connections.choose_account(MEMBER, first, "live", live.id)
        with pytest.raises(Conflict, match="“TS”"):
            await core.connections.choose_account(MEMBER, second, "live", live.id)
        # Choosing it again on the connection that has it is fine.
        await core.connections.choose_account(MEMBER, first, "live", live.id)
    finally:
        await core.close()


async def test_a_connection_with_only_a_live_account_is_not_said_to_be_off_in_paper_mode(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """/balances without mode: on a connection trading live said "trading on it is off",
    though its live account trades: it must say it trades live only and how to reach it."""
    from bot.errors import InvalidInput

    core = await Core.open(ts_settings, migrate=False)
    try:
        cid = await link(core, ts)
        with pytest.raises(InvalidInput, match="so trading on it is off"):
            await core.connections.resolve(MEMBER, "TS", "paper")  # no account at all: off
        _, accounts = await core.connections.broker_accounts(MEMBER, cid)
        live = next(a for a in accounts if a.environment.value == "live")
        await core.connections.choose_account(MEMBER, cid, "live", live.id)
        with pytest.raises(InvalidInput) as refused:
            await core.connections.resolve(MEMBER, "TS", "paper")
        text = str(refused.value)
        assert "off" not in text, text
        assert "it trades live only" in text and "mode:live" in text, text
    finally:
        await core.close()


async def test_rename_suggests_only_free_names_from_the_accounts_never_our_ids(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """With two TradeStation connections and no account chosen, renaming one suggested names
    made of our internal ids ("TradeStation 2", "TradeStation 4"), one of them the other
    connection's own name. Suggestions come from the chosen accounts, and are free."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        first = await link(core, ts)
        # Named as /connect names a second link.
        second = await link(core, ts, name=f"TradeStation {first}")
        renamed = await core.connections.rename(MEMBER, "TS", "TS Margin")
        assert renamed.shares_broker and renamed.suggestions == [], renamed.suggestions
        _, accounts = await core.connections.broker_accounts(MEMBER, second)
        futures = next(
            a for a in accounts if a.environment.value == "live" and a.type.value == "futures"
        )
        await core.connections.choose_account(MEMBER, second, "live", futures.id)
        margin = next(
            a for a in accounts if a.environment.value == "live" and a.type.value == "margin"
        )
        await core.connections.choose_account(MEMBER, first, "live", margin.id)
        again = await core.connections.rename(MEMBER, "TS Margin", "TS Stocks")
        # Only for the other one, still named as /connect named it: not for “TS Stocks”.
        assert again.suggestions == [(f"TradeStation {first}", "TradeStation Futures")]
        await core.connections.rename(MEMBER, second, "TradeStation Futures")
        taken = await core.connections.rename(MEMBER, "TS Stocks", "TS Margin")
        assert taken.shares_broker and taken.suggestions == []  # that name is in use
    finally:
        await core.close()


async def test_a_mode_the_connection_was_not_linked_for_is_not_sent_to_accounts(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """/trade mode:live on a connection linked for paper only (or on Tradecord Paper) said
    "no live account chosen … Choose one in /accounts", where no live menu can ever appear."""
    import aiohttp

    from bot.errors import InvalidInput
    from bot.services.oauth import TokenSet
    from emulators.tradestation.testing import sign_in
    from tests.bot.conftest import stored_connection

    core = await Core.open(ts_settings, migrate=False)
    try:
        async with aiohttp.ClientSession() as http:
            tokens = await sign_in(http, ts)
        await stored_connection(
            core,
            MEMBER,
            TokenSet(tokens["access_token"], tokens["refresh_token"], None, tokens["scope"]),
            name="TS Sim",
            settings={"environment": "paper"},
        )
        with pytest.raises(InvalidInput) as refused:
            await core.connections.resolve(MEMBER, "TS Sim", "live")
        text = str(refused.value)
        assert "/accounts" not in text, text
        assert "“TS Sim” is for paper trading only" in text, text
        assert "/connect environment:live" in text, text
        with pytest.raises(InvalidInput) as builtin:
            await core.connections.resolve(MEMBER, "Tradecord Paper", "live")
        text = str(builtin.value)
        assert "/accounts" not in text and "/connect" not in text, text
        assert "is for paper trading only" in text and "Add mode:paper." in text, text
    finally:
        await core.close()


async def test_the_margin_warning_points_at_the_connection_that_trades_the_futures_account(
    ts_settings: Settings, ts: TradeStationEmulator
) -> None:
    """With “TS Futures” trading the futures account, choosing margin on “TS” warned "choose
    the futures account instead, or /connect again for a second connection": the first is
    refused (the account is taken), the second already exists. Name the connection to use."""
    core = await Core.open(ts_settings, migrate=False)
    try:
        first = await link(core, ts)
        second = await link(core, ts, name="TS Futures")
        _, accounts = await core.connections.broker_accounts(MEMBER, first)
        live = [a for a in accounts if a.environment.value == "live"]
        futures = next(a for a in live if a.type.value == "futures")
        margin = next(a for a in live if a.type.value == "margin")
        alone = await core.connections.choose_account(MEMBER, first, "live", margin.id)
        assert alone.warning and "choose the futures account instead" in alone.warning
        await core.connections.choose_account(MEMBER, second, "live", futures.id)
        chose = await core.connections.choose_account(MEMBER, first, "live", margin.id)
        assert chose.warning is not None
        assert "choose the futures account instead" not in chose.warning, chose.warning
        assert "/connect" not in chose.warning, chose.warning
        assert "your connection “TS Futures” trades in" in chose.warning, chose.warning
        assert "connection:TS Futures" in chose.warning, chose.warning
    finally:
        await core.close()
