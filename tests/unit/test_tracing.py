"""W3C trace context: parsing `traceparent`, spans without OpenTelemetry, ids in log lines."""

from __future__ import annotations

import io
import json

import pytest
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared import tracing
from shared.logging import configure_logging, get_logger
from shared.tracing import TraceParent, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"

INVALID = [
    "",
    "00",
    f"00-{TRACE}-{SPAN}",
    f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase hex is not W3C
    f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
    f"ff-{TRACE}-{SPAN}-01",  # the forbidden version
    f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
    f"00-{TRACE}-{SPAN}-0",
    f"00-{TRACE}x-{SPAN}-01",
    f"0g-{TRACE}-{SPAN}-01",
    f"00_{TRACE}_{SPAN}_01",
    f"01-{TRACE}-{SPAN}-01x",  # a later version continues only after a "-"
]


def test_a_valid_traceparent_is_read_and_written_back_the_same():
    parsed = parse_traceparent(VALID)
    assert parsed == TraceParent(int(TRACE, 16), int(SPAN, 16), 1)
    assert str(parsed) == VALID and parsed.trace_id_hex == TRACE
    assert parse_traceparent(VALID.encode()) == parsed


def test_a_later_version_is_read_by_its_first_four_fields_and_written_as_version_00():
    parsed = parse_traceparent(f"01-{TRACE}-{SPAN}-00-what-comes-next")
    assert parsed == TraceParent(int(TRACE, 16), int(SPAN, 16), 0)
    assert str(parsed) == f"00-{TRACE}-{SPAN}-00"


def test_whitespace_around_a_header_value_is_not_part_of_it():
    assert parse_traceparent(f" {VALID}\t") == parse_traceparent(VALID)


@pytest.mark.parametrize("value", INVALID)
def test_an_invalid_traceparent_is_refused(value):
    assert parse_traceparent(value) is None
    assert parse_traceparent(value.encode()) is None


def test_none_and_non_ascii_bytes_are_refused():
    assert parse_traceparent(None) is None
    assert parse_traceparent("00-é".encode()) is None


@pytest.mark.parametrize("value", [VALID, f" {VALID} ", f"01-{TRACE}-{SPAN}-00-x", *INVALID])
def test_the_parser_agrees_with_opentelemetrys_propagator(value):
    """Whether a value is accepted, and what it says, as OpenTelemetry's W3C propagator reads it."""
    theirs = get_current_span(TraceContextTextMapPropagator().extract({"traceparent": value}))
    context = theirs.get_span_context()
    ours = parse_traceparent(value)
    assert (ours is not None) == context.is_valid
    if ours is not None:
        assert (ours.trace_id, ours.span_id, ours.flags) == (
            context.trace_id,
            context.span_id,
            int(context.trace_flags),
        )


def test_without_opentelemetry_a_span_continues_its_parent_with_a_new_span_id():
    assert not tracing.enabled()
    assert tracing.current() is None
    with tracing.span("request", parent=VALID) as outer:
        assert outer.otel is None
        assert outer.traceparent.trace_id == int(TRACE, 16)
        assert outer.traceparent.span_id != int(SPAN, 16)
        assert tracing.current_traceparent() == str(outer.traceparent)
        with tracing.span("transaction") as inner:  # the current span is the parent
            assert inner.traceparent.trace_id == int(TRACE, 16)
            assert inner.traceparent.span_id != outer.traceparent.span_id
        assert tracing.current() is outer
    assert tracing.current() is None


def test_an_invalid_or_missing_parent_starts_a_new_sampled_trace():
    with tracing.span("a", parent="00-nonsense") as a, tracing.span("b", parent=None) as b:
        assert a.traceparent.trace_id != b.traceparent.trace_id
        assert a.traceparent.flags == b.traceparent.flags == tracing.SAMPLED
    unsampled = f"00-{TRACE}-{SPAN}-00"
    with tracing.span("c", parent=unsampled) as c:
        assert c.traceparent.flags == 0  # the caller's decision travels on


def test_every_log_line_inside_a_span_carries_its_trace_id():
    out = io.StringIO()
    configure_logging("test", "INFO", json=True, stream=out)
    log = get_logger("test.tracing")
    with tracing.span("request", parent=VALID) as span:
        log.info("inside", queue_id=7)
    log.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == TRACE and inside["queue_id"] == 7
    assert inside["span_id"] == f"{span.traceparent.span_id:016x}"
    assert "trace_id" not in outside
