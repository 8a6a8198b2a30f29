"""The CloudEvents `traceparent` extension: written, read back, and refused when malformed."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from shared.events import decode_event, encode_event, new_event
from shared.events.envelope import INVALID, UnknownEventError
from tests.fixtures.contract import check_event_record
from tests.unit.test_events import _cancelled

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EXAMPLE = Path(__file__).parents[1] / "data" / "events" / "v1" / "QueueCancelled.json"


def _example(**attributes) -> bytes:
    event = json.loads(EXAMPLE.read_text())
    event.update(attributes)
    return json.dumps(event).encode()


def test_an_event_carries_its_traceparent_through_its_wire_form():
    event = new_event(_cancelled(), source="/antrean/cancel-api", traceparent=TP)
    wire = encode_event(event)
    assert orjson.loads(wire)["traceparent"] == TP
    decoded = decode_event(wire)
    assert decoded == event and decoded.traceparent == TP
    check_event_record(b"7", wire)  # the CloudEvents SDK and the checked-in schemas accept it


def test_an_event_without_a_trace_has_no_traceparent_attribute_and_still_decodes():
    wire = encode_event(new_event(_cancelled(), source="/test"))
    assert "traceparent" not in orjson.loads(wire)
    assert decode_event(wire).traceparent is None
    assert decode_event(EXAMPLE.read_bytes()).traceparent is None  # events written before


@pytest.mark.parametrize(
    "value",
    [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # only version 00 here
        TP + " ",
        "trace me",
        "",
        7,
        ["00"],
        {"traceparent": TP},
    ],
)
def test_strict_decoding_refuses_a_malformed_traceparent(value):
    with pytest.raises(UnknownEventError, match="traceparent") as refused:
        decode_event(_example(traceparent=value))
    assert refused.value.reason == INVALID


@pytest.mark.parametrize("value", ["00-nonsense", 7])
def test_the_checked_in_schema_refuses_a_malformed_traceparent(value):
    with pytest.raises(AssertionError, match="traceparent"):
        check_event_record(b"42", _example(traceparent=value))


def test_an_event_cannot_be_made_with_a_malformed_traceparent():
    with pytest.raises(ValidationError):
        new_event(_cancelled(), source="/test", traceparent="00-abc")
