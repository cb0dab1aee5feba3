"""The API's error shape comes from one builder (orders/api/errors.py), whether a
Django view or an ASGI stream endpoint answers."""

import asyncio
import json

from orders.api.errors import error_document, error_response, send_error


def test_an_error_without_fields_has_only_error_and_detail():
    assert error_document("not_found", "No such thing.") == {
        "error": "not_found",
        "detail": "No such thing.",
    }
    assert "fields" not in error_document("bad_request", "Bad.", fields={})


def test_an_error_with_fields_names_them():
    document = error_document("invalid", "Bad input.", fields={"items": ["empty"]})
    assert document["fields"] == {"items": ["empty"]}


def test_a_django_view_and_an_asgi_endpoint_answer_the_same_error_alike():
    django_response = error_response(405, "method_not_allowed", "Use GET.")
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(
        send_error(send, 405, "method_not_allowed", "Use GET.", [(b"allow", b"GET")])
    )
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == django_response.status_code == 405
    assert headers[b"content-type"] == django_response["Content-Type"].encode()
    assert headers[b"content-length"] == str(len(body["body"])).encode()
    assert headers[b"allow"] == b"GET"
    assert json.loads(body["body"]) == json.loads(django_response.content)
