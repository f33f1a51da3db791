"""Small helpers shared by tests across packages."""

from __future__ import annotations

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
