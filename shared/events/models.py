"""Event payloads (`data`) of QueueCancelled, BpjsSynced and BpjsSyncFailed, schema version 1."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TOPIC_QUEUE_CANCELLED = "queue-cancelled"
TOPIC_BPJS_SYNCED = "bpjs-synced"
TOPIC_BPJS_SYNC_FAILED = "bpjs-sync-failed"

ReasonCode = Literal["no_show", "re_registration", "data_error", "other"]
Payer = Literal["BPJS", "UMUM", "ASURANSI"]


class _Wire(BaseModel):
    # Frozen, and tolerant of fields added by newer producers (adding an optional field keeps
    # the schema version).
    model_config = ConfigDict(frozen=True, extra="ignore")


class CancelledBy(_Wire):
    user_id: str
    name: str


class QueueCancelledData(_Wire):
    queue_id: int
    clinic_id: str
    room_id: str
    ticket_number: str
    payer: Payer
    bpjs: dict[str, str] | None
    reason_code: ReasonCode | None
    reason_text: str | None
    cancelled_by: CancelledBy
    cancelled_at: datetime

    @classmethod
    def of_ticket(
        cls,
        row: Mapping[str, Any],
        *,
        reason_code: ReasonCode | None,
        reason_text: str | None,
        cancelled_by: CancelledBy,
        cancelled_at: datetime,
    ) -> QueueCancelledData:
        """The event of a `queue_ticket` row's cancellation with these cancel fields."""
        return cls(
            queue_id=row["id"],
            clinic_id=row["clinic_id"],
            room_id=row["room_id"],
            ticket_number=row["ticket_number"],
            payer=row["payer"],
            bpjs=row["bpjs"],
            reason_code=reason_code,
            reason_text=reason_text,
            cancelled_by=cancelled_by,
            cancelled_at=cancelled_at,
        )


class BpjsSyncedData(_Wire):
    queue_id: int
    clinic_id: str
    ticket_number: str
    cancelled_by: CancelledBy
    cancel_event_id: str
    attempts: int
    bpjs_code: int | None
    bpjs_message: str | None
    synced_at: datetime
    recovered: bool = False


class BpjsSyncFailedData(_Wire):
    queue_id: int
    clinic_id: str
    ticket_number: str
    cancelled_by: CancelledBy
    cancel_event_id: str
    attempts: int
    # rejected: BPJS refused; unreachable: BPJS not answering; auth_error: BPJS refused our
    # credentials or clock (retried); not_recorded: BPJS said yes but its record read back does
    # not show it (retried); no_credentials: the clinic is missing from BPJS_CREDENTIALS_FILE,
    # nothing was sent. Readers refuse a value they do not know, so a new value needs readers
    # deployed first (docs/EVENTS.md).
    error_kind: Literal["rejected", "unreachable", "auth_error", "not_recorded", "no_credentials"]
    bpjs_code: int | None
    error: str
    will_retry: bool
    failed_at: datetime


EventData = QueueCancelledData | BpjsSyncedData | BpjsSyncFailedData

# type -> (topic, data model, current schema version)
EVENT_TYPES: dict[str, tuple[str, type[EventData], int]] = {
    "QueueCancelled": (TOPIC_QUEUE_CANCELLED, QueueCancelledData, 1),
    "BpjsSynced": (TOPIC_BPJS_SYNCED, BpjsSyncedData, 1),
    "BpjsSyncFailed": (TOPIC_BPJS_SYNC_FAILED, BpjsSyncFailedData, 1),
}
