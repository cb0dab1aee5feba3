"""Writes: every change to orders goes through these functions.

Views, tasks, admin actions and commands parse their input and call these.
"""

import contextlib
import functools
import json
import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from orders.api.validation import OrderInput
from orders.exceptions import (
    DeliveryNotFound,
    FailureHasNoOrder,
    FailureNotRerunnable,
    IdempotencyConflict,
    InvalidTransition,
    ListenerFailed,
    StepError,
)
from orders.gateways import STEPS, StepResult, order_steps, step_idempotency_key
from orders.models import (
    Delivery,
    EventTally,
    FailureGroup,
    FailureRecord,
    Order,
    OrderEvent,
    OrderLine,
)
from orders.services.backoff import backoff_delay_from_settings
from orders.state.transitions import (
    Claimed,
    PrecedingEvent,
    append_event,
    apply,
    claim,
    claim_batch,
    may_be_claimed,
    plan_step,
    plan_transition,
    transition,
)
from orders.workers.djangoq import taken_along as takenalong

logger = logging.getLogger(__name__)

Status = Order.Status
EventType = OrderEvent.Type

PROCESS_ORDER_TASK = "orders.tasks.process_order"


def order_place(
    *, data: OrderInput, idempotency_key: str | None = None
) -> tuple[Order, bool]:
    """Save a PENDING order and hand it to the queue once the transaction commits.

    Returns (order, created). With an idempotency key that was seen before, the
    earlier order is returned (created False) if the body is the same, and
    IdempotencyConflict is raised if it is not.
    """
    if idempotency_key:
        existing = _order_for_idempotency_key(idempotency_key, data)
        if existing:
            return existing, False
    try:
        with _one_writer_per_process(), transaction.atomic():
            now = timezone.now()
            order = Order.objects.create(
                customer_email=data.customer_email,
                amount=data.amount,
                currency=settings.ORDER_CURRENCY,
                max_attempts=settings.ORDER_MAX_ATTEMPTS,
                simulate=data.simulate,
                idempotency_key=idempotency_key,
                request_fingerprint=data.fingerprint,
                # Enqueued on commit, milliseconds from now: the dispatcher
                # compares this with the queue's oldest task (dispatcher.py).
                queued_at=now,
                dispatch_due_at=_redispatch_time(now),
            )
            OrderLine.objects.bulk_create(
                OrderLine(
                    order=order,
                    sku=line.sku,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                )
                for line in data.lines
            )
            items = sum(line.quantity for line in data.lines)
            append_event(
                order,
                EventType.CREATED,
                detail=f"{items} item(s), {order.amount} {order.currency}",
            )
            order_enqueue_on_commit(order)
    except IntegrityError:
        # Two requests raced with the same key (a double click) and the other one
        # won. The failed INSERT was inside its own atomic block (a savepoint when
        # nested), so the connection is usable for the lookup, on PostgreSQL too.
        if idempotency_key:
            existing = _order_for_idempotency_key(idempotency_key, data)
            if existing:
                logger.info(
                    "Idempotency-Key %r: a concurrent request placed %s first",
                    idempotency_key,
                    existing.order_id,
                )
                return existing, False
        raise
    return order, True


_process_write_lock = threading.Lock()


def _one_writer_per_process():
    """On SQLite, let this process's request threads take the database's single
    write lock one at a time, in turn.

    Otherwise each waits in SQLite's busy handler, which sleeps in growing steps
    (up to 100 ms) and wakes in no order: under 20 concurrent placements the
    slowest waited seconds. Other processes (the workers) still contend through
    the busy handler, but they are few and single-threaded.
    """
    if connection.vendor == "sqlite":
        return _process_write_lock
    return contextlib.nullcontext()


def _order_for_idempotency_key(key: str, data: OrderInput) -> Order | None:
    existing = Order.objects.filter(idempotency_key=key).first()
    if existing and existing.request_fingerprint != data.fingerprint:
        raise IdempotencyConflict(key)
    return existing


