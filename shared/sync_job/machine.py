"""The BPJS sync job's states and every transition between them: pure functions, no I/O.

The worker's pool, its warning and orphan sweepers, its reconciliation and the API's admin
endpoints all decide here; `shared.sync_job.store` writes what was decided, and nothing else
writes a job's state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PENDING = "pending"  # not synced yet, no warning sent
    FAILED = "failed"  # a warning went out; `will_retry` says whether work goes on
    SYNCED = "synced"
    RESOLVED = "resolved_manually"  # done by hand in the BPJS portal


FINISHED = frozenset({Status.SYNCED, Status.RESOLVED})


class Step(StrEnum):
    """The BPJS calls of an attempt, in this order."""

    CANCEL = "batal"
    TASK99 = "task99"  # antreanrs `updatewaktu` task 99 ("tidak hadir/batal")
    READBACK = "getlisttask"  # antreanrs: BPJS's own record of the booking's tasks


class ErrorKind(StrEnum):
    REJECTED = "rejected"  # BPJS answered and refused: final
    UNREACHABLE = "unreachable"  # BPJS not answering: retried
    AUTH_ERROR = "auth_error"  # credentials or clock refused: retried like an outage
    NOT_RECORDED = "not_recorded"  # BPJS said yes, its record does not show it: retried
    NO_CREDENTIALS = "no_credentials"  # the clinic has none: final, nothing sent
    EVENT_MISMATCH = "event_mismatch"  # the ticket row does not confirm the job: no call ever


# Outcome kinds of a BPJS call (shared.bpjs.OutcomeKind values; compared as strings so this
# module needs nothing but the standard library).
SUCCESS, ALREADY_DONE, RETRYABLE, REJECTED, AUTH = (
    "success",
    "already_done",
    "retryable",
    "rejected",
    "auth_error",
)


class InvalidTransition(Exception):
    """An admin action the job's state does not allow (409 `invalid_transition`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class RetryPolicy:
    first_phase_s: float = 20.0
    backoff_base_s: float = 0.5
    max_interval_s: float = 1800.0
    horizon_s: float = 7 * 24 * 3600.0

    def delay(self, attempts: int, in_first_phase: bool, rng: random.Random | None = None) -> float:
        """Exponential backoff with jitter; short in the first phase, up to the max later."""
        rng = rng or random.Random()
        cap = min(4.0, self.max_interval_s) if in_first_phase else self.max_interval_s
        ceiling = min(cap, self.backoff_base_s * (2 ** max(0, attempts - 1)))
        # half fixed, half jitter: never zero (no hot loop), never in lockstep with other jobs
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


@dataclass(frozen=True)
class Plan:
    """What this deployment sends for a cancellation (the worker's settings)."""

    send_task99: bool = True  # antreanrs only
    readback: bool = True  # antreanrs only, and only with task 99 (the record shows task 99)

    def confirmable(self, service: str) -> bool:
        return service == "antreanrs" and self.send_task99 and self.readback


@dataclass(frozen=True)
class Job:
    """The columns of a `bpjs_sync_job` row that transitions read and write."""

    status: Status
    first_phase_until: datetime
    horizon_at: datetime
    created_at: datetime
    will_retry: bool = True
    warned: bool = False
    cancel_done: bool = False
    task99_done: bool = False
    reply_lost: bool = False
    refused_after_loss: bool = False
    confirmable: bool = False
    confirmed_at: datetime | None = None
    readback_at: datetime | None = None
    readback_result: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error_kind: str | None = None

    FIELDS = (
        "status", "first_phase_until", "horizon_at", "created_at", "will_retry", "warned",
        "cancel_done", "task99_done", "reply_lost", "refused_after_loss", "confirmable",
        "confirmed_at", "readback_at", "readback_result", "attempts", "next_attempt_at",
        "last_error_kind",
    )  # fmt: skip

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Job:
        values = {f: row[f] for f in cls.FIELDS}
        return cls(**{**values, "status": Status(values["status"])})


@dataclass(frozen=True)
class Emit:
    """The result event a transition emits (built by the worker, which owns the topics)."""

    type: str  # "BpjsSynced" or "BpjsSyncFailed"
    will_retry: bool = False
    error_kind: str | None = None
    recovered: bool = False


