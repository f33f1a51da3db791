"""When Tradecord Paper fills, and when a day order's trading day ends.

The ``PAPER_FILL_HOURS`` setting chooses between:

``24/7`` (default)
    Orders fill whenever a quote is available. A day order's trading day ends at the next
    16:00 America/New_York after it was placed (stocks, ETFs and futures alike).

``exchange``
    Stocks and ETFs fill only in New York Stock Exchange sessions (exchange_calendars
    ``XNYS``: 09:30–16:00 New York, holidays and early closes included). Futures fill only in
    CME Globex sessions (``CMES``: 17:00 Chicago on the previous day to 17:00 Chicago),
    less the daily 16:00–17:00 Chicago maintenance halt the calendar leaves out: a session
    ends at 16:00 Chicago (or its early close), when Globex stops taking orders.
    A day order lives until the close of the session that is open when it is placed, or of
    the next session when it is placed while the market is closed.

An extended-hours stock order (a limit day order) also fills in the pre-market and after-hours
sessions: from 5 h 30 min before a session's open (04:00 New York) to 4 h after its close
(20:00; 17:00 after an early close), and its day ends then; in ``24/7`` its day ends at 20:00.

An auction order (opg, cls: stocks) trades only in the New York Stock Exchange's opening or
closing auction, in either mode: at the first look within a minute of the next open (opg) or
close (cls), at the price then, or not at all (cancelled); unseen in that minute (Tradecord
was not running), it expires.

Crypto trades around the clock in both modes and takes no day orders (gtc, ioc, fok only).
Outside hours, market and limit orders with day or gtc rest until the open; ioc and fok are
refused with ``MarketClosed`` before anything is recorded, since they cannot wait.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from adapters.calendars import NEW_YORK, calendar_for
from adapters.models import AssetClass, TimeInForce

if TYPE_CHECKING:
    from exchange_calendars import ExchangeCalendar

CHICAGO = ZoneInfo("America/Chicago")
GLOBEX_HALT = time(16, 0)  # Chicago: Globex takes no orders until its 17:00 open
DAY_END = time(16, 0)
EXTENDED_DAY_END = time(20, 0)
PRE_MARKET = timedelta(hours=5, minutes=30)  # from 04:00 before a 09:30 open
AFTER_HOURS = timedelta(hours=4)  # to 20:00 after a 16:00 close


AUCTION_WINDOW = timedelta(minutes=1)


class FillHours(StrEnum):
    ALWAYS = "24/7"
    EXCHANGE = "exchange"


def is_open(
    asset_class: AssetClass, at: datetime, hours: FillHours, *, extended: bool = False
) -> bool:
    """Whether an order fills at ``at``; ``extended``: an extended-hours stock order."""
    cal = calendar_for(asset_class, at) if hours is FillHours.EXCHANGE else None
    if cal is None:
        return True
    if extended and asset_class is AssetClass.EQUITY:
        return _extended_session(cal, at) is not None
    utc = at.astimezone(UTC)
    if not cal.is_open_on_minute(utc):
        return False
    if asset_class is AssetClass.FUTURE:
        return utc < _session_end(cal, cal.minute_to_session(utc, direction="next"), asset_class)
    return True


def _session_end(cal: ExchangeCalendar, session: object, asset_class: AssetClass) -> datetime:
    """When a session stops taking orders: its close, or for Globex the 16:00 Chicago halt
    before the calendar's 17:00 close."""
    close: datetime = cal.session_close(session).to_pydatetime()
    if asset_class is not AssetClass.FUTURE:
        return close
    local = close.astimezone(CHICAGO)
    halt = datetime.combine(local.date(), GLOBEX_HALT, tzinfo=CHICAGO).astimezone(UTC)
    return min(close, halt)


def _extended_window(cal: ExchangeCalendar, session: object) -> tuple[datetime, datetime]:
    opens = cal.session_open(session).to_pydatetime() - PRE_MARKET
    return opens, cal.session_close(session).to_pydatetime() + AFTER_HOURS


def _extended_session(cal: ExchangeCalendar, at: datetime) -> tuple[datetime, datetime] | None:
    """The extended window (pre-market to after-hours) ``at`` falls in, if any."""
    utc = at.astimezone(UTC)
    for direction in ("next", "previous"):  # the session ahead (pre-market) or behind
        window = _extended_window(cal, cal.minute_to_session(utc, direction=direction))
        if window[0] <= utc < window[1]:
            return window
    return None


def next_open(asset_class: AssetClass, at: datetime, hours: FillHours) -> datetime | None:
    """When the market next opens, or None when it is open now (or never closes)."""
    if is_open(asset_class, at, hours):
        return None
    cal = calendar_for(asset_class, at)
    assert cal is not None
    # In Globex's halt the calendar's session still runs: its next open is the next one's.
    return cal.next_open(at.astimezone(UTC)).to_pydatetime()


def auction_at(time_in_force: TimeInForce, placed_at: datetime) -> datetime:
    """When the auction an opg (the next open) or cls (this session's close, or the next
    one's when the market is shut) order placed at ``placed_at`` trades in."""
    cal = calendar_for(AssetClass.EQUITY, placed_at)
    assert cal is not None
    utc = placed_at.astimezone(UTC)
    if time_in_force is TimeInForce.OPG:
        return cal.next_open(utc).to_pydatetime()
    session = cal.minute_to_session(utc, direction="next")
    close = cal.session_close(session).to_pydatetime()
    if close <= utc:
        close = cal.session_close(cal.next_session(session)).to_pydatetime()
    return close


def day_order_expiry(
    asset_class: AssetClass, placed_at: datetime, hours: FillHours, *, extended: bool = False
) -> datetime:
    """The end of the trading day a day order placed at ``placed_at`` belongs to (its
    after-hours session's end for an ``extended`` stock order)."""
    extended = extended and asset_class is AssetClass.EQUITY
    cal = calendar_for(asset_class, placed_at) if hours is FillHours.EXCHANGE else None
    if cal is not None:
        if extended:
            window = _extended_session(cal, placed_at)
            if window is not None:
                return window[1]
        utc = placed_at.astimezone(UTC)
        session = cal.minute_to_session(utc, direction="next")
        close = _session_end(cal, session, asset_class)
        if close <= utc:  # placed in Globex's halt: the next session's day
            close = _session_end(cal, cal.next_session(session), asset_class)
        return close + AFTER_HOURS if extended else close
    day_end = EXTENDED_DAY_END if extended else DAY_END
    local = placed_at.astimezone(NEW_YORK)
    end = datetime.combine(local.date(), day_end, tzinfo=NEW_YORK)
    if local >= end:
        # Combine again rather than add 24 h so a DST change keeps the end at the same hour.
        end = datetime.combine(local.date() + timedelta(days=1), day_end, tzinfo=NEW_YORK)
    return end.astimezone(UTC)
