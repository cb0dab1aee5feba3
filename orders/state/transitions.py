"""The order state machine: the table of allowed moves and the functions that
make them. No other code writes Order.status.

Every write is made by one of two implementations with the same functions:
transitions_sql (raw SQL) and transitions_orm (the ORM, the reference the tests
compare the SQL with). WRITERS says which one production uses for each write
on each database: the SQL only where `manage.py bench moves` shows it pays
(docs/decisions/0001-raw-sql-for-moves.md).
"""

import contextlib
import contextvars
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connections, models, router, transaction
from django.utils import timezone

from orders.exceptions import InvalidTransition
from orders.models import Order, OrderEvent
from orders.state import (
    notify,
    transitions_orm,
    transitions_sql,
    transitions_sql_claims,
)

Status = Order.Status
EventType = OrderEvent.Type

TRANSITIONS: dict[str, frozenset[str]] = {
    # Waiting for a worker: a claim moves it on.
    Status.PENDING: frozenset({Status.PROCESSING}),
    # A worker holds it and runs its steps; the attempt ends in one of these.
    Status.PROCESSING: frozenset({Status.COMPLETED, Status.RETRYING, Status.FAILED}),
    # An attempt failed transiently; the next is claimed when due, or the
    # order gives up (an operator's or the reaper's decision).
    Status.RETRYING: frozenset({Status.PROCESSING, Status.FAILED}),
    # Every step done: terminal.
    Status.COMPLETED: frozenset(),
    # Gave up; an operator's manual retry starts its attempts again from zero.
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
    cause: str = ""


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
    step: str = "",
    cause: str = "",
) -> Move:
    """The move of `order` to `to_status`, checked against the table, with its
    event (`step` and `cause` say where and why an attempt failed), the
    `preceding` events and the rows it `creates`; nothing is written until
    apply()."""
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
            cause=item.cause,
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
            step=step,
            cause=cause,
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
    lease_seconds: float,
    describe: Callable[[Order], str],
    now: datetime | None = None,
) -> Order | None:
    """Move the order with this id to PROCESSING if it may be claimed now (a
    status the table lets move there, and no retry due later), counting one
    attempt, and write its order.processing event (`describe(order)` is the
    detail) in the same transaction.

    The lease ends `lease_seconds` after the database's clock says now, the
    clock the dispatcher expires leases by (Django's Now()): a worker whose own
    clock is off cannot write a lease that another machine takes for expired
    while the attempt still runs.

    The claim is the order's read too, conditional on the status in the row,
    so a duplicate delivery or a racing worker gets None and the database is
    unchanged. Returns the claimed order, fresh from the row.
    """
    now = now or timezone.now()
    connection = _connection()
    writer = _writer(connection)
    with _atomic():
        order = writer.claim(
            connection,
            order_id,
            sources=CLAIM_SOURCES,
            lease_seconds=lease_seconds,
            now=now,
        )
        if order is None:
            return None
        event = _event(order, {}, EventType.PROCESSING, describe(order), now)
        writer.insert(connection, [event])
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
    lease_seconds: float,
    describe: Callable[[Order], str],
    now: datetime | None = None,
) -> Claimed:
    """Claim, as claim() does, the order with this id if its row holds `like`,
    and with it up to `companions` other PENDING orders that hold `like` and
    `companions_like` (oldest first, placed after it, whose tasks wait behind
    its own; on PostgreSQL, none that another worker is claiming at this
    moment), in one transaction.

    `like` pins the attempt a claim starts (attempts, max_attempts, steps), so
    every order claimed here gets the same order.processing detail,
    `describe()` of the row as the claim leaves it. An order that does not
    hold `like` (a retry, an attempt that resumes) is not claimed here; the
    caller claims it with claim().
    """
    now = now or timezone.now()
    connection = _connection()
    template = Order(**like)
    template.attempts = like["attempts"] + 1
    template.status = Status.PROCESSING
    event = _event(template, {}, EventType.PROCESSING, describe(template), now)
    orders, asked = _writer(connection).claim_batch(
        connection,
        order_id,
        like=like,
        companions=companions,
        companions_like=companions_like,
        sources=CLAIM_SOURCES,
        lease_seconds=lease_seconds,
        event=event,
        now=now,
    )
    if orders:
        notify.events_written(connection.alias)
    return Claimed(orders=orders, asked=asked)


