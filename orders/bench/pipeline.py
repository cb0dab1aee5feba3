"""`manage.py bench pipeline`: how fast the workers drain orders, measured against
how fast the same cluster drains django-q2 tasks that do nothing.

This module runs in a process of its own whose environment is the benchmark's
(its temporary database and queue): `python -m orders.bench.pipeline`, started by
the bench command. It starts and stops `manage.py qcluster` itself, so the
backlogs are in place before any worker runs:

1. no-op tasks: N/2 calls of `noop` enqueued with the cluster stopped, then the
   cluster started; the rate is read off the queue as it empties;
2. orders: N orders placed (`order_place`, as the API does) with the cluster
   stopped, then the cluster started; the rate is read off their
   `order.completed` events;
3. the other N/2 no-op tasks, as in 1, so that a machine whose speed drifts
   moves both sides of the ratio alike;
4. pickup: with the cluster running and idle, orders placed one at a time at
   irregular intervals; the latency is from `order.created` to
   `order.processing` on each order's timeline.
"""

import argparse
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orders.bench.figures import Figures

NOOP_TASK = "orders.bench.pipeline.noop"


def noop(*args, **kwargs) -> None:
    """The task whose drain rate is the yardstick: django-q2's own cost per task."""


@dataclass(frozen=True)
class PipelinePlan:
    noop_tasks: int = 2000
    orders: int = 1000
    pickups: int = 40
    timeout: float = 300.0


@dataclass
class PipelineReport:
    plan: PipelinePlan
    database: str = ""
    broker: str = ""
    workers: int = 0
    noop_rate_per_s: float = 0.0
    noop_drain_s: float = 0.0
    orders_rate_per_s: float = 0.0
    orders_drain_s: float = 0.0
    orders_completed: int = 0
    orders_failed: int = 0
    ratio: float = 0.0
    # CPU time the whole qcluster (every process) spent per task while draining;
    # their ratio is the throughput ratio the CPU alone would allow. None where
    # /proc cannot be read.
    noop_cpu_ms: float | None = None
    order_cpu_ms: float | None = None
    cpu_ratio: float | None = None
    # CPU time of the PostgreSQL server's processes per task, when the server
    # runs on this machine (it shares the cores): None on SQLite or elsewhere.
    noop_database_cpu_ms: float | None = None
    order_database_cpu_ms: float | None = None
    pickup_ms: Figures = field(default_factory=Figures)

    def as_dict(self) -> dict:
        return asdict(self)


