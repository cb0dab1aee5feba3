"""The queues of a django-q2 cluster, made so that a process SIGKILLed at any
moment can never leave a lock held.

django-q2's workers share one multiprocessing queue. `multiprocessing.Queue` guards
its pipe with POSIX semaphores, which have no owner: a worker killed while it waits
for a task inside `get()` (the OOM killer picks processes, not moments) keeps the
reader lock forever and no process can read a task again. The same holds for the
writer lock, the size counter django-q2 adds, and the per-worker timer lock the
sentinel takes on every guard cycle.

Here every such lock is a `RobustLock`, an flock(2) lock the kernel drops when its
holder dies, so a death while waiting costs nothing. A death in the middle of a
message is different: the pipe is a byte stream, and half a message read or
written leaves it unreadable. Each queue therefore records, in memory shared with
every process of the cluster, which process is reading or writing and whether it
is already inside a message (`ClusterQueue.died_mid_transfer`); no process reads
or writes after a transfer that did not finish, and the sentinel restarts the
cluster's processes on exactly that evidence (orders/workers/djangoq/sentinel.py).

Stands in for django_q 1.11.1's `queues.Queue` (a subclass, ClusterQueue) and
the multiprocessing locks it and `cluster.Sentinel.spawn_worker` create.

Linux only: a process reopens the lock file through /proc/self/fd.
"""

import fcntl
import logging
import os
import tempfile
import threading
import time
import weakref
from functools import partial
from multiprocessing import Value
from multiprocessing.context import reduction
from multiprocessing.sharedctypes import RawArray
from queue import Empty

from django_q.queues import Queue

logger = logging.getLogger(__name__)

# Slots of a queue's transfer record. READER: 0 when the read lock is free,
# +pid while that process waits for a message, -pid while it is inside one.
# WRITER: pid while that process is inside a message, else 0. A process clears
# its slot before it releases the lock, so a slot that names a process when the
# lock is next taken names a process that died (or failed) holding it.
READER, WRITER = 0, 1
LOCK_POLL_SECONDS = 0.005

_locks: "weakref.WeakSet[RobustLock]" = weakref.WeakSet()


def supported() -> bool:
    """RobustLock works here: each process reopens the lock's nameless file
    through Linux's /proc/self/fd."""
    return os.path.isdir("/proc/self/fd")


class RobustLock:
    """A reentrant lock shared by the processes forked after its creation, which
    the kernel releases when the process holding it dies.

    flock(2) locks belong to an open file description, and a description
    inherited through fork is shared, not exclusive; so each process opens the
    (nameless) lock file anew, and a threading lock orders the threads of one
    process. Stands in for multiprocessing's Lock and RLock (it is reentrant):
    the read and write locks of django_q.queues.Queue and the lock of its
    SharedCounter's Value.
    """

    def __init__(self):
        # Unlinked at once: nothing to clean up, whoever dies first.
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - kept open
        self._own_fd = [None]  # this process's description of the file
        self._forget_holding()
        _locks.add(self)
        weakref.finalize(self, _close_own_fd, self._own_fd)

    def _forget_holding(self):
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._owner = None

    def _after_fork_in_child(self):
        # The parent's description is shared: locking it here would lock the
        # parent's lock, and keeping it open would keep the parent's lock held
        # after the parent died.
        _close_own_fd(self._own_fd)
        self._forget_holding()

    def _fd(self) -> int:
        if self._own_fd[0] is None:
            self._own_fd[0] = os.open(f"/proc/self/fd/{self._file.fileno()}", os.O_RDWR)
        return self._own_fd[0]

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        deadline, wait = None, -1
        if block and timeout is not None:
            wait = max(0.0, timeout)
            deadline = time.monotonic() + wait
        if not self._thread_lock.acquire(block, wait):
            return False
        try:
            if self._depth == 0 and not self._flock(block, deadline):
                self._thread_lock.release()
                return False
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        self._owner = threading.get_ident()
        return True

    def _flock(self, block: bool, deadline: float | None) -> bool:
        fd = self._fd()
        if block and deadline is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return True
        # flock has no timeout: poll for a bounded wait.
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not block or time.monotonic() >= deadline:
                    return False
            time.sleep(LOCK_POLL_SECONDS)

    def release(self) -> None:
        if self._depth == 0 or self._owner != threading.get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            fcntl.flock(self._fd(), fcntl.LOCK_UN)
        self._thread_lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def __reduce__(self):
        raise TypeError("a RobustLock reaches other processes by fork only")


