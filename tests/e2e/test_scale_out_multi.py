"""Many processes: 2 daphne (A and B) and 2 qcluster on PostgreSQL + Redis, as
the Procfile runs them (README.md, "Scale-out"). Under load their sessions on
PostgreSQL stay within the bound README.md states ("Database connections").
Orders are placed through A and watched through B; Redis is stopped for a few
seconds and B is restarted while orders flow. The Redis is a redis-server of
this module's own on a free port, so stopping it disturbs nobody else. Skipped,
with the reason, where PostgreSQL, Redis or redis-server are missing, unless
REQUIRE_SERVICES=1."""

import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from orders.workers.processes import free_port, stop
from tests.e2e.test_scale_out import POSTGRES_URL, require_services, scaled, shell
from tests.stack import Stack, wait_until

pytestmark = pytest.mark.e2e

ORDERS = 200
SAMPLED_STREAMS = 20
TERMINAL = {"COMPLETED", "FAILED"}
DISPATCHER_FAILURES = (
    "from orders.models import FailureRecord\n"
    "print(FailureRecord.objects.filter(task__startswith='orders.workers.dispatcher').count())"
)

# The outcome of order n is OUTCOMES[n % 5]: (simulate, final status, attempts).
OUTCOMES = [
    ({}, "COMPLETED", 1),
    ({"fail_times": 1}, "COMPLETED", 2),
    ({"fail_times": 9}, "FAILED", 3),
    ({"failure": "permanent"}, "FAILED", 1),
    ({"step": "stock", "fail_times": 1}, "COMPLETED", 2),
]


# The processes ---------------------------------------------------------------------
@dataclass
class RedisServer:
    """A redis-server of the test's own on 127.0.0.1, without persistence: a
    restart empties it, as a Redis that lost its memory would."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.starts += 1
        log = (self.workdir / f"redis-{self.starts}.log").open("ab")
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.process.returncode}")
            try:
                return redis.from_url(self.url, socket_connect_timeout=1).ping()
            except redis.ConnectionError:
                return False

        wait_until(answers, timeout=10, what="redis-server to answer")

    def stop(self) -> None:
        stop(self.process, timeout=10)


def redis_server_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    return None


@contextmanager
def two_by_two(workdir: Path, **overrides):
    """daphne A (the stack's own) and B, and two qclusters, on a throwaway
    PostgreSQL database and this module's Redis. Yields (stack A, stack B, redis);
    B shares A's settings and database and has only a web process."""
    missing = redis_server_missing()
    if missing:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but {missing}")
        pytest.skip(missing)
    require_services()
    redis = RedisServer(workdir)
    redis.start()
    try:
        with scaled(
            workdir,
            redis_url=redis.url,
            ORDER_REDISPATCH_SECONDS="2",
            # Lines every second, so a reader notices a stop request soon.
            ORDER_STREAM_KEEPALIVE_SECONDS="1",
            **overrides,
        ) as a:
            a.start()
            a.start_other_cluster()
            (workdir / "b").mkdir()
            b = Stack(workdir=workdir / "b", env=a.env)
            try:
                b.start_web()
                yield a, b, redis
            finally:
                stop(b.web, timeout=15)
    finally:
        redis.stop()


def restart_web(stack: Stack) -> None:
    stop(stack.web, timeout=15)
    stack.start_web()


def database_name(stack: Stack) -> str:
    return urlsplit(stack.env["DATABASE_URL"]).path.lstrip("/")


WEB_SESSIONS, WORKER_SESSIONS = "orderproj-web", "orderproj-worker"


def sessions_on(admin, database: str) -> list[tuple]:
    """(application name, backend pid, state, start) of every session on
    `database` right now (pg_stat_activity): each kind of process names its own
    (DATABASE_APPLICATION_NAME in orderproj/settings/database.py)."""
    return admin.execute(
        "SELECT application_name, pid, state, backend_start::time"
        " FROM pg_stat_activity WHERE datname = %s ORDER BY 1, 4",
        [database],
    ).fetchall()


# Orders ----------------------------------------------------------------------------
def order_body(n: int) -> dict:
    body = {
        "customer_email": f"buyer{n}@example.com",
        "items": [{"sku": "MUG-1", "quantity": 1 + n % 3, "unit_price": "12.50"}],
    }
    simulate = OUTCOMES[n % len(OUTCOMES)][0]
    if simulate:
        body["simulate"] = simulate
    return body


def place_all(client: httpx.Client, numbers, *, threads: int, key: str) -> list[tuple]:
    """(n, status code, order id or None) for each order placed; `key` makes the
    Idempotency-Keys of one test its own."""

    def place(n):
        response = client.post(
            "/api/orders",
            json=order_body(n),
            headers={"Idempotency-Key": f"{key}-{n}"},
        )
        order_id = response.json().get("order_id") if response.is_success else None
        return n, response.status_code, order_id

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(place, numbers))


