"""The server-rendered pages and the dashboard's numbers, through Django's test
client. (The live parts are exercised against a real daphne in
tests/e2e/test_streams_e2e.py.)"""

import json
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from orders import selectors
from orders.models import Order, OrderEvent
from orders.services.inputs import LineInput, OrderInput
from orders.services.orders import order_fail, order_place
from tests.factories import claim, process

Status = Order.Status
STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "orders"

SCRIPT = "<script>alert('owned')</script>"
IMAGE = "<img src=x onerror=alert(1)>"
HOSTILE_EMAIL = '"<script>alert(1)</script>"@example.com'


@pytest.fixture(autouse=True)
def immediate_retries(settings):
    settings.ORDER_RETRY_BASE_SECONDS = 0
    settings.ORDER_RETRY_JITTER = 0
    settings.ORDER_MAX_ATTEMPTS = 3


def failed_order(place_order, *, reason: str, **overrides) -> Order:
    order = place_order(**overrides)
    order = claim(order)
    assert order_fail(order, reason=reason)
    return order


def hostile_order(place_order) -> Order:
    """Text the API would refuse today (a quoted address) may be stored all
    the same: from before, from the admin, from a command. It is placed
    through the service, past the API's validation."""

    def place_unvalidated(**overrides):
        data = OrderInput(
            customer_email=HOSTILE_EMAIL,
            lines=[LineInput(sku=IMAGE, quantity=1, unit_price=Decimal("1.00"))],
        )
        return order_place(data=data)[0]

    return failed_order(place_unvalidated, reason=f"gateway said {SCRIPT} {IMAGE}")


def assert_inert(html: str) -> None:
    """No payload survives as markup; each is there as escaped text."""
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# Labels -------------------------------------------------------------------------
STATUS_LABELS = {
    "PENDING": "Waiting for a worker",
    "PROCESSING": "Processing",
    "RETRYING": "Retrying soon",
    "COMPLETED": "Completed",
    "FAILED": "Failed",
}
EVENT_LABELS = {
    "order.created": "Order placed",
    "order.processing": "Attempt started",
    "order.step_completed": "Step completed",
    "order.attempt_failed": "Attempt failed",
    "order.retry_scheduled": "Retry scheduled",
    "order.completed": "Completed",
    "order.failed": "Failed",
    "order.retry_requested": "Retry requested by an operator",
    "delivery.completed": "Delivered",
    "listener.failed": "Delivery listener failed",
}


@pytest.mark.django_db
def test_every_page_hands_its_scripts_the_status_and_event_labels(client):
    """The scripts (static/orders/live.js) read the labels from the page, in the
    order of the choices: the event types are listed in that order too."""
    html = client.get("/").content.decode()
    labels = json.loads(
        re.search(
            r'<script id="ui-labels" type="application/json">(.*?)</script>', html
        )[1]
    )
    assert labels == {"statuses": STATUS_LABELS, "events": EVENT_LABELS}
    assert list(labels["events"]) == list(EVENT_LABELS)


@pytest.mark.django_db
def test_dashboard_counts_each_status_under_its_label(staff_client):
    html = staff_client.get("/dashboard/").content.decode()
    shown = dict(
        re.findall(
            r'data-status="(\w+)">\s*<span class="count-label">([^<]*)</span>', html
        )
    )
    assert shown == STATUS_LABELS


# Storefront ---------------------------------------------------------------------
@pytest.mark.django_db
def test_storefront_offers_failure_injection_when_simulation_is_enabled(
    client, settings
):
    settings.ORDER_SIMULATION_ENABLED = True
    html = client.get("/").content.decode()
    assert 'data-role="order-form"' in html
    assert 'data-role="simulate"' in html
    for name in ("fail_times", "failure", "step", "delay_ms", "listener_fails"):
        assert f'name="{name}"' in html
    # The longest delay the API takes here (half of a 45 s attempt).
    assert 'name="delay_ms" type="number" min="0" max="22500"' in html
    assert "orders/storefront.js" in html


@pytest.mark.django_db
def test_storefront_hides_failure_injection_when_simulation_is_disabled(
    client, settings
):
    settings.ORDER_SIMULATION_ENABLED = False
    html = client.get("/").content.decode()
    assert 'data-role="order-form"' in html
    assert 'data-role="simulate"' not in html


