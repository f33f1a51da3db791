"""Trading commands: /trade, /positions, /balances, /orders, /history, /cancel, /paper reset,
/paper settings.

Thin by design: check input, defer when a broker is involved, call the trading service, render.
Confirm/Cancel on a trade card are dynamic items keyed by the order intent, so a click works in
whichever bot process receives it, and the database decides (once) what it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from adapters.models import (
    AUCTIONS,
    AssetClass,
    Balance,
    Bracket,
    Order,
    OrderChange,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Quote,
    Side,
    TimeInForce,
)
from adapters.paper.engine import PriceType, closing_quantity
from adapters.registry import get_adapter_class
from bot.brokers import connect_command
from bot.client import Tradecord, report_error
from bot.errors import Conflict, PermissionDenied, TradecordError
from bot.models import ConnectionStatus
from bot.services.connections import SIMULATED_SOURCE, PaperSettings, Target
from bot.services.trading import (
    HISTORY_LIMIT,
    Change,
    Flattened,
    Holdings,
    OrderInput,
    Outcome,
    Preview,
    change_of,
    exits_words,
    meets_market,
    order_terms_of,
    order_text,
    reduces,
)
from bot.wording import plural
from cogs import format as fmt
from cogs.ui import (
    OK_COLOUR,
    ConfirmView,
    OwnedView,
    as_title,
    choices_in_time,
    connection_names,
    in_time,
    may_post_here,
    reply,
    update,
)

Mode = Literal["paper", "live"]
CARD_TTL = 60.0
PRICE_TYPES: dict[PriceType, str] = {  # as members read them
    PriceType.MID: "Bid/ask midpoint (futures at whole ticks)",
    PriceType.BID_ASK: "Ask for buys, bid for sells",
    PriceType.ASK: "Always the ask",
    PriceType.BID: "Always the bid",
    PriceType.LAST: "Last trade price",
}


def _footer(*parts: str | None) -> str:
    return " · ".join(p for p in parts if p)


def _without(unpriced: Sequence[str]) -> str:
    return f" (without {', '.join(unpriced)})" if unpriced else ""


def shared_footer(command: str, amounts: bool, *parts: str | None) -> str:
    """What a shared summary is and what it leaves out, after ``parts`` ("and 3 more")."""
    left_out = "no account numbers" if amounts else "no account numbers or amounts"
    return _footer(*parts, f"Shared with /{command} · {left_out}")


class Pager(OwnedView):
    """◀ ▶ through pages of one embed list; only for the member who asked."""

    def __init__(self, owner_id: int, pages: list[discord.Embed]) -> None:
        super().__init__(owner_id, timeout=300)
        self.pages = pages
        self.index = 0
        self._sync()

    def _sync(self) -> None:
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index >= len(self.pages) - 1

    async def _turn(self, interaction: discord.Interaction, step: int) -> None:
        # Clamped: a second quick press arrives before the first one disabled the button, and
        # then shows the last (or first) page again instead of running off the end.
        self.index = max(0, min(self.index + step, len(self.pages) - 1))
        self._sync()
        await interaction.response.edit_message(embed=self.pages[self.index], view=self)

    @discord.ui.button(label="◀ Previous", style=discord.ButtonStyle.secondary)
    async def previous(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self._turn(interaction, -1)

    @discord.ui.button(label="Next ▶", style=discord.ButtonStyle.secondary)
    async def next(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self._turn(interaction, 1)


async def send_pages(interaction: discord.Interaction, pages: list[discord.Embed]) -> None:
    if len(pages) == 1:
        await reply(interaction, embed=pages[0], ephemeral=True)
        return
    view = Pager(interaction.user.id, pages)
    view.message = await reply(interaction, embed=pages[0], view=view, ephemeral=True, wait=True)


class TradeButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"tc:trade:(?P<action>confirm|cancel):(?P<intent>[0-9a-f-]{36})",
):
    def __init__(self, action: str, intent_id: str) -> None:
        confirm = action == "confirm"
        super().__init__(
            discord.ui.Button(
                label="Confirm" if confirm else "Cancel",
                style=discord.ButtonStyle.success if confirm else discord.ButtonStyle.secondary,
                custom_id=f"tc:trade:{action}:{intent_id}",
            )
        )
        self.action = action
        self.intent_id = intent_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> TradeButton:
        return cls(match["action"], match["intent"])

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: Tradecord = interaction.client  # type: ignore[assignment]
        trading = bot.core.trading
        # One in_time for the claim and the send: time the claim waits for a busy database
        # uses up Discord's 3 s as much as the broker's does, so it must count before deferring.
        try:  # discard and claim check the owner first, and change nothing for anyone else
            if self.action == "cancel":
                await in_time(
                    interaction,
                    trading.discard(self.intent_id, interaction.user.id),
                    ephemeral=True,
                )
                await update(
                    interaction, content="Cancelled: nothing was sent.", embed=None, view=None
                )
                return
            outcome = await in_time(
                interaction, trading.confirm(self.intent_id, interaction.user.id), ephemeral=True
            )
        except PermissionDenied:
            await reply(
                interaction,
                content="These buttons belong to someone else's order. Run /trade yourself to get "
                "your own.",
                ephemeral=True,
            )
            return
        except Conflict as e:
            if "expired" in e.user_message:
                await update(interaction, content=e.user_message, embed=None, view=None)
            else:  # a second press: the first one owns the card
                await reply(interaction, content=e.user_message, ephemeral=True)
            return
        except Exception as e:
            await report_error(interaction, e)
            return
        try:
            await update(interaction, content=None, embed=result_embed(outcome), view=None)
        except Exception as e:
            # A dynamic item's error reaches no handler: unanswered, the member would see "This
            # interaction failed" about an order that was sent, and might place it again.
            await report_error(interaction, e)


def preview_embed(p: Preview) -> discord.Embed:
    r = p.request
    kind = r.order_type.value.replace("_", " ")
    prices = []
    # Stop first, as /orders, /cancel and the DMs name a stop limit's prices.
    if r.stop_price is not None:
        prices.append(f"stop ${fmt.order_price(r.stop_price)}")
    if r.limit_price is not None:
        prices.append(f"limit ${fmt.order_price(r.limit_price)}")
    if r.trail_amount is not None:
        prices.append(f"trailing ${fmt.order_price(r.trail_amount)} behind the best price")
    if r.trail_percent is not None:
        prices.append(f"trailing {fmt.qty(r.trail_percent)}% behind the best price")
    live = p.target.mode == "live"
    embed = discord.Embed(
        title=f"{fmt.mode_tag(p.target.mode)} order preview",
        description=(
            f"**{r.side.value.upper()} {fmt.qty(r.quantity)} {r.symbol}** · {kind}"
            + (f" ({', '.join(prices)})" if prices else "")
            + f" · {r.time_in_force.value.upper()}"
            + extended_line(p)
            + auction_line(r)
            + _bracket_line(r, exits_gtc=p.exits_gtc)
            + amount_line(p)
            + risk_line(p)
            + closing_line(p)
            + fills_at_line(p)
            + stop_limit_line(r)
            + short_line(p)
            + cover_line(p)
            + closed_line(p)
            + ("\n⚠️ **This is a LIVE order with real money.**" if live else "")
        ),
        colour=fmt.mode_colour(p.target.mode),
    )
    name = p.target.connection.name
    embed.add_field(
        name="Connection", value=name if name == p.broker_name else f"{name} ({p.broker_name})"
    )
    embed.add_field(name="Account", value=fmt_account(p))
    # A limit or stop order is estimated at its own price: shown as typed, like the title.
    typed = r.order_type.value != "market"
    estimate = fmt.order_price if typed else fmt.price
    embed.add_field(name="Estimated price", value=f"${estimate(p.estimated_price)}")
    embed.add_field(name=value_label(p), value=fmt.money(p.estimated_cost))
    # Margined (futures): what is held back. Not for a close, which frees that margin.
    if p.buying_power_required != p.estimated_cost and not reduces(r, p.position_quantity):
        embed.add_field(name="Buying power needed", value=fmt.money(p.buying_power_required))
    embed.add_field(name="Buying power", value=fmt.money(p.buying_power))
    embed.add_field(name="Buying power after", value=fmt.money(p.buying_power_after))
    embed.set_footer(
        text=_footer("Confirm within 60 seconds", fmt.SIMULATED if p.simulated else None)
    )
    return embed


def buying_power_text(b: Balance) -> str:
    """Below zero as it is (the cards count from it), with the way back: 0 hid a deficit, and
    a close's card then promised buying power the account would not have."""
    shown = fmt.money(b.buying_power, b.currency)
    if b.buying_power >= 0:
        return shown
    short = fmt.money(-b.buying_power, b.currency)
    return f"{shown}\nBelow zero: close or cover about {short} of positions to open new ones."


