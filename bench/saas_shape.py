"""saas_shape: the whole stack serving many clinics: 1,000 clinics of 2 rooms, 5 staff screens
each subscribed to its own clinic and room; cancels spread over clinics by a Zipf law, 20 % BPJS.
Per rate: delivery to each subscribed screen, HTTP, BPJS synced, CPU per process per 1,000."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg
import numpy as np

from bench.common import (
    REPO,
    STAFF,
    Infra,
    Row,
    busy_share,
    cpu_s,
    log,
    machine_jiffies,
    now_iso,
    results_dir,
    self_cpu_s,
    token,
)
from bench.saas_report import FLOOR_RATE, ROOMS, SCREENS, ZIPF_S, figures, report
from bench.stack import Stack, cancel, http_client, refusals
from bench.wsclient import Fleet


def clinic_id(k: int) -> str:
    return f"KLINIK-{k:04d}"


def plan(rng: np.random.Generator, n: int, clinics: int) -> list[tuple[int, str, bool]]:
    """`n` cancels: (clinic index by Zipf rank, room, BPJS ticket?)."""
    w = np.arange(1, clinics + 1, dtype=float) ** -ZIPF_S
    ks = rng.choice(clinics, size=n, p=w / w.sum())
    rooms = rng.integers(0, len(ROOMS), size=n)
    bpjs = rng.random(n) < 0.2
    return [(int(k), ROOMS[int(r)], bool(b)) for k, r, b in zip(ks, rooms, bpjs, strict=True)]


async def seed(dsn: str, cancels: list[tuple[int, str, bool]], seq0: int, tag: str) -> list[int]:
    """One waiting ticket per planned cancel, inserted directly; their ids in plan order."""
    seqs = list(range(seq0, seq0 + len(cancels)))
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq,"
            " ticket_number, patient_mrn, patient_name, payer, bpjs)"
            " select c, r, current_date, g, 'A-' || g, 'RM-' || g, 'Pasien ' || g,"
            " case when b then 'BPJS' else 'UMUM' end,"
            " case when b then jsonb_build_object('booking_code', $5 || g) end"
            " from unnest($1::text[], $2::text[], $3::int[], $4::bool[]) as t(c, r, g, b)"
            " returning id, ticket_seq",
            [clinic_id(k) for k, _, _ in cancels],
            [r for _, r, _ in cancels],
            seqs,
            [b for _, _, b in cancels],
            f"BK{tag}-",
        )
    finally:
        await conn.close()
    by_seq = {int(r["ticket_seq"]): int(r["id"]) for r in rows}
    return [by_seq[s] for s in seqs]


async def phase(
    stack: Stack,
    fleet: Fleet,
    infra: Infra,
    rate: int,
    seconds: float,
    cancels: list[tuple[int, str, bool]],
    ids: list[int],
    watchers: dict[tuple[int, str], int],
    tokens: dict[int, str],
    profile: list[str],
    before: int,
) -> dict[str, Any]:
    n = len(ids)
    sent: dict[int, float] = {}
    wall: dict[int, float] = {}
    http: list[float] = []
    statuses: dict[int, int] = {}
    accepted: set[int] = set()  # a refused (503) cancel changes nothing and is never delivered
    fleet_pids = [p.pid for p, _ in fleet.children]
    cpu0, svc0, m0, w0 = self_cpu_s(), stack.cpu_snapshot(), machine_jiffies(), time.monotonic()
    ws0, inf0 = sum(cpu_s(p) for p in fleet_pids), await infra.snapshot()
    refused0 = await refusals(stack.api_url)
    refused_at: list[float] = []  # when each refused cancel was sent (s into the phase)
    raw = os.environ.get("BENCH_PYSPY_FORMAT") == "raw"  # collapsed stacks instead of an SVG
    spies = [
        await asyncio.create_subprocess_exec(
            str(REPO / ".venv/bin/py-spy"), "record", "--nonblocking", "-o",
            str(results_dir(False) / f"saas_shape-{name}-{rate}.{'txt' if raw else 'svg'}"),
            *(["--format", "raw"] if raw else []),
            "--pid", str(stack.services[name].pid), "--duration", str(int(seconds)),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        for name in profile
    ]  # fmt: skip
    async with http_client(256) as client:
        t0 = time.monotonic() + 0.2

        async def one(i: int, qid: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            sent[qid], wall[qid] = time.monotonic(), time.time()
            status, secs = await cancel(client, stack.api_url, qid, tokens[cancels[i][0]])
            statuses[status] = statuses.get(status, 0) + 1
            http.append(secs)
            if status == 200:
                accepted.add(qid)
            elif status == 503:
                refused_at.append(round(sent[qid] - t0, 3))

        await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))
        late = max(sent.values()) - t0 - (n - 1) / rate
    busy = busy_share(m0, machine_jiffies())
    expected = {q: watchers[(c, r)] for q, (c, r, _) in zip(ids, cancels, strict=True)
                if q in accepted}  # fmt: skip
    await fleet.settle(before + sum(expected.values()), limit_s=60)
    bpjs_ids = [q for q, (_, _, b) in zip(ids, cancels, strict=True) if b and q in accepted]
    synced_at = await wait_synced(stack.dsn, bpjs_ids, limit_s=60)
    svc = {k: round(v - svc0[k], 2) for k, v in stack.cpu_snapshot().items()}
    refused = await refusals(stack.api_url)
    by_reason = {k: v - refused0.get(k, 0.0) for k, v in refused.items()}
    cpu = {**svc, **Infra.diff(inf0, await infra.snapshot()),
           "ws_clients": round(sum(cpu_s(p) for p in fleet_pids) - ws0, 2),
           "http_generator": round(self_cpu_s() - cpu0, 2)}  # fmt: skip
    window = time.monotonic() - w0  # sending, the tail's delivery and the BPJS syncs
    for spy in spies:
        await asyncio.wait_for(spy.wait(), 60)
    return {
        "rate": rate, "cancels": n, "statuses": statuses,
        "errors": sum(c for s, c in statuses.items() if s != 200),
        "refused_by_reason": {k: int(v) for k, v in by_reason.items() if v},
        "refused_sent_at_s": sorted(refused_at),
        "generator_behind_s": round(late, 3), "machine_cpu_busy_share": busy,
        "cpu_s": cpu, "cpu_window_s": round(window, 1),
        "cpu_cores": {k: round(v / window, 3) for k, v in cpu.items()},
        "cpu_s_per_1000_cancels": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
        "_sent": sent, "_wall": wall, "_http": http, "_expected": expected,
        "_bpjs": bpjs_ids, "_synced_at": synced_at,
    }  # fmt: skip


async def wait_synced(dsn: str, ids: list[int], limit_s: float) -> dict[int, float]:
    """finished_at (epoch s) of the synced jobs among `ids`, once all are synced or at `limit_s`."""
    conn = await asyncpg.connect(dsn)
    try:
        end = time.monotonic() + limit_s
        while True:
            rows = await conn.fetch(
                "select queue_id, extract(epoch from finished_at)::float8 as t from bpjs_sync_job"
                " where queue_id = any($1::bigint[]) and status = 'synced'",
                ids,
            )
            if len(rows) >= len(ids) or time.monotonic() > end:
                return {int(r["queue_id"]): float(r["t"]) for r in rows}
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def run(quick: bool) -> list[Row]:
    clinics = int(os.environ.get("BENCH_SAAS_CLINICS", "200" if quick else "1000"))
    rates = [int(r) for r in os.environ.get("BENCH_SAAS_RATES", "20,50,100,200").split(",")]
    seconds = float(os.environ.get("BENCH_SAAS_SECONDS", "10" if quick else "20"))
    floor_s = 5.0 if quick else 15.0
    # Service names (comma-separated) to record with py-spy at every rate but the floor.
    profile = [n for n in os.environ.get("BENCH_PYSPY", "").split(",") if n]
    rng = np.random.default_rng(16)
    sessions = clinics * SCREENS
    screens = [(k, ROOMS[j % 2], f"u-{k}-{j}") for k in range(clinics) for j in range(SCREENS)]
    tok = {u: token(u, STAFF, clinic_id(k)) for k, _, u in screens}
    watchers: dict[tuple[int, str], int] = {}
    for k, r, _ in screens:
        watchers[(k, r)] = watchers.get((k, r), 0) + 1
    cancellers = {k: tok[f"u-{k}-0"] for k in range(clinics)}  # screen 0 hears its bpjs.synced
    stack = await Stack("saas").create()
    infra = Infra(stack.database)
    started, phases = now_iso(), []
    try:
        stack.start_pipeline()
        fleet = Fleet(stack.ws_url, sessions, 2, [tok[u] for *_, u in screens],
                      rooms=[r for _, r, _ in screens])  # fmt: skip
        seq, before = 1, 0
        try:
            t = time.monotonic()
            connected = await fleet.start()
            log(f"saas: {connected}/{sessions} sessions in {time.monotonic() - t:.1f} s")
            await asyncio.sleep(2.0)  # past the resume window; subscriptions are in
            for rate, secs in [(FLOOR_RATE, floor_s)] + [(r, seconds) for r in rates]:
                cancels = plan(rng, int(rate * secs), clinics)
                ids = await seed(stack.dsn, cancels, seq, f"s{rate}")
                seq += len(ids)
                p = await phase(
                    stack,
                    fleet,
                    infra,
                    rate,
                    secs,
                    cancels,
                    ids,
                    watchers,
                    cancellers,
                    profile if rate != FLOOR_RATE else [],
                    before,
                )
                before += sum(p["_expected"].values())
                phases.append(p)
                log(f"saas {rate}/s: errors {p['errors']}, busy {p['machine_cpu_busy_share']}")
            got = await fleet.stop()
        finally:
            fleet.kill()
        usage = stack.usage(sum(p["cancels"] for p in phases))
    finally:
        await stack.destroy()
    for p in phases:
        p.update(figures(p, got["arrivals"]))
    return report(quick, phases, usage, got, connected, sessions, clinics, seconds, started)
