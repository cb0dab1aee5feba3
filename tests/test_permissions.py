"""Staff status alone opens nothing: each operators' endpoint asks for the model
permission that the admin asks for the same action, and the roles
(orders/permissions.py, docs/operators/roles.md) hand those out. Anonymous and
non-staff callers keep their own answers (tests/test_api.py, test_metrics.py,
test_pages.py)."""

import pytest

from orders.models import Order, OrderEvent
from tests import factories

pytestmark = pytest.mark.django_db

READS = ["/api/dashboard/stats", "/metrics"]


def failed_order() -> Order:
    order = factories.processed(fail_times=1, failure="permanent")
    assert order.status == Order.Status.FAILED
    return order


def completed_order() -> Order:
    order = factories.processed()
    assert order.status == Order.Status.COMPLETED
    return order


def retry(client, order: Order):
    return client.post(f"/api/orders/{order.order_id}/retry")


def complete_delivery(client, order: Order):
    return client.post(f"/api/deliveries/{order.delivery.code}/complete")


def assert_forbidden(response, permission: str):
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["error"] == "forbidden"
    assert permission in body["detail"]


def assert_still_failed(order: Order):
    attempts = order.attempts
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.FAILED, attempts)
    assert not order.events.filter(type=OrderEvent.Type.RETRY_REQUESTED).exists()


def assert_not_delivered(order: Order):
    order.delivery.refresh_from_db()
    assert order.delivery.completed_at is None


# Staff with no permission ---------------------------------------------------------
def test_staff_without_permissions_cannot_retry_and_the_order_stays_failed(
    staff_in_role,
):
    order = failed_order()

    response = retry(staff_in_role(None), order)

    assert_forbidden(response, "orders.change_order")
    assert_still_failed(order)


def test_staff_without_permissions_cannot_complete_a_delivery(staff_in_role):
    order = completed_order()

    response = complete_delivery(staff_in_role(None), order)

    assert_forbidden(response, "orders.change_delivery")
    assert_not_delivered(order)


@pytest.mark.parametrize("url", READS)
def test_staff_without_permissions_cannot_read_the_dashboard_numbers_or_metrics(
    staff_in_role, url
):
    response = staff_in_role(None).get(url)

    assert_forbidden(response, "orders.view_order")


def test_staff_without_permissions_get_the_403_page_for_the_dashboard(
    staff_in_role,
):
    failed_order()

    response = staff_in_role(None).get("/dashboard/")

    assert response.status_code == 403
    assert "buyer@example.com" not in response.content.decode()


# Support: reads -------------------------------------------------------------------
@pytest.mark.parametrize("url", [*READS, "/dashboard/"])
def test_support_reads_the_dashboard_and_the_metrics(staff_in_role, url):
    failed_order()

    response = staff_in_role("Support").get(url)

    assert response.status_code == 200, response.content


def test_support_cannot_retry_and_is_told_which_group_may(staff_in_role):
    order = failed_order()

    response = retry(staff_in_role("Support"), order)

    assert_forbidden(response, "orders.change_order")
    assert "the Operators group" in response.json()["detail"]
    assert_still_failed(order)


@pytest.mark.parametrize(("role", "offered"), [("Support", False), ("Operators", True)])
def test_the_dashboard_offers_retry_only_to_those_who_may_retry(
    staff_in_role, role, offered
):
    """The failed list's Retry button, rendered here and by dashboard.js from
    data-may-retry: a button the server would refuse is not shown."""
    order = failed_order()

    page = staff_in_role(role).get("/dashboard/").content.decode()

    assert order.order_id in page
    assert ('data-role="retry"' in page) is offered
    assert f'data-may-retry="{str(offered).lower()}"' in page


def test_support_cannot_complete_a_delivery(staff_in_role):
    order = completed_order()

    response = complete_delivery(staff_in_role("Support"), order)

    assert_forbidden(response, "orders.change_delivery")
    assert_not_delivered(order)


# Operators: reads and writes ------------------------------------------------------
def test_operators_retry_a_failed_order(staff_in_role):
    order = failed_order()

    response = retry(staff_in_role("Operators"), order)

    assert response.status_code == 202, response.content
    order.refresh_from_db()
    assert (order.status, order.attempts) == (Order.Status.PENDING, 0)


def test_operators_complete_a_delivery(staff_in_role):
    order = completed_order()

    response = complete_delivery(staff_in_role("Operators"), order)

    assert response.status_code == 200, response.content
    assert response.json()["completed_now"] is True


@pytest.mark.parametrize("url", [*READS, "/dashboard/"])
def test_operators_read_the_dashboard_and_the_metrics(staff_in_role, url):
    response = staff_in_role("Operators").get(url)

    assert response.status_code == 200, response.content


# The pages' links ------------------------------------------------------------------
def test_the_pages_link_the_dashboard_only_for_staff_who_may_open_it(staff_in_role):
    support = staff_in_role("Support").get("/").content.decode()
    none = staff_in_role(None).get("/").content.decode()

    assert 'href="/dashboard/"' in support
    assert 'href="/dashboard/"' not in none
    assert 'href="/admin/"' in none
