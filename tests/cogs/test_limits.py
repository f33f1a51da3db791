"""/pause, /resume, /killswitch and /limits end to end through the local Discord."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select

from adapters.paper.models import PaperOrder
from emulators.discord import Message, render_message
from tests.discord_harness import Harness


async def paper_orders(h: Harness) -> int:
    async with h.core.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(PaperOrder)) or 0)


async def confirm_trade(h: Harness, user: str, quantity: str = "1") -> Message:
    card = await h.reply(user, "trade", symbol="AAPL", side="buy", quantity=quantity)
    assert card.ephemeral and [b.label for b in card.buttons()] == ["Confirm", "Cancel"]
    done = await h.emu.click(h.user(user), card, label="Confirm")
    return await done.message(timeout=10)


async def refused_trade(h: Harness, user: str, quantity: str = "1") -> Message:
    """/trade answers a refusal privately, with no card to confirm."""
    reply = await h.reply(user, "trade", symbol="AAPL", side="buy", quantity=quantity)
    assert reply.ephemeral and reply.buttons() == []
    return reply


async def test_pause_refuses_my_orders_until_resume(tradecord: Harness) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    paused = await h.reply("alice", "pause")
    assert paused.ephemeral and "paused" in paused.text() and "/resume" in paused.text()
    result = await refused_trade(h, "alice")
    assert "Your trading is paused" in result.text() and "/resume" in result.text()
    assert await paper_orders(h) == 0
    assert "Filled" in (await confirm_trade(h, "bob")).text()  # only Alice paused
    shown = await h.reply("alice", "limits show")
    assert shown.ephemeral and "paused" in shown.text()
    resumed = await h.reply("alice", "resume")
    assert resumed.ephemeral and "resumed" in resumed.text()
    assert "Filled" in (await confirm_trade(h, "alice")).text()
    assert await paper_orders(h) == 2


async def test_only_the_bot_owner_turns_the_kill_switch_and_it_stops_everyones_orders(
    tradecord: Harness,
) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    denied = await h.reply("alice", "killswitch", state="on")
    assert denied.ephemeral and "Only the bot's owner" in denied.text()
    assert "To stop your own trading, strategy signals included, run /pause." in denied.text()
    owner = h.emu.owner.id
    card = await h.reply("alice", "trade", symbol="AAPL", side="buy", quantity="1")
    on = await h.reply(owner, "killswitch", state="on")
    assert on.ephemeral and "Kill switch is **ON**" in on.text()
    assert "`/killswitch state:off` lets trading resume" in on.text()  # was `/killswitch off`
    # A card shown before the switch went on: Confirm checks again and sends nothing.
    late = await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    assert "kill switch" in late.text() and late.buttons() == []
    result = await refused_trade(h, "alice")
    assert "kill switch" in result.text() and "nothing was sent" in result.text()
    assert await paper_orders(h) == 0
    status = await h.reply(owner, "killswitch", state="status")
    assert "ON" in status.text()
    off = await h.reply(owner, "killswitch", state="off")
    assert "off" in off.text()
    assert "Filled" in (await confirm_trade(h, "alice")).text()


async def test_my_limits_are_set_privately_and_refuse_a_larger_order(tradecord: Harness) -> None:
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    saved = await h.reply("alice", "limits set", max_order_notional="1,000")
    assert saved.ephemeral and "$1,000.00" in saved.text()
    bad = await h.reply("alice", "limits set", max_order_notional="lots")
    assert bad.ephemeral and "must be a number" in bad.text()
    result = await refused_trade(h, "alice", "10")
    assert "over your max notional per order: $1,000.00" in result.text()
    assert await paper_orders(h) == 0


async def test_a_limit_too_fine_to_keep_is_refused_not_shown_as_zero(tradecord: Harness) -> None:
    """0.004 was saved as "$0.00" and then refused every order, though 0 means no limit."""
    h = tradecord
    cents = await h.reply("alice", "limits set", max_order_notional="0.004")
    assert "at least 0.01, or 0 to remove it" in cents.text(), cents.text()
    fine = await h.reply("alice", "limits set", max_order_quantity="0.0000000001")
    assert "at most 9 decimals" in fine.text(), fine.text()
    assert "no limit" in (await h.reply("alice", "limits show")).text().lower()


async def test_limits_read_line_by_line_on_a_phone(tradecord: Harness) -> None:
    """Three inline columns of "max notional per order: $1,500,000.00" wrapped mid-phrase on a
    phone, which stacks fields: now a field a limit, its values one short line each."""
    h = tradecord
    saved = await h.reply(
        "alice", "limits set", max_order_quantity="12000", max_order_notional="1500000"
    )
    [embed] = saved.embeds
    assert [f["name"] for f in embed["fields"]] == [
        "Max quantity per order",
        "Max notional per order",
        "Max notional per day",
    ]
    notional = embed["fields"][1]["value"].replace("**", "").splitlines()
    assert notional == ["Applied: $1,500,000.00", "Yours: $1,500,000.00", "Server: no limit"]
    assert not any(f.get("inline") for f in embed["fields"])
    assert max(len(line) for f in embed["fields"] for line in f["value"].splitlines()) <= 26
    phone = render_message(saved, width=40).splitlines()
    for line in ("Applied: $1,500,000.00", "Yours: $1,500,000.00", "Server: no limit"):
        assert any(shown.endswith(line) for shown in phone), "\n".join(phone)


async def test_quantities_and_amounts_read_with_thousands_separators(tradecord: Harness) -> None:
    """/limits and the refusals said "12000" and "buy 12500 F", the result "Filled: buy 12000
    F": quantities now read as money does ("$1,500,000.00"), "12,000"."""
    h = tradecord
    h.core.simulated_feed.set_quote("F", Decimal("4.99"), Decimal("5.01"))
    saved = await h.reply("alice", "limits set", max_order_quantity="12,000")
    assert "Applied: **12,000**" in saved.text(), saved.text()
    refused = await refused_trade_of(h, "F", "12500")
    assert "buy 12,500 F is over your max quantity per order: 12,000." in refused, refused
    card = await h.reply("alice", "trade", symbol="F", side="buy", quantity="12000")
    assert "BUY 12,000 F" in card.text() and "$60,120.00" in card.text(), card.text()
    done = await (await h.emu.click(h.user("alice"), card, label="Confirm")).message(timeout=10)
    assert "Filled: buy 12,000 F at $5.00" in done.text(), done.text()
    positions = (await h.reply("alice", "positions")).text()
    assert "12,000" in positions and "12000" not in positions, positions


