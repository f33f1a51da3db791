"""The Alpaca emulator answers as Alpaca documents: hosts, Alpaca Connect OAuth (no expiry, no
refresh, ``env``), string numbers, 8-digit error bodies, rejections, market hours, brackets,
rate limits, spec validation, the data API and the ``trade_updates`` stream (binary on paper)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from emulators.alpaca import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT,
    AlpacaEmulator,
)
from emulators.common import Fault

OBSERVED = json.loads(
    (Path(__file__).parents[2] / "emulators/specs/alpaca/observed-error-payloads.json").read_text()
)["examples"]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def emu(clock: Clock) -> AsyncIterator[AlpacaEmulator]:
    emulator = AlpacaEmulator(clock=clock)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """Raw calls to one emulated host with one token."""

    def __init__(
        self, http: aiohttp.ClientSession, emu: AlpacaEmulator, token: str, env: str = "paper"
    ) -> None:
        self.http, self.emu, self.token, self.env = http, emu, token, env

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        url = self.emu.api_url(self.env) + path
        async with self.http.request(method, url, headers=auth(self.token), **kw) as r:
            raw = await r.read()
            return r.status, (json.loads(raw) if raw else None), r.headers

    async def order(self, **body: Any) -> tuple[int, Any]:
        body = {"side": "buy", "type": "market", "time_in_force": "day", **body}
        status, data, _ = await self.call("POST", "/v2/orders", json=body)
        return status, data


@pytest.fixture
def paper(http: aiohttp.ClientSession, emu: AlpacaEmulator) -> Api:
    return Api(http, emu, emu.issue_token("demo"), "paper")


def observed(case_start: str) -> dict[str, Any]:
    return next(e for e in OBSERVED if e["case"].startswith(case_start))


# -- OAuth -------------------------------------------------------------------------------------


async def authorize(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
    *,
    user: str = "demo",
    env: str | None = None,
    decision: str = "approve",
    scope: str = "trading data",
) -> dict[str, list[str]]:
    params = {
        "response_type": "code",
        "client_id": DEFAULT_CLIENT_ID,
        "redirect_uri": DEFAULT_REDIRECT,
        "state": "st4te",
        "scope": scope,
    }
    if env:
        params["env"] = env
    async with http.get(emu.authorize_url, params=params) as r:
        assert r.status == 200
        page = await r.text()
    assert 'id="approve"' in page and 'select id="user"' in page
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    form = {**hidden, "user_id": user, "decision": decision}
    async with http.post(emu.authorize_url, data=form, allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith(DEFAULT_REDIRECT + "?")
    return parse_qs(urlsplit(location).query)


async def exchange(
    http: aiohttp.ClientSession, emu: AlpacaEmulator, code: str, **overrides: str
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": DEFAULT_CLIENT_ID,
        "client_secret": DEFAULT_CLIENT_SECRET,
        "redirect_uri": DEFAULT_REDIRECT,
        **overrides,
    }
    form = {k: v for k, v in form.items() if v != ""}
    async with http.post(emu.token_url, data=form) as r:
        return r.status, await r.json()


async def test_code_exchange_gives_a_bearer_token_without_expiry_or_refresh(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
) -> None:
    query = await authorize(http, emu)
    assert query["state"] == ["st4te"]
    status, body = await exchange(http, emu, query["code"][0])
    assert status == 200
    assert set(body) == {"access_token", "token_type", "scope"}
    assert body["token_type"] == "bearer" and body["scope"] == "trading data"
    # No env: the grant reaches the live and the paper account.
    for env in ("live", "paper"):
        status, account, _ = await Api(http, emu, body["access_token"], env).call(
            "GET", "/v2/account"
        )
        assert status == 200
        assert account["account_number"] == emu.account("demo", env).account_number
    # Tokens never expire: far in the future they still work.
    emu.clock.now += 400 * 86400  # type: ignore[attr-defined]
    status, _, _ = await Api(http, emu, body["access_token"]).call("GET", "/v2/account")
    assert status == 200
    assert emu.spec_violations == []


async def test_env_paper_binds_only_the_paper_account(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
) -> None:
    query = await authorize(http, emu, env="paper")
    _, body = await exchange(http, emu, query["code"][0])
    status, _, _ = await Api(http, emu, body["access_token"], "paper").call("GET", "/v2/account")
    assert status == 200
    status, data, _ = await Api(http, emu, body["access_token"], "live").call("GET", "/v2/account")
    assert (status, data) == (401, {"message": "unauthorized."})


async def test_user_with_several_paper_accounts_picks_one(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
) -> None:
    second = emu.add_account("demo", "paper", cash=Decimal(5000))
    query = await authorize(http, emu, user=f"demo|{second.id}", env="paper")
    _, body = await exchange(http, emu, query["code"][0])
    _, account, _ = await Api(http, emu, body["access_token"]).call("GET", "/v2/account")
    assert account["account_number"] == second.account_number


async def test_code_is_single_use_and_bound_to_redirect_and_secret(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
) -> None:
    code = (await authorize(http, emu))["code"][0]
    status, body = await exchange(http, emu, code, client_secret="wrong")
    assert status == 401 and body["error"] == "invalid_client"
    status, body = await exchange(http, emu, code, redirect_uri="http://127.0.0.1:1/other")
    assert status == 400 and body["error"] == "invalid_grant"
    code = (await authorize(http, emu))["code"][0]
    assert (await exchange(http, emu, code))[0] == 200
    status, body = await exchange(http, emu, code)
    assert status == 400 and body["error"] == "invalid_grant"


async def test_refresh_grant_does_not_exist(
    http: aiohttp.ClientSession, emu: AlpacaEmulator
) -> None:
    code = (await authorize(http, emu))["code"][0]
    status, body = await exchange(http, emu, code, grant_type="refresh_token")
    assert status == 400 and body["error"] == "unsupported_grant_type"
    assert emu.oauth.refresh_requests == 0


async def test_token_request_missing_a_required_field_is_a_spec_violation(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
) -> None:
    code = (await authorize(http, emu))["code"][0]
    status, body = await exchange(http, emu, code, redirect_uri="")
    assert status == 400 and body["error"] == "invalid_request"
    assert len(emu.spec_violations) == 1 and "redirect_uri" in emu.spec_violations[0]


async def test_deny_and_bad_redirect(http: aiohttp.ClientSession, emu: AlpacaEmulator) -> None:
    query = await authorize(http, emu, decision="deny")
    assert query["error"] == ["access_denied"] and "code" not in query
    params = {
        "response_type": "code",
        "client_id": DEFAULT_CLIENT_ID,
        "redirect_uri": "https://evil.example/cb",
    }
    async with http.get(emu.authorize_url, params=params, allow_redirects=False) as r:
        assert r.status == 400 and "Location" not in r.headers
    params = {
        "response_type": "code",
        "client_id": DEFAULT_CLIENT_ID,
        "redirect_uri": DEFAULT_REDIRECT,
        "scope": "trading withdraw",
    }
    async with http.get(emu.authorize_url, params=params) as r:
        assert r.status == 400
    assert any("scope" in v for v in emu.spec_violations)


async def test_revoked_or_unknown_token_gets_alpacas_401(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
    paper: Api,
) -> None:
    emu.revoke_token(paper.token)
    status, body, _ = await paper.call("GET", "/v2/account")
    assert (status, body) == (401, observed("bad credentials")["body"])
    status, body, _ = await Api(http, emu, "nope").call("GET", "/v2/positions")
    assert (status, body) == (401, {"message": "unauthorized."})


async def test_trading_needs_the_trading_scope(
    http: aiohttp.ClientSession, emu: AlpacaEmulator
) -> None:
    api = Api(http, emu, emu.issue_token("demo", scope="data"))
    assert (await api.call("GET", "/v2/account"))[0] == 200  # reading needs no scope
    status, body = await api.order(symbol="AAPL", qty="1")
    assert status == 403 and body == {"message": "forbidden."}


# -- account, positions, clock ---------------------------------------------------------------------


async def test_account_numbers_are_strings_and_multiplier_classifies(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
) -> None:
    api = Api(http, emu, emu.issue_token("casey"), "live")
    status, body, headers = await api.call("GET", "/v2/account")
    assert status == 200
    assert body["multiplier"] == "1" and body["shorting_enabled"] is False
    assert body["cash"] == "1500" and body["buying_power"] == "1500"
    assert body["status"] == "ACTIVE" and body["crypto_status"] == "ACTIVE"
    assert headers["X-RateLimit-Limit"] == "200"
    status, body, _ = await Api(http, emu, api.token, "paper").call("GET", "/v2/account")
    assert body["multiplier"] == "4" and body["buying_power"] == "400000"
    assert emu.spec_violations == []


async def test_positions_name_crypto_without_the_slash(paper: Api, emu: AlpacaEmulator) -> None:
    status, order = await paper.order(symbol="BTC/USD", qty="0.5", time_in_force="gtc")
    assert status == 200 and order["symbol"] == "BTC/USD" and order["asset_class"] == "crypto"
    _, positions, _ = await paper.call("GET", "/v2/positions")
    crypto = next(p for p in positions if p["asset_class"] == "crypto")
    assert (crypto["symbol"], crypto["qty"], crypto["exchange"]) == ("BTCUSD", "0.5", "CRYPTO")
    status, one, _ = await paper.call("GET", "/v2/positions/AAPL")
    assert status == 200 and one["qty"] == "10" and one["avg_entry_price"] == "180.25"
    status, body, _ = await paper.call("GET", "/v2/positions/MSFT")
    assert (status, body["code"], body["message"]) == (404, 40410000, "position does not exist")
    assert emu.spec_violations == []


async def test_clock_reports_the_session(paper: Api, emu: AlpacaEmulator) -> None:
    _, body, _ = await paper.call("GET", "/v2/clock")
    assert body["is_open"] is True
    emu.close_market()
    _, body, _ = await paper.call("GET", "/v2/clock")
    assert body["is_open"] is False and body["next_open"].endswith(("-05:00", "-04:00"))


# -- orders ------------------------------------------------------------------------------------


async def test_market_order_is_accepted_then_fills_at_the_quote(
    paper: Api,
    emu: AlpacaEmulator,
) -> None:
    emu.set_quote("MSFT", Decimal("419.90"), Decimal("420.10"))
    status, order = await paper.order(symbol="MSFT", qty="3", client_order_id="c1")
    assert status == 200 and order["status"] == "pending_new" and order["filled_qty"] == "0"
    assert order["qty"] == "3" and order["notional"] is None and order["order_class"] == ""
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$", order["created_at"])
    _, got, _ = await paper.call("GET", f"/v2/orders/{order['id']}")
    assert got["status"] == "filled" and got["filled_avg_price"] == "420.1"
    _, account, _ = await paper.call("GET", "/v2/account")
    assert Decimal(account["cash"]) == Decimal(100000) - Decimal("1260.3")
    status, by_cid, _ = await paper.call(
        "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "c1"}
    )
    assert status == 200 and by_cid["id"] == order["id"]
    status, body, _ = await paper.call(
        "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "nope"}
    )
    assert (status, body) == (404, observed("order / position")["body"])
    assert emu.spec_violations == []


async def test_duplicate_client_order_id(paper: Api) -> None:
    assert (await paper.order(symbol="AAPL", qty="1", client_order_id="dup"))[0] == 200
    status, body = await paper.order(symbol="AAPL", qty="1", client_order_id="dup")
    assert (status, body) == (422, observed("duplicate client_order_id")["body"])


async def test_unknown_and_futures_symbols_are_not_found(paper: Api) -> None:
    for symbol in ("ZZZZNOTREAL", "ESZ5"):
        status, body = await paper.order(symbol=symbol, qty="1")
        assert status == 422
        assert body == {"code": 42210000, "message": f'asset "{symbol}" not found'}


async def test_buying_power_and_sell_side_rejections(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
    paper: Api,
) -> None:
    status, body = await paper.order(symbol="SPY", qty="1000")
    assert status == 403 and body["code"] == 40310000
    assert body["message"] == "insufficient buying power"
    # (100000 cash + 10 AAPL at 190 - 25% maintenance on them) x 4
    assert body["buying_power"] == "405700" and body["cost_basis"] == "590010"
    status, body = await paper.order(symbol="AAPL", qty="12", side="sell")
    assert status == 403 and body == {
        "available": "10",
        "code": 40310000,
        "symbol": "AAPL",
        "message": "insufficient qty available for order (requested: 12, available: 10)",
    }
    status, body = await paper.order(symbol="MSFT", qty="0.5", side="sell")
    assert (status, body) == (422, observed("SELL fractional qty")["body"])
    status, body = await paper.order(symbol="EIDO", qty="5", side="sell")
    assert (status, body) == (422, observed("short a non-shortable")["body"])
    cash = Api(http, emu, emu.issue_token("casey"), "live")
    status, body = await cash.order(symbol="F", qty="5", side="sell")
    assert (status, body) == (403, observed("account not allowed to short")["body"])
    status, body = await paper.order(symbol="BTC/USD", qty="1", side="sell", time_in_force="gtc")
    assert status == 403 and body["message"].startswith("insufficient balance for BTC")
    # Short selling a shortable stock in a margin account works.
    status, body = await paper.order(symbol="F", qty="5", side="sell")
    assert status == 200
    _, pos, _ = await paper.call("GET", "/v2/positions/F")
    assert pos["qty"] == "-5" and pos["side"] == "short"
    assert emu.spec_violations == []


async def test_wash_trade_detection(paper: Api, emu: AlpacaEmulator) -> None:
    emu.close_market()  # the buy waits, so it is working when the sell arrives
    status, buy = await paper.order(symbol="AAPL", qty="1")
    assert buy["status"] == "accepted"
    status, body = await paper.order(symbol="AAPL", qty="1", side="sell")
    assert status == 403
    expected = observed("SELL while an opposite-side")["body"]
    assert body == {**expected, "existing_order_id": buy["id"]}


async def test_pattern_day_trading_protection(
    http: aiohttp.ClientSession, emu: AlpacaEmulator
) -> None:
    small = emu.add_account("pdt", "paper", cash=Decimal(20000), multiplier="2")
    api = Api(http, emu, emu.issue_token("pdt", env="paper"))
    small.daytrade_count = 3
    assert (await api.order(symbol="F", qty="10"))[0] == 200
    status, body = await api.order(symbol="F", qty="10", side="sell")
    assert (status, body) == (403, observed("PDT protection")["body"])


async def test_crypto_rules(paper: Api) -> None:
    status, body = await paper.order(symbol="BTC/USD", qty="0.1", type="limit", limit_price="90000")
    assert (status, body) == (422, {"code": 42210000, "message": "invalid crypto time_in_force"})
    status, body = await paper.order(
        symbol="ETH/USD", qty="1", type="stop", stop_price="5000", time_in_force="gtc"
    )
    assert status == 422 and body["message"] == "invalid crypto order type"
    # The legacy symbol without a slash is accepted and answered with the slash.
    status, body = await paper.order(symbol="ETHUSD", qty="0.25", time_in_force="ioc")
    assert status == 200 and body["symbol"] == "ETH/USD"


async def test_fractional_equities(paper: Api) -> None:
    status, body = await paper.order(symbol="AAPL", qty="0.5", time_in_force="gtc")
    assert (status, body) == (
        422,
        {"code": 42210000, "message": "fractional orders must be DAY orders"},
    )
    status, body = await paper.order(symbol="BRK.A", qty="0.01")
    assert status == 422 and "not fractionable" in body["message"]
    status, body = await paper.order(symbol="AAPL", qty="0.5")
    assert status == 200 and body["qty"] == "0.5"


async def test_price_rules(paper: Api) -> None:
    status, body = await paper.order(symbol="AAPL", qty="1", type="limit", limit_price="189.123")
    assert status == 422 and "sub-penny increment" in body["message"]
    status, body = await paper.order(symbol="AAPL", qty="1", type="stop", stop_price="150")
    assert status == 422 and body["message"] == "stop price must be greater than current price"
    assert body["market_price"] == "190" and body["stop_price"] == "150"


async def test_market_closed_queues_equities_not_crypto(paper: Api, emu: AlpacaEmulator) -> None:
    emu.close_market()
    _, stock = await paper.order(symbol="NVDA", qty="2")
    _, coin = await paper.order(symbol="SOL/USD", qty="1", time_in_force="gtc")
    assert stock["status"] == "accepted"
    _, got, _ = await paper.call("GET", f"/v2/orders/{stock['id']}")
    assert got["status"] == "accepted"
    _, got, _ = await paper.call("GET", f"/v2/orders/{coin['id']}")
    assert got["status"] == "filled"
    emu.open_market()
    _, got, _ = await paper.call("GET", f"/v2/orders/{stock['id']}")
    assert got["status"] == "filled"


async def test_resting_orders_fill_when_quotes_move_and_day_orders_expire(
    paper: Api,
    emu: AlpacaEmulator,
) -> None:
    _, limit = await paper.order(symbol="TSLA", qty="2", type="limit", limit_price="240")
    _, stop = await paper.order(
        symbol="AAPL", qty="1", side="sell", type="stop", stop_price="185", time_in_force="gtc"
    )
    _, day = await paper.order(symbol="AMZN", qty="1", type="limit", limit_price="100")
    emu.set_quote("TSLA", Decimal("239.50"), Decimal("239.90"))
    emu.set_quote("AAPL", Decimal("184.50"), Decimal("184.60"), Decimal("184.55"))
    _, got, _ = await paper.call("GET", f"/v2/orders/{limit['id']}")
    assert got["status"] == "filled" and got["filled_avg_price"] == "239.9"
    _, got, _ = await paper.call("GET", f"/v2/orders/{stop['id']}")
    assert got["status"] == "filled" and got["filled_avg_price"] == "184.5"
    emu.close_market()
    _, got, _ = await paper.call("GET", f"/v2/orders/{day['id']}")
    assert got["status"] == "expired" and got["expired_at"]


async def test_partial_fill_on_demand(paper: Api, emu: AlpacaEmulator) -> None:
    _, order = await paper.order(symbol="QQQ", qty="10", type="limit", limit_price="470")
    emu.fill(order["id"], Decimal(4), Decimal("469.5"))
    _, got, _ = await paper.call("GET", f"/v2/orders/{order['id']}")
    assert got["status"] == "partially_filled" and got["filled_qty"] == "4"
    _, open_orders, _ = await paper.call("GET", "/v2/orders", params={"status": "open"})
    assert [o["id"] for o in open_orders] == [order["id"]]


async def test_bracket_legs_wait_then_one_cancels_the_other(
    paper: Api, emu: AlpacaEmulator
) -> None:
    status, body = await paper.order(
        symbol="MSFT",
        qty="2",
        order_class="bracket",
        take_profit={"limit_price": "419"},
        stop_loss={"stop_price": "400"},
    )
    assert status == 422
    assert body["message"] == "take_profit.limit_price must be >= base_price + 0.01"
    for leg, name in (
        ({"take_profit": {"limit_price": "440.005"}}, "take_profit.limit_price 440.005"),
        ({"stop_loss": {"stop_price": "400", "limit_price": "399.999"}}, "stop_loss.limit_price"),
    ):
        legs = {"take_profit": {"limit_price": "440"}, "stop_loss": {"stop_price": "400"}} | leg
        status, body = await paper.order(symbol="MSFT", qty="2", order_class="bracket", **legs)
        assert (status, body["code"]) == (422, 42210000)
        assert body["message"].startswith(f"invalid {name}"), body
        assert body["message"].endswith(
            ". sub-penny increment does not fulfill minimum pricing criteria"
        )
    status, parent = await paper.order(
        symbol="MSFT",
        qty="2",
        type="limit",
        limit_price="415",
        order_class="bracket",
        take_profit={"limit_price": "440"},
        stop_loss={"stop_price": "400", "limit_price": "399"},
    )
    assert status == 200 and parent["order_class"] == "bracket"
    assert [leg["status"] for leg in parent["legs"]] == ["held", "held"]
    assert [leg["type"] for leg in parent["legs"]] == ["limit", "stop_limit"]
    emu.set_quote("MSFT", Decimal("414.90"), Decimal("415.00"))
    _, legs, _ = await paper.call("GET", "/v2/orders", params={"status": "open"})
    assert sorted(leg["status"] for leg in legs) == ["new", "new"]
    emu.set_quote("MSFT", Decimal("440.00"), Decimal("440.10"))
    _, closed, _ = await paper.call(
        "GET", "/v2/orders", params={"status": "closed", "nested": "true"}
    )
    assert len(closed) == 1 and closed[0]["id"] == parent["id"]
    assert sorted(leg["status"] for leg in closed[0]["legs"]) == ["canceled", "filled"]
    _, positions, _ = await paper.call("GET", "/v2/positions")
    assert all(p["symbol"] != "MSFT" for p in positions)
    status, body = await paper.order(
        symbol="BTC/USD",
        qty="0.1",
        time_in_force="gtc",
        order_class="bracket",
        take_profit={"limit_price": "99000"},
        stop_loss={"stop_price": "90000"},
    )
    assert status == 422 and "crypto" in body["message"]
    assert emu.spec_violations == []


async def test_cancel(paper: Api, emu: AlpacaEmulator) -> None:
    _, order = await paper.order(symbol="AAPL", qty="1", type="limit", limit_price="100")
    status, body, _ = await paper.call("DELETE", f"/v2/orders/{order['id']}")
    assert (status, body) == (204, None)
    status, body, _ = await paper.call("DELETE", f"/v2/orders/{order['id']}")
    assert status == 422 and body == {
        "code": 42210000,
        "message": 'order is already in "canceled" state',
    }
    status, body, _ = await paper.call("DELETE", "/v2/orders/00000000-0000-4000-8000-000000000000")
    assert (status, body) == (404, {"code": 40410000, "message": "order not found"})
    assert emu.spec_violations == []


async def test_replace_makes_a_new_order_and_ends_the_old_one_replaced(
    paper: Api, emu: AlpacaEmulator
) -> None:
    _, old = await paper.order(
        symbol="AAPL", qty="5", type="limit", limit_price="100", client_order_id="mine-1"
    )
    emu.fill(old["id"], Decimal(2), Decimal(100))
    status, new, _ = await paper.call(
        "PATCH", f"/v2/orders/{old['id']}", json={"limit_price": "101"}
    )
    assert status == 200 and new["id"] != old["id"]
    # Every field not sent carries over, qty as first placed (Alpaca does not deduct fills).
    assert (new["qty"], new["limit_price"], new["time_in_force"]) == ("5", "101", "day")
    assert new["replaces"] == old["id"] and new["replaced_by"] is None
    assert new["client_order_id"] not in ("mine-1", "") and new["filled_qty"] == "0"
    _, gone, _ = await paper.call("GET", f"/v2/orders/{old['id']}")
    assert gone["status"] == "replaced" and gone["replaced_by"] == new["id"]
    assert gone["replaced_at"] and gone["filled_qty"] == "2"
    _, listed, _ = await paper.call("GET", "/v2/orders", params={"status": "open"})
    assert [o["id"] for o in listed] == [new["id"]]
    # Refusals: unchanged terms, an order that ended, an unknown id, a taken client order id.
    status, body, _ = await paper.call(
        "PATCH", f"/v2/orders/{new['id']}", json={"limit_price": "101"}
    )
    assert (status, body) == (
        422,
        {"code": 42210000, "message": "order parameters are not changed"},
    )
    status, body, _ = await paper.call("PATCH", f"/v2/orders/{old['id']}", json={"qty": "3"})
    assert (status, body) == (
        422,
        {"code": 42210000, "message": 'order is already in "replaced" state'},
    )
    status, body, _ = await paper.call(
        "PATCH", "/v2/orders/00000000-0000-4000-8000-000000000000", json={"qty": "3"}
    )
    assert (status, body) == (404, {"code": 40410000, "message": "order not found"})
    status, body, _ = await paper.call(
        "PATCH", f"/v2/orders/{new['id']}", json={"qty": "4", "client_order_id": "mine-1"}
    )
    assert (status, body) == (422, {"code": 40010001, "message": "client_order_id must be unique"})
    assert emu.spec_violations == []


async def test_replace_before_the_order_reaches_the_exchange_is_refused(
    paper: Api, emu: AlpacaEmulator
) -> None:
    emu.close_market()
    _, queued = await paper.order(symbol="AAPL", qty="1", type="limit", limit_price="100")
    assert queued["status"] == "accepted"
    status, body, _ = await paper.call(
        "PATCH", f"/v2/orders/{queued['id']}", json={"limit_price": "99"}
    )
    assert (status, body) == (
        422,
        {"code": 42210000, "message": "unable to replace order, order isn't sent to exchange yet"},
    )


async def test_replace_refuses_what_alpaca_documents_it_cannot_change(
    paper: Api, emu: AlpacaEmulator
) -> None:
    """Notional orders are not replaceable; share quantities change in whole shares and never
    a fractional order's; ``trail`` is only for trailing stops."""
    _, dollars = await paper.order(symbol="AAPL", notional="100", type="limit", limit_price="100")
    _, part = await paper.order(symbol="AAPL", qty="0.5", type="limit", limit_price="100")
    _, whole = await paper.order(symbol="AAPL", qty="2", type="limit", limit_price="100")
    for order, body, message in (
        (dollars, {"limit_price": "99"}, "notional orders cannot be replaced"),
        (part, {"qty": "1"}, "qty of a fractional order cannot be changed"),
        (whole, {"qty": "2.5"}, "qty must be a whole number of shares"),
        (whole, {"trail": "1"}, "trail is not allowed for limit order"),
    ):
        status, got, _ = await paper.call("PATCH", f"/v2/orders/{order['id']}", json=body)
        assert (status, got) == (422, {"code": 42210000, "message": message})
    status, new, _ = await paper.call(
        "PATCH", f"/v2/orders/{part['id']}", json={"limit_price": "99"}
    )
    assert status == 200 and (new["qty"], new["limit_price"]) == ("0.5", "99")
    assert emu.spec_violations == []


