"""`manage.py bench webhooks`: how late webhooks reach a fast endpoint after
their event commits, alone (the baseline) and beside an endpoint that answers
in 1 s, on a service of its own (daphne + qcluster) and two receivers on
127.0.0.1 in this process.

Lateness is the receiver's clock at arrival less the body's `timestamp`, the
event's time, written just before its transaction commits: a little more than
the lateness after the commit. The slow endpoint's requests still arriving
when the fast one has everything show that it was not waited for.
"""

import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from orders.bench.environment import bench_environment, describe
from orders.bench.figures import Figures
from orders.workers.processes import LocalService, wait_until

EVENT = "order.completed"


@dataclass
class WebhooksPlan:
    # Orders per phase: the baseline, then with the slow endpoint.
    orders: int = 1000
    slow_answer_seconds: float = 1.0
    concurrency: int = 8
    timeout: float = 300.0


class _Receiver:
    """Records (arrival time, body) of each request; answers 200 after
    `delay` seconds."""

    def __init__(self, delay: float):
        self.delay = delay
        self.arrivals: list[tuple[float, bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.arrivals.append((time.time(), body))
                time.sleep(receiver.delay)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def orders_seen(self, order_ids: set[str]) -> int:
        with self._lock:
            bodies = [body for _, body in self.arrivals]
        return len({json.loads(b)["data"]["order_id"] for b in bodies} & order_ids)

    def lateness_s(self, order_ids: set[str]) -> list[float]:
        with self._lock:
            arrivals = list(self.arrivals)
        late = []
        for arrived, body in arrivals:
            document = json.loads(body)
            if document["data"]["order_id"] in order_ids:
                at = datetime.fromisoformat(
                    document["timestamp"].replace("Z", "+00:00")
                )
                late.append(arrived - at.timestamp())
        return late

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_webhooks_bench(plan: WebhooksPlan, workers: str, progress) -> dict:
    fast, slow = _Receiver(0.0), _Receiver(plan.slow_answer_seconds)
    try:
        with (
            tempfile.TemporaryDirectory(prefix="orderproj-bench-") as folder,
            bench_environment(
                Path(folder),
                DEBUG="1",
                ORDER_SIMULATION_ENABLED="1",
                Q_WORKERS=workers,
                WEBHOOK_ALLOW_PRIVATE_NETWORKS="1",
            ) as env,
        ):
            service = LocalService(workdir=Path(folder), env=env)
            progress(f"webhooks: {workers} workers; {describe(env)}")
            try:
                service.start()
                service.manage("webhooks", "add", fast.url, "--events", EVENT)
                baseline = _phase(service, plan, fast, None, progress, "fast alone")
                service.manage("webhooks", "add", slow.url, "--events", EVENT)
                beside = _phase(service, plan, fast, slow, progress, "beside slow")
            finally:
                service.stop()
    finally:
        fast.close()
        slow.close()
    return {
        "plan": asdict(plan),
        "workers": int(workers),
        "baseline": baseline,
        "beside_slow": beside,
    }


def _phase(service, plan, fast, slow, progress, name) -> dict:
    import httpx

    body = {
        "customer_email": "bench@example.com",
        "items": [{"sku": "MUG-1", "quantity": 1, "unit_price": "9.00"}],
    }
    progress(f"webhooks ({name}): placing {plan.orders} orders")
    started = time.monotonic()
    with (
        httpx.Client(base_url=service.base_url, timeout=30) as client,
        ThreadPoolExecutor(plan.concurrency) as pool,
    ):
        order_ids = set(
            pool.map(
                lambda _: client.post("/api/orders", json=body).json()["order_id"],
                range(plan.orders),
            )
        )
    wait_until(
        lambda: fast.orders_seen(order_ids) >= len(order_ids),
        timeout=plan.timeout,
        interval=0.2,
        what=f"{len(order_ids)} webhooks at the fast endpoint",
    )
    took = time.monotonic() - started
    result = {
        "fast_lateness_s": asdict(Figures.of(fast.lateness_s(order_ids))),
        "seconds": round(took, 2),
    }
    if slow is not None:
        result["slow_received_by_then"] = slow.orders_seen(order_ids)
        result["slow_lateness_s"] = asdict(Figures.of(slow.lateness_s(order_ids)))
    return result


def format_webhooks(report: dict | None) -> list[str]:
    """The report's lines; none when the scenario did not run."""
    if report is None:
        return []
    plan = report["plan"]
    base, beside = report["baseline"], report["beside_slow"]
    orders = plan["orders"]
    return [
        f"webhooks: {orders} orders per phase, {EVENT} to a fast endpoint; "
        f"then beside one answering in {plan['slow_answer_seconds']:g} s",
        Figures.from_dict(base["fast_lateness_s"]).line("fast alone: lateness", "s"),
        Figures.from_dict(beside["fast_lateness_s"]).line("beside slow: lateness", "s"),
        f"{'slow endpoint by then':<32} {beside['slow_received_by_then']} of "
        f"{orders} received (so not waited for)",
        "",
    ]
