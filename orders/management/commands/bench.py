import json
import logging
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.bench.environment import bench_environment, describe
from orders.bench.moves import MovesPlan, format_moves, run_moves_bench
from orders.bench.pipeline import PipelinePlan
from orders.bench.service import (
    SERVICE_SCENARIOS,
    Bench,
    BenchPlan,
    BenchReport,
    format_report,
)
from orders.bench.streams import StreamsPlan, run_streams_bench
from orders.bench.streams_servers import DEFAULT_SERVERS, SERVERS
from orders.bench.webhooks import WebhooksPlan, format_webhooks, run_webhooks_bench
from orders.workers.processes import LocalService

# streams, pipeline, moves and webhooks start their own processes (no --url).
SCENARIOS = (*SERVICE_SCENARIOS, "streams", "pipeline", "moves", "webhooks")
GROUPS = {"service": (*SERVICE_SCENARIOS, "streams"), "all": SCENARIOS}
OWN_PROCESSES = {"streams", "pipeline", "moves", "webhooks"}

# (full size, --quick size) of every plan option.
SIZES = {
    "orders": (BenchPlan.orders, 100),
    "concurrency": (BenchPlan.concurrency, BenchPlan.concurrency),
    "retry_orders": (BenchPlan.retry_orders, 10),
    "streams": (2000, 200),
    "staff_streams": (StreamsPlan.staff_streams, StreamsPlan.staff_streams),
    "client_processes": (StreamsPlan.client_processes, StreamsPlan.client_processes),
    "noop_tasks": (PipelinePlan.noop_tasks, 500),
    "pipeline_orders": (PipelinePlan.orders, 300),
    "pickups": (PipelinePlan.pickups, 15),
    "moves": (MovesPlan.moves, 200),
    "webhook_orders": (WebhooksPlan.orders, 100),
}