def order_enqueue_on_commit(order: Order) -> None:
    """Hand the order to a worker after commit: never before it exists, never for
    a rolled-back request. If the queue refuses, the dispatcher hands it over again
    at dispatch_due_at, so the order is late, not lost."""
    order_id, queued_at = order.order_id, order.queued_at
    transaction.on_commit(lambda: order_enqueue(order_id, queued_at), robust=True)


def order_enqueue(order_id: str, queued_at=None) -> None:
    """Queue the order's task. `queued_at`, the value just written to the
    order's row, is the task's stamp: a batch that takes the order along notes
    it, and the task then has nothing to do (orders/workers/djangoq/taken_along.py)."""
    from django_q.tasks import async_task

    queued_at_us = takenalong.stamp(queued_at) if queued_at is not None else None
    # Successful results are not kept: the order's own timeline records them.
    async_task(
        PROCESS_ORDER_TASK,
        order_id,
        queued_at_us,
        group="orders",
        save=False,
        broker=queue_broker(),
    )


@functools.cache
def queue_broker():
    """This process's django-q2 broker. Without one, async_task() makes a new
    broker per call, and the Redis broker a new Redis connection with it (a
    connect and two CLIENT SETINFO round trips before the RPUSH). Shared by
    threads: redis-py's connection pool is thread-safe, and the ORM broker
    keeps nothing but a queryset."""
    from django_q.brokers import get_broker

    return get_broker()


def order_claim(order: Order) -> bool:
    """PENDING|RETRYING (and due) -> PROCESSING, counting one attempt; `order` is
    updated in place. False, changing nothing, for a duplicate delivery or a
    racing worker."""
    claimed = order_claim_by_id(order.order_id)
    if claimed is None:
        return False
    order.__dict__.update(
        {
            field.attname: getattr(claimed, field.attname)
            for field in Order._meta.concrete_fields
        }
    )
    return True


def order_claim_by_id(order_id: str) -> Order | None:
    """Claim the order with this id if it may be claimed now; the claim reads it
    (transitions.claim). The event says where the attempt starts when earlier
    ones completed steps."""
    claimed = _claim_for_attempts(order_id, companions=0)
    return claimed.orders[0] if claimed.orders else None


def _claim_for_attempts(order_id: str, *, companions: int) -> Claimed:
    """Claim the order with this id and up to `companions` orders waiting behind
    it (transitions.claim_batch). Orders with a simulation plan are never taken
    along: a plan may hold its worker (delay_ms) or fail on purpose, and must
    not hold or fail the orders around it."""
    now = timezone.now()
    lease_expires_at = now + timedelta(seconds=settings.ORDER_LEASE_SECONDS)
    claimed = claim_batch(
        order_id,
        # A first attempt, as order_place left it: one statement on PostgreSQL.
        like={"attempts": 0, "max_attempts": settings.ORDER_MAX_ATTEMPTS, "steps": {}},
        companions=companions,
        companions_like={"simulate": {}},
        lease_expires_at=lease_expires_at,
        describe=_attempt_detail,
        now=now,
    )
    if claimed.asked is not None and may_be_claimed(claimed.asked, now):
        # A retry, an attempt that resumes, an operator's retry: claimed the
        # general way, its event describing where it starts.
        order = claim(
            order_id,
            lease_expires_at=lease_expires_at,
            describe=_attempt_detail,
            now=now,
        )
        if order is not None:
            claimed.orders.insert(0, order)
            claimed.asked = None
    taken_along = [order for order in claimed.orders if order.order_id != order_id]
    if taken_along:
        # Their own tasks have nothing left to do
        # (orders/workers/djangoq/taken_along.py); noted
        # once the claim is committed.
        transaction.on_commit(
            functools.partial(takenalong.note_taken_along, taken_along)
        )
    return claimed


