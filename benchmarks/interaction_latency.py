"""/help round trips through the local Discord against a bare discord.py command.

    python -m benchmarks.interaction_latency [--n 1000] [--in-flight 32]

Both commands run on the same Tradecord bot, emulator and event loop (the bare one is a plain
``app_commands`` command answering "ok"), so the ratio is what /help's handler costs on top of
discord.py's own round trip. Sequential runs alternate chunks of each; the concurrent runs
keep ``--in-flight`` interactions outstanding. Target: ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio

from benchmarks.discord_bench import (
    Stats,
    concurrent,
    interleaved,
    quiet,
    settle,
    slash,
    table,
    tradecord_bot,
)


async def main(n: int, in_flight: int) -> None:
    quiet()
    async with tradecord_bot() as (emu, _bot):
        user = emu.add_user("bench").id
        emu.add_member(emu.guild.id, user)
        bare, help_ = slash(emu, user, "ok"), slash(emu, user, "help")
        await interleaved({"ok": bare, "help": help_}, 50)  # warm up both paths
        settle()
        s = await interleaved({"ok": bare, "help": help_}, n)
        c_bare: list[float] = []
        c_help: list[float] = []
        wall_bare = wall_help = 0.0
        for _ in range(4):  # alternate quarters so both meet the same noise
            lat, wall = await concurrent(bare, n // 4, in_flight)
            c_bare += lat
            wall_bare += wall
            lat, wall = await concurrent(help_, n // 4, in_flight)
            c_help += lat
            wall_help += wall
    b_seq, h_seq = Stats("bare", s["ok"]), Stats("help", s["help"])
    b_con, h_con = Stats("bare", c_bare), Stats("help", c_help)
    print(
        table(
            [
                (f"bare 'ok', {n} sequential", b_seq, None),
                (f"/help, {n} sequential", h_seq, b_seq),
                (f"bare 'ok', {n} at {in_flight} in flight", b_con, None),
                (f"/help, {n} at {in_flight} in flight", h_con, b_con),
            ]
        )
    )
    print(f"\nconcurrent throughput: bare {n / wall_bare:.0f}/s, /help {n / wall_help:.0f}/s")
    worst = max(
        h_seq.p50 / b_seq.p50, h_seq.p99 / b_seq.p99, h_con.p50 / b_con.p50, h_con.p99 / b_con.p99
    )
    print(f"worst ratio {worst:.2f} (target <= 1.5): {'met' if worst <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.in_flight))
