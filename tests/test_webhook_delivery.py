"""Webhook messages from the timeline to a real HTTP receiver on 127.0.0.1:
fan-out, signing, retries, order per order, lost senders, the attempts' log and
the endpoint that is disabled (orders/services/relay.py,
orders/services/webhook_delivery.py)."""

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook

from orders import outbound
from orders.models import (
    OrderEvent,
    RelayCursor,
    WebhookAttempt,
    WebhookEndpoint,
    WebhookMessage,
)
from orders.services.relay import (
    settled_events_after,
    subscribers_trim,
    webhook_messages_fan_out,
)
from orders.services.webhook_delivery import (
    webhook_endpoints_due,
    webhook_message_send,
    webhook_messages_claim,
    webhook_messages_expire,
)
from orders.services.webhooks import webhook_endpoint_add
from tests.factories import place, process_until_terminal, processed
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db
State = WebhookMessage.State


@pytest.fixture(autouse=True)
def private_networks_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 5
    # On PostgreSQL the ids of the events other tests rolled back are holes;
    # the relay's wait for a hole has its own test.
    settings.ORDER_STREAM_SETTLE_SECONDS = 0


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def send_due(now=None) -> int:
    """One pass as the relay makes it, sending on this thread."""
    webhook_messages_fan_out(now=now)
    sent = 0
    for endpoint_id in webhook_endpoints_due(now=now):
        for outgoing in webhook_messages_claim(
            endpoint_id=endpoint_id, limit=100, now=now
        ):
            webhook_message_send(outgoing)
            sent += 1
    return sent


def send_until_quiet(limit: int = 20) -> None:
    for _ in range(limit):
        if not send_due():
            return
    raise AssertionError("messages still due after {limit} passes")


def test_a_completed_order_is_posted_signed_to_its_endpoint(receiver):
    endpoint, secret = webhook_endpoint_add(
        url=receiver.url, event_types=["order.completed"]
    )
    order = processed()

    assert send_due() == 1

    [request] = receiver.received()
    body = Webhook(secret).verify(request.body, request.headers)
    assert body["type"] == "order.completed"
    assert body["data"]["order_id"] == order.order_id
    assert body["data"]["status"] == "COMPLETED"
    assert body["data"]["amount"] == "25.00"
    message = WebhookMessage.objects.get()
    assert request.headers["webhook-id"] == message.msg_id
    assert message.state == State.DELIVERED
    attempt = WebhookAttempt.objects.get()
    assert (attempt.status_code, attempt.succeeded, attempt.response_head) == (
        200,
        True,
        "ok",
    )
    assert attempt.order_id == order.pk and attempt.endpoint_id == endpoint.pk


def test_an_endpoint_gets_only_the_types_it_wants_and_none_while_disabled(receiver):
    webhook_endpoint_add(url=receiver.url, event_types=["order.failed"])
    off, _ = webhook_endpoint_add(url=receiver.url)
    WebhookEndpoint.objects.filter(pk=off.pk).update(enabled=False)

    processed()
    send_due()

    assert receiver.received() == []
    assert not WebhookMessage.objects.exists()


def test_no_endpoint_costs_no_row_and_no_cursor():
    processed()

    assert webhook_messages_fan_out() == 0
    assert not RelayCursor.objects.exists()


