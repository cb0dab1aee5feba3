"""The dispatcher's sweep against the real ORM broker (django-q2's OrmQ table in
the test database): a waiting task is not taken for a lost one, a lost one is
enqueued again, and one bad row costs only itself."""

import contextlib
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from redis.exceptions import ConnectionError as RedisConnectionError

from orders.models import Delivery, FailureRecord, Order
from orders.services import orders as services
from orders.services.deliveries import delivery_complete
from orders.services.failure_actions import failure_resolve
from orders.workers import dispatcher
from orders.workers.dispatcher import (
    ENQUEUE_CLOCK_SLACK,
    LEFT_QUEUE_GRACE_SECONDS,
    ROW_FAILURE_BACKOFF_SECONDS,
    dispatch_due_listeners,
    dispatch_due_orders,
    expire_leases,
    task_still_queued,
)
from tests.factories import claim, place, processed
from tests.stack import wait_until

Status = Order.Status
SECOND = timedelta(seconds=1)


def queued_order_ids() -> list[str]:
    """The order of every process_order task waiting in the broker, oldest first."""
    return [
        row.task["args"][0]
        for row in OrmQ.objects.order_by("id")
        if row.task["func"] == services.PROCESS_ORDER_TASK
    ]


def placed_with_task(capture) -> Order:
    """A placed order whose task went to the broker when the placing committed."""
    with capture(execute=True):
        order = place()
    assert order.order_id in queued_order_ids()
    return order


def make_due(order: Order, **changes) -> None:
    Order.objects.filter(pk=order.pk).update(
        dispatch_due_at=timezone.now() - SECOND, **changes
    )


def reread(order: Order) -> Order:
    order.refresh_from_db()
    return order


# Which tasks still wait -------------------------------------------------------------


@pytest.mark.parametrize(
    ("oldest_offset", "still_queued"),
    [
        (None, False),  # the broker is empty
        (-timedelta(minutes=5), True),  # a long backlog ahead of it
        (timedelta(0), True),  # its own task is the oldest
        (ENQUEUE_CLOCK_SLACK, True),  # stamped just after queued_at was written
        (ENQUEUE_CLOCK_SLACK + SECOND, False),  # the queue has moved past it
    ],
)
def test_a_task_counts_as_queued_while_the_broker_holds_one_no_younger(
    oldest_offset, still_queued
):
    queued_at = timezone.now()
    oldest = None if oldest_offset is None else queued_at + oldest_offset
    assert task_still_queued(queued_at, oldest) is still_queued


# A long queue is not a lost task ----------------------------------------------------


@pytest.mark.django_db
def test_due_orders_whose_tasks_still_wait_in_the_queue_get_no_second_task(
    django_capture_on_commit_callbacks, settings
):
    first = placed_with_task(django_capture_on_commit_callbacks)
    second = placed_with_task(django_capture_on_commit_callbacks)
    make_due(first)
    make_due(second)

    assert dispatch_due_orders() == []

    assert queued_order_ids() == [first.order_id, second.order_id]
    for order in (reread(first), reread(second)):
        waited = order.dispatch_due_at - timezone.now()
        assert (
            timedelta(0)
            < waited
            <= timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)
        )


@pytest.mark.django_db
def test_an_order_far_back_in_the_queue_is_looked_at_again_when_the_queue_nears_it(
    django_capture_on_commit_callbacks, settings
):
    head = placed_with_task(django_capture_on_commit_callbacks)
    behind = placed_with_task(django_capture_on_commit_callbacks)
    # Enqueued 30 s after the head, and a minute later the head still waits.
    make_due(head)
    make_due(behind, queued_at=behind.queued_at + 30 * SECOND)
    oldest = dispatcher.oldest_queued_at()
    now = oldest + 60 * SECOND

    assert dispatch_due_orders(now=now) == []

    redispatch = timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)
    assert reread(head).dispatch_due_at == now + redispatch
    behind = reread(behind)
    expected = behind.queued_at + (now - oldest)
    assert abs(behind.dispatch_due_at - expected) < timedelta(milliseconds=1)
    assert behind.dispatch_due_at > now + redispatch
    assert queued_order_ids() == [head.order_id, behind.order_id]


