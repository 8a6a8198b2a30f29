"""The notifier as a real process over real websockets and real Kafka (docs/WEBSOCKET.md)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import UTC, datetime

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from services.notifier.messages import BPJS_WARNING
from shared.events import (
    BpjsSyncedData,
    BpjsSyncFailedData,
    CancelledBy,
    CloudEvent,
    QueueCancelledData,
    encode_event,
    new_event,
)
from shared.kafka import KafkaConfig, make_producer, send_event
from tests.fixtures.api import SECRET, notifier_env, token
from tests.fixtures.contract import received
from tests.fixtures.infra import free_port, wait_until

pytestmark = pytest.mark.integration

CONTROL = {"ready", "pong", "error"}


def start_notifier(spawn, kafka: KafkaConfig, prefix: str, **extra: str):
    """The notifier process; `kafka`: its principal (`infra.kafka_for("notifier")`)."""
    port = free_port()
    env = notifier_env(
        kafka, prefix, port, NOTIFIER_RESUME_WINDOW_S="0.3", LOG_LEVEL="WARNING", **extra
    )
    proc = spawn("services.notifier", env, f"http://127.0.0.1:{port}/readyz")
    return proc, f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}"


class Client:
    """A websocket client that keeps every event message it receives, in order, and every
    message that does not fit docs/asyncapi.yaml (a test using it fails on the first)."""

    def __init__(self, ws, ready: dict) -> None:
        self.ws, self.ready, self.events = ws, ready, []
        self.off_contract: list[str] = []
        self.cursor = ready["cursor"]
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    msg = received(raw)
                except AssertionError as exc:
                    self.off_contract.append(str(exc))
                    msg = json.loads(raw)
                if msg["type"] not in CONTROL:
                    self.events.append(msg)
                    self.cursor = msg["cursor"]
        except ConnectionClosed:
            pass

    def ids(self) -> list[str]:
        assert not self.off_contract, self.off_contract
        return [m["event_id"] for m in self.events]

    async def wait_for(self, event_id: str, timeout: float = 15) -> None:
        await wait_until(lambda: event_id in self.ids(), timeout, what=f"event {event_id}")

    async def close(self) -> None:
        await self.ws.close()
        await self.task
        assert not self.off_contract, self.off_contract


async def connect(
    url: str, tok: str, *, resume: str | None = None, rooms: list[str] | None = None
) -> Client:
    ws = await websockets.connect(url, max_size=2**20, open_timeout=30)
    await ws.send(json.dumps({"type": "auth", "token": tok}))
    ready = received(await asyncio.wait_for(ws.recv(), 15))
    assert ready["type"] == "ready", ready
    if rooms is not None:
        await ws.send(json.dumps({"type": "subscribe", "room_ids": rooms}))
    if resume is not None:
        await ws.send(json.dumps({"type": "resume", "cursor": resume}))
    return Client(ws, ready)


async def close_code(url: str, *messages: str, timeout: float = 20) -> int:
    async with websockets.connect(url) as ws:
        for m in messages:
            await ws.send(m)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), timeout)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


_qid = iter(range(1000, 10**6))


def cancelled(clinic="KLINIK-A", room="POLI-UMUM", user="u-rina", qid=None) -> CloudEvent:
    qid = qid or next(_qid)
    data = QueueCancelledData(
        queue_id=qid,
        clinic_id=clinic,
        room_id=room,
        ticket_number=f"A-{qid % 1000:03d}",
        payer="BPJS",
        bpjs={"booking_code": "BK1"},
        reason_code="no_show",
        reason_text=None,
        cancelled_by=CancelledBy(user_id=user, name="Rina"),
        cancelled_at=datetime.now(UTC),
    )
    return new_event(data, source="test")


def synced(qid: int, clinic="KLINIK-A", user="u-rina", recovered=False) -> CloudEvent:
    data = BpjsSyncedData(
        queue_id=qid,
        clinic_id=clinic,
        ticket_number="A-001",
        cancelled_by=CancelledBy(user_id=user, name="Rina"),
        cancel_event_id="x",
        attempts=1,
        bpjs_code=200,
        bpjs_message="Ok",
        synced_at=datetime.now(UTC),
        recovered=recovered,
    )
    return new_event(data, source="test")


def failed(qid: int, clinic="KLINIK-A", user="u-rina") -> CloudEvent:
    data = BpjsSyncFailedData(
        queue_id=qid,
        clinic_id=clinic,
        ticket_number="A-001",
        cancelled_by=CancelledBy(user_id=user, name="Rina"),
        cancel_event_id="x",
        attempts=3,
        error_kind="unreachable",
        bpjs_code=None,
        error="timeout",
        will_retry=True,
        failed_at=datetime.now(UTC),
    )
    return new_event(data, source="test")


TOPIC_OF = {
    "QueueCancelled": "queue-cancelled",
    "BpjsSynced": "bpjs-synced",
    "BpjsSyncFailed": "bpjs-sync-failed",
}


@pytest.fixture
async def publish(infra, topic_prefix):
    producer = make_producer(infra.kafka, linger_ms=0)
    await producer.start()

    async def _publish(*events: CloudEvent) -> None:
        for e in events:
            await send_event(producer, f"{topic_prefix}{TOPIC_OF[e.type]}", e)

    yield _publish
    await producer.stop()


async def test_no_auth_within_deadline_bad_tokens_and_garbage_close_with_4401(
    spawn, infra, topic_prefix
):
    _, url, _ = start_notifier(
        spawn, infra.kafka_for("notifier"), topic_prefix, NOTIFIER_AUTH_DEADLINE_S="1"
    )
    expired = jwt.encode(
        {
            "sub": "u",
            "name": "n",
            "clinic_id": "K",
            "permissions": [],
            "exp": int(time.time()) - 120,  # beyond the 30 s default leeway
        },
        SECRET,
        algorithm="HS256",
    )
    forged = token().rsplit(".", 1)[0] + ".c2lnbmF0dXJl"
    none_alg = jwt.encode(
        {
            "sub": "u",
            "name": "n",
            "clinic_id": "K",
            "permissions": [],
            "exp": int(time.time()) + 600,
        },
        None,
        algorithm="none",
    )
    assert await close_code(url) == 4401  # silent client: the deadline passes
    for bad in (expired, forged, none_alg, "not-a-jwt"):
        assert await close_code(url, json.dumps({"type": "auth", "token": bad})) == 4401
    assert await close_code(url, "hello") == 4401
    assert await close_code(url, json.dumps({"type": "subscribe", "room_ids": []})) == 4401


async def test_authentic_token_that_is_no_staff_token_closes_with_4403(spawn, infra, topic_prefix):
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    no_clinic = jwt.encode(
        {"sub": "u", "name": "n", "permissions": [], "exp": int(time.time()) + 600},
        SECRET,
        algorithm="HS256",
    )
    bad_perms = jwt.encode(
        {
            "sub": "u",
            "name": "n",
            "clinic_id": "K",
            "permissions": "all",
            "exp": int(time.time()) + 600,
        },
        SECRET,
        algorithm="HS256",
    )
    no_permission = token(user="u-none", perms=[])
    for tok in (no_clinic, bad_perms, no_permission):
        assert await close_code(url, json.dumps({"type": "auth", "token": tok})) == 4403


async def test_ready_names_user_and_clinic_and_ping_gets_pong(spawn, infra, topic_prefix):
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token(user="u-ani")}))
        ready = received(await ws.recv())
        assert ready["type"] == "ready" and ready["user_id"] == "u-ani"
        assert ready["clinic_id"] == "KLINIK-A" and isinstance(ready["cursor"], str)
        await ws.send(json.dumps({"type": "ping"}))
        assert received(await ws.recv()) == {"type": "pong"}


async def test_queue_cancelled_reaches_every_session_of_the_clinic_in_subscribed_rooms(
    spawn, infra, topic_prefix, publish
):
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    all_rooms = [
        await connect(url, token(user=f"u{i}", perms=["update antrean"])) for i in range(3)
    ]
    umum = await connect(url, token(user="u-umum"), rooms=["POLI-UMUM"])
    gigi = await connect(url, token(user="u-gigi"), rooms=["POLI-GIGI"])
    e_umum, e_gigi = cancelled(room="POLI-UMUM"), cancelled(room="POLI-GIGI")
    await publish(e_umum, e_gigi)
    for c in all_rooms:
        await c.wait_for(e_gigi.id)
        await c.wait_for(e_umum.id)
    await umum.wait_for(e_umum.id)
    await gigi.wait_for(e_gigi.id)
    sentinel_umum, sentinel_gigi = cancelled(room="POLI-UMUM"), cancelled(room="POLI-GIGI")
    await publish(sentinel_umum, sentinel_gigi)
    await umum.wait_for(sentinel_umum.id)
    await gigi.wait_for(sentinel_gigi.id)
    assert umum.ids() == [e_umum.id, sentinel_umum.id]
    assert gigi.ids() == [e_gigi.id, sentinel_gigi.id]
    msg = next(m for m in all_rooms[0].events if m["event_id"] == e_umum.id)
    assert msg["type"] == "queue.cancelled" and msg["queue_id"] == e_umum.data["queue_id"]
    assert msg["room_id"] == "POLI-UMUM" and msg["ticket_number"] == e_umum.data["ticket_number"]
    assert msg["payer"] == "BPJS" and msg["cancelled_by"] == {"user_id": "u-rina", "name": "Rina"}


async def test_nothing_crosses_clinics(spawn, infra, topic_prefix, publish):
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    a = await connect(url, token("KLINIK-A", perms=["cancel antrean", "manage bpjs sync"]))
    b = await connect(url, token("KLINIK-B", perms=["cancel antrean", "manage bpjs sync"]))
    ev_a = cancelled("KLINIK-A")
    await publish(
        ev_a, synced(ev_a.data["queue_id"], "KLINIK-A"), failed(ev_a.data["queue_id"], "KLINIK-A")
    )
    ev_b = cancelled("KLINIK-B")
    await publish(ev_b)
    await b.wait_for(ev_b.id)
    await a.wait_for(ev_a.id)
    assert b.ids() == [ev_b.id]
    assert ev_b.id not in a.ids()


async def test_bpjs_outcomes_go_to_the_cancelling_user_and_bpjs_managers_only(
    spawn, infra, topic_prefix, publish
):
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    rina1, rina2 = [await connect(url, token(user="u-rina")) for _ in range(2)]
    other = await connect(url, token(user="u-budi"))
    manager = await connect(url, token(user="u-adm", perms=["manage bpjs sync"]))
    qid = next(_qid)
    ok, warn = synced(qid, recovered=True), failed(qid)
    await publish(ok, warn)
    sentinel = cancelled()
    await publish(sentinel)
    for c in (rina1, rina2, manager):
        await c.wait_for(sentinel.id)
        assert set(c.ids()) == {ok.id, warn.id, sentinel.id}
    await other.wait_for(sentinel.id)
    assert other.ids() == [sentinel.id]
    by_type = {m["type"]: m for m in rina1.events}
    assert by_type["bpjs.synced"]["recovered"] is True
    assert by_type["bpjs.synced"]["queue_id"] == qid
    assert by_type["bpjs.sync_failed"]["message"] == BPJS_WARNING
    assert by_type["bpjs.sync_failed"]["will_retry"] is True
    assert by_type["bpjs.sync_failed"]["ticket_number"] == "A-001"


async def test_resume_after_disconnect_gives_the_missed_messages_once_in_order(
    spawn, infra, topic_prefix, publish
):
    _, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    first = await connect(url, token())
    before = cancelled(qid=42)
    await publish(before)
    await first.wait_for(before.id)
    await first.close()
    missed = [cancelled(qid=42) for _ in range(5)] + [failed(42)]
    await publish(*missed)
    await publish(missed[2])  # a duplicated delivery (same CloudEvents id) counts once
    second = await connect(url, token(), resume=first.cursor)
    after = cancelled(qid=42)
    await publish(after)
    await second.wait_for(after.id)
    await publish(sentinel := cancelled(qid=42))
    await second.wait_for(sentinel.id)
    assert second.ids() == [e.id for e in missed] + [after.id, sentinel.id]


async def test_two_notifier_instances_both_deliver_and_share_cursors(
    spawn, infra, topic_prefix, publish
):
    _, url1, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    _, url2, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    c1, c2 = await connect(url1, token()), await connect(url2, token())
    e1 = cancelled()
    await publish(e1)
    await c1.wait_for(e1.id)
    await c2.wait_for(e1.id)
    await c1.close()
    e2 = cancelled()
    await publish(e2)
    moved = await connect(url2, token(), resume=c1.cursor)  # the load balancer picked the other
    await moved.wait_for(e2.id)
    assert moved.ids() == [e2.id]


async def test_notifier_restart_loses_nothing_for_a_client_that_resumes(
    spawn, infra, topic_prefix, publish
):
    proc, url, _ = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    client = await connect(url, token())
    e1 = cancelled()
    await publish(e1)
    await client.wait_for(e1.id)
    proc.kill()
    await client.task
    missed = [cancelled(), failed(7), cancelled()]
    await publish(*missed)
    proc.start()
    again = await connect(url, token(), resume=client.cursor)
    for e in missed:
        await again.wait_for(e.id)
    await publish(last := cancelled())
    await again.wait_for(last.id)
    assert sorted(again.ids()) == sorted([e.id for e in missed] + [last.id])
    assert again.ids()[-1] == last.id


async def test_a_thousand_sessions_all_receive_a_broadcast(spawn, infra, topic_prefix, publish):
    _, url, base = start_notifier(spawn, infra.kafka_for("notifier"), topic_prefix)
    clients: list[Client] = []
    for batch in range(10):
        # One user per session: a user's own sessions are capped (4429).
        toks = [token(perms=["update antrean"], user=f"u{batch}-{i}") for i in range(100)]
        clients += await asyncio.gather(*(connect(url, tok) for tok in toks))
        assert len(clients) == (batch + 1) * 100
    event = cancelled()
    await publish(event)
    await wait_until(
        lambda: all(event.id in c.ids() for c in clients),
        60,
        what="all 1000 sessions got the broadcast",
    )
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{base}/metrics")).text
    assert "notifier_sessions 1000.0" in metrics
    await asyncio.gather(*(c.close() for c in clients))


async def raw_session(base: str, tok: str, *, rcvbuf: int | None = None):
    """A hand-made websocket client (a plain TCP socket) that authenticates and then does
    nothing unless the test reads from it: it never answers pings and can stop reading."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(base.rsplit(":", 1)[1])))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b"101" in await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps({"type": "auth", "token": tok}).encode()
    mask = b"\x00\x00\x00\x00"  # a masked client frame (mask of zeros: payload unchanged)
    writer.write(bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + mask + payload)
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    size = b1 & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(size)


