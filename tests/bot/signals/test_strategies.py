"""Strategies and subscriptions: webhook secrets, sharing, settings, alert channels."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import select, text

from bot.automation_models import ReceivedSignal, Strategy, Subscription
from bot.core import Core
from bot.db import Database, alembic_config, head_revision
from bot.db_types import UTCDateTime
from bot.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from bot.services.strategies import hash_secret
from bot.services.subscriptions import Sides, Sizing, SubscriptionSettings
from tests.bot.signals.conftest import (
    ALICE,
    BOB,
    GUILD,
    OWNER,
    count,
    make_strategy,
    notifier,
    send,
    split,
    subscribe,
)


async def test_the_webhook_url_is_shown_once_and_only_its_hash_is_stored(core: Core) -> None:
    url = await make_strategy(core)
    strategy_id, secret = split(url)
    assert url.url == f"http://127.0.0.1:8080/webhook/{strategy_id}/{secret}"
    assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) * 8 >= 128
    assert secret not in repr(url)
    async with core.db.session() as s:
        row = await s.get(Strategy, strategy_id)
        dump = " ".join(str(v) for v in (await s.execute(text("SELECT * FROM strategies"))).one())
    assert row is not None and row.secret_hash == hash_secret(secret)
    assert secret not in dump
    assert await core.strategies.authenticate(strategy_id, secret) is not None
    assert await core.strategies.authenticate(strategy_id, secret + "x") is None
    other = await make_strategy(core, name="Other")
    assert split(other)[1] != secret


async def test_rotating_the_secret_retires_the_old_url(core: Core) -> None:
    url = await make_strategy(core)
    strategy_id, old = split(url)
    fresh = await core.strategies.rotate_secret(GUILD, OWNER, "nq BREAKOUT")
    _, new = split(fresh)
    assert new != old and fresh.strategy.id == strategy_id
    assert await core.strategies.authenticate(strategy_id, old) is None
    assert await core.strategies.authenticate(strategy_id, new) is not None


async def test_names_are_unique_per_guild_ignoring_case(core: Core) -> None:
    await make_strategy(core, name="NQ  breakout")
    with pytest.raises(Conflict):
        await make_strategy(core, name="nq breakout", owner=ALICE)
    await core.strategies.create(GUILD + 1, ALICE, "NQ breakout")
    with pytest.raises(InvalidInput):
        await make_strategy(core, name="   ")
    with pytest.raises(InvalidInput):
        await make_strategy(core, name="x" * 101)


async def test_a_name_whose_compared_form_is_too_long_is_refused_with_what_to_do(
    core: Core,
) -> None:
    """Before: 34 "ﬃ" (50 characters at most pass /strategy create) fold to 102, past the
    100 of the unique key: PostgreSQL failed the insert with a DBAPIError."""
    for name in ("\ufb03" * 34, "ß" * 51):
        with pytest.raises(InvalidInput, match="letters like ß count as two"):
            await make_strategy(core, name=name)
    assert (await make_strategy(core, name="ß" * 50)).strategy.name == "ß" * 50


async def test_a_name_is_found_as_it_was_stored_with_its_spaces_collapsed(core: Core) -> None:
    """Before: "Gap  fill" was stored as "gap fill" but looked up as "gap  fill": not found."""
    url = await make_strategy(core, name="Gap fill")
    for typed in ("Gap  fill", " gap\tFILL ", "GAP fill"):
        assert (await core.strategies.get(GUILD, OWNER, typed)).id == url.strategy.id
    with pytest.raises(NotFound):
        await core.strategies.get(GUILD, OWNER, "Gapfill")


async def test_sharing_lets_members_subscribe_and_unsharing_ends_it(core: Core) -> None:
    url = await make_strategy(core)
    with pytest.raises(NotFound):
        await subscribe(core, url, ALICE)
    info = await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    assert info.shared_with == (ALICE,)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)  # twice is once
    sub = await subscribe(core, url, ALICE, sizing="dollar_amount", sizing_value=Decimal(500))
    [mine] = await core.subscriptions.list_for(ALICE, GUILD)
    assert (mine.id, mine.strategy_name, mine.mode) == (sub, "NQ breakout", "paper")
    assert mine.settings.sizing is Sizing.DOLLAR_AMOUNT
    # Alice sees it but cannot change it, nor list its subscribers.
    [seen] = await core.strategies.list(GUILD, ALICE)
    assert not seen.is_owner and seen.shared_with == ()
    with pytest.raises(PermissionDenied):
        await core.strategies.rotate_secret(GUILD, ALICE, url.strategy.id)
    with pytest.raises(PermissionDenied):
        await core.subscriptions.list_for_strategy(GUILD, ALICE, url.strategy.id)
    assert len(await core.subscriptions.list_for_strategy(GUILD, OWNER, url.strategy.id)) == 1
    with pytest.raises(NotFound):  # Bob does not even see it
        await core.strategies.get(GUILD, BOB, url.strategy.id)
    await core.strategies.unshare(GUILD, OWNER, url.strategy.id, ALICE)
    assert await core.subscriptions.list_for(ALICE) == []
    assert await core.strategies.list(GUILD, ALICE) == []
    told = notifier(core).dms[-1][1].content or ""
    assert told.startswith(
        "The owner of **NQ breakout** stopped sharing it with you, so its signals no longer "
        "trade for you: your subscription ended."
    ), told
    with pytest.raises(InvalidInput, match="is not shared with them"):
        await core.strategies.unshare(GUILD, OWNER, url.strategy.id, ALICE)


PREMIUM, VIP = 501, 502  # role ids


async def test_unsharing_a_member_keeps_what_a_role_of_theirs_still_gives(core: Core) -> None:
    url = await make_strategy(core)
    sid = url.strategy.id
    await core.strategies.share_role(GUILD, OWNER, sid, PREMIUM)
    await core.strategies.share(GUILD, OWNER, sid, ALICE)
    await subscribe(core, url, ALICE)
    notifier(core).dms.clear()
    done = await core.strategies.unshare(GUILD, OWNER, sid, ALICE, roles={GUILD, PREMIUM})
    assert (done.ended, done.kept, done.info.shared_with) == (0, 1, ())
    assert len(await core.subscriptions.list_for(ALICE)) == 1
    assert notifier(core).dms == []
    with pytest.raises(InvalidInput, match="only through a role they have"):
        await core.strategies.unshare(GUILD, OWNER, sid, ALICE, roles={PREMIUM})
    # Her role gone but not yet noticed: unsharing her ends what nothing gives any more.
    done = await core.strategies.unshare(GUILD, OWNER, sid, ALICE, roles={GUILD})
    assert (done.ended, done.kept) == (1, 0)
    assert await core.subscriptions.list_for(ALICE) == []
    await core.strategies.share(GUILD, OWNER, sid, BOB)
    done = await core.strategies.unshare(GUILD, OWNER, sid, BOB)
    assert (done.ended, done.kept) == (0, 0)


async def test_unsharing_what_is_not_shared_is_refused_and_changes_nothing(core: Core) -> None:
    """Before: a role never shared was "no longer shared", and unsharing the owner ended the
    owner's own subscriptions."""
    url = await make_strategy(core)
    sid = url.strategy.id
    await core.strategies.share_role(GUILD, OWNER, sid, PREMIUM)
    with pytest.raises(InvalidInput, match="“NQ breakout” is not shared with that role"):
        await core.strategies.unshare_role(GUILD, OWNER, sid, VIP)
    assert (await core.strategies.get(GUILD, OWNER, sid)).shared_with_roles == (PREMIUM,)
    await subscribe(core, url, OWNER)
    with pytest.raises(InvalidInput, match=r"^You own this strategy, so it is not shared with"):
        await core.strategies.unshare(GUILD, OWNER, sid, OWNER)
    assert len(await core.subscriptions.list_for(OWNER, GUILD)) == 1
    # A deleted role is dealt with once, by whichever process hears of it first.
    assert await core.strategies.role_deleted(GUILD, VIP) == 0


