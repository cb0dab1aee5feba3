"""Due work: hands orders to the queue when they are due and takes back orders
whose worker vanished.

The database is the truth and the queue only a hint: a queued task can be lost or
delivered twice. So every order that should be moving but is not is found here, by
its dispatch_due_at or an expired lease, and every step is a conditional UPDATE, so
any number of dispatchers (one per qcluster) can run side by side.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from .models import Delivery, Order
from .services import delivery_listener_enqueue, order_enqueue, order_expire_lease
from .streams import events_trim

logger = logging.getLogger(__name__)

Status = Order.Status
BATCH = 200
TRIM_EVERY_SECONDS = 3600


@dataclass
class SweepResult:
    dispatched: list[str]
    expired: list[str]
    listeners: list[str]

    def __bool__(self) -> bool:
        return bool(self.dispatched or self.expired or self.listeners)


def dispatch_due_orders(*, now=None) -> list[str]:
    """Enqueue every PENDING or RETRYING order whose dispatch time has come."""
    now = now or timezone.now()
    redispatch_at = now + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)
    due = (
        Order.objects.filter(
            dispatch_due_at__lte=now, status__in=[Status.PENDING, Status.RETRYING]
        )
        .order_by("dispatch_due_at")
        .values_list("pk", "order_id", "dispatch_due_at")[:BATCH]
    )
    dispatched = []
    for pk, order_id, due_at in due:
        # Only the dispatcher that moves dispatch_due_at on enqueues.
        taken = Order.objects.filter(pk=pk, dispatch_due_at=due_at).update(
            dispatch_due_at=redispatch_at
        )
        if taken:
            order_enqueue(order_id)
            dispatched.append(order_id)
    return dispatched


def dispatch_due_listeners(*, now=None) -> list[str]:
    """Hand the delivery.completed listener to the queue again for every completed
    delivery whose listener has had no outcome in time: its task was lost."""
    now = now or timezone.now()
    redispatch_at = now + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)
    due = (
        Delivery.objects.filter(listener_due_at__lte=now)
        .order_by("listener_due_at")
        .values_list("pk", "code", "order__order_id", "listener_due_at")[:BATCH]
    )
    dispatched = []
    for pk, code, order_id, due_at in due:
        taken = Delivery.objects.filter(pk=pk, listener_due_at=due_at).update(
            listener_due_at=redispatch_at
        )
        if taken:
            delivery_listener_enqueue(order_id=order_id, code=code)
            dispatched.append(code)
    return dispatched


def expire_leases(*, now=None) -> list[str]:
    """Count the attempt of every PROCESSING order past its lease as failed."""
    now = now or timezone.now()
    stuck = Order.objects.filter(
        status=Status.PROCESSING, lease_expires_at__lte=now
    ).order_by("lease_expires_at")[:BATCH]
    expired = []
    for order in stuck:
        if order_expire_lease(order=order):
            expired.append(order.order_id)
    return expired


def sweep() -> SweepResult:
    """One pass: expire leases first so their retries can be dispatched next."""
    expired = expire_leases()
    dispatched = dispatch_due_orders()
    listeners = dispatch_due_listeners()
    result = SweepResult(dispatched=dispatched, expired=expired, listeners=listeners)
    if result:
        logger.info(
            "sweep: dispatched %d order(s), expired %d lease(s), "
            "re-sent %d delivery listener(s)",
            len(dispatched),
            len(expired),
            len(listeners),
        )
    return result


def run_dispatcher(stop: threading.Event, *, interval: float | None = None) -> None:
    """Sweep every `interval` seconds until `stop` is set.

    A short fixed period keeps a retry within a fraction of a second of its due
    time without holding a worker, at the cost of one indexed query per tick.
    """
    interval = interval or settings.ORDER_DISPATCH_INTERVAL_SECONDS
    logger.info("dispatcher started (every %.2f s)", interval)
    next_trim = time.monotonic()
    while not stop.is_set():
        try:
            sweep()
        except Exception:
            logger.exception("dispatcher sweep failed; trying again")
            close_old_connections()
        if time.monotonic() >= next_trim:
            # Old events go at most once an hour: streams answer a resume from a
            # trimmed id with stream.reset.
            next_trim = time.monotonic() + TRIM_EVERY_SECONDS
            try:
                trimmed = events_trim()
                if trimmed:
                    logger.info("trimmed %d old order event(s)", trimmed)
            except Exception:
                logger.exception("trimming old events failed; next try in an hour")
                close_old_connections()
        stop.wait(interval)
    logger.info("dispatcher stopped")
