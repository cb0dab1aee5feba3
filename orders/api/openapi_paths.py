"""The operations of the OpenAPI document (orders/api/openapi.py), written out:
the views stay plain Django views (docs/decisions/0009-plain-views-for-the-api.md).

Every constraint on a parameter is a shape of orders/api/shapes.py, the one the
validation enforces; the streams' events are described as events
(openapi_streams.py); the staff operations name the security schemes they take.
"""

from urllib.parse import unquote

from django.urls import reverse
from pydantic import BaseModel

from orders.api import shapes
from orders.api.schemas import (
    DashboardStats,
    DeliveryCompleted,
    Error,
    Health,
    OrderPlaced,
    OrderRetried,
    OrderStatus,
)
from orders.api.validation import OrderIn

# Security requirements (the schemes: openapi.security_schemes). A POST of
# staff carries Django's CSRF token twice, as the cookie and as the header.
STAFF_WRITE = [{"session": [], "csrfCookie": [], "csrf": []}]
STAFF_READ = [{"session": []}]
STAFF_OR_TOKEN = [{"session": []}, {"metricsToken": []}]


def ref(model: type[BaseModel] | str) -> dict:
    name = model if isinstance(model, str) else model.__name__
    return {"$ref": f"#/components/schemas/{name}"}


def _json(model: type[BaseModel], description: str, **extra) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref(model)}},
        **extra,
    }


def _error(description: str, **extra) -> dict:
    return _json(Error, description, **extra)


def _path(name: str, placeholder: str | None = None) -> str:
    args = [f"{{{placeholder}}}"] if placeholder else []
    return unquote(reverse(name, args=args))


def _stream(item: str, description: str) -> dict:
    """A text/event-stream response: its schema is that of each event, as
    OpenAPI 3.1 tools read a stream (openapi_streams.py)."""
    return {
        "description": description,
        "content": {"text/event-stream": {"schema": ref(item)}},
    }


# An order id or delivery code in a path: what the URL pattern takes
# (orders/urls.py, PublicIdConverter); anything else is a 404.
ID = {"type": "string", "minLength": 1, "maxLength": 40}
LAST_EVENT_ID = {
    "type": "string",
    "maxLength": shapes.MAX_EVENT_ID_DIGITS,
    "pattern": shapes.LAST_EVENT_ID_PATTERN,
}
RESUME = [
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "Resume after this event id (what a browser sends when "
        "it reconnects); empty is none.",
        "schema": LAST_EVENT_ID,
    },
    {
        "name": "lastEventId",
        "in": "query",
        "required": False,
        "description": "The same, for a client that cannot set the header; "
        "the header wins.",
        "schema": LAST_EVENT_ID,
    },
]
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": f"1 to {shapes.MAX_IDEMPOTENCY_KEY_LENGTH} printable "
    "characters (Latin-1), no space at either end.",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": shapes.MAX_IDEMPOTENCY_KEY_LENGTH,
        "pattern": shapes.IDEMPOTENCY_KEY_PATTERN,
    },
}
BODY_LIMIT = f"{shapes.MAX_BODY_BYTES // 1024} KiB"
# What a stream's opening may be refused with besides its own errors, each with
# Retry-After (orders/live/caps.py, orders/live/threads.py).
STREAM_REFUSALS = {
    "429": _error("`too_many_streams`: this client holds as many streams as it may."),
    "503": _error(
        "`stream_unavailable`: the web process holds as many streams as it can, "
        "the database fails or too many openings wait."
    ),
}
NOT_STAFF = _error(
    "`not_authenticated` (no session: log in at /admin/login/), `forbidden` "
    "(not a staff account, or one without the operation's permission) or "
    "`csrf_failed`."
)


