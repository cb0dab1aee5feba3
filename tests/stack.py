"""A real orderproj on 127.0.0.1 for end-to-end tests: a temporary SQLite file,
`daphne` on a free port and `manage.py qcluster` (workers + dispatcher), started and
stopped as `manage.py serve` does (orders/workers/processes.py), plus what tests need to
poke at them.

Each SQLite stack starts from a copy of one migrated database (with the staff
account), made once per test process: migrating and creating the account took
two `manage.py` runs per stack."""

import atexit
import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from orders.gateways import SimulatedLedger
from orders.workers.processes import (
    LocalService,
    cluster_command,
    descendants_of,
    free_port,
    local_env,
    log_in_through_the_admin,
    simulated_gateway_dir,
    spawn,
    stop,
    wait_until,
    web_env,
)
from tests.sse import read_sse

__all__ = ["PROJECT_DIR", "Stack", "free_port", "make_stack", "wait_until"]

# The states django-q2 writes into a worker's title ("qcluster <name> idle"),
# with setproctitle installed (django_q/worker.py).
IDLE = "idle"
PROCESSING = "processing"

PROJECT_DIR = Path(__file__).resolve().parent.parent
STAFF_USER = "operator"
STAFF_PASSWORD = "correct-horse-battery-staple"

# Fast but realistic settings: every property is the same, only the clock shrinks.
DEFAULT_ENV = {
    "DEBUG": "1",
    "ORDER_SIMULATION_ENABLED": "1",
    "ORDER_MAX_ATTEMPTS": "3",
    "ORDER_RETRY_BASE_SECONDS": "0.5",
    "ORDER_RETRY_MULTIPLIER": "2",
    "ORDER_RETRY_MAX_SECONDS": "5",
    # An attempt may run 5 s of it (orders/workers/timeouts.py, attempt_timeout).
    "ORDER_LEASE_SECONDS": "10",
    "ORDER_REDISPATCH_SECONDS": "5",
    "ORDER_FAILURE_RATE": "0",
    "Q_WORKERS": "2",
    "LOG_LEVEL": "INFO",
    # Tests place orders from 127.0.0.1 faster than any customer; the limit's
    # own tests turn it on (tests/e2e/test_rate_limit_e2e.py).
    "ORDER_PLACE_RATE_LIMIT": "0",
    # Tests hold more streams from 127.0.0.1 than one client may; the caps' own
    # tests turn it on (tests/e2e/test_stream_caps_e2e.py).
    "ORDER_STREAMS_PER_CLIENT": "0",
}


