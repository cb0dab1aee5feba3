"""The order state machine: the table of allowed moves and the one function that
makes them. No other code writes Order.status."""

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, models, router, transaction
from django.utils import timezone

from . import notify
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
    creates: Iterable[models.Model] = (),
) -> bool:
    """Move `order` to `to_status` and write its event(s), and any rows the move
    `creates` (the delivery of a completed order), in one transaction.

    The UPDATE is conditional on the status and version this object was read with,
    so two workers (or one duplicate delivery) racing for the same move produce one
    move and one event; the loser gets False and the database is unchanged. On
    success the object is updated in place and True is returned.
    """
    from_status = order.status
    if not is_allowed(from_status, to_status):
        raise InvalidTransition(from_status, to_status)
    now = now or timezone.now()
    values = {"status": to_status, "updated_at": now, **(changes or {})}
    events = [
        _event(
            order,
            values,
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
            values,
            EVENT_FOR_STATUS[to_status],
            detail,
            now,
            duration_ms=duration_ms,
        )
    )
    return _move(order, values, [events, list(creates)])


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
    values = {"status": order.status, "updated_at": now, **changes}
    event = _event(order, values, EventType.STEP_COMPLETED, detail, now, step=step)
    return _move(order, values, [[event]])


def claim(
    order_id: str,
    *,
    lease_expires_at: datetime,
    describe: Callable[[Order], str],
    now: datetime | None = None,
    likely: dict | None = None,
) -> Order | None:
    """Move the order with this id to PROCESSING if it may be claimed now (a
    status the table lets move there, and no retry due later), counting one
    attempt, and write its order.processing event (`describe(order)` is the
    detail) in the same transaction.

    The claim is the order's read too: one UPDATE … RETURNING, conditional on the
    status in the row, so a duplicate delivery or a racing worker gets None and
    the database is unchanged. Returns the claimed order, fresh from the row.

    `likely` is what the caller expects the row to hold (a first attempt: no
    attempts, no steps done). On PostgreSQL the claim of such a row, its event
    described in advance, is one statement and one round trip; a row that
    differs is claimed the general way.
    """
    now = now or timezone.now()
    connection = connections[router.db_for_write(Order)]
    if likely is not None and connection.vendor == "postgresql":
        order = _claim_likely_row(
            connection, order_id, likely, lease_expires_at, describe, now
        )
        if order is not None:
            notify.events_written(connection.alias)
            return order
    sql, params = _claim_sql(connection, order_id, lease_expires_at, now)
    with _atomic():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        order = _order_from_row(connection, row)
        _insert([_event(order, {}, EventType.PROCESSING, describe(order), now)])
    notify.events_written(connection.alias)
    return order


def _claim_sql(connection, order_id, lease_expires_at, now, likely=None):
    """The claim's UPDATE … RETURNING every column of the order."""
    sources = [
        status for status in TRANSITIONS if is_allowed(status, Status.PROCESSING)
    ]
    quote = connection.ops.quote_name
    meta = Order._meta

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    def prepared(name: str, value):
        return meta.get_field(name).get_db_prep_save(value, connection)

    conditions = [
        f"{column('order_id')} = %s",
        f"{column('status')} IN ({', '.join(['%s'] * len(sources))})",
        f"({column('next_attempt_at')} IS NULL OR {column('next_attempt_at')} <= %s)",
    ]
    where_params = [order_id, *sources, prepared("next_attempt_at", now)]
    for name, value in (likely or {}).items():
        field = meta.get_field(name)
        conditions.append(
            f"{quote(field.column)} = CAST(%s AS {field.cast_db_type(connection)})"
        )
        where_params.append(prepared(name, value))
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        f"{column('version')} = {column('version')} + 1, "
        f"{column('attempts')} = {column('attempts')} + 1, "
        f"{column('status')} = %s, {column('updated_at')} = %s, "
        f"{column('lease_expires_at')} = %s, {column('next_attempt_at')} = NULL, "
        f"{column('dispatch_due_at')} = NULL "
        f"WHERE {' AND '.join(conditions)} "
        f"RETURNING {', '.join(quote(field.column) for field in meta.concrete_fields)}"
    )
    params = [
        Status.PROCESSING,
        prepared("updated_at", now),
        prepared("lease_expires_at", lease_expires_at),
        *where_params,
    ]
    return sql, params


