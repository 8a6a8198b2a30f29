"""The result events of a sync job (BpjsSynced, BpjsSyncFailed), built from the job row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.bpjs import Outcome
from shared.events import BpjsSyncedData, BpjsSyncFailedData, CancelledBy, CloudEvent, new_event

SOURCE = "/antrean/bpjs-sync-worker"


def _ids(job: Any) -> dict[str, Any]:
    data = job["event_data"]
    return {
        "queue_id": job["queue_id"],
        "clinic_id": job["clinic_id"],
        "ticket_number": job["ticket_number"],
        "cancelled_by": CancelledBy.model_validate(data["cancelled_by"]),
        "cancel_event_id": str(job["cancel_event_id"]),
    }


def synced(job: Any, attempts: int, o: Outcome, now: datetime) -> CloudEvent:
    data = BpjsSyncedData(
        **_ids(job),
        attempts=attempts,
        bpjs_code=o.code,
        bpjs_message=o.message or None,
        synced_at=now,
        recovered=bool(job["warned"]),
    )
    return new_event(data, source=SOURCE)


def failed(
    job: Any, attempts: int, kind: str, outcome: Outcome, will_retry: bool, now: datetime
) -> CloudEvent:
    data = BpjsSyncFailedData(
        **_ids(job),
        attempts=attempts,
        error_kind=kind,
        bpjs_code=outcome.code,
        error=outcome.detail or outcome.message or "BPJS tidak dapat dihubungi",
        will_retry=will_retry,
        failed_at=now,
    )
    return new_event(data, source=SOURCE)
