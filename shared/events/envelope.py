"""CloudEvents 1.0 structured-mode envelope (extensions `schemaversion`, `traceparent`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
)

from shared.events.models import EVENT_TYPES, EventData
from shared.tracing import TRACEPARENT_PATTERN, is_canonical

# Why an event was refused (stable codes, e.g. a dead letter's reason): `undecodable` when the
# value is not a JSON object at all, `invalid` when it is one but not an event this code reads.
UNDECODABLE = "undecodable"
INVALID = "invalid"


class UnknownEventError(ValueError):
    """The payload is not a CloudEvent of a type (and version) this code understands."""

    def __init__(self, message: str, reason: str = INVALID) -> None:
        super().__init__(message)
        self.reason = reason


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: str = "application/json"
    schemaversion: int = Field(ge=1)
    # The CloudEvents distributed-tracing extension: the W3C trace context of the change the
    # event describes (docs/EVENTS.md). Optional: events written before it have none.
    traceparent: (
        Annotated[str, WithJsonSchema({"type": "string", "pattern": TRACEPARENT_PATTERN})] | None
    ) = None
    data: dict[str, Any]

    @field_validator("traceparent")
    @classmethod
    def _w3c_traceparent(cls, value: str | None) -> str | None:
        if value is not None and not is_canonical(value):
            raise ValueError("not a W3C traceparent (version 00, lowercase hex, non-zero ids)")
        return value

    def payload(self) -> EventData:
        """The typed `data` (validated against the model of this event type)."""
        _, model, _ = EVENT_TYPES[self.type]
        return model.model_validate(self.data)


# Per type, the envelope with its typed `data`: decoding validates a whole event against it in
# strict JSON mode (no "7" for 7, no 1.0 for 1, no number for a time, no 1 for true).
_TYPED: dict[str, type[BaseModel]] = {
    name: create_model(f"{name}Event", __base__=CloudEvent, data=(model, ...))
    for name, (_, model, _) in EVENT_TYPES.items()
}

# Upcasters turn an old payload into the next version: (type, from_version) -> function.
# Version 1 is the first, so none exist yet; a breaking change adds one here and keeps the old
# example payload under tests/ so it must still decode.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def new_event(
    data: EventData,
    *,
    source: str,
    event_id: str | None = None,
    traceparent: str | None = None,
) -> CloudEvent:
    for type_name, (_, model, version) in EVENT_TYPES.items():
        if isinstance(data, model):
            return CloudEvent(
                id=event_id or str(uuid.uuid4()),
                source=source,
                type=type_name,
                subject=f"queue/{data.queue_id}",
                time=datetime.now(UTC),
                schemaversion=version,
                traceparent=traceparent,
                data=data.model_dump(mode="json"),
            )
    raise UnknownEventError(f"no event type for {type(data).__name__}")


def encode_event(event: CloudEvent) -> bytes:
    # An extension without a value is left out (CloudEvents has no null attributes).
    absent = {"traceparent"} if event.traceparent is None else None
    return orjson.dumps(event.model_dump(mode="json", exclude_none=False, exclude=absent))


def decode_event(raw: bytes | str | None) -> CloudEvent:
    """Parse, check and upcast an event; UnknownEventError (with its `reason`) for anything that
    is not, exactly, an event of a known type and a schema version this code reads."""
    try:
        obj = orjson.loads(raw)  # type: ignore[arg-type]  # None is refused here too
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise UnknownEventError(f"not JSON: {exc}", UNDECODABLE) from exc
    if not isinstance(obj, dict):
        raise UnknownEventError(f"not a JSON object: {type(obj).__name__}", UNDECODABLE)
    type_name = obj.get("type")
    if not isinstance(type_name, str) or type_name not in EVENT_TYPES:
        raise UnknownEventError(f"unknown event type: {_excerpt(type_name)}")
    _, _, current = EVENT_TYPES[type_name]
    version = obj.get("schemaversion")
    # Exactly an integer: a string, float, boolean, null or a missing version is not one.
    if type(version) is not int or not 1 <= version <= current:
        raise UnknownEventError(
            f"{type_name}: schemaversion {_excerpt(version)} is not one of 1..{current}"
        )
    upcast = version < current
    while version < current:
        if not isinstance(obj.get("data"), dict):
            raise UnknownEventError(f"invalid {type_name}: data is not an object")
        obj["data"] = UPCASTERS[(type_name, version)](obj["data"])
        version += 1
    obj["schemaversion"] = current
    try:
        _TYPED[type_name].model_validate_json(orjson.dumps(obj) if upcast else raw, strict=True)  # type: ignore[arg-type]
        return CloudEvent.model_validate(obj)
    except ValidationError as exc:
        where = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors()[:5])
        raise UnknownEventError(
            f"invalid {type_name}: {exc.error_count()} error(s) at {where}"
        ) from exc


def _excerpt(value: Any) -> str:
    """A short, printable form of a refused value (it may be anything an attacker sent)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
