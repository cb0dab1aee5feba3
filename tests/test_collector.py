"""The web process's collector: survivors of a full collection are frozen, so the
next one walks only what came after, and a periodic sweep frees what was frozen
and became garbage since (orders/live/gc_freeze.py)."""

import gc
import weakref

import pytest

from orders.live.gc_freeze import FrozenSurvivors


class Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    partner: "Node | None" = None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def collector(clock):
    """A collector installed alone: the process-wide one (installed by
    orderproj.asgi when a test imports it) is set aside meanwhile."""
    saved_callbacks = list(gc.callbacks)
    was_frozen = gc.get_freeze_count() > 0
    gc.callbacks.clear()
    gc.unfreeze()
    collector = FrozenSurvivors(sweep_seconds=60, clock=clock)
    collector.install()
    yield collector
    collector.uninstall()
    gc.callbacks[:] = saved_callbacks
    if was_frozen:
        gc.freeze()


def in_collectors_sight(target) -> bool:
    """gc.get_objects() lists the three generations, never the frozen ones."""
    return any(candidate is target for candidate in gc.get_objects())


def make_cycle() -> Node:
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    return first


def test_install_freezes_what_is_loaded_so_far(collector):
    assert gc.get_freeze_count() > 0
    assert collector.as_dict()["frozen_objects"] == gc.get_freeze_count()


def test_survivors_of_a_full_collection_are_frozen(collector):
    kept = make_cycle()
    assert in_collectors_sight(kept)
    gc.collect()
    assert not in_collectors_sight(kept)
    assert collector.stats.full_collections >= 1


def test_young_collections_freeze_nothing(collector):
    kept = make_cycle()
    gc.collect(1)
    assert in_collectors_sight(kept)
    assert collector.stats.full_collections == 0


def test_cyclic_garbage_is_still_freed_by_a_full_collection(collector):
    dropped = weakref.ref(make_cycle())
    assert dropped() is not None
    gc.collect()
    assert dropped() is None


def test_a_frozen_cycle_dropped_later_is_freed_after_the_next_sweep(collector, clock):
    kept = make_cycle()
    dropped = weakref.ref(kept)
    gc.collect()
    del kept
    gc.collect()
    assert dropped() is not None, "frozen: out of the collector's sight"

    clock.now += 61
    gc.collect()  # its callback hands the frozen objects back
    assert collector.stats.sweeps == 1
    gc.collect()  # this one walks them
    assert dropped() is None
    assert gc.get_freeze_count() > 0, "what is left is frozen again"


def test_no_sweep_before_its_time(collector, clock):
    clock.now += 59
    gc.collect()
    gc.collect()
    assert collector.stats.sweeps == 0


def test_the_length_of_full_collections_is_recorded(collector):
    kept = [make_cycle() for _ in range(50_000)]  # a walk that takes a while
    gc.collect()
    gc.collect()
    figures = collector.as_dict()
    assert figures["full_collections"] >= 2
    assert figures["longest_full_ms"] > 0
    assert figures["longest_full_ms"] >= figures["last_full_ms"]
    assert len(figures["recent_full_ms"]) == figures["full_collections"]
    assert figures["recent_full_ms"][-1] == round(figures["last_full_ms"], 2)
    assert len(kept) == 50_000


def test_uninstall_hands_everything_back(clock):
    saved_callbacks = list(gc.callbacks)
    gc.callbacks.clear()
    try:
        collector = FrozenSurvivors(clock=clock)
        collector.install()
        collector.uninstall()
        assert gc.callbacks == []
        assert gc.get_freeze_count() == 0
    finally:
        gc.callbacks[:] = saved_callbacks
