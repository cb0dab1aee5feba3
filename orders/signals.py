"""The order timeline's Django signals: the extension point for in-process code.

Connect a receiver as to any Django signal (in your AppConfig.ready):

    from orders.signals import order_completed

    @receiver(order_completed)
    def tell_the_warehouse(sender, order, event, **kwargs): ...

A receiver never runs in the request or in the order's transaction: after the
event commits, a worker calls it in a transaction of its own
(orders/services/receivers.py), once per event and receiver. One that raises is
retried with backoff and recorded as a failure under its own dotted path; the
order and the other receivers go on. `sender` is the Order class, `order` the
order as it is when the receiver runs, `event` the event's document (the SSE
`data`: event_id, type, status, attempt, at, detail, ...).

EVENT_TYPES is the catalogue webhooks send from too.
"""

from django.dispatch import Signal

order_created = Signal()
order_processing = Signal()
order_step_completed = Signal()
order_attempt_failed = Signal()
order_retry_scheduled = Signal()
order_completed = Signal()
order_failed = Signal()
order_retry_requested = Signal()
delivery_completed = Signal()

# The events other systems may subscribe to, and each one's signal (the
# timeline's internal listener.failed is not one).
EVENT_TYPES: dict[str, Signal] = {
    "order.created": order_created,
    "order.processing": order_processing,
    "order.step_completed": order_step_completed,
    "order.attempt_failed": order_attempt_failed,
    "order.retry_scheduled": order_retry_scheduled,
    "order.completed": order_completed,
    "order.failed": order_failed,
    "order.retry_requested": order_retry_requested,
    "delivery.completed": delivery_completed,
}

SIGNAL_NAMES: dict[str, str] = {
    event_type: event_type.replace(".", "_") for event_type in EVENT_TYPES
}
