"""The notifier's limits over real websockets and Kafka: resync, caps, readiness, bad events."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import orjson
import pytest
import websockets

from services.notifier import cursor
from shared.auth import issue_dev_token
from shared.events import encode_event
from shared.kafka import make_producer
from tests.fixtures.api import token
from tests.fixtures.contract import received
from tests.fixtures.infra import free_port, wait_until
from tests.integration import test_notifier
from tests.integration.test_notifier import (
    TOPIC_OF,
    Client,
    cancelled,
    connect,
    start_notifier,
)

pytestmark = pytest.mark.integration

publish = test_notifier.publish  # the fixture, shared


class Raw:
    """A websocket client that keeps every message it receives (control messages too), and
    every message that does not fit docs/asyncapi.yaml (a test using it fails on the first)."""

    def __init__(self, ws) -> None:
        self.ws, self.got = ws, []
        self.off_contract: list[str] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    self.got.append(received(raw))
                except AssertionError as exc:
                    self.off_contract.append(str(exc))
                    self.got.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass

    def types(self) -> list[str]:
        assert not self.off_contract, self.off_contract
        return [m["type"] for m in self.got]

    def ids(self) -> list[str]:
        assert not self.off_contract, self.off_contract
        return [m["event_id"] for m in self.got if "event_id" in m]

    async def wait_for(self, what: str, timeout: float = 15) -> None:
        await wait_until(
            lambda: what in self.types() or what in self.ids(), timeout, what=repr(what)
        )

    async def close(self) -> None:
        await self.ws.close()
        await self.task
        assert not self.off_contract, self.off_contract


async def session(url: str, tok: str, *resume: object) -> Raw:
    """Authenticate, wait for `ready`, then send `resume` with the given cursor (if any)."""
    ws = await websockets.connect(url, max_size=2**20, open_timeout=30)
    await ws.send(json.dumps({"type": "auth", "token": tok}))
    ready = received(await asyncio.wait_for(ws.recv(), 15))
    assert ready["type"] == "ready", ready
    if resume:
        msg: dict[str, object] = {"type": "resume"}
        if resume[0] is not ...:
            msg["cursor"] = resume[0]
        await ws.send(json.dumps(msg))
    client = Raw(ws)
    client.got.append(ready)
    return client


async def metric(base: str, sample: str) -> float:
    """One sample (`name{labels}`), or the sum of every label value of `name`."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{base}/metrics")).text
    total = 0.0
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == sample or ("{" not in sample and key.startswith(sample + "{")):
            total += float(value)
    return total


async def refused_with(url: str, *messages: str, timeout: float = 20) -> int:
    """The close code of a connection the server ends (maybe before our messages are sent)."""
    async with websockets.connect(url) as ws:
        try:
            for m in messages:
                await ws.send(m)
            await asyncio.wait_for(ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code
    raise AssertionError("the server sent a message instead of closing")


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()


async def test_an_empty_or_malformed_cursor_gets_resync_and_then_the_live_messages(
    spawn, infra, topic_prefix, publish
):
    _, url, base = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    watcher = await session(url, token(user="u-watcher"))
    earlier = [cancelled() for _ in range(3)]
    await publish(*earlier)  # something a deep read would replay
    for event in earlier:  # the notifier has read them before the sessions below are ready
        await watcher.wait_for(event.id)
    foreign = cursor.encode({("no-such-topic", 0): 0})  # names none of our partitions
    bad_entry = b64({"v": 1, "p": [["queue-cancelled"]]})
    ahead = cursor.encode({("queue-cancelled", p): 10**9 for p in range(4)})  # not from us
    cursors: list[object] = [
        *("", ..., None, 123, "!!!", "e30", b64({"v": 2, "p": []})),
        *(cursor.encode({}), foreign, bad_entry, ahead),
    ]
    clients = [await session(url, token(), c) for c in cursors]
    for c in clients:
        await c.wait_for("resync")
    live = cancelled()
    await publish(live)
    for c in clients:
        await c.wait_for(live.id)
        # ready, resync, then only what happened after `ready`: no deep read.
        assert c.types() == ["ready", "resync", "queue.cancelled"] and c.ids() == [live.id]
    assert await metric(base, "notifier_resyncs_total") == len(clients)


async def test_a_cursor_older_than_the_replay_window_gets_resync_on_every_instance(
    spawn, infra, topic_prefix, publish
):
    window = 3.0
    extra = {"NOTIFIER_REPLAY_WINDOW_S": str(window)}
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix, **extra)
    recent = await connect(url, token())
    fresh = cancelled()
    await publish(fresh)
    await recent.wait_for(fresh.id)
    await recent.close()
    old_cursor = recent.cursor
    missed = cancelled()
    await publish(missed)
    sent_at = time.time()
    # Within the window the missed message is replayed, as usual.
    quick = await session(url, token(), old_cursor)
    await quick.wait_for(missed.id)
    assert "resync" not in quick.types()
    # A second instance started now has none of it in memory: its replay would read Kafka.
    _, url2, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix, **extra)
    await wait_until(lambda: time.time() > sent_at + window + 0.5, window + 5, what="window")
    for u in (url, url2):
        late = await session(u, token(), old_cursor)
        await late.wait_for("resync")
        assert missed.id not in late.ids()


