"""The order state machine: the table of allowed moves and the one function that
makes them. No other code writes Order.status."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, router, transaction
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
    with _atomic():
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
        _insert_events(events)
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
    with _atomic():
        if not _update_held(order, order.status, changes, now):
            return False
        _insert_events(
            [_event(order, EventType.STEP_COMPLETED, detail, now, step=step)]
        )
    return True


def claim(
    order_id: str,
    *,
    lease_expires_at: datetime,
    describe: Callable[[Order], str],
    now: datetime | None = None,
) -> Order | None:
    """Move the order with this id to PROCESSING if it may be claimed now (a
    status the table lets move there, and no retry due later), counting one
    attempt, and write its order.processing event (`describe(order)` is the
    detail) in the same transaction.

    The claim is the order's read too: one UPDATE … RETURNING, conditional on the
    status in the row, so a duplicate delivery or a racing worker gets None and
    the database is unchanged. Returns the claimed order, fresh from the row.
    """
    now = now or timezone.now()
    sources = [
        status for status in TRANSITIONS if is_allowed(status, Status.PROCESSING)
    ]
    connection = connections[router.db_for_write(Order)]
    quote = connection.ops.quote_name
    meta = Order._meta
    fields = meta.concrete_fields

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    def prepared(name: str, value):
        return meta.get_field(name).get_db_prep_save(value, connection)

    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        f"{column('version')} = {column('version')} + 1, "
        f"{column('attempts')} = {column('attempts')} + 1, "
        f"{column('status')} = %s, {column('updated_at')} = %s, "
        f"{column('lease_expires_at')} = %s, {column('next_attempt_at')} = NULL, "
        f"{column('dispatch_due_at')} = NULL "
        f"WHERE {column('order_id')} = %s "
        f"AND {column('status')} IN ({', '.join(['%s'] * len(sources))}) "
        f"AND ({column('next_attempt_at')} IS NULL "
        f"OR {column('next_attempt_at')} <= %s) "
        f"RETURNING {', '.join(quote(field.column) for field in fields)}"
    )
    params = [
        Status.PROCESSING,
        prepared("updated_at", now),
        prepared("lease_expires_at", lease_expires_at),
        order_id,
        *sources,
        prepared("next_attempt_at", now),
    ]
    with _atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        order = Order.from_db(
            connection.alias,
            [field.attname for field in fields],
            [
                _from_db(field, value, connection)
                for field, value in zip(fields, row, strict=True)
            ],
        )
        _insert_events([_event(order, EventType.PROCESSING, describe(order), now)])
    return order


def _update_held(order: Order, to_status: str, changes: dict, now: datetime) -> bool:
    """The conditional UPDATE both writers share: it matches only the status and
    version this object was read with, so of two racing writers one wins."""
    values = {"status": to_status, "updated_at": now, **changes}
    moved = _update_order(order, values, status=order.status, version=order.version)
    if moved is None:
        return False
    for name, value in values.items():
        setattr(order, name, value)
    order.version = moved["version"]
    return True


def append_event(
    order: Order, event_type: str, *, detail: str = "", changes: dict | None = None
) -> OrderEvent:
    """Write an event that does not change the status (order.created,
    delivery.completed, ...), bumping the version because the document changed."""
    now = timezone.now()
    values = {"updated_at": now, **(changes or {})}
    with _atomic():
        current = _update_order(order, values)
        for name, value in {**values, **current}.items():
            setattr(order, name, value)
        event = _event(order, event_type, detail, now)
        _insert_events([event])
    return event


def _atomic():
    """A transaction, or, inside a caller's, no savepoint: an error here always
    propagates and dooms the caller's transaction anyway, and a savepoint costs
    two more statements (round trips on PostgreSQL) per move."""
    return transaction.atomic(savepoint=False)


# The order's UPDATE and the events' INSERT are written out rather than built by
# QuerySet.update() and Model.save(): profiled on the 2-core development machine,
# building each took the ORM 0.2-0.5 ms of CPU against ~0.05 ms for the database
# to run it, and every order makes these writes several times. The values still
# go through each field's own get_db_prep_save().

# What the UPDATE returns: what an event reads of the order, fresh from the row.
RETURNED = ("version", "status", "attempts", "next_attempt_at")


def _update_order(order: Order, values: dict, **where) -> dict | None:
    """UPDATE the order's row: version + 1 and `values`, if it still matches
    `where` (field: value). Returns the fields of RETURNED as the row now has
    them, or None if no row matched."""
    connection = connections[router.db_for_write(Order)]
    quote = connection.ops.quote_name
    meta = Order._meta
    version = quote(meta.get_field("version").column)
    assignments, params = [f"{version} = {version} + 1"], []
    for name, value in values.items():
        field = meta.get_field(name)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    conditions, where_params = [f"{quote(meta.pk.column)} = %s"], [order.pk]
    for name, value in where.items():
        conditions.append(f"{quote(meta.get_field(name).column)} = %s")
        where_params.append(value)
    returned = [meta.get_field(name) for name in RETURNED]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} "
        f"WHERE {' AND '.join(conditions)} "
        f"RETURNING {', '.join(quote(field.column) for field in returned)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *where_params])
        row = cursor.fetchone()
    if row is None:
        return None
    return {
        field.name: _from_db(field, value, connection)
        for field, value in zip(returned, row, strict=True)
    }


def _from_db(field, value, connection):
    """What the ORM makes of a column's raw value (datetimes on SQLite, ...)."""
    column = field.get_col(field.model._meta.db_table)
    converters = connection.ops.get_db_converters(column)
    for converter in converters + column.get_db_converters(connection):
        value = converter(value, column, connection)
    return value


def _insert_events(events: list[OrderEvent]) -> None:
    connection = connections[router.db_for_write(OrderEvent)]
    quote = connection.ops.quote_name
    meta = OrderEvent._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"VALUES {', '.join([row] * len(events))} "
        f"RETURNING {quote(meta.pk.column)}"
    )
    params = [
        field.get_db_prep_save(field.pre_save(event, add=True), connection)
        for event in events
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Ids grow in the order the rows were inserted, whatever the order
        # RETURNING hands them back in.
        ids = sorted(row[0] for row in cursor.fetchall())
    for event, pk in zip(events, ids, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = connection.alias


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