async def test_replacing_a_trailing_stop_keeps_trailing_from_its_mark(
    paper: Api, emu: AlpacaEmulator
) -> None:
    emu.set_quote("AAPL", Decimal("199.99"), Decimal("200.01"), Decimal("200"))
    _, stop = await paper.order(
        symbol="AAPL",
        qty="4",
        side="sell",
        type="trailing_stop",
        trail_price="10",
        time_in_force="gtc",
    )
    emu.set_quote("AAPL", Decimal("219.99"), Decimal("220.01"), Decimal("220"))
    status, new, _ = await paper.call("PATCH", f"/v2/orders/{stop['id']}", json={"trail": "5"})
    assert status == 200 and new["replaces"] == stop["id"]
    assert (new["trail_price"], new["hwm"], new["stop_price"]) == ("5", "220", "215")
    status, newer, _ = await paper.call("PATCH", f"/v2/orders/{new['id']}", json={"qty": "3"})
    assert status == 200 and (newer["qty"], newer["trail_price"]) == ("3", "5")
    emu.set_quote("AAPL", Decimal("214.99"), Decimal("215.01"), Decimal("215"))
    _, sold, _ = await paper.call("GET", f"/v2/orders/{newer['id']}")
    assert (sold["status"], sold["filled_qty"]) == ("filled", "3")
    assert emu.spec_violations == []


