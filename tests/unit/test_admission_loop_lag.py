"""LoopLag's histogram tells an on-call engineer whether a late event loop was busy running
our own code or was waiting for a CPU the machine gave to someone else."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY

from services.cancel_api.admission import LoopLag
from tests.fixtures.infra import wait_until


def _late_over(cause: str, seconds: float) -> float:
    """Lags counted so far with `cause` that lasted more than `seconds` (a bucket bound)."""
    labels = {"cause": cause}
    total = REGISTRY.get_sample_value("event_loop_lag_seconds_count", labels) or 0.0
    within = REGISTRY.get_sample_value(
        "event_loop_lag_seconds_bucket", {**labels, "le": str(seconds)}
    )
    return total - (within or 0.0)


def _rounds() -> float:
    """Rounds LoopLag has measured so far, whatever their cause."""
    return sum(
        REGISTRY.get_sample_value("event_loop_lag_seconds_count", {"cause": c}) or 0.0
        for c in ("running", "waiting")
    )


async def _next_round(what: str) -> None:
    """Wait until LoopLag has measured one more round."""
    before = _rounds()
    await wait_until(lambda: _rounds() > before, timeout=5, interval=0.001, what=what)


async def _stall_with(block) -> None:
    lag = LoopLag(interval_s=0.01)
    task = asyncio.create_task(lag.run())
    try:
        # One timely round first: the next one's timer is then due during the stall.
        await _next_round("a round")
        block()  # synchronous: no round completes during it, so the next one is the delayed one
        await _next_round("the delayed round")
    finally:
        task.cancel()


async def test_a_loop_kept_busy_by_a_long_callback_counts_as_running():
    running, waiting = _late_over("running", 0.1), _late_over("waiting", 0.1)

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass

    await _stall_with(spin)
    assert _late_over("running", 0.1) == running + 1
    assert _late_over("waiting", 0.1) == waiting


async def test_a_loop_whose_thread_is_off_the_cpu_counts_as_waiting():
    running, waiting = _late_over("running", 0.1), _late_over("waiting", 0.1)
    # Off the CPU as when the machine runs others instead: here by a blocking call.
    await _stall_with(lambda: time.sleep(0.2))
    assert _late_over("waiting", 0.1) == waiting + 1
    assert _late_over("running", 0.1) == running
