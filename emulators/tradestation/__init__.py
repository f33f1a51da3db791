"""TradeStation Web API v3 emulator (Auth0 sign-in, LIVE and SIM hosts on one port)."""

from .server import (
    AUDIENCE,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_RATE_LIMITS,
    STREAM_CONTENT_TYPE,
    SpecViolation,
    TradeStationEmulator,
)
from .world import OrderState, World

__all__ = [
    "AUDIENCE",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_RATE_LIMITS",
    "STREAM_CONTENT_TYPE",
    "OrderState",
    "SpecViolation",
    "TradeStationEmulator",
    "World",
]
