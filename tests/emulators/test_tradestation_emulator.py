"""The TradeStation emulator answers as the vendor documents: Auth0 OAuth (audience, scopes,
client_secret_post, refresh policies, revoke), the v3 API shapes, spec validation, rate
limits, the fill engine and the order stream. Plain aiohttp calls, 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from emulators.common import Fault
from emulators.tradestation import (
    AUDIENCE,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    STREAM_CONTENT_TYPE,
    TradeStationEmulator,
)
from emulators.tradestation.spec import patched_spec
from emulators.tradestation.testing import REDIRECT_URI, SCOPES, authorization_code, sign_in

MARGIN, CASH, FUTURES, CRYPTO = "11827342", "11827341", "11827343", "11827344C"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[TradeStationEmulator]:
    emulator = TradeStationEmulator(clock=clock, validate_responses=True, heartbeat_interval=3600)
    await emulator.start()
    yield emulator
    await emulator.stop()
    assert emulator.response_violations == []  # the emulator's own answers fit the spec


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def token(emu: TradeStationEmulator, session: aiohttp.ClientSession) -> str:
    return str((await sign_in(session, emu))["access_token"])


async def call(
    session: aiohttp.ClientSession,
    emu: TradeStationEmulator,
    method: str,
    path: str,
    token: str,
    env: str = "live",
    **kw: Any,
) -> tuple[int, Any]:
    async with session.request(
        method, emu.api_url(env) + path, headers={"Authorization": f"Bearer {token}"}, **kw
    ) as r:
        body = await r.json() if "json" in r.content_type else await r.text()
        return r.status, body


def order(account: str = MARGIN, symbol: str = "MSFT", qty: str = "1", **kw: Any) -> dict[str, Any]:
    return {
        "AccountID": account,
        "Symbol": symbol,
        "Quantity": qty,
        "OrderType": "Market",
        "TradeAction": "BUY",
        "TimeInForce": {"Duration": "DAY"},
        "Route": "Intelligent",
        **kw,
    }


async def place(
    session: aiohttp.ClientSession,
    emu: TradeStationEmulator,
    token: str,
    body: dict[str, Any],
    env: str = "live",
) -> dict[str, Any]:
    status, answer = await call(
        session, emu, "POST", "/v3/orderexecution/orders", token, env, json=body
    )
    assert status == 200, answer
    return dict(answer)


async def token_request(
    session: aiohttp.ClientSession, emu: TradeStationEmulator, **form: str
) -> tuple[int, dict[str, Any]]:
    data = {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET, **form}
    async with session.post(emu.token_url, data=data) as r:
        return r.status, await r.json()


def authorize_params(**overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": DEFAULT_CLIENT_ID,
        "audience": AUDIENCE,
        "redirect_uri": REDIRECT_URI,
        "state": "s1",
        "scope": SCOPES,
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


async def authorize_redirect(
    session: aiohttp.ClientSession, emu: TradeStationEmulator, **overrides: str
) -> dict[str, list[str]]:
    async with session.get(
        emu.authorize_url, params=authorize_params(**overrides), allow_redirects=False
    ) as r:
        assert r.status == 302, await r.text()
        return parse_qs(urlsplit(r.headers["Location"]).query)


# -- sign-in and tokens ------------------------------------------------------------------


async def test_authorize_shows_the_consent_page(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    async with session.get(emu.authorize_url, params=authorize_params()) as r:
        page = await r.text()
        assert r.status == 200 and "no-store" in r.headers["Cache-Control"]
    for marker in ('id="user"', 'id="approve"', 'id="deny"', "Demo Trader", "ReadAccount"):
        assert marker in page


async def test_authorize_requires_the_audience(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    missing = await authorize_redirect(session, emu, audience="")
    assert missing["error"] == ["invalid_request"] and missing["state"] == ["s1"]
    assert "audience" in missing["error_description"][0]
    wrong = await authorize_redirect(session, emu, audience="https://example.com")
    assert wrong["error"] == ["access_denied"]
    no_openid = await authorize_redirect(session, emu, scope="ReadAccount Trade")
    assert no_openid["error"] == ["invalid_scope"]
    unknown = await authorize_redirect(session, emu, scope="openid MoveMoney")
    assert unknown["error"] == ["invalid_scope"]


async def test_authorize_refuses_unknown_clients_and_callbacks(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    async with session.get(
        emu.authorize_url, params=authorize_params(client_id="nope"), allow_redirects=False
    ) as r:
        assert r.status == 400 and "Location" not in r.headers
    bad = authorize_params(redirect_uri="https://evil.example/cb")
    async with session.get(emu.authorize_url, params=bad, allow_redirects=False) as r:
        assert r.status == 400 and "Callback URL mismatch" in await r.text()
    emu.register_client("key2", "secret2", ["https://bot.example/cb"])
    exact = authorize_params(client_id="key2", redirect_uri="http://localhost:8080/cb")
    async with session.get(emu.authorize_url, params=exact, allow_redirects=False) as r:
        assert r.status == 400  # only the default key takes any localhost callback


async def test_deny_redirects_with_access_denied(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    form = {k: v for k, v in authorize_params().items() if k != "response_type"}
    form.update(user_id="demo", decision="deny")
    async with session.post(
        emu.base_url + "/signin/u/consent", data=form, allow_redirects=False
    ) as r:
        query = parse_qs(urlsplit(r.headers["Location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["s1"]


async def test_code_exchange_and_single_use(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    code = await authorization_code(session, emu)
    status, body = await token_request(
        session, emu, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI
    )
    assert status == 200
    assert body["expires_in"] == 1200 and body["token_type"] == "Bearer"
    assert body["scope"] == SCOPES and body["refresh_token"] and body["access_token"]
    payload = json.loads(base64.urlsafe_b64decode(body["id_token"].split(".")[1] + "=="))
    assert payload["aud"] == DEFAULT_CLIENT_ID and payload["sub"] == "auth0|demo"
    status, again = await token_request(
        session, emu, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI
    )
    assert status == 403 and again["error"] == "invalid_grant"


async def test_token_endpoint_takes_the_secret_in_the_body(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    code = await authorization_code(session, emu)
    status, body = await token_request(
        session,
        emu,
        grant_type="authorization_code",
        code=code,
        redirect_uri=REDIRECT_URI,
        client_secret="wrong",
    )
    assert status == 401 and body["error"] == "access_denied"
    basic = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
    async with session.post(
        emu.token_url,
        headers={"Authorization": f"Basic {basic}"},
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
    ) as r:
        assert r.status == 401
    status, body = await token_request(session, emu, grant_type="password")
    assert status == 403 and body["error"] == "unsupported_grant_type"


async def test_refresh_tokens_need_offline_access(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    grant = await sign_in(session, emu, scope="openid ReadAccount")
    assert "refresh_token" not in grant and grant["access_token"]


async def test_default_refresh_tokens_live_indefinitely(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, clock: Clock
) -> None:
    grant = await sign_in(session, emu)
    for _ in range(3):
        clock.advance(30 * 86400)
        status, body = await token_request(
            session, emu, grant_type="refresh_token", refresh_token=grant["refresh_token"]
        )
        assert status == 200 and "refresh_token" not in body
        assert body["expires_in"] == 1200 and body["id_token"]
    assert emu.oauth.refresh_requests == 3


async def test_rotation_mode_rolls_every_30_minutes_within_24_hours(
    session: aiohttp.ClientSession, clock: Clock
) -> None:
    async with TradeStationEmulator(clock=clock, rotation=True) as emu:
        assert isinstance(emu, TradeStationEmulator)
        grant = await sign_in(session, emu)
        current = grant["refresh_token"]
        status, body = await token_request(
            session, emu, grant_type="refresh_token", refresh_token=current
        )
        assert status == 200 and body["refresh_token"] != current
        # the rotated-out token is dead, and reusing it kills the whole grant
        status, reused = await token_request(
            session, emu, grant_type="refresh_token", refresh_token=current
        )
        assert status == 403 and reused["error"] == "invalid_grant"
        status, _ = await token_request(
            session, emu, grant_type="refresh_token", refresh_token=body["refresh_token"]
        )
        assert status == 403

        grant = await sign_in(session, emu)
        clock.advance(31 * 60)  # idle past 30 minutes
        status, _ = await token_request(
            session, emu, grant_type="refresh_token", refresh_token=grant["refresh_token"]
        )
        assert status == 403

        grant = await sign_in(session, emu)
        current = grant["refresh_token"]
        refreshed = 0
        while True:
            clock.advance(25 * 60)
            status, body = await token_request(
                session, emu, grant_type="refresh_token", refresh_token=current
            )
            if status != 200:
                break
            refreshed += 1
            current = body["refresh_token"]
        assert body["error"] == "invalid_grant"
        assert refreshed == 24 * 60 // 25  # stopped by the 24-hour absolute lifetime


async def test_revoke_revokes_every_refresh_token_of_the_user(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    first, second = await sign_in(session, emu), await sign_in(session, emu)
    other = await sign_in(session, emu, user_id="alice")
    async with session.post(
        emu.revoke_url,
        data={
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "token": first["refresh_token"],
        },
    ) as r:
        assert r.status == 200
    for grant in (first, second):
        status, _ = await token_request(
            session, emu, grant_type="refresh_token", refresh_token=grant["refresh_token"]
        )
        assert status == 403
    status, _ = await token_request(
        session, emu, grant_type="refresh_token", refresh_token=other["refresh_token"]
    )
    assert status == 200
    # issued access tokens stay valid until they expire
    status, _ = await call(session, emu, "GET", "/v3/brokerage/accounts", first["access_token"])
    assert status == 200
    async with session.post(
        emu.revoke_url, data={"client_id": DEFAULT_CLIENT_ID, "client_secret": "bad", "token": "x"}
    ) as r:
        assert r.status == 401


async def test_pkce_only_when_enabled(session: aiohttp.ClientSession) -> None:
    verifier = "v" * 50
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    async with TradeStationEmulator() as emu:
        assert isinstance(emu, TradeStationEmulator)
        refused = await authorize_redirect(session, emu, **pkce)
        assert refused["error"] == ["invalid_request"]
        assert "PKCE" in refused["error_description"][0]
    async with TradeStationEmulator(pkce_enabled=True) as emu:
        assert isinstance(emu, TradeStationEmulator)
        code = await authorization_code(session, emu, extra=pkce)
        status, body = await token_request(
            session,
            emu,
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT_URI,
            code_verifier="w" * 50,
        )
        assert status == 403 and body["error"] == "invalid_grant"
        code = await authorization_code(session, emu, extra=pkce)
        status, body = await token_request(
            session,
            emu,
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT_URI,
            code_verifier=verifier,
        )
        assert status == 200


async def test_access_tokens_last_20_minutes(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str, clock: Clock
) -> None:
    clock.advance(19 * 60)
    assert (await call(session, emu, "GET", "/v3/brokerage/accounts", token))[0] == 200
    clock.advance(2 * 60)
    status, body = await call(session, emu, "GET", "/v3/brokerage/accounts", token)
    assert status == 401 and body == {"Error": "Unauthorized", "Message": "Unauthorized"}
    status, _ = await call(session, emu, "GET", "/v3/brokerage/accounts", "made-up")
    assert status == 401


async def test_same_token_serves_live_and_sim(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, live = await call(session, emu, "GET", "/v3/brokerage/accounts", token)
    _, sim = await call(session, emu, "GET", "/v3/brokerage/accounts", token, "sim")
    assert [a["AccountType"] for a in live["Accounts"]] == ["Cash", "Margin", "Futures", "Crypto"]
    assert [a["AccountID"] for a in sim["Accounts"]] == ["SIM1182734M", "SIM1182734F"]
    assert "AccountDetail" not in live["Accounts"][2]  # futures accounts have none
    status, body = await call(
        session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/balances", token, "sim"
    )
    assert status == 200 and body["Balances"] == []
    assert body["Errors"][0]["Message"] == "Invalid Account ID."


async def test_scopes_are_enforced(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    grant = await sign_in(session, emu, scope="openid offline_access ReadAccount")
    tok = grant["access_token"]
    assert (await call(session, emu, "GET", "/v3/brokerage/accounts", tok))[0] == 200
    status, body = await call(session, emu, "POST", "/v3/orderexecution/orders", tok, json=order())
    assert status == 403 and body["Error"] == "Forbidden"
    assert (await call(session, emu, "GET", "/v3/marketdata/quotes/AAPL", tok))[0] == 403


# -- spec validation, limits -------------------------------------------------------------


def test_spec_defects_are_fixed_in_memory() -> None:
    spec = patched_spec()
    schemas = spec["components"]["schemas"]
    assert schemas["BalanceDetail1"]["properties"]["MaintenanceMargin"]["type"] == "string"
    assert schemas["TimeStamp"]["type"] == "string"
    assert schemas["OrderLeg"]["properties"]["ExpirationDate"]["type"] == "string"
    placed = spec["paths"]["/v3/orderexecution/orders"]["post"]["responses"]["200"]
    assert placed["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderResponses"
    }


async def test_nonconforming_requests_get_400_and_are_recorded(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body = await call(
        session, emu, "POST", "/v3/orderexecution/orders", token, json={**order(), "Quantity": 1}
    )
    assert status == 400 and body["Error"] == "BadRequest" and "string" in body["Message"]
    status, _ = await call(
        session,
        emu,
        "POST",
        "/v3/orderexecution/orders",
        token,
        json=order(OrderConfirmID="x" * 23),
    )
    assert status == 400
    status, _ = await call(
        session, emu, "POST", "/v3/orderexecution/orders", token, json=order(TradeAction="PURCHASE")
    )
    assert status == 400
    status, _ = await call(
        session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/historicalorders", token
    )
    assert status == 400
    many = ",".join(str(100 + i) for i in range(26))
    assert (await call(session, emu, "GET", f"/v3/brokerage/accounts/{many}/balances", token))[
        0
    ] == 400
    status, body = await call(session, emu, "GET", "/v3/brokerage/nothing", token)
    assert status == 404 and body["Error"] == "NotFound"
    assert len(emu.spec_violations) == 6
    assert emu.orders_for(MARGIN) == []
    # the vendor's own mixed-case examples conform
    answer = await place(
        session, emu, token, order(TradeAction="Buy", TimeInForce={"Duration": "Day"})
    )
    assert answer["Orders"][0]["Message"] == "Sent order: Buy 1 MSFT @ Market"
    assert len(emu.spec_violations) == 6


async def test_rate_limits_answer_429_with_retry_after(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str, clock: Clock
) -> None:
    emu.rate_limits["balances"] = (2, 300.0)
    path = f"/v3/brokerage/accounts/{MARGIN}/balances"
    for _ in range(2):
        assert (await call(session, emu, "GET", path, token))[0] == 200
    async with session.get(
        emu.api_url("live") + path, headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "300"
        assert (await r.json())["Error"] == "TooManyRequests"
    assert (await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/positions", token))[
        0
    ] == 200  # another bucket
    clock.advance(300)
    assert (await call(session, emu, "GET", path, token))[0] == 200


def test_default_rate_limits_are_the_published_ones() -> None:
    emu = TradeStationEmulator(seed=False)
    assert emu.rate_limits == {
        "accounts": (250, 300.0),
        "balances": (250, 300.0),
        "positions": (250, 300.0),
        "orders": (250, 300.0),
        "quotes": (30, 60.0),
    }


# -- brokerage payloads ------------------------------------------------------------------


async def test_crypto_account_is_not_supported_on_brokerage_reads(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, body = await call(
        session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN},{CRYPTO}/balances", token
    )
    assert status == 200 and [b["AccountID"] for b in body["Balances"]] == [MARGIN]
    assert body["Errors"] == [
        {
            "AccountID": CRYPTO,
            "Error": "Forbidden",
            "Message": "Request not supported for account type.",
        }
    ]
    _, orders = await call(session, emu, "GET", f"/v3/brokerage/accounts/{CRYPTO}/orders", token)
    assert orders["Orders"] == [] and orders["Errors"] == []
    _, placed = await call(
        session, emu, "POST", "/v3/orderexecution/orders", token, json=order(CRYPTO)
    )
    assert "not supported for account type" in placed["Errors"][0]["Message"]


async def test_money_is_strings(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    _, bal = await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/balances", token)
    b = bal["Balances"][0]
    assert all(isinstance(b[k], str) for k in ("CashBalance", "BuyingPower", "Equity"))
    _, pos = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/positions",
        token,
        params={"symbol": "AAPL"},
    )
    (p,) = pos["Positions"]
    assert p["Quantity"] == "10" and p["LongShort"] == "Long" and p["AveragePrice"] == "200"
    _, none = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/positions",
        token,
        params={"symbol": "MSFT"},
    )
    assert none["Positions"] == []
    _, quotes = await call(session, emu, "GET", "/v3/marketdata/quotes/AAPL,NOPE", token)
    assert quotes["Quotes"][0]["Bid"] == "228.48"
    assert quotes["Errors"] == [{"Symbol": "NOPE", "Error": "FAILED, INVALID SYMBOL"}]


# -- order entry and the fill engine -----------------------------------------------------


async def test_market_orders_fill_instantly(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    answer = await place(session, emu, token, order(qty="10"))
    (sent,) = answer["Orders"]
    _, orders = await call(
        session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/orders/{sent['OrderID']}", token
    )
    (o,) = orders["Orders"]
    assert o["Status"] == "FLL" and o["StatusDescription"] == "Filled"
    assert o["FilledPrice"] == "415.22" and o["Legs"][0]["ExecQuantity"] == "10"
    assert o["Legs"][0]["BuyOrSell"] == "Buy" and o["Legs"][0]["OpenOrClose"] == "Open"
    assert "OrderConfirmID" not in o  # the vendor does not echo it
    _, bal = await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/balances", token)
    assert Decimal(bal["Balances"][0]["CashBalance"]) == Decimal(50_000) - Decimal("4152.2")


async def test_duplicate_order_confirm_id(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    first = await place(session, emu, token, order(OrderConfirmID="Abc123"))
    second = await place(session, emu, token, order(OrderConfirmID="Abc123"))
    (err,) = second["Errors"]
    assert err["Error"] == "FAILED" and "Duplicate OrderConfirmID" in err["Message"]
    assert err["Message"].startswith("Order failed. Reason: ")
    assert err["OrderID"] == first["Orders"][0]["OrderID"]
    assert len(emu.orders_for(MARGIN)) == 1
    grant = await sign_in(session, emu, user_id="alice")
    other = await place(
        session, emu, grant["access_token"], order("11900001", OrderConfirmID="Abc123")
    )
    assert "Orders" in other  # unique per API key and per user


async def test_futures_only_in_the_futures_account(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    for sym in ("ESZ25", "@ES", "MESH6"):
        answer = await place(session, emu, token, order(MARGIN, sym))
        (err,) = answer["Errors"]
        assert err["Message"] == (
            "Order failed. Reason: Futures orders are not supported for account type Margin."
        )
    answer = await place(session, emu, token, order(FUTURES, "AAPL"))
    assert "Equity orders are not supported" in answer["Errors"][0]["Message"]
    answer = await place(session, emu, token, order(FUTURES, "ESZ25", TradeAction="SELLSHORT"))
    assert "not valid for futures" in answer["Errors"][0]["Message"]
    answer = await place(session, emu, token, order(FUTURES, "ESZ25", TradeAction="SELL"))
    assert "Orders" in answer
    _, pos = await call(session, emu, "GET", f"/v3/brokerage/accounts/{FUTURES}/positions", token)
    (p,) = pos["Positions"]
    assert p["AssetType"] == "FUTURE" and p["Quantity"] == "-1" and p["LongShort"] == "Short"
    assert emu.orders_for(MARGIN) == []


async def test_equity_trade_actions_are_checked(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    cases = [
        (order(MARGIN, "AAPL", "11", TradeAction="SELL"), "exceeds the long position"),
        (order(MARGIN, "AAPL", "1", TradeAction="SELLSHORT"), "Close the long position"),
        (order(MARGIN, "MSFT", "1", TradeAction="BUYTOCOVER"), "exceeds the short position"),
        (order(CASH, "MSFT", "1", TradeAction="SELLSHORT"), "not allowed in a Cash account"),
        (order(MARGIN, "ZZZZ"), "Invalid symbol ZZZZ"),
        (order("99999999"), "Invalid AccountID"),
    ]
    for body, text in cases:
        answer = await place(session, emu, token, body)
        assert text in answer["Errors"][0]["Message"]
        assert "OrderID" not in answer["Errors"][0]
    assert emu.orders_for(MARGIN) == emu.orders_for(CASH) == []


async def test_buying_power_and_closed_market_leave_rejected_orders(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    answer = await place(session, emu, token, order(CASH, "SPY", "100"))
    (err,) = answer["Errors"]
    assert "Insufficient buying power" in err["Message"] and err["OrderID"]
    rejected = emu.order(err["OrderID"]).payload()
    assert rejected["Status"] == "REJ" and "buying power" in rejected["RejectReason"]
    # open orders hold buying power
    await place(session, emu, token, order(CASH, "SPY", "40", OrderType="Limit", LimitPrice="500"))
    answer = await place(
        session, emu, token, order(CASH, "SPY", "11", OrderType="Limit", LimitPrice="500")
    )
    assert "Insufficient buying power" in answer["Errors"][0]["Message"]
    emu.market_open = False
    answer = await place(session, emu, token, order(MARGIN, "MSFT"))
    assert "Market is closed" in answer["Errors"][0]["Message"]
    assert "Orders" in await place(
        session, emu, token, order(MARGIN, "MSFT", OrderType="Limit", LimitPrice="400")
    )


async def test_resting_orders_follow_quotes(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    limit = (await place(session, emu, token, order(qty="5", OrderType="Limit", LimitPrice="410")))[
        "Orders"
    ][0]["OrderID"]
    stop = (
        await place(
            session,
            emu,
            token,
            order(
                MARGIN, "AAPL", "10", TradeAction="SELL", OrderType="StopMarket", StopPrice="220"
            ),
        )
    )["Orders"][0]["OrderID"]
    ioc = await place(
        session,
        emu,
        token,
        order(qty="1", OrderType="Limit", LimitPrice="1", TimeInForce={"Duration": "IOC"}),
    )
    assert emu.order(ioc["Orders"][0]["OrderID"]).status == "OUT"
    assert emu.order(limit).status == "OPN" and emu.order(stop).status == "OPN"
    emu.set_quote("MSFT", "409.95", "409.99")
    assert emu.order(limit).status == "FLL" and emu.order(limit).average_fill == Decimal("409.99")
    emu.set_quote("AAPL", "221", "221.04", "221.02")
    assert emu.order(stop).status == "OPN"
    emu.set_quote("AAPL", "219.50", "219.60", "219.55")
    assert emu.order(stop).status == "FLL"
    assert emu.order(stop).average_fill == Decimal("219.50")


async def test_partial_fills_and_cancel(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.auto_fill = False
    oid = (await place(session, emu, token, order(qty="10")))["Orders"][0]["OrderID"]
    emu.fill(oid, 4, "415")
    payload = emu.order(oid).payload()
    assert payload["Status"] == "FPR" and payload["Legs"][0]["QuantityRemaining"] == "6"
    status, body = await call(session, emu, "DELETE", f"/v3/orderexecution/orders/{oid}", token)
    assert status == 200 and body == {"OrderID": oid, "Message": "Cancel request sent"}
    assert emu.order(oid).status == "CAN" and emu.order(oid).filled == 4
    status, body = await call(session, emu, "DELETE", f"/v3/orderexecution/orders/{oid}", token)
    assert status == 400 and "cannot be canceled" in body["Message"]
    status, body = await call(session, emu, "DELETE", "/v3/orderexecution/orders/1", token)
    assert status == 404 and body["Error"] == "NotFound"
    status, _ = await call(session, emu, "DELETE", f"/v3/orderexecution/orders/{oid}", token, "sim")
    assert status == 404  # a LIVE order is not on the SIM host


async def test_a_cancel_is_sent_first_and_lands_later(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.auto_fill, emu.cancel_delay = False, 0.2
    oid = (await place(session, emu, token, order(qty="10")))["Orders"][0]["OrderID"]
    status, body = await call(session, emu, "DELETE", f"/v3/orderexecution/orders/{oid}", token)
    assert status == 200 and body == {"OrderID": oid, "Message": "Cancel request sent"}
    assert emu.order(oid).payload()["Status"] == "UCN"
    assert emu.order(oid).payload()["StatusDescription"] == "Cancel Sent"
    await asyncio.sleep(0.3)
    assert emu.order(oid).status == "CAN"


async def test_oso_bracket_children_wait_for_the_entry(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    exits = [
        order(
            qty="3",
            OrderType="Limit",
            LimitPrice="450",
            TradeAction="SELL",
            TimeInForce={"Duration": "GTC"},
        ),
        order(
            qty="3",
            OrderType="StopMarket",
            StopPrice="400",
            TradeAction="SELL",
            TimeInForce={"Duration": "GTC"},
        ),
    ]
    answer = await place(
        session,
        emu,
        token,
        order(
            qty="3", OrderType="Limit", LimitPrice="410", OSOs=[{"Type": "BRK", "Orders": exits}]
        ),
    )
    parent, tp, sl = (o["OrderID"] for o in answer["Orders"])
    assert [emu.order(i).status for i in (parent, tp, sl)] == ["OPN", "DON", "DON"]
    p = emu.order(parent).payload()
    assert p["ConditionalOrders"] == [
        {"Relationship": "OSO", "OrderID": tp},
        {"Relationship": "OSO", "OrderID": sl},
    ]
    assert emu.order(tp).payload()["ConditionalOrders"] == [{"Relationship": "BRK", "OrderID": sl}]
    emu.set_quote("MSFT", "409.90", "409.95")
    assert [emu.order(i).status for i in (parent, tp, sl)] == ["FLL", "OPN", "OPN"]
    emu.set_quote("MSFT", "399", "399.10", "399")
    assert [emu.order(i).status for i in (parent, tp, sl)] == ["FLL", "CAN", "FLL"]
    # cancelling an entry cancels its queued exits
    answer = await place(
        session,
        emu,
        token,
        order(
            qty="1", OrderType="Limit", LimitPrice="300", OSOs=[{"Type": "BRK", "Orders": exits}]
        ),
    )
    parent, tp, sl = (o["OrderID"] for o in answer["Orders"])
    await call(session, emu, "DELETE", f"/v3/orderexecution/orders/{parent}", token)
    assert [emu.order(i).status for i in (parent, tp, sl)] == ["CAN", "CAN", "CAN"]


def trailing(qty: str, action: str, trail: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """A trailing stop as the vendor's examples send it: StopMarket, no StopPrice."""
    return order(
        MARGIN,
        "AAPL",
        qty,
        OrderType="StopMarket",
        TradeAction=action,
        TimeInForce={"Duration": "GTC"},
        AdvancedOptions={"TrailingStop": trail},
        **kw,
    )


