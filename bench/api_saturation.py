"""api_saturation: the API alone under open-loop load (cancels sent at a fixed arrival rate,
each with its own Idempotency-Key as the staff UI sends them), stepped up until the accepted
throughput stops growing (the knee); then twice the knee, where admission control must keep the
accepted requests fast, refuse the rest at once (503) and lose no committed cancellation."""

from __future__ import annotations

import asyncio
import csv
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.common import (
    DB_POOL_MAX,
    REPO,
    Row,
    busy_share,
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
    api_metrics,
    late_loops_in,
    long_gc_pauses_in,
    refusals_in,
    refused_between,
    seed_tickets,
)
from tests.fixtures.infra import wait_until

RATES = (100, 200, 400, 800, 1600, 3200)
LEAD_IN_S = 3.0
GROWTH = 1.1  # a step that raises the accepted throughput by less than 10 % is past the knee
LAG_SQL = (
    "select coalesce(extract(epoch from clock_timestamp() - min(created_at)), 0)"
    " from outbox where published_at is null"
)


async def send(
    client: aiohttp.ClientSession, url: str, qid: int, tok: str, due: float
) -> tuple[int, int, float, float]:
    """One cancel, due at `due`; (ticket, status or 0 on a transport error, seconds since `due`
    (an open-loop latency includes any wait before the request could leave), seconds the load
    generator itself was late to send it)."""
    late = time.monotonic() - due
    headers = {"Authorization": f"Bearer {tok}", "Idempotency-Key": uuid.uuid4().hex}
    try:
        async with client.post(f"{url}/antrian_ruangan/batal/{qid}", headers=headers) as r:
            await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError):
        status = 0
    return qid, status, time.monotonic() - due, late


async def sample_lag(dsn: str, stop: asyncio.Event, out: list[float]) -> None:
    """Age (s) of the oldest outbox row the relay has not published, twice a second."""
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            out.append(float(await conn.fetchval(LAG_SQL)))
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def open_loop(
    client: aiohttp.ClientSession, url: str, ids: list[int], tok: str, rate: float
) -> tuple[list[tuple[int, int, float, float]], float]:
    """One cancel of each ticket in `ids`, sent at `rate` per second whatever the answers; the
    answers (see `send`) and the seconds it took to send them all."""
    tasks: list[asyncio.Task[tuple[int, int, float, float]]] = []
    t0 = time.monotonic()
    for i, qid in enumerate(ids):
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(send(client, url, qid, tok, due)))
    sent_s = time.monotonic() - t0
    return await asyncio.gather(*tasks), sent_s


async def step(
    stack: Stack, rate: int, seconds: float, lead_in_rate: float = 0.0
) -> dict[str, Any]:
    """`rate` cancels/s for `seconds`, open loop; every answer, its latency and the relay lag.
    With `lead_in_rate`, the same clients first send at that rate for LEAD_IN_S, unmeasured:
    load rises on a running system whose clients (browsers, a reverse proxy) already hold their
    connections, rather than on hundreds of connections opened in the same second."""
    n = int(rate * seconds)
    lead_n = int(lead_in_rate * LEAD_IN_S)
    ids = await seed_tickets(stack.dsn, lead_n + n)
    tok = token()
    lag: list[float] = []
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=1024, limit_per_host=1024)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        lead, _ = await open_loop(client, stack.api_url, ids[:lead_n], tok, lead_in_rate or 1.0)
        sampler = asyncio.create_task(sample_lag(stack.dsn, stop, lag))
        cpu0, svc0, jif0 = self_cpu_s(), stack.cpu_snapshot(), machine_jiffies()
        t0 = time.monotonic()
        results, sent_s = await open_loop(client, stack.api_url, ids[lead_n:], tok, rate)
        done_s = time.monotonic() - t0
        jif1, client_cpu = machine_jiffies(), self_cpu_s() - cpu0
        svc = {k: round(v - svc0[k], 2) for k, v in stack.cpu_snapshot().items()}
        stop.set()
        await sampler
    ok = [s for _, status, s, _ in results if status == 200]
    refused = [s for _, status, s, _ in results if status == 503]
    others: dict[int, int] = {}
    for _, status, _, _ in results:
        if status not in (200, 503):
            others[status] = others.get(status, 0) + 1
    return {
        "offered_per_s": rate,
        "sent": n,
        "sent_per_s": round(n / sent_s, 1),
        "accepted": len(ok),
        # Over the whole step: sending, then the answers still in flight when sending ended.
        "accepted_per_s": round(len(ok) / max(seconds, done_s), 1),
        "accepted_ms": percentiles(ok),
        "refused": len(refused),
        "refused_ms": percentiles(refused),
        # From the moment the request left the generator: what the API itself took to refuse.
        "refused_from_send_ms": percentiles(
            s - late for _, status, s, late in results if status == 503
        ),
        "other_statuses": others,
        "relay_lag_ms": percentiles(lag),
        # The generator shares the 2 cores: how late it sent (included in the latencies above).
        "generator_late_ms": percentiles(late for *_, late in results),
        "wall_s": round(max(seconds, done_s), 2),
        "client_cpu_s": round(client_cpu, 2),
        "service_cpu_s": svc,
        # Cores the API got: on a shared machine, less than it could use says it was starved.
        "api_cores": round(svc.get("api", 0.0) / max(seconds, done_s), 2),
        "machine_busy": busy_share(jif0, jif1),
        "answers": [(q, s) for q, s, _, _ in lead + results],
    }


