"""Put every FailureRecord stored before groups existed into its group, by the
fingerprint of its stored traceback text (orders/services/fingerprints.py).

The groups made here count as mailed (mailed_at is now, mailed_count their
count): those failures were mailed, or held back, under the old per-record limit,
so only failures from now on send mail. A group is resolved when every one of its
records is."""

from django.db import migrations
from django.utils import timezone

BATCH = 500


def group_records(apps, schema_editor):
    from orders.services.fingerprints import failure_fingerprint, failure_location

    FailureRecord = apps.get_model("orders", "FailureRecord")
    FailureGroup = apps.get_model("orders", "FailureGroup")
    now = timezone.now()
    groups: dict[str, dict] = {}
    records = FailureRecord.objects.order_by("occurred_at", "id").only(
        "id", "task", "exception_type", "traceback", "occurred_at", "resolved",
        "resolved_at", "resolved_by_id",
    )
    for record in records.iterator(chunk_size=BATCH):
        location = failure_location(record.traceback)
        fingerprint = failure_fingerprint(
            task=record.task, exception_type=record.exception_type, location=location
        )
        found = groups.setdefault(
            fingerprint,
            {
                "task": record.task,
                "exception_type": record.exception_type,
                "location": location,
                "first_seen": record.occurred_at,
                "ids": [],
                "open": 0,
                "resolved_at": None,
                "resolved_by_id": None,
            },
        )
        found["ids"].append(record.id)
        found["last_seen"] = record.occurred_at
        if record.resolved:
            found["resolved_at"] = record.resolved_at
            found["resolved_by_id"] = record.resolved_by_id
        else:
            found["open"] += 1
    for fingerprint, found in groups.items():
        resolved = found["open"] == 0
        group = FailureGroup.objects.create(
            fingerprint=fingerprint,
            task=found["task"],
            exception_type=found["exception_type"],
            location=found["location"],
            count=len(found["ids"]),
            first_seen=found["first_seen"],
            last_seen=found["last_seen"],
            latest_record_id=found["ids"][-1],
            resolved=resolved,
            resolved_at=(found["resolved_at"] or now) if resolved else None,
            resolved_by_id=found["resolved_by_id"] if resolved else None,
            mailed_at=now,
            mailed_count=len(found["ids"]),
        )
        ids = found["ids"]
        for start in range(0, len(ids), BATCH):
            FailureRecord.objects.filter(pk__in=ids[start : start + BATCH]).update(
                group=group
            )


class Migration(migrations.Migration):
    dependencies = [("orders", "0008_failuregroup")]

    operations = [migrations.RunPython(group_records, migrations.RunPython.noop)]
