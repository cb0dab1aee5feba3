"""Webhook endpoints: adding, disabling, enabling, rotating a secret, and an
operator's redelivery or replay. The sending is orders/services/
webhook_delivery.py's; what is sent comes from the timeline
(orders/services/relay.py)."""

import json
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from orders import outbound
from orders.exceptions import WebhookEndpointNotFound, WebhookInputError
from orders.models import OrderEvent, RelayCursor, WebhookEndpoint, WebhookMessage
from orders.selectors import event_document, iso
from orders.signals import EVENT_TYPES

State = WebhookMessage.State
UNFINISHED = (State.PENDING, State.SENDING)
WEBHOOKS_CURSOR = "webhooks"


def webhook_event_types(event_types) -> list[str]:
    """The event types as an endpoint stores them; empty: every type. Raises
    WebhookInputError for a type not in the catalogue."""
    chosen = list(dict.fromkeys(t.strip() for t in event_types or () if t.strip()))
    unknown = [t for t in chosen if t not in EVENT_TYPES]
    if unknown:
        raise WebhookInputError(
            f"unknown event type(s) {', '.join(unknown)}; choose from "
            f"{', '.join(EVENT_TYPES)}"
        )
    return chosen


def webhook_url_check(url: str) -> None:
    """Raise WebhookTargetRefused for a URL an endpoint may not have (its form,
    and where its name resolves now)."""
    outbound.check_target(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS)


def webhook_endpoint_add(
    *, url: str, event_types=(), description: str = ""
) -> tuple[WebhookEndpoint, str]:
    """A new enabled endpoint and its signing secret, the one time it is shown.
    It gets the events written from now on. Raises WebhookTargetRefused for a
    URL that may not be called, WebhookInputError for unknown event types."""
    webhook_url_check(url)
    types = webhook_event_types(event_types)
    secret = outbound.new_secret()
    with transaction.atomic():
        newest = _newest_event()
        RelayCursor.objects.get_or_create(
            name=WEBHOOKS_CURSOR, defaults={"event_number": newest}
        )
        endpoint = WebhookEndpoint.objects.create(
            url=url,
            description=description,
            event_types=types,
            secret=secret,
            since_event=newest,
        )
    return endpoint, secret


def webhook_endpoint_get(endpoint_id) -> WebhookEndpoint:
    try:
        return WebhookEndpoint.objects.get(pk=int(endpoint_id))
    except (ValueError, TypeError, WebhookEndpoint.DoesNotExist):
        raise WebhookEndpointNotFound(endpoint_id) from None


def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, url: str, event_types, description: str
) -> WebhookEndpoint:
    """The console's edit: the URL is checked as at add time."""
    webhook_url_check(url)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        url=url, event_types=webhook_event_types(event_types), description=description
    )
    endpoint.refresh_from_db()
    return endpoint


def webhook_endpoint_disable(
    *, endpoint_id, reason: str = "disabled by an operator", now=None
) -> bool:
    """Stop sending to it; its waiting messages stay, for when it is enabled.
    Returns whether it was enabled."""
    endpoint = webhook_endpoint_get(endpoint_id)
    return bool(
        WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
            enabled=False,
            disabled_at=now or timezone.now(),
            disabled_reason=reason[:300],
        )
    )


def webhook_endpoint_enable(*, endpoint_id) -> bool:
    """Send to it again, the events from now on (what it missed meanwhile is a
    replay away) and its waiting messages."""
    endpoint = webhook_endpoint_get(endpoint_id)
    return bool(
        WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=False).update(
            enabled=True,
            disabled_at=None,
            disabled_reason="",
            failing_since=None,
            since_event=_newest_event(),
        )
    )


def webhook_endpoint_rotate_secret(
    *, endpoint_id, now=None
) -> tuple[WebhookEndpoint, str]:
    """A new secret, shown this once. The old one keeps signing too for
    WEBHOOK_SECRET_ROTATION_SECONDS, so a receiver can switch in its time."""
    now = now or timezone.now()
    endpoint = webhook_endpoint_get(endpoint_id)
    secret = outbound.new_secret()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        secret=secret,
        previous_secret=endpoint.secret,
        previous_secret_expires_at=now
        + timedelta(seconds=settings.WEBHOOK_SECRET_ROTATION_SECONDS),
    )
    endpoint.refresh_from_db()
    return endpoint, secret


def webhook_signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets a request is signed with now: the current one, and the
    previous one while its rotation window lasts."""
    secrets = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        secrets.append(endpoint.previous_secret)
    return secrets


# What is sent ---------------------------------------------------------------------


def webhook_body(event: OrderEvent) -> str:
    """The JSON body of an event: {"type", "timestamp", "data"}, the data being
    the event's document (as the streams send it) and what a receiver needs of
    the order."""
    order = event.order
    document = event_document(event, order.order_id)
    data = {
        "order_id": order.order_id,
        "status": document["status"],
        "event_id": document["event_id"],
        "attempt": document["attempt"],
        "max_attempts": order.max_attempts,
        "amount": str(order.amount),
        "currency": order.currency,
        "detail": document["detail"],
        "next_attempt_at": document["next_attempt_at"],
        "step": document["step"],
    }
    body = {"type": event.type, "timestamp": iso(event.at), "data": data}
    return json.dumps(body, separators=(",", ":"))


# An operator's answers ----------------------------------------------------------


def webhook_message_redeliver(*, message_id: int, now=None) -> WebhookMessage:
    """Send this message again now, with its webhook-id, whatever it did before
    (a message already waiting or being sent is left as it is)."""
    now = now or timezone.now()
    WebhookMessage.objects.filter(pk=message_id).exclude(state__in=UNFINISHED).update(
        state=State.PENDING, next_attempt_at=now, lease_expires_at=None, attempts=0
    )
    return WebhookMessage.objects.get(pk=message_id)


def webhook_endpoint_replay(*, endpoint_id, since: datetime, now=None) -> int:
    """Send the endpoint every event it wants since `since` again: its messages
    since then once more (same webhook-id) and a new message for each event it
    got none for (it was disabled, or added later), while the timeline still
    holds the event. Returns how many messages will be sent."""
    now = now or timezone.now()
    endpoint = webhook_endpoint_get(endpoint_id)
    with transaction.atomic():
        again = (
            WebhookMessage.objects.filter(endpoint=endpoint, created_at__gte=since)
            .exclude(state__in=UNFINISHED)
            .update(
                state=State.PENDING,
                next_attempt_at=now,
                lease_expires_at=None,
                attempts=0,
            )
        )
        have = set(
            WebhookMessage.objects.filter(endpoint=endpoint).values_list(
                "event_number", flat=True
            )
        )
        events = (
            OrderEvent.objects.filter(at__gte=since, type__in=list(EVENT_TYPES))
            .select_related("order")
            .order_by("id")
        )
        new = [
            WebhookMessage(
                endpoint=endpoint,
                order=event.order,
                event_number=event.pk,
                event_type=event.type,
                body=webhook_body(event),
                next_attempt_at=now,
            )
            for event in events.iterator()
            if event.pk not in have and endpoint.wants(event.type)
        ]
        WebhookMessage.objects.bulk_create(new, ignore_conflicts=True)
    return again + len(new)


def _newest_event() -> int:
    return OrderEvent.objects.aggregate(newest=Max("pk"))["newest"] or 0
