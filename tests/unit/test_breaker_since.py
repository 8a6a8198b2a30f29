"""The circuit breaker says since when it is in its state and tells a listener when it changes."""

from services.bpjs_sync_worker.breaker import BreakerState, CircuitBreaker


class Clocks:
    """A monotonic clock for the cooldown and a wall clock (unix time) for `since`."""

    def __init__(self) -> None:
        self.t = 0.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_800_000_000.0 + self.t


def breaker(clocks: Clocks, seen: list, threshold: int = 2) -> CircuitBreaker:
    return CircuitBreaker(
        threshold,
        cooldown_s=2,
        max_cooldown_s=8,
        clock=clocks.mono,
        wall=clocks.wall,
        on_change=lambda b: seen.append((b.state, b.since)),
    )


def test_a_new_breaker_is_closed_since_it_was_made_and_has_told_no_one():
    clocks, seen = Clocks(), []
    clocks.t = 5
    b = breaker(clocks, seen)
    assert b.state is BreakerState.CLOSED and b.since == 1_800_000_005.0 and not b.is_open
    assert seen == []


def test_opening_is_told_once_with_the_time_it_opened():
    clocks, seen = Clocks(), []
    b = breaker(clocks, seen)
    clocks.t = 10
    b.record(False)
    assert seen == [] and b.since == 1_800_000_000.0  # one failure below the threshold
    clocks.t = 11
    b.record(False)
    assert b.state is BreakerState.OPEN and b.is_open and b.since == 1_800_000_011.0
    assert seen == [(BreakerState.OPEN, 1_800_000_011.0)]


def test_half_open_probes_and_failed_probes_stay_in_the_open_period_since_it_first_opened():
    clocks, seen = Clocks(), []
    b = breaker(clocks, seen, threshold=1)
    clocks.t = 1
    b.record(False)
    for t in (3.5, 8, 17):  # each cooldown (2, 4, 8 s) ends, one probe goes out and fails
        clocks.t = t
        assert b.state is BreakerState.HALF_OPEN and b.capacity(5) == 1
        b.started()
        b.record(False)
        assert b.state is BreakerState.OPEN and b.is_open
    assert b.since == 1_800_000_001.0
    assert seen == [(BreakerState.OPEN, 1_800_000_001.0)]


def test_closing_after_a_good_probe_is_told_with_the_time_it_closed():
    clocks, seen = Clocks(), []
    b = breaker(clocks, seen, threshold=1)
    clocks.t = 1
    b.record(False)
    clocks.t = 4
    b.started()
    b.record(True)
    assert b.state is BreakerState.CLOSED and not b.is_open and b.since == 1_800_000_004.0
    assert seen == [(BreakerState.OPEN, 1_800_000_001.0), (BreakerState.CLOSED, 1_800_000_004.0)]
    clocks.t = 5
    b.record(True)  # already closed: nothing changes, nobody is told
    assert b.since == 1_800_000_004.0 and len(seen) == 2


def test_a_listener_that_fails_does_not_break_the_breaker():
    clocks = Clocks()

    def broken(_: CircuitBreaker) -> None:
        raise RuntimeError("listener down")

    b = CircuitBreaker(1, 2, 8, clock=clocks.mono, wall=clocks.wall, on_change=broken)
    clocks.t = 1
    b.record(False)
    assert b.state is BreakerState.OPEN and b.since == 1_800_000_001.0
    b.on_change = None
    clocks.t = 3
    b.record(True)
    assert b.state is BreakerState.CLOSED
