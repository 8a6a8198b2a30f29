"""A cancel's trace in the API process: the request and transaction spans, the outbox row, the
event and its Kafka record share the caller's trace (OpenTelemetry's in-memory exporter)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.events import decode_event
from shared.kafka import KafkaConfig
from shared.tracing import parse_traceparent
from tests.fixtures.api import auth, token
from tests.fixtures.infra import wait_until

pytestmark = pytest.mark.integration

TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def spans():
    """Spans on, into memory, for this test only (requested before `api`, so the app and its
    relay run with them)."""
    exporter = InMemorySpanExporter()
    tracing.configure("cancel-api", exporter=exporter)
    yield exporter
    tracing.shutdown()


async def kafka_record(kafka: KafkaConfig, topic: str, timeout: float = 30.0):
    """The first record of `topic`, with its headers."""
    consumer = AIOKafkaConsumer(
        topic, **kafka.client_kwargs(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        return await asyncio.wait_for(consumer.getone(), timeout)
    finally:
        await consumer.stop()


async def outbox_traceparent(dsn: str, queue_id: int) -> str | None:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "select traceparent from outbox where kafka_key = $1", str(queue_id)
        )
    finally:
        await conn.close()


def by_name(exporter: InMemorySpanExporter, name: str):
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_one_cancel_is_one_trace_from_the_callers_traceparent_to_the_kafka_record(
    spans, api, database, infra
):
    t = await api.register(payer="BPJS", bpjs={"booking_code": "TRACE-1"})
    r = await api.cancel(t["id"], headers={"traceparent": CALLER})
    assert r.status_code == 200, r.text

    [request] = by_name(spans, "POST /antrian_ruangan/batal/{queue_id}")
    [tx] = by_name(spans, "cancel transaction")
    assert request.kind is SpanKind.SERVER
    assert f"{request.context.trace_id:032x}" == TRACE
    assert request.parent is not None and request.parent.span_id == int("b7ad6b7169203331", 16)
    assert request.attributes["queue_id"] == t["id"]
    assert request.attributes["http.response.status_code"] == 200
    assert tx.context.trace_id == request.context.trace_id
    assert tx.parent is not None and tx.parent.span_id == request.context.span_id
    assert tx.attributes["queue_id"] == t["id"]

    # The response names the request's span; the outbox row and the event the transaction's.
    answered = parse_traceparent(r.headers["traceresponse"])
    assert answered is not None and answered.trace_id_hex == TRACE
    assert answered.span_id == request.context.span_id
    stored = await outbox_traceparent(database, t["id"])
    assert stored == f"00-{TRACE}-{tx.context.span_id:016x}-01"

    record = await kafka_record(infra.kafka, api.topic)
    assert decode_event(record.value).traceparent == stored
    assert dict(record.headers)["traceparent"] == stored.encode()
    published = await wait_until(
        lambda: by_name(spans, f"publish {api.topic}"), what="the relay's publish span"
    )
    assert published[0].context.trace_id == tx.context.trace_id
    assert published[0].parent.span_id == tx.context.span_id
    assert published[0].kind is SpanKind.PRODUCER


async def test_an_invalid_traceparent_is_not_trusted_and_a_new_trace_starts(spans, api, database):
    t = await api.register(payer="BPJS", bpjs={"booking_code": "TRACE-2"})
    forged = f"00-{TRACE.upper()}-B7AD6B7169203331-01"
    r = await api.cancel(t["id"], headers={"traceparent": forged})
    assert r.status_code == 200, r.text
    [request] = by_name(spans, "POST /antrian_ruangan/batal/{queue_id}")
    assert request.parent is None
    assert f"{request.context.trace_id:032x}" != TRACE.lower()
    answered = parse_traceparent(r.headers["traceresponse"])
    assert answered is not None and answered.trace_id == request.context.trace_id
    stored = parse_traceparent(await outbox_traceparent(database, t["id"]))
    assert stored is not None and stored.trace_id == request.context.trace_id


async def test_a_refused_cancel_is_traced_without_marking_the_transaction_failed(spans, api):
    t = await api.register(payer="UMUM")
    assert (await api.cancel(t["id"])).status_code == 200
    r = await api.cancel(t["id"], headers={"traceparent": CALLER})
    assert r.status_code == 409
    request = by_name(spans, "POST /antrian_ruangan/batal/{queue_id}")[-1]
    tx = by_name(spans, "cancel transaction")[-1]
    assert tx.parent.span_id == request.context.span_id
    assert request.attributes["http.response.status_code"] == 409
    assert tx.status.is_ok and request.status.is_ok  # a 409 answers the caller: no failure


async def test_without_opentelemetry_the_trace_still_reaches_the_outbox_and_the_response(
    api, database
):
    assert not tracing.enabled()
    t = await api.register(payer="BPJS", bpjs={"booking_code": "TRACE-3"})
    r = await api.cancel(t["id"], headers={"traceparent": CALLER})
    assert r.status_code == 200, r.text
    answered = parse_traceparent(r.headers["traceresponse"])
    stored = parse_traceparent(await outbox_traceparent(database, t["id"]))
    assert answered is not None and stored is not None
    assert answered.trace_id_hex == stored.trace_id_hex == TRACE
    assert len({answered.span_id, stored.span_id, int("b7ad6b7169203331", 16)}) == 3


async def test_a_job_an_admin_creates_without_its_event_continues_the_cancels_trace(api, database):
    """No worker runs here: the admin's retry makes the job from the ticket row, and the job
    takes the trace of the ticket's outbox row."""
    t = await api.register(payer="BPJS", bpjs={"booking_code": "TRACE-4"})
    assert (await api.cancel(t["id"], headers={"traceparent": CALLER})).status_code == 200
    admin = auth(token(perms=["manage bpjs sync"], user="u-admin", name="Admin"))
    r = await api.client.post(f"/bpjs_sync/{t['id']}/retry", headers=admin)
    assert r.status_code == 202, r.text
    conn = await asyncpg.connect(database)
    try:
        job = await conn.fetchrow(
            "select origin, traceparent from bpjs_sync_job where queue_id = $1", t["id"]
        )
    finally:
        await conn.close()
    assert job["origin"] == "admin"
    assert job["traceparent"] == await outbox_traceparent(database, t["id"])
    assert job["traceparent"].startswith(f"00-{TRACE}-")


async def test_the_api_document_declares_traceparent_and_traceresponse_on_every_operation(api):
    doc = (await api.client.get("/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            names = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
            assert "traceparent" in names, (method, path)
            for status, response in operation["responses"].items():
                assert "traceresponse" in response["headers"], (method, path, status)