def test_a_refused_answer_is_retried_with_the_same_webhook_id(receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = (0, 0, 0)
    receiver.answers = [500, 503]
    _, secret = webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    processed()

    send_until_quiet()

    requests = receiver.received()
    assert [r.answered for r in requests] == [500, 503, 200]
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1
    for request in requests:
        Webhook(secret).verify(request.body, request.headers)
    message = WebhookMessage.objects.get()
    assert (message.state, message.attempts) == (State.DELIVERED, 3)
    assert [a.status_code for a in message.attempt_log.order_by("number")] == [
        500,
        503,
        200,
    ]


def test_the_next_attempt_waits_for_the_schedule(receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = (300, 1800)
    receiver.default = 500
    webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    processed()
    before = timezone.now()

    send_due()

    message = WebhookMessage.objects.get()
    assert message.state == State.PENDING
    assert message.next_attempt_at >= before + timedelta(seconds=300)
    assert send_due() == 0
    assert send_due(now=message.next_attempt_at) == 1


def test_a_message_is_given_up_after_the_last_retry(receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = (0,)
    receiver.default = 500
    webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    processed()

    send_until_quiet()

    message = WebhookMessage.objects.get()
    assert (message.state, message.attempts) == (State.FAILED, 2)
    assert len(receiver.received()) == 2


def test_one_orders_events_reach_an_endpoint_in_the_order_they_happened(
    receiver, settings, immediate_retries
):
    settings.WEBHOOK_RETRY_SCHEDULE = (0, 0, 0)
    receiver.answers = [500, 200, 500]
    webhook_endpoint_add(url=receiver.url)
    order = process_until_terminal(place(fail_times=1))
    wanted = list(
        OrderEvent.objects.filter(order=order)
        .order_by("pk")
        .values_list("pk", flat=True)
    )

    webhook_messages_fan_out()
    [head] = [
        outgoing
        for endpoint_id in webhook_endpoints_due()
        for outgoing in webhook_messages_claim(endpoint_id=endpoint_id, limit=100)
    ]
    webhook_message_send(head)
    send_until_quiet()

    delivered = [json.loads(r.body)["data"]["event_id"] for r in receiver.accepted()]
    assert delivered == wanted
    assert len(wanted) >= 5


def test_two_orders_do_not_wait_for_each_other(receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = (3600,)
    webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    receiver.answers = [500]
    first, second = processed(), processed()

    send_due()

    delivered = [json.loads(r.body)["data"]["order_id"] for r in receiver.accepted()]
    assert delivered == [second.order_id]
    assert WebhookMessage.objects.get(order=first).state == State.PENDING


def test_a_sender_that_vanished_after_sending_is_replaced_with_the_same_id(
    receiver, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = (0,)
    webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    processed()
    webhook_messages_fan_out()
    [outgoing] = webhook_messages_claim(
        endpoint_id=webhook_endpoints_due()[0], limit=10
    )
    # Sent, and the process dies before it records the answer.
    outbound.post(
        url=outgoing.url,
        headers={"webhook-id": outgoing.msg_id},
        body=outgoing.body,
        timeout=5,
        allow_private=True,
        max_response_bytes=100,
    )
    message = WebhookMessage.objects.get()
    assert message.state == State.SENDING

    assert webhook_messages_expire() == 0
    assert webhook_messages_expire(now=message.lease_expires_at) == 1
    send_until_quiet()

    ids = [r.headers["webhook-id"] for r in receiver.received()]
    assert ids == [message.msg_id, message.msg_id]
    message.refresh_from_db()
    assert message.state == State.DELIVERED
    lost = message.attempt_log.get(number=1)
    assert lost.status_code is None and "sender stopped" in lost.error


def test_an_endpoint_failing_for_the_whole_period_is_disabled_and_mailed_once(
    receiver, settings, django_capture_on_commit_callbacks
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.WEBHOOK_RETRY_SCHEDULE = (0, 0, 0)
    settings.WEBHOOK_DISABLE_AFTER_SECONDS = 3600
    receiver.default = 500
    endpoint, _ = webhook_endpoint_add(
        url=receiver.url, event_types=["order.completed"]
    )
    processed()

    with django_capture_on_commit_callbacks(execute=True):
        send_due()
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.failing_since is not None
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        failing_since=timezone.now() - timedelta(hours=2)
    )
    with django_capture_on_commit_callbacks(execute=True):
        send_due()
        send_due()

    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert "every attempt failed" in endpoint.disabled_reason
    assert len(receiver.received()) == 2
    [sent] = mail.outbox
    assert f"#{endpoint.pk} disabled" in sent.subject
    assert endpoint.secret not in sent.body


def test_a_success_ends_the_failing_period(receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = (0,)
    receiver.answers = [500]
    endpoint, _ = webhook_endpoint_add(
        url=receiver.url, event_types=["order.completed"]
    )
    processed()

    send_due()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None
    send_due()

    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_a_missing_id_holds_the_relay_back_until_it_settles(settings):
    settings.ORDER_STREAM_SETTLE_SECONDS = 2
    order = place()
    first = order.events.get()
    later = OrderEvent.objects.create(
        order=order, type="order.processing", status="PROCESSING", at=timezone.now()
    )
    # An id between them that a transaction holds and has not committed yet.
    OrderEvent.objects.filter(pk=later.pk).update(id=later.pk + 1)
    now = timezone.now()

    assert settled_events_after(first.pk - 1, now=now) == [first]
    settled = settled_events_after(first.pk - 1, now=now + timedelta(seconds=3))
    assert [event.pk for event in settled] == [first.pk, later.pk + 1]


def test_the_secret_is_in_no_log_line_and_no_claims_repr(receiver, settings, caplog):
    settings.WEBHOOK_RETRY_SCHEDULE = (0,)
    receiver.answers = [500]
    _, secret = webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    processed()

    with caplog.at_level("DEBUG"):
        webhook_messages_fan_out()
        [outgoing] = webhook_messages_claim(
            endpoint_id=webhook_endpoints_due()[0], limit=10
        )
        webhook_message_send(outgoing)
        send_until_quiet()

    assert len(receiver.received()) == 2
    key = secret.removeprefix("whsec_")
    assert key not in caplog.text
    assert key not in repr(outgoing)


def test_finished_messages_go_with_the_timeline_and_unfinished_ones_stay(
    receiver, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = (3600,)
    webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    receiver.answers = [500]
    waiting, delivered = processed(), processed()
    send_due()
    later = timezone.now() + timedelta(days=8)

    assert subscribers_trim(now=later, retention_days=0) == 0
    assert subscribers_trim(now=timezone.now(), retention_days=7) == 0
    assert subscribers_trim(now=later, retention_days=7) == 2  # message + attempt

    [kept] = WebhookMessage.objects.all()
    assert kept.order == waiting and kept.state == State.PENDING
    assert not WebhookMessage.objects.filter(order=delivered).exists()