async def test_a_cancel_that_has_not_landed_still_holds_the_shares(
    paper: Api, emu: AlpacaEmulator
) -> None:
    """As at Alpaca: DELETE answers 204 at once, the order is pending_cancel for a moment, and
    until the cancel lands its shares are not available to another sell."""
    emu.cancel_delay = 0.2
    _, stop = await paper.order(
        symbol="AAPL", qty="10", side="sell", type="stop", stop_price="150", time_in_force="gtc"
    )
    status, _, _ = await paper.call("DELETE", f"/v2/orders/{stop['id']}")
    assert status == 204
    _, pending, _ = await paper.call("GET", f"/v2/orders/{stop['id']}")
    assert pending["status"] == "pending_cancel"
    status, body = await paper.order(symbol="AAPL", qty="10", side="sell")
    assert status == 403 and body["available"] == "0"
    await asyncio.sleep(0.3)
    _, ended, _ = await paper.call("GET", f"/v2/orders/{stop['id']}")
    assert ended["status"] == "canceled" and ended["canceled_at"] is not None
    status, _ = await paper.order(symbol="AAPL", qty="10", side="sell")
    assert status == 200
    assert emu.spec_violations == []


async def test_order_listing_filters(paper: Api, emu: AlpacaEmulator, clock: Clock) -> None:
    _, first = await paper.order(symbol="AAPL", qty="1")
    clock.now += 10
    cut = clock.now - 5
    _, second = await paper.order(symbol="F", qty="1")
    _, working = await paper.order(symbol="F", qty="1", type="limit", limit_price="5")
    after = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cut))
    _, closed, _ = await paper.call(
        "GET", "/v2/orders", params={"status": "closed", "after": after}
    )
    assert [o["id"] for o in closed] == [second["id"]]
    _, everything, _ = await paper.call(
        "GET", "/v2/orders", params={"status": "all", "direction": "asc", "limit": "2"}
    )
    assert [o["id"] for o in everything] == [first["id"], second["id"]]
    _, mine, _ = await paper.call("GET", "/v2/orders", params={"status": "open", "symbols": "F"})
    assert [o["id"] for o in mine] == [working["id"]]


