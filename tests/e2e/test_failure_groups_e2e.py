"""Failure groups on a real stack: real workers fail, the monitor records, the
qcluster's failure mailer sends, and the mails land in files (EMAIL_URL file://)
read here as the admins would read them."""

import email
import email.policy
import json
import re
from pathlib import Path

import pytest

from tests.stack import make_stack, wait_until

pytestmark = pytest.mark.e2e

# Long enough for a thousand failing tasks to run on two workers (about 15 s
# here), so every failure after the first mail falls into one digest.
DIGEST_WINDOW_SECONDS = 45
LISTENER = "orders.tasks.order_delivery_completed"


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mails")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, mail_dir):
    running = make_stack(
        tmp_path_factory.mktemp("stack"),
        ADMINS="Ops <ops@example.com>",
        EMAIL_URL=f"file://{mail_dir}",
        FAILURE_DIGEST_WINDOW_SECONDS=str(DIGEST_WINDOW_SECONDS),
    ).start()
    yield running
    running.stop()


def mails(mail_dir: Path, subject_contains: str) -> list[email.message.EmailMessage]:
    """The mails Django's file backend wrote (each file: messages, each followed
    by a line of 79 dashes) whose subject contains the text, oldest first."""
    found = []
    for path in sorted(mail_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        for chunk in path.read_text().split("-" * 79 + "\n"):
            if chunk.strip():
                message = email.message_from_string(chunk, policy=email.policy.default)
                if subject_contains in message["Subject"]:
                    found.append(message)
    return found


def body(message: email.message.EmailMessage) -> str:
    return message.get_content()


def enqueue(stack, calls: list[list[str]]) -> None:
    """Hand `calls` of the delivery listener to the real queue, as the service
    would."""
    script = (
        "import json, sys; from django_q.tasks import async_task; "
        "from orders.selectors import queue_broker; broker = queue_broker(); "
        f"calls = json.loads({json.dumps(json.dumps(calls))}); "
        f"[async_task({LISTENER!r}, *call, broker=broker) for call in calls]"
    )
    stack.manage("shell", "-c", script)


def groups(stack, exception_type: str) -> list[dict]:
    rows = stack.read_all(
        "SELECT id, count, location, resolved, reopened_times, mailed_count "
        "FROM orders_failuregroup WHERE exception_type = ?",
        (exception_type,),
    )
    # SQLite keeps a boolean as 0 or 1.
    return [{**row, "resolved": bool(row["resolved"])} for row in rows]


def test_a_thousand_identical_failures_are_one_group_one_mail_and_one_digest(
    stack, mail_dir
):
    kind = "orders.models.Order.DoesNotExist"
    enqueue(stack, [[f"ord_missing{n}", "dlv_none"] for n in range(1000)])

    wait_until(
        lambda: groups(stack, kind) and groups(stack, kind)[0]["count"] == 1000,
        timeout=DIGEST_WINDOW_SECONDS - 5,
        what="a thousand failures in one group within the digest window",
    )
    [group] = groups(stack, kind)
    assert group["location"] == (
        "orders/services/deliveries.py in order_delivery_completed"
    )
    first = wait_until(
        lambda: [m for m in mails(mail_dir, kind) if " more " not in m["Subject"]],
        timeout=10,
        what="the group's first mail",
    )
    assert len(first) == 1
    assert first[0]["Subject"].startswith(f"[orderproj] {LISTENER} failed: {kind}")
    assert first[0]["To"] == "ops@example.com"
    counted_then = int(re.search(r"Count: +(\d+) since", body(first[0]))[1])
    assert f"/admin/orders/failuregroup/{group['id']}/change/" in body(first[0])

    digests = wait_until(
        lambda: [m for m in mails(mail_dir, kind) if " more " in m["Subject"]],
        timeout=DIGEST_WINDOW_SECONDS + 15,
        what="the digest, one window after the first mail",
    )
    assert digests[0]["Subject"].startswith(
        f"[orderproj] {LISTENER}: {1000 - counted_then} more {kind} since "
    )
    assert len(mails(mail_dir, kind)) == 2
    assert groups(stack, kind)[0]["mailed_count"] == 1000


def test_a_resolved_group_that_fails_again_reopens_and_mails(stack, mail_dir):
    kind = "orders.models.Delivery.DoesNotExist"
    order_id = stack.place()["order_id"]
    stack.wait_for_terminal(order_id)
    enqueue(stack, [[order_id, "dlv_wrong"]])
    wait_until(lambda: mails(mail_dir, kind), timeout=20, what="the new group's mail")
    [group] = groups(stack, kind)

    staff = stack.staff_client()
    staff.get("/admin/orders/failuregroup/")
    resolved = staff.post(
        "/admin/orders/failuregroup/",
        data={
            "action": "resolve_groups",
            "_selected_action": str(group["id"]),
            "index": "0",
            "csrfmiddlewaretoken": staff.cookies["csrftoken"],
        },
    )
    staff.close()
    assert resolved.status_code == 302, resolved.text
    assert groups(stack, kind)[0]["resolved"] is True

    enqueue(stack, [[order_id, "dlv_wrong_again"]])

    regression = wait_until(
        lambda: mails(mail_dir, f"Regression: {LISTENER} failed again: {kind}"),
        timeout=20,
        what="the regression's mail",
    )
    assert len(regression) == 1
    assert f"Group #{group['id']} was resolved and has failed again" in body(
        regression[0]
    )
    [reopened] = groups(stack, kind)
    assert (reopened["resolved"], reopened["reopened_times"], reopened["count"]) == (
        False,
        1,
        2,
    )
    assert len(mails(mail_dir, kind)) == 2