def _close_own_fd(own_fd: list) -> None:
    if own_fd[0] is not None:
        os.close(own_fd[0])
        own_fd[0] = None


def _after_fork_in_child() -> None:
    for lock in list(_locks):
        lock._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


def robust_value(typecode: str, value):
    """multiprocessing.Value, its lock a RobustLock: stands in for the worker
    timer `Value("f", -1)` of django_q.cluster.Sentinel.spawn_worker and the
    counter of django_q.queues.SharedCounter."""
    return Value(typecode, value, lock=RobustLock())


class ClusterQueue(Queue):
    """django-q2's queue (size counter, "STOP" pills) whose locks no dead process
    can hold, and which records every transfer in progress. Stands in for
    django_q.queues.Queue; `get` for the one it inherits from
    multiprocessing.queues.Queue, `_reset` wraps the writer's `send_bytes`.

    Not covered: the semaphore that bounds the queue (QUEUE_LIMIT) counts slots,
    not owners, so a pusher killed between reserving a slot and writing its
    message (microseconds) leaves the queue one slot smaller.
    """

    def __init__(self, *args, name: str, **kwargs):
        self.name = name
        # Before super().__init__, which calls _reset(), which reads it.
        self._record = RawArray("i", 2)
        super().__init__(*args, **kwargs)
        self._rlock = RobustLock()
        self._wlock = RobustLock()
        self.size.count = robust_value("i", 0)

    def __getstate__(self):
        raise TypeError("a ClusterQueue reaches other processes by fork only")

    def _reset(self, after_fork=False):
        super()._reset(after_fork)
        # The feeder thread calls this with the write lock held.
        self._send_bytes = partial(
            _send_recorded, self._writer.send_bytes, self._record, self.name
        )

    def get(self, block: bool = True, timeout: float | None = None):
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")
        deadline = None
        if not block:
            deadline = time.monotonic()
        elif timeout is not None:
            deadline = time.monotonic() + timeout
        if not self._rlock.acquire(block, timeout):
            raise Empty
        try:
            message = self._read(deadline)
        finally:
            self._rlock.release()
        self.size.increment(-1)
        return reduction.ForkingPickler.loads(message)

    def _read(self, deadline: float | None) -> bytes:
        """Read one message; the caller holds the read lock."""
        record, me = self._record, os.getpid()
        previous = record[READER]
        if previous < 0:
            logger.error(
                "%s queue: process %d died while reading a message, so the rest "
                "of the stream may be misread; process %d waits for the "
                "sentinel to restart the cluster",
                self.name,
                -previous,
                me,
            )
            _wait_until(deadline)
            raise Empty
        if previous > 0:
            logger.warning(
                "%s queue: process %d died waiting for a message; the kernel "
                "released its read lock and process %d took it over",
                self.name,
                previous,
                me,
            )
        record[READER] = me
        try:
            ready = self._reader.poll(
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
        except BaseException:
            record[READER] = 0
            raise
        if not ready:
            record[READER] = 0
            raise Empty
        record[READER] = -me
        message = self._reader.recv_bytes()
        self._sem.release()
        record[READER] = 0
        return message

    def died_mid_transfer(self, pid: int) -> bool:
        """The dead process `pid` stopped inside a message: the stream is
        unusable. (One that died waiting to read left it intact.)"""
        return self._record[READER] == -pid or self._record[WRITER] == pid


def _send_recorded(send_bytes, record, name: str, message: bytes) -> None:
    previous = record[WRITER]
    if previous:
        logger.error(
            "%s queue: process %d stopped while writing a message, so the "
            "stream may be misread; process %d waits for the sentinel to "
            "restart the cluster",
            name,
            previous,
            os.getpid(),
        )
        _wait_until(None)
    record[WRITER] = os.getpid()
    send_bytes(message)
    record[WRITER] = 0


def _wait_until(deadline: float | None) -> None:
    """Block until `deadline`, or for good (until the restart kills this
    process): touching a broken stream would hand out garbage."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    threading.Event().wait(timeout)