# -- validation, limits, faults -----------------------------------------------------------------


async def test_non_conforming_requests_are_400_and_recorded(
    paper: Api, emu: AlpacaEmulator
) -> None:
    status, body = await paper.order(symbol="AAPL", qty=1)  # a number, not a string
    assert status == 400 and body["code"] == 40010000
    status, body = await paper.order(symbol="AAPL", qty="1", notional="100")
    assert status == 400
    status, _, _ = await paper.call("GET", "/v2/orders", params={"status": "working"})
    assert status == 400
    status, _, _ = await paper.call("GET", "/v2/orders/not-a-uuid")
    assert status == 400
    assert len(emu.spec_violations) == 4


async def test_rate_limit_is_per_account_with_headers(
    http: aiohttp.ClientSession,
    clock: Clock,
) -> None:
    async with AlpacaEmulator(clock=clock, rate_limit=3) as emu:
        assert isinstance(emu, AlpacaEmulator)
        token = emu.issue_token("demo")
        paper, live = Api(http, emu, token, "paper"), Api(http, emu, token, "live")
        for expected in ("2", "1", "0"):
            _, _, headers = await paper.call("GET", "/v2/account")
            assert headers["X-RateLimit-Remaining"] == expected
        status, body, headers = await paper.call("GET", "/v2/account")
        assert (status, body) == (429, observed("rate limited")["body"])
        assert int(headers["X-RateLimit-Reset"]) >= int(clock.now)
        assert "Retry-After" not in headers
        assert (await live.call("GET", "/v2/account"))[0] == 200  # another account
        clock.now += 61
        assert (await paper.call("GET", "/v2/account"))[0] == 200


