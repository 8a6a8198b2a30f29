"""Notifier rules without I/O: event -> message mapping, routing, cursors, session queues."""

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import generate_latest

from services.notifier import cursor
from services.notifier.config import NotifierSettings
from services.notifier.hub import Hub, RawRecord, Resync
from services.notifier.messages import BPJS_WARNING, Audience, delivers, to_message
from services.notifier.metrics import NotifierMetrics
from services.notifier.session import CLOSE_TOO_SLOW, Session
from shared.events import (
    BpjsSyncedData,
    BpjsSyncFailedData,
    CancelledBy,
    QueueCancelledData,
    encode_event,
    new_event,
)
from tests.fixtures.infra import wait_until

BY = CancelledBy(user_id="u-rina", name="Rina")


def cancelled(clinic="K1", room="POLI-UMUM", qid=7):
    return new_event(
        QueueCancelledData(
            queue_id=qid,
            clinic_id=clinic,
            room_id=room,
            ticket_number="A-007",
            payer="UMUM",
            bpjs=None,
            reason_code="other",
            reason_text=None,
            cancelled_by=BY,
            cancelled_at=datetime.now(UTC),
        ),
        source="t",
    )


def failed(clinic="K1"):
    return new_event(
        BpjsSyncFailedData(
            queue_id=7,
            clinic_id=clinic,
            ticket_number="A-007",
            cancelled_by=BY,
            cancel_event_id="e",
            attempts=5,
            error_kind="rejected",
            bpjs_code=201,
            error="x",
            will_retry=False,
            failed_at=datetime.now(UTC),
        ),
        source="t",
    )


def synced(recovered=True):
    return new_event(
        BpjsSyncedData(
            queue_id=7,
            clinic_id="K1",
            ticket_number="A-007",
            cancelled_by=BY,
            cancel_event_id="e",
            attempts=2,
            bpjs_code=200,
            bpjs_message="Ok",
            synced_at=datetime.now(UTC),
            recovered=recovered,
        ),
        source="t",
    )


def test_queue_cancelled_maps_to_the_contract_fields():
    ev = cancelled()
    msg = to_message(ev)
    assert msg is not None and msg.kind == "queue" and msg.room_id == "POLI-UMUM"
    assert msg.body == {
        "type": "queue.cancelled",
        "event_id": ev.id,
        "queue_id": 7,
        "room_id": "POLI-UMUM",
        "ticket_number": "A-007",
        "payer": "UMUM",
        "cancelled_by": {"user_id": "u-rina", "name": "Rina"},
    }


def test_bpjs_outcomes_map_with_the_exact_warning_text():
    warn = to_message(failed())
    assert warn is not None and warn.cancelling_user == "u-rina"
    assert warn.body["type"] == "bpjs.sync_failed" and warn.body["will_retry"] is False
    assert (
        warn.body["message"]
        == BPJS_WARNING
        == (
            "Pembatalan berhasil, namun terjadi masalah sinkronisasi dengan BPJS. "
            "Silakan hubungi administrator jika diperlukan."
        )
    )
    ok = to_message(synced())
    assert ok is not None and ok.body["type"] == "bpjs.synced" and ok.body["recovered"] is True


def test_routing_by_clinic_room_user_and_permission():
    q, b = to_message(cancelled(room="R1")), to_message(failed())
    assert q is not None and b is not None
    staff = Audience("u-budi", "K1", manages_bpjs=False)
    assert delivers(staff, q) and not delivers(staff, b)
    assert delivers(Audience("u-rina", "K1", False), b)
    assert delivers(Audience("u-adm", "K1", True), b)
    assert not delivers(Audience("u-rina", "K2", True), b)  # never across clinics
    assert not delivers(Audience("u-x", "K2", False), q)
    assert not delivers(Audience("u-x", "K1", False, frozenset({"R2"})), q)
    assert delivers(Audience("u-x", "K1", False, frozenset({"R1"})), q)


def test_cursor_round_trips_and_rejects_garbage():
    pos = {("queue-cancelled", 0): 12, ("bpjs-synced", 3): 0}
    assert cursor.decode(cursor.encode(pos)) == pos
    for bad in ("", "!!!", "e30", cursor.encode({}).replace("e", "x"), "W1tdXQ"):
        with pytest.raises(cursor.CursorError):
            cursor.decode(bad)
    assert cursor.maximum({("a", 0): 3}, {("a", 0): 1, ("b", 0): 2}) == {("a", 0): 3, ("b", 0): 2}


