"""django-q2 entry points: take ids, call services. What a worker process
keeps between tasks (its batch sizer, the cluster's taken-along table) is
handed to the service from here, so the write side never imports the queue
plumbing."""

from orders.services import deliveries as deliveries_services
from orders.services import receivers as receivers_services
from orders.services.attempts import BatchSizer, order_process_queued
from orders.workers.djangoq import taken_along

# This worker process's own: it sizes the batches by the orders this process ran.
_batch_sizer = BatchSizer()


def process_order(order_id: str, queued_at_us: int | None = None) -> str | None:
    """A task whose order a batch of this cluster took along while the order's
    row held the task's stamp `queued_at_us` (noted) returns None at once,
    without a query: the attempt it was queued for is claimed already."""
    if taken_along.was_taken_along(order_id, queued_at_us):
        return None
    order = order_process_queued(
        order_id=order_id,
        batch_sizer=_batch_sizer,
        note_taken_along=taken_along.note_taken_along,
    )
    return order.status if order else None


def order_delivery_completed(order_id: str, code: str) -> str:
    """The listener of `delivery.completed`. It may raise: the global failure
    handler (the django-q2 hook in orders.operations.hooks) records what escapes."""
    order = deliveries_services.order_delivery_completed(order_id=order_id, code=code)
    return order.delivered_at.isoformat() if order.delivered_at else ""


def signal_receiver_run(call_id: int) -> str | None:
    """One call of a signal receiver (orders/signals.py). A receiver that raises
    is recorded and retried by the service; the task returns normally."""
    call = receivers_services.receiver_call_run(call_id=call_id)
    return call.state if call else None