def operations() -> dict:
    order = _path("api-order", "order_id")
    order_id = {"name": "order_id", "in": "path", "required": True, "schema": ID}
    return {
        _path("api-orders"): {
            "post": {
                "operationId": "placeOrder",
                "summary": "Place an order",
                "description": "Answers at once; a worker then runs the order's "
                "steps. With an `Idempotency-Key` seen before, the same body "
                "returns the first order (200) and another body is a 409.",
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "description": f"At most {BODY_LIMIT}, which any valid "
                    "order fits however it is written.",
                    "content": {"application/json": {"schema": ref(OrderIn)}},
                },
                "responses": {
                    "202": _json(
                        OrderPlaced,
                        "Placed.",
                        headers={"Location": {"schema": {"type": "string"}}},
                    ),
                    "200": _json(
                        OrderPlaced, "The order placed earlier with this key."
                    ),
                    "400": _error(
                        "`invalid_json`, `validation_failed` (see `fields`), "
                        "`simulation_disabled` or `invalid_idempotency_key`."
                    ),
                    "409": _error(
                        "`idempotency_conflict`: the key was used with another body."
                    ),
                    "413": _error(f"`body_too_large`: over {BODY_LIMIT}."),
                    "415": _error("`unsupported_media_type`: not application/json."),
                    "429": _error("`rate_limited`: too many orders from this client."),
                },
            }
        },
        order: {
            "get": {
                "operationId": "getOrder",
                "summary": "The status document of an order",
                "description": "Also answers HEAD. Send the ETag back as "
                "`If-None-Match`: an unchanged order answers 304.",
                "parameters": [
                    order_id,
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json(
                        OrderStatus,
                        "The order.",
                        headers={"ETag": {"schema": {"type": "string"}}},
                    ),
                    "304": {"description": "Not modified since the ETag sent."},
                    "404": _error("`order_not_found` (or `not_found`)."),
                },
            }
        },
        order + "/retry": {
            "post": {
                "operationId": "retryOrder",
                "summary": "Retry a FAILED order (staff)",
                "description": "FAILED → PENDING with its attempts reset. Needs "
                "`orders.change_order` (the Operators group).",
                "security": STAFF_WRITE,
                "parameters": [order_id],
                "responses": {
                    "202": _json(OrderRetried, "Back in the pipeline."),
                    "403": NOT_STAFF,
                    "404": _error("`order_not_found` (or `not_found`)."),
                    "409": _error("`invalid_status`: the order is not FAILED."),
                },
            }
        },
        _path("api-delivery-complete", "code"): {
            "post": {
                "operationId": "completeDelivery",
                "summary": "Complete a delivery (staff)",
                "description": "Completing it again changes nothing. Needs "
                "`orders.change_delivery` (the Operators group).",
                "security": STAFF_WRITE,
                "parameters": [
                    {"name": "code", "in": "path", "required": True, "schema": ID}
                ],
                "responses": {
                    "200": _json(DeliveryCompleted, "Completed (now or before)."),
                    "403": NOT_STAFF,
                    "404": _error("`delivery_not_found` (or `not_found`)."),
                },
            }
        },
        _path("api-dashboard-stats"): {
            "get": {
                "operationId": "dashboardStats",
                "summary": "The dashboard's numbers (staff)",
                "description": "Needs `orders.view_order` (the Support or "
                "Operators group).",
                "security": STAFF_READ,
                "responses": {
                    "200": _json(DashboardStats, "Counts, per-minute series, rates."),
                    "403": NOT_STAFF,
                },
            }
        },
        order + "/events": {
            "get": {
                "operationId": "orderEvents",
                "summary": "SSE stream of an order's events",
                "description": "Its whole history first, then live. Each event's "
                "`data` is an Event. See docs/users/live-updates.md.",
                "parameters": [order_id, *RESUME],
                "responses": {
                    "200": _stream("OrderStreamEvent", "The stream."),
                    "400": _error("`invalid_last_event_id`."),
                    "404": _error("`order_not_found`."),
                    **STREAM_REFUSALS,
                },
            }
        },
        "/api/events": {  # routed by orderproj/asgi.py, not by Django
            "get": {
                "operationId": "allEvents",
                "summary": "SSE stream of every order's events (staff)",
                "description": "Live from the moment it opens, or from "
                "`Last-Event-ID`. Needs `orders.view_order`; a session that "
                "ends closes it with a `stream.closed` event.",
                "security": STAFF_READ,
                "parameters": RESUME,
                "responses": {
                    "200": _stream(
                        "StaffStreamEvent",
                        "The stream, live from the moment it opens.",
                    ),
                    "400": _error("`invalid_last_event_id`."),
                    "403": NOT_STAFF,
                    **STREAM_REFUSALS,
                },
            }
        },
        _path("metrics"): {
            "get": {
                "operationId": "metricsScrape",
                "summary": "Prometheus metrics (staff, or the metrics token)",
                "description": "The Prometheus text format (OpenMetrics when "
                "`Accept` asks for it), read from the database at each scrape. "
                "The session of staff holding `orders.view_order`, or "
                "`Authorization: Bearer <METRICS_TOKEN>`. "
                "See docs/operators/metrics.md.",
                "security": STAFF_OR_TOKEN,
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {
                                "schema": {"type": "string"}
                            },
                        },
                    },
                    "401": _error(
                        "`not_authenticated` (no session and no token) or "
                        "`invalid_token` (an Authorization header without the "
                        "right bearer token).",
                        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
                    ),
                    "403": _error(
                        "`forbidden`: a session, not that of a staff account "
                        "holding `orders.view_order`."
                    ),
                },
            }
        },
        _path("healthz"): {
            "get": {
                "operationId": "health",
                "summary": "Whether the database and the queue answer",
                "responses": {
                    "200": _json(Health, "Both answer."),
                    "503": _json(Health, "One of them does not."),
                },
            }
        },
    }
