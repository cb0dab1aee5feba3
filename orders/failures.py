"""The global handler for exceptions that escape async work."""

import contextlib
import logging

from .models import Order

logger = logging.getLogger("orders.failures")


def record_failure(
    *,
    task: str,
    args: list | tuple = (),
    error: BaseException,
    order: Order | None = None,
) -> None:
    """Log an exception from async work with its traceback. Never raises."""
    with contextlib.suppress(Exception):
        logger.error(
            "async work %s%s failed%s: %s: %s",
            task,
            tuple(args),
            f" (order {order.order_id})" if order else "",
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__),
        )
