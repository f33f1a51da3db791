"""Member-facing wording shared by the services and the cogs."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal


def plural(count: int | Decimal) -> str:
    """The noun's ending for ``count``: f"{n} order{plural(n)}" reads "1 order", "2 orders"."""
    return "" if count == 1 else "s"


def qty(value: Decimal) -> str:
    """A quantity as members read it: "12,000", "1,234.5", "0.00012" (never as typed back:
    option and autocomplete values keep plain numbers)."""
    return format((value + 0).normalize(), ",f")  # + 0: a -0 left by arithmetic reads "0"


def money(value: Decimal | None, currency: str = "USD") -> str:
    """“$1,500,000.00”, “-$12.50”, “1,000.00 EUR”; “—” for an amount not known."""
    if value is None:
        return "—"
    value = cents(value)
    sign = "-" if value < 0 else ""  # of the cents shown: a tiny loss is "$0.00", not "-$0.00"
    if currency == "USD":
        return f"{sign}${abs(value):,.2f}"
    return f"{sign}{abs(value):,.2f} {currency}"


def cents(value: Decimal) -> Decimal:
    """``value`` to the cent, a half cent up as brokers and members round it (6.125 is 6.13;
    formatting alone rounds it to even, 6.12). Zero has no sign."""
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) + 0


# What Discord would format (bold, italics, strike-through, spoilers, code, quotes, masked
# links) or read as a mention (<@id>, @everyone). Connection and strategy names are shown in
# channel alerts and many messages, so they must read there as typed.
NAME_REFUSED = "*_~`|<>@[]\\"
# An underscore between two letters or digits stays as typed in Discord ("ES_scalper_v2", as
# TradingView scripts are often named); one that could open or close italics does not.
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_(?=[^\W_])")
# At the start of a line these make a heading (#), a list or subtext (-) or a quote (>).
NAME_FIRST_REFUSED = "#->"


def name_problem(name: str, what: str, example: str) -> str | None:
    """Why Discord would show ``name`` otherwise than typed, said to the member who typed it
    (``what``: "A connection name"; ``example``: "e.g. …"); None when it would not."""
    bad = [c for c in NAME_REFUSED if c in _INNER_UNDERSCORE.sub("", name)]
    if bad:
        return (
            f"{what} cannot have {_chars(bad)}: Discord would format "
            f"{'it' if len(bad) == 1 else 'them'} or read a mention wherever the name is shown, "
            f"alerts included. Leave out {_chars(NAME_REFUSED)} (an `_` inside a word is fine), "
            f"{example}."
        )
    if "://" in name:
        return f"{what} cannot be a link (it has “://”): alerts would show it as one, {example}."
    if not name.isprintable() or any(c in BLANK_LETTERS for c in name):
        # Zero-width and direction marks: "Break\u200bout" would show as "Breakout", a
        # right-to-left override turns the rest of an alert's line around.
        return (
            f"{what} cannot have invisible characters (zero-width spaces, direction marks, "
            f"blank letters): it would show as another name, or as none, {example}."
        )
    if name[:1] in NAME_FIRST_REFUSED:
        return (
            f"{what} cannot start with {_chars(NAME_FIRST_REFUSED)} (Discord makes a line that "
            f"starts with # a heading, with - a list and with > a quote), {example}."
        )
    return None


# Letters that print as nothing (Hangul fillers, the blank Braille pattern).
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _chars(chars: str | list[str]) -> str:
    """Each in code, so the message shows it rather than being formatted by it."""
    shown = ["the backtick" if c == "`" else f"`{c}`" for c in chars]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} and {shown[-1]}"


_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]()])")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut said with "…"."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def plain(text: str) -> str:
    """Member-written text as inert plain text: no markdown, no mention syntax, no link (a
    display name "Free shares at https://…" shown in an alert), and nothing invisible or
    turning the line around (a right-to-left override reverses what follows it)."""
    text = "".join(c for c in text if c.isprintable())
    text = _MARKDOWN.sub(r"\\\1", text)
    text = text.replace("://", ":\u200b//")
    return text.replace("@", "@\u200b").replace("<", "<\u200b")
