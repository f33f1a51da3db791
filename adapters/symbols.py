"""Symbol conventions shared by adapters, the paper broker and the webhook.

Futures are written as root + month code + year (``ESZ25``, ``MESH6``), optionally with a
``/`` or ``@`` prefix (``/ES``, ``@ES`` for the continuous contract). Crypto pairs are written
``BTCUSD``, ``BTC/USD`` or ``BTC-USD``. Options are OCC symbols (``AAPL250117C00150000``), as
Tradier lists them. Everything else is an equity ticker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from functools import lru_cache
from zoneinfo import ZoneInfo

from adapters.calendars import trading_days
from adapters.models import AssetClass

MONTH_CODES = "FGHJKMNQUVXZ"
MONTH_NAMES = (
    "January February March April May June July August September October November December"
).split()
QUARTERLY = "HMUZ"
CHICAGO = ZoneInfo("America/Chicago")

# -- last trading days (CME rulebook terms). A business day is a weekday on which US exchanges
# are open: the New York Stock Exchange's holidays (exchange_calendars ``XNYS``) are the US
# exchange holidays CME Group also keeps; on some of them Globex trades a short session, but it
# belongs to the next trade date, so none is a business day for these rules.


def is_business_day(day: date) -> bool:
    return day in trading_days(AssetClass.EQUITY, day.year)


def _business_days_before(day: date, n: int) -> date:
    while n:
        day -= timedelta(days=1)
        if is_business_day(day):
            n -= 1
    return day


def _last_business_day(year: int, month: int) -> date:
    first_next = date(year + month // 12, month % 12 + 1, 1)
    return _business_days_before(first_next, 1)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _third_friday(year: int, month: int) -> date:
    return _nth_weekday(year, month, 4, 3)


def _before_25th_of_prior_month(extra: int) -> Callable[[int, int], date]:
    """Crude oil: ``3 + extra`` business days before the 25th of the month before the contract
    month, one more when the 25th is not a business day."""

    def rule(year: int, month: int) -> date:
        prior = date(year - (month == 1), (month - 2) % 12 + 1, 25)
        return _business_days_before(prior, 3 + extra + (not is_business_day(prior)))

    return rule


def _third_last_business_day(year: int, month: int) -> date:
    return _business_days_before(_last_business_day(year, month), 2)


def _before_first_of_month(year: int, month: int) -> date:
    return _business_days_before(date(year, month, 1), 3)


def _seventh_before_last_business_day(year: int, month: int) -> date:
    return _business_days_before(_last_business_day(year, month), 7)


def _before_third_wednesday(year: int, month: int) -> date:
    return _business_days_before(_nth_weekday(year, month, 2, 3), 2)


@dataclass(frozen=True, slots=True)
class FutureSpec:
    root: str
    name: str
    multiplier: Decimal
    tick: Decimal
    reference_price: Decimal
    months: str  # the contract months listed, as month codes
    last_day: Callable[[int, int], date]  # (year, month) -> last trading day
    ends: time  # when trading ends that day, Chicago time


_INDEX = (QUARTERLY, _third_friday, time(8, 30))
_OIL = (MONTH_CODES, _before_25th_of_prior_month(0), time(13, 30))
_METAL = (MONTH_CODES, _third_last_business_day, time(12, 30))
_BOND = (QUARTERLY, _seventh_before_last_business_day, time(12, 1))

FUTURES: dict[str, FutureSpec] = {
    s.root: s
    for s in (
        FutureSpec("ES", "E-mini S&P 500", Decimal(50), Decimal("0.25"), Decimal(5900), *_INDEX),
        FutureSpec(
            "MES", "Micro E-mini S&P 500", Decimal(5), Decimal("0.25"), Decimal(5900), *_INDEX
        ),
        FutureSpec(
            "NQ", "E-mini Nasdaq-100", Decimal(20), Decimal("0.25"), Decimal(20800), *_INDEX
        ),
        FutureSpec(
            "MNQ", "Micro E-mini Nasdaq-100", Decimal(2), Decimal("0.25"), Decimal(20800), *_INDEX
        ),
        FutureSpec("YM", "E-mini Dow", Decimal(5), Decimal(1), Decimal(43000), *_INDEX),
        FutureSpec("MYM", "Micro E-mini Dow", Decimal("0.5"), Decimal(1), Decimal(43000), *_INDEX),
        FutureSpec(
            "RTY", "E-mini Russell 2000", Decimal(50), Decimal("0.1"), Decimal(2300), *_INDEX
        ),
        FutureSpec(
            "M2K", "Micro E-mini Russell 2000", Decimal(5), Decimal("0.1"), Decimal(2300), *_INDEX
        ),
        FutureSpec("CL", "Crude Oil", Decimal(1000), Decimal("0.01"), Decimal(70), *_OIL),
        # Micro crude stops trading the business day before crude oil does.
        FutureSpec(
            "MCL",
            "Micro Crude Oil",
            Decimal(100),
            Decimal("0.01"),
            Decimal(70),
            MONTH_CODES,
            _before_25th_of_prior_month(1),
            time(13, 30),
        ),
        FutureSpec("GC", "Gold", Decimal(100), Decimal("0.1"), Decimal(2650), *_METAL),
        FutureSpec("MGC", "Micro Gold", Decimal(10), Decimal("0.1"), Decimal(2650), *_METAL),
        FutureSpec("SI", "Silver", Decimal(5000), Decimal("0.005"), Decimal(31), *_METAL),
        FutureSpec(
            "NG",
            "Natural Gas",
            Decimal(10000),
            Decimal("0.001"),
            Decimal("3.2"),
            MONTH_CODES,
            _before_first_of_month,
            time(13, 30),
        ),
        FutureSpec("ZB", "30-Year T-Bond", Decimal(1000), Decimal("0.03125"), Decimal(117), *_BOND),
        FutureSpec(
            "ZN", "10-Year T-Note", Decimal(1000), Decimal("0.015625"), Decimal(110), *_BOND
        ),
        FutureSpec(
            "6E",
            "Euro FX",
            Decimal(125000),
            Decimal("0.00005"),
            Decimal("1.06"),
            QUARTERLY,
            _before_third_wednesday,
            time(9, 16),
        ),
    )
}

_FUTURE_RE = re.compile(
    rf"^[/@]?(?P<root>[A-Z0-9]{{1,4}}?)(?:(?P<month>[{MONTH_CODES}])(?P<year>\d{{1,2}}))?$"
)
# TradingView and TradersPost write a contract's year in full (MNQU2025); brokers, CME Globex
# and Tradecord write two digits (MNQU25).
_FULL_YEAR_RE = re.compile(
    rf"^(?P<head>[/@]?(?P<root>[A-Z0-9]{{1,4}}?)[{MONTH_CODES}])20(?P<year>\d{{2}})$"
)
CRYPTO_BASES = frozenset(
    {"BTC", "ETH", "SOL", "LTC", "DOGE", "AVAX", "LINK", "XRP", "ADA", "DOT", "UNI", "BCH", "SHIB"}
)
CRYPTO_QUOTES = ("USDT", "USDC", "USD")
_CRYPTO_RE = re.compile(r"^(?P<base>[A-Z]{2,6})[/-]?(?P<quote>USDT|USDC|USD)$")
TICKER_RE = re.compile(r"^[A-Z][A-Z0-9.\-/@]{0,19}$")
# An OCC option symbol: root, expiry YYMMDD, call or put, strike in thousandths of a dollar.
OCC_RE = re.compile(r"^[A-Z]{1,6}\d{6}[CP]\d{8}$")
OPTION_MULTIPLIER = Decimal(100)  # shares per standard equity option contract


def normalize(symbol: str) -> str:
    """``symbol`` upper-cased, a known future's contract with a two-digit year, as brokers
    write it: ESZ2025 and ESZ5 (read around today, as ``contract`` reads it) are ESZ25."""
    s = short_year(symbol.strip().upper())
    m = _FUTURE_RE.match(s)
    if m and m.group("year") is not None and len(m.group("year")) == 1:
        c = _contract(s.lstrip("/@"), datetime.now(UTC).year)
        if c is not None:
            return s[: len(s) - len(s.lstrip("/@"))] + c.symbol
    return s


def is_symbol(symbol: str) -> bool:
    """Whether ``symbol`` is written like something tradable: a ticker, a pair or a contract,
    or a known future with its ``/`` or ``@`` prefix (``/ES``, ``@MESZ25``), the form the
    product itself advertises. A prefix on anything else is refused."""
    s = normalize(symbol)
    return bool(TICKER_RE.match(s)) or future_spec(s) is not None


def short_year(symbol: str) -> str:
    """A known future's contract with its year in two digits (MNQU2025 -> MNQU25); any other
    symbol as it is."""
    m = _FULL_YEAR_RE.match(symbol)
    if m and m.group("root") in FUTURES:
        return m.group("head") + m.group("year")
    return symbol


def price_tick(symbol: str, price: Decimal) -> Decimal:
    """The step a price near ``price`` is written in: a future's tick; a stock's cent (0.0001
    below $1, SEC Rule 612); a coin's finer steps."""
    spec = future_spec(symbol)
    if spec is not None:
        return spec.tick
    if asset_class_of(symbol) is AssetClass.CRYPTO:
        # Coins are quoted far finer than stocks (SHIB in 0.00000001s, XRP in 0.0001s): a
        # stock's cents or 0.0001 turned a 5 % exit of a coin at $0.000014 into $0.
        if price >= 1000:
            return Decimal("0.01")
        return Decimal("0.0001") if price >= 1 else Decimal("0.00000001")
    return Decimal("0.01") if price >= 1 else Decimal("0.0001")


