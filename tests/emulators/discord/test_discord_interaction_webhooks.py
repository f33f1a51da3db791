"""Interaction callbacks and webhooks at the HTTP level, with a hand-rolled gateway client.

These pin down Discord's rules that discord.py hides: which callback types an interaction
accepts, that the webhook exists only after an acknowledgement, and what each route returns.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from emulators.discord import DiscordEmulator, InteractionResult, User
from emulators.discord.gateway import GUILD_MESSAGES, GUILDS

TOKEN = "MTAw.webhooks.bot-token"


class RawBot:
    """A minimal gateway client: enough to receive INTERACTION_CREATE and MESSAGE_* events."""

    def __init__(self, emu: DiscordEmulator, session: aiohttp.ClientSession) -> None:
        self.emu = emu
        self.http = session
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self) -> None:
        self.ws = await self.http.ws_connect(self.emu.gateway_url + "?v=10&encoding=json")
        await self.ws.receive_json()
        await self.ws.send_json(
            {"op": 2, "d": {"token": TOKEN, "intents": GUILDS | GUILD_MESSAGES}}
        )
        assert (await self.next_event())["t"] == "READY"
        assert (await self.next_event())["t"] == "GUILD_CREATE"

    async def next_event(self) -> dict[str, Any]:
        assert self.ws is not None
        return json.loads((await self.ws.receive(timeout=5)).data)

    async def interaction(self) -> dict[str, Any]:
        """The next INTERACTION_CREATE, skipping the MESSAGE_* events around it."""
        while True:
            event = await self.next_event()
            if event["t"] == "INTERACTION_CREATE":
                return event["d"]
            assert event["t"].startswith("MESSAGE_"), event

    def callback_url(self, interaction: dict[str, Any]) -> str:
        base = f"{self.emu.api_base}/interactions/{interaction['id']}/{interaction['token']}"
        return f"{base}/callback?with_response=true"

    def webhook_url(self, interaction: dict[str, Any], suffix: str = "") -> str:
        return (
            f"{self.emu.api_base}/webhooks/{self.emu.application_id}/{interaction['token']}{suffix}"
        )


@pytest.fixture
async def raw() -> AsyncIterator[tuple[DiscordEmulator, RawBot, User]]:
    async with DiscordEmulator(bot_token=TOKEN) as emu, aiohttp.ClientSession() as session:
        emu.world.commands.bulk_overwrite(
            None,
            [
                {"name": "ping", "description": "Ping", "type": 1},
                {"name": "menu", "description": "Menu", "type": 1},
            ],
        )
        alice = emu.add_user("alice")
        emu.add_member(emu.guild.id, alice.id)
        bot = RawBot(emu, session)
        await bot.connect()
        yield emu, bot, alice
        assert bot.ws is not None
        await bot.ws.close()


async def call(
    session: aiohttp.ClientSession, method: str, url: str, payload: Any = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=payload) as response:
        if response.status == 204:
            return 204, None
        assert response.headers["Content-Type"] == "application/json"
        return response.status, await response.json()


async def test_interaction_payload_has_what_discord_py_needs(raw: Any) -> None:
    emu, bot, alice = raw
    await emu.slash(alice.id, "ping")
    interaction = await bot.interaction()
    for key in (
        "id",
        "type",
        "token",
        "version",
        "application_id",
        "attachment_size_limit",
        "app_permissions",
    ):
        assert key in interaction
    assert interaction["member"]["user"]["id"] == str(alice.id)
    assert interaction["member"]["permissions"].isdigit()
    assert interaction["channel"]["id"] == interaction["channel_id"] == str(emu.general.id)
    assert interaction["data"]["name"] == "ping" and interaction["context"] == 0
    assert "user" not in interaction


async def test_webhook_exists_only_after_acknowledgement(raw: Any) -> None:
    emu, bot, alice = raw
    await emu.slash(alice.id, "ping")
    interaction = await bot.interaction()
    status, body = await call(
        bot.http, "POST", bot.webhook_url(interaction), {"content": "too early"}
    )
    assert (status, body) == (404, {"message": "Unknown Webhook", "code": 10015})
    status, body = await call(bot.http, "GET", bot.webhook_url(interaction, "/messages/@original"))
    assert (status, body["code"]) == (404, 10015)
    status, body = await call(
        bot.http, "POST", bot.callback_url(interaction), {"type": 7, "data": {"content": "x"}}
    )
    assert status == 400 and body["code"] == 50035 and "type" in body["errors"]
    status, body = await call(
        bot.http, "POST", bot.callback_url(interaction), {"type": 4, "data": {}}
    )
    assert (status, body) == (400, {"code": 50006, "message": "Cannot send an empty message"})

    status, body = await call(bot.http, "POST", bot.callback_url(interaction), {"type": 5})
    assert status == 200
    assert body["interaction"]["response_message_loading"] is True
    assert body["resource"] == {"type": 5}
    loading_id = body["interaction"]["response_message_id"]
    created = await bot.next_event()
    assert (created["t"], created["d"]["id"], created["d"]["flags"]) == (
        "MESSAGE_CREATE",
        loading_id,
        128,
    )

    status, original = await call(
        bot.http, "GET", bot.webhook_url(interaction, "/messages/@original")
    )
    assert (status, original["id"], original["content"]) == (200, loading_id, "")
    status, first = await call(
        bot.http, "POST", bot.webhook_url(interaction) + "?wait=true", {"content": "done"}
    )
    assert (status, first["id"], first["flags"]) == (
        200,
        loading_id,
        0,
    )  # the defer's message, edited
    status, followup = await call(
        bot.http, "POST", bot.webhook_url(interaction), {"content": "more", "flags": 64}
    )
    assert status == 200 and followup["id"] != loading_id and followup["flags"] == 64
    assert followup["interaction_metadata"]["original_response_message_id"] == loading_id

    edit_url = bot.webhook_url(interaction, f"/messages/{followup['id']}")
    status, edited = await call(bot.http, "PATCH", edit_url, {"content": "more, edited"})
    assert (status, edited["content"]) == (200, "more, edited")
    status, _ = await call(bot.http, "DELETE", bot.webhook_url(interaction, "/messages/@original"))
    assert status == 204
    status, body = await call(bot.http, "GET", bot.webhook_url(interaction, "/messages/@original"))
    assert (status, body["code"]) == (404, 10008)
    status, body = await call(
        bot.http, "GET", bot.webhook_url(interaction, "/messages/123456789012345678")
    )
    assert (status, body["code"]) == (404, 10008)
    bad_token = f"{emu.api_base}/webhooks/{emu.application_id}/not-a-token"
    status, body = await call(bot.http, "POST", bad_token, {"content": "x"})
    assert (status, body) == (401, {"message": "Invalid Webhook Token", "code": 50027})


async def test_an_ephemeral_followup_after_a_public_deferral(raw: Any) -> None:
    """While a public deferral is loading, the first followup is that message, public whatever
    its flags say; once the bot deletes it, a followup is its own message and stays ephemeral
    (discord/discord-api-docs#2739 made followups work after that delete)."""
    emu, bot, alice = raw
    for delete_first in (False, True):
        result = await emu.slash(alice.id, "ping")
        interaction = await bot.interaction()
        status, body = await call(bot.http, "POST", bot.callback_url(interaction), {"type": 5})
        assert status == 200 and body["interaction"]["response_message_ephemeral"] is False
        loading_id = body["interaction"]["response_message_id"]
        if delete_first:
            original = bot.webhook_url(interaction, "/messages/@original")
            assert (await call(bot.http, "DELETE", original))[0] == 204
        status, sent = await call(
            bot.http,
            "POST",
            bot.webhook_url(interaction) + "?wait=true",
            {"content": "only for alice", "flags": 64},
        )
        assert status == 200
        if delete_first:
            assert sent["id"] != loading_id and sent["flags"] == 64
            assert result.original is not None and result.original.deleted
            assert (await result.followup(0)).visible_to == alice.id
        else:
            assert (sent["id"], sent["flags"]) == (loading_id, 0)  # in the channel, for all
            assert (await result.message()).visible_to is None


async def test_component_update_and_deferred_update(raw: Any) -> None:
    emu, bot, alice = raw
    await emu.slash(alice.id, "menu")
    interaction = await bot.interaction()
    components = [
        {
            "type": 1,
            "components": [{"type": 2, "style": 1, "label": "Refresh", "custom_id": "refresh"}],
        }
    ]
    status, body = await call(
        bot.http,
        "POST",
        bot.callback_url(interaction),
        {"type": 4, "data": {"content": "v1", "components": components}},
    )
    assert status == 200 and body["resource"]["type"] == 4
    message = emu.message(int(body["interaction"]["response_message_id"]))
    assert message.components[0]["components"][0]["id"] == 2  # Discord numbers components

    click: InteractionResult = await emu.click(alice.id, message, "refresh")
    component = await bot.interaction()
    assert (
        component["message"]["id"] == str(message.id) and component["data"]["component_type"] == 2
    )
    status, body = await call(
        bot.http, "POST", bot.callback_url(component), {"type": 7, "data": {"content": "v2"}}
    )
    assert status == 200 and body["resource"]["message"]["content"] == "v2"
    assert body["interaction"]["response_message_id"] == str(message.id)
    assert (await click.message()).content == "v2" and message.buttons()[0].label == "Refresh"

    second = await emu.click(alice.id, message, "refresh")
    component = await bot.interaction()
    status, body = await call(bot.http, "POST", bot.callback_url(component), {"type": 6})
    assert status == 200 and body["resource"] == {"type": 6}
    status, _ = await call(
        bot.http,
        "PATCH",
        bot.webhook_url(component, "/messages/@original"),
        {"content": "v3", "components": []},
    )
    assert status == 200
    assert (await second.message()).content == "v3" and message.components == []
    assert [v.content for v in message.edits] == ["v1", "v2"]


async def test_callback_data_must_be_an_object(raw: Any) -> None:
    """Discord refuses a non-object ``data`` with 50035 (the emulator once crashed with a 500),
    and the interaction stays unacknowledged."""
    emu, bot, alice = raw
    await emu.slash(alice.id, "ping")
    interaction = await bot.interaction()
    url = bot.callback_url(interaction)
    status, body = await call(bot.http, "POST", url, {"type": 4, "data": "pong"})
    assert (status, body["code"]) == (400, 50035) and "data" in body["errors"]
    status, _ = await call(bot.http, "POST", url, {"type": 4, "data": {"content": "pong"}})
    assert status == 200