@pytest.mark.django_db
def test_a_pending_order_whose_enqueue_failed_is_enqueued_by_the_sweep_after_a_grace(
    django_capture_on_commit_callbacks, monkeypatch, settings
):
    def broker_down(self, task):
        raise ConnectionError("the broker refused the task")

    with monkeypatch.context() as patch:
        patch.setattr(ORM, "enqueue", broker_down)
        with django_capture_on_commit_callbacks(execute=True):
            order = place()
    assert queued_order_ids() == []
    due = reread(order).dispatch_due_at
    assert due == order.queued_at + timedelta(seconds=settings.ORDER_REDISPATCH_SECONDS)

    # Not before its due time, then not before the grace: it may be on its way.
    assert dispatch_due_orders(now=due - SECOND) == []
    assert dispatch_due_orders(now=due) == []
    order = reread(order)
    assert order.queued_at is None
    assert order.dispatch_due_at == due + timedelta(seconds=LEFT_QUEUE_GRACE_SECONDS)
    assert dispatch_due_orders(now=order.dispatch_due_at - SECOND / 10) == []

    assert dispatch_due_orders(now=order.dispatch_due_at) == [order.order_id]
    assert queued_order_ids() == [order.order_id]
    assert dispatch_due_orders(now=order.dispatch_due_at) == []


@pytest.mark.django_db
def test_an_order_the_queue_has_moved_past_unclaimed_is_enqueued_again(
    django_capture_on_commit_callbacks,
):
    lost = placed_with_task(django_capture_on_commit_callbacks)
    waiting = placed_with_task(django_capture_on_commit_callbacks)
    # The queue lost the first task; the second one, enqueued 10 s later, waits.
    OrmQ.objects.filter(id=OrmQ.objects.order_by("id").first().id).delete()
    make_due(lost, queued_at=lost.queued_at - 10 * SECOND)
    make_due(waiting)

    assert dispatch_due_orders() == []
    lost, waiting = reread(lost), reread(waiting)
    assert lost.queued_at is None
    assert waiting.queued_at is not None

    assert dispatch_due_orders(now=lost.dispatch_due_at) == [lost.order_id]
    assert queued_order_ids() == [waiting.order_id, lost.order_id]


@pytest.mark.django_db
def test_a_due_retry_is_enqueued_at_its_due_time_even_behind_a_backlog(
    django_capture_on_commit_callbacks, settings
):
    settings.ORDER_RETRY_JITTER = 0
    backlog = placed_with_task(django_capture_on_commit_callbacks)
    make_due(backlog)
    retrying = processed(fail_times=1)
    assert (retrying.status, retrying.queued_at) == (Status.RETRYING, None)
    assert retrying.dispatch_due_at == retrying.next_attempt_at

    assert dispatch_due_orders(now=retrying.next_attempt_at) == [retrying.order_id]
    assert queued_order_ids() == [backlog.order_id, retrying.order_id]


@pytest.mark.django_db(transaction=True)
def test_racing_dispatchers_enqueue_an_order_once_for_one_due_time():
    order = place()
    OrmQ.objects.all().delete()
    make_due(order, queued_at=None)
    results = []

    def dispatch():
        try:
            results.append(dispatch_due_orders())
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [[], [], [], [order.order_id]]
    assert queued_order_ids() == [order.order_id]


# Leases by the database's clock -----------------------------------------------------
@contextlib.contextmanager
def clock_off_by(monkeypatch, seconds: float):
    """This process's clock (timezone.now) `seconds` off, as another machine's
    may be; the database's clock stays right."""
    right = timezone.now
    with monkeypatch.context() as patch:
        patch.setattr(timezone, "now", lambda: right() + timedelta(seconds=seconds))
        yield


@pytest.mark.django_db
def test_a_lease_claimed_by_a_worker_whose_clock_is_behind_is_not_expired_early(
    monkeypatch, settings
):
    settings.ORDER_LEASE_SECONDS = 10
    order = place()
    with clock_off_by(monkeypatch, -12):
        order = claim(order)

    assert expire_leases() == []
    assert reread(order).status == Status.PROCESSING


