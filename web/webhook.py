"""``POST /webhook/{strategy_id}/{secret}``: signals in TradersPost's webhook format.

Order of checks, each answered with TradersPost's body (``{success, messageCode, message}``, its
message codes) and the status our security requirements name where TradersPost's differs (a
sender such as TradingView looks at neither): a declared body over 16 KiB is refused before
anything else (413); then the secret (401, the same for an unknown strategy and a wrong
secret); then the strategy's allow-list, judged on the TCP peer, or on the ``X-Forwarded-For``
hop a configured trusted proxy appended (403; 400 for a malformed hop); then the body is read,
refusing at the 16 KiB mark while reading (413); then the signals service stores it and answers
(202, 200 duplicate, 400 refused, 429).

The URL holds the secret: nothing here logs the path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from bot.services.strategies import TRADINGVIEW, source_networks
from bot.signal_format import MAX_BODY_BYTES
from web.app import CORE

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Parsed from the TRUSTED_PROXIES setting when the app is built; tests may replace it.
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple)
ROUTE = "/webhook/{strategy_id}/{secret}"

UNAUTHORIZED = {
    "success": False,
    "messageCode": "invalid-password",
    # One answer for a wrong password and an unknown or deleted strategy: which one is not
    # told, so strategy ids cannot be probed.
    "message": "This webhook URL is not valid: its password is not correct (the secret was "
    "rotated?), or its strategy was deleted. Its owner gets a new URL with /strategy "
    "rotate-secret; /strategy list shows the strategies that exist.",
}


class MalformedForwardedFor(ValueError):
    """A trusted proxy sent an X-Forwarded-For we cannot read."""


def parse_trusted_proxies(raw: str) -> tuple[IPNetwork, ...]:
    """``TRUSTED_PROXIES``: comma-separated IP addresses or CIDR ranges."""
    nets = []
    for part in (p.strip() for p in raw.split(",")):
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    return tuple(nets)


def setup(app: web.Application) -> None:
    settings = app[CORE].settings
    app[TRUSTED_PROXIES] = parse_trusted_proxies(settings.trusted_proxies)
    app.router.add_route("*", ROUTE, webhook)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"success": False, "messageCode": code, "message": message}, status=status
    )


def _address(text: str) -> IPAddress:
    addr = ipaddress.ip_address(text.strip().split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _within(addr: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    return any(addr.version == n.version and addr in n for n in nets)


def client_address(request: web.Request, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """Who sent the request: the TCP peer, unless the peer is a trusted proxy; then, walking
    ``X-Forwarded-For`` from the right, the first hop that is not a trusted proxy. Hops a
    client wrote itself sit to the left of what our proxies appended and are never reached.
    ``MalformedForwardedFor`` when a hop we must read is not an address."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return None
    try:
        addr = _address(str(peer[0]))
    except ValueError:
        return None
    hops = [
        h.strip()
        for value in request.headers.getall("X-Forwarded-For", [])
        for h in value.split(",")
        if h.strip()
    ]
    while hops and _within(addr, trusted):
        try:
            addr = _address(hops.pop())
        except ValueError:
            raise MalformedForwardedFor from None
    return addr


async def _read_body(request: web.Request) -> bytes | None:
    """The body, or None once it passes the limit (the rest is never read into memory)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)


def _too_large() -> web.Response:
    return _error(
        413,
        "payload-too-large",
        f"The signal is larger than {MAX_BODY_BYTES // 1024} KiB. Send only the signal "
        "fields; put long notes elsewhere.",
    )


async def webhook(request: web.Request) -> web.StreamResponse:
    core = request.app[CORE]
    received = core.signals.clock()
    if request.method != "POST":
        return _error(
            400, "post-required", "The HTTP POST method is required for this trade signal."
        )
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return _too_large()
    auth = await core.strategies.authenticate(
        request.match_info["strategy_id"], request.match_info["secret"]
    )
    if auth is None:
        return web.json_response(UNAUTHORIZED, status=401)
    try:
        addr = client_address(request, request.app[TRUSTED_PROXIES])
    except MalformedForwardedFor:
        if auth.allowed_sources:
            return _error(
                400,
                "invalid-ip-address-format",
                "The forwarded client address is not an IPv4 or IPv6 address.",
            )
        addr = None
    if auth.allowed_sources and (
        addr is None or not _within(addr, source_networks(auth.allowed_sources))
    ):
        if list(auth.allowed_sources) == [TRADINGVIEW]:
            return _error(
                403,
                "not-trading-view",
                "The trade signal did not come from TradingView. This strategy only "
                "accepts trade signals from TradingView.",
            )
        seen = f" It came from {addr}." if addr is not None else ""
        return _error(
            403,
            "invalid-ip-address",
            "The trade signal did not come from one of this strategy's allowed IP addresses."
            f"{seen} Its owner can add the address with /strategy settings allowed_sources "
            "(none allows any address).",
        )
    body = await _read_body(request)
    if body is None:
        return _too_large()
    ack = await core.signals.receive(
        auth, body, source_ip=str(addr) if addr else None, received_at=received
    )
    return web.json_response(ack.body, status=ack.status, headers=ack.headers)
