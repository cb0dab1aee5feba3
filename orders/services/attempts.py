"""Running an order's attempts in a worker: the claim, the steps with their
checkpoints, and what a failed attempt leads to.
"""

import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from orders.exceptions import (
    StepError,
)
from orders.gateways import (
    STEPS,
    Line,
    StepOrder,
    StepResult,
    order_steps,
    step_idempotency_key,
)
from orders.models import (
    Delivery,
    Order,
    OrderEvent,
    OrderLine,
)
from orders.services.backoff import backoff_delay_from_settings
from orders.services.customer_mail import customer_mail_owed
from orders.services.failures import record_failure
from orders.services.orders import PROCESS_ORDER_TASK, elapsed_ms, order_fail
from orders.state.transitions import (
    Claimed,
    PrecedingEvent,
    apply,
    claim,
    claim_batch,
    may_be_claimed,
    plan_step,
    plan_transition,
    transition,
)

logger = logging.getLogger(__name__)

Status = Order.Status
EventType = OrderEvent.Type
Cause = OrderEvent.Cause


# Told which orders a batch took along besides the one its task named, once the
# claim has committed: the worker side notes them, so their own queued tasks
# can be dropped (orders/workers/djangoq/taken_along.py).
TakenAlongNote = Callable[[list[Order]], None]


def order_claim_batch(
    *,
    order_id: str,
    companions: int = 0,
    note_taken_along: TakenAlongNote | None = None,
) -> Claimed:
    """Claim the order with this id, if it may be claimed now, and up to
    `companions` orders waiting behind it (transitions.claim_batch), counting
    one attempt of each. Orders with a simulation plan are never taken along: a
    plan may hold its worker (delay_ms) or fail on purpose, and must not hold or
    fail the orders around it. Returns what was claimed (transitions.Claimed);
    the asked order stays unclaimed for a duplicate delivery, a racing worker or
    a retry not due yet."""
    now = timezone.now()
    lease_seconds = settings.ORDER_LEASE_SECONDS
    claimed = claim_batch(
        order_id,
        # A first attempt, as order_place left it: one statement on PostgreSQL.
        like={"attempts": 0, "max_attempts": settings.ORDER_MAX_ATTEMPTS, "steps": {}},
        companions=companions,
        companions_like={"simulate": {}},
        lease_seconds=lease_seconds,
        describe=_attempt_detail,
        now=now,
    )
    if claimed.asked is not None and may_be_claimed(claimed.asked, now):
        # A retry, an attempt that resumes, an operator's retry: claimed the
        # general way, its event describing where it starts.
        order = claim(
            order_id,
            lease_seconds=lease_seconds,
            describe=_attempt_detail,
            now=now,
        )
        if order is not None:
            claimed.orders.insert(0, order)
            claimed.asked = None
    taken_along = [order for order in claimed.orders if order.order_id != order_id]
    if taken_along and note_taken_along is not None:
        transaction.on_commit(functools.partial(note_taken_along, taken_along))
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


def order_process_queued(
    *,
    order_id: str,
    batch_sizer: BatchSizer,
    note_taken_along: TakenAlongNote | None = None,
) -> Order | None:
    """The queue's task: claim the order, and the orders waiting behind it that
    this worker has time for (`batch_sizer`, the worker process's own), and run
    one attempt of each one's steps, recording the outcomes. Returns the order,
    as the attempt left it, or as it was if it could not be claimed (a duplicate
    delivery, a retry not due yet; None if there is no such order).

    Each step that completes is checkpointed (order.step_completed, in the
    order's `steps`) before the next one starts, and an attempt skips the steps
    already done: a payment captured before the stock step failed is never
    captured again. The last step's checkpoint is part of the completion's
    transaction.

    Never raises for a step failure: it decides retry or fail itself, so the
    queue never redelivers an attempt that already counted.
    """
    started = time.monotonic()
    claimed = order_claim_batch(
        order_id=order_id,
        companions=batch_sizer.companions(),
        note_taken_along=note_taken_along,
    )
    if claimed.orders:
        _run_attempts(claimed.orders)
        batch_sizer.ran(len(claimed.orders), time.monotonic() - started)
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
    told = _step_orders(orders)
    running = list(orders)
    last_results: dict[int, StepResult] = {}
    for step in steps:
        done = []
        for order in list(running):
            if step.name in order.steps:
                continue
            try:
                result = step.run(
                    told[order.pk],
                    attempt=order.attempts,
                    idempotency_key=step_idempotency_key(order.order_id, step.name),
                )
            except StepError as error:
                _attempt_failed(order, error, step.name, elapsed_ms(started))
                running.remove(order)
            except Exception as error:  # noqa: BLE001 - a bug in a step is still an outcome
                record_failure(
                    task=PROCESS_ORDER_TASK,
                    args=[order.order_id],
                    error=error,
                    order=order,
                )
                _attempt_failed(order, error, step.name, elapsed_ms(started))
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


