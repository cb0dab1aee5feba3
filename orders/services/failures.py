"""The failure records: storing each failure in its group, and the operators'
answers to them (resolve, retry, re-run).
"""

import contextlib
import json
import logging
import threading
import time
import traceback
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from orders.models import (
    FailureGroup,
    FailureRecord,
    Order,
)
from orders.services.fingerprints import failure_fingerprint, failure_location

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


# Retention ----------------------------------------------------------------------

TRIM_BATCH = 1000


def failures_trim(
    *, now=None, retention_days: float | None = None, keep: int | None = None
) -> int:
    """Delete the resolved failure records resolved more than
    FAILURE_RETENTION_DAYS ago, and those beyond the newest
    FAILURE_RETENTION_COUNT resolved ones (0 turns either off); returns how
    many. In batches, so SQLite's write lock is held only briefly.

    An unresolved record is kept whatever its age or number: an operator still
    has to look at it, and it keeps its order's timeline (events_trim). Groups
    are never deleted: a group keeps its count of every failure it had and its
    fingerprint, so a failure that comes back after its records are gone
    reopens it and is mailed as a regression; its latest_record is emptied when
    that record goes (docs/operators/retention.md).
    """
    days = settings.FAILURE_RETENTION_DAYS if retention_days is None else retention_days
    keep = settings.FAILURE_RETENTION_COUNT if keep is None else keep
    resolved = FailureRecord.objects.filter(resolved=True)
    deleted = 0
    if days > 0:
        cutoff = (now or timezone.now()) - timedelta(days=days)
        old = resolved.filter(resolved_at__lt=cutoff).order_by("pk")
        deleted += _delete_in_batches(old)
    if keep > 0:
        newest_first = resolved.order_by("-occurred_at", "-pk")
        deleted += _delete_in_batches(newest_first, after=keep)
    return deleted


def _delete_in_batches(records, *, after: int = 0) -> int:
    """Delete `records` but the first `after` of them, TRIM_BATCH at a time."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(records.values_list("pk", flat=True)[after : after + TRIM_BATCH])
            if not ids:
                return deleted
            # resolved=True again: never an open record, whatever the query.
            batch = FailureRecord.objects.filter(pk__in=ids, resolved=True)
            deleted += batch.delete()[1].get(FailureRecord._meta.label, 0)


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
