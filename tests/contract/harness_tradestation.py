"""TradeStation under the shared contract suite: the adapter wired to a fresh emulator.

One TradeStation grant reaches both hosts (LIVE and SIM), so the adapter gets both URLs; the
contract accounts are the LIVE Cash, Margin and Futures accounts of the emulator's ``demo``
login. Tokens come from a real code flow against the emulator and refresh at its token
endpoint. TradeStation orders do not carry our client order id: a lookup by it matches content
through the adapter's in-process journal, which ``fresh_adapter`` clears as a restart would.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

import aiohttp

from adapters.base import AdapterContext, LimiterRegistry
from adapters.models import AccountRef, AccountType, Environment, OrderType
from adapters.tradestation import JOURNAL, TradeStationAdapter
from emulators.common import Fault
from emulators.tradestation import TradeStationEmulator
from emulators.tradestation.testing import EmulatorTokens, sign_in


@dataclass
class Harness:
    adapter: TradeStationAdapter
    emulator: TradeStationEmulator
    accounts: dict[str, AccountRef]
    order_types: frozenset[OrderType] = field(default_factory=lambda: frozenset(OrderType))
    supports_tokens: bool = True
    token_refreshable: bool = True
    # The HTTP method of the broker's replace (a fault with it hits replace_order).
    replace_method: str = "PUT"
    retries_reads: bool = True  # a 429 on a read is retried (honouring Retry-After)

    async def expire_token(self) -> None:
        self.emulator.expire_access_tokens()

    async def fresh_adapter(self) -> TradeStationAdapter:
        """A new adapter as a new process builds it: no journal of what was sent."""
        JOURNAL.clear()
        return TradeStationAdapter(
            replace(self.adapter.ctx, limiters=LimiterRegistry(), breakers={})
        )

    def inject(self, fault: Fault) -> Fault:
        return self.emulator.faults.add(fault)

    async def broker_order_count(self, account: AccountRef) -> int:
        return len(self.emulator.orders_for(account.id))

    async def move_quote(self, symbol: str, bid: Decimal, ask: Decimal) -> None:
        self.emulator.set_quote(symbol, bid, ask)

    async def close(self) -> None:
        await self.adapter.close()
        await self.emulator.stop()


async def make_harness(session: aiohttp.ClientSession) -> Harness:
    emu = TradeStationEmulator()
    await emu.start()
    tokens = EmulatorTokens(session, emu.token_url, await sign_in(session, emu))
    adapter = TradeStationAdapter(
        AdapterContext(
            session=session,
            api_urls=emu.api_urls,
            tokens=tokens,
            owner="contract-tradestation",
        )
    )
    refs = {(a.type, a.environment): a.ref() for a in await adapter.fetch_accounts()}
    margin = refs[(AccountType.MARGIN, Environment.LIVE)]
    return Harness(
        adapter=adapter,
        emulator=emu,
        accounts={
            "equity": margin,
            "margin": margin,
            "cash": refs[(AccountType.CASH, Environment.LIVE)],
            "futures": refs[(AccountType.FUTURES, Environment.LIVE)],
        },
        order_types=TradeStationAdapter.capabilities.order_types,
    )