def all_finished(staff: httpx.Client, count: int) -> bool:
    counts = staff.get("/api/dashboard/stats").json()["counts"]
    return sum(counts.get(status, 0) for status in TERMINAL) >= count


# Streams ---------------------------------------------------------------------------
class StreamReader(threading.Thread):
    """Reads one SSE stream until told to stop, reconnecting with Last-Event-ID
    (as a browser does) whenever the connection breaks or is refused; keeps every
    event it received, in order."""

    def __init__(self, base_url: str, path: str, *, cookies=None, deadline: float):
        super().__init__(daemon=True)
        self.base_url, self.path, self.cookies = base_url, path, cookies
        self.deadline = deadline
        self.events: list[tuple[int, str, str]] = []  # (id, order id, type)
        self.connections = 0
        self.breaks = 0  # connections lost or refused
        self.refusals: list[int] = []  # non-200 answers other than 503
        self.busy = 0  # 503s: too many streams opening at once, retried
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(
                base_url=self.base_url,
                cookies=self.cookies,
                timeout=httpx.Timeout(10, read=5),
            ) as client:
                while not self.stopping.is_set() and time.monotonic() < self.deadline:
                    pause = 0.2
                    try:
                        pause = self._read(client) or pause
                    except httpx.TransportError:
                        # The server went away: reconnect, as a browser does.
                        self.breaks += 1
                    self.stopping.wait(
                        min(pause, max(0.0, self.deadline - time.monotonic()))
                    )
        except BaseException as error:  # reported by the test, not swallowed
            self.error = error
            raise

    def _read(self, client: httpx.Client) -> float | None:
        """Reads one connection until it ends; returns how long to wait before
        the next when the server asked for a pause (503 and Retry-After)."""
        headers = {"Accept": "text/event-stream"}
        if self.events:
            headers["Last-Event-ID"] = str(self.events[-1][0])
        with client.stream("GET", self.path, headers=headers) as response:
            if response.status_code == 503 and "Retry-After" in response.headers:
                self.busy += 1
                return float(response.headers["Retry-After"])
            if response.status_code != 200:
                self.refusals.append(response.status_code)
                return None
            self.connections += 1
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if self.stopping.is_set() or time.monotonic() > self.deadline:
                    return
                if line == "":
                    if "id" in fields and "data" in fields:
                        data = json.loads(fields["data"])
                        self.events.append(
                            (int(fields["id"]), data["order_id"], data["type"])
                        )
                    fields = {}
                elif not line.startswith(":") and ":" in line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        return None

    def ids(self) -> list[int]:
        return [event_id for event_id, _, _ in self.events]

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=15)
        assert not self.is_alive(), f"the reader of {self.path} did not stop"
        assert self.error is None, self.error


def staff_cookies(stack: Stack) -> httpx.Cookies:
    client = stack.staff_client()
    try:
        return client.cookies
    finally:
        client.close()


