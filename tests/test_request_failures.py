"""A request that raises is logged and recorded like a task's failure, and the
admins are mailed per failure group, not once per request."""

import logging

import pytest

from orders.models import FailureGroup, FailureRecord
from orders.operations.mailer import failures_mail_pending

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.crash_urls")]


@pytest.fixture
def failing_requests(client, settings):
    settings.DEBUG = False
    settings.ADMINS = [("Operators", "ops@example.com")]
    settings.FAILURE_DIGEST_WINDOW_SECONDS = 900
    client.raise_request_exception = False

    def send(count: int, prefix: str = "/test/crash/ord_") -> None:
        for n in range(count):
            response = client.get(f"{prefix}{n}")
            assert response.status_code == 500

    return send


def test_a_flood_of_500s_is_one_group_and_mails_the_admins_once(
    failing_requests, mailoutbox
):
    failing_requests(20)

    # Nothing is mailed from the request itself: the failure mailer sends.
    assert mailoutbox == []
    assert failures_mail_pending() == 1
    assert failures_mail_pending() == 0
    assert len(mailoutbox) == 1
    group = FailureGroup.objects.get()
    assert group.count == 20
    assert group.location == "tests/crash_urls.py in crash"
    # The group's mail shows its latest record as of the mail.
    assert mailoutbox[0].subject == (
        "[orderproj] request test-crash failed: RuntimeError: "
        "a bug in a view, for ord_19"
    )
    assert "Traceback (most recent call last):" in mailoutbox[0].body


def test_every_500_is_logged_with_its_traceback_and_recorded(failing_requests, caplog):
    caplog.set_level(logging.ERROR, logger="django.request")

    failing_requests(5)

    logged = [
        record
        for record in caplog.records
        if record.name == "django.request" and record.exc_info
    ]
    assert len(logged) == 5
    records = FailureRecord.objects.filter(task="request test-crash")
    assert records.count() == 5
    assert {record.group_id for record in records} == {FailureGroup.objects.get().pk}
    first = records.order_by("id").first()
    assert first.args == ["GET", "/test/crash/ord_0"]
    assert first.exception_type == "RuntimeError"


def test_a_500_s_record_names_the_client_the_proxy_saw_not_the_one_it_claims(
    failing_requests, client, settings
):
    settings.TRUSTED_PROXY_HOPS = 1

    client.get(
        "/test/crash/ord_1",
        REMOTE_ADDR="10.0.0.5",
        headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"},
    )

    assert FailureRecord.objects.get().kwargs == {"client": "203.0.113.7"}


def test_a_500_on_another_view_is_a_group_of_its_own(failing_requests, mailoutbox):
    failing_requests(5)
    failing_requests(5, prefix="/test/crash-too/ord_")

    failures_mail_pending()

    subjects = [mail.subject.split(" failed:")[0] for mail in mailoutbox]
    assert sorted(subjects) == ["[orderproj] request test-crash"] + [
        "[orderproj] request test-crash-too"
    ]
