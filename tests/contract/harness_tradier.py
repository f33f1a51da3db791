"""Tradier under the shared contract suite: the adapter wired to a fresh emulator.

One Tradier connection reaches one environment (live and sandbox have separate tokens and
accounts), so the harness connects to the emulated live host with a refreshable grant.
Tradier has no futures accounts, so ``accounts`` has no "futures" key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

import aiohttp

from adapters.base import AdapterContext, LimiterRegistry
from adapters.models import AccountRef, AccountType, Environment, OrderType
from adapters.tradier import TradierAdapter
from emulators.common import Fault
from emulators.tradier import EmulatorTokenProvider, TradierEmulator

ENV = Environment.LIVE
USER = "id-demo"


@dataclass
class Harness:
    adapter: TradierAdapter
    emulator: TradierEmulator
    accounts: dict[str, AccountRef]
    order_types: frozenset[OrderType] = field(default_factory=lambda: frozenset(OrderType))
    supports_tokens: bool = True
    token_refreshable: bool = True
    # The HTTP method of the broker's replace (a fault with it hits replace_order).
    replace_method: str = "PUT"
    retries_reads: bool = True  # a 429 on a read is retried (honouring Retry-After)

    async def expire_token(self) -> None:
        self.emulator.expire_access_tokens()

    async def fresh_adapter(self) -> TradierAdapter:
        """A new adapter as a new process builds it (Tradier keeps our tag with the order)."""
        return TradierAdapter(replace(self.adapter.ctx, limiters=LimiterRegistry(), breakers={}))

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
    emu = TradierEmulator()
    await emu.start()
    grant = emu.issue_tokens(USER, ENV)
    tokens = EmulatorTokenProvider(
        session,
        emu.refresh_url_for(ENV),
        emu.client_id,
        emu.client_secret,
        grant["access_token"],
        grant.get("refresh_token"),
    )
    adapter = TradierAdapter(
        AdapterContext(
            session=session,
            api_urls={ENV: emu.api_url(ENV)},
            tokens=tokens,
            owner="contract-tradier",
        )
    )
    refs = {a.type: a.ref() for a in await adapter.fetch_accounts()}
    margin, cash = refs[AccountType.MARGIN], refs[AccountType.CASH]
    return Harness(
        adapter=adapter,
        emulator=emu,
        accounts={"equity": margin, "margin": margin, "cash": cash},
        order_types=TradierAdapter.capabilities.order_types,
    )
