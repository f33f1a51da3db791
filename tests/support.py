"""Small helpers shared by tests across packages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# Tuesday 1 December 2026, 10:00 in New York: the NYSE and CME are open.
WEEKDAY_SESSION = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


class FakeClock:
    """A clock tests move by hand; call it for the time."""

    def __init__(self, at: datetime = WEEKDAY_SESSION) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)
