"""The OpenAPI 3.1 document of the HTTP API (GET /api/openapi.json, /api/docs).

The request schema is the model that validates the body (validation.OrderIn);
the response models (orders/api/schemas.py) describe what the views send, and
tests hold every real response to them (tests/test_openapi.py,
tests/e2e/test_api_fuzz.py). The operations table is written out here: the views
stay plain Django views, which keep the contracts of docs/users/api.md (errors,
idempotency, ETag/304, 413, staff rules) as they are.
"""

from functools import cache
from urllib.parse import unquote

from django.urls import reverse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from orders.api import validation
from orders.api.schemas import (
    DashboardStats,
    DeliveryCompleted,
    Error,
    Event,
    Health,
    OrderPlaced,
    OrderRetried,
    OrderStatus,
)

REQUEST_MODELS = [validation.OrderIn]
RESPONSE_MODELS = [
    Error,
    OrderPlaced,
    OrderStatus,
    OrderRetried,
    DeliveryCompleted,
    DashboardStats,
    Health,
]

STAFF = [{"session": [], "csrf": []}]
STAFF_READ = [{"session": []}]


def _ref(model: type[BaseModel]) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str, **extra) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(model)}},
        **extra,
    }


def _error(description: str, **extra) -> dict:
    return _json(Error, description, **extra)


def _path(name: str, placeholder: str | None = None) -> str:
    args = [f"{{{placeholder}}}"] if placeholder else []
    return unquote(reverse(name, args=args))


ID = {"type": "string", "minLength": 1, "maxLength": 40}
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


def _operations() -> dict:
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
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "1 to 255 printable characters; white "
                        "space around it is ignored.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": validation.MAX_IDEMPOTENCY_KEY_LENGTH,
                        },
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref(validation.OrderIn)}
                    },
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
                    "413": _error("`body_too_large`: over 64 KiB."),
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
                "security": STAFF,
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
                "security": STAFF,
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
                "description": "Its whole history first, then live. Resume with "
                "`Last-Event-ID` (or `?lastEventId=`). Each event's `data` is an "
                "Event. See docs/users/live-updates.md.",
                "parameters": [order_id],
                "responses": {
                    "200": {
                        "description": "The stream.",
                        "content": {"text/event-stream": {"schema": _ref(Event)}},
                    },
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
                "security": STAFF_READ,
                "responses": {
                    "200": {
                        "description": "The stream, live from the moment it opens.",
                        "content": {"text/event-stream": {"schema": _ref(Event)}},
                    },
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
                "security": [{"session": []}, {"metricsToken": []}],
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


def openapi_document() -> dict:
    """The document as this server enforces it: the longest `simulate.delay_ms`
    follows its ORDER_LEASE_SECONDS (validation.delay_limit_ms)."""
    return _document(validation.delay_limit_ms())


@cache
def _document(delay_limit_ms: int) -> dict:
    """Built once per process and limit: the rest depends on code, not on
    settings or data."""
    models = [(model, "validation") for model in REQUEST_MODELS] + [
        (model, "serialization") for model in RESPONSE_MODELS
    ]
    _, definitions = models_json_schema(
        models, ref_template="#/components/schemas/{model}"
    )
    delay = definitions["$defs"]["SimulateIn"]["properties"]["delay_ms"]
    delay["maximum"] = delay_limit_ms
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orderproj",
            "version": "1",
            "description": "Place orders and follow them. Every error is JSON: "
            '`{"error": "<code>", "detail": "<sentence>", "fields": {…}}`, and a '
            "refused request writes nothing. Input limits: docs/users/api.md.",
        },
        "paths": _operations(),
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "sessionid",
                    "description": "A staff account's session (log in at "
                    "/admin/login/), holding the permission the operation "
                    "names (docs/operators/roles.md).",
                },
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The METRICS_TOKEN setting's value (GET "
                    "/metrics only).",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": "The csrftoken cookie's value, for POSTs.",
                },
            },
        },
    }
