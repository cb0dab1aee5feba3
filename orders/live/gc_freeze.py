"""Short full garbage collections in the web process.

Thousands of open streams are hundreds of thousands of long-lived objects (each
stream's connection, request, task and subscriber). CPython's full collection
walks every one of them, and no stream is served meanwhile: that was the
streams' latency tail (docs/decisions/0005-freezing-gc-survivors.md). What starts
those collections is not the streams but the cyclic garbage every other request
leaves behind (its task and context, an asgiref Local, the request's database
wrapper), which fills the old generation.

So after each full collection, when everything left is reachable, the
survivors are frozen (gc.freeze): the next full collection walks only what came
after. Objects frozen this way that later become cyclic garbage (a closed
stream's) are not lost: every `sweep_seconds` the frozen objects are handed back
to the collector, and the next full collection walks everything once.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SWEEP_SECONDS = 60.0


@dataclass
class CollectorStats:
    full_collections: int = 0
    sweeps: int = 0
    longest_full_ms: float = 0.0
    last_full_ms: float = 0.0
    # The lengths of the latest full collections, newest last.
    recent_full_ms: deque = field(default_factory=lambda: deque(maxlen=32))


@dataclass
class FrozenSurvivors:
    """The gc callback that freezes the survivors of each full collection."""

    sweep_seconds: float = SWEEP_SECONDS
    clock: Callable[[], float] = time.monotonic
    stats: CollectorStats = field(default_factory=CollectorStats)

    def __post_init__(self) -> None:
        self._started: dict[int, float] = {}
        self._last_sweep = self.clock()

    def install(self) -> None:
        """Freezes what is loaded now (start-up objects live as long as the
        process) and from then on the survivors of every full collection."""
        if self._after_collection not in gc.callbacks:
            gc.callbacks.append(self._after_collection)
        gc.freeze()

    def uninstall(self) -> None:
        if self._after_collection in gc.callbacks:
            gc.callbacks.remove(self._after_collection)
        gc.unfreeze()

    def _after_collection(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = time.perf_counter()
            return
        started = self._started.pop(thread, None)
        if started is not None:
            took_ms = (time.perf_counter() - started) * 1000
            self.stats.last_full_ms = took_ms
            self.stats.recent_full_ms.append(round(took_ms, 2))
            self.stats.longest_full_ms = max(self.stats.longest_full_ms, took_ms)
        self.stats.full_collections += 1
        if self.clock() - self._last_sweep >= self.sweep_seconds:
            # The frozen objects go back to the oldest generation; the next full
            # collection walks them, frees the cycles among them, and its own
            # callback freezes what is left.
            self._last_sweep = self.clock()
            self.stats.sweeps += 1
            gc.unfreeze()
            return
        gc.freeze()

    def as_dict(self) -> dict:
        return {
            "full_collections": self.stats.full_collections,
            "sweeps": self.stats.sweeps,
            "longest_full_ms": round(self.stats.longest_full_ms, 2),
            "last_full_ms": round(self.stats.last_full_ms, 2),
            "recent_full_ms": list(self.stats.recent_full_ms),
            "frozen_objects": gc.get_freeze_count(),
        }


frozen_survivors = FrozenSurvivors()
