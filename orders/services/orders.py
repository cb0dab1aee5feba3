"""Writes to an order from outside a worker: placing, queueing, retrying,
failing it for good, expiring a lease.

Views, tasks, admin actions and commands parse their input and call these.
"""

import contextlib
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from orders.exceptions import (
    IdempotencyConflict,
)
from orders.models import (
    Order,
    OrderEvent,
    OrderLine,
)
from orders.selectors import queue_broker
from orders.services.customer_mail import CUSTOMER_MAIL_NOT_OWED, customer_mail_owed
from orders.services.inputs import OrderInput
from orders.state.transitions import (
    PrecedingEvent,
    append_event,
    transition,
)

logger = logging.getLogger(__name__)

Status = Order.Status
EventType = OrderEvent.Type

PROCESS_ORDER_TASK = "orders.tasks.process_order"


def order_place(
    *, data: OrderInput, idempotency_key: str | None = None, language: str = ""
) -> tuple[Order, bool]:
    """Save a PENDING order and hand it to the queue once the transaction commits.
    `language` is the customer's (a code of LANGUAGES), for the order's mails.

    Returns (order, created). With an idempotency key that was seen before, the
    earlier order is returned (created False) if the body is the same, and
    IdempotencyConflict is raised if it is not.
    """
    if idempotency_key:
        existing = _order_for_idempotency_key(idempotency_key, data)
        if existing:
            return existing, False
    try:
        with _one_writer_per_process(), transaction.atomic():
            now = timezone.now()
            order = Order.objects.create(
                customer_email=data.customer_email,
                amount=data.amount,
                currency=settings.ORDER_CURRENCY,
                max_attempts=settings.ORDER_MAX_ATTEMPTS,
                simulate=data.simulate,
                idempotency_key=idempotency_key,
                request_fingerprint=data.fingerprint,
                language=language,
                # Enqueued on commit, milliseconds from now: the dispatcher
                # compares this with the queue's oldest task (dispatcher.py).
                queued_at=now,
                dispatch_due_at=redispatch_time(now),
            )
            OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    sku=line.sku,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                )
                for line in data.lines
            )
            items = sum(line.quantity for line in data.lines)
            append_event(
                order,
                EventType.CREATED,
                detail=f"{items} item(s), {order.amount} {order.currency}",
            )
            order_enqueue_on_commit(order)
    except IntegrityError:
        # Two requests raced with the same key (a double click) and the other one
        # won. The failed INSERT was inside its own atomic block (a savepoint when
        # nested), so the connection is usable for the lookup, on PostgreSQL too.
        if idempotency_key:
            existing = _order_for_idempotency_key(idempotency_key, data)
            if existing:
                logger.info(
                    "Idempotency-Key %r: a concurrent request placed %s first",
                    idempotency_key,
                    existing.order_id,
                )
                return existing, False
        raise
    return order, True


_process_write_lock = threading.Lock()


def _one_writer_per_process():
    """On SQLite, let this process's request threads take the database's single
    write lock one at a time, in turn.

    Otherwise each waits in SQLite's busy handler, which sleeps in growing steps
    (up to 100 ms) and wakes in no order: under 20 concurrent placements the
    slowest waited seconds. Other processes (the workers) still contend through
    the busy handler, but they are few and single-threaded.
    """
    if connection.vendor == "sqlite":
        return _process_write_lock
    return contextlib.nullcontext()


def _order_for_idempotency_key(key: str, data: OrderInput) -> Order | None:
    existing = Order.objects.filter(idempotency_key=key).first()
    if existing and existing.request_fingerprint != data.fingerprint:
        raise IdempotencyConflict(key)
    return existing


def order_enqueue_on_commit(order: Order) -> None:
    """Hand the order to a worker after commit: never before it exists, never for
    a rolled-back request. If the queue refuses, the dispatcher hands it over again
    at dispatch_due_at, so the order is late, not lost."""
    order_id, queued_at = order.order_id, order.queued_at
    transaction.on_commit(lambda: order_enqueue(order_id, queued_at), robust=True)


def order_enqueue(order_id: str, queued_at=None) -> None:
    """Queue the order's task. `queued_at`, the value just written to the
    order's row, is the task's stamp: a batch that takes the order along notes
    it, and the task then has nothing to do (orders/workers/djangoq/taken_along.py)."""
    from django_q.tasks import async_task

    queued_at_us = task_stamp(queued_at) if queued_at is not None else None
    # Successful results are not kept: the order's own timeline records them.
    async_task(
        PROCESS_ORDER_TASK,
        order_id,
        queued_at_us,
        group="orders",
        save=False,
        broker=queue_broker(),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def task_stamp(queued_at: datetime) -> int:
    """An order task's stamp: its order's `queued_at` in whole microseconds,
    exact (a float would round)."""
    return (queued_at - _EPOCH) // _MICROSECOND


def order_fail(
    order: Order,
    *,
    reason: str,
    preceding: list[PrecedingEvent] = (),
    step: str = "",
    cause: str = "",
) -> bool:
    """The final step once retrying is over: FAILED with a reason an operator
    reads, the step and cause (OrderEvent.Cause) the customer's words are made
    from, and the customer's mail due."""
    return transition(
        order,
        Status.FAILED,
        detail=reason,
        changes={
            "failure_reason": reason,
            "failure_step": step,
            "failure_cause": cause,
            "next_attempt_at": None,
            "dispatch_due_at": None,
            "lease_expires_at": None,
            **customer_mail_owed(),
        },
        preceding=preceding,
        step=step,
        cause=cause,
    )


def order_retry(*, order: Order) -> Order:
    """An operator's retry of a FAILED order: back to PENDING, attempts reset.

    Raises InvalidTransition from any other status.
    """
    with transaction.atomic():
        previous_reason = order.failure_reason
        now = timezone.now()
        moved = transition(
            order,
            Status.PENDING,
            detail=f"retry requested after: {previous_reason}"
            if previous_reason
            else "retry requested",
            changes={
                "attempts": 0,
                "max_attempts": settings.ORDER_MAX_ATTEMPTS,
                "failure_reason": "",
                "failure_step": "",
                "failure_cause": "",
                **CUSTOMER_MAIL_NOT_OWED,
                "next_attempt_at": None,
                "queued_at": now,
                "dispatch_due_at": redispatch_time(now),
            },
            now=now,
        )
        if moved:
            order_enqueue_on_commit(order)
        else:
            # Someone else moved it first (another operator's retry, most likely).
            order.refresh_from_db()
    return order


def redispatch_time(now=None):
    """When the dispatcher next looks at work just handed to the queue."""
    now = now or timezone.now()
    return now + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
