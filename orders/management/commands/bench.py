import json
import logging
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError

from orders.bench import Bench, BenchPlan, format_report
from orders.processes import LocalService, local_env


class Command(BaseCommand):
    help = (
        "Measures the service end to end over HTTP: placing latency and rate, time "
        "to complete, retry lateness, stream opening and event latency. By default "
        "it starts its own web server and qcluster on 127.0.0.1 with a temporary "
        "SQLite database (the embedded default) and stops them afterwards."
    )

    def add_arguments(self, parser):
        defaults = BenchPlan()
        parser.add_argument("--orders", type=int, default=defaults.orders)
        parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
        parser.add_argument("--retry-orders", type=int, default=defaults.retry_orders)
        parser.add_argument("--streams", type=int, default=defaults.streams)
        parser.add_argument(
            "--timeout",
            type=float,
            default=defaults.timeout,
            help="Give up after this many seconds (default %(default)s).",
        )
        parser.add_argument(
            "--workers", default="2", help="Q_WORKERS of the service it starts."
        )
        parser.add_argument(
            "--url",
            help="Measure a running service on 127.0.0.1 instead (its simulation "
            "must be enabled).",
        )
        parser.add_argument("--json", action="store_true", help="Print JSON.")

    def handle(self, *args, **options):
        # One line per request would bury the report.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        plan = BenchPlan(
            orders=options["orders"],
            concurrency=options["concurrency"],
            retry_orders=options["retry_orders"],
            streams=options["streams"],
            timeout=options["timeout"],
        )
        for name in ("orders", "concurrency", "retry_orders", "streams"):
            if getattr(plan, name) < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        url = options["url"]
        if url and urlsplit(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
            raise CommandError("--url must be a service on this machine (127.0.0.1).")
        progress = (lambda line: None) if options["json"] else self._progress
        if url:
            report = Bench(url, plan, progress=progress).run()
        else:
            report = self._run_own_service(plan, options["workers"], progress)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write(format_report(report))

    def _progress(self, line: str) -> None:
        self.stderr.write(f"… {line}")

    def _run_own_service(self, plan: BenchPlan, workers: str, progress):
        with tempfile.TemporaryDirectory(prefix="orderproj-bench-") as folder:
            workdir = Path(folder)
            env = local_env(
                workdir, DEBUG="1", ORDER_SIMULATION_ENABLED="1", Q_WORKERS=workers
            )
            service = LocalService(workdir=workdir, env=env)
            progress(f"starting a service on {service.base_url} ({workers} workers)")
            try:
                service.start()
                return Bench(service.base_url, plan, progress=progress).run()
            finally:
                service.stop()
