"""Three Kafka brokers (replication 3, min.insync.replicas 2) lose and duplicate nothing: during
a stream of BPJS cancels one broker, and then the controller quorum's leader, is SIGKILLed and
restarted, with the real cancel API, sync worker, notifier and BPJS simulator running."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import httpx
import orjson
import pytest
import websockets

from shared.config import WORKER_DB_ROLE
from shared.kafka import TopicSpec
from shared.topics import setup
from tests.deploy.acks_probe import AcksProbe
from tests.deploy.cluster import KafkaCluster
from tests.fixtures.api import api_env, auth, notifier_env, token
from tests.fixtures.infra import free_port, role_dsn, wait_until
from tests.fixtures.worker import FAST

pytestmark = pytest.mark.deploy

CANCELS = 1000  # per round
RATE_PER_S = 40.0  # slow enough that the kill and the restart fall inside the stream
IN_FLIGHT = 16
SESSIONS = 3
SPEC = TopicSpec(partitions=4, replication_factor=3, min_insync_replicas=2)
TOPIC_ENV = {"KAFKA_REPLICATION_FACTOR": "3", "KAFKA_MIN_INSYNC_REPLICAS": "2"}


@pytest.fixture
async def cluster() -> AsyncIterator[KafkaCluster]:
    c = KafkaCluster.create()
    try:
        await asyncio.to_thread(c.start)
        yield c
    finally:
        await asyncio.to_thread(c.stop)


@dataclass
class Sessions:
    """Staff websocket sessions: the queue ids of every queue.cancelled each one received."""

    url: str
    seen: list[set[int]] = field(default_factory=list)
    reconnects: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, index: int) -> None:
        # Resumes from its cursor after a disconnect, as the staff UI does.
        cursor = None
        while not self.stop.is_set():
            try:
                async with websockets.connect(self.url, open_timeout=5) as ws:
                    await ws.send(orjson.dumps({"type": "auth", "token": token()}).decode())
                    ready = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
                    if cursor is None:
                        cursor = ready["cursor"]
                    else:
                        await ws.send(orjson.dumps({"type": "resume", "cursor": cursor}).decode())
                    while not self.stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            m = orjson.loads(await asyncio.wait_for(ws.recv(), 0.5))
                            cursor = m.get("cursor", cursor)
                            if m.get("type") == "queue.cancelled":
                                self.seen[index].add(m["queue_id"])
            except Exception:
                if not self.stop.is_set():
                    self.reconnects += 1
                    await asyncio.sleep(0.3)


async def seed_bpjs_tickets(dsn: str, sim, n: int, tag: str) -> dict[int, str]:
    """`n` waiting BPJS tickets (inserted directly) and their bookings at the simulator."""
    conn = await asyncpg.connect(dsn)
    try:
        start = int(await conn.fetchval("select coalesce(max(ticket_seq), 0) from queue_ticket"))
        rows = await conn.fetch(
            "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq,"
            " ticket_number, patient_mrn, patient_name, payer, bpjs)"
            " select 'KLINIK-A', 'POLI-UMUM', current_date, g, 'A-' || g, 'RM-' || g,"
            " 'Pasien ' || g, 'BPJS', jsonb_build_object('booking_code', $3 || g)"
            " from generate_series($1::int, $2::int) g order by g returning id, bpjs",
            start + 1,
            start + n,
            f"BK{tag}-",
        )
    finally:
        await conn.close()
    bookings = {int(r["id"]): orjson.loads(r["bpjs"])["booking_code"] for r in rows}
    blank = {"tasks": {}, "cancelled": False, "served": False, "data": {}}
    seeded = sim.control.post(
        "/seed", json={"bookings": [{"kodebooking": b, **blank} for b in bookings.values()]}
    )
    assert seeded.status_code == 200, seeded.text
    return bookings


async def synced_jobs(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("select count(*) from bpjs_sync_job where status = 'synced'")
        )
    finally:
        await conn.close()


async def stream_cancels(
    api_url: str, ids: list[int], statuses: dict[int, int], on_progress: Callable[[], None]
) -> None:
    """Cancel every ticket at RATE_PER_S at most, IN_FLIGHT at a time, recording the status of
    each. A request lost in transit is sent again with its Idempotency-Key, as a client would:
    on a busy machine the API may fall behind the rate, and that is no loss."""
    t0 = time.monotonic()
    gate = asyncio.Semaphore(IN_FLIGHT)
    timeout = httpx.Timeout(60, pool=None)
    async with httpx.AsyncClient(base_url=api_url, timeout=timeout) as client:

        async def one(i: int, qid: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / RATE_PER_S - time.monotonic()))
            headers = {**auth(token()), "Idempotency-Key": f"deploy-{qid}"}
            async with gate:
                for attempt in range(3):
                    try:
                        r = await client.post(f"/antrian_ruangan/batal/{qid}", headers=headers)
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
            statuses[qid] = r.status_code
            on_progress()

        await asyncio.gather(*(one(i, q) for i, q in enumerate(ids)))


async def round_with_a_kill(
    cluster: KafkaCluster,
    dsn: str,
    sim,
    sessions: Sessions,
    api_url: str,
    tag: str,
    victim: Callable[[], Awaitable[int]],
    probe: AcksProbe | None = None,
) -> dict:
    """Stream CANCELS cancels; at 30 % SIGKILL the node `victim` names, wait until the
    system works on without it (the worker syncs, every session receives), restart it."""
    bookings = await seed_bpjs_tickets(dsn, sim, CANCELS, tag)
    done = asyncio.Event()
    statuses: dict[int, int] = {}
    timeline: dict[str, float] = {}
    t0 = time.monotonic()

    def on_progress() -> None:
        if len(statuses) >= CANCELS * 0.3:
            done.set()

    async def chaos() -> None:
        await done.wait()
        node = await victim()
        await asyncio.to_thread(cluster.kill, node)
        timeline[f"killed node {node}"] = time.monotonic() - t0
        synced = await synced_jobs(dsn)
        committed_so_far = {q for q, s in statuses.items() if s == 200}
        await wait_until(
            lambda: _more_synced(dsn, synced + 50), timeout=90, what="syncs without the node"
        )
        await wait_until(
            lambda: all(committed_so_far <= s for s in sessions.seen),
            timeout=90,
            what="sessions served without the node",
        )
        timeline["worked on without it"] = time.monotonic() - t0
        pending = await probe.write_while_a_node_is_down() if probe else None
        await asyncio.to_thread(cluster.start)
        timeline[f"node {node} back"] = time.monotonic() - t0
        if probe and pending:
            await probe.written_once(pending)

    chaos_task = asyncio.create_task(chaos())
    try:
        await stream_cancels(api_url, list(bookings), statuses, on_progress)
        timeline["stream done"] = time.monotonic() - t0
        await chaos_task
    finally:
        chaos_task.cancel()
    committed = [q for q, s in statuses.items() if s == 200]
    assert len(committed) == CANCELS, {
        s: list(statuses.values()).count(s) for s in statuses.values()
    }

    def applied() -> dict[str, int]:
        counts = sim.stats()["applied_cancellations"]["antreanrs"]
        return {b: int(counts.get(b, 0)) for b in bookings.values()}

    await wait_until(
        lambda: all(v >= 1 for v in applied().values()),
        timeout=180,
        interval=1,
        what="every cancellation at BPJS",
    )
    await wait_until(
        lambda: all(set(committed) <= s for s in sessions.seen),
        timeout=60,
        what="every session has every queue.cancelled",
    )
    timeline["all at BPJS and on every screen"] = time.monotonic() - t0
    duplicated = {b: n for b, n in applied().items() if n != 1}
    assert not duplicated, f"BPJS effects not exactly once: {duplicated}"
    return timeline


async def _more_synced(dsn: str, at_least: int) -> bool:
    return await synced_jobs(dsn) >= at_least


@pytest.mark.timeout(1200)
async def test_three_brokers_lose_and_duplicate_no_cancellation_when_a_broker_then_the_controller_leader_is_killed(  # noqa: E501
    cluster, spawn, database, sim
):
    access = cluster.access
    prefix = f"d{uuid.uuid4().hex[:8]}-"
    group = f"{prefix}worker"
    await setup(
        access.admin, prefix=prefix, users=access.principals(), worker_group=group, spec=SPEC
    )
    n_port, a_port, w_port = free_port(), free_port(), free_port()
    spawn(
        "services.notifier",
        notifier_env(access.kafka_for("notifier"), prefix, n_port, **TOPIC_ENV),
        f"http://127.0.0.1:{n_port}/readyz",
    )
    api_url = f"http://127.0.0.1:{a_port}"
    spawn(
        "services.cancel_api",
        api_env(
            database, access.kafka_for("api"), prefix, CANCEL_API_PORT=str(a_port), **TOPIC_ENV
        ),
        f"{api_url}/healthz",
    )
    worker_env = api_env(
        database,
        access.kafka_for("worker"),
        prefix,
        **FAST,
        **TOPIC_ENV,
        WORKER_PORT=str(w_port),
        WORKER_ID="w-deploy",
        WORKER_CONSUMER_GROUP=group,
        DATABASE_URL=role_dsn(database, WORKER_DB_ROLE),
        BPJS_BASE_URL=sim.rs_url,
        BPJS_SERVICE="antreanrs",
    )
    spawn("services.bpjs_sync_worker", worker_env, f"http://127.0.0.1:{w_port}/healthz", 90)

    sessions = Sessions(f"ws://127.0.0.1:{n_port}/ws", [set() for _ in range(SESSIONS)])
    tasks = [asyncio.create_task(sessions.run(i)) for i in range(SESSIONS)]
    started = time.monotonic()
    probe = AcksProbe(access.admin, f"{prefix}acks-probe")
    try:
        await probe.create()
        topic = f"{prefix}queue-cancelled"

        async def a_partition_leader_not_the_controller() -> int:
            controller = await cluster.controller_leader()
            leaders = await cluster.partition_leaders(topic)
            return min(leaders - {controller} or {1, 2, 3} - {controller})

        first = await round_with_a_kill(
            cluster,
            database,
            sim,
            sessions,
            api_url,
            "a",
            a_partition_leader_not_the_controller,
            probe,
        )
        second = await round_with_a_kill(
            cluster, database, sim, sessions, api_url, "b", cluster.controller_leader
        )
    finally:
        await probe.close()
        sessions.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(
        f"\nbroker round {first}\ncontroller round {second}\n"
        f"session reconnects {sessions.reconnects}; both rounds {time.monotonic() - started:.0f} s"
    )
