"""The claims written as raw SQL (see transitions_sql): one UPDATE … RETURNING
for an order, and for a batch on PostgreSQL one statement that claims, writes
the events and reads the asked-for order."""

import functools
from datetime import timedelta

from django.db import connections

from orders.models import Order, OrderEvent
from orders.state.transitions_orm import processing_event
from orders.state.transitions_sql import (
    atomic,
    bound_cursor,
    cast_slot,
    insert,
    insert_fields,
    order_from_row,
    order_key,
    saved,
)

Status = Order.Status


def claim(connection, order_id: str, *, sources, lease_seconds, now) -> Order | None:
    """The claim's UPDATE … RETURNING of the order with this id, if its status
    is one of `sources` and no retry is due after `now`: the claim is the
    order's read too. Returns the claimed order, fresh from the row."""
    quote = connection.ops.quote_name
    sql, params = claim_sql(
        connection,
        f"{quote(Order._meta.get_field('order_id').column)} = %s",
        [order_id],
        lease_seconds,
        now,
        sources=sources,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else order_from_row(connection, row)


def claim_sql(
    connection, selection, selection_params, lease_seconds, now, *, sources=()
):
    """The claim's UPDATE … RETURNING every column of the order, of the rows
    `selection` (SQL) picks among those whose status is one of `sources` and
    that have no retry due after `now`; with no `sources`, the rows it picks
    were checked and locked already (a batch's candidates)."""
    quote = connection.ops.quote_name
    meta = Order._meta

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    def prepared(name: str, value):
        return meta.get_field(name).get_db_prep_save(value, connection)

    due, due_params = due_sql(connection, now)
    lease, lease_params = lease_end_sql(connection, lease_seconds)
    condition, condition_params = "", []
    if sources:
        condition = (
            f" AND {column('status')} IN ({', '.join(['%s'] * len(sources))}) AND {due}"
        )
        condition_params = [*sources, *due_params]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        f"{column('version')} = {column('version')} + 1, "
        f"{column('attempts')} = {column('attempts')} + 1, "
        f"{column('status')} = %s, {column('updated_at')} = %s, "
        f"{column('lease_expires_at')} = {lease}, {column('next_attempt_at')} = NULL, "
        f"{column('dispatch_due_at')} = NULL "
        f"WHERE {selection}{condition} "
        f"RETURNING {', '.join(quote(field.column) for field in meta.concrete_fields)}"
    )
    params = [
        Status.PROCESSING,
        prepared("updated_at", now),
        *lease_params,
        *selection_params,
        *condition_params,
    ]
    return sql, params


def lease_end_sql(connection, lease_seconds):
    """transitions_orm.lease_end() as SQL: `lease_seconds` after the database's
    clock says now, read as Django's Now() reads it (SQLite's text to the
    millisecond, which sorts with Django's own; PostgreSQL's statement time)."""
    if connection.vendor == "postgresql":
        return "STATEMENT_TIMESTAMP() + %s", [
            None if lease_seconds is None else timedelta(seconds=lease_seconds)
        ]
    return "STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', %s)", [
        None if lease_seconds is None else f"{lease_seconds:+f} seconds"
    ]


def due_sql(connection, now):
    """No retry due later than `now`."""
    field = Order._meta.get_field("next_attempt_at")
    column = connection.ops.quote_name(field.column)
    return (
        f"({column} IS NULL OR {column} <= %s)",
        [field.get_db_prep_save(now, connection)],
    )


def holds_sql(connection, values: dict):
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


