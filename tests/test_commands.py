"""The operators' manage.py commands."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.conf import Conf

from orders.management.commands import place_orders
from orders.models import FailureRecord, Order
from orders.workers import dispatcher
from tests.factories import claim, failure_record, place, processed

pytestmark = pytest.mark.django_db
Status = Order.Status


def run(*args, **options) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def summary_row(output: str, name: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(name + " "))
    return line[len(name) :].strip()


@pytest.fixture
def workers_inline(monkeypatch, settings):
    """Orders are processed as they are enqueued (django-q2's sync mode), and each
    poll of --wait runs one dispatcher sweep, as a qcluster would meanwhile."""
    monkeypatch.setattr(Conf, "SYNC", True)
    settings.ORDER_RETRY_BASE_SECONDS = 0
    monkeypatch.setattr(place_orders.Command, "_pause", lambda self: dispatcher.sweep())


# place_orders ----------------------------------------------------------------------


def test_place_orders_places_that_many_orders_and_prints_a_summary():
    output = run("place_orders", "--count", "3")

    assert Order.objects.filter(customer_email="load@example.com").count() == 3
    assert "[##############################] 3/3 placed" in output
    assert summary_row(output, "orders") == "3"
    assert summary_row(output, "still moving") == "3"
    assert "placed in" in output


@pytest.mark.django_db(transaction=True)
def test_place_orders_waits_until_every_order_has_completed(workers_inline):
    output = run("place_orders", "--count", "4", "--fail-rate", "0", "--wait")

    assert Order.objects.filter(status=Status.COMPLETED).count() == 4
    assert summary_row(output, "completed") == "4"
    assert summary_row(output, "failed") == "0"
    assert "all finished in" in output


@pytest.mark.django_db(transaction=True)
def test_place_orders_counts_retried_and_failed_orders(workers_inline, settings):
    settings.ORDER_MAX_ATTEMPTS = 2

    output = run("place_orders", "--count", "3", "--fail-rate", "1", "--wait")

    assert summary_row(output, "failed") == "3"
    assert summary_row(output, "retried (at least once)") == "3"
    assert summary_row(output, "completed") == "0"
    assert Order.objects.filter(status=Status.FAILED, attempts=2).count() == 3


def test_place_orders_waiting_gives_up_after_its_timeout():
    # Nothing processes the orders: the test transaction never commits.
    with pytest.raises(CommandError, match="2 of 2 order.s. were not finished"):
        run("place_orders", "--count", "2", "--wait", "--timeout", "0.3")


def test_place_orders_draws_failures_per_attempt_with_the_fail_rate(settings):
    settings.ORDER_MAX_ATTEMPTS = 3

    run("place_orders", "--count", "200", "--fail-rate", "0.5", "--seed", "7")

    fail_times = [
        simulate["fail_times"]
        for simulate in Order.objects.values_list("simulate", flat=True)
    ]
    assert set(fail_times) == {0, 1, 2, 3}
    assert 70 < fail_times.count(0) < 130


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "0"], "--count must be at least 1"),
        (["--count", "1", "--fail-rate", "1.5"], "--fail-rate must be between 0 and 1"),
        (["--count", "1", "--wait", "--timeout", "0"], "--timeout must be more"),
    ],
)
def test_place_orders_refuses_bad_input_with_a_clear_sentence(args, message):
    with pytest.raises(CommandError, match=message):
        run("place_orders", *args)
    assert not Order.objects.exists()


def test_place_orders_refuses_a_fail_rate_when_simulation_is_off(settings):
    settings.ORDER_SIMULATION_ENABLED = False

    with pytest.raises(CommandError, match="ORDER_SIMULATION_ENABLED"):
        run("place_orders", "--count", "1", "--fail-rate", "0.1")


# order_status -----------------------------------------------------------------------


def test_order_status_prints_the_timeline():
    order = processed(fail_times=1, failure="permanent")
    failure_record(order, exception_type="X")

    output = run("order_status", order.order_id)

    assert f"{order.order_id}  FAILED" in output
    assert "failure reason: payment: card declined" in output
    for event_type in ["order.created", "order.processing", "order.attempt_failed"]:
        assert event_type in output
    assert "1 unresolved failure record(s)" in output


def test_order_status_shows_the_delivery():
    order = processed()

    output = run("order_status", order.order_id)

    assert f"delivery {order.delivery.code}: not completed" in output


def test_order_status_shows_each_step_done_or_pending():
    order = processed(step="stock", failure="permanent", fail_times=1)

    output = run("order_status", order.order_id)

    payment = order.steps["payment"]["reference"]
    assert f"step payment  done  {payment}  (attempt 1)" in output
    assert "step stock    pending" in output


def test_order_status_of_an_unknown_order_is_a_clear_error():
    with pytest.raises(CommandError, match="No order with id 'ord_nope'"):
        run("order_status", "ord_nope")


# retry_failed -----------------------------------------------------------------------


def test_retry_failed_retries_one_order():
    order = processed(fail_times=1, failure="permanent")

    output = run("retry_failed", "--order", order.order_id)

    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert f"Order {order.order_id} is PENDING again." in output


def test_retry_failed_refuses_an_order_that_has_not_failed():
    order = processed()

    with pytest.raises(CommandError, match="is COMPLETED; only FAILED orders"):
        run("retry_failed", "--order", order.order_id)


def test_retry_failed_refuses_an_unknown_order():
    with pytest.raises(CommandError, match="No order with id"):
        run("retry_failed", "--order", "ord_nope")


def test_retry_failed_all_retries_every_failed_order():
    failed = [processed(fail_times=1, failure="permanent") for _ in range(2)]
    done = processed()

    output = run("retry_failed", "--all")

    assert "Retried 2 FAILED order(s)." in output
    assert {o.status for o in Order.objects.filter(pk__in=[f.pk for f in failed])} == {
        Status.PENDING
    }
    done.refresh_from_db()
    assert done.status == Status.COMPLETED


def test_retry_failed_needs_an_order_or_all():
    with pytest.raises(CommandError, match="one of the arguments --order --all"):
        run("retry_failed")


# reap_stuck -------------------------------------------------------------------------


def test_reap_stuck_expires_leases_and_redispatches(monkeypatch):
    enqueued = []
    monkeypatch.setattr(
        dispatcher,
        "order_enqueue",
        lambda order_id, queued_at: enqueued.append(order_id),
    )
    stuck = place()
    stuck = claim(stuck)
    Order.objects.filter(pk=stuck.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    forgotten = place()
    # Due, and no task of it known to be queued (its enqueue failed a while ago).
    Order.objects.filter(pk=forgotten.pk).update(
        dispatch_due_at=timezone.now() - timedelta(seconds=1), queued_at=None
    )

    output = run("reap_stuck")

    assert f"lease expired: {stuck.order_id}" in output
    assert f"dispatched:    {forgotten.order_id}" in output
    assert forgotten.order_id in enqueued
    stuck.refresh_from_db()
    assert stuck.status == Status.RETRYING


def test_reap_stuck_with_nothing_stuck_says_so():
    assert run("reap_stuck").startswith("Handed 0 order(s) to the queue again")


# failures ---------------------------------------------------------------------------


def failure(order=None, **fields) -> FailureRecord:
    return failure_record(order, **fields)


def test_failures_lists_records_with_their_order_and_state():
    order = processed()
    open_one = failure(order)
    failure(resolved=True, message="old news")

    output = run("failures")

    assert f"{open_one.pk:>5}" in output
    assert order.order_id in output
    assert "KeyError: 'card_token'" in output
    assert "old news" in output


def test_failures_unresolved_hides_resolved_ones():
    failure()
    failure(resolved=True, message="old news")

    output = run("failures", "--unresolved")

    assert "'card_token'" in output
    assert "old news" not in output


def test_failures_resolve_marks_a_record_resolved_once():
    record = failure()

    first = run("failures", "--resolve", str(record.pk))
    second = run("failures", "--resolve", str(record.pk))

    record.refresh_from_db()
    assert record.resolved is True
    assert record.resolved_at is not None
    assert f"Failure #{record.pk} marked resolved." in first
    assert "was already resolved" in second


def test_failures_resolve_of_an_unknown_record_is_a_clear_error():
    with pytest.raises(CommandError, match="No failure record #999"):
        run("failures", "--resolve", "999")


def test_failures_with_none_recorded_says_so():
    assert run("failures") == "No failures recorded.\n"


def test_failures_groups_lists_each_group_once_with_its_count_and_place():
    for _ in range(3):
        grouped = failure_record()
    failure_record(task="orders.tasks.order_delivery_completed", resolved=True)

    output = run("failures", "--groups")
    open_only = run("failures", "--groups", "--unresolved")

    assert f"{grouped.group.pk:>5}" in output
    assert "      3  open" in output
    assert "resolved   orders.tasks.order_delivery_completed" in output
    assert "KeyError (orders/services/orders.py in order_process)" in output
    assert "order_delivery_completed" not in open_only


def test_failures_resolve_group_resolves_it_with_its_records():
    record = failure_record()
    failure_record()

    first = run("failures", "--resolve-group", str(record.group.pk))
    second = run("failures", "--resolve-group", str(record.group.pk))

    assert f"Group #{record.group.pk} marked resolved" in first
    assert "was already resolved" in second
    assert not FailureRecord.objects.filter(resolved=False).exists()
    assert "regression" not in run("failures", "--groups")


def test_failures_resolve_group_of_an_unknown_group_is_a_clear_error():
    with pytest.raises(CommandError, match="No failure group #999"):
        run("failures", "--resolve-group", "999")


def test_failures_groups_with_none_says_so():
    assert run("failures", "--groups") == "No failure groups.\n"


# complete_delivery ------------------------------------------------------------------


def test_complete_delivery_completes_it_once(django_capture_on_commit_callbacks):
    order = processed()
    code = order.delivery.code

    with django_capture_on_commit_callbacks() as callbacks:
        first = run("complete_delivery", code)
    second = run("complete_delivery", code)

    assert f"Delivery {code} completed at" in first
    assert len(callbacks) == 1
    assert "was already completed" in second
    assert "nothing changed" in second


def test_complete_delivery_with_an_unknown_code_is_a_clear_error():
    with pytest.raises(CommandError, match="No delivery with code 'dlv_nope'"):
        run("complete_delivery", "dlv_nope")


def test_every_command_explains_itself():
    for name in [
        "place_orders",
        "order_status",
        "retry_failed",
        "reap_stuck",
        "failures",
        "complete_delivery",
    ]:
        module = __import__(f"orders.management.commands.{name}", fromlist=["Command"])
        assert len(module.Command.help) > 30, name


# roles -----------------------------------------------------------------------------
VIEWS = {
    "view_order",
    "view_orderline",
    "view_orderevent",
    "view_delivery",
    "view_failuregroup",
    "view_failurerecord",
}
CHANGES = {
    "change_order",
    "change_delivery",
    "change_failuregroup",
    "change_failurerecord",
}


def group_permissions(name: str) -> set[str]:
    from django.contrib.auth.models import Group

    permissions = Group.objects.get(name=name).permissions.select_related(
        "content_type"
    )
    assert {p.content_type.app_label for p in permissions} <= {"orders"}
    return {p.codename for p in permissions}


def test_roles_makes_support_read_only_and_operators_read_and_change():
    output = run("roles")

    assert group_permissions("Support") == VIEWS
    assert group_permissions("Operators") == VIEWS | CHANGES
    assert "Support: created with 6 permissions." in output
    assert "Operators: created with 10 permissions." in output


def test_roles_run_again_changes_nothing_and_says_so():
    run("roles")

    output = run("roles")

    assert output.splitlines() == [
        "Support: as it should be.",
        "Operators: as it should be.",
    ]
    assert group_permissions("Operators") == VIEWS | CHANGES


def test_roles_sets_a_group_changed_by_hand_back_to_its_permissions():
    from django.contrib.auth.models import Group, Permission

    run("roles")
    support = Group.objects.get(name="Support")
    support.permissions.add(Permission.objects.get(codename="delete_order"))
    support.permissions.remove(Permission.objects.get(codename="view_delivery"))

    output = run("roles")

    assert group_permissions("Support") == VIEWS
    assert "Support: added orders.view_delivery; removed orders.delete_order." in output


def test_roles_keeps_the_groups_members():
    from django.contrib.auth.models import Group, User

    run("roles")
    user = User.objects.create_user("ops", is_staff=True)
    user.groups.add(Group.objects.get(name="Operators"))

    run("roles")

    assert user.has_perm("orders.change_order")
    assert not user.has_perm("orders.delete_order")
