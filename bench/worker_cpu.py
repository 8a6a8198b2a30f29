"""`python -m bench.worker_cpu`: the BPJS sync worker's CPU seconds idle, per 1,000 non-BPJS
QueueCancelled events and per 1,000 BPJS syncs (bench/README.md, "Worker CPU").

Each phase sends its cancels through the API at a steady rate and ends once the worker has
handled them all; a phase's figure is the worker's CPU over the phase minus its idle rate over
the same time. BENCH_PYSPY=1 also records a py-spy profile of the worker per phase (raw
collapsed stacks in /tmp/worker_cpu-<phase>.txt).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from typing import Any

import asyncpg
import orjson

from bench.common import REPO, log, scrape, token
from bench.stack import Stack, cancel, http_client, seed_tickets

IDLE_S = float(os.environ.get("BENCH_IDLE_S", "30"))
PLAIN_N = int(os.environ.get("BENCH_PLAIN_N", "2000"))
PLAIN_RATE = float(os.environ.get("BENCH_PLAIN_RATE", "80"))  # saas_shape: 80 % of 100/s
BPJS_N = int(os.environ.get("BENCH_BPJS_N", "500"))
BPJS_RATE = float(os.environ.get("BENCH_BPJS_RATE", "20"))  # saas_shape: 20 % of 100/s
EVENTS = "bpjs_worker_events_total"


async def handled(url: str) -> dict[str, float]:
    """The worker's QueueCancelled events so far, by handling."""
    async with http_client(1) as c:
        return {s.labels["handling"]: s.value for s in await scrape(c, f"{url}/metrics", EVENTS)}


async def synced(dsn: str, tag: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "select count(*) from bpjs_sync_job j join queue_ticket t on t.id = j.queue_id"
                " where t.bpjs->>'booking_code' like $1 and j.status = 'synced'",
                f"BK{tag}-%",
            )
        )
    finally:
        await conn.close()


async def send(stack: Stack, ids: list[int], rate: float) -> dict[int, int]:
    tok = token()
    statuses: dict[int, int] = {}
    async with http_client(64) as client:
        t0 = time.monotonic() + 0.1

        async def one(i: int, qid: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            status, _ = await cancel(client, stack.api_url, qid, tok)
            statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))
    return statuses


async def spy(stack: Stack, name: str, seconds: float) -> asyncio.subprocess.Process | None:
    if not os.environ.get("BENCH_PYSPY"):
        return None
    return await asyncio.create_subprocess_exec(
        str(REPO / ".venv/bin/py-spy"), "record", "--nonblocking", "--format", "raw",
        "-o", os.path.join(tempfile.gettempdir(), f"worker_cpu-{name}.txt"),
        "--pid", str(stack.services["worker"].pid), "--duration", str(int(seconds)),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def phase(
    stack: Stack, name: str, n: int, rate: float, bpjs: bool, idle_per_s: float
) -> dict[str, Any]:
    worker = stack.services["worker"]
    url = f"http://127.0.0.1:{stack.ports['worker']}"
    ids = await seed_tickets(stack.dsn, n, bpjs_every=1 if bpjs else 0, tag=name)
    before = (await handled(url)).get("not_bpjs", 0.0)
    profile = await spy(stack, name, n / rate + 5)
    cpu0, t0 = worker.cpu_s(), time.monotonic()
    statuses = await send(stack, ids, rate)
    accepted = statuses.get(200, 0)  # a refused (503) cancel sends no event
    while time.monotonic() - t0 < n / rate + 120:
        if bpjs:
            done = await synced(stack.dsn, name)
        else:
            done = int((await handled(url)).get("not_bpjs", 0.0) - before)
        if done >= accepted:
            break
        await asyncio.sleep(0.2)
    cpu, wall = worker.cpu_s() - cpu0, time.monotonic() - t0
    if profile is not None:
        await profile.wait()
    net = cpu - idle_per_s * wall
    return {
        "n": n, "rate": rate, "statuses": statuses, "done": done, "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 2), "cpu_s_per_1000": round(cpu * 1000 / max(accepted, 1), 3),
        "net_cpu_s_per_1000": round(net * 1000 / max(accepted, 1), 3),
    }  # fmt: skip


async def run() -> dict[str, Any]:
    stack = await Stack("wcpu").create()
    try:
        stack.start_sim()
        stack.start_api()
        worker = stack.start_worker(SYNC_RATE_PER_S="1000")
        await asyncio.sleep(10)  # faust joins its group; the first sweeps and gauges run
        profile = await spy(stack, "idle", IDLE_S)
        cpu0, t0 = worker.cpu_s(), time.monotonic()
        await asyncio.sleep(IDLE_S)
        idle_per_s = (worker.cpu_s() - cpu0) / (time.monotonic() - t0)
        if profile is not None:
            await profile.wait()
        log(f"worker_cpu idle: {idle_per_s:.4f} CPU s per s")
        plain = await phase(stack, "plain", PLAIN_N, PLAIN_RATE, False, idle_per_s)
        log(f"worker_cpu non-BPJS: {plain}")
        bpjs = await phase(stack, "bpjs", BPJS_N, BPJS_RATE, True, idle_per_s)
        log(f"worker_cpu BPJS: {bpjs}")
    finally:
        await stack.destroy()
    return {
        "idle_cpu_s_per_s": round(idle_per_s, 4),
        "non_bpjs": plain,
        "bpjs": bpjs,
    }


if __name__ == "__main__":
    print(
        orjson.dumps(
            asyncio.run(run()), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        ).decode()
    )
