"""Orders made the way the API makes them, for tests that start from one."""

from decimal import Decimal

from orders.api.validation import SIMULATE_DEFAULTS
from orders.models import FailureRecord, Order, OrderEvent
from orders.services import orders as services
from orders.services.attempts import (
    BatchSizer,
    order_claim_batch,
    order_process_queued,
)
from orders.services.failure_actions import failure_resolve
from orders.services.failures import failure_store
from orders.services.inputs import LineInput, OrderInput
from orders.workers.djangoq import taken_along


def place(**simulate) -> Order:
    """A PENDING order (through the service, not the validator), with a
    `simulate` plan when keywords are given."""
    data = OrderInput(
        customer_email="buyer@example.com",
        lines=[LineInput(sku="MUG-1", quantity=2, unit_price=Decimal("12.50"))],
        simulate={**SIMULATE_DEFAULTS, **simulate} if simulate else {},
    )
    return services.order_place(data=data)[0]


class FixedBatch(BatchSizer):
    """A worker's batch sizer that takes along exactly `companions` waiting
    orders, whatever the orders before took."""

    def __init__(self, companions: int = 0):
        super().__init__()
        self.fixed = companions

    def companions(self) -> int:
        return self.fixed


def process(order_id: str, *, companions: int = 0) -> Order | None:
    """The order's queued task as a worker runs it (the service that
    orders.tasks.process_order calls, with the same taken-along note), taking
    along exactly `companions` orders waiting behind it. Returns the order as
    the attempt left it, or as it was if it could not be claimed."""
    return order_process_queued(
        order_id=order_id,
        batch_sizer=FixedBatch(companions),
        note_taken_along=taken_along.note_taken_along,
    )


def claim(order: Order) -> Order:
    """The order claimed for an attempt as a worker claims it (PROCESSING, the
    attempt counted, a lease), its steps not run yet: as a worker that stopped
    right after its claim leaves it."""
    claimed = order_claim_batch(order_id=order.order_id)
    assert claimed.orders, f"{order.order_id} could not be claimed"
    return claimed.orders[0]


def processed(**simulate) -> Order:
    """An order after one attempt, as a worker would leave it."""
    order = place(**simulate)
    process(order.order_id)
    order.refresh_from_db()
    return order


def process_until_terminal(order: Order, limit: int = 10) -> Order:
    """Run attempts as a worker would (retries due at once: the
    immediate_retries fixture) until the order is COMPLETED or FAILED."""
    for _ in range(limit):
        order = process(order.order_id)
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


def failure_traceback(
    *,
    where: str = "orders/services/orders.py",
    function: str = "order_process",
    line="KeyError",
) -> str:
    """A traceback's text raised in `function` of the project's file `where`,
    through a frame of Django's, as the failure handler stores it."""
    from django.conf import settings

    return (
        "Traceback (most recent call last):\n"
        f'  File "{settings.BASE_DIR / where}", line 10, in {function}\n'
        "    Order.objects.get(pk=1)\n"
        '  File "/venv/lib/python3.11/site-packages/django/db/models/query.py", '
        "line 633, in get\n"
        "    raise self.model.DoesNotExist(\n"
        f"{line}\n"
    )


def failure_record(
    order: Order | None = None,
    *,
    task: str = "orders.tasks.process_order",
    exception_type: str = "KeyError",
    message: str = "'card_token'",
    traceback: str | None = None,
    args: list | None = None,
    kwargs: dict | None = None,
    resolved: bool = False,
    occurred_at=None,
) -> FailureRecord:
    """A failure stored as the failure handler stores it, in its group."""
    record = failure_store(
        task=task,
        args=args if args is not None else ([order.order_id] if order else []),
        kwargs=kwargs or {},
        exception_type=exception_type,
        message=message,
        traceback_text=traceback
        if traceback is not None
        else failure_traceback(line=f"{exception_type}: {message}"),
        order=order,
        now=occurred_at,
    )
    if resolved:
        failure_resolve(failure=record)
    return record