# Order page ---------------------------------------------------------------------
def status_badge(html: str) -> tuple[str, str]:
    """The status badge's data-status and text (the page root and the timeline
    items carry data-status too)."""
    badge = re.search(
        r'<span class="badge badge-(\w+)" data-role="status" data-status="(\w+)"'
        r"[^>]*>([^<]*)</span>",
        html,
    )
    assert badge, "no status badge"
    assert badge.group(1) == badge.group(2).lower()
    return badge.group(2), badge.group(3)


@pytest.mark.django_db
def test_order_page_says_where_the_order_is_and_tells_a_retry_in_one_line(
    client, place_order
):
    order = place_order(simulate={"fail_times": 1})
    order = process(order.order_id)
    assert order.status == Status.RETRYING
    response = client.get(f"/orders/{order.order_id}")
    assert response.status_code == 200
    html = response.content.decode()
    assert status_badge(html) == ("RETRYING", "Trying again")
    retrying = "Having trouble reaching the payment provider — trying again (2 of 3)."
    assert re.search(r'data-role="message"[^>]*>([^<]*)</p>', html)[1] == retrying
    assert 'data-attempt="1"' in html
    assert 'data-max-attempts="3"' in html
    assert 'data-role="countdown-row" hidden' not in html
    events = {event.type: event.pk for event in OrderEvent.objects.filter(order=order)}
    # The failed attempt is told by the retry that follows it.
    assert re.findall(r'data-event-id="(\d+)"', html) == [
        str(events[kind])
        for kind in ("order.created", "order.processing", "order.retry_scheduled")
    ]
    assert re.findall(r'data-role="event-message">([^<]*)<', html) == [
        "We&#x27;ve received your order.",
        "We&#x27;re working on your order.",
        retrying,
    ]
    assert f'data-last-event-id="{max(events.values())}"' in html
    assert f'data-events-url="/api/orders/{order.order_id}/events"' in html
    assert 'data-place-url="/api/orders"' in html


@pytest.mark.django_db
def test_order_page_of_a_failed_order_says_why_and_offers_to_place_it_again(
    client, place_order
):
    order = place_order(simulate={"fail_times": 1, "failure": "permanent"})
    order = process(order.order_id)
    assert order.status == Status.FAILED
    html = client.get(f"/orders/{order.order_id}").content.decode()
    assert status_badge(html) == ("FAILED", "Not completed")
    reason = re.search(r'data-role="message" data-status="FAILED"[^>]*>([^<]+)<', html)[
        1
    ]
    assert reason == (
        "Your payment was declined, so we couldn&#x27;t complete your order. "
        "You have not been charged."
    )
    assert 'data-role="failure-box" hidden' not in html
    assert "You can place the same order again." in html
    assert 'data-role="place-again"' in html
    same = json.loads(
        re.search(
            r'<script id="same-order" type="application/json">(.*?)</script>', html
        )[1]
    )
    assert same == {
        "customer_email": order.customer_email,
        "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
    }


@pytest.mark.django_db
def test_order_page_shows_each_step_done_or_waiting(client, place_order):
    order = place_order(simulate={"step": "stock", "failure": "permanent"})
    order = process(order.order_id)
    html = client.get(f"/orders/{order.order_id}").content.decode()
    steps = re.findall(
        r'<li data-step="(\w+)" data-state="(\w+)"><span class="step-name">([^<]*)'
        r'</span> <span class="muted" data-role="step-state">([^<]*)<',
        html,
    )
    assert steps == [
        ("payment", "done", "Payment", "done"),
        ("stock", "pending", "Reserving your items", "waiting"),
    ]


@pytest.mark.django_db
def test_order_page_of_an_unknown_order_is_a_404(client):
    assert client.get("/orders/ord_doesnotexist").status_code == 404


@pytest.mark.django_db
def test_order_page_renders_hostile_email_sku_and_failure_text_as_text(
    client, place_order
):
    order = hostile_order(place_order)
    html = client.get(f"/orders/{order.order_id}").content.decode()
    assert_inert(html)