@dataclass(frozen=True)
class Call:
    """One BPJS call's outcome as the machine needs it."""

    step: Step
    kind: str  # shared.bpjs.OutcomeKind value
    code: int | None = None
    message: str = ""
    detail: str = ""
    recorded: bool | None = None  # READBACK: task 99 is in BPJS's record


@dataclass(frozen=True)
class Change:
    """What to write: the job's new columns, the ticket's `bpjs_sync`, the event to emit."""

    job: Job
    ticket_sync: Status | None = None  # new queue_ticket.bpjs_sync, None: unchanged
    emit: Emit | None = None
    attempt: Call | None = None  # the call this attempt ended with (attempts + 1)
    error: str | None = None
    release_lease: bool = False


@dataclass(frozen=True)
class Progress:
    """The attempt goes on with `next` (and `cancel_done` is stored first when it just became
    true: a crash before the next call must never send a blind second `batal`)."""

    job: Job
    next: Step
    store_cancel_done: bool = False


def new_job(now: datetime, policy: RetryPolicy, *, confirmable: bool) -> Job:
    return Job(
        status=Status.PENDING,
        first_phase_until=now + timedelta(seconds=policy.first_phase_s),
        horizon_at=now + timedelta(seconds=policy.horizon_s),
        created_at=now,
        confirmable=confirmable,
        next_attempt_at=now,
    )


def next_step(job: Job, plan: Plan, service: str) -> Step | None:
    """The next call of an attempt, or None when nothing is left to send or read (or the job is
    finished: a job resolved before it existed never calls BPJS)."""
    if job.status in FINISHED:
        return None
    if not job.cancel_done and not job.refused_after_loss:
        return Step.CANCEL
    if plan.send_task99 and service == "antreanrs" and not job.task99_done:
        return Step.TASK99
    if job.confirmable and job.confirmed_at is None:
        return Step.READBACK
    return None


def breaker_healthy(kind: str) -> bool:
    """Whether a call's outcome shows BPJS working for the circuit breaker: a refusal of our
    credentials or clock is a failure (one bad key rotation must open it, not pass as healthy)."""
    return kind not in (RETRYABLE, AUTH)


def after_call(
    job: Job,
    call: Call,
    *,
    now: datetime,
    policy: RetryPolicy,
    plan: Plan,
    service: str,
    rng: random.Random | None = None,
) -> Progress | Change:
    """The job after one call of an attempt: go on with the next call, or end the attempt."""
    _not_finished(job)
    ok = call.kind in (SUCCESS, ALREADY_DONE)
    if call.kind == AUTH:
        return _failure(job, call, ErrorKind.AUTH_ERROR, now, policy, rng)
    if call.kind == RETRYABLE:
        # A `batal` without a reply may have been applied: a later refusal proves nothing.
        lost = job.reply_lost or call.step is Step.CANCEL
        return _failure(
            replace(job, reply_lost=lost), call, ErrorKind.UNREACHABLE, now, policy, rng
        )
    if call.step is Step.CANCEL:
        if ok:
            return _go_on(replace(job, cancel_done=True), call, now, plan, service, store=True)
        if job.reply_lost and job.confirmable:
            # Refused after a lost reply: only BPJS's record (task 99 read back) decides.
            return _go_on(replace(job, refused_after_loss=True), call, now, plan, service)
        return _final(job, call, ErrorKind.REJECTED, now)
    if call.step is Step.TASK99:
        if ok:
            return _go_on(replace(job, task99_done=True), call, now, plan, service)
        if job.refused_after_loss:
            return _final(job, call, ErrorKind.REJECTED, now)
        if job.confirmable:
            return _failure(job, call, ErrorKind.NOT_RECORDED, now, policy, rng)
        # No record to read: the cancellation itself stands at BPJS; the refused timeline
        # update is kept as the job's note.
        return _go_on(replace(job, task99_done=True), call, now, plan, service)
    # READBACK: a success with task 99 listed confirms; anything else BPJS answered (no task
    # 99, booking unknown) means its record does not show the cancellation: send task 99 again.
    read = replace(job, readback_at=now)
    if ok and call.recorded:
        return _synced(replace(read, readback_result="recorded", confirmed_at=now), call)
    read = replace(read, readback_result="not_recorded", task99_done=False)
    return _failure(read, call, ErrorKind.NOT_RECORDED, now, policy, rng)


