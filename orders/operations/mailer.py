"""The failure mails: which mail a failure group is owed (group_mail_due), its
text, and the mailer that sends them, a thread of each qcluster
(run_failure_mailer).

The ADMINS are mailed per group, not per record: a new group at once, a group
that keeps failing in one digest per FAILURE_DIGEST_WINDOW_SECONDS, a resolved
group that fails again at once. No worker ever waits on a mail server, and an
attempt's outcome is never behind a mail. What reaches the groups is recorded by
the hooks (orders/operations/hooks.py).
"""

import json
import logging
import threading
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from orders.models import FailureGroup, FailureRecord
from orders.services.failures import admins_mail

# One name for the mailer and the hooks, the one the operators' docs give.
logger = logging.getLogger("orders.failures")

# How often the failure mailer looks for records whose mail is due, and how many
# it takes at once.
MAIL_POLL_SECONDS = 1.0
MAIL_BATCH = 50


class GroupMail(StrEnum):
    NEW = "new"
    DIGEST = "digest"
    REOPENED = "reopened"


def group_mail_due(
    *,
    resolved: bool,
    count: int,
    mailed_at: datetime | None,
    mailed_count: int,
    reopened_at: datetime | None,
    now: datetime,
    window: timedelta,
) -> GroupMail | None:
    """Which mail a group is owed now, if any.

    A group nobody was mailed about: at once. A group that reopened after its
    last mail: at once. A group with failures since its last mail: a digest, once
    the window since that mail has passed. Otherwise none, and none for a
    resolved group: someone has dealt with it (it reopens if it fails again).
    """
    if resolved:
        return None
    if mailed_at is None:
        return GroupMail.NEW
    if reopened_at is not None and reopened_at > mailed_at:
        return GroupMail.REOPENED
    if count > mailed_count and now - mailed_at >= window:
        return GroupMail.DIGEST
    return None


def _groups_owed_a_mail(now: datetime, window: timedelta):
    """The database's side of group_mail_due, to find the candidates."""
    return FailureGroup.objects.filter(resolved=False).filter(
        Q(mailed_at__isnull=True)
        | Q(reopened_at__gt=F("mailed_at"))
        | Q(count__gt=F("mailed_count"), mailed_at__lte=now - window)
    )


def failures_mail_pending() -> int:
    """Mail the admins about every group that is owed a mail (group_mail_due),
    least recently seen first; returns how many mails were tried.

    Each mail is taken with a conditional UPDATE on the group's mailed_at and
    mailed_count as they were read, so the mailers of several qclusters never
    send one twice, on PostgreSQL as on SQLite. A mail that fails is logged and
    not tried again: the group waits for its next failure's digest.
    """
    now = timezone.now()
    window = timedelta(seconds=settings.FAILURE_DIGEST_WINDOW_SECONDS)
    candidates = _groups_owed_a_mail(now, window).order_by("last_seen", "id")[
        :MAIL_BATCH
    ]
    tried = 0
    for group in list(candidates):
        kind = group_mail_due(
            resolved=group.resolved,
            count=group.count,
            mailed_at=group.mailed_at,
            mailed_count=group.mailed_count,
            reopened_at=group.reopened_at,
            now=now,
            window=window,
        )
        if kind is None:
            continue
        taken = FailureGroup.objects.filter(
            pk=group.pk,
            mailed_at=group.mailed_at,
            mailed_count=group.mailed_count,
        ).update(mailed_at=timezone.now(), mailed_count=group.count)
        if not taken:
            continue
        latest = (
            FailureRecord.objects.select_related("order")
            .filter(group=group)
            .order_by("-occurred_at", "-id")
            .first()
        )
        subject, body = group_mail(group, latest, kind)
        admins_mail(subject=subject, body=body)
        tried += 1
    return tried


def run_failure_mailer(
    stop: threading.Event, *, interval: float = MAIL_POLL_SECONDS
) -> None:
    """Send due failure mails every `interval` seconds until `stop` is set.

    A thread of its own, beside the dispatcher: a mail server that hangs (SMTP
    waits up to EMAIL_TIMEOUT) then delays only other mails, never a worker, a
    retry or a lease.
    """
    logger.info("failure mailer started (every %.1f s)", interval)
    while not stop.is_set():
        try:
            failures_mail_pending()
        except Exception:
            logger.exception("sending failure mails failed; trying again")
            close_old_connections()
        stop.wait(interval)
    logger.info("failure mailer stopped")


def group_mail(
    group: FailureGroup, latest: FailureRecord | None, kind: GroupMail
) -> tuple[str, str]:
    """The subject and body of a group's mail of this kind."""
    summary = f"{group.exception_type}: {latest.message if latest else ''}"
    if kind is GroupMail.NEW:
        subject = f"{group.task} failed: {summary}"
        opening = [f"A new kind of failure (group #{group.pk})."]
    elif kind is GroupMail.REOPENED:
        subject = f"Regression: {group.task} failed again: {summary}"
        opening = [
            f"Group #{group.pk} was resolved and has failed again "
            f"(reopened at {group.reopened_at.isoformat()}, "
            f"{group.reopened_times} time(s) so far)."
        ]
    else:
        more = group.count - group.mailed_count
        subject = (
            f"{group.task}: {more} more {group.exception_type} since "
            f"{group.mailed_at:%Y-%m-%d %H:%M} UTC"
        )
        opening = [
            f"{more} more failure(s) of group #{group.pk} since the last mail "
            f"({group.mailed_at.isoformat()}); at most one digest per "
            f"{settings.FAILURE_DIGEST_WINDOW_SECONDS:g} s "
            "(FAILURE_DIGEST_WINDOW_SECONDS)."
        ]
    lines = [
        *opening,
        "",
        f"Group:      {reverse('admin:orders_failuregroup_change', args=[group.pk])}",
        f"Task:       {group.task}",
        f"Exception:  {group.exception_type}",
        f"Where:      {group.location or '-'}",
        f"Count:      {group.count} since {group.first_seen.isoformat()}",
        f"Last seen:  {group.last_seen.isoformat()}",
        "",
    ]
    if latest is not None:
        lines += [failure_mail_body(latest)]
    return subject, "\n".join(lines)


def failure_mail_body(record: FailureRecord) -> str:
    """The latest record of a group, as its mail shows it."""
    lines = [
        f"Latest failure #{record.pk} at {record.occurred_at.isoformat()}",
        f"Arguments: {json.dumps(record.args)} {json.dumps(record.kwargs)}",
        f"Order:     {record.order.order_id if record.order else '-'}",
        f"Exception: {record.exception_type}: {record.message}",
        f"Admin:     {reverse('admin:orders_failurerecord_change', args=[record.pk])}",
        "",
        "Retry or re-run it from the admin, or: manage.py failures --groups",
        "",
        record.traceback,
    ]
    return "\n".join(lines)