def test_defaults_follow_the_contract():
    s = NotifierSettings.from_env()
    assert s.port == 8001 and s.auth_deadline_s == 10.0 and s.http_host == "127.0.0.1"
    assert s.replay_window_s >= 24 * 3600  # resume works for at least 24 hours
    assert (s.max_connections, s.max_connections_per_user, s.ops_port) == (10000, 20, 8011)
    assert (s.gc_freeze_every_s, s.gc_full_every_s, s.gc_full_after_closed) == (1.0, 3600.0, 1000)


def test_a_full_gc_pass_scheduled_more_often_than_the_freeze_is_refused(monkeypatch):
    monkeypatch.setenv("NOTIFIER_GC_FREEZE_EVERY_S", "60")
    monkeypatch.setenv("NOTIFIER_GC_FULL_EVERY_S", "30")
    with pytest.raises(ValueError, match="NOTIFIER_GC_FULL_EVERY_S"):
        NotifierSettings.from_env()
    monkeypatch.setenv("NOTIFIER_GC_FREEZE_EVERY_S", "0")  # off: the full period is unused
    assert NotifierSettings.from_env().gc_freeze_every_s == 0
    monkeypatch.setenv("NOTIFIER_GC_FULL_AFTER_CLOSED", "-1")
    with pytest.raises(ValueError, match="NOTIFIER_GC_FULL_AFTER_CLOSED"):
        NotifierSettings.from_env()


class FakeSocket:
    """Takes writes at once unless `stall`ed; a stalled one takes them only through `send`."""

    def __init__(self, stall: bool = False) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.stall = asyncio.Event() if stall else None

    def write_now(self, frame: bytes) -> bool:
        if self.stall is not None:
            return False
        assert frame[0] == 0x81  # one final text frame, unmasked, payload after the length
        self.sent.append(frame[4:].decode() if frame[1] == 126 else frame[2:].decode())
        return True

    async def send(self, data: bytes) -> None:
        if self.stall is not None:
            await self.stall.wait()
        self.sent.append(data.decode())

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


def sent_total(metrics: NotifierMetrics, kind: str) -> float | None:
    return metrics.registry.get_sample_value("notifier_messages_sent_total", {"type": kind})


def record(offset: int, ev) -> RawRecord:
    return RawRecord(("queue-cancelled", 0), offset, offset, encode_event(ev))


async def test_a_stalled_session_is_closed_and_never_delays_the_others():
    metrics = NotifierMetrics()

    async def no_kafka(_):
        raise AssertionError("not needed")

    hub = Hub(metrics, no_kafka, history_per_partition=100, replay_concurrency=1)
    hub.start({("queue-cancelled", 0): 0})
    fast_ws, slow_ws = FakeSocket(), FakeSocket(stall=True)
    fast, slow = (Session(ws, Audience("u", "K1", False), 5, metrics) for ws in (fast_ws, slow_ws))
    for s in (fast, slow):
        hub.add(s)
        s.release()
    for i in range(20):
        hub.ingest([record(i, cancelled(qid=i + 1))])
    assert slow.closed and len(fast_ws.sent) == 20
    assert slow_ws.sent == []  # its backlog was dropped, the client resumes from its cursor
    assert sent_total(metrics, "queue.cancelled") == 20  # what was written, not what was offered
    await asyncio.wait_for(slow.closing(), 5)
    assert slow_ws.closed_with == CLOSE_TOO_SLOW and fast_ws.closed_with is None


async def test_a_slow_session_gets_its_backlog_in_order_once_the_peer_reads():
    metrics = NotifierMetrics()
    hub = Hub(metrics, None, history_per_partition=100, replay_concurrency=1)  # type: ignore[arg-type]
    hub.start({("queue-cancelled", 0): 0})
    ws = FakeSocket(stall=True)
    s = Session(ws, Audience("u", "K1", False), 50, metrics)
    hub.add(s)
    s.release()
    hub.ingest([record(i, cancelled(qid=i + 1)) for i in range(10)])
    assert ws.sent == [] and len(s.backlog) == 10 and not s.closed
    stalled, ws.stall = ws.stall, None  # the peer reads again: the writer drains the backlog,
    assert stalled is not None
    stalled.set()  # then writes go straight to the socket again
    await wait_until(lambda: not s.backlog, 5, what="the backlog drained")
    hub.ingest([record(10, cancelled(qid=11))])
    ids = [orjson.loads(m)["queue_id"] for m in ws.sent]
    assert ids == list(range(1, 12)) and s.writer is None
    # Counted once each, whether written at once or from the backlog; the control message too.
    assert sent_total(metrics, "queue.cancelled") == 11
    s.send_control({"type": "pong"})
    assert sent_total(metrics, "pong") == 1
    exposed = generate_latest(metrics.registry).decode()
    assert 'notifier_messages_sent_total{type="queue.cancelled"} 11.0' in exposed


