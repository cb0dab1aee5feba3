"""The backoff policy: a pure function of the attempt number and the settings."""

import random
from collections.abc import Callable


def backoff_delay(
    failed_attempt: int,
    *,
    base: float,
    multiplier: float,
    max_delay: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the `failed_attempt`-th failed attempt (1-based).

    min(max_delay, base * multiplier ** (n - 1)), then shortened by up to `jitter`
    (a fraction) at random, so a burst of failures does not retry in lock step and
    the cap is never exceeded.
    """
    if failed_attempt < 1:
        raise ValueError("failed_attempt counts from 1")
    exponent = failed_attempt - 1
    try:
        raw = base * multiplier**exponent
    except OverflowError:
        raw = float("inf")
    capped = min(max_delay, raw)
    return capped * (1.0 - jitter * rand())


def backoff_delay_from_settings(failed_attempt: int) -> float:
    from django.conf import settings

    return backoff_delay(
        failed_attempt,
        base=settings.ORDER_RETRY_BASE_SECONDS,
        multiplier=settings.ORDER_RETRY_MULTIPLIER,
        max_delay=settings.ORDER_RETRY_MAX_SECONDS,
        jitter=settings.ORDER_RETRY_JITTER,
    )
