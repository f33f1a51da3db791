"""The /connect flow in a real browser: headless Chromium (Debian's package, driven by
Playwright) clicks from the private link through Discord sign-in and broker consent back to
Tradecord's page; screenshots land in test-output/connect/."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.discord_harness import Harness, running_tradecord

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
OUT = Path(__file__).resolve().parents[2] / "test-output" / "connect"
# The flags the machine's notes call for: no sandbox as root, and no background traffic to
# Google's hosts on a closed network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def h(settings: Settings, db: object) -> AsyncIterator[Harness]:
    async with running_tradecord(settings, brokers=True) as harness:
        yield harness


@pytest.mark.first
async def test_connect_in_a_real_browser(h: Harness, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    assert shutil.which(CHROMIUM), "Chromium is missing: scripts/install-test-deps installs it"
    OUT.mkdir(parents=True, exist_ok=True)
    alice = h.user("alice")
    reply = await h.reply("alice", "connect", broker="tradestation")
    [button] = reply.buttons()
    assert button.url
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await page.goto(button.url)
            await page.screenshot(path=str(OUT / "1-link.png"))
            await page.click("#continue")
            await page.wait_for_selector("#authorize")
            await page.select_option("select#user", str(alice))
            await page.screenshot(path=str(OUT / "2-discord-sign-in.png"))
            await page.click("#authorize")
            await page.wait_for_selector("button#approve")
            await page.select_option("select#user", "demo")
            await page.screenshot(path=str(OUT / "3-broker-consent.png"))
            await page.click("button#approve")
            await page.wait_for_selector("text=is linked")
            await page.screenshot(path=str(OUT / "4-linked.png"))
            assert "Return to Discord" in await page.inner_text("body")
        finally:
            await browser.close()
    overview = await h.reply("alice", "accounts")
    assert "TradeStation" in overview.text()
    assert "choose an account to trade" in overview.text()


async def test_a_long_connection_name_fits_a_phone_screen(h: Harness) -> None:
    """A 50-character connection name without spaces widened the box past a 320 px phone's
    screen, and the page scrolled sideways. The pages have no script: JavaScript off."""
    from playwright.async_api import async_playwright

    from bot.models import Connection, ConnectionStatus
    from tests.web.test_connect_flow import (
        Browser,
        connect_link,
        connections,
        finish_link,
        through_broker,
        through_discord,
    )
    from web.pages import FLOW_COOKIE

    alice = h.user("alice")
    name = "TradeStationFuturesAndOptionsMarginAccountNumber01"
    assert len(name) == 50
    await finish_link(h, await connect_link(h, "alice"))
    [conn] = await connections(h, "alice")
    await h.core.connections.rename(alice, conn.name, name)
    async with h.core.db.transaction() as s:
        row = await s.get(Connection, conn.id)
        assert row is not None
        row.status = ConnectionStatus.NEEDS_REAUTH  # /connect links it again, under its name
    # The flow up to the broker's answer without a browser (fast); its last page in Chromium.
    b = Browser()
    try:
        callback = await through_broker(
            b, h, await through_discord(b, h, await connect_link(h, "alice"), alice)
        )
        [cookie] = [c for c in b.session.cookie_jar if c.key == FLOW_COOKIE]
    finally:
        await b.close()
    OUT.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 320, "height": 640}, java_script_enabled=False
            )
            await context.add_cookies(
                [{"name": FLOW_COOKIE, "value": cookie.value, "url": callback}]
            )
            page = await context.new_page()
            response = await page.goto(callback)
            assert response is not None and response.status == 200
            await page.screenshot(path=str(OUT / "5-long-name-320px.png"), full_page=True)
            assert f"{name} is linked" in await page.inner_text("h1")
            widths = await page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert widths[0] <= widths[1], f"scrolls sideways: {widths}"
            # The inline style applied, so the CSP's hash still matches it.
            wraps = await page.evaluate("getComputedStyle(document.body).overflowWrap")
            assert wraps == "anywhere"
        finally:
            await browser.close()
