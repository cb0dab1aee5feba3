"""Which methods each API endpoint takes, declared once beside it, and the
answer to any other: a 405 with `Allow`, in the error shape.

Django views declare theirs with `allow_methods`; the DeclaredMethods
middleware (orders/api/middleware.py), ahead of CsrfViewMiddleware, answers an
undeclared method before the CSRF check or the login is looked at, so
`QUERY /api/orders/<id>` is a 405 and not a `csrf_failed` 403 (and on /healthz
not Django's HTML 403 page). The streams, ASGI endpoints outside Django, ask
`send_refusal` the same question.
OPTIONS, the standard way to ask which methods a URL takes, is answered 204
with `Allow` everywhere (docs/users/api.md, "Methods").
"""

from functools import wraps

from django.http import HttpResponse

from orders.api.errors import error_response, send_error

OPTIONS = "OPTIONS"


def allow_header(allowed: tuple[str, ...]) -> str:
    return ", ".join([*allowed, OPTIONS])


def _refusal_detail(method: str, allowed: tuple[str, ...]) -> str:
    return f"{method} is not allowed here; use {' or '.join(allowed)}."


def answer(method: str, allowed: tuple[str, ...]) -> HttpResponse | None:
    """None when `method` is one of `allowed`; else the 204 to OPTIONS or the
    405."""
    if method in allowed:
        return None
    if method == OPTIONS:
        response = HttpResponse(status=204)
    else:
        response = error_response(
            405, "method_not_allowed", _refusal_detail(method, allowed)
        )
    response["Allow"] = allow_header(allowed)
    return response


def allow_methods(*allowed: str):
    """Django's require_http_methods, with the list kept on the view
    (`allowed_methods`, carried outward by every functools.wraps above it) for
    DeclaredMethods to read, and the answers of `answer`."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            refusal = answer(request.method, allowed)
            if refusal is not None:
                return refusal
            return view(request, *args, **kwargs)

        wrapper.allowed_methods = allowed
        return wrapper

    return decorate


async def send_refusal(scope, send, allowed: tuple[str, ...]) -> bool:
    """For an ASGI endpoint: answer an undeclared method (True) as `answer`
    does, or leave the request to the endpoint (False)."""
    method = scope["method"]
    if method in allowed:
        return False
    allow = (b"allow", allow_header(allowed).encode())
    if method == OPTIONS:
        await send({"type": "http.response.start", "status": 204, "headers": [allow]})
        await send({"type": "http.response.body", "body": b""})
        return True
    detail = _refusal_detail(method, allowed)
    await send_error(send, 405, "method_not_allowed", detail, [allow])
    return True