def _step_orders(orders: list[Order]) -> dict[int, StepOrder]:
    """What the steps are told about each order, by pk: its lines read in one
    query for the whole batch."""
    lines = defaultdict(list)
    rows = (
        OrderLine.objects.filter(order__in=[order.pk for order in orders])
        .order_by("pk")
        .values_list("order", "sku", "quantity", "unit_price")
    )
    for order_pk, sku, quantity, unit_price in rows:
        lines[order_pk].append(Line(sku=sku, quantity=quantity, unit_price=unit_price))
    return {
        order.pk: StepOrder(
            order_id=order.order_id,
            amount=order.amount,
            currency=order.currency,
            lines=tuple(lines[order.pk]),
            simulate=order.simulate or {},
        )
        for order in orders
    }


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
        changes = {
            "lease_expires_at": None,
            "failure_reason": "",
            "failure_step": "",
            "failure_cause": "",
            "steps": order.steps,
            **customer_mail_owed(),
        }
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
                duration_ms=elapsed_ms(started),
                creates=[Delivery(order=order)],
            )
        )
    for order, moved in zip(orders, apply(moves), strict=True):
        if not moved:
            logger.warning(
                "order %s finished after its lease was taken over", order.order_id
            )


def describe_error(error: Exception) -> str:
    """The operators' words for a failed step: precise, with the exception's
    type when it is none of the steps' own (customers get other words,
    orders/customer_texts.py)."""
    if isinstance(error, StepError):
        return str(error)
    return f"unexpected {type(error).__name__}: {error}"


def failure_cause(error: Exception) -> str:
    """What kind of failure this was, in a word (OrderEvent.Cause)."""
    if not isinstance(error, StepError):
        return Cause.UNEXPECTED
    if error.kind == "permanent":
        return Cause.PERMANENT
    return Cause.TRANSIENT


@dataclass(frozen=True)
class Failure:
    """A failed attempt as the timeline records it: the operators' message,
    and the step and cause customer texts are made from."""

    message: str
    step: str
    cause: str


def _attempt_failed(
    order: Order, error: Exception, step: str, duration_ms: int
) -> bool:
    failure = Failure(
        message=describe_error(error),
        step=error.step if isinstance(error, StepError) else step,
        cause=failure_cause(error),
    )
    failed = PrecedingEvent(
        EventType.ATTEMPT_FAILED,
        failure.message,
        duration_ms,
        step=failure.step,
        cause=failure.cause,
    )
    if failure.cause == Cause.PERMANENT:
        reason = f"{failure.message}: a permanent error, not retried"
        return order_fail(
            order,
            reason=reason,
            preceding=[failed],
            step=failure.step,
            cause=failure.cause,
        )
    return _retry_or_give_up(order, failure=failure, preceding=[failed])


def _retry_or_give_up(
    order: Order, *, failure: Failure, preceding: list[PrecedingEvent]
) -> bool:
    """After an attempt that failed and may be retried: another attempt, or
    FAILED once the order has had ORDER_MAX_ATTEMPTS (as they were when it was
    placed or retried by an operator)."""
    if order.attempts >= order.max_attempts:
        reason = (
            f"gave up after {order.attempts} of {order.max_attempts} attempts "
            f"(ORDER_MAX_ATTEMPTS); last error: {failure.message}"
        )
        return order_fail(
            order,
            reason=reason,
            preceding=preceding,
            step=failure.step,
            cause=failure.cause,
        )
    return order_schedule_retry(order, failure=failure, preceding=preceding)


def order_schedule_retry(
    order: Order, *, failure: Failure, preceding: list[PrecedingEvent]
) -> bool:
    now = timezone.now()
    delay = backoff_delay_from_settings(order.attempts)
    due = now + timedelta(seconds=delay)
    return transition(
        order,
        Status.RETRYING,
        detail=(
            f"{failure.message}; attempt {order.attempts + 1} of "
            f"{order.max_attempts} in {delay:.1f} s"
        ),
        changes={
            "next_attempt_at": due,
            # No task of it is in the queue: the dispatcher enqueues one at `due`.
            "dispatch_due_at": due,
            "queued_at": None,
            "lease_expires_at": None,
            "failure_step": failure.step,
            "failure_cause": failure.cause,
        },
        preceding=preceding,
        now=now,
        step=failure.step,
        cause=failure.cause,
    )


def order_expire_lease(*, order: Order) -> bool:
    """A PROCESSING order whose worker stopped answering: the attempt counts as
    failed (it may have been the one that killed the worker), then the usual
    retry-or-give-up decision (_retry_or_give_up). Its step is the first one
    not done: where the attempt was, as far as the order knows."""
    failure = Failure(
        message=(
            f"attempt {order.attempts} lost: the worker stopped before finishing "
            "(lease expired)"
        ),
        step=next((name for name in STEPS if name not in order.steps), ""),
        cause=Cause.LOST,
    )
    failed = PrecedingEvent(
        EventType.ATTEMPT_FAILED, failure.message, step=failure.step, cause=Cause.LOST
    )
    return _retry_or_give_up(order, failure=failure, preceding=[failed])
