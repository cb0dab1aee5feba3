"""Every path of the API document, and /healthz, answers a method it does not
take with a 405, an `Allow` header and the JSON error shape, before the CSRF
check or a login is looked at; OPTIONS is a 204 with `Allow`
(orders/api/methods.py). Sent through the whole ASGI application, as daphne
would: the streams are routed ahead of Django (orderproj/asgi.py)."""

import asyncio
import json

import pytest
from django.urls import resolve

from orderproj.asgi import application
from orders.api.openapi import openapi_document
from orders.live.asgi import ALLOWED as STREAM_METHODS

ODD_METHODS = ["QUERY", "PUT", "PATCH", "DELETE", "TRACE", "FROB"]
ORDER_ID = "ord_0123456789abcdef0123456789abcdef"
# Served outside Django (orderproj/asgi.py): not in Django's URL patterns.
STREAMS = {"/api/orders/{order_id}/events", "/api/events"}


def documented() -> dict[str, set[str]]:
    """Path (with a concrete id) -> the methods the document gives it."""
    return {
        path.replace("{order_id}", ORDER_ID).replace("{code}", "dlv_x"): {
            method.upper() for method in item
        }
        for path, item in openapi_document()["paths"].items()
    }


def declared_methods(path: str) -> set[str]:
    """The methods the endpoint itself declares."""
    if path.replace(ORDER_ID, "{order_id}") in STREAMS:
        return set(STREAM_METHODS)
    return set(resolve(path).func.allowed_methods)


def send(method: str, path: str, headers=()) -> tuple[int, dict, bytes]:
    """One request through orderproj.asgi.application: (status, headers, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    sent = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # the client stays until it is answered

    async def collect(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(scope, receive, collect), 10))
    start = sent[0]
    body = b"".join(message.get("body", b"") for message in sent[1:])
    headers = {
        name.decode().lower(): value.decode() for name, value in start["headers"]
    }
    return start["status"], headers, body


def allowed_in(headers: dict) -> set[str]:
    return {method.strip() for method in headers["allow"].split(",")}


def test_each_documented_path_declares_the_methods_the_document_gives_it():
    for path, methods in documented().items():
        # HEAD is answered wherever the endpoint says so, documented or not.
        assert declared_methods(path) - {"HEAD"} == methods, path


PATHS = sorted({*documented(), "/healthz"})


@pytest.mark.parametrize("path", PATHS)
def test_an_undeclared_method_is_a_json_405_with_allow_before_csrf_and_login(path):
    for method in ODD_METHODS:
        status, headers, body = send(method, path)
        assert status == 405, (method, path, status, body[:200])
        assert headers["content-type"] == "application/json", (method, path)
        assert json.loads(body)["error"] == "method_not_allowed"
        assert allowed_in(headers) == declared_methods(path) | {"OPTIONS"}


@pytest.mark.parametrize("path", PATHS)
def test_options_says_which_methods_a_path_takes(path):
    status, headers, body = send("OPTIONS", path)
    assert (status, body) == (204, b"")
    assert allowed_in(headers) == declared_methods(path) | {"OPTIONS"}


def test_head_is_refused_where_only_get_is_declared():
    for path in ["/metrics", "/api/dashboard/stats", "/api/events"]:
        status, headers, _body = send("HEAD", path)
        assert status == 405, path
        assert "HEAD" not in allowed_in(headers)


def test_an_unknown_api_path_is_a_json_404_whatever_the_method():
    for method in ["GET", "QUERY", "DELETE"]:
        status, headers, body = send(method, "/api/no/such/thing")
        assert status == 404, (method, body[:200])
        assert json.loads(body)["error"] == "not_found"
