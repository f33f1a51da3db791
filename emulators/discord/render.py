"""Plain-text rendering of messages for the terminal chat of local mode.

Embeds become boxed blocks; fields become an aligned table (inline fields side by side, up to
three per row as Discord lays them out). Interactive components are numbered in reading
order, and :func:`components_index` returns the same numbering so "press 2" maps to a click.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from .state import (
    ACTION_ROW,
    BUTTON,
    CONTAINER,
    JSON,
    SECTION,
    SELECT_TYPES,
    STRING_SELECT,
    TEXT_DISPLAY,
    Message,
)

WIDTH = 72
# ("user" | "role" | "channel", id) -> its name, or None if unknown.
Names = Callable[[str, int], str | None]
_MARKUP = re.compile(r"<(@!?|@&|#)(\d+)>|<t:(-?\d+)(?::[tTdDfFR])?>")
_MENTION_KINDS = {"@": "user", "@!": "user", "@&": "role", "#": "channel"}
_BAR = "│ "
BLANK = "\u200b"  # the name of a field that continues the one before it
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_EMPHASIS = re.compile(r"(?<!\\)(\*\*|__|~~|\|\|)")
_ESCAPED = re.compile(r"\\([*_~`|>\\])")
_SELECT_KIND = {
    3: ("option", "options"),
    5: ("user", "users"),
    6: ("role", "roles"),
    7: ("user or role", "users or roles"),
    8: ("channel", "channels"),
}


class IndexedComponent(NamedTuple):
    """One numbered interactive component: ``number`` is what the user types."""

    number: int
    kind: Literal["button", "link", "select"]
    custom_id: str | None
    label: str
    disabled: bool
    component: JSON


def components_index(message: Message) -> list[IndexedComponent]:
    """Buttons and selects numbered 1.. in the order :func:`render_message` shows them."""
    index: list[IndexedComponent] = []
    for component in _interactive(message.components):
        number = len(index) + 1
        ctype = component.get("type")
        if ctype == BUTTON:
            kind: Literal["button", "link", "select"] = (
                "link" if component.get("style") == 5 else "button"
            )
            label = _button_label(component)
        else:
            kind = "select"
            label = component.get("placeholder") or component.get("custom_id") or "select"
        index.append(
            IndexedComponent(
                number,
                kind,
                component.get("custom_id"),
                label,
                bool(component.get("disabled")),
                component,
            )
        )
    return index


def render_message(
    message: Message, *, author: str | None = None, width: int = WIDTH, names: Names | None = None
) -> str:
    """The message as a person would read it in a terminal: mentions and timestamps in the
    content, embed descriptions and field values as Discord shows them (``#general``,
    ``@alice``, a date), where ``names`` knows the name."""
    lines: list[str] = []
    header = []
    if author:
        header.append(author)
    if message.ephemeral:
        header.append("(only you can see this)")
    if message.edited_timestamp and not message.loading:
        header.append("(edited)")
    if header:
        lines.append(" ".join(header))
    if message.loading:
        lines.append(f"{author or 'The bot'} is thinking…")
    if message.content:
        lines.extend(_wrap(_markup(message.content, names), width))
    for embed in message.embeds:
        lines.extend(_render_embed(_embed_markup(embed, names), width))
    for attachment in message.attachments:
        lines.append(f"📎 {attachment.get('filename')} ({_size(int(attachment.get('size', 0)))})")
    numbers = {id(c.component): c.number for c in components_index(message)}
    lines.extend(_render_components(message.components, numbers, width))
    return "\n".join(lines)


def _markup(text: str, names: Names | None) -> str:
    def shown(m: re.Match[str]) -> str:
        if m.group(3) is not None:
            try:
                at = datetime.fromtimestamp(int(m.group(3)), UTC)
            except (OverflowError, OSError, ValueError):
                return m.group(0)
            return f"{at:%Y-%m-%d %H:%M} UTC"
        kind = _MENTION_KINDS[m.group(1)]
        name = names(kind, int(m.group(2))) if names is not None else None
        if name is None:
            return m.group(0)
        return f"#{name}" if kind == "channel" else f"@{name}"

    return _MARKUP.sub(shown, text)


def _embed_markup(embed: JSON, names: Names | None) -> JSON:
    out = dict(embed)
    if out.get("description"):
        out["description"] = _markup(str(out["description"]), names)
    if out.get("fields"):
        out["fields"] = [
            {**f, "value": _markup(str(f.get("value", "")), names)} for f in out["fields"]
        ]
    return out


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` with Discord's markdown shown as a reader sees it: markers
    gone, code blocks kept as they are (Discord scrolls them rather than wrapping)."""
    out: list[str] = []
    code = False
    for paragraph in str(text).splitlines() or [""]:
        if paragraph.startswith("```"):
            inner = paragraph[3:]
            if not code and len(inner) >= 3 and inner.endswith("```"):
                out.append(inner[:-3])  # a one-line block
                continue
            code = not code  # the fence itself (and an opening one's language) is not shown
            if code or not inner.strip():
                continue
            paragraph = inner  # text right after a closing fence reads on as text
        if code:
            out.append(paragraph.rstrip())
            continue
        plain = _inline_markdown(paragraph)
        out.extend(_fill(plain, width))
    return out