def _attempt_detail(order: Order) -> str:
    detail = f"attempt {order.attempts} of {order.max_attempts}"
    done = [name for name in STEPS if name in order.steps]
    if done:
        remaining = [name for name in STEPS if name not in order.steps]
        resume = f"resuming at {remaining[0]}" if remaining else "every step done"
        detail += f"; {resume} ({', '.join(done)} done)"
    return detail


class BatchSizer:
    """How many waiting orders a worker takes along with the one its task
    names: as many as it runs in about ORDER_BATCH_SECONDS, judged by how long
    the orders it ran lately took, and at most ORDER_BATCH_SIZE - 1; none until
    it has run one.

    Under a backlog each write costs a round trip and a commit: a batch shares
    its writes (one claim, one checkpoint and one completion for all), and the
    tasks of the orders it took along are dropped
    (orders/workers/djangoq/taken_along.py).
    With slow steps the batch shrinks to the order alone, so no order waits
    behind another while a worker is free, and a batch stays far inside its
    orders' leases.
    """

    def __init__(self):
        self.seconds_per_order: float | None = None

    def companions(self) -> int:
        most = settings.ORDER_BATCH_SIZE - 1
        if most <= 0 or self.seconds_per_order is None:
            return 0
        fits = settings.ORDER_BATCH_SECONDS / max(self.seconds_per_order, 1e-6)
        return max(0, min(most, int(fits) - 1))

    def ran(self, orders: int, seconds: float) -> None:
        sample = seconds / orders
        if self.seconds_per_order is None:
            self.seconds_per_order = sample
        else:
            self.seconds_per_order = (self.seconds_per_order + sample) / 2


_batch_sizer = BatchSizer()


def order_process_queued(
    *, order_id: str, queued_at_us: int | None = None
) -> Order | None:
    """The queue's task: order_process() of its order, taking along the orders
    that wait behind it that this worker has time for (BatchSizer).

    A task whose order a batch of this cluster took along while the order's
    row held the task's stamp `queued_at_us` (noted) returns None at once,
    without a query: the attempt it was queued for is claimed already."""
    if takenalong.was_taken_along(order_id, queued_at_us):
        return None
    started = time.monotonic()
    claimed = _claim_for_attempts(order_id, companions=_batch_sizer.companions())
    if claimed.orders:
        _run_attempts(claimed.orders)
        _batch_sizer.ran(len(claimed.orders), time.monotonic() - started)
    return _asked_order(order_id, claimed)


def order_process(*, order_id: str, companions: int = 0) -> Order | None:
    """Claim the order, and up to `companions` orders waiting behind it, and run
    one attempt of each one's steps, recording the outcomes. Returns the order,
    as the attempt left it, or as it was if it could not be claimed (a duplicate
    delivery, a retry not due yet; None if there is no such order).

    Each step that completes is checkpointed (order.step_completed, in the
    order's `steps`) before the next one starts, and an attempt skips the steps
    already done: a payment captured before the stock step failed is never
    captured again. The last step's checkpoint is part of the completion's
    transaction.

    Never raises for a step failure: it decides retry or fail itself, so the queue
    never redelivers an attempt that already counted.
    """
    claimed = _claim_for_attempts(order_id, companions=companions)
    if claimed.orders:
        _run_attempts(claimed.orders)
    return _asked_order(order_id, claimed)


def _asked_order(order_id: str, claimed: Claimed) -> Order | None:
    if claimed.orders and claimed.orders[0].order_id == order_id:
        return claimed.orders[0]
    if claimed.asked is None:
        logger.warning("process_order: no order %s", order_id)
    return claimed.asked


