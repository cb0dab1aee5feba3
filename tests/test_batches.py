"""A worker takes the orders waiting behind its own along (a batch): each order
still gets its own attempt, timeline and outcome, and a task whose order was
taken along changes nothing."""

import threading

import pytest
from django.db import connection

from orders.exceptions import TransientStepError
from orders.gateways import SimulatedStep, simulated_ledger
from orders.models import Delivery, Order, OrderEvent
from orders.services import attempts
from orders.services.attempts import (
    BatchSizer,
    order_claim_batch,
)
from orders.state import transitions
from tests.expected import CLEAN_RUN_EVENTS, STOCK_FAILS_ONCE_EVENTS
from tests.factories import claim, event_types, process

Status = Order.Status

pytestmark = pytest.mark.usefixtures("immediate_retries")


def statuses(orders) -> list[str]:
    return [Order.objects.get(pk=order.pk).status for order in orders]


@pytest.mark.django_db
def test_a_worker_takes_the_orders_placed_after_its_own_along(place_order):
    older = place_order()
    asked, *behind = [place_order() for _ in range(5)]
    returned = process(asked.order_id, companions=3)
    assert returned.order_id == asked.order_id
    assert returned.status == Status.COMPLETED
    # Its own order, then the three oldest placed after it; not the one placed
    # before it (its task is ahead in the queue), not the fifth.
    assert statuses([older, asked, *behind]) == [
        Status.PENDING,
        Status.COMPLETED,
        Status.COMPLETED,
        Status.COMPLETED,
        Status.COMPLETED,
        Status.PENDING,
    ]
    for order in [asked, *behind[:3]]:
        order.refresh_from_db()
        assert event_types(order) == CLEAN_RUN_EVENTS
        assert order.attempts == 1
        assert set(order.steps) == {"payment", "stock"}
        assert Delivery.objects.filter(order=order).count() == 1
        details = OrderEvent.objects.filter(
            order=order, type=OrderEvent.Type.PROCESSING
        ).values_list("detail", flat=True)
        assert list(details) == ["attempt 1 of 3"]
    charges = simulated_ledger().references()
    assert len(charges) == 8


@pytest.mark.django_db
def test_the_task_of_an_order_taken_along_changes_nothing(place_order):
    asked, taken_along = place_order(), place_order()
    process(asked.order_id, companions=1)
    taken_along.refresh_from_db()
    version, events = taken_along.version, event_types(taken_along)
    returned = process(taken_along.order_id, companions=5)
    assert returned.status == Status.COMPLETED
    assert returned.version == version
    taken_along.refresh_from_db()
    assert (taken_along.version, taken_along.attempts) == (version, 1)
    assert event_types(taken_along) == events


@pytest.mark.django_db
def test_an_order_with_a_simulation_plan_is_never_taken_along(place_order):
    asked = place_order()
    planned = place_order(simulate={"delay_ms": 0})
    plain = place_order()
    process(asked.order_id, companions=5)
    assert statuses([asked, planned, plain]) == [
        Status.COMPLETED,
        Status.PENDING,
        Status.COMPLETED,
    ]


@pytest.mark.django_db
def test_an_order_with_a_simulation_plan_takes_no_order_along(place_order):
    planned = place_order(simulate={"delay_ms": 0})
    plain = place_order()
    process(planned.order_id, companions=5)
    assert statuses([planned, plain]) == [Status.COMPLETED, Status.PENDING]


class StockDownFor:
    """The stock gateway, unavailable for one order: a transient failure in
    the middle of a batch."""

    name = "stock"

    def __init__(self, order_id: str):
        self.order_id = order_id

    def run(self, order, *, attempt, idempotency_key):
        if order.order_id == self.order_id:
            raise TransientStepError("stock", "stock service unavailable")
        return SimulatedStep("stock").run(
            order, attempt=attempt, idempotency_key=idempotency_key
        )