def fold(
    job: Job,
    calls: Iterable[Call],
    *,
    now: datetime,
    policy: RetryPolicy,
    plan: Plan,
    service: str,
    rng: random.Random | None = None,
) -> Change:
    """The attempt's end from the job as it is now (re-read under lock) and the calls made."""
    _not_finished(job)
    current: Job | Change = job
    for call in calls:
        if isinstance(current, Change):
            break
        step = after_call(
            current, call, now=now, policy=policy, plan=plan, service=service, rng=rng
        )
        current = step.job if isinstance(step, Progress) else step
    if isinstance(current, Change):
        return current
    if next_step(current, plan, service) is None:
        # Every call succeeded and nothing is left (e.g. the job needed no call at all).
        return _synced(current, None)
    # The attempt stopped between calls (shutdown): keep what was done, go on at once.
    return Change(replace(current, next_attempt_at=now), release_lease=True)


def _go_on(
    job: Job, call: Call, now: datetime, plan: Plan, service: str, store: bool = False
) -> Progress | Change:
    step = next_step(job, plan, service)
    if step is None:
        return _synced(job, call)
    return Progress(job, step, store_cancel_done=store)


def _synced(job: Job, call: Call | None) -> Change:
    done = replace(job, status=Status.SYNCED, will_retry=False, last_error_kind=None,
                   attempts=job.attempts + 1)  # fmt: skip
    emit = Emit("BpjsSynced", recovered=job.warned)
    return Change(done, Status.SYNCED, emit, call, release_lease=True)


def _final(job: Job, call: Call, kind: ErrorKind, now: datetime) -> Change:
    done = replace(job, status=Status.FAILED, will_retry=False, warned=True,
                   last_error_kind=kind.value, attempts=job.attempts + 1)  # fmt: skip
    emit = Emit("BpjsSyncFailed", will_retry=False, error_kind=kind.value)
    return Change(done, Status.FAILED, emit, call, _error(call), release_lease=True)


def _failure(
    job: Job,
    call: Call,
    kind: ErrorKind,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None,
) -> Change:
    """A failure that is retried: quietly within the first phase, with one warning after it,
    until the horizon (then a final failure of the same kind)."""
    if now >= job.horizon_at:
        return _final(job, call, kind, now)
    attempts = job.attempts + 1
    in_first = now < job.first_phase_until
    at = now + timedelta(seconds=policy.delay(attempts, in_first, rng))
    base = replace(job, last_error_kind=kind.value, attempts=attempts)
    if in_first:
        # Never past the end of the first phase: the warning must go out on time.
        return Change(replace(base, next_attempt_at=min(at, job.first_phase_until)),
                      attempt=call, error=_error(call), release_lease=True)  # fmt: skip
    base = replace(base, next_attempt_at=min(at, job.horizon_at), status=Status.FAILED)
    if job.warned:
        return Change(base, attempt=call, error=_error(call), release_lease=True)
    emit = Emit("BpjsSyncFailed", will_retry=True, error_kind=kind.value)
    return Change(replace(base, warned=True), Status.FAILED, emit, call, _error(call), True)


def _error(call: Call) -> str:
    return call.detail or call.message or "BPJS tidak dapat dihubungi"


def no_credentials(job: Job, detail: str, now: datetime) -> Change:
    """The clinic has no BPJS credentials: a final failure, nothing was sent."""
    _not_finished(job)
    return _final(job, Call(Step.CANCEL, REJECTED, detail=detail), ErrorKind.NO_CREDENTIALS, now)


def unfit(job: Job, error: str) -> Change:
    """The ticket row does not confirm the job: it ends without a call, an event or a change
    to the ticket (only a job recorded before events were verified can get here)."""
    _not_finished(job)
    done = replace(job, status=Status.FAILED, will_retry=False,
                   last_error_kind=ErrorKind.EVENT_MISMATCH.value)  # fmt: skip
    return Change(done, error=error, release_lease=True)