async def test_a_role_share_lasts_as_long_as_a_role_that_gives_it(core: Core) -> None:
    """Losing one role ends only the subscriptions no other role, nor a share of one's own,
    still gives; a departure ends them all; telling happens once."""
    gated = await make_strategy(core, "Gated")
    both = await make_strategy(core, "Both roles")
    direct = await make_strategy(core, "Also direct")
    public = await make_strategy(core, "Everyone")
    with pytest.raises(NotFound):
        await subscribe(core, gated, ALICE)
    for url in (gated, both, direct):
        await core.strategies.share_role(GUILD, OWNER, url.strategy.id, PREMIUM)
    await core.strategies.share_role(GUILD, OWNER, both.strategy.id, VIP)
    await core.strategies.share(GUILD, OWNER, direct.strategy.id, ALICE)
    [(_, shared)] = notifier(core).dms
    assert shared.content == (
        f"<@{OWNER}> shared the strategy **Also direct** with you. To trade its signals, run "
        "/subscribe strategy:Also direct in that server: you choose the connection and the size."
    )
    await core.strategies.share(GUILD, OWNER, direct.strategy.id, ALICE)  # told once
    notifier(core).dms.clear()
    info = await core.strategies.share_role(GUILD, OWNER, public.strategy.id, GUILD)
    assert info.shared_with_roles == (GUILD,)
    roles = {GUILD, PREMIUM, VIP}
    assert [i.name for i in await core.strategies.list(GUILD, ALICE)] == ["Also direct"]
    seen = await core.strategies.list(GUILD, ALICE, roles=roles)
    assert [i.name for i in seen] == ["Also direct", "Both roles", "Everyone", "Gated"]
    assert all(i.shared_with_roles == () for i in seen)  # the owner's to see
    for url in (gated, both, direct, public):
        info = await core.subscriptions.subscribe(GUILD, ALICE, url.strategy.id, roles=roles)
        assert info.strategy_name == url.strategy.name
    with pytest.raises(PermissionDenied):  # a role share gives no say over it either
        await core.strategies.configure(GUILD, ALICE, gated.strategy.id, max_lag_seconds=10)

    ended = await core.strategies.reconcile_access(GUILD, ALICE, frozenset({GUILD, VIP}))
    assert ended == ["Gated"]
    left = {s.strategy_name for s in await core.subscriptions.list_for(ALICE, GUILD)}
    assert left == {"Also direct", "Both roles", "Everyone"}
    [(_, told)] = [dm for dm in notifier(core).dms if dm[0] == ALICE]
    assert (told.content or "").startswith(
        "You no longer have a role that **Gated** is shared with, so its signals no longer "
        "trade for you: your subscription ended."
    ), told.content
    # A subscriber still sees what they subscribe to, to stop it before the bot notices.
    assert (await core.strategies.get(GUILD, ALICE, both.strategy.id)).name == "Both roles"
    assert await core.strategies.reconcile_access(GUILD, ALICE, frozenset({GUILD, VIP})) == []
    assert len(notifier(core).dms) == 1  # nothing more to tell
    assert await core.strategies.reconcile_access(GUILD, ALICE, None) == [
        "Also direct",
        "Both roles",
        "Everyone",
    ]
    assert await core.subscriptions.list_for(ALICE, GUILD) == []


