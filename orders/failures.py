"""The global handler for exceptions that escape async work.

Every failure outside a request ends here: an order step failing in an unexpected
way (services.order_process calls record_failure), a delivery listener, and any
other django-q2 task, through the worker signals connected in OrdersConfig.ready.
A failure is logged with its traceback, stored as a FailureRecord and mailed to
the ADMINS, at most FAILURE_NOTIFY_LIMIT mails per task and exception type in any
FAILURE_NOTIFY_WINDOW_SECONDS (every record is kept either way).
"""

import contextlib
import json
import logging
import sys
import threading
import time
import traceback
from datetime import timedelta

from django.conf import settings
from django.core.mail import mail_admins
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from .models import FailureRecord, Order

logger = logging.getLogger("orders.failures")

# Set on an exception once it is recorded, so a handler further out (the
# django-q2 hook, an enqueue wrapper) does not record it a second time.
RECORDED_ATTR = "_orders_failure_recorded"

# (exception type, message) of failures recorded during the task the worker is
# running now. In the worker's normal mode the django-q2 signal only carries the
# traceback as text, so this is how it recognises an exception that the task
# recorded itself and then let escape. Reset by the pre_execute signal.
_recorded_in_task: set[tuple[str, str]] = set()

TRACEBACK_HEADER = "Traceback (most recent call last):"


def record_failure(
    *,
    task: str,
    args: list | tuple = (),
    error: BaseException,
    order: Order | None = None,
    kwargs: dict | None = None,
) -> FailureRecord | None:
    """Log, store and (rate-limited) mail an exception from async work.

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
) -> FailureRecord | None:
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
        record, similar_unmailed = _store(
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
        # The database may be what is failing: mail anyway, limited in-process.
        if _fallback_limiter.allow((task, exception_type)):
            _send_mail(
                subject=f"{task} failed: {exception_type}: {message}",
                body=f"(not stored: the database refused the record)\n\n"
                f"{traceback_text}",
            )
        return None
    if record.notified:
        record_id = record.pk
        transaction.on_commit(lambda: _notify(record_id, similar_unmailed), robust=True)
    return record


def _store(**fields) -> tuple[FailureRecord, int]:
    """Save the record and decide, in the same transaction, whether it is mailed.

    The decision counts earlier mails in the database, so the limit holds across
    every web and worker process. On SQLite the IMMEDIATE transaction makes it
    exact; on PostgreSQL two processes racing may each send one more.
    """
    now = timezone.now()
    window_start = now - timedelta(seconds=settings.FAILURE_NOTIFY_WINDOW_SECONDS)
    with transaction.atomic():
        similar = FailureRecord.objects.filter(
            task=fields["task"],
            exception_type=fields["exception_type"],
            occurred_at__gte=window_start,
        )
        mailed = similar.filter(notified=True).count()
        notify = mailed < settings.FAILURE_NOTIFY_LIMIT
        unmailed = similar.filter(notified=False).count() if notify else 0
        record = FailureRecord.objects.create(
            occurred_at=now,
            notified=notify,
            task=fields["task"],
            args=fields["args"],
            kwargs=fields["kwargs"],
            exception_type=fields["exception_type"],
            message=fields["message"],
            traceback=fields["traceback_text"],
            order=fields["order"],
        )
    return record, unmailed


def _notify(record_id: int, similar_unmailed: int) -> None:
    try:
        record = FailureRecord.objects.select_related("order").get(pk=record_id)
        _send_mail(
            subject=f"{record.task} failed: {record.exception_type}: {record.message}",
            body=failure_mail_body(record, similar_unmailed),
        )
    except Exception:
        logger.exception("could not notify the admins of failure #%s", record_id)


def failure_mail_body(record: FailureRecord, similar_unmailed: int = 0) -> str:
    window_minutes = settings.FAILURE_NOTIFY_WINDOW_SECONDS / 60
    lines = [
        f"Failure #{record.pk} at {record.occurred_at.isoformat()}",
        f"Task:      {record.task}",
        f"Arguments: {json.dumps(record.args)} {json.dumps(record.kwargs)}",
        f"Order:     {record.order.order_id if record.order else '-'}",
        f"Exception: {record.exception_type}: {record.message}",
        f"Admin:     {reverse('admin:orders_failurerecord_change', args=[record.pk])}",
        "",
    ]
    if similar_unmailed:
        lines += [
            f"{similar_unmailed} similar failure(s) in the last {window_minutes:g} "
            "minutes were recorded without a mail (FAILURE_NOTIFY_LIMIT).",
            "",
        ]
    lines += [
        "Retry or re-run it from the admin, or: manage.py failures --unresolved",
        "",
        record.traceback,
    ]
    return "\n".join(lines)


def _send_mail(*, subject: str, body: str) -> None:
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
    """The rate limit for when the database cannot count mails."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sent: dict[tuple, list[float]] = {}

    def allow(self, key: tuple) -> bool:
        now = time.monotonic()
        window = settings.FAILURE_NOTIFY_WINDOW_SECONDS
        with self._lock:
            recent = [t for t in self._sent.get(key, []) if now - t < window]
            allowed = len(recent) < settings.FAILURE_NOTIFY_LIMIT
            if allowed:
                recent.append(now)
            self._sent[key] = recent
            return allowed


_fallback_limiter = _InProcessLimiter()


# django-q2 hook ----------------------------------------------------------------
# Signals sent by django_q.worker.worker around every task, in the worker
# process. Hooks (`hook=`) would run in the monitor process instead and are
# skipped when save_limit is -1, so the signals are the reliable place.


def on_task_started(sender, task=None, **kwargs) -> None:
    _recorded_in_task.clear()


def on_task_executed(sender, task=None, func=None, **kwargs) -> None:
    """Record a task that raised, whether or not anyone wrapped it."""
    try:
        if task is None:
            return
        # With sync=True the signal is sent inside the worker's `except` block,
        # before `success` is set: the exception itself is at hand.
        live = sys.exc_info()[1]
        if live is None and task.get("success", True):
            return
        from django_q.utils import get_func_repr

        name = get_func_repr(task.get("func"))
        args = list(task.get("args") or ())
        task_kwargs = dict(task.get("kwargs") or {})
        order = _order_for_task(args, task_kwargs)
        if live is not None:
            record_failure(
                task=name, args=args, kwargs=task_kwargs, error=live, order=order
            )
            return
        exception_type, message, traceback_text = parse_task_result(
            str(task.get("result", ""))
        )
        if (exception_type, message) in _recorded_in_task:
            return
        _record(
            task=name,
            args=args,
            kwargs=task_kwargs,
            exception_type=exception_type,
            message=message,
            traceback_text=traceback_text,
            order=order,
        )
    except Exception:  # a failing handler must not kill the worker
        logger.exception("the django-q2 failure hook failed")


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
