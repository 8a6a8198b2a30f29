"""saas_shape: the whole stack serving many clinics: 1,000 clinics of 2 rooms, 5 staff screens
each subscribed to its own clinic and room; cancels spread over clinics by a Zipf law, 20 % BPJS.
Per rate: delivery to each subscribed screen, HTTP, BPJS synced, CPU per process per 1,000."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bench.common import (
    ADMIN_DSN,
    REPO,
    STAFF,
    Row,
    busy_share,
    cdf,
    cpu_s,
    figure,
    log,
    machine_jiffies,
    now_iso,
    percentiles,
    results_dir,
    save_figure,
    self_cpu_s,
    token,
    write_result,
)
from bench.stack import Stack, cancel, http_client
from bench.wsclient import Fleet

ROOMS = ("POLI-UMUM", "POLI-GIGI")
SCREENS = 5  # per clinic; screen j watches room j % 2 (3 screens on the first room, 2 on the other)
ZIPF_S = 1.1
FLOOR_RATE = 2


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


class Infra:
    """CPU of this run's PostgreSQL backends, the server's background processes and the broker
    (shared with the other users of the machine: their share is included)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.kafka_pid = next(
            (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
             b"kafka.Kafka" in _read(p / "cmdline") and b"/work/main/.data/kafka/" in
             _read(p / "cmdline")), None,
        )  # fmt: skip

    async def snapshot(self) -> dict[str, dict[int, float]]:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            rows = await conn.fetch("select pid, datname, backend_type from pg_stat_activity")
        finally:
            await conn.close()
        mine = [r["pid"] for r in rows if r["datname"] == self.database]
        bg = [r["pid"] for r in rows if r["datname"] is None]
        out = {"postgres_backends": {p: cpu_s(p) for p in mine},
               "postgres_background": {p: cpu_s(p) for p in bg}}  # fmt: skip
        if self.kafka_pid:
            out["kafka"] = {self.kafka_pid: cpu_s(self.kafka_pid)}
        return out

    @staticmethod
    def diff(a: dict[str, dict[int, float]], b: dict[str, dict[int, float]]) -> dict[str, float]:
        return {k: round(sum(v - a.get(k, {}).get(p, 0.0) for p, v in b[k].items()), 2) for k in b}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


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
    fleet_pids = [p.pid for p, _ in fleet.children]
    cpu0, svc0, m0 = self_cpu_s(), stack.cpu_snapshot(), machine_jiffies()
    ws0, inf0 = sum(cpu_s(p) for p in fleet_pids), await infra.snapshot()
    spies = [
        await asyncio.create_subprocess_exec(
            str(REPO / ".venv/bin/py-spy"), "record", "--nonblocking", "-o",
            str(results_dir(False) / f"saas_shape-{name}-{rate}.svg"),
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

        await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))
        late = max(sent.values()) - t0 - (n - 1) / rate
    busy = busy_share(m0, machine_jiffies())
    expected = {q: watchers[(c, r)] for q, (c, r, _) in zip(ids, cancels, strict=True)}
    await fleet.settle(before + sum(expected.values()), limit_s=60)
    bpjs_ids = [q for q, (_, _, b) in zip(ids, cancels, strict=True) if b]
    synced_at = await wait_synced(stack.dsn, bpjs_ids, limit_s=60)
    svc = {k: round(v - svc0[k], 2) for k, v in stack.cpu_snapshot().items()}
    cpu = {**svc, **Infra.diff(inf0, await infra.snapshot()),
           "ws_clients": round(sum(cpu_s(p) for p in fleet_pids) - ws0, 2),
           "http_generator": round(self_cpu_s() - cpu0, 2)}  # fmt: skip
    for spy in spies:
        await asyncio.wait_for(spy.wait(), 60)
    return {
        "rate": rate, "cancels": n, "statuses": statuses,
        "errors": sum(c for s, c in statuses.items() if s != 200),
        "generator_behind_s": round(late, 3), "machine_cpu_busy_share": busy,
        "cpu_s": cpu, "cpu_s_per_1000_cancels": {k: round(v * 1000 / n, 3) for k, v in cpu.items()},
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


def figures(p: dict[str, Any], arrivals: dict[str, dict[int, list[float]]]) -> dict[str, Any]:
    """Delivery to each subscribed screen (every pair) and to all of a cancel's screens."""
    pairs: list[float] = []
    every: list[float] = []
    wrong = complete = 0
    for qid, t in p["_sent"].items():
        times = arrivals["queue.cancelled"].get(qid, [])
        want = p["_expected"][qid]
        pairs.extend(x - t for x in times)
        wrong += max(0, len(times) - want)
        if len(times) >= want:
            complete += 1
            every.append(max(times) - t)
    ws = [min(arrivals["bpjs.synced"][q]) - p["_sent"][q]
          for q in p["_bpjs"] if q in arrivals["bpjs.synced"]]  # fmt: skip
    db = [t - p["_wall"][q] for q, t in p["_synced_at"].items()]
    return {
        "to_each_screen_ms": percentiles(pairs),
        "to_every_screen_ms": percentiles(every),
        "cancels_reaching_every_screen": complete,
        "deliveries_expected": sum(p["_expected"].values()),
        "deliveries_received": len(pairs),
        "deliveries_to_unsubscribed_screens": wrong,
        "http_ms": percentiles(p["_http"]),
        "bpjs_synced_ws_ms": percentiles(ws),
        "bpjs_synced_db_ms": percentiles(db),
        "bpjs_synced_count": f"{len(db)}/{len(p['_bpjs'])}",
        "_every": every,
    }


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
        stack.start_sim()
        stack.start_api()
        stack.start_worker(SYNC_RATE_PER_S="1000")
        stack.start_notifier()
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


def report(
    quick: bool,
    phases: list[dict[str, Any]],
    usage: dict[str, Any],
    got: dict[str, Any],
    connected: int,
    sessions: int,
    clinics: int,
    seconds: float,
    started: str,
) -> list[Row]:
    floor, rated = phases[0], phases[1:]
    floor_p50 = floor["to_every_screen_ms"].get("p50") or 0.0
    fig, (a1, a2) = figure(quick, "saas_shape", title=f"saas_shape ({clinics} clinics, "
                           f"{connected} screens, Zipf s={ZIPF_S})")  # fmt: skip
    for p in phases:
        cdf(a1, [x * 1000 for x in p["_every"]], f"{p['rate']}/s")
    a1.axvline(100, color="r", ls=":", label="100 ms")
    a1.set_xscale("log")
    a1.set_xlabel("ms, cancel sent to all of its subscribed screens")
    a1.legend(fontsize=8)
    procs = sorted({k for p in rated for k in p["cpu_s_per_1000_cancels"]})
    for k in procs:
        a2.plot([p["rate"] for p in rated], [p["cpu_s_per_1000_cancels"][k] for p in rated],
                marker="o", label=k)  # fmt: skip
    a2.set_xlabel("cancels/s")
    a2.set_ylabel("CPU s per 1,000 cancels")
    a2.grid(True, alpha=0.3)
    a2.legend(fontsize=7)
    save_figure(fig, quick, "saas_shape")
    for p in phases:
        for k in [k for k in p if k.startswith("_")]:
            p.pop(k)
    write_result(
        "saas_shape",
        quick,
        {
            "inputs": {
                "clinics": clinics,
                "rooms_per_clinic": len(ROOMS),
                "screens_per_clinic": SCREENS,
                "sessions": sessions,
                "connected": connected,
                "zipf_s": ZIPF_S,
                "bpjs_share": 0.2,
                "seconds_per_rate": seconds,
                "floor_rate": FLOOR_RATE,
            },
            "started": started,
            "finished": now_iso(),
            "phases": phases,
            "services": usage,
            "ws_clients": {
                k: got[k] for k in ("connected", "failed", "duplicates", "closed_by_server")
            },
        },
    )
    b, f = "saas_shape", floor["to_every_screen_ms"]
    rows = [Row(b, f"floor ({FLOOR_RATE}/s, {connected} screens): to every subscribed screen "
                "p50 / p99 (ms)", f"{f.get('p50')} / {f.get('p99')}")]  # fmt: skip
    for p in rated:
        e, each, h, s = (
            p["to_every_screen_ms"],
            p["to_each_screen_ms"],
            p["http_ms"],
            p["bpjs_synced_ws_ms"],
        )
        done = p["cancels_reaching_every_screen"] == p["cancels"]
        target, ok = "", None
        if p["rate"] == 50:
            limit = min(100.0, 10 * floor_p50)
            target = f"p99 <= {limit:g} (100, 10 x floor p50)"
            ok = e.get("p99") is not None and e["p99"] <= limit and done
        rows.append(
            Row(
                b,
                f"{p['rate']}/s: to each screen p50 / p99; to every screen p50 / p99 (ms)",
                f"{each.get('p50')} / {each.get('p99')}; {e.get('p50')} / {e.get('p99')}",
                target,
                ok,
            )
        )
        rows.append(Row(b, f"{p['rate']}/s: HTTP p99 (ms); errors (non-200); reached every screen; "
                        "machine busy",
                        f"{h.get('p99')}; {p['errors']}; {p['cancels_reaching_every_screen']}/"
                        f"{p['cancels']}; {round(100 * p['machine_cpu_busy_share'])} %",
                        "no errors" if p["rate"] == 200 else "",
                        (p["errors"] == 0 and done) if p["rate"] == 200 else None))  # fmt: skip
        rows.append(Row(b, f"{p['rate']}/s: to bpjs.synced p50 / p99 (ms)",
                        f"{s.get('p50')} / {s.get('p99')} ({p['bpjs_synced_count']})"))  # fmt: skip
        cpu = p["cpu_s_per_1000_cancels"]
        rows.append(
            Row(
                b,
                f"{p['rate']}/s: CPU s per 1,000 cancels",
                ", ".join(f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])),
            )
        )
    return rows
