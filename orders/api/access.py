"""Who may use the operators' endpoints: an active staff account holding the
model permission that the Django admin asks for the same action
(orders/permissions.py). One judgement for the staff JSON views, /metrics and
the dashboard page, so a group set up in the admin means the same everywhere
(docs/operators/roles.md)."""

from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from orders.api.errors import error_response
from orders.permissions import roles_holding


def operator_refusal(user, permission: str) -> tuple[str, str] | None:
    """None when `user` may take the action `permission` guards; otherwise the
    403's error code and sentence: "not_authenticated" without a login,
    "forbidden" for an account that is not staff or lacks the permission.
    (Inactive accounts never get here: Django's session ends with them.)"""
    if not user.is_authenticated:
        return "not_authenticated", "Log in with a staff account (/admin/login/)."
    if not user.is_staff:
        return "forbidden", "This is for staff accounts only."
    if not user.has_perm(permission):
        return "forbidden", missing_permission(permission)
    return None


def missing_permission(permission: str) -> str:
    groups = " or ".join(f"the {name} group" for name in roles_holding(permission))
    given = f" ({groups} gives it)" if groups else ""
    return f"This account lacks the permission {permission}{given}."


def operator_required(permission: str):
    """A staff JSON endpoint: the session's account is judged by
    `operator_refusal` (a session cannot answer a 401's WWW-Authenticate
    challenge, so a missing login is a 403 too), then the CSRF check (after
    the account, so an anonymous caller learns that it must log in rather than
    that a token is missing)."""

    def decorate(view):
        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            refusal = operator_refusal(request.user, permission)
            if refusal is not None:
                return error_response(403, *refusal)
            refusal = _csrf_refusal(request)
            if refusal is not None:
                return refusal
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def operator_page(permission: str):
    """A staff page: anonymous and non-staff visitors are sent to the admin's
    login, as the admin does; staff without `permission` get the 403 page."""

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.has_perm(permission):
                raise PermissionDenied(missing_permission(permission))
            return view(request, *args, **kwargs)

        return staff_member_required(wrapper)

    return decorate


def _csrf_refusal(request):
    check = CsrfViewMiddleware(lambda _request: None)
    check.process_request(request)
    return check.process_view(request, None, (), {})
