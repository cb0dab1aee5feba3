"""The same pipeline on the scale-out configuration: PostgreSQL (DATABASE_URL) and
Redis (REDIS_URL: django-q2's Redis broker). Skipped, with the reason, where the
services are missing, unless REQUIRE_SERVICES=1 (as .ci/run sets)."""

import os
import secrets
import signal
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.test_idempotency_e2e import assert_double_clicks_make_one_order
from tests.stack import make_stack, wait_until

pytestmark = pytest.mark.e2e

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


@pytest.fixture(scope="module")
def scaled_stack(tmp_path_factory):
    missing = services_missing()
    if missing:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)
    import psycopg

    database = f"orderproj_e2e_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(POSTGRES_URL)
    database_url = urlunsplit(parts._replace(path=f"/{database}"))
    stack = make_stack(
        tmp_path_factory.mktemp("scaled"),
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        # Its own queue in the shared Redis, so parallel runs cannot take its tasks.
        Q_CLUSTER_NAME=database,
    )
    try:
        yield stack.start()
    finally:
        stack.stop()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_orders_complete_and_retry_on_postgresql_and_redis(scaled_stack):
    plain = scaled_stack.place()["order_id"]
    flaky = scaled_stack.place(fail_times=2)["order_id"]
    assert scaled_stack.wait_for_terminal(plain)["status"] == "COMPLETED"
    document = scaled_stack.wait_for_terminal(flaky)
    assert (document["status"], document["attempts"]) == ("COMPLETED", 3)
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


def test_a_double_click_on_postgresql_places_one_order_and_both_answers_name_it(
    scaled_stack,
):
    assert_double_clicks_make_one_order(scaled_stack, rounds=5, clicks=8)
