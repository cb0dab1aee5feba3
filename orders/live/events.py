"""The streams' reads: events after a cursor (the pump's one query per poll),
the first page of an order stream that opens, replay pages, and where the table
ends.

The reads every poll and every page load make are statements written once
(per database vendor) rather than built by the ORM each time: building the
query cost about 2 ms of the web process's CPU per opening, where the SQL itself
took a tenth of that (profiled with py-spy under 2,000 openings), and the
pump's read ran behind the same cost. The values still go through the fields'
converters, as the ORM's would, and event_document() makes every document.
"""

import dataclasses
import json
from collections import namedtuple
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.db.models import Max
from django.utils import timezone, translation

from orders.models import Order, OrderEvent
from orders.selectors import event_document

# Events read by one poll or one replay page.
READ_BATCH = 500


# The columns an event's document is made of, as event_document() reads them.
EventRow = namedtuple(
    "EventRow",
    "pk type status attempt detail next_attempt_at duration_ms step cause "
    "max_attempts at",
)


@dataclass(frozen=True)
class StreamEvent:
    id: int
    order_id: str  # the order's public id, what a stream is opened by
    type: str
    # The staff stream's data: the JSON of event_document(), encoded once for
    # every subscriber.
    data: str
    row: EventRow | None = None
    # The per-order stream's data by language, each made once, when a stream
    # in that language first sends the event (public_data()).
    public: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def public_data(self, language: str) -> str:
        """The data of the per-order stream, which anyone with the order's id
        reads: the customer's words in `language`, no operator's detail."""
        data = self.public.get(language)
        if data is None:
            with translation.override(language):
                document = event_document(self.row, self.order_id, public=True)
            data = self.public[language] = json.dumps(document, separators=(",", ":"))
        return data


def read_after(cursor: int, limit: int = READ_BATCH) -> list[StreamEvent]:
    """Every event after `cursor`, oldest first: the pump's one query per poll."""
    return _read("after", [cursor, limit])


def read_replay(
    *, after: int, through: int, order_pk: int | None, limit: int = READ_BATCH
) -> list[StreamEvent]:
    """Events in (after, through] of one order (or of all), oldest first."""
    if order_pk is None:
        return _read("replay", [after, through, limit])
    return _read("order_replay", [after, through, order_pk, limit])


def read_order_opening(
    order_id: str, *, through: int, limit: int = READ_BATCH
) -> tuple[int | None, list[StreamEvent]]:
    """An order stream that opens without a resume id: the order's pk (None if
    there is no such order) and the first page of its events up to `through`,
    in one statement (every page load opens one)."""
    rows = _rows("opening", [through, order_id, limit])
    if not rows:
        return None, []
    order_pk = rows[0][-1]
    if rows[0][0] is None:
        return order_pk, []  # the order, with no events to replay
    return order_pk, [_stream_event(row) for row in rows]


def read_high_water(settle: float) -> int:
    """Where a pump that starts now can begin: the newest id old enough that no
    transaction still holding an older id can be open (orders/live/__init__.py
    says why)."""
    cutoff = timezone.now() - timedelta(seconds=settle)
    newest_settled = (
        OrderEvent.objects.filter(at__lt=cutoff)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return newest_settled or 0


def oldest_event_id() -> int | None:
    return OrderEvent.objects.order_by("pk").values_list("pk", flat=True).first()


def newest_event_id() -> int:
    return OrderEvent.objects.aggregate(newest=Max("pk"))["newest"] or 0


def _read(kind: str, params: list) -> list[StreamEvent]:
    return [_stream_event(row) for row in _rows(kind, params)]


def _stream_event(row: tuple) -> StreamEvent:
    event, order_id = EventRow(*row[:-2]), row[-2]
    return StreamEvent(
        id=event.pk,
        order_id=order_id,
        type=event.type,
        data=json.dumps(event_document(event, order_id), separators=(",", ":")),
        row=event,
    )


def _rows(kind: str, params: list) -> list[tuple]:
    """The rows of statement `kind`: the EventRow columns, converted, then the
    order's public id and pk."""
    statements, converters = _statements_of_this_database()
    with connection.cursor() as cursor:
        cursor.execute(statements[kind], params)
        rows = cursor.fetchall()
    if not converters:
        return rows
    converted = []
    for row in rows:
        row = list(row)
        if row[0] is not None:
            for position, field_converters in converters:
                for convert in field_converters:
                    row[position] = convert(row[position], None, connection)
        converted.append(row)
    return converted


_statements: dict[str, tuple[dict[str, str], list]] = {}


def _statements_of_this_database() -> tuple[dict[str, str], list]:
    """The statements and, per EventRow column, this backend's converters
    (made once per database vendor)."""
    cached = _statements.get(connection.vendor)
    if cached is not None:
        return cached
    quote = connection.ops.quote_name
    fields = [
        OrderEvent._meta.get_field("id" if name == "pk" else name)
        for name in EventRow._fields
    ]
    columns = ", ".join(f"e.{quote(field.column)}" for field in fields)
    order_pk = f"o.{quote(Order._meta.pk.column)}"
    public_id = f"o.{quote(Order._meta.get_field('order_id').column)}"
    event_pk = f"e.{quote(OrderEvent._meta.pk.column)}"
    event_order = f"e.{quote(OrderEvent._meta.get_field('order').column)}"
    orders = f"{quote(Order._meta.db_table)} o"
    events = f"{quote(OrderEvent._meta.db_table)} e"
    select = f"SELECT {columns}, {public_id}, {order_pk} FROM"
    joined = f"{select} {events} JOIN {orders} ON {order_pk} = {event_order}"
    page = f"ORDER BY {event_pk} LIMIT %s"
    statements = {
        "after": f"{joined} WHERE {event_pk} > %s {page}",
        "replay": f"{joined} WHERE {event_pk} > %s AND {event_pk} <= %s {page}",
        "order_replay": (
            f"{joined} WHERE {event_pk} > %s AND {event_pk} <= %s "
            f"AND {event_order} = %s {page}"
        ),
        # The order even when it has no event to replay (LEFT JOIN).
        "opening": (
            f"{select} {orders} LEFT JOIN {events} ON {event_order} = {order_pk} "
            f"AND {event_pk} <= %s WHERE {public_id} = %s {page}"
        ),
    }
    converters = []
    for position, field in enumerate(fields):
        column = field.get_col(OrderEvent._meta.db_table)
        found = connection.ops.get_db_converters(column) + field.get_db_converters(
            connection
        )
        if found:
            converters.append((position, found))
    cached = _statements[connection.vendor] = (statements, converters)
    return cached
