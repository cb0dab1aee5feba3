"""The service scenarios of `manage.py bench`: real HTTP against a real service on
127.0.0.1, every loop bounded in count and time.

- placing: POST /api/orders latency and rate under concurrency, beside the
  baseline (a minimal Django view under the same daphne that inserts one row and
  enqueues one task, routed by orders/bench/settings.py), and then the time
  from placing to COMPLETED and how fast the workers drain;
- retries: how long after its due time a retry's attempt starts;

`manage.py bench streams` is orders/bench/streams.py.
"""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

import httpx

from orders.bench.figures import Figures
from orders.bench.streams_report import format_streams

TERMINAL = {"COMPLETED", "FAILED"}
BASELINE_PATH = "/api/bench/baseline"
SERVICE_SCENARIOS = ("placing", "retries")


@dataclass(frozen=True)
class BenchPlan:
    orders: int = 200
    concurrency: int = 20
    retry_orders: int = 30
    timeout: float = 300.0
    scenarios: tuple[str, ...] = SERVICE_SCENARIOS


@dataclass
class BenchReport:
    plan: BenchPlan
    place_latency_ms: Figures = field(default_factory=Figures)
    place_rate_per_s: float = 0.0
    # None when the service has no baseline route (not on orders.bench.settings).
    baseline_latency_ms: Figures | None = None
    baseline_rate_per_s: float | None = None
    place_vs_baseline: float | None = None
    completed: int = 0
    failed: int = 0
    time_to_complete_s: Figures = field(default_factory=Figures)
    drain_rate_per_s: float = 0.0
    retry_lateness_s: Figures = field(default_factory=Figures)
    # `manage.py bench streams`'s report (orders/bench/streams.py), if it ran.
    streams: dict | None = None
    # `manage.py bench pipeline`'s report (orders/bench/pipeline.py), if it ran.
    pipeline: dict | None = None

    def as_dict(self) -> dict:
        """Only the figures of the scenarios that ran."""
        report = asdict(self)
        for scenario, names in SCENARIO_FIELDS.items():
            if scenario not in self.plan.scenarios:
                for name in names:
                    del report[name]
        for part in ("streams", "pipeline"):
            if getattr(self, part) is None:
                del report[part]
        return report


SCENARIO_FIELDS = {
    "placing": [
        "place_latency_ms",
        "place_rate_per_s",
        "baseline_latency_ms",
        "baseline_rate_per_s",
        "place_vs_baseline",
        "completed",
        "failed",
        "time_to_complete_s",
        "drain_rate_per_s",
    ],
    "retries": ["retry_lateness_s"],
}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def order_body(index: int, simulate: dict | None = None) -> dict:
    body = {
        "customer_email": f"bench{index}@example.com",
        "items": [{"sku": f"BENCH-{index % 50}", "quantity": 1, "unit_price": "4.20"}],
    }
    if simulate:
        body["simulate"] = simulate
    return body


