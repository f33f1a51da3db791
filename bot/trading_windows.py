"""A subscription's trading windows (TradersPost's): the times of day, in New York, when a
signal may enter a position. Written as members type them, ``09:45-11:30, 13:00-15:30``; a
window whose end is before its start runs past midnight (``18:00-02:00``)."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta

from adapters.calendars import NEW_YORK
from bot.errors import InvalidInput

Window = tuple[time, time]
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})\s*[-–]\s*(\d{1,2}):(\d{2})$")
MAX_WINDOWS = 8


def parse_windows(text: str) -> tuple[Window, ...]:
    """``text`` as windows, or ``InvalidInput`` saying how to write them."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InvalidInput(_HOW)
    if len(parts) > MAX_WINDOWS:
        raise InvalidInput(f"At most {MAX_WINDOWS} trading windows. {_HOW}")
    windows = []
    for part in parts:
        m = _WINDOW.match(part)
        if m is None:
            raise InvalidInput(f"“{part}” is not a time window. {_HOW}")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise InvalidInput(f"“{part}” has a time that does not exist. {_HOW}")
        start = time(h1, m1)
        end = time(0, 0) if h2 == 24 else time(h2, m2)
        if start == end:
            raise InvalidInput(
                f"“{part}” starts and ends at the same time; for any time of day, remove the "
                "trading windows (none)."
            )
        windows.append((start, end))
    return tuple(windows)


_HOW = (
    "Write trading windows as New York times, 24-hour clock, separated by commas: "
    "09:45-11:30, 13:00-15:30."
)


def windows_text(windows: tuple[Window, ...]) -> str:
    """The canonical form: stored, and shown to members."""
    return ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in windows)


def _contains(window: Window, t: time) -> bool:
    start, end = window
    if start < end:
        return start <= t < end
    return t >= start or t < end  # past midnight


def in_windows(windows: tuple[Window, ...], at: datetime) -> bool:
    local = at.astimezone(NEW_YORK).time().replace(tzinfo=None)
    return any(_contains(w, local) for w in windows)


def next_start(windows: tuple[Window, ...], at: datetime) -> datetime:
    """When the next window opens after ``at``, in New York time."""
    local = at.astimezone(NEW_YORK)
    starts = []
    for day in (0, 1):
        date = local.date() + timedelta(days=day)
        for start, _ in windows:
            begin = datetime.combine(date, start, tzinfo=NEW_YORK)
            if begin > local:
                starts.append(begin)
    return min(starts)
