"""Starting and stopping the two kinds of process: web (daphne) and workers
(`manage.py qcluster`). Shared by `manage.py serve`, `manage.py bench` and the
end-to-end tests, so all three start and stop them the same way.

Each child gets a session of its own, so a terminal's Ctrl-C or a signal meant for
one process reaches only that process; a qcluster is stopped with SIGTERM to its
main process alone (signalling every process of a cluster can hang it).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

STOP_GRACE_SECONDS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, *, timeout: float, interval: float = 0.1, what: str = ""):
    """Poll `predicate` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


# Connections the kernel holds for daphne before it accepts them. Twisted's
# default is 50: a burst of streams opening at once (a page load of a busy
# dashboard, every browser reconnecting after a restart) overflowed it, and the
# kernel dropped the rest, whose clients tried again 1, 3, 7, 15 s later (2,000
# streams took 26 s to open; with 2,048 here, 2 s). The kernel caps it at
# net.core.somaxconn (4,096 on current kernels).
LISTEN_BACKLOG = 2048


def web_command(host: str, port: int) -> list[str]:
    interface = host.replace(":", "\\:")  # an IPv6 address, in Twisted's syntax
    return [
        sys.executable,
        "-m",
        "daphne",
        "-e",
        f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}",
        "orderproj.asgi:application",
    ]


def web_env(env: dict | None = None) -> dict:
    """The environment daphne runs in: `env` (else this process's) with
    ORDERPROJ_PROCESS=web, which gives the web process its settings (a pool of
    PostgreSQL connections, sessions named orderproj-web)."""
    return {**(os.environ if env is None else env), "ORDERPROJ_PROCESS": "web"}


def cluster_env(env: dict | None = None) -> dict:
    """The environment a qcluster runs in: `env` (else this process's) without
    ORDERPROJ_PROCESS, which a process started from a web process would inherit."""
    env = dict(os.environ if env is None else env)
    env.pop("ORDERPROJ_PROCESS", None)
    return env


def log_in_through_the_admin(base_url: str, username: str, password: str):
    """An httpx client with the session of this account, logged in as a person
    would be, through the admin's login form; raises if the form refuses."""
    import httpx

    client = httpx.Client(base_url=base_url, timeout=30)
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    if response.status_code != 302:
        client.close()
        raise RuntimeError(
            f"logging in as {username!r} answered {response.status_code}"
        )
    return client


def cluster_command() -> list[str]:
    return [sys.executable, "manage.py", "qcluster"]


def spawn(
    command: list[str], *, env: dict | None = None, log: Path | None = None
) -> subprocess.Popen:
    """Start a child in its own session; its output goes to `log` if given."""
    output = log.open("ab") if log else None
    return subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )


def stop(process: subprocess.Popen | None, *, timeout: float = STOP_GRACE_SECONDS):
    """SIGTERM to the process alone, then SIGKILL to its whole session if it has
    not exited in time (and to anything it left behind)."""
    stop_all([process] if process is not None else [], timeout=timeout)


def stop_all(processes: list[subprocess.Popen], *, timeout: float = STOP_GRACE_SECONDS):
    """Tell every process at once (one SIGTERM each, to the process alone), then
    wait for each, SIGKILLing the session of one that has not exited in time.

    One SIGTERM, never two: `serve` used to send a second right after the first,
    and once in CI the qcluster logged "stopping" twice in the same millisecond
    and then hung, its sentinel never told (django-q2's handler re-entered while
    it stopped, most likely); honcho's SIGKILL then left it running."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        if process.poll() is None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_session(process)
                process.wait(timeout=10)
        kill_session(process)


def kill_session(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Pids of the running processes that `pid` started ([] once it has gone);
    Linux /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def descendants_of(pid: int) -> list[int]:
    """Pids of every running process below `pid`: a qcluster's sentinel,
    workers, monitor and pusher, or a Procfile runner's whole tree."""
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class LocalService:
    """orderproj on 127.0.0.1 with its own settings (env) and log files: what the
    end-to-end tests and the benchmark run against."""

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
            cwd=settings.BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode:
            raise RuntimeError(
                f"manage.py {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self) -> "LocalService":
        self.manage("migrate", "--noinput")
        self.start_web()
        self.start_cluster()
        return self

    def start_web(self) -> None:
        self.web = spawn(
            web_command("127.0.0.1", self.port),
            env=web_env(self.env),
            log=self.web_log,
        )
        self.wait_for_web()

    def wait_for_web(self) -> None:
        """Until the web process answers /healthz; its log if it exits first."""
        import httpx

        def healthy():
            if self.web.poll() is not None:
                raise RuntimeError(f"daphne exited:\n{self.web_log.read_text()}")
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=2)
            except httpx.TransportError:
                return False
            return response.status_code == 200

        wait_until(healthy, timeout=30, what="daphne to answer /healthz")

    def start_cluster(self) -> None:
        self.cluster_starts += 1
        log = self.cluster_log()
        self.cluster = spawn(cluster_command(), env=cluster_env(self.env), log=log)

        def running():
            if self.cluster.poll() is not None:
                raise RuntimeError(f"qcluster exited:\n{log.read_text()}")
            text = log.read_text()
            return "dispatcher started" in text and "running." in text

        wait_until(running, timeout=30, what="the qcluster to start")

    def stop(self) -> None:
        stop(self.cluster, timeout=30)
        stop(self.web, timeout=15)


def simulated_gateway_dir(workdir: Path) -> Path:
    return workdir / "simulated-gateway"


def local_env(workdir: Path, **overrides: str) -> dict:
    """This process's environment, pointed at a SQLite file in `workdir`, without
    the variables that would send it to a shared database or Redis."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "ORDERPROJ_PROCESS"}
    }
    env["DJANGO_SETTINGS_MODULE"] = "orderproj.settings"
    env["DATABASE_URL"] = f"sqlite:///{workdir / 'db.sqlite3'}"
    env["ORDER_SIMULATED_GATEWAY_DIR"] = str(simulated_gateway_dir(workdir))
    # The rate limit's counters (when it is on) belong to this service alone.
    env["ORDER_RATE_LIMIT_DIR"] = str(workdir / "ratelimit")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env
