"""The aiohttp app embedded in the bot's event loop (or run alone as a web process)."""

from __future__ import annotations

from aiohttp import web

from bot.core import Core

CORE = web.AppKey("core", Core)


async def healthz(request: web.Request) -> web.Response:
    core = request.app[CORE]
    async with core.db.session() as s:
        await s.connection()  # proves the database answers
    return web.json_response({"status": "ok"})


def create_app(core: Core) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[CORE] = core
    app.router.add_get("/healthz", healthz)
    from web.webhook import setup as setup_webhook  # imports CORE from here: after it exists

    setup_webhook(app)
    from web.connect import setup as setup_connect

    setup_connect(app, core)
    return app
