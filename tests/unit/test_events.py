"""The CloudEvents envelope and the event models (docs/EVENTS.md)."""

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


def _example(type_name: str = "QueueCancelled") -> dict:
    return orjson.loads(next(p for p in EXAMPLES if p.stem == type_name).read_bytes())


def _set(path: str, value):
    def mutate(wire: dict) -> None:
        *parents, last = path.split(".")
        target = wire
        for key in parents:
            target = target[key]
        if value is _DROP:
            target.pop(last)
        else:
            target[last] = value

    return mutate


_DROP = object()
STRICT_CASES = {
    "version-0": _set("schemaversion", 0),
    "version-x": _set("schemaversion", "x"),
    "version-string-1": _set("schemaversion", "1"),
    "version-true": _set("schemaversion", True),
    "version-null": _set("schemaversion", None),
    "version-missing": _set("schemaversion", _DROP),
    "version-float": _set("schemaversion", 1.0),
    "version-2": _set("schemaversion", 2),
    "type-missing": _set("type", _DROP),
    "type-not-a-string": _set("type", ["QueueCancelled"]),
    "specversion-0.3": _set("specversion", "0.3"),
    "id-empty": _set("id", ""),
    "id-number": _set("id", 7),
    "time-number": _set("time", 1764208800),
    "time-garbage": _set("time", "yesterday"),
    "data-not-object": _set("data", "queue 123"),
    "queue-id-string": _set("data.queue_id", "123"),
    "queue-id-float": _set("data.queue_id", 123.0),
    "queue-id-bool": _set("data.queue_id", True),
    "clinic-number": _set("data.clinic_id", 1),
    "booking-number": _set("data.bpjs", {"booking_code": 16032021}),
    "bpjs-list": _set("data.bpjs", ["16032021A001"]),
    "cancelled-by-string": _set("data.cancelled_by", "Rina"),
    "cancelled-at-missing": _set("data.cancelled_at", _DROP),
}


@pytest.mark.parametrize("mutate", STRICT_CASES.values(), ids=STRICT_CASES.keys())
def test_the_decoder_refuses_anything_but_exact_types_and_a_known_version(mutate):
    wire = _example()
    mutate(wire)
    with pytest.raises(UnknownEventError) as info:
        decode_event(orjson.dumps(wire))
    assert info.value.reason == "invalid"


@pytest.mark.parametrize(
    "raw",
    [b"<html>not an event</html>", b"", b"[1, 2]", b'"QueueCancelled"', b"null", b"7", None],
    ids=["html", "empty", "list", "string", "null", "number", "no-value"],
)
def test_values_that_are_not_a_json_object_are_undecodable(raw):
    with pytest.raises(UnknownEventError) as info:
        decode_event(raw)
    assert info.value.reason == "undecodable"


def test_a_result_event_with_the_new_no_credentials_kind_decodes():
    wire = _example("BpjsSyncFailed")
    wire["data"].update(error_kind="no_credentials", will_retry=False)
    assert decode_event(orjson.dumps(wire)).payload().error_kind == "no_credentials"


def test_a_refusal_names_the_field_but_not_the_value():
    wire = _example()
    wire["data"]["bpjs"] = {"booking_code": 16032021}
    with pytest.raises(UnknownEventError) as info:
        decode_event(orjson.dumps(wire))
    assert "data.bpjs.booking_code" in str(info.value) and "16032021" not in str(info.value)


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
