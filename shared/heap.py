"""The process's cyclic garbage collector: which objects its passes walk, and what they cost.

CPython's collector walks every tracked object of a generation on each of its passes; a full
pass (generation 2) walks all of them, holding the event loop meanwhile. In a process whose
long-lived objects are many (the notifier with thousands of websocket sessions holds hundreds
of thousands), those full passes stop everything for hundreds of milliseconds, at times no one
chose, every time the heap has grown by a quarter since the last one. Frozen objects
(`gc.freeze()`) are walked by no automatic pass; reference counting frees them as usual, and
only garbage in reference cycles among them waits, until the next deliberate full pass.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from shared.logging import get_logger

log = get_logger(__name__)


def freeze_startup_heap() -> None:
    """Take what start-up allocated (modules, the app, settings: most of the process's objects)
    out of the cyclic garbage collector's view. A full collection otherwise walks all of them
    and stalls the event loop for tens of milliseconds, which every request waiting in the loop
    pays, refusals included. Call once, when start-up is done."""
    gc.collect()
    gc.freeze()


class HeapFreezer:
    """Freezes the heap every `freeze_every_s`, so the automatic passes walk only what was
    allocated since; every `full_every_s` it gives the frozen objects back and runs one full
    pass (reclaiming cycles that died frozen, such as what a closed websocket leaves), then
    freezes the survivors. Cyclic garbage of long-lived objects thus waits at most
    `full_every_s`, and the one long pause comes on that schedule instead of whenever the
    heap has grown.

    Churn brings the full pass early: once `released()` has been called (a connection closed)
    `full_after_released` times since the last pass, and at least `live()` times (as many as
    are open), so garbage kept frozen stays bounded however fast connections come and go, and
    each pass, whose cost grows with what is live, is paid for by as many closures."""

    def __init__(
        self,
        *,
        freeze_every_s: float,
        full_every_s: float,
        registry: CollectorRegistry,
        full_after_released: int = 0,
        live: Callable[[], int] = lambda: 0,
    ) -> None:
        if freeze_every_s <= 0 or full_every_s < freeze_every_s:
            raise ValueError("need 0 < freeze_every_s <= full_every_s")
        if full_after_released < 0:
            raise ValueError("need full_after_released >= 0 (0: on the schedule only)")
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s
        self.full_after_released = full_after_released
        self.live = live
        self.released_since_full = 0
        self._full_at = time.monotonic() + full_every_s  # the next scheduled full pass
        frozen = Gauge(
            "process_gc_frozen_objects",
            "Objects frozen out of the cyclic collector's automatic passes",
            registry=registry,
        )
        frozen.set_function(gc.get_freeze_count)  # counts a list: only when scraped
        full = Counter(
            "process_gc_full_collections",
            "Deliberate full collections (frozen objects included): scheduled, or churn",
            ["reason"],
            registry=registry,
        )
        self.full = {reason: full.labels(reason=reason) for reason in ("scheduled", "churn")}
        # That the freezer runs, and a point to wait for: everything allocated before a count
        # was read is frozen once the count has moved on.
        self.freezes = Counter(
            "process_gc_freezes",
            "Freezes of the heap: every period's, and the one after each full pass",
            registry=registry,
        )

    def freeze(self) -> None:
        gc.freeze()
        self.freezes.inc()

    def released(self, count: int = 1) -> None:
        """Something that may leave cyclic garbage behind is gone (a connection closed)."""
        self.released_since_full += count

    def _churned(self) -> bool:
        bound = max(self.full_after_released, self.live())
        return bool(self.full_after_released) and self.released_since_full >= bound

    def collect_all(self, reason: str = "scheduled") -> int:
        """One full pass over every object, frozen or not; returns the objects reclaimed."""
        released, self.released_since_full = self.released_since_full, 0
        self._full_at = time.monotonic() + self.full_every_s
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        started = time.perf_counter()
        collected = gc.collect()
        took = time.perf_counter() - started
        self.freeze()
        self.full[reason].inc()
        log.info(
            "gc_full_collection",
            reason=reason,
            released=released,
            frozen_before=frozen,
            collected=collected,
            frozen_after=gc.get_freeze_count(),
            duration_ms=round(took * 1000, 1),
        )
        return collected

    def tick(self) -> None:
        """One period: the scheduled full pass when it is due, an early one after churn,
        else a freeze of what was allocated since the last period."""
        if time.monotonic() >= self._full_at:
            self.collect_all("scheduled")
        elif self._churned():
            self.collect_all("churn")
        else:
            self.freeze()

    async def run(self) -> None:
        self._full_at = time.monotonic() + self.full_every_s
        while True:
            await asyncio.sleep(self.freeze_every_s)
            self.tick()


class GcPauses:
    """Every collection's pause, per generation, as `python_gc_pause_seconds`: a pause is
    time the event loop answered nothing. Installed while the context is entered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        hist = Histogram(
            "python_gc_pause_seconds",
            "Pauses of the cyclic garbage collector, by generation",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self._by_generation = [hist.labels(generation=str(g)) for g in range(3)]
        self._started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)

    def install(self) -> None:
        if self.on_gc not in gc.callbacks:
            gc.callbacks.append(self.on_gc)

    def uninstall(self) -> None:
        if self.on_gc in gc.callbacks:
            gc.callbacks.remove(self.on_gc)

    def __enter__(self) -> GcPauses:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


@functools.cache
def process_gc_pauses() -> GcPauses:
    """The pauses of a service whose metrics are in the default registry (the API, the worker):
    one histogram per process; `install()` it once the process serves."""
    return GcPauses(REGISTRY)
