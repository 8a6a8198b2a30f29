"""pipeline_saturation: the whole pipeline (API and its outbox relay, Kafka, the notifier, the
worker with the BPJS simulator) stepped up in offered cancels/s, each step open loop, until the
cancels that reach every session within their step stop growing. Per step: offered, accepted
and delivered cancels/s, delivery p50/p99 to every session, HTTP p99, errors (503 included),
the outbox relay's lag and the notifier's and worker's Kafka consumer lag; the knee is the step
that delivered the most."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bench import consumer_lag
from bench.api_saturation import sample_lag
from bench.common import Row, figure, log, now_iso, percentiles, save_figure, write_result
from bench.e2e_latency import phase
from bench.stack import Stack

# Cancels that reach every session later than this after their step's last send count against
# the step: the pipeline did not keep up with it.
GRACE_S = 1.0


def lag_as_s(msgs: dict[str, Any], per_s: float) -> dict[str, Any]:
    """The notifier's lag in messages as seconds at the step's delivered rate (one
    queue-cancelled record per cancel)."""
    if not per_s or not msgs.get("count"):
        return {}
    return {k: round(msgs[k] / per_s, 3) for k in ("p50", "p99", "max")}


async def step(stack: Stack, rate: int, seconds: float, sessions: int) -> dict[str, Any]:
    lag: list[float] = []
    consumer = consumer_lag.new_samples()
    stop = asyncio.Event()
    samplers = [
        asyncio.create_task(sample_lag(stack.dsn, stop, lag)),
        asyncio.create_task(consumer_lag.sample(stack, stop, consumer)),
    ]
    try:
        p = await phase(stack, rate, seconds, sessions, 1)
    finally:
        stop.set()
        await asyncio.gather(*samplers)
    in_time = sum(1 for t in p["_complete_at"] if t <= seconds + GRACE_S)
    accepted = p["statuses"].get(200, 0)
    lags = consumer_lag.summary(consumer)
    return {
        "offered_per_s": rate,
        "accepted_per_s": round(accepted / seconds, 1),
        "delivered_per_s": round(in_time / seconds, 1),
        "reached_every_session": f"{p['cancels_reaching_every_session']}/{p['cancels']}",
        "errors": p["errors"],
        "statuses": p["statuses"],
        "e2e_all_sessions_ms": p["e2e_all_sessions_ms"],
        "http_ms": p["http_ms"],
        "bpjs_synced_ms": p["bpjs_synced_ms"],
        "relay_lag_ms": percentiles(lag),
        **lags,
        "notifier_lag_s": lag_as_s(lags["notifier_lag_msgs"], in_time / seconds),
        "machine_cpu_busy_share": p["machine_cpu_busy_share"],
        "generator_behind_s": p["generator_behind_s"],
        "connected": p["connected"],
    }


def plot(quick: bool, steps: list[dict[str, Any]], knee: dict[str, Any], sessions: int) -> None:
    title = f"pipeline_saturation ({sessions} sessions, open loop)"
    fig, (a1, a2) = figure(quick, "pipeline_saturation", title=title)
    x = [s["offered_per_s"] for s in steps]
    a1.plot(x, x, ":", color="gray", label="offered")
    a1.plot(x, [s["accepted_per_s"] for s in steps], "o-", label="accepted (200)/s")
    a1.plot(x, [s["delivered_per_s"] for s in steps], "s-", label="reached every session in time/s")
    a1.axvline(knee["offered_per_s"], color="tab:red", alpha=0.4, label="knee")
    a2.plot(x, [s["e2e_all_sessions_ms"].get("p99") or 0 for s in steps], "o-",
            label="to every session p99")  # fmt: skip
    a2.plot(x, [s["http_ms"].get("p99") or 0 for s in steps], "s--", label="HTTP p99")
    a2.plot(x, [s["relay_lag_ms"].get("p99") or 0 for s in steps], "^:", label="relay lag p99")
    a2.set_yscale("log")
    # Consumer lag is in messages, not ms: its own axis on the right, in dashed purple/brown.
    m = a2.twinx()
    m.plot(x, [s["notifier_lag_msgs"].get("p50") or 0 for s in steps], "d--", color="tab:purple",
           label="notifier lag p50 (msgs, right)")  # fmt: skip
    m.plot(x, [s["notifier_lag_msgs"].get("max") or 0 for s in steps], "d:", color="tab:purple",
           alpha=0.5, label="notifier lag max (msgs, right)")  # fmt: skip
    m.plot(x, [s["worker_lag_msgs"].get("p50") or 0 for s in steps], "v--", color="tab:brown",
           label="worker lag p50 (msgs, right)")  # fmt: skip
    m.set_ylabel("consumer lag (messages)")
    m.set_ylim(bottom=0)
    for ax, label in ((a1, "cancels/s"), (a2, "ms")):
        ax.set_xscale("log")
        ax.set_xlabel("offered cancels/s")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    a1.legend(fontsize=7)
    lines, labels = a2.get_legend_handles_labels()
    more, more_labels = m.get_legend_handles_labels()
    a2.legend(lines + more, labels + more_labels, fontsize=7, loc="upper left")
    save_figure(fig, quick, "pipeline_saturation")


async def run(quick: bool) -> list[Row]:
    seconds = 5.0 if quick else 15.0
    sessions = int(os.environ.get("BENCH_PIPELINE_SESSIONS", "20" if quick else "50"))
    rates = (50, 100, 200, 400) if quick else (50, 100, 200, 400, 800)
    stack = await Stack("pipe").create()
    started = now_iso()
    steps: list[dict[str, Any]] = []
    try:
        stack.start_pipeline()
        await asyncio.sleep(3)
        for rate in rates:
            steps.append(await step(stack, rate, seconds, sessions))
            s = steps[-1]
            log(f"pipeline {rate}/s: delivered {s['delivered_per_s']}/s, "
                f"p99 {s['e2e_all_sessions_ms'].get('p99')} ms, errors {s['errors']}, "
                f"lag max notifier {s['notifier_lag_msgs'].get('max')} / worker "
                f"{s['worker_lag_msgs'].get('max')} msgs")  # fmt: skip
            best = max(x["delivered_per_s"] for x in steps[:-1]) if len(steps) > 1 else 0
            if len(steps) >= 3 and s["delivered_per_s"] < 1.1 * best:
                break  # throughput stopped growing
        usage = stack.usage(sum(int(s["offered_per_s"] * seconds) for s in steps))
    finally:
        await stack.destroy()
    # The knee: the first step within 5 % of the most the pipeline delivered (past it, more
    # offered load only adds queueing).
    most = max(s["delivered_per_s"] for s in steps)
    knee = next(s for s in steps if s["delivered_per_s"] >= 0.95 * most)
    plot(quick, steps, knee, sessions)
    write_result(
        "pipeline_saturation",
        quick,
        {"inputs": {"seconds_per_step": seconds, "sessions": sessions, "rates": rates,
                    "grace_s": GRACE_S, "bpjs_share": 0.2},
         "started": started, "finished": now_iso(), "steps": steps,
         "knee_offered_per_s": knee["offered_per_s"], "services": usage},
    )  # fmt: skip
    curve = ", ".join(f"{s['offered_per_s']}→{s['delivered_per_s']}" for s in steps)
    p99s = ", ".join(
        f"{s['offered_per_s']}: {s['e2e_all_sessions_ms'].get('p99')}; {s['errors']}" for s in steps
    )
    e, lag = knee["e2e_all_sessions_ms"], knee["relay_lag_ms"]
    n, w, nt = knee["notifier_lag_msgs"], knee["worker_lag_msgs"], knee["notifier_lag_s"]
    return [
        Row("pipeline_saturation", f"offered → delivered cancels/s ({sessions} sessions)", curve),
        Row("pipeline_saturation", "offered: p99 to every session (ms); errors", p99s),
        Row("pipeline_saturation", "knee: delivered cancels/s (offered); p50 / p99 to every "
            "session (ms); errors",
            f"{knee['delivered_per_s']} ({knee['offered_per_s']}); {e.get('p50')} / "
            f"{e.get('p99')}; {knee['errors']}"),
        Row("pipeline_saturation", "knee: outbox relay lag p50 / p99 (ms); machine busy",
            f"{lag.get('p50')} / {lag.get('p99')}; "
            f"{round(100 * knee['machine_cpu_busy_share'])} %"),
        Row("pipeline_saturation", "knee: notifier / worker consumer lag p50 / max (messages); "
            "notifier lag p50 / max as time (s)",
            f"{n.get('p50')} / {n.get('max')}; {w.get('p50')} / {w.get('max')}; "
            f"{nt.get('p50')} / {nt.get('max')}"),
    ]  # fmt: skip
