"""The CloudEvents envelope and the event models of CONTRACT.md §5."""

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from shared.events import (
    BpjsSyncedData,
    CancelledBy,
    QueueCancelledData,
    decode_event,
    encode_event,
    new_event,
)
from shared.events.envelope import UnknownEventError

EXAMPLES = sorted((Path(__file__).parents[1] / "data" / "events").glob("v*/*.json"))


def _cancelled() -> QueueCancelledData:
    return QueueCancelledData(
        queue_id=7,
        clinic_id="K1",
        room_id="POLI-UMUM",
        ticket_number="U-007",
        payer="BPJS",
        bpjs={"booking_code": "2024/01/31/000123"},
        reason_code="no_show",
        reason_text=None,
        cancelled_by=CancelledBy(user_id="u1", name="Rina"),
        cancelled_at=datetime.now(UTC),
    )


def test_event_round_trips_through_its_wire_form():
    event = new_event(_cancelled(), source="/test")
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.payload() == _cancelled().model_copy(
        update={"cancelled_at": event.payload().cancelled_at}
    )


def test_envelope_has_cloudevents_attributes_and_schema_version():
    wire = orjson.loads(encode_event(new_event(_cancelled(), source="/test")))
    assert wire["specversion"] == "1.0"
    assert wire["type"] == "QueueCancelled"
    assert wire["schemaversion"] == 1
    assert wire["subject"] == "queue/7"
    assert {"id", "source", "time", "data"} <= wire.keys()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_kept_example_payloads_still_decode(path):
    event = decode_event(path.read_bytes())
    assert event.type == path.stem
    event.payload()


def test_unknown_fields_are_tolerated():
    wire = orjson.loads(EXAMPLES[0].read_bytes())
    wire["futurefield"] = 1
    wire["data"]["future_optional"] = "x"
    assert decode_event(orjson.dumps(wire)).id == wire["id"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda w: w.update(type="Nope"),
        lambda w: w.update(schemaversion=99),
        lambda w: w["data"].pop("queue_id"),
        lambda w: w["data"].update(payer="CASH"),
    ],
    ids=["unknown-type", "newer-version", "missing-field", "bad-enum"],
)
def test_events_that_do_not_fit_the_contract_are_refused(mutate):
    wire = orjson.loads(next(p for p in EXAMPLES if p.stem == "QueueCancelled").read_bytes())
    mutate(wire)
    with pytest.raises(UnknownEventError):
        decode_event(orjson.dumps(wire))


def test_non_json_is_refused():
    with pytest.raises(UnknownEventError):
        decode_event(b"<html>")


def test_models_are_frozen():
    data = BpjsSyncedData(
        queue_id=1,
        clinic_id="K",
        ticket_number="A-1",
        cancelled_by=CancelledBy(user_id="u", name="n"),
        cancel_event_id="e",
        attempts=1,
        bpjs_code=200,
        bpjs_message="Ok",
        synced_at=datetime.now(UTC),
    )
    with pytest.raises(ValidationError):
        data.attempts = 2  # type: ignore[misc]
