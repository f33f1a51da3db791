"""Linking a broker account: /connect link → Discord sign-in → broker consent → callback.

Why each step exists:
- The /connect link is a bearer capability, so it is single use, short-lived, stored only as a
  hash, replaced by a newer /connect, and consumed only by a POST (link previews never spend it).
- Before anyone is sent to a broker, the browser signs in with Discord and must be the member
  who ran /connect: otherwise someone could send their link to a victim and have the victim's
  brokerage linked to the sender's Discord account.
- OAuth per RFC 9700: high-entropy state stored server side (hashed), single use whatever the
  outcome, 10 minutes, bound to member, broker and this browser (a cookie); PKCE S256 where the
  broker accepts it; the exact registered redirect URI; ``iss`` checked when sent; a reused
  authorization code is refused without calling the token endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from adapters.errors import BrokerError
from adapters.models import Account
from adapters.registry import get_adapter_class
from bot.brokers import broker_catalog
from bot.errors import InvalidInput, LimitReached, TradecordError
from bot.models import (
    Connection,
    ConnectionAccount,
    ConnectionStatus,
    ConnectLink,
    Credential,
    Member,
    OAuthState,
    UsedCode,
)
from bot.services import audit, oauth
from bot.services.credentials import verifier_binding
from bot.services.notify import Outgoing, dm_quietly
from bot.services.tokens import DbTokenProvider
from bot.vault import VaultError
from bot.wording import plain, plural

if TYPE_CHECKING:
    from bot.core import Core

log = logging.getLogger("tradecord.linking")

LINK_TTL = timedelta(minutes=10)
STATE_TTL = timedelta(minutes=10)


# RFC 6749 4.1.2.1 errors that retrying cannot fix: the client (this bot) is registered or
# configured wrongly at the authorization server.
SETUP_ERRORS = frozenset(
    {
        "invalid_request",
        "unauthorized_client",
        "invalid_scope",
        "unsupported_response_type",
        "invalid_client",
    }
)
# The authorization server's own trouble: a later try may pass.
BUSY_ERRORS = frozenset({"server_error", "temporarily_unavailable"})


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def printable(text: str, limit: int) -> str:
    """Text from a request, fit for one log line: control characters removed, at most
    ``limit`` characters (an ellipsis marks a cut)."""
    text = "".join(c for c in text if c.isprintable())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LinkRefused(TradecordError):
    """The flow stops here; ``user_message`` is shown on the page under ``title``."""

    code = "link-refused"

    def __init__(
        self, user_message: str, *, status: int = 400, title: str = "Nothing was linked"
    ) -> None:
        super().__init__(user_message)
        self.status = status
        self.title = title


# A link or sign-in used once is opened again by a reload, the back button or a second click
# on the Discord button, often after it linked the account: "Nothing was linked, run /connect
# again" would be false then, and would add a second connection.
def used_link() -> LinkRefused:
    return LinkRefused(
        "Each /connect link works once. If you finished linking with it, your connection is "
        "already in /accounts in Discord; otherwise run /connect again for a new link.",
        status=410,
        title="This link was already used",
    )


def finished_sign_in() -> LinkRefused:
    return LinkRefused(
        "This page cannot be opened twice (a reload or the back button does that). If it said "
        "your account was linked, it is: see /accounts in Discord. Otherwise run /connect "
        "again.",
        title="This sign-in already finished",
    )


@dataclass(frozen=True, slots=True)
class PlanUse:
    """A member's plan as it counts now, and the broker connections they have."""

    name: str
    limit: int
    used: int  # the built-in paper connection does not count
    retired: str | None = None  # the stored plan, when the settings no longer offer it

    @property
    def to_remove(self) -> int:
        """Connections to /disconnect before /connect adds one (0: it can now)."""
        return max(self.used - self.limit + 1, 0)

    @property
    def retired_note(self) -> str:
        """Says why the plan shown is not the one the member was given ("" when it is)."""
        if self.retired is None:
            return ""
        return f"Your earlier plan “{self.retired}” is no longer offered, so {self.name} applies."

    def full(self) -> str:
        """Why /connect adds no connection, and the two ways to let it."""
        n = self.to_remove
        # Over a lowered plan one removal is not enough: a member told "one" would be refused
        # again.
        remove = "Remove one with /disconnect" if n == 1 else f"Remove {n} of them with /disconnect"
        note = f"{self.retired_note} " if self.retired else ""
        return (
            f"{note}Your plan ({self.name}) allows {self.limit} broker "
            f"connection{plural(self.limit)} and you have {self.used}. {remove}, or ask a server "
            "admin to raise your plan with /plan set. (Tradecord Paper does not count.)"
        )


