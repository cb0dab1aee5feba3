"""Reads: what the API, pages and streams show of orders, and what the task
queue holds."""

import functools
from datetime import UTC, datetime, timedelta
from statistics import median

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Q, Sum
from django.db.models.functions import Coalesce, TruncHour, TruncMinute
from django.urls import reverse
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orders import customer_texts
from orders.gateways import STEPS
from orders.models import (
    FailureGroup,
    Order,
    OrderEvent,
    WebhookEndpoint,
    WebhookMessage,
)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def order_get(order_id: str) -> Order | None:
    return Order.objects.filter(order_id=order_id).first()


def order_version(order_id: str) -> int | None:
    return (
        Order.objects.filter(order_id=order_id)
        .values_list("version", flat=True)
        .first()
    )


def event_document(event: OrderEvent, order_id: str | None = None, *, public=False):
    """The SSE `data` of an event, and an entry of the status document's events.

    `message` is the customer's sentence (orders/customer_texts.py), in the
    language active now. A `public` document (the status document, the
    per-order stream: anyone with the order's id reads them) has it as its
    `detail` too; the staff stream, the dashboard, webhooks and signal
    receivers keep the operators' precise `detail`.
    """
    message = customer_texts.event_text(
        type=event.type,
        step=event.step,
        cause=event.cause,
        attempt=event.attempt,
        max_attempts=event.max_attempts,
    )
    return {
        "event_id": event.pk,
        "order_id": order_id or event.order.order_id,
        "type": event.type,
        "status": event.status,
        "attempt": event.attempt,
        "at": iso(event.at),
        "detail": message if public else event.detail,
        "message": message,
        "next_attempt_at": iso(event.next_attempt_at),
        "duration_ms": event.duration_ms,
        "step": event.step or None,
    }


def order_timeline(order: Order) -> list[OrderEvent]:
    return list(OrderEvent.objects.filter(order=order).order_by("id"))


def order_steps_document(order: Order) -> list[dict]:
    """Every step in the order it runs, done (with what it produced) or pending."""
    steps = []
    for name in STEPS:
        done = order.steps.get(name)
        steps.append(
            {
                "name": name,
                "state": "done" if done else "pending",
                "reference": done["reference"] if done else None,
                "attempt": done["attempt"] if done else None,
                "completed_at": done["at"].replace("+00:00", "Z") if done else None,
            }
        )
    return steps


def order_links(order: Order) -> dict:
    return {
        "status_url": reverse("api-order", args=[order.order_id]),
        "events_url": reverse("api-order", args=[order.order_id]) + "/events",
        "page_url": reverse("order-page", args=[order.order_id]),
    }


def order_document(order: Order) -> dict:
    """The public status document: anyone with the order's id reads it, so
    its words are the customer's (`message`; `failure_reason` of a FAILED
    order), in the language active now. Operators read the precise reason in
    the admin, the dashboard and `manage.py order_status`."""
    delivery = getattr(order, "delivery", None)
    failed = order.status == Order.Status.FAILED
    return {
        "order_id": order.order_id,
        "status": order.status,
        "message": customer_texts.order_text(order),
        "amount": str(order.amount),
        "currency": order.currency,
        "customer_email": order.customer_email,
        "items": [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": str(line.unit_price),
            }
            for line in order.lines.all()
        ],
        "attempts": order.attempts,
        "max_attempts": order.max_attempts,
        "steps": order_steps_document(order),
        "next_attempt_at": iso(order.next_attempt_at),
        "failure_reason": customer_texts.order_failure_text(order) if failed else None,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "delivery": {
            "code": delivery.code,
            "completed_at": iso(delivery.completed_at),
        }
        if delivery
        else None,
        "delivered_at": iso(order.delivered_at),
        "version": order.version,
        **order_links(order),
        "events": [
            event_document(event, order.order_id, public=True)
            for event in order_timeline(order)
        ],
    }


# Dashboard ----------------------------------------------------------------------
# The per-minute chart: which event type each series counts.
CHART_SERIES = {
    "completed": OrderEvent.Type.COMPLETED,
    "failed": OrderEvent.Type.FAILED,
    "retried": OrderEvent.Type.RETRY_SCHEDULED,
}
DASHBOARD_WINDOW_MINUTES = 60


def dashboard_status_counts() -> dict[str, int]:
    """How many orders are in each status, every status present."""
    counts = dict.fromkeys(Order.Status.values, 0)
    for row in Order.objects.order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts


