"""The queued tasks a batch has left with nothing to do, noted in memory that
every worker of a cluster shares.

A worker that claims a batch takes along orders whose own tasks still wait in
the queue. Each of those tasks would then cost a claim statement (and Django's
connection health check before it) only to find its order taken. So the
claiming worker notes each order it took along together with the `queued_at`
its row had when it was claimed, which is the stamp that order's task carries
(services.orders.order_enqueue, task_stamp); a worker handed a task whose
order and stamp are noted returns without touching the database
(orders.tasks.process_order).

A note is a fact, never a guess: the order's row held that stamp when a worker
claimed its attempt, so the attempt that task was queued for is being run. Any
later need for an attempt (a retry, an operator's retry, the dispatcher's
safety net) writes a new `queued_at` and queues a new task with that stamp,
which no earlier note matches. A note that is lost (its slot reused by another
order, a new cluster) costs only the claim it would have saved.

The table lives in memory mapped before the sentinel forks the workers
(orders/workers/djangoq/sentinel.py), guarded by a RobustLock, which the kernel
releases when its holder dies; a slot's stamp is cleared before the slot is
rewritten, so a
worker killed in the middle of a note leaves a slot no task matches.
"""

import ctypes
import zlib
from collections.abc import Iterable
from multiprocessing.sharedctypes import RawArray

from orders.services.orders import PROCESS_ORDER_TASK, task_stamp
from orders.workers.djangoq.queues import RobustLock

SLOTS = 16384
# Order.order_id's max_length.
ID_BYTES = 40

_table: "TakenAlong | None" = None


class TakenAlong:
    """A fixed table of (order id, stamp), one slot per order id's hash: a new
    note replaces whatever note held its slot."""

    def __init__(self, slots: int = SLOTS):
        self._slots = slots
        self._stamps = RawArray(ctypes.c_int64, slots)
        self._ids = RawArray(ctypes.c_char, slots * ID_BYTES)
        self._lock = RobustLock()

    def _slot(self, key: bytes) -> int:
        return zlib.crc32(key) % self._slots

    def note(self, taken: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            for order_id, order_stamp in taken:
                key = order_id.encode()
                if len(key) > ID_BYTES or order_stamp == 0:
                    continue
                slot = self._slot(key)
                start = slot * ID_BYTES
                self._stamps[slot] = 0
                self._ids[start : start + ID_BYTES] = key.ljust(ID_BYTES, b"\0")
                self._stamps[slot] = order_stamp

    def holds(self, order_id: str, order_stamp: int) -> bool:
        key = order_id.encode()
        if len(key) > ID_BYTES or order_stamp == 0:
            return False
        slot = self._slot(key)
        start = slot * ID_BYTES
        with self._lock:
            return self._stamps[slot] == order_stamp and self._ids[
                start : start + ID_BYTES
            ] == key.ljust(ID_BYTES, b"\0")


def install(table: TakenAlong | None) -> None:
    """This process's table, inherited by the processes it forks from now on
    (the sentinel installs one before it forks the workers)."""
    global _table
    _table = table


def note_taken_along(orders: Iterable) -> None:
    """Note the orders a batch claimed besides the one its task named (call
    once the claim has committed: orders.tasks hands this to the service)."""
    if _table is not None:
        _table.note(
            (order.order_id, task_stamp(order.queued_at))
            for order in orders
            if order.queued_at is not None
        )


def was_taken_along(order_id: str, order_stamp: int | None) -> bool:
    """Whether a batch claimed this order while its row held this stamp, so
    the task with the stamp has nothing left to do (False outside a cluster,
    or for a task without a stamp)."""
    if _table is None or order_stamp is None:
        return False
    return _table.holds(order_id, order_stamp)


def task_was_taken_along(task: dict) -> bool:
    """Whether a task django-q2's pusher took from the broker is an order's
    task that a batch left with nothing to do.

    The table stands in for no django-q2 code: it adds a check where
    django_q.pusher.pusher puts a task into the cluster's queue
    (sentinel.TakenAlongFilter); `task` is the dict that function builds
    (SignedPackage.loads, plus "ack_id")."""
    if task.get("func") != PROCESS_ORDER_TASK or task.get("kwargs"):
        return False
    args = task.get("args") or ()
    if len(args) != 2 or not isinstance(args[0], str) or type(args[1]) is not int:
        return False
    return was_taken_along(args[0], args[1])
