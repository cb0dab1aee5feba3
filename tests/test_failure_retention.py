"""Retention of failure records (failures_trim): resolved records go after
FAILURE_RETENTION_DAYS or beyond the newest FAILURE_RETENTION_COUNT, unresolved
ones stay whatever their age or number, and groups stay with their counts."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from orders.models import FailureGroup, FailureRecord
from orders.services import failures
from orders.services.failure_actions import failure_group_resolve
from orders.services.failures import failures_trim
from tests.factories import failure_record

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def resolved_ago(record: FailureRecord, age: timedelta) -> FailureRecord:
    """The record resolved `age` ago (occurred a minute before that)."""
    resolved_at = timezone.now() - age
    FailureRecord.objects.filter(pk=record.pk).update(
        resolved=True,
        resolved_at=resolved_at,
        occurred_at=resolved_at - timedelta(minutes=1),
    )
    record.refresh_from_db()
    return record


def occurred_ago(age: timedelta, **fields) -> FailureRecord:
    return failure_record(occurred_at=timezone.now() - age, **fields)


def kept() -> set[int]:
    return set(FailureRecord.objects.values_list("pk", flat=True))


def test_resolved_records_past_the_retention_go_and_open_ones_stay_whatever_their_age(
    settings,
):
    settings.FAILURE_RETENTION_DAYS = 30
    old_resolved = resolved_ago(occurred_ago(40 * DAY), 31 * DAY)
    old_open = occurred_ago(365 * DAY)
    # Occurred long ago, resolved lately: its age counts from the resolving.
    lately_resolved = resolved_ago(occurred_ago(40 * DAY), 29 * DAY)

    assert failures_trim() == 1

    assert kept() == {old_open.pk, lately_resolved.pk}
    assert not FailureRecord.objects.filter(pk=old_resolved.pk).exists()


def test_resolved_records_beyond_the_newest_count_go_and_open_ones_stay(settings):
    settings.FAILURE_RETENTION_COUNT = 2
    resolved = [
        resolved_ago(occurred_ago(hours * timedelta(hours=1)), timedelta(0))
        for hours in (4, 3, 2, 1)
    ]
    open_records = [occurred_ago(hours * timedelta(hours=1)) for hours in (9, 8, 7)]

    assert failures_trim() == 2

    newest_resolved = {record.pk for record in resolved[2:]}
    assert kept() == newest_resolved | {record.pk for record in open_records}


def test_zero_keeps_every_record(settings):
    settings.FAILURE_RETENTION_DAYS = 0
    settings.FAILURE_RETENTION_COUNT = 0
    records = [resolved_ago(occurred_ago(400 * DAY), 399 * DAY) for _ in range(3)]

    assert failures_trim() == 0

    assert kept() == {record.pk for record in records}


def test_many_records_go_in_batches(settings, monkeypatch):
    monkeypatch.setattr(failures, "TRIM_BATCH", 2)
    settings.FAILURE_RETENTION_COUNT = 1
    for _ in range(6):
        resolved_ago(occurred_ago(DAY), timedelta(0))

    assert failures_trim() == 5

    assert FailureRecord.objects.count() == 1


def test_a_group_whose_records_are_gone_keeps_its_count_and_reopens_as_a_regression(
    settings,
):
    settings.FAILURE_RETENTION_DAYS = 30
    records = [occurred_ago(40 * DAY) for _ in range(3)]
    group = records[0].group
    failure_group_resolve(group=group)
    for record in records:
        resolved_ago(record, 31 * DAY)

    assert failures_trim() == 3

    group.refresh_from_db()
    assert (group.count, group.resolved, group.latest_record) == (3, True, None)

    again = failure_record()

    group.refresh_from_db()
    assert again.group == group
    assert (group.count, group.latest_record) == (4, again)
    assert group.is_regression
    assert FailureGroup.objects.count() == 1


def test_the_failures_command_trims_at_once(settings, capsys):
    settings.FAILURE_RETENTION_DAYS = 30
    resolved_ago(occurred_ago(40 * DAY), 31 * DAY)
    still_open = occurred_ago(40 * DAY)

    call_command("failures", "--trim")

    assert "Deleted 1 resolved failure record(s)" in capsys.readouterr().out
    assert kept() == {still_open.pk}
