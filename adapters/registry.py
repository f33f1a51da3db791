"""Broker keys to adapter classes. Broker modules register themselves on import."""

from __future__ import annotations

import importlib
from typing import TypeVar

from adapters.base import BrokerAdapter

T = TypeVar("T", bound=type[BrokerAdapter])

_ADAPTERS: dict[str, type[BrokerAdapter]] = {}
# Modules that define adapters, imported on first use.
BROKER_MODULES: tuple[str, ...] = (
    "adapters.paper",
    "adapters.tradier",
    "adapters.alpaca",
    "adapters.tradestation",
)


def register(cls: T) -> T:
    _ADAPTERS[cls.key] = cls
    return cls


def _load_all() -> None:
    for mod in BROKER_MODULES:
        importlib.import_module(mod)


def get_adapter_class(key: str) -> type[BrokerAdapter]:
    if key not in _ADAPTERS:
        _load_all()
    try:
        return _ADAPTERS[key]
    except KeyError:
        raise KeyError(f"no adapter for broker {key!r}") from None


def all_adapters() -> dict[str, type[BrokerAdapter]]:
    _load_all()
    return dict(_ADAPTERS)