def _claim_likely_row(connection, order_id, likely, lease_expires_at, describe, now):
    """PostgreSQL: the claim of a row that holds `likely`, and its event, in one
    statement (a data-modifying WITH). The event's detail is described from
    the row as the claim will leave it, which the conditions pin down."""
    claimed = Order(**likely)
    claimed.attempts = likely["attempts"] + 1
    claimed.status = Status.PROCESSING
    event = _event(claimed, {}, EventType.PROCESSING, describe(claimed), now)
    claim_sql, claim_params = _claim_sql(
        connection, order_id, lease_expires_at, now, likely
    )
    pk = connection.ops.quote_name(Order._meta.pk.column)
    insert_sql, insert_params = _insert_sql(
        connection,
        [event],
        only_if="claimed",
        columns={"order": f"(SELECT {pk} FROM claimed)"},
    )
    event_pk = connection.ops.quote_name(OrderEvent._meta.pk.column)
    sql = (
        f"WITH claimed AS ({claim_sql}), inserted AS ({insert_sql}) "
        f"SELECT claimed.*, (SELECT MIN({event_pk}) FROM inserted) FROM claimed"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*claim_params, *insert_params])
        row = cursor.fetchone()
    if row is None:
        return None
    order = _order_from_row(connection, row[:-1])
    event.order = order
    _saved(event, row[-1], connection)
    return order


def _order_from_row(connection, row) -> Order:
    fields = Order._meta.concrete_fields
    return Order.from_db(
        connection.alias,
        [field.attname for field in fields],
        [
            _from_db(field, value, connection)
            for field, value in zip(fields, row, strict=True)
        ],
    )


def _move(order: Order, values: dict, rows: list[list[models.Model]]) -> bool:
    """The conditional UPDATE every move shares, and the rows written with it
    (`rows`: lists of new objects, one model each), all or nothing.

    The UPDATE matches only the status and version this object was read with, so
    of two racing writers one wins. On PostgreSQL it is one statement (the
    inserts are data-modifying WITH queries that run only if the UPDATE matched):
    one round trip, and its own transaction outside a caller's, instead of six.
    """
    connection = connections[router.db_for_write(Order)]
    where = {"status": order.status, "version": order.version}
    rows = [group for group in rows if group]
    if connection.vendor == "postgresql":
        moved = _move_in_one_statement(connection, order, values, where, rows)
    else:
        with _atomic():
            moved = _update_order(order, values, **where)
            if moved is not None:
                for group in rows:
                    _insert(group)
    if moved is None:
        return False
    # Every move writes at least its own event.
    notify.events_written(connection.alias)
    for name, value in values.items():
        setattr(order, name, value)
    order.version = moved["version"]
    return True


def _move_in_one_statement(connection, order, values, where, rows) -> dict | None:
    quote = connection.ops.quote_name
    update_sql, params = _update_sql(connection, order, values, where)
    queries, arrays = [f"moved AS ({update_sql})"], []
    for index, group in enumerate(rows):
        insert_sql, insert_params = _insert_sql(connection, group, only_if="moved")
        queries.append(f"inserted_{index} AS ({insert_sql})")
        params.extend(insert_params)
        pk = quote(type(group[0])._meta.pk.column)
        arrays.append(f"ARRAY(SELECT {pk} FROM inserted_{index} ORDER BY {pk})")
    sql = f"WITH {', '.join(queries)} SELECT moved.*, {', '.join(arrays)} FROM moved"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    for group, ids in zip(rows, row[len(RETURNED) :], strict=True):
        for obj, pk in zip(group, ids, strict=True):
            _saved(obj, pk, connection)
    return _returned(connection, row[: len(RETURNED)])


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
        event = _event(order, {}, event_type, detail, now)
        _insert([event])
    notify.events_written(event._state.db)
    return event


