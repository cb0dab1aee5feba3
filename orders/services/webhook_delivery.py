"""Sending webhook messages: claiming the due ones, one request each through
the outbound gateway, and recording its attempt.

At least once, and for one order in the order of its events per endpoint: a
message is claimed (a conditional UPDATE, so two senders never hold one) only
while no earlier message of its order to its endpoint is unfinished. A sender
that dies between the request and the record leaves its claim to expire; the
message is then sent again with the same webhook-id. An endpoint whose every
attempt has failed for WEBHOOK_DISABLE_AFTER_SECONDS is disabled and the
admins are told, once.
"""

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from orders import outbound
from orders.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from orders.services.failures import admins_mail
from orders.services.webhooks import UNFINISHED, webhook_signing_secrets

logger = logging.getLogger(__name__)

State = WebhookMessage.State
# A claim outlives the longest request by this much before it is taken for lost.
LEASE_MARGIN_SECONDS = 10


@dataclass(frozen=True)
class Outgoing:
    """A claimed message, as plain values: all the request needs."""

    message_pk: int
    msg_id: str
    endpoint_pk: int
    order_pk: int
    url: str
    # Out of its repr, so no log line or failure record can show them.
    secrets: list = field(repr=False)
    body: bytes = field(repr=False)
    attempt: int = 0


def webhook_lease_seconds() -> float:
    return settings.WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS


def webhook_endpoints_due(*, now=None) -> list[int]:
    """Enabled endpoints with a message due now."""
    now = now or timezone.now()
    return list(
        WebhookMessage.objects.filter(
            state=State.PENDING, next_attempt_at__lte=now, endpoint__enabled=True
        )
        .order_by()
        .values_list("endpoint_id", flat=True)
        .distinct()
    )


def webhook_messages_claim(*, endpoint_id: int, limit: int, now=None) -> list[Outgoing]:
    """Claim up to `limit` due messages of an enabled endpoint, oldest due first,
    each the earliest unfinished message of its order to this endpoint."""
    now = now or timezone.now()
    if limit < 1:
        return []
    earlier = WebhookMessage.objects.filter(
        endpoint=OuterRef("endpoint"),
        order=OuterRef("order"),
        event_number__lt=OuterRef("event_number"),
        state__in=UNFINISHED,
    )
    lease_until = now + timedelta(seconds=webhook_lease_seconds())
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).first()
        if endpoint is None:
            return []
        candidates = list(
            WebhookMessage.objects.select_for_update(skip_locked=True)
            .filter(endpoint=endpoint, state=State.PENDING, next_attempt_at__lte=now)
            .exclude(Exists(earlier))
            .order_by("next_attempt_at", "pk")
            .values_list("pk", "msg_id", "order_id", "body", "attempts")[:limit]
        )
        secrets = webhook_signing_secrets(endpoint, now)
        # One UPDATE for all: the rows are locked (PostgreSQL) or the database
        # is (SQLite's IMMEDIATE transaction), and the condition on the state
        # keeps it right on any other database.
        ids = [pk for pk, *_ in candidates]
        taken = WebhookMessage.objects.filter(pk__in=ids, state=State.PENDING).update(
            state=State.SENDING,
            attempts=F("attempts") + 1,
            lease_expires_at=lease_until,
        )
        if taken != len(ids):
            ids = set(
                WebhookMessage.objects.filter(
                    pk__in=ids, state=State.SENDING, lease_expires_at=lease_until
                ).values_list("pk", flat=True)
            )
        claimed = [
            Outgoing(
                message_pk=pk,
                msg_id=msg_id,
                endpoint_pk=endpoint.pk,
                order_pk=order_pk,
                url=endpoint.url,
                secrets=secrets,
                body=body.encode(),
                attempt=attempts + 1,
            )
            for pk, msg_id, order_pk, body, attempts in candidates
            if pk in ids
        ]
    return claimed


def webhook_message_send(outgoing: Outgoing) -> WebhookAttempt:
    """Send a claimed message once and record what happened."""
    started_at = timezone.now()
    timestamp = int(time.time())
    result = outbound.post(
        url=outgoing.url,
        headers=outbound.signed_headers(
            secrets=outgoing.secrets,
            msg_id=outgoing.msg_id,
            timestamp=timestamp,
            body=outgoing.body,
        ),
        body=outgoing.body,
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS,
        max_response_bytes=settings.WEBHOOK_RESPONSE_BYTES,
    )
    return webhook_attempt_record(outgoing, result, started_at=started_at)


