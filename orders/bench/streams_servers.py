"""The servers `bench streams` measures: which application each one's daphne
runs, the web process that runs it, and what the bench reads of that process
(/proc) and of its database."""

import contextlib
import importlib.util
import os
import secrets
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from orders.bench.environment import POSTGRES_SCHEMES
from orders.workers.processes import (
    free_port,
    log_in_through_the_admin,
    spawn,
    stop,
    wait_until,
    web_command,
    web_env,
)

EVENTSTREAM_ASGI = "orders.bench.eventstream.asgi:application"
SERVERS = {
    "orderproj": "orderproj.asgi:application",
    "eventstream": EVENTSTREAM_ASGI,
    "eventstream-storage": EVENTSTREAM_ASGI,
    # daphne holding bare SSE responses: no flow, only what a stream costs it.
    "floor": "orders.bench.floor:application",
}
# What each server's web process has in its environment besides the bench's.
SERVER_ENV = {
    "orderproj": web_env({}),
    "eventstream-storage": {"EVENTSTREAM_STORAGE": "1"},
}
DEFAULT_SERVERS = ("orderproj", "eventstream")
# The staff account every web process logs in as (StreamsBench creates it).
STAFF_USER = "bench-operator"
STAFF_PASSWORD = secrets.token_urlsafe(16)


def eventstream_installed() -> bool:
    return importlib.util.find_spec("django_eventstream") is not None


# /proc -----------------------------------------------------------------------------
def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of a process."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "Threads"}:
            figures[name] = int(value.split()[0])
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of proc(5), in clock ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sqlite_connections(pid: int, database: Path) -> int:
    """Open file descriptors of `pid` on the database file (one per
    connection; the -wal and -shm files are not counted)."""
    count = 0
    target = str(database.resolve())
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            if os.readlink(fd) == target:
                count += 1
    return count


def postgres_connections(database_url: str) -> int:
    """Sessions on the bench's database (every process's: the workers' too)."""
    import psycopg

    server = urlsplit(database_url)
    name = server.path.lstrip("/")
    url = server._replace(scheme="postgresql", path="/postgres").geturl()
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone()
    return row[0]


def newest_event_id(database_url: str) -> int:
    """The newest OrderEvent id, read straight from the bench's database (the
    bench's own Django is not configured for it)."""
    query = "SELECT coalesce(max(id), 0) FROM orders_orderevent"
    address = urlsplit(database_url)
    if address.scheme in POSTGRES_SCHEMES:
        import psycopg

        url = address._replace(scheme="postgresql").geturl()
        with psycopg.connect(url) as connection:
            return connection.execute(query).fetchone()[0]
    path = "/" + address.path.lstrip("/")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute(query).fetchone()[0]


# The web process under test ---------------------------------------------------------
class WebProcess:
    """One daphne serving `server`'s application on a port of its own."""

    def __init__(self, server: str, env: dict, workdir: Path, number: int):
        self.server = server
        self.env = env
        self.port = free_port()
        self.log = workdir / f"web-{server}-{number}.log"
        # The product's daphne command (its listen options included), with this
        # server's application.
        command = [
            SERVERS[server] if part == SERVERS["orderproj"] else part
            for part in web_command("127.0.0.1", self.port)
        ]
        self.process = spawn(
            command, env={**env, **SERVER_ENV.get(server, {})}, log=self.log
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        wait_until(self._healthy, timeout=30, what=f"{server}'s daphne to answer")
        self.staff = self._log_in() if server != "floor" else None

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{self.log.read_text()}")
        try:
            response = httpx.get(f"{self.base_url}/healthz", timeout=2)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def _log_in(self) -> httpx.Client:
        """A staff session, through the admin's login form."""
        client = log_in_through_the_admin(self.base_url, STAFF_USER, STAFF_PASSWORD)
        client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
        return client

    @property
    def cookie(self) -> str:
        if self.staff is None:
            return "sessionid=none"
        return f"sessionid={self.staff.cookies['sessionid']}"

    def counters(self) -> dict:
        """Our pump's counters, or the relay's (the same fields)."""
        path = "/api/streams" if self.server == "orderproj" else "/bench/relay"
        response = self.staff.get(path)
        response.raise_for_status()
        return response.json()

    def status(self) -> dict[str, int]:
        return proc_status(self.process.pid)

    def db_connections(self) -> int:
        url = self.env["DATABASE_URL"]
        if urlsplit(url).scheme in POSTGRES_SCHEMES:
            return postgres_connections(url)
        return sqlite_connections(
            self.process.pid, Path("/" + urlsplit(url).path.lstrip("/"))
        )

    def stop(self) -> None:
        if self.staff is not None:
            self.staff.close()
        stop(self.process, timeout=15)
