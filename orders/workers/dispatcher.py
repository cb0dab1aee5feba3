"""Due work: hands orders to the queue when they are due and takes back orders
whose worker vanished.

The database is the truth and the queue only a hint: a queued task can be lost or
delivered twice. So every order that should be moving but is not is found here, by
its dispatch_due_at or an expired lease, and every step is a conditional UPDATE, so
any number of dispatchers (one per qcluster) can run side by side. A task that is
merely waiting behind a long queue is told apart from a lost one by the broker's
oldest task, so a backlog never gains extra tasks. A row whose handling raises is
recorded and backed off; the rest of the sweep goes on. A queue that cannot be
reached (Redis restarting) is not a bad row: the sweep stops handing work to it
and tries again in QUEUE_DOWN_RETRY_SECONDS, recording nothing (/healthz says the
queue is down).
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Value
from django.db.models.functions import Greatest, Now
from django.utils import timezone

from orders.models import Delivery, FailureRecord, Order
from orders.selectors import OPEN, QUEUE_UNAVAILABLE, oldest_queued_at
from orders.services.attempts import order_expire_lease
from orders.services.deliveries import delivery_listener_enqueue
from orders.services.events import events_trim
from orders.services.failures import failures_trim, record_failure
from orders.services.orders import order_enqueue
from orders.services.receivers import receiver_call_redispatch, receiver_calls_due

logger = logging.getLogger(__name__)

Status = Order.Status
BATCH = 200
TRIM_EVERY_SECONDS = 3600
# queued_at is written just before the enqueue (in the placing transaction or the
# dispatcher's UPDATE) and by another process, maybe on another machine, than
# the one that stamps the task: a task stamped this much later still counts as
# enqueued no later than the order's.
ENQUEUE_CLOCK_SLACK = timedelta(seconds=1)
# A task that has left the broker may still sit in a cluster's own buffer (up to
# workers² tasks, pulled ahead) before a worker claims its order: so long is
# waited before the order is taken for lost.
LEFT_QUEUE_GRACE_SECONDS = 2
# A row whose handling raised is left alone this long, so a broken row costs one
# try a minute, not one every sweep.
ROW_FAILURE_BACKOFF_SECONDS = 60
# The queue itself is unreachable (QUEUE_UNAVAILABLE): what was being handed over
# is due again this soon, and the sweep hands nothing else over.
QUEUE_DOWN_RETRY_SECONDS = 1


@dataclass
class SweepResult:
    dispatched: list[str]
    expired: list[str]
    listeners: list[str]
    receivers: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.dispatched or self.expired or self.listeners or self.receivers)


def task_still_queued(queued_at: datetime, oldest_queued: datetime | None) -> bool:
    """Whether the broker still holds a task enqueued no later than `queued_at`:
    the queue has not reached the order's task yet, so it is waiting, not lost.

    Both brokers hand tasks out in the order they were enqueued (a Redis list;
    OrmQ rows by id), so once the oldest waiting task is younger than the
    order's, the order's task has left the broker.
    """
    return oldest_queued is not None and oldest_queued <= queued_at + (
        ENQUEUE_CLOCK_SLACK
    )


def dispatch_due_orders(*, now=None) -> list[str]:
    """Hand due orders to the queue, but never one whose task is still waiting in
    it, however long the queue.

    At an order's dispatch_due_at:
    - no task of it is known to be queued (queued_at null: a due retry, or the
      grace below is over): enqueue it;
    - its task is still in the broker (task_still_queued): enqueue nothing, and
      look again when the queue should have reached it (_postpone_still_queued);
    - the queue has moved past its task, or is empty: the task may have just left
      for a worker, so look again in LEFT_QUEUE_GRACE_SECONDS with queued_at
      cleared; unclaimed by then, it was lost and is enqueued.
    The broker's head is read once per sweep, and only when some due order has a
    queued task. Every step is an UPDATE conditional on the due time it read, so
    several dispatchers never enqueue one order twice for one due time.
    """
    now = now or timezone.now()
    due = _due_orders(now)
    oldest = None
    if any(queued_at for *_, queued_at in due):
        oldest = oldest_queued_at()
        if oldest is not None and _postpone_still_queued(oldest, now):
            due = _due_orders(now)
    dispatched = []
    for pk, order_id, status, due_at, next_attempt_at, queued_at in due:
        try:
            if queued_at is None:
                retry_due = status == Status.RETRYING and due_at == next_attempt_at
                if _enqueue(pk, order_id, due_at, now, retry_due=retry_due):
                    dispatched.append(order_id)
            elif not task_still_queued(queued_at, oldest):
                _await_claim(pk, due_at, now)
        except QUEUE_UNAVAILABLE as error:
            Order.objects.filter(
                pk=pk, status__in=OPEN, dispatch_due_at__isnull=False
            ).update(dispatch_due_at=_queue_retry_time(now), queued_at=None)
            _queue_unavailable(order_id, error)
            break
        except Exception as error:  # noqa: BLE001 - recorded; one row costs itself
            _row_failed(
                task="orders.workers.dispatcher.dispatch_due_orders",
                key=order_id,
                order_pk=pk,
                error=error,
                back_off=lambda pk=pk: Order.objects.filter(
                    pk=pk, status__in=OPEN, dispatch_due_at__isnull=False
                ).update(dispatch_due_at=_back_off_time(now), queued_at=None),
            )
    return dispatched


def _due_orders(now) -> list[tuple]:
    return list(
        Order.objects.filter(dispatch_due_at__lte=now, status__in=OPEN)
        .order_by("dispatch_due_at")
        .values_list(
            "pk",
            "order_id",
            "status",
            "dispatch_due_at",
            "next_attempt_at",
            "queued_at",
        )[:BATCH]
    )


def _postpone_still_queued(oldest: datetime, now) -> int:
    """One UPDATE for every due order whose task still waits in the broker.

    The oldest task has waited `now - oldest`; an order enqueued later is looked
    at again when it has waited as long (when the queue should have reached it),
    and never sooner than ORDER_REDISPATCH_SECONDS. So a long backlog costs each
    waiting order one or two of these updates, not one per period.
    """
    redispatch_at = now + _seconds(settings.ORDER_REDISPATCH_SECONDS)
    reached_at = ExpressionWrapper(
        F("queued_at") + Value(now - oldest), output_field=DateTimeField()
    )
    with transaction.atomic():
        # Rows another dispatcher is updating are its to postpone; skipping them
        # also keeps two such bulk UPDATEs from deadlocking on PostgreSQL.
        waiting = (
            Order.objects.select_for_update(skip_locked=True)
            .filter(
                dispatch_due_at__lte=now,
                status__in=OPEN,
                queued_at__gte=oldest - ENQUEUE_CLOCK_SLACK,
            )
            .order_by()
            .values("pk")
        )
        return Order.objects.filter(pk__in=waiting).update(
            dispatch_due_at=Greatest(
                Value(redispatch_at, output_field=DateTimeField()), reached_at
            )
        )


def _await_claim(pk: int, due_at: datetime, now) -> None:
    Order.objects.filter(pk=pk, dispatch_due_at=due_at).update(
        queued_at=None, dispatch_due_at=now + _seconds(LEFT_QUEUE_GRACE_SECONDS)
    )


def _enqueue(pk: int, order_id: str, due_at: datetime, now, *, retry_due: bool):
    # Only the dispatcher that moves dispatch_due_at on enqueues.
    taken = Order.objects.filter(pk=pk, dispatch_due_at=due_at).update(
        queued_at=now,
        dispatch_due_at=now + _seconds(settings.ORDER_REDISPATCH_SECONDS),
    )
    if not taken:
        return False
    order_enqueue(order_id, now)
    logger.info(
        "enqueued %s (due %s): %s",
        order_id,
        due_at.isoformat(),
        "its retry is due"
        if retry_due
        else "no worker claimed it; its task was lost or never queued",
    )
    return True


def dispatch_due_listeners(*, now=None) -> list[str]:
    """Hand the delivery.completed listener to the queue again for every completed
    delivery whose listener has had no outcome in time: its task was lost."""
    now = now or timezone.now()
    redispatch_at = now + _seconds(settings.ORDER_REDISPATCH_SECONDS)
    due = (
        Delivery.objects.filter(listener_due_at__lte=now)
        .order_by("listener_due_at")
        .values_list("pk", "code", "order_id", "order__order_id", "listener_due_at")[
            :BATCH
        ]
    )
    dispatched = []
    for pk, code, order_pk, order_id, due_at in due:
        try:
            taken = Delivery.objects.filter(pk=pk, listener_due_at=due_at).update(
                listener_due_at=redispatch_at
            )
            if taken:
                delivery_listener_enqueue(order_id=order_id, code=code)
                dispatched.append(code)
        except QUEUE_UNAVAILABLE as error:
            Delivery.objects.filter(pk=pk, listener_due_at__isnull=False).update(
                listener_due_at=_queue_retry_time(now)
            )
            _queue_unavailable(code, error)
            break
        except Exception as error:  # noqa: BLE001 - recorded; one row costs itself
            _row_failed(
                task="orders.workers.dispatcher.dispatch_due_listeners",
                key=code,
                order_pk=order_pk,
                error=error,
                back_off=lambda pk=pk: Delivery.objects.filter(
                    pk=pk, listener_due_at__isnull=False
                ).update(listener_due_at=_back_off_time(now)),
            )
    return dispatched


def dispatch_due_receiver_calls(*, now=None) -> list[int]:
    """Hand a signal receiver's call to the queue again when its task should
    have run it by now: lost, or its worker died while running it."""
    now = now or timezone.now()
    dispatched = []
    for pk, due_at in receiver_calls_due(now=now, limit=BATCH):
        try:
            if receiver_call_redispatch(call_id=pk, due_at=due_at, now=now):
                dispatched.append(pk)
        except QUEUE_UNAVAILABLE as error:
            _queue_unavailable(f"receiver call {pk}", error)
            break
    return dispatched


def expire_leases(*, now=None) -> list[str]:
    """Count the attempt of every PROCESSING order past its lease as failed.

    Past it by the database's clock (Now()), which wrote the lease
    (transitions.claim): a dispatcher whose own clock runs ahead would take a
    running attempt's lease for expired and start a second one beside it."""
    now = Now() if now is None else now
    stuck = Order.objects.filter(
        status=Status.PROCESSING, lease_expires_at__lte=now
    ).order_by("lease_expires_at")[:BATCH]
    expired = []
    for order in stuck:
        try:
            if order_expire_lease(order=order):
                expired.append(order.order_id)
        except Exception as error:  # noqa: BLE001 - recorded; one row costs itself
            _row_failed(
                task="orders.workers.dispatcher.expire_leases",
                key=order.order_id,
                order_pk=order.pk,
                error=error,
                back_off=lambda order=order: Order.objects.filter(
                    pk=order.pk,
                    status=Status.PROCESSING,
                    lease_expires_at=order.lease_expires_at,
                ).update(lease_expires_at=_back_off_time(now)),
            )
    return expired


