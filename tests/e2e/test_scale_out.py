"""The same pipeline on the scale-out configuration: PostgreSQL (DATABASE_URL) and
Redis (REDIS_URL: django-q2's Redis broker). Skipped, with the reason, where the
services are missing, unless REQUIRE_SERVICES=1 (as .ci/run sets)."""

import os
import secrets
import signal
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest

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
        ORDER_LEASE_SECONDS="4",
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