def claim_batch(
    connection,
    order_id: str,
    *,
    like: dict,
    companions: int,
    companions_like: dict,
    sources,
    lease_seconds,
    event: OrderEvent,
    now,
) -> tuple[list[Order], Order | None]:
    """transitions.claim_batch()'s claim and events: the orders claimed (the
    asked-for one first), and the asked-for order as it was found when it was
    not claimed. On PostgreSQL one statement: a worker draining a backlog pays
    one round trip for a batch of orders, or for finding that another worker
    took its order along already."""
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
            lease_seconds,
            event,
            now,
        )
        return _claim_batch_in_one_statement(connection, order_id, sql, params, event)
    candidates = _candidates_sql(
        connection, order_id, like, companions, companions_like, now
    )
    return _claim_batch_in_a_transaction(
        connection, order_id, candidates, sources, lease_seconds, event, now
    )


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
    due, due_params = due_sql(connection, now)
    like_sql, like_params = holds_sql(connection, like)
    others_sql, others_params = holds_sql(connection, {**like, **companions_like})
    # An asked-for order that is no companion itself (a plan that may hold its
    # worker) takes none along: its id is then NULL, and no id is greater.
    alone_sql, alone_params = holds_sql(connection, companions_like)
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
    update_sql, _params = claim_sql(
        connection, f"{pk} IN (SELECT {pk} FROM candidates)", [], None, None
    )
    event_pk = quote(OrderEvent._meta.pk.column)
    order_fk = quote(OrderEvent._meta.get_field("order").column)
    insert_sql, _params = _insert_select_sql(
        connection, OrderEvent(), "claimed", {"order": f"claimed.{pk}"}
    )
    columns = [quote(field.column) for field in meta.concrete_fields]
    return (
        f"WITH candidates AS ({candidates_sql}), claimed AS ({update_sql}), "
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
    lease_seconds,
    event,
    now,
) -> list:
    """The parameters of _claim_batch_statement(), in the order of its text:
    the candidates (_candidates_sql), the claim (claim_sql), the events
    (_insert_select_sql) and the asked-for order."""
    meta = Order._meta

    def prepared(name: str, value):
        return meta.get_field(name).get_db_prep_save(value, connection)

    due = prepared("next_attempt_at", now)
    _lease, lease_params = lease_end_sql(connection, lease_seconds)
    holds = [prepared(name, value) for name, value in like.items()]
    alone = [prepared(name, value) for name, value in companions_like.items()]
    others = [
        prepared(name, value) for name, value in {**like, **companions_like}.items()
    ]
    event_values = [
        field.get_db_prep_save(field.pre_save(event, add=True), connection)
        for field in insert_fields(OrderEvent)
        if field.name != "order"
    ]
    return [
        *[order_id, due, *holds, order_id, *alone, due, *others, companions],
        Status.PROCESSING,
        prepared("updated_at", now),
        *lease_params,
        *event_values,
        order_id,
    ]


def _claim_batch_in_one_statement(connection, order_id, sql, params, event):
    with bound_cursor(connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        rows = cursor.fetchall()
    orders, asked = [], None
    for row in rows:
        order = order_from_row(connection, row[:-1])
        if row[-1] is None:
            asked = order
            continue
        saved(processing_event(order, event), row[-1], connection)
        orders.append(order)
    orders.sort(key=lambda order: (order.order_id != order_id, order.pk))
    return orders, asked


def _claim_batch_in_a_transaction(
    connection, order_id, candidates, sources, lease_seconds, event, now
):
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
        update_sql, update_params = claim_sql(
            connection,
            f"{pk} IN ({candidates_sql})",
            candidates_params,
            lease_seconds,
            now,
            sources=sources,
        )
        with atomic():
            with connection.cursor() as cursor:
                cursor.execute(update_sql, update_params)
                rows = cursor.fetchall()
            orders = sorted(
                (order_from_row(connection, row) for row in rows),
                key=lambda order: (order.order_id != order_id, order.pk),
            )
            if orders:
                insert(connection, [processing_event(order, event) for order in orders])
    asked = None
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
        asked = order_from_row(connection, row) if row else None
    return orders, asked


def _insert_select_sql(connection, obj, source: str, columns: dict):
    """INSERT … SELECT: a row like `obj` for each row of the WITH query
    `source`, with SQL instead of `obj`'s values for the fields in `columns`
    (by name). RETURNING the new row's id and its order."""
    model = type(obj)
    quote = connection.ops.quote_name
    fields = insert_fields(model)
    slots, params = [], []
    for field in fields:
        if field.name in columns:
            slots.append(columns[field.name])
        else:
            slots.append(cast_slot(connection, field))
            params.append(
                field.get_db_prep_save(field.pre_save(obj, add=True), connection)
            )
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} "
        f"({', '.join(quote(field.column) for field in fields)}) "
        f"SELECT {', '.join(slots)} FROM {source} "
        f"RETURNING {quote(model._meta.pk.column)}, {quote(order_key(model).column)}"
    )
    return sql, params