async def test_a_trailing_stop_follows_the_high_and_sells_at_market_when_reached(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.set_quote("AAPL", "199.98", "200.02", "200")
    # The vendor ignores a StopPrice sent with a trailing stop.
    answer = await place(
        session, emu, token, trailing("10", "SELL", {"Percent": "5"}, StopPrice="1")
    )
    oid = answer["Orders"][0]["OrderID"]
    assert answer["Orders"][0]["Message"] == "Sent order: Sell 10 AAPL @ 190 Stop Market"

    async def shown() -> dict[str, Any]:
        _, body = await call(
            session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/orders/{oid}", token
        )
        return dict(body["Orders"][0])

    o = await shown()
    assert (o["OrderType"], o["TrailingStop"], o["StopPrice"]) == (
        "StopMarket",
        {"Percent": "5"},
        "190",
    )
    emu.set_quote("AAPL", "219.98", "220.02", "220")  # up: the stop follows the high
    assert (await shown())["StopPrice"] == "209"
    emu.set_quote("AAPL", "214.98", "215.02", "215")  # down, not far enough: it stays
    o = await shown()
    assert (o["Status"], o["StopPrice"]) == ("OPN", "209")
    emu.set_quote("AAPL", "208.96", "209.04", "209")  # reached: a market sell at the bid
    o = await shown()
    assert (o["Status"], o["FilledPrice"], o["StopPrice"]) == ("FLL", "208.96", "209")
    assert o["TrailingStop"] == {"Percent": "5"}
    _, pos = await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/positions", token)
    assert pos["Positions"] == []


async def test_a_trailing_buy_follows_the_low_by_an_amount(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.auto_fill = False  # the stop still trails; only the fill waits
    emu.set_quote("AAPL", "199.98", "200.02", "200")
    emu.set_position(MARGIN, "AAPL", 0, 0)
    oid = (await place(session, emu, token, trailing("2", "BUY", {"Amount": "2.50"})))["Orders"][0][
        "OrderID"
    ]
    assert emu.order(oid).payload()["StopPrice"] == "202.5"
    emu.set_quote("AAPL", "189.98", "190.02", "190")
    emu.set_quote("AAPL", "194.98", "195.02", "195")
    payload = emu.order(oid).payload()
    assert (payload["StopPrice"], payload["TrailingStop"]) == ("192.5", {"Amount": "2.5"})
    emu.auto_fill = True
    emu.set_quote("AAPL", "192.48", "192.52", "192.5")
    assert emu.order(oid).status == "FLL" and emu.order(oid).average_fill == Decimal("192.52")


async def test_trailing_stop_options_are_checked(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    async def refused(body: dict[str, Any]) -> str:
        status, answer = await call(
            session, emu, "POST", "/v3/orderexecution/orders", token, json=body
        )
        assert status == 400 and answer["Error"] == "BadRequest", answer
        return str(answer["Message"])

    both = trailing("1", "SELL", {"Amount": "1", "Percent": "5"})
    assert "mutually exclusive" in await refused(both)
    assert "Amount or a Percent" in await refused(trailing("1", "SELL", {}))
    assert "greater than zero" in await refused(trailing("1", "SELL", {"Amount": "0"}))
    assert "less than 100" in await refused(trailing("1", "SELL", {"Percent": "100"}))
    limit = {**trailing("1", "SELL", {"Percent": "5"}), "OrderType": "Limit", "LimitPrice": "250"}
    assert "StopMarket orders only" in await refused(limit)
    # The spec makes Amount and Percent strings.
    assert "string" in await refused(trailing("1", "SELL", {"Percent": 5}))
    assert emu.orders_for(MARGIN) == []


async def test_an_oso_trailing_exit_trails_from_the_entry_fill(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    """The vendor's "Limit Entry with Amount Trail Stop": the exit's best price starts when
    it starts working, not when it was sent."""
    exit_ = order(
        OrderType="StopMarket",
        TradeAction="SELL",
        TimeInForce={"Duration": "GTC"},
        AdvancedOptions={"TrailingStop": {"Amount": "10"}},
    )
    answer = await place(
        session,
        emu,
        token,
        order(OrderType="Limit", LimitPrice="330", OSOs=[{"Type": "NORMAL", "Orders": [exit_]}]),
    )
    entry, stop = (o["OrderID"] for o in answer["Orders"])
    assert answer["Orders"][1]["Message"] == "Sent order: Sell 1 MSFT @ Stop Market"
    assert "StopPrice" not in emu.order(stop).payload()  # queued: not trailing yet
    emu.set_quote("MSFT", "329.90", "330.00", "329.95")
    assert (emu.order(entry).status, emu.order(stop).status) == ("FLL", "OPN")
    assert emu.order(stop).payload()["StopPrice"] == "319.95"
    emu.set_quote("MSFT", "339.90", "340.00", "339.95")
    emu.set_quote("MSFT", "329.90", "330.00", "329.95")
    assert emu.order(stop).status == "FLL" and emu.order(stop).average_fill == Decimal("329.90")


async def test_a_brk_trailing_stop_loss_trails_and_cancels_the_take_profit_when_it_fills(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    """A bracket whose stop-loss is the vendor's trailing StopMarket (no StopPrice): queued
    until the entry fills, then trailing the high; its fill cancels the take-profit."""
    exits = [
        order(
            qty="2",
            OrderType="Limit",
            LimitPrice="360",
            TradeAction="SELL",
            TimeInForce={"Duration": "GTC"},
        ),
        order(
            qty="2",
            OrderType="StopMarket",
            TradeAction="SELL",
            TimeInForce={"Duration": "GTC"},
            AdvancedOptions={"TrailingStop": {"Percent": "5"}},
        ),
    ]
    emu.set_quote("MSFT", "339.98", "340.02", "340")
    answer = await place(
        session,
        emu,
        token,
        order(
            qty="2", OrderType="Limit", LimitPrice="330", OSOs=[{"Type": "BRK", "Orders": exits}]
        ),
    )
    entry, tp, sl = (o["OrderID"] for o in answer["Orders"])
    assert answer["Orders"][2]["Message"] == "Sent order: Sell 2 MSFT @ Stop Market"
    queued = emu.order(sl).payload()
    assert (queued["Status"], queued["TrailingStop"]) == ("DON", {"Percent": "5"})
    assert "StopPrice" not in queued
    assert queued["ConditionalOrders"] == [{"Relationship": "BRK", "OrderID": tp}]
    emu.set_quote("MSFT", "329.96", "330.00", "329.98")
    assert [emu.order(i).status for i in (entry, tp, sl)] == ["FLL", "OPN", "OPN"]
    assert emu.order(sl).payload()["StopPrice"] == "313.48"  # 5% under 329.98
    emu.set_quote("MSFT", "349.98", "350.02", "350")  # up: the stop follows
    assert emu.order(sl).payload()["StopPrice"] == "332.5"
    emu.set_quote("MSFT", "339.98", "340.02", "340")  # down, above the stop: it stays
    assert (emu.order(sl).status, emu.order(sl).payload()["StopPrice"]) == ("OPN", "332.5")
    emu.set_quote("MSFT", "331.98", "332.02", "332")
    assert [emu.order(i).status for i in (entry, tp, sl)] == ["FLL", "CAN", "FLL"]
    assert emu.order(sl).average_fill == Decimal("331.98")
    _, pos = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/positions",
        token,
        params={"symbol": "MSFT"},
    )
    assert pos["Positions"] == []


async def test_an_oso_trailing_exit_is_checked_and_a_bad_one_places_nothing(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    take_profit = order(
        OrderType="Limit", LimitPrice="450", TradeAction="SELL", TimeInForce={"Duration": "GTC"}
    )
    bad_legs = [
        ({"Percent": "100"}, "StopMarket", "less than 100"),
        ({"Amount": "1", "Percent": "5"}, "StopMarket", "mutually exclusive"),
        ({"Amount": "0"}, "StopMarket", "greater than zero"),
        ({"Amount": "1"}, "Limit", "StopMarket orders only"),
    ]
    for trail, kind, message in bad_legs:
        stop = order(
            OrderType=kind,
            TradeAction="SELL",
            TimeInForce={"Duration": "GTC"},
            AdvancedOptions={"TrailingStop": trail},
            **({"LimitPrice": "390"} if kind == "Limit" else {}),
        )
        body = order(
            OrderType="Limit",
            LimitPrice="400",
            OrderConfirmID="brk1",
            OSOs=[{"Type": "BRK", "Orders": [take_profit, stop]}],
        )
        status, answer = await call(
            session, emu, "POST", "/v3/orderexecution/orders", token, json=body
        )
        assert status == 400 and answer["Error"] == "BadRequest", answer
        assert message in answer["Message"]
        # Neither the entry nor the take-profit entered before the bad leg is left working.
        assert emu.orders_for(MARGIN) == []
    # Nor does the refused request hold its OrderConfirmID.
    assert "Orders" in await place(session, emu, token, order(OrderConfirmID="brk1"))


async def test_ordergroups_oco(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    status, answer = await call(
        session,
        emu,
        "POST",
        "/v3/orderexecution/ordergroups",
        token,
        json={
            "Type": "OCO",
            "Orders": [
                order(qty="1", OrderType="StopMarket", StopPrice="420"),
                order(qty="1", OrderType="Limit", LimitPrice="410"),
            ],
        },
    )
    assert status == 200
    stop, limit = (o["OrderID"] for o in answer["Orders"])
    assert emu.order(stop).group_name == emu.order(limit).group_name
    emu.set_quote("MSFT", "409", "409.5")
    assert (emu.order(limit).status, emu.order(stop).status) == ("FLL", "CAN")


# -- history and pagination --------------------------------------------------------------


async def test_orders_today_and_history(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str, clock: Clock
) -> None:
    clock.advance(-2 * 86400)
    old = (await place(session, emu, token, order()))["Orders"][0]["OrderID"]
    clock.advance(2 * 86400)
    grant = await sign_in(session, emu)
    token = grant["access_token"]
    new = (await place(session, emu, token, order()))["Orders"][0]["OrderID"]
    _, today = await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/orders", token)
    assert [o["OrderID"] for o in today["Orders"]] == [new]
    since = time.strftime("%Y-%m-%d", time.gmtime(clock.now - 5 * 86400))
    _, hist = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/historicalorders",
        token,
        params={"since": since},
    )
    assert [o["OrderID"] for o in hist["Orders"]] == [old]
    _, by_id = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/historicalorders/{old},{new}",
        token,
        params={"since": since},
    )
    assert [o["OrderID"] for o in by_id["Orders"]] == [old]
    assert by_id["Errors"][0]["OrderID"] == new and by_id["Errors"][0]["Error"] == "NotFound"
    too_old = time.strftime("%Y-%m-%d", time.gmtime(clock.now - 92 * 86400))
    status, body = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/historicalorders",
        token,
        params={"since": too_old},
    )
    assert status == 400 and "90 days" in body["Message"]


async def test_pagination_with_next_token(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    ids = [(await place(session, emu, token, order()))["Orders"][0]["OrderID"] for _ in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"pageSize": 2}
    while True:
        _, page = await call(
            session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/orders", token, params=params
        )
        seen += [o["OrderID"] for o in page["Orders"]]
        if "NextToken" not in page:
            break
        params = {"pageSize": 2, "nextToken": page["NextToken"]}
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    status, _ = await call(
        session,
        emu,
        "GET",
        f"/v3/brokerage/accounts/{MARGIN}/orders",
        token,
        params={"nextToken": "garbage"},
    )
    assert status == 400


# -- the order stream --------------------------------------------------------------------


async def read_stream(resp: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        line = await resp.content.readline()
        if not line:
            break
        if line.strip():
            out.append(json.loads(line))
    return out


async def test_order_stream_framing(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    done = (await place(session, emu, token, order()))["Orders"][0]["OrderID"]
    emu.heartbeat_interval = 0.02
    url = emu.api_url("live") + f"/v3/brokerage/stream/accounts/{MARGIN},{CRYPTO},BAD1/orders"
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200 and r.headers["Content-Type"] == STREAM_CONTENT_TYPE
        assert r.headers.get("Transfer-Encoding") == "chunked"
        error, snapshot, end, beat = await read_stream(r, 4)
        assert error == {
            "AccountID": "BAD1",
            "Error": "Forbidden",
            "Message": "Invalid Account ID.",
        }
        assert snapshot["OrderID"] == done and snapshot["Status"] == "FLL"
        assert end == {"StreamStatus": "EndSnapshot"}
        assert beat["Heartbeat"] == 1 and beat["Timestamp"].endswith("Z")
        emu.heartbeat_interval = 3600
        await asyncio.sleep(0.05)
        new = (await place(session, emu, token, order(qty="2", OrderType="Limit", LimitPrice="1")))[
            "Orders"
        ][0]["OrderID"]
        item = (await read_stream(r, 1))[0]
        while "OrderID" not in item:  # heartbeats sent before the interval changed
            item = (await read_stream(r, 1))[0]
        assert item["OrderID"] == new and item["Status"] == "OPN"
        emu.go_away()
        rest = await read_stream(r, 10)
        assert rest[-1] == {"StreamStatus": "GoAway"}
    assert emu.open_streams == 0


async def test_order_stream_needs_auth(
    emu: TradeStationEmulator, session: aiohttp.ClientSession
) -> None:
    url = emu.api_url("sim") + "/v3/brokerage/stream/accounts/SIM1182734M/orders"
    async with session.get(url) as r:
        assert r.status == 401


# -- replace (PUT /v3/orderexecution/orders/{orderID}) ------------------------------------


async def put(
    session: aiohttp.ClientSession,
    emu: TradeStationEmulator,
    token: str,
    order_id: str,
    body: Any,
    env: str = "live",
) -> tuple[int, Any]:
    return await call(
        session, emu, "PUT", f"/v3/orderexecution/orders/{order_id}", token, env, json=body
    )


async def test_replace_changes_the_order_in_place(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    oid = (await place(session, emu, token, order(qty="5", OrderType="Limit", LimitPrice="400")))[
        "Orders"
    ][0]["OrderID"]
    heard: list[dict[str, Any]] = []
    emu.world.listeners.append(lambda o: heard.append(o.payload()))
    status, body = await put(session, emu, token, oid, {"Quantity": "7", "LimitPrice": "401.50"})
    assert status == 200 and body == {"OrderID": oid, "Message": "Cancel/Replace order sent."}
    payload = emu.order(oid).payload()
    assert (payload["OrderID"], payload["Status"], payload["LimitPrice"]) == (oid, "OPN", "401.5")
    assert payload["Legs"][0]["QuantityOrdered"] == "7"
    assert [o.id for o in emu.orders_for(MARGIN)] == [oid]  # no second order
    assert heard[-1]["LimitPrice"] == "401.5"  # the order stream hears the change
    # A limit moved through the market fills at once, as a new marketable limit does.
    status, _ = await put(session, emu, token, oid, {"LimitPrice": "420"})
    assert status == 200
    assert emu.order(oid).status == "FLL" and emu.order(oid).average_fill == Decimal("415.22")
    # A stop moves; the vendor's "Convert to Market" example fills it.
    stop = (
        await place(session, emu, token, order(qty="2", OrderType="StopMarket", StopPrice="450"))
    )["Orders"][0]["OrderID"]
    assert (await put(session, emu, token, stop, {"StopPrice": "440"}))[0] == 200
    assert emu.order(stop).stop_price == Decimal(440) and emu.order(stop).status == "OPN"
    assert (await put(session, emu, token, stop, {"OrderType": "Market"}))[0] == 200
    assert emu.order(stop).status == "FLL" and emu.order(stop).stop_price is None
    assert emu.spec_violations == []


async def test_replace_keeps_the_filled_part_and_retrails_a_trailing_stop(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.auto_fill = False
    oid = (await place(session, emu, token, order(qty="10", OrderType="Limit", LimitPrice="400")))[
        "Orders"
    ][0]["OrderID"]
    emu.fill(oid, 4, "400")
    status, body = await put(session, emu, token, oid, {"Quantity": "4"})
    assert status == 400 and "4 filled" in body["Message"]
    assert (await put(session, emu, token, oid, {"Quantity": "6"}))[0] == 200
    assert emu.order(oid).payload()["Legs"][0]["QuantityRemaining"] == "2"
    assert emu.order(oid).status == "FPR"
    trailing = order(
        MARGIN,
        "AAPL",
        "10",
        TradeAction="SELL",
        OrderType="StopMarket",
        AdvancedOptions={"TrailingStop": {"Amount": "5"}},
    )
    tid = (await place(session, emu, token, trailing))["Orders"][0]["OrderID"]
    assert emu.order(tid).stop_price == Decimal("223.50")
    body = {"Quantity": "10", "AdvancedOptions": {"TrailingStop": {"Percent": "1"}}}
    assert (await put(session, emu, token, tid, body))[0] == 200
    assert emu.order(tid).payload()["TrailingStop"] == {"Percent": "1"}
    assert emu.order(tid).stop_price == Decimal("226.22")  # 1% under the 228.50 high


async def test_replace_refuses_ended_and_unknown_orders(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    filled = (await place(session, emu, token, order()))["Orders"][0]["OrderID"]
    status, body = await put(session, emu, token, filled, {"Quantity": "2"})
    assert status == 400 and body["Error"] == "BadRequest"
    assert body["Message"] == f"Order {filled} cannot be replaced: its status is Filled."
    resting = (await place(session, emu, token, order(OrderType="Limit", LimitPrice="1")))[
        "Orders"
    ][0]["OrderID"]
    status, _ = await put(session, emu, token, resting, {"LimitPrice": "2"}, "sim")
    assert status == 404  # a LIVE order is not on the SIM host
    status, body = await put(session, emu, token, "1", {"LimitPrice": "2"})
    assert status == 404 and body["Error"] == "NotFound"
    emu.cancel_delay = 60.0
    await call(session, emu, "DELETE", f"/v3/orderexecution/orders/{resting}", token)
    status, body = await put(session, emu, token, resting, {"LimitPrice": "2"})
    assert status == 400 and "Cancel Sent" in body["Message"]
    emu.world.finish_cancel(emu.order(resting))
    status, body = await put(session, emu, token, resting, {"LimitPrice": "2"})
    assert status == 400 and "Canceled" in body["Message"]
    assert emu.order(resting).limit_price == Decimal(1)


async def test_replace_bodies_are_checked(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    oid = (await place(session, emu, token, order(qty="5", OrderType="Limit", LimitPrice="400")))[
        "Orders"
    ][0]["OrderID"]
    # Against the spec: "at least one updated property", strings, and only "Market".
    for body in ({}, {"Quantity": 7}, {"OrderType": "Limit"}):
        status, answer = await put(session, emu, token, oid, body)
        assert status == 400 and answer["Error"] == "BadRequest", body
    assert len(emu.spec_violations) == 3
    # Conforming, but not for this order.
    for body in (
        {"StopPrice": "390"},
        {"Quantity": "2.5"},
        {"LimitPrice": "-1"},
        {"AdvancedOptions": {"TrailingStop": {"Amount": "1"}}},
    ):
        status, answer = await put(session, emu, token, oid, body)
        assert status == 400 and answer["Error"] == "BadRequest", body
    assert len(emu.spec_violations) == 3
    state = emu.order(oid)
    assert (state.quantity, state.limit_price, state.status) == (5, Decimal(400), "OPN")
    # More than the account can carry: refused in a 200, the order works on unchanged.
    status, answer = await put(session, emu, token, oid, {"Quantity": "5000"})
    assert status == 200 and answer["OrderID"] == oid and answer["Error"] == "FAILED"
    assert answer["Message"].startswith("Order failed. Reason: Insufficient buying power.")
    assert (state.quantity, state.status) == (5, "OPN")


async def test_faults_apply_to_replace(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    oid = (await place(session, emu, token, order(OrderType="Limit", LimitPrice="400")))["Orders"][
        0
    ]["OrderID"]
    # Every attempt: aiohttp itself sends a PUT again, once, on a dropped kept-alive connection.
    lost = emu.faults.add(Fault(kind="lose_response", method="PUT", path=r"/orders/[^/]+$"))
    with pytest.raises(aiohttp.ClientError):
        await put(session, emu, token, oid, {"LimitPrice": "401"})
    assert lost.hits >= 1
    assert emu.order(oid).limit_price == Decimal(401)  # it happened; the answer was lost


# -- extended hours: the "plus" durations ----------------------------------------------------


def limit(duration: str, price: str = "420", **kw: Any) -> dict[str, Any]:
    return order(OrderType="Limit", LimitPrice=price, TimeInForce={"Duration": duration}, **kw)


async def placed_id(
    session: aiohttp.ClientSession, emu: TradeStationEmulator, token: str, body: dict[str, Any]
) -> str:
    return str((await place(session, emu, token, body))["Orders"][0]["OrderID"])


async def test_plus_durations_fill_in_the_extended_sessions_and_others_wait(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.set_session("post")
    assert not emu.market_open
    ids = {d: await placed_id(session, emu, token, limit(d)) for d in ("DAY", "GTC", "DYP", "GCP")}
    payloads = {d: emu.order(i).payload() for d, i in ids.items()}
    assert {d: p["Status"] for d, p in payloads.items()} == {
        "DAY": "OPN",
        "GTC": "OPN",
        "DYP": "FLL",
        "GCP": "FLL",
    }
    assert (payloads["DYP"]["Duration"], payloads["DYP"]["FilledPrice"]) == ("DYP", "415.22")
    # A resting Day Plus limit follows the quotes in the post-market; a DAY one does not.
    day, plus = [await placed_id(session, emu, token, limit(d, "410")) for d in ("DAY", "DYP")]
    emu.set_quote("MSFT", "409.90", "410.00")
    assert (emu.order(day).status, emu.order(plus).status) == ("OPN", "FLL")
    # At night nothing trades; the pre-market is an extended session too.
    emu.set_session("closed")
    night = await placed_id(session, emu, token, limit("DYP"))
    assert emu.order(night).status == "OPN"
    emu.set_session("pre")
    assert emu.order(night).status == "FLL" and emu.order(ids["DAY"]).status == "OPN"
    # Regular hours: the waiting orders fill.
    emu.set_session("regular")
    assert {emu.order(i).status for i in (ids["DAY"], ids["GTC"], day)} == {"FLL"}
    with pytest.raises(ValueError, match="session must be one of"):
        emu.set_session("overnight")
    assert emu.spec_violations == []


async def test_plus_durations_take_limit_orders_only(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    for duration, kind in (
        ("DYP", {"OrderType": "Market"}),
        ("DYP", {"OrderType": "StopMarket", "StopPrice": "450"}),
        ("GCP", {"OrderType": "StopLimit", "StopPrice": "450", "LimitPrice": "451"}),
    ):
        answer = await place(session, emu, token, order(TimeInForce={"Duration": duration}, **kind))
        (err,) = answer["Errors"]
        assert err["Error"] == "FAILED" and "OrderID" not in err
        assert f"{duration} orders must be Limit orders" in err["Message"]
    assert emu.orders_for(MARGIN) == []
    # Nor may a change make one of a Day Plus limit; a new price keeps its duration.
    oid = await placed_id(session, emu, token, limit("DYP", "400"))
    status, answer = await put(session, emu, token, oid, {"OrderType": "Market"})
    assert status == 200 and answer["Error"] == "FAILED"
    assert "DYP orders must be Limit orders" in answer["Message"]
    assert (emu.order(oid).order_type, emu.order(oid).status) == ("Limit", "OPN")
    assert (await put(session, emu, token, oid, {"LimitPrice": "401"}))[0] == 200
    assert emu.order(oid).payload()["Duration"] == "DYP"
    assert emu.spec_violations == []


async def test_day_plus_outlives_the_regular_close(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    day, plus = [await placed_id(session, emu, token, limit(d, "400")) for d in ("DAY", "DYP")]
    assert [o.id for o in emu.expire_day_orders(regular_close=True)] == [day]
    emu.set_session("post")
    assert emu.order(plus).status == "OPN"
    assert [o.id for o in emu.expire_day_orders()] == [plus]  # the post-market ended
    assert emu.order(plus).payload()["Status"] == "EXP"


# -- auction orders: OPG and CLO -------------------------------------------------------------


def auction(duration: str, price: str | None = None, **kw: Any) -> dict[str, Any]:
    """A market (or, with ``price``, limit) order for the opening or closing auction."""
    kind = {"OrderType": "Limit", "LimitPrice": price} if price is not None else {}
    return order(TimeInForce={"Duration": duration}, **kind, **kw)


async def test_opg_orders_fill_in_the_opening_auction_at_its_price_or_end_unfilled(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.set_session("closed")  # a market-on-open order is placed while the market is shut
    market = await placed_id(session, emu, token, auction("OPG", qty="3"))
    reached = await placed_id(session, emu, token, auction("OPG", "421", qty="2"))
    missed = await placed_id(session, emu, token, auction("OPG", "419", qty="2"))
    day = await placed_id(session, emu, token, limit("DAY", "421"))
    emu.set_session("pre")
    emu.set_quote("MSFT", "419.90", "420.30", "420.10")  # the pre-market trades: they wait
    assert {emu.order(i).status for i in (market, reached, missed)} == {"OPN"}
    emu.set_session("regular")
    # One price for all: the opening's, not the touch nor the limit.
    assert [(emu.order(i).status, emu.order(i).average_fill) for i in (market, reached)] == [
        ("FLL", Decimal("420.10")),
        ("FLL", Decimal("420.10")),
    ]
    gone = emu.order(missed).payload()
    assert (gone["Status"], gone["StatusDescription"], gone["Duration"]) == (
        "OUT",
        "UROut",
        "OPG",
    )
    assert gone["Legs"][0]["ExecQuantity"] == "0" and "ClosedDateTime" in gone
    assert emu.order(day).average_fill == Decimal("420.30")  # then the session trades
    # After the open an OPG order is never worked in the session.
    emu.set_quote("MSFT", "418", "418.10")
    assert emu.order(missed).status == "OUT"
    _, listed = await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/orders", token)
    assert {o["OrderID"]: o["Duration"] for o in listed["Orders"]}[market] == "OPG"
    assert emu.spec_violations == []


async def test_clo_orders_wait_through_the_session_and_trade_at_the_close(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    sell = {"TradeAction": "SELL", "Symbol": "AAPL"}
    market = await placed_id(session, emu, token, auction("CLO", qty="4", **sell))
    missed = await placed_id(session, emu, token, auction("CLO", "240", qty="4", **sell))
    # Regular hours, marketable, and yet they wait for the closing auction.
    emu.set_quote("AAPL", "229", "229.10")
    assert (emu.order(market).status, emu.order(missed).status) == ("OPN", "OPN")
    emu.set_quote("AAPL", "230.90", "231.10", "231")
    emu.market_open = False  # the close
    assert (emu.order(market).status, emu.order(market).average_fill) == ("FLL", Decimal(231))
    assert emu.order(missed).status == "OUT"
    # Placed at night, a CLO order waits through the next open for that day's close.
    night = await placed_id(session, emu, token, auction("CLO", qty="1", **sell))
    emu.set_session("pre")
    emu.set_session("regular")
    assert emu.order(night).status == "OPN"
    emu.set_session("post")
    assert emu.order(night).status == "FLL"
    _, pos = await call(session, emu, "GET", f"/v3/brokerage/accounts/{MARGIN}/positions", token)
    assert pos["Positions"][0]["Quantity"] == "5"  # 10 held, 4 + 1 sold


async def test_auction_orders_are_refused_for_futures_other_types_and_too_late(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.set_session("pre")
    cases = [
        (auction("OPG", account=FUTURES, symbol="ESZ25"), "OPG orders are only valid for listed"),
        (auction("CLO", account=FUTURES, symbol="ESZ25"), "CLO orders are only valid for listed"),
        (auction("OPG", OrderType="StopMarket", StopPrice="450"), "must be Market or Limit"),
        (
            auction("CLO", OrderType="StopLimit", StopPrice="450", LimitPrice="451"),
            "CLO orders must be Market or Limit",
        ),
    ]
    for body, text in cases:
        (err,) = (await place(session, emu, token, body))["Errors"]
        assert err["Error"] == "FAILED" and text in err["Message"] and "OrderID" not in err
    # Once the day's auction has passed, until its sessions end.
    for session_now, duration, taken in (
        ("regular", "OPG", False),
        ("regular", "CLO", True),
        ("post", "OPG", False),
        ("post", "CLO", False),
        ("closed", "OPG", True),
        ("closed", "CLO", True),
    ):
        emu.set_session(session_now)
        answer = await place(session, emu, token, auction(duration, "400"))
        if taken:
            assert emu.order(answer["Orders"][0]["OrderID"]).status == "OPN"
        else:
            (err,) = answer["Errors"]
            assert (
                f"Too late for the {'opening' if duration == 'OPG' else 'close'}"
                in (err["Message"])
            )
    assert emu.orders_for(FUTURES) == []
    assert emu.spec_violations == []


async def test_auctions_run_on_demand_and_not_by_themselves_without_auto_fill(
    emu: TradeStationEmulator, session: aiohttp.ClientSession, token: str
) -> None:
    emu.set_session("pre")
    emu.auto_fill = False
    opg = await placed_id(session, emu, token, auction("OPG"))
    emu.set_session("regular")
    assert emu.order(opg).status == "OPN"
    clo = await placed_id(session, emu, token, auction("CLO"))
    assert [o.id for o in emu.run_opening_auction()] == [opg]
    assert (emu.order(opg).status, emu.order(clo).status) == ("FLL", "OPN")
    assert [o.id for o in emu.run_closing_auction()] == [clo]
    assert emu.order(clo).average_fill == Decimal("415.20")  # the last price
    assert emu.run_closing_auction() == []
    with pytest.raises(ValueError, match="auction duration"):
        emu.world.run_auction("DAY")
