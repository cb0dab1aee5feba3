"""The global handler for exceptions that escape async work.

Every failure outside a request ends here: an order step failing in an unexpected
way (services.order_process calls record_failure), a delivery listener, and any
other django-q2 task, through the django-q2 signals connected in OrdersConfig.ready.
A failure is logged with its traceback and stored as a FailureRecord at once, in
its FailureGroup (same task, exception type and place in the project's code:
orders/services/fingerprints.py). The ADMINS are mailed per group, not per record: a
new
group at once, a group that keeps failing in one digest per
FAILURE_DIGEST_WINDOW_SECONDS, a resolved group that fails again at once. The
mails are sent later by the failure mailer, a thread of each qcluster
(run_failure_mailer): no worker ever waits on a mail server, and an attempt's
outcome is never behind a mail.

A request that raises (a 500) is recorded the same way (on_request_failed): a
flood of failing requests is one group, one mail and a digest.
"""

import json
import logging
import sys
import threading
import traceback
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from orders.models import FailureGroup, FailureRecord, Order
from orders.services.failures import (
    RECORDED_IN_TASK_KEY,
    _recorded_in_task,
    admins_mail,
    exception_type_name,
    failure_record_text,
    record_failure,
)

logger = logging.getLogger("orders.failures")

# How often the failure mailer looks for records whose mail is due, and how many
# it takes at once.
MAIL_POLL_SECONDS = 1.0
MAIL_BATCH = 50

TRACEBACK_HEADER = "Traceback (most recent call last):"


# Set on an exception once it is recorded, so a handler further out (the
class GroupMail(StrEnum):
    NEW = "new"
    DIGEST = "digest"
    REOPENED = "reopened"


def group_mail_due(
    *,
    resolved: bool,
    count: int,
    mailed_at: datetime | None,
    mailed_count: int,
    reopened_at: datetime | None,
    now: datetime,
    window: timedelta,
) -> GroupMail | None:
    """Which mail a group is owed now, if any.

    A group nobody was mailed about: at once. A group that reopened after its
    last mail: at once. A group with failures since its last mail: a digest, once
    the window since that mail has passed. Otherwise none, and none for a
    resolved group: someone has dealt with it (it reopens if it fails again).
    """
    if resolved:
        return None
    if mailed_at is None:
        return GroupMail.NEW
    if reopened_at is not None and reopened_at > mailed_at:
        return GroupMail.REOPENED
    if count > mailed_count and now - mailed_at >= window:
        return GroupMail.DIGEST
    return None


def _groups_owed_a_mail(now: datetime, window: timedelta):
    """The database's side of group_mail_due, to find the candidates."""
    return FailureGroup.objects.filter(resolved=False).filter(
        Q(mailed_at__isnull=True)
        | Q(reopened_at__gt=F("mailed_at"))
        | Q(count__gt=F("mailed_count"), mailed_at__lte=now - window)
    )


def failures_mail_pending() -> int:
    """Mail the admins about every group that is owed a mail (group_mail_due),
    least recently seen first; returns how many mails were tried.

    Each mail is taken with a conditional UPDATE on the group's mailed_at and
    mailed_count as they were read, so the mailers of several qclusters never
    send one twice, on PostgreSQL as on SQLite. A mail that fails is logged and
    not tried again: the group waits for its next failure's digest.
    """
    now = timezone.now()
    window = timedelta(seconds=settings.FAILURE_DIGEST_WINDOW_SECONDS)
    candidates = _groups_owed_a_mail(now, window).order_by("last_seen", "id")[
        :MAIL_BATCH
    ]
    tried = 0
    for group in list(candidates):
        kind = group_mail_due(
            resolved=group.resolved,
            count=group.count,
            mailed_at=group.mailed_at,
            mailed_count=group.mailed_count,
            reopened_at=group.reopened_at,
            now=now,
            window=window,
        )
        if kind is None:
            continue
        taken = FailureGroup.objects.filter(
            pk=group.pk,
            mailed_at=group.mailed_at,
            mailed_count=group.mailed_count,
        ).update(mailed_at=timezone.now(), mailed_count=group.count)
        if not taken:
            continue
        latest = (
            FailureRecord.objects.select_related("order")
            .filter(group=group)
            .order_by("-occurred_at", "-id")
            .first()
        )
        subject, body = group_mail(group, latest, kind)
        admins_mail(subject=subject, body=body)
        tried += 1
    return tried


