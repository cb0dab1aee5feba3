"""The order state machine: the table of allowed moves and the one function that
makes them. No other code writes Order.status."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .exceptions import InvalidTransition
from .models import Order, OrderEvent

Status = Order.Status
EventType = OrderEvent.Type

TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.PROCESSING}),
    Status.PROCESSING: frozenset({Status.COMPLETED, Status.RETRYING, Status.FAILED}),
    Status.RETRYING: frozenset({Status.PROCESSING, Status.FAILED}),
    Status.COMPLETED: frozenset(),
    # An operator's manual retry; attempts start again from zero.
    Status.FAILED: frozenset({Status.PENDING}),
}

# The event each move writes on the timeline.
EVENT_FOR_STATUS: dict[str, str] = {
    Status.PROCESSING: EventType.PROCESSING,
    Status.RETRYING: EventType.RETRY_SCHEDULED,
    Status.COMPLETED: EventType.COMPLETED,
    Status.FAILED: EventType.FAILED,
    Status.PENDING: EventType.RETRY_REQUESTED,
}


@dataclass(frozen=True)
class PrecedingEvent:
    """An event written in the same transaction just before the move's own, such
    as the failed attempt that leads to a retry."""

    type: str
    detail: str = ""
    duration_ms: int | None = None
    step: str = ""


def is_allowed(from_status: str, to_status: str) -> bool:
    return to_status in TRANSITIONS.get(from_status, frozenset())


def transition(
    order: Order,
    to_status: str,
    *,
    detail: str = "",
    changes: dict | None = None,
    preceding: Iterable[PrecedingEvent] = (),
    duration_ms: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Move `order` to `to_status` and write its event(s) in one transaction.

    The UPDATE is conditional on the status and version this object was read with,
    so two workers (or one duplicate delivery) racing for the same move produce one
    move and one event; the loser gets False and the database is unchanged. On
    success the object is updated in place and True is returned.
    """
    from_status = order.status
    if not is_allowed(from_status, to_status):
        raise InvalidTransition(from_status, to_status)
    now = now or timezone.now()
    with transaction.atomic():
        if not _update_held(order, to_status, changes or {}, now):
            return False
        events = [
            _event(
                order,
                item.type,
                item.detail,
                now,
                duration_ms=item.duration_ms,
                step=item.step,
            )
            for item in preceding
        ]
        events.append(
            _event(
                order,
                EVENT_FOR_STATUS[to_status],
                detail,
                now,
                duration_ms=duration_ms,
            )
        )
        OrderEvent.objects.bulk_create(events)
    return True


def record_step(
    order: Order, *, step: str, detail: str, changes: dict, now: datetime | None = None
) -> bool:
    """A step's checkpoint: the order's changes (its `steps`) and an
    order.step_completed event, in one transaction, while the order is still
    PROCESSING at the version this worker read. A worker whose lease was taken
    over records nothing and gets False; the status does not change."""
    if order.status != Status.PROCESSING:
        raise InvalidTransition(order.status, order.status)
    now = now or timezone.now()
    with transaction.atomic():
        if not _update_held(order, order.status, changes, now):
            return False
        _event(order, EventType.STEP_COMPLETED, detail, now, step=step).save()
    return True


def _update_held(order: Order, to_status: str, changes: dict, now: datetime) -> bool:
    """The conditional UPDATE both writers share: it matches only the status and
    version this object was read with, so of two racing writers one wins."""
    moved = Order.objects.filter(
        pk=order.pk, status=order.status, version=order.version
    ).update(status=to_status, version=F("version") + 1, updated_at=now, **changes)
    if not moved:
        return False
    for name, value in changes.items():
        setattr(order, name, value)
    order.status = to_status
    order.version += 1
    order.updated_at = now
    return True


def append_event(
    order: Order, event_type: str, *, detail: str = "", changes: dict | None = None
) -> OrderEvent:
    """Write an event that does not change the status (order.created,
    delivery.completed, ...), bumping the version because the document changed."""
    now = timezone.now()
    changes = dict(changes or {})
    with transaction.atomic():
        Order.objects.filter(pk=order.pk).update(
            version=F("version") + 1, updated_at=now, **changes
        )
        order.refresh_from_db()
        event = _event(order, event_type, detail, now)
        event.save()
    return event


def _event(
    order: Order,
    event_type: str,
    detail: str,
    now: datetime,
    *,
    duration_ms: int | None = None,
    step: str = "",
) -> OrderEvent:
    return OrderEvent(
        order=order,
        type=event_type,
        status=order.status,
        attempt=order.attempts,
        detail=detail,
        step=step,
        next_attempt_at=order.next_attempt_at
        if order.status == Status.RETRYING
        else None,
        duration_ms=duration_ms,
        at=now,
    )
