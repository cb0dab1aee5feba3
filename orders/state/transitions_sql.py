"""The moves written as raw SQL: UPDATE … RETURNING, and on PostgreSQL one
statement per batch of moves, bound and prepared on the server. The same writes
as transitions_orm, which the tests compare it with; transitions.WRITERS says
which of the two production uses for each write, and
docs/decisions/0001-raw-sql-for-moves.md why.

The statements are written out rather than built by QuerySet.update() and
Model.save(), whose query compiler costs more CPU than the database spends
running them; the values still go through each field's own get_db_prep_save(),
and the rows read back through the ORM's own converters.
"""

import contextlib
import functools

import psycopg
from django.db import connections, models, transaction

from orders.models import Order
from orders.state.transitions_orm import RETURNED, rows_by_model

Status = Order.Status


def apply(connection, moves) -> dict:
    """Write `moves` (transitions.Move, of distinct orders): for each, the
    UPDATE conditional on the status and version its order was read with, and
    the rows written with it. Returns {order pk: new version} of the orders
    moved.

    On PostgreSQL the moves that write the same fields are one statement (the
    inserts are data-modifying WITH queries that take only the rows of the
    orders that moved): one round trip, outside a caller's transaction its own,
    for one order or a worker's whole batch."""
    if connection.vendor == "postgresql":
        groups: dict[tuple, list] = {}
        for move in moves:
            groups.setdefault(tuple(move.values), []).append(move)
        written = atomic() if len(groups) > 1 else contextlib.nullcontext()
        with written:
            moved = {}
            for group in groups.values():
                moved.update(_apply_in_one_statement(connection, group))
        return moved
    with atomic():
        moved = {}
        for move in moves:
            where = {"status": move.order.status, "version": move.order.version}
            returned = _update_order(connection, move.order, move.values, where)
            if returned is not None:
                moved[move.order.pk] = returned["version"]
        for objs in rows_by_model(
            [move for move in moves if move.order.pk in moved]
        ).values():
            insert(connection, objs)
    return moved


def bump(connection, order: Order, values: dict) -> dict:
    """Version + 1 and `values` on the order's row, whatever it holds. Returns
    the fields of RETURNED as the row now has them."""
    return _update_order(connection, order, values, {})


def atomic():
    """A transaction, or, inside a caller's, no savepoint: an error here always
    propagates and dooms the caller's transaction anyway, and a savepoint costs
    two more statements (round trips on PostgreSQL) per move."""
    return transaction.atomic(savepoint=False)


def order_from_row(connection, row) -> Order:
    fields = Order._meta.concrete_fields
    return Order.from_db(
        connection.alias,
        [field.attname for field in fields],
        [
            from_db(field, value, connection)
            for field, value in zip(fields, row, strict=True)
        ],
    )


def _apply_in_one_statement(connection, moves: list) -> dict:
    """The UPDATE … FROM unnest(…) of `moves`, which set the same fields, and
    their rows. Returns {order pk: new version} for the orders moved.

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
    by_model = rows_by_model(moves)
    for index, (model, objs) in enumerate(by_model.items()):
        insert_sql, insert_params = _insert_sql(connection, objs, only_if="moved")
        queries.append(f"inserted_{index} AS ({insert_sql})")
        params.extend(insert_params)
        row_pk = quote(model._meta.pk.column)
        fk = quote(order_key(model).column)
        arrays.append(
            f"ARRAY(SELECT {row_pk} FROM inserted_{index} "
            f"WHERE inserted_{index}.{fk} = moved.{pk} ORDER BY {row_pk})"
        )
    selected = ", ".join(["moved.*", *arrays])
    sql = f"WITH {', '.join(queries)} SELECT {selected} FROM moved"
    with bound_cursor(connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        rows = cursor.fetchall()
    by_pk = {move.order.pk: move for move in moves}
    moved = {}
    for row in rows:
        move = by_pk[row[0]]
        moved[row[0]] = _returned(connection, row[1 : 1 + len(RETURNED)])["version"]
        own = rows_by_model([move])
        for model, ids in zip(by_model, row[1 + len(RETURNED) :], strict=True):
            for obj, row_pk in zip(own.get(model, []), ids, strict=True):
                saved(obj, row_pk, connection)
    return moved


def cast_slot(connection, field) -> str:
    return f"CAST(%s AS {field.cast_db_type(connection)})"


def _array_slot(connection, field) -> str:
    """A parameter that is an array of the field's values."""
    return f"CAST(%b AS {field.cast_db_type(connection)}[])"


def order_key(model):
    """The field of `model` that points at its order."""
    return next(
        field
        for field in model._meta.concrete_fields
        if field.is_relation and field.related_model is Order
    )


@contextlib.contextmanager
def bound_cursor(connection):
    """PostgreSQL: a cursor that sends the parameters apart from the statement
    (server-side binding), for the statements a worker runs for every task and batch.
    Django's own cursors bind on the client: psycopg quotes every value into the
    text, and PostgreSQL parses and plans each statement anew, which for a batch
    claim costs more than its work (docs/decisions/0001-raw-sql-for-moves.md).
    Bound and executed with prepare=True (Django turns psycopg's automatic
    preparing off), a statement is parsed and planned once per connection.
    Errors are Django's, as from its cursors."""
    with connection.cursor() as django_cursor:
        cursor = psycopg.Cursor(django_cursor.cursor.connection)
        try:
            with connection.wrap_database_errors:
                yield cursor
        finally:
            cursor.close()


def _update_order(connection, order: Order, values: dict, where: dict) -> dict | None:
    """UPDATE the order's row: version + 1 and `values`, if it still matches
    `where` (field: value). Returns the fields of RETURNED as the row now has
    them, or None if no row matched."""
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
        field.name: from_db(field, value, connection)
        for field, value in zip(returned, row, strict=True)
    }


def from_db(field, value, connection):
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


def insert(connection, objs: list[models.Model]) -> None:
    """INSERT new objects of one model in one statement; each gets its id."""
    sql, params = _insert_sql(connection, objs)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Ids grow in the order the rows were inserted, whatever the order
        # RETURNING hands them back in.
        ids = sorted(row[0] for row in cursor.fetchall())
    for obj, pk in zip(objs, ids, strict=True):
        saved(obj, pk, connection)


def _insert_sql(connection, objs, *, only_if: str = ""):
    """The INSERT … RETURNING id of `objs`. `only_if` names a WITH query that
    returns order ids: only the rows of those orders are inserted (and their
    order is returned too); their values come as one array per column."""
    model = type(objs[0])
    fields = insert_fields(model)
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


def insert_fields(model) -> list:
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
    fields = insert_fields(model)
    columns = ", ".join(quote(field.column) for field in fields)
    returning = quote(meta.pk.column)
    if only_if:
        key_column = quote(order_key(model).column)
        order_pk = quote(Order._meta.pk.column)
        arrays = ", ".join(_array_slot(connection, field) for field in fields)
        # WITH ORDINALITY: ids are given in the arrays' order.
        values = (
            f"SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS new_rows ({columns}, position) "
            f"WHERE new_rows.{key_column} IN (SELECT {order_pk} FROM {only_if}) "
            f"ORDER BY position"
        )
        returning += f", {key_column}"
    else:
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        values = f"VALUES {', '.join([row] * rows)}"
    return (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) {values} RETURNING {returning}"
    )


def saved(obj: models.Model, pk, connection) -> None:
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias
