"""Sandbox brokers for local mode: the three broker emulators on 127.0.0.1, each with an OAuth
client registered for Tradecord's own callback, and the settings that point Tradecord at them.

    brokers = await start_sandbox_brokers(settings.public_url)
    settings = load_settings(**brokers.settings_overrides)  # or os.environ |= brokers.environment
    ...
    await brokers.stop()

Each start registers a fresh client secret: the emulators keep their worlds in memory, so
nothing issued by an earlier run is valid anyway. Validation against the vendors' OpenAPI files
is on only where openapi-core (a test extra) is installed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from adapters.models import AssetClass, Environment
from adapters.paper.hours import FillHours, is_open
from emulators.alpaca import AlpacaEmulator
from emulators.common import BaseEmulator
from emulators.tradestation import TradeStationEmulator
from emulators.tradier import TradierEmulator

log = logging.getLogger("tradecord.emulators.sandbox")

CLIENT_ID = "tradecord-sandbox"
HOST = "127.0.0.1"


def callback_url(public_url: str, broker: str) -> str:
    """Tradecord's OAuth callback for ``broker``, exactly as the connect flow sends it."""
    return f"{public_url.rstrip('/')}/oauth/{broker}/callback"


@dataclass
class SandboxBrokers:
    """The running emulators and what Tradecord's settings need to use them.

    ``settings_overrides`` uses ``Settings`` field names (what ``load_settings(**...)`` takes);
    ``environment`` holds the same values under the environment variable names. A URL the
    vendor does not have (Alpaca and Tradier document no revoke endpoint) is left out, as
    their adapters declare none either.
    """

    tradestation: TradeStationEmulator
    alpaca: AlpacaEmulator
    tradier: TradierEmulator
    client_id: str
    client_secrets: dict[str, str] = field(repr=False)
    settings_overrides: dict[str, str] = field(repr=False)

    @property
    def environment(self) -> dict[str, str]:
        return {name.upper(): value for name, value in self.settings_overrides.items()}

    @property
    def emulators(self) -> dict[str, BaseEmulator]:
        return {"tradestation": self.tradestation, "alpaca": self.alpaca, "tradier": self.tradier}

    def set_market_open(self, is_open: bool) -> None:
        """Open (or close) the stock market at every emulator, each as it would itself (the
        opening and closing auctions run; queued orders route at the open)."""
        if self.alpaca.market_open != is_open:
            self.alpaca.open_market() if is_open else self.alpaca.close_market()
        if self.tradier.market_open != is_open:
            self.tradier.set_market_open(is_open)
        if self.tradestation.market_open != is_open:
            self.tradestation.market_open = is_open

    async def follow_the_exchange(
        self, every: float = 30.0, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        """Local mode, until cancelled: the emulators' stock market opens and closes with the
        New York Stock Exchange, so an order placed at night waits for the open there as
        Tradecord's card says it will. (Their own default, always open, is what tests want.)"""
        while True:
            self.set_market_open(is_open(AssetClass.EQUITY, now(), FillHours.EXCHANGE))
            await asyncio.sleep(every)

    async def stop(self) -> None:
        for emu in self.emulators.values():
            await emu.stop()


def _overrides(
    broker: str,
    client_id: str,
    secret: str,
    urls: dict[str, str | None],
) -> dict[str, str]:
    out = {f"tradecord_{broker}_client_id": client_id, f"tradecord_{broker}_client_secret": secret}
    out.update({f"tradecord_{broker}_{name}": url for name, url in urls.items() if url})
    return out


async def start_sandbox_brokers(public_url: str) -> SandboxBrokers:
    """Start TradeStation, Alpaca and Tradier emulators on free local ports."""
    client_secrets = {b: secrets.token_urlsafe(24) for b in ("tradestation", "alpaca", "tradier")}
    ts = TradeStationEmulator(host=HOST, pkce_enabled=True)  # as a key TradeStation enabled
    ts.register_client(
        CLIENT_ID, client_secrets["tradestation"], [callback_url(public_url, "tradestation")]
    )
    alpaca = AlpacaEmulator(
        host=HOST,
        client_id=CLIENT_ID,
        client_secret=client_secrets["alpaca"],
        redirect_uris=(callback_url(public_url, "alpaca"),),
    )
    tradier = TradierEmulator(
        host=HOST,
        client_id=CLIENT_ID,
        client_secret=client_secrets["tradier"],
        redirect_uris=[callback_url(public_url, "tradier")],
    )
    started: list[BaseEmulator] = []
    try:
        for emulator in (ts, alpaca, tradier):
            await emulator.start()
            started.append(emulator)
    except BaseException:
        for running in started:
            await running.stop()
        raise
    overrides = {
        **_overrides(
            "tradestation",
            CLIENT_ID,
            client_secrets["tradestation"],
            {
                "authorize_url": ts.authorize_url,
                "token_url": ts.token_url,
                "revoke_url": ts.revoke_url,
                "api_url": ts.api_url(Environment.LIVE),
                "paper_api_url": ts.api_url(Environment.PAPER),
            },
        ),
        "tradecord_tradestation_pkce": "true",
        **_overrides(
            "alpaca",
            CLIENT_ID,
            client_secrets["alpaca"],
            {
                "authorize_url": alpaca.authorize_url,
                "token_url": alpaca.token_url,
                "revoke_url": alpaca.revoke_url,
                "api_url": alpaca.api_url("live"),
                "paper_api_url": alpaca.api_url("paper"),
                "data_url": alpaca.data_url,
            },
        ),
        # Tradier's sandbox has its own OAuth server; settings carry one, the live one.
        **_overrides(
            "tradier",
            CLIENT_ID,
            client_secrets["tradier"],
            {
                "authorize_url": tradier.authorize_url,
                "token_url": tradier.token_url,
                "refresh_url": tradier.refresh_url,
                "revoke_url": tradier.revoke_url,
                "api_url": tradier.api_url(Environment.LIVE),
                "paper_api_url": tradier.api_url(Environment.PAPER),
            },
        ),
    }
    log.info(
        "sandbox brokers: TradeStation %s, Alpaca %s, Tradier %s",
        ts.base_url,
        alpaca.base_url,
        tradier.base_url,
    )
    return SandboxBrokers(ts, alpaca, tradier, CLIENT_ID, client_secrets, overrides)
