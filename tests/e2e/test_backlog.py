"""A queue backlog far longer than ORDER_REDISPATCH_SECONDS, drained by real
django-q2 workers: the dispatcher must not take waiting tasks for lost ones."""

import re
import time

import pytest

from tests.stack import wait_until

pytestmark = pytest.mark.e2e

BACKLOG = 5000
# django-q2 logs this line for every task a worker starts (django_q/worker.py).
TASK_STARTED = re.compile(r" processing \S+ 'orders\.tasks\.process_order'")
# The pusher logs this line for every task it drops
# (orders/workers/djangoq/sentinel.py).
TASK_DROPPED = re.compile(r" dropped task \S+ of order \S+: a batch took the order")


def test_a_backlog_far_longer_than_the_redispatch_period_runs_one_task_per_attempt(
    fresh_stack,
):
    """5,000 orders wait in the embedded broker (SQLite, ORM) for 2 workers, with
    ORDER_REDISPATCH_SECONDS=2: the backlog lasts a minute or more, and every
    waiting order is due again and again meanwhile."""
    stack = fresh_stack(ORDER_REDISPATCH_SECONDS="2")
    # Every task is in the real broker before a worker can take one.
    stack.stop_cluster()
    stack.manage("place_orders", "--count", str(BACKLOG), timeout=600)
    started = time.monotonic()
    stack.start_cluster()
    staff = stack.staff_client()

    def drained():
        counts = staff.get("/api/dashboard/stats").json()["counts"]
        return counts if counts["COMPLETED"] == BACKLOG else None

    try:
        wait_until(
            drained, timeout=900, interval=2, what=f"{BACKLOG} orders to complete"
        )
    finally:
        staff.close()
    drained_in = time.monotonic() - started
    # Extra tasks wait behind the originals: let the workers run them too.
    counts = wait_until(
        lambda: stack.queued_tasks() == 0 and {"attempts": stack.attempts_made()},
        timeout=600,
        interval=1,
        what="the broker to empty",
    )
    stack.stop_cluster()
    log = stack.cluster_log().read_text()
    started, dropped = len(TASK_STARTED.findall(log)), len(TASK_DROPPED.findall(log))
    print(
        f"drained {BACKLOG} orders in {drained_in:.0f} s; {started} tasks run, "
        f"{dropped} dropped, {counts}"
    )
    assert counts["attempts"] == BACKLOG
    assert (started + dropped) / counts["attempts"] <= 1.05, (started, dropped, counts)
    # Most orders were taken along in batches, and their tasks never reached a
    # worker.
    assert dropped >= BACKLOG // 2, (started, dropped)
