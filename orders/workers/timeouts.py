"""How long a django-q2 task may run, derived from the order lease.

A pure function, free of Django's setup: the settings need it to build
Q_CLUSTER, which django-q2 reads once at import.
"""

import math

from django.core.exceptions import ImproperlyConfigured


def attempt_timeout(lease: float) -> int:
    """The longest a django-q2 task may run (Q_CLUSTER "timeout"): short enough
    that a worker is gone before the lease of the order it holds runs out.

    Once a lease has expired the dispatcher counts the attempt as lost and a
    retry may start, so the worker must be stopped before then. django-q2 stops
    it twice over (django_q/worker.py, django_q/cluster.py): at `timeout` an
    alarm (SIGALRM) raises in the task, which ends it at once in Python code.
    Code the alarm cannot interrupt (blocked in a C extension) is killed by the
    sentinel's guard, which acts only when the worker's timer, set to `timeout`
    + 3 s, has been counted down by 0.5 s per guard cycle; every cycle that runs
    late makes the kill later. On a loaded machine the countdown runs slow, so
    `timeout` + 3 s is kept within 80 % of the lease: the guard may run a
    quarter slow and still kill the worker in time. A lease of 60 s gives an
    attempt 45 s. Checking the lease before each step would add nothing: no
    step starts after the alarm, so each starts with at least this margin left.
    """
    timeout = math.floor(lease * 0.8 - 3)
    if timeout < 1:
        raise ImproperlyConfigured(
            f"ORDER_LEASE_SECONDS={lease:g} leaves an attempt no time: it must be "
            "at least 5 (an attempt may run 80 % of its lease less 3 s)"
        )
    return timeout


def simulated_delay_limit(lease: float) -> float:
    """The longest a simulated slow step may take (the API's `simulate.delay_ms`,
    in seconds): half of what an attempt may run, so a slow step shows
    PROCESSING (or waits to be killed) and still ends well inside the attempt's
    time limit, whose end would count as a lost attempt; and a client of a
    server with the simulation on holds a worker for no longer."""
    return attempt_timeout(lease) / 2
