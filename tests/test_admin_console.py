"""The admin as the operators' console: its branded index with the orders per
status, an order's page with its steps and the buttons that apply to it, the
order list's search and filters, and no way to delete an order."""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from django_q.conf import Conf

from orders.models import Delivery, FailureRecord, Order, OrderEvent
from orders.services import orders as services
from tests import factories

pytestmark = pytest.mark.django_db
Status = Order.Status

INDEX = "/admin/"
ORDERS = "/admin/orders/order/"
LISTENER_TASK = "orders.tasks.order_delivery_completed"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator():
    client = Client()
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


@pytest.fixture
def viewer():
    """Staff who may look at orders but not change them."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_order"))
    client = Client()
    client.force_login(user)
    return client


def staff_with(*codenames: str) -> Client:
    """A client logged in as staff holding just these orders permissions."""
    user = User.objects.create_user(f"staff-{'-'.join(codenames)}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="orders", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


def failed_order() -> Order:
    order = factories.processed(fail_times=1, failure="permanent")
    assert order.status == Status.FAILED
    return order


def completed_order(**simulate) -> Order:
    order = factories.processed(**simulate)
    assert order.status == Status.COMPLETED
    return order


def delivered_order() -> Order:
    order = completed_order()
    Delivery.objects.filter(order=order).update(completed_at=timezone.now())
    Order.objects.filter(pk=order.pk).update(delivered_at=timezone.now())
    order.refresh_from_db()
    return order


def listener_failure(order: Order, **fields) -> FailureRecord:
    """The record the global handler writes when the delivery listener raises."""
    return factories.failure_record(
        order,
        task=LISTENER_TASK,
        args=[order.order_id, order.delivery.code],
        exception_type="ListenerFailed",
        message="the delivery listener failed on its first run",
        **fields,
    )


def page_of(order: Order) -> str:
    return f"{ORDERS}{order.pk}/change/"


def button(action: str) -> str:
    return f'data-action="{action}"'


def messages_of(response) -> str:
    return " | ".join(str(message) for message in response.context["messages"])


def snapshot(order: Order) -> tuple:
    """What a refused action must leave as it was."""
    order = Order.objects.get(pk=order.pk)
    delivery = Delivery.objects.filter(order=order).first()
    return (
        order.status,
        order.version,
        order.delivered_at,
        delivery.completed_at if delivery else None,
        order.events.count(),
        LogEntry.objects.count(),
    )


# The index ----------------------------------------------------------------------
def test_the_admin_is_branded_as_the_operations_console(operator):
    page = operator.get(INDEX).content.decode()

    assert "<title>Operations console | orderproj operations</title>" in page
    assert '<a href="/admin/">orderproj operations</a>' in page
    assert "Django administration" not in page


def test_the_index_opens_with_the_orders_per_status_linked_to_their_list(operator):
    failed_order()
    failed_order()
    completed_order()
    factories.place()

    response = operator.get(INDEX)

    counts = {row["status"]: row["count"] for row in response.context["status_counts"]}
    assert counts == {
        "PENDING": 1,
        "PROCESSING": 0,
        "RETRYING": 0,
        "COMPLETED": 1,
        "FAILED": 2,
    }
    page = response.content.decode()
    assert page.index("Orders by status") < page.index('id="content-main"')
    assert f'href="{ORDERS}?status__exact=FAILED"' in page
    failed_list = operator.get(ORDERS, {"status__exact": "FAILED"})
    assert failed_list.context["cl"].result_count == 2


def test_the_index_shows_the_figures_only_to_staff_who_may_view_orders():
    factories.place()

    without = staff_with().get(INDEX).content.decode()
    viewing = staff_with("view_order").get(INDEX).content.decode()

    assert 'data-role="status-counts"' not in without
    assert 'data-role="dashboard-link"' not in without
    assert 'data-role="status-counts"' in viewing


def test_the_index_links_to_the_live_dashboard_and_the_unresolved_failures(operator):
    page = operator.get(INDEX).content.decode()

    assert 'href="/dashboard/" data-role="dashboard-link"' in page
    assert f'href="{ORDERS}?failures=unresolved"' in page
    assert operator.get(f"{ORDERS}?failures=unresolved").status_code == 200


@pytest.mark.parametrize("url", [INDEX, "order page"])
def test_the_consoles_pages_carry_no_inline_style_or_script(operator, url):
    """The CSP (style-src and script-src 'self') would block them."""
    if url == "order page":
        order = failed_order()
        listener_failure(factories.processed(), resolved=False)
        url = page_of(order)

    page = operator.get(url).content.decode()

    scripts = re.findall(r"<script\b[^>]*>", page)
    assert scripts  # the admin's own, from files
    assert [tag for tag in scripts if " src=" not in tag] == []
    assert "<style" not in page
    assert " style=" not in page
    assert re.search(r" on[a-z]+=", page) is None
    assert "/static/orders/admin.css" in page


def test_an_orders_page_links_each_of_its_failures_to_its_group(operator):
    order = delivered_order()
    failure = listener_failure(order)

    page = operator.get(page_of(order)).content.decode()

    group_url = f"/admin/orders/failuregroup/{failure.group.pk}/change/"
    assert f'<a href="{group_url}">#{failure.group.pk}</a>' in page


# An order's page: its steps -------------------------------------------------------
def test_an_orders_page_shows_each_step_done_with_its_reference(operator):
    order = completed_order()

    page = operator.get(page_of(order)).content.decode()

    for name in ("payment", "stock"):
        reference = order.steps[name]["reference"]
        assert f'<tr data-step="{name}" data-state="done">' in page
        assert f"<td>{reference}</td>" in page


def test_an_orders_page_shows_the_steps_not_done_yet_as_pending(operator):
    order = factories.processed(fail_times=1, failure="permanent", step="stock")

    page = operator.get(page_of(order)).content.decode()

    assert '<tr data-step="payment" data-state="done">' in page
    assert '<tr data-step="stock" data-state="pending">' in page


# An order's page: which buttons -----------------------------------------------------
def test_a_failed_order_offers_retry_and_nothing_else(operator):
    page = operator.get(page_of(failed_order())).content.decode()

    assert button("retry") in page
    assert button("complete-delivery") not in page
    assert button("rerun") not in page


def test_a_completed_order_offers_to_complete_its_delivery_until_it_is(operator):
    waiting = completed_order()
    delivered = delivered_order()

    waiting_page = operator.get(page_of(waiting)).content.decode()
    delivered_page = operator.get(page_of(delivered)).content.decode()

    assert button("complete-delivery") in waiting_page
    assert button("retry") not in waiting_page
    assert 'data-role="order-actions"' not in delivered_page


def test_an_unresolved_failure_of_a_project_task_offers_a_rerun(operator):
    order = delivered_order()
    open_one = listener_failure(order)
    listener_failure(order, resolved=True)
    factories.failure_record(order, task="request api-order", exception_type="KeyError")
    factories.failure_record(
        order, task="orders.tasks.gone_since", exception_type="KeyError"
    )

    page = operator.get(page_of(order)).content.decode()

    assert page.count(button("rerun")) == 1
    assert f"/failures/{open_one.pk}/rerun/" in page
    assert f"Re-run order_delivery_completed (failure #{open_one.pk})" in page


def test_staff_without_the_change_permission_see_no_buttons(viewer):
    response = viewer.get(page_of(failed_order()))

    assert response.status_code == 200
    assert button("retry") not in response.content.decode()


@pytest.mark.parametrize(
    ("permission", "buttons"),
    [
        ("change_order", set()),
        ("change_delivery", {"complete-delivery"}),
        ("change_failurerecord", {"rerun"}),
    ],
)
def test_each_button_shows_for_staff_with_the_permission_of_what_it_changes(
    permission, buttons
):
    order = completed_order()
    listener_failure(order)

    page = staff_with("view_order", permission).get(page_of(order)).content.decode()

    shown = {name for name in ("complete-delivery", "rerun") if button(name) in page}
    assert shown == buttons


# An order's page: what the buttons do -----------------------------------------------
def test_the_retry_button_retries_the_failed_order_through_the_service(
    operator, django_capture_on_commit_callbacks
):
    order = failed_order()

    with django_capture_on_commit_callbacks() as callbacks:
        response = operator.post(f"{ORDERS}{order.pk}/retry/", follow=True)

    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert order.attempts == 0
    assert order.events.last().type == OrderEvent.Type.RETRY_REQUESTED
    assert len(callbacks) == 1  # handed to the queue after commit
    assert response.redirect_chain == [(page_of(order), 302)]
    assert f"Retried {order.order_id}" in messages_of(response)
    entry = LogEntry.objects.get(object_id=str(order.pk))
    assert entry.get_change_message() == (
        f"Retried {order.order_id}: back to PENDING, attempts reset."
    )
    assert button("retry") not in response.content.decode()


def test_a_retry_of_an_order_that_is_no_longer_failed_says_so_and_changes_nothing(
    operator,
):
    order = failed_order()
    page = operator.get(page_of(order))
    services.order_retry(order=order)  # another operator, in between
    before = snapshot(order)

    response = operator.post(f"{ORDERS}{order.pk}/retry/")

    assert button("retry") in page.content.decode()
    assert response.status_code == 409
    assert f"{order.order_id} is PENDING, not FAILED" in response.content.decode()
    assert snapshot(order) == before


def test_a_get_of_a_buttons_url_does_nothing(operator):
    order = failed_order()
    before = snapshot(order)

    response = operator.get(f"{ORDERS}{order.pk}/retry/")

    assert response.status_code == 405
    assert snapshot(order) == before


def test_a_button_post_without_the_csrf_token_is_refused():
    order = failed_order()
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("ops", "o@example.com", "pw"))
    before = snapshot(order)

    response = client.post(f"{ORDERS}{order.pk}/retry/")

    assert response.status_code == 403
    assert snapshot(order) == before


@pytest.mark.parametrize("route", ["retry/", "complete-delivery/", "failures/1/rerun/"])
def test_staff_without_the_change_permission_cannot_use_the_buttons(viewer, route):
    order = failed_order()
    before = snapshot(order)

    response = viewer.post(f"{ORDERS}{order.pk}/{route}")

    assert response.status_code == 403
    assert snapshot(order) == before


def test_buttons_need_the_permission_of_what_they_change_not_the_orders(
    django_capture_on_commit_callbacks,
):
    order = completed_order()
    record = listener_failure(order)
    client = staff_with("view_order", "change_order")
    before = snapshot(order)

    with django_capture_on_commit_callbacks() as callbacks:
        completing = client.post(f"{ORDERS}{order.pk}/complete-delivery/")
        rerunning = client.post(f"{ORDERS}{order.pk}/failures/{record.pk}/rerun/")

    assert (completing.status_code, rerunning.status_code) == (403, 403)
    assert callbacks == []
    assert snapshot(order) == before


def test_the_delivery_button_needs_only_the_deliverys_change_permission():
    order = completed_order()

    response = staff_with("view_order", "change_delivery").post(
        f"{ORDERS}{order.pk}/complete-delivery/"
    )

    assert response.status_code == 302
    order.delivery.refresh_from_db()
    assert order.delivery.completed_at is not None


def test_a_button_of_an_order_that_does_not_exist_is_a_404(operator):
    response = operator.post(f"{ORDERS}999999/retry/")

    assert response.status_code == 404
    assert "No order with id 999999." in response.content.decode()


def test_the_complete_delivery_button_completes_it_through_the_service(
    operator, django_capture_on_commit_callbacks
):
    order = completed_order()

    with django_capture_on_commit_callbacks() as callbacks:
        response = operator.post(f"{ORDERS}{order.pk}/complete-delivery/", follow=True)

    order.delivery.refresh_from_db()
    assert order.delivery.completed_at is not None
    assert len(callbacks) == 1  # the delivery listener, after commit
    assert f"Completed the delivery {order.delivery.code}" in messages_of(response)
    assert LogEntry.objects.filter(object_id=str(order.pk)).count() == 1
    assert button("complete-delivery") not in response.content.decode()


def test_completing_a_delivery_completed_meanwhile_says_so_and_changes_nothing(
    operator,
):
    order = delivered_order()
    before = snapshot(order)

    response = operator.post(f"{ORDERS}{order.pk}/complete-delivery/")

    assert response.status_code == 409
    assert "was completed already; nothing changed" in response.content.decode()
    assert snapshot(order) == before


def test_completing_the_delivery_of_an_order_without_one_says_so(operator):
    order = failed_order()
    before = snapshot(order)

    response = operator.post(f"{ORDERS}{order.pk}/complete-delivery/")

    assert response.status_code == 409
    assert f"{order.order_id} has no delivery" in response.content.decode()
    assert snapshot(order) == before


def test_the_rerun_button_runs_the_failed_listener_again(
    operator, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(Conf, "SYNC", True)
    order = completed_order()
    Delivery.objects.filter(order=order).update(completed_at=timezone.now())
    record = listener_failure(order)

    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(
            f"{ORDERS}{order.pk}/failures/{record.pk}/rerun/", follow=True
        )

    order.refresh_from_db()
    assert order.delivered_at is not None
    assert order.events.last().type == OrderEvent.Type.DELIVERY_COMPLETED
    assert f"Re-ran {LISTENER_TASK} from failure #{record.pk}" in messages_of(response)
    assert FailureRecord.objects.filter(pk=record.pk, resolved=False).exists()
    assert LogEntry.objects.filter(object_id=str(order.pk)).count() == 1


def test_a_rerun_of_a_failure_resolved_meanwhile_says_so_and_runs_nothing(
    operator, django_capture_on_commit_callbacks
):
    order = completed_order()
    record = listener_failure(order, resolved=True)
    before = snapshot(order)

    with django_capture_on_commit_callbacks() as callbacks:
        response = operator.post(f"{ORDERS}{order.pk}/failures/{record.pk}/rerun/")

    assert response.status_code == 409
    assert f"Failure #{record.pk} was resolved" in response.content.decode()
    assert callbacks == []
    assert snapshot(order) == before


def test_a_rerun_of_another_orders_failure_is_a_404(operator):
    order, other = completed_order(), completed_order()
    record = listener_failure(other)
    before = snapshot(order)

    response = operator.post(f"{ORDERS}{order.pk}/failures/{record.pk}/rerun/")

    assert response.status_code == 404
    assert f"has no failure #{record.pk}" in response.content.decode()
    assert snapshot(order) == before


def test_a_rerun_of_a_task_that_is_not_the_projects_is_refused(operator):
    order = completed_order()
    record = factories.failure_record(
        order, task="request api-order", exception_type="KeyError"
    )

    response = operator.post(f"{ORDERS}{order.pk}/failures/{record.pk}/rerun/")

    assert response.status_code == 409
    assert "only orders.tasks.* can be re-run" in response.content.decode()


# Nothing is deleted -----------------------------------------------------------------
def test_orders_cannot_be_deleted_from_the_admin(operator):
    order = completed_order()

    listing = operator.get(ORDERS).content.decode()
    delete_page = operator.get(f"{ORDERS}{order.pk}/delete/")
    delete_post = operator.post(f"{ORDERS}{order.pk}/delete/", {"post": "yes"})
    action = operator.post(
        ORDERS,
        {"action": "delete_selected", "_selected_action": [order.pk], "post": "yes"},
        follow=True,
    )

    assert 'value="delete_selected"' not in listing
    assert (delete_page.status_code, delete_post.status_code) == (403, 403)
    # The action form refuses an action it does not offer.
    assert "No action selected." in messages_of(action)
    assert Order.objects.filter(pk=order.pk).exists()
    assert order.events.count() > 0


def test_events_lines_and_deliveries_cannot_be_deleted_either(operator):
    order = completed_order()

    page = operator.get(page_of(order)).content.decode()
    delivery = order.delivery
    delivery_delete = operator.get(f"/admin/orders/delivery/{delivery.pk}/delete/")

    assert "-DELETE" not in page  # no inline row offers a delete box
    assert operator.get("/admin/orders/orderevent/").status_code == 404
    assert operator.get("/admin/orders/orderline/").status_code == 404
    assert delivery_delete.status_code == 403


# The order list ---------------------------------------------------------------------
def test_orders_are_found_by_the_sku_of_any_of_their_lines(operator, place_order):
    lamp = place_order(
        items=[
            {"sku": "MUG-1", "quantity": 1, "unit_price": "3.00"},
            {"sku": "LAMP-7", "quantity": 1, "unit_price": "30.00"},
        ]
    )
    mug = place_order(items=[{"sku": "MUG-1", "quantity": 2, "unit_price": "3.00"}])

    by_lamp = operator.get(ORDERS, {"q": "LAMP-7"})
    by_mug = operator.get(ORDERS, {"q": "MUG-1"})

    assert list(by_lamp.context["cl"].result_list) == [lamp]
    assert sorted(order.pk for order in by_mug.context["cl"].result_list) == sorted(
        [lamp.pk, mug.pk]
    )  # each once, however many of its lines match


def test_orders_are_filtered_by_their_failure_records(operator):
    clean = completed_order()
    open_failure = failed_order()
    factories.failure_record(open_failure, task="t", exception_type="E")
    factories.failure_record(open_failure, task="t", exception_type="E", resolved=True)
    dealt_with = failed_order()
    factories.failure_record(dealt_with, task="t", exception_type="E", resolved=True)

    def listed(value):
        response = operator.get(ORDERS, {"failures": value})
        return {order.pk for order in response.context["cl"].result_list}

    assert listed("any") == {open_failure.pk, dealt_with.pk}
    assert listed("unresolved") == {open_failure.pk}
    assert listed("none") == {clean.pk}


def test_orders_are_filtered_by_their_created_date(operator):
    today = completed_order()
    old = completed_order()
    Order.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    listing = operator.get(ORDERS)
    changelist = listing.context["cl"]
    [created] = [spec for spec in changelist.filter_specs if spec.title == "created at"]
    [past_week] = [
        choice
        for choice in created.choices(changelist)
        if choice["display"] == "Past 7 days"
    ]

    response = operator.get(ORDERS + past_week["query_string"])

    assert list(response.context["cl"].result_list) == [today]
