"""Rendering trading data for Discord: money, quantities, tables, and paged embeds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal

import discord

from adapters.models import Order, OrderType, Position, Quote
from bot.wording import cents, money, qty
from cogs.ui import LIVE_COLOUR, PAPER_COLOUR

PAGE_ROWS = 15
SIMULATED = "simulated prices"


def signed_money(value: Decimal | None, currency: str = "USD") -> str:
    """A gain or loss: "+$12.50", "-3.00 CAD"; one that rounds to nothing is "$0.00"."""
    if value is None:
        return "—"
    return ("+" if cents(value) > 0 else "") + money(value, currency)


def price(value: Decimal | None) -> str:
    """A quote or a fill as the fill DM writes it: cents, and the fraction of a cent a fill at
    the midpoint has (270.285, 0.495), up to 4 places (8 below $1); no zeros nobody typed."""
    if value is None:
        return "—"
    most = 8 if abs(value) < 1 else 4
    places = max(2, min(most, -int(value.normalize().as_tuple().exponent)))
    shown = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    return f"{shown:,.{places}f}"


def quote_embed(q: Quote, broker: str, connection: str | None) -> discord.Embed:
    """/quote: bid, ask, last and the spread, as of the quote's time. ``connection``: its
    name, in a private reply only (a connection's name is the member's own)."""
    embed = discord.Embed(
        title=q.symbol if connection is None else f"{q.symbol} · {connection}",
        description=f"Prices from {broker}",
        timestamp=q.time,
    )
    for name, value in (("Bid", q.bid), ("Ask", q.ask), ("Last", q.last)):
        embed.add_field(name=name, value=price(value) if value > 0 else "—")
    if q.bid > 0 and q.ask > 0:
        spread = q.ask - q.bid
        places = max(2, *(-int(v.normalize().as_tuple().exponent) for v in (q.bid, q.ask)))
        share = spread / q.mid
        of_mid = f"{share:.2%}" if share >= Decimal("0.0001") or not share else "under 0.01%"
        embed.add_field(name="Spread", value=f"{spread:,.{places}f} ({of_mid} of the mid)")
    if q.simulated:
        embed.set_footer(text=f"{SIMULATED}, not a market's")
    return embed


def order_price(value: Decimal) -> str:
    """A limit or stop price as the order carries it: every decimal typed is kept (250.123 is
    not 250.12), so the preview and /orders show the price the broker gets."""
    places = min(8, max(2, -int(value.normalize().as_tuple().exponent)))
    return f"{value:,.{places}f}"


def pct(numerator: Decimal | None, denominator: Decimal | None) -> str:
    if numerator is None or not denominator:
        return "—"
    share = cents(numerator / abs(denominator) * 100)  # a tiny loss is "+0.00%", not "-0.00%"
    return f"{share:+,.2f}%"


def mode_colour(mode: str) -> discord.Colour:
    return LIVE_COLOUR if mode == "live" else PAPER_COLOUR


def mode_tag(mode: str) -> str:
    return "🔴 LIVE" if mode == "live" else "📝 PAPER"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """A monospace table in a code block; numbers right-aligned. A cell with a newline goes on
    as many lines, the row's other cells blank below their first line."""
    lines: list[Sequence[str]] = [headers]
    for row in rows:
        if any("\n" in c for c in row):
            cells = [c.split("\n") for c in row]
            lines.extend(
                [c[n] if n < len(c) else "" for c in cells] for n in range(max(map(len, cells)))
            )
        else:  # most rows: one line as it is
            lines.append(row)
    widths = [max(map(len, column)) for column in zip(*lines, strict=True)]
    pads = [str.rjust if i in right else str.ljust for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            [pad(c, w) for pad, c, w in zip(pads, cells, widths, strict=True)]
        ).rstrip()

    return "```\n" + "\n".join(map(line, lines)) + "\n```"


def position_rows(positions: Sequence[Position]) -> list[list[str]]:
    return [
        [
            p.symbol,
            p.side,
            qty(abs(p.quantity)),
            price(p.average_price),
            price(p.market_price),
            signed_money(p.unrealized_pnl),
            pct(p.unrealized_pnl, p.cost_basis),
        ]
        for p in positions
    ]


