"""Retry policy and circuit breaker of the BPJS sync worker (pure, no I/O)."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from services.bpjs_sync_worker.breaker import BreakerState, CircuitBreaker
from services.bpjs_sync_worker.policy import RetryPolicy, Verdict, decide
from shared.bpjs import OutcomeKind

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
POLICY = RetryPolicy(first_phase_s=20, backoff_base_s=0.5, max_interval_s=1800, horizon_s=7 * 86400)


def verdict(kind, *, age_s=0.0, warned=False, attempts=1):
    created = NOW - timedelta(seconds=age_s)
    return decide(
        kind,
        now=NOW,
        attempts=attempts,
        warned=warned,
        first_phase_until=created + timedelta(seconds=20),
        horizon_at=created + timedelta(days=7),
        policy=POLICY,
        rng=random.Random(1),
    )


@pytest.mark.parametrize("kind", [OutcomeKind.SUCCESS, OutcomeKind.ALREADY_DONE])
def test_success_and_already_cancelled_both_count_as_synced(kind):
    assert verdict(kind).verdict is Verdict.SYNCED


def test_refusal_is_final_at_once():
    d = verdict(OutcomeKind.REJECTED, attempts=1)
    assert d.verdict is Verdict.REJECTED and d.next_attempt_at is None


def test_retryable_failure_in_first_phase_retries_quietly_before_the_phase_ends():
    d = verdict(OutcomeKind.RETRYABLE, age_s=19.9, attempts=6)
    assert d.verdict is Verdict.RETRY
    assert d.next_attempt_at <= NOW + timedelta(seconds=0.1)


def test_retryable_failure_after_first_phase_warns_once_then_retries_in_background():
    assert verdict(OutcomeKind.RETRYABLE, age_s=21).verdict is Verdict.WARN_AND_RETRY
    assert verdict(OutcomeKind.RETRYABLE, age_s=21, warned=True).verdict is Verdict.RETRY


def test_retryable_failure_at_the_horizon_gives_up():
    d = verdict(OutcomeKind.RETRYABLE, age_s=7 * 86400 + 1, warned=True)
    assert d.verdict is Verdict.GIVE_UP and d.next_attempt_at is None


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
