"""Login with Discord: the authorization code flow with PKCE, as a browser and a server do it."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from emulators.discord import DiscordEmulator, User

TOKEN = "MTAw.oauth.bot-token"
SECRET = "client-secret-for-tests"
REDIRECT = "http://127.0.0.1:8080/auth/discord/callback"


@pytest.fixture
async def env() -> AsyncIterator[tuple[DiscordEmulator, aiohttp.ClientSession, User]]:
    async with DiscordEmulator(bot_token=TOKEN) as emu:
        emu.register_oauth_client(emu.application_id, SECRET, [REDIRECT])
        alice = emu.add_user("alice", global_name="Alice")
        emu.add_member(emu.guild.id, alice.id)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as browser:
            yield emu, browser, alice


def basic(client_id: object, secret: str) -> dict[str, str]:
    """RFC 6749 §2.3.1: form-encode, then Base64 (what a careful OAuth client sends)."""
    raw = f"{urllib.parse.quote_plus(str(client_id))}:{urllib.parse.quote_plus(secret)}"
    return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    )
    return verifier, challenge


def authorize_url(emu: DiscordEmulator, **overrides: str) -> str:
    params = {
        "response_type": "code",
        "client_id": str(emu.application_id),
        "redirect_uri": REDIRECT,
        "scope": "identify",
        "state": "state-123",
        "prompt": "consent",
    }
    params.update(overrides)
    return f"{emu.base_url}/oauth2/authorize?{urllib.parse.urlencode(params)}"


async def open_page(browser: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with browser.get(url, allow_redirects=False) as page:
        return page.status, await page.text()


def ticket_of(page: str) -> str:
    match = re.search(r'name="ticket" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


async def press(
    browser: aiohttp.ClientSession, emu: DiscordEmulator, page: str, action: str, **fields: str
) -> dict[str, list[str]]:
    form = {"ticket": ticket_of(page), "action": action, **fields}
    async with browser.post(
        f"{emu.base_url}/oauth2/authorize", data=form, allow_redirects=False
    ) as response:
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)


async def exchange(emu: DiscordEmulator, **form: str) -> tuple[int, dict[str, Any]]:
    data = {"grant_type": "authorization_code", "redirect_uri": REDIRECT, **form}
    auth = basic(emu.application_id, SECRET)
    async with (
        aiohttp.ClientSession() as server,
        server.post(f"{emu.api_base}/oauth2/token", data=data, headers=auth) as response,
    ):
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, await response.json()


async def me(emu: DiscordEmulator, access_token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as server:
        headers = {"Authorization": f"Bearer {access_token}"}
        async with server.get(f"{emu.api_base}/users/@me", headers=headers) as response:
            return response.status, await response.json()


async def test_code_flow_with_pkce(env: Any) -> None:
    emu, browser, alice = env
    emu.oauth_login_as(alice.id)
    verifier, challenge = pkce()
    status, page = await open_page(
        browser, authorize_url(emu, code_challenge=challenge, code_challenge_method="S256")
    )
    assert status == 200
    assert 'id="authorize"' in page and 'id="cancel"' in page and 'id="user"' not in page
    assert f'data-user-id="{alice.id}"' in page
    assert not re.search(r'(src|href)="https?://', page)  # self-contained: no external resources

    query = await press(browser, emu, page, "authorize")
    assert query["state"] == ["state-123"]
    code = query["code"][0]

    status, tokens = await exchange(emu, code=code, code_verifier=verifier)
    assert status == 200
    assert (tokens["token_type"], tokens["expires_in"], tokens["scope"]) == (
        "Bearer",
        604800,
        "identify",
    )
    assert tokens["access_token"] and tokens["refresh_token"]

    status, user = await me(emu, tokens["access_token"])
    assert status == 200
    assert (user["id"], user["username"], user["global_name"], user["discriminator"]) == (
        str(alice.id),
        "alice",
        "Alice",
        "0",
    )
    assert "email" not in user

    # A code works once; replaying it fails and revokes what it issued.
    status, error = await exchange(emu, code=code, code_verifier=verifier)
    assert (status, error["error"]) == (400, "invalid_grant")
    assert (await me(emu, tokens["access_token"]))[0] == 401


async def test_wrong_verifier_and_wrong_redirect_at_token(env: Any) -> None:
    emu, browser, alice = env
    emu.oauth_login_as(alice.id)
    _, challenge = pkce()
    _, page = await open_page(
        browser, authorize_url(emu, code_challenge=challenge, code_challenge_method="S256")
    )
    code = (await press(browser, emu, page, "authorize"))["code"][0]
    status, error = await exchange(emu, code=code, code_verifier=pkce()[0])
    assert (status, error["error"]) == (400, "invalid_grant")

    _, page = await open_page(browser, authorize_url(emu))
    code = (await press(browser, emu, page, "authorize"))["code"][0]
    status, error = await exchange(emu, code=code, redirect_uri="http://127.0.0.1:8080/elsewhere")
    assert (status, error) == (
        400,
        {"error": "invalid_grant", "error_description": 'Invalid "redirect_uri" in request.'},
    )


async def test_unregistered_redirect_uri_shows_an_error_and_does_not_redirect(env: Any) -> None:
    emu, browser, alice = env
    emu.oauth_login_as(alice.id)
    status, page = await open_page(
        browser, authorize_url(emu, redirect_uri="https://evil.example/callback")
    )
    assert status == 400 and "Invalid OAuth2 redirect_uri" in page
    status, page = await open_page(browser, authorize_url(emu, client_id="123"))
    assert status == 400 and "Unknown Application" in page
    async with browser.get(
        authorize_url(emu, scope="identify bot_admin"), allow_redirects=False
    ) as bad_scope:
        assert bad_scope.status == 302 and "error=invalid_scope" in bad_scope.headers["Location"]


async def test_cancel_redirects_with_access_denied(env: Any) -> None:
    emu, browser, alice = env
    emu.oauth_login_as(alice.id)
    _, page = await open_page(browser, authorize_url(emu))
    query = await press(browser, emu, page, "cancel")
    assert query["error"] == ["access_denied"] and query["state"] == ["state-123"]
    assert "code" not in query


async def test_picking_a_user_signs_the_browser_in(env: Any) -> None:
    emu, browser, _ = env
    bob = emu.add_user("bob", global_name="Bob")
    _, page = await open_page(browser, authorize_url(emu, scope="identify email"))
    assert '<select id="user" name="user_id"' in page
    assert f'<option value="{bob.id}">Bob (@bob)</option>' in page
    assert str(emu.bot_user.id) not in page  # bots cannot sign in
    code = (await press(browser, emu, page, "authorize", user_id=str(bob.id)))["code"][0]
    _, tokens = await exchange(emu, code=code)
    status, user = await me(emu, tokens["access_token"])
    assert (status, user["id"], user["email"], user["verified"]) == (
        200,
        str(bob.id),
        "bob@users.local",
        True,
    )
    # The session cookie remembers who the browser is.
    _, page = await open_page(browser, authorize_url(emu))
    assert f'data-user-id="{bob.id}"' in page and 'id="user"' not in page


async def test_client_authentication_refresh_and_revoke(env: Any) -> None:
    emu, browser, alice = env
    emu.oauth_login_as(alice.id)
    _, page = await open_page(browser, authorize_url(emu))
    code = (await press(browser, emu, page, "authorize"))["code"][0]
    async with aiohttp.ClientSession() as server:
        token_url = f"{emu.api_base}/oauth2/token"
        wrong = basic(emu.application_id, "wrong-secret")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
        async with server.post(token_url, data=form, headers=wrong) as response:
            assert response.status == 401 and (await response.json())["error"] == "invalid_client"
        body = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": str(emu.application_id),
            "client_secret": SECRET,
        }
        async with server.post(token_url, data=body) as response:
            tokens = await response.json()
            assert response.status == 200, tokens
        refresh = {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": str(emu.application_id),
            "client_secret": SECRET,
        }
        async with server.post(token_url, data=refresh) as response:
            rotated = await response.json()
            assert response.status == 200 and rotated["refresh_token"] != tokens["refresh_token"]
        async with server.post(token_url, data=refresh) as response:
            assert (response.status, (await response.json())["error"]) == (400, "invalid_grant")
        revoke = {
            "token": rotated["access_token"],
            "client_id": str(emu.application_id),
            "client_secret": SECRET,
        }
        async with server.post(f"{token_url}/revoke", data=revoke) as response:
            assert response.status == 200
    assert (await me(emu, rotated["access_token"]))[0] == 401


async def test_bearer_and_bot_tokens_are_kept_apart(env: Any) -> None:
    emu, browser, alice = env
    emu.oauth_login_as(alice.id)
    _, page = await open_page(browser, authorize_url(emu))
    code = (await press(browser, emu, page, "authorize"))["code"][0]
    _, tokens = await exchange(emu, code=code)
    async with aiohttp.ClientSession() as server:
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        async with server.get(
            f"{emu.api_base}/channels/{emu.general.id}", headers=bearer
        ) as response:
            assert response.status == 401
        async with server.get(f"{emu.api_base}/oauth2/@me", headers=bearer) as response:
            info = await response.json()
            assert info["user"]["id"] == str(alice.id) and info["scopes"] == ["identify"]
        bot = {"Authorization": f"Bot {TOKEN}"}
        async with server.get(f"{emu.api_base}/users/@me", headers=bot) as response:
            assert (await response.json())["id"] == str(emu.bot_user.id)
        async with server.get(f"{emu.api_base}/oauth2/@me", headers=bot) as response:
            assert response.status == 401
