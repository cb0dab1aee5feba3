"""The failure groups and failure records in the admin: lists, pages, actions."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from orders.models import FailureGroup, FailureRecord, Order
from tests.factories import failure_record, failure_traceback, processed

pytestmark = pytest.mark.django_db

GROUPS = "/admin/orders/failuregroup/"
RECORDS = "/admin/orders/failurerecord/"
LISTENER = "orders.tasks.order_delivery_completed"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff():
    return User.objects.create_superuser("ops", "ops@example.com", "pw")


@pytest.fixture
def operator(staff):
    client = Client()
    client.force_login(staff)
    return client


def act(client, url, action, objects):
    return client.post(
        url,
        {"action": action, "_selected_action": [obj.pk for obj in objects], "index": 0},
        follow=True,
    )


def messages_of(response) -> str:
    return " | ".join(str(message) for message in response.context["messages"])


def rows(response) -> list[int]:
    """The ids of the list's rows, top to bottom."""
    return [
        int(pk)
        for pk in re.findall(
            r'name="_selected_action" value="(\d+)"', response.content.decode()
        )
    ]


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(GROUPS)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_groups_are_listed_most_recently_seen_first_with_counts_and_a_sparkline(
    operator,
):
    now = timezone.now()
    old = failure_record(occurred_at=now - timedelta(hours=3))
    for _ in range(3):
        recent = failure_record(
            traceback=failure_traceback(function="order_retry"), occurred_at=now
        )

    response = operator.get(GROUPS)

    page = response.content.decode()
    assert rows(response) == [recent.group.pk, old.group.pk]
    assert page.count('<svg class="failure-sparkline"') == 2
    assert 'aria-label="3 in the last 24 h, at most 3 an hour"' in page
    assert '<td class="field-count">3</td>' in page
    # No style attribute or script: the admin's CSP allows neither inline.
    assert not re.search(r"<svg[^>]*style=", page)
    assert "orders/admin-failures.css" in page


def test_groups_are_filtered_by_task_exception_and_resolved(operator):
    listener = failure_record(task=LISTENER, exception_type="ValueError")
    other = failure_record()
    resolved = failure_record(
        traceback=failure_traceback(function="order_retry"), resolved=True
    )

    by_task = operator.get(GROUPS, {"task": LISTENER})
    by_type = operator.get(GROUPS, {"exception_type": "KeyError"})
    open_ones = operator.get(GROUPS, {"resolved__exact": "0"})

    assert rows(by_task) == [listener.group.pk]
    assert set(rows(by_type)) == {other.group.pk, resolved.group.pk}
    assert set(rows(open_ones)) == {listener.group.pk, other.group.pk}


def test_groups_are_found_by_the_order_id_of_any_of_their_records(operator):
    order = processed(fail_times=1, failure="permanent")
    steps = failure_record(order)
    failure_record()
    listener = failure_record(order, task=LISTENER)
    untouched = failure_record(task="orders.tasks.other")

    response = operator.get(GROUPS, {"q": order.order_id})

    assert sorted(rows(response)) == sorted([steps.group.pk, listener.group.pk])
    assert untouched.group.pk not in rows(response)


