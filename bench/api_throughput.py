"""api_throughput: closed loop, as many clients as one API process admits at once (2 x its pool)
cancelling distinct waiting tickets, against pgbench running the same SQL as the API's cancel
(ticket read, then one statement: guarded update + audit insert + outbox insert) with the same
client count, side by side in the same run (rounds alternate API and pgbench). Then, per
round, twice as many GET /healthz by the same clients: what any request costs the API (HTTP
server, middleware, routing) before a cancel's own work."""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    CLINIC,
    DB_POOL_MAX,
    TICKS,
    Infra,
    Row,
    busy_share,
    cdf,
    figure,
    log,
    machine_jiffies,
    median,
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
    refusals,
    refused_between,
    seed_tickets,
)
from services.cancel_api.config import IN_FLIGHT_PER_CONNECTION
from shared.outbox import NOTIFY_AFTER_COMMIT

PGBENCH = os.environ.get("PGBENCH", "/usr/lib/postgresql/15/bin/pgbench")
PGBENCH_OPTIONS = " ".join(f"-c {k}={v}" for k, v in NOTIFY_AFTER_COMMIT.items())
COLUMNS = (
    "id, clinic_id, room_id, service_date, ticket_number, patient_mrn, patient_name, payer, bpjs,"
    " status, created_at, cancelled_at, cancelled_by_id, cancelled_by_name, reason_code,"
    " reason_text, bpjs_sync"
)
# The payload has the size of a real QueueCancelled event (about 600 bytes of JSON).
PAYLOAD = '{"specversion":"1.0","type":"QueueCancelled","source":"/antrean/cancel-api",' + (
    '"data":{"clinic_id":"KLINIK-BENCH","room_id":"POLI-UMUM","payer":"UMUM","pad":"'
    + "x" * 420
    + '"}}'
)


def pgbench_script(topic: str) -> str:
    """The cancel of services/cancel_api (`service.cancel_ticket` without an Idempotency-Key,
    repository `read_ticket_for_cancel` + `cancel_with_audit_and_event`), statement for
    statement: a read of the ticket, then one statement that cancels it only if it is still
    waiting and unchanged and inserts the audit and outbox rows from the updated row."""
    return f"""SELECT {COLUMNS}, updated_at, now() AS tx_now FROM queue_ticket WHERE id = (SELECT nextval('bench_ids')) AND clinic_id IS NOT DISTINCT FROM '{CLINIC}' \\gset
WITH upd AS (UPDATE queue_ticket SET status = 'cancelled', cancelled_at = :tx_now::timestamptz, updated_at = :tx_now::timestamptz, cancelled_by_id = 'u-bench', cancelled_by_name = 'Staff u-bench', reason_code = 'other', reason_text = NULL, bpjs_sync = NULL WHERE id = :id AND clinic_id IS NOT DISTINCT FROM '{CLINIC}' AND status IS NOT DISTINCT FROM 'waiting' AND room_id IS NOT DISTINCT FROM :room_id::text AND ticket_number IS NOT DISTINCT FROM :ticket_number::text AND payer IS NOT DISTINCT FROM :payer::text AND bpjs IS NOT DISTINCT FROM NULL::jsonb AND updated_at IS NOT DISTINCT FROM :updated_at::timestamptz RETURNING {COLUMNS}), audit AS (INSERT INTO queue_audit (queue_id, clinic_id, action, actor_id, actor_name, at, from_status, to_status, reason_code, reason_text, note, request_id) SELECT id, '{CLINIC}', 'cancel', 'u-bench', 'Staff u-bench', :tx_now::timestamptz, 'waiting', 'cancelled', 'other', NULL, NULL, md5(random()::text) FROM upd), event AS (INSERT INTO outbox (event_id, topic, kafka_key, event_type, payload) SELECT gen_random_uuid(), '{topic}', :id, 'QueueCancelled', convert_to('{PAYLOAD}', 'UTF8') FROM upd) SELECT {COLUMNS} FROM upd;
"""  # noqa: E501, S608 - constants of this module and a generated topic name


def read_pgbench_log(folder: Path) -> list[float]:
    """Per-transaction latencies (s) of `pgbench -l`: client_id tx_no time_us ..."""
    return [
        int(line.split()[2]) / 1e6
        for f in folder.glob("tx*")
        for line in f.read_text().splitlines()
    ]


