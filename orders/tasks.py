"""django-q2 entry points: take ids, call services, nothing else."""

from orders.services import deliveries as deliveries_services
from orders.services.attempts import order_process_queued


def process_order(order_id: str, queued_at_us: int | None = None) -> str | None:
    order = order_process_queued(order_id=order_id, queued_at_us=queued_at_us)
    return order.status if order else None


def order_delivery_completed(order_id: str, code: str) -> str:
    """The listener of `delivery.completed`. It may raise: the global failure
    handler (the django-q2 hook in orders.operations.hooks) records what escapes."""
    order = deliveries_services.order_delivery_completed(order_id=order_id, code=code)
    return order.delivered_at.isoformat() if order.delivered_at else ""
