"""The /connect flow's web routes: link page, Discord sign-in callback, broker callback."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.components import account_menus, no_accounts_text
from bot.core import Core
from bot.errors import TradecordError
from bot.models import ConnectionStatus
from bot.services.linking import Linked, LinkRefused
from bot.services.notify import Outgoing
from web.app import public_path
from web.pages import FLOW_COOKIE, origin, page, redirect, security_headers

log = logging.getLogger("tradecord.web.connect")
CORE = web.AppKey("connect_core", Core)
PATH_PREFIX = web.AppKey("connect_path_prefix", str)  # PUBLIC_URL's path, "" for none
# Discord messages still being sent after their success page went out: referenced here so the
# loop does not drop them, and waited for at shutdown.
ANNOUNCING = web.AppKey("connect_announcing", set)
# How long the success page waits for its Discord message: a slow or rate-limited Discord must
# not hold the page until a proxy in front gives up on it.
ANNOUNCE_WAIT = 3.0


def _discord_origin(core: Core) -> tuple[str, ...]:
    return (origin(core.settings.discord_authorize_url),)


def _secure(core: Core) -> bool:
    return core.settings.public_url.startswith("https://")


def _refused(e: TradecordError) -> web.Response:
    if isinstance(e, LinkRefused):
        return page(e.title, [e.user_message], status=e.status, kind="bad")
    return page("Nothing was linked", [e.user_message], status=400, kind="bad")


async def link_page(request: web.Request) -> web.Response:
    core = request.app[CORE]
    token = request.match_info["token"]
    try:
        link = await core.linking.open_link(token)
    except TradecordError as e:
        return _refused(e)
    broker = core.linking.broker_name(link.broker)
    return page(
        f"Connect {broker}",
        [
            f"This links your {broker} account to your Discord account in Tradecord.",
            "First sign in with Discord, so we know this browser is yours; then sign in at "
            f"{broker} and allow access. Tradecord can read your accounts and place and cancel "
            "orders. It can never move money.",
            "This link works once and expires 10 minutes after you ran /connect.",
        ],
        # Relative: it resolves under PUBLIC_URL's path, which a reverse proxy may add.
        form_action=token,
        button="Continue with Discord",
        form_targets=_discord_origin(core),
    )


async def link_submit(request: web.Request) -> web.Response:
    core = request.app[CORE]
    try:
        nxt = await core.linking.begin(request.match_info["token"])
    except TradecordError as e:
        return _refused(e)
    return redirect(
        nxt.url, cookie=nxt.set_cookie, secure=_secure(core), form_targets=_discord_origin(core)
    )


def _params(request: web.Request) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for key, value in request.query.items():
        params.setdefault(key, []).append(value)
    return params


async def discord_callback(request: web.Request) -> web.Response:
    core = request.app[CORE]
    try:
        nxt = await core.linking.finish_discord(_params(request), request.cookies.get(FLOW_COOKIE))
    except TradecordError as e:
        return _refused(e)
    # Renews the flow cookie for the broker's step (see LinkingService._to_broker).
    return redirect(nxt.url, cookie=nxt.set_cookie, secure=_secure(core))


async def broker_callback(request: web.Request) -> web.Response:
    core = request.app[CORE]
    broker = request.match_info["broker"]
    try:
        linked = await core.linking.finish_broker(
            broker, _params(request), request.cookies.get(FLOW_COOKIE)
        )
    except TradecordError as e:
        return _refused(e)
    told = await _announce_in_time(request.app, core, linked)
    conn = linked.connection
    broker_name = core.linking.broker_name(conn.broker)
    # Members who turned off DMs from server members get no message: the page must not point
    # them to one, but to the command that does the same.
    accounts = f"/accounts connection:{conn.name}"
    again = linked.relinked and conn.status == ConnectionStatus.ACTIVE
    if again:
        lines = [
            f"Your {broker_name} login is linked again to “{conn.name}”.",
            "It trades in the accounts it had, with its subscriptions; "
            + (
                "Discord has a message with the details. /accounts changes the accounts."
                if told
                else "a message with the details is on its way to Discord but may come late; "
                f"{accounts} in Discord shows and changes them meanwhile."
                if told is None
                else f"{accounts} in Discord shows and changes them."
            ),
        ]
    else:
        lines = [
            f"Your {broker_name} login is linked as “{conn.name}”.",
            "Return to Discord: in the message we sent you, choose which account to trade "
            "(trading stays off until you do). You can also use /accounts there."
            if told
            else "Return to Discord and choose which account to trade (trading stays off "
            "until you do). Our message there may come late: "
            f"{accounts} shows the same choice now."
            if told is None
            else "Return to Discord and run "
            f"{accounts} to choose which account to trade (trading stays off until you do). "
            "We could not send you a message there: your privacy settings may not allow "
            "direct messages from this server's members.",
        ]
    # No menu to choose from in Discord: the page says why, and what to run instead (one
    # linked again keeps trading in its accounts meanwhile).
    if linked.accounts_error and not again:
        lines[1:] = [
            f"We could not list your {broker_name} accounts yet: {linked.accounts_error} "
            f"In a few minutes, run {accounts} in Discord to choose which account to trade "
            "(trading stays off until you do)."
        ]
    elif not linked.accounts_error and not account_menus(conn, linked.accounts, linked.held):
        lines[1:] = [no_accounts_text(conn.name)]
    if linked.dropped:
        lines.append(await _dropped(core, linked))
    resp = page(f"{conn.name} is linked", [*lines, "You can close this tab."], kind="ok")
    resp.del_cookie(FLOW_COOKIE, path="/")
    return resp


async def _announce_in_time(app: web.Application, core: Core, linked: Linked) -> bool | None:
    """Whether the Discord message was sent, waiting at most ``ANNOUNCE_WAIT``; None: it is
    still being sent, and finishes in the background."""
    task = asyncio.create_task(_announce(core, linked))
    pending: set[asyncio.Task[bool]] = app[ANNOUNCING]
    pending.add(task)
    task.add_done_callback(pending.discard)
    done, _ = await asyncio.wait({task}, timeout=ANNOUNCE_WAIT)
    if task in done:
        return task.result()
    log.info("The message about connection %s is late; the page did not wait", linked.connection.id)
    return None


async def _announce(core: Core, linked: Linked) -> bool:
    """Tell the member in Discord, with menus to choose the accounts; whether it was sent.
    Never raises: it may run on after the page went out, with no one to raise to."""
    if core.notifier is None:
        return False
    try:
        member = await core.connections.member_of(linked.connection)
        await core.notifier.dm(member.discord_user_id, await account_choice_message(core, linked))
    except Exception as e:
        log.warning(
            "Could not DM the member about connection %s (%s)",
            linked.connection.id,
            type(e).__name__,
        )
        return False
    return True


async def _finish_announcing(app: web.Application) -> None:
    """At shutdown (before Discord closes), give late messages a moment, then stop them."""
    pending = set(app[ANNOUNCING])
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=ANNOUNCE_WAIT)
    for task in late:
        log.warning("Shutting down: a message about a new connection was not sent")
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)


async def account_choice_message(core: Core, linked: Linked) -> Outgoing:
    conn = linked.connection
    again = linked.relinked and conn.status == ConnectionStatus.ACTIVE
    if again:
        chosen = ", ".join(f"{a.mode}: {a.label}" for a in conn.accounts)
        lines = [
            f"✅ **{conn.name}** is linked again and trades as before ({chosen}), "
            "subscriptions included. To trade in other accounts, choose them below."
        ]
    elif linked.accounts_error:
        # No menus to point "below" to: the line added further down says what to run.
        lines = [
            f"✅ **{conn.name}** is linked; trading on this connection stays off until you "
            "choose its accounts."
        ]
    else:
        lines = [
            f"✅ **{conn.name}** is linked. Choose the accounts to trade below; trading on "
            "this connection stays off until you do."
        ]
    menus = account_menus(conn, linked.accounts, linked.held)
    if not menus and not linked.accounts_error:
        lines = [f"✅ **{conn.name}** is linked.", no_accounts_text(conn.name)]
    if linked.dropped:
        lines.append(await _dropped(core, linked))
    if linked.accounts_error:
        lines.append(
            f"We could not list your accounts yet: {linked.accounts_error} "
            f"Use /accounts connection:{conn.name} to choose them later."
        )
    return Outgoing(content="\n".join(lines), components=menus)


async def _dropped(core: Core, linked: Linked) -> str:
    """The accounts a re-link's login cannot reach, and the subscriptions that trade nothing
    until another is chosen: the member would otherwise find out from a signal skipped."""
    conn = linked.connection
    text = (
        f"The login you signed in with cannot reach {', '.join(linked.dropped)}, so "
        f"“{conn.name}” no longer trades there; choose its account again."
    )
    try:
        subscriptions = await core.subscriptions.on_connection(conn.id)
    except Exception:
        # The connection is saved: the page and the message must still say so.
        log.warning("Could not read the subscriptions of connection %s", conn.id, exc_info=True)
        return text
    stopped = [s for s in subscriptions if not s.account_type]
    if not stopped:
        return text
    named = [f"“{s.strategy_name}” ({s.mode})" for s in stopped[:3]]
    more = f" and {len(stopped) - 3} more" if len(stopped) > 3 else ""
    return f"{text} Until you do, nothing trades for its subscriptions to {', '.join(named)}{more}."


CONNECT_PREFIXES = ("/connect/", "/auth/discord/", "/oauth/")


@web.middleware
async def strict_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unexpected error on these pages (a bug, the database away) still answers with the
    strict headers of requirement 5, not aiohttp's bare 500. Logged by route, never by URL:
    the URL holds the one-time link token or the code and state."""
    path = request.path.removeprefix(request.app[PATH_PREFIX])
    if not path.startswith(CONNECT_PREFIXES):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as e:
        # aiohttp's own answers too (a POST to a callback: 405), which a cache must not keep.
        for name, value in security_headers().items():
            e.headers.setdefault(name, value)
        raise
    except Exception:
        route = request.match_info.route.resource
        log.exception("Unexpected error on %s", route.canonical if route else "a /connect page")
        return page(
            "Nothing was linked",
            ["Something went wrong on our side. Run /connect in Discord again in a moment."],
            status=500,
            kind="bad",
        )


def setup(app: web.Application, core: Core) -> None:
    app[CORE] = core
    app[PATH_PREFIX] = public_path(core.settings.public_url)
    app[ANNOUNCING] = set()
    app.on_shutdown.append(_finish_announcing)
    app.middlewares.append(strict_errors)
    app.router.add_get("/connect/{token}", link_page)
    app.router.add_post("/connect/{token}", link_submit)
    app.router.add_get("/auth/discord/callback", discord_callback)
    app.router.add_get("/oauth/{broker}/callback", broker_callback)
