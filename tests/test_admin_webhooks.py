"""Webhook endpoints and messages in the console (orders/operations/admin/
webhooks.py): edits and buttons go through the services, the secret is shown
once, attempts show on the endpoint's and the order's pages."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders.models import WebhookEndpoint, WebhookMessage
from orders.services.relay import webhook_messages_fan_out
from orders.services.webhook_delivery import (
    webhook_endpoints_due,
    webhook_message_send,
    webhook_messages_claim,
)
from orders.services.webhooks import webhook_endpoint_add
from tests.factories import processed
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/orders/webhookendpoint/"
MESSAGES = "/admin/orders/webhookmessage/"


@pytest.fixture(autouse=True)
def private_networks_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # On PostgreSQL the ids of the events other tests rolled back are holes.
    settings.ORDER_STREAM_SETTLE_SECONDS = 0


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def send_due() -> None:
    webhook_messages_fan_out()
    for endpoint_id in webhook_endpoints_due():
        for outgoing in webhook_messages_claim(endpoint_id=endpoint_id, limit=10):
            webhook_message_send(outgoing)


def endpoint_form(**fields) -> dict:
    return {"url": "http://127.0.0.1:9/hook", "description": "", "enabled": "on"} | (
        fields
    )


def test_adding_an_endpoint_shows_its_secret_once(staff_client):
    response = staff_client.post(
        ENDPOINTS + "add/",
        endpoint_form(description="ERP", event_types=["order.completed"]),
    )

    assert response.status_code == 200, response.content
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret.encode() in response.content
    assert endpoint.event_types == ["order.completed"]
    page = staff_client.get(f"{ENDPOINTS}{endpoint.pk}/change/")
    assert page.status_code == 200
    assert endpoint.secret.encode() not in page.content


def test_a_loopback_url_is_refused_in_the_form(staff_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False

    response = staff_client.post(ENDPOINTS + "add/", endpoint_form())

    assert response.status_code == 200
    assert b"loopback" in response.content
    assert not WebhookEndpoint.objects.exists()


def test_unticking_enabled_disables_it_through_the_service(staff_client):
    endpoint, _ = webhook_endpoint_add(url="http://127.0.0.1:9/hook")

    response = staff_client.post(
        f"{ENDPOINTS}{endpoint.pk}/change/",
        {"url": endpoint.url, "description": "paused"},
    )

    assert response.status_code == 302, response.content
    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_at is not None
    assert endpoint.description == "paused"


def test_rotating_shows_the_new_secret_once(staff_client):
    endpoint, old = webhook_endpoint_add(url="http://127.0.0.1:9/hook")

    response = staff_client.post(f"{ENDPOINTS}{endpoint.pk}/rotate-secret/")

    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old
    assert endpoint.secret.encode() in response.content


def test_the_attempts_show_on_the_endpoints_and_the_orders_pages(
    staff_client, receiver
):
    receiver.answers = [500]
    endpoint, _ = webhook_endpoint_add(
        url=receiver.url, event_types=["order.completed"]
    )
    order = processed()
    send_due()
    message = WebhookMessage.objects.get()

    endpoint_page = staff_client.get(f"{ENDPOINTS}{endpoint.pk}/change/")
    order_page = staff_client.get(f"/admin/orders/order/{order.pk}/change/")
    message_page = staff_client.get(f"{MESSAGES}{message.pk}/change/")

    for page in (endpoint_page, order_page, message_page):
        assert page.status_code == 200
        assert message.msg_id.encode() in page.content
    assert b"Webhook attempts" in order_page.content


def test_redelivering_a_message_sends_it_again_with_its_id(staff_client, receiver):
    webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
    processed()
    send_due()
    message = WebhookMessage.objects.get()
    assert message.state == WebhookMessage.State.DELIVERED

    response = staff_client.post(
        MESSAGES,
        {"action": "redeliver_messages", "_selected_action": [message.pk]},
    )
    assert response.status_code == 302
    send_due()

    ids = [r.headers["webhook-id"] for r in receiver.received()]
    assert ids == [message.msg_id, message.msg_id]


def test_replaying_sends_what_the_endpoint_never_got(staff_client, receiver):
    order = processed()
    endpoint, _ = webhook_endpoint_add(
        url=receiver.url, event_types=["order.completed"]
    )
    since = (timezone.now() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")

    response = staff_client.post(f"{ENDPOINTS}{endpoint.pk}/replay/", {"since": since})
    assert response.status_code == 302
    send_due()

    [request] = receiver.received()
    assert order.order_id.encode() in request.body


def test_the_buttons_need_the_change_permission(client, django_user_model):
    endpoint, old = webhook_endpoint_add(url="http://127.0.0.1:9/hook")
    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    client.force_login(viewer)

    response = client.post(f"{ENDPOINTS}{endpoint.pk}/rotate-secret/")

    assert response.status_code == 403
    endpoint.refresh_from_db()
    assert endpoint.secret == old