class Bench:
    def __init__(
        self,
        base_url: str,
        plan: BenchPlan,
        *,
        progress: Callable[[str], None] = lambda line: None,
    ):
        self.base_url = base_url.rstrip("/")
        self.plan = plan
        self.progress = progress
        self.deadline = time.monotonic() + plan.timeout
        self.report = BenchReport(plan=plan)

    def run(self) -> BenchReport:
        scenarios = self.plan.scenarios
        if "placing" in scenarios:
            self.measure_placing()
        if "retries" in scenarios:
            self.progress(f"{self.plan.retry_orders} orders that fail once, then retry")
            self.measure_retry_lateness()
        return self.report

    def measure_placing(self) -> None:
        """The baseline first, then the orders: at the same concurrency, against
        the same processes, with the same client."""
        with self.client() as client:
            baseline = self.has_baseline(client)
            # Both routes once per client thread before anything is timed: the
            # first requests pay for imports, connections and threads.
            self.post_many(client, "/api/orders", self.plan.concurrency)
            if baseline:
                self.post_many(client, BASELINE_PATH, self.plan.concurrency)
                self.progress(f"baseline: {self.plan.orders} minimal inserts")
                latencies, rate, _ids = self.post_many(
                    client, BASELINE_PATH, self.plan.orders
                )
                self.report.baseline_latency_ms = Figures.of(latencies)
                self.report.baseline_rate_per_s = rate
            self.progress(f"placing {self.plan.orders} orders")
            latencies, rate, order_ids = self.post_many(
                client, "/api/orders", self.plan.orders
            )
        self.report.place_latency_ms = Figures.of(latencies)
        self.report.place_rate_per_s = rate
        if baseline:
            self.report.place_vs_baseline = rate / self.report.baseline_rate_per_s
        self.progress("waiting for every order to finish")
        self.measure_completion(order_ids)

    # Placing and completing -------------------------------------------------------
    def _place(self, client: httpx.Client, index: int, simulate=None) -> str:
        response = client.post("/api/orders", json=order_body(index, simulate))
        if response.status_code != 202:
            raise RuntimeError(
                f"POST /api/orders answered {response.status_code}: {response.text}"
            )
        return response.json()["order_id"]

    def client(self) -> httpx.Client:
        # One client (a pool of keep-alive connections) shared by the threads,
        # so the load generator spends its CPU on requests, not on setting up.
        limits = httpx.Limits(max_connections=self.plan.concurrency)
        return httpx.Client(base_url=self.base_url, timeout=30, limits=limits)

    def has_baseline(self, client: httpx.Client) -> bool:
        """The baseline route answers (anything but 404)."""
        return client.post(BASELINE_PATH, json=order_body(0)).status_code != 404

    def post_many(
        self, client: httpx.Client, path: str, count: int
    ) -> tuple[list[float], float, list[str]]:
        """POST `count` order bodies to `path` from `concurrency` threads: the
        latencies (ms), the rate (per s) and the order ids answered."""
        latencies: list[float] = []

        def post(index: int) -> str:
            started = time.perf_counter()
            response = client.post(path, json=order_body(index))
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                raise RuntimeError(
                    f"POST {path} answered {response.status_code}: {response.text}"
                )
            return response.json()["order_id"]

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=self.plan.concurrency) as pool:
            order_ids = list(pool.map(post, range(count)))
        elapsed = time.perf_counter() - started
        return latencies, count / elapsed, order_ids

    def wait_for_documents(self, order_ids: list[str]) -> list[dict]:
        """The status documents of `order_ids` once every one is terminal."""
        documents: dict[str, dict] = {}
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while len(documents) < len(order_ids):
                if time.monotonic() > self.deadline:
                    raise TimeoutError(
                        f"{len(order_ids) - len(documents)} orders still moving "
                        f"after {self.plan.timeout} s"
                    )
                for order_id in order_ids:
                    if order_id in documents:
                        continue
                    document = client.get(f"/api/orders/{order_id}").json()
                    if document["status"] in TERMINAL:
                        documents[order_id] = document
                time.sleep(0.2)
        return [documents[order_id] for order_id in order_ids]

    def measure_completion(self, order_ids: list[str]) -> None:
        documents = self.wait_for_documents(order_ids)
        durations, finished = [], []
        for document in documents:
            created = parse_time(document["events"][0]["at"])
            ended = parse_time(document["events"][-1]["at"])
            durations.append((ended - created).total_seconds())
            finished.append(ended)
            if document["status"] == "COMPLETED":
                self.report.completed += 1
            else:
                self.report.failed += 1
        first = min(parse_time(d["events"][0]["at"]) for d in documents)
        span = (max(finished) - first).total_seconds()
        self.report.time_to_complete_s = Figures.of(durations)
        self.report.drain_rate_per_s = len(documents) / span if span > 0 else 0.0

    def measure_retry_lateness(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            order_ids = [
                self._place(client, index, {"fail_times": 1})
                for index in range(self.plan.retry_orders)
            ]
        lateness = []
        for document in self.wait_for_documents(order_ids):
            events = document["events"]
            for position, event in enumerate(events[:-1]):
                if event["type"] != "order.retry_scheduled":
                    continue
                attempt = events[position + 1]
                due = parse_time(event["next_attempt_at"])
                lateness.append((parse_time(attempt["at"]) - due).total_seconds())
        self.report.retry_lateness_s = Figures.of(lateness)


def format_report(report: BenchReport) -> str:
    plan = report.plan
    lines = []
    if "placing" in plan.scenarios:
        lines += [
            f"placing: {plan.orders} orders at concurrency {plan.concurrency}",
            report.place_latency_ms.line("place latency", "ms"),
            f"{'place rate':<32} {report.place_rate_per_s:.0f} orders/s",
        ]
        if report.baseline_rate_per_s is None:
            lines.append(
                f"{'baseline':<32} (not routed: service not on orders.bench.settings)"
            )
        else:
            lines += [
                report.baseline_latency_ms.line("baseline latency", "ms"),
                f"{'baseline rate':<32} {report.baseline_rate_per_s:.0f} requests/s",
                f"{'place rate / baseline rate':<32} {report.place_vs_baseline:.2f}",
            ]
        lines += [
            f"{'finished':<32} {report.completed} completed, {report.failed} failed",
            report.time_to_complete_s.line("time to complete", "s"),
            f"{'drain rate':<32} {report.drain_rate_per_s:.1f} orders/s",
            "",
        ]
    if "retries" in plan.scenarios:
        lines += [
            f"retries: {plan.retry_orders} orders that fail once",
            report.retry_lateness_s.line("retry lateness", "s"),
            "",
        ]
    if report.streams is not None:
        lines += [*format_streams(report.streams), ""]
    if report.pipeline is not None:
        lines += format_pipeline(report.pipeline)
    return "\n".join(lines).rstrip()


def format_pipeline(pipeline: dict) -> list[str]:
    plan = pipeline["plan"]
    return [
        f"pipeline: {pipeline['database']}, {pipeline['broker']}, "
        f"{pipeline['workers']} workers",
        f"{'no-op tasks drained':<32} {pipeline['noop_rate_per_s']:.0f} tasks/s "
        f"({plan['noop_tasks']} in {pipeline['noop_drain_s']:.2f} s)",
        f"{'orders drained':<32} {pipeline['orders_rate_per_s']:.0f} orders/s "
        f"({pipeline['orders_completed']} completed, "
        f"{pipeline['orders_failed']} failed, in {pipeline['orders_drain_s']:.2f} s)",
        f"{'orders/s ÷ no-op tasks/s':<32} {pipeline['ratio']:.2f}",
        cpu_line(pipeline),
        *database_cpu_lines(pipeline),
        Figures.from_dict(pipeline["pickup_ms"]).line(
            "pickup (created→processing)", "ms"
        ),
    ]


def database_cpu_lines(pipeline: dict) -> list[str]:
    if pipeline["order_database_cpu_ms"] is None:
        return []
    return [
        f"{'PostgreSQL server CPU per task':<32} "
        f"no-op {pipeline['noop_database_cpu_ms']:.2f} ms, "
        f"order {pipeline['order_database_cpu_ms']:.2f} ms"
    ]


def cpu_line(pipeline: dict) -> str:
    if pipeline["cpu_ratio"] is None:
        return f"{'cluster CPU per task':<32} (not measured: no /proc)"
    return (
        f"{'cluster CPU per task':<32} no-op {pipeline['noop_cpu_ms']:.2f} ms, "
        f"order {pipeline['order_cpu_ms']:.2f} ms "
        f"(ratio {pipeline['cpu_ratio']:.2f})"
    )
