"""The order pipeline end to end: HTTP into a real daphne, real django-q2 workers
and the dispatcher inside a real qcluster, all on a temporary SQLite file."""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest

from orders.workers.djangoq.sentinel import RESTART_MESSAGE
from orders.workers.processes import children_of
from tests.expected import (
    CLEAN_RUN_EVENTS,
    FAIL_TWICE_EVENTS,
    STOCK_FAILS_ONCE_EVENTS,
)
from tests.stack import PROJECT_DIR, free_port, wait_until

pytestmark = pytest.mark.e2e


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def types(document: dict) -> list[str]:
    return [event["type"] for event in document["events"]]


def test_order_placed_over_http_completes_in_a_real_worker(stack):
    placed = stack.place()
    document = stack.wait_for_terminal(placed["order_id"])
    assert document["status"] == "COMPLETED"
    assert document["attempts"] == 1
    assert types(document) == CLEAN_RUN_EVENTS


@pytest.mark.alone
def test_order_failing_twice_completes_on_third_attempt_after_backoff(stack):
    placed = stack.place(fail_times=2)
    document = stack.wait_for_terminal(placed["order_id"])
    assert document["status"] == "COMPLETED"
    assert document["attempts"] == 3
    assert types(document) == FAIL_TWICE_EVENTS
    events = document["events"]
    scheduled = [event for event in events if event["type"] == "order.retry_scheduled"]
    # The stack's policy: base 0.5 s, multiplier 2, jitter up to 20 % shorter.
    for nth, (expected, event) in enumerate(zip([0.5, 1.0], scheduled, strict=True)):
        delay = (
            parse_time(event["next_attempt_at"]) - parse_time(event["at"])
        ).total_seconds()
        assert expected * 0.8 - 0.01 <= delay <= expected + 0.01, (nth, delay)
        next_attempt = events[events.index(event) + 1]
        assert next_attempt["type"] == "order.processing"
        late = (
            parse_time(next_attempt["at"]) - parse_time(event["next_attempt_at"])
        ).total_seconds()
        # Fires at its due time, never early; the benchmark reports the precise
        # lateness, this bound only catches a coarse scheduler tick.
        assert 0 <= late < 2.0, late


def test_order_failing_every_time_fails_after_exactly_three_attempts(stack):
    placed = stack.place(fail_times=9)
    document = stack.wait_for_terminal(placed["order_id"])
    assert document["status"] == "FAILED"
    assert document["attempts"] == 3
    assert types(document).count("order.processing") == 3
    assert types(document)[-1] == "order.failed"
    reason = stack.operator_failure_reason(placed["order_id"])
    assert reason.startswith("gave up after 3 of 3 attempts")
    assert "payment gateway timed out" in reason


def test_permanent_failure_fails_after_one_attempt_with_no_retry(stack):
    placed = stack.place(failure="permanent", step="stock")
    document = stack.wait_for_terminal(placed["order_id"])
    assert document["status"] == "FAILED"
    assert document["attempts"] == 1
    assert "order.retry_scheduled" not in types(document)
    assert "stock: item out of stock (permanent)" in stack.operator_failure_reason(
        placed["order_id"]
    )


def test_the_same_task_delivered_many_times_makes_one_attempt(stack):
    placed = stack.place(delay_ms=1000)
    order_id = placed["order_id"]
    stack.manage(
        "shell",
        "-c",
        "from orders.services.orders import order_enqueue\n"
        f"for _ in range(5): order_enqueue({order_id!r})",
    )
    document = stack.wait_for_terminal(order_id)
    assert document["status"] == "COMPLETED"
    assert document["attempts"] == 1
    assert types(document).count("order.processing") == 1


def test_staff_retry_over_http_runs_a_failed_order_again(stack):
    placed = stack.place(failure="permanent")
    stack.wait_for_terminal(placed["order_id"])
    staff = stack.staff_client()
    response = staff.post(f"/api/orders/{placed['order_id']}/retry")
    staff.close()
    assert response.status_code == 202, response.text
    document = stack.wait_for_status(placed["order_id"], {"FAILED"}, timeout=30)
    # The plan fails attempt 1 of each run: the retry ran it again and failed it.
    assert types(document).count("order.retry_requested") == 1
    assert types(document).count("order.processing") == 2


