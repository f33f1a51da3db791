"""Trading windows: New York times of day, a window past midnight wraps."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from bot.errors import InvalidInput
from bot.trading_windows import NEW_YORK, in_windows, next_start, parse_windows, windows_text


def ny(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=NEW_YORK)


def test_windows_are_read_as_typed_and_written_one_way() -> None:
    windows = parse_windows(" 9:45-11:30 ,13:00 – 15:30")
    assert windows == ((time(9, 45), time(11, 30)), (time(13), time(15, 30)))
    assert windows_text(windows) == "09:45-11:30, 13:00-15:30"
    assert parse_windows("20:00-24:00") == ((time(20), time(0)),)


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
        ("", "Write trading windows as New York times"),
        ("morning", "“morning” is not a time window"),
        ("25:00-26:00", "a time that does not exist"),
        ("09:60-10:00", "a time that does not exist"),
        ("10:00-10:00", "starts and ends at the same time"),
        (",".join(["09:00-09:30"] * 9), "At most 8 trading windows"),
    ],
)
def test_windows_that_cannot_be_read_say_how_to_write_them(text: str, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        parse_windows(text)
