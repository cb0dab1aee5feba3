import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_order_id() -> str:
    """A public id with 128 random bits: numeric keys never leave the server."""
    return "ord_" + secrets.token_hex(16)


class Order(models.Model):
    # The labels are what the pages and the console show.
    class Status(models.TextChoices):
        # Saved; handed to the queue, no worker has claimed it yet.
        PENDING = "PENDING", "Waiting for a worker"
        # A worker holds it (until lease_expires_at) and is running its steps.
        PROCESSING = "PROCESSING", "Processing"
        # An attempt failed with a transient error; the next one is due at
        # next_attempt_at.
        RETRYING = "RETRYING", "Retrying soon"
        # Every step succeeded. Terminal.
        COMPLETED = "COMPLETED", "Completed"
        # A permanent error, or every attempt used; failure_reason says which.
        # Terminal unless an operator retries it.
        FAILED = "FAILED", "Failed"

    order_id = models.CharField(
        max_length=40, unique=True, default=new_order_id, editable=False
    )
    customer_email = models.EmailField(max_length=254)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    # Bumped by every change a client can see, so it doubles as the ETag.
    version = models.PositiveIntegerField(default=1)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a PROCESSING order's worker is presumed dead.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When the dispatcher should (re)hand this order to the queue; null while a
    # worker holds it or once it is terminal.
    dispatch_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # When this order's task was last handed to the queue, as the enqueuing
    # process saw it; null when no task of it is known to wait there (a retry
    # not yet due), so the dispatcher enqueues one at dispatch_due_at.
    queued_at = models.DateTimeField(null=True, blank=True)
    # For operators: what went wrong, precisely (the admin, the dashboard, the
    # commands). Customers never see it: their texts are made from the facts
    # below (orders/customer_texts.py).
    failure_reason = models.TextField(blank=True)
    # The step and the kind of failure (OrderEvent.Cause) of the last attempt
    # that failed; empty once the order completes or an operator retries it.
    failure_step = models.CharField(max_length=32, blank=True)
    failure_cause = models.CharField(max_length=16, blank=True)
    # The language the order was placed in (a code of LANGUAGES): its mails are
    # written in it. Empty: the site's default language (LANGUAGE_CODE).
    language = models.CharField(max_length=16, blank=True)
    # When the customer's mail about the order's outcome is due: set by the move
    # to COMPLETED or FAILED, taken by the customer mailer (a qcluster thread,
    # orders/services/customer_mail.py), null once sent, given up or not owed.
    customer_mail_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    customer_mail_attempts = models.PositiveIntegerField(default=0)
    customer_mailed_at = models.DateTimeField(null=True, blank=True)
    # The steps done so far, by name: {"payment": {"reference": ..., "attempt": 1,
    # "at": ...}}. Written with the step's order.step_completed event; a later
    # attempt starts at the first step not in here.
    steps = models.JSONField(default=dict, blank=True)
    simulate = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(
        max_length=255, null=True, blank=True, unique=True
    )
    request_fingerprint = models.CharField(max_length=64, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "lease_expires_at"]),
            # The orders waiting for a worker, oldest first: what a worker
            # takes along with its own (transitions.claim_batch) without
            # reading past every finished order.
            models.Index(
                fields=["id"],
                condition=models.Q(status="PENDING"),
                name="order_pending_idx",
            ),
        ]

    def __str__(self) -> str:
        return self.order_id

    @property
    def is_terminal(self) -> bool:
        return self.status in {self.Status.COMPLETED, self.Status.FAILED}


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.sku}"


class OrderEvent(models.Model):
    """One row per thing that happened to an order: the timeline and the outbox.

    Its auto-increment id is the SSE event id, so streams resume from it.
    """

    # The labels are what the pages show (their scripts too: base.html renders
    # them into every page).
    class Type(models.TextChoices):
        CREATED = "order.created", "Order placed"
        PROCESSING = "order.processing", "Attempt started"
        STEP_COMPLETED = "order.step_completed", "Step completed"
        ATTEMPT_FAILED = "order.attempt_failed", "Attempt failed"
        RETRY_SCHEDULED = "order.retry_scheduled", "Retry scheduled"
        COMPLETED = "order.completed", "Completed"
        FAILED = "order.failed", "Failed"
        RETRY_REQUESTED = "order.retry_requested", "Retry requested by an operator"
        DELIVERY_COMPLETED = "delivery.completed", "Delivered"
        LISTENER_FAILED = "listener.failed", "Delivery listener failed"

    # Why an attempt failed, in a word: what customer texts are made from
    # (orders/customer_texts.py), where `detail` is for operators.
    class Cause(models.TextChoices):
        # A gateway said it might work later (a timeout, unavailable).
        TRANSIENT = "transient", "Transient error"
        # A gateway said it never will (a declined card, an unknown SKU).
        PERMANENT = "permanent", "Permanent error"
        # A step raised something that is no StepError: a bug, a broken disk.
        UNEXPECTED = "unexpected", "Unexpected error"
        # The worker stopped answering before the attempt ended (lease expired).
        LOST = "lost", "Attempt lost"

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=40, choices=Type.choices)
    status = models.CharField(max_length=16, choices=Order.Status.choices)
    attempt = models.PositiveIntegerField(default=0)
    detail = models.TextField(blank=True)
    # The step an order.step_completed event is about, or the step a failed
    # attempt (and the retry or failure after it) stopped at.
    step = models.CharField(max_length=32, blank=True)
    # On order.attempt_failed, order.retry_scheduled and order.failed: why.
    cause = models.CharField(max_length=16, choices=Cause.choices, blank=True)
    # The order's attempts in all when the event was written ("2 of 3").
    max_attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # How long the attempt took, on events that end one.
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"


