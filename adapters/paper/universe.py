"""What Tradecord Paper trades: the bundled US stock/ETF list, the crypto pairs and the futures
of ``adapters.symbols``. Anything else is ``SymbolNotFound``.

Symbols are canonicalised so one instrument is one position however it is written:
``BRK-B``/``BRK/B`` → ``BRK.B``; ``BTC/USD``/``BTC-USD`` → ``BTCUSD``; ``@ES`` → ``/ES``
(continuous contract); dated contracts (``ESZ6``, ``MESH27``) stay as written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache, lru_cache
from importlib import resources

from adapters import symbols
from adapters.errors import SymbolNotFound
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
        canonical = "/" + s[1:] if s[0] in "/@" else s
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
        hint = f" For the {name} future write /{root} or a contract like {root}Z6."
    return (
        f"Tradecord Paper does not know the symbol {shown}. It trades US stocks and ETFs from its "
        "list (S&P 500 members, other widely traded stocks and popular ETFs), crypto pairs such "
        "as BTCUSD or ETH/USD, and futures such as /ES, /NQ or ESZ6." + hint + " Check the "
        "ticker; for anything else, use a connected broker account."
    )