# Dashboard ----------------------------------------------------------------------
@pytest.mark.django_db
def test_dashboard_sends_anonymous_visitors_to_the_login_page(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/dashboard/")


@pytest.mark.django_db
def test_dashboard_sends_non_staff_accounts_to_the_login_page(
    client, django_user_model
):
    client.force_login(django_user_model.objects.create_user("shopper", "", "pw"))
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_dashboard_shows_counts_chart_rates_feed_and_failed_orders_with_actions(
    staff_client, place_order
):
    failed = failed_order(place_order, reason="card declined")
    place_order()
    response = staff_client.get("/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    counts = dict(
        re.findall(
            r'data-role="count" data-status="(\w+)">\s*<span class="count-label">'
            r'[^<]*</span>\s*<strong class="count-value" data-role="count-value">'
            r"(\d+)</strong>",
            html,
        )
    )
    assert counts == {
        "PENDING": "1",
        "PROCESSING": "0",
        "RETRYING": "0",
        "COMPLETED": "0",
        "FAILED": "1",
    }
    assert '<svg data-role="chart"' in html
    for series in ("completed", "failed", "retried"):
        assert f'data-series="{series}"' in html
    assert 'data-role="retry-rate"' in html
    assert 'data-role="median-complete"' in html
    assert f'<tr data-order-id="{failed.order_id}">' in html
    assert f'data-role="retry" data-order-id="{failed.order_id}"' in html
    assert f'href="/admin/orders/order/{failed.pk}/change/"' in html
    # The feed starts with the newest events; the stream adds to it.
    newest = OrderEvent.objects.order_by("-pk").first()
    assert re.search(r'data-role="feed"[^>]*>\s*<li[^>]*data-event-id="(\d+)"', html)[
        1
    ] == str(newest.pk)
    # The retry button's POST needs the CSRF token.
    assert 'data-csrf-token="' in html
    assert "csrftoken" in response.cookies


@pytest.mark.django_db
def test_dashboard_renders_hostile_text_in_feed_and_failed_list_as_text(
    staff_client, place_order
):
    hostile_order(place_order)
    html = staff_client.get("/dashboard/").content.decode()
    assert_inert(html)


@pytest.mark.django_db
def test_dashboard_numbers_are_json_for_staff_only(staff_client, place_order):
    failed_order(place_order, reason="card declined")
    anonymous = Client().get("/api/dashboard/stats")
    assert anonymous.status_code == 403
    assert anonymous.json()["error"] == "not_authenticated"
    response = staff_client.get("/api/dashboard/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats["counts"]["FAILED"] == 1
    assert stats["series"]["minutes"] == 60
    assert sum(stats["series"]["failed"]) == 1
    assert stats["failed_orders"][0]["failure_reason"] == "card declined"


# Dashboard numbers --------------------------------------------------------------
@pytest.mark.django_db
def test_minute_series_counts_completed_failed_and_retried_events_per_minute(
    place_order,
):
    now = timezone.now()
    order = place_order()
    for minutes_ago, event_type in [
        (0, OrderEvent.Type.COMPLETED),
        (0, OrderEvent.Type.COMPLETED),
        (5, OrderEvent.Type.FAILED),
        (5, OrderEvent.Type.RETRY_SCHEDULED),
        (59, OrderEvent.Type.RETRY_SCHEDULED),
        (61, OrderEvent.Type.COMPLETED),  # outside the hour
    ]:
        OrderEvent.objects.create(
            order=order,
            type=event_type,
            status=Status.PENDING,
            at=now - timedelta(minutes=minutes_ago),
        )
    series = selectors.dashboard_minute_series(now=now)
    assert len(series["completed"]) == 60
    assert series["completed"][-1] == 2
    assert sum(series["completed"]) == 2
    assert series["failed"][-6] == 1
    assert series["retried"][-6] == 1
    assert series["retried"][0] == 1


@pytest.mark.django_db
def test_retry_rate_and_median_time_to_complete_cover_orders_finished_this_hour(
    place_order,
):
    first_try = process(place_order().order_id)
    third_try = place_order(simulate={"fail_times": 2})
    for _ in range(3):
        third_try = process(third_try.order_id)
    failed_order(place_order, reason="card declined")
    assert first_try.status == third_try.status == Status.COMPLETED
    rates = selectors.dashboard_rates()
    assert rates["finished"] == 3
    assert rates["retried"] == 1
    assert rates["retry_rate"] == pytest.approx(1 / 3)
    assert rates["completed"] == 2
    assert 0 <= rates["median_seconds_to_complete"] < 60


def test_page_scripts_never_parse_server_data_as_html():
    """Everything the scripts show is set with textContent or createElement; no
    innerHTML-like sink exists to be fed an order's data."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|"
        r"createContextualFragment|DOMParser|\beval\(|new Function"
    )
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert {path.name for path in scripts} >= {
        "live.js",
        "order.js",
        "dashboard.js",
        "storefront.js",
    }
    for path in scripts:
        assert not sinks.search(path.read_text()), path.name


def test_favicon_is_served_for_every_page_including_the_admin(client):
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[0][0].endswith("orders/favicon.svg")
