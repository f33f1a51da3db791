"""Trading round trips on Tradecord Paper through the local Discord, against the bare command.

    python -m benchmarks.trade_roundtrip [--n 500]

Measured, interleaved in chunks with the bare discord.py command that answers "ok" (same bot,
emulator and event loop, as in interaction_latency): /positions for a member holding 50
positions, and a full /trade (preview card) + Confirm (order filled, card replaced). Target:
p99 ratio <= 2 to the bare command. Also shown, not part of the target: a bare card whose
button press replaces it, the two interactions of /trade + Confirm with no work behind them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from decimal import Decimal

from adapters.models import OrderRequest, Side
from adapters.paper.universe import resolve
from adapters.symbols import asset_class_of
from benchmarks.discord_bench import (
    RoundTrip,
    Stats,
    interleaved,
    quiet,
    settle,
    slash,
    table,
    tradecord_bot,
)
from emulators.discord import DiscordEmulator

SYMBOLS = [
    "AAPL",
    "MSFT",
    "NVDA",
    "AMZN",
    "GOOGL",
    "META",
    "TSLA",
    "JPM",
    "V",
    "WMT",
    "KO",
    "PEP",
    "DIS",
    "NFLX",
    "INTC",
    "AMD",
    "CSCO",
    "ORCL",
    "ADBE",
    "CRM",
    "QCOM",
    "TXN",
    "AVGO",
    "COST",
    "HD",
    "MCD",
    "NKE",
    "SBUX",
    "BA",
    "CAT",
    "GE",
    "MMM",
    "IBM",
    "GS",
    "MS",
    "BAC",
    "C",
    "WFC",
    "XOM",
    "CVX",
    "PFE",
    "MRK",
    "JNJ",
    "ABBV",
    "LLY",
    "UNH",
    "T",
    "VZ",
    "SPY",
    "QQQ",
]


def card_and_press(
    emu: DiscordEmulator, user_id: int, command: str, options: dict[str, str], label: str, done: str
) -> RoundTrip:
    """A slash command's card, then its button pressed and the card replaced."""

    async def once() -> None:
        card = await emu.slash(
            user_id, command, options=options, guild_id=emu.guild.id, channel_id=emu.general.id
        )
        message = await card.message(timeout=30)
        pressed = await emu.click(user_id, message, label=label)
        result = await pressed.message(timeout=30)
        if done not in result.text():
            raise RuntimeError(result.text())

    return once


def trade_and_confirm(emu: DiscordEmulator, user_id: int) -> RoundTrip:
    order = {"symbol": "AAPL", "side": "buy", "quantity": "1"}
    return card_and_press(emu, user_id, "trade", order, "Confirm", "Filled")


async def main(n: int) -> None:
    quiet()
    async with tradecord_bot(paper_starting_cash=Decimal("100000000")) as (emu, bot):
        user = emu.add_user("trader").id
        emu.add_member(emu.guild.id, user)
        target = await bot.core.connections.resolve(user, None, "paper")
        for i, sym in enumerate(SYMBOLS):
            resolve(sym)  # fails loudly if the paper universe lacks one
            req = OrderRequest(sym, Side.BUY, Decimal(10), asset_class=asset_class_of(sym))
            out = await bot.core.trading.place(target, req, source="bench", idempotency_key=f"{i}")
            assert out.ok, out.message
        trips = {
            "ok": slash(emu, user, "ok"),
            "positions": slash(emu, user, "positions"),
            "trade": trade_and_confirm(emu, user),
            "press": card_and_press(emu, user, "okpress", {}, "OK", "ok"),
        }
        await interleaved(trips, 20)
        settle()
        start = time.perf_counter()
        r = await interleaved(trips, n, chunk=25)
        wall = time.perf_counter() - start
    base = Stats("bare", r["ok"])
    pos, trd = Stats("positions", r["positions"]), Stats("trade", r["trade"])
    print(
        table(
            [
                (f"bare 'ok', {n} sequential", base, None),
                (f"/positions (50 positions), {n}", pos, base),
                (f"/trade + Confirm (filled), {n}", trd, base),
                (f"bare card + button press, {n}", Stats("press", r["press"]), base),
            ]
        )
    )
    print(
        f"\n{len(trips) * n} round trips in {wall:.1f} s; /trade + Confirm is two interactions, "
        "as is the bare card + press (its floor: the same two interactions with nothing behind)"
    )
    worst = max(pos.p99 / base.p99, trd.p99 / base.p99)
    print(f"worst p99 ratio {worst:.2f} (target <= 2): {'met' if worst <= 2 else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.n))
