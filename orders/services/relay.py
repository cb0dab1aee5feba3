"""The relay: hands the timeline's committed events to their subscribers beyond
the browser, as rows: a WebhookMessage per event and endpoint that wants it, a
ReceiverCall per event and connected signal receiver.

The order's own transaction writes only its OrderEvent (the outbox); a relay in
each qcluster (orders/workers/relay.py) reads what committed after its cursor,
so a move costs nothing more when nobody subscribes, and an event is never
lost: the cursor moves in the transaction that writes the rows. Ids are taken
in order without a hole, as the streams do (orders/live/__init__.py): a missing
id holds the cursor back until it commits or until the event after it is
ORDER_STREAM_SETTLE_SECONDS old (a rolled-back transaction's hole).
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orders.models import (
    OrderEvent,
    ReceiverCall,
    RelayCursor,
    WebhookEndpoint,
    WebhookMessage,
)
from orders.selectors import event_document
from orders.services.receivers import receiver_call_enqueue, signal_receivers
from orders.services.webhooks import UNFINISHED, WEBHOOKS_CURSOR, webhook_body
from orders.signals import EVENT_TYPES, SIGNAL_NAMES

SIGNALS_CURSOR = "signals"
# Events handed out by one pass.
BATCH = 500


@dataclass
class RelayResult:
    messages: int = 0
    calls: int = 0


def events_relay(*, now=None) -> RelayResult:
    """One pass of both relays."""
    now = now or timezone.now()
    return RelayResult(
        messages=webhook_messages_fan_out(now=now),
        calls=receiver_calls_fan_out(now=now),
    )


def webhook_messages_fan_out(*, now=None) -> int:
    """A message for each enabled endpoint that wants each new event; the first
    of an order's messages to an endpoint is due now, the ones behind it wait
    for it. Returns how many were written."""
    now = now or timezone.now()
    endpoints = list(WebhookEndpoint.objects.filter(enabled=True))
    if not endpoints:
        return 0
    with transaction.atomic():
        cursor = _locked_cursor(WEBHOOKS_CURSOR)
        if cursor is None:
            return 0
        start = max(cursor.event_number, min(e.since_event for e in endpoints))
        events = settled_events_after(start, now=now)
        if not events:
            return 0
        busy = set(
            WebhookMessage.objects.filter(
                state__in=UNFINISHED,
                endpoint__in=endpoints,
                order__in={event.order_id for event in events},
            ).values_list("endpoint_id", "order_id")
        )
        messages = []
        for event in events:
            if event.type not in EVENT_TYPES:
                continue
            body = None
            for endpoint in endpoints:
                if event.pk <= endpoint.since_event or not endpoint.wants(event.type):
                    continue
                body = body or webhook_body(event)
                chain = (endpoint.pk, event.order_id)
                messages.append(
                    WebhookMessage(
                        endpoint=endpoint,
                        order_id=event.order_id,
                        event_number=event.pk,
                        event_type=event.type,
                        body=body,
                        next_attempt_at=None if chain in busy else now,
                    )
                )
                busy.add(chain)
        WebhookMessage.objects.bulk_create(messages, ignore_conflicts=True)
        RelayCursor.objects.filter(pk=cursor.pk).update(event_number=events[-1].pk)
    return len(messages)


def receiver_calls_fan_out(*, now=None) -> int:
    """A call for each receiver connected to each new event's signal, handed to
    the queue after commit. Returns how many were written."""
    now = now or timezone.now()
    receivers = {
        event_type: signal_receivers(signal)
        for event_type, signal in EVENT_TYPES.items()
        if signal.has_listeners()
    }
    if not receivers:
        return 0
    with transaction.atomic():
        cursor = _locked_cursor(SIGNALS_CURSOR)
        if cursor is None:
            return 0
        events = settled_events_after(cursor.event_number, now=now)
        if not events:
            return 0
        calls = [
            ReceiverCall(
                receiver=path,
                signal=SIGNAL_NAMES[event.type],
                order_id=event.order_id,
                event_number=event.pk,
                event=event_document(event, event.order.order_id),
                next_attempt_at=now,
                dispatch_due_at=now
                + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS),
            )
            for event in events
            for path in receivers.get(event.type, ())
        ]
        ReceiverCall.objects.bulk_create(calls, ignore_conflicts=True)
        RelayCursor.objects.filter(pk=cursor.pk).update(event_number=events[-1].pk)
        numbers = [event.pk for event in events]
        pks = list(
            ReceiverCall.objects.filter(
                event_number__in=numbers, attempts=0, created_at__gte=now
            ).values_list("pk", flat=True)
        )
        transaction.on_commit(lambda: [receiver_call_enqueue(call_id=pk) for pk in pks])
    return len(calls)


def settled_events_after(cursor: int, *, now, limit: int = BATCH) -> list[OrderEvent]:
    """The events after `cursor` up to the first missing id that may still
    commit (see the module docstring), oldest first."""
    settle = timedelta(seconds=settings.ORDER_STREAM_SETTLE_SECONDS)
    events = list(
        OrderEvent.objects.filter(pk__gt=cursor)
        .select_related("order")
        .order_by("pk")[:limit]
    )
    settled, previous = [], cursor
    for event in events:
        if event.pk != previous + 1 and event.at > now - settle:
            break
        settled.append(event)
        previous = event.pk
    return settled


def _locked_cursor(name: str) -> RelayCursor | None:
    """The relay's cursor, locked for this transaction; None while another
    relay (another qcluster) holds it. Made at the newest event the first
    time, so subscribers get no history."""
    cursor = (
        RelayCursor.objects.select_for_update(skip_locked=True)
        .filter(name=name)
        .first()
    )
    if cursor is None and not RelayCursor.objects.filter(name=name).exists():
        newest = OrderEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
        cursor, _ = RelayCursor.objects.get_or_create(
            name=name, defaults={"event_number": newest or 0}
        )
    return cursor


def subscribers_trim(*, now=None, retention_days: float | None = None) -> int:
    """Delete finished webhook messages (with their attempts) and receiver calls
    older than ORDER_EVENT_RETENTION_DAYS, as the timeline they came from is;
    unfinished ones are kept whatever their age. Returns how many rows went, in
    batches, so SQLite's write lock is held only briefly."""
    days = (
        settings.ORDER_EVENT_RETENTION_DAYS
        if retention_days is None
        else retention_days
    )
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    batches = [
        WebhookMessage.objects.filter(
            created_at__lt=cutoff,
            state__in=[WebhookMessage.State.DELIVERED, WebhookMessage.State.FAILED],
        ),
        ReceiverCall.objects.filter(
            created_at__lt=cutoff,
            state__in=[ReceiverCall.State.DONE, ReceiverCall.State.FAILED],
        ),
    ]
    deleted = 0
    for rows in batches:
        while True:
            pks = list(rows.order_by("pk").values_list("pk", flat=True)[:BATCH])
            if not pks:
                break
            deleted += rows.model.objects.filter(pk__in=pks).delete()[0]
    return deleted
