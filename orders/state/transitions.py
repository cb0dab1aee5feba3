"""The order state machine: the table of allowed moves and the one function that
makes them. No other code writes Order.status."""

import contextlib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from django.db import connections, models, router, transaction
from django.utils import timezone

from orders.exceptions import InvalidTransition
from orders.models import Order, OrderEvent
from orders.state import notify

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


# The statuses a claim moves to PROCESSING.
CLAIM_SOURCES = tuple(
    status for status in TRANSITIONS if is_allowed(status, Status.PROCESSING)
)


def may_be_claimed(order: Order, now: datetime) -> bool:
    """What claim() checks in the row: a status that may move to PROCESSING,
    and no retry due later than `now`."""
    return is_allowed(order.status, Status.PROCESSING) and (
        order.next_attempt_at is None or order.next_attempt_at <= now
    )


@dataclass
class Move:
    """One order's planned change: the values its row gets, and the new rows
    written with it (lists of objects, one model each). Made by
    plan_transition() or plan_step(), written by apply()."""

    order: Order
    values: dict
    rows: list[list[models.Model]]


def transition(order: Order, to_status: str, **options) -> bool:
    """Move `order` to `to_status` and write its event(s), and any rows the move
    `creates` (the delivery of a completed order), in one transaction.

    The UPDATE is conditional on the status and version this object was read with,
    so two workers (or one duplicate delivery) racing for the same move produce one
    move and one event; the loser gets False and the database is unchanged. On
    success the object is updated in place and True is returned. The options
    are plan_transition()'s.
    """
    return apply([plan_transition(order, to_status, **options)])[0]


def plan_transition(
    order: Order,
    to_status: str,
    *,
    detail: str = "",
    changes: dict | None = None,
    preceding: Iterable[PrecedingEvent] = (),
    duration_ms: int | None = None,
    now: datetime | None = None,
    creates: Iterable[models.Model] = (),
) -> Move:
    """The move of `order` to `to_status`, checked against the table, with its
    event, the `preceding` events and the rows it `creates`; nothing is written
    until apply()."""
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
    return Move(order, values, [events, list(creates)])


def record_step(order: Order, **checkpoint) -> bool:
    """A step's checkpoint: the order's changes (its `steps`) and an
    order.step_completed event, in one transaction, while the order is still
    PROCESSING at the version this worker read. A worker whose lease was taken
    over records nothing and gets False; the status does not change."""
    return apply([plan_step(order, **checkpoint)])[0]


def plan_step(
    order: Order, *, step: str, detail: str, changes: dict, now: datetime | None = None
) -> Move:
    """record_step()'s checkpoint, to apply() with others."""
    if order.status != Status.PROCESSING:
        raise InvalidTransition(order.status, order.status)
    now = now or timezone.now()
    values = {"status": order.status, "updated_at": now, **changes}
    event = _event(order, values, EventType.STEP_COMPLETED, detail, now, step=step)
    return Move(order, values, [[event]])


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
    connection = connections[router.db_for_write(Order)]
    quote = connection.ops.quote_name
    sql, params = _claim_sql(
        connection,
        f"{quote(Order._meta.get_field('order_id').column)} = %s",
        [order_id],
        lease_expires_at,
        now,
    )
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


@dataclass
class Claimed:
    """What claim_batch() did: the orders it claimed (the one asked for first,
    if it was claimed), and the asked-for order as it found it when it did not
    claim it (None if there is no such order)."""

    orders: list[Order]
    asked: Order | None = None


