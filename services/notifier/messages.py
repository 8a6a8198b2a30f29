"""Pure mapping of events to websocket messages, and the routing rules (docs/WEBSOCKET.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from shared.auth import PERM_MANAGE_BPJS, Principal
from shared.events import CloudEvent

BPJS_WARNING = (
    "Pembatalan berhasil, namun terjadi masalah sinkronisasi dengan BPJS. "
    "Silakan hubungi administrator jika diperlukan."
)


@dataclass(frozen=True)
class Routed:
    """A message ready to send (minus its cursor) and what decides who receives it."""

    event_id: str
    clinic_id: str
    kind: Literal["queue", "bpjs"]
    room_id: str | None
    cancelling_user: str | None
    body: dict[str, Any]
    traceparent: str | None = None  # the event's trace context, continued by the push


@dataclass(frozen=True)
class Audience:
    """Who a session is: its user, clinic, whether it manages BPJS sync, and its rooms."""

    user_id: str
    clinic_id: str
    manages_bpjs: bool
    rooms: frozenset[str] | None = None  # None: every room of the clinic

    @classmethod
    def of(cls, who: Principal) -> Audience:
        return cls(who.user_id, who.clinic_id, who.can(PERM_MANAGE_BPJS))


def to_message(event: CloudEvent) -> Routed | None:
    """The websocket message of an event, or None for an event the UI does not need."""
    d = event.data
    clinic = str(d["clinic_id"])
    by = d.get("cancelled_by") or {}
    common = {"event_id": event.id, "queue_id": d["queue_id"], "ticket_number": d["ticket_number"]}
    if event.type == "QueueCancelled":
        body = {
            "type": "queue.cancelled",
            **common,
            "room_id": d["room_id"],
            "payer": d["payer"],
            "cancelled_by": {"user_id": by.get("user_id"), "name": by.get("name")},
        }
        room = str(d["room_id"])
        return Routed(event.id, clinic, "queue", room, None, body, event.traceparent)
    if event.type == "BpjsSynced":
        body = {"type": "bpjs.synced", **common, "recovered": bool(d.get("recovered", False))}
    elif event.type == "BpjsSyncFailed":
        body = {
            "type": "bpjs.sync_failed",
            **common,
            "will_retry": bool(d["will_retry"]),
            "message": BPJS_WARNING,
        }
    else:
        return None
    return Routed(event.id, clinic, "bpjs", None, by.get("user_id"), body, event.traceparent)


def delivers(audience: Audience, msg: Routed) -> bool:
    """Whether a session receives a message; nothing ever crosses clinics."""
    if audience.clinic_id != msg.clinic_id:
        return False
    if msg.kind == "queue":
        return audience.rooms is None or msg.room_id in audience.rooms
    return audience.manages_bpjs or audience.user_id == msg.cancelling_user