@dataclass
class Stack(LocalService):
    # More qcluster processes (workers + dispatcher each), as on other machines.
    other_clusters: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> "Stack":
        self.migrate()
        self.start_web()
        self.start_cluster()
        return self

    def migrate(self) -> None:
        """The database migrated, with the staff account: a copy of the template
        for this stack's own SQLite file, `manage.py` runs for any other."""
        database = self.workdir / "db.sqlite3"
        if self.env["DATABASE_URL"] == f"sqlite:///{database}":
            copy_sqlite(migrated_template(), database)
        else:
            migrate_with_staff_account(self)

    def start_web_from_the_procfile(self) -> None:
        """daphne with the Procfile's web line (its flags and its environment),
        not orders/workers/processes.py's web_command: what a deployment runs."""
        command, env = procfile_web_command(self.port)
        self.web = spawn(command, env={**web_env(self.env), **env}, log=self.web_log)
        self.wait_for_web()

    def gateway_ledger(self, prefix: str) -> dict[str, str]:
        """What the simulated gateways of this stack did, by idempotency key."""
        return SimulatedLedger(simulated_gateway_dir(self.workdir)).references(prefix)

    def read_one(self, sql: str, params: tuple = ()) -> tuple:
        """The first row of read_all(), as a tuple."""
        return tuple(self.read_all(sql, params)[0].values())

    def read_all(self, sql: str, params: tuple = ()) -> list[dict]:
        """Rows read straight from the stack's database ("?" placeholders), on
        a connection closed at once, as dicts by column name. Polls read this
        way: a `manage.py shell` per poll costs a process start and Django's
        set-up, CPU that the workers under test are waiting for."""
        url = self.env["DATABASE_URL"]
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                cursor = db.execute(sql, params)
                rows = cursor.fetchall()
        else:
            import psycopg

            with psycopg.connect(url, autocommit=True) as db:
                cursor = db.execute(sql.replace("?", "%s"), params)
                rows = cursor.fetchall()
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def operator_details(self, order_id: str, event_type: str) -> list[str]:
        """The operators' detail of the order's events of `event_type`, oldest
        first: what the admin shows (the status document, public, carries the
        customer's words)."""
        rows = self.read_all(
            "SELECT e.detail FROM orders_orderevent e JOIN orders_order o "
            "ON o.id = e.order_id WHERE o.order_id = ? AND e.type = ? ORDER BY e.id",
            (order_id, event_type),
        )
        return [row["detail"] for row in rows]

    def operator_failure_reason(self, order_id: str) -> str:
        """The order's failure_reason as operators read it."""
        return self.read_one(
            "SELECT failure_reason FROM orders_order WHERE order_id = ?", (order_id,)
        )[0]

    def queued_tasks(self) -> int:
        """Tasks in the stack's broker, waiting or pulled but not acknowledged:
        its list in Redis, or the embedded (ORM) broker's table."""
        redis_url = self.env.get("REDIS_URL")
        if not redis_url:
            return self.read_one("SELECT COUNT(*) FROM django_q_ormq")[0]
        import redis

        connection = redis.from_url(redis_url)
        try:
            return connection.llen(f"django_q:{self.env['Q_CLUSTER_NAME']}:q")
        finally:
            connection.close()

    def attempts_made(self) -> int:
        """Attempts started: each writes one order.processing event."""
        return self.read_one(
            "SELECT COUNT(*) FROM orders_orderevent WHERE type = ?",
            ("order.processing",),
        )[0]

    def orders_not_in(self, *statuses: str) -> int:
        marks = ", ".join("?" for _ in statuses)
        return self.read_one(
            f"SELECT COUNT(*) FROM orders_order WHERE status NOT IN ({marks})",
            statuses,
        )[0]

    def cluster_descendants(self) -> list[int]:
        """Pids of every process below the qcluster main process."""
        return descendants_of(self.cluster.pid)

    def busy_worker_pids(self) -> list[int]:
        """Workers running a task, told apart by the title django-q2 gives them."""
        return self._workers_in(PROCESSING)

    def idle_worker_pids(self) -> list[int]:
        return self._workers_in(IDLE)

    def _workers_in(self, state: str) -> list[int]:
        return [
            pid
            for pid in descendants_of(self.cluster.pid)
            if worker_state(pid) == state
        ]

    def all_logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.workdir.glob("*.log"))
        )

    def kill_cluster(self) -> None:
        """SIGKILL the whole qcluster: main process, sentinel, workers."""
        os.killpg(self.cluster.pid, signal.SIGKILL)
        self.cluster.wait(timeout=10)

    def stop_cluster(self) -> None:
        stop(self.cluster, timeout=30)

    def start_other_cluster(self) -> Path:
        """One more qcluster on the same database and queue; returns its log."""
        log = self.workdir / f"other-cluster-{len(self.other_clusters) + 1}.log"
        process = spawn(cluster_command(), env=self.env, log=log)
        self.other_clusters.append(process)

        def running():
            if process.poll() is not None:
                raise RuntimeError(f"qcluster exited:\n{log.read_text()}")
            text = log.read_text()
            return "dispatcher started" in text and "running." in text

        wait_until(running, timeout=30, what="another qcluster to start")
        return log

    def stop(self) -> None:
        for process in self.other_clusters:
            stop(process, timeout=30)
        super().stop()

    # HTTP helpers -----------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def staff_client(self) -> httpx.Client:
        client = self.log_in(STAFF_USER, STAFF_PASSWORD)
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        return client

    def log_in(self, username: str, password: str) -> httpx.Client:
        """A client with the session of this account, logged in as a person
        would be, through the admin's login form."""
        return log_in_through_the_admin(self.base_url, username, password)

    def place(self, client: httpx.Client | None = None, **simulate) -> dict:
        client = client or self.client()
        body = {
            "customer_email": "buyer@example.com",
            "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
        }
        if simulate:
            body["simulate"] = simulate
        response = client.post("/api/orders", json=body)
        assert response.status_code == 202, response.text
        return response.json()

    def status(self, order_id: str) -> dict:
        response = httpx.get(f"{self.base_url}/api/orders/{order_id}", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for_status(
        self, order_id: str, statuses: set[str], *, timeout: float = 30
    ) -> dict:
        def reached():
            document = self.status(order_id)
            return document if document["status"] in statuses else None

        return wait_until(
            reached, timeout=timeout, interval=0.1, what=f"{order_id} in {statuses}"
        )

    def watch_staff_stream_while_placing(
        self, count: int, *, threads: int, timeout: float = 60
    ) -> tuple[set[str], list[tuple[int, str]]]:
        """Place `count` orders (every other one failing once) from `threads`
        threads while reading the staff stream until each has finished; returns
        their ids and every (event id, order id) the stream sent, in order."""
        staff = self.staff_client()
        try:
            with (
                ThreadPoolExecutor(max_workers=threads) as pool,
                read_sse(
                    staff,
                    "/api/events",
                    within=timeout,
                    what=f"{count} orders finishing on the staff stream",
                ) as source,
            ):
                assert source.response.status_code == 200
                placed = list(
                    pool.map(lambda n: self.place(fail_times=n % 2), range(count))
                )
                order_ids = {order["order_id"] for order in placed}
                finished, seen = set(), []
                for sse in source.events():
                    if not sse.data:
                        continue
                    data = json.loads(sse.data)
                    seen.append((int(sse.id), data["order_id"]))
                    if data["order_id"] in order_ids and data["type"] in {
                        "order.completed",
                        "order.failed",
                    }:
                        finished.add(data["order_id"])
                        if finished == order_ids:
                            break
        finally:
            staff.close()
        return order_ids, seen

    def event_ids_of(self, order_ids) -> list[int]:
        """Every event id of these orders, as their status documents list them."""
        return sorted(
            event["event_id"]
            for order_id in order_ids
            for event in self.status(order_id)["events"]
        )

    def wait_for_terminal(self, order_id: str, *, timeout: float = 30) -> dict:
        return self.wait_for_status(order_id, {"COMPLETED", "FAILED"}, timeout=timeout)


def procfile_lines() -> dict[str, str]:
    """The Procfile's services: name -> command line."""
    lines = (PROJECT_DIR / "Procfile").read_text().splitlines()
    return dict(
        line.split(": ", 1) for line in lines if line and not line.startswith("#")
    )


def procfile_web_command(port: int) -> tuple[list[str], dict[str, str]]:
    """The Procfile's web line for `port`, as an argument list (`daphne` run by
    this interpreter, as the venv's `daphne` script runs it) and the variables
    the line sets before it."""
    words = shlex.split(procfile_lines()["web"].replace("$PORT", str(port)))
    env = {}
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words[0] == "daphne", words
    return [sys.executable, "-m", "daphne", *words[1:]], env


def process_title(pid: int) -> list[str]:
    """The words of a process's title; [] once it has gone."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return []
    return title.replace("\0", " ").split()


def worker_state(pid: int) -> str | None:
    """IDLE or PROCESSING for a django-q2 worker, None for any other process."""
    words = process_title(pid)
    if len(words) >= 3 and words[0] == "qcluster" and words[2] in {IDLE, PROCESSING}:
        return words[2]
    return None


def migrate_with_staff_account(service: LocalService) -> None:
    service.manage("migrate", "--noinput")
    service.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"User.objects.create_superuser({STAFF_USER!r}, 'ops@example.com', "
        f"{STAFF_PASSWORD!r})",
    )


@functools.cache
def migrated_template() -> Path:
    """A SQLite database migrated once for this test process (each xdist worker
    makes its own), removed when the process exits."""
    workdir = Path(tempfile.mkdtemp(prefix="orderproj-stack-template-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    migrate_with_staff_account(make_stack(workdir))
    return workdir / "db.sqlite3"


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy through SQLite's backup API: the template is in WAL mode, and a
    file copy could miss pages still in its write-ahead log."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def make_stack(workdir: Path, **overrides: str) -> Stack:
    return Stack(
        workdir=workdir, env=local_env(workdir, **{**DEFAULT_ENV, **overrides})
    )