def run_failure_mailer(
    stop: threading.Event, *, interval: float = MAIL_POLL_SECONDS
) -> None:
    """Send due failure mails every `interval` seconds until `stop` is set.

    A thread of its own, beside the dispatcher: a mail server that hangs (SMTP
    waits up to EMAIL_TIMEOUT) then delays only other mails, never a worker, a
    retry or a lease.
    """
    logger.info("failure mailer started (every %.1f s)", interval)
    while not stop.is_set():
        try:
            failures_mail_pending()
        except Exception:
            logger.exception("sending failure mails failed; trying again")
            close_old_connections()
        stop.wait(interval)
    logger.info("failure mailer stopped")


def group_mail(
    group: FailureGroup, latest: FailureRecord | None, kind: GroupMail
) -> tuple[str, str]:
    """The subject and body of a group's mail of this kind."""
    summary = f"{group.exception_type}: {latest.message if latest else ''}"
    if kind is GroupMail.NEW:
        subject = f"{group.task} failed: {summary}"
        opening = [f"A new kind of failure (group #{group.pk})."]
    elif kind is GroupMail.REOPENED:
        subject = f"Regression: {group.task} failed again: {summary}"
        opening = [
            f"Group #{group.pk} was resolved and has failed again "
            f"(reopened at {group.reopened_at.isoformat()}, "
            f"{group.reopened_times} time(s) so far)."
        ]
    else:
        more = group.count - group.mailed_count
        subject = (
            f"{group.task}: {more} more {group.exception_type} since "
            f"{group.mailed_at:%Y-%m-%d %H:%M} UTC"
        )
        opening = [
            f"{more} more failure(s) of group #{group.pk} since the last mail "
            f"({group.mailed_at.isoformat()}); at most one digest per "
            f"{settings.FAILURE_DIGEST_WINDOW_SECONDS:g} s "
            "(FAILURE_DIGEST_WINDOW_SECONDS)."
        ]
    lines = [
        *opening,
        "",
        f"Group:      {reverse('admin:orders_failuregroup_change', args=[group.pk])}",
        f"Task:       {group.task}",
        f"Exception:  {group.exception_type}",
        f"Where:      {group.location or '-'}",
        f"Count:      {group.count} since {group.first_seen.isoformat()}",
        f"Last seen:  {group.last_seen.isoformat()}",
        "",
    ]
    if latest is not None:
        lines += [failure_mail_body(latest)]
    return subject, "\n".join(lines)


def failure_mail_body(record: FailureRecord) -> str:
    """The latest record of a group, as its mail shows it."""
    lines = [
        f"Latest failure #{record.pk} at {record.occurred_at.isoformat()}",
        f"Arguments: {json.dumps(record.args)} {json.dumps(record.kwargs)}",
        f"Order:     {record.order.order_id if record.order else '-'}",
        f"Exception: {record.exception_type}: {record.message}",
        f"Admin:     {reverse('admin:orders_failurerecord_change', args=[record.pk])}",
        "",
        "Retry or re-run it from the admin, or: manage.py failures --groups",
        "",
        record.traceback,
    ]
    return "\n".join(lines)


# Requests ------------------------------------------------------------------------

# How much of a request's path a record keeps (the path is the client's choice).
REQUEST_PATH_CHARS = 200


def on_request_failed(sender, request=None, **kwargs) -> None:
    """Django's got_request_exception: a request raised and is answered 500.

    Django has logged it already (logger django.request, with the traceback);
    this stores it and leaves the mail to the failure mailer. The "task" is the
    view's URL name, so requests to one view failing the same way are one group
    whatever path or id they carried.
    """
    try:
        error = sys.exc_info()[1]
        if error is None or request is None:
            return
        match = getattr(request, "resolver_match", None)
        view = match.view_name if match else "(unresolved)"
        failure_record_text(
            task=f"request {view}",
            args=[request.method, request.path[:REQUEST_PATH_CHARS]],
            kwargs={},
            exception_type=exception_type_name(type(error)),
            message=str(error),
            traceback_text="".join(traceback.format_exception(error)),
            order=_order_for_task([], dict(match.kwargs) if match else {}),
            log=False,
        )
    except Exception:  # the 500 is answered whatever happens here
        logger.exception("the failure handler failed for a request")