def fills_at_line(p: Preview) -> str:
    """A paper market order fills at the account's price type, which may not be the ask (for
    a buy) the estimate is priced at: the fill would otherwise look like a mistake."""
    if p.price_type is None or p.request.order_type is not OrderType.MARKET:
        return ""
    if p.price_type == PriceType.BID_ASK.value:
        return ""
    return (
        f"\nℹ️ Your paper market orders fill at: {PRICE_TYPES[PriceType(p.price_type)].lower()} "
        "(/paper settings); the estimate is at the "
        f"{'ask' if p.request.side is Side.BUY else 'bid'}."
    )


def stop_limit_line(r: OrderRequest) -> str:
    """A stop limit whose limit is on the far side of its stop (a buy's below it): once the
    stop triggers, it fills only if the price comes back to the limit. Rarely meant."""
    if r.order_type is not OrderType.STOP_LIMIT or r.stop_price is None or r.limit_price is None:
        return ""
    buy = r.side is Side.BUY
    if (r.limit_price >= r.stop_price) if buy else (r.limit_price <= r.stop_price):
        return ""
    stop, limit = f"${fmt.order_price(r.stop_price)}", f"${fmt.order_price(r.limit_price)}"
    return (
        f"\n⚠️ Its limit ({limit}) is {'below' if buy else 'above'} its stop ({stop}): once the "
        f"stop triggers at {stop}, it {'buys' if buy else 'sells'} only if the price comes back "
        f"to {limit}. A {'buy' if buy else 'sell'} stop limit usually has its limit "
        f"{'at or above' if buy else 'at or below'} the stop."
    )


def extended_line(p: Preview) -> str:
    if not p.request.extended_hours:
        return ""
    line = (
        "\n🌙 Extended hours: may also fill in the pre-market and after-hours sessions, "
        "where prices can move more and fewer shares trade."
    )
    reach = p.extended_reach
    if reach is None:
        return line
    after = "regular" if reach.session == "pre-market" else "after-hours"
    return (
        f"\n🌙 Extended hours: at {p.broker_name} an order sent now works in the "
        f"{reach.session} session only. Unfilled, it expires at <t:{int(reach.ends_at.timestamp())}"
        f":t> and does not carry into the {after} session."
    )


def risk_line(p: Preview) -> str:
    """/trade risk: what the quantity loses, at the estimate, if the stop-loss fills."""
    r, loss = p.request, p.loss_at_stop
    if p.risk is None or loss is None or r.bracket is None:
        return ""
    return (
        f"\n🎯 Sized for {fmt.money(p.risk)} of risk: {fmt.qty(r.quantity)} {r.symbol} would lose "
        f"{fmt.money(loss)} from the estimated price to the stop-loss at "
        f"${fmt.order_price(r.bracket.stop_loss)}."
    )


def amount_line(p: Preview) -> str:
    """/trade amount: the quantity is what the amount comes to at the estimate, rounded down."""
    if p.amount is None:
        return ""
    r = p.request
    buy = r.side is Side.BUY
    left = p.amount - p.estimated_cost
    rest = ""
    if r.quantity == r.quantity.to_integral_value() and left >= Decimal("0.01"):
        units = "shares" if r.asset_class is AssetClass.EQUITY else "units"
        rest = f" (whole {units}: {fmt.money(left)} {'not spent' if buy else 'short of it'})"
    return (
        f"\n💵 {fmt.money(p.amount)} {'buys' if buy else 'sells'} {fmt.qty(r.quantity)} "
        f"{r.symbol} at the estimated price{rest}."
    )


def short_line(p: Preview) -> str:
    """A sell of more than is held sells short: said on the card, since a member who meant to
    close a position they do not have would otherwise open a short without a word."""
    r = p.request
    held = p.position_quantity
    short = r.quantity - held
    if r.side is not Side.SELL or short <= 0:
        return ""
    if held > 0 and p.already_closing:
        return after_older_line(p, f"your {fmt.qty(held)} {r.symbol}")
    if held > 0:
        now = f"You hold {fmt.qty(held)} {r.symbol}: this sell closes them and opens"
    elif held < 0:
        return (
            f"\n⚠️ You are short {fmt.qty(-held)} {r.symbol} already: this sell adds "
            f"{fmt.qty(r.quantity)} to the short."
        )
    else:
        now = f"You hold no {r.symbol}: this sell opens"
    return f"\n⚠️ {now} a short position of {fmt.qty(short)}."


def cover_line(p: Preview) -> str:
    """A buy of more than a short position covers it and goes long: said as a sell that goes
    short is (``short_line``), since a member who meant to cover would otherwise be long."""
    r = p.request
    short = -p.position_quantity
    if r.side is not Side.BUY or short <= 0 or r.quantity <= short:
        return ""
    if p.already_closing:
        return after_older_line(p, f"your short {fmt.qty(short)} {r.symbol}")
    return (
        f"\n⚠️ You are short {fmt.qty(short)} {r.symbol}: this buy covers them and opens a "
        f"long position of {fmt.qty(r.quantity - short)}."
    )


def after_older_line(p: Preview, yours: str) -> str:
    """An order behind older ones on its side, which the broker counts as closing the
    position first (``Preview.already_closing``): what is left for it to close, and what it
    opens past that. ``yours``: the position, as the line that calls it names it."""
    r, held = p.request, p.position_quantity
    verb, opened = ("sell", "short") if r.side is Side.SELL else ("buy", "long")
    closes = closing_quantity(held, r.side, r.quantity, p.already_closing)
    opens = r.quantity - closes
    if opens:
        also = f"closes {fmt.qty(closes)} and opens" if closes else "opens"
        does = f"{also} a {opened} position of {fmt.qty(opens)} if they fill first"
    else:
        does = f"closes {fmt.qty(closes)} of it"
    return (
        f"\n⚠️ Open {verb} orders already close "
        f"{fmt.qty(min(p.already_closing, abs(held)))} of {yours}: this {verb} {does}."
    )