# The tests -------------------------------------------------------------------------
@pytest.fixture
def processes(tmp_path):
    """A stack of its own for each test: the counts and outcomes each test checks
    are of its own orders, whatever ran before it (pytest-randomly shuffles)."""
    with two_by_two(tmp_path) as running:
        yield running


def test_two_web_and_two_worker_processes_hold_a_bounded_number_of_connections(
    processes,
):
    """200 placements from 16 clients and status polls from 4 more, half on each
    daphne: no 5xx, and PostgreSQL never holds more sessions than the bound in
    README.md ("Database connections"): N × DATABASE_POOL_MAX_SIZE from the web
    processes + M × (Q_WORKERS + 4) from the qclusters."""
    import psycopg

    a, b, _redis = processes
    database = database_name(a)
    web_bound = 2 * int(a.env.get("DATABASE_POOL_MAX_SIZE", "10"))
    worker_bound = 2 * (int(a.env["Q_WORKERS"]) + 4)
    deadline = time.monotonic() + 240
    samples: list[list[tuple]] = []
    placed, polled = [], []
    done = threading.Event()

    def sample():
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            while not done.wait(0.05) and time.monotonic() < deadline:
                samples.append(sessions_on(admin, database))

    def poll(base_url):
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while not done.wait(0.05) and time.monotonic() < deadline:
                for _n, _code, order_id in placed[-10:]:
                    if order_id:
                        polled.append(client.get(f"/api/orders/{order_id}").status_code)

    def place_half(stack, numbers):
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            placed.extend(place_all(client, numbers, threads=8, key="load"))

    with ThreadPoolExecutor(max_workers=8) as helpers:
        sampler = helpers.submit(sample)
        pollers = [helpers.submit(poll, stack.base_url) for stack in (a, b, a, b)]
        try:
            placers = [
                helpers.submit(place_half, a, range(0, ORDERS, 2)),
                helpers.submit(place_half, b, range(1, ORDERS, 2)),
            ]
            for placer in placers:
                placer.result(timeout=120)
            staff = a.staff_client()
            try:
                wait_until(
                    lambda: all_finished(staff, ORDERS),
                    timeout=120,
                    interval=0.5,
                    what="every order to finish",
                )
            finally:
                staff.close()
        finally:
            done.set()
        for future in [sampler, *pollers]:
            future.result(timeout=30)

    codes = sorted({code for _n, code, _id in placed} | set(polled))
    assert len(placed) == ORDERS and polled
    assert all(code < 500 for code in codes), codes
    assert {code for _n, code, _id in placed} == {202}
    assert samples
    busiest = max(samples, key=len)
    by_kind = Counter(name for name, *_ in busiest)
    most_web = max(sum(row[0] == WEB_SESSIONS for row in rows) for rows in samples)
    most_worker = max(
        sum(row[0] == WORKER_SESSIONS for row in rows) for rows in samples
    )
    print(
        f"sessions held: max {len(busiest)} {dict(by_kind)} of {len(samples)} "
        f"samples (web at most {most_web}, workers {most_worker}); "
        f"bound {web_bound} + {worker_bound}"
    )
    report = "\n".join(map(str, busiest))
    assert most_web <= web_bound, report
    assert most_worker <= worker_bound, report
    assert len(busiest) <= web_bound + worker_bound, report