def _row_failed(
    *,
    task: str,
    key: str,
    order_pk: int,
    error: Exception,
    back_off: Callable[[], int],
) -> None:
    """One row raised: the sweep goes on with the others, this row is left alone
    for ROW_FAILURE_BACKOFF_SECONDS, and the failure is recorded, once per row
    while its record is unresolved (later failures of the same row are logged).

    If the back-off itself fails (the database is down), that error ends the
    sweep as before.
    """
    back_off()
    order = Order.objects.filter(pk=order_pk).first()
    if FailureRecord.objects.filter(task=task, order=order, resolved=False).exists():
        logger.error(
            "%s failed again for %s (its failure record is still open); next try "
            "in %d s",
            task,
            key,
            ROW_FAILURE_BACKOFF_SECONDS,
            exc_info=error,
        )
        return
    record_failure(task=task, args=[key], error=error, order=order)


def _queue_unavailable(key: str, error: Exception) -> None:
    logger.warning(
        "the queue is unavailable (%s: %s); %s and the rest of the due work are "
        "handed over again in %g s",
        type(error).__name__,
        error,
        key,
        QUEUE_DOWN_RETRY_SECONDS,
    )


def _queue_retry_time(now) -> datetime:
    return now + _seconds(QUEUE_DOWN_RETRY_SECONDS)


