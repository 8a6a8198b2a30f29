"""The BPJS sync job's state machine: every state against every input, from explicit tables."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bpjs import OutcomeKind
from shared.sync_job.machine import (
    ALREADY_DONE,
    AUTH,
    REJECTED,
    RETRYABLE,
    SUCCESS,
    Call,
    Change,
    Emit,
    InvalidTransition,
    Job,
    Plan,
    Progress,
    RetryPolicy,
    Status,
    Step,
    admin_resolve,
    admin_retry,
    after_call,
    breaker_healthy,
    deadline,
    fold,
    new_job,
    next_step,
    no_credentials,
    reconcile,
    report_state,
    unfit,
)

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
POLICY = RetryPolicy(first_phase_s=20, backoff_base_s=0.5, max_interval_s=1800, horizon_s=7 * 86400)
PLAN, NO_READBACK, NO_TASK99 = Plan(), Plan(readback=False), Plan(send_task99=False)
RS, FKTP = "antreanrs", "antreanfktp"
P, F, SY, RES = Status.PENDING, Status.FAILED, Status.SYNCED, Status.RESOLVED
CANCEL, TASK99, READBACK = Step.CANCEL, Step.TASK99, Step.READBACK
FIRST, LATER, HOUR, HORIZON = 5.0, 60.0, 3600.0, POLICY.horizon_s + 1
CONFIRMED_AT = NOW - timedelta(hours=2)
INVALID = "InvalidTransition"


def sec(s: float) -> timedelta:
    return timedelta(seconds=s)


def job(age_s: float = FIRST, **kw: Any) -> Job:
    """A job created `age_s` before NOW with the policy's first phase and horizon."""
    created = NOW - sec(age_s)
    base = Job(status=P, first_phase_until=created + sec(POLICY.first_phase_s),
               horizon_at=created + sec(POLICY.horizon_s), created_at=created,
               next_attempt_at=NOW)  # fmt: skip
    return replace(base, **kw)


def ok(s: Step, kind: str = SUCCESS) -> Call:
    return Call(s, kind, 200, "Ok")


def read(recorded: bool | None, kind: str = SUCCESS) -> Call:
    return Call(READBACK, kind, 200, "Ok", recorded=recorded)


def bad(s: Step, kind: str, code: int | None = 201, message: str = "ditolak") -> Call:
    return Call(s, kind, code, message)


def run(j: Job, *calls: Call, now: datetime = NOW, service: str = RS, plan: Plan = PLAN) -> Change:
    return fold(j, calls, now=now, policy=POLICY, plan=plan, service=service,
                rng=random.Random(7))  # fmt: skip


def step(j: Job, c: Call, *, service: str = RS, plan: Plan = PLAN) -> Progress | Change:
    return after_call(j, c, now=NOW, policy=POLICY, plan=plan, service=service,
                      rng=random.Random(7))  # fmt: skip


def synced(recovered: bool) -> Emit:
    return Emit("BpjsSynced", recovered=recovered)


def failed(kind: str, will_retry: bool) -> Emit:
    return Emit("BpjsSyncFailed", will_retry=will_retry, error_kind=kind)


@dataclass(frozen=True)
class Out:
    status: Status
    will_retry: bool
    warned: bool
    ticket_sync: Status | None
    emit: Emit | None


def out(c: Change) -> Out:
    return Out(c.job.status, c.job.will_retry, c.job.warned, c.ticket_sync, c.emit)


# Every state a job row can be in (with the flags that change what happens to it).
STATES: dict[str, Job] = {
    "pending_first_phase": job(FIRST),
    "pending_past_first_phase_not_warned": job(LATER, attempts=3, last_error_kind="unreachable"),
    "pending_at_horizon_not_warned": job(HORIZON, attempts=40, last_error_kind="unreachable"),
    "failed_warned_retrying": job(HOUR, status=F, warned=True, attempts=12,
                                  last_error_kind="unreachable"),
    "failed_warned_at_horizon": job(HORIZON, status=F, warned=True, attempts=400,
                                    last_error_kind="auth_error"),
    "failed_final": job(HOUR, status=F, will_retry=False, warned=True, attempts=1,
                        last_error_kind="rejected"),
    "failed_final_retried_by_admin": job(HOUR, status=F, warned=True, attempts=1,
                                         last_error_kind="rejected", horizon_at=NOW + sec(9e5)),
    "synced_confirmed": job(HOUR, status=SY, will_retry=False, cancel_done=True, task99_done=True,
                            confirmable=True, confirmed_at=CONFIRMED_AT, readback_at=CONFIRMED_AT,
                            readback_result="recorded", attempts=1),
    "synced_not_confirmable": job(HOUR, status=SY, will_retry=False, cancel_done=True, attempts=1),
    "resolved": job(HOUR, status=RES, will_retry=False),
    "resolved_after_warning": job(HOUR, status=RES, will_retry=False, warned=True, attempts=9),
}  # fmt: skip
ACTIVE = [s for s, j in STATES.items() if j.will_retry]  # what the pool claims
FINISHED = ["synced_confirmed", "synced_not_confirmable", "resolved", "resolved_after_warning"]

INPUTS = {
    # one-call attempts (antreanfktp: `batal` is the whole attempt)
    "batal_success": lambda j: run(j, ok(CANCEL), service=FKTP),
    "batal_already_done": lambda j: run(j, ok(CANCEL, ALREADY_DONE), service=FKTP),
    "batal_rejected": lambda j: run(j, bad(CANCEL, REJECTED), service=FKTP),
    "batal_retryable": lambda j: run(j, bad(CANCEL, RETRYABLE, None, ""), service=FKTP),
    "batal_auth_error": lambda j: run(j, bad(CANCEL, AUTH), service=FKTP),
    "no_credentials": lambda j: no_credentials(j, "klinik belum punya kredensial BPJS", NOW),
    "unfit": lambda j: unfit(j, "event does not match the ticket"),
    "deadline": lambda j: deadline(j, NOW),
    "admin_retry": lambda j: admin_retry(j, NOW, POLICY),
    "admin_resolve": admin_resolve,
    "reconcile_recorded": lambda j: reconcile(j, True, NOW, POLICY),
    "reconcile_not_recorded": lambda j: reconcile(j, False, NOW, POLICY),
}
WORKER_INPUTS = ["batal_success", "batal_already_done", "batal_rejected", "batal_retryable",
                 "batal_auth_error", "no_credentials", "unfit"]  # fmt: skip

