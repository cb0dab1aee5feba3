"""The timeline's Django signals (orders/signals.py): each receiver is called
by a worker after the event commits, in a transaction of its own, retried with
backoff when it raises and recorded in a failure group of its own, apart from
the order and the other receivers (orders/services/receivers.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from orders import signals
from orders.models import EventTally, FailureRecord, Order, ReceiverCall
from orders.services.receivers import (
    RECEIVER_MAX_ATTEMPTS,
    RECEIVER_TASK,
    receiver_call_run,
)
from orders.services.relay import receiver_calls_fan_out
from orders.workers.dispatcher import dispatch_due_receiver_calls
from tests.factories import place, processed

pytestmark = pytest.mark.django_db
State = ReceiverCall.State

heard: list[tuple] = []


def tell_the_warehouse(sender, order, event, **kwargs):
    heard.append((order.order_id, order.status, event["type"], event["event_id"]))


async def tell_the_bot(sender, order, event, **kwargs):
    heard.append(("bot", event["type"]))


def broken_erp(sender, order, event, **kwargs):
    # A write the receiver makes before it raises: its transaction drops it.
    EventTally.objects.create(name="erp-half-written", value=1)
    raise ConnectionError("the ERP is down")


@pytest.fixture(autouse=True)
def no_settle_window(settings):
    # On PostgreSQL the ids of the events other tests rolled back are holes;
    # the relay's wait for a hole is tested in tests/test_webhook_delivery.py.
    settings.ORDER_STREAM_SETTLE_SECONDS = 0


@pytest.fixture
def connected():
    heard.clear()
    connections = [
        (signals.order_completed, tell_the_warehouse),
        (signals.order_completed, broken_erp),
    ]
    for signal, receiver in connections:
        signal.connect(receiver, dispatch_uid=receiver.__name__)
    yield
    for signal, receiver in connections:
        signal.disconnect(dispatch_uid=receiver.__name__)


def queued_calls() -> list[int]:
    return [
        row.task["args"][0]
        for row in OrmQ.objects.order_by("id")
        if row.task["func"] == RECEIVER_TASK
    ]


def fan_out(capture) -> dict[str, ReceiverCall]:
    with capture(execute=True):
        receiver_calls_fan_out()
    return {
        call.receiver.rsplit(".", 1)[-1]: call for call in ReceiverCall.objects.all()
    }


def test_receivers_run_after_commit_each_as_a_task_of_its_own(
    connected, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()  # where the relay starts: no history
    order = processed()
    assert heard == []  # not in the order's transaction

    calls = fan_out(django_capture_on_commit_callbacks)

    assert set(calls) == {"tell_the_warehouse", "broken_erp"}
    assert sorted(queued_calls()) == sorted(call.pk for call in calls.values())
    assert calls["tell_the_warehouse"].receiver == (
        "tests.test_signals.tell_the_warehouse"
    )
    done = receiver_call_run(call_id=calls["tell_the_warehouse"].pk)
    assert done.state == State.DONE
    completed = order.events.get(type="order.completed").pk
    assert heard == [(order.order_id, "COMPLETED", "order.completed", completed)]


def test_a_receiver_that_raises_is_recorded_apart_and_retried_with_backoff(
    connected, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()
    order = processed()
    calls = fan_out(django_capture_on_commit_callbacks)
    before = timezone.now()

    failed = receiver_call_run(call_id=calls["broken_erp"].pk)
    done = receiver_call_run(call_id=calls["tell_the_warehouse"].pk)

    assert failed.state == State.PENDING and failed.attempts == 1
    assert failed.next_attempt_at >= before + timedelta(seconds=1)
    assert failed.dispatch_due_at == failed.next_attempt_at
    assert done.state == State.DONE
    record = FailureRecord.objects.get()
    assert record.task == "signal receiver tests.test_signals.broken_erp"
    assert record.exception_type == "ConnectionError"
    assert record.order == order
    assert not EventTally.objects.filter(name="erp-half-written").exists()
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED
    # Not due yet: a second task for it runs nothing.
    assert receiver_call_run(call_id=failed.pk) is None


def test_a_receiver_that_keeps_raising_is_given_up_after_its_attempts(
    connected, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()
    processed()
    call = fan_out(django_capture_on_commit_callbacks)["broken_erp"]

    for _ in range(RECEIVER_MAX_ATTEMPTS):
        call.refresh_from_db()
        call = receiver_call_run(call_id=call.pk, now=call.next_attempt_at)

    assert call.state == State.FAILED
    assert call.attempts == RECEIVER_MAX_ATTEMPTS
    assert FailureRecord.objects.count() == RECEIVER_MAX_ATTEMPTS


def test_a_lost_receiver_task_is_handed_to_the_queue_again(
    connected, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()
    processed()
    calls = fan_out(django_capture_on_commit_callbacks)
    call = calls["tell_the_warehouse"]
    OrmQ.objects.all().delete()  # the broker lost them
    lost = sorted(c.pk for c in calls.values())

    assert dispatch_due_receiver_calls() == []
    assert sorted(dispatch_due_receiver_calls(now=call.dispatch_due_at)) == lost

    assert sorted(queued_calls()) == lost
    assert receiver_call_run(call_id=call.pk).state == State.DONE


def test_a_worker_that_died_running_a_receiver_is_replaced(
    connected, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()
    processed()
    call = fan_out(django_capture_on_commit_callbacks)["tell_the_warehouse"]
    ReceiverCall.objects.filter(pk=call.pk).update(
        state=State.RUNNING, attempts=1, dispatch_due_at=timezone.now()
    )
    OrmQ.objects.all().delete()

    assert dispatch_due_receiver_calls() == [call.pk]

    call.refresh_from_db()
    assert call.state == State.PENDING
    assert receiver_call_run(call_id=call.pk).state == State.DONE


def test_an_async_receiver_is_run_to_its_end(django_capture_on_commit_callbacks):
    heard.clear()
    signals.order_completed.connect(tell_the_bot, dispatch_uid="tell_the_bot")
    try:
        receiver_calls_fan_out()
        processed()
        call = fan_out(django_capture_on_commit_callbacks)["tell_the_bot"]

        assert receiver_call_run(call_id=call.pk).state == State.DONE
    finally:
        signals.order_completed.disconnect(dispatch_uid="tell_the_bot")
    assert heard == [("bot", "order.completed")]


def test_no_receiver_means_no_call_and_no_cursor():
    place()

    assert receiver_calls_fan_out() == 0
    assert not ReceiverCall.objects.exists()
