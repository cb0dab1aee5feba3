import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import OrmQ

from orders.models import Order, OrderEvent
from orders.services.attempts import order_claim_batch
from orders.services.orders import order_retry, task_stamp
from orders.workers.dispatcher import sweep
from tests.expected import FAIL_TWICE_EVENTS
from tests.factories import claim, event_types, process, process_until_terminal

Status = Order.Status


pytestmark = pytest.mark.usefixtures("immediate_retries")


@pytest.mark.django_db(transaction=True)
def test_order_is_handed_to_the_queue_only_after_commit(place_order):
    with transaction.atomic():
        order = place_order()
        assert OrmQ.objects.count() == 0
    assert OrmQ.objects.count() == 1
    # The order's id, and its queued_at as the task's stamp
    # (orders/workers/djangoq/taken_along.py).
    order.refresh_from_db()
    assert OrmQ.objects.get().task["args"] == (
        order.order_id,
        task_stamp(order.queued_at),
    )


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_placement_enqueues_nothing_and_saves_nothing(place_order):
    with pytest.raises(RuntimeError), transaction.atomic():
        place_order()
        raise RuntimeError("the request failed after placing the order")
    assert OrmQ.objects.count() == 0
    assert Order.objects.count() == 0


@pytest.mark.django_db
def test_order_failing_twice_completes_on_third_attempt(place_order):
    order = process_until_terminal(place_order(simulate={"fail_times": 2}))
    assert order.status == Status.COMPLETED
    assert order.attempts == 3
    assert event_types(order) == FAIL_TWICE_EVENTS


@pytest.mark.django_db
def test_order_failing_every_time_fails_after_exactly_max_attempts(place_order):
    order = process_until_terminal(place_order(simulate={"fail_times": 9}))
    assert order.status == Status.FAILED
    assert order.attempts == 3
    assert event_types(order).count("order.processing") == 3
    assert "gave up after 3 of 3 attempts" in order.failure_reason
    assert "payment gateway timed out" in order.failure_reason


@pytest.mark.django_db
def test_permanent_error_fails_after_one_attempt_without_retry(place_order):
    order = process_until_terminal(place_order(simulate={"failure": "permanent"}))
    assert order.status == Status.FAILED
    assert order.attempts == 1
    assert "order.retry_scheduled" not in event_types(order)
    assert order.failure_reason == (
        "payment: card declined (permanent): a permanent error, not retried"
    )


@pytest.mark.django_db
def test_retry_waits_for_its_due_time(place_order, settings):
    settings.ORDER_RETRY_BASE_SECONDS = 30
    order = process(place_order(simulate={"fail_times": 1}).order_id)
    assert order.status == Status.RETRYING
    assert 23 <= (order.next_attempt_at - timezone.now()).total_seconds() <= 30
    early = process(order.order_id)
    assert early.status == Status.RETRYING
    assert early.attempts == 1


@pytest.mark.django_db
def test_a_duplicate_delivery_of_the_same_task_makes_no_second_attempt(place_order):
    order = place_order()
    process(order.order_id)
    process(order.order_id)
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Status.COMPLETED, 1)
    assert event_types(order).count("order.processing") == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_racing_for_one_order_claim_it_once(place_order):
    order = place_order()
    barrier = threading.Barrier(4)
    results = []

    def claim():
        copy = Order.objects.get(pk=order.pk)
        barrier.wait()
        results.append(bool(order_claim_batch(order_id=copy.order_id).orders))
        connection.close()

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    order.refresh_from_db()
    assert order.attempts == 1
    assert event_types(order).count("order.processing") == 1


@pytest.mark.django_db
def test_expired_lease_counts_the_lost_attempt_and_schedules_a_retry(place_order):
    order = place_order(simulate={"delay_ms": 0})
    order = claim(order)
    Order.objects.filter(pk=order.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    result = sweep()
    order.refresh_from_db()
    assert result.expired == [order.order_id]
    assert order.status == Status.RETRYING
    lost = OrderEvent.objects.get(order=order, type="order.attempt_failed")
    assert "lease expired" in lost.detail
    assert order.order_id in result.dispatched


@pytest.mark.django_db
def test_expired_lease_on_the_last_attempt_fails_the_order(place_order, settings):
    settings.ORDER_MAX_ATTEMPTS = 1
    order = place_order()
    order = claim(order)
    Order.objects.filter(pk=order.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    sweep()
    order.refresh_from_db()
    assert order.status == Status.FAILED
    assert "gave up after 1 of 1 attempts" in order.failure_reason
    assert "lease expired" in order.failure_reason


@pytest.mark.django_db
def test_operator_retry_resets_attempts_and_requeues(place_order):
    order = process_until_terminal(place_order(simulate={"failure": "permanent"}))
    order = order_retry(order=order)
    assert (order.status, order.attempts, order.failure_reason) == (
        Status.PENDING,
        0,
        "",
    )
    assert event_types(order)[-1] == "order.retry_requested"
    # The plan failed attempt 1 only; attempt 1 of the new run fails again.
    order = process_until_terminal(order)
    assert order.status == Status.FAILED


@pytest.mark.django_db
def test_unexpected_exception_in_a_step_is_a_failed_attempt_not_a_stuck_order(
    place_order, monkeypatch, caplog
):
    from orders import gateways

    def broken_step(self, order, *, attempt, idempotency_key):
        raise ZeroDivisionError("bug in a step")

    monkeypatch.setattr(gateways.SimulatedStep, "run", broken_step)
    order = process_until_terminal(place_order())
    assert order.status == Status.FAILED
    assert "unexpected ZeroDivisionError: bug in a step" in order.failure_reason
    assert "bug in a step" in caplog.text
