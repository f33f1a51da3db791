"""Where Tradecord Paper gets prices.

``QuoteSource`` is anything with ``async fetch_quote(symbol) -> Quote``; every
``BrokerAdapter`` fits, so a paper connection can price from a connected broker. Without one
it uses ``SimulatedFeed``: made-up but plausible quotes, with ``simulated=True`` on each so
every message priced by it can say "simulated prices".

The simulated feed is a pure function of (symbol, minute): the same symbol in the same UTC
minute always gives the same quote, in any process, with no network. Prices wander within a
few percent of a reference level: the bundled table of well-known tickers, the futures table
of ``adapters.symbols``, the crypto table below, else a stable level derived from a hash of
the symbol. Spreads per asset class: stocks 2 bp and ETFs 1 bp (at least one cent), crypto
4 bp, futures one tick.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Protocol, runtime_checkable

from adapters import symbols
from adapters.errors import BrokerError
from adapters.models import AssetClass, Quote
from adapters.paper.engine import PRICE_Q
from adapters.paper.universe import Instrument, equity_list, resolve

Clock = Callable[[], datetime]

# Approximate levels to wander around, not market data.
CRYPTO_REFERENCE: dict[str, Decimal] = {
    "BTC": Decimal(95000),
    "ETH": Decimal(3400),
    "SOL": Decimal(190),
    "LTC": Decimal(95),
    "DOGE": Decimal("0.18"),
    "AVAX": Decimal(28),
    "LINK": Decimal(18),
    "XRP": Decimal("2.2"),
    "ADA": Decimal("0.7"),
    "DOT": Decimal("5.5"),
    "UNI": Decimal(9),
    "BCH": Decimal(480),
    "SHIB": Decimal("0.000014"),
}
# Relative amplitude of the daily swing, the hourly swing and the minute-to-minute noise.
AMPLITUDES = {
    AssetClass.EQUITY: (Decimal("0.04"), Decimal("0.01"), Decimal("0.0005")),
    AssetClass.FUTURE: (Decimal("0.04"), Decimal("0.01"), Decimal("0.0005")),
    AssetClass.CRYPTO: (Decimal("0.08"), Decimal("0.02"), Decimal("0.001")),
}
HALF_SPREAD = {"stock": Decimal("0.0001"), "etf": Decimal("0.00005"), "crypto": Decimal("0.0002")}
CENT = Decimal("0.01")


@runtime_checkable
class QuoteSource(Protocol):
    async def fetch_quote(self, symbol: str) -> Quote: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


def _unit(*parts: object) -> Decimal:
    """A stable pseudo-random number in [-1, 1] for ``parts`` (six decimals)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return Decimal(int.from_bytes(digest, "big") % 2_000_001 - 1_000_000).scaleb(-6)


def _swing(symbol: str, scale: str, minute: int, period: int) -> Decimal:
    """Linear interpolation between per-period random anchors: a smooth wander."""
    step, offset = divmod(minute, period)
    a, b = _unit(symbol, scale, step), _unit(symbol, scale, step + 1)
    return a + (b - a) * Decimal(offset) / Decimal(period)


def reference_price(instrument: Instrument) -> Decimal:
    if instrument.asset_class is AssetClass.FUTURE:
        spec = symbols.future_spec(instrument.symbol)
        assert spec is not None
        return spec.reference_price
    if instrument.asset_class is AssetClass.CRYPTO:
        pair = symbols.crypto_pair(instrument.symbol)
        assert pair is not None
        return CRYPTO_REFERENCE[pair[0]]
    known = equity_list().reference_prices.get(instrument.symbol)
    if known is not None:
        return known
    # Between $10 and $400, the same for a ticker forever.
    return Decimal(10) + (_unit(instrument.symbol, "level") + 1) * Decimal(195)


def _crypto_tick(price: Decimal) -> Decimal:
    if price >= 1000:
        return CENT
    if price >= 1:
        return Decimal("0.0001")
    return PRICE_Q


