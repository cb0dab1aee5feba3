"""Running the receivers of the timeline's Django signals (orders/signals.py):
each call in a worker, in a transaction of its own, retried with backoff when
it raises, and recorded by the failure handler under the receiver's own name,
so one receiver's failure never touches the order or another receiver."""

import logging
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.dispatch import Signal
from django.utils import timezone

from orders.models import Order, ReceiverCall
from orders.selectors import queue_broker
from orders.services.backoff import backoff_delay
from orders.services.failures import record_failure
from orders.signals import EVENT_TYPES

logger = logging.getLogger(__name__)

State = ReceiverCall.State
RECEIVER_TASK = "orders.tasks.signal_receiver_run"
# A receiver that keeps raising is called again after 2 s, 8 s, 32 s, ... up to
# an hour apart, this many times in all; then its failure records are what is
# left to act on.
RECEIVER_MAX_ATTEMPTS = 10
RECEIVER_RETRY_BASE_SECONDS = 2
RECEIVER_RETRY_MULTIPLIER = 4
RECEIVER_RETRY_MAX_SECONDS = 3600


def receiver_path(receiver) -> str:
    """A receiver's dotted path, the name its calls and failures go by."""
    return f"{receiver.__module__}.{receiver.__qualname__}"


def signal_receivers(signal: Signal) -> list[str]:
    """The dotted paths of the receivers connected to `signal` now."""
    sync_receivers, async_receivers = signal._live_receivers(Order)
    return [receiver_path(r) for r in [*sync_receivers, *async_receivers]]


def failure_task_name(call: ReceiverCall) -> str:
    """What a receiver's failure is recorded as: a group of its own."""
    return f"signal receiver {call.receiver}"


def receiver_call_enqueue(*, call_id: int) -> None:
    from django_q.tasks import async_task

    async_task(RECEIVER_TASK, call_id, group="receivers", broker=queue_broker())


def receiver_call_run(*, call_id: int, now=None) -> ReceiverCall | None:
    """Call the receiver once, if its call is due; None if not (done already, a
    retry not yet due, or another worker runs it)."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.ORDER_LEASE_SECONDS)
    # The attempt counts from the claim: a receiver that kills its worker
    # every time still runs out of attempts.
    claimed = ReceiverCall.objects.filter(
        pk=call_id, state=State.PENDING, next_attempt_at__lte=now
    ).update(
        state=State.RUNNING,
        attempts=F("attempts") + 1,
        dispatch_due_at=now + lease,
    )
    if not claimed:
        return None
    call = ReceiverCall.objects.select_related("order").get(pk=call_id)
    attempt = call.attempts
    try:
        receiver = _find_receiver(call)
        with transaction.atomic():
            receiver(
                signal=EVENT_TYPES[call.event["type"]],
                sender=Order,
                order=Order.objects.get(pk=call.order_id),
                event=call.event,
            )
    except Exception as error:  # noqa: BLE001 - recorded, retried, never lost
        record_failure(
            task=failure_task_name(call),
            args=[call.signal, call.order.order_id, call.event_number],
            error=error,
            order=call.order,
        )
        _after_failure(call, attempt, timezone.now())
    else:
        ReceiverCall.objects.filter(pk=call.pk, state=State.RUNNING).update(
            state=State.DONE,
            done_at=timezone.now(),
            dispatch_due_at=None,
        )
    call.refresh_from_db()
    return call


def _after_failure(call: ReceiverCall, attempt: int, now) -> None:
    if attempt >= RECEIVER_MAX_ATTEMPTS:
        changes = {"state": State.FAILED, "dispatch_due_at": None}
    else:
        due = now + timedelta(
            seconds=backoff_delay(
                attempt,
                base=RECEIVER_RETRY_BASE_SECONDS,
                multiplier=RECEIVER_RETRY_MULTIPLIER,
                max_delay=RECEIVER_RETRY_MAX_SECONDS,
            )
        )
        changes = {
            "state": State.PENDING,
            "next_attempt_at": due,
            "dispatch_due_at": due,
        }
    ReceiverCall.objects.filter(pk=call.pk, state=State.RUNNING).update(**changes)


class ReceiverGone(LookupError):
    """The receiver of a call is no longer connected (a deploy removed it)."""


def _find_receiver(call: ReceiverCall):
    """The connected receiver of this call, as a plain function (an async
    receiver is run to its end on this worker's thread)."""
    signal = EVENT_TYPES[call.event["type"]]
    sync_receivers, async_receivers = signal._live_receivers(Order)
    for receiver in sync_receivers:
        if receiver_path(receiver) == call.receiver:
            return receiver
    for receiver in async_receivers:
        if receiver_path(receiver) == call.receiver:
            return async_to_sync(receiver)
    raise ReceiverGone(f"{call.receiver} is no longer connected to {call.signal}")


def receiver_calls_due(*, now=None, limit: int = 200) -> list[tuple]:
    """(pk, dispatch_due_at) of the calls whose task may be lost: not run when
    they should have been, or running past their lease."""
    now = now or timezone.now()
    return list(
        ReceiverCall.objects.filter(
            dispatch_due_at__lte=now, state__in=[State.PENDING, State.RUNNING]
        )
        .order_by("dispatch_due_at")
        .values_list("pk", "dispatch_due_at")[:limit]
    )


def receiver_call_redispatch(*, call_id: int, due_at, now=None) -> bool:
    """Hand the call to the queue again, if no other dispatcher has; a call
    whose worker died while running it is due at once (it counts as an
    attempt)."""
    now = now or timezone.now()
    redispatch_at = now + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)
    spent = ReceiverCall.objects.filter(
        pk=call_id,
        dispatch_due_at=due_at,
        state=State.RUNNING,
        attempts__gte=RECEIVER_MAX_ATTEMPTS,
    ).update(state=State.FAILED, dispatch_due_at=None)
    if spent:
        return False
    running = ReceiverCall.objects.filter(
        pk=call_id, dispatch_due_at=due_at, state=State.RUNNING
    ).update(state=State.PENDING, next_attempt_at=now, dispatch_due_at=redispatch_at)
    taken = running or ReceiverCall.objects.filter(
        pk=call_id, dispatch_due_at=due_at, state=State.PENDING
    ).update(dispatch_due_at=redispatch_at)
    if taken:
        receiver_call_enqueue(call_id=call_id)
    return bool(taken)