async def test_duplicated_delivery_is_sent_once():
    metrics = NotifierMetrics()
    hub = Hub(metrics, None, history_per_partition=100, replay_concurrency=1)  # type: ignore[arg-type]
    hub.start({("queue-cancelled", 0): 0})
    ws = FakeSocket()
    s = Session(ws, Audience("u", "K1", False), 50, metrics)
    hub.add(s)
    s.release()
    ev = cancelled()
    hub.ingest([record(0, ev), record(1, ev), record(2, cancelled(qid=9))])
    assert [orjson.loads(m)["queue_id"] for m in ws.sent] == [7, 9]  # qid 7: the default


async def test_resume_replays_within_its_bounds_and_answers_resync_beyond_them():
    metrics, tp, now = NotifierMetrics(), ("queue-cancelled", 0), int(time.time() * 1000)
    # Offsets 0-12 in "Kafka" (0-4 older than the window); the hub started at 10 and holds
    # 10-12 in memory. Odd offsets are of clinic K2.
    events = [encode_event(cancelled(f"K{i % 2 + 1}", qid=i + 1)) for i in range(13)]
    kafka = [RawRecord(tp, i, now - (7_200_000 if i < 5 else 0), v) for i, v in enumerate(events)]
    reads: list[dict] = []

    async def read_range(ranges, convert):
        reads.append(ranges)
        return {t: [e for r in kafka[a:b] if (e := convert(r))] for t, (a, b) in ranges.items()}

    hub = Hub(
        metrics, read_range, history_per_partition=100, replay_concurrency=1,
        replay_window_s=3600, max_replay_records=10,
    )  # fmt: skip
    hub.start({tp: 10})
    hub.ingest(kafka[10:])

    async def resume(raw: object) -> list[int]:
        ws = FakeSocket()
        session = Session(ws, Audience("u", "K1", False), 50, metrics)  # type: ignore[arg-type]
        await hub.resume(session, raw)
        return [orjson.loads(m)["queue_id"] for m in ws.sent]

    assert await resume(cursor.encode({tp: 11})) == [13]  # from memory: no read
    assert await resume(cursor.encode({tp: 5})) == [7, 9, 11, 13]  # K1 only, in order
    assert reads == [{tp: (5, 13)}]
    for raw, reason in [
        ("", "empty"),
        (None, "empty"),
        (cursor.encode({("elsewhere", 0): 0}), "empty"),
        ("!!!", "malformed"),
        (7, "malformed"),
        (cursor.encode({tp: 10**6}), "malformed"),  # far ahead of every offset we have
        (cursor.encode({tp: 2}), "too_many"),  # 11 missed records, the limit is 10
        (cursor.encode({tp: 4}), "too_old"),  # offset 4 is older than the window
    ]:
        with pytest.raises(Resync) as info:
            await resume(raw)
        assert info.value.reason == reason, raw
    assert len(reads) == 2  # besides the replay, only the too_old resume read anything


def test_skipped_events_are_counted_by_reason_and_the_partition_goes_on():
    metrics = NotifierMetrics()
    hub = Hub(metrics, None, history_per_partition=100, replay_concurrency=1)  # type: ignore[arg-type]
    tp = ("queue-cancelled", 0)
    hub.start({tp: 0})
    ws = FakeSocket()
    s = Session(ws, Audience("u", "K1", False), 50, metrics)
    hub.add(s)
    s.release()
    good = orjson.loads(encode_event(cancelled()))
    bad = [
        None,
        b"{",
        orjson.dumps({**good, "type": "Nope"}),
        orjson.dumps({**good, "schemaversion": "x"}),
        orjson.dumps({**good, "data": {**good["data"], "queue_id": "abc"}}),
    ]
    hub.ingest([RawRecord(tp, i, i, v) for i, v in enumerate([*bad, encode_event(cancelled())])])
    assert [orjson.loads(m)["queue_id"] for m in ws.sent] == [7]
    skipped = {
        s.labels["reason"]: s.value
        for s in metrics.skipped.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert sum(skipped.values()) == len(bad) and skipped["empty"] == 1
    assert skipped["not_json"] == 1 and skipped["unknown_type"] == 1
