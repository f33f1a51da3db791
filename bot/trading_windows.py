"""A subscription's trading windows (TradersPost's): the times of day when a signal may enter a
position. Written as members type them, ``09:45-11:30, 13:00-15:30``; a window whose end is
before its start runs past midnight (``18:00-02:00``). Days may lead a window
(``mon-fri 09:45-11:30``, ``fri``, ``weekdays``, ``daily``) and hold for the windows after it
until other days are given; a window past midnight belongs to the day it starts. Times are New
York's (the US markets'), unless a time zone ends the text: ``08:00-16:30 Europe/London``,
``london``, ``utc``, ``ct``; clocks moving for summer time move the windows with them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from functools import cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, available_timezones

from adapters.calendars import NEW_YORK
from bot.errors import InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EVERY_DAY = (0, 6)
# Days as a range from one weekday to another, both included (``fri-mon`` wraps the weekend).
DayRange = tuple[int, int]
_ALIASES: dict[str, DayRange] = {"weekdays": (0, 4), "weekends": (5, 6), "daily": EVERY_DAY}
_WINDOW = re.compile(
    r"^(?:(?P<days>[a-z]+(?:\s*-\s*[a-z]+)?)\s+)?"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*[-–]\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})$"
)
# Written out, 8 windows of "mon-fri 09:45-11:30" and the longest zone name take 199
# characters: within Subscription.trading_windows (200).
MAX_WINDOWS = 8


# US time zones by the abbreviations traders use (CME's products trade on Chicago time).
_ZONE_ALIASES = {
    "et": "America/New_York",
    "ct": "America/Chicago",
    "mt": "America/Denver",
    "pt": "America/Los_Angeles",
    "utc": "UTC",
    "gmt": "UTC",
    # As traders write the US zones: "09:30-16:00 EST" means the market's clock all year,
    # not IANA's fixed EST (UTC-5), which ran every summer window an hour late.
    "est": "America/New_York",
    "edt": "America/New_York",
    "cst": "America/Chicago",
    "cdt": "America/Chicago",
    "mst": "America/Denver",
    "mdt": "America/Denver",
    "pst": "America/Los_Angeles",
    "pdt": "America/Los_Angeles",
}
# The time zone after the last window, if one is written there.
_ZONE_AT_END = re.compile(r"(?<=\d)[\s,]+(?P<zone>[a-z][a-z0-9_+\-/ ]*)$")


class Window(NamedTuple):
    start: time
    end: time
    days: DayRange = EVERY_DAY

    def on(self, weekday: int) -> bool:
        first, last = self.days
        return (weekday - first) % 7 <= (last - first) % 7


class Schedule(NamedTuple):
    """Windows, and the time zone their times are in."""

    windows: tuple[Window, ...]
    zone: ZoneInfo = NEW_YORK

    @property
    def zone_name(self) -> str:
        return "New York" if self.zone == NEW_YORK else self.zone.key


@cache
def _zones() -> dict[str, str]:
    """Every IANA zone by its name in lower case, and by its city where only one zone has it
    (``london``, ``new york``)."""
    keys = sorted(available_timezones())
    names = {k.lower(): k for k in keys}
    cities: dict[str, list[str]] = {}
    for k in keys:
        if "/" in k and not k.startswith(("Etc/", "SystemV/")):
            cities.setdefault(k.rsplit("/", 1)[1].lower().replace("_", " "), []).append(k)
    for city, found in cities.items():
        if len(found) == 1:
            names.setdefault(city, found[0])
    return names | _ZONE_ALIASES


def _zone(word: str) -> ZoneInfo:
    key = _zones().get(word) or _zones().get(word.replace("_", " "))
    if key is None:
        raise InvalidInput(
            f"“{word}” is not a time zone. Name one as the IANA database does "
            "(Europe/London, America/Chicago), by its city (london), or utc, et, ct, mt, pt."
        )
    return ZoneInfo(key)


def parse_windows(text: str) -> Schedule:
    """``text`` as windows, or ``InvalidInput`` saying how to write them."""
    text = text.lower().strip()
    zone = NEW_YORK
    if found := _ZONE_AT_END.search(text):
        zone = _zone(" ".join(found["zone"].split()))
        text = text[: found.start()]
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InvalidInput(_HOW)
    if len(parts) > MAX_WINDOWS:
        raise InvalidInput(f"At most {MAX_WINDOWS} trading windows. {_HOW}")
    windows = []
    days = EVERY_DAY
    for part in parts:
        m = _WINDOW.match(part)
        if m is None:
            raise InvalidInput(f"“{part}” is not a time window. {_HOW}")
        if m["days"]:
            days = _days(m["days"], part)
        h1, m1, h2, m2 = (int(m[g]) for g in ("h1", "m1", "h2", "m2"))
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise InvalidInput(f"“{part}” has a time that does not exist. {_HOW}")
        start = time(h1, m1)
        end = time(0, 0) if h2 == 24 else time(h2, m2)
        if start == end:
            raise InvalidInput(
                f"“{part}” starts and ends at the same time; for any time of day, remove the "
                "trading windows (none)."
            )
        windows.append(Window(start, end, days))
    return Schedule(tuple(windows), zone)


def _day(word: str, part: str) -> int:
    for n, (short, full) in enumerate(zip(DAYS, FULL_DAYS, strict=True)):
        if word == short or (len(word) >= 3 and full.startswith(word)):
            return n
    raise InvalidInput(f"“{word}” in “{part}” is not a day. {_HOW}")


def _days(text: str, part: str) -> DayRange:
    if text in _ALIASES:
        return _ALIASES[text]
    first, _, last = (w.strip() for w in text.partition("-"))
    a = _day(first, part)
    b = _day(last, part) if last else a
    # Seven days written as a range (mon-sun, tue-mon) are every day.
    return EVERY_DAY if (b - a) % 7 == 6 else (a, b)


_HOW = (
    "Write trading windows as times on a 24-hour clock, separated by commas, each optionally "
    "after its days, and New York's unless a time zone ends them: mon-fri 09:45-11:30, "
    "13:00-15:30 (or: 08:00-16:30 london)."
)


def _days_text(days: DayRange) -> str:
    first, last = days
    if days == EVERY_DAY:
        return "daily"
    return DAYS[first] if first == last else f"{DAYS[first]}-{DAYS[last]}"


def windows_text(schedule: Schedule) -> str:
    """The canonical form: stored, and shown to members. Days are written where they change;
    a time zone other than New York's at the end."""
    parts = []
    days = EVERY_DAY
    for w in schedule.windows:
        hours = f"{w.start:%H:%M}-{w.end:%H:%M}"
        parts.append(hours if w.days == days else f"{_days_text(w.days)} {hours}")
        days = w.days
    text = ", ".join(parts)
    return text if schedule.zone == NEW_YORK else f"{text} {schedule.zone.key}"


