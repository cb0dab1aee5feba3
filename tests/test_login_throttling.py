"""Login throttling on /admin/login/ (django-axes, orderproj/settings/login.py):
after LOGIN_FAILURE_LIMIT wrong passwords for one username from one client
address, that pair is refused for a while, with a page that says so."""

import io
import json

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command

from tests.conftest import ORDER_BODY

pytestmark = pytest.mark.django_db

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "pw-for-tests"
ATTACKER = "192.0.2.66"


def log_in(client, password: str, address: str = ATTACKER, **extra):
    return client.post(
        LOGIN,
        {"username": "operator", "password": password},
        REMOTE_ADDR=address,
        **extra,
    )


def fail(client, times: int, address: str = ATTACKER, **extra) -> list[int]:
    return [
        log_in(client, f"wrong-{n}", address, **extra).status_code for n in range(times)
    ]


def test_after_five_wrong_passwords_the_right_one_is_refused_with_a_message(
    client, staff_user
):
    # The form answers each wrong password itself (200) until the fifth locks.
    assert fail(client, 5) == [200] * 4 + [429]

    refused = log_in(client, PASSWORD)

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 15 * 60
    page = refused.content.decode()
    assert "Too many failed logins" in page
    assert "after 5 wrong passwords" in page
    assert "refused for 15 minutes" in page
    assert "_auth_user_id" not in client.session


def test_another_client_address_is_not_locked_out(client, staff_user):
    fail(client, 5)

    answer = log_in(client, PASSWORD, address="198.51.100.20")

    assert answer.status_code == 302
    assert client.session["_auth_user_id"] == str(staff_user.pk)


def test_behind_a_proxy_a_made_up_address_does_not_escape_the_lockout(
    client, staff_user, settings
):
    settings.TRUSTED_PROXY_HOPS = 1
    for n in range(5):
        log_in(
            client,
            f"wrong-{n}",
            address="10.0.0.2",
            headers={"X-Forwarded-For": f"203.0.113.{n}, {ATTACKER}"},
        )

    refused = log_in(
        client,
        PASSWORD,
        address="10.0.0.2",
        headers={"X-Forwarded-For": f"203.0.113.99, {ATTACKER}"},
    )

    assert refused.status_code == 429


def test_a_success_before_the_limit_forgets_the_earlier_failures(client, staff_user):
    fail(client, 4)
    assert log_in(client, PASSWORD).status_code == 302
    client.logout()

    assert fail(client, 4) == [200] * 4
    assert log_in(client, PASSWORD).status_code == 302


def test_the_limit_and_the_wait_are_settings(client, staff_user, settings):
    settings.LOGIN_FAILURE_LIMIT = settings.AXES_FAILURE_LIMIT = 2
    settings.LOGIN_LOCKOUT_MINUTES = 0.5

    assert fail(client, 2) == [200, 429]
    refused = log_in(client, PASSWORD)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) == 30


def test_a_locked_out_address_still_gets_the_api_and_the_health_check(
    client, staff_user, settings
):
    fail(client, 5)

    placed = client.post(
        "/api/orders",
        json.dumps(ORDER_BODY),
        content_type="application/json",
        REMOTE_ADDR=ATTACKER,
    )
    health = client.get("/healthz", REMOTE_ADDR=ATTACKER)

    assert placed.status_code == 202
    assert health.status_code in {200, 503}
    assert health["Content-Type"] == "application/json"


def test_an_operator_lifts_a_lock_with_axes_reset_ip_username(client, staff_user):
    fail(client, 5)
    out = io.StringIO()

    call_command("axes_reset_ip_username", ATTACKER, "operator", stdout=out)

    assert out.getvalue().strip() == "1 attempts removed."
    assert log_in(client, PASSWORD).status_code == 302


def test_the_console_lists_the_locked_out_pair_and_deleting_it_lifts_the_lock(
    client, staff_user, admin_client
):
    fail(client, 5)
    attempts = "/admin/axes/accessattempt/"

    listed = admin_client.get(attempts)
    (attempt,) = AccessAttempt.objects.all()
    deleted = admin_client.post(f"{attempts}{attempt.pk}/delete/", {"post": "yes"})

    assert listed.status_code == 200
    assert ATTACKER in listed.content.decode()
    assert deleted.status_code == 302
    assert log_in(client, PASSWORD).status_code == 302