class SimulatedFeed:
    """Deterministic simulated quotes, plus overrides that tests and local mode can set."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or utcnow
        # Test/local-mode control only (``set_quote``); real prices never live here.
        self._overrides: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        # Quotes are a pure function of (symbol, minute): computing one costs ~0.1 ms of
        # hashing and Decimal work, and a portfolio asks for dozens at once.
        self._minute_cache: dict[tuple[str, int], Quote] = {}

    def set_quote(
        self, symbol: str, bid: Decimal, ask: Decimal, last: Decimal | None = None
    ) -> None:
        """Pin ``symbol`` to this quote until ``clear_quote``."""
        if bid <= 0 or ask <= 0 or ask < bid:
            raise ValueError("need 0 < bid <= ask")
        canonical = resolve(symbol).symbol
        if last is None:
            last = ((bid + ask) / 2).quantize(PRICE_Q, ROUND_HALF_EVEN)
        self._overrides[canonical] = (Decimal(bid), Decimal(ask), Decimal(last))

    def clear_quote(self, symbol: str | None = None) -> None:
        if symbol is None:
            self._overrides.clear()
        else:
            self._overrides.pop(resolve(symbol).symbol, None)

    async def fetch_quote(self, symbol: str) -> Quote:
        return self.quote_at(symbol, self.clock())

    def quotes(self, symbols: Iterable[str]) -> dict[str, Quote]:
        """Quotes for many symbols at one moment, keyed as asked; a symbol the feed does not
        know is left out, as ``fetch_quotes`` leaves out a quote that fails."""
        at = self.clock()
        out: dict[str, Quote] = {}
        for symbol in symbols:
            try:
                out[symbol] = self.quote_at(symbol, at)
            except BrokerError:
                continue
        return out

    def quote_at(self, symbol: str, at: datetime) -> Quote:
        instrument = resolve(symbol)
        pinned = self._overrides.get(instrument.symbol)
        if pinned is not None:
            bid, ask, last = pinned
            return Quote(
                instrument.symbol,
                bid,
                ask,
                last,
                at,
                simulated=True,
                info={"source": "simulated", "override": True},
            )
        minute = int(at.timestamp()) // 60
        cached = self._minute_cache.get((instrument.symbol, minute))
        if cached is not None:
            return cached
        quote = self._compute(instrument, minute)
        if len(self._minute_cache) >= 4096:
            self._minute_cache.clear()
        self._minute_cache[(instrument.symbol, minute)] = quote
        return quote

    def _compute(self, instrument: Instrument, minute: int) -> Quote:
        ref = reference_price(instrument)
        day_amp, hour_amp, noise_amp = AMPLITUDES[instrument.asset_class]
        s = seed = instrument.symbol
        if instrument.asset_class is AssetClass.FUTURE and s.startswith("/"):
            # A continuous contract (/ES) moves with the front month it stands for, as a
            # chart's does: ESZ26 and /ES quote the same price at the same minute.
            spec = symbols.future_spec(s)
            assert spec is not None
            seed = symbols.front_contract(spec.root, datetime.fromtimestamp(minute * 60, UTC))
        factor = (
            1
            + day_amp * _swing(seed, "day", minute, 1440)
            + hour_amp * _swing(seed, "hour", minute, 60)
            + noise_amp * _unit(seed, "minute", minute)
        )
        mid = ref * factor
        bid, ask = self._spread(instrument, mid)
        last = bid if _unit(seed, "last", minute) < 0 else ask
        minute_start = datetime.fromtimestamp(minute * 60, UTC)
        return Quote(
            s,
            bid,
            ask,
            last,
            minute_start,
            simulated=True,
            info={"source": "simulated", "reference_price": str(ref)},
        )

    @staticmethod
    def _spread(instrument: Instrument, mid: Decimal) -> tuple[Decimal, Decimal]:
        if instrument.asset_class is AssetClass.FUTURE:
            assert instrument.tick is not None
            tick = instrument.tick
            bid = (mid / tick).to_integral_value(ROUND_FLOOR) * tick
            return bid, bid + tick
        tick = _crypto_tick(mid) if instrument.asset_class is AssetClass.CRYPTO else CENT
        half = mid * HALF_SPREAD[instrument.kind]
        bid = ((mid - half) / tick).to_integral_value(ROUND_FLOOR) * tick
        ask = ((mid + half) / tick).to_integral_value(ROUND_CEILING) * tick
        if ask - bid < tick:
            ask = bid + tick
        if bid <= 0:
            bid, ask = tick, ask + tick
        return bid, ask


class BrokerPrices:
    """A linked broker's quotes as Tradecord Paper's prices. Symbols of an asset class the
    broker does not trade (crypto at TradeStation) come from the simulated feed, marked
    simulated like any of its quotes: the broker would only answer "unknown symbol" to a
    ticker paper trades. The broker's refusals name it as paper's price source, with the way
    out, since the member asked Tradecord Paper, not it."""

    def __init__(
        self,
        broker: QuoteSource,
        name: str,
        asset_classes: Iterable[AssetClass],
        feed: SimulatedFeed,
    ) -> None:
        self.broker = broker
        self.name = name
        self.asset_classes = frozenset(asset_classes)
        self.feed = feed

    async def fetch_quote(self, symbol: str) -> Quote:
        if symbols.asset_class_of(symbol) not in self.asset_classes:
            return await self.feed.fetch_quote(symbol)
        try:
            return await self.broker.fetch_quote(symbol)
        except BrokerError as e:
            e.user_message = (
                f"Tradecord Paper takes its prices from “{self.name}”: {e.user_message} "
                "Meanwhile /paper settings quote_source:simulated trades paper on simulated "
                "prices."
            )
            e.args = (e.user_message,)
            raise
