"""The delivery scenario: a listener in its own transaction, and what happens when
it fails."""

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django_q.conf import Conf

from orders import exceptions, selectors
from orders.models import Delivery, FailureRecord, Order, OrderEvent
from orders.operations import mailer
from orders.services.deliveries import delivery_complete, order_delivery_completed
from orders.services.failure_actions import failure_rerun
from tests.factories import failure_record, place, process, processed

pytestmark = pytest.mark.django_db
EventType = OrderEvent.Type
LISTENER = "orders.tasks.order_delivery_completed"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def completed_order(**simulate) -> Order:
    """An order taken through one successful attempt, as a worker would."""
    order = processed(**simulate)
    assert order.status == Order.Status.COMPLETED
    return order


@pytest.fixture
def queue_runs_inline(monkeypatch):
    """async_task runs the task here and now, through django-q2's worker code
    (its sync mode), signals and all."""
    monkeypatch.setattr(Conf, "SYNC", True)


def event_types(order: Order) -> list[str]:
    return list(order.events.order_by("id").values_list("type", flat=True))


def test_a_completed_order_gets_a_delivery_with_an_unguessable_code():
    order = completed_order()

    delivery = order.delivery
    assert delivery.code.startswith("dlv_")
    assert len(delivery.code) == 4 + 32
    assert delivery.completed_at is None
    document = selectors.order_document(order)
    assert document["delivery"] == {"code": delivery.code, "completed_at": None}
    assert document["delivered_at"] is None


def test_a_failed_order_gets_no_delivery():
    order = place(fail_times=1, failure="permanent")
    process(order.order_id)

    order.refresh_from_db()
    assert order.status == Order.Status.FAILED
    assert not Delivery.objects.filter(order=order).exists()
    assert selectors.order_document(order)["delivery"] is None


def test_completing_a_delivery_lets_the_listener_mark_the_order_delivered(
    queue_runs_inline, django_capture_on_commit_callbacks
):
    order = completed_order()
    version = order.version

    with django_capture_on_commit_callbacks(execute=True):
        delivery, completed_now = delivery_complete(code=order.delivery.code)

    assert completed_now is True
    assert delivery.completed_at is not None
    order.refresh_from_db()
    assert order.delivered_at == delivery.completed_at
    assert order.version > version
    assert event_types(order)[-1] == EventType.DELIVERY_COMPLETED
    assert not FailureRecord.objects.exists()


def test_completing_a_completed_delivery_changes_nothing(
    queue_runs_inline, django_capture_on_commit_callbacks
):
    order = completed_order()
    with django_capture_on_commit_callbacks(execute=True):
        first, _ = delivery_complete(code=order.delivery.code)
    order.refresh_from_db()
    events_before, version_before = event_types(order), order.version

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again, completed_now = delivery_complete(code=order.delivery.code)

    assert completed_now is False
    assert callbacks == []
    assert again.completed_at == first.completed_at
    order.refresh_from_db()
    assert (event_types(order), order.version) == (events_before, version_before)


def test_an_unknown_delivery_code_is_a_clear_error_and_changes_nothing(
    django_capture_on_commit_callbacks,
):
    order = completed_order()

    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(exceptions.DeliveryNotFound, match="No delivery with code"),
    ):
        delivery_complete(code="dlv_nope")

    assert callbacks == []
    assert Delivery.objects.get(order=order).completed_at is None


