"""Webhooks: signed HTTP callbacks to other systems (orders/services/webhooks.py,
docs/integrators/webhooks.md)."""

from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.environment import env


def retry_schedule(raw: list[str]) -> tuple[float, ...]:
    """WEBHOOK_RETRY_SCHEDULE: the seconds before each retry, checked at start."""
    try:
        delays = tuple(float(item) for item in raw)
    except ValueError:
        delays = ()
    if not delays or any(delay < 0 for delay in delays):
        raise ImproperlyConfigured(
            f"WEBHOOK_RETRY_SCHEDULE={','.join(raw)!r} is not a comma-separated "
            "list of seconds (e.g. 5,300,1800)"
        )
    return delays


# The Standard Webhooks schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# after the first attempt; then the message is given up.
WEBHOOK_RETRY_SCHEDULE = retry_schedule(
    env.words(
        "WEBHOOK_RETRY_SCHEDULE",
        default=["5", "300", "1800", "7200", "18000", "36000", "36000"],
    )
)
# How long one request may take in all (connect, send, answer).
WEBHOOK_TIMEOUT_SECONDS = env.float(
    "WEBHOOK_TIMEOUT_SECONDS", default=10.0, minimum=0.1
)
# Off: URLs that are or resolve to loopback, private, link-local (and other
# non-public) addresses are refused, at add time and before every request.
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool(
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False
)
# An endpoint whose every attempt has failed for this long is disabled, and the
# admins are told once.
WEBHOOK_DISABLE_AFTER_SECONDS = env.float(
    "WEBHOOK_DISABLE_AFTER_SECONDS", default=5 * 24 * 3600.0, minimum=1
)
# How much of an answer's body is read and kept in the attempt's log.
WEBHOOK_RESPONSE_BYTES = env.int("WEBHOOK_RESPONSE_BYTES", default=1024, minimum=0)
# After a rotation, requests carry the old secret's signature too for so long.
WEBHOOK_SECRET_ROTATION_SECONDS = env.float(
    "WEBHOOK_SECRET_ROTATION_SECONDS", default=24 * 3600.0, minimum=0
)
# Requests in flight at once per qcluster process, and per endpoint: a slow
# endpoint holds at most its share, never every sender.
WEBHOOK_SENDER_THREADS = env.int("WEBHOOK_SENDER_THREADS", default=32, minimum=1)
WEBHOOK_ENDPOINT_CONCURRENCY = env.int(
    "WEBHOOK_ENDPOINT_CONCURRENCY", default=8, minimum=1
)