def order_rows(orders: Sequence[Order], *, fills: bool = False) -> list[list[str]]:
    """``fills``: with the average fill price after the filled quantity (/history), since a
    market order's Price column only says "mkt"."""
    rows = []
    for o in orders:
        filled = f"{qty(o.filled_quantity)}/{qty(o.quantity)}"
        average = price(o.average_fill_price) if o.filled_quantity else "—"
        rows.append(
            [
                o.id[-8:],
                o.side.value,
                o.symbol,
                filled,
                *([average] if fills else []),
                _kind(o),
                _prices(o),
                # Day plus, as brokers write an order that also works before and after hours.
                o.time_in_force.value + ("+" if o.extended_hours else ""),
                "cancel requested" if o.cancel_pending else o.status.value.replace("_", " "),
                *([_ended(o)] if fills else []),
            ]
        )
    return rows


def _ended(o: Order) -> str:
    at = o.updated_at or o.created_at
    return f"{at.astimezone(UTC):%m-%d %H:%M}" if at is not None else "—"


def _prices(o: Order) -> str:
    """The Price cell. A stop limit's two prices are named, stop first as ``order_terms`` says
    them (/cancel's choices, the DMs), one a line so the column stays as narrow as one price."""
    if o.limit_price is not None and o.stop_price is not None:
        return f"stop {order_price(o.stop_price)}\nlimit {order_price(o.limit_price)}"
    if o.trail_amount is not None or o.trail_percent is not None:
        # Where the stop stands now, and how far behind the best price it follows.
        trail = (
            f"trail {order_price(o.trail_amount)}"
            if o.trail_amount is not None
            else f"trail {qty(o.trail_percent or Decimal(0))}%"
        )
        return f"stop {order_price(o.stop_price)}\n{trail}" if o.stop_price else trail
    at = o.limit_price if o.limit_price is not None else o.stop_price
    return order_price(at) if at is not None else "mkt"


def order_kind(o: Order) -> str:
    """As the /trade card and its result say it: "stop limit", "trailing stop"."""
    return o.order_type.value.replace("_", " ")


def _kind(o: Order) -> str:
    """The order type; a bracket's exit says which one it is (TP take-profit, SL stop-loss)."""
    kind = order_kind(o)
    if o.parent_id is None:
        return kind
    return f"TP {kind}" if o.order_type is OrderType.LIMIT else f"SL {kind}"


ORDER_HEADERS = ["Id", "Side", "Symbol", "Filled", "Type", "Price", "TIF", "Status"]
# When each ended, in UTC as /signal list writes times: a table in a code block cannot show
# Discord's local timestamps.
HISTORY_HEADERS = [*ORDER_HEADERS[:4], "Avg fill", *ORDER_HEADERS[4:], "Ended UTC"]


DESCRIPTION_MAX = 4096


def paged(
    title: str,
    mode: str,
    header: str,
    rows: list[list[str]],
    headers: list[str],
    right: set[int],
    footer: str,
    *,
    empty: str,
) -> list[discord.Embed]:
    """Embeds of at most ``PAGE_ROWS`` rows each, numbered in the footer; ``empty`` says what
    there is none of ("No open orders.") when there are no rows."""
    # At most PAGE_ROWS a page, and fewer where wide rows would pass an embed description's
    # 4,096 characters (Discord refuses the whole answer then).
    room = DESCRIPTION_MAX - len(header) - 1
    bodies: list[str] = []
    start = 0
    while start < len(rows):
        # PAGE_ROWS rows nearly always fit; a table only grows with each row, so rows are
        # given back one at a time until it fits (one row always makes a page).
        end = min(start + PAGE_ROWS, len(rows))
        body = table(headers, rows[start:end], right)
        while end - start > 1 and len(body) > room:
            end -= 1
            body = table(headers, rows[start:end], right)
        bodies.append(body)
        start = end
    pages = []
    for n, body in enumerate(bodies or [empty], 1):
        embed = discord.Embed(
            title=title, description=f"{header}\n{body}", colour=mode_colour(mode)
        )
        page = f"Page {n}/{len(bodies)} · " if len(bodies) > 1 else ""
        embed.set_footer(text=f"{page}{footer}")
        pages.append(embed)
    return pages
