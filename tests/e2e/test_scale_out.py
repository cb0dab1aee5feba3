"""The same pipeline on the scale-out configuration: PostgreSQL (DATABASE_URL) and
Redis (REDIS_URL: django-q2's Redis broker). Skipped, with the reason, where the
services are missing, unless REQUIRE_SERVICES=1 (as .ci/run sets)."""

import json
import os
import re
import secrets
import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.test_idempotency_e2e import assert_double_clicks_make_one_order
from tests.expected import (
    CLEAN_RUN_EVENTS,
    FAIL_TWICE_EVENTS,
    STOCK_FAILS_ONCE_EVENTS,
)
from tests.stack import make_stack, wait_until


def timeline(document: dict) -> list[tuple[str, int]]:
    return [(event["type"], event["attempt"]) for event in document["events"]]


def processing_details(stack, document: dict) -> list[str]:
    """What operators read of each attempt's start (the document is public)."""
    return stack.operator_details(document["order_id"], "order.processing")


pytestmark = pytest.mark.e2e

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# One line per dispatcher enqueue (orders/workers/dispatcher.py) and per task a worker
# starts (django_q/worker.py).
ENQUEUED = re.compile(r" enqueued (ord_\w+) \(due (\S+)\): (.*)$", re.MULTILINE)
TASK_STARTED = re.compile(r" processing \S+ 'orders\.tasks\.process_order'")
# The pusher logs this line for every task it drops
# (orders/workers/djangoq/sentinel.py).
TASK_DROPPED = re.compile(r" dropped task \S+ of order \S+: a batch took the order")
# Run in a stack's `manage.py shell`: takes the tasks of three orders (the first,
# a middle and the last placed) out of the Redis queue, as if lost.
LOSE_THREE_TASKS = """
import json
from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from orders.models import Order
broker = get_broker()
ids = list(Order.objects.order_by("pk").values_list("order_id", flat=True))
lost = {ids[0], ids[len(ids) // 2], ids[-1]}
removed = 0
for raw in broker.connection.lrange(broker.list_key, 0, -1):
    if SignedPackage.loads(raw)["args"][0] in lost:
        removed += broker.connection.lrem(broker.list_key, 1, raw)
assert removed == 3, removed
print(json.dumps(sorted(lost)))
"""


def services_missing() -> str | None:
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means unavailable
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}"
    try:
        import redis

        redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL} is not reachable: {exc}"
    return None


def require_services() -> None:
    missing = services_missing()
    if missing:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)


@contextmanager
def scaled(workdir, redis_url: str = REDIS_URL, **overrides):
    """A stack (not started) on a throwaway PostgreSQL database and its own queue
    in Redis (the shared one unless `redis_url` names another); both are gone
    afterwards."""
    require_services()
    import psycopg

    database = f"orderproj_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(POSTGRES_URL)
    database_url = urlunsplit(parts._replace(path=f"/{database}"))
    stack = make_stack(
        workdir,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        # Its own queue in the shared Redis, so parallel runs cannot take its tasks.
        Q_CLUSTER_NAME=database,
        **overrides,
    )
    try:
        yield stack
    finally:
        stack.stop()
        import redis

        redis.from_url(redis_url).delete(f"django_q:{database}:q")
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="module")
def scaled_stack(tmp_path_factory):
    with scaled(tmp_path_factory.mktemp("scaled")) as stack:
        yield stack.start()


def test_orders_complete_and_retry_on_postgresql_and_redis(scaled_stack):
    """On PostgreSQL each move is one statement (orders/state/transitions_sql.py,
    and the claim of a first attempt); the timelines are the same as on SQLite."""
    plain = scaled_stack.place()["order_id"]
    flaky = scaled_stack.place(fail_times=2)["order_id"]
    resumed = scaled_stack.place(step="stock", fail_times=1)["order_id"]
    document = scaled_stack.wait_for_terminal(plain)
    assert document["status"] == "COMPLETED"
    assert timeline(document) == list(
        zip(CLEAN_RUN_EVENTS, [0, 1, 1, 1, 1], strict=True)
    )
    assert processing_details(scaled_stack, document) == ["attempt 1 of 3"]
    document = scaled_stack.wait_for_terminal(flaky)
    assert (document["status"], document["attempts"]) == ("COMPLETED", 3)
    assert [kind for kind, _attempt in timeline(document)] == FAIL_TWICE_EVENTS
    assert processing_details(scaled_stack, document) == [
        "attempt 1 of 3",
        "attempt 2 of 3",
        "attempt 3 of 3",
    ]
    document = scaled_stack.wait_for_terminal(resumed)
    assert [kind for kind, _attempt in timeline(document)] == STOCK_FAILS_ONCE_EVENTS
    assert processing_details(scaled_stack, document) == [
        "attempt 1 of 3",
        "attempt 2 of 3; resuming at stock (payment done)",
    ]
    for order_id in (plain, flaky, resumed):
        document = scaled_stack.status(order_id)
        assert {step["state"] for step in document["steps"]} == {"done"}
        assert document["delivery"] is not None
    health = scaled_stack.client().get("/healthz").json()
    assert health == {"status": "ok", "database": "ok", "queue": "ok"}