async def test_the_hourly_check_leaves_a_member_discord_cannot_answer_for(
    core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    url = await make_strategy(core)
    await core.strategies.share_role(GUILD, OWNER, url.strategy.id, PREMIUM)
    await core.subscriptions.subscribe(GUILD, ALICE, url.strategy.id, roles={PREMIUM})
    await core.strategies.share(GUILD, OWNER, url.strategy.id, BOB)
    recorder = notifier(core)

    async def down(guild_id: int, discord_user_id: int) -> frozenset[int] | None:
        raise ConnectionError("Discord is away")

    recorder.member_roles = down  # type: ignore[method-assign]
    assert await core.strategies.check_members() == 0
    assert len(await core.subscriptions.list_for(ALICE, GUILD)) == 1
    # One line for the guild, not one per member every hour.
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        f"Could not check the members of guild {GUILD}: ConnectionError('Discord is away')"
    ]
    del recorder.member_roles
    recorder.roles[(GUILD, ALICE)] = {PREMIUM}
    assert await core.strategies.check_members() == 0
    recorder.roles[(GUILD, ALICE)] = set()
    # Every process asks each hour; one job runs it.
    assert await core.strategies.schedule_member_check()
    assert not await core.strategies.schedule_member_check()
    assert await core.jobs.drain() == 1
    assert await core.subscriptions.list_for(ALICE, GUILD) == []
    # With the Server Members intent the bot hears of it as it happens: no hourly asking.
    core.settings = core.settings.model_copy(update={"discord_members_intent": True})
    clock = core.strategies.clock
    core.strategies.clock = lambda: clock() + timedelta(hours=1)
    assert not await core.strategies.schedule_member_check()


