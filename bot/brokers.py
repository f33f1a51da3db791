"""Which brokers this deployment offers, from the adapter registry and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from adapters.registry import all_adapters, get_adapter_class
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


def connect_command(key: str) -> str:
    """/connect as a member fills it in for this broker: the option by name, the broker as its
    choice reads ("/connect broker:TradeStation", not the internal "tradestation")."""
    return f"/connect broker:{get_adapter_class(key).display_name}"
