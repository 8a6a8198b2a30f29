"""One BPJS cancel is one trace across the processes: the API's request to the worker's BPJS calls
and the notifier's pushes, exported over OTLP/HTTP to a receiver in this test, with the trace in
the events, the Kafka headers and every log line about the ticket."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.fixtures.api import api_env, auth, notifier_env, read_events, token
from tests.fixtures.infra import free_port, wait_until
from tests.integration.test_cancel_tracing import kafka_record

pytestmark = pytest.mark.e2e

TRACE = "5b8efff798038103d269b633813fc60c"
CALLER = f"00-{TRACE}-eee19b7ec3c1b174-01"


@dataclass
class Receiver:
    """A tiny OTLP/HTTP trace receiver: every span it was sent, flattened."""

    url: str
    spans: list[dict] = field(default_factory=list)

    def of(self, service: str, name: str) -> list[dict]:
        return [s for s in self.spans if s["service"] == service and s["name"] == name]


def _flatten(request: ExportTraceServiceRequest) -> list[dict]:
    out = []
    for rs in request.resource_spans:
        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                attributes = {}
                for a in s.attributes:
                    v = a.value
                    attributes[a.key] = (
                        getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
                    )
                out.append(
                    {
                        "service": resource.get("service.name"),
                        "name": s.name,
                        "trace_id": s.trace_id.hex(),
                        "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex() or None,
                        "attributes": attributes,
                    }
                )
    return out


@pytest.fixture
async def otlp() -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}")

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        receiver.spans.extend(_flatten(export))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield receiver
    await runner.cleanup()


def _otel(receiver: Receiver) -> dict[str, str]:
    # Exported every 200 ms instead of 5 s, so the test waits less.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}


def _log_lines(process) -> list[dict]:
    lines = []
    for line in process.logs().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


async def test_a_bpjs_cancel_is_one_trace_from_the_request_to_the_bpjs_calls_and_the_pushes(
    otlp, spawn, start_worker, sim, database, infra, topic_prefix
):
    otel = _otel(otlp)
    api_port, notifier_port = free_port(), free_port()
    api = spawn(
        "services.cancel_api",
        api_env(
            database, infra.kafka_for("api"), topic_prefix, CANCEL_API_PORT=str(api_port), **otel
        ),
        f"http://127.0.0.1:{api_port}/healthz",
    )
    notifier = spawn(
        "services.notifier",
        notifier_env(infra.kafka_for("notifier"), topic_prefix, notifier_port, **otel),
        f"http://127.0.0.1:{notifier_port}/readyz",
    )
    worker = start_worker(**otel)
    sim.seed_booking("TRACE-E2E")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=20) as client:
        body = {
            "room_id": "POLI-UMUM",
            "patient": {"mrn": "RM-T", "name": "Tari"},
            "payer": "BPJS",
            "bpjs": {"booking_code": "TRACE-E2E"},
        }
        r = await client.post("/antrian_ruangan", json=body, headers=auth(token()))
        assert r.status_code == 201, r.text
        queue_id = r.json()["id"]
        r = await client.post(
            f"/antrian_ruangan/batal/{queue_id}",
            json={"reason_code": "no_show"},
            headers={**auth(token()), "traceparent": CALLER},
        )
    assert r.status_code == 200, r.text
    assert r.headers["traceresponse"].startswith(f"00-{TRACE}-")

    # The events: QueueCancelled with the header, BpjsSynced in the same trace.
    cancelled = await kafka_record(infra.kafka, f"{topic_prefix}queue-cancelled")
    header = dict(cancelled.headers)["traceparent"].decode()
    assert header.startswith(f"00-{TRACE}-")
    [(_, synced)] = await read_events(
        infra.kafka, f"{topic_prefix}bpjs-synced", expect=1, timeout=60
    )
    assert synced.payload().queue_id == queue_id
    assert synced.traceparent is not None and synced.traceparent.startswith(f"00-{TRACE}-")

    # The spans, from three processes, of one trace.
    def complete() -> bool:
        return bool(
            otlp.of("bpjs-sync-worker", "bpjs task99")
            and otlp.of("cancel-api", "publish " + f"{topic_prefix}queue-cancelled")
            and otlp.of("bpjs-sync-worker", f"publish {topic_prefix}bpjs-synced")
            and otlp.of("notifier", "push bpjs.synced")
            and otlp.of("notifier", "push queue.cancelled")
        )

    await wait_until(complete, timeout=60, what="the spans of every process")
    mine = [s for s in otlp.spans if s["trace_id"] == TRACE]
    assert {s["service"] for s in mine} == {"cancel-api", "bpjs-sync-worker", "notifier"}
    assert len(mine) == len(
        [s for s in otlp.spans if s["attributes"].get("queue_id") == queue_id]
    ), "a span about this ticket outside its trace"
    [request] = otlp.of("cancel-api", "POST /antrian_ruangan/batal/{queue_id}")
    [tx] = otlp.of("cancel-api", "cancel transaction")
    [record] = otlp.of("bpjs-sync-worker", "record QueueCancelled")
    [attempt] = otlp.of("bpjs-sync-worker", "bpjs sync attempt")
    calls = [s for s in mine if s["name"].startswith("bpjs ") and s is not attempt]
    assert request["parent"] == "eee19b7ec3c1b174"
    assert tx["parent"] == request["span_id"]
    assert header == f"00-{TRACE}-{tx['span_id']}-01"
    assert record["parent"] == tx["span_id"]  # the worker continues the event's trace
    assert attempt["parent"] == record["span_id"]  # the job keeps the recording's context
    assert [c["name"] for c in calls] == ["bpjs batal", "bpjs task99", "bpjs getlisttask"]
    for call in calls:
        assert call["parent"] == attempt["span_id"]
        assert call["attributes"]["queue_id"] == queue_id
        assert (
            call["attributes"]["outcome"] and call["attributes"]["http.response.status_code"] == 200
        )
        assert not any("key" in a or "secret" in a for a in call["attributes"])
    assert synced.traceparent == f"00-{TRACE}-{attempt['span_id']}-01"

    # Every log line about the ticket carries its trace id.
    lines = {
        name: _log_lines(p)
        for name, p in (("api", api), ("worker", worker), ("notifier", notifier))
    }
    about = {
        name: [line for line in found if line.get("queue_id") == queue_id]
        for name, found in lines.items()
    }
    assert about["worker"] and about["notifier"], about
    for name, found in about.items():
        for line in found:
            assert line.get("trace_id") == TRACE, (name, line)