def price_away(symbol: str, price: Decimal, distance: Decimal, sign: int) -> Decimal:
    """``price`` moved ``distance`` up (``sign`` 1) or down (-1), on the symbol's price step at
    the new price (an entry under $1 may exit above it): a bracket's exit from its entry.
    Rounded to a multiple of the step, since quantize alone rounds /ES to cents, not 0.25s.
    May come to zero or below; the caller says so."""
    raw = price + sign * distance
    tick = price_tick(symbol, raw)
    return (raw / tick).to_integral_value(ROUND_HALF_UP) * tick


def instrument_key(symbol: str) -> str:
    """One key per instrument however a broker writes it (BTC/USD, BTCUSD; @ES, /ES; BRK-B)."""
    s = normalize(symbol)
    pair = crypto_pair(s)
    if pair:
        return "".join(pair)
    if future_spec(s):
        return "/" + s[1:] if s[0] in "/@" else s
    return s.replace("-", ".").replace("/", ".")


def future_spec(symbol: str) -> FutureSpec | None:
    s = normalize(symbol)
    m = _FUTURE_RE.match(s)
    if not m:
        return None
    root = m.group("root")
    explicit_contract = m.group("month") is not None
    prefixed = s[0] in "/@"
    spec = FUTURES.get(root)
    if spec and (explicit_contract or prefixed):
        return spec
    return None


