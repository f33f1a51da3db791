"""Small helpers shared by tests across packages."""

from __future__ import annotations

import itertools
import os
import random
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.discord_harness import Harness


def trading_contract(root: str = "ES") -> str:
    """A dated contract of ``root`` that trades for months after today (``ESH27``): a test
    that names a fixed contract would start failing on its last trading day."""
    from adapters.symbols import front_contract

    return front_contract(root, datetime.now(UTC) + timedelta(days=100))


def full_year(contract: str) -> str:
    """The contract with its year in four digits, as TradingView writes it (``ESH2027``)."""
    return f"{contract[:-2]}20{contract[-2:]}"


# Tuesday 1 December 2026, 10:00 in New York: the NYSE and CME are open.
WEEKDAY_SESSION = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def in_session() -> Callable[[], datetime]:
    """A clock running from WEEKDAY_SESSION at the real pace: for tests of orders a broker
    takes only while the market is open (TradeStation's market orders), whenever they run."""
    start = time.monotonic()
    return lambda: WEEKDAY_SESSION + timedelta(seconds=time.monotonic() - start)


class FakeClock:
    """A clock tests move by hand; call it for the time."""

    def __init__(self, at: datetime = WEEKDAY_SESSION) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


async def add_broker_connection(h: Harness, user: str, name: str) -> int:
    """A linked TradeStation connection as the member sees it (no broker call is needed); its
    id."""
    from bot.models import Connection, ConnectionStatus

    member_id = await h.core.members.ensure(h.user(user))
    async with h.core.db.transaction() as s:
        conn = Connection(
            member_id=member_id,
            broker="tradestation",
            name=name,
            name_key=name.casefold(),
            status=ConnectionStatus.ACTIVE,
        )
        s.add(conn)
        await s.flush()
        return conn.id


# Ports for servers that must know their address before they start (OAuth redirects, child
# processes, the PostgreSQL cluster). Port 0 would hand out one from the kernel's ephemeral
# range, which every outgoing connection also draws from: another test worker could take it
# between our check and the server's bind. These come from below that range (Linux starts it
# at 32768), in a slice of their own per pytest-xdist worker.
_PORT_SLICE = 1500


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + (int(worker) if worker.isdigit() else 0) % 8 * _PORT_SLICE
    start = random.randrange(_PORT_SLICE)
    for offset in itertools.islice(itertools.count(start), _PORT_SLICE):
        port = base + offset % _PORT_SLICE
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {base}-{base + _PORT_SLICE - 1}")
