"""Deliveries: completing one, and the listener that moves its order."""

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orders.exceptions import (
    DeliveryNotFound,
    ListenerFailed,
)
from orders.models import (
    Delivery,
    Order,
    OrderEvent,
)
from orders.selectors import queue_broker
from orders.services.attempts import describe_error
from orders.services.failures import record_failure
from orders.services.orders import redispatch_time
from orders.state.transitions import (
    append_event,
)

logger = logging.getLogger(__name__)

Status = Order.Status
EventType = OrderEvent.Type

DELIVERY_LISTENER_TASK = "orders.tasks.order_delivery_completed"


def delivery_complete(*, code: str) -> tuple[Delivery, bool]:
    """Mark a delivery complete in its own transaction; after commit, hand
    `delivery.completed` to the order's listener.

    Returns (delivery, completed_now). Completing a completed delivery changes
    nothing and enqueues nothing. An unknown code raises DeliveryNotFound.
    """
    now = timezone.now()
    # durable: the delivery's completion must not ride on a caller's transaction
    # that could still roll back after the listener was told.
    with transaction.atomic(durable=True):
        delivery = Delivery.objects.select_related("order").filter(code=code).first()
        if delivery is None:
            raise DeliveryNotFound(code)
        completed_now = Delivery.objects.filter(
            pk=delivery.pk, completed_at__isnull=True
        ).update(completed_at=now, listener_due_at=redispatch_time())
        if not completed_now:
            delivery.refresh_from_db()
            return delivery, False
        # The status document shows delivery.completed_at, so the order's version
        # (its ETag) moves with it, or a poller keeps getting 304 for stale data.
        # No event here: delivery.completed is the listener's to write once it
        # has run.
        Order.objects.filter(pk=delivery.order_id).update(
            version=F("version") + 1, updated_at=now
        )
        delivery.order.refresh_from_db(fields=["version", "updated_at"])
        delivery.completed_at = now
        order_id = delivery.order.order_id
        transaction.on_commit(
            lambda: delivery_listener_enqueue(order_id=order_id, code=code),
            robust=True,
        )
    return delivery, True


def delivery_listener_enqueue(*, order_id: str, code: str) -> None:
    """Hand `delivery.completed` to the queue. If the queue refuses, the failure
    is recorded like any other, so an operator can re-run it from the record."""
    from django_q.tasks import async_task

    try:
        async_task(
            DELIVERY_LISTENER_TASK,
            order_id,
            code,
            group="listeners",
            broker=queue_broker(),
        )
    except Exception as error:  # noqa: BLE001 - recorded, never lost
        record_failure(
            task=DELIVERY_LISTENER_TASK,
            args=[order_id, code],
            error=error,
            order=Order.objects.filter(order_id=order_id).first(),
        )


def order_delivery_completed(*, order_id: str, code: str) -> Order:
    """The async listener of `delivery.completed`: set the order's delivered_at
    and put the event on its timeline, in a transaction of its own.

    If it raises, `listener.failed` goes on the timeline (separately, so the
    event survives the rollback) and the exception escapes to the global handler;
    the delivery stays completed. Running it again after success writes nothing.
    """
    order = Order.objects.get(order_id=order_id)
    delivery = Delivery.objects.get(code=code, order=order)
    try:
        with transaction.atomic():
            # Serialise racing runs (a redelivered task, an operator's re-run).
            order = Order.objects.select_for_update().get(pk=order.pk)
            # The listener has an outcome: nothing is left for the dispatcher.
            Delivery.objects.filter(pk=delivery.pk).update(listener_due_at=None)
            if order.delivered_at is not None:
                return order
            if order.simulate.get("listener_fails") and not _listener_failed_before(
                order
            ):
                raise ListenerFailed(
                    "the delivery listener failed on its first run "
                    "(simulate.listener_fails)"
                )
            append_event(
                order,
                EventType.DELIVERY_COMPLETED,
                detail=f"delivered ({code})",
                changes={"delivered_at": delivery.completed_at or timezone.now()},
            )
    except Exception as error:
        try:
            # A failure is an outcome too: from here the global handler's record
            # and an operator's re-run take over, not the dispatcher.
            Delivery.objects.filter(pk=delivery.pk).update(listener_due_at=None)
            append_event(
                order,
                EventType.LISTENER_FAILED,
                detail=f"delivery.completed listener failed: {describe_error(error)}",
            )
        except Exception:  # keep the original error
            logger.exception("could not write listener.failed for %s", order_id)
        raise
    return order


def _listener_failed_before(order: Order) -> bool:
    return order.events.filter(type=EventType.LISTENER_FAILED).exists()


# Failure records ----------------------------------------------------------------

# Only the project's own tasks are run again from a record.
