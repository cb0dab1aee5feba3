"""GET /metrics: the Prometheus families, read from the database at scrape time.

Every web and worker process writes the same database, so a scrape of any web
process reports the truth of all of them without shared state between processes
(no prometheus_client multiprocess mode): OrdersCollector runs its queries when
Prometheus asks. Only the streams' figures belong to the process that answers
the scrape; they carry a `process` label (README.md, "Metrics").

The counters are derived from the order events, and the events are not kept for
ever: events_trim deletes old ones, and deleting an order deletes its events.
Whatever deleted events counted is first added to EventTally, in the deleting
transaction (services.events_tally), and a scrape adds EventTally to what the
remaining events count, in one statement (one snapshot), so no counter ever goes
down. This was chosen over a table of totals written with each attempt because
the claim and the completion are single tuned statements on PostgreSQL
(orders/state/transitions.py) and a totals row every worker updates would serialize
them on its lock; and over the Order columns because an operator's retry resets
`attempts` to 0. Deleting happens hourly, in batches, off the hot path.
"""

import functools
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime

from django.db.models import (
    BigIntegerField,
    Count,
    ExpressionWrapper,
    Min,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from orders import selectors
from orders.live import pump
from orders.models import Delivery, EventTally, FailureGroup, Order, OrderEvent
from orders.selectors import (
    ATTEMPT_DURATION_BUCKETS_MS,
    duration_bucket_tally,
    event_tallies,
)

logger = logging.getLogger(__name__)

Status = Order.Status
EventType = OrderEvent.Type


def event_totals() -> dict[str, int]:
    """Each tally over every event ever written: the events still there plus
    EventTally, in one statement, so a trim committing meanwhile is counted in
    exactly one of the two."""
    totals = {}
    for name, aggregate in event_tallies().items():
        tallied = Subquery(EventTally.objects.filter(name=name).values("value")[:1])
        totals[name] = ExpressionWrapper(
            aggregate + Coalesce(tallied, Value(0)), output_field=BigIntegerField()
        )
    return {
        name: int(value or 0)
        for name, value in OrderEvent.objects.aggregate(**totals).items()
    }


class OrdersCollector(Collector):
    """Yields every family from fresh queries at each scrape."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield self._orders_by_status()
        yield from self._event_counters()
        yield from self._queue(now)
        yield _seconds_gauge(
            "orders_dispatcher_lag_seconds",
            "How late the oldest due work (an order to hand to the queue, an "
            "expired lease, a delivery listener to re-send) is: 0 when the "
            "dispatchers keep up.",
            dispatcher_lag(now),
        )
        yield from self._streams(now)
        yield self._failure_groups()

    def _failure_groups(self) -> Metric:
        """Open groups, the regressions among them apart: what an operator has
        to look at (FailureGroup in orders/models.py)."""
        family = GaugeMetricFamily(
            "orders_failure_groups_open",
            "Failure groups not resolved; reopened=true: resolved once and "
            "failing again.",
            labels=["reopened"],
        )
        counts = FailureGroup.objects.filter(resolved=False).aggregate(
            false=Count("pk", filter=Q(reopened_at__isnull=True)),
            true=Count("pk", filter=Q(reopened_at__isnull=False)),
        )
        for reopened, count in counts.items():
            family.add_metric([reopened], count)
        return family

    def _orders_by_status(self) -> Metric:
        family = GaugeMetricFamily(
            "orders_by_status", "Orders in each status now.", labels=["status"]
        )
        counts = dict(
            Order.objects.order_by()
            .values_list("status")
            .annotate(count=Count("pk"))
            .values_list("status", "count")
        )
        for status in Status.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _event_counters(self) -> Iterator[Metric]:
        totals = event_totals()
        for name, documentation in [
            ("attempts", "Attempts started (claims of an order by a worker)."),
            (
                "attempt_failures",
                "Attempts that failed (a step error or a lost worker).",
            ),
            ("retries", "Retries scheduled after a failed attempt."),
            ("failed", "Times an order became FAILED."),
            ("completed", "Orders completed."),
        ]:
            yield CounterMetricFamily(f"orders_{name}", documentation, totals[name])
        buckets = [
            (_bucket_label(bound), totals[duration_bucket_tally(bound)])
            for bound in ATTEMPT_DURATION_BUCKETS_MS
        ]
        buckets.append(("+Inf", totals["attempt_duration_count"]))
        yield HistogramMetricFamily(
            "orders_attempt_duration_seconds",
            "How long the attempts that ended with a measured duration took.",
            buckets=buckets,
            sum_value=totals["attempt_duration_sum_ms"] / 1000,
        )

    def _queue(self, now: datetime) -> Iterator[Metric]:
        reachable = GaugeMetricFamily(
            "orders_queue_reachable", "1 if the task queue's broker answered."
        )
        try:
            depth = selectors.queue_depth()
            oldest = selectors.oldest_queued_at()
        except selectors.QUEUE_UNAVAILABLE as error:
            logger.warning(
                "metrics: the queue is unavailable (%s: %s)",
                type(error).__name__,
                error,
            )
            reachable.add_metric([], 0)
            yield reachable
            return
        reachable.add_metric([], 1)
        yield reachable
        yield GaugeMetricFamily(
            "orders_queue_depth",
            "Tasks waiting in the broker, not yet pulled by a cluster.",
            value=depth,
        )
        yield _seconds_gauge(
            "orders_queue_oldest_task_age_seconds",
            "How long the oldest task waiting in the broker has waited; 0 when "
            "none waits.",
            (now - oldest).total_seconds() if oldest is not None else 0,
        )

    def _streams(self, now: datetime) -> Iterator[Metric]:
        labels = ["process"]
        process = [process_label()]
        open_streams = GaugeMetricFamily(
            "orders_streams_open",
            "SSE streams open in the web process that answered this scrape.",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "orders_stream_pump_lag_seconds",
            "Age of the oldest event the pump of the process that answered this "
            "scrape has not handed to its streams yet; 0 when it is caught up or "
            "idle (no stream open).",
            labels=labels,
        )
        counters = {
            name: CounterMetricFamily(
                f"orders_streams_{name}", documentation, labels=labels
            )
            for name, documentation in [
                ("opened", "Streams opened in this process."),
                ("cut_off", "Streams ended because their client stopped reading."),
                (
                    "refused_openings",
                    "Stream openings refused (database failing or too many waiting).",
                ),
            ]
        }
        stats = pump.process_stats()
        open_streams.add_metric(process, stats.open_streams)
        lag.add_metric(process, pump_lag_seconds(stats.cursors, now))
        counters["opened"].add_metric(process, stats.opened_total)
        counters["cut_off"].add_metric(process, stats.cut_off)
        counters["refused_openings"].add_metric(process, stats.refused_openings)
        yield open_streams
        yield lag
        yield from counters.values()


def dispatcher_lag(now: datetime) -> float:
    """Seconds since the oldest due work became due, 0 when none is: what the
    dispatchers (one in each qcluster) have not picked up yet. Without a
    running qcluster it grows by a second a second."""
    due_times = [
        Order.objects.filter(
            status__in=selectors.OPEN, dispatch_due_at__lte=now
        ).aggregate(due=Min("dispatch_due_at"))["due"],
        Order.objects.filter(
            status=Status.PROCESSING, lease_expires_at__lte=now
        ).aggregate(due=Min("lease_expires_at"))["due"],
        Delivery.objects.filter(listener_due_at__lte=now).aggregate(
            due=Min("listener_due_at")
        )["due"],
    ]
    due_times = [due for due in due_times if due is not None]
    if not due_times:
        return 0.0
    return max(0.0, (now - min(due_times)).total_seconds())


def pump_lag_seconds(cursors: list[int], now: datetime) -> float:
    """Age of the oldest event after the furthest-behind pump cursor."""
    if not cursors:
        return 0.0
    oldest_unsent = (
        OrderEvent.objects.filter(pk__gt=min(cursors))
        .order_by("pk")
        .values_list("at", flat=True)
        .first()
    )
    if oldest_unsent is None:
        return 0.0
    return max(0.0, (now - oldest_unsent).total_seconds())


def process_label() -> str:
    """host:pid: tells apart the web processes behind one address (README)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _bucket_label(bound_ms: int) -> str:
    return repr(bound_ms / 1000)


def _seconds_gauge(name: str, documentation: str, seconds: float) -> Metric:
    return GaugeMetricFamily(name, documentation, value=round(seconds, 3))


@functools.cache
def registry() -> CollectorRegistry:
    """A registry of the orders' families alone (none of the client library's
    process defaults: Prometheus scrapes the web processes, whose own figures
    are not the service's)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(OrdersCollector())
    return collectors
