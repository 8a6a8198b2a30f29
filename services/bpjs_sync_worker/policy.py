"""Retry policy of a sync job: pure functions of the job's timeline and the call's outcome."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.bpjs import OutcomeKind


@dataclass(frozen=True)
class RetryPolicy:
    first_phase_s: float = 20.0
    backoff_base_s: float = 0.5
    max_interval_s: float = 1800.0
    horizon_s: float = 7 * 24 * 3600.0

    def delay(self, attempts: int, in_first_phase: bool, rng: random.Random | None = None) -> float:
        """Exponential backoff with full jitter; short in the first phase, up to the max later."""
        rng = rng or random.Random()
        cap = min(4.0, self.max_interval_s) if in_first_phase else self.max_interval_s
        ceiling = min(cap, self.backoff_base_s * (2 ** max(0, attempts - 1)))
        # half fixed, half jitter: never zero (no hot loop), never in lockstep with other jobs
        return float(ceiling / 2 + rng.uniform(0, ceiling / 2))


class Verdict(StrEnum):
    SYNCED = "synced"  # BpjsSynced (recovered if a warning went out before)
    RETRY = "retry"  # try again at next_attempt_at, nothing emitted
    WARN_AND_RETRY = "warn_and_retry"  # BpjsSyncFailed(unreachable, will_retry=true), keep going
    GIVE_UP = "give_up"  # BpjsSyncFailed(unreachable, will_retry=false): horizon reached
    REJECTED = "rejected"  # BpjsSyncFailed(rejected, will_retry=false)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    next_attempt_at: datetime | None


def decide(
    kind: OutcomeKind,
    *,
    now: datetime,
    attempts: int,
    warned: bool,
    first_phase_until: datetime,
    horizon_at: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """What happens after an attempt whose outcome is `kind` (attempts includes this one)."""
    if kind in (OutcomeKind.SUCCESS, OutcomeKind.ALREADY_DONE):
        return Decision(Verdict.SYNCED, None)
    if kind is OutcomeKind.REJECTED:
        return Decision(Verdict.REJECTED, None)
    if now >= horizon_at:
        return Decision(Verdict.GIVE_UP, None)
    in_first = now < first_phase_until
    at = now + timedelta(seconds=policy.delay(attempts, in_first, rng))
    if in_first:
        # Never schedule past the end of the first phase: the warning must go out on time.
        return Decision(Verdict.RETRY, min(at, first_phase_until))
    at = min(at, horizon_at)
    return Decision(Verdict.RETRY if warned else Verdict.WARN_AND_RETRY, at)