def webhook_attempt_record(
    outgoing: Outgoing, result: outbound.PostResult, *, started_at: datetime
) -> WebhookAttempt:
    """The attempt's log row and the message's next state, in one transaction:
    delivered, due again on the retry schedule, or given up. A claim that has
    expired meanwhile (the message was taken back) logs the attempt only."""
    now = timezone.now()
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    with transaction.atomic():
        attempt = WebhookAttempt.objects.create(
            message_id=outgoing.message_pk,
            endpoint_id=outgoing.endpoint_pk,
            order_id=outgoing.order_pk,
            number=outgoing.attempt,
            started_at=started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            succeeded=result.succeeded,
            response_head=result.response_head.decode("utf-8", "replace"),
            error=result.error[:500],
        )
        held = WebhookMessage.objects.filter(
            pk=outgoing.message_pk, state=State.SENDING, attempts=outgoing.attempt
        )
        if result.succeeded:
            finished = held.update(
                state=State.DELIVERED, delivered_at=now, lease_expires_at=None
            )
            WebhookEndpoint.objects.filter(
                pk=outgoing.endpoint_pk, failing_since__isnull=False
            ).update(failing_since=None)
        elif outgoing.attempt <= len(schedule):
            held.update(
                state=State.PENDING,
                lease_expires_at=None,
                next_attempt_at=now + timedelta(seconds=schedule[outgoing.attempt - 1]),
            )
            finished = 0
        else:
            finished = held.update(state=State.FAILED, lease_expires_at=None)
        if finished:
            _wake_next(outgoing.message_pk, now)
        if not result.succeeded:
            _endpoint_failed(outgoing.endpoint_pk, started_at, now)
    return attempt


def _wake_next(message_pk: int, now) -> None:
    """The next message of the same order to the same endpoint is due now."""
    message = WebhookMessage.objects.get(pk=message_pk)
    following = (
        WebhookMessage.objects.filter(
            endpoint_id=message.endpoint_id,
            order_id=message.order_id,
            state=State.PENDING,
            next_attempt_at__isnull=True,
            event_number__gt=message.event_number,
        )
        .order_by("event_number")
        .values_list("pk", flat=True)
        .first()
    )
    if following is not None:
        WebhookMessage.objects.filter(
            pk=following, next_attempt_at__isnull=True
        ).update(next_attempt_at=now)


def _endpoint_failed(endpoint_pk: int, started_at, now) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint_pk, failing_since__isnull=True).update(
        failing_since=started_at
    )
    limit = timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint_pk, enabled=True, failing_since__lte=now - limit
    ).update(
        enabled=False,
        disabled_at=now,
        disabled_reason=(
            f"every attempt failed for {settings.WEBHOOK_DISABLE_AFTER_SECONDS:g} s"
        ),
    )
    if disabled:
        endpoint = WebhookEndpoint.objects.get(pk=endpoint_pk)
        transaction.on_commit(lambda: _mail_disabled(endpoint))


def _mail_disabled(endpoint: WebhookEndpoint) -> None:
    logger.warning("disabled webhook endpoint #%s: %s", endpoint.pk, endpoint.url)
    admins_mail(
        subject=f"Webhook endpoint #{endpoint.pk} disabled: {endpoint.url}",
        body=(
            f"Every attempt to send to {endpoint.url} has failed since "
            f"{endpoint.failing_since.isoformat()}, so it was disabled at "
            f"{endpoint.disabled_at.isoformat()}.\n\n"
            "Its waiting messages are kept. Once the receiver is fixed, enable it "
            "in the console and replay what it missed:\n"
            f"    manage.py webhooks replay {endpoint.pk} --since "
            f"{endpoint.failing_since.isoformat()}\n"
        ),
    )


# Taking back and waking ---------------------------------------------------------


def webhook_messages_expire(*, now=None) -> int:
    """Messages whose sender vanished (SIGKILL between the request and its
    record): the attempt counts as failed with no answer known, and the
    message is sent again on the schedule, with the same webhook-id."""
    now = now or timezone.now()
    lost = list(
        WebhookMessage.objects.filter(state=State.SENDING, lease_expires_at__lte=now)
        .select_related("endpoint")
        .order_by("lease_expires_at")[:200]
    )
    for message in lost:
        outgoing = Outgoing(
            message_pk=message.pk,
            msg_id=message.msg_id,
            endpoint_pk=message.endpoint_id,
            order_pk=message.order_id,
            url=message.endpoint.url,
            secrets=[],
            body=b"",
            attempt=message.attempts,
        )
        lease = timedelta(seconds=webhook_lease_seconds())
        webhook_attempt_record(
            outgoing,
            outbound.PostResult(
                None, 0, b"", "no outcome recorded: the sender stopped; sent again"
            ),
            started_at=message.lease_expires_at - lease,
        )
    return len(lost)


def webhook_messages_wake(*, now=None) -> int:
    """Messages left waiting behind an order's earlier message that has
    finished (its wake-up raced with their fan-out): due now."""
    now = now or timezone.now()
    earlier = WebhookMessage.objects.filter(
        endpoint=OuterRef("endpoint"),
        order=OuterRef("order"),
        event_number__lt=OuterRef("event_number"),
        state__in=UNFINISHED,
    )
    stranded = (
        WebhookMessage.objects.filter(state=State.PENDING, next_attempt_at__isnull=True)
        .exclude(Exists(earlier))
        .values("pk")
    )
    return WebhookMessage.objects.filter(
        pk__in=list(stranded.values_list("pk", flat=True)[:1000])
    ).update(next_attempt_at=now)