class PipelineBench:
    """Runs inside the benchmark's environment (see the module docstring)."""

    POLL_SECONDS = 0.01

    def __init__(self, plan: PipelinePlan, workdir: Path, progress=print):
        from django.conf import settings

        from orders.workers.processes import LocalService

        self.plan = plan
        self.progress = progress
        self.deadline = time.monotonic() + plan.timeout
        self.noop_cpu_s: float | None = None
        self.noop_database_cpu_s: float | None = None
        self.service = LocalService(workdir=workdir, env=dict(os.environ))
        self.report = PipelineReport(
            plan=plan,
            workers=settings.Q_CLUSTER["workers"],
        )

    def run(self) -> PipelineReport:
        from django.db import connection
        from django_q.brokers import get_broker

        self.report.database = connection.vendor
        self.report.broker = get_broker().info()
        # Half the no-op tasks before the orders and half after, so that a
        # machine whose speed drifts (other work on it) moves both sides alike.
        first_half = self.plan.noop_tasks // 2
        self.progress(f"{first_half} no-op tasks")
        self.measure_noops(first_half)
        self.progress(f"{self.plan.orders} orders")
        self.measure_orders()
        second_half = self.plan.noop_tasks - first_half
        self.progress(f"{second_half} no-op tasks")
        self.measure_noops(second_half)
        self.report.noop_rate_per_s = self.plan.noop_tasks / self.report.noop_drain_s
        if self.noop_cpu_s is not None:
            self.report.noop_cpu_ms = self.noop_cpu_s * 1000 / self.plan.noop_tasks
        if self.noop_database_cpu_s is not None:
            self.report.noop_database_cpu_ms = (
                self.noop_database_cpu_s * 1000 / self.plan.noop_tasks
            )
        self.start_cluster()
        self.progress(f"pickup latency of {self.plan.pickups} orders")
        try:
            self.measure_pickup()
        finally:
            self.stop_cluster()
        report = self.report
        if report.noop_rate_per_s:
            report.ratio = report.orders_rate_per_s / report.noop_rate_per_s
        if report.noop_cpu_ms and report.order_cpu_ms:
            report.cpu_ratio = report.noop_cpu_ms / report.order_cpu_ms
        return report

    # The cluster ----------------------------------------------------------------
    def start_cluster(self) -> None:
        from django.db import connections

        # The cluster's first queries should not wait behind this process's.
        connections.close_all()
        self.service.start_cluster()

    def stop_cluster(self) -> None:
        from orders.workers.processes import stop

        stop(self.service.cluster, timeout=30)
        self.service.cluster = None

    def cluster_cpu(self) -> float | None:
        return cpu_seconds(self.service.cluster.pid)

    def check_deadline(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"{what}: not done after {self.plan.timeout} s")

    # 1. No-op tasks -------------------------------------------------------------
    def measure_noops(self, count: int) -> None:
        """django-q2's own speed: `noop` enqueued with the options of the order
        task (`save=False`), so the only difference is what the function does.

        The start is the queue's first shrink (the ORM broker deletes a task when
        the monitor acknowledges it; the Redis broker hands tasks out as workers
        free up). The end is a last task, the one whose result is saved: workers
        take tasks in queue order, so once its result is saved all are done.
        """
        from django_q.brokers import get_broker
        from django_q.models import Task
        from django_q.tasks import async_task

        broker = get_broker()
        for index in range(count):
            async_task(NOOP_TASK, index, save=False, broker=broker)
        marker = f"bench-noop-last-{os.getpid()}-{time.monotonic_ns()}"
        async_task(NOOP_TASK, count, task_name=marker, save=True, broker=broker)
        if queue_size(broker) != count + 1:
            raise RuntimeError(
                f"the queue holds {queue_size(broker)} tasks, not {count + 1}: "
                "is another cluster reading it?"
            )
        done = Task.objects.filter(name=marker)
        self.start_cluster()
        first = last = None
        while last is None:
            if first is None and queue_size(broker) <= count:
                first, cpu_first = time.perf_counter(), self.cluster_cpu()
                database_first = database_cpu_seconds()
            if first is not None and done.exists():
                last, cpu_last = time.perf_counter(), self.cluster_cpu()
                database_last = database_cpu_seconds()
            else:
                self.check_deadline("draining the no-op tasks")
                time.sleep(self.POLL_SECONDS)
        self.stop_cluster()
        self.report.noop_drain_s += last - first
        if cpu_first is not None:
            self.noop_cpu_s = (self.noop_cpu_s or 0.0) + cpu_last - cpu_first
        if database_first is not None:
            self.noop_database_cpu_s = (
                (self.noop_database_cpu_s or 0.0) + database_last - database_first
            )

    # 2. Orders ------------------------------------------------------------------
    def measure_orders(self) -> None:
        from orders.models import Order, OrderEvent

        order_ids = [self.place(index) for index in range(self.plan.orders)]
        orders = Order.objects.filter(order_id__in=order_ids)
        waiting = orders.filter(status=Order.Status.PENDING)
        self.start_cluster()
        while waiting.count() == len(order_ids):
            self.check_deadline("the first order")
            time.sleep(self.POLL_SECONDS)
        cpu_first, database_first = self.cluster_cpu(), database_cpu_seconds()
        self.wait_until_finished(order_ids, "draining the orders")
        # A worker takes waiting orders along with its own (a batch), so orders
        # can finish before the tasks of the orders taken along have left the
        # queue; those tasks still cost the cluster their run, so the drain
        # ends when the queue is empty too.
        drained_at = self.wait_until_queue_empty("the orders' tasks")
        cpu_last, database_last = self.cluster_cpu(), database_cpu_seconds()
        self.stop_cluster()
        if cpu_first is not None:
            self.report.order_cpu_ms = (cpu_last - cpu_first) * 1000 / len(order_ids)
        if database_first is not None:
            self.report.order_database_cpu_ms = (
                (database_last - database_first) * 1000 / len(order_ids)
            )
        self.report.orders_completed = orders.filter(
            status=Order.Status.COMPLETED
        ).count()
        self.report.orders_failed = orders.filter(status=Order.Status.FAILED).count()
        finished = sorted(
            OrderEvent.objects.filter(
                order__order_id__in=order_ids,
                type__in=[OrderEvent.Type.COMPLETED, OrderEvent.Type.FAILED],
            ).values_list("at", flat=True)
        )
        # From the first order finished to the last, or to the queue's last
        # task if that left later.
        span = (max(finished[-1], drained_at) - finished[0]).total_seconds()
        self.report.orders_drain_s = span
        self.report.orders_rate_per_s = (len(finished) - 1) / span if span > 0 else 0

    # 3. Pickup latency ----------------------------------------------------------
    def measure_pickup(self) -> None:
        from orders.models import OrderEvent

        # Idle: the backlog is gone and the workers wait for work.
        time.sleep(1.0)
        order_ids = []
        for index in range(self.plan.pickups):
            order_ids.append(self.place(index))
            # Irregular, so placing does not keep step with the broker's polling.
            time.sleep(random.uniform(0.1, 0.3))
        self.wait_until_finished(order_ids, "the pickup orders")
        created, processing = {}, {}
        events = OrderEvent.objects.filter(
            order__order_id__in=order_ids,
            type__in=[OrderEvent.Type.CREATED, OrderEvent.Type.PROCESSING],
        ).values_list("order__order_id", "type", "at")
        for order_id, event_type, at in events.order_by("id"):
            target = created if event_type == OrderEvent.Type.CREATED else processing
            target.setdefault(order_id, at)
        self.report.pickup_ms = Figures.of(
            [
                (processing[order_id] - created[order_id]).total_seconds() * 1000
                for order_id in order_ids
            ]
        )

    # Helpers --------------------------------------------------------------------
    def place(self, index: int) -> str:
        from orders.api.validation import parse_order_request
        from orders.bench.service import order_body
        from orders.services.orders import order_place

        data = parse_order_request(
            json.dumps(order_body(index)).encode(), simulation_enabled=False
        )
        order, _created = order_place(data=data)
        return order.order_id

    def wait_until_queue_empty(self, what: str):
        """When the queue held no task any more (its wall-clock time, as the
        events' `at`)."""
        from django.utils import timezone
        from django_q.brokers import get_broker

        broker = get_broker()
        while queue_size(broker) > 0:
            self.check_deadline(what)
            time.sleep(self.POLL_SECONDS)
        return timezone.now()

    def wait_until_finished(self, order_ids: list[str], what: str) -> None:
        from orders.models import Order

        terminal = [Order.Status.COMPLETED, Order.Status.FAILED]
        orders = Order.objects.filter(order_id__in=order_ids, status__in=terminal)
        while orders.count() < len(order_ids):
            self.check_deadline(what)
            time.sleep(0.05)


