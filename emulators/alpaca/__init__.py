"""Local emulator of Alpaca (Trading API v2, Alpaca Connect OAuth, market data, stream)."""

from emulators.alpaca.server import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REDIRECT,
    AlpacaEmulator,
)
from emulators.alpaca.world import AlpacaError, Broker

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_REDIRECT",
    "AlpacaEmulator",
    "AlpacaError",
    "Broker",
]
