"""The JSON API. Views parse input and call services; errors follow one contract,
{"error": "<code>", "detail": "<sentence>", "fields"?: {...}}, built by errors.py."""

import logging
from functools import wraps

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import translation
from django.utils.cache import patch_cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import condition

from orders import selectors
from orders.api.access import operator_required
from orders.api.errors import api_path, error_response
from orders.api.json_body import body_too_large
from orders.api.methods import allow_methods
from orders.api.shapes import MAX_BODY_BYTES
from orders.api.validation import (
    parse_order_request,
    validate_content_type,
    validate_idempotency_key,
)
from orders.exceptions import InvalidTransition, OrderInputError
from orders.permissions import CHANGE_ORDER
from orders.services import orders as services

health_logger = logging.getLogger("orders.health")


def not_found(order_id: str) -> JsonResponse:
    return error_response(404, "order_not_found", f"No order with id {order_id!r}.")


def json_errors(view):
    """Turn refused input into the JSON error contract."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except OrderInputError as exc:
            return error_response(exc.http_status, exc.error, exc.detail, exc.fields)

    return wrapper


@csrf_exempt
@json_errors
@allow_methods("POST")
def orders_collection(request: HttpRequest) -> JsonResponse:
    declared = request.META.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise body_too_large()
    validate_content_type(request.content_type, request.content_params)
    key = validate_idempotency_key(request.headers.get("Idempotency-Key"))
    # At most one byte past the limit is read: enough to tell it was exceeded.
    body = request.read(MAX_BODY_BYTES + 1)
    data = parse_order_request(
        body, simulation_enabled=settings.ORDER_SIMULATION_ENABLED
    )
    # The customer's language (LocaleMiddleware: the switch's cookie, else
    # Accept-Language): the order's mails are written in it.
    order, created = services.order_place(
        data=data, idempotency_key=key, language=translation.get_language()
    )
    body = {
        "order_id": order.order_id,
        "status": order.status,
        "amount": str(order.amount),
        "currency": order.currency,
        **selectors.order_links(order),
    }
    response = JsonResponse(body, status=202 if created else 200)
    response["Location"] = body["status_url"]
    return response


def _order_etag(request, order_id: str) -> str | None:
    # The document's words are in the reader's language: so is its tag.
    version = selectors.order_version(order_id)
    if version is None:
        return None
    return f'"{order_id}.{version}.{translation.get_language()}"'


@json_errors
@allow_methods("GET", "HEAD")
@condition(etag_func=_order_etag)
def order_detail(request: HttpRequest, order_id: str) -> JsonResponse:
    order = selectors.order_get(order_id)
    if order is None:
        return not_found(order_id)
    response = JsonResponse(selectors.order_document(order))
    # Clients poll this; they must revalidate (cheaply, with the ETag) every time.
    patch_cache_control(response, no_cache=True)
    return response


@operator_required(CHANGE_ORDER)
@json_errors
@allow_methods("POST")
def order_retry(request: HttpRequest, order_id: str) -> JsonResponse:
    order = selectors.order_get(order_id)
    if order is None:
        return not_found(order_id)
    try:
        order = services.order_retry(order=order)
    except InvalidTransition:
        return error_response(
            409,
            "invalid_status",
            f"Only a FAILED order can be retried; this one is {order.status}.",
        )
    return JsonResponse(
        {
            "order_id": order.order_id,
            "status": order.status,
            **selectors.order_links(order),
        },
        status=202,
    )


@allow_methods("GET", "HEAD")
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and queue reachable: what a load balancer needs to know. It says
    which is down and nothing more (an error's text names hosts, users and
    paths); the log has the error."""
    checks = {"database": "ok", "queue": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any failure means unhealthy
        health_logger.warning("healthz: the database is unavailable", exc_info=True)
        checks["database"] = "unavailable"
    try:
        # The process's one broker: a broker of its own would open a Redis
        # connection per request (a load balancer asks every few seconds).
        if not selectors.queue_broker().ping():
            raise ConnectionError("the broker did not answer a ping")
    except Exception:  # any failure means unhealthy
        health_logger.warning("healthz: the queue is unavailable", exc_info=True)
        checks["queue"] = "unavailable"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **checks},
        status=200 if healthy else 503,
    )


@csrf_exempt  # any method: it changes nothing, and is a 404 whoever asks
def api_not_found(request, exception=None):
    return error_response(404, "not_found", f"No API endpoint at {request.path}.")


def csrf_failure(request, reason=""):
    """CSRF refusals on the API answer in JSON like every other API error."""
    if api_path(request.path):
        return error_response(
            403, "csrf_failed", f"CSRF verification failed: {reason}."
        )
    from django.views.csrf import csrf_failure as default_csrf_failure

    return default_csrf_failure(request, reason=reason)