def test_listener_failure_keeps_delivery_completed_and_records_failure(
    queue_runs_inline, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.ADMINS = [("Ops", "ops@example.com")]
    order = completed_order(listener_fails=True)

    with django_capture_on_commit_callbacks(execute=True):
        delivery_complete(code=order.delivery.code)
    mailer.failures_mail_pending()  # the mailer's step, in qcluster

    order.refresh_from_db()
    assert order.delivery.completed_at is not None
    assert order.delivered_at is None
    record = FailureRecord.objects.get()
    assert record.task == LISTENER
    assert record.args == [order.order_id, order.delivery.code]
    assert record.exception_type == "orders.exceptions.ListenerFailed"
    assert record.order == order
    assert record.resolved is False
    assert len(mailoutbox) == 1
    assert LISTENER in mailoutbox[0].subject
    assert event_types(order)[-1] == EventType.LISTENER_FAILED
    assert EventType.DELIVERY_COMPLETED not in event_types(order)
    assert order.status == Order.Status.COMPLETED


def test_rerunning_the_listener_from_its_failure_record_marks_the_order_delivered(
    queue_runs_inline, django_capture_on_commit_callbacks
):
    order = completed_order(listener_fails=True)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_complete(code=order.delivery.code)
    record = FailureRecord.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        failure_rerun(failure=record)

    order.refresh_from_db()
    assert order.delivered_at == order.delivery.completed_at
    assert event_types(order)[-2:] == [
        EventType.LISTENER_FAILED,
        EventType.DELIVERY_COMPLETED,
    ]
    # The record is history: kept, and still open until someone resolves it.
    assert FailureRecord.objects.filter(pk=record.pk, resolved=False).exists()
    assert selectors.order_document(order)["delivered_at"] is not None


def test_the_listener_run_twice_writes_delivery_completed_once():
    order = completed_order()
    delivery_complete(code=order.delivery.code)

    order_delivery_completed(order_id=order.order_id, code=order.delivery.code)
    order_delivery_completed(order_id=order.order_id, code=order.delivery.code)

    assert event_types(order).count(EventType.DELIVERY_COMPLETED) == 1


def test_a_listener_the_queue_refused_is_recorded_so_it_can_be_rerun(
    monkeypatch, django_capture_on_commit_callbacks
):
    order = completed_order()

    def refuse(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("django_q.tasks.async_task", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_complete(code=order.delivery.code)

    record = FailureRecord.objects.get()
    assert (record.task, record.order) == (LISTENER, order)
    assert record.args == [order.order_id, order.delivery.code]


def test_only_the_projects_own_tasks_can_be_rerun():
    record = failure_record(
        task="os.system", args=["rm -rf /"], exception_type="X", message="m"
    )

    with pytest.raises(exceptions.FailureNotRerunnable, match="not a task of this"):
        failure_rerun(failure=record)


# POST /api/deliveries/<code>/complete ---------------------------------------------


# staff_client (tests/conftest.py): staff holding the orders permissions, as
# completing a delivery needs orders.change_delivery (tests/test_permissions.py).


def complete_url(code: str) -> str:
    return f"/api/deliveries/{code}/complete"


def test_staff_complete_a_delivery_over_the_api(
    staff_client, queue_runs_inline, django_capture_on_commit_callbacks
):
    order = completed_order()
    code = order.delivery.code

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(complete_url(code))

    assert response.status_code == 200
    body = response.json()
    assert body["code"] == code
    assert body["completed_now"] is True
    assert body["order_id"] == order.order_id
    assert body["completed_at"].endswith("Z")
    order.refresh_from_db()
    assert order.delivered_at is not None

    again = staff_client.post(complete_url(code))
    assert again.status_code == 200
    assert again.json()["completed_now"] is False


def test_a_poller_holding_the_etag_sees_the_delivery_completed(staff_client):
    """Completing a delivery changes the status document, so an If-None-Match
    poller gets a 200 with the completion, not a 304."""
    order = completed_order()
    url = f"/api/orders/{order.order_id}"
    before = staff_client.get(url)
    assert before.json()["delivery"]["completed_at"] is None
    etag = before.headers["ETag"]

    # The listener is not run (no on_commit callbacks): only the completion moved.
    response = staff_client.post(complete_url(order.delivery.code))
    assert response.status_code == 200

    after = staff_client.get(url, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.headers["ETag"] != etag
    document = after.json()
    assert document["delivery"]["completed_at"] == response.json()["completed_at"]
    assert document["version"] == before.json()["version"] + 1
    assert document["delivered_at"] is None
    # Nothing else moved: the status is untouched and no event was written.
    assert document["status"] == "COMPLETED"
    assert document["events"] == before.json()["events"]


def test_an_unknown_delivery_code_answers_404_in_json(staff_client):
    response = staff_client.post(complete_url("dlv_unknown"))

    assert response.status_code == 404
    assert response.json()["error"] == "delivery_not_found"
    assert "dlv_unknown" in response.json()["detail"]


def test_anonymous_and_non_staff_callers_cannot_complete_deliveries(client):
    order = completed_order()
    member = Client()
    member.force_login(User.objects.create_user("customer", password="pw"))

    anonymous = client.post(complete_url(order.delivery.code))
    non_staff = member.post(complete_url(order.delivery.code))

    assert anonymous.status_code == 403
    assert anonymous.json()["error"] == "not_authenticated"
    assert non_staff.status_code == 403
    assert non_staff.json()["error"] == "forbidden"
    assert Delivery.objects.get(order=order).completed_at is None


def test_completing_a_delivery_needs_post(staff_client):
    order = completed_order()

    response = staff_client.get(complete_url(order.delivery.code))

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


def test_a_delivery_listener_whose_task_was_lost_is_sent_again_by_the_sweep(
    django_capture_on_commit_callbacks, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import OrmQ

    from orders.workers.dispatcher import sweep

    delivery = completed_order().delivery
    with django_capture_on_commit_callbacks(execute=True):
        delivery_complete(code=delivery.code)
    OrmQ.objects.all().delete()  # the queue lost the listener's task
    assert sweep().listeners == []  # not due yet: it may still be on its way
    Delivery.objects.filter(pk=delivery.pk).update(
        listener_due_at=timezone.now() - timedelta(seconds=1)
    )

    assert sweep().listeners == [delivery.code]
    queued = [task.task for task in OrmQ.objects.all()]
    assert [(task["func"], task["args"]) for task in queued] == [
        (LISTENER, (delivery.order.order_id, delivery.code))
    ]
    assert sweep().listeners == []  # handed over once per redispatch period


@pytest.mark.parametrize("listener_fails", [False, True])
def test_a_listener_outcome_ends_the_dispatchers_watch_over_it(
    listener_fails, queue_runs_inline, django_capture_on_commit_callbacks
):
    order = completed_order(listener_fails=listener_fails)
    with django_capture_on_commit_callbacks(execute=True):
        delivery_complete(code=order.delivery.code)
    delivery = Delivery.objects.get(pk=order.delivery.pk)
    assert delivery.completed_at is not None
    assert delivery.listener_due_at is None
    expected = (
        EventType.LISTENER_FAILED if listener_fails else EventType.DELIVERY_COMPLETED
    )
    assert event_types(order)[-1] == expected