_CONTINUOUS = re.compile(r"^(?P<root>[A-Z0-9]{1,4})[12]!$")


def unknown_future(symbol: str) -> str | None:
    """A message for a symbol written as a futures contract (a root, a month code and a year)
    of a root Tradecord does not know (ZCZ25, @HGZ25); None for
    anything else. Taken for a stock, it would be refused on the futures account it belongs
    on and steered to a cash or margin account (no US stock has a digit in its ticker)."""
    s = normalize(symbol)
    if (c := _CONTINUOUS.match(s)) and c.group("root") in FUTURES:
        # TradingView's continuous ES1!: a signal means today's contract by it (signal_format);
        # an order typed by hand names its contract, or the broker's continuous form.
        root = c.group("root")
        return (
            f"{s} is TradingView's continuous {root} future: type the contract itself, like "
            f"{front_contract(root, datetime.now(UTC))}, or /{root}."
        )
    m = _FUTURE_RE.match(s) or _FULL_YEAR_RE.match(s)
    if not m or m.group("root") in FUTURES:
        return None
    if m.re is _FUTURE_RE and m.group("month") is None:
        return None  # a ticker, or a prefix on one (/AAPL): not a contract
    root = m.group("root")
    return (
        f"{s} is a {root} future, and Tradecord does not trade {root} futures yet. The futures "
        f"it trades: {', '.join(FUTURES)}. Trade {root} at your broker directly."
    )


def crypto_pair(symbol: str) -> tuple[str, str] | None:
    m = _CRYPTO_RE.match(normalize(symbol))
    if m and m.group("base") in CRYPTO_BASES:
        return m.group("base"), m.group("quote")
    return None


def asset_class_of(symbol: str) -> AssetClass:
    if future_spec(symbol):
        return AssetClass.FUTURE
    if crypto_pair(symbol):
        return AssetClass.CRYPTO
    if OCC_RE.match(normalize(symbol)):
        return AssetClass.OPTION
    return AssetClass.EQUITY


# A stock's root and its share class, however typed: BRK.B, BRK-B, BRK/B.
_SHARE_CLASS_RE = re.compile(r"^(?P<root>[A-Z]{1,5})[.\-/](?P<share>[A-Z])$")


def share_class(symbol: str, separator: str = ".") -> str:
    """``symbol`` with a stock's share class written with ``separator`` (BRK-B -> BRK.B), so
    one instrument has one name at a broker; a crypto pair (BTC/USD) or a future (/ES) is
    left as it is."""
    s = normalize(symbol)
    if asset_class_of(s) is not AssetClass.EQUITY:
        return s
    m = _SHARE_CLASS_RE.match(s)
    return f"{m['root']}{separator}{m['share']}" if m else s


