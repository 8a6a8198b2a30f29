"""Wire models of the cancel API (kept apart from database rows and domain rules)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ReasonCode = Literal["no_show", "re_registration", "data_error", "other"]
Payer = Literal["BPJS", "UMUM", "ASURANSI"]
Status = Literal["waiting", "called", "accepted", "done", "cancelled"]
SyncStatus = Literal["pending", "synced", "failed", "resolved_manually"]


# PostgreSQL text holds no NUL character; names and codes neither start nor end with a blank
# or a control character. Input is validated as sent (never trimmed), so the published schema
# and the validation agree.
TEXT = r"^[^\x00]*$"
NAME = r"^[^\x00-\x20](?:[^\x00]*[^\x00-\x20])?$"
Text = Annotated[str, Field(pattern=TEXT)]
Name = Annotated[str, Field(pattern=NAME)]
BPJS_MAX_FIELDS = 8
BpjsFields = Annotated[
    dict[Annotated[Name, Field(max_length=64)], Annotated[Name, Field(max_length=64)]],
    Field(max_length=BPJS_MAX_FIELDS),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CancelRequest(_In):
    reason_code: ReasonCode = "other"
    reason_text: Text | None = Field(None, max_length=500)


class Patient(_In):
    mrn: Name = Field(min_length=1, max_length=64)
    name: Name = Field(min_length=1, max_length=200)


class RegisterRequest(_In):
    room_id: Name = Field(min_length=1, max_length=64)
    patient: Patient
    payer: Payer
    # Required for (and only for) payer BPJS; its fields depend on the BPJS service (domain).
    bpjs: BpjsFields | None = None


class ResolveRequest(_In):
    note: Text = Field(min_length=1, max_length=2000)


class CancelledByOut(BaseModel):
    user_id: str
    name: str


class QueueOut(BaseModel):
    id: int
    clinic_id: str
    room_id: str
    ticket_number: str
    patient: dict[str, str]
    payer: Payer
    bpjs: dict[str, Any] | None
    status: Status
    created_at: datetime
    cancelled_at: datetime | None
    cancelled_by: CancelledByOut | None
    reason_code: ReasonCode | None
    reason_text: str | None
    bpjs_sync: SyncStatus | None
    service_date: date


class QueueList(BaseModel):
    items: list[QueueOut]


class CancelResponse(BaseModel):
    queue: QueueOut
    bpjs_sync: Literal["pending", "not_required"]
    message: str


def queue_out(row: Any) -> dict[str, Any]:
    """A `Queue` object (docs/API.md) from a queue_ticket row (JSON-ready)."""
    by = None
    if row["cancelled_by_id"] is not None:
        by = {"user_id": row["cancelled_by_id"], "name": row["cancelled_by_name"]}
    return {
        "id": row["id"],
        "clinic_id": row["clinic_id"],
        "room_id": row["room_id"],
        "ticket_number": row["ticket_number"],
        "patient": {"mrn": row["patient_mrn"], "name": row["patient_name"]},
        "payer": row["payer"],
        "bpjs": row["bpjs"],
        "status": row["status"],
        "created_at": _iso(row["created_at"]),
        "cancelled_at": _iso(row["cancelled_at"]),
        "cancelled_by": by,
        "reason_code": row["reason_code"],
        "reason_text": row["reason_text"],
        "bpjs_sync": row["bpjs_sync"],
        "service_date": row["service_date"].isoformat(),
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")