def test_two_hundred_concurrent_orders_all_finish_without_database_locks(stack):
    def place(index: int) -> str:
        simulate = {"fail_times": 1} if index % 5 == 0 else None
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            body = {
                "customer_email": f"buyer{index}@example.com",
                "items": [{"sku": f"SKU-{index}", "quantity": 1, "unit_price": "3.00"}],
            }
            if simulate:
                body["simulate"] = simulate
            response = client.post("/api/orders", json=body)
            assert response.status_code == 202, response.text
            return response.json()["order_id"]

    with ThreadPoolExecutor(max_workers=25) as pool:
        order_ids = list(pool.map(place, range(200)))
    assert len(set(order_ids)) == 200

    def all_terminal():
        return all(
            stack.status(order_id)["status"] == "COMPLETED" for order_id in order_ids
        )

    wait_until(all_terminal, timeout=180, interval=1, what="200 orders to complete")
    logs = stack.all_logs()
    assert "database is locked" not in logs
    assert "Could not save task result" not in logs


@pytest.mark.alone
def test_a_waiting_retry_does_not_hold_the_only_worker(fresh_stack):
    stack = fresh_stack(Q_WORKERS="1", ORDER_RETRY_BASE_SECONDS="4")
    waiting = stack.place(fail_times=1)
    retrying = stack.wait_for_status(waiting["order_id"], {"RETRYING"})
    due = parse_time(retrying["next_attempt_at"])
    others = [stack.place()["order_id"] for _ in range(3)]
    for order_id in others:
        document = stack.wait_for_terminal(order_id)
        assert document["status"] == "COMPLETED"
        finished = parse_time(document["events"][-1]["at"])
        assert finished < due, "an order waited behind a sleeping retry"
    assert stack.wait_for_terminal(waiting["order_id"])["status"] == "COMPLETED"


def test_killing_the_whole_cluster_mid_order_still_ends_the_order(fresh_stack):
    stack = fresh_stack()
    placed = stack.place(delay_ms=2000)
    stack.wait_for_status(placed["order_id"], {"PROCESSING"}, timeout=20)
    stack.kill_cluster()
    stack.start_cluster()
    document = stack.wait_for_terminal(placed["order_id"], timeout=40)
    assert document["status"] == "COMPLETED"
    assert document["attempts"] == 2
    lost = stack.operator_details(placed["order_id"], "order.attempt_failed")
    assert len(lost) == 1
    assert "attempt 1 lost" in lost[0]


def test_killing_the_busy_worker_mid_order_is_recovered_by_the_cluster(
    fresh_stack,
):
    stack = fresh_stack()
    placed = stack.place(delay_ms=2000)
    stack.wait_for_status(placed["order_id"], {"PROCESSING"}, timeout=20)
    victims = wait_until(stack.busy_worker_pids, timeout=5, what="a busy worker")
    assert len(victims) == 1
    os.kill(victims[0], signal.SIGKILL)
    document = stack.wait_for_terminal(placed["order_id"], timeout=40)
    assert document["status"] == "COMPLETED"
    assert document["attempts"] == 2
    assert stack.cluster.poll() is None, "the cluster should survive its workers"


def test_killing_an_idle_worker_does_not_stall_the_cluster(fresh_stack):
    """An idle django-q2 worker waits for a task holding the task queue's read
    lock. The kernel drops that lock with the killed worker and the next reader
    takes it over: the cluster goes on without a restart."""
    stack = fresh_stack()

    def both_idle():
        idle = stack.idle_worker_pids()
        return idle if len(idle) == 2 else None

    idle = wait_until(both_idle, timeout=10, what="both workers idle")
    time.sleep(0.5)  # from their idle title into Queue.get(), lock in hand
    for pid in idle:
        os.kill(pid, signal.SIGKILL)
    order_ids = [stack.place()["order_id"] for _ in range(3)]
    for order_id in order_ids:
        assert stack.wait_for_terminal(order_id, timeout=45)["status"] == "COMPLETED"
    log = stack.cluster_log().read_text()
    assert "died waiting for a message" in log
    assert RESTART_MESSAGE not in log


def test_sigterm_to_the_cluster_main_process_stops_every_process(fresh_stack):
    stack = fresh_stack()
    descendants = stack.cluster_descendants()
    assert len(descendants) >= 3
    stack.cluster.send_signal(signal.SIGTERM)
    assert stack.cluster.wait(timeout=30) == 0
    wait_until(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in descendants),
        timeout=10,
        what="every qcluster process to exit",
    )