async def test_a_client_that_stops_reading_gets_4408_and_never_slows_the_others(
    spawn, infra, topic_prefix, publish
):
    _, url, base = start_notifier(
        spawn, infra.kafka_for("notifier"), topic_prefix, NOTIFIER_MAX_QUEUE="200"
    )
    fast = await connect(url, token())
    reader, writer = await raw_session(base, token(), rcvbuf=4096)
    # Both sessions are live (past the resume window) once each has read a first event.
    first = cancelled(qid=424242)
    await publish(first)
    await fast.wait_for(first.id)
    while (await asyncio.wait_for(read_frame(reader), 15))[1].find(first.id.encode()) < 0:
        pass
    # From now on the raw client reads nothing. One queue id: one partition, one order. Enough
    # events (about 5 MB) to fill the kernel's socket buffers, the server's write buffer and
    # the session's backlog of 200, sent in steps of 200 that the reading client takes in
    # before the next step, so only the stalled one can fall behind.
    events = [first] + [cancelled(qid=424242) for _ in range(12000)]
    producer = make_producer(infra.kafka, linger_ms=5)
    await producer.start()
    try:
        topic = f"{topic_prefix}{TOPIC_OF[first.type]}"
        for start in range(1, len(events), 200):
            step = events[start : start + 200]
            sent = [await producer.send(topic, encode_event(e), key=b"424242") for e in step]
            await asyncio.gather(*sent)
            await fast.wait_for(step[-1].id)
    finally:
        await producer.stop()
    assert fast.ids() == [e.id for e in events]
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{base}/metrics")).text
    assert 'notifier_sessions_closed_total{reason="4408"} 1.0' in metrics
    # What the slow client finally reads: an in-order prefix of the stream, then close 4408.
    got: list[str] = []
    while True:
        opcode, payload = await asyncio.wait_for(read_frame(reader), 15)
        if opcode == 0x8:
            break
        msg = json.loads(payload)
        if msg["type"] not in CONTROL:
            got.append(msg["event_id"])
    assert int.from_bytes(payload[:2], "big") == 4408
    assert 0 < len(got) < len(events) - 1 and got == [e.id for e in events[1 : len(got) + 1]]
    writer.close()
    await fast.close()


async def test_dead_connection_is_dropped_by_heartbeat(spawn, infra, topic_prefix):
    _, _, base = start_notifier(
        spawn,
        infra.kafka,
        topic_prefix,
        NOTIFIER_PING_INTERVAL_S="0.5",
        NOTIFIER_PING_TIMEOUT_S="0.5",
    )
    _, writer = await raw_session(base, token())

    async def sessions() -> float:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{base}/metrics")).text
        return float(
            next(x for x in text.splitlines() if x.startswith("notifier_sessions ")).split()[1]
        )

    await wait_until(lambda: _eq(sessions(), 1.0), 10, what="session open")
    # From now on this client never answers a ping: the server must drop it.
    await wait_until(lambda: _eq(sessions(), 0.0), 10, what="dead session dropped")
    writer.close()


async def _eq(value, expected) -> bool:
    return (await value) == expected
