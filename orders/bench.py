"""The benchmark behind `manage.py bench`: real HTTP against a real service on
127.0.0.1, every loop bounded in count and time.

It measures what DESIGN.md promises and leaves to the benchmark to report:
- placing: POST /api/orders latency and rate under concurrency;
- completing: time from placing to COMPLETED, and how fast the workers drain;
- retry lateness: how long after its due time a retry's attempt starts;
- streams: time to open N SSE streams, and how long an event takes from its
  commit to a connected client.
"""

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import httpx

TERMINAL = {"COMPLETED", "FAILED"}


@dataclass(frozen=True)
class BenchPlan:
    orders: int = 200
    concurrency: int = 20
    retry_orders: int = 30
    streams: int = 100
    timeout: float = 300.0


@dataclass
class Figures:
    """Percentiles of one measurement, in the unit its name says."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> "Figures":
        if not values:
            return cls()
        ordered = sorted(values)

        def at(fraction: float) -> float:
            return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

        return cls(
            count=len(ordered),
            p50=statistics.median(ordered),
            p95=at(0.95),
            p99=at(0.99),
            max=ordered[-1],
        )


@dataclass
class BenchReport:
    plan: BenchPlan
    place_latency_ms: Figures = field(default_factory=Figures)
    place_rate_per_s: float = 0.0
    completed: int = 0
    failed: int = 0
    time_to_complete_s: Figures = field(default_factory=Figures)
    drain_rate_per_s: float = 0.0
    retry_lateness_s: Figures = field(default_factory=Figures)
    streams_opened: int = 0
    streams_open_s: float = 0.0
    event_latency_s: Figures = field(default_factory=Figures)

    def as_dict(self) -> dict:
        return asdict(self)


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
        self.progress(f"placing {self.plan.orders} orders")
        order_ids = self.place_orders()
        self.progress("waiting for every order to finish")
        self.measure_completion(order_ids)
        self.progress(f"{self.plan.retry_orders} orders that fail once, then retry")
        self.measure_retry_lateness()
        self.progress(f"{self.plan.streams} live streams")
        asyncio.run(self.measure_streams())
        return self.report

    # Placing and completing -------------------------------------------------------
    def _place(self, client: httpx.Client, index: int, simulate=None) -> str:
        response = client.post("/api/orders", json=order_body(index, simulate))
        if response.status_code != 202:
            raise RuntimeError(
                f"POST /api/orders answered {response.status_code}: {response.text}"
            )
        return response.json()["order_id"]

    def place_orders(self) -> list[str]:
        latencies: list[float] = []

        # One client (a pool of keep-alive connections) shared by the threads,
        # so the load generator spends its CPU on requests, not on setting up.
        limits = httpx.Limits(max_connections=self.plan.concurrency)
        client = httpx.Client(base_url=self.base_url, timeout=30, limits=limits)

        def place(index: int) -> str:
            started = time.perf_counter()
            order_id = self._place(client, index)
            latencies.append((time.perf_counter() - started) * 1000)
            return order_id

        started = time.perf_counter()
        with client, ThreadPoolExecutor(max_workers=self.plan.concurrency) as pool:
            order_ids = list(pool.map(place, range(self.plan.orders)))
        elapsed = time.perf_counter() - started
        self.report.place_latency_ms = Figures.of(latencies)
        self.report.place_rate_per_s = self.plan.orders / elapsed
        self.placed_at = started
        return order_ids

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

    # Streams ----------------------------------------------------------------------
    async def measure_streams(self) -> None:
        """Open one stream per new order, then let the orders run: every live
        event's latency is its arrival time minus the time it was written."""
        count = self.plan.streams
        limits = httpx.Limits(max_connections=count + 10)
        timeout = httpx.Timeout(30, read=max(30, self.plan.timeout))
        async with httpx.AsyncClient(
            base_url=self.base_url, limits=limits, timeout=timeout
        ) as client:
            # The first attempt fails and the retry waits ORDER_RETRY_BASE_SECONDS,
            # so most events to measure are written after the streams are open;
            # only events written after a stream opened are counted.
            plan = {"delay_ms": 100, "fail_times": 1}
            order_ids = await asyncio.gather(
                *(self._place_async(client, index, plan) for index in range(count))
            )
            opened: list[float] = []
            latencies: list[float] = []
            started = time.perf_counter()
            readers = [
                asyncio.create_task(
                    self._read_stream(client, order_id, opened, latencies)
                )
                for order_id in order_ids
            ]
            remaining = max(1.0, self.deadline - time.monotonic())
            done, pending = await asyncio.wait(readers, timeout=remaining)
            for task in pending:
                task.cancel()
            for task in done:
                task.result()
            self.report.streams_opened = len(opened)
            self.report.streams_open_s = max(opened, default=started) - started
            self.report.event_latency_s = Figures.of(latencies)

    async def _place_async(self, client, index: int, simulate: dict) -> str:
        response = await client.post("/api/orders", json=order_body(index, simulate))
        if response.status_code != 202:
            raise RuntimeError(
                f"POST /api/orders answered {response.status_code}: {response.text}"
            )
        return response.json()["order_id"]

    async def _read_stream(self, client, order_id, opened, latencies) -> None:
        async with client.stream("GET", f"/api/orders/{order_id}/events") as response:
            if response.status_code != 200:
                raise RuntimeError(f"stream answered {response.status_code}")
            opened.append(time.perf_counter())
            opened_at = datetime.now(UTC)
            data = None
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                elif line == "" and data is not None:
                    received = datetime.now(UTC)
                    written = parse_time(data["at"])
                    if written >= opened_at:
                        latencies.append((received - written).total_seconds())
                    if data["status"] in TERMINAL:
                        return
                    data = None


def format_report(report: BenchReport) -> str:
    def figures(name: str, value: Figures, unit: str, scale: float = 1.0) -> str:
        if not value.count:
            return f"{name:<32} (no samples)"
        parts = [
            f"p50 {value.p50 * scale:.{precision(unit)}f}",
            f"p95 {value.p95 * scale:.{precision(unit)}f}",
            f"p99 {value.p99 * scale:.{precision(unit)}f}",
            f"max {value.max * scale:.{precision(unit)}f} {unit}",
        ]
        return f"{name:<32} " + "  ".join(parts) + f"  (n={value.count})"

    def precision(unit: str) -> int:
        return 1 if unit == "ms" else 3

    plan = report.plan
    lines = [
        f"orderproj bench: {plan.orders} orders at concurrency {plan.concurrency}, "
        f"{plan.retry_orders} retried orders, {plan.streams} streams",
        "",
        figures("place latency", report.place_latency_ms, "ms"),
        f"{'place rate':<32} {report.place_rate_per_s:.0f} orders/s",
        f"{'finished':<32} {report.completed} completed, {report.failed} failed",
        figures("time to complete", report.time_to_complete_s, "s"),
        f"{'drain rate':<32} {report.drain_rate_per_s:.1f} orders/s",
        figures("retry lateness", report.retry_lateness_s, "s"),
        f"{'streams opened':<32} {report.streams_opened} in "
        f"{report.streams_open_s:.2f} s",
        figures("event latency (commit→client)", report.event_latency_s, "s"),
    ]
    return "\n".join(lines)
