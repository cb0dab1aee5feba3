"""The delivery scenario and the global failure handler on a real daphne and a
real qcluster: the listener raises inside a real worker process."""

import json

import pytest

from tests.stack import make_stack, wait_until

pytestmark = pytest.mark.e2e

ADMIN_ADDRESS = "ops@example.com"
LISTENER = "orders.tasks.order_delivery_completed"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = make_stack(
        tmp_path_factory.mktemp("delivery"),
        ADMINS=f"Ops <{ADMIN_ADDRESS}>",
        EMAIL_URL="console://",
    ).start()
    yield running
    running.stop()


def failure_records(stack) -> list[dict]:
    script = (
        "import json; from orders.models import FailureRecord as F; "
        "print(json.dumps(list(F.objects.order_by('id').values("
        "'id', 'task', 'args', 'exception_type', 'message', 'order__order_id', "
        "'group_id', 'resolved'))))"
    )
    output = stack.manage("shell", "-c", script).stdout
    return json.loads(output.strip().splitlines()[-1])


def event_types(document: dict) -> list[str]:
    return [event["type"] for event in document["events"]]


def status_once(stack, order_id: str, condition, *, what: str) -> dict:
    def check():
        document = stack.status(order_id)
        return document if condition(document) else None

    return wait_until(check, timeout=30, what=what)


def test_listener_failure_in_a_real_worker_is_recorded_mailed_and_rerun(stack):
    placed = stack.place(listener_fails=True)
    order_id = placed["order_id"]
    document = stack.wait_for_terminal(order_id)
    assert document["status"] == "COMPLETED"
    code = document["delivery"]["code"]
    staff = stack.staff_client()

    response = staff.post(f"/api/deliveries/{code}/complete")

    assert response.status_code == 200, response.text
    assert response.json()["completed_now"] is True
    failed = status_once(
        stack,
        order_id,
        lambda doc: "listener.failed" in event_types(doc),
        what="listener.failed on the timeline",
    )
    # The delivery's own transaction stands; only the listener's work is missing.
    assert failed["delivery"]["completed_at"] is not None
    assert failed["delivered_at"] is None
    assert failed["status"] == "COMPLETED"
    records = wait_until(
        lambda: [r for r in failure_records(stack) if r["task"] == LISTENER],
        timeout=20,
        what="a FailureRecord for the listener",
    )
    assert len(records) == 1
    record = records[0]
    assert record["order__order_id"] == order_id
    assert record["args"] == [order_id, code]
    assert record["exception_type"] == "orders.exceptions.ListenerFailed"
    assert record["group_id"] is not None
    assert record["resolved"] is False
    wait_until(
        lambda: f"Latest failure #{record['id']} at" in stack.all_logs(),
        timeout=10,
        what="the admins' mail in the worker's console",
    )
    logs = stack.all_logs()
    assert f"To: {ADMIN_ADDRESS}" in logs
    assert f"Subject: [orderproj] {LISTENER} failed:" in logs
    assert f"Order:     {order_id}" in logs
    assert "Exception: orders.exceptions.ListenerFailed" in logs

    # An operator re-runs the listener from the failure record in the admin.
    rerun = staff.post(
        "/admin/orders/failurerecord/",
        data={
            "action": "rerun_tasks",
            "_selected_action": str(record["id"]),
            "index": "0",
            "csrfmiddlewaretoken": staff.cookies["csrftoken"],
        },
    )
    assert rerun.status_code == 302, rerun.text

    delivered = status_once(
        stack,
        order_id,
        lambda doc: doc["delivered_at"] is not None,
        what="the re-run listener to mark the order delivered",
    )
    assert event_types(delivered)[-2:] == ["listener.failed", "delivery.completed"]
    assert delivered["delivered_at"] == delivered["delivery"]["completed_at"]
    # Completing it again changes nothing.
    again = staff.post(f"/api/deliveries/{code}/complete")
    assert again.json()["completed_now"] is False
    assert stack.status(order_id)["version"] == delivered["version"]
    # The record is history: still there, still open until someone resolves it.
    assert [r["id"] for r in failure_records(stack) if r["task"] == LISTENER] == [
        record["id"]
    ]


def test_any_task_raising_in_a_real_worker_gets_a_failure_record(stack):
    stack.manage(
        "shell",
        "-c",
        "from django_q.tasks import async_task; async_task('math.sqrt', -1)",
    )

    records = wait_until(
        lambda: [r for r in failure_records(stack) if r["task"] == "math.sqrt"],
        timeout=30,
        interval=0.5,
        what="the django-q2 hook to record math.sqrt(-1)",
    )

    assert len(records) == 1
    assert records[0]["exception_type"] == "ValueError"
    assert records[0]["message"] == "math domain error"
    assert records[0]["args"] == [-1]
    assert records[0]["order__order_id"] is None