def _fill(text: str, width: int) -> list[str]:
    # A URL or id longer than the line stays whole (and unbroken at its hyphens), so it can be
    # copied from the terminal.
    wrapped = textwrap.wrap(
        text, width, replace_whitespace=False, break_long_words=False, break_on_hyphens=False
    )
    return wrapped or [""]


def _inline_markdown(line: str) -> str:
    """Bold, underline, strike-through and spoiler markers dropped, inline code unquoted and
    its text left alone, backslash escapes resolved."""
    parts = _INLINE_CODE.split(line)
    for i in range(0, len(parts), 2):  # the odd ones are inline code
        parts[i] = _ESCAPED.sub(r"\1", _EMPHASIS.sub("", parts[i]))
    return "".join(parts)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _render_embed(embed: JSON, width: int) -> list[str]:
    inner = width - len(_BAR)
    body: list[str] = []
    author = (embed.get("author") or {}).get("name")
    if author:
        body.extend(_wrap(str(author), inner))
    title = embed.get("title")
    if title:
        line = str(title).upper() if len(str(title)) <= inner else str(title)
        body.extend(_wrap(line, inner))
        if embed.get("url"):
            body.append(f"<{embed['url']}>")
    if embed.get("description"):
        if body:
            body.append("")
        body.extend(_wrap(str(embed["description"]), inner))
    fields = embed.get("fields") or []
    if fields:
        if body:
            body.append("")
        body.extend(_render_fields(fields, inner))
    for key in ("image", "thumbnail"):
        url = (embed.get(key) or {}).get("url")
        if url:
            body.append(f"[{key}: {url}]")
    footer = (embed.get("footer") or {}).get("text")
    if footer or embed.get("timestamp"):
        body.append("")
        parts = [str(footer)] if footer else []
        if embed.get("timestamp"):
            parts.append(str(embed["timestamp"]))
        body.extend(_wrap(" • ".join(parts), inner))
    top = "┌" + "─" * (width - 1)
    bottom = "└" + "─" * (width - 1)
    return [top, *(_BAR + line if line else _BAR.rstrip() for line in body), bottom]


def _render_fields(fields: list[JSON], width: int) -> list[str]:
    """Runs of inline fields side by side (3 per row); other fields as a name/value table."""
    lines: list[str] = []
    groups: list[tuple[bool, list[JSON]]] = []
    for f in fields:
        inline = bool(f.get("inline"))
        if groups and groups[-1][0] == inline and (not inline or len(groups[-1][1]) < 3):
            groups[-1][1].append(f)
        else:
            groups.append((inline, [f]))
    for inline, group in groups:
        if lines:
            lines.append("")
        if inline and len(group) > 1:
            lines.extend(_columns(group, width))
        else:
            lines.extend(_name_value_table(group, width))
    return lines