async def test_a_role_unshare_that_discord_cannot_answer_is_caught_by_the_hourly_check(
    core: Core,
) -> None:
    """Before: the hourly check looked only at strategies still shared with some role, so a
    subscription whose last role share went while Discord was away stayed for good."""
    url = await make_strategy(core)
    await core.strategies.share_role(GUILD, OWNER, url.strategy.id, PREMIUM)
    await core.subscriptions.subscribe(GUILD, ALICE, url.strategy.id, roles={PREMIUM})
    recorder = notifier(core)
    recorder.roles[(GUILD, ALICE)] = {PREMIUM}

    async def down(guild_id: int, discord_user_id: int) -> frozenset[int] | None:
        raise ConnectionError("Discord is away")

    recorder.member_roles = down  # type: ignore[method-assign]
    _, lost = await core.strategies.unshare_role(GUILD, OWNER, url.strategy.id, PREMIUM)
    assert lost == 0
    assert len(await core.subscriptions.list_for(ALICE, GUILD)) == 1
    del recorder.member_roles
    assert await core.strategies.check_members() == 1
    assert await core.subscriptions.list_for(ALICE, GUILD) == []
    # The start-up reconcile (with the Server Members intent) catches it the same way.
    await core.strategies.share_role(GUILD, OWNER, url.strategy.id, PREMIUM)
    await core.subscriptions.subscribe(GUILD, ALICE, url.strategy.id, roles={PREMIUM})
    recorder.member_roles = down  # type: ignore[method-assign]
    assert await core.strategies.role_deleted(GUILD, PREMIUM) == 0
    del recorder.member_roles
    ended = await core.strategies.reconcile_access(GUILD, ALICE, frozenset({GUILD, PREMIUM}))
    assert ended == ["NQ breakout"]


