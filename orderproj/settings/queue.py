"""The task queue (django-q2): its broker, workers and timeouts."""

from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.environment import env
from orderproj.settings.orders import ORDER_LEASE_SECONDS
from orders.workers.timeouts import attempt_timeout

# Unset: django-q2's ORM broker, the rate limit's counts in files, polled
# streams. Set: Redis for all three (security.py, streams.py).
REDIS_URL = env.url("REDIS_URL", default="").geturl()
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"REDIS_URL={REDIS_URL!r} is not a redis://, rediss:// or unix:// URL"
    )
# django-q2 reads it itself (a separate queue on one Redis); the channels layer
# takes it as its prefix too (streams.py).
Q_CLUSTER_NAME = env.str("Q_CLUSTER_NAME", default="orderproj")
Q_WORKERS = env.int("Q_WORKERS", default=2, minimum=1)
# A worker exits after this many tasks and the sentinel starts a fresh one
# (django-q2's default, 500), which bounds what a leaking task can hold.
Q_RECYCLE = env.int("Q_RECYCLE", default=500, minimum=1)
Q_CLUSTER = {
    "name": "orderproj",
    "workers": Q_WORKERS,
    "recycle": Q_RECYCLE,
    # Shorter than the lease by a margin: a worker that overruns is gone before
    # its lease expires and a retry can be claimed, so two attempts of one order
    # never run side by side.
    "timeout": attempt_timeout(ORDER_LEASE_SECONDS),
    # The ORM broker redelivers an unacknowledged task after `retry` seconds; it
    # must exceed `timeout` or a merely slow task is run twice.
    "retry": max(1, int(ORDER_LEASE_SECONDS)) + 60,
    # How long the ORM broker's pusher sleeps when the queue is empty: an order
    # placed into an idle cluster waits half of it on average; shorter costs an
    # idle cluster more of a core.
    "poll": 0.05,
    "guard_cycle": 0.5,
    # Tasks of this project catch their own errors; a task that still raises is
    # recorded by the global failure handler, so it is acknowledged, not looped.
    "ack_failures": True,
    "max_attempts": 3,
    "save_limit": 250,
    "label": "Task queue",
    "catch_up": False,
    # Lets django-q2's own Q_CLUSTER_NAME env var name a separate queue (one
    # Redis, several deployments) without further configuration.
    "ALT_CLUSTERS": {},
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
