"""Wire models of the cancel API (kept apart from database rows and domain rules)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ReasonCode = Literal["no_show", "re_registration", "data_error", "other"]
Payer = Literal["BPJS", "UMUM", "ASURANSI"]
Status = Literal["waiting", "called", "accepted", "done", "cancelled"]
SyncStatus = Literal["pending", "synced", "failed", "resolved_manually"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CancelRequest(_In):
    reason_code: ReasonCode = "other"
    reason_text: str | None = Field(None, max_length=500)


class Patient(_In):
    mrn: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)


class RegisterRequest(_In):
    room_id: str = Field(min_length=1, max_length=64)
    patient: Patient
    payer: Payer
    bpjs: dict[str, str] | None = None

    @field_validator("bpjs")
    @classmethod
    def _small(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None and (len(v) > 8 or any(len(x) > 64 for x in v.values())):
            raise ValueError("bpjs has too many or too long fields")
        return v


class ResolveRequest(_In):
    note: str = Field(min_length=1, max_length=2000)


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
