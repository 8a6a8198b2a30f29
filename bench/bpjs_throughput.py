"""bpjs_throughput: BPJS cancellations through the sync worker (`batal` answered in 200 ms), clean
and with 10 % 502s; syncs/s against in-flight limit / latency, and the in-flight slots' use."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import asyncpg

from bench.common import (
    Row,
    figure,
    log,
    now_iso,
    save_figure,
    scrape,
    token,
    write_result,
)
from bench.stack import (
    Stack,
    cancel,
    http_client,
    seed_tickets,
)

LATENCY_MS = 200
ROUTE = "antreanrs:batal"
CALL_SECONDS = "bpjs_call_duration_seconds"  # the worker's histogram of every BPJS call
RETRY_AFTER_S = 1.0  # the API's Retry-After on an admission refusal


async def call_seconds(client: Any, url: str) -> dict[str, float]:
    """Seconds the worker has spent in BPJS calls so far, by call (the histogram's `_sum`)."""
    out: dict[str, float] = {}
    for s in await scrape(client, f"{url}/metrics", f"{CALL_SECONDS}_sum"):
        out[s.labels["call"]] = out.get(s.labels["call"], 0.0) + s.value
    return out


def utilisation(seconds: float, in_flight: int, wall_s: float) -> float:
    """Slot utilisation: BPJS call seconds over slot seconds (in-flight limit x wall time)."""
    return round(seconds / (in_flight * wall_s), 3) if wall_s > 0 else 0.0


async def progress(dsn: str, tag: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "select count(*) filter (where j.status = 'synced') as synced, count(*) as jobs,"
            " count(*) filter (where j.status <> 'synced' and j.will_retry) as open"
            " from bpjs_sync_job j join queue_ticket t on t.id = j.queue_id"
            " where t.bpjs->>'booking_code' like $1",
            f"BK{tag}-%",
        )
        assert row is not None
        return dict(row)
    finally:
        await conn.close()


async def phase(stack: Stack, n: int, tag: str, limit_s: float, in_flight: int) -> dict[str, Any]:
    ids = await seed_tickets(stack.dsn, n, bpjs_every=1, tag=tag)
    tok = token()
    todo = iter(ids)
    statuses: dict[int, int] = {}
    retried = [0]  # cancels sent again after a 503
    series: list[tuple[float, int]] = []
    jobs: list[tuple[float, int]] = []
    # (t, BPJS call seconds since the phase started, jobs open: recorded, not finished)
    calls: list[tuple[float, float, int]] = []
    worker_url = f"http://127.0.0.1:{stack.ports['worker']}"
    async with http_client(2) as probe:
        before = await call_seconds(probe, worker_url)
    t0 = time.monotonic()
    async with http_client(32) as client, http_client(2) as probe:

        async def one_client() -> None:
            for qid in todo:
                status, _ = await cancel(client, stack.api_url, qid, tok)
                while status == 503:  # refused by admission control, nothing changed: as the
                    retried[0] += 1  # staff UI does, try again after a pause
                    await asyncio.sleep(RETRY_AFTER_S)
                    status, _ = await cancel(client, stack.api_url, qid, tok)
                statuses[status] = statuses.get(status, 0) + 1

        load = asyncio.gather(*(one_client() for _ in range(32)))
        while time.monotonic() - t0 < limit_s:
            p = await progress(stack.dsn, tag)
            series.append((time.monotonic() - t0, int(p["synced"])))
            jobs.append((time.monotonic() - t0, int(p["jobs"])))
            spent = sum((await call_seconds(probe, worker_url)).values()) - sum(before.values())
            calls.append((time.monotonic() - t0, spent, int(p["open"])))
            if load.done() and p["synced"] >= n:
                break
            await asyncio.sleep(0.2)
        await load
        after = await call_seconds(probe, worker_url)
    cancels_done = statuses.get(200, 0)
    conn = await asyncpg.connect(stack.dsn)
    try:
        first_created, last_created, last_finished = await conn.fetchrow(
            "select min(j.created_at), max(j.created_at), max(j.finished_at)"
            " from bpjs_sync_job j join queue_ticket t on t.id = j.queue_id"
            " where t.bpjs->>'booking_code' like $1",
            f"BK{tag}-%",
        )
        finished = sorted(
            r[0]
            for r in await conn.fetch(
                "select extract(epoch from j.finished_at) from bpjs_sync_job j join queue_ticket t"
                " on t.id = j.queue_id where t.bpjs->>'booking_code' like $1"
                " and j.status = 'synced'",
                f"BK{tag}-%",
            )
        )
        hist = {
            int(r["attempts"]): int(r["n"])
            for r in await conn.fetch(
                "select attempts, count(*) as n from bpjs_sync_job j join queue_ticket t"
                " on t.id = j.queue_id where t.bpjs->>'booking_code' like $1 group by attempts",
                f"BK{tag}-%",
            )
        }
    finally:
        await conn.close()
    synced = len(finished)
    steady = 0.0
    if synced >= 20:
        a, b = int(synced * 0.1), int(synced * 0.9)
        steady = (b - a) / max(float(finished[b] - finished[a]), 1e-6)
    span = (last_finished - first_created).total_seconds() if last_finished else None
    by_call = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    # Only while the worker had work for every slot and more (twice the in-flight limit of jobs
    # open): at the start jobs arrive no faster than the API, the relay and Kafka bring them.
    busy = [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(calls)
            if min(a[2], b[2]) >= 2 * in_flight]  # fmt: skip
    busy_s = sum(dt for dt, _ in busy)
    busy_use = utilisation(sum(x for _, x in busy), in_flight, busy_s)
    stats = await stack.sim_stats()
    applied = {
        k: v
        for k, v in stats["applied_cancellations"]["antreanrs"].items()
        if k.startswith(f"BK{tag}-")
    }
    return {
        "cancels": n,
        "cancel_statuses": statuses,
        "cancels_retried_after_503": retried[0],
        "synced": synced,
        "lost": cancels_done - synced,
        "bpjs_applied": len(applied),
        "bpjs_duplicated": sum(1 for v in applied.values() if v > 1),
        "syncs_per_s_steady": round(steady, 1),
        "syncs_per_s_overall": round(synced / span, 1) if span else 0,
        "seconds_first_to_last_job_recorded": round(
            (last_created - first_created).total_seconds(), 2
        ),
        "seconds_first_job_to_last_synced": round(span, 2) if span else None,
        "seconds_first_cancel_to_all_synced": round(series[-1][0], 2),
        "bpjs_call_seconds": by_call,
        # The phase: from the first job recorded to the last synced.
        "slot_utilisation": utilisation(sum(by_call.values()), in_flight, span or 0.0),
        "slot_utilisation_backlogged": busy_use,
        "seconds_backlogged": round(busy_s, 2),
        "attempts_histogram": hist,
        "series": series,
        "jobs_series": jobs,
        "call_seconds_series": calls,
    }


async def run(quick: bool) -> list[Row]:
    n = int(os.environ.get("BENCH_BPJS_N", "400" if quick else "2000"))
    in_flight = int(os.environ.get("BENCH_SYNC_MAX_IN_FLIGHT", "32"))
    ideal = in_flight / (LATENCY_MS / 1000)
    worker_env = {
        "SYNC_MAX_IN_FLIGHT": str(in_flight),
        # The ideal this benchmark compares with is in-flight / latency; the default rate limit
        # would cap below it, so the limiter is set out of the way.
        "SYNC_RATE_PER_S": "1000",
        "SYNC_BACKOFF_BASE_S": "0.2",
        "SYNC_MAX_INTERVAL_S": "1",
    }
    stack = await Stack("bpjs").create()
    started = now_iso()
    try:
        stack.start_sim()
        await stack.sim_fault(route=ROUTE, mode="latency", latency_ms=LATENCY_MS)
        stack.start_api()
        stack.start_worker(**worker_env)
        await asyncio.sleep(3)  # faust joins its group
        clean = await phase(stack, n, "c", limit_s=120, in_flight=in_flight)
        log(
            f"bpjs_throughput clean: {clean['syncs_per_s_steady']}/s, slot utilisation"
            f" {clean['slot_utilisation']} (backlogged {clean['slot_utilisation_backlogged']}),"
            f" lost {clean['lost']}"
        )
        # 10 % of calls fail with 502 after the same latency (first matching rule wins).
        async with http_client(1) as c:
            await c.delete(f"{stack.sim_url}/_sim/faults")
        await stack.sim_fault(route=ROUTE, mode="http_502", probability=0.1, latency_ms=LATENCY_MS)
        await stack.sim_fault(route=ROUTE, mode="latency", latency_ms=LATENCY_MS)
        faulty = await phase(stack, n, "f", limit_s=180, in_flight=in_flight)
        log(f"bpjs_throughput 502s: {faulty['syncs_per_s_steady']}/s, lost {faulty['lost']}")
        usage = stack.usage(2 * n)
    finally:
        await stack.destroy()
    ratio = round(clean["syncs_per_s_steady"] / ideal, 3)
    fig, (a1, a2) = figure(quick, "bpjs_throughput", title=f"bpjs_throughput ({n} per phase)")
    for label, ph in (("clean", clean), ("10% 502", faulty)):
        a1.plot([t for t, _ in ph["series"]], [s for _, s in ph["series"]], label=label)
    a1.plot([0, n / ideal], [0, n], "k--", label=f"ideal {ideal:.0f}/s")
    a1.set_xlabel("seconds since first cancel")
    a1.set_ylabel("synced")
    a1.legend()
    keys = sorted(set(clean["attempts_histogram"]) | set(faulty["attempts_histogram"]))
    a2.bar([k - 0.2 for k in keys], [clean["attempts_histogram"].get(k, 0) for k in keys], 0.4,
           label="clean")  # fmt: skip
    a2.bar([k + 0.2 for k in keys], [faulty["attempts_histogram"].get(k, 0) for k in keys], 0.4,
           label="10% 502")  # fmt: skip
    a2.set_yscale("log")
    a2.set_xlabel("attempts per cancellation")
    a2.legend()
    save_figure(fig, quick, "bpjs_throughput")
    write_result(
        "bpjs_throughput",
        quick,
        {
            "inputs": {"cancellations_per_phase": n, "latency_ms": LATENCY_MS,
                       "worker_env": worker_env},
            "started": started,
            "finished": now_iso(),
            "ideal_syncs_per_s": ideal,
            "clean_over_ideal": ratio,
            "clean": clean,
            "with_502": faulty,
            "services": usage,
        },
    )  # fmt: skip
    ok_f = faulty["lost"] == 0 and faulty["synced"] == n and faulty["bpjs_duplicated"] == 0
    return [
        Row("bpjs_throughput", "ideal (in-flight / latency)", f"{ideal:.0f}/s"),
        Row("bpjs_throughput", "syncs/s steady, clean", f"{clean['syncs_per_s_steady']}"),
        Row("bpjs_throughput", "clean / ideal", f"{ratio:.2f}"),
        Row(
            "bpjs_throughput",
            "clean: slot utilisation while backlogged; whole phase",
            f"{clean['slot_utilisation_backlogged']:.2f}; {clean['slot_utilisation']:.2f}",
            ">= 0.9",
            clean["slot_utilisation_backlogged"] >= 0.9,
        ),
        Row(
            "bpjs_throughput",
            "10% 502s: synced / lost / duplicated",
            f"{faulty['synced']}/{n} / {faulty['lost']} / {faulty['bpjs_duplicated']}",
            "all / 0 / 0",
            ok_f,
        ),
        Row(
            "bpjs_throughput",
            "10% 502s: syncs/s steady; slot utilisation while backlogged",
            f"{faulty['syncs_per_s_steady']}; {faulty['slot_utilisation_backlogged']:.2f}",
        ),
        Row(
            "bpjs_throughput",
            "worker RSS MB; CPU s per 1,000 syncs",
            f"{usage['worker']['rss_mb']}; {usage['worker']['cpu_s_per_1000_cancels']}",
        ),
    ]
