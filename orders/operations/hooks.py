"""The global handler for exceptions that escape async work or a request.

Every failure outside a request ends here: an order step failing in an unexpected
way (services.order_process calls record_failure), a delivery listener, and any
other django-q2 task, through the django-q2 signals connected in OrdersConfig.ready.
A failure is logged with its traceback and stored as a FailureRecord at once, in
its FailureGroup (same task, exception type and place in the project's code:
orders/services/fingerprints.py); the mails about the groups are the mailer's
(orders/operations/mailer.py).

A request that raises (a 500) is recorded the same way (on_request_failed): a
flood of failing requests is one group, one mail and a digest.
"""

import logging
import sys
import traceback

from orders.api.client_address import request_client_address
from orders.models import Order
from orders.services.failures import (
    RECORDED_IN_TASK_KEY,
    _recorded_in_task,
    exception_type_name,
    failure_record_text,
    record_failure,
)

# One name for the mailer and the hooks, the one the operators' docs give.
logger = logging.getLogger("orders.failures")

# Requests ------------------------------------------------------------------------

# How much of a request's path a record keeps (the path is the client's choice).
REQUEST_PATH_CHARS = 200


def on_request_failed(sender, request=None, **kwargs) -> None:
    """Django's got_request_exception: a request raised and is answered 500.

    Django has logged it already (logger django.request, with the traceback);
    this stores it and leaves the mail to the failure mailer. The "task" is the
    view's URL name, so requests to one view failing the same way are one group
    whatever path or id they carried. The record names the client as the
    service works it out (orders/api/client_address.py), not as it claims.
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
            kwargs={"client": request_client_address(request)},
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


TRACEBACK_HEADER = "Traceback (most recent call last):"


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