async def drained(dsn: str) -> None:
    """Wait (up to a minute) for the relay to publish every outbox row: the next step starts
    clean."""
    conn = await asyncpg.connect(dsn)
    try:

        async def published() -> bool:
            return bool(await conn.fetchval(LAG_SQL) == 0)

        try:
            await wait_until(published, timeout=60, interval=0.2, what="outbox published")
        except AssertionError:
            log("api_saturation: the relay has not caught up after 60 s; going on")
    finally:
        await conn.close()


async def audit(dsn: str, answers: list[tuple[int, int]]) -> dict[str, int]:
    """Every 200 must be a cancelled ticket with exactly one outbox row; every 503 a ticket still
    waiting with none (a refused request does nothing)."""
    ok = [q for q, s in answers if s == 200]
    refused = [q for q, s in answers if s == 503]
    conn = await asyncpg.connect(dsn)
    try:
        cancelled = {
            r["id"]
            for r in await conn.fetch(
                "select id from queue_ticket where id = any($1) and status = 'cancelled'", ok
            )
        }
        events = await conn.fetch(
            "select kafka_key, count(*) as n, count(published_at) as published from outbox"
            " where kafka_key = any($1) group by kafka_key",
            [str(q) for q in ok + refused],
        )
        touched = await conn.fetchval(
            "select count(*) from queue_ticket where id = any($1) and status <> 'waiting'", refused
        )
    finally:
        await conn.close()
    per_key = {r["kafka_key"]: (r["n"], r["published"]) for r in events}
    return {
        "answered_200": len(ok),
        "lost": sum(1 for q in ok if q not in cancelled or str(q) not in per_key),
        "duplicated_events": sum(n - 1 for n, _ in per_key.values() if n > 1),
        "unpublished_events": sum(n - p for n, p in per_key.values()),
        "answered_503": len(refused),
        "refused_but_changed": touched + sum(1 for q in refused if str(q) in per_key),
    }


VEGETA = REPO / ".cache" / "bin" / "vegeta"  # bench/tools.sh builds it