# django-q2 hooks ---------------------------------------------------------------
# django-q2 sends post_execute_in_worker in the worker holding the worker's timer
# lock, which the sentinel's guard takes for every worker in turn on each of its
# cycles (django_q/worker.py, django_q/cluster.py): a database write or a mail
# there would freeze the guard, so nothing in the worker's hook waits on I/O. The
# record is written by the monitor process on post_execute, which django-q2 sends
# after saving each result, holding no worker's lock. Hooks (`hook=`) would be
# skipped when save_limit is -1, so the signals are the reliable place.


def on_task_started(sender, task=None, **kwargs) -> None:
    _recorded_in_task.clear()


def on_task_executed(sender, task=None, func=None, **kwargs) -> None:
    """Worker side: note what the task recorded itself on its result package for
    the monitor; in sync mode (no lock held, no monitor for a failed task) record
    the live exception here."""
    try:
        if task is None:
            return
        # With sync=True the signal is sent inside the worker's `except` block,
        # before `success` is set: the exception itself is at hand.
        live = sys.exc_info()[1]
        if live is None:
            task[RECORDED_IN_TASK_KEY] = sorted(_recorded_in_task)
            return
        args, task_kwargs = _task_arguments(task)
        record_failure(
            task=_task_name(task),
            args=args,
            kwargs=task_kwargs,
            error=live,
            order=_order_for_task(args, task_kwargs),
        )
    except Exception:  # a failing handler must not kill the worker
        logger.exception("the django-q2 failure hook failed")


def on_task_saved(sender, task=None, **kwargs) -> None:
    """Monitor side: record a task that raised, whether or not anyone wrapped it."""
    try:
        if task is None or task.get("success", True):
            return
        exception_type, message, traceback_text = parse_task_result(
            str(task.get("result", ""))
        )
        recorded = {tuple(pair) for pair in task.get(RECORDED_IN_TASK_KEY, ())}
        if (exception_type, message) in recorded:
            return
        args, task_kwargs = _task_arguments(task)
        failure_record_text(
            task=_task_name(task),
            args=args,
            kwargs=task_kwargs,
            exception_type=exception_type,
            message=message,
            traceback_text=traceback_text,
            order=_order_for_task(args, task_kwargs),
        )
    except Exception:  # a failing handler must not kill the monitor
        logger.exception("the django-q2 failure hook failed")


def _task_name(task: dict) -> str:
    from django_q.utils import get_func_repr

    return get_func_repr(task.get("func"))


def _task_arguments(task: dict) -> tuple[list, dict]:
    return list(task.get("args") or ()), dict(task.get("kwargs") or {})


def parse_task_result(result: str) -> tuple[str, str, str]:
    """(exception type, message, traceback) from the text django-q2 stores for a
    failed task: f"{error} : {traceback.format_exc()}"."""
    start = result.find(TRACEBACK_HEADER)
    if start == -1:
        return "Exception", result, result
    message = result[:start].removesuffix(" : ")
    traceback_text = result[start:]
    exception_type = ""
    if message:
        at = traceback_text.rfind(": " + message)
        if at != -1:
            exception_type = traceback_text[traceback_text.rfind("\n", 0, at) + 1 : at]
    if not exception_type:
        last = traceback_text.rstrip().splitlines()[-1].strip()
        exception_type = last.split(":", 1)[0] or "Exception"
    return exception_type, message, traceback_text


def _order_for_task(args: list, kwargs: dict) -> Order | None:
    """The order a task is about: an `order_id` keyword or the first argument
    that is an order id."""
    for value in [kwargs.get("order_id"), *args]:
        if isinstance(value, str) and value.startswith("ord_"):
            return Order.objects.filter(order_id=value).first()
    return None