async def test_lose_response_fault_still_places_the_order(paper: Api, emu: AlpacaEmulator) -> None:
    emu.faults.add(Fault(kind="lose_response", path=r"/v2/orders$", method="POST", times=1))
    with pytest.raises(aiohttp.ClientError):
        await paper.order(symbol="AAPL", qty="1", client_order_id="lost1")
    status, got, _ = await paper.call(
        "GET", "/v2/orders:by_client_order_id", params={"client_order_id": "lost1"}
    )
    assert status == 200 and got["status"] == "filled"


# -- market data ---------------------------------------------------------------------------------


async def test_data_api_snapshots_use_json_numbers(
    http: aiohttp.ClientSession, emu: AlpacaEmulator, paper: Api
) -> None:
    emu.set_quote("AAPL", Decimal("191.10"), Decimal("191.20"), Decimal("191.15"))
    async with http.get(
        emu.data_url + "/v2/stocks/snapshots",
        params={"symbols": "AAPL,NOPE"},
        headers=auth(paper.token),
    ) as r:
        body = await r.json()
    assert list(body) == ["AAPL"]
    assert body["AAPL"]["latestQuote"]["bp"] == 191.1 and body["AAPL"]["latestTrade"]["p"] == 191.15
    async with http.get(
        emu.data_url + "/v1beta3/crypto/us/snapshots",
        params={"symbols": "BTC/USD"},
        headers=auth(paper.token),
    ) as r:
        body = await r.json()
    assert set(body["snapshots"]) == {"BTC/USD"}
    no_data = emu.issue_token("demo", scope="trading")
    async with http.get(
        emu.data_url + "/v2/stocks/snapshots", params={"symbols": "AAPL"}, headers=auth(no_data)
    ) as r:
        assert r.status == 403


