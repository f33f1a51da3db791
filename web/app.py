"""The aiohttp app embedded in the bot's event loop (or run alone as a web process)."""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from aiohttp import web

from bot.core import Core
from bot.errors import ConfigurationError

CORE = web.AppKey("core", Core)


async def healthz(request: web.Request) -> web.Response:
    core = request.app[CORE]
    async with core.db.session() as s:
        await s.connection()  # proves the database answers
    return web.json_response({"status": "ok"})


def public_path(public_url: str) -> str:
    """The path of ``PUBLIC_URL`` ("" for none): Tradecord served under a reverse proxy's
    path, e.g. ``https://example.org/tradecord``."""
    return urlsplit(public_url).path.rstrip("/")


def create_app(core: Core) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[CORE] = core
    app.router.add_get("/healthz", healthz)
    from web.webhook import setup as setup_webhook  # imports CORE from here: after it exists

    setup_webhook(app)
    from web.connect import setup as setup_connect

    setup_connect(app, core)
    prefix = public_path(core.settings.public_url)
    if prefix:
        # Every route also under PUBLIC_URL's path: a proxy that passes the path on as it came
        # and one that strips it both reach Tradecord, whichever way the admin set it up.
        for route in list(app.router.routes()):
            app.router.add_route(route.method, prefix + route.resource.canonical, route.handler)
    return app


def app_runner(core: Core) -> web.AppRunner:
    """The runner every process serves the app with. No access log: webhook URLs carry their
    strategy's secret in the path."""
    return web.AppRunner(create_app(core), access_log=None)


async def start_site(runner: web.AppRunner, host: str, port: int) -> int:
    """Listen on ``host:port`` and return the port (``WEB_PORT=0`` picks one).

    A port taken or an address not on this machine is a setting to change, not a crash.
    """
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except socket.gaierror:  # a name that does not resolve
        raise _not_here(host) from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"WEB_PORT: {host}:{port} is already in use; stop what listens there or "
                "choose another port"
            ) from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise _not_here(host) from None
        raise
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return sockets[0].getsockname()[1] if sockets else port


def _not_here(host: str) -> ConfigurationError:
    return ConfigurationError(
        f"WEB_HOST: {host} is not an address of this machine; use 127.0.0.1 behind a reverse proxy"
    )
