"""Orders made the way the API makes them, for tests that start from one."""

from decimal import Decimal

from orders import services
from orders.models import Order, OrderEvent
from orders.validation import SIMULATE_DEFAULTS, LineInput, OrderInput


def place(**simulate) -> Order:
    """A PENDING order (through the service, not the validator), with a
    `simulate` plan when keywords are given."""
    data = OrderInput(
        customer_email="buyer@example.com",
        lines=[LineInput(sku="MUG-1", quantity=2, unit_price=Decimal("12.50"))],
        simulate={**SIMULATE_DEFAULTS, **simulate} if simulate else {},
    )
    return services.order_place(data=data)[0]


def processed(**simulate) -> Order:
    """An order after one attempt, as a worker would leave it."""
    order = place(**simulate)
    services.order_process(order_id=order.order_id)
    order.refresh_from_db()
    return order


def process_until_terminal(order: Order, limit: int = 10) -> Order:
    """Run attempts as a worker would (retries due at once: the
    immediate_retries fixture) until the order is COMPLETED or FAILED."""
    for _ in range(limit):
        order = services.order_process(order_id=order.order_id)
        if order.is_terminal:
            return order
    raise AssertionError(f"{order} still {order.status} after {limit} attempts")


def event_types(order: Order) -> list[str]:
    """The order's timeline, event types in the order they were written."""
    return list(
        OrderEvent.objects.filter(order=order)
        .order_by("id")
        .values_list("type", flat=True)
    )
