"""The document's security schemes are what each operation takes: a request
carrying exactly one of an operation's security requirements, built from the
schemes as a client generated from the document would build it, gets past
the login and CSRF checks; one with any scheme of it left out is a 401 or
403. An operation without `security` answers without credentials."""

import pytest
from django.test import Client
from django.utils.crypto import get_random_string

from orders.api.openapi import openapi_document
from orders.live.opening import Refusal, check_staff

METRICS_TOKEN = "token-for-the-security-tests"
REFUSED = {401, 403}


@pytest.fixture
def credentials(client, staff_user, settings) -> dict[str, str]:
    """A value for each security scheme: a staff session, a CSRF token and
    the metrics token."""
    settings.METRICS_TOKEN = METRICS_TOKEN
    client.force_login(staff_user)
    csrf = get_random_string(32)
    return {
        "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
        "csrfCookie": csrf,
        "csrf": csrf,
        "metricsToken": METRICS_TOKEN,
    }


def operations():
    for path, item in openapi_document()["paths"].items():
        for method, operation in item.items():
            concrete = path.replace("{order_id}", "ord_x").replace("{code}", "dlv_x")
            yield method.upper(), concrete, operation


def status_with(method: str, path: str, schemes: dict, values: dict) -> int:
    """The answer to a request carrying `schemes` (name -> definition)."""
    cookies, headers = {}, {}
    for name, scheme in schemes.items():
        if scheme["type"] == "http":
            headers["Authorization"] = f"Bearer {values[name]}"
        elif scheme["in"] == "cookie":
            cookies[scheme["name"]] = values[name]
        else:
            headers[scheme["name"]] = values[name]
    if path == "/api/events":  # an ASGI endpoint: its judge of the session
        cookie = "; ".join(f"{key}={value}" for key, value in cookies.items())
        try:
            check_staff({"headers": [(b"cookie", cookie.encode())]})
        except Refusal as refusal:
            return refusal.status
        return 200
    client = Client(enforce_csrf_checks=True)
    for name, value in cookies.items():
        client.cookies[name] = value
    return client.generic(method, path, headers=headers).status_code


@pytest.mark.django_db
def test_each_security_requirement_is_what_the_operation_takes(credentials):
    schemes = openapi_document()["components"]["securitySchemes"]
    for method, path, operation in operations():
        if "security" not in operation:
            continue
        for requirement in operation["security"]:
            named = {name: schemes[name] for name in requirement}
            status = status_with(method, path, named, credentials)
            assert status not in REFUSED, (method, path, list(named), status)
            for left_out in named:
                fewer = {name: s for name, s in named.items() if name != left_out}
                status = status_with(method, path, fewer, credentials)
                assert status in REFUSED, (method, path, list(fewer), status)


@pytest.mark.django_db
def test_an_operation_without_security_answers_without_credentials():
    for method, path, operation in operations():
        if "security" in operation or path.endswith("/events"):
            continue  # the order's stream: tests/test_streams.py
        if method == "POST":
            continue  # placing: tests/test_api.py, with a body
        assert status_with(method, path, {}, {}) not in REFUSED, path