# -- the stream ----------------------------------------------------------------------------------


async def receive(ws: aiohttp.ClientWebSocketResponse) -> tuple[aiohttp.WSMsgType, dict[str, Any]]:
    msg = await ws.receive(timeout=5)
    raw = msg.data.decode() if msg.type is aiohttp.WSMsgType.BINARY else msg.data
    return msg.type, json.loads(raw)


@pytest.mark.parametrize(
    ("env", "frame"), [("paper", aiohttp.WSMsgType.BINARY), ("live", aiohttp.WSMsgType.TEXT)]
)
async def test_stream_authenticates_listens_and_sends_trade_updates(
    http: aiohttp.ClientSession,
    emu: AlpacaEmulator,
    env: str,
    frame: aiohttp.WSMsgType,
) -> None:
    token = emu.issue_token("demo")
    api = Api(http, emu, token, env)
    async with http.ws_connect(emu.stream_url(env)) as ws:
        await ws.send_str(json.dumps({"action": "authenticate", "data": {"oauth_token": token}}))
        kind, msg = await receive(ws)
        assert kind is frame
        assert msg == {
            "stream": "authorization",
            "data": {"status": "authorized", "action": "authenticate"},
        }
        await ws.send_str(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
        assert (await receive(ws))[1] == {
            "stream": "listening",
            "data": {"streams": ["trade_updates"]},
        }
        _, order = await api.order(symbol="F", qty="3")
        events = [(await receive(ws))[1]["data"] for _ in range(2)]
        assert [e["event"] for e in events] == ["new", "fill"]
        fill = events[1]
        assert fill["order"]["id"] == order["id"] and fill["qty"] == "3"
        assert fill["position_qty"] == "3" and fill["price"] == "10.01" and fill["execution_id"]
        assert "timestamp" in fill and "timestamp" not in events[0]


async def test_stream_refuses_a_bad_token(http: aiohttp.ClientSession, emu: AlpacaEmulator) -> None:
    async with http.ws_connect(emu.stream_url("live")) as ws:
        await ws.send_str(json.dumps({"action": "authenticate", "data": {"oauth_token": "x"}}))
        _, msg = await receive(ws)
        assert msg["data"]["status"] == "unauthorized"
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


# -- extended hours ------------------------------------------------------------------------------


async def test_an_extended_hours_limit_fills_with_the_market_closed_a_plain_one_waits(
    paper: Api, emu: AlpacaEmulator
) -> None:
    emu.close_market()
    limit = {"symbol": "AAPL", "qty": "1", "type": "limit", "limit_price": "191"}
    status, ext = await paper.order(**limit, extended_hours=True)
    assert status == 200 and ext["status"] == "pending_new" and ext["extended_hours"] is True
    status, plain = await paper.order(**limit)
    assert status == 200 and plain["status"] == "accepted" and plain["extended_hours"] is False
    _, got, _ = await paper.call("GET", f"/v2/orders/{ext['id']}")
    assert got["status"] == "filled" and got["filled_avg_price"] == "190.01"
    _, got, _ = await paper.call("GET", f"/v2/orders/{plain['id']}")
    assert got["status"] == "accepted" and got["filled_qty"] == "0"
    # One that is not marketable rests and fills when the pre-market moves to it.
    _, resting = await paper.order(
        symbol="NVDA", qty="2", type="limit", limit_price="125", extended_hours=True
    )
    emu.set_quote("NVDA", Decimal("124.80"), Decimal("124.90"))
    _, got, _ = await paper.call("GET", f"/v2/orders/{resting['id']}")
    assert got["status"] == "filled" and got["filled_avg_price"] == "124.9"
    emu.open_market()
    _, got, _ = await paper.call("GET", f"/v2/orders/{plain['id']}")
    assert got["status"] == "filled"
    assert emu.spec_violations == []


async def test_an_extended_hours_order_works_past_the_close_until_its_day_ends(
    paper: Api, emu: AlpacaEmulator
) -> None:
    """Day orders expire at the regular close, extended-hours ones work on through the
    after-market; the emulator ends their day when the next session opens."""
    _, plain = await paper.order(symbol="AMZN", qty="1", type="limit", limit_price="100")
    _, later = await paper.order(
        symbol="AMZN", qty="1", type="limit", limit_price="101", extended_hours=True
    )
    _, unfilled = await paper.order(
        symbol="TSLA", qty="1", type="limit", limit_price="200", extended_hours=True
    )
    emu.close_market()
    _, got, _ = await paper.call("GET", f"/v2/orders/{plain['id']}")
    assert got["status"] == "expired"
    emu.set_quote("AMZN", Decimal("100.80"), Decimal("100.90"))
    _, got, _ = await paper.call("GET", f"/v2/orders/{later['id']}")
    assert got["status"] == "filled" and got["filled_avg_price"] == "100.9"
    # Placed before the open, an extended-hours order is for the coming day: it stays.
    _, early = await paper.order(
        symbol="NVDA", qty="1", type="limit", limit_price="100", extended_hours=True
    )
    emu.open_market()
    _, got, _ = await paper.call("GET", f"/v2/orders/{unfilled['id']}")
    assert got["status"] == "expired" and got["expired_at"]
    _, got, _ = await paper.call("GET", f"/v2/orders/{early['id']}")
    assert got["status"] == "new"
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    "body",
    [
        {"type": "market"},
        {"type": "limit", "limit_price": "191", "time_in_force": "gtc"},
        {"type": "limit", "limit_price": "191", "time_in_force": "ioc"},
        {"type": "stop", "stop_price": "200"},
        {"type": "stop_limit", "stop_price": "200", "limit_price": "201"},
    ],
)
async def test_extended_hours_only_for_day_limit_orders(
    paper: Api, emu: AlpacaEmulator, body: dict[str, str]
) -> None:
    status, refused = await paper.order(symbol="AAPL", qty="1", extended_hours=True, **body)
    assert (status, refused) == (
        422,
        {"code": 42210000, "message": "extended hours order must be DAY limit orders"},
    )
    # Without the flag the same order is taken.
    status, _ = await paper.order(symbol="AAPL", qty="1", extended_hours=False, **body)
    assert status == 200
    assert emu.spec_violations == []


