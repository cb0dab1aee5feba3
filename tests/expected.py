"""Timelines the specification fixes, shared by the tests that check them."""

# An order placed with simulate {"fail_times": 2} and three attempts allowed.
FAIL_TWICE_EVENTS = [
    "order.created",
    "order.processing",
    "order.attempt_failed",
    "order.retry_scheduled",
    "order.processing",
    "order.attempt_failed",
    "order.retry_scheduled",
    "order.processing",
    "order.completed",
]
