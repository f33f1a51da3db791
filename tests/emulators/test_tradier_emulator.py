"""The Tradier emulator answers as Tradier documents: hosts, OAuth, JSON quirks, XML default,
form-encoded orders without idempotency, errors, rate limits and the account-events stream."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import aiohttp
import pytest

from adapters.models import Environment
from emulators.tradier import TradierEmulator

LIVE, PAPER = Environment.LIVE, Environment.PAPER
JSON_ACCEPT = {"Accept": "application/json"}
SPEC = json.loads(
    (Path(__file__).parents[2] / "emulators/specs/tradier/documented-examples.json").read_text()
)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[TradierEmulator]:
    emulator = TradierEmulator(clock=clock, heartbeat_interval=3600)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **JSON_ACCEPT}


def token(
    emu: TradierEmulator,
    env: Environment = LIVE,
    user: str = "id-demo",
    scope: str = "read market trade stream",
) -> str:
    return emu.issue_tokens(user, env, scope)["access_token"]


def account(emu: TradierEmulator, env: Environment, kind: str, user: str = "id-demo") -> str:
    return next(
        a.number
        for a in emu.accounts.values()
        if a.environment is env and a.type == kind and a.user_id == user
    )


async def get(http: aiohttp.ClientSession, url: str, tok: str, **params: str) -> tuple[int, Any]:
    async with http.get(url, headers=auth(tok), params=params) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def place(
    http: aiohttp.ClientSession,
    emu: TradierEmulator,
    tok: str,
    acct: str,
    env: Environment = LIVE,
    **form: str,
) -> tuple[int, Any]:
    data = {"class": "equity", "duration": "day", "type": "market", **form}
    async with http.post(
        f"{emu.api_url(env)}/accounts/{acct}/orders", data=data, headers=auth(tok)
    ) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


# -- representation ---------------------------------------------------------------------------


async def test_xml_unless_json_is_asked_for(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok = token(emu)
    async with http.get(
        f"{emu.api_url()}/user/profile", headers={"Authorization": f"Bearer {tok}"}
    ) as r:
        assert r.content_type == "application/xml"
        root = ET.fromstring(await r.text())  # noqa: S314 - our own emulator
    assert root.tag == "profile"
    assert root.findtext("id") == "id-demo"
    assert [a.findtext("type") for a in root.findall("account")] == ["margin", "cash"]
    status, body = await get(http, f"{emu.api_url()}/user/profile", tok)
    assert status == 200 and body["profile"]["name"] == "Demo Trader"


async def test_one_item_is_an_object_several_an_array_none_the_string_null(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    demo, pat = token(emu), token(emu, user="id-pat")
    _, several = await get(http, f"{emu.api_url()}/user/profile", demo)
    _, one = await get(http, f"{emu.api_url()}/user/profile", pat)
    assert isinstance(several["profile"]["account"], list)
    assert isinstance(one["profile"]["account"], dict)
    assert one["profile"]["account"]["type"] == "pdt"
    margin, cash = account(emu, LIVE, "margin"), account(emu, LIVE, "cash")
    _, held = await get(http, f"{emu.api_url()}/accounts/{margin}/positions", demo)
    position = held["positions"]["position"]
    assert position == {
        "cost_basis": 1500.0,
        "date_acquired": position["date_acquired"],
        "id": position["id"],
        "quantity": 10.0,
        "symbol": "AAPL",
    }
    assert await get(http, f"{emu.api_url()}/accounts/{cash}/positions", demo) == (
        200,
        {"positions": "null"},
    )
    assert await get(http, f"{emu.api_url()}/accounts/{cash}/orders", demo) == (
        200,
        {"orders": "null"},
    )


async def test_balances_have_the_documented_blocks(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    demo, pat = token(emu), token(emu, user="id-pat")
    margin, cash = account(emu, LIVE, "margin"), account(emu, LIVE, "cash")
    pdt = account(emu, LIVE, "pdt", user="id-pat")
    _, m = await get(http, f"{emu.api_url()}/accounts/{margin}/balances", demo)
    _, c = await get(http, f"{emu.api_url()}/accounts/{cash}/balances", demo)
    _, p = await get(http, f"{emu.api_url()}/accounts/{pdt}/balances", pat)
    documented = set(SPEC["balances_response"]["balances"])
    assert set(m["balances"]) == documented
    assert set(m["balances"]["margin"]) == set(SPEC["balances_response"]["balances"]["margin"])
    assert set(c["balances"]["cash"]) == set(SPEC["balances_response"]["_variants"]["cash"]["cash"])
    assert set(p["balances"]["pdt"]) == set(SPEC["balances_response"]["_variants"]["pdt"]["pdt"])
    # 100,000 cash + 10 AAPL at 190: equity 101,900, Reg T requirement 950.
    assert m["balances"]["total_equity"] == 101900.0
    assert m["balances"]["margin"]["stock_buying_power"] == 2 * (101900.0 - 950.0)
    assert c["balances"]["cash"]["cash_available"] == 25000.0


async def test_working_orders_hold_buying_power(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok, cash = token(emu), account(emu, LIVE, "cash")
    status, _ = await place(
        http, emu, tok, cash, symbol="F", side="buy", quantity="1000", type="limit", price="10.00"
    )
    assert status == 200
    _, c = await get(http, f"{emu.api_url()}/accounts/{cash}/balances", tok)
    assert c["balances"]["cash"]["cash_available"] == 15000.0
    assert c["balances"]["pending_orders_count"] == 1


# -- OAuth --------------------------------------------------------------------------------------


async def sign_in(
    http: aiohttp.ClientSession,
    emu: TradierEmulator,
    env: Environment,
    scope: str = "read,market,trade,stream",
    decision: str = "approve",
    user: str = "id-demo",
) -> dict[str, list[str]]:
    params = {"client_id": emu.client_id, "scope": scope, "state": "s-123"}
    async with http.get(emu.authorize_url_for(env), params=params) as r:
        assert r.status == 200
        page = await r.text()
    assert 'id="user"' in page and 'id="approve"' in page
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    form = {**hidden, "user_id": user, "decision": decision}
    async with http.post(emu.authorize_url_for(env), data=form, allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith("http://127.0.0.1:8080/oauth/tradier/callback?")
    return parse_qs(urlsplit(location).query)


async def exchange(
    http: aiohttp.ClientSession,
    emu: TradierEmulator,
    env: Environment,
    form: dict[str, str],
    url: str | None = None,
    basic: bool = True,
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {}
    if basic:
        pair = base64.b64encode(f"{emu.client_id}:{emu.client_secret}".encode()).decode()
        kwargs["headers"] = {"Authorization": f"Basic {pair}"}
    async with http.post(url or emu.token_url_for(env), data=form, **kwargs) as r:
        return r.status, await r.json()


async def test_code_flow_refresh_at_its_own_endpoint_and_no_rotation(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    callback = await sign_in(http, emu, LIVE)
    assert callback["state"] == ["s-123"]
    code = callback["code"][0]
    status, body = await exchange(
        http, emu, LIVE, {"grant_type": "authorization_code", "code": code}
    )
    assert status == 200
    assert set(body) == {
        "access_token",
        "expires_in",
        "issued_at",
        "scope",
        "status",
        "refresh_token",
    }
    assert body["expires_in"] == 86399 and body["status"] == "approved"
    assert body["scope"] == "read market trade stream"
    # Refresh is a different endpoint; refresh tokens neither rotate nor expire.
    refresh = body["refresh_token"]
    for _ in range(2):
        status, again = await exchange(
            http,
            emu,
            LIVE,
            {"grant_type": "refresh_token", "refresh_token": refresh},
            url=emu.refresh_url_for(LIVE),
        )
        assert status == 200 and again["refresh_token"] == refresh
        assert again["access_token"] != body["access_token"]
    assert emu.oauth[LIVE].refresh_requests == 2
    status, _ = await get(http, f"{emu.api_url()}/user/profile", again["access_token"])
    assert status == 200
    assert emu.revoke_url is None
    # Codes are single-use; replaying one revokes what it issued (RFC 6749 4.1.2).
    status, _ = await exchange(http, emu, LIVE, {"grant_type": "authorization_code", "code": code})
    assert status == 400
    assert (await get(http, f"{emu.api_url()}/user/profile", again["access_token"]))[0] == 401
    assert emu.spec_violations == []


async def test_refresh_at_the_token_endpoint_is_refused(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    grant = emu.issue_tokens("id-demo", LIVE)
    status, _ = await exchange(
        http, emu, LIVE, {"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    )
    assert status == 400
    assert any("grant_type must be authorization_code" in v for v in emu.spec_violations)


async def test_refresh_tokens_only_for_partner_apps(http: aiohttp.ClientSession):
    async with TradierEmulator(refresh_tokens=False) as emu:
        assert isinstance(emu, TradierEmulator)
        callback = await sign_in(http, emu, LIVE)
        status, body = await exchange(
            http, emu, LIVE, {"grant_type": "authorization_code", "code": callback["code"][0]}
        )
        assert status == 200 and "refresh_token" not in body


async def test_denied_consent_returns_an_error_to_the_callback(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    callback = await sign_in(http, emu, LIVE, decision="deny")
    assert callback == {"error": ["access_denied"], "state": ["s-123"]}


async def test_sandbox_sign_in_lists_sandbox_users_only(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    params = {"client_id": emu.client_id, "scope": "read,trade", "state": "x"}
    async with http.get(emu.authorize_url_for(PAPER), params=params) as r:
        page = await r.text()
    assert "Demo Trader" in page and "Pat Daytrader" not in page  # Pat has no sandbox account


@pytest.mark.parametrize(
    ("params", "violation"),
    [
        ({"scope": "read market trade"}, "comma-delimited"),
        ({"scope": "read,money"}, "invalid scope"),
        ({"state": ""}, "state is required"),
    ],
)
async def test_authorize_refuses_what_tradier_refuses(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    params: dict[str, str],
    violation: str,
):
    query = {"client_id": emu.client_id, "scope": "read,trade", "state": "s", **params}
    async with http.get(emu.authorize_url, params=query) as r:
        assert r.status == 400
    assert any(violation in v for v in emu.spec_violations)


async def test_pkce_parameters_are_recorded(emu: TradierEmulator, http: aiohttp.ClientSession):
    query = {
        "client_id": emu.client_id,
        "scope": "read",
        "state": "s",
        "code_challenge": "abc",
        "code_challenge_method": "S256",
    }
    async with http.get(emu.authorize_url, params=query) as r:
        assert r.status == 200
    assert len([v for v in emu.spec_violations if "code_challenge" in v]) == 2


async def test_token_request_must_use_basic_auth_and_no_redirect_uri(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    code = (await sign_in(http, emu, LIVE))["code"][0]
    status, body = await exchange(
        http,
        emu,
        LIVE,
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
        },
        basic=False,
    )
    assert status == 401 and body["error"] == "invalid_client"
    code = (await sign_in(http, emu, LIVE))["code"][0]
    status, _ = await exchange(
        http,
        emu,
        LIVE,
        {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://x"},
    )
    assert status == 200  # served, but recorded: Tradier's token request has no redirect_uri
    assert any("'redirect_uri'" in v for v in emu.spec_violations)
    assert any("HTTP Basic" in v for v in emu.spec_violations)


async def test_live_and_sandbox_tokens_are_separate(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    live, sandbox = token(emu, LIVE), token(emu, PAPER)
    async with http.get(f"{emu.api_url(LIVE)}/user/profile", headers=auth(sandbox)) as r:
        assert r.status == 401 and await r.text() == "Invalid Access Token"
    async with http.get(f"{emu.api_url(PAPER)}/user/profile", headers=auth(live)) as r:
        assert r.status == 401
    sandbox_account = account(emu, PAPER, "margin")
    async with http.get(
        f"{emu.api_url(LIVE)}/accounts/{sandbox_account}/balances", headers=auth(live)
    ) as r:
        assert r.status == 401 and await r.text() == f"Unauthorized Account: {sandbox_account}"


async def test_expired_access_token_is_invalid(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok = token(emu)
    emu.expire_access_tokens()
    assert await get(http, f"{emu.api_url()}/user/profile", tok) == (401, "Invalid Access Token")


async def test_scope_is_enforced(emu: TradierEmulator, http: aiohttp.ClientSession):
    read_only = token(emu, scope="read market")
    assert await place(
        http, emu, read_only, account(emu, LIVE, "margin"), symbol="F", side="buy", quantity="1"
    ) == (403, "Insufficient scope")
    assert emu.orders == {}


# -- orders -------------------------------------------------------------------------------------


async def test_order_is_form_encoded_and_answered_with_id_status_partner(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    status, body = await place(
        http, emu, tok, margin, symbol="MSFT", side="buy", quantity="2", tag="abc123"
    )
    assert status == 200
    assert body == {
        "order": {"id": body["order"]["id"], "status": "ok", "partner_id": emu.partner_id}
    }
    order = emu.orders[body["order"]["id"]]
    assert order.status == "filled" and order.avg_fill_price == Decimal("420.05")
    async with http.post(
        f"{emu.api_url()}/accounts/{margin}/orders",
        headers=auth(tok),
        json={
            "class": "equity",
            "symbol": "MSFT",
            "side": "buy",
            "quantity": "1",
            "type": "market",
            "duration": "day",
        },
    ) as r:
        assert r.status == 400
    assert any("form-urlencoded" in v for v in emu.spec_violations)


async def test_order_fields_are_the_documented_ones(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, placed = await place(
        http,
        emu,
        tok,
        margin,
        symbol="MSFT",
        side="buy",
        quantity="3",
        type="stop_limit",
        price="430",
        stop="425",
        duration="gtc",
        tag="t1",
    )
    oid = placed["order"]["id"]
    _, body = await get(
        http, f"{emu.api_url()}/accounts/{margin}/orders/{oid}", tok, includeTags="true"
    )
    order = body["order"]
    assert set(order) <= set(SPEC["order_fields"]) | {"id"}
    assert order["status"] == "open" and order["tag"] == "t1"
    assert order["price"] == 430.0 and order["stop_price"] == 425.0
    _, untagged = await get(http, f"{emu.api_url()}/accounts/{margin}/orders/{oid}", tok)
    assert "tag" not in untagged["order"]  # tags only with includeTags=true


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"side": "buy", "quantity": "1"}, "missing required parameter 'symbol'"),
        ({"symbol": "F", "side": "purchase", "quantity": "1"}, "side must be one of"),
        ({"symbol": "F", "side": "buy", "quantity": "1.5"}, "positive whole number"),
        ({"symbol": "F", "side": "buy", "quantity": "1", "type": "limit"}, "price is required"),
        ({"symbol": "F", "side": "buy", "quantity": "1", "price": "9"}, "price is required"),
        ({"symbol": "F", "side": "buy", "quantity": "1", "duration": "ioc"}, "duration must be"),
        ({"symbol": "F", "side": "buy", "quantity": "1", "tag": "a_b"}, "tag must be"),
        ({"symbol": "F", "side": "buy", "quantity": "1", "client_order_id": "x"}, "unknown"),
    ],
)
async def test_invalid_order_forms_are_400_and_violations(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    form: dict[str, str],
    message: str,
):
    status, body = await place(http, emu, token(emu), account(emu, LIVE, "margin"), **form)
    assert status == 400
    errors = body["errors"]["error"]
    assert message in (errors if isinstance(errors, str) else " ".join(errors))
    assert any(message in v for v in emu.spec_violations)


@pytest.mark.parametrize(
    ("kind", "form", "message"),
    [
        (
            "margin",
            {"symbol": "ESZ25", "side": "buy", "quantity": "1"},
            "Invalid parameter, ESZ25: symbol not found.",
        ),
        ("margin", {"symbol": "/ES", "side": "buy", "quantity": "1"}, "symbol not found"),
        (
            "margin",
            {"symbol": "NVDA", "side": "buy", "quantity": "5000"},
            "You do not have enough buying power for this trade.",
        ),
        (
            "cash",
            {"symbol": "F", "side": "sell_short", "quantity": "1"},
            "Short selling is not allowed in a cash account.",
        ),
        ("margin", {"symbol": "AAPL", "side": "sell", "quantity": "11"}, "exceeds"),
        ("margin", {"symbol": "AAPL", "side": "sell_short", "quantity": "1"}, "use sell"),
        ("margin", {"symbol": "F", "side": "buy_to_cover", "quantity": "1"}, "short position"),
        (
            "margin",
            {
                "symbol": "F",
                "side": "buy",
                "quantity": "1",
                "type": "stop",
                "stop": "12",
                "duration": "pre",
            },
            "Extended hours orders must be limit",
        ),
    ],
)
async def test_business_rejections(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    kind: str,
    form: dict[str, str],
    message: str,
):
    status, body = await place(http, emu, token(emu), account(emu, LIVE, kind), **form)
    assert status == 400 and message in body["errors"]["error"]
    assert emu.spec_violations == []  # valid requests the broker refuses


async def test_tags_are_not_deduplicated(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    for _ in range(2):
        status, _ = await place(
            http, emu, tok, margin, symbol="F", side="buy", quantity="1", tag="same"
        )
        assert status == 200
    assert [o.tag for o in emu.orders_for(margin)] == ["same", "same"]


async def test_order_list_pages(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    for i in range(3):
        await place(http, emu, tok, margin, symbol="F", side="buy", quantity=str(i + 1))
    _, all_orders = await get(http, f"{emu.api_url()}/accounts/{margin}/orders", tok)
    assert len(all_orders["orders"]["order"]) == 3
    _, page2 = await get(
        http, f"{emu.api_url()}/accounts/{margin}/orders", tok, page="2", limit="2"
    )
    assert page2["orders"]["order"]["quantity"] == 3.0  # one left: an object
    _, page3 = await get(
        http, f"{emu.api_url()}/accounts/{margin}/orders", tok, page="3", limit="2"
    )
    assert page3 == {"orders": "null"}


async def test_resting_orders_fill_when_quotes_move(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, limit = await place(
        http, emu, tok, margin, symbol="TSLA", side="buy", quantity="2", type="limit", price="240"
    )
    _, stop = await place(
        http, emu, tok, margin, symbol="AAPL", side="sell", quantity="10", type="stop", stop="180"
    )
    lim, stp = emu.orders[limit["order"]["id"]], emu.orders[stop["order"]["id"]]
    assert (lim.status, stp.status) == ("open", "open")
    emu.set_quote("TSLA", "239.90", "239.95")
    emu.set_quote("AAPL", "179.50", "179.60")
    assert (lim.status, lim.avg_fill_price) == ("filled", Decimal("239.95"))
    assert (stp.status, stp.avg_fill_price) == ("filled", Decimal("179.50"))
    acct = emu.accounts[margin]
    assert "AAPL" not in acct.positions and acct.positions["TSLA"].quantity == 2
    assert acct.realized == Decimal("295.00")  # 10 × (179.50 − 150)


async def test_short_then_cover(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    await place(http, emu, tok, margin, symbol="F", side="sell_short", quantity="100")
    _, held = await get(http, f"{emu.api_url()}/accounts/{margin}/positions", tok)
    short = next(p for p in held["positions"]["position"] if p["symbol"] == "F")
    assert short["quantity"] == -100.0 and short["cost_basis"] == -1099.0
    status, body = await place(http, emu, tok, margin, symbol="F", side="buy", quantity="1")
    assert status == 400 and "buy_to_cover" in body["errors"]["error"]
    status, _ = await place(http, emu, tok, margin, symbol="F", side="buy_to_cover", quantity="100")
    assert status == 200 and "F" not in emu.accounts[margin].positions


async def test_partial_fill_reject_expire_and_cancel(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    ids = []
    for _ in range(4):
        _, body = await place(
            http,
            emu,
            tok,
            margin,
            symbol="F",
            side="buy",
            quantity="10",
            type="limit",
            price="10.50",
        )
        ids.append(body["order"]["id"])
    partial = emu.fill(ids[0], 4, "10.40")
    assert (partial.status, partial.exec_quantity, partial.remaining) == ("partially_filled", 4, 6)
    assert emu.reject(ids[1], "Risk check").status == "rejected"
    url = f"{emu.api_url()}/accounts/{margin}/orders/{ids[2]}"
    async with http.delete(url, headers=auth(tok)) as r:
        assert r.status == 200 and await r.json() == {"order": {"id": ids[2], "status": "ok"}}
    async with http.delete(url, headers=auth(tok)) as r:
        assert r.status == 400 and "cannot be canceled" in (await r.json())["errors"]["error"]
    assert [o.id for o in emu.expire_day_orders()] == [ids[0], ids[3]]
    async with http.get(f"{emu.api_url()}/accounts/{margin}/orders/999999", headers=auth(tok)) as r:
        assert r.status == 404 and "not found" in (await r.json())["errors"]["error"]


async def test_market_orders_wait_while_the_market_is_closed(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    emu.set_market_open(False)
    _, clock = await get(http, f"{emu.api_url()}/markets/clock", tok)
    assert clock["clock"]["state"] == "closed"
    _, body = await place(http, emu, tok, margin, symbol="F", side="buy", quantity="1")
    order = emu.orders[body["order"]["id"]]
    assert order.status == "open"
    emu.set_market_open(True)
    assert order.status == "filled"


async def test_preview_places_nothing(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    status, body = await place(
        http, emu, tok, margin, symbol="F", side="buy", quantity="3", preview="true"
    )
    assert status == 200
    assert set(body["order"]) == set(SPEC["order_preview_response"]["order"])
    assert emu.orders_for(margin) == []


# -- advanced orders: otoco and oto (brackets) ---------------------------------------------------

# The documented example (docs.tradier.com, "Place OTOCO Order"), as a form.
DOCUMENTED_OTOCO = {
    "class": "otoco",
    "duration": "day",
    "symbol[0]": "AAPL",
    "quantity[0]": "10",
    "type[0]": "limit",
    "side[0]": "buy",
    "price[0]": "130",
    "symbol[1]": "AAPL",
    "quantity[1]": "10",
    "type[1]": "limit",
    "side[1]": "sell",
    "price[1]": "150",
    "symbol[2]": "AAPL",
    "quantity[2]": "10",
    "type[2]": "stop",
    "side[2]": "sell",
    "stop[2]": "120",
}


def bracket_form(**changes: str | None) -> dict[str, str]:
    """Buy 10 F at 10.50 (below the market: it rests), take profit at 12, stop loss at 10."""
    form: dict[str, str | None] = {
        "class": "otoco",
        "duration": "gtc",
        "symbol[0]": "F",
        "side[0]": "buy",
        "quantity[0]": "10",
        "type[0]": "limit",
        "price[0]": "10.50",
        "symbol[1]": "F",
        "side[1]": "sell",
        "quantity[1]": "10",
        "type[1]": "limit",
        "price[1]": "12",
        "symbol[2]": "F",
        "side[2]": "sell",
        "quantity[2]": "10",
        "type[2]": "stop",
        "stop[2]": "10",
        "tag": "br-1",
        **changes,
    }
    return {k: v for k, v in form.items() if v is not None}


async def place_form(
    http: aiohttp.ClientSession, emu: TradierEmulator, tok: str, acct: str, form: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(
        f"{emu.api_url()}/accounts/{acct}/orders", data=form, headers=auth(tok)
    ) as r:
        return r.status, await r.json()


async def test_the_documented_otoco_is_one_order_with_its_legs(
    emu: TradierEmulator, http: aiohttp.ClientSession
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    status, body = await place_form(http, emu, tok, margin, DOCUMENTED_OTOCO)
    assert status == 200, body
    oid = body["order"]["id"]
    assert body == {"order": {"id": oid, "status": "ok", "partner_id": emu.partner_id}}
    _, got = await get(http, f"{emu.api_url()}/accounts/{margin}/orders/{oid}", tok)
    order = got["order"]
    assert (order["id"], order["class"], order["num_legs"]) == (oid, "otoco", 3)
    legs = order["leg"]
    assert [(leg["type"], leg["side"], leg["status"]) for leg in legs] == [
        ("limit", "buy", "open"),
        ("limit", "sell", "pending"),  # held until the entry fills
        ("stop", "sell", "pending"),
    ]
    assert (legs[0]["price"], legs[1]["price"], legs[2]["stop_price"]) == (130.0, 150.0, 120.0)
    assert len({oid, *(leg["id"] for leg in legs)}) == 4  # every leg has an id of its own
    for leg in legs:
        assert set(leg) <= set(SPEC["order_fields"]) | {"id"}
    _, listed = await get(http, f"{emu.api_url()}/accounts/{margin}/orders", tok)
    assert listed["orders"]["order"]["id"] == oid  # listed once, legs inside: one object
    async with http.get(
        f"{emu.api_url()}/accounts/{margin}/orders/{legs[1]['id']}", headers=auth(tok)
    ) as r:
        assert r.status == 404  # a leg is no order of its own to look up
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("quote", "fills", "cancelled", "held"),
    [
        (("12.00", "12.05"), "take-profit", "stop-loss", 0),
        (("9.90", "9.95"), "stop-loss", "take-profit", 0),
    ],
)
async def test_otoco_exits_work_once_the_entry_fills_and_one_cancels_the_other(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    quote: tuple[str, str],
    fills: str,
    cancelled: str,
    held: int,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    ws = await open_stream(http, emu, tok)
    _, body = await place_form(http, emu, tok, margin, bracket_form())
    entry, tp, sl = (emu.orders[i] for i in emu.advanced[body["order"]["id"]].legs)
    legs = {"take-profit": tp, "stop-loss": sl}
    opened = [await next_json(ws) for _ in range(3)]
    assert [(e["id"], e["status"]) for e in opened] == [
        (entry.id, "open"),
        (tp.id, "pending"),
        (sl.id, "pending"),
    ]
    emu.set_quote("F", "11.50", "11.55")  # the exits would trade here if they were working
    assert (tp.status, sl.status, tp.exec_quantity) == ("pending", "pending", 0)
    with pytest.raises(ValueError, match="cannot fill"):
        emu.fill(tp.id, 10)
    emu.set_quote("F", "10.40", "10.45")
    assert (entry.status, entry.avg_fill_price) == ("filled", Decimal("10.45"))
    assert (tp.status, sl.status) == ("open", "open")
    assert emu.accounts[margin].positions["F"].quantity == 10
    events = [await next_json(ws) for _ in range(3)]
    assert [(e["id"], e["status"]) for e in events] == [
        (entry.id, "filled"),
        (tp.id, "open"),
        (sl.id, "open"),
    ]
    emu.set_quote("F", *quote)
    assert (legs[fills].status, legs[cancelled].status) == ("filled", "canceled")
    assert legs[fills].exec_quantity == 10 and legs[cancelled].exec_quantity == 0
    assert "F" not in emu.accounts[margin].positions  # the position is closed, not reversed
    events = [await next_json(ws) for _ in range(2)]
    assert [(e["id"], e["status"]) for e in events] == [
        (legs[fills].id, "filled"),
        (legs[cancelled].id, "canceled"),
    ]
    _, got = await get(http, f"{emu.api_url()}/accounts/{margin}/orders/{body['order']['id']}", tok)
    assert got["order"]["status"] == "filled"
    assert [leg["status"] for leg in got["order"]["leg"]] == [
        "filled",
        *(("filled", "canceled") if fills == "take-profit" else ("canceled", "filled")),
    ]
    await ws.close()
    assert emu.spec_violations == []


async def test_an_otoco_entry_ending_unfilled_takes_its_held_exits_with_it(
    emu: TradierEmulator, http: aiohttp.ClientSession
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    ids = []
    for _ in range(3):
        _, body = await place_form(http, emu, tok, margin, bracket_form(duration="day"))
        ids.append(body["order"]["id"])
    url = f"{emu.api_url()}/accounts/{margin}/orders/{ids[0]}"
    async with http.delete(url, headers=auth(tok)) as r:
        assert r.status == 200 and await r.json() == {"order": {"id": ids[0], "status": "ok"}}
    async with http.delete(url, headers=auth(tok)) as r:
        assert r.status == 400 and "cannot be canceled" in (await r.json())["errors"]["error"]
    leg = emu.advanced[ids[1]].legs[1]
    async with http.delete(
        f"{emu.api_url()}/accounts/{margin}/orders/{leg}", headers=auth(tok)
    ) as r:
        assert r.status == 404  # only the order answered at placing is cancelled
    emu.reject(emu.advanced[ids[1]].legs[0], "Risk check")
    emu.expire_day_orders()
    for oid, ended in zip(ids, ("canceled", "rejected", "expired"), strict=True):
        assert [emu.orders[i].status for i in emu.advanced[oid].legs] == [
            ended,
            "canceled",
            "canceled",
        ]


async def test_cancelling_an_otoco_after_its_entry_filled_cancels_both_exits(
    emu: TradierEmulator, http: aiohttp.ClientSession
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, body = await place_form(http, emu, tok, margin, bracket_form(**{"price[0]": "11.05"}))
    entry, tp, sl = (emu.orders[i] for i in emu.advanced[body["order"]["id"]].legs)
    assert (entry.status, tp.status, sl.status) == ("filled", "open", "open")  # marketable
    async with http.delete(
        f"{emu.api_url()}/accounts/{margin}/orders/{body['order']['id']}", headers=auth(tok)
    ) as r:
        assert r.status == 200
    assert (entry.status, tp.status, sl.status) == ("filled", "canceled", "canceled")
    assert emu.accounts[margin].positions["F"].quantity == 10  # the position stays


async def test_oto_starts_its_one_exit_when_the_entry_fills(
    emu: TradierEmulator, http: aiohttp.ClientSession
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    form = bracket_form(
        **{"class": "oto", "symbol[2]": None, "side[2]": None, "quantity[2]": None},
        **{"type[2]": None, "stop[2]": None, "type[1]": "market", "price[1]": None},
    )
    status, body = await place_form(http, emu, tok, margin, form)
    assert status == 200, body
    entry, sell = (emu.orders[i] for i in emu.advanced[body["order"]["id"]].legs)
    assert (entry.status, sell.status) == ("open", "pending")
    emu.fill(entry.id, 10, "10.50")
    assert (entry.status, sell.status) == ("filled", "filled")  # a market exit fills at once
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"type[0]": "market", "price[0]": None}, "type[0] must be one of limit, stop"),
        ({"type[2]": "limit", "stop[2]": None, "price[2]": "9"}, "must have a different type"),
        ({"symbol[2]": "AAPL"}, "must have the same symbol"),
        ({"type[1]": "market", "price[1]": None}, "type[1] must be one of limit, stop"),
        ({"duration": None}, "missing required parameter 'duration'"),
        ({"duration[0]": "day"}, "not both"),
        (
            {"duration": None, "duration[0]": "day", "duration[1]": "day", "duration[2]": "gtc"},
            "must have the same duration",
        ),
        ({"price[1]": None}, "price[1] is required"),
        ({"stop[2]": None}, "stop[2] is required"),
        ({"side[1]": "close"}, "side[1] must be one of"),
        ({"quantity[2]": None}, "missing required parameter 'quantity[2]'"),
        ({"symbol[3]": "F"}, "unknown parameter 'symbol[3]'"),
        ({"take_profit": "12"}, "unknown parameter 'take_profit'"),
    ],
)
async def test_invalid_advanced_forms_are_400_and_violations(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    changes: dict[str, str | None],
    message: str,
):
    margin = account(emu, LIVE, "margin")
    status, body = await place_form(http, emu, token(emu), margin, bracket_form(**changes))
    assert status == 400
    errors = body["errors"]["error"]
    assert message in (errors if isinstance(errors, str) else " ".join(errors))
    assert any(message in v for v in emu.spec_violations)
    assert emu.advanced == {} and emu.orders == {}


async def test_per_order_durations_are_taken_when_the_main_one_is_omitted(
    emu: TradierEmulator, http: aiohttp.ClientSession
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    form = bracket_form(
        duration=None, **{"duration[0]": "day", "duration[1]": "gtc", "duration[2]": "gtc"}
    )
    status, body = await place_form(http, emu, tok, margin, form)
    assert status == 200, body
    legs = [emu.orders[i] for i in emu.advanced[body["order"]["id"]].legs]
    assert [leg.duration for leg in legs] == ["day", "gtc", "gtc"]
    assert emu.spec_violations == []


async def test_an_otoco_entry_is_checked_as_an_order_of_its_own(
    emu: TradierEmulator, http: aiohttp.ClientSession
):
    tok, cash = token(emu), account(emu, LIVE, "cash")
    short = bracket_form(
        **{"side[0]": "sell_short", "side[1]": "buy_to_cover", "side[2]": "buy_to_cover"}
    )
    status, body = await place_form(http, emu, tok, cash, short)
    assert status == 400 and "Short selling is not allowed" in body["errors"]["error"]
    too_big = bracket_form(**{f"quantity[{i}]": "50000" for i in range(3)})
    status, body = await place_form(http, emu, tok, cash, too_big)
    assert status == 400 and "buying power" in body["errors"]["error"]
    assert emu.spec_violations == [] and emu.advanced == {}


# -- market data --------------------------------------------------------------------------------


async def test_quotes_object_array_and_unmatched(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok = token(emu)
    _, one = await get(http, f"{emu.api_url()}/markets/quotes", tok, symbols="AAPL")
    assert one["quotes"]["quote"]["symbol"] == "AAPL" and one["quotes"]["quote"]["bid"] == 189.95
    _, two = await get(http, f"{emu.api_url()}/markets/quotes", tok, symbols="AAPL,MSFT,ESZ25")
    assert [q["symbol"] for q in two["quotes"]["quote"]] == ["AAPL", "MSFT"]
    assert two["quotes"]["unmatched_symbols"] == {"symbol": "ESZ25"}
    status, _ = await get(http, f"{emu.api_url()}/markets/quotes", tok)
    assert status == 400 and emu.spec_violations == [
        "GET /api/v1/markets/quotes: symbols is required"
    ]


# -- rate limits --------------------------------------------------------------------------------


async def test_rate_limit_headers_and_429_per_token(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    clock: Clock,
):
    emu.set_rate_limit("standard", 2, LIVE)
    tok = token(emu)
    url = f"{emu.api_url()}/user/profile"
    for used in (1, 2):
        async with http.get(url, headers=auth(tok)) as r:
            assert r.status == 200
            assert r.headers["X-Ratelimit-Allowed"] == "2"
            assert r.headers["X-Ratelimit-Used"] == str(used)
            assert r.headers["X-Ratelimit-Available"] == str(2 - used)
            expiry = int(r.headers["X-Ratelimit-Expiry"])
    assert expiry == int((clock.now + 60) * 1000)
    async with http.get(url, headers=auth(tok)) as r:
        assert r.status == 429 and r.headers["X-Ratelimit-Available"] == "0"
    # Another bucket, and another token, have their own windows.
    assert (await get(http, f"{emu.api_url()}/markets/clock", tok))[0] == 200
    assert (await get(http, url, token(emu)))[0] == 200
    clock.now += 61
    assert (await get(http, url, tok))[0] == 200
    assert emu.rate_limits[PAPER]["standard"] == 60  # sandbox has its own numbers


# -- account events ------------------------------------------------------------------------------


async def open_stream(
    http: aiohttp.ClientSession,
    emu: TradierEmulator,
    tok: str,
    env: Environment = LIVE,
    exclude: list[str] | None = None,
) -> aiohttp.ClientWebSocketResponse:
    async with http.post(f"{emu.api_url(env)}/accounts/events/session", headers=auth(tok)) as r:
        assert r.status == 200
        stream = (await r.json())["stream"]
    assert set(stream) == {"url", "sessionid"}
    ws = await http.ws_connect(stream["url"])
    await ws.send_json(
        {"events": ["order"], "sessionid": stream["sessionid"], "excludeAccounts": exclude or []}
    )
    for _ in range(100):
        if emu.stream_count:
            break
        await asyncio.sleep(0.01)
    return ws


async def next_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 5)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_order_events_have_the_documented_shape(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    ws = await open_stream(http, emu, tok)
    _, body = await place(
        http, emu, tok, margin, symbol="F", side="buy", quantity="2", type="limit", price="10.00"
    )
    opened = await next_json(ws)
    documented = SPEC["account_events_ws"]["order_events"][0]
    assert set(opened) == set(documented)
    assert (opened["id"], opened["status"], opened["account"]) == (
        body["order"]["id"],
        "open",
        margin,
    )
    assert opened["price"] == 10.0 and opened["remaining_quantity"] == 2.0
    emu.fill(body["order"]["id"], 2, "10.00")
    filled = await next_json(ws)
    assert (filled["status"], filled["exec_quantity"], filled["avg_fill_price"]) == (
        "filled",
        2.0,
        10.0,
    )
    emu.send_heartbeat()
    beat = await next_json(ws)
    assert set(beat) == set(SPEC["account_events_ws"]["heartbeat"])
    assert beat["event"] == "heartbeat" and beat["status"] == "active"
    await emu.drop_streams()
    assert (await asyncio.wait_for(ws.receive(), 5)).type == aiohttp.WSMsgType.CLOSE
    assert emu.spec_violations == []


async def test_excluded_accounts_and_other_users_get_nothing(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin, cash = token(emu), account(emu, LIVE, "margin"), account(emu, LIVE, "cash")
    ws = await open_stream(http, emu, tok, exclude=[margin])
    await place(http, emu, tok, margin, symbol="F", side="buy", quantity="1")
    pat = token(emu, user="id-pat")
    await place(
        http,
        emu,
        pat,
        account(emu, LIVE, "pdt", user="id-pat"),
        symbol="F",
        side="buy",
        quantity="1",
    )
    await place(http, emu, tok, cash, symbol="F", side="buy", quantity="1")
    assert (await next_json(ws))["account"] == cash
    await ws.close()


async def test_one_session_at_a_time(emu: TradierEmulator, http: aiohttp.ClientSession):
    tok = token(emu)
    first = await open_stream(http, emu, tok)
    async with http.post(f"{emu.api_url()}/accounts/events/session", headers=auth(tok)) as r:
        assert r.status == 200
    assert (await asyncio.wait_for(first.receive(), 5)).type == aiohttp.WSMsgType.CLOSE


async def test_session_ids_expire_after_five_minutes(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    clock: Clock,
):
    tok = token(emu)
    async with http.post(f"{emu.api_url()}/accounts/events/session", headers=auth(tok)) as r:
        stream = (await r.json())["stream"]
    clock.now += 301
    async with http.ws_connect(stream["url"]) as ws:
        await ws.send_json(
            {"events": ["order"], "sessionid": stream["sessionid"], "excludeAccounts": []}
        )
        assert "error" in await next_json(ws)


async def test_sandbox_sessions_do_not_open_live_streams(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok = token(emu, PAPER)
    async with http.post(f"{emu.api_url(PAPER)}/accounts/events/session", headers=auth(tok)) as r:
        stream = (await r.json())["stream"]
    assert "/sandbox-ws/" in stream["url"]
    async with http.ws_connect(emu.stream_url(LIVE)) as ws:
        await ws.send_json(
            {"events": ["order"], "sessionid": stream["sessionid"], "excludeAccounts": []}
        )
        assert "error" in await next_json(ws)


async def test_malformed_subscription_is_a_violation(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    async with http.ws_connect(emu.stream_url(LIVE)) as ws:
        await ws.send_json({"events": "order", "session": "x"})
        assert "error" in await next_json(ws)
    assert any("unknown subscription field 'session'" in v for v in emu.spec_violations)
    assert any("events must be a list" in v for v in emu.spec_violations)


# -- modify (PUT /accounts/{id}/orders/{order_id}) ------------------------------------------------


async def modify(
    http: aiohttp.ClientSession,
    emu: TradierEmulator,
    tok: str,
    acct: str,
    order_id: int,
    **form: str,
) -> tuple[int, Any]:
    url = f"{emu.api_url()}/accounts/{acct}/orders/{order_id}"
    async with http.put(url, data=form, headers=auth(tok)) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body


async def test_modify_changes_the_order_in_place_and_answers_id_and_status(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, placed = await place(
        http, emu, tok, margin, symbol="F", side="buy", quantity="10", type="limit", price="10.50"
    )
    oid = placed["order"]["id"]
    status, body = await modify(
        http, emu, tok, margin, oid, type="limit", duration="gtc", price="10.60"
    )
    assert (status, body) == (200, {"order": {"id": oid, "status": "ok"}})
    _, read = await get(http, f"{emu.api_url()}/accounts/{margin}/orders/{oid}", tok)
    assert (read["order"]["price"], read["order"]["duration"]) == (10.6, "gtc")
    assert (read["order"]["status"], read["order"]["quantity"]) == ("open", 10.0)
    assert [o.id for o in emu.orders_for(margin)] == [oid]  # the same order, not a new one
    _, stop = await place(
        http, emu, tok, margin, symbol="AAPL", side="sell", quantity="5", type="stop", stop="150"
    )
    status, _ = await modify(http, emu, tok, margin, stop["order"]["id"], stop="160")
    assert status == 200 and emu.orders[stop["order"]["id"]].stop == Decimal(160)
    assert emu.spec_violations == []


async def test_a_modified_limit_that_becomes_marketable_fills_as_a_new_one_would(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, placed = await place(
        http, emu, tok, margin, symbol="F", side="buy", quantity="10", type="limit", price="10.50"
    )
    order = emu.orders[placed["order"]["id"]]
    status, _ = await modify(http, emu, tok, margin, order.id, type="limit", price="11.50")
    assert status == 200
    assert (order.status, order.avg_fill_price) == ("filled", Decimal("11.01"))  # at the ask
    assert emu.accounts[margin].positions["F"].quantity == 10


async def test_modifying_an_order_that_has_ended_is_refused(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    ids = []
    for _ in range(2):
        _, body = await place(
            http, emu, tok, margin, symbol="F", side="buy", quantity="10", type="limit", price="10"
        )
        ids.append(body["order"]["id"])
    emu.fill(ids[0], 10, "10")
    async with http.delete(
        f"{emu.api_url()}/accounts/{margin}/orders/{ids[1]}", headers=auth(tok)
    ) as r:
        assert r.status == 200
    for oid, ended in zip(ids, ("filled", "canceled"), strict=True):
        status, body = await modify(http, emu, tok, margin, oid, price="10.20")
        assert status == 400
        assert body["errors"]["error"] == f"Order {oid} cannot be changed: it is {ended}."
    assert emu.orders[ids[1]].price == Decimal(10)
    status, body = await modify(http, emu, tok, margin, 999999, price="10.20")
    assert status == 404 and "not found" in body["errors"]["error"]
    assert emu.spec_violations == []  # valid requests the broker refuses


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"stop": "10"}, "stop is not valid for limit orders"),
        ({"type": "market", "price": "10"}, "price is not valid for market orders"),
        ({"type": "stop_limit"}, "stop is required for stop_limit orders"),
        ({"type": "trailing"}, "type must be one of"),
        ({"duration": "ioc"}, "duration must be one of"),
        ({"price": "-1"}, "price must be a positive number"),
        ({"quantity": "5"}, "unknown parameter 'quantity'"),
    ],
)
async def test_invalid_modify_forms_are_400_and_violations(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    form: dict[str, str],
    message: str,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, placed = await place(
        http, emu, tok, margin, symbol="F", side="buy", quantity="10", type="limit", price="10.50"
    )
    order = emu.orders[placed["order"]["id"]]
    status, body = await modify(http, emu, tok, margin, order.id, **form)
    assert status == 400
    errors = body["errors"]["error"]
    assert message in (errors if isinstance(errors, str) else " ".join(errors))
    assert any(message in v for v in emu.spec_violations)
    assert (order.type, order.price, order.stop) == ("limit", Decimal("10.50"), None)


async def test_modify_is_checked_as_a_placement_is(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    _, placed = await place(
        http,
        emu,
        tok,
        margin,
        symbol="NVDA",
        side="buy",
        quantity="1400",
        type="limit",
        price="100",
    )
    oid = placed["order"]["id"]
    status, body = await modify(http, emu, tok, margin, oid, price="1000")
    assert status == 400 and body["errors"]["error"] == (
        "You do not have enough buying power for this trade."
    )
    status, body = await modify(http, emu, tok, margin, oid, type="market", duration="pre")
    assert status == 400 and "Extended hours orders must be limit" in body["errors"]["error"]
    assert emu.orders[oid].price == Decimal(100) and emu.spec_violations == []
    # Its own hold is given back first: 1400 × 110 fits only beside what it frees.
    assert emu.buying_power(emu.accounts[margin]) < 1400 * 110
    status, _ = await modify(http, emu, tok, margin, oid, price="110")
    assert status == 200 and emu.orders[oid].status == "open"


# -- extended hours (durations pre and post) ----------------------------------------------------


async def test_pre_and_post_limits_fill_in_their_sessions_while_day_orders_wait(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    buy = {"symbol": "F", "side": "buy", "quantity": "1", "type": "limit", "price": "11.50"}
    emu.set_market_state("premarket")
    _, clock = await get(http, f"{emu.api_url()}/markets/clock", tok)
    assert (clock["clock"]["state"], clock["clock"]["next_state"]) == ("premarket", "open")
    _, day = await place(http, emu, tok, margin, **buy)
    _, pre = await place(http, emu, tok, margin, duration="pre", **buy)
    assert emu.orders[pre["order"]["id"]].status == "filled"
    assert emu.orders[day["order"]["id"]].status == "open"
    # A pre order placed but not marketable does not carry into regular hours.
    _, waiting = await place(http, emu, tok, margin, duration="pre", **{**buy, "price": "10.00"})
    emu.set_market_state("postmarket")
    assert emu.orders[day["order"]["id"]].status == "open"  # a day order: regular hours only
    _, post = await place(http, emu, tok, margin, duration="post", **buy)
    assert emu.orders[post["order"]["id"]].status == "filled"
    emu.set_market_state("open")
    assert emu.orders[day["order"]["id"]].status == "filled"
    emu.set_quote("F", "9.98", "9.99")
    assert emu.orders[waiting["order"]["id"]].status == "open"
    url = f"{emu.api_url()}/accounts/{margin}/orders/{post['order']['id']}"
    assert (await get(http, url, tok))[1]["order"]["duration"] == "post"
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("state", "form", "error"),
    [
        ("open", {"duration": "pre"}, "Pre orders can only be placed in the premarket session."),
        ("closed", {"duration": "pre"}, "Pre orders can only be placed in the premarket session."),
        ("premarket", {"duration": "post"}, "Post orders can only be placed in the postmarket"),
        ("premarket", {"duration": "pre", "type": "market"}, "must be limit orders"),
        ("postmarket", {"duration": "post", "type": "stop", "stop": "12.00"}, "must be limit"),
    ],
)
async def test_extended_durations_are_refused_outside_their_session_or_without_a_limit(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
    state: str,
    form: dict[str, str],
    error: str,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    emu.set_market_state(state)
    order = {"symbol": "F", "side": "buy", "quantity": "1", "type": "limit", "price": "11.50"}
    if form.get("type") in ("market", "stop"):
        del order["price"]
    status, body = await place(http, emu, tok, margin, **{**order, **form})
    assert status == 400 and error in body["errors"]["error"]
    assert emu.orders_for(margin) == []
    assert emu.spec_violations == []  # a business refusal, not a departure from the docs


async def test_a_pre_order_is_changed_in_its_session_but_not_made_one_outside_it(
    emu: TradierEmulator,
    http: aiohttp.ClientSession,
):
    tok, margin = token(emu), account(emu, LIVE, "margin")
    emu.set_market_state("premarket")
    limit = {"symbol": "F", "side": "buy", "quantity": "1", "type": "limit", "price": "10.00"}
    _, pre = await place(http, emu, tok, margin, duration="pre", **limit)
    pre_id = pre["order"]["id"]
    assert (await modify(http, emu, tok, margin, pre_id, duration="pre", price="10.10"))[0] == 200
    assert emu.orders[pre_id].price == Decimal("10.10")
    emu.set_market_state("open")
    _, day = await place(http, emu, tok, margin, **limit)
    status, body = await modify(http, emu, tok, margin, day["order"]["id"], duration="pre")
    assert status == 400 and "premarket session" in body["errors"]["error"]
    assert emu.orders[day["order"]["id"]].duration == "day"
    assert emu.spec_violations == []
