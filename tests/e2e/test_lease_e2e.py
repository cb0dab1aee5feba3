"""An attempt never outlives its lease: django-q2 stops the worker before the
dispatcher may hand the order to another one (orderproj/settings/queue.py, Q_CLUSTER
"timeout"), so two attempts of one order never run side by side."""

import re
import signal
import time
from datetime import UTC, datetime

import pytest

from tests.stack import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.alone]

LEASE_SECONDS = 8
# Every process of the stack runs with Django's TIME_ZONE, UTC (Django sets TZ),
# so log times are UTC like the events' times.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+ (.*)$")


def sleep_through_the_alarm(seconds: float) -> None:
    """A task stuck where django-q2's alarm cannot reach it, as code blocked in a
    C extension is: SIGALRM is blocked, so only the sentinel's guard can stop it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)


def log_lines(stack) -> list[tuple[datetime, str]]:
    lines = []
    for line in stack.cluster_log().read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f")
            lines.append((at.replace(tzinfo=UTC), match[2]))
    return lines


def timeouts(stack) -> list[tuple[datetime, str]]:
    """(when, worker name) of every worker the guard replaced after a timeout."""
    found = []
    for at, message in log_lines(stack):
        match = re.search(r"reincarnated worker (\S+) after timeout", message)
        if match:
            found.append((at, match[1]))
    return found


def process_ended(pid: int) -> bool:
    """Gone, or a zombie that runs nothing until its parent reaps it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_an_attempt_slower_than_its_lease_is_stopped_before_a_retry_can_start(
    fresh_stack,
):
    stack = fresh_stack(
        ORDER_LEASE_SECONDS=str(LEASE_SECONDS),
        ORDER_MAX_ATTEMPTS="2",
        ORDER_RETRY_BASE_SECONDS="0",
    )
    # Every attempt would take longer than the lease. Placed through the
    # service: the API refuses a delay past half of an attempt's time.
    delay_ms = (LEASE_SECONDS + 4) * 1000
    placed = stack.manage(
        "shell",
        "-c",
        "from tests.factories import place\n"
        f"print(place(delay_ms={delay_ms}).order_id)",
    )
    order_id = placed.stdout.split()[-1]

    document = stack.wait_for_terminal(order_id, timeout=60)

    events = document["events"]
    assert [event["type"] for event in events] == [
        "order.created",
        "order.processing",
        "order.attempt_failed",
        "order.retry_scheduled",
        "order.processing",
        "order.attempt_failed",
        "order.failed",
    ]
    assert (document["status"], document["attempts"]) == ("FAILED", 2)
    reason = stack.operator_failure_reason(document["order_id"])
    assert reason.startswith("gave up after 2 of 2 attempts")
    assert "lease expired" in reason
    started = [parse_time(e["at"]) for e in events if e["type"] == "order.processing"]
    lost = [parse_time(e["at"]) for e in events if e["type"] == "order.attempt_failed"]
    stopped = timeouts(stack)
    assert len(stopped) == 2, stopped
    for attempt, (began, expired) in enumerate(zip(started, lost, strict=True), 1):
        # django-q2 stopped the worker, and replaced it, before the lease that the
        # dispatcher expires (then hands the order on) ran out.
        assert any(began < at < expired for at, _ in stopped), (
            attempt,
            began,
            expired,
            stopped,
        )


def test_a_worker_the_alarm_cannot_stop_is_killed_before_its_lease_would_end(
    fresh_stack,
):
    stack = fresh_stack(ORDER_LEASE_SECONDS=str(LEASE_SECONDS))
    task = f"{__name__}.sleep_through_the_alarm"
    stack.manage(
        "shell",
        "-c",
        f"from django_q.tasks import async_task; async_task({task!r}, 60)",
    )

    stopped = wait_until(
        lambda: timeouts(stack),
        timeout=LEASE_SECONDS + 30,
        what="the guard to replace the stuck worker",
    )

    lines = log_lines(stack)
    (killed_at, worker), *_ = stopped
    began = next(at for at, message in lines if f"{worker} processing" in message)
    pid = next(
        int(message.rsplit(" ", 1)[1])
        for _, message in lines
        if message.startswith(f"{worker} ready for work at ")
    )
    wait_until(lambda: process_ended(pid), timeout=5, what=f"worker {pid} to end")
    # An order's lease starts when its attempt claims it, after the task began:
    # a worker gone within the lease of its task's start never overlaps a retry.
    assert (killed_at - began).total_seconds() < LEASE_SECONDS, (began, killed_at)
