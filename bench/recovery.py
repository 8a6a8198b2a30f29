"""recovery: 1,000 cancels while the notifier, the BPJS sync worker and the Kafka broker (a
private one) are each SIGKILLed and restarted once. Counts cancellations lost (no QueueCancelled
event, no BPJS effect, or not delivered to a resuming staff session), BPJS calls duplicated to
effect, and the time to drain after the last restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import websockets
from aiokafka import AIOKafkaConsumer

from bench.common import (
    Row,
    figure,
    log,
    now_iso,
    save_figure,
    token,
    write_result,
)
from bench.stack import (
    Stack,
    cancel,
    http_client,
    seed_tickets,
)
from shared.events import decode_event
from shared.kafka import KafkaConfig
from tests.fixtures.infra import KafkaAccess, free_port, native_credentials, run_script


class PrivateBroker:
    """A broker of this benchmark's own (infra/kafka/kafka.sh), which it may SIGKILL."""

    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        self.port, self.cport = free_port(), free_port()
        self.env = {"ANTREAN_DATA_DIR": str(self.data), "KAFKA_PORT": str(self.port),
                    "KAFKA_CONTROLLER_PORT": str(self.cport), "KAFKA_HEAP": "384m"}  # fmt: skip

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def access(self) -> KafkaAccess:
        return KafkaAccess.from_credentials(self.bootstrap, native_credentials(self.data))

    def start(self) -> None:
        try:
            run_script("infra/kafka/kafka.sh", "start", self.env)
        except RuntimeError as exc:  # seen once: the script failed at once without output
            log(f"private broker start failed, retrying: {exc}")
            time.sleep(2)
            run_script("infra/kafka/kafka.sh", "start", self.env)

    def kill(self) -> None:
        pid = int((self.data / "run" / "kafka.pid").read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            run_script("infra/kafka/kafka.sh", "stop", self.env)
        shutil.rmtree(self.data, ignore_errors=True)


async def staff_session(url: str, tok: str, seen: dict[str, dict[int, float]], stop: Any) -> int:
    """One staff UI: reconnects and resumes from its last cursor; returns reconnections."""
    cur, reconnects = None, -1
    while not stop.is_set():
        reconnects += 1
        try:
            async with websockets.connect(url, open_timeout=5) as ws:
                await ws.send(orjson.dumps({"type": "auth", "token": tok}).decode())
                ready = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
                if cur is not None:
                    await ws.send(orjson.dumps({"type": "resume", "cursor": cur}).decode())
                else:
                    cur = ready["cursor"]
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        m = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                        cur = m.get("cursor", cur)
                        if m.get("type") in seen:
                            seen[m["type"]].setdefault(m["queue_id"], time.monotonic())
        except Exception:
            await asyncio.sleep(0.3)
    return reconnects


async def read_topic(kafka: KafkaConfig, topic: str, expect: int, limit_s: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, **kafka.client_kwargs(), group_id=None, auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )  # fmt: skip
    await consumer.start()
    found: list[Any] = []
    end = time.monotonic() + limit_s
    try:
        while time.monotonic() < end and len({e.data["queue_id"] for e in found}) < expect:
            for recs in (await consumer.getmany(timeout_ms=300)).values():
                found.extend(decode_event(r.value) for r in recs)
    finally:
        await consumer.stop()
    return found


async def bpjs_state(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "select count(*) filter (where status = 'synced'), count(*) from bpjs_sync_job"
        )
        assert row is not None
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def run(quick: bool) -> list[Row]:
    n, rate = (300, 10.0) if quick else (1000, 10.0)
    broker = PrivateBroker()
    started = now_iso()
    events: list[tuple[float, str]] = []
    stack = Stack("recovery")
    seen: dict[str, dict[int, float]] = {"queue.cancelled": {}, "bpjs.synced": {}}
    stop = asyncio.Event()
    try:
        await asyncio.to_thread(broker.start)
        stack.access = broker.access
        await stack.create()
        stack.start_sim()
        await stack.sim_fault(route="antreanrs:batal", mode="latency", latency_ms=50)
        stack.start_api()
        stack.start_worker(SYNC_BACKOFF_BASE_S="0.2", SYNC_MAX_INTERVAL_S="2",
                           BREAKER_COOLDOWN_S="0.5", BREAKER_MAX_COOLDOWN_S="2")  # fmt: skip
        stack.start_notifier()
        ids = await seed_tickets(stack.dsn, n, bpjs_every=2, tag="r")
        bpjs_ids = set(ids[1::2])
        manager = token("u-admin", ["cancel antrean", "manage bpjs sync"])
        ws_task = asyncio.create_task(staff_session(stack.ws_url, manager, seen, stop))
        await asyncio.sleep(3)
        t0 = time.monotonic()
        statuses: dict[int, int] = {}
        committed: list[int] = []

        async def ready(what: str) -> None:
            """Wait until a restarted service is working again (the worker's job pool runs)."""
            if what == "worker":
                url = f"http://127.0.0.1:{stack.ports['worker']}/readyz"
                async with http_client(1) as c:
                    for _ in range(240):
                        with contextlib.suppress(Exception):
                            async with c.get(url) as r:
                                if r.status == 200:
                                    return
                        await asyncio.sleep(0.25)

        async def bring_back(what: str) -> None:
            if what == "kafka":
                await asyncio.to_thread(broker.start)
            else:
                await asyncio.to_thread(stack.services[what].start)
            await ready(what)
            events.append((time.monotonic() - t0, f"{what} back"))

        async def chaos() -> None:
            # Kafka first (the others must be up while it is down), then the worker once the
            # broker is back, then the notifier; each kill at its planned moment. The worker
            # takes about a minute to work again (see README), so its return is awaited last.
            pending = []
            for at, what in ((0.1, "kafka"), (0.4, "worker"), (0.6, "notifier")):
                await asyncio.sleep(max(0.0, t0 + at * n / rate - time.monotonic()))
                events.append((time.monotonic() - t0, f"kill {what}"))
                if what == "kafka":
                    broker.kill()
                    await bring_back(what)
                else:
                    stack.services[what].kill()
                    pending.append(asyncio.create_task(bring_back(what)))
            await asyncio.gather(*pending)

        chaos_task = asyncio.create_task(chaos())
        tok = token()
        async with http_client(64) as client:

            async def one(i: int, qid: int) -> None:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                status, _ = await cancel(client, stack.api_url, qid, tok)
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    committed.append(qid)

            await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))
        last_answered = time.monotonic()  # the last cancel's response
        await chaos_task
        last_restart = max(t for t, e in events if e.endswith("back"))
        log(f"recovery: {len(committed)} committed, events {events}")
        want_bpjs = len(bpjs_ids & set(committed))

        async def drained() -> bool:
            synced, _ = await bpjs_state(stack.dsn)
            got = seen["queue.cancelled"]
            return synced >= want_bpjs and all(q in got for q in committed)

        end = time.monotonic() + (90 if quick else 150)
        while time.monotonic() < end and not await drained():  # noqa: ASYNC110
            await asyncio.sleep(0.25)
        drain_s = time.monotonic() - t0 - last_restart
        tail_s = time.monotonic() - last_answered
        stop.set()
        reconnects = await ws_task
        topic_events = await read_topic(
            broker.access.admin, stack.prefix + "queue-cancelled", len(committed), 30
        )
        synced, jobs = await bpjs_state(stack.dsn)
        stats = await stack.sim_stats()
        usage = stack.usage(n)
    finally:
        stop.set()
        await stack.destroy()
        await asyncio.to_thread(broker.destroy)
    ids_per_q: dict[int, set[str]] = {}
    for e in topic_events:
        ids_per_q.setdefault(e.data["queue_id"], set()).add(e.id)
    applied = stats["applied_cancellations"]["antreanrs"]
    lost_event = [q for q in committed if q not in ids_per_q]
    multi_event = [q for q, s in ids_per_q.items() if len(s) > 1]
    lost_ws = [q for q in committed if q not in seen["queue.cancelled"]]
    lost_bpjs = want_bpjs - sum(1 for v in applied.values() if v >= 1)
    dup_bpjs = sum(1 for v in applied.values() if v > 1)
    lost = len(set(lost_event) | set(lost_ws)) + max(0, lost_bpjs)
    fig, (a1, a2) = figure(quick, "recovery", title=f"recovery ({n} cancels at {rate:.0f}/s)")
    for kind, got in seen.items():
        a1.plot(sorted(t - t0 for t in got.values()), range(1, len(got) + 1), label=kind)
    for t, e in events:
        a1.axvline(t, color="red" if e.startswith("kill") else "green", alpha=0.5)
        a1.text(t, 5, e, rotation=90, fontsize=7)
    a1.set_xlabel("seconds since first cancel")
    a1.set_ylabel("received by the resuming staff session")
    a1.legend()
    a2.bar(["lost", "dup BPJS effect", "multi event ids", "kafka dup deliveries"],
           [lost, dup_bpjs, len(multi_event), len(topic_events) - len(ids_per_q)])  # fmt: skip
    a2.set_title(f"drain after last restart: {drain_s:.1f} s")
    save_figure(fig, quick, "recovery")
    write_result(
        "recovery",
        quick,
        {
            "inputs": {"cancels": n, "rate_per_s": rate, "bpjs_share": 0.5},
            "started": started,
            "finished": now_iso(),
            "timeline": events,
            "cancel_statuses": statuses,
            "committed": len(committed),
            "lost_total": lost,
            "lost_no_event": lost_event,
            "lost_not_delivered_to_session": lost_ws,
            "lost_bpjs": lost_bpjs,
            "bpjs_duplicated_effects": dup_bpjs,
            "queue_ids_with_several_event_ids": multi_event,
            "kafka_duplicate_deliveries": len(topic_events) - len(ids_per_q),
            "bpjs_jobs": jobs,
            "bpjs_synced": synced,
            "session_reconnects": reconnects,
            "drain_s_after_last_restart": round(drain_s, 2),
            "drain_s_after_last_cancel": round(tail_s, 2),
            "services": usage,
        },
    )
    return [
        Row("recovery", "cancels committed / sent", f"{len(committed)}/{n}"),
        Row("recovery", "cancellations lost", str(lost), "0", lost == 0),
        Row("recovery", "duplicated BPJS effects", str(dup_bpjs), "0", dup_bpjs == 0),
        Row(
            "recovery",
            "all synced and delivered: s after last restart; after last cancel",
            f"{drain_s:.1f}; {tail_s:.1f}",
        ),
    ]
