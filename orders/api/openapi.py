"""The OpenAPI 3.1 document of the HTTP API (GET /api/openapi.json, /api/docs).

It says exactly what the running server does, so that a client generated from it
sends nothing the server refuses for its shape and a fuzzer finds nothing
(tests/e2e/test_api_fuzz.py runs schemathesis with every check):

- the request schema is the model that validates the body (validation.OrderIn),
  built from the shapes of orders/api/shapes.py, as are the parameters;
- what depends on this server's settings is read from them at each request: the
  longest simulated delay, whether `simulate` is taken at all, the cookies'
  names;
- the response models (orders/api/schemas.py) describe what the views send, and
  tests hold every real response to them (tests/test_openapi.py);
- the operations are written out in openapi_paths.py, the streams' events in
  openapi_streams.py.
"""

from functools import cache
from typing import NamedTuple

from django.conf import settings
from pydantic.json_schema import models_json_schema

from orders.api import validation
from orders.api.openapi_paths import operations
from orders.api.openapi_streams import stream_schemas
from orders.api.schemas import (
    DashboardStats,
    DeliveryCompleted,
    Error,
    Event,
    Health,
    OrderPlaced,
    OrderRetried,
    OrderStatus,
    StreamClosed,
    StreamReset,
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
    Event,
    StreamReset,
    StreamClosed,
]


class ServerFacts(NamedTuple):
    """What the document takes from this server's settings."""

    delay_limit_ms: int
    simulation_enabled: bool
    session_cookie: str
    csrf_cookie: str


def openapi_document() -> dict:
    """The document as this server enforces it now."""
    return _document(
        ServerFacts(
            delay_limit_ms=validation.delay_limit_ms(),
            simulation_enabled=bool(settings.ORDER_SIMULATION_ENABLED),
            session_cookie=settings.SESSION_COOKIE_NAME,
            csrf_cookie=settings.CSRF_COOKIE_NAME,
        )
    )


@cache
def _document(facts: ServerFacts) -> dict:
    """Built once per process and set of facts: the rest depends on code, not
    on settings or data."""
    models = [(model, "validation") for model in REQUEST_MODELS] + [
        (model, "serialization") for model in RESPONSE_MODELS
    ]
    _, definitions = models_json_schema(
        models, ref_template="#/components/schemas/{model}"
    )
    schemas = definitions["$defs"]
    schemas["SimulateIn"]["properties"]["delay_ms"]["maximum"] = facts.delay_limit_ms
    if not facts.simulation_enabled:
        # `simulate` is refused unless null (validation.parse_order_request).
        schemas["OrderIn"]["properties"]["simulate"] = {
            "type": "null",
            "description": validation.SIMULATION_DISABLED,
        }
        del schemas["SimulateIn"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orderproj",
            "version": "1",
            "description": "Place orders and follow them. Every error is JSON: "
            '`{"error": "<code>", "detail": "<sentence>", "fields": {…}}`, and a '
            "refused request writes nothing. A method a path does not list is a "
            "405 with `Allow`. Input limits: docs/users/api.md.",
        },
        "paths": operations(),
        "components": {
            "schemas": {**schemas, **stream_schemas()},
            "securitySchemes": security_schemes(facts),
        },
    }


def security_schemes(facts: ServerFacts) -> dict:
    return {
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": facts.session_cookie,
            "description": "A staff account's session (log in at /admin/login/), "
            "holding the permission the operation names "
            "(docs/operators/roles.md).",
        },
        "csrfCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": facts.csrf_cookie,
            "description": "Django's CSRF cookie, set with the session; a POST "
            "sends it back beside the same value in `X-CSRFToken`.",
        },
        "csrf": {
            "type": "apiKey",
            "in": "header",
            # Django's CSRF_HEADER_NAME (HTTP_X_CSRFTOKEN) as a client writes it.
            "name": "X-CSRFToken",
            "description": "The CSRF cookie's value, for a POST of staff.",
        },
        "metricsToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "The METRICS_TOKEN setting's value (GET /metrics only).",
        },
    }
