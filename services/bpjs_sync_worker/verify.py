"""The database decides what reaches BPJS: a QueueCancelled event is checked against its ticket."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from shared.events import QueueCancelledData
from shared.logging import get_logger

log = get_logger(__name__)

# Dead-letter reasons (stable codes, also the `handling` label of bpjs_worker_events_total).
UNDECODABLE = "undecodable"  # not a JSON object
INVALID = "invalid"  # not a QueueCancelled of a schema version this worker reads
UNKNOWN_TICKET = "unknown_ticket"  # no ticket with the event's queue id
EVENT_MISMATCH = "event_mismatch"  # the ticket row disagrees with the event

# The ticket fields that identify a cancellation at BPJS, per service.
BOOKING_FIELDS: dict[str, tuple[str, ...]] = {
    "antreanrs": ("booking_code",),
    "antreanfktp": ("visit_date", "poli_code", "card_number"),
}
BIGINT_MAX = 2**63 - 1

SECURITY_EVENTS = Counter(
    "bpjs_worker_security_events_total",
    "Events refused because the database does not confirm them (forged or corrupt)",
    ["kind"],
)


@dataclass(frozen=True)
class Ticket:
    """The ticket row a BPJS call is built from (never from the event)."""

    queue_id: int
    clinic_id: str
    status: str
    payer: str
    bpjs: Mapping[str, Any]
    ticket_number: str
    cancelled_by_id: str | None
    reason_code: str | None
    reason_text: str | None

    @classmethod
    def of(cls, row: Mapping[str, Any], prefix: str = "") -> Ticket:
        """From a `queue_ticket` row, or from a job row with the ticket's columns `prefix`ed."""
        bpjs = row[f"{prefix}bpjs"]
        return cls(
            queue_id=row[f"{prefix}id"],
            clinic_id=row[f"{prefix}clinic_id"],
            status=row[f"{prefix}status"],
            payer=row[f"{prefix}payer"],
            bpjs=bpjs if isinstance(bpjs, Mapping) else {},
            ticket_number=row[f"{prefix}ticket_number"],
            cancelled_by_id=row[f"{prefix}cancelled_by_id"],
            reason_code=row[f"{prefix}reason_code"],
            reason_text=row[f"{prefix}reason_text"],
        )

    def booking(self, field: str) -> str:
        value = self.bpjs.get(field)
        return value if isinstance(value, str) else ""


TICKET_COLUMNS = (
    "id, clinic_id, status, payer, bpjs, ticket_number, cancelled_by_id, reason_code, reason_text"
)


def unfit(ticket: Ticket, clinic_id: str) -> list[str]:
    """What makes `ticket` no BPJS cancellation of `clinic_id` (empty: it is one)."""
    problems = []
    if ticket.clinic_id != clinic_id:
        problems.append("clinic_id")
    if ticket.status != "cancelled":
        problems.append("status")
    if ticket.payer != "BPJS":
        problems.append("payer")
    return problems


def mismatches(ticket: Ticket, data: QueueCancelledData, service: str) -> list[str]:
    """The fields where the event disagrees with its ticket row (empty: the row confirms it).

    Names only, never values: the list goes to logs."""
    problems = unfit(ticket, data.clinic_id)
    if ticket.ticket_number != data.ticket_number:
        problems.append("ticket_number")
    if ticket.cancelled_by_id != data.cancelled_by.user_id:
        problems.append("cancelled_by.user_id")
    event_bpjs = data.bpjs or {}
    for field in BOOKING_FIELDS[service]:
        if ticket.bpjs.get(field) != event_bpjs.get(field):
            problems.append(f"bpjs.{field}")
    return problems


def security_event(kind: str, **ids: Any) -> None:
    """One structured line an operator can alert on (ids only: no names, no booking data)."""
    SECURITY_EVENTS.labels(kind).inc()
    log.warning("security_event", kind=kind, **ids)