def claim_batch(
    order_id: str,
    *,
    like: dict,
    companions: int,
    companions_like: dict,
    lease_expires_at: datetime,
    describe: Callable[[Order], str],
    now: datetime | None = None,
) -> Claimed:
    """Claim, as claim() does, the order with this id if its row holds `like`,
    and with it up to `companions` other PENDING orders that hold `like` and
    `companions_like` (oldest first; on PostgreSQL, none that another worker is
    claiming at this moment), in one transaction.

    `like` pins the attempt a claim starts (attempts, max_attempts, steps), so
    every order claimed here gets the same order.processing detail,
    `describe()` of the row as the claim leaves it. On PostgreSQL the whole
    claim, its events and the read of an order it did not claim are one
    statement: a worker draining a backlog pays one round trip for a batch of
    orders, or for finding that another worker took its order along already.
    An order that does not hold `like` (a retry, an attempt that resumes) is
    not claimed here; the caller claims it with claim().
    """
    now = now or timezone.now()
    connection = connections[router.db_for_write(Order)]
    template = Order(**like)
    template.attempts = like["attempts"] + 1
    template.status = Status.PROCESSING
    event = _event(template, {}, EventType.PROCESSING, describe(template), now)
    if connection.vendor == "postgresql":
        sql = _claim_batch_statement(
            connection.alias, tuple(like), tuple(companions_like)
        )
        params = _claim_batch_params(
            connection,
            order_id,
            like,
            companions,
            companions_like,
            lease_expires_at,
            event,
            now,
        )
        claimed = _claim_batch_in_one_statement(
            connection, order_id, sql, params, event
        )
    else:
        candidates = _candidates_sql(
            connection, order_id, like, companions, companions_like, now
        )
        claimed = _claim_batch_in_a_transaction(
            connection, order_id, candidates, lease_expires_at, event, now
        )
    if claimed.orders:
        notify.events_written(connection.alias)
    return claimed


def _candidates_sql(connection, order_id, like, companions, companions_like, now):
    """The ids a batch claims: the asked-for order if it holds `like`, then up
    to `companions` of the PENDING orders placed after it (whose tasks wait
    behind its own), oldest first. A partial index, order_pending_idx, holds
    just the PENDING orders; read from the asked-for order's id on, a scan
    passes few of the entries that orders claimed since have left in it until
    a vacuum (read from the start, it passed every one: a cost that grew with
    the backlog)."""
    quote = connection.ops.quote_name
    meta = Order._meta
    locking = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    order_column = quote(meta.get_field("order_id").column)
    # A literal, so that the planner can use the partial index.
    pending = f"{quote(meta.get_field('status').column)} = '{Status.PENDING}'"
    due, due_params = _due_sql(connection, now)
    like_sql, like_params = _holds_sql(connection, like)
    others_sql, others_params = _holds_sql(connection, {**like, **companions_like})
    # An asked-for order that is no companion itself (a plan that may hold its
    # worker) takes none along: its id is then NULL, and no id is greater.
    alone_sql, alone_params = _holds_sql(connection, companions_like)
    sql = (
        f"SELECT {pk} FROM (SELECT {pk} FROM {table} WHERE {order_column} = %s "
        f"AND {pending} AND {due} AND {like_sql}{locking}) AS asked "
        f"UNION ALL SELECT {pk} FROM (SELECT {pk} FROM {table} "
        f"WHERE {pk} > (SELECT {pk} FROM {table} WHERE {order_column} = %s "
        f"AND {alone_sql}) "
        f"AND {pending} AND {due} AND {others_sql} "
        f"ORDER BY {pk} LIMIT %s{locking}) AS companions"
    )
    params = [
        order_id,
        *due_params,
        *like_params,
        order_id,
        *alone_params,
        *due_params,
        *others_params,
        companions,
    ]
    return sql, params


