"""The timeline's signals on a real stack: a receiver connected by an app of
the project runs in a worker after the order commits, its first failure is
recorded in a group named after it and retried, and the order is untouched."""

import json

import pytest

from tests.stack import make_stack, wait_until

pytestmark = pytest.mark.e2e

RECEIVER = "tests.e2e.receivers.apps.tell_the_warehouse"


def test_a_receiver_runs_in_a_worker_is_recorded_when_it_raises_and_retried(tmp_path):
    log = tmp_path / "receiver.log"
    stack = make_stack(
        tmp_path,
        DJANGO_SETTINGS_MODULE="tests.e2e.receivers.settings",
        TEST_RECEIVER_LOG=str(log),
    )
    try:
        stack.start()
        order_id = stack.place()["order_id"]
        assert stack.wait_for_terminal(order_id)["status"] == "COMPLETED"

        def two_calls():
            lines = log.read_text().splitlines() if log.exists() else []
            return [json.loads(line) for line in lines] if len(lines) >= 2 else None

        calls = wait_until(two_calls, timeout=30, what="the receiver called twice")
        group = stack.read_one(
            "SELECT task, exception_type, count FROM orders_failuregroup"
        )
        workers = set(stack.cluster_descendants())
        state = stack.read_one("SELECT state, attempts FROM orders_receivercall")
    finally:
        stack.stop()

    assert [(c["order_id"], c["type"], c["status"]) for c in calls] == [
        (order_id, "order.completed", "COMPLETED")
    ] * 2
    assert {c["pid"] for c in calls} <= workers
    assert stack.web.pid not in {c["pid"] for c in calls}
    assert group == (f"signal receiver {RECEIVER}", "ConnectionError", 1)
    assert state == ("DONE", 2)
