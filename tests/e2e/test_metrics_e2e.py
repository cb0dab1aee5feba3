"""GET /metrics of a real daphne + qcluster: who may read it, and that its figures
are the database's after a run with retries and failures, read by
prometheus_client's own parser."""

import secrets
import socket
import sqlite3
from contextlib import closing

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orders.operations.metrics import ATTEMPT_DURATION_BUCKETS_MS
from tests.sse import read_sse
from tests.stack import make_stack, wait_until

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_urlsafe(24)
STATUSES = ["PENDING", "PROCESSING", "RETRYING", "COMPLETED", "FAILED"]


@pytest.fixture(scope="module")
def metrics_stack(tmp_path_factory):
    """A stack whose /metrics also opens to TOKEN."""
    running = make_stack(
        tmp_path_factory.mktemp("metrics"), METRICS_TOKEN=TOKEN
    ).start()
    yield running
    running.stop()


def scrape(stack) -> dict:
    """{sample name: {labels as a sorted tuple: value}}, through the token."""
    response = stack.client().get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200, response.text
    return parse(response.text)


def parse(text: str) -> dict:
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def one(samples: dict, name: str) -> float:
    (value,) = samples[name].values()
    return value


def query(stack, sql: str, *params) -> list[tuple]:
    """The stack's database, read-only (tests/stack.py: local_env)."""
    path = stack.workdir / "db.sqlite3"
    with closing(
        sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    ) as database:
        return database.execute(sql, params).fetchall()


def count_events(stack, condition: str, *params) -> int:
    return query(
        stack, f"SELECT COUNT(*) FROM orders_orderevent WHERE {condition}", *params
    )[0][0]


def test_anonymous_callers_and_wrong_tokens_are_refused_in_the_error_shape(
    metrics_stack,
):
    anonymous = metrics_stack.client().get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "not_authenticated"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")

    wrong = metrics_stack.client().get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN[:-1]}"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_token"


def test_a_staff_session_and_the_right_token_read_the_metrics(metrics_stack):
    staff = metrics_stack.staff_client()
    try:
        by_session = staff.get("/metrics")
    finally:
        staff.close()
    assert by_session.status_code == 200
    assert by_session.headers["Content-Type"].startswith("text/plain")
    assert "orders_by_status" in parse(by_session.text)
    assert "orders_attempts_total" in scrape(metrics_stack)


def test_the_figures_are_the_databases_after_retries_and_failures(metrics_stack):
    before = scrape(metrics_stack)
    plans = (
        [{}] * 2  # 1 attempt each
        + [{"fail_times": 1}] * 2  # 2 attempts, 1 retry
        + [{"fail_times": 3}] * 2  # 3 attempts (ORDER_MAX_ATTEMPTS), 2 retries
        + [{"fail_times": 1, "failure": "permanent"}]  # 1 attempt, FAILED at once
    )
    placed = [metrics_stack.place(**plan) for plan in plans]
    finished = [metrics_stack.wait_for_terminal(o["order_id"]) for o in placed]
    assert [o["status"] for o in finished] == ["COMPLETED"] * 4 + ["FAILED"] * 3

    def scraped_once_the_queue_is_empty():
        figures = scrape(metrics_stack)
        return figures if one(figures, "orders_queue_depth") == 0 else None

    after = wait_until(
        scraped_once_the_queue_is_empty,
        timeout=30,
        what="the queue to empty after every order finished",
    )

    def grew(name: str) -> float:
        return one(after, name) - one(before, name)

    assert grew("orders_attempts_total") == 13
    assert grew("orders_attempt_failures_total") == 9
    assert grew("orders_retries_total") == 6
    assert grew("orders_failed_total") == 3
    assert grew("orders_completed_total") == 4
    assert grew("orders_attempt_duration_seconds_count") == 13

    by_status = dict(
        query(
            metrics_stack, "SELECT status, COUNT(*) FROM orders_order GROUP BY status"
        )
    )
    assert after["orders_by_status"] == {
        (("status", status),): by_status.get(status, 0) for status in STATUSES
    }
    for name, event_type in [
        ("orders_attempts_total", "order.processing"),
        ("orders_attempt_failures_total", "order.attempt_failed"),
        ("orders_retries_total", "order.retry_scheduled"),
        ("orders_failed_total", "order.failed"),
        ("orders_completed_total", "order.completed"),
    ]:
        assert one(after, name) == count_events(metrics_stack, "type = ?", event_type)
    buckets = after["orders_attempt_duration_seconds_bucket"]
    for bound in ATTEMPT_DURATION_BUCKETS_MS:
        assert buckets[(("le", repr(bound / 1000)),)] == count_events(
            metrics_stack, "duration_ms <= ?", bound
        )
    measured = count_events(metrics_stack, "duration_ms IS NOT NULL")
    assert buckets[(("le", "+Inf"),)] == measured
    total_ms = query(metrics_stack, "SELECT SUM(duration_ms) FROM orders_orderevent")
    assert one(after, "orders_attempt_duration_seconds_sum") == pytest.approx(
        total_ms[0][0] / 1000
    )
    assert one(after, "orders_queue_reachable") == 1
    assert one(after, "orders_queue_oldest_task_age_seconds") == 0
    assert one(after, "orders_dispatcher_lag_seconds") == 0


@pytest.mark.alone
def test_the_web_process_serving_a_stream_counts_it_under_its_own_name(
    metrics_stack,
):
    """The staff stream stays open (an order's ends with the order)."""
    process = (("process", f"{socket.gethostname()}:{metrics_stack.web.pid}"),)
    staff = metrics_stack.staff_client()
    try:
        with read_sse(
            staff, "/api/events", within=30, what="an event on the staff stream"
        ) as source:
            assert source.response.status_code == 200
            order = metrics_stack.place()
            # Kept: a dropped generator closes the connection (httpcore).
            events = source.named_events()
            next(events)
            open_now = scrape(metrics_stack)
            assert open_now["orders_streams_open"] == {process: 1}
            assert 0 <= open_now["orders_stream_pump_lag_seconds"][process] < 5
            assert open_now["orders_streams_opened_total"][process] >= 1
    finally:
        staff.close()

    wait_until(
        lambda: scrape(metrics_stack)["orders_streams_open"] == {process: 0},
        timeout=30,
        what="the closed stream to leave the count",
    )
    metrics_stack.wait_for_terminal(order["order_id"])
