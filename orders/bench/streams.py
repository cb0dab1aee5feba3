"""`manage.py bench streams`: many SSE streams held open against one daphne,
ours (orderproj.asgi) and django-eventstream's (orders/bench/eventstream/),
measured in the same run with the same client (orders/bench/sseload.py), the
same orders and the same database.

For each size and each server, a fresh web process (so its RSS starts clean):
1. log in a staff user through the admin's login form (the staff streams'
   session and the retries' CSRF token);
2. open N order streams (on N orders that FAILED earlier) and the staff streams,
   all at once from the client processes: the open time, 503s (each retried
   after its Retry-After), RSS, threads and database connections before and
   with every stream open;
3. orders flow: staff retries those orders at a steady rate; each retry runs
   three failing attempts with backoff (about ten events per order, over a
   couple of seconds), to the order's own stream and every staff stream;
   every event's latency from its `at` (written just before its commit) to the
   client; the web process's database queries per second meanwhile.
"""

import contextlib
import importlib.util
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from orders.bench.environment import POSTGRES_SCHEMES, bench_environment, describe
from orders.bench.figures import Figures
from orders.bench.sseload import LoadClient
from orders.workers.processes import (
    LocalService,
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
LABELS = {
    "orderproj": "orderproj",
    "eventstream": "django-eventstream",
    "eventstream-storage": "d-e + storage",
    "floor": "daphne floor",
}
STAFF_USER = "bench-operator"
STAFF_PASSWORD = secrets.token_urlsafe(16)
ATTEMPTS = 3


def eventstream_installed() -> bool:
    return importlib.util.find_spec("django_eventstream") is not None


@dataclass(frozen=True)
class StreamsPlan:
    sizes: tuple[int, ...] = (2000,)
    staff_streams: int = 20
    servers: tuple[str, ...] = DEFAULT_SERVERS
    client_processes: int = 3
    # In-flight openings across the client processes (with Twisted's default
    # listen backlog of 50, more connecting at once wait for SYN retransmits).
    open_concurrency: int = 48
    flow_rate: float = 20.0  # retried orders per second
    flow_seconds: float = 8.0
    open_timeout: float = 60.0
    # Each size and server this many times, in turn (the machine's speed
    # drifts: a sweep's repeats show by how much).
    repeats: int = 1
    timeout: float = 300.0


@dataclass
class StreamsRun:
    server: str
    streams: int
    staff_streams: int
    repeat: int = 1
    error: str | None = None
    opened: int = 0  # order and staff streams
    staff_opened: int = 0
    open_s: float | None = None
    shed_503: int = 0
    # CPU time of all the client processes: while opening, and in all.
    client_cpu_open_s: float | None = None
    client_cpu_s: float | None = None
    # How late the last client process began after the common start.
    client_start_lag_s: float | None = None
    refused: dict = field(default_factory=dict)
    ended_early: int = 0
    retries: int = 0
    retries_refused: int = 0
    order_events: int = 0
    staff_events: int = 0
    # Events written during the flow, times the staff streams open: what the
    # staff streams should have received.
    staff_events_expected: int | None = None
    repeated: int = 0  # events a stream gave again (or out of order)
    # Whether the server had read every event when the clients stopped.
    caught_up: bool | None = None
    latency_ms: Figures = field(default_factory=Figures)
    order_latency_ms: Figures = field(default_factory=Figures)
    staff_latency_ms: Figures = field(default_factory=Figures)
    rss_before_kib: int | None = None
    rss_open_kib: int | None = None
    rss_per_stream_kib: float | None = None
    threads_before: int | None = None
    threads_open: int | None = None
    db_connections_before: int | None = None
    db_connections_open: int | None = None
    queries_per_s: float | None = None
    polls_per_s: float | None = None
    # The web process's CPU time while the streams opened, and while the orders
    # flowed (from the first retry until every event was read and delivered).
    web_cpu_open_s: float | None = None
    web_cpu_flow_s: float | None = None
    flow_s: float | None = None
    # orderproj only (its /api/streams): full garbage collections while the
    # orders flowed, and the longest of them (orders/live/gc_freeze.py).
    full_collections_flow: int | None = None
    longest_full_collection_flow_ms: float | None = None


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


# The measurement --------------------------------------------------------------------
class StreamsBench:
    def __init__(
        self,
        plan: StreamsPlan,
        env: dict,
        workdir: Path,
        *,
        progress: Callable[[str], None] = lambda line: None,
    ):
        self.plan = plan
        self.env = env
        self.workdir = workdir
        self.progress = progress
        self.deadline = time.monotonic() + plan.timeout
        self.webs = 0
        self.order_ids: list[str] = []

    def run(self) -> dict:
        service = LocalService(workdir=self.workdir, env=self.env)
        service.manage("migrate", "--noinput")
        service.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            f"User.objects.create_superuser({STAFF_USER!r}, 'bench@example.com', "
            f"{STAFF_PASSWORD!r})",
        )
        runs = []
        servers = [
            server
            for server in self.plan.servers
            if server in {"orderproj", "floor"} or eventstream_installed()
        ]
        if any(server.startswith("eventstream") for server in servers):
            # django-eventstream's own tables (its storage's).
            service.manage(
                "migrate", "--noinput", "--settings=orders.bench.eventstream.settings"
            )
        try:
            service.start_cluster()
            self.place_failed_orders(max(self.plan.sizes))
            for repeat in range(1, self.plan.repeats + 1):
                for size in self.plan.sizes:
                    for server in servers:
                        self.progress(
                            f"{LABELS[server]}: {size} order streams + "
                            f"{self.plan.staff_streams} staff streams"
                            + (f" (repeat {repeat})" if self.plan.repeats > 1 else "")
                        )
                        run = self.measure(server, size)
                        run.repeat = repeat
                        runs.append(run)
        finally:
            stop(service.cluster, timeout=30)
        skipped = [server for server in self.plan.servers if server not in servers]
        return {
            "plan": asdict(self.plan),
            "database": describe(self.env),
            "skipped": {
                server: "django_eventstream is not installed "
                "(pip install -r requirements-bench.txt)"
                for server in skipped
            },
            "runs": [asdict(run) for run in runs],
        }

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"bench streams ran out of its {self.plan.timeout} s")
        return left

    def place_failed_orders(self, count: int) -> None:
        """`count` orders whose every attempt fails (transient), placed and
        left FAILED: the streams' orders, which a retry sets moving again."""
        self.progress(f"placing {count} orders that fail {ATTEMPTS} times")
        web = self.start_web("orderproj")
        try:
            simulate = {"fail_times": ATTEMPTS, "failure": "transient"}
            with (
                httpx.Client(base_url=web.base_url, timeout=30) as client,
                ThreadPoolExecutor(max_workers=16) as pool,
            ):

                def place(index: int) -> str:
                    body = {
                        "customer_email": f"stream{index}@example.com",
                        "items": [
                            {"sku": "STREAM-1", "quantity": 1, "unit_price": "4.20"}
                        ],
                        "simulate": simulate,
                    }
                    response = client.post("/api/orders", json=body)
                    if response.status_code != 202:
                        raise RuntimeError(
                            f"POST /api/orders answered {response.status_code}: "
                            f"{response.text}"
                        )
                    return response.json()["order_id"]

                self.order_ids = list(pool.map(place, range(count)))
            self.wait_until_failed(web, count)
        finally:
            web.stop()

    def wait_until_failed(self, web: WebProcess, count: int) -> None:
        def all_failed():
            response = web.staff.get("/api/dashboard/stats")
            response.raise_for_status()
            return response.json()["counts"]["FAILED"] >= count

        wait_until(
            all_failed,
            timeout=min(self.remaining(), 120),
            interval=0.25,
            what=f"{count} orders to be FAILED",
        )

    def start_web(self, server: str) -> WebProcess:
        self.webs += 1
        return WebProcess(server, self.env, self.workdir, self.webs)

    def measure(self, server: str, size: int) -> StreamsRun:
        run = StreamsRun(
            server=server, streams=size, staff_streams=self.plan.staff_streams
        )
        web = self.start_web(server)
        client = None
        try:
            # The process as it idles after its first requests (the log-in).
            if web.staff is not None:
                web.counters()
            before = web.status()
            run.rss_before_kib = before["VmRSS"]
            run.threads_before = before["Threads"]
            run.db_connections_before = web.db_connections()
            cpu_before = cpu_seconds(web.process.pid)
            targets = [
                {"path": f"/api/orders/{order_id}/events"}
                for order_id in self.order_ids[:size]
            ]
            staff = [
                {"path": "/api/events", "cookie": web.cookie}
                for _ in range(self.plan.staff_streams)
            ]
            # Staff streams spread among the order streams, so each client
            # process holds some of both.
            step = max(1, len(targets) // max(1, len(staff)))
            for position, target in enumerate(staff):
                targets.insert(position * (step + 1), target)
            bound = self.plan.open_timeout + self.plan.flow_seconds + 60
            client = LoadClient(
                port=web.port,
                targets=targets,
                processes=self.plan.client_processes,
                deadline=time.time() + min(self.remaining(), bound),
                open_concurrency=self.plan.open_concurrency,
                open_timeout=self.plan.open_timeout,
                cwd=str(settings.BASE_DIR),
            )
            opening = client.wait_opened()
            run.opened = opening["opened"]
            run.open_s = opening["open_s"]
            run.shed_503 = opening["shed"]
            run.refused = opening["refused"]
            run.client_cpu_open_s = opening["client_cpu_s"]
            run.client_start_lag_s = opening["client_start_lag_s"]
            run.staff_opened = opening["staff_opened"]
            time.sleep(1.0)  # what the openings left in flight settles
            held = web.status()
            run.rss_open_kib = held["VmRSS"]
            run.threads_open = held["Threads"]
            run.db_connections_open = web.db_connections()
            run.web_cpu_open_s = cpu_seconds(web.process.pid) - cpu_before
            if opening["opened"]:
                run.rss_per_stream_kib = (
                    run.rss_open_kib - run.rss_before_kib
                ) / opening["opened"]
            if web.staff is not None:
                self.flow(web, run, size)
            result = client.stop()
            client = None
        except (RuntimeError, TimeoutError, httpx.HTTPError, OSError) as error:
            # A server that cannot hold the streams is a result: say what
            # happened, and go on with the next run.
            run.error = f"{type(error).__name__}: {error}"
            self.progress(f"{LABELS[server]} at {size} streams: {run.error}")
            return run
        finally:
            if client is not None:
                client.kill()
            web.stop()
        run.client_cpu_s = result.client_cpu_s
        run.ended_early = result.ended_early
        run.repeated = result.repeated
        run.order_events = result.events
        run.staff_events = result.staff_events
        run.order_latency_ms = Figures.of([v * 1000 for v in result.latencies])
        run.staff_latency_ms = Figures.of([v * 1000 for v in result.staff_latencies])
        run.latency_ms = Figures.of(
            [v * 1000 for v in (*result.latencies, *result.staff_latencies)]
        )
        return run

    def flow(self, web: WebProcess, run: StreamsRun, size: int) -> None:
        """Retry the streams' orders at a steady rate; the counters' rates over
        that time; then wait until the retried orders have FAILED again."""
        count = max(1, round(self.plan.flow_rate * self.plan.flow_seconds))
        interval = 1 / self.plan.flow_rate
        start_counters = web.counters()
        newest_before = newest_event_id(self.env["DATABASE_URL"])
        cpu_before = cpu_seconds(web.process.pid)
        started = time.monotonic()

        def retry(index: int) -> int:
            time.sleep(max(0.0, started + index * interval - time.monotonic()))
            order_id = self.order_ids[index % size]
            return web.staff.post(f"/api/orders/{order_id}/retry").status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(retry, range(count)))
        for status in statuses:
            if status in {200, 202}:
                run.retries += 1
            elif status == 409:  # still moving from its previous retry
                run.retries_refused += 1
            else:
                raise RuntimeError(f"a retry answered {status}")
        self.wait_until_failed(web, len(self.order_ids))
        newest = newest_event_id(self.env["DATABASE_URL"])
        # The server's read position reaches the last event (a server that
        # lags gets up to 30 s), then its delivery gets a moment.
        catch_up = time.monotonic() + min(30.0, self.remaining())
        while (web.counters()["cursor"] or 0) < newest:
            if time.monotonic() > catch_up:
                break
            time.sleep(0.1)
        run.caught_up = (web.counters()["cursor"] or 0) >= newest
        time.sleep(0.5)
        end_counters = web.counters()
        elapsed = time.monotonic() - started
        run.flow_s = elapsed
        run.web_cpu_flow_s = cpu_seconds(web.process.pid) - cpu_before
        run.queries_per_s = (
            end_counters["queries"] - start_counters["queries"]
        ) / elapsed
        run.polls_per_s = (end_counters["polls"] - start_counters["polls"]) / elapsed
        if "collector" in end_counters:
            run.full_collections_flow = (
                end_counters["collector"]["full_collections"]
                - start_counters["collector"]["full_collections"]
            )
            during_flow = end_counters["collector"]["recent_full_ms"][
                len(end_counters["collector"]["recent_full_ms"])
                - min(run.full_collections_flow, 32) :
            ]
            run.longest_full_collection_flow_ms = max(during_flow, default=0.0)
        run.staff_events_expected = (newest - newest_before) * run.staff_opened