@functools.lru_cache(maxsize=16)
def _claim_batch_statement(alias: str, like: tuple, companions_like: tuple) -> str:
    """PostgreSQL: the text of a batch claim (its parameters are
    _claim_batch_params()), the same for every claim with these field names, so
    built once: a worker runs it for every task."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = Order._meta
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    order_column = quote(meta.get_field("order_id").column)
    candidates_sql, _params = _candidates_sql(
        connection, "", dict.fromkeys(like), 0, dict.fromkeys(companions_like), None
    )
    claim_sql, _params = _claim_sql(
        connection,
        f"{pk} IN (SELECT {pk} FROM candidates)",
        [],
        None,
        None,
        checked=True,
    )
    event_pk = quote(OrderEvent._meta.pk.column)
    order_fk = quote(OrderEvent._meta.get_field("order").column)
    insert_sql, _params = _insert_select_sql(
        connection, OrderEvent(), "claimed", {"order": f"claimed.{pk}"}
    )
    columns = [quote(field.column) for field in meta.concrete_fields]
    return (
        f"WITH candidates AS ({candidates_sql}), claimed AS ({claim_sql}), "
        f"inserted AS ({insert_sql}) "
        f"SELECT {', '.join(f'claimed.{column}' for column in columns)}, "
        f"inserted.{event_pk} FROM claimed "
        f"JOIN inserted ON inserted.{order_fk} = claimed.{pk} "
        # The asked-for order as it was, when this statement did not claim it.
        f"UNION ALL SELECT {', '.join(columns)}, NULL FROM {table} "
        f"WHERE {order_column} = %s AND {pk} NOT IN (SELECT {pk} FROM candidates)"
    )


def _claim_batch_params(
    connection,
    order_id,
    like,
    companions,
    companions_like,
    lease_expires_at,
    event,
    now,
) -> list:
    """The parameters of _claim_batch_statement(), in the order of its text:
    the candidates (_candidates_sql), the claim (_claim_sql), the events
    (_insert_select_sql) and the asked-for order."""
    meta = Order._meta

    def prepared(name: str, value):
        return meta.get_field(name).get_db_prep_save(value, connection)

    due = prepared("next_attempt_at", now)
    holds = [prepared(name, value) for name, value in like.items()]
    alone = [prepared(name, value) for name, value in companions_like.items()]
    others = [
        prepared(name, value) for name, value in {**like, **companions_like}.items()
    ]
    event_values = [
        field.get_db_prep_save(field.pre_save(event, add=True), connection)
        for field in _insert_fields(OrderEvent)
        if field.name != "order"
    ]
    return [
        *[order_id, due, *holds, order_id, *alone, due, *others, companions],
        Status.PROCESSING,
        prepared("updated_at", now),
        prepared("lease_expires_at", lease_expires_at),
        *event_values,
        order_id,
    ]


def _claim_batch_in_one_statement(connection, order_id, sql, params, event) -> Claimed:
    with _bound_cursor(connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        rows = cursor.fetchall()
    claimed = Claimed(orders=[])
    for row in rows:
        order = _order_from_row(connection, row[:-1])
        if row[-1] is None:
            claimed.asked = order
            continue
        _saved(_processing_event(order, event), row[-1], connection)
        claimed.orders.append(order)
    claimed.orders.sort(key=lambda order: (order.order_id != order_id, order.pk))
    return claimed


def _claim_batch_in_a_transaction(
    connection, order_id, candidates, lease_expires_at, event, now
) -> Claimed:
    """SQLite: a read first, and the write transaction only if it found orders
    to claim. SQLite has one write lock for every process (the workers, and the
    ORM broker's pusher and monitor): a task whose order was taken along
    already, the common case under a backlog, takes no part in it."""
    quote = connection.ops.quote_name
    meta = Order._meta
    pk = quote(meta.pk.column)
    candidates_sql, candidates_params = candidates
    orders = []
    with connection.cursor() as cursor:
        cursor.execute(candidates_sql, candidates_params)
        found = cursor.fetchall()
    if found:
        # The same selection again inside the transaction: what another
        # worker claimed since the read is no longer a candidate.
        claim_sql, claim_params = _claim_sql(
            connection,
            f"{pk} IN ({candidates_sql})",
            candidates_params,
            lease_expires_at,
            now,
        )
        with _atomic():
            with connection.cursor() as cursor:
                cursor.execute(claim_sql, claim_params)
                rows = cursor.fetchall()
            orders = sorted(
                (_order_from_row(connection, row) for row in rows),
                key=lambda order: (order.order_id != order_id, order.pk),
            )
            if orders:
                _insert([_processing_event(order, event) for order in orders])
    claimed = Claimed(orders=orders)
    if not orders or orders[0].order_id != order_id:
        columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
        order_column = quote(meta.get_field("order_id").column)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {columns} FROM {quote(meta.db_table)} "
                f"WHERE {order_column} = %s",
                [order_id],
            )
            row = cursor.fetchone()
        claimed.asked = _order_from_row(connection, row) if row else None
    return claimed


def _claim_sql(
    connection, selection, selection_params, lease_expires_at, now, *, checked=False
):
    """The claim's UPDATE … RETURNING every column of the order, of the rows
    `selection` (SQL) picks among those that may be claimed now; `checked`:
    the rows it picks were checked and locked already (a batch's
    candidates)."""
    sources = CLAIM_SOURCES
    quote = connection.ops.quote_name
    meta = Order._meta

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    def prepared(name: str, value):
        return meta.get_field(name).get_db_prep_save(value, connection)

    due, due_params = _due_sql(connection, now)
    condition, condition_params = "", []
    if not checked:
        condition = (
            f" AND {column('status')} IN ({', '.join(['%s'] * len(sources))}) AND {due}"
        )
        condition_params = [*sources, *due_params]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        f"{column('version')} = {column('version')} + 1, "
        f"{column('attempts')} = {column('attempts')} + 1, "
        f"{column('status')} = %s, {column('updated_at')} = %s, "
        f"{column('lease_expires_at')} = %s, {column('next_attempt_at')} = NULL, "
        f"{column('dispatch_due_at')} = NULL "
        f"WHERE {selection}{condition} "
        f"RETURNING {', '.join(quote(field.column) for field in meta.concrete_fields)}"
    )
    params = [
        Status.PROCESSING,
        prepared("updated_at", now),
        prepared("lease_expires_at", lease_expires_at),
        *selection_params,
        *condition_params,
    ]
    return sql, params


def _due_sql(connection, now):
    """No retry due later than `now`."""
    field = Order._meta.get_field("next_attempt_at")
    column = connection.ops.quote_name(field.column)
    return (
        f"({column} IS NULL OR {column} <= %s)",
        [field.get_db_prep_save(now, connection)],
    )


def _holds_sql(connection, values: dict):
    """The row holds these values (field name: value)."""
    meta = Order._meta
    conditions, params = [], []
    for name, value in values.items():
        field = meta.get_field(name)
        conditions.append(
            f"{connection.ops.quote_name(field.column)} = "
            f"CAST(%s AS {field.cast_db_type(connection)})"
        )
        params.append(field.get_db_prep_save(value, connection))
    return " AND ".join(conditions), params


def _processing_event(order: Order, template: OrderEvent) -> OrderEvent:
    """A batch claim's order.processing event of `order`, as `template` says."""
    return OrderEvent(
        order=order,
        type=template.type,
        status=template.status,
        attempt=template.attempt,
        detail=template.detail,
        at=template.at,
    )


def _insert_select_sql(connection, obj, source: str, columns: dict):
    """INSERT … SELECT: a row like `obj` for each row of the WITH query
    `source`, with SQL instead of `obj`'s values for the fields in `columns`
    (by name). RETURNING the new row's id and its order."""
    model = type(obj)
    quote = connection.ops.quote_name
    fields = _insert_fields(model)
    slots, params = [], []
    for field in fields:
        if field.name in columns:
            slots.append(columns[field.name])
        else:
            slots.append(_cast_slot(connection, field))
            params.append(
                field.get_db_prep_save(field.pre_save(obj, add=True), connection)
            )
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT {', '.join(slots)} FROM {source} "
        f"RETURNING {quote(model._meta.pk.column)}, {quote(_order_key(model).column)}"
    )
    return sql, params


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


