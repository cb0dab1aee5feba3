"""The customer's mail when it matters (orders/services/customer_mail.py): one
when the order completes, one when it fails for good, none per retry; sent by
a signal receiver, so retried and recorded when the mail server refuses."""

import socket

import pytest
from django.core import mail

from orders import signals
from orders.models import FailureRecord, Order, ReceiverCall
from orders.services import customer_mail
from orders.services.orders import order_retry
from orders.services.receivers import receiver_call_run
from orders.services.relay import receiver_calls_fan_out
from tests.expected import engineer_words
from tests.factories import process_until_terminal

pytestmark = pytest.mark.usefixtures("immediate_retries", "no_settle_window")

Status = Order.Status
State = ReceiverCall.State
RECEIVER = "orders.services.customer_mail.order_outcome_mail_send"


@pytest.fixture
def no_settle_window(settings):
    settings.ORDER_STREAM_SETTLE_SECONDS = 0
    settings.ORDER_SITE_URL = "https://shop.example.com"


def mail_calls(capture) -> list[ReceiverCall]:
    """The relay's calls of the mail receiver for the events since the last
    fan-out, each run once as a worker runs it."""
    with capture(execute=True):
        receiver_calls_fan_out()
    calls = list(ReceiverCall.objects.filter(receiver=RECEIVER).order_by("pk"))
    for call in calls:
        with capture(execute=True):
            receiver_call_run(call_id=call.pk)
    return calls


@pytest.mark.django_db
def test_a_retried_then_completed_order_sends_exactly_one_mail(
    place_order, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()  # where the relay starts
    order = process_until_terminal(place_order(simulate={"fail_times": 2}))

    calls = mail_calls(django_capture_on_commit_callbacks)

    assert [call.signal for call in calls] == ["order_completed"]
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == [order.customer_email]
    assert sent.subject == "Your order is complete"
    assert order.order_id in sent.body
    assert "your payment went through and your items are reserved" in sent.body
    assert f"https://shop.example.com/orders/{order.order_id}" in sent.body
    assert "$25.00" in sent.body
    html, kind = sent.alternatives[0]
    assert kind == "text/html"
    assert f'href="https://shop.example.com/orders/{order.order_id}"' in html
    assert engineer_words(sent.body) == []


@pytest.mark.django_db
def test_an_order_that_fails_for_good_sends_one_mail_saying_what_to_do(
    place_order, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()
    order = process_until_terminal(place_order(simulate={"fail_times": 9}))

    calls = mail_calls(django_capture_on_commit_callbacks)

    assert [call.signal for call in calls] == ["order_failed"]
    (sent,) = mail.outbox
    assert sent.subject == "We couldn't complete your order"
    assert "We couldn't reach the payment provider after 3 tries" in sent.body
    assert "You have not been charged." in sent.body
    assert "You can place the same order again." in sent.body
    assert "We couldn&#x27;t" not in sent.body  # plain text, not escaped HTML
    assert engineer_words(sent.body) == []
    assert "ORDER_MAX_ATTEMPTS" in order.failure_reason


@pytest.mark.django_db
def test_no_mail_for_a_failure_an_operator_retried_before_it_went(
    place_order, django_capture_on_commit_callbacks
):
    receiver_calls_fan_out()
    order = process_until_terminal(place_order(simulate={"failure": "permanent"}))
    with django_capture_on_commit_callbacks(execute=True):
        receiver_calls_fan_out()
    order_retry(order=order)

    call = ReceiverCall.objects.get(receiver=RECEIVER)
    with django_capture_on_commit_callbacks(execute=True):
        assert receiver_call_run(call_id=call.pk).state == State.DONE

    assert mail.outbox == []


@pytest.mark.django_db
def test_with_customer_mails_off_no_receiver_is_connected(settings, place_order):
    settings.ORDER_NOTIFY_CUSTOMERS = False
    for signal in (signals.order_completed, signals.order_failed):
        signal.disconnect(dispatch_uid="customer_outcome_mail")
    try:
        customer_mail.connect_receivers()
        assert not signals.order_completed.has_listeners()
        assert not signals.order_failed.has_listeners()
    finally:
        settings.ORDER_NOTIFY_CUSTOMERS = True
        customer_mail.connect_receivers()
    assert signals.order_completed.has_listeners()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: a mail server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_a_mail_server_that_refuses_is_recorded_and_tried_again(place_order, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port()
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = False, 2
    receiver_calls_fan_out()
    order = process_until_terminal(place_order())
    receiver_calls_fan_out()
    call = ReceiverCall.objects.get(receiver=RECEIVER)

    call = receiver_call_run(call_id=call.pk)

    assert (call.state, call.attempts) == (State.PENDING, 1)
    record = FailureRecord.objects.get()
    assert record.task == f"signal receiver {RECEIVER}"
    assert record.exception_type == "ConnectionRefusedError"
    assert record.order == order
    order.refresh_from_db()
    assert order.status == Status.COMPLETED