@contextlib.contextmanager
def streams_environment(workers: str) -> Iterator[tuple[dict, Path]]:
    with (
        tempfile.TemporaryDirectory(prefix="orderproj-bench-") as folder,
        bench_environment(
            Path(folder),
            # As in production: with DEBUG on, Django keeps every query of a
            # connection in memory, which the RSS would measure.
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(50),
            SECURE_SSL_REDIRECT="0",
            SESSION_COOKIE_SECURE="0",
            CSRF_COOKIE_SECURE="0",
            SECURE_HSTS_SECONDS="0",
            ORDER_SIMULATION_ENABLED="1",
            ORDER_MAX_ATTEMPTS=str(ATTEMPTS),
            ORDER_RETRY_BASE_SECONDS="0.5",
            ORDER_RETRY_MULTIPLIER="2",
            Q_WORKERS=workers,
        ) as env,
    ):
        yield env, Path(folder)


def run_streams_bench(
    plan: StreamsPlan, workers: str, progress: Callable[[str], None]
) -> dict:
    with streams_environment(workers) as (env, folder):
        progress(f"streams: {describe(env)}; {workers} workers")
        try:
            return StreamsBench(plan, env, folder, progress=progress).run()
        except BaseException:
            logs = "\n".join(
                f"== {path.name}\n" + path.read_text(errors="replace")[-2000:]
                for path in sorted(folder.glob("*.log"))
            )
            progress(f"the service's logs:\n{logs}")
            raise


