"""The moves written through the ORM: the reference for the raw SQL of
transitions_sql and transitions_sql_claims, which must leave the same rows
(tests/test_transitions_sql.py), and what production uses wherever the SQL
does not pay (transitions.WRITERS).

Each function takes the same arguments and returns the same values as its
namesake in the SQL modules.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q, Subquery
from django.db.models.functions import Now

from orders.models import Order, OrderEvent

Status = Order.Status

# What bump() returns: what an event reads of the order, fresh from the row.
RETURNED = ("version", "status", "attempts", "next_attempt_at")


def apply(connection, moves) -> dict:
    """Write `moves` (transitions.Move, of distinct orders): for each, the
    UPDATE conditional on the status and version its order was read with, and
    the rows written with it. Returns {order pk: new version} of the orders
    moved."""
    orders = Order.objects.using(connection.alias)
    with _atomic(connection):
        moved = {}
        for move in moves:
            order = move.order
            updated = orders.filter(
                pk=order.pk, status=order.status, version=order.version
            ).update(version=F("version") + 1, **move.values)
            if updated:
                # The version matched: nothing else wrote the row since the read.
                moved[order.pk] = order.version + 1
        for model, objs in rows_by_model(
            [move for move in moves if move.order.pk in moved]
        ).items():
            model.objects.using(connection.alias).bulk_create(objs)
    return moved


def bump(connection, order: Order, values: dict) -> dict:
    """Version + 1 and `values` on the order's row, whatever it holds. Returns
    the fields of RETURNED as the row now has them."""
    rows = Order.objects.using(connection.alias).filter(pk=order.pk)
    with _atomic(connection):
        rows.update(version=F("version") + 1, **values)
        # The UPDATE holds the row until commit: this reads what it wrote.
        return rows.values(*RETURNED).get()


def insert(connection, objs: list) -> None:
    """INSERT new objects of one model in one statement; each gets its id."""
    type(objs[0]).objects.using(connection.alias).bulk_create(objs)


def claim(connection, order_id: str, *, sources, lease_seconds, now) -> Order | None:
    """The claim of the order with this id, if its status is one of `sources`
    and no retry is due after `now`. Returns the claimed order, fresh from the
    row."""
    orders = Order.objects.using(connection.alias)
    with _atomic(connection):
        updated = (
            orders.filter(order_id=order_id, status__in=sources)
            .filter(_due(now))
            .update(**_claim_values(lease_seconds, now))
        )
        if not updated:
            return None
        return orders.get(order_id=order_id)


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
    not claimed."""
    orders = Order.objects.using(connection.alias)
    pending = orders.filter(_due(now), status=Status.PENDING, **like)
    asked = pending.filter(order_id=order_id)
    # An asked-for order that is no companion itself takes none along.
    after = orders.filter(order_id=order_id, **companions_like).values("pk")
    behind = pending.filter(pk__gt=Subquery(after), **companions_like).order_by("pk")
    postgres = connection.vendor == "postgresql"
    if postgres:
        # Orders another worker is claiming at this moment are not candidates.
        asked = asked.select_for_update(skip_locked=True)
        behind = behind.select_for_update(skip_locked=True)

    def candidates() -> list:
        return [
            *asked.values_list("pk", flat=True),
            *behind[:companions].values_list("pk", flat=True),
        ]

    claimed: list[Order] = []
    # SQLite: a read first, and the write lock only if it found orders to claim.
    if postgres or candidates():
        with _atomic(connection):
            # Again inside the transaction: what another worker claimed since
            # the read is no longer a candidate.
            ids = candidates()
            if ids:
                orders.filter(pk__in=ids).update(**_claim_values(lease_seconds, now))
                claimed = sorted(
                    orders.filter(pk__in=ids),
                    key=lambda order: (order.order_id != order_id, order.pk),
                )
                insert(connection, [processing_event(o, event) for o in claimed])
    if claimed and claimed[0].order_id == order_id:
        return claimed, None
    return claimed, orders.filter(order_id=order_id).first()


def rows_by_model(moves) -> dict:
    """The new rows of `moves`, one list per model, in the moves' order."""
    by_model: dict = {}
    for move in moves:
        for group in move.rows:
            if group:
                by_model.setdefault(type(group[0]), []).extend(group)
    return by_model


def _claim_values(lease_seconds, now) -> dict:
    return {
        "version": F("version") + 1,
        "attempts": F("attempts") + 1,
        "status": Status.PROCESSING,
        "updated_at": now,
        "lease_expires_at": lease_end(lease_seconds),
        "next_attempt_at": None,
        "dispatch_due_at": None,
    }


def lease_end(lease_seconds: float):
    """The end of a lease that starts now by the database's clock, the clock
    the dispatcher expires leases by (transitions.claim)."""
    return Now() + timedelta(seconds=lease_seconds)


def _due(now) -> Q:
    """No retry due later than `now`."""
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def processing_event(order: Order, template: OrderEvent) -> OrderEvent:
    """A batch claim's order.processing event of `order`, as `template` says."""
    return OrderEvent(
        order=order,
        type=template.type,
        status=template.status,
        attempt=template.attempt,
        max_attempts=template.max_attempts,
        detail=template.detail,
        at=template.at,
    )


def _atomic(connection):
    """A transaction, or, inside a caller's, no savepoint (as the SQL's)."""
    return transaction.atomic(using=connection.alias, savepoint=False)