async def vegeta_step(stack: Stack, rate: int, seconds: float) -> dict[str, Any]:
    """`rate` cancels/s for `seconds` sent by vegeta, an open-loop generator in Go whose own
    lateness is negligible next to the Python generator's on these shared cores. Latencies run
    from vegeta's send; the first LEAD_IN_S seconds (new connections) are also left out in
    `*_after_lead_in_ms`."""
    n = int(rate * seconds)
    ids = await seed_tickets(stack.dsn, n)
    tok = token()
    with tempfile.TemporaryDirectory(prefix="vegeta-") as tmp:
        targets, out = Path(tmp) / "targets.json", Path(tmp) / "results.csv"
        with targets.open("wb") as f:
            for qid in ids:
                headers = {
                    "Authorization": [f"Bearer {tok}"],
                    "Idempotency-Key": [uuid.uuid4().hex],
                }
                target = {"method": "POST", "url": f"{stack.api_url}/antrian_ruangan/batal/{qid}",
                          "header": headers}  # fmt: skip
                f.write(orjson.dumps(target) + b"\n")
        attack = (f"{VEGETA} attack -format=json -targets={targets} -rate={rate}/s"
                  f" -duration={int(seconds)}s -max-workers=4096 -timeout=30s"
                  f" | {VEGETA} encode --to csv > {out}")  # fmt: skip
        svc0, jif0 = stack.cpu_snapshot(), machine_jiffies()
        metrics0 = await api_metrics(stack.api_url)
        proc = await asyncio.create_subprocess_shell(attack)
        if await proc.wait() != 0:
            raise RuntimeError("vegeta attack failed")
        busy = busy_share(jif0, machine_jiffies())
        svc = {k: round(v - svc0[k], 2) for k, v in stack.cpu_snapshot().items()}
        metrics = await api_metrics(stack.api_url)
        # timestamp (ns), status, latency (ns), bytes out, bytes in, error, body, attack, seq,
        # method, url, headers
        rows = list(csv.reader(out.open()))
    t0 = min(int(r[0]) for r in rows)
    late = [r for r in rows if int(r[0]) - t0 >= LEAD_IN_S * 1e9]
    slow = [r for r in rows if r[1] == "503" and int(r[2]) > 50e6]  # refusals over 50 ms
    gc0, gc1 = long_gc_pauses_in(metrics0), long_gc_pauses_in(metrics)
    late0, late1 = late_loops_in(metrics0), late_loops_in(metrics)

    def ms(sel: list[list[str]], status: str) -> dict[str, Any]:
        return percentiles(int(r[2]) / 1e9 for r in sel if r[1] == status)

    others: dict[str, int] = {}
    for r in rows:
        if r[1] not in ("200", "503"):
            others[r[1]] = others.get(r[1], 0) + 1
    return {
        "offered_per_s": rate,
        "sent": len(rows),
        "accepted": sum(1 for r in rows if r[1] == "200"),
        "accepted_per_s": round(sum(1 for r in rows if r[1] == "200") / seconds, 1),
        "accepted_ms": ms(rows, "200"),
        "accepted_after_lead_in_ms": ms(late, "200"),
        "refused": sum(1 for r in rows if r[1] == "503"),
        "refused_ms": ms(rows, "503"),
        "refused_after_lead_in_ms": ms(late, "503"),
        # Which bound refused, from the API's counter (a refusal that waited for a database
        # connection would be `db_pool_timeout`), and how many refusals took over 50 ms.
        "refused_by_reason": refused_between(refusals_in(metrics0), refusals_in(metrics)),
        "refused_over_50ms": len(slow),
        # When they were sent (s from the first send): a burst is one stall of the API's loop.
        "refused_over_50ms_sent_at_s": sorted(round((int(r[0]) - t0) / 1e9, 2) for r in slow),
        # The API's garbage-collector pauses over 50 ms during the phase, by generation.
        "gc_pauses_over_50ms": {g: int(n - gc0.get(g, 0.0)) for g, n in gc1.items()},
        # The API's event loop late by over 50 ms, by cause: a refusal waits for the loop.
        "loop_lags_over_50ms": {c: int(n - late0.get(c, 0.0)) for c, n in late1.items()},
        "other_statuses": others,
        "service_cpu_s": svc,
        "machine_busy": busy,
        "answers": [(int(r[10].rsplit("/", 1)[1]), int(r[1] or 0)) for r in rows],
    }