def dashboard_minute_series(
    *, now: datetime | None = None, minutes: int = DASHBOARD_WINDOW_MINUTES
) -> dict:
    """Completed / failed / retried events per minute over the last `minutes`,
    oldest minute first; the newest minute is the one still running."""
    now = now or timezone.now()
    newest = now.replace(second=0, microsecond=0)
    start = newest - timedelta(minutes=minutes - 1)
    series = {name: [0] * minutes for name in CHART_SERIES}
    name_for_type = {event_type: name for name, event_type in CHART_SERIES.items()}
    rows = (
        OrderEvent.objects.filter(at__gte=start, type__in=name_for_type)
        .annotate(minute=TruncMinute("at"))
        .order_by()
        .values("minute", "type")
        .annotate(n=Count("pk"))
    )
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < minutes:
            series[name_for_type[row["type"]]][index] += row["n"]
    return {"start": iso(start), "minutes": minutes, **series}


def dashboard_rates(
    *, now: datetime | None = None, minutes: int = DASHBOARD_WINDOW_MINUTES
) -> dict:
    """Over the orders that finished in the window: how many needed a retry, and
    the median time from placing to completion."""
    now = now or timezone.now()
    since = now - timedelta(minutes=minutes)
    finished = OrderEvent.objects.filter(
        at__gte=since, type__in=[OrderEvent.Type.COMPLETED, OrderEvent.Type.FAILED]
    )
    finished_count = finished.count()
    retried_count = finished.filter(attempt__gt=1).count()
    durations = sorted(
        (completed_at - created_at).total_seconds()
        for completed_at, created_at in finished.filter(
            type=OrderEvent.Type.COMPLETED
        ).values_list("at", "order__created_at")
    )
    return {
        "finished": finished_count,
        "retried": retried_count,
        "retry_rate": retried_count / finished_count if finished_count else None,
        "completed": len(durations),
        "median_seconds_to_complete": median(durations) if durations else None,
    }


def dashboard_failed_orders(limit: int = 50) -> list[dict]:
    """The newest FAILED orders. `pk` is for the admin link of a staff-only page."""
    rows = (
        Order.objects.filter(status=Order.Status.FAILED)
        .order_by("-updated_at")
        .values(
            "pk",
            "order_id",
            "customer_email",
            "amount",
            "currency",
            "attempts",
            "failure_reason",
            "updated_at",
        )[:limit]
    )
    return [
        {
            **row,
            "amount": str(row["amount"]),
            "updated_at": iso(row["updated_at"]),
            "admin_url": reverse("admin:orders_order_change", args=[row["pk"]]),
            "page_url": reverse("order-page", args=[row["order_id"]]),
        }
        for row in rows
    ]


def dashboard_recent_events(limit: int = 30) -> list[dict]:
    """The newest events, newest first: the live feed before it goes live."""
    events = OrderEvent.objects.select_related("order").order_by("-pk")[:limit]
    return [event_document(event) for event in events]