def apply(moves: list[Move]) -> list[bool]:
    """Write `moves` (of distinct orders) in one transaction: for each, the
    conditional UPDATE every move shares and the rows written with it, all or
    nothing for that order. Returns, move by move, whether it was written.

    Each UPDATE matches only the status and version its order was read with, so
    of two racing writers one wins, and a move that loses changes nothing while
    the others are written. On PostgreSQL the moves that write the same fields
    are one statement (the inserts are data-modifying WITH queries that take
    only the rows of the orders that moved): one round trip, outside a caller's
    transaction its own, for one order or a worker's whole batch. A written
    move's order is updated in place.
    """
    if not moves:
        return []
    if len({move.order.pk for move in moves}) != len(moves):
        raise ValueError("apply() takes at most one move per order")
    connection = connections[router.db_for_write(Order)]
    if connection.vendor == "postgresql":
        groups: dict[tuple, list[Move]] = {}
        for move in moves:
            groups.setdefault(tuple(move.values), []).append(move)
        atomic = _atomic() if len(groups) > 1 else contextlib.nullcontext()
        with atomic:
            moved = {}
            for group in groups.values():
                moved.update(_apply_in_one_statement(connection, group))
    else:
        with _atomic():
            moved = {}
            for move in moves:
                where = {"status": move.order.status, "version": move.order.version}
                returned = _update_order(move.order, move.values, **where)
                if returned is not None:
                    moved[move.order.pk] = returned
            for objs in _rows_by_model(
                [move for move in moves if move.order.pk in moved]
            ).values():
                _insert(objs)
    results = []
    for move in moves:
        returned = moved.get(move.order.pk)
        results.append(returned is not None)
        if returned is not None:
            for name, value in move.values.items():
                setattr(move.order, name, value)
            move.order.version = returned["version"]
    if moved:
        # Every move writes at least its own event.
        notify.events_written(connection.alias)
    return results


