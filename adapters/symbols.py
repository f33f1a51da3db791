"""Symbol conventions shared by adapters, the paper broker and the webhook.

Futures are written as root + month code + year (``ESZ25``, ``MESH6``), optionally with a
``/`` or ``@`` prefix (``/ES``, ``@ES`` for the continuous contract). Crypto pairs are written
``BTCUSD``, ``BTC/USD`` or ``BTC-USD``. Everything else is an equity ticker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from adapters.models import AssetClass


@dataclass(frozen=True, slots=True)
class FutureSpec:
    root: str
    name: str
    multiplier: Decimal
    tick: Decimal
    reference_price: Decimal


FUTURES: dict[str, FutureSpec] = {
    s.root: s
    for s in (
        FutureSpec("ES", "E-mini S&P 500", Decimal(50), Decimal("0.25"), Decimal(5900)),
        FutureSpec("MES", "Micro E-mini S&P 500", Decimal(5), Decimal("0.25"), Decimal(5900)),
        FutureSpec("NQ", "E-mini Nasdaq-100", Decimal(20), Decimal("0.25"), Decimal(20800)),
        FutureSpec("MNQ", "Micro E-mini Nasdaq-100", Decimal(2), Decimal("0.25"), Decimal(20800)),
        FutureSpec("YM", "E-mini Dow", Decimal(5), Decimal(1), Decimal(43000)),
        FutureSpec("MYM", "Micro E-mini Dow", Decimal("0.5"), Decimal(1), Decimal(43000)),
        FutureSpec("RTY", "E-mini Russell 2000", Decimal(50), Decimal("0.1"), Decimal(2300)),
        FutureSpec("M2K", "Micro E-mini Russell 2000", Decimal(5), Decimal("0.1"), Decimal(2300)),
        FutureSpec("CL", "Crude Oil", Decimal(1000), Decimal("0.01"), Decimal(70)),
        FutureSpec("MCL", "Micro Crude Oil", Decimal(100), Decimal("0.01"), Decimal(70)),
        FutureSpec("GC", "Gold", Decimal(100), Decimal("0.1"), Decimal(2650)),
        FutureSpec("MGC", "Micro Gold", Decimal(10), Decimal("0.1"), Decimal(2650)),
        FutureSpec("SI", "Silver", Decimal(5000), Decimal("0.005"), Decimal(31)),
        FutureSpec("NG", "Natural Gas", Decimal(10000), Decimal("0.001"), Decimal("3.2")),
        FutureSpec("ZB", "30-Year T-Bond", Decimal(1000), Decimal("0.03125"), Decimal(117)),
        FutureSpec("ZN", "10-Year T-Note", Decimal(1000), Decimal("0.015625"), Decimal(110)),
        FutureSpec("6E", "Euro FX", Decimal(125000), Decimal("0.00005"), Decimal("1.06")),
    )
}

MONTH_CODES = "FGHJKMNQUVXZ"
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


def normalize(symbol: str) -> str:
    return short_year(symbol.strip().upper())


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
    return AssetClass.EQUITY


def quantity_decimals(asset_class: AssetClass) -> int:
    """Decimals a quantity may have: crypto is fractional, contracts and shares are whole
    (fractional equities are a broker capability, checked separately)."""
    return 8 if asset_class is AssetClass.CRYPTO else 0


def multiplier(symbol: str) -> Decimal:
    spec = future_spec(symbol)
    return spec.multiplier if spec else Decimal(1)