def new_delivery_code() -> str:
    """Public like the order id, and as unguessable: it completes a delivery."""
    return "dlv_" + secrets.token_hex(16)


class Delivery(models.Model):
    """The shipment of a COMPLETED order; completing it is the delivery scenario."""

    code = models.CharField(
        max_length=40, unique=True, default=new_delivery_code, editable=False
    )
    order = models.OneToOneField(
        Order, on_delete=models.CASCADE, related_name="delivery"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once, when the delivery is completed; completing it again changes nothing.
    completed_at = models.DateTimeField(null=True, blank=True)
    # While the delivery.completed listener has neither succeeded nor failed: when
    # the dispatcher should hand it to the queue again (the task may be lost).
    listener_due_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return self.code

    @property
    def is_completed(self) -> bool:
        return self.completed_at is not None


class Resolvable(models.Model):
    """What an operator closes by resolving it (a failure group or record), and
    who did, when."""

    resolved = models.BooleanField(default=False, db_index=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class FailureGroup(Resolvable):
    """Every FailureRecord of one kind: the same task, exception type and place
    in the project's code (see orders/services/fingerprints.py), whatever the
    message said.

    The admins are mailed per group, not per record (orders/operations/
    mailer.py): a new group at once, a group that keeps failing in a digest at
    most once per FAILURE_DIGEST_WINDOW_SECONDS, a resolved group that fails
    again (a regression) at once. Groups are never deleted: `count` counts
    every failure of the group, also those whose records were trimmed
    (failures_trim), and a group whose records are gone still reopens.
    """

    fingerprint = models.CharField(max_length=64, unique=True)
    task = models.CharField(max_length=255, db_index=True)
    exception_type = models.CharField(max_length=255, db_index=True)
    # The innermost frame of the project's own code: "orders/services/orders.py in
    # order_process" (no line number, so an unrelated edit above it does not
    # start a new group).
    location = models.CharField(max_length=500, blank=True)
    count = models.PositiveBigIntegerField(default=0)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)
    latest_record = models.ForeignKey(
        "FailureRecord",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # When a resolved group last happened again; a mail is due while this is
    # later than mailed_at.
    reopened_at = models.DateTimeField(null=True, blank=True)
    reopened_times = models.PositiveIntegerField(default=0)
    # When the failure mailer (a qcluster thread) last took a mail about this
    # group, and the group's count then: a digest reports the difference.
    mailed_at = models.DateTimeField(null=True, blank=True)
    mailed_count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen", "-id"]

    def __str__(self) -> str:
        return f"group #{self.pk} {self.task}: {self.exception_type}"

    @property
    def is_regression(self) -> bool:
        """Open again after someone resolved it."""
        return not self.resolved and self.reopened_at is not None


class FailureRecord(Resolvable):
    """An exception that escaped async work, kept for operators until resolved.

    Retrying or re-running from a record leaves it in place, so the history of
    what failed stays readable; a resolved record goes after
    FAILURE_RETENTION_DAYS or beyond the newest FAILURE_RETENTION_COUNT
    (failures_trim), an unresolved one never.
    """

    task = models.CharField(max_length=255, db_index=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    exception_type = models.CharField(max_length=255, db_index=True)
    message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    # Kept when the order goes: the failure still happened.
    order = models.ForeignKey(
        Order,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="failures",
    )
    occurred_at = models.DateTimeField(default=timezone.now, db_index=True)
    # The admins are mailed about the group, not each record (FailureGroup).
    group = models.ForeignKey(
        FailureGroup, on_delete=models.PROTECT, related_name="records"
    )

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            # A group's sparkline: its records of the last day, by hour.
            models.Index(fields=["group", "occurred_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.task}: {self.exception_type}"


class EventTally(models.Model):
    """What the order events already deleted counted, so counters derived from
    the event table never go down (orders/operations/metrics.py, EVENT_TALLIES).

    A row per tally name; events_trim and an order's deletion add what the
    events they delete counted, in the transaction that deletes them.
    """

    name = models.CharField(max_length=64, unique=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"


# The timeline's subscribers beyond the browser, in a module of their own.
from orders.models.subscribers import (  # noqa: E402
    ReceiverCall,
    RelayCursor,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
    new_message_id,
)

__all__ = [
    "Delivery",
    "EventTally",
    "FailureGroup",
    "FailureRecord",
    "Order",
    "OrderEvent",
    "OrderLine",
    "ReceiverCall",
    "RelayCursor",
    "Resolvable",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookMessage",
    "new_delivery_code",
    "new_message_id",
    "new_order_id",
]
