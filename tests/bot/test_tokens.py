"""Token lifecycle: refresh once per connection across callers and processes; invalid_grant
marks the connection for re-linking and is never retried."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from adapters.errors import AuthorizationExpired, BrokerUnavailable, RateLimited
from bot.core import Core
from bot.db import Database
from bot.models import (
    AuditEvent,
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    Credential,
    Member,
)
from bot.services import tokens
from bot.services.credentials import binding
from bot.services.notify import RecordingNotifier
from bot.services.oauth import TokenSet
from bot.services.tokens import LEASE, DbTokenProvider
from bot.settings import Settings, parse_keys
from bot.vault import Vault, generate_key_spec
from emulators.common import Fault
from emulators.tradestation import TradeStationEmulator
from emulators.tradestation.server import DEFAULT_CLIENT_ID
from tests.bot.conftest import MEMBER, connection, link, open_cores, stored_connection
from tests.bot.signals.conftest import GUILD, make_strategy, send

TOKEN_PATH = "/signin/oauth/token$"


async def test_concurrent_callers_over_several_processes_refresh_once(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    cores = await open_cores(ts_settings, 4)
    try:
        cid = await link(cores[0], ts)
        ts.oauth.expire_access_tokens()  # every caller now gets a 401 first
        before = ts.oauth.refresh_requests
        adapters = [await c.connections.adapter_for(await connection(c, cid)) for c in cores]
        results = await asyncio.gather(*(adapters[i % 4].fetch_accounts() for i in range(24)))
        assert all(results)
        assert ts.oauth.refresh_requests - before == 1
    finally:
        for c in cores:
            await c.close()


async def test_new_refresh_token_is_saved_before_use(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old_access = await provider.access_token()
        async with core.db.session() as s:
            old_refresh = (await s.get(Credential, cid)).refresh_token  # type: ignore[union-attr]
        new_access = await provider.refresh(old_access)
        async with core.db.session() as s:
            cred = await s.get(Credential, cid)
        assert cred is not None and cred.refresh_token != old_refresh  # rotated and stored
        assert await provider.access_token() == new_access
    finally:
        await core.close()


async def test_invalid_grant_marks_reauth_and_is_never_retried(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        cid = await link(core, ts)
        ts.oauth.revoke_user_grants(DEFAULT_CLIENT_ID, "demo")
        ts.oauth.expire_access_tokens()
        adapter = await core.connections.adapter_for(await connection(core, cid))
        with pytest.raises(AuthorizationExpired, match="/connect broker:TradeStation"):
            await adapter.fetch_accounts()
        refreshes = ts.oauth.refresh_requests
        with pytest.raises(AuthorizationExpired):
            await adapter.fetch_accounts()
        assert ts.oauth.refresh_requests == refreshes  # not retried
        assert (await connection(core, cid)).status == ConnectionStatus.NEEDS_REAUTH
        [(user, message)] = notifier.dms
        assert user == MEMBER and "/connect broker:TradeStation" in (message.content or "")
        async with core.db.session() as s:
            kinds = list(
                await s.scalars(select(AuditEvent.kind).where(AuditEvent.connection_id == cid))
            )
        assert "connection.needs_reauth" in kinds
    finally:
        await core.close()


async def test_a_slow_token_endpoint_holds_up_no_other_writer(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """No database lock is held while the broker answers a refresh: on SQLite that would be
    the whole database's write lock, and another process's webhook acknowledgement (and any
    other write) would wait for the broker, or fail once its busy wait ran out."""
    cores = await open_cores(ts_settings, 2)
    answer = asyncio.Event()
    refreshing: asyncio.Task[str] | None = None
    try:
        cid = await link(cores[0], ts)
        url = await make_strategy(cores[1])
        provider = DbTokenProvider(cores[0], cid)
        old = await provider.access_token()
        slow = ts.faults.add(Fault(kind="latency", path=TOKEN_PATH, until=answer))
        refreshing = asyncio.create_task(provider.refresh(old))
        async with asyncio.timeout(10):  # until the refresh request has reached the broker
            while not slow.hits:  # noqa: ASYNC110 - no event announces it
                await asyncio.sleep(0.01)
        ack = await send(cores[1], url, {"ticker": "AAPL", "action": "buy", "quantity": 1})
        await cores[1].members.ensure(MEMBER + 1)  # a plain write transaction
        assert ack.status == 202
        assert not refreshing.done()  # both writes finished while the broker still held it
        answer.set()
        assert await refreshing != old
        assert slow.hits == 1
    finally:
        answer.set()
        if refreshing is not None:
            await asyncio.gather(refreshing, return_exceptions=True)
        for c in cores:
            await c.close()


async def _lease(core: Core, cid: int) -> tuple[Any, Any]:
    async with core.db.session() as s:
        cred = await s.get(Credential, cid)
    assert cred is not None
    return cred.refresh_lease_owner, cred.refresh_lease_until


async def test_a_live_lease_is_waited_for_and_an_abandoned_one_taken_over(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """A process that died mid-refresh leaves its lease: callers wait for it while it could
    still be working, then take it over and refresh once."""
    [core] = await open_cores(ts_settings, 1)
    refreshing: asyncio.Task[str] | None = None
    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old = await provider.access_token()
        now = core.connections.clock()
        async with core.db.transaction() as s:
            cred = await s.get(Credential, cid)
            assert cred is not None
            cred.refresh_lease_owner, cred.refresh_lease_until = "gone", now + LEASE
        before = ts.oauth.refresh_requests
        refreshing = asyncio.create_task(provider.refresh(old))
        await asyncio.sleep(0.2)  # several re-reads
        assert not refreshing.done() and ts.oauth.refresh_requests == before
        later = now + LEASE + timedelta(seconds=1)
        core.connections.clock = lambda: later  # the holder's lease has run out
        new = await refreshing
        assert new != old and ts.oauth.refresh_requests - before == 1
        assert await _lease(core, cid) == (None, None)
        assert await provider.access_token() == new
    finally:
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()
            await asyncio.gather(refreshing, return_exceptions=True)
        await core.close()


async def test_a_failed_refresh_frees_its_lease(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The next caller tries again at once instead of waiting for the lease to run out."""
    [core] = await open_cores(ts_settings, 1)
    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old = await provider.access_token()
        ts.faults.add(Fault(kind="status", path=TOKEN_PATH, status=503, body={}, times=1))
        with pytest.raises(BrokerUnavailable):
            await provider.refresh(old)
        assert await _lease(core, cid) == (None, None)
        assert await provider.refresh(old) != old
    finally:
        await core.close()


