"""Notices the one failure a django-q2 cluster cannot recover from by itself.

django-q2's workers share one multiprocessing queue, and an idle worker waits for
its next task inside `Queue.get()` while holding the queue's reader lock. A worker
killed while it waits (the OOM killer picks processes, not moments) takes the lock
with it: the sentinel starts a replacement, but no worker can read a task again and
the cluster looks alive while it does nothing. Measured: after SIGKILL of one idle
worker, no order was processed for as long as the cluster ran.

The watch runs in the qcluster main process. It reads each worker's state from the
process title django-q2 sets (`qcluster <name> idle` / `... processing ...`), and
calls for a restart when an idle worker vanished, no worker has started a task
since, and orders have been waiting for a worker for a while. A worker that starts
a task after the loss proves the queue readable, and the suspicion is dropped (a
worker recycled by django-q2 exits idle too, without holding the lock).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.db.models import Q
from django.utils import timezone

from .models import Order

IDLE = "idle"
PROCESSING = "processing"


@dataclass
class ClusterWatch:
    """Decides, from successive snapshots of worker states, when to restart."""

    confirm_seconds: float = 3.0
    workers: dict[int, str] = field(default_factory=dict)
    # Workers that were busy when an idle one vanished: their task started
    # before the loss, so their finishing it proves nothing.
    busy_at_loss: set[int] = field(default_factory=set)
    lost_idle_worker: bool = False
    waiting_since: float | None = None

    def observe(
        self, workers: dict[int, str], now: float, work_waiting: Callable[[], bool]
    ) -> bool:
        """Record a snapshot (pid -> state); True means: restart the cluster."""
        for pid, state in self.workers.items():
            if pid not in workers and state == IDLE and not self.lost_idle_worker:
                self.lost_idle_worker = True
                self.busy_at_loss = {
                    other for other, s in workers.items() if s == PROCESSING
                }
        self.busy_at_loss &= {p for p, s in workers.items() if s == PROCESSING}
        self.workers = dict(workers)
        if not self.lost_idle_worker:
            return False
        started_since = any(
            state == PROCESSING and pid not in self.busy_at_loss
            for pid, state in workers.items()
        )
        if started_since:
            self.reset()
            return False
        if not work_waiting():
            self.waiting_since = None
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        return now - self.waiting_since >= self.confirm_seconds

    def reset(self) -> None:
        self.lost_idle_worker = False
        self.busy_at_loss = set()
        self.waiting_since = None


def orders_waiting(*, older_than_seconds: float = 5.0) -> bool:
    """Some order has been ready for a worker longer than a healthy queue takes."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return Order.objects.filter(
        Q(status=Order.Status.PENDING, updated_at__lt=cutoff)
        | Q(status=Order.Status.RETRYING, next_attempt_at__lt=cutoff)
    ).exists()


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def descendants_of(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def worker_states(main_pid: int) -> dict[int, str]:
    """pid -> idle|processing for every django-q2 worker below `main_pid`."""
    states = {}
    for pid in descendants_of(main_pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        words = title.replace("\0", " ").split()
        if len(words) >= 3 and words[0] == "qcluster":
            if words[2] == IDLE:
                states[pid] = IDLE
            elif words[2] == PROCESSING:
                states[pid] = PROCESSING
    return states


def can_watch() -> bool:
    """Titles are readable: Linux /proc and setproctitle installed."""
    try:
        import setproctitle  # noqa: F401
    except ImportError:
        return False
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()
