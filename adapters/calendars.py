"""Exchange calendars (``exchange_calendars``: sessions, holidays, early closes) for the code
that needs a market's hours or trading days: Tradecord Paper's fill hours, Tradier's extended
sessions, futures' last trading days."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from adapters.models import AssetClass

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

NEW_YORK = ZoneInfo("America/New_York")
CALENDARS = {AssetClass.EQUITY: "XNYS", AssetClass.FUTURE: "CMES"}


@lru_cache(maxsize=16)
def _calendar(name: str, year: int) -> ExchangeCalendar:
    # Imported here: pandas is heavy, and most processes never need a calendar.
    import exchange_calendars

    # A calendar spanning the year around ``year``: building one is slow, bounds are strict.
    return exchange_calendars.get_calendar(name, start=f"{year - 1}-01-01", end=f"{year + 1}-12-31")


def calendar_for(asset_class: AssetClass, at: datetime) -> ExchangeCalendar | None:
    """The exchange calendar of ``asset_class`` around ``at``; None for crypto (always open)."""
    name = CALENDARS.get(asset_class)
    return _calendar(name, at.astimezone(UTC).year) if name else None


@lru_cache(maxsize=16)
def trading_days(asset_class: AssetClass, year: int) -> frozenset[date]:
    """The dates in ``year`` on which the exchange of ``asset_class`` has a session (no
    weekends, no holidays); a set, since contract rules ask about many days one by one."""
    cal = _calendar(CALENDARS[asset_class], year)
    return frozenset(d for d in (ts.date() for ts in cal.sessions) if d.year == year)


def previous_close(at: datetime) -> datetime:
    """The close of the last US stock-market session before ``at``'s New York date: where a
    day's profit and loss counts from (Alpaca's ``last_equity``: "equity as of previous
    trading day at 16:00:00 ET", 13:00 after an early close)."""
    return _previous_close(at.astimezone(NEW_YORK).date())


@lru_cache(maxsize=64)
def _previous_close(today: date) -> datetime:
    import pandas as pd

    cal = _calendar(CALENDARS[AssetClass.EQUITY], today.year)
    sessions = cal.sessions
    session = sessions[sessions.searchsorted(pd.Timestamp(today)) - 1]
    return cal.session_close(session).to_pydatetime().astimezone(UTC)