async def test_a_resume_that_missed_more_than_the_replay_limit_gets_resync(
    spawn, infra, topic_prefix, publish
):
    _, url, _ = start_notifier(
        spawn, infra.kafka_for("notifier"), topic_prefix, NOTIFIER_MAX_REPLAY_RECORDS="5"
    )
    first = await connect(url, token())
    await first.close()
    few = [cancelled(qid=77) for _ in range(5)]  # one queue id: one partition, one order
    await publish(*few)
    replayed = await session(url, token(), first.cursor)
    await replayed.wait_for(few[-1].id)
    assert replayed.ids() == [e.id for e in few] and "resync" not in replayed.types()
    sixth = cancelled(qid=77)
    await publish(sixth)  # six missed: one more than the limit
    await replayed.wait_for(sixth.id)  # the notifier has read it before the next resume
    too_many = await session(url, token(), first.cursor)
    await too_many.wait_for("resync")
    assert too_many.ids() == []


async def test_connection_caps_close_extra_sockets_with_4429(spawn, infra, topic_prefix):
    _, url, base = start_notifier(
        spawn,
        infra.kafka_for("notifier"),
        topic_prefix,
        NOTIFIER_MAX_CONNECTIONS="3",
        NOTIFIER_MAX_CONNECTIONS_PER_USER="2",
        NOTIFIER_AUTH_DEADLINE_S="30",
    )
    auth = json.dumps({"type": "auth", "token": token(user="u-ani")})
    ani = [await session(url, token(user="u-ani")) for _ in range(2)]
    assert await refused_with(url, auth) == 4429  # a third socket of the same user
    budi = await session(url, token(user="u-budi"))  # another user still gets in
    # The instance is full: refused before any auth message (the auth deadline is 30 s).
    assert await refused_with(url, timeout=10) == 4429
    await ani[0].close()
    await wait_until(lambda: _eq(metric(base, "notifier_sessions"), 2.0), 10, what="closed")
    replacement = await session(url, token(user="u-ani"))  # a freed place can be taken again
    assert replacement.types() == ["ready"]
    assert await metric(base, 'notifier_sessions_closed_total{reason="4429"}') == 2.0
    for c in (ani[1], budi, replacement):
        await c.close()


async def test_before_kafka_is_reachable_clients_are_closed_with_1013_never_4401(spawn):
    port = free_port()
    spawn(
        "services.notifier",
        {
            "APP_ENV": "test",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
            "AUTH_JWT_SECRET": "test-secret-for-staff-tokens-32-bytes!",
            "NOTIFIER_PORT": str(port),
            "NOTIFIER_AUTH_DEADLINE_S": "1",
            "LOG_LEVEL": "WARNING",
        },
        f"http://127.0.0.1:{port}/healthz",
    )
    url = f"ws://127.0.0.1:{port}/ws"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 503
    assert await refused_with(url, json.dumps({"type": "auth", "token": token()})) == 1013
    assert await refused_with(url) == 1013  # a silent client too: no auth deadline applies


