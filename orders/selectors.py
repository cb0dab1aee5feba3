"""Reads: what the API, pages and streams show of orders."""

from datetime import datetime

from django.urls import reverse

from .models import Order, OrderEvent


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def order_get(order_id: str) -> Order | None:
    return Order.objects.filter(order_id=order_id).first()


def order_version(order_id: str) -> int | None:
    return (
        Order.objects.filter(order_id=order_id)
        .values_list("version", flat=True)
        .first()
    )


def event_document(event: OrderEvent, order_id: str | None = None) -> dict:
    """The SSE `data` of an event, and an entry of the status document's events."""
    return {
        "event_id": event.pk,
        "order_id": order_id or event.order.order_id,
        "type": event.type,
        "status": event.status,
        "attempt": event.attempt,
        "at": iso(event.at),
        "detail": event.detail,
        "next_attempt_at": iso(event.next_attempt_at),
        "duration_ms": event.duration_ms,
    }


def order_timeline(order: Order) -> list[OrderEvent]:
    return list(OrderEvent.objects.filter(order=order).order_by("id"))


def order_links(order: Order) -> dict:
    return {
        "status_url": reverse("api-order", args=[order.order_id]),
        "events_url": reverse("api-order", args=[order.order_id]) + "/events",
        "page_url": reverse("order-page", args=[order.order_id]),
    }


def order_document(order: Order) -> dict:
    delivery = getattr(order, "delivery", None)
    return {
        "order_id": order.order_id,
        "status": order.status,
        "amount": str(order.amount),
        "currency": order.currency,
        "customer_email": order.customer_email,
        "items": [
            {
                "sku": line.sku,
                "quantity": line.quantity,
                "unit_price": str(line.unit_price),
            }
            for line in order.lines.all()
        ],
        "attempts": order.attempts,
        "max_attempts": order.max_attempts,
        "next_attempt_at": iso(order.next_attempt_at),
        "failure_reason": order.failure_reason or None,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "delivery": {
            "code": delivery.code,
            "completed_at": iso(delivery.completed_at),
        }
        if delivery
        else None,
        "delivered_at": iso(order.delivered_at),
        "version": order.version,
        **order_links(order),
        "events": [
            event_document(event, order.order_id) for event in order_timeline(order)
        ],
    }