# The report -------------------------------------------------------------------------
ROWS = [
    ("streams opened", "opened", "{:.0f}"),
    ("open time (s)", "open_s", "{:.2f}"),
    ("503 answers (retried)", "shed_503", "{:.0f}"),
    ("client start lag (s)", "client_start_lag_s", "{:.2f}"),
    (
        "client CPU opening / in all (s)",
        ("client_cpu_open_s", "client_cpu_s"),
        "{:.1f}",
    ),
    ("event latency p50 (ms)", ("latency_ms", "p50"), "{:.0f}"),
    ("event latency p95 (ms)", ("latency_ms", "p95"), "{:.0f}"),
    ("event latency p99 (ms)", ("latency_ms", "p99"), "{:.0f}"),
    ("event latency max (ms)", ("latency_ms", "max"), "{:.0f}"),
    ("events measured", ("latency_ms", "count"), "{:.0f}"),
    (
        "staff events received / written",
        ("staff_events", "staff_events_expected"),
        "{}",
    ),
    ("RSS before (MiB)", "rss_before_kib", "{:.1f}", 1 / 1024),
    ("RSS, streams open (MiB)", "rss_open_kib", "{:.1f}", 1 / 1024),
    ("RSS per stream (KiB)", "rss_per_stream_kib", "{:.1f}"),
    ("threads before / open", ("threads_before", "threads_open"), "{}"),
    (
        "DB connections before / open",
        ("db_connections_before", "db_connections_open"),
        "{}",
    ),
    ("DB reads/s of the pump / relay", "queries_per_s", "{:.1f}"),
    ("web CPU opening / flowing (s)", ("web_cpu_open_s", "web_cpu_flow_s"), "{:.1f}"),
    ("flow, first retry to last event (s)", "flow_s", "{:.1f}"),
    ("full GC collections while flowing", "full_collections_flow", "{:.0f}"),
    (
        "longest full GC while flowing (ms)",
        "longest_full_collection_flow_ms",
        "{:.0f}",
    ),
    ("streams ended by the server", "ended_early", "{:.0f}"),
    ("events repeated or out of order", "repeated", "{:.0f}"),
    ("server read every event", "caught_up", "{}"),
]