def closing_line(p: Preview) -> str:
    """What the order does to the position held, when it closes some or all of it."""
    r = p.request
    held = p.position_quantity
    if not reduces(r, held):
        return ""
    verb = "sell" if r.side is Side.SELL else "buy"
    kind = "long" if held > 0 else "short"
    if p.already_closing:
        return after_older_line(p, f"your {kind} position of {fmt.qty(abs(held))} {r.symbol}")
    if r.quantity == abs(held):
        return (
            f"\nThis {verb} closes your whole {kind} position of {fmt.qty(abs(held))} {r.symbol}."
        )
    return (
        f"\nThis {verb} closes {fmt.qty(r.quantity)} of your {kind} position of "
        f"{fmt.qty(abs(held))} {r.symbol}."
    )


def auction_line(r: OrderRequest) -> str:
    if r.time_in_force not in AUCTIONS:
        return ""
    which = "opening" if r.time_in_force is TimeInForce.OPG else "closing"
    return (
        f"\n🔔 {which.capitalize()} auction: it trades only in the next {which} auction, at the "
        "auction's price (which may differ from this estimate), or is cancelled unfilled."
    )


def closed_line(p: Preview) -> str:
    """An order placed at night or on a weekend waits for the open: a market order then fills
    at the opening price, which the estimate may be far from; an IOC or FOK order cannot wait.
    (An auction order's own line says when it trades.)"""
    if p.market_opens_at is None or p.request.time_in_force in AUCTIONS:
        return ""
    r = p.request
    closed = f"\n🌙 The market is closed until <t:{int(p.market_opens_at.timestamp())}:f>: "
    if r.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
        return closed + (
            f"an {r.time_in_force.value.upper()} order cannot wait for the open, so the broker "
            "may refuse it or cancel it unfilled. A day or GTC order waits for the open."
        )
    if r.order_type is OrderType.MARKET:
        return closed + (
            "this market order waits for the open and fills at the opening price, which may "
            "differ from this estimate. A limit order caps the price."
        )
    if r.extended_hours:
        return closed + (
            "as an extended-hours order this may fill before then, in the after-hours or "
            "pre-market session."
        )
    return (
        closed
        + "this order works from the open."
        + (
            " With extended_hours:true it may also fill in the pre-market and after-hours sessions."
            if p.could_extend
            else ""
        )
    )


def still_working_line(p: Preview, orders: Sequence[Order]) -> str:
    """/close, or a /trade that closes: the symbol's open orders are left as they are; a resting
    exit that fires after the position is gone (or for more than is left) opens one the other
    way."""
    followed = ""
    if p.exits_follow and any(o.parent_id for o in orders):
        # Cut to what is left by the broker itself: nothing to cancel by hand.
        followed = (
            f"\nIts bracket's exits are cut to what is left of the {p.request.symbol} position "
            "(cancelled once nothing is)."
        )
        orders = [o for o in orders if not o.parent_id]
    if not orders:
        return followed
    n = len(orders)
    named = "; ".join(order_text(o) for o in orders[:3]) + ("; …" if n > 3 else "")
    them = "it" if n == 1 else "them"
    left = abs(p.position_quantity) - p.request.quantity
    risk = (
        f"You will hold {fmt.qty(left)} {p.request.symbol} after this: a fill of more than "
        "that would open a position the other way. Cancel with /cancel order any that should "
        "not fill."
        if left > 0
        else f"Once the position is closed, a fill would open a new one: cancel {them} with "
        "/cancel order."
    )
    return followed + (
        f"\n⚠️ {n} open {orders[0].symbol} order{plural(n)} stay{'s' if n == 1 else ''} working: "
        f"{named}. {risk}"
    )


def value_label(p: Preview) -> str:
    """A sell brings money in, and a future's value is its notional, not what it costs."""
    if p.asset_class is AssetClass.FUTURE:
        return "Notional value"
    return "Estimated proceeds" if p.request.side is Side.SELL else "Estimated cost"


def _bracket_line(r: OrderRequest, *, exits_gtc: bool = False) -> str:
    b = r.bracket
    if b is None:
        return ""
    exits = exits_words(b, lambda price: f"${fmt.order_price(price)}")
    both = "; one cancels the other" if len(exits) > 1 else ""
    line = f"\nBracket: {' · '.join(exits)}, placed once it fills{both}"
    if exits_gtc:
        line += " (good till cancelled)"
    elif r.time_in_force is TimeInForce.DAY:
        line += " (⚠️ as day orders, they end with the trading day: time_in_force:gtc keeps them)"
    return line


def fmt_account(p: Preview) -> str:
    from adapters.models import mask_account

    return f"{mask_account(p.target.account.account_id)} ({p.target.account.account_type})"


def result_embed(outcome: Outcome) -> discord.Embed:
    intent = outcome.intent
    ok = outcome.ok
    embed = discord.Embed(
        title=("✅ " if ok else "❌ ") + f"{fmt.mode_tag(intent.mode)} order",
        description=outcome.message,
        colour=OK_COLOUR if ok else discord.Colour.dark_grey(),
    )
    if outcome.order is not None:
        embed.add_field(name="Broker order id", value=outcome.order.id)
    embed.set_footer(
        text=_footer(f"Intent {intent.id[:8]}", fmt.SIMULATED if outcome.simulated else None)
    )
    return embed


def history_footer(count: int, days: int, broker: str | None) -> str:
    """How many orders /history shows, and that older ones are cut when it hit the limit.
    ``broker``: where the full history is, None for Tradecord Paper, which has no site."""
    if count < HISTORY_LIMIT:
        return f"{count} order{plural(count)}"
    cut = f"The newest {count} orders: older ones of these {days} day{plural(days)} are not shown."
    return cut if broker is None else f"{cut} {broker}'s site has the full history."


BRACKETS_NAMED = 5  # /cancel all's answer names this many bracket parts, then counts the rest


def cancelled_text(
    connection: str, orders: list[Order], brackets: Mapping[str, Bracket] | None = None
) -> str:
    """What /cancel all did, counting orders that ended on their own before the cancel and
    cancels the broker had not carried out yet. The parts of brackets are named: a
    take-profit or stop-loss, or an entry whose exits (``brackets``) end with it."""
    brackets = brackets or {}
    done = sum(o.status is OrderStatus.CANCELLED for o in orders)
    text = f"Cancelled {done} open order{plural(done)} on {connection}."
    parts = [
        order_text(o, brackets.get(o.id))
        for o in orders
        if o.status is OrderStatus.CANCELLED
        and (o.parent_id is not None or (o.id in brackets and not o.filled_quantity))
    ]
    if parts:
        # A few named, the rest counted: a book of brackets passed Discord's 2,000 characters,
        # and the answer, after every order was cancelled, was an error.
        shown = "; ".join(parts[:BRACKETS_NAMED])
        more = len(parts) - BRACKETS_NAMED
        text += f" Bracket orders among them: {shown}" + (
            f"; and {more} more (/history lists them)." if more > 0 else "."
        )
    waiting = sum(not o.status.is_final for o in orders)
    if waiting:
        text += (
            f" {waiting} more: cancel requested, not yet carried out by the broker (see /orders)."
        )
    ended = Counter(
        o.status.value.replace("_", " ")
        for o in orders
        if o.status.is_final and o.status is not OrderStatus.CANCELLED
    )
    if ended:
        text += (
            " Already ended before the cancel: "
            + ", ".join(f"{n} {status}" for status, n in sorted(ended.items()))
            + "."
        )
    return text