def test_worker_killed_mid_order_on_redis_broker_still_ends_the_order(scaled_stack):
    """The Redis broker drops a task whose worker dies; the lease and the sweep
    bring the order back."""
    order_id = scaled_stack.place(delay_ms=2000)["order_id"]
    scaled_stack.wait_for_status(order_id, {"PROCESSING"}, timeout=20)
    victims = wait_until(scaled_stack.busy_worker_pids, timeout=5, what="a busy worker")
    os.kill(victims[0], signal.SIGKILL)
    document = scaled_stack.wait_for_terminal(order_id, timeout=40)
    assert (document["status"], document["attempts"]) == ("COMPLETED", 2)


def test_staff_stream_on_postgresql_misses_no_event_of_concurrent_writers(
    scaled_stack,
):
    """PostgreSQL sequence values commit out of order; the stream still delivers
    every event of many orders written at once, each once, in id order."""
    order_ids, seen = scaled_stack.watch_staff_stream_while_placing(30, threads=10)
    received = [event_id for event_id, order_id in seen if order_id in order_ids]
    assert sorted(received) == scaled_stack.event_ids_of(order_ids)
    assert [event_id for event_id, _ in seen] == sorted({i for i, _ in seen})


def test_streams_on_postgresql_refuse_nul_bytes_it_cannot_store_with_json(
    scaled_stack,
):
    """PostgreSQL refuses a NUL in a query parameter: the streams answer such an
    order id or session cookie as no order and no session, not with a 500."""
    with scaled_stack.client() as client:
        order = client.get("/api/orders/ord_%00x/events")
        assert order.status_code == 404, order.text
        assert order.json()["error"] == "order_not_found"
        # A quoted cookie's octal escape is a NUL once parsed (no client may
        # send the byte itself).
        staff = client.get(
            "/api/events", headers={"Cookie": 'sessionid="abcdefgh\\000ijklmnop"'}
        )
        assert staff.status_code == 403, staff.text
        assert staff.json()["error"] == "not_authenticated"
    assert "Traceback" not in scaled_stack.web_log.read_text(errors="replace")


def test_a_double_click_on_postgresql_places_one_order_and_both_answers_name_it(
    scaled_stack,
):
    assert_double_clicks_make_one_order(scaled_stack, rounds=5, clicks=8)


def shell(stack, code: str):
    """What `code`, run in the stack's `manage.py shell`, prints last, as JSON."""
    return json.loads(stack.manage("shell", "-c", code).stdout.splitlines()[-1])


def progress(stack) -> dict:
    """Tasks in the queue, attempts made, orders not yet ended."""
    return {
        "queued": stack.queued_tasks(),
        "attempts": stack.attempts_made(),
        "open": stack.orders_not_in("COMPLETED", "FAILED"),
    }


def settled(stack) -> dict:
    """Once every order is COMPLETED or FAILED and the queue is empty."""
    return wait_until(
        lambda: (now := progress(stack))["open"] == now["queued"] == 0 and now,
        timeout=180,
        interval=1,
        what="every order to finish and the queue to empty",
    )


def killed_in_the_middle_of_1000_orders(stack) -> None:
    """1,000 orders placed, the qcluster SIGKILLed (every process) once 200 are
    done, and started again."""
    placed_before_the_workers_start(stack, "--count", "1000")
    stack.start_cluster()
    staff = stack.staff_client()
    try:
        wait_until(
            lambda: (
                staff.get("/api/dashboard/stats").json()["counts"]["COMPLETED"] >= 200
            ),
            timeout=120,
            what="200 orders to complete",
        )
    finally:
        staff.close()
    stack.kill_cluster()
    stack.start_cluster()


def placed_before_the_workers_start(stack, *args: str) -> None:
    """`place_orders` with the stack's qcluster stopped: every task waits in Redis."""
    stack.start()
    stack.stop_cluster()
    stack.manage("place_orders", *args, timeout=300)


def test_orders_whose_tasks_vanished_from_the_redis_queue_complete_once(tmp_path):
    """The dispatcher's safety net alone: one order per task (in batches, the
    orders of lost tasks are mostly taken along by the tasks before them, see
    the next test)."""
    with scaled(tmp_path, ORDER_REDISPATCH_SECONDS="2", ORDER_BATCH_SIZE="1") as stack:
        placed_before_the_workers_start(stack, "--count", "300")
        lost = shell(stack, LOSE_THREE_TASKS)
        stack.start_cluster()

        for order_id in lost:
            document = stack.wait_for_terminal(order_id, timeout=60)
            assert (document["status"], document["attempts"]) == ("COMPLETED", 1)
        counts = settled(stack)
        log = stack.cluster_log().read_text()
        assert sorted(order for order, _, _ in ENQUEUED.findall(log)) == lost
        assert len(TASK_STARTED.findall(log)) == counts["attempts"] == 300


