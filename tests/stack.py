"""A real orderproj on 127.0.0.1 for end-to-end tests: a temporary SQLite file,
`daphne` on a free port and `manage.py qcluster` (workers + dispatcher), each a
subprocess with its own session so that signals reach only the process meant."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from orders.watchdog import IDLE, PROCESSING, descendants_of, worker_states

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
    "ORDER_LEASE_SECONDS": "3",
    "ORDER_REDISPATCH_SECONDS": "5",
    "ORDER_FAILURE_RATE": "0",
    "Q_WORKERS": "2",
    "LOG_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Stack:
    workdir: Path
    env: dict
    port: int = field(default_factory=free_port)
    web: subprocess.Popen | None = None
    cluster: subprocess.Popen | None = None
    cluster_starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def web_log(self) -> Path:
        return self.workdir / "web.log"

    def cluster_log(self, start: int | None = None) -> Path:
        return self.workdir / f"cluster-{start or self.cluster_starts}.log"

    def manage(self, *args: str, check: bool = True, timeout: float = 120):
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode:
            raise AssertionError(
                f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self) -> "Stack":
        self.manage("migrate", "--noinput")
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            f"User.objects.create_superuser({STAFF_USER!r}, 'ops@example.com', "
            f"{STAFF_PASSWORD!r})",
        )
        self.start_web()
        self.start_cluster()
        return self

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        return subprocess.Popen(
            args,
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_web(self) -> None:
        self.web = self._spawn(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "orderproj.asgi:application",
            ],
            self.web_log,
        )

        def healthy():
            assert self.web.poll() is None, self.web_log.read_text()
            try:
                return (
                    httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200
                )
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, what="daphne to answer /healthz")

    def start_cluster(self) -> None:
        self.cluster_starts += 1
        log = self.cluster_log()
        self.cluster = self._spawn([sys.executable, "manage.py", "qcluster"], log)
        wait_until(
            lambda: (
                "dispatcher started" in log.read_text()
                and "running." in log.read_text()
            ),
            timeout=30,
            what="the qcluster to start",
        )

    def cluster_descendants(self) -> list[int]:
        """Pids of every process below the qcluster main process."""
        return descendants_of(self.cluster.pid)

    def busy_worker_pids(self) -> list[int]:
        """Workers running a task, told apart by the title django-q2 gives them."""
        return self._workers_in(PROCESSING)

    def idle_worker_pids(self) -> list[int]:
        return self._workers_in(IDLE)

    def _workers_in(self, state: str) -> list[int]:
        states = worker_states(self.cluster.pid)
        return [pid for pid, current in states.items() if current == state]

    def kill_cluster(self) -> None:
        """SIGKILL the whole qcluster: main process, sentinel, workers."""
        os.killpg(self.cluster.pid, signal.SIGKILL)
        self.cluster.wait(timeout=10)

    def stop_cluster(self) -> None:
        if self.cluster and self.cluster.poll() is None:
            # SIGTERM to the main process only: it stops its own children.
            self.cluster.send_signal(signal.SIGTERM)
            try:
                self.cluster.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.cluster.pid, signal.SIGKILL)
                self.cluster.wait(timeout=10)
        self._reap_group(self.cluster)

    def stop(self) -> None:
        self.stop_cluster()
        if self.web and self.web.poll() is None:
            self.web.terminate()
            try:
                self.web.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.web.kill()
                self.web.wait(timeout=10)
        self._reap_group(self.web)

    @staticmethod
    def _reap_group(process: subprocess.Popen | None) -> None:
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def all_logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted(self.workdir.glob("*.log"))
        )

    # HTTP helpers -----------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def staff_client(self) -> httpx.Client:
        client = self.client()
        client.get("/admin/login/")
        response = client.post(
            "/admin/login/?next=/admin/",
            data={
                "username": STAFF_USER,
                "password": STAFF_PASSWORD,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
        )
        assert response.status_code == 302, response.text
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        return client

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

    def wait_for_terminal(self, order_id: str, *, timeout: float = 30) -> dict:
        return self.wait_for_status(order_id, {"COMPLETED", "FAILED"}, timeout=timeout)


def make_stack(workdir: Path, **overrides: str) -> Stack:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(DEFAULT_ENV)
    env["DJANGO_SETTINGS_MODULE"] = "orderproj.settings"
    env["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return Stack(workdir=workdir, env=env)