PAIRS = {
    "threads_before",
    "db_connections_before",
    "staff_events",
    "client_cpu_open_s",
    "web_cpu_open_s",
}


def cell(run: dict, key, template: str, scale: float | None = None) -> str:
    if isinstance(key, tuple) and key[0] in PAIRS:
        values = [run.get(name) for name in key]
        return " / ".join(
            "-" if value is None else template.format(value) for value in values
        )
    value = run[key[0]][key[1]] if isinstance(key, tuple) else run.get(key)
    if value is None:
        return "-"
    return template.format(value if scale is None else value * scale)


def format_streams(report: dict) -> list[str]:
    plan = report["plan"]
    lines = [
        f"streams: {report['database']}; {plan['client_processes']} client "
        f"processes; orders flowing: {plan['flow_rate']:g} retries/s for "
        f"{plan['flow_seconds']:g} s (~10 events each)"
    ]
    for server, why in report["skipped"].items():
        lines.append(f"{LABELS[server]}: skipped, {why}")
    groups: dict[tuple[int, int], list[dict]] = {}
    for run in report["runs"]:
        groups.setdefault((run["repeat"], run["streams"]), []).append(run)
    for (repeat, size), runs in groups.items():
        title = f"{size} order streams + {plan['staff_streams']} staff streams"
        if plan["repeats"] > 1:
            title += f" (repeat {repeat} of {plan['repeats']})"
        lines += ["", title]
        others = [run for run in runs if run["server"] != "orderproj"]
        ours = next((run for run in runs if run["server"] == "orderproj"), None)
        header = f"{'':<34}" + "".join(f"{LABELS[r['server']]:>20}" for r in runs)
        if ours:
            header += "".join(f"{'÷ ours':>8}" for _ in others)
        lines.append(header)
        for label, key, template, *scale in ROWS:
            cells = [cell(run, key, template, *scale) for run in runs]
            line = f"{label:<34}" + "".join(f"{value:>20}" for value in cells)
            ratios = [run_ratio(ours, other, key) for other in others] if ours else []
            if any(ratio is not None for ratio in ratios):
                line += "".join(
                    f"{'':>8}" if ratio is None else f"{ratio:>8.2f}"
                    for ratio in ratios
                )
            lines.append(line)
        for run in runs:
            if run["error"]:
                lines.append(f"{LABELS[run['server']]}: {run['error']}")
            if run["refused"]:
                lines.append(f"{LABELS[run['server']]} refused: {run['refused']}")
    return lines


RATIO_KEYS = {
    "open_s",
    ("latency_ms", "p50"),
    ("latency_ms", "p99"),
    "rss_per_stream_kib",
}


def run_ratio(ours: dict, other: dict, key) -> float | None:
    """The other server's figure ÷ ours, where both were measured."""
    if key not in RATIO_KEYS:
        return None
    ours, theirs = (
        run[key[0]][key[1]] if isinstance(key, tuple) else run[key]
        for run in (ours, other)
    )
    if not ours or theirs is None:
        return None
    return theirs / ours
