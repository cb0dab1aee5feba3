"""The global handler for exceptions that escape async work.

Every failure outside a request ends here: an order step failing in an unexpected
way (services.order_process calls record_failure), a delivery listener, and any
other django-q2 task, through the django-q2 signals connected in OrdersConfig.ready.
A failure is logged with its traceback and stored as a FailureRecord at once, in
its FailureGroup (same task, exception type and place in the project's code:
orders/operations/fingerprints.py). The ADMINS are mailed per group, not per record: a
new
group at once, a group that keeps failing in one digest per
FAILURE_DIGEST_WINDOW_SECONDS, a resolved group that fails again at once. The
mails are sent later by the failure mailer, a thread of each qcluster
(run_failure_mailer): no worker ever waits on a mail server, and an attempt's
outcome is never behind a mail.

A request that raises (a 500) is recorded the same way (on_request_failed): a
flood of failing requests is one group, one mail and a digest.
"""

import contextlib
import json
import logging
import sys
import threading
import time
import traceback
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.core.mail import mail_admins
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections, transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Greatest
from django.urls import reverse
from django.utils import timezone

from orders.models import FailureGroup, FailureRecord, Order
from orders.operations.fingerprints import failure_fingerprint, failure_location

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

# How often the failure mailer looks for records whose mail is due, and how many
# it takes at once.
MAIL_POLL_SECONDS = 1.0
MAIL_BATCH = 50

TRACEBACK_HEADER = "Traceback (most recent call last):"


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
        return _record(
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


def _record(
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
    from orders.operations.error_reports import CredentialMaskingFilter

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
                target=_send_mail,
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
        _send_mail(subject=subject, body=body)
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


def _send_mail(*, subject: str, body: str) -> None:
    """Mail the admins. A driver's error may quote the URL it was given, so the
    mail goes through the debug page's credential mask
    (orders/operations/error_reports.py)."""
    from orders.operations.error_reports import CredentialMaskingFilter

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
        _record(
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
        _record(
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