SYNCED_FRESH = Out(SY, False, False, SY, synced(False))
SYNCED_RECOVERED = Out(SY, False, True, SY, synced(True))
FINAL_REJECTED = Out(F, False, True, F, failed("rejected", False))
FINAL_NO_CREDS = Out(F, False, True, F, failed("no_credentials", False))
QUIET_PENDING = Out(P, True, False, None, None)
QUIET_FAILED = Out(F, True, True, None, None)
RESOLVED_NOW = Out(RES, False, False, RES, None)
RESOLVED_WARNED = Out(RES, False, True, RES, None)

# Every state against every input.  Worker inputs on a finished job are in
# test_worker_outcomes_never_move_a_finished_job; a final failure is never claimed by the pool
# (will_retry false) until an admin retries it ("failed_final_retried_by_admin").
MATRIX: dict[str, dict[str, Out | str | None]] = {
    "pending_first_phase": {
        "batal_success": SYNCED_FRESH, "batal_already_done": SYNCED_FRESH,
        "batal_rejected": FINAL_REJECTED, "batal_retryable": QUIET_PENDING,
        "batal_auth_error": QUIET_PENDING, "no_credentials": FINAL_NO_CREDS,
        "unfit": Out(F, False, False, None, None), "deadline": None,
        "admin_retry": QUIET_PENDING, "admin_resolve": RESOLVED_NOW,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "pending_past_first_phase_not_warned": {
        "batal_success": SYNCED_FRESH, "batal_already_done": SYNCED_FRESH,
        "batal_rejected": FINAL_REJECTED,
        "batal_retryable": Out(F, True, True, F, failed("unreachable", True)),
        "batal_auth_error": Out(F, True, True, F, failed("auth_error", True)),
        "no_credentials": FINAL_NO_CREDS, "unfit": Out(F, False, False, None, None),
        "deadline": Out(F, True, True, F, failed("unreachable", True)),
        "admin_retry": QUIET_PENDING, "admin_resolve": RESOLVED_NOW,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "pending_at_horizon_not_warned": {
        "batal_success": SYNCED_FRESH, "batal_already_done": SYNCED_FRESH,
        "batal_rejected": FINAL_REJECTED,
        "batal_retryable": Out(F, False, True, F, failed("unreachable", False)),
        "batal_auth_error": Out(F, False, True, F, failed("auth_error", False)),
        "no_credentials": FINAL_NO_CREDS, "unfit": Out(F, False, False, None, None),
        "deadline": Out(F, True, True, F, failed("unreachable", True)),
        "admin_retry": QUIET_PENDING, "admin_resolve": RESOLVED_NOW,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "failed_warned_retrying": {
        "batal_success": SYNCED_RECOVERED, "batal_already_done": SYNCED_RECOVERED,
        "batal_rejected": FINAL_REJECTED, "batal_retryable": QUIET_FAILED,
        "batal_auth_error": QUIET_FAILED, "no_credentials": FINAL_NO_CREDS,
        "unfit": Out(F, False, True, None, None), "deadline": None,
        "admin_retry": QUIET_FAILED, "admin_resolve": RESOLVED_WARNED,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "failed_warned_at_horizon": {
        "batal_success": SYNCED_RECOVERED, "batal_already_done": SYNCED_RECOVERED,
        "batal_rejected": FINAL_REJECTED,
        "batal_retryable": Out(F, False, True, F, failed("unreachable", False)),
        "batal_auth_error": Out(F, False, True, F, failed("auth_error", False)),
        "no_credentials": FINAL_NO_CREDS, "unfit": Out(F, False, True, None, None),
        "deadline": None, "admin_retry": QUIET_FAILED, "admin_resolve": RESOLVED_WARNED,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "failed_final": {
        "deadline": None, "admin_retry": QUIET_FAILED, "admin_resolve": RESOLVED_WARNED,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "failed_final_retried_by_admin": {
        "batal_success": SYNCED_RECOVERED, "batal_already_done": SYNCED_RECOVERED,
        "batal_rejected": FINAL_REJECTED, "batal_retryable": QUIET_FAILED,
        "batal_auth_error": QUIET_FAILED, "no_credentials": FINAL_NO_CREDS,
        "unfit": Out(F, False, True, None, None), "deadline": None,
        "admin_retry": QUIET_FAILED, "admin_resolve": RESOLVED_WARNED,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "synced_confirmed": {
        "deadline": None, "admin_retry": INVALID, "admin_resolve": INVALID,
        "reconcile_recorded": Out(SY, False, False, None, None),
        "reconcile_not_recorded": Out(P, True, False, P, None),
    },
    "synced_not_confirmable": {
        "deadline": None, "admin_retry": INVALID, "admin_resolve": INVALID,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "resolved": {
        "deadline": None, "admin_retry": INVALID, "admin_resolve": INVALID,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
    "resolved_after_warning": {
        "deadline": None, "admin_retry": INVALID, "admin_resolve": INVALID,
        "reconcile_recorded": None, "reconcile_not_recorded": None,
    },
}  # fmt: skip
CELLS = [(s, i, e) for s, row in MATRIX.items() for i, e in row.items()]


def test_the_matrix_covers_every_state_against_every_input():
    assert set(MATRIX) == set(STATES)
    assert {s for s in STATES if STATES[s].status in (SY, RES)} == set(FINISHED)
    for s, row in MATRIX.items():
        applicable = set(INPUTS) if s in ACTIVE else set(INPUTS) - set(WORKER_INPUTS)
        assert set(row) == applicable, s


@pytest.mark.parametrize(("state", "inp", "expected"), CELLS, ids=[f"{s}-{i}" for s, i, _ in CELLS])
def test_every_state_against_every_input(state, inp, expected):
    j = STATES[state]
    if expected == INVALID:
        with pytest.raises(InvalidTransition) as refused:
            INPUTS[inp](j)
        assert "sudah" in refused.value.message  # Indonesian, shown to the admin as 409
        return
    c = INPUTS[inp](j)
    if expected is None:
        assert c is None
        return
    assert out(c) == expected
    ends_attempt = inp in WORKER_INPUTS or inp == "admin_resolve"
    assert c.release_lease is ends_attempt  # admin retry, warning, reconciliation: no lease
    if inp.startswith("batal_") or inp == "no_credentials":  # an attempt ended (counted)
        assert c.job.attempts == j.attempts + 1 and c.attempt is not None
        if c.job.status is SY:
            assert c.job.last_error_kind is None and c.error is None
        else:
            assert c.job.last_error_kind is not None and c.error
    else:
        assert c.job.attempts == j.attempts and c.attempt is None


@pytest.mark.parametrize("state", FINISHED)
@pytest.mark.parametrize("inp", WORKER_INPUTS)
def test_worker_outcomes_never_move_a_finished_job(state, inp):
    # Defence behind the store's lock: a job resolved by hand (also one created resolved because
    # the admin resolved the ticket before its job existed) or synced never calls BPJS, never
    # emits, never changes its ticket, whatever the worker reports.
    j = STATES[state]
    try:
        c = INPUTS[inp](j)
    except InvalidTransition:
        return
    assert (c.job.status, c.emit, c.ticket_sync) == (j.status, None, None)


@pytest.mark.parametrize("service", [RS, FKTP])
def test_a_job_resolved_before_it_existed_has_no_call_to_make(service):
    created_resolved = replace(new_job(NOW, POLICY, confirmable=service == RS), status=RES,
                               will_retry=False)  # fmt: skip
    assert next_step(created_resolved, PLAN, service) is None


def test_a_job_created_resolved_takes_no_warning_retry_or_reconciliation():
    created_resolved = replace(new_job(NOW - sec(HOUR), POLICY, confirmable=True), status=RES,
                               will_retry=False)  # fmt: skip
    assert deadline(created_resolved, NOW) is None
    assert reconcile(created_resolved, False, NOW, POLICY) is None
    for action in (lambda: admin_retry(created_resolved, NOW, POLICY),
                   lambda: admin_resolve(created_resolved)):  # fmt: skip
        with pytest.raises(InvalidTransition):
            action()


# ---- one call of an attempt: every step and outcome kind, with the flags that matter ----

LOST = {"reply_lost": True}
AFTER_LOSS = {"reply_lost": True, "refused_after_loss": True}
DONE = {"cancel_done": True}
BOTH = {"cancel_done": True, "task99_done": True}
NOT_REC = {"task99_done": False, "readback_result": "not_recorded", "readback_at": NOW,
           "confirmed_at": None}  # fmt: skip


@dataclass(frozen=True)
class Goes:
    next: Step
    store_cancel_done: bool = False
    flags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ends:
    status: Status
    error_kind: str | None
    emit: Emit | None
    flags: dict[str, Any] = field(default_factory=dict)


QUIET = None
REJECTED_END = Ends(F, "rejected", failed("rejected", False), {"will_retry": False})
SYNCED_END = Ends(SY, None, synced(False), {"will_retry": False})

# (id, service, plan, confirmable, job flags, call, expected); the job is in its first phase.
STEPS = [
    ("batal_ok", RS, PLAN, True, {}, ok(CANCEL), Goes(TASK99, True, DONE)),
    ("batal_already", RS, PLAN, True, {}, ok(CANCEL, ALREADY_DONE), Goes(TASK99, True, DONE)),
    ("batal_lost_reply", RS, PLAN, True, {}, bad(CANCEL, RETRYABLE, None),
     Ends(P, "unreachable", QUIET, {"reply_lost": True, "cancel_done": False})),
    ("batal_refused", RS, PLAN, True, {}, bad(CANCEL, REJECTED), REJECTED_END),
    ("batal_auth", RS, PLAN, True, {}, bad(CANCEL, AUTH),
     Ends(P, "auth_error", QUIET, {"reply_lost": False, "will_retry": True})),
    ("lost_then_batal_refused_confirmable", RS, PLAN, True, LOST, bad(CANCEL, REJECTED),
     Goes(TASK99, False, {"refused_after_loss": True, "cancel_done": False})),
    ("lost_then_batal_ok", RS, PLAN, True, LOST, ok(CANCEL), Goes(TASK99, True, DONE)),
    ("lost_then_batal_already", RS, PLAN, True, LOST, ok(CANCEL, ALREADY_DONE),
     Goes(TASK99, True, DONE)),
    ("lost_then_lost_again", RS, PLAN, True, LOST, bad(CANCEL, RETRYABLE, None),
     Ends(P, "unreachable", QUIET, LOST)),
    ("lost_then_auth", RS, PLAN, True, LOST, bad(CANCEL, AUTH), Ends(P, "auth_error", QUIET, LOST)),
    ("fktp_batal_ok", FKTP, PLAN, False, {}, ok(CANCEL), Ends(SY, None, synced(False), DONE)),
    ("fktp_batal_lost_reply", FKTP, PLAN, False, {}, bad(CANCEL, RETRYABLE, None),
     Ends(P, "unreachable", QUIET, LOST)),
    ("fktp_lost_then_refused_is_final", FKTP, PLAN, False, LOST, bad(CANCEL, REJECTED),
     REJECTED_END),
    ("rs_without_readback_lost_then_refused_is_final", RS, NO_READBACK, False, LOST,
     bad(CANCEL, REJECTED), REJECTED_END),
    ("rs_without_task99_batal_ok", RS, NO_TASK99, False, {}, ok(CANCEL), SYNCED_END),
    ("rs_without_readback_batal_ok", RS, NO_READBACK, False, {}, ok(CANCEL),
     Goes(TASK99, True, DONE)),
    ("task99_ok", RS, PLAN, True, DONE, ok(TASK99), Goes(READBACK, False, {"task99_done": True})),
    ("task99_already", RS, PLAN, True, DONE, ok(TASK99, ALREADY_DONE),
     Goes(READBACK, False, {"task99_done": True})),
    ("task99_lost_reply", RS, PLAN, True, DONE, bad(TASK99, RETRYABLE, None),
     Ends(P, "unreachable", QUIET, {"task99_done": False, "reply_lost": False})),
    ("task99_refused_confirmable", RS, PLAN, True, DONE, bad(TASK99, REJECTED),
     Ends(P, "not_recorded", QUIET, {"task99_done": False, "will_retry": True})),
    ("task99_auth", RS, PLAN, True, DONE, bad(TASK99, AUTH), Ends(P, "auth_error", QUIET)),
    ("after_loss_task99_refused_is_final", RS, PLAN, True, AFTER_LOSS, bad(TASK99, REJECTED),
     REJECTED_END),
    ("after_loss_task99_ok", RS, PLAN, True, AFTER_LOSS, ok(TASK99),
     Goes(READBACK, False, {"task99_done": True})),
    ("after_loss_task99_lost_reply", RS, PLAN, True, AFTER_LOSS, bad(TASK99, RETRYABLE, None),
     Ends(P, "unreachable", QUIET, AFTER_LOSS)),
    ("no_readback_task99_ok", RS, NO_READBACK, False, DONE, ok(TASK99),
     Ends(SY, None, synced(False), {"task99_done": True})),
    ("no_readback_task99_refused_kept_as_note", RS, NO_READBACK, False, DONE,
     bad(TASK99, REJECTED), Ends(SY, None, synced(False), {"task99_done": True})),
    ("no_readback_task99_lost_reply", RS, NO_READBACK, False, DONE, bad(TASK99, RETRYABLE, None),
     Ends(P, "unreachable", QUIET)),
    ("readback_recorded", RS, PLAN, True, BOTH, read(True),
     Ends(SY, None, synced(False), {"confirmed_at": NOW, "readback_at": NOW,
                                    "readback_result": "recorded"})),
    ("readback_already_recorded", RS, PLAN, True, BOTH, read(True, ALREADY_DONE),
     Ends(SY, None, synced(False), {"confirmed_at": NOW})),
    ("readback_not_recorded", RS, PLAN, True, BOTH, read(False),
     Ends(P, "not_recorded", QUIET, {**NOT_REC, "cancel_done": True})),
    ("readback_without_answer_list", RS, PLAN, True, BOTH, read(None),
     Ends(P, "not_recorded", QUIET, NOT_REC)),
    ("readback_booking_unknown", RS, PLAN, True, BOTH, read(None, REJECTED),
     Ends(P, "not_recorded", QUIET, NOT_REC)),
    ("readback_lost_reply", RS, PLAN, True, BOTH, read(None, RETRYABLE),
     Ends(P, "unreachable", QUIET, {"task99_done": True, "readback_at": None})),
    ("readback_auth", RS, PLAN, True, BOTH, read(None, AUTH),
     Ends(P, "auth_error", QUIET, {"task99_done": True, "readback_at": None})),
    ("after_loss_readback_recorded", RS, PLAN, True, {**AFTER_LOSS, "task99_done": True},
     read(True), Ends(SY, None, synced(False), {"confirmed_at": NOW, "cancel_done": False})),
    ("after_loss_readback_not_recorded", RS, PLAN, True, {**AFTER_LOSS, "task99_done": True},
     read(False), Ends(P, "not_recorded", QUIET, {**NOT_REC, **AFTER_LOSS})),
]  # fmt: skip


@pytest.mark.parametrize(("service", "plan", "confirmable", "flags", "call", "expected"),
                         [r[1:] for r in STEPS], ids=[r[0] for r in STEPS])  # fmt: skip
def test_each_call_outcome_goes_on_or_ends_the_attempt(
    service, plan, confirmable, flags, call, expected
):
    j = job(FIRST, confirmable=confirmable, attempts=2, **flags)
    r = step(j, call, service=service, plan=plan)
    if isinstance(expected, Goes):
        assert isinstance(r, Progress)
        assert (r.next, r.store_cancel_done) == (expected.next, expected.store_cancel_done)
        assert r.job.status is P and r.job.attempts == 2  # counted when the attempt ends
    else:
        assert isinstance(r, Change)
        assert (r.job.status, r.job.last_error_kind, r.emit) == (
            expected.status, expected.error_kind, expected.emit)  # fmt: skip
        assert r.ticket_sync is (None if expected.emit is None else expected.status)
        assert r.attempt == call and r.release_lease and r.job.attempts == 3
        if expected.status is P:
            assert NOW < r.job.next_attempt_at <= r.job.first_phase_until
    for name, value in expected.flags.items():
        assert getattr(r.job, name) == value, name


@pytest.mark.parametrize(
    ("service", "plan", "flags", "expected"),
    [
        (RS, PLAN, {}, CANCEL),
        (RS, PLAN, {"confirmable": True}, CANCEL),
        (RS, PLAN, {"cancel_done": True, "confirmable": True}, TASK99),
        (RS, PLAN, {**BOTH, "confirmable": True}, READBACK),
        (RS, PLAN, {**BOTH, "confirmable": True, "confirmed_at": CONFIRMED_AT}, None),
        (RS, PLAN, BOTH, None),
        (RS, PLAN, {"cancel_done": True, "confirmable": True, "readback_result": "not_recorded"},
         TASK99),
        (RS, PLAN, {"refused_after_loss": True, "confirmable": True}, TASK99),
        (RS, PLAN, {**AFTER_LOSS, "task99_done": True, "confirmable": True}, READBACK),
        (RS, NO_TASK99, {}, CANCEL),
        (RS, NO_TASK99, {"cancel_done": True}, None),
        (RS, NO_READBACK, {"cancel_done": True}, TASK99),
        (RS, NO_READBACK, BOTH, None),
        (FKTP, PLAN, {}, CANCEL),
        (FKTP, PLAN, {"cancel_done": True}, None),
        (FKTP, PLAN, LOST, CANCEL),
    ],
)  # fmt: skip
def test_next_step_sends_batal_then_task99_then_reads_back(service, plan, flags, expected):
    assert next_step(job(**flags), plan, service) is expected


@pytest.mark.parametrize(
    ("service", "plan", "expected"),
    [(RS, PLAN, True), (RS, NO_READBACK, False), (RS, NO_TASK99, False), (FKTP, PLAN, False)],
)
def test_only_antreanrs_with_task99_and_read_back_is_confirmable(service, plan, expected):
    assert plan.confirmable(service) is expected


@pytest.mark.parametrize(
    ("kind", "healthy"),
    [(SUCCESS, True), (ALREADY_DONE, True), (REJECTED, True), (RETRYABLE, False), (AUTH, False)],
)
def test_breaker_counts_outages_and_credential_refusals_as_unhealthy(kind, healthy):
    assert breaker_healthy(kind) is healthy


def test_every_outcome_kind_of_the_client_is_known_to_the_machine():
    assert {k.value for k in OutcomeKind} <= {SUCCESS, ALREADY_DONE, RETRYABLE, REJECTED, AUTH}


def test_new_job_is_due_now_with_its_first_phase_and_horizon():
    j = new_job(NOW, POLICY, confirmable=True)
    assert (j.status, j.will_retry, j.warned, j.confirmable, j.attempts) == (
        P,
        True,
        False,
        True,
        0,
    )
    assert (j.first_phase_until, j.horizon_at) == (NOW + sec(20), NOW + sec(7 * 86400))
    assert j.next_attempt_at == j.created_at == NOW
    assert not (j.cancel_done or j.task99_done or j.reply_lost or j.refused_after_loss)


def test_job_of_a_row_reads_the_machine_columns_and_ignores_the_rest():
    j = STATES["synced_confirmed"]
    row = {name: getattr(j, name) for name in Job.FIELDS} | {"status": "synced", "queue_id": 7}
    assert Job.of(row) == j and Job.of(row).status is SY


# ---- retried failures: when the next attempt is due, by phase, for every retried kind ----

RETRIED = {
    "unreachable": ({}, bad(CANCEL, RETRYABLE, None)),
    "auth_error": ({}, bad(CANCEL, AUTH, 201, "Signature tidak sesuai")),
    "not_recorded": (BOTH, read(False)),
    "not_recorded_after_task99_refused": (DONE, bad(TASK99, REJECTED)),
}
# (id, job age s, attempts before, warned, horizon override, due from NOW: lo, hi, event?)
TIMING = [
    ("first_attempt", FIRST, 0, False, None, 0.25, 0.5, False),
    ("fourth_attempt_capped_at_4s", FIRST, 3, False, None, 2.0, 4.0, False),
    ("never_past_the_first_phase", 19.9, 5, False, None, 0.1, 0.1, False),
    ("exactly_at_the_end_of_the_first_phase", 20.0, 5, False, None, 8.0, 16.0, True),
    ("first_failure_after_the_first_phase", LATER, 5, False, None, 8.0, 16.0, True),
    ("warned_backs_off_exponentially", HOUR, 11, True, None, 512.0, 1024.0, False),
    ("warned_capped_at_max_interval", HOUR, 30, True, None, 900.0, 1800.0, False),
    ("never_past_the_horizon", HOUR, 30, True, NOW + sec(10), 10.0, 10.0, False),
]  # fmt: skip


@pytest.mark.parametrize("kind", RETRIED)
@pytest.mark.parametrize(("age", "attempts", "warned", "horizon", "lo", "hi", "warns"),
                         [r[1:] for r in TIMING], ids=[r[0] for r in TIMING])  # fmt: skip
def test_retried_failure_is_due_again_within_bounds_and_warns_once_after_the_first_phase(
    kind, age, attempts, warned, horizon, lo, hi, warns
):
    flags, call = RETRIED[kind]
    j = job(age, confirmable=True, attempts=attempts, warned=warned,
            status=F if warned else P, **flags)  # fmt: skip
    if horizon is not None:
        j = replace(j, horizon_at=horizon)
    c = run(j, call)
    error_kind = kind.removesuffix("_after_task99_refused")
    assert NOW + sec(lo) <= c.job.next_attempt_at <= NOW + sec(hi)
    assert c.job.will_retry and c.job.last_error_kind == error_kind
    in_first = NOW < j.first_phase_until
    assert c.job.status is (P if in_first else F) and c.job.warned is (not in_first)
    assert c.emit == (failed(error_kind, True) if warns else None)
    assert c.ticket_sync is (F if warns else None)


@pytest.mark.parametrize("kind", RETRIED)
def test_retried_failure_at_the_horizon_is_final_with_its_own_kind(kind):
    flags, call = RETRIED[kind]
    j = job(HORIZON, status=F, warned=True, confirmable=True, attempts=300, **flags)
    c = run(j, call)
    error_kind = kind.removesuffix("_after_task99_refused")
    assert out(c) == Out(F, False, True, F, failed(error_kind, False))
    assert c.job.last_error_kind == error_kind


def test_auth_error_is_retried_like_an_outage_until_the_horizon_with_one_warning():
    j = new_job(NOW, POLICY, confirmable=False)
    emitted = []
    for at in [1, 5, 19.9, 20, 21, 3600, 86400, 6 * 86400, POLICY.horizon_s - 1]:
        c = run(j, bad(CANCEL, AUTH, 201, "Timestamp kedaluwarsa"), now=NOW + sec(at), service=FKTP)
        assert c.job.will_retry and c.job.last_error_kind == "auth_error", at
        emitted += [c.emit] if c.emit else []
        j = c.job
    assert emitted == [failed("auth_error", True)]
    c = run(j, bad(CANCEL, AUTH), now=NOW + sec(POLICY.horizon_s), service=FKTP)
    assert c.emit == failed("auth_error", False) and not c.job.will_retry


# ---- a lost `batal` reply followed by a refusal, worded any way ----

REFUSALS = [
    bad(CANCEL, REJECTED, 201, "Antrean Tidak Ditemukan"),
    bad(CANCEL, REJECTED, 201, "Pasien Sudah Dilayani, Antrean Tidak Dapat Dibatalkan"),
    bad(CANCEL, REJECTED, 202, "Data booking tidak valid"),
    bad(CANCEL, REJECTED, None, "status tidak dikenal"),
]


def lost_reply(warned: bool, service: str = RS) -> Job:
    """A job whose first `batal` got no reply (quietly in the first phase, or with a warning)."""
    j = job(LATER if warned else FIRST, confirmable=service == RS)
    c = run(j, bad(CANCEL, RETRYABLE, None), service=service)
    assert c.job.reply_lost and c.job.warned is warned and c.job.will_retry
    return c.job


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda c: c.message)
@pytest.mark.parametrize("warned", [False, True], ids=["quiet", "warned"])
def test_refusal_after_lost_batal_reply_is_not_final_for_confirmable_job_read_back_decides(
    refusal, warned
):
    j = lost_reply(warned)
    r = step(j, refusal)
    assert isinstance(r, Progress) and r.next is TASK99 and r.job.refused_after_loss
    c = run(j, refusal, ok(TASK99), read(True))
    assert out(c) == Out(SY, False, warned, SY, synced(warned))
    assert c.job.confirmed_at == NOW and not c.job.cancel_done


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda c: c.message)
def test_refusal_after_lost_batal_reply_then_task99_refused_is_final_rejected(refusal):
    c = run(lost_reply(True), refusal, bad(TASK99, REJECTED, 201, "TaskId tidak valid"))
    assert out(c) == Out(F, False, True, F, failed("rejected", False))


def test_refusal_after_lost_batal_reply_then_not_recorded_retries_task99_never_batal():
    c = run(lost_reply(False), REFUSALS[0], ok(TASK99), read(False))
    assert (c.job.status, c.job.will_retry, c.job.last_error_kind) == (P, True, "not_recorded")
    assert next_step(c.job, PLAN, RS) is TASK99
    again = run(c.job, ok(TASK99), read(True), now=NOW + sec(2))
    assert again.emit == synced(False)


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda c: c.message)
@pytest.mark.parametrize("warned", [False, True], ids=["quiet", "warned"])
def test_refusal_after_lost_batal_reply_is_final_rejected_for_antreanfktp_which_has_no_read_back(
    refusal, warned
):
    c = run(lost_reply(warned, FKTP), refusal, service=FKTP)
    assert out(c) == Out(F, False, True, F, failed("rejected", False))


def test_refusal_after_lost_batal_reply_is_final_rejected_when_read_back_is_switched_off():
    j = replace(lost_reply(False), confirmable=False)
    c = run(j, REFUSALS[0], plan=NO_READBACK)
    assert c.emit == failed("rejected", False)


# ---- read-back not recorded: task 99 again, one warning after the first phase, recovery ----


def test_read_back_not_recorded_sends_task99_again_warns_once_and_recovers_on_confirmation():
    j = new_job(NOW, POLICY, confirmable=True)
    c = run(j, ok(CANCEL), ok(TASK99), read(False), now=NOW + sec(1))
    assert out(c) == Out(P, True, False, None, None) and c.job.cancel_done
    assert (c.job.last_error_kind, c.job.readback_result) == ("not_recorded", "not_recorded")
    assert next_step(c.job, PLAN, RS) is TASK99
    c = run(c.job, ok(TASK99), read(False), now=NOW + sec(5))  # still in the first phase
    assert out(c) == Out(P, True, False, None, None)
    c = run(c.job, ok(TASK99), read(False), now=NOW + sec(25))
    assert out(c) == Out(F, True, True, F, failed("not_recorded", True))
    c = run(c.job, ok(TASK99), read(False), now=NOW + sec(HOUR))
    assert out(c) == Out(F, True, True, None, None)
    c = run(c.job, ok(TASK99), read(True), now=NOW + sec(2 * HOUR))
    assert out(c) == Out(SY, False, True, SY, synced(True))
    assert c.job.confirmed_at == NOW + sec(2 * HOUR) and c.job.readback_result == "recorded"


def test_read_back_not_recorded_at_the_horizon_is_final_not_recorded():
    j = replace(new_job(NOW, POLICY, confirmable=True), cancel_done=True, warned=True, status=F)
    c = run(j, ok(TASK99), read(False), now=NOW + sec(POLICY.horizon_s))
    assert out(c) == Out(F, False, True, F, failed("not_recorded", False))


# ---- fold: the calls re-applied to the job as re-read under lock ----

ATTEMPTS = {
    "fktp_batal_ok": (FKTP, [ok(CANCEL)], synced(True)),
    "rs_confirmed": (RS, [ok(CANCEL), ok(TASK99), read(True)], synced(True)),
    "rs_batal_lost_reply": (RS, [bad(CANCEL, RETRYABLE, None)], None),
    "rs_auth_error": (RS, [bad(CANCEL, AUTH)], None),
    "rs_not_recorded": (RS, [ok(CANCEL), ok(TASK99), read(False)], None),
}


@pytest.mark.parametrize(("service", "calls", "emit"), ATTEMPTS.values(), ids=list(ATTEMPTS))
def test_fold_on_a_job_warned_while_its_calls_ran_never_warns_twice(service, calls, emit):
    claimed = job(LATER, confirmable=service == RS)  # as claimed shortly before its phase ended
    swept = deadline(claimed, NOW)  # the sweeper warned while the calls ran
    assert swept is not None and swept.emit == failed("unreachable", True)
    c = run(swept.job, *calls, service=service)
    assert c.emit == emit
    assert c.ticket_sync is (SY if emit else None) and c.job.warned
    if emit is None:  # from the stale snapshot the same calls would have warned a second time
        assert run(claimed, *calls, service=service).emit is not None


@pytest.mark.parametrize(
    ("service", "flags"),
    [(FKTP, {"cancel_done": True}), (RS, {"cancel_done": True, "task99_done": True}),
     (RS, {**BOTH, "confirmable": True, "confirmed_at": CONFIRMED_AT})],
)  # fmt: skip
def test_fold_without_calls_syncs_a_job_with_nothing_left_to_send(service, flags):
    # e.g. the worker stopped after the last call and before storing its outcome
    j = job(**flags)
    assert next_step(j, PLAN, service) is None
    assert run(j, service=service).emit == synced(False)


@pytest.mark.parametrize(
    ("service", "flags", "calls"),
    [(FKTP, {}, []), (RS, {"confirmable": True}, []),
     (RS, {"confirmable": True}, [ok(CANCEL)]),
     (RS, {"confirmable": True}, [ok(CANCEL), ok(TASK99)]),
     (RS, {"confirmable": True, **AFTER_LOSS}, [ok(TASK99)])],
    ids=["fktp_no_call", "rs_no_call", "rs_batal_only", "rs_no_read_back", "rs_after_loss"],
)  # fmt: skip
def test_fold_of_an_attempt_that_stopped_early_never_reports_synced(service, flags, calls):
    # a worker that stops between calls (shutdown, lost lease) must not mark the job synced
    # before `batal` / task 99 / the read-back have all succeeded
    c = run(job(**flags), *calls, service=service)
    assert c.job.status is not SY and c.emit is None and c.ticket_sync is None


# ---- admin retry and resolve ----


@pytest.mark.parametrize("state", [*ACTIVE, "failed_final"])
@pytest.mark.parametrize(
    "horizon", [NOW - sec(60), NOW + sec(HOUR), NOW + sec(30 * 86400)], ids=["past", "near", "far"]
)
def test_admin_retry_is_an_immediate_attempt_with_a_horizon_never_shorter(state, horizon):
    j = replace(STATES[state], horizon_at=horizon)
    c = admin_retry(j, NOW, POLICY)
    assert c.job.next_attempt_at == NOW and c.job.will_retry
    assert c.job.horizon_at == max(horizon, NOW + sec(POLICY.horizon_s))
    assert (c.emit, c.ticket_sync, c.release_lease) == (None, None, False)
    kept = ("status", "warned", "first_phase_until", "attempts", "cancel_done", "last_error_kind")
    assert [getattr(c.job, k) for k in kept] == [getattr(j, k) for k in kept]


def test_admin_retry_of_a_final_refusal_sends_batal_again_and_reports_recovery():
    c = admin_retry(STATES["failed_final"], NOW, POLICY)
    assert next_step(c.job, PLAN, FKTP) is CANCEL
    assert out(run(c.job, ok(CANCEL), service=FKTP)) == SYNCED_RECOVERED
    again = run(c.job, bad(CANCEL, RETRYABLE, None), service=FKTP)  # no second warning
    assert out(again) == QUIET_FAILED and again.job.horizon_at == c.job.horizon_at


def test_admin_retry_after_a_refusal_believed_only_after_a_read_back_starts_with_batal():
    refused = replace(
        job(status=Status.FAILED, will_retry=False, warned=True, confirmable=True),
        reply_lost=True,
        refused_after_loss=True,
    )
    c = admin_retry(refused, NOW, POLICY)
    assert next_step(c.job, PLAN, RS) is CANCEL
    assert c.job.reply_lost, "a second refusal still goes to the read-back"


@pytest.mark.parametrize(
    ("state", "text"),
    [("synced_confirmed", "sudah tersinkron"), ("synced_not_confirmable", "sudah tersinkron"),
     ("resolved", "sudah diselesaikan manual"),
     ("resolved_after_warning", "sudah diselesaikan manual")],
)  # fmt: skip
@pytest.mark.parametrize("action", ["retry", "resolve"])
def test_admin_retry_and_resolve_of_a_finished_job_are_refused_as_invalid_transition(
    state, text, action
):
    j = STATES[state]
    with pytest.raises(InvalidTransition) as refused:
        admin_retry(j, NOW, POLICY) if action == "retry" else admin_resolve(j)
    assert text in refused.value.message and str(refused.value) == refused.value.message


@pytest.mark.parametrize("state", [*ACTIVE, "failed_final"])
def test_admin_resolve_of_an_unsynced_job_ends_it_without_event_or_call(state):
    j = replace(STATES[state], confirmable=True)
    c = admin_resolve(j)
    assert out(c) == Out(RES, False, j.warned, RES, None) and c.release_lease
    assert deadline(c.job, NOW + sec(HOUR)) is None
    assert reconcile(c.job, False, NOW, POLICY) is None


# ---- the warning sweeper ----

# (id, job, the warning's error_kind or None for nothing to do)
DEADLINES = [
    ("never_failed", job(LATER), "unreachable"),
    ("after_outage", job(LATER, last_error_kind="unreachable"), "unreachable"),
    ("after_auth_error", job(LATER, last_error_kind="auth_error"), "auth_error"),
    ("after_not_recorded", job(LATER, last_error_kind="not_recorded"), "not_recorded"),
    ("exactly_at_phase_end", job(POLICY.first_phase_s), "unreachable"),
    ("at_horizon", job(HORIZON), "unreachable"),
    ("in_first_phase", job(POLICY.first_phase_s - 0.001, last_error_kind="auth_error"), None),
    ("pending_but_warned", job(LATER, warned=True), None),
    ("pending_not_retrying", job(LATER, will_retry=False), None),
    ("failed_warned", STATES["failed_warned_retrying"], None),
    ("failed_final", STATES["failed_final"], None),
    ("synced", STATES["synced_confirmed"], None),
    ("resolved", STATES["resolved"], None),
]  # fmt: skip


@pytest.mark.parametrize(("j", "kind"), [r[1:] for r in DEADLINES], ids=[r[0] for r in DEADLINES])
def test_deadline_warns_once_a_pending_job_past_its_first_phase(j, kind):
    c = deadline(j, NOW)
    if kind is None:
        assert c is None
        return
    assert c is not None and out(c) == Out(F, True, True, F, failed(kind, True))
    assert not c.release_lease and c.attempt is None  # an attempt may hold the job
    assert c.job.next_attempt_at == j.next_attempt_at and c.job.attempts == j.attempts
    assert deadline(c.job, NOW + sec(HOUR)) is None


# ---- daily reconciliation: a fresh read of a synced, confirmable job ----


@pytest.mark.parametrize("confirmed_at", [CONFIRMED_AT, None], ids=["confirmed", "unconfirmed"])
def test_reconcile_recorded_keeps_the_job_synced_and_notes_the_read(confirmed_at):
    j = replace(STATES["synced_confirmed"], confirmed_at=confirmed_at)
    c = reconcile(j, True, NOW, POLICY)
    assert c is not None and out(c) == Out(SY, False, False, None, None)
    assert (c.job.readback_at, c.job.readback_result) == (NOW, "recorded")
    assert c.job.confirmed_at == (confirmed_at or NOW)


@pytest.mark.parametrize("warned", [False, True], ids=["never_warned", "recovered_before"])
def test_reconcile_not_recorded_reopens_the_job_with_a_fresh_first_phase_and_task99(warned):
    j = replace(STATES["synced_confirmed"], warned=warned)
    c = reconcile(j, False, NOW, POLICY)
    assert c is not None and out(c) == Out(P, True, False, P, None) and c.error
    assert (c.job.task99_done, c.job.cancel_done, c.job.confirmed_at) == (False, True, None)
    assert (c.job.readback_at, c.job.readback_result, c.job.last_error_kind) == (
        NOW, "not_recorded", "not_recorded")  # fmt: skip
    assert c.job.first_phase_until == NOW + sec(POLICY.first_phase_s)
    assert c.job.horizon_at >= max(j.horizon_at, NOW + sec(POLICY.horizon_s))
    assert c.job.next_attempt_at == NOW and next_step(c.job, PLAN, RS) is TASK99


def test_reopened_job_confirmed_within_its_first_phase_syncs_without_warning():
    c = reconcile(STATES["synced_confirmed"], False, NOW, POLICY)
    assert c is not None
    assert run(c.job, ok(TASK99), read(True), now=NOW + sec(1)).emit == synced(False)


def test_reopened_job_still_not_recorded_warns_after_its_first_phase_then_recovers():
    c = reconcile(STATES["synced_confirmed"], False, NOW, POLICY)
    assert c is not None
    swept = deadline(c.job, NOW + sec(POLICY.first_phase_s))
    assert swept is not None and swept.emit == failed("not_recorded", True)
    done = run(swept.job, ok(TASK99), read(True), now=NOW + sec(HOUR))
    assert out(done) == SYNCED_RECOVERED


# ---- the daily report's state of a cancellation ----


def reopened() -> Job:
    c = reconcile(STATES["synced_confirmed"], False, NOW, POLICY)
    assert c is not None
    return c.job


REPORT = [
    ("no_job_yet", None, "pending", "pending"),
    ("no_job_no_ticket_state", None, None, "pending"),
    ("resolved_before_the_job_existed", None, "resolved_manually", "resolved_manually"),
    ("resolved", STATES["resolved"], "resolved_manually", "resolved_manually"),
    ("resolved_job_ticket_unknown", STATES["resolved"], None, "resolved_manually"),
    ("ticket_resolved_wins", STATES["synced_confirmed"], "resolved_manually", "resolved_manually"),
    ("confirmed", STATES["synced_confirmed"], "synced", "confirmed"),
    ("synced_unconfirmed", replace(STATES["synced_confirmed"], confirmed_at=None), "synced",
     "unconfirmed"),
    ("synced_fktp", STATES["synced_not_confirmable"], "synced", "not_confirmable"),
    ("pending", STATES["pending_first_phase"], "pending", "pending"),
    ("pending_outage", STATES["pending_past_first_phase_not_warned"], "pending", "pending"),
    ("pending_auth_error", job(last_error_kind="auth_error"), "pending", "pending"),
    ("pending_not_recorded", job(last_error_kind="not_recorded"), "pending", "not_recorded"),
    ("reopened_by_reconciliation", reopened(), "pending", "not_recorded"),
    ("failed_retrying", STATES["failed_warned_retrying"], "failed", "failed"),
    ("failed_auth_error", STATES["failed_warned_at_horizon"], "failed", "failed"),
    ("failed_not_recorded", job(HOUR, status=F, warned=True, last_error_kind="not_recorded"),
     "failed", "not_recorded"),
    ("failed_outage_after_not_recorded", job(HOUR, status=F, warned=True,
     last_error_kind="unreachable", readback_result="not_recorded"), "failed", "not_recorded"),
    ("failed_final_rejected", STATES["failed_final"], "failed", "failed"),
    ("failed_final_not_recorded", job(HOUR, status=F, will_retry=False, warned=True,
     last_error_kind="not_recorded"), "failed", "not_recorded"),
    ("failed_no_credentials", job(HOUR, status=F, will_retry=False, warned=True,
     last_error_kind="no_credentials"), "failed", "failed"),
    ("event_mismatch", job(HOUR, status=F, will_retry=False, last_error_kind="event_mismatch"),
     "pending", "failed"),
]  # fmt: skip


@pytest.mark.parametrize(("j", "ticket", "expected"), [r[1:] for r in REPORT],
                         ids=[r[0] for r in REPORT])  # fmt: skip
def test_report_state_of_every_combination(j, ticket, expected):
    assert report_state(j, ticket) == expected
