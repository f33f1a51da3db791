"""The gateway: HELLO/IDENTIFY/READY/GUILD_CREATE, heartbeats, RESUME, sharding and dispatch.

Each IDENTIFY creates a :class:`GatewaySession`. Events for a guild go to the sessions whose
shard owns it (``(guild_id >> 22) % shard_count == shard_id``); DMs go to shard 0. Frames are
written by one writer task per connection so that the order of events is the order in which
they were dispatched, as Discord guarantees with sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from .errors import EmulatorError
from .state import JSON, World

# Intents that gate what the emulator sends.
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_PRESENCES = 1 << 8
GUILD_MESSAGES = 1 << 9
DIRECT_MESSAGES = 1 << 12
MESSAGE_CONTENT = 1 << 15
PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
#: Every intent Discord defines today (what discord.py's ``Intents.all()`` sends).
KNOWN_INTENTS = 53608447

HEARTBEAT_INTERVAL_MS = 41250
REPLAY_BUFFER = 2000
#: Gateway commands allowed per 60 s before Discord closes with 4008.
COMMAND_LIMIT = 120

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def shard_for(guild_id: int, shard_count: int) -> int:
    return (guild_id >> 22) % shard_count


class GatewaySession:
    """One identified bot session (one shard of one process), surviving reconnects via RESUME."""

    def __init__(
        self,
        hub: GatewayHub,
        *,
        shard: tuple[int, int] | None,
        intents: int,
        resume_url: str,
    ) -> None:
        self.hub = hub
        self.session_id = secrets.token_hex(16)
        self.shard_requested = shard is not None
        self.shard_id, self.shard_count = shard or (0, 1)
        self.intents = intents
        self.resume_url = resume_url
        self.seq = 0
        self.buffer: deque[tuple[int, str]] = deque(maxlen=REPLAY_BUFFER)
        self.connection: GatewayConnection | None = None
        self.invalidated = False
        self.presence: JSON | None = None
        self.created_at = time.monotonic()

    def __repr__(self) -> str:
        return (
            f"<GatewaySession shard={self.shard_id}/{self.shard_count} connected={self.connected}>"
        )

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.closed

    def owns_guild(self, guild_id: int | None) -> bool:
        if guild_id is None:
            return self.shard_id == 0
        return shard_for(guild_id, self.shard_count) == self.shard_id

    def has(self, intent: int) -> bool:
        return bool(self.intents & intent)

    def dispatch(self, event: str, data: JSON | str) -> int:
        """Queue an op 0 event; kept for replay so a RESUME gets what it missed."""
        self.seq += 1
        body = data if isinstance(data, str) else _DUMPS(data)
        frame = f'{{"t":"{event}","s":{self.seq},"op":0,"d":{body}}}'
        self.buffer.append((self.seq, frame))
        if self.connection is not None:
            self.connection.send(frame)
        return self.seq


class GatewayConnection:
    """One websocket. Owns the writer task and the optional zlib-stream compressor.

    Frames go through one writer task so that they leave in dispatch order even when the
    socket applies back-pressure; a deque plus a wake-up future keeps that hop cheap.
    """

    def __init__(self, ws: web.WebSocketResponse, *, compress: bool) -> None:
        self.ws = ws
        # Level 1: the stream is what zlib-stream clients expect, at a fraction of the CPU.
        self._compressor = zlib.compressobj(1) if compress else None
        self._pending: deque[str | tuple[int, str] | None] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._writer = asyncio.create_task(
            self._write_loop(), name="discord-emulator-gateway-writer"
        )
        self.session: GatewaySession | None = None
        self.closed = False
        self._commands: deque[float] = deque()

    def _push(self, item: str | tuple[int, str] | None) -> None:
        self._pending.append(item)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def send(self, frame: str) -> None:
        if not self.closed:
            self._push(frame)

    def close_with(self, code: int, reason: str) -> None:
        """Close after everything queued before it has been written."""
        if not self.closed:
            self._push((code, reason))

    def over_rate_limit(self) -> bool:
        now = time.monotonic()
        self._commands.append(now)
        while self._commands and now - self._commands[0] > 60:
            self._commands.popleft()
        return len(self._commands) > COMMAND_LIMIT

    async def _write_loop(self) -> None:
        ws = self.ws
        pending = self._pending
        loop = asyncio.get_running_loop()
        while True:
            if not pending:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            item = pending.popleft()
            if item is None:
                return
            if isinstance(item, tuple):
                self.closed = True
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.close(code=item[0], message=item[1].encode())
                return
            try:
                if self._compressor is not None:
                    c = self._compressor
                    await ws.send_bytes(c.compress(item.encode()) + c.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await ws.send_str(item)
            except (ConnectionError, RuntimeError):
                self.closed = True
                return

    async def shutdown(self) -> None:
        self.closed = True
        self._push(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer


class GatewayHub:
    """All gateway sessions of the emulated application, and the websocket endpoint."""

    def __init__(
        self,
        world: World,
        *,
        bot_token: str,
        application_flags: int,
        privileged_intents: int,
        compression: bool = False,
    ) -> None:
        self.world = world
        self.compression = compression
        self.bot_token = bot_token
        self.application_flags = application_flags
        self.privileged_intents = privileged_intents
        self.sessions: dict[str, GatewaySession] = {}
        self._connections: set[GatewayConnection] = set()
        self._ready_waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    # ------------------------------------------------------------------ routing

    def live_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if not s.invalidated]

    def sessions_for(self, guild_id: int | None) -> list[GatewaySession]:
        return [s for s in self.live_sessions() if s.owns_guild(guild_id)]

    def session_for(self, guild_id: int | None) -> GatewaySession:
        """The session an interaction in ``guild_id`` (None: a DM) is delivered to."""
        candidates = self.sessions_for(guild_id)
        connected = [s for s in candidates if s.connected]
        pool = connected or candidates
        if not pool:
            where = "DMs" if guild_id is None else f"guild {guild_id}"
            shards = sorted({(s.shard_id, s.shard_count) for s in self.live_sessions()})
            raise EmulatorError(
                f"no bot gateway session handles {where} (connected shards: {shards or 'none'}); "
                "Discord would show 'This interaction failed'"
            )
        return pool[-1]

    def dispatch_guild(
        self, guild_id: int, event: str, data: JSON, *, intent: int = GUILDS
    ) -> None:
        body: str | None = None
        for session in self.sessions_for(guild_id):
            if session.has(intent):
                body = body or _DUMPS(data)
                session.dispatch(event, body)

    def dispatch_message(
        self,
        event: str,
        body: str,
        *,
        guild_id: int | None,
        author_id: int,
        mentions_bot: bool,
        redacted: Callable[[], str],
    ) -> None:
        """MESSAGE_* events; sessions without MESSAGE_CONTENT get ``redacted()`` instead.

        As on Discord, content stays visible in DMs, in the bot's own messages and in
        messages that mention the bot.
        """
        intent = GUILD_MESSAGES if guild_id is not None else DIRECT_MESSAGES
        blank: str | None = None
        visible_anyway = guild_id is None or author_id == self.world.bot.id or mentions_bot
        for session in self.sessions_for(guild_id):
            if not session.has(intent):
                continue
            if visible_anyway or session.has(MESSAGE_CONTENT):
                session.dispatch(event, body)
            else:
                blank = blank or redacted()
                session.dispatch(event, blank)

    def request_reconnect(self, shard_id: int | None = None) -> int:
        """Send op 7 RECONNECT (the bot should reconnect and RESUME). Returns sessions told."""
        told = 0
        for session in self.live_sessions():
            if session.connection is not None and (
                shard_id is None or session.shard_id == shard_id
            ):
                session.connection.send('{"op":7,"d":null,"s":null,"t":null}')
                told += 1
        return told

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._ready_waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        finally:
            with contextlib.suppress(ValueError):
                self._ready_waiters.remove(entry)

    def _check_waiters(self) -> None:
        for predicate, future in list(self._ready_waiters):
            if not future.done() and predicate():
                future.set_result(None)

    async def close(self) -> None:
        for connection in list(self._connections):
            connection.close_with(WSCloseCode.GOING_AWAY, "Emulator shutting down")
        for connection in list(self._connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection._writer, 2)
        self._connections.clear()

    # ------------------------------------------------------------------ websocket endpoint

    async def handle(self, request: web.Request, resume_url: str) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=4 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        version = request.query.get("v", "10")
        encoding = request.query.get("encoding", "json")
        # Discord honours compress=zlib-stream; discord.py reads plain text frames as well, so
        # the emulator compresses only when asked to (compression costs both sides CPU).
        compress = self.compression and request.query.get("compress") == "zlib-stream"
        connection = GatewayConnection(ws, compress=compress)
        self._connections.add(connection)
        connection.send(
            _DUMPS(
                {
                    "t": None,
                    "s": None,
                    "op": 10,
                    "d": {
                        "heartbeat_interval": HEARTBEAT_INTERVAL_MS,
                        "_trace": ['["discord-emulator",{"micros":0}]'],
                    },
                }
            )
        )
        if version not in ("9", "10"):
            connection.close_with(4012, "Invalid API version.")
        elif encoding != "json":
            # ETF is not emulated; discord.py only speaks JSON.
            connection.close_with(4002, "Error while decoding payload.")
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_frame(connection, msg.data, resume_url)
                elif msg.type is WSMsgType.BINARY:
                    self._on_frame(connection, msg.data.decode("utf-8", "replace"), resume_url)
                elif msg.type is WSMsgType.ERROR:
                    break
                if connection.closed:
                    break
        finally:
            await self._detach(connection, ws.close_code)
        return ws

    async def _detach(self, connection: GatewayConnection, close_code: int | None) -> None:
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            # A clean close (1000/1001) ends the session; anything else leaves it resumable.
            if close_code in (1000, 1001):
                session.invalidated = True
                self.sessions.pop(session.session_id, None)
        self._connections.discard(connection)
        await connection.shutdown()
        if not connection.ws.closed:
            with contextlib.suppress(Exception):
                await connection.ws.close()

    def _on_frame(self, connection: GatewayConnection, raw: str, resume_url: str) -> None:
        try:
            payload = json.loads(raw)
            op = payload["op"]
            data = payload.get("d")
        except (ValueError, KeyError, TypeError):
            connection.close_with(4002, "Error while decoding payload.")
            return
        if op != 1 and connection.over_rate_limit():
            connection.close_with(4008, "Rate limited.")
            return
        if op == 1:
            connection.send('{"t":null,"s":null,"op":11,"d":null}')
        elif op == 2:
            self._identify(connection, data, resume_url)
        elif op == 6:
            self._resume(connection, data)
        elif connection.session is None:
            connection.close_with(4003, "Not authenticated.")
        elif op == 3:
            connection.session.presence = data
        elif op == 4:
            pass  # voice is not emulated; Discord would answer with voice server events
        elif op == 8:
            self._request_members(connection.session, data)
        else:
            connection.close_with(4001, "Unknown opcode.")

    def _identify(self, connection: GatewayConnection, data: Any, resume_url: str) -> None:
        if connection.session is not None:
            connection.close_with(4005, "Already authenticated.")
            return
        if not isinstance(data, dict) or data.get("token") != self.bot_token:
            connection.close_with(4004, "Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or intents & ~KNOWN_INTENTS:
            connection.close_with(4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED & ~self.privileged_intents:
            connection.close_with(4014, "Disallowed intent(s).")
            return
        shard = data.get("shard")
        if shard is not None:
            if (
                not isinstance(shard, list)
                or len(shard) != 2
                or not all(isinstance(x, int) for x in shard)
                or shard[1] < 1
                or not 0 <= shard[0] < shard[1]
            ):
                connection.close_with(4010, "Invalid shard.")
                return
        session = GatewaySession(
            self,
            shard=(shard[0], shard[1]) if shard is not None else None,
            intents=intents,
            resume_url=resume_url,
        )
        session.presence = data.get("presence")
        self.sessions[session.session_id] = session
        session.connection = connection
        connection.session = session
        world = self.world
        guild_ids = [g for g in world.guilds if session.owns_guild(g)]
        bot = world.bot.to_json()
        bot.update(verified=True, mfa_enabled=False, email=None)
        ready: JSON = {
            "v": 10,
            "user_settings": {},
            "user": bot,
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": resume_url,
            "application": {"id": str(world.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["us-east", "us-central"],
            "auth": {},
            "_trace": ['["discord-emulator",{"micros":0}]'],
        }
        if session.shard_requested:
            ready["shard"] = [session.shard_id, session.shard_count]
        session.dispatch("READY", ready)
        if intents & GUILDS:
            for guild_id in guild_ids:
                session.dispatch(
                    "GUILD_CREATE",
                    world.guild_create_json(
                        guild_id,
                        members=bool(intents & GUILD_MEMBERS),
                        presences=bool(intents & GUILD_PRESENCES),
                    ),
                )
        self._check_waiters()

    def _resume(self, connection: GatewayConnection, data: Any) -> None:
        if not isinstance(data, dict) or data.get("token") != self.bot_token:
            connection.close_with(4004, "Authentication failed.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        if session is None or session.invalidated or not isinstance(seq, int) or seq > session.seq:
            connection.send('{"t":null,"s":null,"op":9,"d":false}')
            return
        missed = [frame for s, frame in session.buffer if s > seq]
        oldest = session.buffer[0][0] if session.buffer else session.seq + 1
        if seq + 1 < oldest and session.seq > seq:
            connection.send('{"t":null,"s":null,"op":9,"d":false}')
            return
        if session.connection is not None and session.connection is not connection:
            session.connection.close_with(4000, "Session resumed elsewhere.")
        session.connection = connection
        connection.session = session
        for frame in missed:
            connection.send(frame)
        session.dispatch("RESUMED", {"_trace": ['["discord-emulator",{"micros":0}]']})
        self._check_waiters()

    def _request_members(self, session: GatewaySession, data: Any) -> None:
        if not isinstance(data, dict):
            return
        raw_ids = data.get("guild_id")
        guild_ids = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        query = data.get("query")
        limit = int(data.get("limit") or 0)
        user_ids = data.get("user_ids")
        if isinstance(user_ids, str | int):
            user_ids = [user_ids]
        for raw in guild_ids:
            try:
                guild = self.world.guilds[int(str(raw))]
            except (KeyError, TypeError, ValueError):
                continue
            if not session.owns_guild(guild.id):
                continue
            not_found: list[str] = []
            if user_ids:
                members = []
                for uid in user_ids:
                    member = guild.members.get(int(str(uid)))
                    if member is None:
                        not_found.append(str(uid))
                    else:
                        members.append(member)
            else:
                prefix = (query or "").lower()
                members = [
                    m
                    for m in guild.members.values()
                    if self.world.users[m.user_id].username.startswith(prefix)
                    or (m.nick or "").lower().startswith(prefix)
                ]
                if limit:
                    members = members[:limit]
            chunks = [members[i : i + 1000] for i in range(0, len(members), 1000)] or [[]]
            for index, chunk in enumerate(chunks):
                body: JSON = {
                    "guild_id": str(guild.id),
                    "members": [m.to_json(self.world) for m in chunk],
                    "chunk_index": index,
                    "chunk_count": len(chunks),
                    "not_found": not_found if index == 0 else [],
                }
                if data.get("presences"):
                    body["presences"] = []
                if data.get("nonce") is not None:
                    body["nonce"] = data["nonce"]
                session.dispatch("GUILD_MEMBERS_CHUNK", body)
