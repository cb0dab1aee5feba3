"""The customer's mail when it matters (orders/services/customer_mail.py): one
when the order completes, one when it fails for good, none per retry; sent by
the customer mailer after the move committed, recorded and tried again when the
mail server refuses."""

import socket
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from orders.models import FailureRecord, Order
from orders.services.customer_mail import (
    CUSTOMER_MAIL_MAX_ATTEMPTS,
    CUSTOMER_MAIL_TASK,
    customer_mail_send,
    customer_mails_send_due,
)
from orders.services.orders import order_retry
from tests.expected import engineer_words
from tests.factories import process, process_until_terminal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("immediate_retries")]

Status = Order.Status


@pytest.fixture(autouse=True)
def site(settings):
    settings.ORDER_SITE_URL = "https://shop.example.com"


def test_a_retried_then_completed_order_sends_exactly_one_mail(place_order):
    order = place_order(simulate={"fail_times": 2})
    order = process(order.order_id)
    assert order.status == Status.RETRYING
    assert order.customer_mail_due_at is None  # a retry owes no mail

    order = process_until_terminal(order)

    assert customer_mails_send_due() == 1
    assert customer_mails_send_due() == 0
    (sent,) = mail.outbox
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
    order.refresh_from_db()
    assert order.customer_mail_due_at is None
    assert order.customer_mailed_at is not None


def test_an_order_that_fails_for_good_sends_one_mail_saying_what_to_do(place_order):
    order = process_until_terminal(place_order(simulate={"fail_times": 9}))

    assert customer_mails_send_due() == 1

    (sent,) = mail.outbox
    assert sent.subject == "We couldn't complete your order"
    assert "We couldn't reach the payment provider after 3 tries" in sent.body
    assert "You have not been charged." in sent.body
    assert "You can place the same order again." in sent.body
    assert "We couldn&#x27;t" not in sent.body  # plain text, not escaped HTML
    assert engineer_words(sent.body) == []
    assert "ORDER_MAX_ATTEMPTS" in order.failure_reason


def test_no_mail_for_a_failure_an_operator_retried_before_it_went(place_order):
    order = process_until_terminal(place_order(simulate={"failure": "permanent"}))
    assert order.customer_mail_due_at is not None

    order = order_retry(order=order)

    assert order.customer_mail_due_at is None
    assert customer_mails_send_due() == 0
    assert mail.outbox == []
    # The retry's own outcome gets its mail.
    order = process_until_terminal(order)
    assert customer_mails_send_due() == 1


def test_with_customer_mails_off_no_mail_is_owed(place_order, settings):
    settings.ORDER_NOTIFY_CUSTOMERS = False

    order = process_until_terminal(place_order())

    assert order.customer_mail_due_at is None
    assert customer_mails_send_due() == 0
    assert mail.outbox == []


def test_a_mail_taken_by_one_mailer_is_not_sent_by_another(place_order):
    order = process_until_terminal(place_order())
    due_at = order.customer_mail_due_at

    assert customer_mail_send(order_pk=order.pk, due_at=due_at) is True
    assert customer_mail_send(order_pk=order.pk, due_at=due_at) is None

    assert len(mail.outbox) == 1


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: a mail server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mail_server_down(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", closed_port()
    settings.EMAIL_USE_TLS, settings.EMAIL_TIMEOUT = False, 2


def test_a_mail_server_that_refuses_is_recorded_and_tried_again(
    place_order, mail_server_down
):
    order = process_until_terminal(place_order())
    before = timezone.now()

    assert customer_mails_send_due() == 1

    order.refresh_from_db()
    assert order.status == Status.COMPLETED
    assert order.customer_mail_attempts == 1
    assert order.customer_mail_due_at >= before + timedelta(seconds=1)
    record = FailureRecord.objects.get()
    assert record.task == CUSTOMER_MAIL_TASK
    assert record.exception_type == "ConnectionRefusedError"
    assert record.order == order
    assert customer_mails_send_due() == 0  # not due again yet


def test_a_mail_server_that_keeps_refusing_is_given_up_after_its_attempts(
    place_order, mail_server_down
):
    order = process_until_terminal(place_order())

    for _ in range(CUSTOMER_MAIL_MAX_ATTEMPTS):
        order.refresh_from_db()
        customer_mails_send_due(now=order.customer_mail_due_at)

    order.refresh_from_db()
    assert order.customer_mail_attempts == CUSTOMER_MAIL_MAX_ATTEMPTS
    assert order.customer_mail_due_at is None
    assert FailureRecord.objects.count() == CUSTOMER_MAIL_MAX_ATTEMPTS
