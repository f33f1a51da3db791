"""Trading windows: times of day on chosen days, New York's unless a time zone is named; a
window past midnight wraps and belongs to the day it starts."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo, available_timezones

import pytest

from bot.errors import InvalidInput
from bot.trading_windows import (
    NEW_YORK,
    Window,
    in_windows,
    next_start,
    parse_windows,
    windows_text,
)


def ny(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=NEW_YORK)


def test_windows_are_read_as_typed_and_written_one_way() -> None:
    windows = parse_windows(" 9:45-11:30 ,13:00 – 15:30")
    assert windows.windows == (
        Window(time(9, 45), time(11, 30)),
        Window(time(13), time(15, 30)),
    )
    assert windows.zone == NEW_YORK
    assert windows_text(windows) == "09:45-11:30, 13:00-15:30"
    assert parse_windows("20:00-24:00").windows == (Window(time(20), time(0)),)


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (ny(9, 44), False),
        (ny(9, 45), True),  # the start is in
        (ny(11, 30), False),  # the end is out
        (ny(14), True),
        (ny(15, 30), False),
        (ny(9, 45).astimezone(UTC), True),  # judged in New York whatever the zone
    ],
)
def test_a_time_is_inside_a_window_from_its_start_to_before_its_end(
    at: datetime, inside: bool
) -> None:
    assert in_windows(parse_windows("09:45-11:30, 13:00-15:30"), at) is inside


def test_a_window_past_midnight_wraps() -> None:
    night = parse_windows("18:00-02:00")
    assert [in_windows(night, ny(h)) for h in (17, 18, 23, 1, 2)] == [
        False,
        True,
        True,
        True,
        False,
    ]


def test_the_next_window_is_later_today_or_tomorrow() -> None:
    windows = parse_windows("09:45-11:30, 13:00-15:30")
    assert next_start(windows, ny(12)) == ny(13)
    assert next_start(windows, ny(16)) == ny(9, 45, day=2)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Write trading windows as times on a 24-hour clock"),
        ("09:00-10:00 mars", "“mars” is not a time zone"),
        ("09:00-10:00 europe", "“europe” is not a time zone"),
        ("morning", "“morning” is not a time window"),
        ("25:00-26:00", "a time that does not exist"),
        ("09:60-10:00", "a time that does not exist"),
        ("10:00-10:00", "starts and ends at the same time"),
        ("someday 09:00-10:00", "“someday” in “someday 09:00-10:00” is not a day"),
        ("mo 09:00-10:00", "“mo” in “mo 09:00-10:00” is not a day"),
        ("mon-fri-sat 09:00-10:00", "is not a time window"),
        (",".join(["09:00-09:30"] * 9), "At most 8 trading windows"),
    ],
)
def test_windows_that_cannot_be_read_say_how_to_write_them(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_windows(text)


# 2026-12-04 is a Friday.
FRIDAY = 4


@pytest.mark.parametrize(
    ("typed", "written"),
    [
        ("Mon-Fri 9:45-11:30, 13:00-15:30", "mon-fri 09:45-11:30, 13:00-15:30"),
        ("weekdays 09:45-11:30", "mon-fri 09:45-11:30"),
        ("weekends 10:00-12:00", "sat-sun 10:00-12:00"),
        ("thursday 09:45-11:30", "thu 09:45-11:30"),
        ("tues-thurs 09:45-11:30", "tue-thu 09:45-11:30"),
        ("mon-sun 09:45-11:30", "09:45-11:30"),  # every day
        ("mon-fri 09:45-11:30, daily 13:00-15:30", "mon-fri 09:45-11:30, daily 13:00-15:30"),
        ("fri 09:45-11:30, fri 13:00-15:30", "fri 09:45-11:30, 13:00-15:30"),
        ("sun-thu 18:00-02:00", "sun-thu 18:00-02:00"),
    ],
)
def test_days_lead_the_windows_they_hold_for(typed: str, written: str) -> None:
    windows = parse_windows(typed)
    assert windows_text(windows) == written
    assert parse_windows(written) == windows  # the stored form reads back the same


def test_days_hold_for_the_windows_after_them() -> None:
    windows = parse_windows("mon-thu 09:45-11:30, 13:00-15:30")
    thursday, friday = FRIDAY - 1, FRIDAY
    assert in_windows(windows, ny(14, day=thursday))
    assert not in_windows(windows, ny(10, day=friday))
    assert not in_windows(windows, ny(14, day=friday))
    # Friday after the last window: Monday morning.
    assert next_start(windows, ny(9, day=friday)) == ny(9, 45, day=FRIDAY + 3)


def test_a_window_past_midnight_belongs_to_the_day_it_starts() -> None:
    futures = parse_windows("sun-thu 18:00-02:00")  # Sunday evening to Friday 2 a.m.
    saturday, sunday = FRIDAY + 1, FRIDAY + 2
    assert in_windows(futures, ny(1, day=FRIDAY))  # Thursday's window
    assert not in_windows(futures, ny(19, day=FRIDAY))
    assert not in_windows(futures, ny(1, day=saturday))
    assert not in_windows(futures, ny(17, day=sunday))
    assert in_windows(futures, ny(18, day=sunday))
    assert next_start(futures, ny(3, day=FRIDAY)) == ny(18, day=sunday)


@pytest.mark.parametrize(
    ("typed", "written"),
    [
        ("08:00-16:30 Europe/London", "08:00-16:30 Europe/London"),
        ("mon-fri 08:00-16:30, london", "mon-fri 08:00-16:30 Europe/London"),
        ("08:00-15:00 CT", "08:00-15:00 America/Chicago"),
        ("08:00-15:00 new york", "08:00-15:00"),  # New York's is the default: not written
        ("08:00-15:00 et", "08:00-15:00"),
        ("00:00-12:00 utc", "00:00-12:00 UTC"),
        ("09:00-17:00 Asia/Tokyo", "09:00-17:00 Asia/Tokyo"),
    ],
)
def test_a_time_zone_may_end_the_windows(typed: str, written: str) -> None:
    schedule = parse_windows(typed)
    assert windows_text(schedule) == written
    assert parse_windows(written) == schedule


def test_windows_in_another_zone_follow_its_clock_and_summer_time() -> None:
    london = parse_windows("mon-fri 08:00-16:30 london")
    # 2026-12-01 (winter): London is UTC, five hours ahead of New York.
    assert in_windows(london, ny(3))  # 08:00 in London
    assert not in_windows(london, ny(2, 59))
    assert not in_windows(london, ny(11, 30))  # 16:30 in London
    # 2026-07-01 (summer): London is UTC+1; New York UTC-4, still five hours apart.
    july = datetime(2026, 7, 1, 3, tzinfo=NEW_YORK)
    assert in_windows(london, july)
    # 2026-03-10: New York has moved its clocks and London has not yet: four hours apart.
    march = datetime(2026, 3, 10, 4, tzinfo=NEW_YORK)  # 08:00 in London
    assert in_windows(london, march) and not in_windows(london, march.replace(hour=3, minute=59))
    opens = next_start(london, ny(12, day=FRIDAY))  # after Friday's window: Monday 08:00 there
    assert (opens.weekday(), f"{opens:%H:%M}", opens.tzinfo) == (
        0,
        "08:00",
        ZoneInfo("Europe/London"),
    )


def test_the_longest_windows_fit_where_they_are_stored() -> None:
    longest_zone = max(available_timezones(), key=len)
    text = ", ".join(["mon-fri 09:45-11:30", "sat-sun 09:45-11:30"] * 4) + " " + longest_zone
    assert len(windows_text(parse_windows(text))) <= 200  # Subscription.trading_windows


def test_est_in_trading_windows_is_new_york_time_all_year() -> None:
    """Before: IANA's fixed EST (UTC-5): "09:30-16:00 EST" opened at 10:30 New York time all
    summer."""
    from bot.trading_windows import NEW_YORK, in_windows, parse_windows

    for written in ("mon-fri 09:30-16:00 EST", "mon-fri 08:30-15:00 cdt"):
        schedule = parse_windows(written)
        assert in_windows(schedule, datetime(2026, 7, 1, 9, 45, tzinfo=NEW_YORK)), written
        assert in_windows(schedule, datetime(2026, 12, 1, 9, 45, tzinfo=NEW_YORK)), written


def test_the_next_window_is_never_in_the_past_on_the_night_clocks_go_back() -> None:
    """At 01:30 EST, the second 01:30 of 1 Nov 2026, "daily 01:40-01:50" opened at 01:40 EDT,
    fifty minutes before: wall times of one zone compared as if the hour happened once."""
    from bot.trading_windows import next_start, parse_windows

    at = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    opens = next_start(parse_windows("daily 01:40-01:50"), at)
    assert opens.astimezone(UTC) == datetime(2026, 11, 1, 6, 40, tzinfo=UTC)
