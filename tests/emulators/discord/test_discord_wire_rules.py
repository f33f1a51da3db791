"""Discord rules found missing in an audit: each case here was once accepted by the emulator.

Sources are Discord's developer documentation (Button component, Application Command Option
and Option Choice structures, Allowed Mentions structure).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from emulators.discord import DiscordEmulator, EmulatorError
from emulators.discord.gateway import GUILDS
from tests.emulators.discord.conftest import TOKEN, form_errors


async def _send(session: aiohttp.ClientSession, method: str, url: str, payload: Any) -> Any:
    async with session.request(method, url, json=payload) as response:
        assert response.headers["Content-Type"] == "application/json"
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        # "Non-link and non-premium buttons must have a custom_id, and cannot have a url".
        (
            {
                "content": "x",
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {
                                "type": 2,
                                "style": 1,
                                "label": "Go",
                                "custom_id": "go",
                                "url": "https://example.com",
                            }
                        ],
                    }
                ],
            },
            ("components", 0, "components", 0, "url"),
        ),
        # Discord: options.1 SELECT_COMPONENT_OPTION_VALUE_DUPLICATED.
        (
            {
                "content": "x",
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {
                                "type": 3,
                                "custom_id": "account",
                                "options": [
                                    {"label": "Cash", "value": "A1"},
                                    {"label": "Margin", "value": "A1"},
                                ],
                            }
                        ],
                    }
                ],
            },
            ("components", 0, "components", 0, "options", 1),
        ),
        # allowed_mentions.parse is an array of allowed mention types.
        ({"content": "x", "allowed_mentions": {"parse": "users"}}, ("allowed_mentions", "parse")),
        # ... users is an array of snowflakes, replied_user a boolean.
        (
            {"content": "x", "allowed_mentions": {"users": ["alice"]}},
            ("allowed_mentions", "users", 0),
        ),
        (
            {"content": "x", "allowed_mentions": {"replied_user": "yes"}},
            ("allowed_mentions", "replied_user"),
        ),
        # Embed text fields are strings and fields an array of objects (once a 500 here).
        ({"embeds": [{"title": 5}]}, ("embeds", 0, "title")),
        ({"embeds": [{"title": "t", "fields": {"name": "a"}}]}, ("embeds", 0, "fields")),
        ({"embeds": [{"title": "t", "fields": ["a"]}]}, ("embeds", 0, "fields", 0)),
        ({"embeds": [{"title": "t", "footer": "f"}]}, ("embeds", 0, "footer")),
    ],
)
async def test_message_bodies_discord_refuses(
    api: Any, payload: dict[str, Any], path: tuple[Any, ...]
) -> None:
    emu, session = api
    status, body = await _send(
        session, "POST", f"{emu.api_base}/channels/{emu.general.id}/messages", payload
    )
    assert (status, body["code"]) == (400, 50035)
    assert form_errors(body, *path)
    assert emu.messages(emu.general.id) == []


def _command(*options: dict[str, Any]) -> dict[str, Any]:
    return {"name": "trade", "description": "Trade", "type": 1, "options": list(options)}


def _string_option(**extra: Any) -> dict[str, Any]:
    return {"name": "symbol", "description": "Ticker", "type": 3, **extra}


@pytest.mark.parametrize(
    ("command", "path"),
    [
        # Option choice: name 1-100 characters, a string value up to 100 characters.
        (
            _command(_string_option(choices=[{"name": "n" * 101, "value": "v"}])),
            (0, "options", 0, "choices", 0, "name"),
        ),
        (
            _command(_string_option(choices=[{"name": "n", "value": "v" * 101}])),
            (0, "options", 0, "choices", 0, "value"),
        ),
        # min_length 0-6000, max_length 1-6000.
        (_command(_string_option(min_length=6001)), (0, "options", 0, "min_length")),
        (_command(_string_option(max_length=0)), (0, "options", 0, "max_length")),
        # Option types are 1 (SUB_COMMAND) to 11 (ATTACHMENT).
        (
            _command({"name": "x", "description": "x", "type": 12}),
            (0, "options", 0, "type"),
        ),
        # A subcommand holds plain options, never another subcommand.
        (
            _command(
                {
                    "name": "buy",
                    "description": "Buy",
                    "type": 1,
                    "options": [{"name": "now", "description": "Now", "type": 1}],
                }
            ),
            (0, "options", 0, "options", 0, "type"),
        ),
    ],
)
async def test_command_sync_refuses_what_discord_refuses(
    api: Any, command: dict[str, Any], path: tuple[Any, ...]
) -> None:
    emu, session = api
    url = f"{emu.api_base}/applications/{emu.application_id}/commands"
    status, body = await _send(session, "PUT", url, [command])
    assert (status, body["code"]) == (400, 50035)
    assert form_errors(body, *path)
    assert emu.world.commands.all_names() == []
    # The same shape within the limits is accepted.
    ok = _command(
        _string_option(choices=[{"name": "n" * 100, "value": "v" * 100}]),
        {"name": "note", "description": "Note", "type": 3, "min_length": 0, "max_length": 6000},
    )
    status, synced = await _send(session, "PUT", url, [ok])
    assert status == 200 and [c["name"] for c in synced] == ["trade"]


async def test_command_sync_refuses_a_command_over_discords_size_limit(api: Any) -> None:
    """Names, descriptions and choices of a command's whole tree count against one limit; live
    Discord answers APPLICATION_COMMAND_TOO_LARGE "Command exceeds maximum size (8000)"."""
    emu, session = api
    url = f"{emu.api_base}/applications/{emu.application_id}/commands"

    def subcommand(i: int, description: str) -> dict[str, Any]:
        options = [{"name": f"o{j}", "description": description, "type": 3} for j in range(4)]
        return {"name": f"s{i}", "description": description, "type": 1, "options": options}

    # 25 subcommands of 5 descriptions each: 125 x 64 plus names is just over 8000.
    big = _command(*(subcommand(i, "d" * 64) for i in range(25)))
    status, body = await _send(session, "PUT", url, [big])
    assert (status, body["code"]) == (400, 50035)
    assert form_errors(body, 0) == ["APPLICATION_COMMAND_TOO_LARGE"]
    assert emu.world.commands.all_names() == []
    fits = _command(*(subcommand(i, "d" * 60) for i in range(25)))
    status, synced = await _send(session, "PUT", url, [fits])
    assert status == 200 and [c["name"] for c in synced] == ["trade"]


async def test_dm_channel_needs_a_recipient(api: Any) -> None:
    emu, session = api
    status, body = await _send(session, "POST", f"{emu.api_base}/users/@me/channels", {})
    assert (status, body["code"]) == (400, 50035)
    assert form_errors(body, "recipient_id") == ["BASE_TYPE_REQUIRED"]


@pytest.fixture
async def raw() -> AsyncIterator[tuple[DiscordEmulator, int]]:
    """An emulator with one identified gateway session, so interactions can be sent."""
    async with DiscordEmulator(bot_token=TOKEN) as emu, aiohttp.ClientSession() as session:
        emu.world.commands.bulk_overwrite(
            None,
            [
                {
                    "name": "size",
                    "description": "Size",
                    "type": 1,
                    "options": [
                        {"name": "shares", "description": "Shares", "type": 4},
                        {"name": "price", "description": "Price", "type": 10},
                    ],
                }
            ],
        )
        alice = emu.add_user("alice")
        emu.add_member(emu.guild.id, alice.id)
        async with session.ws_connect(emu.gateway_url + "?v=10&encoding=json") as ws:
            await ws.receive_json()  # HELLO
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": GUILDS}})
            assert (await ws.receive_json(timeout=5))["t"] == "READY"
            yield emu, alice.id


@pytest.mark.parametrize(
    "options",
    [
        {"shares": 2**53},
        {"shares": -(2**53)},
        {"price": 2.0**53 * 2},
        {"price": math.nan},
        {"price": math.inf},
    ],
)
async def test_numeric_options_stay_in_discords_range(raw: Any, options: dict[str, Any]) -> None:
    """INTEGER options take -2^53+1..2^53-1 and NUMBER options -2^53..2^53; the client sends
    nothing else (NaN and infinity are not even JSON)."""
    emu, alice = raw
    with pytest.raises(EmulatorError, match="Discord takes"):
        await emu.slash(alice, "size", options)
    result = await emu.slash(alice, "size", {"shares": 2**53 - 1, "price": -(2.0**53)})
    sent = result.payload["data"]["options"]
    assert [o["value"] for o in sent] == [2**53 - 1, -(2.0**53)]


def _row(*children: Any) -> dict[str, Any]:
    return {"content": "x", "components": [{"type": 1, "components": list(children)}]}


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"content": "x", "components": ["row"]}, ("components", 0)),
        ({"content": "x", "components": [{"type": [1]}]}, ("components", 0, "type")),
        ({"content": "x", "components": [{"type": 1, "components": "x"}]}, ("components", 0)),
        (_row("button"), ("components", 0, "components", 0)),
        (_row({"type": 3, "custom_id": "s", "options": ["A1"]}), ("components", 0)),
        (_row({"type": 2, "style": 1, "label": "l", "custom_id": ["c"]}), ("components", 0)),
        (_row({"type": 2, "style": 5, "label": "l", "url": 5}), ("components", 0)),
        ({"content": "x", "flags": "ephemeral"}, ("flags",)),
        ({"content": "x", "attachments": 5}, ("attachments",)),
    ],
)
async def test_malformed_message_bodies_are_invalid_form_bodies(
    api: Any, payload: dict[str, Any], path: tuple[Any, ...]
) -> None:
    """Discord answers a body of the wrong shape with 400 50035; a 500 would make discord.py
    retry the request and then raise DiscordServerError instead of HTTPException."""
    emu, session = api
    status, body = await _send(
        session, "POST", f"{emu.api_base}/channels/{emu.general.id}/messages", payload
    )
    assert (status, body["code"]) == (400, 50035)
    node = body["errors"]
    for part in path:
        node = node[str(part)]
    assert node
    assert emu.messages(emu.general.id) == []


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ({**_command(), "options": "symbol"}, (0, "options")),
        (_command("symbol"), (0, "options", 0)),
        (_command({"name": "x", "description": "x", "type": [3]}), (0, "options", 0, "type")),
        (_command(_string_option(choices=["AAPL"])), (0, "options", 0, "choices", 0)),
        ({**_command(), "type": [1]}, (0, "type")),
    ],
)
async def test_malformed_commands_are_invalid_form_bodies(
    api: Any, command: dict[str, Any], path: tuple[Any, ...]
) -> None:
    emu, session = api
    url = f"{emu.api_base}/applications/{emu.application_id}/commands"
    status, body = await _send(session, "PUT", url, [command])
    assert (status, body["code"]) == (400, 50035)
    assert form_errors(body, *path)
    assert emu.world.commands.all_names() == []