async def api_round(
    stack: Stack, infra: Infra, n: int, clients: int, keyed: bool = False
) -> dict[str, Any]:
    """`n` cancels by `clients` closed-loop clients; `keyed`: each with its own Idempotency-Key,
    as the staff UI sends them."""
    ids = await seed_tickets(stack.dsn, n)
    tok = token()
    todo = iter(ids)
    lat: list[float] = []
    statuses: dict[int, int] = {}
    async with http_client(clients) as client:

        async def one_client() -> None:
            for qid in todo:
                key = uuid.uuid4().hex if keyed else None
                status, seconds = await cancel(client, stack.api_url, qid, tok, key)
                statuses[status] = statuses.get(status, 0) + 1
                lat.append(seconds)

        reasons0 = await refusals(stack.api_url)
        inf0, m0 = await infra.snapshot(), machine_jiffies()
        cpu0, svc0, t0 = self_cpu_s(), stack.cpu_snapshot(), time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.monotonic() - t0
        client_cpu = self_cpu_s() - cpu0
        m1, inf1 = machine_jiffies(), await infra.snapshot()
    svc = {k: round(v - svc0[k], 2) for k, v in stack.cpu_snapshot().items()}
    # Where the machine's CPU went per cancel: the API, this load generator, the run's
    # PostgreSQL backends and the broker (the relay's produce); the rest is the kernel's,
    # PostgreSQL's background processes and other users of the machine.
    per_cancel = {
        "machine": (m1[0] - m0[0]) / TICKS,
        "api": svc["api"],
        "client": client_cpu,
        **Infra.diff(inf0, inf1),
    }
    reasons = await refusals(stack.api_url)
    errors = sum(c for s, c in statuses.items() if s != 200)
    return {
        "cancels": n,
        "seconds": round(elapsed, 3),
        "cancels_per_s": round(n / elapsed, 1),
        "errors": errors,
        "statuses": statuses,
        # A 503 here is admission control refusing (which bound: the API's counter).
        "refused_by_reason": refused_between(reasons0, reasons),
        "latency_ms": percentiles(lat),
        "latencies_s": lat,
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_share": round(client_cpu / elapsed, 2),
        "service_cpu_s": svc,
        "machine_busy_share": busy_share(m0, m1),
        "cpu_ms_per_cancel": {k: round(v / n * 1000, 3) for k, v in per_cancel.items()},
    }


async def floor_round(stack: Stack, n: int, clients: int) -> dict[str, Any]:
    """`n` GET /healthz by `clients` closed-loop clients: the API's HTTP server, middleware and
    routing with no handler work (the path is exempt from admission control), what any
    request costs the API before the cancel's own work."""
    todo = iter(range(n))
    async with http_client(clients) as client:

        async def one_client() -> None:
            for _ in todo:
                async with client.get(f"{stack.api_url}/healthz") as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"/healthz answered {r.status}")

        svc0, t0 = stack.cpu_snapshot(), time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.monotonic() - t0
    api_s = stack.cpu_snapshot()["api"] - svc0["api"]
    return {
        "requests": n,
        "requests_per_s": round(n / elapsed, 1),
        "api_cpu_ms_per_request": round(api_s / n * 1000, 3),
    }


async def pgbench_round(
    stack: Stack, n: int, clients: int, topic: str, pgoptions: str = PGBENCH_OPTIONS
) -> dict[str, Any]:
    ids = await seed_tickets(stack.dsn, n)
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute("drop sequence if exists bench_ids")
        await conn.execute(f"create sequence bench_ids start with {ids[0]}")
    finally:
        await conn.close()
    with tempfile.TemporaryDirectory(prefix="pgbench-") as tmp:
        script = Path(tmp) / "cancel.sql"
        script.write_text(pgbench_script(topic))
        per_client = n // clients
        m0, children0 = machine_jiffies(), _children_cpu_s()
        cmd = [PGBENCH, "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
               "-t", str(per_client), "-f", str(script), "-l", "--log-prefix", f"{tmp}/tx",
               "-h", "127.0.0.1", "-U", "antrean", stack.database]  # fmt: skip
        started = time.monotonic()
        proc = await asyncio.to_thread(
            subprocess.run,
            cmd,
            capture_output=True,
            text=True,
            # By default as the API's connections: the outbox insert sends no NOTIFY (the API's
            # relay is woken in its process once the cancel has committed).
            env={**os.environ, "PGPASSWORD": "antrean", "PGOPTIONS": pgoptions},
            timeout=600,
        )
        elapsed = time.monotonic() - started
        m1, children1 = machine_jiffies(), _children_cpu_s()
        if proc.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{proc.stdout}\n{proc.stderr}")
        lat = read_pgbench_log(Path(tmp))
    tps = next(
        float(ln.split("=")[1].split()[0])
        for ln in proc.stdout.splitlines()
        if ln.startswith("tps =")
    )
    failed = next(
        (int(ln.split(":")[1].split()[0]) for ln in proc.stdout.splitlines() if "failed" in ln), 0
    )
    # The script's write is guarded: prove it cancelled one ticket and wrote one outbox row per
    # transaction, or pgbench would have timed statements that changed nothing.
    conn = await asyncpg.connect(stack.dsn)
    try:
        cancelled = await conn.fetchval(
            "select count(*) from queue_ticket where id = any($1) and status = 'cancelled'", ids
        )
        events = await conn.fetchval("select count(*) from outbox where topic = $1", topic)
    finally:
        await conn.close()
    if cancelled != per_client * clients or events < cancelled:
        raise RuntimeError(f"pgbench cancelled {cancelled} tickets with {events} events")
    return {
        "transactions": per_client * clients,
        "tickets_cancelled": cancelled,
        "tps": round(tps, 1),
        "wall_s": round(elapsed, 2),
        "failed": failed,
        "latency_ms": percentiles(lat),
        "latencies_s": lat,
        "machine_busy_share": busy_share(m0, m1),
        "cpu_ms_per_transaction": {
            "machine": round((m1[0] - m0[0]) / TICKS / (per_client * clients) * 1000, 3),
            "pgbench": round((children1 - children0) / (per_client * clients) * 1000, 3),
        },
    }