@pytest.mark.django_db
def test_a_dispatcher_whose_clock_is_ahead_leaves_a_running_attempt_alone(
    monkeypatch, settings
):
    settings.ORDER_LEASE_SECONDS = 10
    order = claim(place())
    with clock_off_by(monkeypatch, 12):
        assert expire_leases() == []
    assert reread(order).status == Status.PROCESSING


@pytest.mark.django_db
def test_a_dispatcher_whose_clock_is_behind_expires_a_lease_that_ended(
    monkeypatch, settings
):
    settings.ORDER_RETRY_BASE_SECONDS = 0
    order = claim(place())
    # Ended a second ago by the database's clock.
    Order.objects.filter(pk=order.pk).update(lease_expires_at=Now() - SECOND)

    with clock_off_by(monkeypatch, -12):
        assert expire_leases() == [order.order_id]
    assert reread(order).status == Status.RETRYING


# One bad row costs only itself ------------------------------------------------------


def processing_past_lease() -> Order:
    order = place()
    order = claim(order)
    Order.objects.filter(pk=order.pk).update(lease_expires_at=timezone.now() - SECOND)
    return reread(order)


def failure_records(task: str, order: Order) -> int:
    return FailureRecord.objects.filter(task=task, order=order).count()


@pytest.mark.django_db
def test_an_order_whose_lease_expiry_raises_costs_only_itself(settings):
    settings.ORDER_RETRY_BASE_SECONDS = 0
    before, after = processing_past_lease(), processing_past_lease()
    broken = processing_past_lease()
    # Data no attempt can have: the retry policy refuses attempt 0 for real.
    Order.objects.filter(pk=broken.pk).update(attempts=0)
    task = "orders.workers.dispatcher.expire_leases"
    now = timezone.now()

    assert sorted(expire_leases(now=now)) == sorted([before.order_id, after.order_id])

    assert reread(before).status == reread(after).status == Status.RETRYING
    broken = reread(broken)
    assert broken.status == Status.PROCESSING
    assert broken.lease_expires_at == now + timedelta(
        seconds=ROW_FAILURE_BACKOFF_SECONDS
    )
    record = FailureRecord.objects.get(task=task, order=broken)
    assert record.exception_type == "ValueError"
    assert record.args == [broken.order_id]
    # Backed off: the next sweeps leave it alone.
    assert expire_leases(now=now + SECOND) == []
    # Tried again after the back-off; the open record is not repeated.
    later = broken.lease_expires_at
    assert expire_leases(now=later) == []
    assert failure_records(task, broken) == 1
    # Once an operator resolved it, a new failure is a new record.
    failure_resolve(failure=record)
    expire_leases(now=later + timedelta(seconds=ROW_FAILURE_BACKOFF_SECONDS))
    assert failure_records(task, broken) == 2


@pytest.mark.django_db
def test_an_order_whose_enqueue_raises_costs_only_itself(monkeypatch):
    orders = [place() for _ in range(3)]
    broken = orders[1]
    for order in orders:
        make_due(order, queued_at=None)
    real_enqueue = dispatcher.order_enqueue

    def enqueue(order_id, queued_at):
        if order_id == broken.order_id:
            raise ValueError("this order's task cannot be built")
        real_enqueue(order_id, queued_at)

    monkeypatch.setattr(dispatcher, "order_enqueue", enqueue)
    now = timezone.now()

    assert dispatch_due_orders(now=now) == [orders[0].order_id, orders[2].order_id]

    assert queued_order_ids() == [orders[0].order_id, orders[2].order_id]
    broken = reread(broken)
    assert broken.dispatch_due_at == now + timedelta(
        seconds=ROW_FAILURE_BACKOFF_SECONDS
    )
    assert broken.queued_at is None
    assert failure_records("orders.workers.dispatcher.dispatch_due_orders", broken) == 1
    assert dispatch_due_orders(now=now + SECOND) == []