def queue_size(broker) -> int:
    """Tasks in the queue: not yet acknowledged (ORM broker), not yet handed to
    the cluster (Redis broker)."""
    from django_q.conf import Conf
    from django_q.models import OrmQ

    if Conf.ORM:
        return OrmQ.objects.using(Conf.ORM).filter(key=broker.list_key).count()
    return broker.queue_size()


def cpu_seconds(pid: int) -> float | None:
    """CPU time used so far by process `pid` and every process below it: each
    one's own, plus what it has reaped of its children's (Linux /proc)."""
    from orders.workers.processes import descendants_of

    total = 0
    for process in [pid, *descendants_of(pid)]:
        try:
            stat = Path(f"/proc/{process}/stat").read_text()
        except OSError:
            if process == pid:
                return None
            continue
        # After the command name: state is field 3; utime, stime, cutime and
        # cstime are fields 14 to 17.
        fields = stat.rsplit(")", 1)[1].split()
        total += sum(int(value) for value in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds() -> float | None:
    """CPU time used so far by the PostgreSQL server, when it runs on this
    machine: every process named postgres, with what each has reaped of its
    children's (the postmaster reaps the backends that have exited)."""
    from django.db import connection

    host = connection.settings_dict.get("HOST") or "localhost"
    if connection.vendor != "postgresql" or host not in LOCAL_HOSTS:
        return None
    total = 0
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_file.read_text()
        except OSError:
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)
        if name == "postgres":
            total += sum(int(value) for value in fields.split()[11:15])
    return total / os.sysconf("SC_CLK_TCK")


LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


def main(argv: list[str]) -> None:
    import django

    parser = argparse.ArgumentParser(prog="python -m orders.bench.pipeline")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--noop-tasks", type=int, required=True)
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--pickups", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args(argv)
    django.setup()
    # django-q2 logs every enqueue; the progress lines are what matter here.
    logging.getLogger("django-q").setLevel(logging.WARNING)
    plan = PipelinePlan(
        noop_tasks=args.noop_tasks,
        orders=args.orders,
        pickups=args.pickups,
        timeout=args.timeout,
    )

    def progress(line: str) -> None:
        print(f"… {line}", file=sys.stderr, flush=True)

    report = PipelineBench(plan, Path(args.workdir), progress=progress).run()
    # The last line of stdout is the report; the bench command reads it.
    print(json.dumps(report.as_dict()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
