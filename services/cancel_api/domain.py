"""Domain rules of a queue ticket: pure functions, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

STATUSES = ("waiting", "called", "accepted", "done", "cancelled")
REASON_CODES = ("no_show", "re_registration", "data_error", "other")

TITLE_CANNOT_CANCEL = "Tidak dapat membatalkan antrean"
MESSAGE_CANCELLED = "Antrean berhasil dibatalkan"

STATUS_ID = {
    "waiting": "menunggu",
    "called": "dipanggil",
    "accepted": "diterima",
    "done": "selesai",
    "cancelled": "dibatalkan",
}


@dataclass(frozen=True)
class Refusal:
    status: int
    code: str
    title: str
    detail: str


def cancel_refusal(status: str) -> Refusal | None:
    """None when a ticket in `status` may be cancelled, else why not (docs/API.md)."""
    if status == "waiting":
        return None
    if status == "cancelled":
        return Refusal(
            409,
            "queue_already_cancelled",
            TITLE_CANNOT_CANCEL,
            "Antrean sudah dibatalkan sebelumnya.",
        )
    return Refusal(
        409,
        "queue_not_waiting",
        TITLE_CANNOT_CANCEL,
        f"Antrean berstatus {STATUS_ID.get(status, status)} ({status}); "
        "hanya antrean yang menunggu yang dapat dibatalkan.",
    )


# Forward moves staff may make; a cancelled ticket goes nowhere (cancellation is permanent).
TRANSITIONS = {"accept": ({"waiting", "called"}, "accepted"), "finish": ({"accepted"}, "done")}


def transition_refusal(action: str, status: str) -> Refusal | None:
    allowed, _ = TRANSITIONS[action]
    if status in allowed:
        return None
    return Refusal(
        409,
        "invalid_transition",
        "Status antrean tidak dapat diubah",
        f"Antrean berstatus {STATUS_ID.get(status, status)} ({status}).",
    )


def needs_bpjs_sync(payer: str) -> bool:
    return payer == "BPJS"


def ticket_prefix(room_id: str) -> str:
    """One letter for a room: the first letter of its last word (POLI-GIGI -> G)."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", room_id) if w]
    for word in reversed(words):
        if word[0].isalpha():
            return word[0].upper()
    return "A"


def ticket_number(room_id: str, seq: int) -> str:
    return f"{ticket_prefix(room_id)}-{seq:03d}"


# Fields of the FKTP service with a fixed shape (ASCII digits: `\d` would take any script's).
BPJS_FIELD_PATTERNS = {"card_number": "[0-9]{13}", "visit_date": "[0-9]{4}-[0-9]{2}-[0-9]{2}"}
BPJS_FIELDS = {
    "antreanrs": ("booking_code",),
    "antreanfktp": ("card_number", "poli_code", "visit_date"),
}


def bpjs_problem(service: str, bpjs: dict[str, str] | None) -> str | None:
    """Why `bpjs` does not hold the fields of the configured service, or None when it does."""
    if bpjs is None:
        return "bpjs wajib diisi untuk penjamin BPJS"
    # Values are non-blank when present (schemas.NAME): presence is the rule here.
    missing = [f for f in BPJS_FIELDS[service] if not bpjs.get(f)]
    if missing:
        return f"bpjs untuk {service} memerlukan: {', '.join(missing)}"
    if service == "antreanfktp":
        if not re.fullmatch(BPJS_FIELD_PATTERNS["card_number"], bpjs["card_number"]):
            return "card_number harus 13 digit"
        if not re.fullmatch(BPJS_FIELD_PATTERNS["visit_date"], bpjs["visit_date"]):
            return "visit_date harus berformat YYYY-MM-DD"
    return None
