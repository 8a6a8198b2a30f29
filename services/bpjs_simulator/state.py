"""In-memory BPJS state (antreanrs bookings, antreanfktp entries) and the business rules on it."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from services.bpjs_simulator.config import RuntimeOptions

OK = "Ok"
NOT_FOUND = "Antrean Tidak Ditemukan"
ALREADY_CANCELLED = "Antrean Tidak Ditemukan atau Sudah Dibatalkan"
SERVED = "Pasien Sudah Dilayani, Antrean Tidak Dapat Dibatalkan"
DUPLICATE_BOOKING = "Terdapat duplikasi Kode Booking"
SERVED_TASK = 5  # "akhir waktu layan poli": the patient has been seen
ABSENT_TASK = 99  # "tidak hadir/batal": BPJS accepts no other task after it
TASK_NAMES = {
    1: "mulai waktu tunggu admisi",
    2: "akhir waktu tunggu admisi/mulai waktu layan admisi",
    3: "akhir waktu layan admisi/mulai waktu tunggu poli",
    4: "akhir waktu tunggu poli/mulai waktu layan poli",
    5: "akhir waktu layan poli/mulai waktu tunggu farmasi",
    6: "akhir waktu tunggu farmasi/mulai waktu layan farmasi membuat obat",
    7: "akhir waktu obat selesai dibuat",
    99: "tidak hadir/batal",
}
_WIB = timezone(timedelta(hours=7))
FktpKey = tuple[str, str, str]  # (tanggalperiksa, kodepoli, nomorkartu)


@dataclass(frozen=True)
class Verdict:
    """A business answer: metadata code and message, plus the plaintext of `response` if any."""

    code: int
    message: str
    response: Any = None
    http_status: int = 200  # BPJS answers 200 with the outcome in `metadata`; some gateways do not


@dataclass
class Booking:
    kodebooking: str
    tasks: dict[int, int] = field(default_factory=dict)  # taskid -> waktu (epoch ms)
    cancelled: bool = False
    keterangan: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # the antrean/add body
    autocreated: bool = False

    @property
    def served(self) -> bool:
        return SERVED_TASK in self.tasks

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": {str(k): v for k, v in self.tasks.items()}}


@dataclass
class FktpEntry:
    tanggalperiksa: str
    kodepoli: str
    nomorkartu: str
    cancelled: bool = False
    served: bool = False
    alasan: str | None = None
    autocreated: bool = False

    @property
    def key(self) -> FktpKey:
        return (self.tanggalperiksa, self.kodepoli, self.nomorkartu)

    def view(self) -> dict[str, Any]:
        return asdict(self)


def fktp_label(key: FktpKey) -> str:
    return "|".join(key)


class SimState:
    """Everything BPJS would remember, plus counters the tests read through `/_sim/stats`."""

    def __init__(self) -> None:
        self.bookings: dict[str, Booking] = {}
        self.fktp: dict[FktpKey, FktpEntry] = {}
        self.calls: Counter[str] = Counter()  # per route, every call that reached the gateway
        self.batal_calls: dict[str, Counter[str]] = {
            "antreanrs": Counter(),
            "antreanfktp": Counter(),
        }
        self.applied: dict[str, Counter[str]] = {"antreanrs": Counter(), "antreanfktp": Counter()}
        self.not_recorded: Counter[str] = Counter()  # per route: calls under that fault

    # With record=False (fault not_recorded) the answer is the same but nothing is kept.
    def cancel_rs(
        self, kodebooking: str, keterangan: str, opts: RuntimeOptions, record: bool = True
    ) -> Verdict:
        self.batal_calls["antreanrs"][kodebooking] += 1
        booking = self.bookings.get(kodebooking)
        if booking is None:
            if not opts.dev_autocreate:
                return Verdict(201, NOT_FOUND)
            booking = Booking(kodebooking, autocreated=True)
        refusal = _cancel_refusal(booking.cancelled, booking.served, opts)
        if refusal is not None:
            return refusal
        if not record:
            return Verdict(200, OK)
        self.bookings[kodebooking] = booking
        booking.cancelled, booking.keterangan = True, keterangan
        self.applied["antreanrs"][kodebooking] += 1
        return Verdict(200, OK)

    def cancel_fktp(
        self, key: FktpKey, alasan: str, opts: RuntimeOptions, record: bool = True
    ) -> Verdict:
        self.batal_calls["antreanfktp"][fktp_label(key)] += 1
        entry = self.fktp.get(key)
        if entry is None:
            if not opts.dev_autocreate:
                return Verdict(201, NOT_FOUND)
            entry = FktpEntry(*key, autocreated=True)
        refusal = _cancel_refusal(entry.cancelled, entry.served, opts)
        if refusal is not None:
            return refusal
        if not record:
            return Verdict(opts.fktp_ok_code, OK)
        self.fktp[key] = entry
        entry.cancelled, entry.alasan = True, alasan
        self.applied["antreanfktp"][fktp_label(key)] += 1
        return Verdict(opts.fktp_ok_code, OK)

    def add(self, kodebooking: str, data: dict[str, Any], record: bool = True) -> Verdict:
        if kodebooking in self.bookings:
            return Verdict(208, DUPLICATE_BOOKING)
        if record:
            self.bookings[kodebooking] = Booking(kodebooking, data=data)
        return Verdict(200, OK)

    def update_task(
        self, kodebooking: str, taskid: int, waktu: int, opts: RuntimeOptions, record: bool = True
    ) -> Verdict:
        if taskid not in TASK_NAMES:
            return Verdict(201, f"TaskId={taskid} tidak valid")
        booking = self.bookings.get(kodebooking)
        if booking is None:
            if not opts.dev_autocreate:
                return Verdict(201, NOT_FOUND)
            booking = Booking(kodebooking, autocreated=True)
        # A repeat is checked first so a resent task 99 gets 208 rather than the 99 refusal.
        if taskid in booking.tasks:
            return Verdict(208, f"TaskId={taskid} sudah ada")
        if ABSENT_TASK in booking.tasks:
            return Verdict(201, f"TaskId={taskid} tidak dapat diupdate, TaskId terakhir 99")
        if not record:
            return Verdict(200, OK)
        self.bookings[kodebooking] = booking
        booking.tasks[taskid] = waktu
        return Verdict(200, OK)

    def list_tasks(self, kodebooking: str) -> Verdict:
        booking = self.bookings.get(kodebooking)
        if booking is None:
            return Verdict(201, NOT_FOUND)
        items = [_task_item(kodebooking, t, w) for t, w in sorted(booking.tasks.items())]
        return Verdict(200, OK, items)

    def seed_booking(
        self,
        kodebooking: str,
        *,
        tasks: dict[int, int],
        cancelled: bool,
        served: bool,
        data: dict[str, Any],
    ) -> Booking:
        booking = Booking(kodebooking, dict(tasks), cancelled, data=dict(data))
        if served and SERVED_TASK not in booking.tasks:
            booking.tasks[SERVED_TASK] = _now_ms()
        self.bookings[kodebooking] = booking
        return booking

    def seed_fktp(self, entry: FktpEntry) -> FktpEntry:
        self.fktp[entry.key] = entry
        return entry

    def snapshot(self) -> dict[str, Any]:
        return {
            "bookings": {k: b.view() for k, b in self.bookings.items()},
            "fktp": [e.view() for e in self.fktp.values()],
        }

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "batal_calls": {svc: dict(c) for svc, c in self.batal_calls.items()},
            "applied_cancellations": {svc: dict(c) for svc, c in self.applied.items()},
            "applied_cancellations_total": sum(c.total() for c in self.applied.values()),
            "not_recorded": dict(self.not_recorded),
        }


def _cancel_refusal(cancelled: bool, served: bool, opts: RuntimeOptions) -> Verdict | None:
    if cancelled:
        code = 208 if opts.already_cancelled_mode == "208" else 201
        return Verdict(code, ALREADY_CANCELLED)
    if served:
        return Verdict(201, SERVED)
    return None


def _task_item(kodebooking: str, taskid: int, waktu_ms: int) -> dict[str, Any]:
    shown = datetime.fromtimestamp(waktu_ms / 1000, UTC).astimezone(_WIB)
    text = shown.strftime("%d-%m-%Y %H:%M:%S WIB")
    return {
        "wakturs": text,
        "waktu": text,
        "taskname": TASK_NAMES[taskid],
        "taskid": taskid,
        "kodebooking": kodebooking,
    }


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)