def test_in_batches_orders_whose_tasks_vanished_complete_once_and_are_charged_once(
    tmp_path,
):
    """The lost tasks' orders placed after others are taken along; the first
    one placed has no task before it and is the dispatcher's to hand over."""
    with scaled(tmp_path, ORDER_REDISPATCH_SECONDS="2") as stack:
        placed_before_the_workers_start(stack, "--count", "300")
        lost = shell(stack, LOSE_THREE_TASKS)
        stack.start_cluster()

        for order_id in lost:
            document = stack.wait_for_terminal(order_id, timeout=60)
            assert (document["status"], document["attempts"]) == ("COMPLETED", 1)
        counts = settled(stack)
        assert counts["attempts"] == 300
        payments = stack.gateway_ledger("ord_")
        assert len([key for key in payments if key.endswith(":payment")]) == 300


def test_a_qcluster_killed_in_the_middle_of_batches_loses_no_order_or_charges_twice(
    tmp_path,
):
    """SIGKILL to every process of the qcluster while its workers run batches:
    every order of a batch in flight has a lost attempt once its lease expires,
    is retried, resumes at the step it had reached and is charged once."""
    with scaled(tmp_path, ORDER_REDISPATCH_SECONDS="2") as stack:
        killed_in_the_middle_of_1000_orders(stack)

        counts = settled(stack)
        assert stack.orders_not_in("COMPLETED") == 0
        assert counts["attempts"] >= 1000
        ledger = stack.gateway_ledger("ord_")
        assert len([key for key in ledger if key.endswith(":payment")]) == 1000
        assert len([key for key in ledger if key.endswith(":stock")]) == 1000


def test_a_qcluster_killed_while_pulling_a_backlog_loses_no_order(tmp_path):
    """SIGKILL to every process of the qcluster: the tasks its pusher had pulled
    ahead are gone from Redis, and the orders being worked on keep their lease.
    One order per task: in batches the pulled-ahead tasks' orders are mostly
    taken along by other tasks (the test above), and the safety net this test
    is about would have little to do."""
    with scaled(tmp_path, ORDER_REDISPATCH_SECONDS="2", ORDER_BATCH_SIZE="1") as stack:
        killed_in_the_middle_of_1000_orders(stack)

        counts = settled(stack)
        log = stack.cluster_log().read_text()
        assert stack.orders_not_in("COMPLETED") == 0
        # The orders of the pulled-ahead tasks were found and enqueued again.
        lost = [why for _, _, why in ENQUEUED.findall(log) if "lost" in why]
        assert lost, "the kill lost no queued task: nothing was proven"
        assert counts["attempts"] >= 1000


def test_two_dispatchers_enqueue_no_order_twice_for_one_due_time_and_lose_none(
    tmp_path,
):
    """Two qclusters (workers and dispatcher each) on one PostgreSQL and one Redis
    queue: retries and lost tasks are each handed to the queue by one of them."""
    with scaled(tmp_path, ORDER_REDISPATCH_SECONDS="2") as stack:
        placed_before_the_workers_start(
            stack, "--count", "400", "--fail-rate", "0.3", "--seed", "7"
        )
        lost = shell(stack, LOSE_THREE_TASKS)
        stack.start_cluster()
        other_log = stack.start_other_cluster()

        counts = settled(stack)
        logs = [stack.cluster_log().read_text(), other_log.read_text()]
        enqueues = [ENQUEUED.findall(log) for log in logs]
        per_due_time = Counter(
            (order, due) for found in enqueues for order, due, _ in found
        )
        assert per_due_time, "no dispatcher enqueued anything"
        assert max(per_due_time.values()) == 1, per_due_time.most_common(3)
        assert all(enqueues), "one of the two dispatchers never enqueued"
        assert not [log for log in logs if "dispatcher sweep failed" in log]
        assert set(lost) <= {order for order, _ in per_due_time}
        tasks = sum(
            len(TASK_STARTED.findall(log)) + len(TASK_DROPPED.findall(log))
            for log in logs
        )
        assert tasks <= counts["attempts"] * 1.05, (tasks, counts)


def test_web_process_serves_many_requests_on_a_few_database_connections(
    scaled_stack,
):
    """Each request runs in a thread of its own under daphne: without the pool,
    every one opened a PostgreSQL session and left it open until garbage
    collection, until PostgreSQL refused more clients."""
    import psycopg

    database = urlsplit(scaled_stack.env["DATABASE_URL"]).path.lstrip("/")

    def sessions_opened() -> int:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            return admin.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s",
                [database],
            ).fetchone()[0]

    order_id = scaled_stack.place()["order_id"]
    before = sessions_opened()
    with scaled_stack.client() as client, ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda _: client.get(f"/api/orders/{order_id}").status_code,
                range(60),
            )
        )
    assert statuses == [200] * 60
    # The pool holds at most 10; the workers and dispatcher keep their own.
    assert sessions_opened() - before <= 10
