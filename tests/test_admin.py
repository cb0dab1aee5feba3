"""The Django admin as the operators' console."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.forms.models import model_to_dict
from django.test import Client
from django.utils import timezone
from django_q.conf import Conf

from orders.api.validation import SIMULATE_DEFAULTS
from orders.models import Delivery, FailureRecord, Order, OrderEvent
from orders.services import orders as services
from orders.services.deliveries import delivery_complete
from orders.services.inputs import LineInput, OrderInput
from tests.expected import CLEAN_RUN_EVENTS
from tests.factories import claim, failure_record, process

pytestmark = pytest.mark.django_db
Status = Order.Status

ORDERS = "/admin/orders/order/"
GROUPS = "/admin/orders/failuregroup/"
FAILURES = "/admin/orders/failurerecord/"
DELIVERIES = "/admin/orders/delivery/"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def place(email="buyer@example.com", **simulate) -> Order:
    data = OrderInput(
        customer_email=email,
        lines=[LineInput(sku="MUG-1", quantity=1, unit_price=Decimal("9.00"))],
        simulate={**SIMULATE_DEFAULTS, **simulate} if simulate else {},
    )
    return services.order_place(data=data)[0]


def failed_order(email="buyer@example.com") -> Order:
    order = place(email, fail_times=1, failure="permanent")
    process(order.order_id)
    order.refresh_from_db()
    assert order.status == Status.FAILED
    return order


def completed_order() -> Order:
    order = place()
    process(order.order_id)
    order.refresh_from_db()
    return order


def failure_for(order: Order | None, task="orders.tasks.process_order", **fields):
    defaults = {
        "args": [order.order_id] if order else [],
        "exception_type": "KeyError",
        "message": "'card_token'",
        "traceback": 'Traceback (most recent call last):\n  File "<x>"\nKeyError: <b>',
    }
    return failure_record(order, task=task, **{**defaults, **fields})


@pytest.fixture
def staff(db):
    return User.objects.create_superuser("ops", "ops@example.com", "pw")


@pytest.fixture
def operator(staff):
    client = Client()
    client.force_login(staff)
    return client


def act(client, url, action, objects=(), **extra):
    return client.post(
        url,
        {
            "action": action,
            "_selected_action": [obj.pk for obj in objects],
            "index": 0,
            **extra,
        },
        follow=True,
    )


def messages_of(response) -> str:
    return " | ".join(str(message) for message in response.context["messages"])


@pytest.mark.parametrize("url", [ORDERS, FAILURES, DELIVERIES])
def test_anonymous_users_are_sent_to_the_login_page(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("url", [ORDERS, FAILURES, DELIVERIES])
def test_users_who_are_not_staff_are_refused(url):
    client = Client()
    client.force_login(User.objects.create_user("customer", password="pw"))

    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_without_permissions_cannot_run_order_actions():
    order = failed_order()
    client = Client()
    client.force_login(User.objects.create_user("intern", password="pw", is_staff=True))

    response = client.post(
        ORDERS,
        {"action": "retry_failed_orders", "_selected_action": [order.pk], "index": 0},
    )

    assert response.status_code == 403
    order.refresh_from_db()
    assert order.status == Status.FAILED


def test_the_order_list_filters_by_status_and_searches_by_id_and_email(operator):
    done = completed_order()
    failed = failed_order("other@example.com")

    by_status = operator.get(ORDERS, {"status__exact": "FAILED"})
    by_id = operator.get(ORDERS, {"q": done.order_id})
    by_email = operator.get(ORDERS, {"q": "other@example"})
    by_year = operator.get(ORDERS, {"created_at__year": timezone.now().year})

    assert list(by_status.context["cl"].result_list) == [failed]
    assert list(by_id.context["cl"].result_list) == [done]
    assert list(by_email.context["cl"].result_list) == [failed]
    assert set(by_year.context["cl"].result_list) == {done, failed}


def test_the_order_page_shows_every_attempt_with_its_error_and_duration(operator):
    order = failed_order()
    failure_for(order)

    response = operator.get(f"{ORDERS}{order.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Timeline" in page
    assert "order.attempt_failed" in page
    assert "card declined" in page
    attempt = order.events.get(type=OrderEvent.Type.ATTEMPT_FAILED)
    assert attempt.duration_ms is not None
    assert "Failures recorded for this order" in page


def test_an_orders_status_cannot_be_edited_by_hand(operator):
    order = failed_order()

    page = operator.get(f"{ORDERS}{order.pk}/change/")
    operator.post(
        f"{ORDERS}{order.pk}/change/",
        {"customer_email": order.customer_email, "status": "COMPLETED"},
    )

    assert 'name="status"' not in page.content.decode()
    order.refresh_from_db()
    assert order.status == Status.FAILED


def rendered_form_data(response) -> dict:
    """What a browser posts back from an admin change page, as the GET rendered
    it: the main form and every inline's management form and rows."""
    forms = []
    if "adminform" in response.context:
        forms.append(response.context["adminform"].form)
    for inline in response.context.get("inline_admin_formsets", []):
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    return {
        bound.html_name: bound.value()
        for form in forms
        for bound in form
        if bound.value() is not None
    }