def test_streams_on_another_web_process_see_every_event_through_a_redis_outage_and_a_restart(  # noqa: E501
    processes,
):
    a, b, redis = processes
    deadline = time.monotonic() + 150
    cookies = staff_cookies(b)
    staff_stream = StreamReader(
        b.base_url, "/api/events", cookies=cookies, deadline=deadline
    )
    staff_stream.start()
    wait_until(
        lambda: staff_stream.connections, timeout=10, what="the staff stream to open"
    )
    # (A stream answers 200 once it is subscribed to its web process's pump.)
    order_streams: dict[str, StreamReader] = {}
    every = ORDERS // SAMPLED_STREAMS

    def watch(results):
        for n, _code, order_id in results:
            if n % every == 0:
                reader = StreamReader(
                    b.base_url, f"/api/orders/{order_id}/events", deadline=deadline
                )
                reader.start()
                order_streams[order_id] = reader

    placed = []
    with httpx.Client(base_url=a.base_url, timeout=30) as client:
        placed += place_all(client, range(0, 80), threads=8, key="faults")
        watch(placed)

        # Redis goes away: orders are still taken (the database is the truth),
        # /healthz says the queue is down.
        redis.stop()
        outage_started = time.monotonic()
        for stack in (a, b):
            with stack.client() as probe:
                health = probe.get("/healthz")
            assert (health.status_code, health.json()) == (
                503,
                {"status": "unavailable", "database": "ok", "queue": "unavailable"},
            )
        during = place_all(client, range(80, 120), threads=8, key="faults")
        placed += during
        watch(during)
        # The streams still deliver while Redis is down: B reads the database.
        placed_during = {order_id for _n, _code, order_id in during}
        wait_until(
            lambda: placed_during <= {order for _, order, _ in staff_stream.events},
            timeout=10,
            what="B's staff stream to show the orders placed during the outage",
        )
        time.sleep(max(0.0, 3 - (time.monotonic() - outage_started)))
        redis.start()
        wait_until(
            lambda: httpx.get(f"{a.base_url}/healthz", timeout=5).status_code == 200,
            timeout=10,
            what="/healthz to recover",
        )

        after = place_all(client, range(120, 160), threads=8, key="faults")
        placed += after
        watch(after)
        # B restarts under its open streams; they come back with Last-Event-ID.
        open_across_restart = [staff_stream, *order_streams.values()]
        wait_until(
            lambda: all(reader.connections for reader in open_across_restart),
            timeout=20,
            what="every stream to be open before the restart",
        )
        restart_web(b)
        last = place_all(client, range(160, ORDERS), threads=8, key="faults")
        placed += last
        watch(last)

    assert sorted(code for _n, code, _id in placed) == [202] * ORDERS
    staff = a.staff_client()
    try:
        wait_until(
            lambda: all_finished(staff, ORDERS),
            timeout=max(1, deadline - time.monotonic() - 30),
            interval=0.5,
            what="every order to finish (none lost to the outage)",
        )
    finally:
        staff.close()

    # The outage was the queue's, not any order's: nothing recorded for it.
    assert shell(a, DISPATCHER_FAILURES) == 0
    # The database's account: every order's final status and its events.
    expected: dict[str, list[tuple[int, str]]] = {}
    for n, _code, order_id in placed:
        document = a.status(order_id)
        _simulate, status, attempts = OUTCOMES[n % len(OUTCOMES)]
        assert (document["status"], document["attempts"]) == (status, attempts), n
        expected[order_id] = [
            (event["event_id"], event["type"]) for event in document["events"]
        ]
    every_event = sorted(
        (event_id, order_id, kind)
        for order_id, events in expected.items()
        for event_id, kind in events
    )
    last_id = every_event[-1][0]

    def caught_up():
        return staff_stream.ids()[-1:] == [last_id] and all(
            reader.ids()[-1:] == [expected[order_id][-1][0]]
            for order_id, reader in order_streams.items()
        )

    wait_until(
        caught_up,
        timeout=max(1, deadline - time.monotonic()),
        interval=0.2,
        what="every stream to reach its last event",
    )
    for reader in [staff_stream, *order_streams.values()]:
        reader.finish()

    assert len(order_streams) == SAMPLED_STREAMS
    assert staff_stream.events == every_event
    for order_id, reader in order_streams.items():
        assert [(i, kind) for i, _, kind in reader.events] == expected[order_id]
    # Every stream open across B's restart resumed on a second connection.
    assert len(open_across_restart) == 1 + 16
    assert [reader.connections >= 2 for reader in open_across_restart] == [True] * 17
