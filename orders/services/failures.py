"""The failure records: storing each failure in its group, and the operators'
answers to them (resolve, retry, re-run).
"""

import contextlib
import json
import logging
import threading
import time
import traceback
from datetime import datetime

from django.conf import settings
from django.core.mail import mail_admins
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Greatest
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
from orders.services.fingerprints import failure_fingerprint, failure_location
from orders.services.orders import order_retry, queue_broker

logger = logging.getLogger("orders.failures")

# Set on an exception once it is recorded, so a handler further out (the

# django-q2 hook, an enqueue wrapper) does not record it a second time.
RECORDED_ATTR = "_orders_failure_recorded"

# (exception type, message) of failures recorded during the task the worker is
# running now. In a cluster the failed task reaches the monitor only as text, so
# this set travels with the result package (RECORDED_IN_TASK_KEY) and lets the
# monitor recognise an exception that the task recorded itself and then let
# escape. Reset by the pre_execute signal.
_recorded_in_task: set[tuple[str, str]] = set()
RECORDED_IN_TASK_KEY = "orders_recorded_failures"


def record_failure(
    *,
    task: str,
    args: list | tuple = (),
    error: BaseException,
    order: Order | None = None,
    kwargs: dict | None = None,
) -> FailureRecord | None:
    """Log and store an exception from async work; the failure mailer mails its
    group later.

    Never raises. Returns the stored record, or None when nothing was stored
    (the exception was recorded before, or the database refused).
    """
    try:
        if getattr(error, RECORDED_ATTR, False):
            return None
        # An exception class with __slots__ cannot be marked; it is rare.
        with contextlib.suppress(AttributeError):
            setattr(error, RECORDED_ATTR, True)
        exception_type = exception_type_name(type(error))
        message = str(error)
        _recorded_in_task.add((exception_type, message))
        return failure_record_text(
            task=task,
            args=args,
            kwargs=kwargs or {},
            exception_type=exception_type,
            message=message,
            traceback_text="".join(traceback.format_exception(error)),
            order=order,
        )
    except Exception:  # the handler of last resort never raises
        logger.exception("the failure handler itself failed for %s", task)
        return None


def exception_type_name(exception_class: type) -> str:
    """The name the traceback prints: builtins bare, anything else qualified."""
    module = exception_class.__module__
    name = exception_class.__qualname__
    if module in {"builtins", "__main__"}:
        return name
    return f"{module}.{name}"


def failure_record_text(
    *,
    task: str,
    args,
    kwargs: dict,
    exception_type: str,
    message: str,
    traceback_text: str,
    order: Order | None,
    log: bool = True,
) -> FailureRecord | None:
    from orders.credentials import CredentialMaskingFilter

    # A driver's error may quote the URL it was given: the log, the record the
    # admin shows and the mail never carry its password.
    masking = CredentialMaskingFilter()
    message = masking.mask_text(message)
    traceback_text = masking.mask_text(traceback_text)
    if log:
        logger.error(
            "async work %s%s failed%s: %s: %s\n%s",
            task,
            tuple(args),
            f" (order {order.order_id})" if order else "",
            exception_type,
            message,
            traceback_text.rstrip(),
        )
    try:
        record = failure_store(
            task=task,
            args=[_json_safe(value) for value in args],
            kwargs={str(key): _json_safe(value) for key, value in kwargs.items()},
            exception_type=exception_type,
            message=message,
            traceback_text=traceback_text,
            order=order,
        )
    except Exception:
        logger.exception("could not store the failure of %s", task)
        # The database may be what is failing, so the mailer will never see this
        # one: mail it from here, limited in-process, without making the caller
        # (a worker about to record its attempt's outcome) wait for it.
        if _fallback_limiter.allow((task, exception_type)):
            threading.Thread(
                target=admins_mail,
                kwargs={
                    "subject": f"{task} failed: {exception_type}: {message}",
                    "body": "(not stored: the database refused the record)\n\n"
                    f"{traceback_text}",
                },
                name="failure-mail-unstored",
            ).start()
        return None
    return record


def failure_store(
    *,
    task: str,
    args: list,
    kwargs: dict,
    exception_type: str,
    message: str,
    traceback_text: str,
    order: Order | None,
    now: datetime | None = None,
) -> FailureRecord:
    """Save the record and count it in its group, in one transaction; raises if
    the database refuses (record_failure is the caller that never raises).

    The group's row is locked (select_for_update; on SQLite the IMMEDIATE
    transaction holds the whole database) before it is read, so processes
    racing on PostgreSQL count every record and reopen a resolved group once.
    Whether a mail is due is the failure mailer's decision, from the group.
    """
    now = now or timezone.now()
    location = failure_location(traceback_text)
    fingerprint = failure_fingerprint(
        task=task, exception_type=exception_type, location=location
    )
    with transaction.atomic():
        group, _ = FailureGroup.objects.get_or_create(
            fingerprint=fingerprint,
            defaults={
                "task": task,
                "exception_type": exception_type,
                "location": location,
                "first_seen": now,
                "last_seen": now,
            },
        )
        group = FailureGroup.objects.select_for_update().get(pk=group.pk)
        record = FailureRecord.objects.create(
            occurred_at=now,
            group=group,
            task=task,
            args=args,
            kwargs=kwargs,
            exception_type=exception_type,
            message=message,
            traceback=traceback_text,
            order=order,
        )
        changes = {
            "count": F("count") + 1,
            "last_seen": Greatest(
                F("last_seen"), Value(now, output_field=DateTimeField())
            ),
            "latest_record": record,
        }
        if group.resolved:
            # A regression: the group is open again and the mailer says so.
            changes.update(
                resolved=False,
                resolved_by=None,
                resolved_at=None,
                reopened_at=now,
                reopened_times=F("reopened_times") + 1,
            )
        FailureGroup.objects.filter(pk=group.pk).update(**changes)
        return record


# The failure mailer -------------------------------------------------------------


def admins_mail(*, subject: str, body: str) -> None:
    """Mail the admins. A driver's error may quote the URL it was given, so the
    mail goes through the debug page's credential mask
    (orders/credentials.py)."""
    from orders.credentials import CredentialMaskingFilter

    masking = CredentialMaskingFilter()
    subject, body = masking.mask_text(subject), masking.mask_text(body)
    try:
        # Header lines must stay single-line and short.
        subject = " ".join(subject.split())[:180]
        mail_admins(subject, body, fail_silently=False)
    except Exception:
        logger.exception("could not mail the admins: %s", subject)


def _json_safe(value):
    try:
        json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError):
        return repr(value)
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


class _InProcessLimiter:
    """When the database cannot store a failure (so it has no group): one mail
    per task and exception type per FAILURE_DIGEST_WINDOW_SECONDS in this
    process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sent: dict[tuple, float] = {}

    def allow(self, key: tuple) -> bool:
        now = time.monotonic()
        window = settings.FAILURE_DIGEST_WINDOW_SECONDS
        with self._lock:
            last = self._sent.get(key)
            if last is not None and now - last < window:
                return False
            self._sent[key] = now
            return True


_fallback_limiter = _InProcessLimiter()


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
