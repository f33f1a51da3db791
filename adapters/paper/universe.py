"""What Tradecord Paper trades: the bundled US stock/ETF list, the crypto pairs and the futures
of ``adapters.symbols``. Anything else is ``SymbolNotFound``.

Symbols are canonicalised so one instrument is one position however it is written:
``BRK-B``/``BRK/B`` → ``BRK.B``; ``BTC/USD``/``BTC-USD`` → ``BTCUSD``; ``@ES`` → ``/ES``
(continuous contract); dated contracts take a two-digit year (``ESZ6``/``ESZ2026`` → ``ESZ26``).

A dated contract trades only in its listed months and until its last trading day
(``check_contract``); a position still held then is settled in cash (``store.settle_expired``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from importlib import resources

from adapters import symbols
from adapters.errors import InvalidOrder, SymbolNotFound
from adapters.models import AssetClass


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str  # canonical
    asset_class: AssetClass
    multiplier: Decimal = Decimal(1)
    tick: Decimal | None = None  # futures prices must be multiples of it
    kind: str = "stock"  # stock | etf | crypto | future
    name: str | None = None


@dataclass(frozen=True, slots=True)
class EquityList:
    stocks: frozenset[str]
    etfs: frozenset[str]
    reference_prices: dict[str, Decimal]


@cache
def equity_list() -> EquityList:
    raw = json.loads(resources.files(__package__).joinpath("tickers.json").read_text("utf-8"))
    return EquityList(
        stocks=frozenset(raw["stocks"]),
        etfs=frozenset(raw["etfs"]),
        reference_prices={k: Decimal(v) for k, v in raw["reference_prices"].items()},
    )


@lru_cache(maxsize=4096)
def resolve(symbol: str) -> Instrument:
    """The instrument ``symbol`` names, or ``SymbolNotFound`` saying what Paper does trade."""
    s = symbols.normalize(symbol)
    spec = symbols.future_spec(s)
    if spec is not None:
        # A one-digit year is read around today: the cache keeps it for the process's life.
        dated = symbols.contract(s, datetime.now(UTC))
        canonical = dated.symbol if dated else "/" + s[1:] if s[0] in "/@" else s
        return Instrument(
            canonical, AssetClass.FUTURE, spec.multiplier, spec.tick, "future", spec.name
        )
    pair = symbols.crypto_pair(s)
    if pair is not None:
        return Instrument(
            "".join(pair), AssetClass.CRYPTO, kind="crypto", name=f"{pair[0]}/{pair[1]}"
        )
    ticker = s.replace("-", ".").replace("/", ".")
    known = equity_list()
    if ticker in known.stocks:
        return Instrument(ticker, AssetClass.EQUITY, kind="stock")
    if ticker in known.etfs:
        return Instrument(ticker, AssetClass.EQUITY, kind="etf")
    raise SymbolNotFound(unknown_symbol_message(symbol))


def unknown_symbol_message(symbol: str) -> str:
    shown = symbols.normalize(symbol)[:24] or "(empty)"
    root = shown.lstrip("/@")
    hint = ""
    if root in symbols.FUTURES:
        name = symbols.FUTURES[root].name
        contract = symbols.example_contract(root)
        hint = f" For the {name} future write /{root} or a contract like {contract}."
    return (
        f"Tradecord Paper does not know the symbol {shown}. It trades US stocks and ETFs from its "
        "list (S&P 500 members, other widely traded stocks and popular ETFs), crypto pairs such "
        f"as BTCUSD or ETH/USD, and futures such as /ES, /NQ or {symbols.example_contract()}."
        f"{hint} Check the ticker; for anything else, use a connected broker account."
    )


def check_contract(inst: Instrument, now: datetime) -> None:
    """Refuse a dated futures contract that is not listed, or no longer trades at ``now``."""
    c = symbols.contract(inst.symbol, now)
    if c is None:
        return
    root = c.spec.root
    instead = f"Trade {symbols.front_contract(root, now)}, the contract trading now, or /{root}."
    if not c.listed:
        months = ", ".join(symbols.MONTH_NAMES[symbols.MONTH_CODES.index(m)] for m in c.spec.months)
        raise InvalidOrder(
            f"There is no {c.label} {c.spec.name} contract: {root} is listed for {months} only. "
            + instead
        )
    if now >= c.expires_at:
        raise InvalidOrder(
            f"{c.symbol} ({c.spec.name}, {c.label}) stopped trading on "
            f"{c.last_trading_day:%a %d %b %Y}. " + instead
        )