async def test_an_event_that_cannot_be_decoded_is_skipped_counted_and_its_partition_goes_on(
    spawn, infra, topic_prefix
):
    _, url, base = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    client = await connect(url, token())
    good = cancelled()
    valid = orjson.loads(encode_event(good))

    def variant(**changes: object) -> bytes:
        return orjson.dumps({**valid, "id": f"bad-{len(changes)}-{time.time_ns()}", **changes})

    bad: list[bytes | None] = [
        None,  # a tombstone
        b"not json at all",
        b"[1, 2, 3]",
        variant(type="QueueDeleted"),
        variant(type=["QueueCancelled"]),
        variant(schemaversion="x"),
        variant(schemaversion=0),
        variant(schemaversion=None),
        variant(schemaversion=99),
        variant(data={**valid["data"], "queue_id": "abc"}),
        variant(data={**valid["data"], "clinic_id": 7}),
        variant(data={**valid["data"], "cancelled_by": "Rina"}),
        variant(data=None),
    ]
    topic = f"{topic_prefix}{TOPIC_OF['QueueCancelled']}"
    producer = make_producer(infra.kafka, linger_ms=0)
    await producer.start()
    try:
        for value in [*bad, encode_event(good)]:  # one partition: the good one comes last
            await producer.send_and_wait(topic, value, key=b"k", partition=0)
    finally:
        await producer.stop()
    await client.wait_for(good.id)
    assert client.ids() == [good.id]
    await wait_until(
        lambda: _eq(metric(base, "notifier_events_skipped_total"), float(len(bad))),
        10,
        what="every bad event counted",
    )


async def test_production_serves_metrics_on_the_ops_port_only(spawn, infra, topic_prefix):
    secret = "p" * 48
    port, ops_port = free_port(), free_port()
    spawn(
        "services.notifier",
        {
            "APP_ENV": "production",
            **infra.kafka_env("notifier"),
            "KAFKA_TOPIC_PREFIX": topic_prefix,
            "AUTH_JWT_SECRET": secret,
            "NOTIFIER_PORT": str(port),
            "OPS_PORT": str(ops_port),
            "LOG_LEVEL": "WARNING",
        },
        f"http://127.0.0.1:{port}/readyz",
    )
    public, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{public}/metrics")).status_code == 404
        for path in ("/healthz", "/readyz"):  # load balancers probe the public port
            assert (await http.get(f"{public}{path}")).status_code == 200
            assert (await http.get(f"{ops}{path}")).status_code == 200
        scraped = await http.get(f"{ops}/metrics")
        assert scraped.status_code == 200 and "notifier_sessions" in scraped.text
        assert (await http.get(f"{ops}/ws")).status_code == 404  # no websocket on the ops port
    tok = issue_dev_token(
        secret, user_id="u-rina", name="Rina", clinic_id="KLINIK-A", permissions=["cancel antrean"]
    )
    c = await session(f"ws://127.0.0.1:{port}/ws", tok)
    await c.close()


async def _eq(value, expected) -> bool:
    return (await value) == expected


def start_freezing_notifier(spawn, infra, topic_prefix, **gc: str):
    """A notifier freezing its heap every 0.2 s, its scheduled full pass an hour away unless
    `gc` sets it otherwise."""
    settings = {"NOTIFIER_GC_FREEZE_EVERY_S": "0.2", "NOTIFIER_GC_FULL_EVERY_S": "3600", **gc}
    return start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix, **settings)


async def test_sessions_are_frozen_out_of_gc_passes_and_a_scheduled_full_pass_follows(
    spawn, infra, topic_prefix, publish
):
    _, url, base = start_freezing_notifier(spawn, infra, topic_prefix, NOTIFIER_GC_FULL_EVERY_S="4")
    frozen, full = "process_gc_frozen_objects", "process_gc_full_collections_total"
    full_pauses = 'python_gc_pause_seconds_count{generation="2"}'

    async def frozen_above(floor: float) -> float | None:
        value = await metric(base, frozen)
        return value if value > floor else None

    idle = await wait_until(lambda: frozen_above(0), 20, what="a first freeze")
    clients: list[Client] = []
    for batch in range(3):
        toks = [token(perms=["update antrean"], user=f"g{batch}-{i}") for i in range(100)]
        clients += await asyncio.gather(*(connect(url, tok) for tok in toks))
    # Each session's connection, protocol, tasks and buffers: tens of objects that CPython's
    # own schedule would walk on every full pass; frozen, no automatic pass walks them.
    with_sessions = await wait_until(
        lambda: frozen_above(idle + 300 * 20), 20, what="the sessions' objects frozen"
    )
    event = cancelled()
    await publish(event)
    await wait_until(lambda: all(event.id in c.ids() for c in clients), 30, what="delivered")
    passes, pauses = await metric(base, full), await metric(base, full_pauses)
    await asyncio.gather(*(c.close() for c in clients))

    async def later_pass() -> bool:
        return await metric(base, full) > passes

    # The scheduled full pass comes and is measured; what the closed sessions held is gone.
    await wait_until(later_pass, 20, what="a full pass after the close")
    assert await metric(base, frozen) < with_sessions - 300 * 20
    assert await metric(base, full_pauses) > pauses