def dashboard_stats(*, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    return {
        "generated_at": iso(now),
        "counts": dashboard_status_counts(),
        "series": dashboard_minute_series(now=now),
        "rates": dashboard_rates(now=now),
        "failed_orders": dashboard_failed_orders(),
    }


# Failure groups -------------------------------------------------------------------

SPARKLINE_HOURS = 24


def failure_group_hourly_counts(
    *, group: FailureGroup, now: datetime | None = None, hours: int = SPARKLINE_HOURS
) -> list[int]:
    """How many records the group had in each of the last `hours` hours, oldest
    first; the last bucket is the hour now running."""
    now = (now or timezone.now()).astimezone(UTC)
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    since = current_hour - timedelta(hours=hours - 1)
    rows = (
        group.records.filter(occurred_at__gte=since)
        # In UTC, as `now` is: hours of a zone offset by 30 minutes would
        # straddle two buckets.
        .annotate(hour=TruncHour("occurred_at", tzinfo=UTC))
        .values("hour")
        .annotate(n=Count("id"))
    )
    counts = [0] * hours
    for row in rows:
        index = int((row["hour"] - since).total_seconds() // 3600)
        if 0 <= index < hours:
            counts[index] += row["n"]
    return counts


def failure_group_orders(*, group: FailureGroup):
    """The orders the group's records are about, most recent first."""
    return Order.objects.filter(failures__group=group).distinct().order_by("-id")


# The task queue -------------------------------------------------------------------

# The statuses of an order the dispatcher hands to the queue at dispatch_due_at.
OPEN = [Order.Status.PENDING, Order.Status.RETRYING]

# The queue itself is unreachable (the Redis broker's connection failed): nothing
# is wrong with the work being handed over or read.
QUEUE_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)


@functools.cache
def queue_broker():
    """This process's django-q2 broker, for enqueueing and for reading the
    queue. Without one, async_task() makes a new broker per call, and the Redis
    broker a new Redis connection with it (a connect and two CLIENT SETINFO
    round trips before the RPUSH). Shared by threads: redis-py's connection pool
    is thread-safe, and the ORM broker keeps nothing but a queryset."""
    from django_q.brokers import get_broker

    return get_broker()


def queue_depth() -> int:
    """Tasks waiting in the broker, not yet pulled by a cluster."""
    return queue_broker().queue_size()


def oldest_queued_at() -> datetime | None:
    """When the oldest task still waiting in the broker was enqueued (django-q2
    stamps `started` on every task in async_task), or None if none waits.

    A task a cluster has pulled (a locked OrmQ row, a popped Redis item) no longer
    waits: it is in that cluster's buffer or running.
    """
    from django_q.brokers.orm import ORM
    from django_q.brokers.redis_broker import Redis
    from django_q.conf import Conf
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    broker = queue_broker()
    if isinstance(broker, ORM):
        payload = (
            OrmQ.objects.using(Conf.ORM)
            .filter(key=broker.list_key, lock__lte=timezone.now())
            .order_by("id")
            .values_list("payload", flat=True)
            .first()
        )
    elif isinstance(broker, Redis):
        payload = broker.connection.lindex(broker.list_key, 0)
    else:
        raise ImproperlyConfigured(
            f"cannot read the head of a {type(broker).__name__} broker; "
            "orderproj runs on django-q2's ORM or Redis broker"
        )
    if payload is None:
        return None
    return SignedPackage.loads(payload)["started"]


# Upper bounds of the attempt-duration histogram, in milliseconds (the unit of
# OrderEvent.duration_ms). Fixed: EventTally keeps a count per bound for the
# events already deleted, so a bound added later would miss their share.
ATTEMPT_DURATION_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)


def duration_bucket_tally(bound_ms: int) -> str:
    return f"attempt_duration_le_{bound_ms}"


def event_tallies() -> dict:
    """What the order events count, as aggregates over OrderEvent rows: the one
    definition used both to tally events before they are deleted and to count
    the events still there."""
    tallies = {
        # Each claim writes one order.processing event: one attempt started.
        "attempts": Count("pk", filter=Q(type=OrderEvent.Type.PROCESSING)),
        "attempt_failures": Count("pk", filter=Q(type=OrderEvent.Type.ATTEMPT_FAILED)),
        "retries": Count("pk", filter=Q(type=OrderEvent.Type.RETRY_SCHEDULED)),
        "failed": Count("pk", filter=Q(type=OrderEvent.Type.FAILED)),
        "completed": Count("pk", filter=Q(type=OrderEvent.Type.COMPLETED)),
        # The events that end a measured attempt (order.attempt_failed,
        # order.completed) carry its duration; a lost attempt (lease expired)
        # has none.
        "attempt_duration_count": Count("duration_ms"),
        "attempt_duration_sum_ms": Coalesce(Sum("duration_ms"), 0),
    }
    for bound in ATTEMPT_DURATION_BUCKETS_MS:
        tallies[duration_bucket_tally(bound)] = Count(
            "pk", filter=Q(duration_ms__lte=bound)
        )
    return tallies


# Webhooks ------------------------------------------------------------------------


def webhook_endpoints_overview() -> list:
    """Every endpoint with its messages counted by state (pending, delivered,
    failed), oldest endpoint first."""
    state = WebhookMessage.State
    return list(
        WebhookEndpoint.objects.annotate(
            pending=Count(
                "messages",
                filter=Q(messages__state__in=[state.PENDING, state.SENDING]),
            ),
            delivered=Count("messages", filter=Q(messages__state=state.DELIVERED)),
            failed=Count("messages", filter=Q(messages__state=state.FAILED)),
        ).order_by("pk")
    )