def test_a_groups_page_shows_its_records_orders_and_latest_traceback(operator):
    order = processed(fail_times=1, failure="permanent")
    failure_record(order)
    latest = failure_record(message="the <latest> one")

    response = operator.get(f"{GROUPS}{latest.group.pk}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert order.order_id in page
    assert f"{RECORDS}{latest.pk}/change/" in page
    assert f"{RECORDS}?group__id__exact={latest.group.pk}" in page
    assert "orders/services/orders.py in order_process" in page
    assert "the &lt;latest&gt; one" in page
    assert '<pre class="failure-traceback">' in page


def test_a_groups_page_cannot_be_posted_or_deleted(operator):
    group = failure_record().group

    posted = operator.post(f"{GROUPS}{group.pk}/change/", {"resolved": "on"})
    deleted = operator.get(f"{GROUPS}{group.pk}/delete/")

    assert posted.status_code == 403
    assert deleted.status_code == 403
    assert FailureGroup.objects.get().resolved is False


def test_resolving_groups_from_the_list_resolves_their_records(operator, staff):
    first = failure_record()
    failure_record()

    response = act(operator, GROUPS, "resolve_groups", [first.group])

    assert "1 group resolved" in messages_of(response)
    group = FailureGroup.objects.get()
    assert (group.resolved, group.resolved_by) == (True, staff)
    assert not FailureRecord.objects.filter(resolved=False).exists()


def test_retrying_a_groups_failed_orders_from_the_list(operator):
    failed = processed(fail_times=1, failure="permanent")
    completed = processed()
    failure_record(failed)
    record = failure_record(completed)

    response = act(operator, GROUPS, "retry_failed_orders", [record.group])

    failed.refresh_from_db()
    assert failed.status == Order.Status.PENDING
    assert "1 order sent back to PENDING" in messages_of(response)
    assert f"{completed.order_id} (COMPLETED)" in messages_of(response)


@pytest.fixture
def failures_only():
    """Staff who may resolve and re-run failures but not change orders."""
    user = User.objects.create_user("triage", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="orders",
            codename__in=[
                "view_failuregroup",
                "change_failuregroup",
                "view_failurerecord",
                "change_failurerecord",
            ],
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("url", "action"),
    [(GROUPS, "retry_failed_orders"), (RECORDS, "retry_related_orders")],
)
def test_retrying_orders_from_the_failures_needs_the_orders_change_permission(
    failures_only, url, action
):
    failed = processed(fail_times=1, failure="permanent")
    record = failure_record(failed)
    target = record.group if url == GROUPS else record

    offered = failures_only.get(url).content.decode()
    response = act(failures_only, url, action, [target])

    assert f'value="{action}"' not in offered
    assert 'value="rerun_tasks"' in offered
    assert "No action selected" in messages_of(response)
    failed.refresh_from_db()
    assert failed.status == Order.Status.FAILED


def test_rerunning_a_groups_tasks_from_the_list(
    operator, django_capture_on_commit_callbacks
):
    refused = failure_record(task="os.system", args=["rm -rf /"])
    for code in ["dlv_a", "dlv_b"]:
        listener = failure_record(task=LISTENER, args=["ord_x", code])

    with django_capture_on_commit_callbacks() as callbacks:
        response = act(operator, GROUPS, "rerun_tasks", [listener.group, refused.group])

    assert len(callbacks) == 2
    assert "2 tasks handed to the queue again" in messages_of(response)
    assert f"Group #{refused.group.pk}: " in messages_of(response)
    assert "only orders.tasks.* can be re-run" in messages_of(response)


def test_a_record_links_to_its_group_in_the_list_and_on_its_page(operator):
    record = failure_record()
    group_url = f"{GROUPS}{record.group.pk}/change/"

    listing = operator.get(RECORDS).content.decode()
    page = operator.get(f"{RECORDS}{record.pk}/change/").content.decode()

    assert f'<a href="{group_url}">#{record.group.pk}</a>' in listing
    assert f'<a href="{group_url}">#{record.group.pk}</a>' in page


def test_the_records_list_shortens_long_names_and_keeps_them_in_tooltips(operator):
    failure_record(
        task=LISTENER,
        exception_type="orders.exceptions.ListenerFailed",
        message="x" * 200,
    )

    page = operator.get(RECORDS).content.decode()

    # Names wrap between their words (<wbr>), never inside one.
    assert f'<span title="{LISTENER}">order_<wbr>delivery_<wbr>completed</span>' in page
    assert (
        '<span title="orders.exceptions.ListenerFailed">Listener<wbr>Failed</span>'
        in page
    )
    assert f'<span title="{"x" * 200}">{"x" * 59}…</span>' in page


def test_the_records_list_shows_a_short_order_id_with_the_whole_in_a_tooltip(
    operator,
):
    order = processed(fail_times=1, failure="permanent")
    failure_record(order)

    page = operator.get(RECORDS).content.decode()

    assert (
        f'<a href="/admin/orders/order/{order.pk}/change/" title="{order.order_id}">'
        f"{order.order_id[:10]}…</a>"
    ) in page