def _run_attempts(orders: list[Order]) -> None:
    """One attempt of each of these claimed orders, the batch step by step:
    every order's payment, then their checkpoints in one write, then every
    order's stock, then their completions in one write. An order whose step
    fails leaves the batch with its own outcome (a retry or FAILED); the others
    go on."""
    started = time.monotonic()
    steps = order_steps()
    running = list(orders)
    last_results: dict[int, StepResult] = {}
    for step in steps:
        done = []
        for order in list(running):
            if step.name in order.steps:
                continue
            try:
                result = step.run(
                    order,
                    attempt=order.attempts,
                    idempotency_key=step_idempotency_key(order, step.name),
                )
            except StepError as error:
                _attempt_failed(order, error, _elapsed_ms(started))
                running.remove(order)
            except Exception as error:  # noqa: BLE001 - a bug in a step is still an outcome
                from orders.operations.failures import record_failure

                record_failure(
                    task=PROCESS_ORDER_TASK,
                    args=[order.order_id],
                    error=error,
                    order=order,
                )
                _attempt_failed(order, error, _elapsed_ms(started))
                running.remove(order)
            else:
                done.append((order, result))
        if step is steps[-1]:
            last_results = {order.pk: result for order, result in done}
            break
        checkpoints = [
            plan_step(order, **_step_checkpoint(order, step.name, result))
            for order, result in done
        ]
        for (order, _result), recorded in zip(done, apply(checkpoints), strict=True):
            if not recorded:
                logger.warning(
                    "order %s: lease taken over after %s", order.order_id, step.name
                )
                running.remove(order)
    _orders_complete(running, steps[-1].name, last_results, started)


def _step_checkpoint(order: Order, step: str, result: StepResult) -> dict:
    """The step's entry in the order's `steps` and its event's detail."""
    steps = {
        **order.steps,
        step: {
            "reference": result.reference,
            "attempt": order.attempts,
            "at": timezone.now().isoformat(),
        },
    }
    detail = f"{step} done: {result.reference}"
    if result.replayed:
        detail += " (the gateway had already done it for this key: not done twice)"
    return {"step": step, "detail": detail, "changes": {"steps": steps}}


def _orders_complete(
    orders: list[Order],
    last_step: str,
    results: dict[int, StepResult],
    started: float,
) -> None:
    """PROCESSING -> COMPLETED, each order with its last step's checkpoint (if
    this attempt ran it: an earlier one may have, its worker dying before the
    completion) and its delivery, in one transaction."""
    moves = []
    for order in orders:
        changes = {"lease_expires_at": None, "failure_reason": "", "steps": order.steps}
        preceding = []
        result = results.get(order.pk)
        if result is not None:
            checkpoint = _step_checkpoint(order, last_step, result)
            changes.update(checkpoint["changes"])
            preceding.append(
                PrecedingEvent(
                    EventType.STEP_COMPLETED,
                    checkpoint["detail"],
                    step=checkpoint["step"],
                )
            )
        moves.append(
            plan_transition(
                order,
                Status.COMPLETED,
                detail=f"{', '.join(STEPS)} done",
                changes=changes,
                preceding=preceding,
                duration_ms=_elapsed_ms(started),
                creates=[Delivery(order=order)],
            )
        )
    for order, moved in zip(orders, apply(moves), strict=True):
        if not moved:
            logger.warning(
                "order %s finished after its lease was taken over", order.order_id
            )