def deadline(job: Job, now: datetime) -> Change | None:
    """The warning sweeper: a job still unsynced at the end of its first phase warns now, even
    while the breaker holds every call. None when there is nothing to warn."""
    if job.status is not Status.PENDING or job.warned or not job.will_retry:
        return None
    if now < job.first_phase_until:
        return None
    kind = job.last_error_kind
    if kind not in (ErrorKind.AUTH_ERROR, ErrorKind.NOT_RECORDED):
        kind = ErrorKind.UNREACHABLE.value
    warned = replace(job, status=Status.FAILED, warned=True)
    return Change(warned, Status.FAILED, Emit("BpjsSyncFailed", True, kind))


def admin_retry(job: Job, now: datetime, policy: RetryPolicy) -> Change:
    """An immediate attempt; a final failure gets a fresh horizon."""
    if job.status in FINISHED:
        raise InvalidTransition(_finished_text(job))
    horizon = max(job.horizon_at, now + timedelta(seconds=policy.horizon_s))
    # A refusal believed only after a read-back is asked again: the retry starts with `batal`.
    retried = replace(job, will_retry=True, next_attempt_at=now, horizon_at=horizon,
                      refused_after_loss=False)  # fmt: skip
    return Change(retried)


def admin_resolve(job: Job) -> Change:
    """Done by hand at BPJS: no call and no event any more, whatever arrives later."""
    if job.status in FINISHED:
        raise InvalidTransition(_finished_text(job))
    done = replace(job, status=Status.RESOLVED, will_retry=False)
    return Change(done, Status.RESOLVED, release_lease=True)


def reconcile(job: Job, recorded: bool, now: datetime, policy: RetryPolicy) -> Change | None:
    """A fresh read of BPJS's record for a synced, confirmable job (daily reconciliation):
    still recorded confirms it again; gone from the record reopens it as a retry job that
    sends task 99 again and warns if that does not take within a first phase."""
    if job.status is not Status.SYNCED or not job.confirmable:
        return None
    read = replace(job, readback_at=now)
    if recorded:
        return Change(
            replace(read, readback_result="recorded", confirmed_at=job.confirmed_at or now)
        )
    reopened = replace(
        read,
        readback_result="not_recorded",
        status=Status.PENDING,
        will_retry=True,
        warned=False,
        task99_done=False,
        confirmed_at=None,
        last_error_kind=ErrorKind.NOT_RECORDED.value,
        first_phase_until=now + timedelta(seconds=policy.first_phase_s),
        horizon_at=max(job.horizon_at, now + timedelta(seconds=policy.horizon_s)),
        next_attempt_at=now,
    )
    return Change(reopened, Status.PENDING, error="BPJS tidak lagi mencatat task 99 antrean ini")


def report_state(job: Job | None, ticket_sync: str | None) -> str:
    """A cancellation's state at BPJS for the daily reconciliation report."""
    if ticket_sync == Status.RESOLVED or (job is not None and job.status is Status.RESOLVED):
        return "resolved_manually"
    if job is None:
        return {"synced": "not_confirmable", "failed": "failed"}.get(ticket_sync or "", "pending")
    if job.status is Status.SYNCED:
        if not job.confirmable:
            return "not_confirmable"
        return "confirmed" if job.confirmed_at is not None else "unconfirmed"
    if job.last_error_kind == ErrorKind.NOT_RECORDED or job.readback_result == "not_recorded":
        return "not_recorded"
    if job.status is Status.FAILED:
        return "failed"
    return "pending"


def _not_finished(job: Job) -> None:
    """Worker outcomes never move a synced or resolved job (the store's lock already skips
    them; this keeps the machine right on its own)."""
    if job.status in FINISHED:
        raise InvalidTransition(_finished_text(job))


def _finished_text(job: Job) -> str:
    done = "sudah tersinkron" if job.status is Status.SYNCED else "sudah diselesaikan manual"
    return f"Sinkronisasi BPJS antrean ini {done}; tidak ada yang perlu diulang atau ditandai."
