"""django-q2 entry points: take ids, call services, nothing else."""

from . import services


def process_order(order_id: str) -> str | None:
    order = services.order_process(order_id=order_id)
    return order.status if order else None