CHURN_TOKENS = [token(perms=["update antrean"], user=f"churn-{i}") for i in range(100)]


async def frozen_since(base: str) -> None:
    """Returns once the notifier has frozen its heap after this call began: whatever it held
    then is frozen."""
    freezes = await metric(base, "process_gc_freezes_total")

    async def moved_on() -> bool:
        return await metric(base, "process_gc_freezes_total") > freezes

    await wait_until(moved_on, 20, what="a freeze")


async def churn(url: str, base: str, rounds: int) -> None:
    """100 connections a round, held past a freeze: dropped before auth, refused for a bad
    token, or authenticated sessions closed by the client (the same 100 users each time, so
    the notifier's caches of verified tokens do not grow)."""
    bad = json.dumps({"type": "auth", "token": "not-a-token"})
    for r in range(rounds):
        kind = r % 3
        opening = (
            (connect(url, tok) for tok in CHURN_TOKENS)
            if kind == 2
            else (websockets.connect(url) for _ in CHURN_TOKENS)
        )
        conns = await asyncio.gather(*opening)
        await frozen_since(base)  # open across a freeze
        if kind == 1:
            await asyncio.gather(*(c.send(bad) for c in conns))
            await asyncio.gather(*(c.wait_closed() for c in conns))
        await asyncio.gather(*(c.close() for c in conns))


async def frozen_after_closes(base: str) -> float:
    """The frozen-object count once the notifier has seen every close and frozen since."""
    await wait_until(
        lambda: _eq(metric(base, "notifier_connections"), 0), 20, what="every close seen"
    )
    await frozen_since(base)
    return await metric(base, "process_gc_frozen_objects")


async def test_a_closed_connection_leaves_only_a_small_cycle_behind(spawn, infra, topic_prefix):
    """Anyone who reaches the port can open and drop connections, no token needed. The heap
    is frozen every second, so whatever a closed connection left in reference cycles would
    wait for the hourly full pass: a client churning connections could grow the notifier's
    memory all hour long. A connection dropped while its auth message was awaited used to
    leave itself whole in such a cycle (about 60 objects: the awaiting task held the closing
    exception, whose traceback held the task). What is left is websockets' own: each closed
    connection's protocol object and its parser form a small cycle (about 11 objects), which
    `test_connection_churn_brings_the_full_pass_early` keeps bounded."""
    # No early pass: what closed connections leave stays frozen.
    _, url, base = start_freezing_notifier(
        spawn, infra, topic_prefix, NOTIFIER_GC_FULL_AFTER_CLOSED="0"
    )
    await wait_until(lambda: metric(base, "process_gc_frozen_objects"), 20, what="a freeze")
    await churn(url, base, 3)  # a first round of each: caches and pools reach their size
    before = await frozen_after_closes(base)
    await churn(url, base, 15)  # 1,500 connections
    assert await frozen_after_closes(base) - before < 1_500 * 20


async def test_connection_churn_brings_the_full_pass_early(spawn, infra, topic_prefix):
    """Whatever cycles closed connections may still leave are reclaimed under churn, not an
    hour later: a full pass comes once as many connections closed as are open, at least
    NOTIFIER_GC_FULL_AFTER_CLOSED."""
    _, url, base = start_freezing_notifier(
        spawn, infra, topic_prefix, NOTIFIER_GC_FULL_AFTER_CLOSED="500"
    )
    early = 'process_gc_full_collections_total{reason="churn"}'
    await wait_until(lambda: metric(base, "process_gc_frozen_objects"), 20, what="a freeze")
    held = await asyncio.gather(
        *(connect(url, token(perms=["update antrean"], user=f"h{i}")) for i in range(10))
    )
    await churn(url, base, 30)  # 3,000 connections closed, 10 open throughout

    async def passes() -> float | None:
        value = await metric(base, early)
        return value if value >= 5 else None  # one per 500 closed

    await wait_until(passes, 20, what="full passes brought on by the churn")
    assert await metric(base, early) <= 6
    assert await metric(base, 'process_gc_full_collections_total{reason="scheduled"}') == 0
    await asyncio.gather(*(c.close() for c in held))
