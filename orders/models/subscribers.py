"""The subscribers of the order timeline beyond the browser: webhook endpoints
with their messages and attempts, and the calls of in-process signal receivers.

Each is fed from OrderEvent rows after they commit (orders/services/relay.py),
so the transaction that moves an order writes nothing here.
"""

import secrets

from django.db import models


def new_message_id() -> str:
    """The `webhook-id` of a message: the same on every attempt, so a receiver
    can drop a duplicate."""
    return "msg_" + secrets.token_hex(16)


class WebhookEndpoint(models.Model):
    """A URL that wants some event types, signed with its secret."""

    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    # The event types it wants; empty: every type of the catalogue.
    event_types = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True, db_index=True)
    # whsec_<base64>; shown once, when made or rotated, never in the console.
    secret = models.CharField(max_length=100)
    # The secret before the last rotation: requests carry both signatures
    # until previous_secret_expires_at, so a receiver can switch in its time.
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Only events after this one are sent to it (the newest event when it was
    # added or enabled again): an endpoint gets no history unless replayed.
    since_event = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    # Since when every attempt has failed; None after a success.
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.url}"

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookMessage(models.Model):
    """One event for one endpoint: what is sent, as often as it takes."""

    class State(models.TextChoices):
        # Waiting for its attempt at next_attempt_at; with no next_attempt_at,
        # waiting for an earlier message of the same order to this endpoint.
        PENDING = "PENDING", "Waiting to be sent"
        # A sender holds it until lease_expires_at.
        SENDING = "SENDING", "Being sent"
        # A receiver answered 2xx. Terminal unless redelivered.
        DELIVERED = "DELIVERED", "Delivered"
        # Every attempt of the retry schedule failed. Terminal unless
        # redelivered.
        FAILED = "FAILED", "Gave up"

    msg_id = models.CharField(
        max_length=40, unique=True, default=new_message_id, editable=False
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="messages"
    )
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, related_name="webhook_messages"
    )
    # The OrderEvent's id (events are trimmed; the message keeps its body).
    event_number = models.PositiveBigIntegerField()
    event_type = models.CharField(max_length=40)
    body = models.TextField()
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_number"], name="webhook_message_once"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            # An order's messages to one endpoint, in the order of its events.
            models.Index(fields=["endpoint", "order", "event_number"]),
        ]

    def __str__(self) -> str:
        return f"{self.msg_id} {self.event_type}"


class WebhookAttempt(models.Model):
    """One try at sending a message: what the receiver answered, or why not."""

    message = models.ForeignKey(
        WebhookMessage, on_delete=models.CASCADE, related_name="attempt_log"
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts"
    )
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, related_name="webhook_attempts"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(db_index=True)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    succeeded = models.BooleanField(default=False)
    # The first bytes of the answer's body (WEBHOOK_RESPONSE_BYTES), as text.
    response_head = models.TextField(blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.message_id} #{self.number}"


class ReceiverCall(models.Model):
    """One event for one receiver of a Django signal (orders/signals.py), run
    by a worker in a transaction of its own."""

    class State(models.TextChoices):
        # Due at next_attempt_at.
        PENDING = "PENDING", "Waiting to run"
        # A worker runs it (until the dispatcher's due time says it was lost).
        RUNNING = "RUNNING", "Running"
        DONE = "DONE", "Done"
        # Raised on every attempt: left to the failure record.
        FAILED = "FAILED", "Gave up"

    # The receiver's dotted path: module.qualname.
    receiver = models.CharField(max_length=300)
    signal = models.CharField(max_length=60)
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, related_name="receiver_calls"
    )
    event_number = models.PositiveBigIntegerField()
    # The event's document, as the SSE streams send it.
    event = models.JSONField()
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the dispatcher hands it to the queue (again): its task may be lost.
    dispatch_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["receiver", "event_number"], name="receiver_call_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.receiver} for event {self.event_number}"


class RelayCursor(models.Model):
    """How far along the event table a relay has handed events out (one row per
    relay: "webhooks", "signals")."""

    name = models.CharField(max_length=40, unique=True)
    event_number = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} at {self.event_number}"
