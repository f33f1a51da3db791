"""/connect at its edges: errors after the connection is saved, members who take their time,
brokers refusing the bot's setup, older sign-ins in the same browser, a slow Discord."""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp.cookiejar
import pytest

from bot.models import Connection, ConnectionStatus
from bot.services.notify import Outgoing
from bot.settings import Settings
from emulators.common import Fault
from tests.discord_harness import Harness, running_tradecord
from tests.support import FakeClock
from tests.web.test_connect_flow import (
    Browser,
    connect_link,
    connections,
    finish_link,
    reach_broker_callback,
    through_broker,
    through_discord,
    token_requests,
    url,
)
from web.pages import FLOW_COOKIE


@pytest.fixture
async def h(settings: Settings, db: object) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


# -- 1. an error once the connection is saved ------------------------------------------------


async def _hold_accounts_elsewhere_fails(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fails(*_: object) -> None:
        raise RuntimeError("held_elsewhere broke")

    monkeypatch.setattr(h.core.connections, "held_elsewhere", fails)


@pytest.mark.parametrize("failure", ["malformed accounts answer", "held_elsewhere fails"])
async def test_an_error_after_the_connection_is_saved_says_it_is_linked(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    """Past the save, a malformed accounts answer (or a bug further on) reached the 500 page:
    "Nothing was linked … run /connect again", and that /connect added a second connection."""
    if failure == "malformed accounts answer":
        h.sandbox.emulators["tradestation"].faults.add(
            Fault(kind="status", path="/brokerage/accounts$", status=200, body={"Accounts": "oops"})
        )
        kind = "AttributeError"
    else:
        await _hold_accounts_elsewhere_fails(h, monkeypatch)
        kind = "RuntimeError"
    h.errors.expect(rf"Unexpected {kind} on /oauth/tradestation/callback after connection \d+")
    caplog.set_level(logging.DEBUG)
    b = Browser()
    try:
        callback = await through_broker(
            b, h, await through_discord(b, h, await connect_link(h, "alice"), h.user("alice"))
        )
        done = await b.get(callback)
        text = html.unescape(await done.text())
    finally:
        await b.close()
    assert done.status == 200, text
    assert "<h1>TradeStation is linked</h1>" in text and "Nothing was linked" not in text
    assert "We could not list your TradeStation accounts yet" in text, text
    assert "run /accounts connection:TradeStation in Discord to choose" in text, text
    assert "run /connect" not in text.lower(), text
    dm = await h.emu.wait_for_message(lambda m: "is linked" in m.content, include_existing=True)
    assert "Use /accounts connection:TradeStation to choose them later" in dm.content
    assert not dm.components and "below" not in dm.content, dm.content  # no menus to point to
    assert [c.name for c in await connections(h, "alice")] == ["TradeStation"]
    # Logged by route and type; the callback's code and state reach no log line.
    [logged] = [r for r in caplog.records if r.getMessage().startswith(f"Unexpected {kind}")]
    assert logged.exc_info is not None
    query = parse_qs(urlsplit(callback).query)
    lines = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in (query["state"][0], query["code"][0]):
        assert secret not in lines


# -- 2. the flow cookie ----------------------------------------------------------------------


class JarTime:
    """aiohttp's cookie jar expires cookies by ``time.time()``: this one runs ahead with the
    test's clock, as a member's browser would while they take their time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.start = clock, clock.at

    def time(self) -> float:
        return time.time() + (self.clock.at - self.start).total_seconds()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


async def test_a_member_who_takes_their_time_at_each_sign_in_still_links(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 minutes at Discord and 7 at the broker, each step within its own 10 minutes: the flow
    cookie, set once when the link was posted, had expired, and the page blamed another
    browser. It is set again on the way to the broker."""
    clock = FakeClock()
    h.core.connections.clock = clock
    monkeypatch.setattr(aiohttp.cookiejar, "time", JarTime(clock))
    b = Browser()
    try:
        discord_cb = await through_discord(b, h, await connect_link(h, "alice"), h.user("alice"))
        [posted] = [c for c in b.session.cookie_jar if c.key == FLOW_COOKIE]
        clock.advance(minutes=4)  # at Discord
        to_broker = await b.get(discord_cb)
        assert to_broker.status == 303, await to_broker.text()
        renewed = to_broker.cookies.get(FLOW_COOKIE)
        authorize = to_broker.headers["Location"]
        consent = await b.get(authorize)
        approved = await b.submit(
            authorize, await consent.text(), user_id="demo", decision="approve"
        )
        clock.advance(minutes=7)  # at the broker
        done = await b.get(approved.headers["Location"])
        text = html.unescape(await done.text())
    finally:
        await b.close()
    assert done.status == 200 and "<h1>TradeStation is linked</h1>" in text, text
    assert [c.name for c in await connections(h, "alice")] == ["TradeStation"]
    # The same browser binding, for the broker step's 10 minutes.
    assert renewed is not None and renewed.value == posted.value
    assert (str(renewed["max-age"]), renewed["httponly"], renewed["samesite"]) == (
        "600",
        True,
        "Lax",
    )


@pytest.mark.parametrize("step", ["discord", "broker"])
async def test_a_browser_that_lost_its_flow_cookie_is_told_why_not_blamed(
    h: Harness, step: str
) -> None:
    """The state is still valid, the cookie is gone: a private window, a browser that did
    not keep it, Discord's in-app browser handing the page to another, or too long in this
    one. "Started in another browser" told most of them something false."""
    b = Browser()
    try:
        if step == "discord":
            callback = await through_discord(b, h, await connect_link(h, "alice"), h.user("alice"))
        else:
            base, q = await reach_broker_callback(h, b)
            callback = url(base, state=q["state"][0], code=q["code"][0])
        b.session.cookie_jar.clear(lambda c: c.key == FLOW_COOKIE)
        refused = await b.get(callback)
        text = html.unescape(await refused.text())
    finally:
        await b.close()
    assert refused.status == 403
    assert "the sign-in took too long in this browser, or the browser did not keep its cookie" in (
        text
    ), text
    assert "Discord's in-app browser" in text and "private window" in text
    assert "Run /connect again in Discord and finish every step in one browser." in text
    assert "was started in another browser" not in text
    assert token_requests(h) == 0
    assert await connections(h, "alice") == []


# -- 3. error answers -------------------------------------------------------------------------


async def test_a_broker_refusing_the_bots_own_setup_is_logged_and_the_member_told(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """The bot asks TradeStation for PKCE on a key that does not have it enabled: every
    member's sign-in is refused with invalid_request. Nothing was logged and members were told
    to try again, which never helps."""
    h.sandbox.emulators["tradestation"].pkce_enabled = False
    caplog.set_level(logging.INFO)
    b = Browser()
    try:
        discord_cb = await through_discord(b, h, await connect_link(h, "alice"), h.user("alice"))
        to_broker = await b.get(discord_cb)
        refused_at_broker = await b.get(to_broker.headers["Location"])
        assert refused_at_broker.status == 302
        page = await b.get(refused_at_broker.headers["Location"])
        text = html.unescape(await page.text())
    finally:
        await b.close()
    assert page.status == 400
    assert "a problem with this bot's setup at TradeStation, not with your account" in text, text
    assert "trying again will not help: tell the bot's owner" in text, text
    assert "TradeStation answered invalid_request" in text
    [warning] = [r for r in caplog.records if "answered error=" in r.getMessage()]
    assert warning.levelno == logging.WARNING and warning.name == "tradecord.linking"
    assert "TradeStation answered error=invalid_request: PKCE is not enabled for this client" in (
        warning.getMessage()
    )
    assert token_requests(h) == 0 and await connections(h, "alice") == []


@pytest.mark.parametrize(
    ("error", "says", "logged"),
    [
        ("invalid_scope", "tell the bot's owner that TradeStation answered invalid_scope", True),
        ("unauthorized_client", "trying again will not help", True),
        ("server_error", "had a problem of its own", True),
        ("temporarily_unavailable", "Try again in a while: run /connect in Discord again.", True),
        ("something_new", "TradeStation refused the sign-in (something_new)", True),
        ("access_denied", "you declined, or TradeStation refused it", False),
    ],
)
async def test_each_error_answer_says_whose_problem_it_is(
    h: Harness, caplog: pytest.LogCaptureFixture, error: str, says: str, logged: bool
) -> None:
    caplog.set_level(logging.INFO)
    description = "Scope\r\nFAKE LOG LINE\x1b[31m " + "x" * 400
    b = Browser()
    try:
        base, q = await reach_broker_callback(h, b)
        answer = url(base, state=q["state"][0], error=error, error_description=description)
        page = await b.get(answer)
        text = html.unescape(await page.text())
    finally:
        await b.close()
    assert page.status == 400 and says in text, text
    busy = error in ("server_error", "temporarily_unavailable")
    assert ("tell the bot's owner" in text) is (error in ("invalid_scope", "unauthorized_client"))
    assert ("Try again in a while" in text) is busy
    warnings = [r for r in caplog.records if "answered error=" in r.getMessage()]
    assert bool(warnings) is logged
    if logged:
        [warning] = warnings
        line = warning.getMessage()
        assert warning.levelno == logging.WARNING
        assert f"TradeStation answered error={error}: ScopeFAKE LOG LINE[31m xxx" in line, line
        assert not any(c in line for c in "\r\n\x1b")
        said = line.split(f"error={error}: ", 1)[1]
        assert len(said) <= 200 and said.endswith("…"), len(said)
    assert token_requests(h) == 0


# -- 4. an older sign-in in the same browser -------------------------------------------------


async def test_an_older_sign_in_in_the_same_browser_was_replaced_not_another_browser(
    h: Harness,
) -> None:
    """A member runs /connect again and opens the new link in the same browser (its cookie
    replaces the first's), then finishes the first sign-in's tab: it was blamed on "another
    browser"."""
    alice = h.user("alice")
    b = Browser()
    try:
        older = await through_discord(b, h, await connect_link(h, "alice"), alice)
        newer = await through_discord(b, h, await connect_link(h, "alice"), alice)
        late = await b.get(older)
        text = await late.text()
        assert late.status == 400, text
        assert "replaced by a newer /connect" in text and "another browser" not in text, text
        done = await b.get(await through_broker(b, h, newer))
        assert done.status == 200, await done.text()
    finally:
        await b.close()
    assert [c.name for c in await connections(h, "alice")] == ["TradeStation"]


# -- 5. a slow Discord -----------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["delivered", "fails"])
async def test_a_slow_discord_does_not_hold_the_success_page(
    h: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, outcome: str
) -> None:
    """The page waited for the Discord message: a rate-limited Discord held it until a proxy
    in front timed out. It waits a moment, then says the message may come late; the message
    is sent when Discord takes it, or its failure logged."""
    import web.connect

    monkeypatch.setattr(web.connect, "ANNOUNCE_WAIT", 0.3)
    caplog.set_level(logging.INFO)
    release = asyncio.Event()
    notifier = h.core.notifier
    assert notifier is not None
    real_dm = notifier.dm

    async def slow_dm(discord_user_id: int, message: Outgoing) -> None:
        await release.wait()
        if outcome == "fails":
            raise RuntimeError("Discord gave up")
        await real_dm(discord_user_id, message)

    monkeypatch.setattr(notifier, "dm", slow_dm)
    pending = h.bot.web_runner.app[web.connect.ANNOUNCING]  # type: ignore[union-attr]
    try:
        done = await asyncio.wait_for(finish_link(h, await connect_link(h, "alice")), 5)
        text = html.unescape(await done.text())
        assert done.status == 200, text
        assert "Return to Discord and choose which account to trade" in text, text
        assert "Our message there may come late: /accounts connection:TradeStation shows" in text
        assert len(pending) == 1  # kept referenced while it runs
    finally:
        release.set()
    if outcome == "delivered":
        dm = await h.emu.wait_for_message(
            lambda m: "is linked" in m.content and bool(m.components), include_existing=True
        )
        assert "Choose the accounts to trade below" in dm.content
    for _ in range(100):
        if not pending:
            break
        await asyncio.sleep(0.02)
    assert not pending
    failed = [r for r in caplog.records if "Could not DM the member" in r.getMessage()]
    assert len(failed) == (outcome == "fails")
    if failed:
        assert "RuntimeError" in failed[0].getMessage()


async def test_a_relinked_connection_s_page_says_its_message_may_come_late(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import web.connect

    alice = h.user("alice")
    await finish_link(h, await connect_link(h, "alice"))
    [conn] = await connections(h, "alice")
    _, accounts = await h.core.connections.broker_accounts(alice, conn.id)
    margin = next(a for a in accounts if a.environment.value == "live" and a.type.value == "margin")
    await h.core.connections.choose_account(alice, conn.id, "live", margin.id)
    async with h.core.db.transaction() as s:
        row = await s.get(Connection, conn.id)
        assert row is not None
        row.status = ConnectionStatus.NEEDS_REAUTH
    monkeypatch.setattr(web.connect, "ANNOUNCE_WAIT", 0.3)
    release = asyncio.Event()
    notifier = h.core.notifier
    assert notifier is not None
    real_dm = notifier.dm

    async def slow_dm(discord_user_id: int, message: Outgoing) -> None:
        await release.wait()
        await real_dm(discord_user_id, message)

    monkeypatch.setattr(notifier, "dm", slow_dm)
    try:
        done = await asyncio.wait_for(finish_link(h, await connect_link(h, "alice")), 5)
        text = html.unescape(await done.text())
    finally:
        release.set()
    assert "linked again to “TradeStation”" in text, text
    assert "a message with the details is on its way to Discord but may come late" in text
    assert "/accounts connection:TradeStation in Discord shows and changes them" in text
    await h.emu.wait_for_message(lambda m: "linked again" in m.content, include_existing=True)
