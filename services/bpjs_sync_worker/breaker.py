"""Circuit breaker toward BPJS: hold calls while BPJS fails for everyone, probe, then resume."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from shared.logging import get_logger

log = get_logger(__name__)


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Opens after `threshold` consecutive retryable failures; one probe per cooldown.

    Only transport-level failures count (timeouts, 5xx, HTML): a business refusal is an answer
    from a healthy BPJS and closes the breaker like a success.

    `since` is the unix time the breaker last opened or closed. Half-open probes and a failed
    probe's new cooldown belong to the open period: for whoever watches, the breaker has been
    open since it first opened until a call gets an answer. `on_change(breaker)` is called at
    each opening and closing.
    """

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        max_cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_change: Callable[[CircuitBreaker], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown_s
        self.max_cooldown = max_cooldown_s
        self.on_change = on_change
        self._clock = clock
        self._wall = wall
        self._failures = 0
        self._opened_at: float | None = None
        self._cooldown = cooldown_s
        self._probe_in_flight = False
        self._since = wall()

    @property
    def since(self) -> float:
        """Unix time of the last opening or closing (of the breaker's creation before any)."""
        return self._since

    @property
    def is_open(self) -> bool:
        """Open or half-open: calls are held (but for one probe per cooldown)."""
        return self._opened_at is not None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self._cooldown:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def capacity(self, wanted: int) -> int:
        """How many calls may start now (all when closed, one probe when half-open)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return wanted
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            return min(1, wanted)
        return 0

    def started(self) -> None:
        if self.state is not BreakerState.CLOSED:
            self._probe_in_flight = True

    def record(self, healthy: bool) -> None:
        """Record a finished call: healthy = BPJS answered (success, duplicate or refusal)."""
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if healthy:
            self._failures = 0
            was_open = self._opened_at is not None
            self._opened_at = None
            self._cooldown = self.base_cooldown
            if was_open:
                self._changed()
            return
        self._failures += 1
        if self._opened_at is not None and was_probe:
            self._cooldown = min(self._cooldown * 2, self.max_cooldown)  # probe failed: wait longer
            self._opened_at = self._clock()
        elif self._opened_at is None and self._failures >= self.threshold:
            self._opened_at = self._clock()
            self._changed()

    def _changed(self) -> None:
        self._since = self._wall()
        if self.on_change is None:
            return
        try:
            self.on_change(self)
        except Exception as exc:  # the listener's trouble must not lose a call's outcome
            log.warning("breaker_listener_failed", error=repr(exc))