def windows_phrase(text: str) -> str:
    """Stored windows as a sentence ends them: ``09:45-15:30 New York time``."""
    ny = parse_windows(text).zone == NEW_YORK
    return f"{text} New York time" if ny else f"{text} time"  # the zone ends the text


def _contains(window: Window, local: datetime) -> bool:
    t, weekday = local.time().replace(tzinfo=None), local.weekday()
    if window.start < window.end:
        return window.on(weekday) and window.start <= t < window.end
    # Past midnight: the evening of a day it is on, or the morning after one.
    return (t >= window.start and window.on(weekday)) or (
        t < window.end and window.on((weekday - 1) % 7)
    )


def in_windows(schedule: Schedule, at: datetime) -> bool:
    local = at.astimezone(schedule.zone)
    return any(_contains(w, local) for w in schedule.windows)


def next_start(schedule: Schedule, at: datetime) -> datetime:
    """When the next window opens after ``at``, in the schedule's time zone."""
    local = at.astimezone(schedule.zone)
    starts = []
    for day in range(8):
        date = local.date() + timedelta(days=day)
        for w in schedule.windows:
            begin = datetime.combine(date, w.start, tzinfo=schedule.zone)
            # Compared as instants: a wall time in the hour the clocks go back happens twice
            # (fold), and wall times of one zone compare as if it did not.
            for moment in (begin, begin.replace(fold=1)):
                if moment.astimezone(UTC) > at.astimezone(UTC) and w.on(date.weekday()):
                    starts.append(moment)
    return min(starts, key=lambda m: m.astimezone(UTC))
