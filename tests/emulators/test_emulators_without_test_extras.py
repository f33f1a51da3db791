"""Local mode runs the broker emulators with only the runtime dependencies installed: OpenAPI
validation (openapi-core, PyYAML, werkzeug: test extras) must load lazily and only when on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from emulators.alpaca import AlpacaEmulator
from emulators.tradestation import TradeStationEmulator

ROOT = Path(__file__).resolve().parents[2]
# None in sys.modules makes any import of the name fail, as if it were not installed.
BLOCK = (
    "import sys\nfor name in ('openapi_core', 'yaml', 'werkzeug'):\n    sys.modules[name] = None\n"
)
SERVE = """
import asyncio
import logging
from adapters.alpaca import AlpacaAdapter
from adapters.base import AdapterContext, StaticToken
from adapters.models import Environment
from adapters.tradestation import TradeStationAdapter
from adapters.tradier import TradierAdapter
from emulators.alpaca import AlpacaEmulator
from emulators.tradestation import DEFAULT_CLIENT_ID, TradeStationEmulator
from emulators.tradier import TradierEmulator
import aiohttp

LIVE = Environment.LIVE

async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    ts, alpaca, tradier = TradeStationEmulator(), AlpacaEmulator(), TradierEmulator()
    TradeStationEmulator(), AlpacaEmulator()  # a second one says nothing more
    assert not ts.validate_requests and not alpaca.validate_requests
    for emu in (ts, alpaca, tradier):
        await emu.start()
    core = ts.oauth
    code = core.issue_code(DEFAULT_CLIENT_ID, None, "demo", "openid ReadAccount Trade")
    ts_token = core.exchange_code(core.client(DEFAULT_CLIENT_ID), code, None)["access_token"]
    async with aiohttp.ClientSession() as session:
        adapters = [
            TradeStationAdapter(AdapterContext(session=session, api_urls={LIVE: ts.api_url(LIVE)},
                                               tokens=StaticToken(ts_token))),
            AlpacaAdapter(AdapterContext(session=session, api_urls={LIVE: alpaca.api_url("live")},
                                         tokens=StaticToken(alpaca.issue_token("demo")))),
            TradierAdapter(AdapterContext(
                session=session, api_urls={LIVE: tradier.api_url(LIVE)},
                tokens=StaticToken(tradier.issue_tokens("id-demo", LIVE)["access_token"]))),
        ]
        for adapter in adapters:
            assert await adapter.fetch_accounts(), adapter.key
    for emu in (ts, alpaca, tradier):
        await emu.stop()
    print("served")

asyncio.run(main())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_emulator_packages_import_without_openapi_core() -> None:
    result = _run(BLOCK + "import emulators.alpaca, emulators.tradestation, emulators.tradier\n")
    assert result.returncode == 0, result.stderr


def test_emulators_serve_without_openapi_core() -> None:
    result = _run(BLOCK + SERVE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "served"
    # One line per emulator says why validation is off, rather than failing.
    lines = [line for line in result.stderr.splitlines() if "will not validate" in line]
    assert len(lines) == 2, result.stderr


def test_tests_keep_validation_on() -> None:
    assert TradeStationEmulator().validate_requests is True
    alpaca = AlpacaEmulator()
    assert alpaca.validate_requests is True and alpaca.validate_responses is True
    assert AlpacaEmulator(validate_requests=False).validate_responses is False
