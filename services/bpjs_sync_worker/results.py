"""The result events of a sync job (BpjsSynced, BpjsSyncFailed), built from the job row and the
change the state machine decided."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import tracing
from shared.events import BpjsSyncedData, BpjsSyncFailedData, CancelledBy, CloudEvent, new_event
from shared.sync_job.machine import Change

SOURCE = "/antrean/bpjs-sync-worker"
# A warning that went out while no call could be made (the breaker held them all).
HELD = "BPJS sedang tidak dapat dihubungi (panggilan ditahan circuit breaker)"


def _ids(job: Any) -> dict[str, Any]:
    data = job["event_data"]
    return {
        "queue_id": job["queue_id"],
        "clinic_id": job["clinic_id"],
        "ticket_number": job["ticket_number"],
        "cancelled_by": CancelledBy.model_validate(data["cancelled_by"]),
        "cancel_event_id": str(job["cancel_event_id"]),
    }


def build(job: Any, change: Change, now: datetime) -> CloudEvent:
    """The event `change.emit` names, for the job row `job` (as it was before the change), in
    the trace of the current span (an attempt), else of the job (a warning from a sweeper)."""
    assert change.emit is not None
    call = change.attempt
    code = call.code if call is not None else job["last_bpjs_code"]
    message = (call.message if call is not None else job["last_bpjs_message"]) or None
    data: BpjsSyncedData | BpjsSyncFailedData
    if change.emit.type == "BpjsSynced":
        data = BpjsSyncedData(
            **_ids(job),
            attempts=change.job.attempts,
            bpjs_code=code,
            bpjs_message=message,
            synced_at=now,
            recovered=change.emit.recovered,
        )
    else:
        data = BpjsSyncFailedData(
            **_ids(job),
            attempts=change.job.attempts,
            error_kind=change.emit.error_kind,
            bpjs_code=code,
            error=change.error or job["last_error"] or HELD,
            will_retry=change.emit.will_retry,
            failed_at=now,
        )
    traceparent = tracing.current_traceparent() or job.get("traceparent")
    return new_event(data, source=SOURCE, traceparent=traceparent)