class ConfirmCancelAll(ConfirmView):
    """/cancel all's question. It cancels the orders it listed: one placed since (a signal's,
    a bracket's exits after a fill) was not in what the member agreed to."""

    def __init__(
        self,
        owner_id: int,
        bot: Tradecord,
        connection: str | None,
        mode: str,
        listed: list[str],
    ) -> None:
        super().__init__(owner_id, timeout=CARD_TTL)
        self.bot, self.connection, self.mode, self.listed = bot, connection, mode, listed
        if len(listed) == 1:
            self.go.label, self.keep.label = "Cancel it", "Keep it"

    @discord.ui.button(label="Cancel them all", style=discord.ButtonStyle.danger)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        target, orders, left = await in_time(
            interaction,
            self.bot.core.trading.cancel_listed(
                interaction.user.id, self.connection, self.mode, self.listed
            ),
            ephemeral=True,
        )
        brackets = await self.bot.core.trading.brackets(target, orders)
        text = cancelled_text(target.connection.name, orders, brackets)
        if left:
            n = len(left)
            text += (
                f" Left open: {n} order{plural(n)} placed after the question "
                f"({'; '.join(order_text(o) for o in left[:3])}{' …' if n > 3 else ''}). "
                "/cancel all again cancels them too."
            )
        await self.answer(interaction, text)

    @discord.ui.button(label="Keep them", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self.answer(interaction, "Nothing was cancelled.")


_CHANGE_LABELS = (
    ("quantity", "Quantity"),
    ("limit_price", "Limit price"),
    ("stop_price", "Stop price"),
)


def change_embed(c: Change) -> discord.Embed:
    """/modify's card: the order as it works now, and each change, old → new."""
    o, lines = c.before, []
    for name, label in _CHANGE_LABELS:
        new = getattr(c.change, name)
        if new is None:
            continue
        show = fmt.qty if name == "quantity" else (lambda v: f"${fmt.order_price(v)}")
        lines.append(f"{label}: {show(getattr(o, name))} → **{show(new)}**")
    if c.change.quantity is not None and o.filled_quantity:
        lines.append(
            f"The quantity is the order's total: {fmt.qty(o.filled_quantity)} filled already, "
            f"{fmt.qty(c.change.quantity - o.filled_quantity)} left to fill after the change."
        )
    if c.held is not None and c.change.quantity is not None:
        # As /trade's card says it (short_line): a bigger sell may now sell short.
        left = c.change.quantity - o.filled_quantity
        if c.held < 0:
            lines.append(
                f"⚠️ You are short {fmt.qty(-c.held)} {o.symbol} already: this sell adds "
                f"{fmt.qty(left)} to the short."
            )
        elif c.held == 0:
            lines.append(
                f"⚠️ You hold no {o.symbol}: this sell opens a short position of {fmt.qty(left)}."
            )
        elif left > c.held:
            lines.append(
                f"⚠️ You hold {fmt.qty(c.held)} {o.symbol}: once the order fills you are short "
                f"{fmt.qty(left - c.held)}."
            )
    at_once = fills_at_once(o, c.change, c.quote)
    if at_once:
        lines.append(f"⚠️ {at_once}")
    if c.target.mode == "live":
        lines.append("⚠️ **This is a LIVE order with real money.**")
    embed = discord.Embed(
        title=f"{fmt.mode_tag(c.target.mode)} change order {o.id[-8:]}",
        description=f"**{order_text(o)}** · {o.time_in_force.value.upper()}\n" + "\n".join(lines),
        colour=fmt.mode_colour(c.target.mode),
    )
    name = c.target.connection.name
    embed.add_field(
        name="Connection", value=name if name == c.broker_name else f"{name} ({c.broker_name})"
    )
    simulated = c.quote is not None and c.quote.simulated
    embed.set_footer(
        text=_footer("Confirm within 60 seconds", fmt.SIMULATED if simulated else None)
    )
    return embed


def fills_at_once(order: Order, change: OrderChange, quote: Quote | None) -> str | None:
    """Said on the card when the new price meets the market (``meets_market``); None when it
    does not, or with no quote to tell."""
    at_once = meets_market(order, change, quote) if quote is not None else None
    if at_once is None:
        return None
    buy = order.side is Side.BUY
    where = f"the {'ask' if buy else 'bid'} (${fmt.price(at_once.market)})"
    price = f"${fmt.order_price(at_once.price)}"
    if at_once.kind == "stop":
        return f"A {order.side.value} stop at {price} is past {where}: it triggers at once."
    return f"A {order.side.value} limit at {price} meets {where}: it would fill at once."


def changed_text(c: Change) -> str:
    after = c.after
    assert after is not None
    where = c.target.connection.name
    terms = order_text(dataclasses.replace(after, filled_quantity=Decimal(0)))  # fills: below
    text = f"✅ Order {c.before.id[-8:]} on {where} changed: {terms}."
    if after.id != c.before.id:
        text += f" The broker replaced it with order {after.id[-8:]}, which /orders now shows"
        filled = c.before.filled_quantity
        text += (
            f": it is for the {fmt.qty(after.quantity)} left, {fmt.qty(filled)} having filled."
            if filled
            else "."
        )
    if after.status is OrderStatus.FILLED:
        text += (
            f" It filled at once, at ${fmt.price(after.average_fill_price)}."
            if after.average_fill_price is not None
            else " It filled at once."
        )
    elif after.status is OrderStatus.PARTIALLY_FILLED:
        text += f" {fmt.qty(after.filled_quantity)} of it has filled."
    return text


class ConfirmChange(ConfirmView):
    def __init__(
        self, owner_id: int, bot: Tradecord, connection: str | None, mode: str, preview: Change
    ) -> None:
        super().__init__(owner_id, timeout=CARD_TTL)
        self.bot, self.connection, self.mode, self.preview = bot, connection, mode, preview

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        p = self.preview
        made = await in_time(
            interaction,
            self.bot.core.trading.change_order(
                interaction.user.id, self.connection, self.mode, p.before.id, p.change
            ),
            ephemeral=True,
        )
        await self.answer(interaction, changed_text(made))

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self.answer(interaction, f"Order {self.preview.before.id[-8:]} was not changed.")


class ConfirmFlatten(ConfirmView):
    def __init__(self, owner_id: int, bot: Tradecord, connection: str | None, mode: str) -> None:
        super().__init__(owner_id, timeout=CARD_TTL)
        self.bot, self.connection, self.mode = bot, connection, mode

    @discord.ui.button(label="Flatten", style=discord.ButtonStyle.danger)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        # The question's message names the press: a second one places no close twice.
        key = str(interaction.message.id if interaction.message else interaction.id)
        done = await in_time(
            interaction,
            self.bot.core.trading.flatten(interaction.user.id, self.connection, self.mode, key),
            ephemeral=True,
        )
        await self.answer(interaction, flattened_text(done))

    @discord.ui.button(label="Keep everything", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self.answer(interaction, "Nothing was cancelled or closed.")


def flatten_question(target: Target, positions: Sequence[Position], orders: Sequence[Order]) -> str:
    name, mode = target.connection.name, target.mode
    parts = []
    if orders:
        parts.append(f"cancels {len(orders)} open order{plural(len(orders))}")
    if positions:
        closes = [
            f"{'sell' if p.quantity > 0 else 'buy'} {fmt.qty(abs(p.quantity))} {p.symbol}"
            for p in positions[:10]
        ]
        more = f" and {len(positions) - 10} more" if len(positions) > 10 else ""
        parts.append(
            f"closes {len(positions)} position{plural(len(positions))} at the market: "
            f"{', '.join(closes)}{more}"
        )
    live = "\n⚠️ **These are LIVE orders with real money.**" if mode == "live" else ""
    return f"Flatten {name} ({mode})? This {', then '.join(parts)}.{live}"


def flattened_text(done: Flattened) -> str:
    name = done.target.connection.name
    if done.repeated:
        return (
            f"{name} was flattened by your first press already; nothing more was done. /orders "
            "and /positions show where it stands."
        )
    if done.not_cancelled:
        waiting = "; ".join(order_text(o) for o in done.not_cancelled[:3])
        return (
            f"Not flattened: the broker had not carried out every cancel yet ({waiting}), so "
            "no position was closed: an exit still working could sell what a close sold. "
            "Check /orders in a moment, then run /flatten again."
        )
    cancelled = sum(o.status is OrderStatus.CANCELLED for o in done.cancelled)
    # An exit that filled before its cancel changed the position the closes then closed.
    ended = sum(o.status is not OrderStatus.CANCELLED for o in done.cancelled)
    also = f" ({ended} had filled or ended before the cancel: see /history)" if ended else ""
    what = (
        f"cancelled {cancelled} open order{plural(cancelled)}{also}"
        if done.cancelled
        else "no open orders to cancel"
    )
    lines = [f"Flattened {name}: {what}."]
    for outcome in done.closes:
        intent = outcome.intent
        if outcome.extra.get("duplicate"):
            lines.append(f"• {intent.symbol}: already sent by your first press.")
        else:
            lines.append(f"• {'✅' if outcome.ok else '❌'} {outcome.message}")
    for symbol, why in done.not_closed:
        lines.append(f"• ❌ {symbol}: {why}")
    if not done.closes and not done.not_closed:
        lines.append("No position was open.")
    # A message holds 2,000 characters: the rest are counted, and /history has them all.
    shown, size = [], 0
    for i, line in enumerate(lines):
        if size + len(line) > 1850:
            shown.append(f"… and {len(lines) - i} more: /history and /positions show them all.")
            break
        shown.append(line)
        size += len(line) + 1
    return "\n".join(shown)


class ConfirmPaperReset(ConfirmView):
    def __init__(self, owner_id: int, bot: Tradecord) -> None:
        super().__init__(owner_id, timeout=CARD_TTL)
        self.bot = bot

    @discord.ui.button(label="Reset my paper account", style=discord.ButtonStyle.danger)
    async def go(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await in_time(
            interaction, self.bot.core.trading.reset_paper(interaction.user.id), ephemeral=True
        )
        cash = fmt.money(self.bot.settings.paper_starting_cash)
        await self.answer(
            interaction, f"Your paper account is back to {cash} cash, with no positions or orders."
        )

    @discord.ui.button(label="Keep it", style=discord.ButtonStyle.secondary)
    async def keep(self, interaction: discord.Interaction, _: discord.ui.Button[Any]) -> None:
        await self.answer(interaction, "Nothing was reset.")


class Trading(commands.Cog):
    def __init__(self, bot: Tradecord) -> None:
        self.bot = bot
        self._expiries: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(TradeButton)

    async def cog_unload(self) -> None:
        for task in self._expiries:
            task.cancel()

    @app_commands.command(name="positions", description="Your open positions")
    @app_commands.describe(
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live",
        share="Post a summary in the channel",
        show_amounts="With share: include quantities and money amounts",
    )
    @app_commands.autocomplete(connection=connection_names)
    async def positions(
        self,
        interaction: discord.Interaction,
        connection: str | None = None,
        mode: Mode = "paper",
        share: bool = False,
        show_amounts: bool = False,
    ) -> None:
        if share:
            may_post_here(interaction)
        pf = await in_time(
            interaction,
            self.bot.core.trading.holdings(interaction.user.id, connection, mode),
            ephemeral=not share,
        )
        if share:
            await reply(
                interaction, embed=shared_positions(interaction, pf, show_amounts), ephemeral=False
            )
            return
        headers = ["Symbol", "Side", "Qty", "Avg", "Last", "P&L", "P&L %"]
        pages = fmt.paged(
            f"Positions · {pf.target.connection.name}",
            pf.target.mode,
            f"{fmt.mode_tag(pf.target.mode)} · {pf.broker_name}",
            fmt.position_rows(pf.positions),
            headers,
            {2, 3, 4, 5, 6},
            _footer(
                f"{len(pf.positions)} position{plural(len(pf.positions))}"
                + (" · close with /close" if pf.positions else ""),
                fmt.SIMULATED if pf.simulated else None,
            ),
            empty="No open positions.",
        )
        await send_pages(interaction, pages)

    @app_commands.command(name="balances", description="Cash, buying power and equity")
    @app_commands.describe(
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live",
        share="Post a summary in the channel",
        show_amounts="With share: include money amounts",
    )
    @app_commands.autocomplete(connection=connection_names)
    async def balances(
        self,
        interaction: discord.Interaction,
        connection: str | None = None,
        mode: Mode = "paper",
        share: bool = False,
        show_amounts: bool = False,
    ) -> None:
        if share:
            may_post_here(interaction)
        pf = await in_time(
            interaction,
            self.bot.core.trading.portfolio(interaction.user.id, connection, mode),
            ephemeral=not share,
        )
        b = pf.balance
        # Positions the price source gave no quote for are valued at cost: their gain or loss
        # is in no figure below, which must say so rather than read as flat.
        unpriced = [str(symbol) for symbol in (b.info or {}).get("unpriced") or []]
        unrealized = None if unpriced and len(unpriced) >= len(pf.positions) else b.unrealized_pnl
        embed = discord.Embed(
            # Shared, it names the broker only, as /positions and /orders do: a connection's
            # name is the member's own ("Roth IRA") and may say more than they meant to share.
            title=f"{as_title(interaction.user.display_name)}'s balances"
            if share
            else f"Balances · {pf.target.connection.name}",
            description=f"{fmt.mode_tag(pf.target.mode)} · {pf.broker_name}",
            colour=fmt.mode_colour(pf.target.mode),
        )
        if share and not show_amounts:
            embed.add_field(name="Open positions", value=str(len(pf.positions)))
            if unrealized is not None and b.equity:
                # Of the equity before the gain, as Day P&L is: one gain reads one percentage.
                embed.add_field(
                    name="Unrealized P&L",
                    value=fmt.pct(unrealized, b.equity - unrealized) + _without(unpriced),
                )
            if b.day_pnl is not None:
                embed.add_field(name="Day P&L", value=fmt.pct(b.day_pnl, b.equity - b.day_pnl))
        else:
            embed.add_field(name="Equity", value=fmt.money(b.equity, b.currency))
            embed.add_field(name="Cash", value=fmt.money(b.cash, b.currency))
            embed.add_field(name="Buying power", value=buying_power_text(b))
            embed.add_field(name="Market value", value=fmt.money(b.market_value, b.currency))
            if b.initial_margin is not None:
                # A futures account's market value is its contracts' notional: the margin they
                # hold is what tells how near a margin call it is.
                embed.add_field(
                    name="Margin in use",
                    value=f"{fmt.money(b.initial_margin, b.currency)} initial"
                    + (
                        f", {fmt.money(b.maintenance_margin, b.currency)} maintenance"
                        if b.maintenance_margin is not None
                        else ""
                    ),
                )
            if unrealized is not None:
                embed.add_field(
                    name="Unrealized P&L",
                    value=fmt.signed_money(unrealized, b.currency) + _without(unpriced),
                )
            elif unpriced:
                embed.add_field(name="Unrealized P&L", value="—")
            if b.realized_pnl is not None:
                embed.add_field(
                    name="Realized P&L", value=fmt.signed_money(b.realized_pnl, b.currency)
                )
            if b.day_pnl is not None:
                # Since the previous trading day's close, as brokers show "today's" P&L.
                embed.add_field(
                    name="Day P&L",
                    value=f"{fmt.signed_money(b.day_pnl, b.currency)} "
                    f"({fmt.pct(b.day_pnl, b.equity - b.day_pnl)})",
                )
        if not share:
            from adapters.models import mask_account

            embed.add_field(name="Account", value=mask_account(pf.target.account.account_id))
        if unpriced:
            embed.add_field(
                name="⚠️ Not priced",
                value=f"No quote for {', '.join(unpriced)} just now: valued at what it cost, so "
                "its gain or loss is in none of these figures. Try again in a moment; /positions "
                "shows which prices are missing.",
                inline=False,
            )
        simulated = fmt.SIMULATED if pf.simulated else None
        if share:
            embed.set_footer(text=shared_footer("balances", show_amounts, simulated))
        elif simulated:
            embed.set_footer(text=simulated)
        await reply(interaction, embed=embed, ephemeral=not share)

    @app_commands.command(name="quote", description="A symbol's bid, ask and last price")
    @app_commands.describe(
        symbol="Ticker (AAPL), future (/ES or a contract like ESH7) or crypto pair (BTCUSD)",
        connection="Whose prices (default: Tradecord Paper)",
        mode="paper (default) or live",
        share="Post it in the channel",
    )
    @app_commands.autocomplete(connection=connection_names)
    async def quote(
        self,
        interaction: discord.Interaction,
        symbol: str,
        connection: str | None = None,
        mode: Mode = "paper",
        share: bool = False,
    ) -> None:
        if share:
            may_post_here(interaction)
        target, broker, q = await in_time(
            interaction,
            self.bot.core.trading.quote(interaction.user.id, symbol, connection, mode),
            ephemeral=not share,
        )
        embed = fmt.quote_embed(q, broker, None if share else target.connection.name)
        await reply(interaction, embed=embed, ephemeral=not share)

    @app_commands.command(name="orders", description="Your open orders")
    @app_commands.describe(
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live",
        share="Post a summary in the channel",
        show_amounts="With share: include quantities and prices",
    )
    @app_commands.autocomplete(connection=connection_names)
    async def orders(
        self,
        interaction: discord.Interaction,
        connection: str | None = None,
        mode: Mode = "paper",
        share: bool = False,
        show_amounts: bool = False,
    ) -> None:
        if share:
            may_post_here(interaction)
        target, broker, orders = await in_time(
            interaction,
            self.bot.core.trading.open_orders(interaction.user.id, connection, mode),
            ephemeral=not share,
        )
        if share:
            embed = shared_orders(
                interaction,
                "orders",
                "open orders",
                target.mode,
                broker,
                orders,
                show_amounts,
                empty="No open orders.",
            )
            await reply(interaction, embed=embed, ephemeral=False)
            return
        pages = fmt.paged(
            f"Open orders · {target.connection.name}",
            target.mode,
            f"{fmt.mode_tag(target.mode)} · {broker}",
            fmt.order_rows(orders),
            fmt.ORDER_HEADERS,
            {3},
            f"{len(orders)} open order{plural(len(orders))}"
            + (" · change with /modify, cancel with /cancel order" if orders else ""),
            empty="No open orders.",
        )
        await send_pages(interaction, pages)

    @app_commands.command(name="history", description="Your recent orders that ended")
    @app_commands.describe(
        days="How many days back (1-90, default 7)",
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live",
        share="Post a summary in the channel",
        show_amounts="With share: include quantities and prices",
    )
    @app_commands.autocomplete(connection=connection_names)
    async def history(
        self,
        interaction: discord.Interaction,
        days: app_commands.Range[int, 1, 90] = 7,
        connection: str | None = None,
        mode: Mode = "paper",
        share: bool = False,
        show_amounts: bool = False,
    ) -> None:
        if share:
            may_post_here(interaction)
        target, broker, orders = await in_time(
            interaction,
            self.bot.core.trading.history(interaction.user.id, connection, mode, days),
            ephemeral=not share,
        )
        last = f"the last {days} day{plural(days)}"
        if share:
            embed = shared_orders(
                interaction,
                "history",
                f"orders of {last}",
                target.mode,
                broker,
                orders,
                show_amounts,
                empty=f"No orders in {last}.",
                fills=True,
            )
            await reply(interaction, embed=embed, ephemeral=False)
            return
        pages = fmt.paged(
            f"Order history · {target.connection.name}",
            target.mode,
            f"{fmt.mode_tag(target.mode)} · {broker} · {last}",
            fmt.order_rows(orders, fills=True),
            fmt.HISTORY_HEADERS,
            {3, 4},
            _footer(
                history_footer(len(orders), days, None if target.connection.builtin else broker),
                fmt.SIMULATED if _simulated_fills(orders) else None,
            ),
            empty=f"No orders in {last}.",
        )
        await send_pages(interaction, pages)

    # -- trading ------------------------------------------------------------------------

    @app_commands.command(name="trade", description="Place an order (you confirm a preview first)")
    @app_commands.describe(
        symbol="Ticker (AAPL), future (/ES or a contract like ESH7) or crypto pair (BTCUSD)",
        side="buy or sell",
        quantity="How many shares, contracts or coins (or give amount)",
        amount="Instead of quantity: how many dollars to buy or sell for, e.g. 500",
        risk="Instead of quantity: dollars to lose if the stop_loss fills, e.g. 100 (sizes it)",
        order_type="market (default), limit, stop, stop_limit or trailing_stop",
        limit_price="For limit and stop-limit orders",
        stop_price="For stop and stop-limit orders",
        time_in_force="day (default; gtc for crypto), gtc, ioc, fok, or opg/cls: the "
        "opening/closing auction",
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live — live trades real money",
        take_profit="Bracket: a limit exit at this price, placed once the order fills",
        stop_loss="Bracket: a stop exit at this price, placed once the order fills",
        trailing_stop_loss="Bracket: a stop exit trailing the best price by this, e.g. 1.50 or 2%",
        trail_amount="Trailing stop: how far (in price) the stop trails the best price",
        trail_percent="Trailing stop: how far (in percent) the stop trails the best price",
        extended_hours="Stock limit day orders: may also fill before the open and after the close",
    )
    @app_commands.autocomplete(connection=connection_names)
    async def trade(
        self,
        interaction: discord.Interaction,
        symbol: str,
        side: Literal["buy", "sell"],
        quantity: str | None = None,
        amount: str | None = None,
        order_type: Literal["market", "limit", "stop", "stop_limit", "trailing_stop"] = "market",
        limit_price: str | None = None,
        stop_price: str | None = None,
        time_in_force: Literal["day", "gtc", "ioc", "fok", "opg", "cls"] | None = None,
        connection: str | None = None,
        mode: Mode = "paper",
        take_profit: str | None = None,
        stop_loss: str | None = None,
        trail_amount: str | None = None,
        trail_percent: str | None = None,
        risk: str | None = None,
        extended_hours: bool = False,
        trailing_stop_loss: str | None = None,
    ) -> None:
        order = OrderInput(
            symbol,
            side,
            quantity or "",
            order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            connection=connection,
            mode=mode,
            take_profit=take_profit,
            stop_loss=stop_loss,
            trailing_stop_loss=trailing_stop_loss,
            trail_amount=trail_amount,
            trail_percent=trail_percent,
            amount=amount,
            risk=risk,
            extended_hours=extended_hours,
        )
        preview = await in_time(
            interaction, self.bot.core.trading.preview(interaction.user.id, order), ephemeral=True
        )
        embed = preview_embed(preview)
        embed.description = (embed.description or "") + still_working_line(preview, preview.working)
        await self._card(interaction, embed, preview.intent_id, "/trade")

    async def position_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        ns = interaction.namespace
        try:
            holdings = await choices_in_time(
                self.bot.core.trading.holdings(
                    interaction.user.id, getattr(ns, "connection", None), getattr(ns, "mode", None)
                )
            )
        except TradecordError:
            return []
        if holdings is None:
            return []  # a slow broker: the symbol can still be typed
        cur = current.casefold()
        out = []
        for p in holdings.positions:
            label = f"{p.symbol} · {p.side} {fmt.qty(abs(p.quantity))}"
            if cur in label.casefold():
                out.append(app_commands.Choice(name=label[:100], value=p.symbol))
        return out[:25]

    @app_commands.command(
        name="close", description="Close a position at the market (you confirm a preview first)"
    )
    @app_commands.describe(
        symbol="The position (start typing to search your positions)",
        quantity="How much of it to close (default: all of it)",
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live — live trades real money",
    )
    @app_commands.autocomplete(symbol=position_choices, connection=connection_names)
    async def close(
        self,
        interaction: discord.Interaction,
        symbol: str,
        quantity: str | None = None,
        connection: str | None = None,
        mode: Mode = "paper",
    ) -> None:
        preview, working = await in_time(
            interaction,
            self.bot.core.trading.close_preview(
                interaction.user.id, symbol, quantity, connection, mode
            ),
            ephemeral=True,
        )
        embed = preview_embed(preview)
        embed.description = (embed.description or "") + still_working_line(preview, working)
        await self._card(interaction, embed, preview.intent_id, "/close")

    async def _card(
        self, interaction: discord.Interaction, embed: discord.Embed, intent_id: str, command: str
    ) -> None:
        """The preview card with its Confirm and Cancel, greyed out when it expires."""
        view = discord.ui.View(timeout=None)
        view.add_item(TradeButton("confirm", intent_id))
        view.add_item(TradeButton("cancel", intent_id))
        await reply(interaction, embed=embed, view=view, ephemeral=True)
        task = asyncio.create_task(self._expire_card(interaction, intent_id, command))
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)

    async def _expire_card(
        self, interaction: discord.Interaction, intent_id: str, command: str
    ) -> None:
        """Grey out an unanswered card when it expires (the database refuses it anyway)."""
        await asyncio.sleep(CARD_TTL)
        from bot.models import IntentStatus

        intent = await self.bot.core.trading.get_intent(intent_id)
        if intent.status == IntentStatus.DRAFT:
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(
                    content=f"This preview expired; nothing was sent. Run {command} again.",
                    embed=None,
                    view=None,
                )

    @app_commands.command(
        name="flatten", description="Cancel every open order and close every position (you confirm)"
    )
    @app_commands.describe(
        connection="Which connection (default: Tradecord Paper)", mode="paper (default) or live"
    )
    @app_commands.autocomplete(connection=connection_names)
    async def flatten(
        self, interaction: discord.Interaction, connection: str | None = None, mode: Mode = "paper"
    ) -> None:
        target, positions, orders = await in_time(
            interaction,
            self.bot.core.trading.flatten_plan(interaction.user.id, connection, mode),
            ephemeral=True,
        )
        if not positions and not orders:
            await reply(
                interaction,
                content=f"{target.connection.name} has no open {target.mode} positions or orders: "
                "nothing to flatten.",
                ephemeral=True,
            )
            return
        view = ConfirmFlatten(interaction.user.id, self.bot, connection, mode)
        view.message = await reply(
            interaction,
            content=flatten_question(target, positions, orders),
            view=view,
            ephemeral=True,
            wait=True,
        )

    cancel = app_commands.Group(name="cancel", description="Cancel open orders")

    async def open_order_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        ns = interaction.namespace
        try:
            found = await choices_in_time(
                self.bot.core.trading.open_orders(
                    interaction.user.id, getattr(ns, "connection", None), getattr(ns, "mode", None)
                )
            )
        except TradecordError:
            return []
        if found is None:
            return []  # a slow broker: the order's id (or its end) can still be typed
        _, _, orders = found
        cur = current.casefold()
        out = []
        for o in orders:
            terms = order_terms_of(o)
            label = f"{o.side.value} {fmt.qty(o.quantity)} {o.symbol} {terms} · {o.id[-8:]}"
            if cur in label.casefold():
                out.append(app_commands.Choice(name=label[:100], value=o.id))
        return out[:25]

    @cancel.command(name="order", description="Cancel one open order")
    @app_commands.describe(
        order="The order (start typing to search)",
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live",
    )
    @app_commands.autocomplete(order=open_order_choices, connection=connection_names)
    async def cancel_order(
        self,
        interaction: discord.Interaction,
        order: str,
        connection: str | None = None,
        mode: Mode = "paper",
    ) -> None:
        target, results = await in_time(
            interaction,
            self.bot.core.trading.cancel(interaction.user.id, connection, mode, [order]),
            ephemeral=True,
        )
        # The order asked for first; the others are its bracket's, cancelled along with it
        # at a broker that cancels a bracket's exits together (Tradier).
        asked = [r for r in results if r.id == order or r.id.endswith(order)][:1]
        along = [r for r in results if r not in asked]
        results = asked + along
        if not results:
            text = f"Order {order[-8:]} is no longer on {target.connection.name}'s books."
        elif results[0].status.is_final:
            r = results[0]
            brackets = await self.bot.core.trading.brackets(target, results)
            text = (
                f"Order {r.id[-8:]} on {target.connection.name} is now "
                f"{r.status.value.replace('_', ' ')}: {order_text(r, brackets.get(r.id))}."
            )
            if along:
                broker = get_adapter_class(target.connection.broker).display_name
                went = "; ".join(
                    f"{o.id[-8:]} {o.status.value.replace('_', ' ')} "
                    f"({order_text(o, brackets.get(o.id))})"
                    for o in along
                )
                text += (
                    f" {broker} cancels a bracket's exits together, so its other orders went "
                    f"with it: {went}. Place new exits if you still want them."
                )
        else:
            r = results[0]
            text = (
                f"Order {r.id[-8:]} ({order_text(r)}) on {target.connection.name}: cancel "
                "requested, not yet carried out by the broker. Check /orders in a moment."
            )
        await reply(interaction, content=text, ephemeral=True)

    @app_commands.command(
        name="modify", description="Change an open order's quantity or prices (you confirm first)"
    )
    @app_commands.describe(
        order="The open order (start typing to search)",
        quantity="New total quantity, what already filled included",
        limit_price="New limit price (limit and stop-limit orders)",
        stop_price="New stop price (stop and stop-limit orders, a bracket's stop-loss)",
        connection="Which connection (default: Tradecord Paper)",
        mode="paper (default) or live",
    )
    @app_commands.autocomplete(order=open_order_choices, connection=connection_names)
    async def modify(
        self,
        interaction: discord.Interaction,
        order: str,
        quantity: str | None = None,
        limit_price: str | None = None,
        stop_price: str | None = None,
        connection: str | None = None,
        mode: Mode = "paper",
    ) -> None:
        change = change_of(quantity, limit_price, stop_price)
        preview = await in_time(
            interaction,
            self.bot.core.trading.preview_change(
                interaction.user.id, connection, mode, order, change
            ),
            ephemeral=True,
        )
        view = ConfirmChange(interaction.user.id, self.bot, connection, mode, preview)
        view.message = await reply(
            interaction, embed=change_embed(preview), view=view, ephemeral=True, wait=True
        )

    @cancel.command(name="all", description="Cancel every open order on a connection")
    @app_commands.describe(
        connection="Which connection (default: Tradecord Paper)", mode="paper (default) or live"
    )
    @app_commands.autocomplete(connection=connection_names)
    async def cancel_all(
        self, interaction: discord.Interaction, connection: str | None = None, mode: Mode = "paper"
    ) -> None:
        target, _, orders = await in_time(
            interaction,
            self.bot.core.trading.open_orders(interaction.user.id, connection, mode),
            ephemeral=True,
        )
        if not orders:
            await reply(
                interaction,
                content=f"{target.connection.name} has no open {target.mode} orders.",
                ephemeral=True,
            )
            return
        view = ConfirmCancelAll(
            interaction.user.id, self.bot, connection, mode, [o.id for o in orders]
        )
        # One order is named: "Cancel all 1 open order" neither read well nor said which.
        question = (
            f"Cancel your one open {target.mode} order on {target.connection.name}, "
            f"{order_text(orders[0])}?"
            if len(orders) == 1
            else f"Cancel all {len(orders)} open {target.mode} orders on {target.connection.name}?"
        )
        view.message = await reply(
            interaction,
            content=question,
            view=view,
            ephemeral=True,
            wait=True,
        )

    paper = app_commands.Group(name="paper", description="Your Tradecord Paper account")

    @paper.command(name="reset", description="Start your paper account over")
    async def paper_reset(self, interaction: discord.Interaction) -> None:
        cash = fmt.money(self.bot.settings.paper_starting_cash)
        view = ConfirmPaperReset(interaction.user.id, self.bot)
        await interaction.response.send_message(
            f"Reset your paper account to {cash} cash? Every paper position, order and the "
            "history of fills will be removed.",
            view=view,
            ephemeral=True,
        )
        view.message = await interaction.original_response()

    @paper.command(name="settings", description="How your paper market orders are priced")
    @app_commands.describe(
        price_type="The price market orders fill at",
        quote_source="Where prices come from: one of your linked brokers, or simulated",
    )
    @app_commands.choices(
        price_type=[app_commands.Choice(name=n, value=t.value) for t, n in PRICE_TYPES.items()]
    )
    async def paper_settings(
        self,
        interaction: discord.Interaction,
        price_type: str | None = None,
        quote_source: str | None = None,
    ) -> None:
        settings = await self.bot.core.connections.set_paper_settings(
            interaction.user.id, price_type=price_type, quote_source=quote_source
        )
        changed = price_type is not None or quote_source is not None
        await reply(interaction, embed=paper_settings_embed(settings, changed), ephemeral=True)

    @paper_settings.autocomplete("quote_source")
    async def quote_source_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        sources = await self.bot.core.connections.quote_sources(interaction.user.id)
        cur = current.casefold()
        choices = [
            app_commands.Choice(name=f"Simulated feed ({fmt.SIMULATED})", value=SIMULATED_SOURCE)
        ] + [app_commands.Choice(name=c.name, value=c.name) for c in sources]
        return [c for c in choices if cur in c.name.casefold()][:25]


def paper_settings_embed(settings: PaperSettings, changed: bool) -> discord.Embed:
    source = (
        f"{settings.quote_source.name} ({settings.quote_source_broker})"
        if settings.quote_source
        else f"The built-in simulated feed ({fmt.SIMULATED})"
    )
    embed = discord.Embed(
        title="Paper settings saved" if changed else "Paper settings",
        colour=OK_COLOUR if changed else fmt.mode_colour("paper"),
    )
    embed.add_field(
        name="Market orders fill at", value=PRICE_TYPES[settings.price_type], inline=False
    )
    src = settings.quote_source
    if src is not None and src.status == ConnectionStatus.NEEDS_REAUTH:
        # Until then paper orders can be neither priced nor filled there.
        source += (
            f"\n⛔ It needs to be re-linked ({connect_command(src.broker)}): until then paper "
            "orders are neither priced nor filled. Or choose quote_source:simulated."
        )
    embed.add_field(name="Prices from", value=source, inline=False)
    # Option syntax as other hints give it (/alerts-channel channel:#channel).
    embed.set_footer(
        text="Change them with /paper settings price_type:<price> or "
        "quote_source:<a linked broker, or simulated>"
    )
    return embed


def shared_positions(
    interaction: discord.Interaction, pf: Holdings, amounts: bool
) -> discord.Embed:
    """A public summary: no account numbers; quantities and money only when asked for."""
    if amounts:
        headers = ["Symbol", "Side", "Qty", "Avg", "Last", "P&L", "P&L %"]
        rows = fmt.position_rows(pf.positions)
        right = {2, 3, 4, 5, 6}
    else:
        headers = ["Symbol", "Side", "P&L %"]
        rows = [[p.symbol, p.side, fmt.pct(p.unrealized_pnl, p.cost_basis)] for p in pf.positions]
        right = {2}
    embed = discord.Embed(
        title=f"{as_title(interaction.user.display_name)}'s positions",
        description=f"{fmt.mode_tag(pf.target.mode)} · {pf.broker_name}\n"
        + (fmt.table(headers, rows[: fmt.PAGE_ROWS], right) if rows else "No open positions."),
        colour=fmt.mode_colour(pf.target.mode),
    )
    more = len(rows) - fmt.PAGE_ROWS
    embed.set_footer(
        text=shared_footer(
            "positions",
            amounts,
            f"and {more} more" if more > 0 else None,
            fmt.SIMULATED if pf.simulated else None,
        )
    )
    return embed


def shared_orders(
    interaction: discord.Interaction,
    command: str,
    what: str,
    mode: str,
    broker: str,
    orders: list[Order],
    amounts: bool,
    *,
    empty: str,
    fills: bool = False,
) -> discord.Embed:
    """A public summary of orders (``command`` /orders or /history): no account numbers or order
    ids; quantities and prices only when asked for (``fills``: with the average fill price, as
    /history has); ``empty`` when there are none."""
    if amounts:
        headers = (fmt.HISTORY_HEADERS if fills else fmt.ORDER_HEADERS)[1:]
        rows = [row[1:] for row in fmt.order_rows(orders, fills=fills)]
        right = {2, 3} if fills else {2}
    else:
        headers = ["Side", "Symbol", "Type", "Status"]
        rows = [
            [o.side.value, o.symbol, fmt.order_kind(o), o.status.value.replace("_", " ")]
            for o in orders
        ]
        right: set[int] = set()
    embed = discord.Embed(
        title=f"{as_title(interaction.user.display_name)}'s {what}",
        description=f"{fmt.mode_tag(mode)} · {broker}\n"
        + (fmt.table(headers, rows[: fmt.PAGE_ROWS], right) if rows else empty),
        colour=fmt.mode_colour(mode),
    )
    more = len(rows) - fmt.PAGE_ROWS
    simulated = fmt.SIMULATED if fills and amounts and _simulated_fills(orders) else None
    embed.set_footer(
        text=shared_footer(command, amounts, f"and {more} more" if more > 0 else None, simulated)
    )
    return embed


def _simulated_fills(orders: Sequence[Order]) -> bool:
    """Whether a fill price shown is the simulated feed's (Tradecord Paper without a source)."""
    return any(o.filled_quantity and (o.info or {}).get("simulated") for o in orders)


async def setup(bot: Tradecord) -> None:
    await bot.add_cog(Trading(bot))
