"""W3C trace context across the cancel flow, and OpenTelemetry spans when an exporter is set.

A trace starts at the cancel API's HTTP request (or continues the caller's `traceparent`), is
stored with the outbox row, travels in the CloudEvent's `traceparent` extension and the Kafka
header of the same name, and is continued by the worker and the notifier. The current context
lives in a context variable: the log processor of shared/logging.py writes its `trace_id` into
every line. OpenTelemetry's SDK is used only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; without
it no span object is made and ids come from the stdlib, so the hot paths stay cheap.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

__all__ = ["SpanKind", "TraceParent"]

# Version 00 exactly as the W3C Trace Context spec writes it (lowercase hex, no all-zero ids).
# A future version is read by its first four fields (the spec's rule for unknown versions).
_HEADER = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# The JSON Schema pattern of the CloudEvent extension: only the version this code writes.
TRACEPARENT_PATTERN = "^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
SAMPLED = 0x01


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One span's place in a trace: what a `traceparent` header carries."""

    trace_id: int
    span_id: int
    flags: int = SAMPLED

    def __str__(self) -> str:
        return f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"


def parse_traceparent(value: str | bytes | None) -> TraceParent | None:
    """The context of a `traceparent` value, or None when it is absent or not valid W3C."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip()  # whitespace around an HTTP header value is not part of it
    m = _HEADER.match(value)
    if m is None:
        return None
    version = m.group(1)
    if version == "ff":
        return None
    # Version 00 is exactly 55 characters; a later version may append "-" and more fields.
    if len(value) != 55 and (version == "00" or value[55] != "-"):
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return TraceParent(trace_id, span_id, int(m.group(4), 16))


def is_canonical(value: str) -> bool:
    """Whether `value` is a valid version-00 `traceparent` (what events carry)."""
    parsed = parse_traceparent(value)
    return parsed is not None and str(parsed) == value


def _new_id(bits: int) -> int:
    value = 0
    while value == 0:  # an all-zero id is invalid
        value = random.getrandbits(bits)
    return value


@dataclass(slots=True)
class ActiveSpan:
    """The current span: its context, and the OpenTelemetry span when tracing is on."""

    traceparent: TraceParent
    otel: Span | None = None

    def set(self, **attributes: Any) -> None:
        if self.otel is not None:
            self.otel.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def rename(self, name: str) -> None:
        if self.otel is not None:
            self.otel.update_name(name)

    def fail(self, description: str) -> None:
        if self.otel is not None:
            self.otel.set_status(Status(StatusCode.ERROR, description))


_CURRENT: ContextVar[ActiveSpan | None] = ContextVar("antrean_trace", default=None)
_INHERIT: Any = object()
_tracer: trace.Tracer | None = None
_provider: Any = None


def current() -> ActiveSpan | None:
    return _CURRENT.get()


def current_traceparent() -> str | None:
    active = _CURRENT.get()
    return None if active is None else str(active.traceparent)


def annotate(**attributes: Any) -> None:
    """Attributes of the current span (nothing when tracing is off)."""
    active = _CURRENT.get()
    if active is not None:
        active.set(**attributes)


def _otel_context(parent: TraceParent | None) -> Any:
    if parent is None:
        return None
    remote = SpanContext(
        parent.trace_id, parent.span_id, is_remote=True, trace_flags=TraceFlags(parent.flags)
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _resolve(parent: TraceParent | str | bytes | None) -> TraceParent | None:
    if parent is _INHERIT:
        active = _CURRENT.get()
        return None if active is None else active.traceparent
    if isinstance(parent, TraceParent) or parent is None:
        return parent
    return parse_traceparent(parent)


class span:  # lowercase: used like a function, `with tracing.span(...) as s:`
    """A child of `parent` (default: the current span; None or an invalid value: a new trace)
    made current for the block. An exception leaving it marks the span failed unless it is one
    of `expected` (a refusal the caller answers, such as a 409). A class rather than a
    generator-based context manager: it runs on every request of the hot paths."""

    __slots__ = ("_active", "_expected", "_token")

    def __init__(
        self,
        name: str,
        *,
        parent: TraceParent | str | bytes | None = _INHERIT,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        up = _resolve(parent)
        tracer = _tracer
        if tracer is None:
            context = TraceParent(
                up.trace_id if up else _new_id(128), _new_id(64), up.flags if up else SAMPLED
            )
            self._active = ActiveSpan(context)
        else:
            attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
            otel = tracer.start_span(name, context=_otel_context(up), kind=kind, attributes=attrs)
            sc = otel.get_span_context()
            self._active = ActiveSpan(
                TraceParent(sc.trace_id, sc.span_id, int(sc.trace_flags)), otel
            )
        self._expected = expected

    def __enter__(self) -> ActiveSpan:
        self._token = _CURRENT.set(self._active)
        return self._active

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        _CURRENT.reset(self._token)
        otel = self._active.otel
        if otel is None:
            return
        if exc is not None and not isinstance(exc, self._expected):
            otel.record_exception(exc)
            self._active.fail(type(exc).__name__)
        otel.end()


def record_span(
    name: str,
    parent: str | None,
    *,
    start_ns: int,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """A finished span from `start_ns` to now under `parent` (a stored `traceparent`): for work
    done for many traces at once, such as a relay's batch. Nothing when tracing is off."""
    tracer = _tracer
    up = parse_traceparent(parent) if tracer is not None else None
    if tracer is None or up is None:
        return
    otel = tracer.start_span(
        name, context=_otel_context(up), kind=kind, attributes=attributes, start_time=start_ns
    )
    otel.end()


def now_ns() -> int:
    return time.time_ns()


def enabled() -> bool:
    return _tracer is not None


def configure(service: str, exporter: Any = None) -> bool:
    """Spans on when `exporter` is given (tests) or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (then
    the OTLP/HTTP exporter and the standard OTEL_* variables apply); True when on."""
    global _tracer, _provider
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if exporter is None and (not endpoint or disabled):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()  # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES first
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Kept to this module (not the global provider): FastAPI's own telemetry and other
    # libraries would otherwise add spans of their own around ours.
    _provider = provider
    _tracer = provider.get_tracer("antrean")
    return True


def shutdown() -> None:
    """Export what is buffered and turn spans off again."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None
