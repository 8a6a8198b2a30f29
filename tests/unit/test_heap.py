"""The process's cyclic garbage collector: frozen long-lived objects, full passes on a schedule,
every pause measured."""

import asyncio
import gc
import weakref

import pytest
from prometheus_client import CollectorRegistry

from shared.heap import GcPauses, HeapFreezer, process_gc_pauses
from tests.fixtures.infra import wait_until


class Node:
    """A cycle: reclaimed only by the cyclic collector, never by reference counting."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def fresh_gc():
    """Each test starts and ends with nothing frozen (the test process is shared)."""
    gc.collect()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.collect()


def frozen_gauge(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("process_gc_frozen_objects") or 0.0


def test_freeze_takes_live_objects_out_of_the_automatic_passes(fresh_gc):
    registry = CollectorRegistry()
    heap = HeapFreezer(freeze_every_s=10, full_every_s=3600, registry=registry)
    node = Node()
    tracked_before = len(gc.get_objects())
    heap.freeze()
    assert gc.get_freeze_count() >= tracked_before
    assert len(gc.get_objects()) < tracked_before / 10  # what a full pass now walks
    assert frozen_gauge(registry) == gc.get_freeze_count()
    # A cycle among frozen objects is not reclaimed by any automatic pass, even a full one.
    ref = weakref.ref(node)
    del node
    gc.collect()
    assert ref() is not None


def test_the_full_pass_reclaims_cycles_that_died_frozen_and_freezes_the_survivors(fresh_gc):
    registry = CollectorRegistry()
    heap = HeapFreezer(freeze_every_s=10, full_every_s=3600, registry=registry)
    nodes = [Node() for _ in range(500)]
    heap.freeze()
    refs = [weakref.ref(n) for n in nodes]
    del nodes
    collected = heap.collect_all()
    assert collected >= 500
    assert all(r() is None for r in refs)
    assert gc.get_freeze_count() > 0  # the survivors are long-lived: frozen again at once
    assert frozen_gauge(registry) == gc.get_freeze_count()
    assert full_passes(registry, "scheduled") == 1


async def test_run_freezes_on_its_period_and_collects_in_full_on_the_longer_one(fresh_gc):
    registry = CollectorRegistry()
    heap = HeapFreezer(freeze_every_s=0.05, full_every_s=0.5, registry=registry)
    task = asyncio.create_task(heap.run())
    try:
        node = Node()
        ref = weakref.ref(node)
        # Frozen on the short period: no generation holds it any more.
        await wait_until(
            lambda: not any(o is ref() for o in gc.get_objects()), 10, 0.01, what="a freeze"
        )
        del node
        # A frozen cycle is reclaimed only by the scheduled full pass.
        await wait_until(lambda: ref() is None, 10, 0.01, what="the full pass")
        assert full_passes(registry, "scheduled") >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_every_freeze_is_counted_the_one_after_a_full_pass_too(fresh_gc):
    """The count is what a reader waits on for "frozen since": it moves only after a freeze."""
    registry = CollectorRegistry()
    heap = HeapFreezer(freeze_every_s=10, full_every_s=3600, registry=registry)

    def freezes() -> float:
        return registry.get_sample_value("process_gc_freezes_total") or 0.0

    assert freezes() == 0
    heap.tick()
    node = Node()
    assert freezes() == 1 and any(o is node for o in gc.get_objects())
    heap.tick()
    assert freezes() == 2 and not any(o is node for o in gc.get_objects())
    heap.collect_all()
    assert freezes() == 3


def full_passes(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("process_gc_full_collections_total", {"reason": reason})
    return value or 0.0


def test_churn_brings_the_full_pass_early_once_as_many_closed_as_are_open(fresh_gc):
    """What closed connections leave in frozen cycles waits for a full pass; an hour of churn
    must not pile it up. The bound is the larger of the floor and the live count, so a full
    pass (which walks every live object) is paid for by at least as many closures."""
    registry = CollectorRegistry()
    live = 8
    heap = HeapFreezer(
        freeze_every_s=0.02,
        full_every_s=3600,
        registry=registry,
        full_after_released=5,
        live=lambda: live,
    )
    nodes = [Node() for _ in range(100)]
    heap.tick()  # a period with nothing released: a freeze
    assert gc.get_freeze_count() > 0
    refs = [weakref.ref(n) for n in nodes]
    del nodes
    heap.released(7)  # past the floor, below the 8 open
    heap.tick()
    assert full_passes(registry, "churn") == 0 and refs[0]() is not None
    heap.released()
    heap.tick()
    assert refs[0]() is None  # the early full pass
    assert full_passes(registry, "churn") == 1
    assert full_passes(registry, "scheduled") == 0
    live = 0  # fewer open than the floor: the floor is the bound
    heap.released(4)
    heap.tick()
    assert full_passes(registry, "churn") == 1  # the count started again after the pass
    heap.released()
    heap.tick()
    assert full_passes(registry, "churn") == 2


def test_a_freezer_that_is_off_leaves_the_collector_alone(fresh_gc):
    with pytest.raises(ValueError):
        HeapFreezer(freeze_every_s=0, full_every_s=3600, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        HeapFreezer(freeze_every_s=10, full_every_s=5, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        HeapFreezer(
            freeze_every_s=1, full_every_s=5, registry=CollectorRegistry(), full_after_released=-1
        )


def test_every_collection_pause_is_observed_per_generation():
    registry = CollectorRegistry()
    pauses = GcPauses(registry)

    def count(generation: int) -> float:
        return (
            registry.get_sample_value(
                "python_gc_pause_seconds_count", {"generation": str(generation)}
            )
            or 0.0
        )

    with pauses:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    gc.collect(2)  # uninstalled: not observed
    assert count(0) == 1
    assert count(2) == 2
    total = registry.get_sample_value("python_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0
    assert pauses.on_gc not in gc.callbacks


def test_the_process_wide_pauses_install_once_and_count_in_the_default_registry():
    from prometheus_client import REGISTRY

    pauses = process_gc_pauses()
    assert process_gc_pauses() is pauses  # one histogram per process
    before = REGISTRY.get_sample_value("python_gc_pause_seconds_count", {"generation": "2"}) or 0.0
    pauses.install()
    pauses.install()
    try:
        assert gc.callbacks.count(pauses.on_gc) == 1
        gc.collect(2)
    finally:
        pauses.uninstall()
    after = REGISTRY.get_sample_value("python_gc_pause_seconds_count", {"generation": "2"})
    assert after == before + 1