@pytest.mark.django_db
def test_an_order_that_fails_in_a_batch_gets_its_own_retry_and_the_others_complete(
    place_order, monkeypatch
):
    first, failing, last = place_order(), place_order(), place_order()
    monkeypatch.setattr(
        attempts,
        "order_steps",
        lambda: [SimulatedStep("payment"), StockDownFor(failing.order_id)],
    )
    process(first.order_id, companions=2)
    assert statuses([first, failing, last]) == [
        Status.COMPLETED,
        Status.RETRYING,
        Status.COMPLETED,
    ]
    failing.refresh_from_db()
    assert list(failing.steps) == ["payment"]
    monkeypatch.undo()
    process(failing.order_id, companions=2)
    failing.refresh_from_db()
    assert failing.status == Status.COMPLETED
    assert event_types(failing) == STOCK_FAILS_ONCE_EVENTS


@pytest.mark.django_db
def test_a_retry_is_claimed_the_general_way_and_says_where_it_resumes(place_order):
    order = place_order(simulate={"step": "stock", "fail_times": 1})
    process(order.order_id)
    behind = place_order()
    process(order.order_id, companions=5)
    order.refresh_from_db()
    assert order.status == Status.COMPLETED
    details = OrderEvent.objects.filter(
        order=order, type=OrderEvent.Type.PROCESSING
    ).values_list("detail", flat=True)
    assert list(details) == [
        "attempt 1 of 3",
        "attempt 2 of 3; resuming at stock (payment done)",
    ]
    # An order with a plan takes none along, its retries neither.
    assert statuses([behind]) == [Status.PENDING]


@pytest.mark.django_db
def test_a_move_whose_order_changed_since_it_was_read_is_the_only_one_not_written(
    place_order,
):
    orders = [claim(place_order()) for _ in range(3)]
    stale = Order.objects.get(pk=orders[1].pk)
    stale.version -= 1
    moves = [
        transitions.plan_step(order, step="payment", detail="paid", changes={})
        for order in [orders[0], stale, orders[2]]
    ]
    assert transitions.apply(moves) == [True, False, True]
    written = [
        OrderEvent.objects.filter(order=order, type="order.step_completed").count()
        for order in orders
    ]
    assert written == [1, 0, 1]
    assert orders[0].version == Order.objects.get(pk=orders[0].pk).version


@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_the_same_waiting_orders_claim_each_once(place_order):
    orders = [place_order() for _ in range(12)]
    barrier = threading.Barrier(3)
    claimed: list[list[str]] = []

    def worker(asked):
        barrier.wait()
        result = order_claim_batch(order_id=asked.order_id, companions=11)
        claimed.append([order.order_id for order in result.orders])
        connection.close()

    threads = [
        threading.Thread(target=worker, args=(orders[index],)) for index in (0, 1, 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every_claim = [order_id for batch in claimed for order_id in batch]
    assert sorted(every_claim) == sorted(order.order_id for order in orders)
    for order in orders:
        assert event_types(order).count("order.processing") == 1
        assert Order.objects.get(pk=order.pk).attempts == 1


def test_a_worker_takes_no_order_along_before_it_has_timed_one(settings):
    settings.ORDER_BATCH_SIZE = 50
    assert BatchSizer().companions() == 0


def test_a_batch_is_sized_to_the_time_its_orders_took(settings):
    settings.ORDER_BATCH_SIZE = 50
    settings.ORDER_BATCH_SECONDS = 0.1
    sizer = BatchSizer()
    sizer.ran(orders=10, seconds=0.02)
    # 2 ms an order: 50 fit in 0.1 s, so 49 along with its own.
    assert sizer.companions() == 49
    sizer.ran(orders=1, seconds=0.5)
    # A slow order halves the estimate's weight each time: 251 ms, none along.
    assert sizer.companions() == 0


def test_batches_of_one_take_nothing_along(settings):
    settings.ORDER_BATCH_SIZE = 1
    sizer = BatchSizer()
    sizer.ran(orders=1, seconds=0.001)
    assert sizer.companions() == 0
