"""Outbound requests (orders/outbound.py): non-public targets refused, at add
time and after DNS resolution before each request; no redirect followed; the
answer read up to a bound; a hanging receiver cut off."""

import socket

import pytest

from orders import outbound
from orders.exceptions import WebhookTargetRefused
from orders.models import WebhookAttempt, WebhookMessage
from orders.services.relay import webhook_messages_fan_out
from orders.services.webhook_delivery import (
    webhook_endpoints_due,
    webhook_message_send,
    webhook_messages_claim,
)
from orders.services.webhooks import webhook_endpoint_add
from tests.factories import processed
from tests.webhook_receiver import Receiver


@pytest.fixture(autouse=True)
def no_settle_window(settings):
    # On PostgreSQL the ids of the events other tests rolled back are holes.
    settings.ORDER_STREAM_SETTLE_SECONDS = 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_a_non_public_address_is_refused(address):
    assert outbound.address_refusal(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_a_public_address_is_allowed(address):
    assert outbound.address_refusal(address) is None


@pytest.fixture
def dns(monkeypatch):
    """Names the test resolves itself, as a DNS server that changes its answer
    would (the rest resolve as usual)."""
    answers: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            family = socket.AF_INET6 if ":" in answers[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hook", "http://localhost/", "http://[::1]/"]
)
def test_adding_a_loopback_url_is_refused_unless_private_networks_are_allowed(
    url, settings
):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with pytest.raises(WebhookTargetRefused, match="loopback"):
        webhook_endpoint_add(url=url)

    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    endpoint, _ = webhook_endpoint_add(url=url)
    assert endpoint.url == url


@pytest.mark.django_db
def test_a_name_that_resolves_to_a_private_address_is_refused(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    dns["hooks.example.test"] = "10.0.0.7"

    with pytest.raises(WebhookTargetRefused, match="private"):
        webhook_endpoint_add(url="https://hooks.example.test/hook")


def send_due() -> list[WebhookAttempt]:
    webhook_messages_fan_out()
    return [
        webhook_message_send(outgoing)
        for endpoint_id in webhook_endpoints_due()
        for outgoing in webhook_messages_claim(endpoint_id=endpoint_id, limit=10)
    ]


@pytest.mark.django_db
def test_a_name_that_rebinds_to_loopback_is_refused_at_delivery(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    with Receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        dns["hooks.example.test"] = "93.184.216.34"
        webhook_endpoint_add(
            url=f"http://hooks.example.test:{port}/hook",
            event_types=["order.completed"],
        )
        processed()
        dns["hooks.example.test"] = "127.0.0.1"

        [attempt] = send_due()

        assert receiver.received() == []
    assert attempt.status_code is None
    assert "refused" in attempt.error and "loopback" in attempt.error
    assert WebhookMessage.objects.get().state == WebhookMessage.State.PENDING


@pytest.mark.django_db
def test_the_request_goes_to_the_checked_address_with_the_urls_host(dns, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    with Receiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        dns["hooks.example.test"] = "127.0.0.1"
        webhook_endpoint_add(
            url=f"http://hooks.example.test:{port}/hook",
            event_types=["order.completed"],
        )
        processed()

        [attempt] = send_due()

        [request] = receiver.received()
    assert attempt.succeeded
    assert request.headers["host"] == f"hooks.example.test:{port}"


@pytest.mark.django_db
def test_a_redirect_is_not_followed_and_counts_as_a_failure(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    with (
        Receiver() as elsewhere,
        Receiver(default=307, headers={"location": elsewhere.url}) as receiver,
    ):
        webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
        processed()

        [attempt] = send_due()

        assert len(receiver.received()) == 1
        assert elsewhere.received() == []
    assert attempt.status_code == 307 and not attempt.succeeded


@pytest.mark.django_db
def test_only_the_first_bytes_of_an_answer_are_read_and_kept(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_RESPONSE_BYTES = 64
    with Receiver(reply=b"x" * 200_000) as receiver:
        webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
        processed()

        [attempt] = send_due()

    assert attempt.succeeded
    assert attempt.response_head == "x" * 64


@pytest.mark.django_db
def test_a_receiver_that_hangs_is_cut_off_at_the_timeout(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    with Receiver(delay=5) as receiver:
        webhook_endpoint_add(url=receiver.url, event_types=["order.completed"])
        processed()

        [attempt] = send_due()

    assert attempt.status_code is None
    assert attempt.error == "timed out after 0.5 s"
    assert attempt.duration_ms < 2000
