"""Retry policy of a sync job (through the job's state machine) and the circuit breaker."""

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.bpjs_sync_worker.breaker import BreakerState, CircuitBreaker
from shared.bpjs import OutcomeKind
from shared.sync_job.machine import Call, Emit, Plan, RetryPolicy, Status, Step, fold, new_job

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
POLICY = RetryPolicy(first_phase_s=20, backoff_base_s=0.5, max_interval_s=1800, horizon_s=7 * 86400)


def attempt(kind, *, age_s=0.0, warned=False, attempts=1):
    """A one-call attempt (antreanfktp `batal`) ending at NOW; `attempts` includes this one."""
    job = new_job(NOW - timedelta(seconds=age_s), POLICY, confirmable=False)
    job = replace(job, status=Status.FAILED if warned else Status.PENDING, warned=warned,
                  attempts=attempts - 1)  # fmt: skip
    calls = [Call(Step.CANCEL, kind.value)]
    return fold(job, calls, now=NOW, policy=POLICY, plan=Plan(), service="antreanfktp",
                rng=random.Random(1))  # fmt: skip


@pytest.mark.parametrize("kind", [OutcomeKind.SUCCESS, OutcomeKind.ALREADY_DONE])
def test_success_and_already_cancelled_both_count_as_synced(kind):
    c = attempt(kind)
    assert c.job.status is Status.SYNCED and c.emit == Emit("BpjsSynced")


def test_refusal_is_final_at_once():
    c = attempt(OutcomeKind.REJECTED, attempts=1)
    assert c.job.status is Status.FAILED and not c.job.will_retry
    assert c.emit == Emit("BpjsSyncFailed", will_retry=False, error_kind="rejected")


def test_retryable_failure_in_first_phase_retries_quietly_before_the_phase_ends():
    c = attempt(OutcomeKind.RETRYABLE, age_s=19.9, attempts=6)
    assert c.job.status is Status.PENDING and c.job.will_retry and c.emit is None
    assert c.job.next_attempt_at <= NOW + timedelta(seconds=0.1)


def test_retryable_failure_after_first_phase_warns_once_then_retries_in_background():
    warning = Emit("BpjsSyncFailed", will_retry=True, error_kind="unreachable")
    assert attempt(OutcomeKind.RETRYABLE, age_s=21).emit == warning
    quiet = attempt(OutcomeKind.RETRYABLE, age_s=21, warned=True)
    assert quiet.emit is None and quiet.job.will_retry
    assert NOW < quiet.job.next_attempt_at <= NOW + timedelta(seconds=POLICY.max_interval_s)


def test_retryable_failure_at_the_horizon_gives_up():
    c = attempt(OutcomeKind.RETRYABLE, age_s=7 * 86400 + 1, warned=True)
    assert c.job.status is Status.FAILED and not c.job.will_retry
    assert c.emit == Emit("BpjsSyncFailed", will_retry=False, error_kind="unreachable")


def test_backoff_grows_exponentially_to_the_cap_with_jitter():
    rng = random.Random(7)
    first = [POLICY.delay(n, True, rng) for n in range(1, 10)]
    later = [POLICY.delay(n, False, rng) for n in range(1, 30)]
    assert all(0 < d <= 4.0 for d in first)
    assert 0.25 <= first[0] <= 0.5
    assert max(later) <= 1800 and later[-1] >= 900
    assert len({round(POLICY.delay(5, False, random.Random(s)), 6) for s in range(5)}) == 5


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_breaker_opens_after_threshold_failures_then_allows_one_probe():
    clock = Clock()
    b = CircuitBreaker(threshold=3, cooldown_s=2, max_cooldown_s=60, clock=clock)
    for _ in range(3):
        assert b.capacity(10) == 10
        b.record(healthy=False)
    assert b.state is BreakerState.OPEN and b.capacity(10) == 0
    clock.t = 2.0
    assert b.state is BreakerState.HALF_OPEN and b.capacity(10) == 1
    b.started()
    assert b.capacity(10) == 0  # only one probe at a time


def test_failed_probe_doubles_the_cooldown_and_a_healthy_answer_closes():
    clock = Clock()
    b = CircuitBreaker(threshold=1, cooldown_s=2, max_cooldown_s=60, clock=clock)
    b.record(healthy=False)
    clock.t = 2.0
    b.started()
    b.record(healthy=False)
    clock.t = 5.0
    assert b.state is BreakerState.OPEN  # cooldown now 4 s from t=2
    clock.t = 6.0
    assert b.capacity(5) == 1
    b.started()
    b.record(healthy=True)
    assert b.state is BreakerState.CLOSED and b.capacity(5) == 5


def test_refusals_do_not_open_the_breaker():
    b = CircuitBreaker(threshold=2, cooldown_s=2, max_cooldown_s=60, clock=Clock())
    for _ in range(10):
        b.record(healthy=True)
    assert b.state is BreakerState.CLOSED