def _children_cpu_s() -> float:
    """CPU of this process's children that have been waited for (pgbench, once it ends)."""
    t = os.times()
    return t.children_user + t.children_system


REPEATS_ITSELF = True  # three rounds of API and pgbench, alternating, in one run


async def run(quick: bool) -> list[Row]:
    n, rounds = (2000, 1) if quick else (10_000, 3)
    pool_max = DB_POOL_MAX
    # More clients than API_MAX_IN_FLIGHT would measure admission control's refusals.
    clients = int(
        os.environ.get("BENCH_API_CLIENTS", str(IN_FLIGHT_PER_CONNECTION * int(pool_max)))
    )
    workers = os.environ.get("BENCH_API_WORKERS", "1")
    stack = await Stack("api").create()
    pg = await Stack("pgb").create()
    started = now_iso()
    try:
        stack.start_api(CANCEL_API_WORKERS=workers, DB_POOL_MAX=pool_max)
        await asyncio.sleep(1.0)
        warm = await seed_tickets(stack.dsn, 200)
        async with http_client(clients) as client:  # warm-up: connections, prepared statements
            await asyncio.gather(*(cancel(client, stack.api_url, q, token()) for q in warm))
        api_runs, keyed_runs, pg_runs, floor_runs = [], [], [], []
        infra = Infra(stack.database)  # the broker process and this run's backends
        for r in range(rounds):
            api_runs.append(await api_round(stack, infra, n, clients))
            log(f"api_throughput round {r + 1}: API {api_runs[-1]['cancels_per_s']}/s")
            keyed_runs.append(await api_round(stack, infra, n, clients, keyed=True))
            log(f"api_throughput round {r + 1}: API keyed {keyed_runs[-1]['cancels_per_s']}/s")
            pg_runs.append(await pgbench_round(pg, n, clients, stack.prefix + "queue-cancelled"))
            log(f"api_throughput round {r + 1}: pgbench {pg_runs[-1]['tps']} tps")
        usage = stack.usage(n * rounds * 2 + len(warm))
        for r in range(rounds):  # after `usage`, whose CPU is per cancel
            floor_runs.append(await floor_round(stack, 2 * n, clients))
            log(f"api_throughput round {r + 1}: /healthz {floor_runs[-1]['requests_per_s']}/s")
    finally:
        await stack.destroy()
        await pg.destroy()
    api_rate = median([x["cancels_per_s"] for x in api_runs])
    keyed_rate = median([x["cancels_per_s"] for x in keyed_runs])

    def cpu_per_1000(runs: list[dict[str, Any]]) -> float:
        return round(median([x["service_cpu_s"]["api"] / x["cancels"] * 1000 for x in runs]), 3)

    pg_rate = median([x["tps"] for x in pg_runs])
    ratio = round(api_rate / pg_rate, 3)
    # Both rates are bounded by the same two cores: at equal machine busy shares, the ratio is
    # the machine's CPU per pgbench transaction over its CPU per API cancel.
    api_cpu = {k: median([x["cpu_ms_per_cancel"][k] for x in api_runs]) for k in
               api_runs[0]["cpu_ms_per_cancel"]}  # fmt: skip
    pg_cpu = {k: median([x["cpu_ms_per_transaction"][k] for x in pg_runs]) for k in
              pg_runs[0]["cpu_ms_per_transaction"]}  # fmt: skip
    cpu_bound = round(pg_cpu["machine"] / api_cpu["machine"], 3)
    floor_ms = median([x["api_cpu_ms_per_request"] for x in floor_runs])
    floor_rate = median([x["requests_per_s"] for x in floor_runs])
    busy_api = median([x["machine_busy_share"] for x in api_runs])
    busy_pg = median([x["machine_busy_share"] for x in pg_runs])
    errors = sum(x["errors"] for x in api_runs + keyed_runs)
    by_reason = sum(
        (Counter(x["refused_by_reason"]) for x in api_runs + keyed_runs), Counter[str]()
    )
    refused = ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items()))
    best = sorted(api_runs, key=lambda x: x["cancels_per_s"])[len(api_runs) // 2]
    fig, (a1, a2) = figure(quick, "api_throughput", title=f"api_throughput ({clients} clients)")
    a1.bar(["API", "pgbench"], [api_rate, pg_rate], color=["tab:blue", "tab:gray"])
    a1.set_ylabel("cancels/s (median of rounds)")
    a1.set_title(f"API/pgbench = {ratio}")
    cdf(a2, [x * 1000 for x in best["latencies_s"]], "API")
    cdf(a2, [x * 1000 for x in pg_runs[len(pg_runs) // 2]["latencies_s"]], "pgbench")
    a2.set_xscale("log")
    a2.set_xlabel("latency (ms)")
    a2.legend()
    save_figure(fig, quick, "api_throughput")
    keyed_median = sorted(keyed_runs, key=lambda x: x["cancels_per_s"])[len(keyed_runs) // 2]
    keyed_lat = keyed_median["latency_ms"]
    for x in api_runs + keyed_runs + pg_runs:
        x.pop("latencies_s")
    write_result(
        "api_throughput",
        quick,
        {
            "inputs": {"cancels_per_round": n, "rounds": rounds, "clients": clients,
                       "CANCEL_API_WORKERS": workers, "DB_POOL_MAX": pool_max},
            "started": started,
            "finished": now_iso(),
            "api_cancels_per_s_median": api_rate,
            "api_keyed_cancels_per_s_median": keyed_rate,
            "pgbench_tps_median": pg_rate,
            "api_over_pgbench": ratio,
            "api_cpu_ms_per_cancel_median": api_cpu,
            "pgbench_cpu_ms_per_transaction_median": pg_cpu,
            "api_over_pgbench_at_equal_busy": cpu_bound,
            "machine_busy_share_median": {"api": busy_api, "pgbench": busy_pg},
            "errors": errors,
            "api_rounds": api_runs,
            "api_keyed_rounds": keyed_runs,
            "pgbench_rounds": pg_runs,
            "healthz_rounds": floor_runs,
            "services": usage,
        },
    )  # fmt: skip
    lat = best["latency_ms"]
    return [
        Row("api_throughput", "API cancels/s (median)", f"{api_rate:.0f}"),
        Row("api_throughput", "pgbench tps, same transaction", f"{pg_rate:.0f}"),
        Row("api_throughput", "API / pgbench", f"{ratio:.2f}", ">= 0.5", ratio >= 0.5),
        Row(
            "api_throughput",
            "machine busy: API rounds; pgbench rounds",
            f"{busy_api:.0%}; {busy_pg:.0%}",
        ),
        Row(
            "api_throughput",
            "machine CPU ms per API cancel (API; load generator; PostgreSQL backends; broker)",
            f"{api_cpu['machine']:.2f} ({api_cpu['api']:.2f}; {api_cpu['client']:.2f}; "
            f"{api_cpu['postgres_backends']:.2f}; {api_cpu.get('kafka', 0):.2f})",
        ),
        Row(
            "api_throughput",
            "machine CPU ms per pgbench transaction (pgbench itself)",
            f"{pg_cpu['machine']:.2f} ({pg_cpu['pgbench']:.2f})",
        ),
        Row(
            "api_throughput",
            "API / pgbench at equal machine busy (the CPU ratio of the two rows above)",
            f"{cpu_bound:.2f}",
        ),
        Row(
            "api_throughput",
            "API CPU ms per request: a cancel; GET /healthz (server, middleware, routing only)"
            "; /healthz per s",
            f"{api_cpu['api']:.2f}; {floor_ms:.3f}; {floor_rate:.0f}",
        ),
        Row(
            "api_throughput",
            "errors",
            f"{errors} ({refused})" if refused else str(errors),
            "0",
            errors == 0,
        ),
        Row("api_throughput", "API latency p50 / p99 (ms)", f"{lat['p50']} / {lat['p99']}"),
        Row(
            "api_throughput",
            "API RSS MB; CPU s per 1,000 cancels",
            f"{usage['api']['rss_mb']}; {cpu_per_1000(api_runs)}",
        ),
        Row(
            "api_throughput",
            "with an Idempotency-Key (the staff UI's cancel): cancels/s; p99 (ms); CPU s per 1,000",
            f"{keyed_rate:.0f}; {keyed_lat['p99']}; {cpu_per_1000(keyed_runs)}",
        ),
    ]