def apply(moves: list[Move]) -> list[bool]:
    """Write `moves` (of distinct orders) in one transaction: for each, the
    conditional UPDATE every move shares and the rows written with it, all or
    nothing for that order. Returns, move by move, whether it was written.

    Each UPDATE matches only the status and version its order was read with, so
    of two racing writers one wins, and a move that loses changes nothing while
    the others are written. A written move's order is updated in place.
    """
    if not moves:
        return []
    if len({move.order.pk for move in moves}) != len(moves):
        raise ValueError("apply() takes at most one move per order")
    connection = _connection()
    moved = _writer(connection).apply(connection, moves)
    results = []
    for move in moves:
        version = moved.get(move.order.pk)
        results.append(version is not None)
        if version is not None:
            for name, value in move.values.items():
                setattr(move.order, name, value)
            move.order.version = version
    if moved:
        # Every move writes at least its own event.
        notify.events_written(connection.alias)
    return results


def append_event(
    order: Order, event_type: str, *, detail: str = "", changes: dict | None = None
) -> OrderEvent:
    """Write an event that does not change the status (order.created,
    delivery.completed, ...), bumping the version because the document changed."""
    now = timezone.now()
    values = {"updated_at": now, **(changes or {})}
    connection = _connection()
    writer = _writer(connection)
    with _atomic():
        current = writer.bump(connection, order, values)
        for name, value in {**values, **current}.items():
            setattr(order, name, value)
        event = _event(order, {}, event_type, detail, now)
        writer.insert(connection, [event])
    notify.events_written(event._state.db)
    return event


@dataclass(frozen=True)
class Writer:
    """One way of making every write of the moves (see the module docstring)."""

    apply: Callable
    bump: Callable
    insert: Callable
    claim: Callable
    claim_batch: Callable


IMPLEMENTATIONS: dict[str, Writer] = {
    "sql": Writer(
        apply=transitions_sql.apply,
        bump=transitions_sql.bump,
        insert=transitions_sql.insert,
        claim=transitions_sql_claims.claim,
        claim_batch=transitions_sql_claims.claim_batch,
    ),
    "orm": Writer(
        apply=transitions_orm.apply,
        bump=transitions_orm.bump,
        insert=transitions_orm.insert,
        claim=transitions_orm.claim,
        claim_batch=transitions_orm.claim_batch,
    ),
}

# What production writes with, by database vendor; any other vendor: the ORM.
# The raw SQL on both: `manage.py bench moves` finds the ORM slower in every
# write, on SQLite and on PostgreSQL (docs/decisions/0001-raw-sql-for-moves.md).
PRODUCTION: dict[str, Writer] = {
    "postgresql": IMPLEMENTATIONS["sql"],
    "sqlite": IMPLEMENTATIONS["sql"],
}

_chosen: contextvars.ContextVar[Writer | None] = contextvars.ContextVar(
    "orders_state_writer", default=None
)


@contextlib.contextmanager
def written_by(name: str):
    """Make the moves in this block with IMPLEMENTATIONS[name] instead of
    production's choice: for the benchmark and the tests that compare them."""
    token = _chosen.set(IMPLEMENTATIONS[name])
    try:
        yield
    finally:
        _chosen.reset(token)


def _writer(connection) -> Writer:
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    return PRODUCTION.get(connection.vendor, IMPLEMENTATIONS["orm"])


def _connection():
    return connections[router.db_for_write(Order)]


def _atomic():
    """A transaction, or, inside a caller's, no savepoint: an error here always
    propagates and dooms the caller's transaction anyway, and a savepoint costs
    two more statements (round trips on PostgreSQL) per move."""
    return transaction.atomic(savepoint=False)


def _event(
    order: Order,
    values: dict,
    event_type: str,
    detail: str,
    now: datetime,
    *,
    duration_ms: int | None = None,
    step: str = "",
    cause: str = "",
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
        cause=cause,
        max_attempts=after("max_attempts"),
        next_attempt_at=after("next_attempt_at") if status == Status.RETRYING else None,
        duration_ms=duration_ms,
        at=now,
    )