def _atomic():
    """A transaction, or, inside a caller's, no savepoint: an error here always
    propagates and dooms the caller's transaction anyway, and a savepoint costs
    two more statements (round trips on PostgreSQL) per move."""
    return transaction.atomic(savepoint=False)


# The order's UPDATE and the rows' INSERT are written out rather than built by
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
    sql, params = _update_sql(connection, order, values, where)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    return _returned(connection, row)


def _update_sql(connection, order: Order, values: dict, where: dict):
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
    return sql, [*params, *where_params]


def _returned(connection, row) -> dict:
    returned = [Order._meta.get_field(name) for name in RETURNED]
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


def _insert(objs: list[models.Model]) -> None:
    """INSERT new objects of one model in one statement; each gets its id."""
    connection = connections[router.db_for_write(type(objs[0]))]
    sql, params = _insert_sql(connection, objs)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Ids grow in the order the rows were inserted, whatever the order
        # RETURNING hands them back in.
        ids = sorted(row[0] for row in cursor.fetchall())
    for obj, pk in zip(objs, ids, strict=True):
        _saved(obj, pk, connection)


def _insert_sql(connection, objs, *, only_if: str = "", columns: dict | None = None):
    """The INSERT … RETURNING id of `objs`. `only_if` names a WITH query: rows
    are inserted only if it returned one. `columns` gives SQL for some fields
    (by name) instead of the objects' values."""
    columns = columns or {}
    model = type(objs[0])
    fields = _insert_fields(model)
    sql = _insert_statement(
        connection.alias, model, len(objs), only_if, tuple(sorted(columns.items()))
    )
    params = [
        field.get_db_prep_save(field.pre_save(obj, add=True), connection)
        for obj in objs
        for field in fields
        if field.name not in columns
    ]
    return sql, params


def _insert_fields(model) -> list:
    return [field for field in model._meta.concrete_fields if not field.primary_key]


@functools.lru_cache(maxsize=64)
def _insert_statement(alias: str, model, rows: int, only_if: str, columns) -> str:
    """The text of _insert_sql's statement: the same for every order, so built
    once (the column types it spells out cost more than the database's work).
    Keyed by the database's alias, not a thread's connection, which the cache
    would keep open."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = model._meta
    columns = dict(columns)
    fields = _insert_fields(model)
    if only_if:
        # In a SELECT, a parameter has no type of its own: the column's is given.
        slots = [
            columns.get(field.name) or f"CAST(%s AS {field.cast_db_type(connection)})"
            for field in fields
        ]
    else:
        slots = [columns.get(field.name) or "%s" for field in fields]
    row = "(" + ", ".join(slots) + ")"
    values = f"VALUES {', '.join([row] * rows)}"
    if only_if:
        values = (
            f"SELECT * FROM ({values}) AS new_rows "
            f"WHERE EXISTS (SELECT 1 FROM {only_if})"
        )
    return (
        f"INSERT INTO {quote(meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"{values} RETURNING {quote(meta.pk.column)}"
    )


def _saved(obj: models.Model, pk, connection) -> None:
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias


def _event(
    order: Order,
    values: dict,
    event_type: str,
    detail: str,
    now: datetime,
    *,
    duration_ms: int | None = None,
    step: str = "",
) -> OrderEvent:
    """The event of a move of `order` that writes `values`: it records the
    order as the move leaves it."""

    def after(name: str):
        return values[name] if name in values else getattr(order, name)

    status = after("status")
    return OrderEvent(
        order=order,
        type=event_type,
        status=status,
        attempt=after("attempts"),
        detail=detail,
        step=step,
        next_attempt_at=after("next_attempt_at") if status == Status.RETRYING else None,
        duration_ms=duration_ms,
        at=now,
    )
