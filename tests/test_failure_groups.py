"""Failure groups: what joins records into one, the mail each group is owed,
resolving a group and its records, and grouping the records stored before."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from orders import selectors
from orders.models import FailureGroup, FailureRecord, Order
from orders.operations.mailer import GroupMail, failures_mail_pending, group_mail_due
from orders.services.failure_actions import (
    failure_group_rerun,
    failure_group_resolve,
    failure_group_retry_orders,
    failure_resolve,
)
from orders.services.failures import record_failure
from tests.factories import failure_record, failure_traceback, processed

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)


def raised(error: BaseException) -> BaseException:
    """The error with a traceback, as if it had been raised."""
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001
        return caught


def due(**state):
    defaults = {
        "resolved": False,
        "count": 1,
        "mailed_at": None,
        "mailed_count": 0,
        "reopened_at": None,
        "now": NOW,
        "window": WINDOW,
    }
    return group_mail_due(**{**defaults, **state})


# The mail decision (pure) -----------------------------------------------------------


def test_a_group_never_mailed_about_is_owed_its_first_mail_at_once():
    assert due() is GroupMail.NEW


def test_a_group_mailed_within_the_window_waits_however_often_it_fails():
    assert due(count=500, mailed_at=NOW - WINDOW / 2, mailed_count=1) is None


def test_a_group_with_failures_since_its_mail_gets_a_digest_once_the_window_passed():
    assert due(count=7, mailed_at=NOW - WINDOW, mailed_count=1) is GroupMail.DIGEST


def test_a_group_quiet_since_its_mail_gets_no_digest_however_long_ago():
    assert due(count=3, mailed_at=NOW - timedelta(days=9), mailed_count=3) is None


def test_a_resolved_group_is_owed_no_mail_for_what_happened_before():
    state = {"count": 9, "mailed_at": NOW - WINDOW * 2, "mailed_count": 1}

    assert due(**state) is GroupMail.DIGEST
    assert due(**state, resolved=True) is None
    assert due(resolved=True) is None


def test_a_group_reopened_after_its_mail_is_owed_a_mail_at_once():
    state = {"count": 4, "mailed_at": NOW - timedelta(seconds=5), "mailed_count": 3}

    assert due(**state, reopened_at=NOW) is GroupMail.REOPENED
    assert due(**state, reopened_at=NOW - timedelta(minutes=1)) is None


# Storing ------------------------------------------------------------------------------


def test_records_of_one_kind_share_a_group_that_counts_them():
    first = failure_record(message="'card_token' for ord_1")
    last = failure_record(message="'card_token' for ord_2")

    group = FailureGroup.objects.get()
    assert first.group == last.group == group
    assert group.count == 2
    assert group.latest_record == last
    assert group.first_seen == first.occurred_at
    assert group.last_seen == last.occurred_at
    assert group.location == "orders/services/orders.py in order_process"


def test_a_record_raised_elsewhere_starts_a_group_of_its_own():
    failure_record()
    failure_record(traceback=failure_traceback(function="order_retry"))

    assert FailureGroup.objects.count() == 2


def test_the_hourly_counts_of_a_group_cover_the_last_day_oldest_first():
    now = timezone.now().replace(minute=30)
    for hours_ago in [0, 0, 1, 23, 24]:
        failure_record(occurred_at=now - timedelta(hours=hours_ago))

    counts = selectors.failure_group_hourly_counts(
        group=FailureGroup.objects.get(), now=now
    )

    assert len(counts) == 24
    assert counts[-1] == 2
    assert counts[-2] == 1
    assert counts[0] == 1
    assert sum(counts) == 4


# Resolving ----------------------------------------------------------------------------


def test_resolving_a_group_resolves_its_open_records(django_user_model):
    user = django_user_model.objects.create_user("ops")
    records = [failure_record(), failure_record()]

    assert failure_group_resolve(group=records[0].group, user=user) is True
    assert failure_group_resolve(group=records[0].group, user=user) is False

    group = FailureGroup.objects.get()
    assert (group.resolved, group.resolved_by) == (True, user)
    assert set(FailureRecord.objects.values_list("resolved", "resolved_by")) == {
        (True, user.pk)
    }


def test_resolving_the_last_open_record_resolves_its_group():
    first, second = failure_record(), failure_record()

    failure_resolve(failure=first)
    assert FailureGroup.objects.get().resolved is False

    failure_resolve(failure=second)
    assert FailureGroup.objects.get().resolved is True


def test_a_resolved_group_that_fails_again_is_a_regression_and_owed_a_mail(
    mailoutbox,
):
    record = failure_record()
    failures_mail_pending()
    failure_group_resolve(group=record.group)

    failure_record(message="again")

    group = FailureGroup.objects.get()
    assert group.resolved is False
    assert group.is_regression
    assert group.reopened_times == 1
    assert group.count == 2
    assert failures_mail_pending() == 1
    assert "Regression" in mailoutbox[-1].subject


# Acting on a group --------------------------------------------------------------------


def test_retrying_a_group_retries_its_failed_orders_and_skips_the_others():
    failed = processed(fail_times=1, failure="permanent")
    completed = processed()
    failure_record(failed)
    record = failure_record(completed)

    retried, skipped = failure_group_retry_orders(group=record.group)

    assert [order.pk for order in retried] == [failed.pk]
    assert [order.pk for order in skipped] == [completed.pk]
    failed.refresh_from_db()
    assert failed.status == Order.Status.PENDING


def test_rerunning_a_group_hands_each_distinct_call_of_its_open_records_to_the_queue(
    django_capture_on_commit_callbacks,
):
    task = "orders.tasks.order_delivery_completed"
    for code in ["dlv_a", "dlv_a", "dlv_b"]:
        record = failure_record(task=task, args=["ord_x", code])
    failure_record(task=task, args=["ord_x", "dlv_c"], resolved=True)

    with django_capture_on_commit_callbacks() as callbacks:
        rerun = failure_group_rerun(group=record.group)

    assert rerun == 2
    assert len(callbacks) == 2


# The data migration -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_records_stored_before_groups_existed_are_grouped_by_their_traceback():
    executor = MigrationExecutor(connection)
    before, after = (
        [("orders", "0008_failuregroup")],
        [("orders", "0009_group_failure_records")],
    )
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    OldRecord = old_apps.get_model("orders", "FailureRecord")
    try:
        for message, resolved in [("for ord_1", True), ("for ord_2", False)]:
            OldRecord.objects.create(
                task="orders.tasks.process_order",
                exception_type="KeyError",
                message=message,
                traceback=failure_traceback(),
                resolved=resolved,
            )
        OldRecord.objects.create(
            task="orders.tasks.process_order",
            exception_type="KeyError",
            traceback=failure_traceback(function="order_retry"),
            resolved=True,
        )

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new_apps = executor.loader.project_state(after).apps
        Group = new_apps.get_model("orders", "FailureGroup")
        groups = {group.location: group for group in Group.objects.all()}
        assert set(groups) == {
            "orders/services/orders.py in order_process",
            "orders/services/orders.py in order_retry",
        }
        twice = groups["orders/services/orders.py in order_process"]
        assert (twice.count, twice.resolved) == (2, False)
        assert groups["orders/services/orders.py in order_retry"].resolved is True
        # Mailed under the old limit already: nothing is owed.
        assert all(group.mailed_count == group.count for group in groups.values())
        assert (
            not new_apps.get_model("orders", "FailureRecord")
            .objects.filter(group=None)
            .exists()
        )
    finally:
        MigrationExecutor(connection).migrate(
            MigrationExecutor(connection).loader.graph.leaf_nodes()
        )


# Racing processes ---------------------------------------------------------------------


def in_threads(count: int, work) -> list:
    """Run `work` in `count` threads at once, each on its own connection, as
    processes racing on the database would; their results."""
    from django.db import connection as thread_connection

    start = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = work()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test
            errors.append(error)
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.django_db(transaction=True)
def test_racing_failures_of_a_new_kind_make_one_group_that_counts_them_all(
    mailoutbox,
):
    def fail_ten_times():
        for number in range(10):
            stored = record_failure(
                task="orders.tasks.process_order",
                error=raised(ConnectionError(f"gateway down ({number})")),
            )
            assert stored is not None, "the failure was not stored"

    in_threads(4, fail_ten_times)
    tried = in_threads(4, failures_mail_pending)

    group = FailureGroup.objects.get()
    assert group.count == FailureRecord.objects.count() == 40
    assert sum(tried) == 1
    assert len(mailoutbox) == 1


@pytest.mark.django_db(transaction=True)
def test_racing_mailers_send_a_reopened_groups_mail_once(mailoutbox):
    record = failure_record()
    failures_mail_pending()
    failure_group_resolve(group=record.group)
    failure_record()

    tried = in_threads(4, failures_mail_pending)

    assert sum(tried) == 1
    assert [mail.subject.split(":")[0] for mail in mailoutbox] == [
        "[orderproj] orders.tasks.process_order failed",
        "[orderproj] Regression",
    ]
