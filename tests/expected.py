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


# What an engineer wrote and a customer must never read: a setting's name, an
# exception's type, a file path, the classification of a failure, a traceback.
ENGINEER_WORDS = [
    r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b",  # ORDER_MAX_ATTEMPTS
    r"\b[A-Z]\w*(?:Error|Exception)\b",  # FileNotFoundError
    r"\[Errno",
    r"(?:^|[\s'\"(])/[\w.-]+/",  # /var/lib/…
    r"\((?:transient|permanent)\)",
    r"\b(?:unexpected|lease|Traceback)\b",
    r"\battempts?\s+\d+\s+(?:of|lost)\b",  # "attempt 2 of 3", "attempt 1 lost"
]


def engineer_words(text: str) -> list[str]:
    """The engineers' words in `text` (ENGINEER_WORDS), for tests of what
    customers read."""
    import re

    return [
        match.group(0)
        for pattern in ENGINEER_WORDS
        for match in re.finditer(pattern, text)
    ]