def _name_value_table(fields: list[JSON], width: int) -> list[str]:
    name_width = min(max(len(str(f.get("name", ""))) for f in fields), width // 3)
    value_width = max(width - name_width - 2, 10)
    lines: list[str] = []
    for f in fields:
        name = str(f.get("name", "")).replace(BLANK, "")
        names = textwrap.wrap(name, name_width) or [""]
        values = _wrap(str(f.get("value", "")), value_width)
        for i in range(max(len(names), len(values))):
            left = names[i] if i < len(names) else ""
            right = values[i] if i < len(values) else ""
            lines.append(f"{left.ljust(name_width)}  {right}".rstrip())
    return lines


def _columns(fields: list[JSON], width: int) -> list[str]:
    count = len(fields)
    col = max((width - 3 * (count - 1)) // count, 8)
    cells = [
        (
            textwrap.wrap(str(f.get("name", "")).replace(BLANK, ""), col) or [""],
            _wrap(str(f.get("value", "")), col),
        )
        for f in fields
    ]
    out: list[str] = []
    for part in (0, 1):
        height = max(len(c[part]) for c in cells)
        for i in range(height):
            row = [(c[part][i] if i < len(c[part]) else "").ljust(col) for c in cells]
            out.append("   ".join(row).rstrip())
    return out


def _interactive(components: list[JSON]) -> list[JSON]:
    found: list[JSON] = []
    for component in components:
        ctype = component.get("type")
        if ctype == BUTTON or ctype in SELECT_TYPES:
            found.append(component)
        if isinstance(component.get("components"), list):
            found.extend(_interactive(component["components"]))
        accessory = component.get("accessory")
        if isinstance(accessory, dict):
            found.extend(_interactive([accessory]))
    return found


def _button_label(button: JSON) -> str:
    emoji = (button.get("emoji") or {}).get("name")
    label = button.get("label") or ""
    return " ".join(p for p in (emoji, label) if p) or button.get("custom_id") or "button"


def _render_button(button: JSON, number: int) -> str:
    text = f"[{number}] {_button_label(button)}"
    if button.get("style") == 5:
        text += f" ↗ {button.get('url')}"
    if button.get("disabled"):
        text += " (disabled)"
    return text


def _render_select(select: JSON, number: int, width: int) -> list[str]:
    one, many = _SELECT_KIND.get(int(select.get("type", STRING_SELECT)), ("option", "options"))
    low, high = select.get("min_values", 1), select.get("max_values", 1)
    count = (
        f"pick {low} {one if low == 1 else many}" if low == high else f"pick {low}-{high} {many}"
    )
    head = f"[{number}] ▾ {select.get('placeholder') or 'Make a selection'} ({count})"
    if select.get("disabled"):
        head += " (disabled)"
    lines = [head]
    for i, option in enumerate(select.get("options") or [], start=1):
        text = f"    {i}) {option.get('label')}"
        if option.get("description"):
            text += f" — {option['description']}"
        if option.get("default"):
            text += " (selected)"
        lines.extend(_wrap(text, width))
    return lines


def _render_components(components: list[JSON], numbers: dict[int, int], width: int) -> list[str]:
    lines: list[str] = []
    for component in components:
        ctype = component.get("type")
        if ctype == ACTION_ROW:
            buttons = [c for c in component.get("components", []) if c.get("type") == BUTTON]
            if buttons:
                lines.append("  ".join(_render_button(b, numbers.get(id(b), 0)) for b in buttons))
            for child in component.get("components", []):
                if child.get("type") in SELECT_TYPES:
                    lines.extend(_render_select(child, numbers.get(id(child), 0), width))
        elif ctype == TEXT_DISPLAY:
            lines.extend(_wrap(str(component.get("content", "")), width))
        elif ctype == SECTION:
            lines.extend(_render_components(component.get("components", []), numbers, width))
            accessory = component.get("accessory") or {}
            if accessory.get("type") == BUTTON:
                lines.append(_render_button(accessory, numbers.get(id(accessory), 0)))
            elif accessory.get("media"):
                lines.append(f"[thumbnail: {(accessory['media'] or {}).get('url')}]")
        elif ctype == CONTAINER:
            inner = _render_components(component.get("components", []), numbers, width - len(_BAR))
            lines.append("┌" + "─" * (width - 1))
            lines.extend(_BAR + line if line else _BAR.rstrip() for line in inner)
            lines.append("└" + "─" * (width - 1))
        elif ctype == 14:
            lines.append("─" * min(width, 24))
        elif ctype == 12:
            for item in component.get("items", []):
                lines.append(f"[image: {(item.get('media') or {}).get('url')}]")
        elif ctype == 13:
            lines.append(f"📎 {(component.get('file') or {}).get('url')}")
    return lines
