"""The cluster watch on a real qcluster: a worker killed inside a message
restarts the cluster, and nothing else does, not even a backlog drained by
workers that django-q2 recycles every few tasks."""

import os
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from orders.models import Order, OrderEvent
from orders.workers.djangoq.sentinel import RESTART_MESSAGE
from tests.stack import make_stack, process_title, wait_until

pytestmark = pytest.mark.e2e

BACKLOG_RUNS = 3
BACKLOG_ORDERS_PER_RUN = 700


def cluster_process(stack, role: str) -> list[int]:
    """Pids below the qcluster whose django-q2 title names `role`."""
    return [
        pid for pid in stack.cluster_descendants() if process_title(pid)[2:3] == [role]
    ]


def waits_in(pid: int, kernel_function: str) -> bool:
    """Some thread of `pid` sleeps in that kernel function (its wchan; newer
    kernels name the pipe functions anon_pipe_read and anon_pipe_write)."""
    for thread in Path(f"/proc/{pid}/task").iterdir():
        try:
            wchan = (thread / "wchan").read_text()
        except OSError:
            continue  # the thread has just exited
        if wchan in {kernel_function, f"anon_{kernel_function}"}:
            return True
    return False


def both_workers_idle(stack) -> list[int] | None:
    idle = stack.idle_worker_pids()
    return idle if len(idle) == 2 else None


def test_a_worker_killed_inside_a_message_restarts_the_cluster_which_works_again(
    fresh_stack,
):
    """Freezes the pusher halfway through writing a task larger than the pipe
    holds, lets a worker read that half, and kills the worker there."""
    stack = fresh_stack()
    workers = wait_until(
        lambda: both_workers_idle(stack), timeout=10, what="both workers idle"
    )
    (pusher,) = cluster_process(stack, "pusher")
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    stack.manage(
        "shell",
        "-c",
        "from django_q.tasks import async_task; "
        "async_task('math.floor', 'x' * 1_000_000)",
    )
    wait_until(
        lambda: waits_in(pusher, "pipe_write"),
        timeout=20,
        what="the pusher writing into a full pipe",
    )
    os.kill(pusher, signal.SIGSTOP)
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    reader = wait_until(
        lambda: next((pid for pid in workers if waits_in(pid, "pipe_read")), 0),
        timeout=20,
        what="a worker waiting for the rest of the message",
    )
    os.kill(reader, signal.SIGKILL)
    wait_until(
        lambda: RESTART_MESSAGE in stack.cluster_log().read_text(),
        timeout=20,
        what="the sentinel to restart the cluster",
    )
    assert (
        f"process {reader} died in the middle of a message on the task queue"
        in stack.cluster_log().read_text()
    )
    placed = stack.place()
    assert stack.wait_for_terminal(placed["order_id"])["status"] == "COMPLETED"
    assert not set(stack.cluster_descendants()) & {pusher, *workers}


def order_counts(database) -> dict[str, int]:
    with closing(sqlite3.connect(database, timeout=30)) as db:
        rows = db.execute(
            f"SELECT status, COUNT(*) FROM {Order._meta.db_table} GROUP BY status"
        ).fetchall()
    return dict(rows)


def lease_expiries(database) -> int:
    with closing(sqlite3.connect(database, timeout=30)) as db:
        (count,) = db.execute(
            f"SELECT COUNT(*) FROM {OrderEvent._meta.db_table} "
            "WHERE detail LIKE '%lease expired%'"
        ).fetchone()
    return count


def test_a_backlog_drained_by_often_recycled_workers_never_restarts_the_cluster(
    tmp_path,
):
    """Each run places its orders with the cluster stopped, then starts it: the
    queue stays full while django-q2 retires each worker after 10 tasks, idle,
    which is what the old title-sampling watch read as a lost idle worker."""
    stack = make_stack(
        tmp_path,
        Q_RECYCLE="10",
        # Ample for one order on a loaded machine: only a worker that was
        # killed lets its lease expire.
        ORDER_LEASE_SECONDS="10",
        # Keeps the run about the cluster: a backlog waits longer than the
        # stack's 5 s, and re-dispatching it would only add duplicate tasks.
        ORDER_REDISPATCH_SECONDS="600",
        # One order per task, so that the workers run (and are recycled
        # through) the whole backlog: in batches, its orders are done after a
        # few dozen tasks (tests/test_batches.py).
        ORDER_BATCH_SIZE="1",
    )
    database = tmp_path / "db.sqlite3"
    stack.migrate()
    try:
        for run in range(1, BACKLOG_RUNS + 1):
            stack.manage("place_orders", "--count", str(BACKLOG_ORDERS_PER_RUN))
            started = time.monotonic()
            stack.start_cluster()
            wait_until(
                lambda run=run: (
                    order_counts(database)
                    == {"COMPLETED": run * BACKLOG_ORDERS_PER_RUN}
                ),
                timeout=240,
                interval=1,
                what=f"run {run}: every order COMPLETED",
            )
            print(f"run {run}: drained in {time.monotonic() - started:.1f} s")
            stack.stop_cluster()
    finally:
        stack.stop()
    logs = [
        stack.cluster_log(start).read_text() for start in range(1, BACKLOG_RUNS + 1)
    ]
    assert lease_expiries(database) == 0
    for log in logs:
        assert RESTART_MESSAGE not in log
        # Any restart, by whatever mechanism, replaces the monitor and pusher.
        assert log.count(" monitoring at ") == 1
        assert log.count(" pushing tasks at ") == 1
        assert "reincarnated worker" not in log
        # Recycling happened throughout, or this run proved nothing.
        assert log.count("recycled worker") >= BACKLOG_ORDERS_PER_RUN // 10 // 2
