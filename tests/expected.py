"""Timelines the specification fixes, shared by the tests that check them."""

# An order with no failure: one attempt, each step checkpointed, the last one in
# the completion's transaction.
CLEAN_RUN_EVENTS = [
    "order.created",
    "order.processing",
    "order.step_completed",
    "order.step_completed",
    "order.completed",
]

# An order placed with simulate {"fail_times": 2} and three attempts allowed: the
# payment step fails twice, so no step completes before the third attempt.
FAIL_TWICE_EVENTS = [
    "order.created",
    "order.processing",
    "order.attempt_failed",
    "order.retry_scheduled",
    "order.processing",
    "order.attempt_failed",
    "order.retry_scheduled",
    "order.processing",
    "order.step_completed",
    "order.step_completed",
    "order.completed",
]

# simulate {"step": "stock", "fail_times": 1}: payment completes on attempt 1 and
# is not run again; stock fails once and completes on attempt 2.
STOCK_FAILS_ONCE_EVENTS = [
    "order.created",
    "order.processing",
    "order.step_completed",
    "order.attempt_failed",
    "order.retry_scheduled",
    "order.processing",
    "order.step_completed",
    "order.completed",
]
