"""CloudEvents 1.0 structured-mode envelope with the `schemaversion` extension; encode/decode."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.events.models import EVENT_TYPES, EventData


class UnknownEventError(ValueError):
    """The payload is not a CloudEvent of a type (and version) this code understands."""


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: str = "1.0"
    id: str
    source: str
    type: str
    subject: str | None = None
    time: datetime
    datacontenttype: str = "application/json"
    schemaversion: int = Field(ge=1)
    data: dict[str, Any]

    def payload(self) -> EventData:
        """The typed `data` (validated against the model of this event type)."""
        _, model, _ = EVENT_TYPES[self.type]
        return model.model_validate(self.data)


# Upcasters turn an old payload into the next version: (type, from_version) -> function.
# Version 1 is the first, so none exist yet; a breaking change adds one here and keeps the old
# example payload under tests/ so it must still decode.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def new_event(data: EventData, *, source: str, event_id: str | None = None) -> CloudEvent:
    for type_name, (_, model, version) in EVENT_TYPES.items():
        if isinstance(data, model):
            return CloudEvent(
                id=event_id or str(uuid.uuid4()),
                source=source,
                type=type_name,
                subject=f"queue/{data.queue_id}",
                time=datetime.now(UTC),
                schemaversion=version,
                data=data.model_dump(mode="json"),
            )
    raise UnknownEventError(f"no event type for {type(data).__name__}")


def encode_event(event: CloudEvent) -> bytes:
    return orjson.dumps(event.model_dump(mode="json", exclude_none=False))


def decode_event(raw: bytes | str) -> CloudEvent:
    """Parse and upcast an event; raises UnknownEventError for anything not understood."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnknownEventError(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("type") not in EVENT_TYPES:
        kind = obj.get("type") if isinstance(obj, dict) else type(obj).__name__
        raise UnknownEventError(f"unknown event type: {kind!r}")
    _, model, current = EVENT_TYPES[obj["type"]]
    version = int(obj.get("schemaversion", 1))
    if version > current:
        raise UnknownEventError(f"{obj['type']} schema version {version} is newer than {current}")
    while version < current:
        obj["data"] = UPCASTERS[(obj["type"], version)](obj["data"])
        version += 1
    obj["schemaversion"] = current
    try:
        event = CloudEvent.model_validate(obj)
        model.model_validate(event.data)  # reject payloads that do not fit the contract
    except ValidationError as exc:
        raise UnknownEventError(f"invalid {obj['type']}: {exc.error_count()} error(s)") from exc
    return event