@pytest.mark.django_db
def test_a_delivery_whose_listener_enqueue_raises_costs_only_itself(monkeypatch):
    deliveries = [processed().delivery for _ in range(2)]
    for delivery in deliveries:
        delivery_complete(code=delivery.code)
    Delivery.objects.update(listener_due_at=timezone.now() - SECOND)
    broken = deliveries[0]
    sent = []

    def enqueue(*, order_id, code):
        if code == broken.code:
            raise ValueError("this listener's task cannot be built")
        sent.append(code)

    monkeypatch.setattr(dispatcher, "delivery_listener_enqueue", enqueue)
    now = timezone.now()

    assert dispatch_due_listeners(now=now) == [deliveries[1].code]

    assert sent == [deliveries[1].code]
    broken.refresh_from_db()
    assert broken.listener_due_at == now + timedelta(
        seconds=ROW_FAILURE_BACKOFF_SECONDS
    )
    task = "orders.workers.dispatcher.dispatch_due_listeners"
    assert failure_records(task, broken.order) == 1


def test_the_workers_dispatcher_loads_no_part_of_the_streams():
    """Trimming old events is a write (orders.services.orders); a worker process does
    not import the web process's stream transport to do it."""
    script = (
        "import sys, django; django.setup(); import orders.workers.dispatcher; "
        "print(sorted(m for m in sys.modules if m.startswith('orders.live')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orderproj.settings"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def queue_down(*args, **kwargs):
    raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")


@pytest.mark.django_db
def test_a_queue_that_cannot_be_reached_delays_due_orders_a_second_and_records_nothing(
    monkeypatch,
):
    """Redis restarting is not a bad row: without this, every order due during a
    few seconds' outage waited a minute, and each got a failure record and a mail."""
    orders = [place() for _ in range(3)]
    for order in orders:
        make_due(order, queued_at=None)
    due_before = {order.pk: reread(order).dispatch_due_at for order in orders}
    real_enqueue = dispatcher.order_enqueue
    monkeypatch.setattr(dispatcher, "order_enqueue", queue_down)
    now = timezone.now()

    assert dispatch_due_orders(now=now) == []

    first = reread(orders[0])
    assert first.dispatch_due_at == now + timedelta(
        seconds=dispatcher.QUEUE_DOWN_RETRY_SECONDS
    )
    assert first.queued_at is None
    # The sweep stopped at the first: the others were not tried.
    assert [reread(order).dispatch_due_at for order in orders[1:]] == [
        due_before[order.pk] for order in orders[1:]
    ]
    assert not FailureRecord.objects.exists()

    monkeypatch.setattr(dispatcher, "order_enqueue", real_enqueue)
    later = now + timedelta(seconds=dispatcher.QUEUE_DOWN_RETRY_SECONDS)
    assert sorted(dispatch_due_orders(now=later)) == sorted(
        order.order_id for order in orders
    )
    assert sorted(queued_order_ids()) == sorted(order.order_id for order in orders)


@pytest.mark.django_db
def test_a_queue_that_cannot_be_reached_delays_listener_resends_a_second(
    monkeypatch,
):
    delivery = processed().delivery
    delivery_complete(code=delivery.code)
    Delivery.objects.update(listener_due_at=timezone.now() - SECOND)
    monkeypatch.setattr(dispatcher, "delivery_listener_enqueue", queue_down)
    now = timezone.now()

    assert dispatch_due_listeners(now=now) == []

    delivery.refresh_from_db()
    assert delivery.listener_due_at == now + timedelta(
        seconds=dispatcher.QUEUE_DOWN_RETRY_SECONDS
    )
    assert not FailureRecord.objects.exists()


@pytest.mark.parametrize("trim", ["events_trim", "failures_trim"])
def test_the_dispatcher_runs_each_hourly_trim_once_in_many_sweeps(monkeypatch, trim):
    """The old events and the resolved failure records are trimmed once an hour,
    not on every sweep."""
    calls, sweeps = [], []
    monkeypatch.setattr(dispatcher, "sweep", lambda: sweeps.append(1))
    for name in ("events_trim", "failures_trim"):
        monkeypatch.setattr(dispatcher, name, lambda: 0)
    monkeypatch.setattr(dispatcher, trim, lambda: calls.append(1) or 0)
    stop = threading.Event()
    thread = threading.Thread(
        target=dispatcher.run_dispatcher, args=(stop,), kwargs={"interval": 0.01}
    )
    thread.start()
    try:
        # Counted in sweeps, not in wall-clock time: a slow machine sweeps less.
        wait_until(lambda: len(sweeps) >= 20, timeout=10, what="twenty sweeps")
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert calls == [1]
