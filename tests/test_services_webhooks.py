"""Webhook endpoints: adding, disabling, enabling and rotating their secrets
(orders/services/webhooks.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders.exceptions import (
    WebhookEndpointNotFound,
    WebhookInputError,
    WebhookTargetRefused,
)
from orders.models import OrderEvent, WebhookEndpoint
from orders.services import webhooks as services
from tests.factories import place

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def private_networks_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True


def test_an_added_endpoint_gets_a_secret_shown_once_and_only_later_events():
    order = place()
    newest = OrderEvent.objects.filter(order=order).order_by("-pk").first().pk

    endpoint, secret = services.webhook_endpoint_add(
        url="http://127.0.0.1:9/hook",
        event_types=["order.completed", "order.failed"],
        description="warehouse",
    )

    assert secret.startswith("whsec_")
    assert endpoint.secret == secret
    assert endpoint.enabled
    assert endpoint.event_types == ["order.completed", "order.failed"]
    assert endpoint.since_event == newest


def test_no_event_types_means_every_event_type():
    endpoint, _ = services.webhook_endpoint_add(
        url="http://127.0.0.1:9/", event_types=[""]
    )

    assert endpoint.event_types == []
    assert endpoint.wants("order.processing")
    assert endpoint.wants("delivery.completed")


def test_an_unknown_event_type_is_refused_with_the_catalogue():
    with pytest.raises(WebhookInputError, match="order.shipped.*order.completed"):
        services.webhook_endpoint_add(
            url="http://127.0.0.1:9/", event_types=["order.shipped"]
        )
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/hook", "http://user:pw@example.com/", "http:///nohost"],
)
def test_a_url_that_is_not_plain_http_or_https_is_refused(url):
    with pytest.raises(WebhookTargetRefused):
        services.webhook_endpoint_add(url=url)


def test_disabling_stops_an_endpoint_once_and_enabling_starts_it_from_now():
    endpoint, _ = services.webhook_endpoint_add(url="http://127.0.0.1:9/")

    assert services.webhook_endpoint_disable(endpoint_id=endpoint.pk) is True
    assert services.webhook_endpoint_disable(endpoint_id=endpoint.pk) is False
    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert endpoint.disabled_reason == "disabled by an operator"

    order = place()
    assert services.webhook_endpoint_enable(endpoint_id=endpoint.pk) is True
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.disabled_at is None
    assert endpoint.since_event == order.events.order_by("-pk").first().pk


def test_rotating_a_secret_signs_with_both_until_the_window_ends(settings):
    settings.WEBHOOK_SECRET_ROTATION_SECONDS = 3600
    endpoint, old = services.webhook_endpoint_add(url="http://127.0.0.1:9/")
    now = timezone.now()

    endpoint, new = services.webhook_endpoint_rotate_secret(
        endpoint_id=endpoint.pk, now=now
    )

    assert new != old and new.startswith("whsec_")
    assert services.webhook_signing_secrets(endpoint, now) == [new, old]
    later = now + timedelta(seconds=3601)
    assert services.webhook_signing_secrets(endpoint, later) == [new]


def test_an_unknown_endpoint_id_is_named_in_the_error():
    with pytest.raises(WebhookEndpointNotFound, match="no webhook endpoint 999"):
        services.webhook_endpoint_disable(endpoint_id=999)
    with pytest.raises(WebhookEndpointNotFound, match="no webhook endpoint abc"):
        services.webhook_endpoint_rotate_secret(endpoint_id="abc")
