"""Event retention: trimming old timelines, keeping their counts
(selectors.event_tallies defines what they count)."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from orders.models import (
    EventTally,
    FailureRecord,
    Order,
    OrderEvent,
)
from orders.selectors import event_tallies

logger = logging.getLogger(__name__)

Status = Order.Status
EventType = OrderEvent.Type

TRIM_BATCH = 1000


def events_trim(*, now=None, retention_days: float | None = None) -> int:
    """Delete events older than ORDER_EVENT_RETENTION_DAYS (0 keeps them all);
    returns how many. In batches, so SQLite's write lock is held only briefly.

    The timeline of an order an operator still has to deal with is kept whatever
    its age: a FAILED order's, and one with an unresolved FailureRecord's, until
    the order is retried or the records resolved. Each batch resumes after the
    last id it deleted, so the kept events are read past once per run, not once
    per batch.

    A client resuming from a deleted id gets stream.reset
    (orders/live/opening.py)."""
    days = (
        settings.ORDER_EVENT_RETENTION_DAYS
        if retention_days is None
        else retention_days
    )
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    unresolved = FailureRecord.objects.filter(
        order_id=OuterRef("order_id"), resolved=False
    )
    trimmable = (
        OrderEvent.objects.filter(at__lt=cutoff)
        .exclude(order__status=Status.FAILED)
        .filter(~Exists(unresolved))
    )
    deleted, after = 0, 0
    while True:
        with transaction.atomic():
            # Locked, so a trim in another qcluster neither tallies nor deletes
            # them too (SQLite: the IMMEDIATE transaction is the lock).
            ids = list(
                trimmable.select_for_update(skip_locked=True, of=("self",))
                .filter(pk__gt=after)
                .order_by("pk")
                .values_list("pk", flat=True)[:TRIM_BATCH]
            )
            if not ids:
                return deleted
            after = ids[-1]
            # The same rows are tallied and deleted, so the counters of GET
            # /metrics count each event once.
            batch = OrderEvent.objects.filter(pk__in=ids)
            events_tally(events=batch)
            deleted += batch.delete()[0]


def events_tally(*, events) -> dict[str, int]:
    """Add what these events count (event_tallies) to EventTally, just before
    they are deleted and in the deleting transaction, so the counters of GET
    /metrics never go down. Returns what was added."""
    counts = {
        name: value
        for name, value in events.aggregate(**event_tallies()).items()
        if value
    }
    EventTally.objects.bulk_create(
        [EventTally(name=name) for name in counts], ignore_conflicts=True
    )
    for name, value in counts.items():
        EventTally.objects.filter(name=name).update(value=F("value") + value)
    return counts


def order_deleting(*, order: Order) -> None:
    """An order is being deleted (from a shell: the admin offers no Delete), its
    events with it: what they counted is kept (events_tally)."""
    events_tally(events=OrderEvent.objects.filter(order=order))
