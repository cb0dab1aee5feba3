"""Retention of order events (events_trim): old events go, except the
timeline of an order an operator still has to deal with."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orders.models import FailureRecord, Order, OrderEvent
from orders.services import events
from orders.services import orders as services
from orders.services.events import events_trim
from orders.services.failure_actions import failure_resolve
from tests import factories

pytestmark = pytest.mark.django_db
Status = Order.Status


@pytest.fixture(autouse=True)
def retention(settings):
    settings.ORDER_EVENT_RETENTION_DAYS = 7


def age_every_event(days: float = 8) -> None:
    OrderEvent.objects.update(at=timezone.now() - timedelta(days=days))


def event_count(order: Order) -> int:
    return OrderEvent.objects.filter(order=order).count()


def failed_order() -> Order:
    order = factories.processed(fail_times=1, failure="permanent")
    assert order.status == Status.FAILED
    return order


def failure_of(order: Order, *, resolved: bool) -> FailureRecord:
    return factories.failure_record(
        order,
        task="orders.tasks.order_delivery_completed",
        args=[order.order_id],
        exception_type="ListenerFailed",
        resolved=resolved,
    )


def test_old_events_of_failed_orders_and_of_unresolved_failures_are_kept():
    failed = failed_order()
    unresolved = factories.processed()
    failure_of(unresolved, resolved=False)
    failure_of(unresolved, resolved=True)
    resolved = factories.processed()
    failure_of(resolved, resolved=True)
    done = factories.processed()
    kept = {order: event_count(order) for order in (failed, unresolved)}
    trimmed = event_count(resolved) + event_count(done)
    age_every_event()

    assert events_trim() == trimmed

    assert {order: event_count(order) for order in (failed, unresolved)} == kept
    assert event_count(resolved) == event_count(done) == 0


def test_a_kept_timeline_goes_once_the_order_is_dealt_with():
    failed = failed_order()
    unresolved = factories.processed()
    record = failure_of(unresolved, resolved=False)
    age_every_event()
    assert events_trim() == 0

    services.order_retry(order=failed)  # its retry_requested event is new
    failure_resolve(failure=record)

    assert events_trim() > 0
    assert list(failed.events.values_list("type", flat=True)) == [
        OrderEvent.Type.RETRY_REQUESTED
    ]
    assert event_count(unresolved) == 0


def test_events_within_the_retention_are_kept_whatever_the_order():
    done = factories.processed()
    events = event_count(done)
    age_every_event(days=6)

    assert events_trim() == 0
    assert event_count(done) == events


def test_trimming_runs_in_batches_that_read_past_kept_events_once(monkeypatch):
    """Kept events before and between the trimmed ones add no read: each batch
    starts after the last id it deleted. A batch is one read of what to trim
    and one delete (with the metrics' tally between), and one more read finds
    nothing left."""
    monkeypatch.setattr(events, "TRIM_BATCH", 3)
    failed_order()
    first = factories.processed()
    failed_order()
    second = factories.processed()
    trimmable = event_count(first) + event_count(second)
    batches = -(-trimmable // 3)
    age_every_event()

    with CaptureQueriesContext(connection) as queries:
        assert events_trim() == trimmable

    statements = [query["sql"] for query in queries]
    trim_reads = [
        sql for sql in statements if sql.startswith("SELECT") and "EXISTS" in sql
    ]
    deletes = [sql for sql in statements if sql.startswith("DELETE")]
    assert (len(trim_reads), len(deletes)) == (batches + 1, batches)

    assert event_count(first) == event_count(second) == 0
