"""The API's error shape, built here and nowhere else:
{"error": "<code>", "detail": "<sentence>", "fields"?: {...}}.

Django views answer with `error_response`; the ASGI endpoints (the streams, which
run outside Django) with `send_error`; a stream that ends with a reason puts
`error_document` in its last frame. Exceptions that carry a refusal carry its
status with it (OrderInputError.http_status, the streams' Refusal.status).
"""

import json

from django.http import JsonResponse
from django.urls import reverse


def api_path(path: str) -> bool:
    """The paths that answer in this shape: /api/ and the two endpoints of the
    API document outside it, /healthz and /metrics."""
    return path.startswith("/api/") or path in (reverse("healthz"), reverse("metrics"))


def error_document(error: str, detail: str, fields: dict | None = None) -> dict:
    """The error shape's body; `fields` only when there are some."""
    body = {"error": error, "detail": detail}
    if fields:
        body["fields"] = fields
    return body


def error_response(
    status: int, error: str, detail: str, fields: dict | None = None
) -> JsonResponse:
    """The error shape as a Django response."""
    return JsonResponse(error_document(error, detail, fields), status=status)


async def send_error(
    send, status: int, error: str, detail: str, extra_headers=()
) -> None:
    """The error shape as a whole ASGI response, for endpoints outside Django."""
    body = json.dumps(error_document(error, detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
