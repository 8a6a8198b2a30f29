"""e2e_latency: open loop at fixed rates (100 and 500 cancels/s) against the whole stack with W
staff sessions of the same clinic and room connected to the notifier. Per cancel: HTTP response
time and the time from request sent to `queue.cancelled` received by every session; for BPJS
tickets, time to `bpjs.synced` at the cancelling user's session. Anchor: the floor of the parts
in the same run (a bare aiokafka produce-to-consume round trip on the same broker plus one
PostgreSQL commit)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg

from bench.common import (
    Row,
    busy_share,
    cdf,
    figure,
    log,
    machine_jiffies,
    now_iso,
    percentiles,
    save_figure,
    self_cpu_s,
    token,
    write_result,
)
from bench.stack import (
    Stack,
    cancel,
    http_client,
    seed_tickets,
)
from bench.ws_fanout import raw_anchor
from bench.wsclient import Fleet
from shared.kafka import TopicSpec, ensure_topics, make_consumer, make_producer


async def floor(stack: Stack, samples: int) -> dict[str, Any]:
    """Kafka produce->consume round trip (the relay's producer and the notifier's consumer
    settings) and one small PostgreSQL commit, measured one at a time."""
    topic = stack.prefix + "floor"
    await ensure_topics(stack.kafka, [topic], TopicSpec(partitions=1))
    consumer = make_consumer(stack.kafka, topic, group_id=None, auto_offset_reset="latest",
                             fetch_max_wait_ms=10)  # fmt: skip
    producer = make_producer(stack.kafka)
    await consumer.start()
    await producer.start()
    await consumer.seek_to_end()
    rtt = []
    try:
        for i in range(samples):
            t = time.monotonic()
            await producer.send_and_wait(topic, str(i).encode(), key=b"k")
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                if any(r.value == str(i).encode() for recs in batch.values() for r in recs):
                    break
            rtt.append(time.monotonic() - t)
    finally:
        await producer.stop()
        await consumer.stop()
    conn = await asyncpg.connect(stack.dsn)
    commit = []
    try:
        await conn.execute("create table bench_floor (id bigserial primary key, note text)")
        for _ in range(samples):
            t = time.monotonic()
            async with conn.transaction():
                await conn.execute("insert into bench_floor (note) values ('x')")
            commit.append(time.monotonic() - t)
    finally:
        await conn.close()
    k, c = percentiles(rtt), percentiles(commit)
    return {
        "kafka_rtt_ms": k,
        "pg_commit_ms": c,
        "floor_p50_ms": round(k["p50"] + c["p50"], 2),
        "floor_p99_ms": round(k["p99"] + c["p99"], 2),
    }


async def phase(stack: Stack, rate: int, seconds: float, sessions: int, procs: int) -> dict:
    n = int(rate * seconds)
    ids = await seed_tickets(stack.dsn, n, bpjs_every=5, tag=f"e{rate}")
    canceller = token("u-bench")
    viewers = [token("u-viewer", ["cancel antrean"])]
    fleet = Fleet(stack.ws_url, sessions, procs, viewers, first=canceller)
    try:
        connected = await fleet.start()
        await asyncio.sleep(
            1.5
        )  # the notifier holds live messages 1 s after `ready` (resume window)
        sent: dict[int, float] = {}
        http: dict[int, float] = {}
        statuses: dict[int, int] = {}
        cpu0, svc0, m0 = self_cpu_s(), stack.cpu_snapshot(), machine_jiffies()
        async with http_client(256) as client:
            t0 = time.monotonic() + 0.2

            async def one(i: int, qid: int) -> None:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                sent[qid] = time.monotonic()
                status, secs = await cancel(client, stack.api_url, qid, canceller)
                statuses[status] = statuses.get(status, 0) + 1
                http[qid] = secs

            await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))
            late = max(sent.values()) - t0 - (n - 1) / rate  # how far the generator fell behind
        busy = busy_share(m0, machine_jiffies())  # while cancels were being sent
        await fleet.settle(n * connected, limit_s=60)  # let the tail arrive (or stall)
        svc = {k: round(v - svc0[k], 2) for k, v in stack.cpu_snapshot().items()}
        gen_cpu = self_cpu_s() - cpu0
        got = await fleet.stop()
    finally:
        fleet.kill()
    arrivals = got["arrivals"]
    e2e, pairs, complete, complete_at = [], 0, 0, []
    first, spread = [], []  # where the time goes: reaching the first session, then the rest
    for qid, t in sent.items():
        times = arrivals["queue.cancelled"].get(qid, [])
        pairs += len(times)
        if times:
            first.append(min(times) - t)
        if len(times) >= connected:
            complete += 1
            e2e.append(max(times) - t)
            spread.append(max(times) - min(times))
            complete_at.append(max(times) - t0)
    bpjs_ids = set(ids[4::5])
    synced = [min(arrivals["bpjs.synced"][q]) - sent[q]
              for q in bpjs_ids if q in arrivals["bpjs.synced"]]  # fmt: skip
    errors = sum(c for s, c in statuses.items() if s != 200)
    return {
        "rate": rate,
        "cancels": n,
        "sessions": sessions,
        "connected": connected,
        "statuses": statuses,
        "errors": errors,
        "generator_behind_s": round(late, 3),
        "http_ms": percentiles(http.values()),
        "e2e_all_sessions_ms": percentiles(e2e),
        "e2e_first_session_ms": percentiles(first),
        "fanout_spread_ms": percentiles(spread),  # from the first session to the last
        "cancels_reaching_every_session": complete,
        "pairs_expected": n * connected,
        "pairs_received": pairs,
        "bpjs_synced_ms": percentiles(synced),
        "bpjs_synced_count": f"{len(synced)}/{len(bpjs_ids)}",
        "session_closes_by_server": got["closed_by_server"],
        "duplicates": got["duplicates"],
        "machine_cpu_busy_share": busy,
        "cpu_s": {
            "services": svc,
            "http_generator": round(gen_cpu, 2),
            "ws_clients": round(got["cpu_s"], 2),
        },
        "_e2e": e2e,
        "_http": list(http.values()),
        "_complete_at": complete_at,  # seconds after the first send: when each reached everyone
    }


async def run(quick: bool) -> list[Row]:
    seconds = 5.0 if quick else 30.0
    sessions = int(os.environ.get("BENCH_E2E_SESSIONS", "100" if quick else "500"))
    procs = 1 if sessions <= 200 else 2
    stack = await Stack("e2e").create()
    started = now_iso()
    phases = []
    try:
        stack.start_pipeline()
        await asyncio.sleep(3)
        base = await floor(stack, 50 if quick else 200)
        log(f"e2e floor: p50 {base['floor_p50_ms']} ms, p99 {base['floor_p99_ms']} ms")
        for rate in (100, 500):
            phases.append(await phase(stack, rate, seconds, sessions, procs))
            p = phases[-1]
            done = p["cancels_reaching_every_session"]
            log(f"e2e {rate}/s: {p['e2e_all_sessions_ms']} complete {done}/{p['cancels']}")
        usage = stack.usage(sum(p["cancels"] for p in phases))
    finally:
        await stack.destroy()
    # The fan-out floor at the first rate: a bare websockets broadcast loop (ws_fanout's anchor)
    # sending the same message rate to the same number of sessions, with nothing else running.
    raw_s = 3.0 if quick else 10.0
    raw = await raw_anchor(sessions, procs, int(100 * raw_s), raw_s)
    raw.pop("_lat")
    log(f"e2e fan-out floor, 100/s to {sessions} sessions: {raw['latency_ms']}")
    fig, (a1, a2) = figure(quick, "e2e_latency", title=f"e2e_latency ({sessions} sessions)")
    for p in phases:
        cdf(a1, [x * 1000 for x in p["_e2e"]], f"{p['rate']}/s to every session")
        cdf(a2, [x * 1000 for x in p["_http"]], f"{p['rate']}/s HTTP")
    for ax in (a1, a2):
        ax.axvline(base["floor_p50_ms"], color="k", ls="--", label="floor p50")
        ax.set_xscale("log")
        ax.set_xlabel("ms")
        ax.legend(fontsize=8)
    save_figure(fig, quick, "e2e_latency")
    for p in phases:
        p.pop("_e2e")
        p.pop("_http")
        p.pop("_complete_at")
    write_result(
        "e2e_latency",
        quick,
        {"inputs": {"seconds_per_rate": seconds, "sessions": sessions, "client_procs": procs,
                    "bpjs_share": 0.2},
         "started": started, "finished": now_iso(), "floor": base, "phases": phases,
         "fanout_floor_100_per_s": raw,
         "services": usage},
    )  # fmt: skip
    r = raw["latency_ms"]
    rows = [Row("e2e_latency", "floor: Kafka RTT + PG commit, p50 / p99 (ms)",
                f"{base['floor_p50_ms']} / {base['floor_p99_ms']}"),
            Row("e2e_latency",
                f"fan-out floor: bare broadcast loop, 100 msg/s to {sessions} sessions, "
                "p50 / p99 (ms); lost",
                f"{r.get('p50')} / {r.get('p99')}; {raw['lost']}")]  # fmt: skip
    for p, limit in zip(phases, (100, 250), strict=True):
        e, h = p["e2e_all_sessions_ms"], p["http_ms"]
        p99 = e.get("p99")
        complete = p["cancels_reaching_every_session"] == p["cancels"]
        ok = p99 is not None and p99 <= limit and complete and p["errors"] == 0
        rows.append(Row(
            "e2e_latency",
            f"{p['rate']}/s, {p['connected']} sessions: to every session p50/p95/p99/max (ms)",
            f"{e.get('p50')} / {e.get('p95')} / {p99} / {e.get('max')}",
            f"p99 <= {limit}" + (", no errors" if limit == 250 else ""),
            ok,
        ))  # fmt: skip
        rows.append(Row(
            "e2e_latency",
            f"{p['rate']}/s: HTTP p50/p99 (ms); errors; reached every session; machine CPU busy",
            f"{h.get('p50')} / {h.get('p99')}; {p['errors']}; "
            f"{p['cancels_reaching_every_session']}/{p['cancels']}; "
            f"{round(100 * p['machine_cpu_busy_share'])} %",
        ))  # fmt: skip
        f, sp = p.get("e2e_first_session_ms", {}), p.get("fanout_spread_ms", {})
        rows.append(Row(
            "e2e_latency",
            f"{p['rate']}/s: to the first session p50/p99; first to last session p50/p99 (ms)",
            f"{f.get('p50')} / {f.get('p99')}; {sp.get('p50')} / {sp.get('p99')}",
        ))  # fmt: skip
        b = p["bpjs_synced_ms"]
        rows.append(Row("e2e_latency", f"{p['rate']}/s: to bpjs.synced p50/p99 (ms)",
                        f"{b.get('p50')} / {b.get('p99')} ({p['bpjs_synced_count']})"))  # fmt: skip
    return rows