# -- auction orders (opg, cls) -----------------------------------------------------------------

NEW_YORK = ZoneInfo("America/New_York")


def new_york(hour: int, minute: int = 0, day: int = 10) -> float:
    """A moment of March 2026 in New York time; the 10th is a Tuesday, the 14th a Saturday."""
    return datetime(2026, 3, day, hour, minute, tzinfo=NEW_YORK).timestamp()


async def test_opg_orders_queued_before_the_open_trade_in_the_opening_auction(
    paper: Api, emu: AlpacaEmulator, clock: Clock
) -> None:
    clock.now = new_york(9)
    emu.close_market()
    status, moo = await paper.order(symbol="AAPL", qty="2", time_in_force="opg")
    assert status == 200 and (moo["status"], moo["time_in_force"]) == ("accepted", "opg")
    _, loo = await paper.order(
        symbol="MSFT", qty="1", type="limit", limit_price="421", time_in_force="opg"
    )
    _, unmarketable = await paper.order(
        symbol="MSFT", qty="1", type="limit", limit_price="400", time_in_force="opg"
    )
    _, day = await paper.order(symbol="NVDA", qty="1")
    # The pre-market moves: an auction order does not trade on it.
    emu.set_quote("AAPL", Decimal("191.40"), Decimal("191.60"), Decimal("191.50"))
    emu.set_quote("MSFT", Decimal("419.90"), Decimal("420.30"), Decimal("420.20"))
    _, got, _ = await paper.call("GET", f"/v2/orders/{moo['id']}")
    assert got["status"] == "accepted"
    clock.now = new_york(9, 30)
    emu.open_market()
    # One price for all: the auction's (the last trade), not the bid or ask.
    _, got, _ = await paper.call("GET", f"/v2/orders/{moo['id']}")
    assert (got["status"], got["filled_qty"], got["filled_avg_price"]) == ("filled", "2", "191.5")
    _, got, _ = await paper.call("GET", f"/v2/orders/{loo['id']}")
    assert (got["status"], got["filled_avg_price"]) == ("filled", "420.2")
    _, got, _ = await paper.call("GET", f"/v2/orders/{unmarketable['id']}")
    assert got["status"] == "canceled" and got["canceled_at"] and got["filled_qty"] == "0"
    # A day order queued beside them is routed and fills at the quote, as before.
    _, got, _ = await paper.call("GET", f"/v2/orders/{day['id']}")
    assert (got["status"], got["time_in_force"]) == ("filled", "day")
    assert emu.spec_violations == []


