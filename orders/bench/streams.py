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

The servers and what is read of their processes: streams_servers.py; what a run
records and how the report prints it: streams_report.py.
"""

import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from django.conf import settings

from orders.bench.environment import bench_environment, describe
from orders.bench.figures import Figures
from orders.bench.sseload import LoadClient
from orders.bench.streams_report import LABELS, StreamsRun
from orders.bench.streams_servers import (
    DEFAULT_SERVERS,
    STAFF_PASSWORD,
    STAFF_USER,
    WebProcess,
    cpu_seconds,
    eventstream_installed,
    newest_event_id,
)
from orders.workers.processes import LocalService, stop, wait_until

ATTEMPTS = 3


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