async def test_an_adapter_reads_its_token_once_until_the_broker_refuses_it(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    [core] = await open_cores(ts_settings, 1)
    try:
        cid = await link(core, ts)
        decrypted: list[str] = []
        decrypt = core.vault.decrypt

        def counting(envelope: str, bound_to: Any) -> str:
            decrypted.append("x")
            return decrypt(envelope, bound_to)

        monkeypatch.setattr(core.vault, "decrypt", counting)
        adapter = await core.connections.adapter_for(await connection(core, cid))
        await asyncio.gather(*(adapter.fetch_accounts() for _ in range(3)))
        await adapter.fetch_accounts()
        assert len(decrypted) == 1  # four requests, one read of the credential
        ts.oauth.expire_access_tokens()  # the cached token is refused from now on
        before = ts.oauth.refresh_requests
        assert await adapter.fetch_accounts()
        assert ts.oauth.refresh_requests - before == 1
        assert await adapter.fetch_accounts()  # with the refreshed token, no further refresh
        assert ts.oauth.refresh_requests - before == 1
    finally:
        await core.close()


async def test_concurrent_first_reads_of_many_connections_are_one_query(
    ts_settings: Settings, db: Database
) -> None:
    """A signal's fan-out opens an adapter per subscriber at once: their credentials are read
    together, and a connection without one fails alone."""
    [core] = await open_cores(ts_settings, 1)
    try:
        ids = [
            await stored_connection(core, MEMBER + 1 + i, TokenSet(f"token-{i}", None, None, "t"))
            for i in range(4)
        ]
        reads: list[str] = []

        def seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
            if "FROM credentials" in statement:
                reads.append(statement)

        event.listen(core.db.engine.sync_engine, "before_cursor_execute", seen)
        tokens = await asyncio.gather(
            *(DbTokenProvider(core, cid).access_token() for cid in [*ids, 987654]),
            return_exceptions=True,
        )
        assert tokens[:4] == [f"token-{i}" for i in range(4)]
        assert isinstance(tokens[4], AuthorizationExpired)
        assert len(reads) == 1
    finally:
        await core.close()


async def test_a_token_no_configured_key_opens_asks_to_link_again(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A key still in use removed from TRADECORD_KEYS: a clear message, not an internal error,
    and a warning for the admin that holds no secret."""
    [core] = await open_cores(ts_settings, 1)
    try:
        cid = await link(core, ts)
        async with core.db.session() as s:
            cred = (await s.scalars(select(Credential))).one()
            conn = await s.get(Connection, cid)
            assert conn is not None
            member = await s.get(Member, conn.member_id)
            assert member is not None and cred.access_token is not None
            token = core.vault.decrypt(cred.access_token, binding(conn, member, "access_token"))
        core.vault = Vault(parse_keys(generate_key_spec("other")))
        adapter = await core.connections.adapter_for(await connection(core, cid))
        with pytest.raises(AuthorizationExpired, match="can no longer read") as refused:
            await adapter.fetch_accounts()
        # TRADECORD_KEYS is the deployment's: a server admin cannot check it, its owner can.
        assert "ask the bot's owner to check the bot's encryption keys" in str(refused.value)
        assert "unreadable" in caplog.text and token not in caplog.text
    finally:
        await core.close()


class _StoreOutage:
    """The database refuses the statement that writes refreshed tokens (as when it is locked
    or unreachable) ``times`` times, or until lifted: the broker has answered by then."""

    def __init__(self, core: Core, times: int | None = None) -> None:
        self.engine = core.db.engine.sync_engine
        self.times, self.hits = times, 0
        event.listen(self.engine, "before_cursor_execute", self._check)

    def _check(self, _c: Any, _cur: Any, statement: str, *_: Any) -> None:
        writes_tokens = (
            statement.startswith("UPDATE credentials SET")
            and "access_token" in (statement.split("WHERE")[0])
        )
        if writes_tokens and (self.times is None or self.hits < self.times):
            self.hits += 1
            raise OperationalError(statement, None, Exception("database is locked"))

    def lift(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._check)


def _stored_refresh(core: Core, cred: Credential, conn: Connection, member: Member) -> str:
    assert cred.refresh_token is not None
    return core.vault.decrypt(cred.refresh_token, binding(conn, member, "refresh_token"))


async def _credential(core: Core, cid: int) -> tuple[Credential, Connection, Member]:
    async with core.db.session() as s:
        cred, conn = await s.get(Credential, cid), await s.get(Connection, cid)
        assert cred is not None and conn is not None
        member = await s.get(Member, conn.member_id)
    assert member is not None
    return cred, conn, member


async def test_a_transient_store_failure_keeps_the_rotated_refresh_token(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The broker retires the old refresh token when it answers: the answer is stored on a
    later attempt, and another process refreshes with it afterwards."""
    cores = await open_cores(ts_settings, 2)
    try:
        cid = await link(cores[0], ts)
        provider = DbTokenProvider(cores[0], cid)
        old = await provider.access_token()
        before = ts.oauth.refresh_requests
        outage = _StoreOutage(cores[0], times=2)
        new = await provider.refresh(old)
        outage.lift()
        assert outage.hits == 2 and new != old
        assert ts.oauth.refresh_requests - before == 1  # the broker was asked once
        cred, conn, member = await _credential(cores[0], cid)
        assert ts.oauth.tokens[_stored_refresh(cores[0], cred, conn, member)].revoked is False
        assert await _lease(cores[0], cid) == (None, None)
        ts.oauth.expire_access_tokens()
        adapter = await cores[1].connections.adapter_for(await connection(cores[1], cid))
        assert await adapter.fetch_accounts()  # refreshed again with the stored rotated token
        assert ts.oauth.refresh_requests - before == 2
        assert (await connection(cores[1], cid)).status == ConnectionStatus.ACTIVE
    finally:
        for c in cores:
            await c.close()


async def test_a_cancelled_caller_does_not_abandon_storing_the_answer(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    [core] = await open_cores(ts_settings, 1)
    refreshing: asyncio.Task[str] | None = None
    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old = await provider.access_token()
        outage = _StoreOutage(core)
        refreshing = asyncio.create_task(provider.refresh(old))
        async with asyncio.timeout(10):
            while not outage.hits:  # noqa: ASYNC110 - no event announces it
                await asyncio.sleep(0.01)
        refreshing.cancel()  # e.g. the interaction that asked gave up
        await asyncio.gather(refreshing, return_exceptions=True)
        outage.lift()
        async with asyncio.timeout(10):  # the store still lands and frees the lease
            while await _lease(core, cid) != (None, None):  # noqa: ASYNC110 - polls the DB
                await asyncio.sleep(0.05)
        cred, conn, member = await _credential(core, cid)
        assert ts.oauth.tokens[_stored_refresh(core, cred, conn, member)].revoked is False
        assert core.vault.decrypt(cred.access_token, binding(conn, member, "access_token")) != old
    finally:
        if refreshing is not None and not refreshing.done():
            refreshing.cancel()
            await asyncio.gather(refreshing, return_exceptions=True)
        await core.close()


async def test_a_store_that_keeps_failing_ends_in_reauth_clearly_and_without_secrets(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    """The loss a retry cannot prevent: the rotated token never reaches the database. The
    caller gets a clear error, the log says what happened (no secret), and the outcome is
    fixed: once the lease runs out the next refresh presents the retired token, and the
    connection needs re-linking and its owner is told."""
    monkeypatch.setattr(tokens, "STORE_MARGIN", LEASE - timedelta(seconds=0.3))
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old = await provider.access_token()
        outage = _StoreOutage(core)
        with pytest.raises(BrokerUnavailable, match="could not save"):
            await provider.refresh(old)
        outage.lift()
        assert outage.hits > 1  # retried before giving up
        assert "retired the stored refresh token" in caplog_all.text
        assert not [t for t in ts.oauth.tokens if t in caplog_all.text]  # no token logged
        owner, _ = await _lease(core, cid)
        assert owner is not None  # nothing could be written: the lease runs out on its own
        later = core.connections.clock() + LEASE + timedelta(seconds=1)
        core.connections.clock = lambda: later
        with pytest.raises(AuthorizationExpired, match="/connect broker:TradeStation"):
            await provider.refresh(old)
        assert (await connection(core, cid)).status == ConnectionStatus.NEEDS_REAUTH
        [(user, _message)] = notifier.dms
        assert user == MEMBER
    finally:
        await core.close()


ACCOUNTS_PATH = "/v3/brokerage/accounts$"


async def _reauth_events(core: Core, cid: int) -> int:
    async with core.db.session() as s:
        kinds = await s.scalars(
            select(AuditEvent.kind).where(
                AuditEvent.connection_id == cid, AuditEvent.kind == "connection.needs_reauth"
            )
        )
        return len(list(kinds))


async def test_a_token_refused_right_after_its_refresh_marks_reauth_once_over_processes(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The broker refreshes our token, then refuses the new one as well: the member is told to
    run /connect, so the connection must be marked for /connect to repair it. Two processes
    see the refusal together: one mark, one audit event, one DM."""
    cores = await open_cores(ts_settings, 2)
    notifiers = [RecordingNotifier(), RecordingNotifier()]
    for c, n in zip(cores, notifiers, strict=True):
        c.notifier = n
    try:
        cid = await link(cores[0], ts)
        ts.faults.add(Fault(kind="status", path=ACCOUNTS_PATH, status=401, body={}))
        before = ts.oauth.refresh_requests
        adapters = [await c.connections.adapter_for(await connection(c, cid)) for c in cores]
        outcomes = await asyncio.gather(
            *(a.fetch_accounts() for a in adapters), return_exceptions=True
        )
        for outcome in outcomes:
            assert isinstance(outcome, AuthorizationExpired), outcome
            assert "/connect broker:TradeStation" in outcome.user_message
        assert ts.oauth.refresh_requests - before == 1  # refreshed, and the new token refused
        assert (await connection(cores[0], cid)).status == ConnectionStatus.NEEDS_REAUTH
        assert await _reauth_events(cores[0], cid) == 1
        [(user, message)] = [dm for n in notifiers for dm in n.dms]
        assert user == MEMBER and "/connect broker:TradeStation" in (message.content or "")
    finally:
        for c in cores:
            await c.close()


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_transient_refusal_does_not_mark_reauth(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator, status: int
) -> None:
    """Busy or failing brokers, and a token endpoint that does not answer, are no reason to
    send the member to /connect: the connection stays as it is."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        cid = await link(core, ts)
        ts.oauth.expire_access_tokens()
        ts.faults.add(Fault(kind="status", path=TOKEN_PATH, status=status, body={}, times=1))
        adapter = await core.connections.adapter_for(await connection(core, cid))
        with pytest.raises(BrokerUnavailable):
            await adapter.fetch_accounts()  # the refresh of the expired token fails
        ts.faults.add(Fault(kind="status", path=ACCOUNTS_PATH, status=status, body={}))
        with pytest.raises((BrokerUnavailable, RateLimited)) as failed:
            await adapter.fetch_accounts()  # the broker fails the read itself
        assert not isinstance(failed.value, AuthorizationExpired)
        assert (await connection(core, cid)).status == ConnectionStatus.ACTIVE
        assert await _reauth_events(core, cid) == 0
        assert notifier.dms == []
    finally:
        await core.close()


async def test_a_signal_order_refused_after_a_refresh_marks_reauth(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """The same refusal when a strategy's signal places the order: marked, member told once."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        cid = await link(core, ts)
        async with core.db.transaction() as s:
            s.add(
                ConnectionAccount(
                    connection_id=cid,
                    mode="live",
                    account_id="11827342",  # the "demo" login's live margin account
                    account_type="margin",
                    label="TradeStation ••7342",
                )
            )
        url = await make_strategy(core, owner=MEMBER)
        await core.subscriptions.subscribe(
            GUILD, MEMBER, url.strategy.id, connection="TS", mode="live"
        )
        ts.faults.add(Fault(kind="status", path="/v3/orderexecution/", status=401, body={}))
        ack = await send(core, url, {"ticker": "MSFT", "action": "buy", "quantity": 1})
        assert ack.status == 202
        await core.jobs.drain()
        assert ts.world.orders == {}
        assert (await connection(core, cid)).status == ConnectionStatus.NEEDS_REAUTH
        assert await _reauth_events(core, cid) == 1
        told = [m.content or "" for _, m in notifier.dms]
        assert sum("/connect broker:TradeStation" in t for t in told) >= 1, told
    finally:
        await core.close()


async def test_a_scope_the_member_did_not_grant_marks_reauth_without_a_refresh(
    ts_settings: Settings, db: Database, ts: TradeStationEmulator
) -> None:
    """A 403 for a missing scope asks the member to link again granting it: marked so that
    /connect repairs this connection, and the DM says which access to grant."""
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    try:
        cid = await link(core, ts)
        lacking = {"Error": "Forbidden", "Message": "The access token lacks the ReadAccount scope."}
        ts.faults.add(Fault(kind="status", path=ACCOUNTS_PATH, status=403, body=lacking))
        before = ts.oauth.refresh_requests
        adapter = await core.connections.adapter_for(await connection(core, cid))
        with pytest.raises(AuthorizationExpired, match="Re-link the connection with /connect"):
            await adapter.fetch_accounts()
        assert ts.oauth.refresh_requests == before  # a new token would lack it too
        assert (await connection(core, cid)).status == ConnectionStatus.NEEDS_REAUTH
        assert await _reauth_events(core, cid) == 1
        [(_, message)] = notifier.dms
        assert "grant account, market data and trading access" in (message.content or "")
    finally:
        await core.close()


async def test_a_refused_refresh_that_cannot_be_recorded_asks_to_retry_not_to_relink(
    ts_settings: Settings,
    db: Database,
    ts: TradeStationEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker refuses the refresh token while the database cannot take the mark: /connect
    would add a second connection, so the member is asked to retry; once the lease runs out,
    the next refresh marks the connection and only then sends them to /connect."""
    monkeypatch.setattr(tokens, "STORE_MARGIN", LEASE - timedelta(seconds=0.3))
    [core] = await open_cores(ts_settings, 1)
    core.notifier = notifier = RecordingNotifier()
    engine = core.db.engine.sync_engine

    def refuse_mark(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE connections SET status"):
            raise OperationalError(statement, None, Exception("database is locked"))

    try:
        cid = await link(core, ts)
        provider = DbTokenProvider(core, cid)
        old = await provider.access_token()
        ts.oauth.revoke_user_grants(DEFAULT_CLIENT_ID, "demo")
        event.listen(engine, "before_cursor_execute", refuse_mark)
        try:
            with pytest.raises(AuthorizationExpired, match="Try again in a few minutes") as e:
                await provider.refresh(old)
        finally:
            event.remove(engine, "before_cursor_execute", refuse_mark)
        assert "/connect" not in e.value.user_message
        assert (await connection(core, cid)).status == ConnectionStatus.ACTIVE
        assert notifier.dms == []
        later = core.connections.clock() + LEASE + timedelta(seconds=1)
        core.connections.clock = lambda: later
        with pytest.raises(AuthorizationExpired, match="/connect broker:TradeStation"):
            await provider.refresh(old)
        assert (await connection(core, cid)).status == ConnectionStatus.NEEDS_REAUTH
        assert len(notifier.dms) == 1
    finally:
        await core.close()


def test_a_refresh_lease_does_not_print_the_refresh_token_it_holds(ts_settings: Settings) -> None:
    # Requirement 13: TokenSet and Endpoints hide theirs; the lease carrying the same refresh
    # token into the broker call printed it in any %r, f-string or traceback with locals.
    from adapters.tradestation import TradeStationAdapter
    from bot.services import oauth

    endpoints = oauth.endpoints(TradeStationAdapter, ts_settings)
    lease = tokens._Lease("owner", "rt-plaintext-refresh-token", endpoints, 0.0)
    assert "rt-plaintext-refresh-token" not in repr(lease) and "owner" in repr(lease)