def _back_off_time(now) -> datetime:
    return now + _seconds(ROW_FAILURE_BACKOFF_SECONDS)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def sweep() -> SweepResult:
    """One pass: expire leases first so their retries can be dispatched next."""
    expired = expire_leases()
    dispatched = dispatch_due_orders()
    listeners = dispatch_due_listeners()
    receivers = dispatch_due_receiver_calls()
    result = SweepResult(
        dispatched=dispatched,
        expired=expired,
        listeners=listeners,
        receivers=receivers,
    )
    if result:
        logger.info(
            "sweep: dispatched %d order(s), expired %d lease(s), "
            "re-sent %d delivery listener(s) and %d receiver call(s)",
            len(dispatched),
            len(expired),
            len(listeners),
            len(receivers),
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
            # trimmed id with stream.reset. Old resolved failure records with them.
            next_trim = time.monotonic() + TRIM_EVERY_SECONDS
            _trim(events_trim, "old order event(s)")
            _trim(failures_trim, "resolved failure record(s)")
        stop.wait(interval)
    logger.info("dispatcher stopped")


def _trim(trim: Callable[[], int], what: str) -> None:
    """One retention pass; a failure is logged and tried again in an hour."""
    try:
        trimmed = trim()
        if trimmed:
            logger.info("trimmed %d %s", trimmed, what)
    except Exception:
        logger.exception("trimming %s failed; next try in an hour", what)
        close_old_connections()