def _rows_by_model(moves: list[Move]) -> dict:
    """The new rows of `moves`, one list per model, in the moves' order."""
    by_model: dict = {}
    for move in moves:
        for group in move.rows:
            if group:
                by_model.setdefault(type(group[0]), []).extend(group)
    return by_model


def _apply_in_one_statement(connection, moves: list[Move]) -> dict:
    """The UPDATE … FROM unnest(…) of `moves`, which set the same fields, and
    their rows. Returns {order pk: RETURNED of the row} for the orders moved.

    The values come as one array per column, so the statement's text is the
    same for any number of orders: psycopg converts it once (it parses every
    statement longer than 4 KiB again at each call) and PostgreSQL's plan for
    it stays the same."""
    quote = connection.ops.quote_name
    meta = Order._meta
    pk = quote(meta.pk.column)
    fields = [meta.get_field(name) for name in moves[0].values]
    keys = [meta.pk, meta.get_field("status"), meta.get_field("version")]
    aliases = ["moved_pk", "was_status", "was_version"] + [
        f"new_{index}" for index in range(len(fields))
    ]
    arrays_in = ", ".join(_array_slot(connection, field) for field in keys + fields)
    params = [
        [move.order.pk for move in moves],
        [move.order.status for move in moves],
        [move.order.version for move in moves],
    ] + [
        [field.get_db_prep_save(move.values[field.name], connection) for move in moves]
        for field in fields
    ]
    version = quote(meta.get_field("version").column)
    status = quote(meta.get_field("status").column)
    assignments = [f"{version} = o.{version} + 1"] + [
        f"{quote(field.column)} = v.new_{index}" for index, field in enumerate(fields)
    ]
    returned = [quote(meta.get_field(name).column) for name in RETURNED]
    update_sql = (
        f"UPDATE {quote(meta.db_table)} AS o SET {', '.join(assignments)} "
        f"FROM unnest({arrays_in}) AS v ({', '.join(aliases)}) "
        f"WHERE o.{pk} = v.moved_pk AND o.{status} = v.was_status "
        f"AND o.{version} = v.was_version "
        f"RETURNING o.{pk}, {', '.join(f'o.{column}' for column in returned)}"
    )
    queries, arrays = [f"moved AS ({update_sql})"], []
    by_model = _rows_by_model(moves)
    for index, (model, objs) in enumerate(by_model.items()):
        insert_sql, insert_params = _insert_sql(connection, objs, only_if="moved")
        queries.append(f"inserted_{index} AS ({insert_sql})")
        params.extend(insert_params)
        row_pk = quote(model._meta.pk.column)
        fk = quote(_order_key(model).column)
        arrays.append(
            f"ARRAY(SELECT {row_pk} FROM inserted_{index} "
            f"WHERE inserted_{index}.{fk} = moved.{pk} ORDER BY {row_pk})"
        )
    selected = ", ".join(["moved.*", *arrays])
    sql = f"WITH {', '.join(queries)} SELECT {selected} FROM moved"
    with _bound_cursor(connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        rows = cursor.fetchall()
    by_pk = {move.order.pk: move for move in moves}
    moved = {}
    for row in rows:
        move = by_pk[row[0]]
        moved[row[0]] = _returned(connection, row[1 : 1 + len(RETURNED)])
        own = _rows_by_model([move])
        for model, ids in zip(by_model, row[1 + len(RETURNED) :], strict=True):
            for obj, row_pk in zip(own.get(model, []), ids, strict=True):
                _saved(obj, row_pk, connection)
    return moved


def _cast_slot(connection, field) -> str:
    return f"CAST(%s AS {field.cast_db_type(connection)})"


def _array_slot(connection, field) -> str:
    """A parameter that is an array of the field's values."""
    return f"CAST(%b AS {field.cast_db_type(connection)}[])"


def _order_key(model):
    """The field of `model` that points at its order."""
    return next(
        field
        for field in model._meta.concrete_fields
        if field.is_relation and field.related_model is Order
    )


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


@contextlib.contextmanager
def _bound_cursor(connection):
    """PostgreSQL: a cursor that sends the parameters apart from the statement
    (server-side binding), for the statements a worker runs for every task and
    batch. Django's own cursors bind on the client: psycopg quotes every value
    into the text (a tenth of a worker's CPU, profiled), and PostgreSQL parses
    and plans each statement anew (for a batch claim, 0.3 ms of planning for
    0.1 ms of work). Bound and executed with prepare=True (Django turns
    psycopg's automatic preparing off), a statement is parsed and planned once
    per connection. Errors are Django's, as from its cursors."""
    with connection.cursor() as django_cursor:
        cursor = psycopg.Cursor(django_cursor.cursor.connection)
        try:
            with connection.wrap_database_errors:
                yield cursor
        finally:
            cursor.close()


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
    column, converters = _converters(connection, field)
    for converter in converters:
        value = converter(value, column, connection)
    return value


def _converters(connection, field) -> tuple:
    """The column expression of `field` and the converters its values go
    through on this connection: the same for every row, so found once per
    connection (a batch reads 20 columns of up to 50 orders). Kept on the
    connection, not in a module cache, which would keep a request thread's
    connection alive."""
    cache = connection.__dict__.setdefault("_orders_converters", {})
    found = cache.get(field)
    if found is None:
        column = field.get_col(field.model._meta.db_table)
        converters = connection.ops.get_db_converters(column)
        found = cache[field] = (
            column,
            tuple(converters + column.get_db_converters(connection)),
        )
    return found


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


def _insert_sql(connection, objs, *, only_if: str = ""):
    """The INSERT … RETURNING id of `objs`. `only_if` names a WITH query that
    returns order ids: only the rows of those orders are inserted (and their
    order is returned too); their values come as one array per column."""
    model = type(objs[0])
    fields = _insert_fields(model)
    values = [
        [
            field.get_db_prep_save(field.pre_save(obj, add=True), connection)
            for obj in objs
        ]
        for field in fields
    ]
    if only_if:
        return _insert_statement(connection.alias, model, 0, only_if), values
    sql = _insert_statement(connection.alias, model, len(objs), only_if)
    return sql, [value for row in zip(*values, strict=True) for value in row]


def _insert_fields(model) -> list:
    return [field for field in model._meta.concrete_fields if not field.primary_key]


@functools.lru_cache(maxsize=64)
def _insert_statement(alias: str, model, rows: int, only_if: str) -> str:
    """The text of _insert_sql's statement: the same for every order, so built
    once (the column types it spells out cost more than the database's work).
    Keyed by the database's alias, not a thread's connection, which the cache
    would keep open."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    meta = model._meta
    fields = _insert_fields(model)
    columns = ", ".join(quote(field.column) for field in fields)
    returning = quote(meta.pk.column)
    if only_if:
        order_key = quote(_order_key(model).column)
        order_pk = quote(Order._meta.pk.column)
        arrays = ", ".join(_array_slot(connection, field) for field in fields)
        # WITH ORDINALITY: ids are given in the arrays' order.
        values = (
            f"SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS new_rows ({columns}, position) "
            f"WHERE new_rows.{order_key} IN (SELECT {order_pk} FROM {only_if}) "
            f"ORDER BY position"
        )
        returning += f", {order_key}"
    else:
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        values = f"VALUES {', '.join([row] * rows)}"
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) {values} RETURNING {returning}"
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
