"""Which brokers this deployment offers, from the adapter registry and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.registry import all_adapters
from bot.settings import Settings


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    key: str
    name: str
    configured: bool
    builtin: bool


def broker_catalog(settings: Settings) -> list[BrokerInfo]:
    out = []
    for key, cls in sorted(all_adapters().items(), key=lambda kv: (kv[0] != "paper", kv[0])):
        builtin = cls.oauth is None
        configured = builtin or bool(settings.broker_client_id(key))
        out.append(BrokerInfo(key, cls.display_name, configured, builtin))
    return out