def knee_of(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The step with the most accepted cancels/s: past it the throughput stopped growing."""
    return max(steps, key=lambda s: s["accepted_per_s"])


def plot(quick: bool, steps: list[dict[str, Any]], over: dict[str, Any], knee: dict) -> None:
    """Throughput and latency against offered load: the steps as lines, 2 x knee as stars."""
    fig, (a1, a2) = figure(quick, "api_saturation", title="api_saturation (API alone, open loop)")
    x = [s["offered_per_s"] for s in steps]
    ox = [over["offered_per_s"]]
    a1.plot(x, x, ":", color="gray", label="offered")
    a1.plot(x, [s["accepted_per_s"] for s in steps], "o-", color="tab:blue",
            label="accepted (200)/s")  # fmt: skip
    a1.plot(x, [s["refused"] / s["wall_s"] for s in steps], "s--", color="tab:orange",
            label="refused (503)/s")  # fmt: skip
    a1.plot(ox, [over["accepted_per_s"]], "*", ms=14, color="tab:blue", label="2 x knee")
    a1.plot(ox, [over["refused"] / over["wall_s"]], "*", ms=14, color="tab:orange")
    a1.axvline(knee["offered_per_s"], color="tab:red", alpha=0.4, label="knee")
    a1.set_xscale("log")
    a1.set_xlabel("offered cancels/s")
    a1.set_ylabel("answers/s")
    a1.legend(fontsize=7)
    a1.grid(True, alpha=0.3)
    for key, label, color in (("accepted_ms", "accepted p99", "tab:blue"),
                              ("refused_ms", "refused p99", "tab:orange")):  # fmt: skip
        pts = [(s["offered_per_s"], s[key]["p99"]) for s in steps if s[key]["count"]]
        a2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=label)
        if over[key]["count"]:
            a2.plot(ox, [over[key]["p99"]], "*", ms=14, color=color)
    pts = [(s["offered_per_s"], s["accepted_ms"]["p50"]) for s in steps if s["accepted"]]
    a2.plot([p[0] for p in pts], [p[1] for p in pts], "o:", color="tab:green",
            label="accepted p50")  # fmt: skip
    a2.axhline(1000, color="tab:red", alpha=0.3, label="goal accepted p99 1 s")
    a2.axhline(50, color="tab:orange", alpha=0.3, label="goal refused p99 50 ms")
    a2.axvline(knee["offered_per_s"], color="tab:red", alpha=0.4)
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("offered cancels/s (stars: 2 x knee)")
    a2.set_ylabel("latency (ms)")
    a2.legend(fontsize=7)
    a2.grid(True, alpha=0.3)
    save_figure(fig, quick, "api_saturation")


async def run(quick: bool) -> list[Row]:
    seconds, over_s = (3.0, 5.0) if quick else (10.0, 20.0)
    pool_max = DB_POOL_MAX
    stack = await Stack("sat").create()
    started = now_iso()
    steps: list[dict[str, Any]] = []
    answers: list[tuple[int, int]] = []
    try:
        stack.start_api(DB_POOL_MAX=pool_max)
        await step(stack, 100, 2.0)  # warm-up: connections, prepared statements
        for rate in RATES:
            await drained(stack.dsn)
            s = await step(
                stack, rate, seconds, lead_in_rate=steps[-1]["offered_per_s"] if steps else 0
            )
            answers += s.pop("answers")
            steps.append(s)
            log(f"api_saturation {rate}/s: accepted {s['accepted_per_s']}/s, "
                f"p99 {s['accepted_ms'].get('p99')} ms, refused {s['refused']}")  # fmt: skip
            if len(steps) > 1 and s["accepted_per_s"] < GROWTH * steps[-2]["accepted_per_s"]:
                break
        knee = knee_of(steps)
        over_rate = int(2 * knee["accepted_per_s"])
        await drained(stack.dsn)
        over = await step(stack, over_rate, over_s, lead_in_rate=knee["offered_per_s"])
        answers += over.pop("answers")
        log(f"api_saturation 2 x knee {over_rate}/s: accepted {over['accepted_per_s']}/s, "
            f"p99 {over['accepted_ms'].get('p99')} ms, refused {over['refused']} "
            f"p99 {over['refused_ms'].get('p99')} ms")  # fmt: skip
        await drained(stack.dsn)
        vegeta = await vegeta_step(stack, over_rate, over_s)
        answers += vegeta.pop("answers")
        log(f"api_saturation 2 x knee by vegeta: refused p99 {vegeta['refused_ms'].get('p99')} ms")
        await drained(stack.dsn)
        check = await audit(stack.dsn, answers)
        usage = stack.usage(len(answers))
    finally:
        await stack.destroy()
    plot(quick, steps, over, knee)
    write_result(
        "api_saturation",
        quick,
        {
            "inputs": {"step_seconds": seconds, "overload_seconds": over_s, "rates": RATES,
                       "lead_in_s": LEAD_IN_S,
                       "DB_POOL_MAX": pool_max, "admission": "service defaults"},
            "started": started,
            "finished": now_iso(),
            "steps": steps,
            "knee": {"offered_per_s": knee["offered_per_s"],
                     "accepted_per_s": knee["accepted_per_s"]},
            "overload": over,
            "overload_vegeta": vegeta,
            "check": check,
            "services": usage,
        },
    )  # fmt: skip
    acc, ref, lag = over["accepted_ms"], over["refused_ms"], knee["relay_lag_ms"]
    acc_p99, ref_p99 = acc.get("p99", 0.0), ref.get("p99", 0.0)
    sent = over["refused_from_send_ms"]
    v_acc, v_ref = vegeta["accepted_ms"], vegeta["refused_ms"]
    v_late = vegeta["refused_after_lead_in_ms"]
    curve = ", ".join(f"{s['offered_per_s']}→{s['accepted_per_s']:.0f}" for s in steps)
    return [
        Row("api_saturation", "offered → accepted cancels/s per step", curve),
        Row("api_saturation", "knee: accepted cancels/s (offered)",
            f"{knee['accepted_per_s']:.0f} ({knee['offered_per_s']})"),
        Row("api_saturation", "knee: p50 / p99 accepted (ms); refused",
            f"{knee['accepted_ms']['p50']} / {knee['accepted_ms']['p99']}; {knee['refused']}"),
        Row("api_saturation", "knee: API CPU cores used; machine busy",
            f"{knee['api_cores']}; {knee['machine_busy']:.0%}"),
        Row("api_saturation", "knee: outbox relay lag p50 / max (ms)",
            f"{lag.get('p50', 0)} / {lag.get('max', 0)}"),
        Row("api_saturation", f"2 x knee ({over_rate}/s): accepted/s; refused; other errors",
            f"{over['accepted_per_s']:.0f}; {over['refused']}; "
            f"{sum(over['other_statuses'].values())}"),
        Row("api_saturation", "2 x knee: p99 accepted (ms)", str(acc_p99), "<= 1000",
            bool(acc.get("count")) and acc_p99 <= 1000),
        Row("api_saturation", "2 x knee: p99 refused from the scheduled send, Python (ms)",
            str(ref_p99)),
        Row("api_saturation", "2 x knee: refused p50 / p99 / max from send, Python (ms)",
            " / ".join(str(sent.get(k, 0)) for k in ("p50", "p99", "max"))),
        Row("api_saturation", "2 x knee, vegeta: accepted/s; p99 accepted (ms); refused",
            f"{vegeta['accepted_per_s']:.0f}; {v_acc.get('p99')}; {vegeta['refused']}", "<= 1000",
            bool(v_acc.get("count")) and v_acc.get("p99", 0) <= 1000),
        Row("api_saturation", "2 x knee, vegeta: refused p50 / p99 / max (ms); p99 after 3 s",
            " / ".join(str(v_ref.get(k, 0)) for k in ("p50", "p99", "max"))
            + f"; {v_late.get('p99')}", "p99 <= 50",
            bool(v_ref.get("count")) and v_ref.get("p99", 0) <= 50),
        Row("api_saturation", "2 x knee, vegeta: slowest refusal (ms); slowest after 3 s",
            f"{v_ref.get('max')}; {v_late.get('max')}", "<= 50 (every refusal)",
            bool(v_ref.get("count")) and v_ref.get("max", 0) <= 50),
        Row("api_saturation", "2 x knee, vegeta: refusals over 50 ms; refused by the API's bound",
            f"{vegeta['refused_over_50ms']}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(vegeta["refused_by_reason"].items()))),
        Row("api_saturation", "committed cancellations lost; refused that changed anything",
            f"{check['lost']}; {check['refused_but_changed']}", "0; 0",
            check["lost"] == 0 and check["refused_but_changed"] == 0),
    ]  # fmt: skip