async def test_subscribers_hear_once_that_an_owner_left_however_it_is_found(core: Core) -> None:
    """The hourly check asks after the owners others follow too: without the Server Members
    intent, nobody heard that an owner left. Told once, though the check runs every hour."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, ALICE)
    recorder = notifier(core)
    recorder.dms.clear()
    recorder.gone.add((GUILD, OWNER))

    def told() -> list[str]:
        return [m.content or "" for uid, m in recorder.dms if uid == ALICE]

    await core.strategies.check_members()
    assert [m[:43] for m in told()] == ["The owner of **NQ breakout** left a server."]
    info = await core.strategies.get(GUILD, OWNER, url.strategy.id)
    assert info.owner_left_at is not None
    await core.strategies.check_members()
    await core.strategies.member_left(GUILD, OWNER)  # the event, after the check found it
    assert len(told()) == 1
    # Back in the server: an owner again, and a later departure is news again.
    recorder.gone.clear()
    await core.strategies.check_members()
    assert (await core.strategies.get(GUILD, OWNER, url.strategy.id)).owner_left_at is None
    await core.strategies.member_left(GUILD, OWNER)
    assert len(told()) == 2
    # Given to another member: it has an owner again.
    await core.strategies.transfer(GUILD, BOB, url.strategy.id, ALICE, moderator=True)
    assert (await core.strategies.get(GUILD, ALICE, url.strategy.id)).owner_left_at is None


async def test_a_strategy_whose_owner_left_is_not_shared_back_with_them_when_given_away(
    core: Core,
) -> None:
    """Before: the departed owner got a share of it, kept their subscription, and was told
    "It stays shared with you, so your subscription to it goes on"."""
    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    recorder = notifier(core)
    recorder.gone.add((GUILD, OWNER))
    await core.strategies.member_left(GUILD, OWNER)
    recorder.dms.clear()
    await core.strategies.transfer(GUILD, BOB, url.strategy.id, ALICE, moderator=True)
    info = await core.strategies.get(GUILD, ALICE, url.strategy.id)
    assert info.is_owner and OWNER not in info.shared_with
    assert await core.subscriptions.list_for(OWNER, GUILD) == []
    [told] = [m.content or "" for uid, m in recorder.dms if uid == OWNER]
    assert told.startswith(
        "You are no longer a member of that server, so a server admin gave your strategy "
        "**NQ breakout** to another member, and your subscription to it ended."
    ), told
    assert "goes on" not in told
    with pytest.raises(NotFound):
        await core.strategies.get(GUILD, OWNER, url.strategy.id)


async def test_subscribing_again_updates_the_settings(core: Core) -> None:
    url = await make_strategy(core)
    first = await subscribe(core, url, OWNER)
    again = await subscribe(core, url, OWNER, sides="long", max_positions=3)
    assert first == again
    [info] = await core.subscriptions.list_for(OWNER)
    assert info.settings.sides is Sides.LONG and info.settings.max_positions == 3
    # The answer tells a new subscription from a changed one. A paused one stays paused
    # while its settings change, until it is resumed.
    await core.subscriptions.set_enabled(OWNER, info.id, False)
    changed = await core.subscriptions.subscribe(
        GUILD, OWNER, url.strategy.id, settings=SubscriptionSettings(sides=Sides.SHORT)
    )
    assert changed.previous is not None and not changed.previous.enabled
    assert changed.previous.settings.sides is Sides.LONG and not changed.enabled
    assert changed.settings.sides is Sides.SHORT and changed.previous.previous is None
    resumed = await core.subscriptions.subscribe(
        GUILD, OWNER, url.strategy.id, changes={}, enabled=True
    )
    assert resumed.enabled and resumed.settings.sides is Sides.SHORT
    await core.subscriptions.unsubscribe(GUILD, OWNER, url.strategy.id)
    assert await count(core, Subscription) == 0
    with pytest.raises(NotFound):
        await core.subscriptions.unsubscribe(GUILD, OWNER, url.strategy.id)
    anew = await core.subscriptions.subscribe(GUILD, OWNER, url.strategy.id)
    assert anew.previous is None


@pytest.mark.parametrize(
    ("sub_settings", "message"),
    [
        (SubscriptionSettings(sizing_value=Decimal(0)), "positive number below 1,000,000,000,000"),
        (SubscriptionSettings(sizing_value=Decimal("-2")), "; -2 is not"),
        # 1e-20 would be stored as 0 (NUMERIC(38, 18) on PostgreSQL): every entry of 0 units.
        (SubscriptionSettings(sizing_value=Decimal("1e-20")), "at most 8 decimals"),
        (
            SubscriptionSettings(sizing=Sizing.PERCENT_OF_EQUITY, sizing_value=Decimal(101)),
            "more than 0 and at most 100; 101 is not",
        ),
        (SubscriptionSettings(approval_ttl_seconds=5), "expire"),
        (SubscriptionSettings(max_positions=0), "Max strategy positions"),
        (
            SubscriptionSettings(sizing=Sizing.FIXED_QUANTITY, subtract_exit_quantity=True),
            "subtract_exit_quantity takes what a reversal exited off the signal's own "
            "quantity, so it needs sizing:signal (fixed quantity sizing gives every entry its "
            "own size): choose sizing:signal, or subtract_exit_quantity:false.",
        ),
    ],
)
async def test_subscription_settings_are_checked(
    core: Core, sub_settings: SubscriptionSettings, message: str
) -> None:
    url = await make_strategy(core)
    with pytest.raises(InvalidInput) as refused:
        await core.subscriptions.subscribe(GUILD, OWNER, url.strategy.id, settings=sub_settings)
    assert message in str(refused.value)
    assert await count(core, Subscription) == 0  # nothing half-saved


async def test_a_sizing_value_with_trailing_zeros_is_not_too_precise(core: Core) -> None:
    url = await make_strategy(core)
    await subscribe(core, url, OWNER, sizing_value=Decimal("1.500000000000"))
    [info] = await core.subscriptions.list_for(OWNER)
    assert info.settings.sizing_value == Decimal("1.5")


async def test_live_mode_needs_a_live_account(core: Core) -> None:
    url = await make_strategy(core)
    with pytest.raises(NotFound, match="live account"):
        await core.subscriptions.subscribe(GUILD, OWNER, url.strategy.id, mode="live")


async def test_webhook_settings(core: Core) -> None:
    url = await make_strategy(core)
    info = await core.strategies.configure(
        GUILD,
        OWNER,
        url.strategy.id,
        allowed_sources=["TradingView", "203.0.113.9/24", ""],
        allowed_tickers=["nasdaq:aapl", "BTC/USD", "AAPL"],
        max_lag_seconds=60,
        rate_limit_per_minute=10,
        max_quantity=Decimal(5),
    )
    assert info.allowed_sources == ("tradingview", "203.0.113.0/24")
    assert info.allowed_tickers == ("AAPL", "BTC/USD")
    assert (info.max_lag_seconds, info.rate_limit_per_minute, info.max_quantity) == (
        60,
        10,
        Decimal(5),
    )
    for bad in (
        {"allowed_sources": ["example.com"]},
        {"allowed_tickers": ["$$$"]},
        {"max_lag_seconds": 1},
        {"rate_limit_per_minute": 0},
        {"max_quantity": Decimal(-1)},
    ):
        with pytest.raises(InvalidInput):
            await core.strategies.configure(GUILD, OWNER, url.strategy.id, **bad)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        await core.strategies.configure(GUILD, ALICE, url.strategy.id, max_lag_seconds=60)
    # An add opens for sure: refused at the webhook. (A buy or sell may exit first: its
    # entry is capped by each subscription's plan, tested in test_execution.)
    over = await send(core, url, {"ticker": "AAPL", "action": "add", "quantity": 6})
    assert (over.status, over.body["messageCode"]) == (400, "quantity-over-limit")
    # Before: "The quantity is above this strategy's limit of 5." and no way out said.
    assert over.body["message"] == (
        "The quantity is above this strategy's limit of 5: send a smaller one, or its owner "
        "raises the limit with /strategy settings max_quantity."
    )
    cleared = await core.strategies.configure(
        GUILD, OWNER, url.strategy.id, max_quantity=None, allowed_tickers=[]
    )
    assert cleared.max_quantity is None and cleared.allowed_tickers == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_lag_seconds": 4}, "between 5 and 300 seconds"),
        ({"max_lag_seconds": 301}, r"between 5 and 300 seconds \(5 minutes, the most"),
        ({"rate_limit_per_minute": 0}, "between 1 and 60 signals a minute"),
        ({"rate_limit_per_minute": 61}, r"between 1 and 60 signals a minute \(60 is the most"),
        ({"max_quantity": Decimal(0)}, "positive number below 1,000,000,000,000"),
        ({"max_quantity": Decimal(10) ** 12}, "positive number below"),
        ({"max_quantity": Decimal("NaN")}, "positive number below"),
        # Stored as 0 on PostgreSQL (NUMERIC(38, 18)), it would refuse every entry.
        ({"max_quantity": Decimal("1e-20")}, "at most 8 decimals"),
        ({"allowed_sources": ["203.0.113.0/33"]}, "not an IP address or range"),
        ({"allowed_sources": ["10.0.0.1-10.0.0.9"]}, r"ranges like 203\.0\.113\.0/24"),
        ({"allowed_sources": [f"198.51.100.{i}" for i in range(51)]}, "at most 50 entries"),
        ({"allowed_tickers": ["NQ1!"]}, "Allowed tickers: “NQ1!”: NQ1! is a continuous future"),
        ({"allowed_tickers": ["AAPL260116C00200000"]}, "Options are not supported"),
        ({"allowed_tickers": [f"T{i}" for i in range(201)]}, "at most 200 allowed tickers"),
    ],
)
async def test_webhook_settings_refusals_say_what_to_do_and_change_nothing(
    core: Core, change: dict[str, object], message: str
) -> None:
    url = await make_strategy(core)
    before = await core.strategies.configure(GUILD, OWNER, url.strategy.id, max_lag_seconds=60)
    with pytest.raises(InvalidInput, match=message):
        # A valid change alongside the bad one is not applied either.
        await core.strategies.configure(
            GUILD,
            OWNER,
            url.strategy.id,
            **({"max_lag_seconds": 120} | change),  # type: ignore[arg-type]
        )
    assert await core.strategies.get(GUILD, OWNER, url.strategy.id) == before


async def test_webhook_settings_bounds_are_inclusive_and_only_the_owner_changes_them(
    core: Core,
) -> None:
    url = await make_strategy(core)
    for lag, rate in ((5, 1), (300, 60)):
        info = await core.strategies.configure(
            GUILD, OWNER, url.strategy.id, max_lag_seconds=lag, rate_limit_per_minute=rate
        )
        assert (info.max_lag_seconds, info.rate_limit_per_minute) == (lag, rate)
    info = await core.strategies.configure(
        GUILD, OWNER, url.strategy.id, allowed_sources=["2001:db8::1/64", "tradingview"]
    )
    assert info.allowed_sources == ("2001:db8::/64", "tradingview")
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    with pytest.raises(PermissionDenied, match="only its owner"):
        await core.strategies.configure(GUILD, ALICE, url.strategy.id, max_lag_seconds=60)


async def test_req24_hook_rate_limit_and_skew_cannot_exceed_the_requirement(core: Core) -> None:
    url = await make_strategy(core)
    with pytest.raises(InvalidInput, match="between 1 and 60 signals a minute"):
        await core.strategies.configure(GUILD, OWNER, url.strategy.id, rate_limit_per_minute=600)
    with pytest.raises(InvalidInput, match="between 5 and 300 seconds"):
        await core.strategies.configure(GUILD, OWNER, url.strategy.id, max_lag_seconds=86400)
    # The maximums are the defaults too: a new strategy starts at them.
    info = await core.strategies.get(GUILD, OWNER, url.strategy.id)
    assert (info.max_lag_seconds, info.rate_limit_per_minute) == (300, 60)


def _upgrade_to(conn: sa.Connection, url: str, target: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)


async def test_the_migration_lowers_webhook_settings_saved_above_the_maximums(
    empty_database_url: str,
) -> None:
    """Rows saved when /strategy settings allowed 600 a minute and a day of skew."""
    now = datetime.now(UTC)
    members = sa.table(
        "members",
        sa.column("id", sa.Integer()),
        sa.column("discord_user_id", sa.BigInteger()),
        sa.column("created_at", UTCDateTime()),
    )
    columns = ("id", "name", "max_lag_seconds", "rate_limit_per_minute")
    strategies = sa.table(
        "strategies",
        *(sa.column(c) for c in columns),
        *(sa.column(c) for c in ("guild_id", "owner_member_id", "name_key", "secret_hash")),
        *(sa.column(c, sa.JSON()) for c in ("allowed_sources", "allowed_tickers")),
        *(sa.column(c, UTCDateTime()) for c in ("secret_rotated_at", "created_at", "updated_at")),
    )
    saved = [("loose", "Loose", 86400, 600), ("tight", "Tight", 30, 10), ("edge", "Edge", 301, 61)]
    db = Database(empty_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, empty_database_url, "0006")
            await conn.execute(members.insert().values(id=1, discord_user_id=OWNER, created_at=now))
            await conn.execute(
                strategies.insert(),
                [
                    dict(zip(columns, row, strict=True))
                    | dict(
                        guild_id=GUILD,
                        owner_member_id=1,
                        name_key=row[1].casefold(),
                        secret_hash="0" * 64,
                        allowed_sources=[],
                        allowed_tickers=[],
                        secret_rotated_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                    for row in saved
                ],
            )
        await db.upgrade()
        assert await db.current_revision() == head_revision()
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(
                    strategies.c.id,
                    strategies.c.max_lag_seconds,
                    strategies.c.rate_limit_per_minute,
                )
            )
            after = {r.id: (r.max_lag_seconds, r.rate_limit_per_minute) for r in rows}
    finally:
        await db.close()
    assert after == {"loose": (300, 60), "tight": (30, 10), "edge": (300, 60)}


async def test_the_subtract_exit_migration_adds_the_setting_off_and_reverses(
    empty_database_url: str,
) -> None:
    def columns(c: sa.Connection) -> dict[str, dict[str, object]]:
        return {str(col["name"]): dict(col) for col in sa.inspect(c).get_columns("subscriptions")}

    def downgrade(c: sa.Connection) -> None:
        cfg = alembic_config(empty_database_url)
        cfg.attributes["connection"] = c
        command.downgrade(cfg, "0014")

    db = Database(empty_database_url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, empty_database_url, "0015")
            added = (await conn.run_sync(columns))["subtract_exit_quantity"]
            assert added["nullable"] is False
            assert str(added["default"]).strip("'").lower() in {"0", "false"}  # existing: off
            await conn.run_sync(downgrade)
            assert "subtract_exit_quantity" not in await conn.run_sync(columns)
    finally:
        await db.close()


async def test_an_unknown_subscription_points_to_the_listing(core: Core) -> None:
    with pytest.raises(NotFound, match="See /subscriptions"):
        await core.subscriptions.set_enabled(OWNER, 12345, False)


async def test_deleting_a_strategy_removes_its_subscriptions_and_log(core: Core) -> None:
    url = await make_strategy(core)
    await subscribe(core, url, OWNER)
    await send(core, url, {"ticker": "AAPL", "action": "buy"})
    with pytest.raises(NotFound):
        await core.strategies.delete(GUILD, ALICE, url.strategy.id)
    await core.strategies.delete(GUILD, OWNER, "NQ breakout")
    assert await count(core, Strategy) == 0
    assert await count(core, Subscription) == 0
    assert await count(core, ReceivedSignal) == 0
    assert await core.jobs.drain() == 1  # its job finds nothing to do
    assert await core.strategies.authenticate(*split(url)) is None


async def test_deleting_a_strategy_tells_its_other_subscribers_once(core: Core) -> None:
    """Before: members subscribed to a deleted strategy were told nothing; their signals just
    stopped. The owner, who deleted it, is not told again."""
    url = await make_strategy(core)
    await core.strategies.share(GUILD, OWNER, url.strategy.id, ALICE)
    await subscribe(core, url, OWNER)
    await subscribe(core, url, ALICE)
    told = len(notifier(core).dms)
    await core.strategies.delete(GUILD, OWNER, url.strategy.id)
    assert [(uid, m.content) for uid, m in notifier(core).dms[told:]] == [
        (
            ALICE,
            "🗑️ The strategy “NQ breakout” was deleted by its owner, so your subscription to it "
            "has ended: its signals no longer trade for you. Orders already placed and "
            "positions stay as they are.",
        )
    ]


async def test_alert_channels_per_guild_and_per_strategy(core: Core) -> None:
    url = await make_strategy(core)
    assert await core.strategies.alert_channel(GUILD, url.strategy.id) is None
    await core.strategies.set_alert_channel(GUILD, 10)
    assert await core.strategies.alert_channel(GUILD, url.strategy.id) == 10
    await core.strategies.set_alert_channel(GUILD, 20, strategy="nq breakout")
    assert await core.strategies.alert_channel(GUILD, url.strategy.id) == 20
    assert await core.strategies.alert_channel(GUILD) == 10
    await core.strategies.set_alert_channel(GUILD, 30)  # replaces the default
    await core.strategies.set_alert_channel(GUILD, None, strategy=url.strategy.id)
    assert await core.strategies.alert_channel(GUILD, url.strategy.id) == 30
    with pytest.raises(NotFound):
        await core.strategies.set_alert_channel(GUILD + 1, 5, strategy=url.strategy.id)


async def test_showing_a_name_in_alerts_needs_the_name(core: Core) -> None:
    with pytest.raises(InvalidInput):
        await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True)
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, True, "  Alice   A. ")
    await core.subscriptions.set_alerts_show_name(ALICE, GUILD, False)
    from bot.automation_models import AlertPreference

    async with core.db.session() as s:
        [pref] = list(await s.scalars(select(AlertPreference)))
    assert pref.alerts_show_name is False
