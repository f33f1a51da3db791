"""REST routes: Discord's limits, error bodies, auth, rate limits and unmodelled-route tracking."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from emulators.discord import DiscordEmulator, permissions
from tests.emulators.discord.conftest import BOT, TOKEN, form_errors


async def _post(session: aiohttp.ClientSession, url: str, payload: Any) -> tuple[int, Any]:
    async with session.post(url, json=payload) as response:
        assert response.headers["Content-Type"] == "application/json"
        return response.status, await response.json()


def _row(*components: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(components)}


def _button(custom_id: str, label: str = "Go") -> dict[str, Any]:
    return {"type": 2, "style": 1, "custom_id": custom_id, "label": label}


@pytest.mark.parametrize(
    ("payload", "path", "code"),
    [
        ({"content": "x" * 2001}, ("content",), "BASE_TYPE_MAX_LENGTH"),
        ({"embeds": [{"title": "t"}] * 11}, ("embeds",), "BASE_TYPE_MAX_LENGTH"),
        ({"embeds": [{"title": "t" * 257}]}, ("embeds", 0, "title"), "BASE_TYPE_MAX_LENGTH"),
        (
            {"embeds": [{"description": "d" * 4097}]},
            ("embeds", 0, "description"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]},
            ("embeds", 0, "fields"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"embeds": [{"fields": [{"name": "n" * 257, "value": "v"}]}]},
            ("embeds", 0, "fields", 0, "name"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"embeds": [{"fields": [{"name": "n", "value": "v" * 1025}]}]},
            ("embeds", 0, "fields", 0, "value"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]},
            ("embeds",),
            "MAX_EMBED_SIZE_EXCEEDED",
        ),
        (
            {"content": "x", "components": [_row(_button(f"b{i}")) for i in range(6)]},
            ("components",),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"content": "x", "components": [_row(*[_button(f"b{i}") for i in range(6)])]},
            ("components", 0, "components"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"content": "x", "components": [_row(_button("c" * 101))]},
            ("components", 0, "components", 0, "custom_id"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"content": "x", "components": [_row(_button("ok", "l" * 81))]},
            ("components", 0, "components", 0, "label"),
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"content": "x", "components": [_row(_button("same"), _button("same"))]},
            ("components",),
            "COMPONENT_CUSTOM_ID_DUPLICATED",
        ),
        (
            {
                "content": "x",
                "components": [
                    _row(
                        {
                            "type": 3,
                            "custom_id": "s",
                            "options": [{"label": str(i), "value": str(i)} for i in range(26)],
                        }
                    )
                ],
            },
            ("components", 0, "components", 0, "options"),
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            {
                "content": "x",
                "components": [
                    _row(
                        {"type": 3, "custom_id": "s", "options": [{"label": "a", "value": "a"}]},
                        _button("b"),
                    )
                ],
            },
            ("components", 0, "components"),
            "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
        ),
    ],
)
async def test_message_limits(
    api: Any, payload: dict[str, Any], path: tuple[Any, ...], code: str
) -> None:
    emu, session = api
    status, body = await _post(
        session, f"{emu.api_base}/channels/{emu.general.id}/messages", payload
    )
    assert status == 400
    assert (body["code"], body["message"]) == (50035, "Invalid Form Body")
    assert code in form_errors(body, *path)
    assert emu.messages(emu.general.id) == []


@pytest.mark.parametrize("payload", [{}, {"content": "   "}, {"content": "", "embeds": []}])
async def test_empty_messages_are_refused(api: Any, payload: dict[str, Any]) -> None:
    emu, session = api
    status, body = await _post(
        session, f"{emu.api_base}/channels/{emu.general.id}/messages", payload
    )
    assert (status, body) == (400, {"code": 50006, "message": "Cannot send an empty message"})


async def test_message_crud_and_rate_limit_headers(api: Any) -> None:
    emu, session = api
    base = f"{emu.api_base}/channels/{emu.general.id}/messages"
    async with session.post(base, json={"content": f"hi <@{emu.owner.id}>"}) as created:
        assert created.status == 200
        for header in (
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "X-RateLimit-Reset-After",
            "X-RateLimit-Bucket",
        ):
            assert header in created.headers
        message = await created.json()
    assert message["author"]["id"] == str(emu.bot_user.id) and message["author"]["bot"] is True
    assert [m["id"] for m in message["mentions"]] == [str(emu.owner.id)]
    async with session.patch(f"{base}/{message['id']}", json={"content": "edited"}) as edited:
        assert (await edited.json())["edited_timestamp"] is not None
    stored = emu.message(int(message["id"]))
    assert stored.content == "edited" and stored.edits[0].content.startswith("hi")
    async with session.get(base, params={"limit": "10"}) as history:
        assert [m["content"] for m in await history.json()] == ["edited"]
    async with session.delete(f"{base}/{message['id']}") as deleted:
        assert deleted.status == 204
    async with session.get(f"{base}/{message['id']}") as gone:
        assert (gone.status, await gone.json()) == (
            404,
            {"message": "Unknown Message", "code": 10008},
        )


async def test_multipart_upload(api: Any) -> None:
    emu, session = api
    form = aiohttp.FormData(quote_fields=False)
    form.add_field(
        "payload_json",
        '{"content": "file", "attachments": [{"id": 0, "description": "pnl"}]}',
        content_type="application/json",
    )
    form.add_field("files[0]", b"a,b\n1,2\n", filename="pnl.csv", content_type="text/csv")
    async with session.post(
        f"{emu.api_base}/channels/{emu.general.id}/messages", data=form
    ) as response:
        body = await response.json()
        assert response.status == 200, body
    attachment = body["attachments"][0]
    assert (attachment["filename"], attachment["description"], attachment["size"]) == (
        "pnl.csv",
        "pnl",
        8,
    )
    async with session.get(attachment["url"]) as download:
        assert await download.read() == b"a,b\n1,2\n"


async def test_auth_errors_and_unknown_objects(api: Any) -> None:
    emu, session = api
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{emu.api_base}/channels/{emu.general.id}") as response:
            assert (response.status, await response.json()) == (
                401,
                {"message": "401: Unauthorized", "code": 0},
            )
        async with anonymous.get(
            f"{emu.api_base}/users/@me", headers={"Authorization": "Bearer nope"}
        ) as response:
            assert response.status == 401
    async with session.get(f"{emu.api_base}/channels/1234567890123456789") as response:
        assert (response.status, await response.json()) == (
            404,
            {"message": "Unknown Channel", "code": 10003},
        )
    async with session.get(
        f"{emu.api_base}/guilds/{emu.guild.id}/members/1234567890123456789"
    ) as response:
        assert (response.status, (await response.json())["code"]) == (404, 10007)
    async with session.get(
        f"{emu.api_base}/guilds/{emu.guild.id}", params={"with_counts": "true"}
    ) as response:
        guild = await response.json()
        assert guild["approximate_member_count"] == 2 and guild["owner_id"] == str(emu.owner.id)


async def test_unmodelled_routes_are_recorded(api: Any) -> None:
    emu, session = api
    async with session.get(f"{emu.api_base}/guilds/{emu.guild.id}/audit-logs") as response:
        assert (response.status, await response.json()) == (
            404,
            {"message": "404: Not Found", "code": 0},
        )
    async with session.put(f"{emu.api_base}/channels/{emu.general.id}") as response:
        assert (response.status, await response.json()) == (
            405,
            {"message": "405: Method Not Allowed", "code": 0},
        )
    assert emu.unmodelled_requests == [
        ("GET", f"/api/v10/guilds/{emu.guild.id}/audit-logs"),
        ("PUT", f"/api/v10/channels/{emu.general.id}"),
    ]


async def test_rate_limits_are_enforced_and_understood(
    discord_errors: Any, pointed_at: Callable[..., Any], run_bot: Callable[..., Any], caplog: Any
) -> None:
    async with DiscordEmulator(bot_token=TOKEN, rate_limit=(2, 0.3)) as emu:
        async with aiohttp.ClientSession(headers=BOT) as session:
            url = f"{emu.api_base}/channels/{emu.trade_alerts.id}/messages"
            statuses = []
            for _ in range(3):
                async with session.post(url, json={"content": "x"}) as response:
                    statuses.append(response.status)
                    last = response
                    body = await response.json()
            assert statuses == [200, 200, 429]
            assert body["global"] is False and 0 < body["retry_after"] <= 0.3
            assert last.headers["X-RateLimit-Remaining"] == "0" and "Retry-After" in last.headers
        await asyncio.sleep(0.35)
        with pointed_at(emu):
            bot = commands.Bot(
                command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05
            )
            async with run_bot(bot, TOKEN):
                channel = bot.get_channel(emu.general.id)
                # discord.py reads the headers and waits instead of hitting 429s.
                with caplog.at_level(logging.WARNING, logger="discord"):
                    sent = [await channel.send(f"m{i}") for i in range(5)]
                assert [m.content for m in sent] == [f"m{i}" for i in range(5)]
                assert not [r for r in caplog.records if "rate limited" in r.getMessage()]


async def test_the_notifier_tells_a_refusing_channel_from_a_passing_failure(
    bot: Any, emu: DiscordEmulator
) -> None:
    """Tradecord's services learn that an alert channel refuses posts for good (they tell the
    strategy's owner) as ``ChannelUnavailable``, without seeing discord.py's errors."""
    from bot.notifier import DiscordNotifier
    from bot.services.notify import ChannelUnavailable, Outgoing

    notifier = DiscordNotifier(bot.http)
    await notifier.post(emu.trade_alerts.id, Outgoing(content="alert"))
    bot_role = next(r for r in emu.guild.roles.values() if r.bot_id == emu.bot_user.id)
    emu.set_permission_overwrite(emu.trade_alerts.id, bot_role.id, deny=permissions.SEND_MESSAGES)
    with pytest.raises(ChannelUnavailable):
        await notifier.post(emu.trade_alerts.id, Outgoing(content="alert"))
    with pytest.raises(ChannelUnavailable):  # deleted: Discord answers 10003 Unknown Channel
        await notifier.post(emu.trade_alerts.id + 12345, Outgoing(content="alert"))
    with pytest.raises(discord.HTTPException) as bad:  # our mistake, not the channel's
        await notifier.post(emu.general.id, Outgoing(content="x" * 2001))
    assert not isinstance(bad.value, discord.Forbidden | discord.NotFound)


async def test_discord_py_sees_discord_errors(bot: Any, emu: DiscordEmulator) -> None:
    channel = bot.get_channel(emu.general.id)
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.code == 50035 and "content" in too_long.value.text

    bot_role = next(r for r in emu.guild.roles.values() if r.bot_id == emu.bot_user.id)
    emu.set_permission_overwrite(emu.trade_alerts.id, bot_role.id, deny=permissions.SEND_MESSAGES)
    alerts = bot.get_channel(emu.trade_alerts.id)
    with pytest.raises(discord.Forbidden) as forbidden:
        await alerts.send("alert")
    assert forbidden.value.code == 50013

    stranger = emu.add_user("stranger")
    user = await bot.fetch_user(stranger.id)
    with pytest.raises(discord.Forbidden) as no_dm:
        await user.send("hello")
    assert no_dm.value.code == 50007

    member = emu.add_user("member")
    emu.add_member(emu.guild.id, member.id)
    emu.set_dms_open(member.id, False)
    with pytest.raises(discord.Forbidden):
        await (await bot.fetch_user(member.id)).send("hello")
    emu.set_dms_open(member.id, True)
    dm = await (await bot.fetch_user(member.id)).send("hello")
    assert emu.dm_messages(member.id)[0].id == dm.id


async def test_the_notifier_pings_nobody(bot: Any, emu: DiscordEmulator) -> None:
    """The notifier posts through discord.py's HTTP layer, where the client's default
    allowed_mentions does not apply: its own AllowedMentions.none() is all that stops alerts
    and DMs quoting member text from pinging."""
    from bot.notifier import DiscordNotifier
    from bot.services.notify import Outgoing

    alice = emu.add_user("alice")
    emu.add_member(emu.guild.id, alice.id)
    role = emu.add_role(emu.guild.id, "traders", 0, mentionable=True)
    text = f"<@{alice.id}> <@&{role.id}> @everyone"
    notifier = DiscordNotifier(bot.http)
    await notifier.post(emu.trade_alerts.id, Outgoing(content=text))
    await notifier.dm(alice.id, Outgoing(content=text))
    [posted] = emu.messages(emu.trade_alerts.id)
    [dm] = emu.dm_messages(alice.id)
    for message in (posted, dm):
        assert message.content == text
        assert message.mentions == [] and message.mention_roles == []
        assert not message.mention_everyone


async def test_a_message_of_buttons_alone_is_not_empty(api: Any) -> None:
    """Create Message: "apps must provide a value for at least one of content, embeds,
    sticker_ids, components, files[n], or poll". Refused here with 50006, buttons alone would
    fail every local test of a bot that works on Discord."""
    emu, session = api
    url = f"{emu.api_base}/channels/{emu.general.id}/messages"
    status, body = await _post(session, url, {"components": [_row(_button("refresh"))]})
    assert status == 200, body
    status, body = await _post(session, url, {"components": []})
    assert (status, body["code"]) == (400, 50006)


async def test_new_content_without_allowed_mentions_is_parsed_with_default_allowances(
    api: Any,
) -> None:
    """Edit Message: with no allowed_mentions in the edit, "the content will be parsed with
    default allowances, that is, without regard to whether or not an allowed_mentions was
    present in the request that originally created the message". The emulator kept the
    creation's, so an edit that pings on Discord pinged no one in tests."""
    emu, session = api
    alice = emu.add_user("alice")
    emu.add_member(emu.guild.id, alice.id)
    url = f"{emu.api_base}/channels/{emu.general.id}/messages"
    status, created = await _post(
        session, url, {"content": f"hi <@{alice.id}>", "allowed_mentions": {"parse": []}}
    )
    assert status == 200 and created["mentions"] == []
    async with session.patch(f"{url}/{created['id']}", json={"content": f"<@{alice.id}>"}) as r:
        edited = await r.json()
    assert [u["id"] for u in edited["mentions"]] == [str(alice.id)]


async def test_an_embed_timestamp_must_be_iso8601(api: Any) -> None:
    """Embed Structure: "timestamp? | ISO8601 timestamp"."""
    emu, session = api
    url = f"{emu.api_base}/channels/{emu.general.id}/messages"
    status, body = await _post(session, url, {"embeds": [{"title": "Fill", "timestamp": "now"}]})
    assert status == 400 and form_errors(body, "embeds", 0, "timestamp")
    stamp = "2026-11-29T13:30:00.000000+00:00"  # as discord.py writes it
    status, body = await _post(session, url, {"embeds": [{"title": "Fill", "timestamp": stamp}]})
    assert status == 200, body