async def refused_trade_of(h: Harness, symbol: str, quantity: str) -> str:
    reply = await h.reply("alice", "trade", symbol=symbol, side="buy", quantity=quantity)
    assert reply.ephemeral and reply.buttons() == [], reply.text()
    return reply.text()


async def test_resume_while_the_kill_switch_is_on_says_orders_still_stop(
    tradecord: Harness,
) -> None:
    """/resume said "new orders are sent again" while the owner's kill switch refused them."""
    h = tradecord
    h.core.simulated_feed.set_quote("AAPL", Decimal("199.90"), Decimal("200.10"))
    await h.reply("alice", "pause")
    await h.reply(h.emu.owner.id, "killswitch", state="on")
    resumed = await h.reply("alice", "resume")
    assert resumed.ephemeral
    assert resumed.text() == (
        "▶️ Your pause is lifted, but the bot owner's kill switch is on: no new order is sent "
        "for anyone until they turn it off. Cancelling open orders still works."
    ), resumed.text()
    assert "kill switch" in (await refused_trade(h, "alice")).text()
    again = await h.reply("alice", "resume")
    assert again.text().startswith("Your trading was not paused, but the bot owner's kill switch")
    await h.reply(h.emu.owner.id, "killswitch", state="off")
    await h.reply("alice", "pause")
    assert "new orders are sent again" in (await h.reply("alice", "resume")).text()


async def test_limits_show_says_when_the_kill_switch_holds_every_order(
    tradecord: Harness,
) -> None:
    """/limits show, where a member looks for what stops their orders, said nothing of the
    owner's kill switch: only the limits, which were not what refused them."""
    h = tradecord
    calm = await h.reply("alice", "limits show")
    assert "kill switch" not in calm.text()
    await h.reply(h.emu.owner.id, "killswitch", state="on")
    for shown in (
        await h.reply("alice", "limits show"),
        await h.reply("alice", "limits set", max_order_quantity="10"),
    ):
        assert (
            "The bot owner's kill switch is on: no new order is sent for anyone until they "
            "turn it off." in shown.text().replace("**", "")
        ), shown.text()


async def test_limits_strategy_in_a_dm_says_to_run_it_in_the_server(tradecord: Harness) -> None:
    """Discord offers /limits strategy in DMs (guild_only() on a subcommand does nothing), and
    there it failed an assertion: the member got an incident id."""
    h = tradecord
    await h.bot.tree.sync()  # globally, as `tradecord sync --global` does: DMs see /limits
    done = await h.emu.slash(
        h.user("alice"), "limits strategy", options={"strategy": "Trend"}, dm=True
    )
    answer = await done.message(timeout=10)
    assert answer.text() == (
        "Strategies belong to a server: run /limits strategy in a channel of the server where "
        "the strategy was created."
    ), answer.text()