@dataclass(slots=True)
class Redirect:
    """Where the browser goes next. Always built from settings and stored state, never from
    the request."""

    url: str
    set_cookie: str | None = None


@dataclass(slots=True)
class Linked:
    connection: Connection
    accounts: list[Account] = field(default_factory=list)
    accounts_error: str | None = None
    relinked: bool = False  # an existing connection got new tokens; none was added
    dropped: list[str] = field(default_factory=list)  # chosen accounts the new login lacks
    held: dict[str, str] = field(default_factory=dict)  # account id → another connection's


class LinkingService:
    def __init__(self, core: Core) -> None:
        self.core = core

    # -- settings-derived addresses --------------------------------------------------------

    @property
    def public(self) -> str:
        return self.core.settings.public_url.rstrip("/")

    def redirect_uri(self, broker: str) -> str:
        return f"{self.public}/oauth/{broker}/callback"

    @property
    def discord_redirect_uri(self) -> str:
        return f"{self.public}/auth/discord/callback"

    def now(self) -> datetime:
        return self.core.connections.clock()

    @staticmethod
    def broker_name(key: str) -> str:
        return get_adapter_class(key).display_name

    def configured_brokers(self) -> list[str]:
        return [b.key for b in broker_catalog(self.core.settings) if b.configured and not b.builtin]

    # -- /connect ------------------------------------------------------------------------

    async def plan_of(self, discord_user_id: int) -> PlanUse:
        """The member's plan and connections in use; the built-in paper one does not count."""
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.session() as s:
            plan = await s.scalar(select(Member.plan).where(Member.id == member_id))
            used = await s.scalar(
                select(func.count())
                .select_from(Connection)
                .where(Connection.member_id == member_id, Connection.builtin.is_(False))
            )
        return self.plan_use(plan, int(used or 0))

    def plan_use(self, plan: str | None, used: int) -> PlanUse:
        """A stored plan no longer in the settings counts as, and is shown as, the default
        plan: /my-plan, /connect and the callback must all agree, and never name a plan an
        admin can no longer set with another plan's limit."""
        settings = self.core.settings
        if plan is not None and plan in settings.plans:
            return PlanUse(plan, settings.plans[plan], used)
        default = settings.plan_default
        return PlanUse(default, settings.plans[default], used, retired=plan)

    async def check_limit(self, discord_user_id: int, broker: str | None = None) -> None:
        """Refuse a new connection beyond the plan. Re-linking one the member was told to
        link again (``/connect`` for its broker) adds none, so it is never refused."""
        if broker is not None:
            member_id = await self.core.members.ensure(discord_user_id)
            async with self.core.db.session() as s:
                if await self._relink_target(s, member_id, broker) is not None:
                    return
        plan = await self.plan_of(discord_user_id)
        if plan.to_remove:
            raise LimitReached(plan.full())

    async def set_plan(
        self, discord_user_id: int, plan: str, *, by: int, guild_name: str | None
    ) -> tuple[PlanUse, bool]:
        """Set the member's plan as ``by`` in the server ``guild_name``: the plan now, and
        whether it changed. The member is told by DM: it changes what /connect allows them in
        every server, and otherwise they would learn it from a refusal."""
        settings = self.core.settings
        old, _ = await self.core.members.set_plan(discord_user_id, plan, settings.plans, by=by)
        now = await self.plan_of(discord_user_id)
        # Never set is the default plan; a retired one is not, whatever it counted as.
        changed = (old or settings.plan_default) != now.name
        if changed and by != discord_user_id:
            where = f" in **{plain(guild_name)}**" if guild_name else ""
            text = (
                f"<@{by}> set your Tradecord plan to **{now.name}**{where}: it allows "
                f"{now.limit} broker connection{plural(now.limit)} (Tradecord Paper does not "
                "count)."
            )
            if now.used > now.limit:
                text += (
                    f" You have {now.used}: they keep working, but /connect adds none until you "
                    f"/disconnect {now.to_remove} of them."
                )
            await dm_quietly(
                self.core.notifier, discord_user_id, Outgoing(text), about="a plan change"
            )
        return now, changed

    async def relink_target(self, discord_user_id: int, broker: str) -> Connection | None:
        """The connection a /connect for ``broker`` would link again rather than add one."""
        member_id = await self.core.members.ensure(discord_user_id)
        async with self.core.db.session() as s:
            return await self._relink_target(s, member_id, broker)

    async def start(self, discord_user_id: int, broker: str, environment: str | None) -> str:
        """A fresh private link; any older link of this member stops working, and so does a
        sign-in already under way from one (its callbacks are refused)."""
        if broker not in self.configured_brokers():
            raise InvalidInput(
                f"{broker} is not available on this server. /help lists the brokers you can "
                "connect."
            )
        if not self.core.settings.discord_client_id:
            raise InvalidInput(
                "Linking is not set up on this server yet (DISCORD_CLIENT_ID is missing). "
                "Ask the bot's owner."
            )
        offered = get_adapter_class(broker).connect_environments
        if environment is None:
            environment = offered[0]
        if environment not in offered:
            raise InvalidInput(
                f"{self.broker_name(broker)} can be linked for: {', '.join(offered)}. "
                f"Run /connect again with one of those."
            )
        await self.check_limit(discord_user_id, broker)
        member_id = await self.core.members.ensure(discord_user_id)
        token = secrets.token_urlsafe(32)
        now = self.now()
        async with self.core.db.transaction() as s:
            await s.execute(
                update(ConnectLink)
                .where(ConnectLink.member_id == member_id, ConnectLink.cancelled_at.is_(None))
                .values(cancelled_at=now)
            )
            link = ConnectLink(
                token_hash=digest(token),
                member_id=member_id,
                broker=broker,
                environment=environment,
                created_at=now,
                expires_at=now + LINK_TTL,
            )
            s.add(link)
            await s.flush()
            audit.record(
                s,
                "connect.started",
                member_id=member_id,
                broker=broker,
                environment=environment,
                link_id=link.id,
            )
        return f"{self.public}/connect/{token}"

    async def open_link(self, token: str) -> ConnectLink:
        """The link behind ``token`` if it can still be used (does not spend it)."""
        async with self.core.db.session() as s:
            link = await s.scalar(
                select(ConnectLink).where(ConnectLink.token_hash == digest(token))
            )
        self._check_link(link)
        assert link is not None
        return link

    def _check_link(self, link: ConnectLink | None) -> None:
        if link is None:
            raise LinkRefused(
                "This link is not valid. Run /connect in Discord for a new one.", status=404
            )
        if link.cancelled_at is not None:
            raise LinkRefused(
                "This link was replaced by a newer /connect. Use the newest link, "
                "or run /connect again.",
                status=410,
            )
        if link.used_at is not None:
            raise used_link()
        if link.expires_at <= self.now():
            raise LinkRefused(
                "This link expired (links last 10 minutes). Run /connect again.", status=410
            )

    # -- step 1: spend the link, sign in with Discord ---------------------------------------

    async def begin(self, token: str) -> Redirect:
        """POST on the link page: spend the link and send the browser to Discord sign-in."""
        link = await self.open_link(token)
        now = self.now()
        async with self.core.db.transaction() as s:
            spent = await s.execute(
                update(ConnectLink)
                .where(
                    ConnectLink.id == link.id,
                    ConnectLink.used_at.is_(None),
                    ConnectLink.cancelled_at.is_(None),
                    ConnectLink.expires_at > now,
                )
                .values(used_at=now)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                raise used_link()
        browser = secrets.token_urlsafe(32)
        state = secrets.token_urlsafe(32)
        verifier = oauth.new_code_verifier()
        await self._store_state(link, "discord", state, browser, verifier, issuer=None)
        params = {
            "response_type": "code",
            "client_id": self.core.settings.discord_client_id or "",
            "redirect_uri": self.discord_redirect_uri,
            "scope": "identify",
            "state": state,
            "prompt": "consent",
            "code_challenge": oauth.s256(verifier),
            "code_challenge_method": "S256",
        }
        return Redirect(
            f"{self.core.settings.discord_authorize_url}?{urlencode(params)}", set_cookie=browser
        )

    async def _store_state(
        self,
        link: ConnectLink,
        kind: str,
        state: str,
        browser: str,
        verifier: str | None,
        issuer: str | None,
    ) -> None:
        now = self.now()
        async with self.core.db.transaction() as s:
            row = OAuthState(
                state_hash=digest(state),
                kind=kind,
                link_id=link.id,
                member_id=link.member_id,
                broker=link.broker,
                issuer=issuer,
                browser_hash=digest(browser),
                created_at=now,
                expires_at=now + STATE_TTL,
            )
            s.add(row)
            await s.flush()
            if verifier is not None:
                member = await s.get(Member, link.member_id)
                assert member is not None
                row.code_verifier = self.core.vault.encrypt(verifier, verifier_binding(row, member))

    async def _consume(
        self, params: Mapping[str, list[str]], kind: str, broker: str | None, browser: str | None
    ) -> tuple[OAuthState, ConnectLink, Member, str | None]:
        """Validate a callback and spend its state — first, whatever happens next."""
        if any(len(params.get(name, [])) > 1 for name in ("state", "code", "error", "iss")):
            # Spend every state it names before refusing: a malformed answer must not leave
            # its state live for a later clean one (a state is single use whatever the outcome).
            await self._spend(params.get("state", []))
            raise LinkRefused(
                "The sign-in answer was malformed (a parameter appeared twice). "
                "Nothing was linked. Run /connect again."
            )
        state = (params.get("state") or [""])[0]
        if not state:
            raise LinkRefused(
                "The sign-in answer had no state. Nothing was linked. Run /connect again."
            )
        now = self.now()
        async with self.core.db.transaction() as s:
            row = await s.scalar(select(OAuthState).where(OAuthState.state_hash == digest(state)))
            if row is None:
                raise LinkRefused(
                    "This sign-in is not one Tradecord started. Nothing was linked. "
                    "Run /connect again."
                )
            spent = await s.execute(
                update(OAuthState)
                .where(OAuthState.id == row.id, OAuthState.consumed_at.is_(None))
                .values(consumed_at=now)
            )
            if spent.rowcount != 1:  # type: ignore[attr-defined]
                raise finished_sign_in()
        if row.expires_at <= now:
            raise LinkRefused("This sign-in took longer than 10 minutes. Run /connect again.")
        if row.kind != kind or (broker is not None and row.broker != broker):
            raise LinkRefused(
                "This sign-in answer arrived at the wrong address. Nothing was "
                "linked. Run /connect again."
            )
        async with self.core.db.session() as s:
            link = await s.get(ConnectLink, row.link_id)
            member = await s.get(Member, row.member_id)
        assert link is not None and member is not None
        # Before the browser check: a newer /connect opened in this same browser replaced the
        # cookie, and "another browser" would be wrong. The state is proven valid and spent
        # already, so the order tells an outsider nothing.
        if link.cancelled_at is not None:
            raise LinkRefused(
                "This sign-in was replaced by a newer /connect. Nothing was linked. Finish the "
                "newest one, or run /connect again."
            )
        # Its link and state are spent by now: only a new /connect can start over.
        if browser is None:
            # The cookie lasts as long as the step's state, so a valid state without it is a
            # browser that lost it (or never had it), rarely another person.
            raise LinkRefused(
                "This browser did not send back the cookie Tradecord set when the sign-in "
                "started: the sign-in took too long in this browser, or the browser did not "
                "keep its cookie (a private window, another browser, or Discord's in-app "
                "browser handing the page to another one). Nothing was linked. Run /connect "
                "again in Discord and finish every step in one browser.",
                status=403,
            )
        if not secrets.compare_digest(row.browser_hash, digest(browser)):
            raise LinkRefused(
                "This sign-in was started in another browser. Nothing was linked. Run /connect "
                "again in Discord and finish every step in the browser its link opens.",
                status=403,
            )
        verifier = None
        if row.code_verifier:
            try:
                verifier = self.core.vault.decrypt(row.code_verifier, verifier_binding(row, member))
            except VaultError as e:
                # E.g. keys rotated while this process still runs without the new primary. The
                # state is spent, so starting again is all the member can do; the admin needs why.
                log.warning(
                    "Sign-in state %s: its PKCE verifier cannot be decrypted: %s", row.id, e
                )
                raise LinkRefused(
                    "Tradecord could not read back what it saved for this sign-in (its "
                    "encryption keys may have just changed). Nothing was linked. Run /connect "
                    "again; if this keeps happening, tell the bot's owner.",
                    status=500,
                ) from None
        error = (params.get("error") or [None])[0]
        if error:
            # Said where: the member went through two sign-ins, Discord's and the broker's.
            where = "Discord" if row.kind == "discord" else self.broker_name(row.broker)
            raise self._sign_in_error(row, where, error, params)
        return row, link, member, verifier

    @staticmethod
    def _sign_in_error(
        row: OAuthState, where: str, error: str, params: Mapping[str, list[str]]
    ) -> LinkRefused:
        """The page for an ``error=`` answer (RFC 6749 4.1.2.1). Only access_denied is the
        member's business; the rest are logged, since the bot's owner cannot see the page."""
        if error == "access_denied":
            # Not "you chose not to": the server may deny for reasons of its own too.
            return LinkRefused(
                f"{where} did not allow the sign-in (you declined, or {where} refused it), so "
                "nothing was linked. To link your account, run /connect in Discord again and "
                "allow access.",
                title="Access not allowed",
            )
        code = printable(error, 40)
        description = printable((params.get("error_description") or [""])[0], 200)
        log.warning(
            "Sign-in state %s: %s answered error=%s: %s",
            row.id,
            where,
            code,
            description or "(no description)",
        )
        if error in SETUP_ERRORS:
            return LinkRefused(
                f"{where} refused the sign-in ({code}): a problem with this bot's setup at "
                f"{where}, not with your account. Nothing was linked, and trying again will not "
                f"help: tell the bot's owner that {where} answered {code}.",
                title="Sign-in refused",
            )
        if error in BUSY_ERRORS:
            return LinkRefused(
                f"{where} had a problem of its own and could not finish the sign-in ({code}). "
                "Nothing was linked. Try again in a while: run /connect in Discord again.",
                title="Sign-in did not finish",
            )
        return LinkRefused(
            f"{where} refused the sign-in ({code}). Nothing was linked. Run /connect in Discord "
            "to try again."
        )

    async def _spend(self, states: list[str]) -> None:
        hashes = {digest(state) for state in states if state}
        if not hashes:
            return
        async with self.core.db.transaction() as s:
            await s.execute(
                update(OAuthState)
                .where(OAuthState.state_hash.in_(sorted(hashes)), OAuthState.consumed_at.is_(None))
                .values(consumed_at=self.now())
            )

    async def finish_discord(
        self, params: Mapping[str, list[str]], browser: str | None
    ) -> Redirect:
        """Discord sign-in answered: prove the browser is the member, then go to the broker."""
        _, link, member, verifier = await self._consume(params, "discord", None, browser)
        code = await self._fresh_code(params, "discord")
        user_id = await self._discord_user(code, verifier)
        if user_id != member.discord_user_id:
            async with self.core.db.transaction() as s:
                audit.record(
                    s,
                    "connect.identity_mismatch",
                    member_id=member.id,
                    broker=link.broker,
                    signed_in_as=user_id,
                )
            await self._tell(
                member.discord_user_id,
                Outgoing(
                    content=(
                        "⚠️ Someone opened your /connect link but signed in to Discord as a "
                        "different account. Nothing was linked. If that was you with another "
                        "account, run /connect again and sign in as yourself. Never share "
                        "/connect links."
                    )
                ),
            )
            raise LinkRefused(
                "You signed in to Discord as a different account from the member who asked for "
                "this link, so nothing was linked. Only the member who ran /connect can use it: "
                "to link an account of your own, run /connect in Discord yourself. If the link "
                "was yours, run /connect again and sign in to Discord as yourself.",
                status=403,
            )
        return await self._to_broker(link, browser or "")

    async def _to_broker(self, link: ConnectLink, browser: str) -> Redirect:
        cls = get_adapter_class(link.broker)
        ep = oauth.endpoints(cls, self.core.settings)
        state = secrets.token_urlsafe(32)
        verifier = oauth.new_code_verifier() if ep.spec.pkce else None
        await self._store_state(link, "broker", state, browser, verifier, issuer=ep.spec.issuer)
        extra = cls.authorize_params(link.environment)
        url = oauth.authorization_url(
            ep,
            redirect_uri=self.redirect_uri(link.broker),
            state=state,
            code_verifier=verifier,
            extra=extra,
        )
        # The cookie again: set once at the link's POST, it would expire 10 minutes after that,
        # though the broker's step has 10 minutes of its own from now.
        return Redirect(url, set_cookie=browser)

    # -- step 2: the broker's answer ------------------------------------------------------

    async def finish_broker(
        self, broker: str, params: Mapping[str, list[str]], browser: str | None
    ) -> Linked:
        if broker not in self.configured_brokers():
            # Spent whatever the outcome (requirement 2), as every other refusal spends it.
            await self._spend(params.get("state", []))
            raise LinkRefused("Unknown broker address. Nothing was linked.", status=404)
        row, link, member, verifier = await self._consume(params, "broker", broker, browser)
        iss = (params.get("iss") or [None])[0]
        if iss is not None and iss != row.issuer:
            raise LinkRefused(
                "The answer came from an unexpected issuer. Nothing was linked. Run /connect again."
            )
        cls = get_adapter_class(broker)
        ep = oauth.endpoints(cls, self.core.settings)
        if iss is None and ep.spec.issuer_required:
            raise LinkRefused("The broker's answer lacked its issuer. Nothing was linked.")
        code = await self._fresh_code(params, broker)
        tokens = await oauth.exchange_code(
            ep, code=code, redirect_uri=self.redirect_uri(broker), code_verifier=verifier
        )
        try:
            connection, relinked = await self._save(member, link, cls.display_name, tokens)
        except Exception:
            # Nothing was stored (refused, or the database failed), so nothing in Tradecord
            # could revoke this grant later; unless revoking it would also revoke a connection
            # the member has. Best effort: the error that stopped the link is the one raised.
            try:
                if ep.revoke_url and not await self.core.connections.sharing_login(
                    member.id, link.broker, but=None
                ):
                    token, hint = (
                        (tokens.refresh_token, "refresh_token")
                        if tokens.refresh_token
                        else (tokens.access_token, "access_token")
                    )
                    await oauth.revoke(ep, token, hint=hint)
            except Exception:
                log.warning("Could not revoke an unsaved %s grant", link.broker, exc_info=True)
            raise
        linked = Linked(connection, relinked=relinked)
        try:
            await self._list_accounts(linked)
        except Exception as e:
            # The connection is saved: a "Nothing was linked" page now would be false, and the
            # /connect it suggests would add a second connection. Choosing its accounts is all
            # that is left, and /accounts does that later. Logged by route, never by URL: the
            # callback's holds the code and state.
            log.error(
                "Unexpected %s on /oauth/%s/callback after connection %s was saved; its "
                "accounts are left to /accounts",
                type(e).__name__,
                broker,
                connection.id,
                exc_info=True,
            )
            linked.accounts, linked.held = [], {}
            linked.accounts_error = "something went wrong on our side while listing them."
        return linked

    async def _list_accounts(self, linked: Linked) -> None:
        """The accounts the new login reaches, and which of them other connections hold."""
        adapter = await self.core.connections.adapter_for(linked.connection)
        try:
            linked.accounts = await adapter.fetch_accounts()
        except BrokerError as e:
            linked.accounts_error = e.user_message
        finally:
            await adapter.close()
        if linked.relinked and linked.accounts_error is None:
            await self._drop_unreachable(linked)
        linked.held = await self.core.connections.held_elsewhere(linked.connection)

    async def _drop_unreachable(self, linked: Linked) -> None:
        """A connection re-linked with another login keeps no account that login cannot
        reach: orders there would fail, and it would claim to trade as before."""
        conn = linked.connection
        reachable = {a.id for a in linked.accounts}
        gone = [a for a in conn.accounts if a.account_id not in reachable]
        if not gone:
            return
        async with self.core.db.transaction() as s:
            await s.execute(
                delete(ConnectionAccount).where(ConnectionAccount.id.in_([a.id for a in gone]))
            )
            row = await s.get(Connection, conn.id)
            assert row is not None
            if len(gone) == len(conn.accounts):
                row.status = ConnectionStatus.NEEDS_ACCOUNT
            audit.record(
                s,
                "connect.accounts_dropped",
                member_id=conn.member_id,
                connection_id=conn.id,
                accounts=[a.label for a in gone],
            )
            status = row.status
        conn.accounts = [a for a in conn.accounts if a not in gone]
        conn.status = status
        linked.dropped = [a.label for a in gone]

    async def _fresh_code(self, params: Mapping[str, list[str]], broker: str) -> str:
        code = (params.get("code") or [""])[0]
        if not code:
            raise LinkRefused(
                "The sign-in answer had no authorization code. Nothing was linked. "
                "Run /connect again."
            )
        try:
            async with self.core.db.transaction() as s:
                s.add(UsedCode(code_hash=digest(code), broker=broker, used_at=self.now()))
        except IntegrityError:
            raise LinkRefused(
                "This authorization code was already used. Nothing was linked. Run /connect again."
            ) from None
        return code

    async def _discord_user(self, code: str, verifier: str | None) -> int:
        settings = self.core.settings
        base = settings.discord_api_base.rstrip("/")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.discord_redirect_uri,
            "client_id": settings.discord_client_id or "",
            "client_secret": (
                settings.discord_client_secret.get_secret_value()
                if settings.discord_client_secret
                else ""
            ),
        }
        if verifier:
            form["code_verifier"] = verifier
        token = await oauth.discord_exchange(f"{base}/oauth2/token", form)
        return await oauth.discord_identity(f"{base}/users/@me", token)

    @staticmethod
    async def _relink_target(s: AsyncSession, member_id: int, broker: str) -> Connection | None:
        """The member's connection at ``broker`` that /connect repairs rather than adds to:
        one the broker stopped accepting, else one whose authorization we warned is ending
        (both messages say to run /connect for the broker); the oldest first."""
        rows = await s.scalars(
            select(Connection)
            .outerjoin(Credential, Credential.connection_id == Connection.id)
            .where(
                Connection.member_id == member_id,
                Connection.broker == broker,
                Connection.builtin.is_(False),
                or_(
                    Connection.status == ConnectionStatus.NEEDS_REAUTH,
                    Credential.refresh_reminded_at.is_not(None),
                ),
            )
            .options(selectinload(Connection.accounts))
            .order_by(Connection.id)
        )
        found = list(rows)
        return next(
            (c for c in found if c.status == ConnectionStatus.NEEDS_REAUTH),
            found[0] if found else None,
        )

    async def _save(
        self, member: Member, link: ConnectLink, display: str, tokens: oauth.TokenSet
    ) -> tuple[Connection, bool]:
        """Create the connection and its encrypted credential, in one unit of work; or give
        new tokens to the connection being re-linked (True)."""
        async with self.core.db.transaction() as s:
            old = await self._relink_target(s, member.id, link.broker)
            if old is not None:
                # Same row: its name, accounts and subscriptions carry on with the new tokens.
                await s.execute(delete(Credential).where(Credential.connection_id == old.id))
                self._add_credential(s, old, member, link, tokens)
                old.settings = {**(old.settings or {}), "environment": link.environment or "both"}
                old.status = (
                    ConnectionStatus.ACTIVE if old.accounts else ConnectionStatus.NEEDS_ACCOUNT
                )
                audit.record(
                    s,
                    "connect.relinked",
                    member_id=member.id,
                    connection_id=old.id,
                    broker=link.broker,
                    scope=tokens.scope,
                )
                return old, True
            used = await s.scalar(
                select(func.count())
                .select_from(Connection)
                .where(Connection.member_id == member.id, Connection.builtin.is_(False))
            )
            # The plan may have been lowered since /connect checked it.
            plan = self.plan_use(member.plan, int(used or 0))
            if plan.to_remove:
                raise LinkRefused(f"{plan.full()} Nothing was linked.", status=403)
            names = set(
                await s.scalars(
                    select(Connection.name_key).where(Connection.member_id == member.id)
                )
            )
            name = display
            n = 2
            while name.casefold() in names:
                name = f"{display} {n}"
                n += 1
            conn = Connection(
                member_id=member.id,
                broker=link.broker,
                name=name,
                name_key=name.casefold(),
                status=ConnectionStatus.NEEDS_ACCOUNT,
                settings={"environment": link.environment or "both"},
                accounts=[],
            )
            s.add(conn)
            await s.flush()
            self._add_credential(s, conn, member, link, tokens)
            audit.record(
                s,
                "connect.linked",
                member_id=member.id,
                connection_id=conn.id,
                broker=link.broker,
                scope=tokens.scope,
            )
        return conn, False

    def _add_credential(
        self,
        s: AsyncSession,
        conn: Connection,
        member: Member,
        link: ConnectLink,
        tokens: oauth.TokenSet,
    ) -> None:
        """The connection's credential for ``tokens``, encrypted, in the caller's transaction."""
        cred = Credential(
            connection_id=conn.id,
            access_token="",
            environment=link.environment,
            refresh_expires_at=self._refresh_expiry(link.broker),
        )
        s.add(cred)
        DbTokenProvider(self.core, conn.id).store(cred, conn, member, tokens)

    def _refresh_expiry(self, broker: str) -> datetime | None:
        spec = get_adapter_class(broker).oauth
        if spec is None or spec.refresh_token_lifetime is None:
            return None
        return self.now() + timedelta(seconds=spec.refresh_token_lifetime)

    async def _tell(self, discord_user_id: int, message: Outgoing) -> None:
        await dm_quietly(self.core.notifier, discord_user_id, message, about="a /connect step")
