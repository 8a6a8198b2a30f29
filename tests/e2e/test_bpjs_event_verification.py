"""The worker calls BPJS only for what the database confirms; anything else is a dead letter."""

import json
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson
import pytest

from shared.events import CancelledBy, QueueCancelledData, encode_event, new_event
from shared.kafka import make_producer
from tests.e2e.test_bpjs_sync_worker import cancel_bpjs, sync_state, topics
from tests.fixtures.api import read_events
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.e2e


async def insert_ticket(
    dsn: str,
    *,
    seq: int,
    clinic: str = "KLINIK-A",
    payer: str = "BPJS",
    booking: str | None = None,
    cancelled: bool = True,
    name: str = "Pasien Rahasia",
) -> dict:
    """A ticket written straight to the database (no outbox row, so no genuine event)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "insert into queue_ticket (clinic_id, room_id, service_date, ticket_seq, ticket_number,"
            " patient_mrn, patient_name, payer, bpjs, status, cancelled_at, cancelled_by_id,"
            " cancelled_by_name, reason_code, bpjs_sync)"
            " values ($1, 'POLI-UMUM', current_date, $2, $3, 'RM-9', $4, $5, $6::jsonb, $7,"
            "         $8, $9, $10, $11, $12)"
            " returning id, ticket_number",
            clinic,
            1000 + seq,
            f"D-{seq:03d}",
            name,
            payer,
            json.dumps({"booking_code": booking}) if booking else None,
            "cancelled" if cancelled else "waiting",
            datetime.now(UTC) if cancelled else None,
            "u-rina" if cancelled else None,
            "Rina" if cancelled else None,
            "no_show" if cancelled else None,
            "pending" if cancelled and payer == "BPJS" else None,
        )
    finally:
        await conn.close()
    return {
        "id": row["id"],
        "ticket_number": row["ticket_number"],
        "clinic": clinic,
        "booking": booking,
    }


def forged(ticket: dict, **changes) -> QueueCancelledData:
    """A QueueCancelled that matches `ticket` except for `changes`."""
    fields = {
        "queue_id": ticket["id"],
        "clinic_id": ticket["clinic"],
        "room_id": "POLI-UMUM",
        "ticket_number": ticket["ticket_number"],
        "payer": "BPJS",
        "bpjs": {"booking_code": ticket["booking"]},
        "reason_code": "no_show",
        "reason_text": None,
        "cancelled_by": CancelledBy(user_id="u-rina", name="Rina"),
        "cancelled_at": datetime.now(UTC),
        **changes,
    }
    return QueueCancelledData(**fields)


async def publish(kafka: str, topic: str, items: list[tuple[bytes, bytes | None]]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def dead_letters(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch('select key, value, reason, error from dead_letter order by "offset"')
        )
    finally:
        await conn.close()


async def job_count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("select count(*) from bpjs_sync_job"))
    finally:
        await conn.close()


def batal_bookings(sim) -> list[str]:
    return [
        json.loads(r["body"]).get("kodebooking", "")
        for r in sim.requests_log()
        if r["path"].endswith("antrean/batal")
    ]


async def test_forged_queue_cancelled_events_are_dead_lettered_and_never_reach_bpjs(
    api, sim, start_worker, database, infra
):
    worker = start_worker()
    # The victim: another patient's real booking, waiting at BPJS.
    sim.seed_booking("BK-VICTIM")
    victim = await api.register(payer="BPJS", bpjs={"booking_code": "BK-VICTIM"}, name="Korban")
    # Real tickets the forged events name (none has a genuine event on the topic).
    cancelled = await insert_ticket(database, seq=1, booking="BK-TARGET")
    waiting = await insert_ticket(database, seq=2, booking="BK-WAITING", cancelled=False)
    umum = await insert_ticket(database, seq=3, payer="UMUM")
    other_clinic = await insert_ticket(database, seq=4, clinic="KLINIK-B", booking="BK-B")
    for booking in ("BK-TARGET", "BK-WAITING", "BK-B"):
        sim.seed_booking(booking)
    attacks = [
        forged(cancelled, bpjs={"booking_code": "BK-VICTIM"}),  # another patient's booking
        forged(other_clinic, clinic_id="KLINIK-A"),  # the event names the wrong clinic
        forged(waiting),  # the ticket is not cancelled
        forged({**umum, "booking": "BK-VICTIM"}),  # the ticket is not a BPJS ticket
        forged({**cancelled, "id": 987654321}),  # no such ticket
    ]
    await publish(
        infra.kafka,
        api.topic,
        [
            (str(a.queue_id).encode(), encode_event(new_event(a, source="/attacker")))
            for a in attacks
        ],
    )
    await wait_until(lambda: _count_dead_letters(database, 5), timeout=60, what="five dead letters")
    # A genuine cancellation still syncs, so the worker was working all along.
    marker = await cancel_bpjs(api, sim, "BK-MARKER")
    [(_, synced)] = await read_events(infra.kafka, topics(api)[0], expect=1, timeout=60)
    assert synced.payload().queue_id == marker["id"]

    rows = await dead_letters(database)
    by_key = {int(bytes(r["key"])): r["reason"] for r in rows}
    assert by_key == {
        cancelled["id"]: "event_mismatch",
        other_clinic["id"]: "event_mismatch",
        waiting["id"]: "event_mismatch",
        umum["id"]: "event_mismatch",
        987654321: "unknown_ticket",
    }
    assert batal_bookings(sim) == ["BK-MARKER"]
    assert sim.applied_cancellations("antreanrs", "BK-VICTIM") == 0
    assert await job_count(database) == 1  # the marker's only
    assert (await sync_state(database, victim["id"]))["ticket"] is None
    metrics = httpx.get(f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics").text
    assert 'bpjs_worker_events_total{handling="event_mismatch"} 4.0' in metrics
    assert 'bpjs_worker_events_total{handling="unknown_ticket"} 1.0' in metrics
    assert 'bpjs_worker_security_events_total{kind="event_mismatch"} 4.0' in metrics
    logs = worker.logs()
    security = [json.loads(line) for line in logs.splitlines() if '"security_event"' in line]
    assert sorted(e["kind"] for e in security) == ["event_mismatch"] * 4 + ["unknown_ticket"]
    mismatch = next(e for e in security if e["queue_id"] == cancelled["id"])
    assert mismatch["fields"] == ["bpjs.booking_code"] and mismatch["event_clinic_id"] == "KLINIK-A"
    assert "Pasien Rahasia" not in logs and "BK-VICTIM" not in logs


async def _count_dead_letters(dsn: str, n: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("select count(*) from dead_letter")) >= n
    finally:
        await conn.close()


def _bad_events(good_wire: dict) -> dict[str, bytes | None]:
    """Each kind of value the worker cannot decode or validate."""

    def variant(**changes) -> bytes:
        wire = json.loads(json.dumps(good_wire))
        for path, value in changes.items():
            *parents, last = path.split("__")
            target = wire
            for key in parents:
                target = target[key]
            if value is _DROP:
                target.pop(last)
            else:
                target[last] = value
        return orjson.dumps(wire)

    return {
        "not-json": b"<html>not an event</html>",
        "empty": b"",
        "no-value": None,
        "json-list": b"[1, 2, 3]",
        "json-string": b'"QueueCancelled"',
        "unknown-type": variant(type="QueueDeleted"),
        "result-type-on-this-topic": _result_event(good_wire),
        "newer-version": variant(schemaversion=2),
        "version-0": variant(schemaversion=0),
        "version-x": variant(schemaversion="x"),
        "version-string-1": variant(schemaversion="1"),
        "version-true": variant(schemaversion=True),
        "version-null": variant(schemaversion=None),
        "version-missing": variant(schemaversion=_DROP),
        "queue-id-string": variant(data__queue_id=str(good_wire["data"]["queue_id"])),
        "booking-number": variant(data__bpjs={"booking_code": 123}),
        "cancelled-by-string": variant(data__cancelled_by="Rina"),
        "id-not-a-uuid": variant(id="not-a-uuid"),
    }


_DROP = object()


def _result_event(good_wire: dict) -> bytes:
    wire = json.loads(json.dumps(good_wire))
    wire["type"] = "BpjsSynced"
    wire["data"] = {
        "queue_id": wire["data"]["queue_id"],
        "clinic_id": wire["data"]["clinic_id"],
        "ticket_number": wire["data"]["ticket_number"],
        "cancelled_by": wire["data"]["cancelled_by"],
        "cancel_event_id": wire["id"],
        "attempts": 1,
        "bpjs_code": 200,
        "bpjs_message": "Ok",
        "synced_at": wire["time"],
    }
    return orjson.dumps(wire)


async def test_bad_events_are_dead_lettered_and_the_good_event_behind_them_on_the_partition_syncs(
    api, sim, start_worker, database, infra
):
    start_worker()
    sim.seed_booking("BK-GOOD")
    good = await api.register(payer="BPJS", bpjs={"booking_code": "BK-GOOD"}, name="Baik")
    key = str(good["id"]).encode()  # the good event's key: the same partition, in front of it
    template = forged(
        {"id": good["id"], "clinic": "KLINIK-A", "ticket_number": good["ticket_number"],
         "booking": "BK-GOOD"}
    )  # fmt: skip
    good_wire = orjson.loads(encode_event(new_event(template, source="/antrean/cancel-api")))
    bad = _bad_events(good_wire)
    # A well-formed event for a cancelled BPJS ticket whose text PostgreSQL cannot store.
    stored = await insert_ticket(database, seq=5, booking="BK-NUL")
    nul = forged(stored, cancelled_by=CancelledBy(user_id="u-rina", name="Ri\x00na"))
    bad["text-with-nul"] = encode_event(new_event(nul, source="/attacker"))
    await publish(infra.kafka, api.topic, [(key, value) for value in bad.values()])
    assert (await api.cancel(good["id"], json={"reason_code": "no_show"})).status_code == 200

    [(_, synced)] = await read_events(infra.kafka, topics(api)[0], expect=1, timeout=60)
    assert synced.payload().queue_id == good["id"]
    await wait_until(
        lambda: _count_dead_letters(database, len(bad)), timeout=30, what="every dead letter"
    )
    rows = await dead_letters(database)
    assert [None if r["value"] is None else bytes(r["value"]) for r in rows] == list(bad.values())
    undecodable = {"not-json", "empty", "no-value", "json-list", "json-string"}
    assert [r["reason"] for r in rows] == [
        "undecodable" if kind in undecodable else "invalid" for kind in bad
    ]
    assert all(r["error"] for r in rows)
    assert batal_bookings(sim) == ["BK-GOOD"]


async def insert_job(dsn: str, ticket: dict, event_booking: str) -> None:
    """A job as a worker before this check would have recorded it from a forged event."""
    data = forged(ticket, bpjs={"booking_code": event_booking}).model_dump(mode="json")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "insert into bpjs_sync_job (queue_id, cancel_event_id, clinic_id, ticket_number,"
            " service, event_data, first_phase_until, horizon_at)"
            " values ($1, gen_random_uuid(), $2, $3, 'antreanrs', $4::jsonb,"
            "         now() + interval '1 minute', now() + interval '1 day')",
            ticket["id"],
            ticket["clinic"],
            ticket["ticket_number"],
            json.dumps(data),
        )
    finally:
        await conn.close()


async def test_at_each_attempt_the_request_is_built_from_the_ticket_row_not_the_stored_event(
    api, sim, start_worker, database, infra
):
    for booking in ("BK-ROW", "BK-VICTIM", "BK-STILL-WAITING"):
        sim.seed_booking(booking)
    cancelled = await insert_ticket(database, seq=6, booking="BK-ROW")
    waiting = await insert_ticket(database, seq=7, booking="BK-STILL-WAITING", cancelled=False)
    await insert_job(database, cancelled, event_booking="BK-VICTIM")
    await insert_job(database, waiting, event_booking="BK-VICTIM")
    worker = start_worker()

    [(_, synced)] = await read_events(infra.kafka, topics(api)[0], expect=1, timeout=60)
    assert synced.payload().queue_id == cancelled["id"]
    await wait_until(
        lambda: _job_stopped(database, waiting["id"]), timeout=30, what="unfit job stopped"
    )
    assert batal_bookings(sim) == ["BK-ROW"]  # the row's booking, never the stored event's
    assert sim.applied_cancellations("antreanrs", "BK-VICTIM") == 0
    assert (await sync_state(database, waiting["id"]))["ticket"] is None
    metrics = httpx.get(f"http://127.0.0.1:{worker.env['WORKER_PORT']}/metrics").text
    assert 'bpjs_worker_security_events_total{kind="event_mismatch"} 1.0' in metrics


async def _job_stopped(dsn: str, queue_id: int) -> bool:
    job = (await sync_state(dsn, queue_id))["job"]
    return job["last_error_kind"] == "event_mismatch" and job["will_retry"] is False