def quantity_decimals(asset_class: AssetClass) -> int:
    """Decimals a quantity may have: crypto is fractional, contracts and shares are whole
    (fractional equities are a broker capability, checked separately)."""
    return 8 if asset_class is AssetClass.CRYPTO else 0


CENT = Decimal("0.01")
SUB_DOLLAR_TICK = Decimal("0.0001")


def equity_tick(price: Decimal) -> Decimal:
    """The smallest step a US stock or ETF order price may take (SEC Rule 612, Regulation NMS:
    no order of $1.00 or more in an increment under a cent; 1/100 of a cent below $1)."""
    return CENT if price >= 1 else SUB_DOLLAR_TICK


def decimals(value: Decimal) -> int:
    # As many digits as the value has: in 28, 1.0000000000000000000000000001 normalizes to 1.
    with localcontext(prec=max(28, len(value.as_tuple().digits))):
        exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def sub_penny_problem(label: str, price: Decimal, symbol: str) -> str | None:
    """What to tell a member whose stock ``label`` price is finer than Rule 612 allows (and
    which prices would do), or None when the price is fine. Brokers must refuse such orders,
    so every adapter refuses them before sending rather than let each vendor word it."""
    tick = equity_tick(price)
    if decimals(price) <= decimals(tick):
        return None
    # Enough digits that a huge price rounds to its neighbours instead of raising.
    with localcontext(prec=len(price.as_tuple().digits) + 8):
        down = price.quantize(tick, ROUND_FLOOR)
        options = [p for p in (down, down + tick) if p > 0]
        shown = " or ".join(str(p.quantize(equity_tick(p))) for p in options)
    rule = (
        "of $1 or more go in whole cents"
        if tick == CENT
        else "under $1 go in steps of 0.0001 (4 decimals)"
    )
    return f"The {label} price {price} has too many decimals. {symbol} prices {rule}: use {shown}."


def multiplier(symbol: str) -> Decimal:
    spec = future_spec(symbol)
    if spec:
        return spec.multiplier
    return OPTION_MULTIPLIER if asset_class_of(symbol) is AssetClass.OPTION else Decimal(1)


# -- contract months -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contract:
    """A dated futures contract: ``symbol`` with a two-digit year (``ESZ26``), month, year."""

    symbol: str
    spec: FutureSpec
    year: int
    month: int

    @property
    def listed(self) -> bool:
        return MONTH_CODES[self.month - 1] in self.spec.months

    @property
    def last_trading_day(self) -> date:
        return self.spec.last_day(self.year, self.month)

    @property
    def expires_at(self) -> datetime:
        """When trading in it ends (UTC)."""
        ends = datetime.combine(self.last_trading_day, self.spec.ends, tzinfo=CHICAGO)
        return ends.astimezone(UTC)

    @property
    def label(self) -> str:
        return f"{MONTH_NAMES[self.month - 1]} {self.year}"


@lru_cache(maxsize=1024)
def _contract(symbol: str, decade_of: int) -> Contract | None:
    m = _FUTURE_RE.match(symbol)
    if not m or m.group("month") is None or m.group("root") not in FUTURES:
        return None
    digits = m.group("year")
    if len(digits) == 2:
        year = 2000 + int(digits)
    else:  # one digit: the year of that digit from five years back to four ahead
        year = decade_of - 5 + (int(digits) - (decade_of - 5)) % 10
    root, code = m.group("root"), m.group("month")
    return Contract(
        f"{root}{code}{year % 100:02d}", FUTURES[root], year, MONTH_CODES.index(code) + 1
    )


def contract(symbol: str, at: datetime) -> Contract | None:
    """The dated contract ``symbol`` names (``ESZ26``, ``ESZ6``, ``ESZ2026``), or None for
    anything else, a continuous ``/ES`` included. A one-digit year is read as the nearest such
    year around ``at``: ``ESZ5`` in 2026 is December 2025."""
    # Not ``normalize``: it reads a one-digit year around today, not around ``at``.
    return _contract(short_year(symbol.strip().upper()).lstrip("/@"), at.year)


def example_contract(root: str = "ES") -> str:
    """A contract to show in a message as an example: one that trades today."""
    return front_contract(root, datetime.now(UTC))


def front_contract(root: str, at: datetime) -> str:
    """The first listed contract of ``root`` still trading at ``at`` (``ESH27``)."""
    spec = FUTURES[root]
    year, month = at.year, at.month
    while True:
        code = MONTH_CODES[month - 1]
        if code in spec.months:
            c = Contract(f"{root}{code}{year % 100:02d}", spec, year, month)
            if c.expires_at > at:
                return c.symbol
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