def test_saving_an_order_page_never_reverts_a_workers_transition(operator, monkeypatch):
    """A worker completes the order between the admin's read of it and the admin's
    save. On PostgreSQL nothing locks the row in between; here the POST is handed
    the copy it would have read before the worker committed. The admin must not
    write that copy (PENDING, no attempt) back over the worker's COMPLETED."""
    from orders.operations.admin.orders import OrderAdmin

    order = place()
    url = f"{ORDERS}{order.pk}/change/"
    page = operator.get(url)
    read_before_the_worker = Order.objects.get(pk=order.pk)
    process(order.order_id)  # claimed and completed
    moved = Order.objects.get(pk=order.pk)
    monkeypatch.setattr(
        OrderAdmin, "get_object", lambda *args, **kwargs: read_before_the_worker
    )

    operator.post(url, {**rendered_form_data(page), "_save": "Save"})

    order.refresh_from_db()
    assert page.status_code == 200
    assert moved.status == Status.COMPLETED
    assert (order.status, order.version, order.attempts) == (
        Status.COMPLETED,
        moved.version,
        1,
    )
    assert order.updated_at == moved.updated_at
    assert list(order.events.values_list("type", flat=True)) == CLEAN_RUN_EVENTS


@pytest.mark.parametrize("url", [ORDERS, FAILURES, DELIVERIES])
def test_record_pages_offer_no_form_and_refuse_a_post(operator, url):
    order = completed_order()
    record = {
        ORDERS: order,
        FAILURES: failure_for(order),
        DELIVERIES: order.delivery,
    }[url]
    before = model_to_dict(type(record).objects.get(pk=record.pk))

    page = operator.get(f"{url}{record.pk}/change/")
    response = operator.post(
        f"{url}{record.pk}/change/",
        {
            **rendered_form_data(page),
            "customer_email": "changed@example.com",
            "resolved": "on",
            "_save": "Save",
        },
    )

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert response.status_code == 403
    assert model_to_dict(type(record).objects.get(pk=record.pk)) == before


def test_retry_selected_failed_orders_sends_only_failed_ones_back(
    operator, django_capture_on_commit_callbacks
):
    failed = failed_order()
    done = completed_order()

    with django_capture_on_commit_callbacks() as callbacks:
        response = act(operator, ORDERS, "retry_failed_orders", [failed, done])

    failed.refresh_from_db()
    done.refresh_from_db()
    assert failed.status == Status.PENDING
    assert failed.attempts == 0
    assert done.status == Status.COMPLETED
    assert len(callbacks) == 1  # one order handed to the queue
    assert "1 order sent back to PENDING" in messages_of(response)
    assert f"skipped: {done.order_id} (COMPLETED)" in messages_of(response)
    assert failed.events.last().type == OrderEvent.Type.RETRY_REQUESTED