async def test_a_cls_order_works_through_the_session_and_trades_in_the_closing_auction(
    paper: Api, emu: AlpacaEmulator, clock: Clock
) -> None:
    clock.now = new_york(10)
    status, moc = await paper.order(symbol="TSLA", qty="3", time_in_force="cls")
    assert status == 200 and moc["time_in_force"] == "cls"
    _, loc = await paper.order(
        symbol="AAPL", qty="1", side="sell", type="limit", limit_price="195", time_in_force="cls"
    )
    _, day = await paper.order(symbol="AMZN", qty="1", type="limit", limit_price="100")
    emu.set_quote("TSLA", Decimal("251.90"), Decimal("252.10"), Decimal("252"))
    _, got, _ = await paper.call("GET", f"/v2/orders/{moc['id']}")
    assert (got["status"], got["filled_qty"]) == ("new", "0")  # not in the continuous session
    clock.now = new_york(16)
    emu.set_quote("TSLA", Decimal("252.40"), Decimal("252.60"), Decimal("252.55"))
    emu.close_market()
    _, got, _ = await paper.call("GET", f"/v2/orders/{moc['id']}")
    assert (got["status"], got["filled_avg_price"]) == ("filled", "252.55")
    _, got, _ = await paper.call("GET", f"/v2/orders/{loc['id']}")
    assert got["status"] == "canceled" and got["filled_qty"] == "0"  # 190 < its 195 limit
    _, got, _ = await paper.call("GET", f"/v2/orders/{day['id']}")
    assert got["status"] == "expired"
    assert emu.spec_violations == []


@pytest.mark.parametrize(
    ("tif", "day", "hour", "minute", "refused"),
    [
        ("opg", 10, 9, 27, False),
        ("opg", 10, 9, 28, True),
        ("opg", 10, 10, 0, True),
        ("opg", 10, 18, 59, True),
        ("opg", 10, 19, 0, False),
        ("opg", 14, 10, 0, False),  # a Saturday: queued for Monday's open
        ("cls", 10, 10, 0, False),
        ("cls", 10, 15, 50, True),
        ("cls", 10, 15, 55, True),
        ("cls", 10, 19, 30, False),
    ],
)
async def test_auction_orders_are_refused_in_alpacas_windows(
    paper: Api,
    emu: AlpacaEmulator,
    clock: Clock,
    tif: str,
    day: int,
    hour: int,
    minute: int,
    refused: bool,
) -> None:
    clock.now = new_york(hour, minute, day)
    status, body = await paper.order(symbol="AAPL", qty="1", time_in_force=tif)
    if refused:
        cutoff = "9:28am" if tif == "opg" else "3:50pm"
        message = f"{tif} orders must be submitted after 7:00pm and before {cutoff}"
        assert (status, body) == (403, {"code": 40310000, "message": message})
        assert emu.orders(emu.account("demo", "paper")) == []
    else:
        assert status == 200 and body["time_in_force"] == tif
        # Taken, it waits for its auction: no fill in the session the emulator has open.
        _, got, _ = await paper.call("GET", f"/v2/orders/{body['id']}")
        assert (got["status"], got["filled_qty"]) == ("new", "0")
    assert emu.spec_violations == []


async def test_auction_orders_are_market_or_limit_stock_orders(
    paper: Api, emu: AlpacaEmulator, clock: Clock
) -> None:
    clock.now = new_york(8)
    status, body = await paper.order(
        symbol="AAPL", qty="1", side="sell", type="stop", stop_price="150", time_in_force="opg"
    )
    assert (status, body) == (
        422,
        {"code": 42210000, "message": "opg orders must be market or limit orders"},
    )
    status, body = await paper.order(symbol="BTC/USD", qty="0.1", time_in_force="cls")
    assert (status, body) == (422, {"code": 42210000, "message": "invalid crypto time_in_force"})
