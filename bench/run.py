"""`python -m bench.run [--quick] [--only NAME ...]`: run the benchmarks (bench/README.md) in order.

Each writes bench/results/<name>.json and <name>.png (bench/results/quick/ with --quick); a full
run also rewrites the results section of bench/README.md (between the two markers).
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import time
import traceback

import orjson
import uvloop

from bench.common import (
    Row,
    broker_partitions,
    delete_run_topics,
    ensure_infra,
    log,
    machine,
    now_iso,
    results_dir,
)
from bench.rounds import merge

NAMES = (
    "api_throughput",
    "api_saturation",
    "bpjs_throughput",
    "e2e_latency",
    "pipeline_saturation",
    "ws_fanout",
    "recovery",
    "saas_shape",
)
README = results_dir(False).parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
BUSY_BROKER = 500  # partitions: a few benchmarks' worth


def table(rows: list[Row], header: str) -> str:
    out = [header, "", "| benchmark | figure | value | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        met += f" ({r.met_rounds})" if r.met_rounds and r.met is not None else ""
        out.append(f"| `{r.benchmark}` | {r.figure} | {r.value} | {r.target} | {met} |")
    return "\n".join(out) + "\n"


def latest_table() -> str:
    """The latest full-mode rows of every benchmark (a run with --only updates its own)."""
    rows, parts = [], []
    for name in NAMES:
        path = results_dir(False) / f"{name}.rows.json"
        if path.exists():
            saved = orjson.loads(path.read_bytes())
            rows.extend(Row(**r) for r in saved["rows"])
            n = saved.get("rounds", 1)
            each = f"{n} rounds, " if n > 1 else ""
            parts.append(f"{name} {saved['finished']} ({each}{saved['took_s']} s)")
    m = machine()
    header = (
        f"{m['nproc']} cores ({m['cpu_model']}), {m['memory_mb']} MB RAM. "
        "Finished (duration): " + "; ".join(parts)
    )
    return table(rows, header)


def update_readme(text: str) -> None:
    if not README.exists():
        return
    body = README.read_text()
    if START in body and END in body:
        head, rest = body.split(START, 1)
        tail = rest.split(END, 1)[1]
        README.write_text(f"{head}{START}\n{text}{END}{tail}")


def keep_round(quick: bool, name: str, k: int) -> None:
    """Every round's JSON stays in results/rounds/; <name>.json and .png are the last round's."""
    src = results_dir(quick) / f"{name}.json"
    if src.exists():
        dest = results_dir(quick) / "rounds"
        dest.mkdir(exist_ok=True)
        shutil.copyfile(src, dest / f"{name}-{k}.json")


async def main(quick: bool, only: list[str], delete_stale: bool = False, rounds: int = 1) -> int:
    ensure_infra()
    if delete_stale:
        log(f"deleted {await delete_run_topics()} topics left by earlier runs")
    partitions = await broker_partitions()
    log(f"the broker holds {partitions} partitions before the run")
    if partitions > BUSY_BROKER:
        log("  many are left by earlier runs; their upkeep costs the broker CPU in every figure:"
            " --delete-stale-topics removes them")  # fmt: skip
    rows: list[Row] = []
    timings: dict[str, float] = {}
    failed = []
    started = now_iso()
    for name in only or NAMES:
        module = importlib.import_module(f"bench.{name}")
        # A benchmark that already repeats its measurement (api_throughput) runs once.
        n = 1 if getattr(module, "REPEATS_ITSELF", False) else rounds
        t0 = time.monotonic()
        per_round: list[list[Row]] = []
        for k in range(1, n + 1):
            log(
                f"--- {name}{' (quick)' if quick else ''}"
                + (f", round {k} of {n}" if n > 1 else "")
            )
            try:
                per_round.append(await module.run(quick))
            except Exception as exc:
                traceback.print_exc()
                failed.append(name)
                per_round.append([Row(name, "benchmark failed", repr(exc)[:200], "", False)])
            if n > 1:
                keep_round(quick, name, k)
        mine = merge(per_round)
        rows.extend(mine)
        timings[name] = round(time.monotonic() - t0, 1)
        log(f"--- {name} took {timings[name]} s")
        (results_dir(quick) / f"{name}.rows.json").write_bytes(
            orjson.dumps(
                {
                    "finished": now_iso(),
                    "took_s": timings[name],
                    "rounds": n,
                    "rows": [r.as_dict() for r in mine],
                    "rows_per_round": [[r.as_dict() for r in rs] for rs in per_round],
                }
            )
        )
    m = machine()
    header = (
        f"Run of {started} ({'quick' if quick else 'full'}), {m['nproc']} cores "
        f"({m['cpu_model']}), {m['memory_mb']} MB RAM, {partitions} Kafka partitions before; "
        f"{rounds} round(s) per benchmark, each figure the median of its rounds; "
        "seconds per benchmark: " + ", ".join(f"{k} {v}" for k, v in timings.items())
    )
    text = table(rows, header)
    out = results_dir(quick)
    suffix = "" if not only else "-" + "-".join(only)
    (out / f"summary{suffix}.md").write_text(text)
    (out / f"summary{suffix}.json").write_bytes(
        orjson.dumps(
            {"started": started, "timings_s": timings, "rows": [r.as_dict() for r in rows]},
            option=orjson.OPT_INDENT_2,
        )
    )
    if not quick:
        update_readme(latest_table())
    print(text)
    return 1 if failed else 0


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="short variants (under a minute)")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=[], metavar="NAME")
    parser.add_argument(
        "--delete-stale-topics",
        action="store_true",
        help="first delete every benchmark's and test's topic left on the shared broker"
        " (only while no test or benchmark runs)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="runs of each benchmark; every figure is the median of its rounds"
        " (default 3, 1 with --quick)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    # The load generators share the machine's cores with the services: uvloop makes them cheaper,
    # so less of what they measure is their own lateness.
    raise SystemExit(uvloop.run(main(args.quick, args.only, args.delete_stale_topics, rounds)))


if __name__ == "__main__":
    cli()