def test_reap_stuck_orders_runs_a_sweep_without_needing_a_selection(operator):
    order = place()
    order = claim(order)
    Order.objects.filter(pk=order.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = act(operator, ORDERS, "reap_stuck_orders")

    order.refresh_from_db()
    assert order.status == Status.RETRYING
    assert "1 expired lease counted" in messages_of(response)


def test_the_failure_list_filters_by_resolved_task_and_exception_type(operator):
    order = failed_order()
    open_one = failure_for(order)
    closed = failure_for(order, resolved=True)
    listener = failure_for(order, task="orders.tasks.order_delivery_completed")
    other_type = failure_for(None, exception_type="ValueError")

    unresolved = operator.get(FAILURES, {"resolved__exact": "0"})
    by_task = operator.get(FAILURES, {"task": "orders.tasks.order_delivery_completed"})
    by_type = operator.get(FAILURES, {"exception_type": "ValueError"})

    assert set(unresolved.context["cl"].result_list) == {open_one, listener, other_type}
    assert closed not in unresolved.context["cl"].result_list
    assert list(by_task.context["cl"].result_list) == [listener]
    assert list(by_type.context["cl"].result_list) == [other_type]


def test_a_failure_shows_its_traceback_readably_and_links_to_its_order(operator):
    order = failed_order()
    record = failure_for(order)

    page = operator.get(f"{FAILURES}{record.pk}/change/").content.decode()

    assert "<pre" in page
    assert "KeyError: &lt;b&gt;" in page  # escaped, never rendered as HTML
    assert f'href="/admin/orders/order/{order.pk}/change/"' in page


def test_mark_resolved_records_who_and_when(operator, staff):
    record = failure_for(failed_order())

    response = act(operator, FAILURES, "mark_resolved", [record])

    record.refresh_from_db()
    assert record.resolved is True
    assert record.resolved_by == staff
    assert record.resolved_at is not None
    assert "1 failure marked resolved" in messages_of(response)
    assert LogEntry.objects.filter(object_id=str(record.pk)).exists()


def test_retry_the_related_orders_keeps_the_failure_records(operator):
    order = failed_order()
    first, second = failure_for(order), failure_for(order)
    unrelated = failure_for(None)

    response = act(
        operator, FAILURES, "retry_related_orders", [first, second, unrelated]
    )

    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert FailureRecord.objects.count() == 3
    assert "1 order retried" in messages_of(response)
    assert f"#{unrelated.pk} (no order)" in messages_of(response)


def test_failure_records_cannot_be_deleted(operator):
    record = failure_for(failed_order())

    listing = operator.get(FAILURES)
    delete_page = operator.get(f"{FAILURES}{record.pk}/delete/")

    assert "delete_selected" not in listing.content.decode()
    assert delete_page.status_code == 403
    assert FailureRecord.objects.filter(pk=record.pk).exists()


@pytest.mark.parametrize("url", [ORDERS, GROUPS, FAILURES, DELIVERIES])
def test_no_record_is_added_or_deleted_from_the_console(operator, url):
    """Orders come through the API and the rest from what happens to them; none
    leaves by an admin page: resolving is how a failure is closed."""
    order = completed_order()
    record = {
        ORDERS: order,
        GROUPS: failure_for(order).group,
        FAILURES: failure_for(order),
        DELIVERIES: order.delivery,
    }[url]

    listing = operator.get(url).content.decode()
    add_page = operator.get(f"{url}add/")
    delete_post = operator.post(f"{url}{record.pk}/delete/", {"post": "yes"})

    assert "delete_selected" not in listing
    assert f'href="{url}add/"' not in listing
    assert add_page.status_code == 403
    assert delete_post.status_code == 403
    assert type(record).objects.filter(pk=record.pk).exists()


def test_rerun_listener_from_the_failure_record_marks_the_order_delivered(
    operator, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(Conf, "SYNC", True)
    order = place(listener_fails=True)
    process(order.order_id)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_complete(code=order.delivery.code)
    record = FailureRecord.objects.get(order=order)

    with django_capture_on_commit_callbacks(execute=True):
        response = act(operator, FAILURES, "rerun_tasks", [record])

    order.refresh_from_db()
    assert order.delivered_at is not None
    assert "1 task handed to the queue again" in messages_of(response)
    assert FailureRecord.objects.filter(pk=record.pk).exists()


def test_deliveries_are_listed_and_can_be_completed(
    operator, django_capture_on_commit_callbacks
):
    order = completed_order()
    delivery = order.delivery

    listing = operator.get(DELIVERIES)
    with django_capture_on_commit_callbacks() as callbacks:
        response = act(operator, DELIVERIES, "complete_deliveries", [delivery])

    assert delivery.code in listing.content.decode()
    delivery.refresh_from_db()
    assert delivery.completed_at is not None
    assert len(callbacks) == 1  # the listener, after commit
    assert "1 delivery completed" in messages_of(response)
    assert Delivery.objects.count() == 1
