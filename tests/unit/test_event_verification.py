"""What the worker compares between a QueueCancelled event and its ticket row (pure)."""

from datetime import UTC, datetime

import pytest

from services.bpjs_sync_worker.verify import Ticket, mismatches, unfit
from shared.events import CancelledBy, QueueCancelledData

FKTP = {"card_number": "0000045258563", "poli_code": "001", "visit_date": "2026-11-27"}


def row(**changes):
    base = {
        "id": 7,
        "clinic_id": "K1",
        "status": "cancelled",
        "payer": "BPJS",
        "bpjs": {"booking_code": "BK-1"},
        "ticket_number": "U-007",
        "cancelled_by_id": "u1",
        "reason_code": "no_show",
        "reason_text": None,
    }
    return Ticket.of({**base, **changes})


def event(**changes) -> QueueCancelledData:
    base = {
        "queue_id": 7,
        "clinic_id": "K1",
        "room_id": "POLI-UMUM",
        "ticket_number": "U-007",
        "payer": "BPJS",
        "bpjs": {"booking_code": "BK-1"},
        "reason_code": "no_show",
        "reason_text": None,
        "cancelled_by": CancelledBy(user_id="u1", name="Rina"),
        "cancelled_at": datetime.now(UTC),
    }
    return QueueCancelledData(**{**base, **changes})


def test_an_event_built_from_its_row_matches():
    assert mismatches(row(), event(), "antreanrs") == []
    assert mismatches(row(bpjs=FKTP), event(bpjs=FKTP), "antreanfktp") == []


@pytest.mark.parametrize(
    ("ticket", "data", "fields"),
    [
        (row(), event(bpjs={"booking_code": "BK-OTHER"}), ["bpjs.booking_code"]),
        (row(), event(bpjs=None), ["bpjs.booking_code"]),
        (row(clinic_id="K2"), event(), ["clinic_id"]),
        (row(status="waiting"), event(), ["status"]),
        (row(payer="UMUM", bpjs=None), event(), ["payer", "bpjs.booking_code"]),
        (row(ticket_number="U-008"), event(), ["ticket_number"]),
        (row(cancelled_by_id="u2"), event(), ["cancelled_by.user_id"]),
    ],
    ids=["other-booking", "no-booking", "clinic", "not-cancelled", "not-bpjs", "number", "user"],
)
def test_each_disagreement_is_named(ticket, data, fields):
    assert mismatches(ticket, data, "antreanrs") == fields


def test_fktp_compares_card_poli_and_date():
    other_card = {**FKTP, "card_number": "0000000000001"}
    assert mismatches(row(bpjs=FKTP), event(bpjs=other_card), "antreanfktp") == ["bpjs.card_number"]


def test_the_request_fields_come_from_the_row():
    ticket = row(bpjs={"booking_code": 12})  # not a string in the row: nothing is sent from it
    assert ticket.booking("booking_code") == "" and row().booking("booking_code") == "BK-1"


def test_at_attempt_time_the_row_must_still_be_a_cancelled_bpjs_ticket_of_the_jobs_clinic():
    assert unfit(row(), "K1") == []
    assert unfit(row(status="done", payer="UMUM"), "K2") == ["clinic_id", "status", "payer"]