def test_serve_runs_web_and_workers_and_stops_both_on_ctrl_c(tmp_path):
    from tests.stack import make_stack

    stack = make_stack(tmp_path)
    stack.migrate()
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=PROJECT_DIR,
        env=stack.env,
        stdout=(tmp_path / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def serving():
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(serving, timeout=30, what="serve to answer")
        response = httpx.post(
            f"{base}/api/orders",
            json={
                "customer_email": "a@example.com",
                "items": [{"sku": "A", "quantity": 1, "unit_price": "1.00"}],
            },
        )
        order_id = response.json()["order_id"]

        def completed():
            status = httpx.get(f"{base}/api/orders/{order_id}").json()["status"]
            return status == "COMPLETED"

        wait_until(completed, timeout=30, what="the order to complete")
        children = children_of(serve.pid)
        time.sleep(0.5)
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=40) == 0
        wait_until(
            lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children),
            timeout=10,
            what="web and workers to exit",
        )
        assert "stopped" in (tmp_path / "serve.log").read_text()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)


def step_events(document: dict, step: str) -> list[dict]:
    return [
        event
        for event in document["events"]
        if event["type"] == "order.step_completed" and event["step"] == step
    ]


def test_stock_failing_once_completes_with_one_payment_and_two_stock_attempts(stack):
    placed = stack.place(step="stock", fail_times=1)
    document = stack.wait_for_terminal(placed["order_id"])
    assert (document["status"], document["attempts"]) == ("COMPLETED", 2)
    assert types(document) == STOCK_FAILS_ONCE_EVENTS
    assert len(step_events(document, "payment")) == 1
    assert stack.operator_details(placed["order_id"], "order.attempt_failed") == [
        "stock: stock service unavailable (transient)"
    ]
    assert [step["state"] for step in document["steps"]] == ["done", "done"]
    assert stack.gateway_ledger(placed["order_id"]) == {
        f"{placed['order_id']}:payment": document["steps"][0]["reference"],
        f"{placed['order_id']}:stock": document["steps"][1]["reference"],
    }


def test_a_worker_killed_right_after_the_payment_checkpoint_resumes_at_stock(
    fresh_stack,
):
    stack = fresh_stack()
    placed = stack.place(delay_step="stock", delay_ms=2500)
    order_id = placed["order_id"]
    wait_until(
        lambda: step_events(stack.status(order_id), "payment"),
        timeout=20,
        what="the payment checkpoint",
    )
    victims = wait_until(stack.busy_worker_pids, timeout=5, what="a busy worker")
    os.kill(victims[0], signal.SIGKILL)
    document = stack.wait_for_terminal(order_id, timeout=40)
    assert (document["status"], document["attempts"]) == ("COMPLETED", 2)
    assert len(step_events(document, "payment")) == 1
    processing = stack.operator_details(order_id, "order.processing")
    assert processing[1] == "attempt 2 of 3; resuming at stock (payment done)"
    charges = stack.gateway_ledger(f"{order_id}:payment")
    assert list(charges.values()) == [document["steps"][0]["reference"]]


def test_a_worker_killed_inside_the_payment_call_is_not_charged_twice(fresh_stack):
    """Killed after the gateway charged and before the checkpoint: the next
    attempt calls payment with the same idempotency key and the gateway answers
    with the first charge."""
    stack = fresh_stack()
    placed = stack.place(delay_when="after", delay_ms=2500)
    order_id = placed["order_id"]
    key = f"{order_id}:payment"
    charged = wait_until(
        lambda: stack.gateway_ledger(key), timeout=20, what="the gateway to charge"
    )
    victims = wait_until(stack.busy_worker_pids, timeout=5, what="a busy worker")
    os.kill(victims[0], signal.SIGKILL)
    document = stack.wait_for_terminal(order_id, timeout=40)
    assert (document["status"], document["attempts"]) == ("COMPLETED", 2)
    assert stack.gateway_ledger(key) == charged
    (payment,) = step_events(document, "payment")
    assert payment["attempt"] == 2
    (detail,) = stack.operator_details(order_id, "order.step_completed")[:1]
    assert detail.startswith(f"payment done: {charged[key]}")
    assert "already done it for this key" in detail
