"""GET /metrics: the Prometheus scrape (orders/operations/metrics.py), for the
sessions of staff who may view orders and for Prometheus itself with
`Authorization: Bearer <METRICS_TOKEN>`."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client.exposition import choose_encoder

from orders.api.access import operator_refusal
from orders.api.errors import error_response
from orders.api.methods import allow_methods
from orders.api.views import json_errors
from orders.operations import metrics
from orders.permissions import VIEW_OPERATIONS

# The 401's challenge: a bearer token answers it.
CHALLENGE = 'Bearer realm="metrics"'


@json_errors
@allow_methods("GET")
def metrics_scrape(request: HttpRequest) -> HttpResponse:
    refusal = metrics_refusal(request)
    if refusal is not None:
        return refusal
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(metrics.registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


def metrics_refusal(request: HttpRequest) -> JsonResponse | None:
    """None when the caller may read the metrics, else the refusal.

    A request with an Authorization header is judged by it alone: the right
    bearer token passes, anything else is a 401 (a session does not rescue a
    wrong token, so a misconfigured scraper is told so). Without one, the
    session of staff holding VIEW_OPERATIONS passes, another session is a 403
    (access.operator_refusal), no session a 401 that asks for the token. No
    CSRF check: GET changes nothing.
    """
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        if bearer_token_matches(authorization, settings.METRICS_TOKEN):
            return None
        return _unauthorized(
            "invalid_token",
            "The Authorization header does not carry the metrics token "
            "(Bearer <METRICS_TOKEN>).",
            'Bearer realm="metrics", error="invalid_token"',
        )
    if not request.user.is_authenticated:
        return _unauthorized(
            "not_authenticated",
            "Send Authorization: Bearer <METRICS_TOKEN>, or log in as staff.",
            CHALLENGE,
        )
    refusal = operator_refusal(request.user, VIEW_OPERATIONS)
    if refusal is not None:
        return error_response(403, *refusal)
    return None


def bearer_token_matches(authorization: str, token: str) -> bool:
    """`Bearer <token>` with the configured token, compared in constant time;
    never true while METRICS_TOKEN is unset."""
    scheme, _, presented = authorization.partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _unauthorized(error: str, detail: str, challenge: str) -> JsonResponse:
    response = error_response(401, error, detail)
    response["WWW-Authenticate"] = challenge
    return response