def describe_error(error: Exception) -> str:
    if isinstance(error, StepError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


def _attempt_failed(order: Order, error: Exception, duration_ms: int) -> bool:
    message = describe_error(error)
    failed = PrecedingEvent(EventType.ATTEMPT_FAILED, message, duration_ms)
    permanent = isinstance(error, StepError) and error.kind == "permanent"
    if permanent:
        reason = f"{message}: a permanent error, not retried"
        return order_recover(order, reason=reason, preceding=[failed])
    if order.attempts >= order.max_attempts:
        reason = (
            f"gave up after {order.attempts} of {order.max_attempts} attempts "
            f"(ORDER_MAX_ATTEMPTS); last error: {message}"
        )
        return order_recover(order, reason=reason, preceding=[failed])
    return order_schedule_retry(order, message=message, preceding=[failed])


def order_schedule_retry(
    order: Order, *, message: str, preceding: list[PrecedingEvent]
) -> bool:
    now = timezone.now()
    delay = backoff_delay_from_settings(order.attempts)
    due = now + timedelta(seconds=delay)
    return transition(
        order,
        Status.RETRYING,
        detail=(
            f"{message}; attempt {order.attempts + 1} of {order.max_attempts} "
            f"in {delay:.1f} s"
        ),
        changes={
            "next_attempt_at": due,
            # No task of it is in the queue: the dispatcher enqueues one at `due`.
            "dispatch_due_at": due,
            "queued_at": None,
            "lease_expires_at": None,
        },
        preceding=preceding,
        now=now,
    )


def order_recover(
    order: Order, *, reason: str, preceding: list[PrecedingEvent] = ()
) -> bool:
    """The final step once retrying is over: FAILED with a reason a person reads."""
    return transition(
        order,
        Status.FAILED,
        detail=reason,
        changes={
            "failure_reason": reason,
            "next_attempt_at": None,
            "dispatch_due_at": None,
            "lease_expires_at": None,
        },
        preceding=preceding,
    )


def order_retry(*, order: Order) -> Order:
    """An operator's retry of a FAILED order: back to PENDING, attempts reset.

    Raises InvalidTransition from any other status.
    """
    with transaction.atomic():
        previous_reason = order.failure_reason
        now = timezone.now()
        moved = transition(
            order,
            Status.PENDING,
            detail=f"retry requested after: {previous_reason}"
            if previous_reason
            else "retry requested",
            changes={
                "attempts": 0,
                "max_attempts": settings.ORDER_MAX_ATTEMPTS,
                "failure_reason": "",
                "next_attempt_at": None,
                "queued_at": now,
                "dispatch_due_at": _redispatch_time(now),
            },
            now=now,
        )
        if moved:
            order_enqueue_on_commit(order)
        else:
            # Someone else moved it first (another operator's retry, most likely).
            order.refresh_from_db()
    return order


def order_expire_lease(*, order: Order) -> bool:
    """A PROCESSING order whose worker stopped answering: the attempt counts as
    failed (it may have been the one that killed the worker), then the usual
    retry-or-recover decision."""
    message = (
        f"attempt {order.attempts} lost: the worker stopped before finishing "
        "(lease expired)"
    )
    failed = PrecedingEvent(EventType.ATTEMPT_FAILED, message)
    if order.attempts >= order.max_attempts:
        reason = (
            f"gave up after {order.attempts} of {order.max_attempts} attempts "
            f"(ORDER_MAX_ATTEMPTS); last error: {message}"
        )
        return order_recover(order, reason=reason, preceding=[failed])
    return order_schedule_retry(order, message=message, preceding=[failed])


def _redispatch_time(now=None):
    """When the dispatcher next looks at work just handed to the queue."""
    now = now or timezone.now()
    return now + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


# Deliveries ---------------------------------------------------------------------

DELIVERY_LISTENER_TASK = "orders.tasks.order_delivery_completed"


def delivery_complete(*, code: str) -> tuple[Delivery, bool]:
    """Mark a delivery complete in its own transaction; after commit, hand
    `delivery.completed` to the order's listener.

    Returns (delivery, completed_now). Completing a completed delivery changes
    nothing and enqueues nothing. An unknown code raises DeliveryNotFound.
    """
    now = timezone.now()
    # durable: the delivery's completion must not ride on a caller's transaction
    # that could still roll back after the listener was told.
    with transaction.atomic(durable=True):
        delivery = Delivery.objects.select_related("order").filter(code=code).first()
        if delivery is None:
            raise DeliveryNotFound(code)
        completed_now = Delivery.objects.filter(
            pk=delivery.pk, completed_at__isnull=True
        ).update(completed_at=now, listener_due_at=_redispatch_time())
        if not completed_now:
            delivery.refresh_from_db()
            return delivery, False
        # The status document shows delivery.completed_at, so the order's version
        # (its ETag) moves with it, or a poller keeps getting 304 for stale data.
        # No event here: delivery.completed is the listener's to write once it
        # has run.
        Order.objects.filter(pk=delivery.order_id).update(
            version=F("version") + 1, updated_at=now
        )
        delivery.order.refresh_from_db(fields=["version", "updated_at"])
        delivery.completed_at = now
        order_id = delivery.order.order_id
        transaction.on_commit(
            lambda: delivery_listener_enqueue(order_id=order_id, code=code),
            robust=True,
        )
    return delivery, True


def delivery_listener_enqueue(*, order_id: str, code: str) -> None:
    """Hand `delivery.completed` to the queue. If the queue refuses, the failure
    is recorded like any other, so an operator can re-run it from the record."""
    from django_q.tasks import async_task

    try:
        async_task(
            DELIVERY_LISTENER_TASK,
            order_id,
            code,
            group="listeners",
            broker=queue_broker(),
        )
    except Exception as error:  # noqa: BLE001 - recorded, never lost
        from orders.operations.failures import record_failure

        record_failure(
            task=DELIVERY_LISTENER_TASK,
            args=[order_id, code],
            error=error,
            order=Order.objects.filter(order_id=order_id).first(),
        )


def order_delivery_completed(*, order_id: str, code: str) -> Order:
    """The async listener of `delivery.completed`: set the order's delivered_at
    and put the event on its timeline, in a transaction of its own.

    If it raises, `listener.failed` goes on the timeline (separately, so the
    event survives the rollback) and the exception escapes to the global handler;
    the delivery stays completed. Running it again after success writes nothing.
    """
    order = Order.objects.get(order_id=order_id)
    delivery = Delivery.objects.get(code=code, order=order)
    try:
        with transaction.atomic():
            # Serialise racing runs (a redelivered task, an operator's re-run).
            order = Order.objects.select_for_update().get(pk=order.pk)
            # The listener has an outcome: nothing is left for the dispatcher.
            Delivery.objects.filter(pk=delivery.pk).update(listener_due_at=None)
            if order.delivered_at is not None:
                return order
            if order.simulate.get("listener_fails") and not _listener_failed_before(
                order
            ):
                raise ListenerFailed(
                    "the delivery listener failed on its first run "
                    "(simulate.listener_fails)"
                )
            append_event(
                order,
                EventType.DELIVERY_COMPLETED,
                detail=f"delivered ({code})",
                changes={"delivered_at": delivery.completed_at or timezone.now()},
            )
    except Exception as error:
        try:
            # A failure is an outcome too: from here the global handler's record
            # and an operator's re-run take over, not the dispatcher.
            Delivery.objects.filter(pk=delivery.pk).update(listener_due_at=None)
            append_event(
                order,
                EventType.LISTENER_FAILED,
                detail=f"delivery.completed listener failed: {describe_error(error)}",
            )
        except Exception:  # keep the original error
            logger.exception("could not write listener.failed for %s", order_id)
        raise
    return order


def _listener_failed_before(order: Order) -> bool:
    return order.events.filter(type=EventType.LISTENER_FAILED).exists()


# Failure records ----------------------------------------------------------------

# Only the project's own tasks are run again from a record.
RERUNNABLE_TASK_PREFIX = "orders.tasks."


def failure_resolve(*, failure: FailureRecord, user=None) -> bool:
    """Mark a failure resolved, recording who and when. False if it already was.

    Resolving the last open record of a group resolves the group too (with the
    same who and when): nothing of it is left to look at. The group's row is
    locked first, as the failure handler locks it before adding a record, so a
    record arriving meanwhile either is seen here (the group stays open) or
    reopens the group after.
    """
    now = timezone.now()
    with transaction.atomic():
        FailureGroup.objects.select_for_update().filter(pk=failure.group_id).first()
        resolved = FailureRecord.objects.filter(pk=failure.pk, resolved=False).update(
            resolved=True, resolved_by=user, resolved_at=now
        )
        if resolved:
            FailureGroup.objects.filter(pk=failure.group_id, resolved=False).exclude(
                records__resolved=False
            ).update(resolved=True, resolved_by=user, resolved_at=now)
    failure.refresh_from_db()
    return bool(resolved)


def failure_group_resolve(*, group: FailureGroup, user=None) -> bool:
    """Mark a group resolved and every open record of it, recording who and
    when. False if the group already was. If it fails again it reopens, and the
    admins are mailed about the regression (orders/operations/failures.py)."""
    now = timezone.now()
    with transaction.atomic():
        FailureGroup.objects.select_for_update().filter(pk=group.pk).first()
        resolved = FailureGroup.objects.filter(pk=group.pk, resolved=False).update(
            resolved=True, resolved_by=user, resolved_at=now
        )
        if resolved:
            group.records.filter(resolved=False).update(
                resolved=True, resolved_by=user, resolved_at=now
            )
    group.refresh_from_db()
    return bool(resolved)


def failure_group_retry_orders(
    *, group: FailureGroup
) -> tuple[list[Order], list[Order]]:
    """Retry every FAILED order the group's records are about; the records stay.

    Returns (retried, skipped): an order that is no longer FAILED (retried
    already, or still running) is skipped.
    """
    retried, skipped = [], []
    for order in Order.objects.filter(failures__group=group).distinct().order_by("id"):
        try:
            retried.append(order_retry(order=order))
        except InvalidTransition:
            skipped.append(order)
    return retried, skipped


def failure_group_rerun(*, group: FailureGroup) -> int:
    """Re-run the failed task of every open record of the group, once per
    distinct arguments (a thousand failures of one call are one re-run); returns
    how many were handed to the queue.

    Raises FailureNotRerunnable if the group's task is not one of the project's
    (see failure_rerun); nothing is re-run then.
    """
    seen: set[str] = set()
    rerun = 0
    records = group.records.filter(resolved=False).order_by("id")
    for failure in records.iterator():
        key = json.dumps([failure.args, failure.kwargs], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        failure_rerun(failure=failure)
        rerun += 1
    return rerun


def failure_retry_order(*, failure: FailureRecord) -> Order:
    """Retry the FAILED order a failure belongs to; the record stays as it is.

    Raises FailureHasNoOrder, or InvalidTransition if the order is not FAILED.
    """
    if failure.order_id is None:
        raise FailureHasNoOrder(f"Failure #{failure.pk} is not about an order.")
    order = Order.objects.get(pk=failure.order_id)
    return order_retry(order=order)


def failure_rerun_refusal(failure: FailureRecord) -> str | None:
    """Why a failure's task cannot be run again, or None if it can: the one
    decision behind failure_rerun and the order page's re-run buttons."""
    from django.utils.module_loading import import_string

    if not failure.task.startswith(RERUNNABLE_TASK_PREFIX):
        return (
            f"Failure #{failure.pk} is from {failure.task}, which is not a task of "
            "this project; only orders.tasks.* can be re-run."
        )
    try:
        import_string(failure.task)
    except ImportError:
        return f"Failure #{failure.pk}: task {failure.task} no longer exists."
    return None


def failure_rerun(*, failure: FailureRecord) -> FailureRecord:
    """Run the failed task again with the same arguments, after commit.

    The record is kept (and stays unresolved until someone resolves it); if the
    run fails again, a new record is written.
    """
    refusal = failure_rerun_refusal(failure)
    if refusal:
        raise FailureNotRerunnable(refusal)
    task, args, kwargs = failure.task, list(failure.args), dict(failure.kwargs)

    def enqueue():
        from django_q.tasks import async_task

        async_task(task, *args, **kwargs, group="reruns", broker=queue_broker())

    transaction.on_commit(enqueue)
    logger.info("re-running %s%s from failure #%s", task, tuple(args), failure.pk)
    return failure


# Order events -------------------------------------------------------------------

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
    """Add what these events count (orders/operations/metrics.py) to EventTally, just
    before
    they are deleted and in the deleting transaction, so the counters of GET
    /metrics never go down. Returns what was added."""
    from orders.operations.metrics import event_tallies

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
