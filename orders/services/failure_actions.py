"""The operators' answers to failures: resolving a record or a group, retrying
the order behind it, re-running its task. Each one calls the services it
stands for; none edits a record by hand.
"""

import json
import logging

from django.db import transaction
from django.utils import timezone

from orders.exceptions import (
    FailureHasNoOrder,
    FailureNotRerunnable,
    InvalidTransition,
)
from orders.models import (
    FailureGroup,
    FailureRecord,
    Order,
)
from orders.selectors import queue_broker
from orders.services.orders import order_retry

logger = logging.getLogger("orders.failures")

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
    admins are mailed about the regression (orders/operations/mailer.py)."""
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