class Command(BaseCommand):
    help = (
        "Measures the service. Scenarios: placing (POST /api/orders latency and "
        "rate beside a minimal-view baseline, time to complete, drain rate), "
        "retries (retry lateness), streams (N SSE streams held against one daphne: "
        "open time, event latency, RSS per stream, threads, DB connections and "
        "queries/s, beside django-eventstream serving the same events), "
        "pipeline (orders/s drained against django-q2 no-op tasks/s on the same "
        "cluster, pickup latency), moves (the state machine's writes, raw SQL "
        "against the ORM, per order and as a ratio), webhooks (how late a fast "
        "endpoint gets order.completed after commit, alone and beside one that "
        "answers in 1 s); service = placing retries "
        "streams; all "
        "(the default) = every one. Each run gets a throwaway database and queue: "
        "SQLite and the ORM broker, or a new PostgreSQL database and its own Redis "
        "queue when DATABASE_URL / REDIS_URL say so."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "scenarios",
            nargs="*",
            metavar="scenario",
            help="placing, retries, streams, pipeline, moves, webhooks, service or "
            "all (default).",
        )
        parser.add_argument(
            "--quick", action="store_true", help="Small sizes: about a minute."
        )
        for name, (full, quick) in SIZES.items():
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=int,
                help=f"default {full} ({quick} with --quick)",
            )
        parser.add_argument(
            "--sizes",
            help="streams: a sweep, e.g. 100,500,1000,2000 (instead of --streams).",
        )
        parser.add_argument(
            "--servers",
            default=",".join(DEFAULT_SERVERS),
            help=f"streams: which of {', '.join(SERVERS)} to measure (default "
            "%(default)s; django-eventstream's are skipped, and the report says "
            "so, when it is not installed: pip install -r requirements-bench.txt).",
        )
        parser.add_argument(
            "--flow-rate",
            type=float,
            default=StreamsPlan.flow_rate,
            help="streams: orders set moving per second (default %(default)s).",
        )
        parser.add_argument(
            "--flow-seconds",
            type=float,
            help=f"streams: for how long (default {StreamsPlan.flow_seconds:g}; "
            "4 with --quick).",
        )
        parser.add_argument(
            "--open-concurrency",
            type=int,
            default=StreamsPlan.open_concurrency,
            help="streams: openings in flight at once, across the client "
            "processes (default %(default)s).",
        )
        parser.add_argument(
            "--repeats",
            type=int,
            default=1,
            help="streams: measure each size and server this many times, in "
            "turn (default %(default)s).",
        )
        parser.add_argument(
            "--json-out", help="streams: also write its JSON report to this file."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=300.0,
            help="Give up on a scenario after this many seconds (default %(default)s).",
        )
        parser.add_argument(
            "--workers", default="2", help="Q_WORKERS of the service it starts."
        )
        parser.add_argument(
            "--url",
            help="Run the service scenarios against a running service on "
            "127.0.0.1 instead (its simulation must be enabled; started with "
            "DJANGO_SETTINGS_MODULE=orders.bench.settings it adds the baseline).",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **options):
        # One line per request would bury the report.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        scenarios = self._scenarios(options["scenarios"] or ["all"])
        sizes = {
            name: options[name]
            if options[name] is not None
            else sizes[1 if options["quick"] else 0]
            for name, sizes in SIZES.items()
        }
        for name, value in sizes.items():
            if value < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        url = options["url"]
        if url and urlsplit(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise CommandError("--url must be a service on this machine (127.0.0.1).")
        own = [name for name in scenarios if name in OWN_PROCESSES]
        if url and own:
            named = set(options["scenarios"]) & OWN_PROCESSES
            if named:
                raise CommandError(
                    f"{sorted(named)[0]} starts and stops its own processes; it "
                    "cannot run against --url."
                )
            scenarios = [name for name in scenarios if name not in OWN_PROCESSES]
        streams_plan = self._streams_plan(options, sizes)
        plan = BenchPlan(
            orders=sizes["orders"],
            concurrency=sizes["concurrency"],
            retry_orders=sizes["retry_orders"],
            timeout=options["timeout"],
            scenarios=tuple(name for name in scenarios if name in SERVICE_SCENARIOS),
        )
        pipeline_plan = PipelinePlan(
            noop_tasks=sizes["noop_tasks"],
            orders=sizes["pipeline_orders"],
            pickups=sizes["pickups"],
            timeout=options["timeout"],
        )
        progress = (lambda line: None) if options["json"] else self._progress
        report = BenchReport(plan=plan)
        if plan.scenarios:
            if url:
                report = Bench(url, plan, progress=progress).run()
            else:
                report = self._run_service(plan, options["workers"], progress)
        if "streams" in scenarios:
            report.streams = run_streams_bench(
                streams_plan, options["workers"], progress
            )
            if options["json_out"]:
                Path(options["json_out"]).write_text(
                    json.dumps(report.streams, indent=2) + "\n"
                )
        if "pipeline" in scenarios:
            report.pipeline = self._run_pipeline(
                pipeline_plan, options["workers"], progress, quiet=options["json"]
            )
        moves = None
        if "moves" in scenarios:
            moves_plan = MovesPlan(moves=sizes["moves"], timeout=options["timeout"])
            moves = run_moves_bench(moves_plan, progress, quiet=options["json"])
        webhooks = None
        if "webhooks" in scenarios:
            webhooks = run_webhooks_bench(
                WebhooksPlan(
                    orders=sizes["webhook_orders"], timeout=options["timeout"]
                ),
                options["workers"],
                progress,
            )
        if options["json"]:
            as_dict = (
                report.as_dict()
                | ({"moves": moves} if moves else {})
                | ({"webhooks": webhooks} if webhooks else {})
            )
            self.stdout.write(json.dumps(as_dict, indent=2))
        else:
            parts = [
                format_report(report),
                *format_moves(moves),
                *format_webhooks(webhooks),
            ]
            self.stdout.write("\n".join(part for part in parts if part))

    @staticmethod
    def _streams_plan(options: dict, sizes: dict) -> StreamsPlan:
        if options["sizes"]:
            try:
                stream_sizes = tuple(int(size) for size in options["sizes"].split(","))
            except ValueError:
                raise CommandError(
                    f"--sizes must be numbers separated by commas, not "
                    f"{options['sizes']!r}."
                ) from None
            if min(stream_sizes) < 1:
                raise CommandError("--sizes must be at least 1 each.")
        else:
            stream_sizes = (sizes["streams"],)
        servers = tuple(options["servers"].split(","))
        unknown = [server for server in servers if server not in SERVERS]
        if unknown:
            raise CommandError(
                f"unknown server {unknown[0]!r}: choose from {', '.join(SERVERS)}."
            )
        flow_seconds = options["flow_seconds"]
        if flow_seconds is None:
            flow_seconds = 4.0 if options["quick"] else StreamsPlan.flow_seconds
        if options["repeats"] < 1:
            raise CommandError("--repeats must be at least 1.")
        if options["flow_rate"] <= 0 or flow_seconds <= 0:
            raise CommandError("--flow-rate and --flow-seconds must be above 0.")
        return StreamsPlan(
            sizes=stream_sizes,
            staff_streams=sizes["staff_streams"],
            servers=servers,
            client_processes=sizes["client_processes"],
            open_concurrency=max(1, options["open_concurrency"]),
            flow_rate=options["flow_rate"],
            flow_seconds=flow_seconds,
            repeats=options["repeats"],
            timeout=options["timeout"],
        )

    @staticmethod
    def _scenarios(names: list[str]) -> list[str]:
        # Checked here: argparse rejects an empty list when `choices` is given.
        unknown = [name for name in names if name not in {*SCENARIOS, *GROUPS}]
        if unknown:
            raise CommandError(
                f"unknown scenario {unknown[0]!r}: choose from "
                f"{', '.join([*SCENARIOS, *GROUPS])}."
            )
        chosen = set()
        for name in names:
            chosen.update(GROUPS.get(name, (name,)))
        return [name for name in SCENARIOS if name in chosen]

    def _progress(self, line: str) -> None:
        self.stderr.write(f"… {line}")

    def _run_service(self, plan: BenchPlan, workers: str, progress) -> BenchReport:
        with (
            tempfile.TemporaryDirectory(prefix="orderproj-bench-") as folder,
            bench_environment(
                Path(folder),
                DEBUG="1",
                ORDER_SIMULATION_ENABLED="1",
                # Adds the placing baseline's route (orders/bench/urls.py).
                DJANGO_SETTINGS_MODULE="orders.bench.settings",
                Q_WORKERS=workers,
            ) as env,
        ):
            service = LocalService(workdir=Path(folder), env=env)
            progress(
                f"starting a service on {service.base_url} ({workers} workers; "
                f"{describe(env)})"
            )
            try:
                service.start()
                return Bench(service.base_url, plan, progress=progress).run()
            finally:
                service.stop()

    def _run_pipeline(
        self, plan: PipelinePlan, workers: str, progress, *, quiet: bool
    ) -> dict:
        with (
            tempfile.TemporaryDirectory(prefix="orderproj-bench-") as folder,
            bench_environment(
                Path(folder),
                # The cluster as it runs in production: with DEBUG on, Django
                # also logs every query it runs (CursorDebugWrapper).
                DEBUG="0",
                SECRET_KEY=secrets.token_urlsafe(50),
                Q_WORKERS=workers,
            ) as env,
        ):
            progress(f"pipeline: {workers} workers; {describe(env)}")
            LocalService(workdir=Path(folder), env=env).manage("migrate", "--noinput")
            # A process of its own, so that its Django and django-q2 use the
            # throwaway database and queue (orders/bench/pipeline.py).
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "orders.bench.pipeline",
                    f"--workdir={folder}",
                    f"--noop-tasks={plan.noop_tasks}",
                    f"--orders={plan.orders}",
                    f"--pickups={plan.pickups}",
                    f"--timeout={plan.timeout}",
                ],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if quiet else None,
                text=True,
                timeout=plan.timeout + 120,
            )
            if result.returncode:
                logs = "\n".join(
                    path.read_text(errors="replace")[-3000:]
                    for path in sorted(Path(folder).glob("*.log"))
                )
                raise CommandError(
                    f"the pipeline bench exited {result.returncode}:\n"
                    f"{result.stderr or ''}\n{logs}"
                )
            return json.loads(result.stdout.strip().splitlines()[-1])
