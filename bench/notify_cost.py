"""`python -m bench.notify_cost`: what a NOTIFY inside the cancel's transaction costs. pgbench
runs the API's cancel (`bench.api_throughput`'s script) against one database in alternating
rounds: with the outbox trigger's NOTIFY in every transaction (any writer that does not set
`antrean.outbox_notify`), and without it (the session setting the API's connections carry,
`shared.outbox.NOTIFY_AFTER_COMMIT`), at 8 and at 32 clients.

PostgreSQL takes one lock for the whole cluster when a transaction that notified commits, and
holds it until the commit is flushed: notifying commits follow one another, each with its own
flush, where commits without a NOTIFY share one. Run nothing else meanwhile."""

from __future__ import annotations

import asyncio
import statistics

from bench.api_throughput import PGBENCH_OPTIONS, pgbench_round
from bench.stack import Stack

ROUNDS = 3
# Transactions per round: a few seconds each at this machine's rates.
CLIENTS = {8: 4000, 32: 6000}
MODES = {"NOTIFY in the transaction": "", "no NOTIFY (after_commit)": PGBENCH_OPTIONS}


async def main() -> None:
    pg = await Stack("pgn").create()
    tps: dict[tuple[str, int], list[float]] = {}
    try:
        for r in range(1, ROUNDS + 1):
            for mode, options in MODES.items():
                for clients, n in CLIENTS.items():
                    x = await pgbench_round(pg, n, clients, "bench-notify", options)
                    tps.setdefault((mode, clients), []).append(x["tps"])
                    lat = x["latency_ms"]
                    print(
                        f"round {r} | {mode} | {clients} clients | {x['tps']:.0f} tps"
                        f" | p50 {lat['p50']} ms, p99 {lat['p99']} ms",
                        flush=True,
                    )
    finally:
        await pg.destroy()
    print("\n| clients | " + " | ".join(f"{m}: tps per round (median)" for m in MODES) + " |")
    print("|---|" + "---|" * len(MODES))
    for clients in CLIENTS:
        cells = []
        for mode in MODES:
            runs = tps[(mode, clients)]
            cells.append(", ".join(f"{t:.0f}" for t in runs) + f" ({statistics.median(runs):.0f})")
        print(f"| {clients} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    asyncio.run(main())
