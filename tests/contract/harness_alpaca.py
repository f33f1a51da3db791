"""Alpaca under the shared contract suite: the adapter wired to a fresh emulator.

One Alpaca token reaches one live and one paper account when the member authorizes both (no
``env`` on the authorize URL), so the harness connects both hosts with one token of the user
"casey": a live cash account (multiplier "1") and a paper margin account (multiplier "4").
Alpaca has no futures accounts, so ``accounts`` has no "futures" key. Alpaca tokens never
expire and cannot be refreshed: after ``expire_token`` every call raises
``AuthorizationExpired`` (``token_refreshable`` is False).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

import aiohttp

from adapters.alpaca import AlpacaAdapter
from adapters.base import AdapterContext, LimiterRegistry, StaticToken
from adapters.models import AccountRef, AccountType, Environment, OrderType
from emulators.alpaca import AlpacaEmulator
from emulators.common import Fault

USER = "casey"


@dataclass
class Harness:
    adapter: AlpacaAdapter
    emulator: AlpacaEmulator
    accounts: dict[str, AccountRef]
    order_types: frozenset[OrderType] = field(default_factory=lambda: frozenset(OrderType))
    supports_tokens: bool = True
    token_refreshable: bool = False
    # The HTTP method of the broker's replace (a fault with it hits replace_order).
    replace_method: str = "PATCH"
    retries_reads: bool = True  # a 429 on a read is retried (honouring Retry-After)

    async def expire_token(self) -> None:
        self.emulator.oauth.expire_access_tokens()

    async def fresh_adapter(self) -> AlpacaAdapter:
        """A new adapter as a new process builds it (Alpaca keeps our client_order_id)."""
        return AlpacaAdapter(replace(self.adapter.ctx, limiters=LimiterRegistry(), breakers={}))

    def inject(self, fault: Fault) -> Fault:
        return self.emulator.faults.add(fault)

    async def broker_order_count(self, account: AccountRef) -> int:
        return sum(
            1
            for o in self.emulator.broker.orders.values()
            if self.emulator.broker.accounts[o.account_id].account_number == account.id
        )

    async def move_quote(self, symbol: str, bid: Decimal, ask: Decimal) -> None:
        self.emulator.set_quote(symbol, bid, ask)

    async def close(self) -> None:
        await self.adapter.close()
        await self.emulator.stop()


def make_adapter(
    emu: AlpacaEmulator,
    session: aiohttp.ClientSession,
    token: str,
    envs: tuple[Environment, ...] = (Environment.LIVE, Environment.PAPER),
    **ctx: object,
) -> AlpacaAdapter:
    return AlpacaAdapter(
        AdapterContext(
            session=session,
            api_urls={e: emu.api_url(e) for e in envs},
            tokens=StaticToken(token),
            owner=f"alpaca-{token[:8]}",
            extra={"data_url": emu.data_url},
            **ctx,  # type: ignore[arg-type]
        )
    )


async def make_harness(session: aiohttp.ClientSession) -> Harness:
    emu = AlpacaEmulator()
    await emu.start()
    adapter = make_adapter(emu, session, emu.issue_token(USER))
    refs = {(a.environment, a.type): a.ref() for a in await adapter.fetch_accounts()}
    margin = refs[(Environment.PAPER, AccountType.MARGIN)]
    cash = refs[(Environment.LIVE, AccountType.CASH)]
    return Harness(
        adapter=adapter,
        emulator=emu,
        accounts={"equity": margin, "margin": margin, "cash": cash},
        order_types=AlpacaAdapter.capabilities.order_types,
    )
