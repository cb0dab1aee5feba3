"""The streams' reads: events after a cursor (the pump's one query per poll),
replay pages for a stream that opens, and where the table ends."""

import json
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from ..models import OrderEvent
from ..selectors import event_document

# Events read by one poll or one replay page.
READ_BATCH = 500


@dataclass(frozen=True)
class StreamEvent:
    id: int
    order_id: str  # the order's public id, what a stream is opened by
    type: str
    data: str  # the JSON of event_document(), encoded once for every subscriber


def _stream_event(event: OrderEvent) -> StreamEvent:
    document = event_document(event, event.order.order_id)
    return StreamEvent(
        id=event.pk,
        order_id=event.order.order_id,
        type=event.type,
        data=json.dumps(document, separators=(",", ":")),
    )


def read_after(cursor: int, limit: int = READ_BATCH) -> list[StreamEvent]:
    """Every event after `cursor`, oldest first: the pump's one query per poll."""
    rows = (
        OrderEvent.objects.filter(pk__gt=cursor)
        .select_related("order")
        .only(*EVENT_FIELDS)
        .order_by("pk")[:limit]
    )
    return [_stream_event(row) for row in rows]


EVENT_FIELDS = (
    "id",
    "type",
    "status",
    "attempt",
    "detail",
    "next_attempt_at",
    "duration_ms",
    "step",
    "at",
    "order__order_id",
)


def read_high_water(settle: float) -> int:
    """Where a pump that starts now can begin: the newest id old enough that no
    transaction still holding an older id can be open (orders/streams/__init__.py
    says why)."""
    cutoff = timezone.now() - timedelta(seconds=settle)
    newest_settled = (
        OrderEvent.objects.filter(at__lt=cutoff)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return newest_settled or 0


def read_replay(
    *, after: int, through: int, order_pk: int | None, limit: int = READ_BATCH
) -> list[StreamEvent]:
    """Events in (after, through] of one order (or of all), oldest first."""
    rows = OrderEvent.objects.filter(pk__gt=after, pk__lte=through)
    if order_pk is not None:
        rows = rows.filter(order_id=order_pk)
    rows = rows.select_related("order").only(*EVENT_FIELDS).order_by("pk")[:limit]
    return [_stream_event(row) for row in rows]


def oldest_event_id() -> int | None:
    return OrderEvent.objects.order_by("pk").values_list("pk", flat=True).first()


def newest_event_id() -> int:
    return OrderEvent.objects.aggregate(newest=Max("pk"))["newest"] or 0
