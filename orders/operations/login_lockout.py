"""The page a locked-out login gets (django-axes' AXES_LOCKOUT_CALLABLE): in the
console's look, saying why and for how long, with a 429 and Retry-After."""

from django.conf import settings
from django.contrib import admin
from django.shortcuts import render


def login_locked_out(request, original_response=None, credentials=None):
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    # Rendered now: the middleware that calls this runs after responses render.
    response = render(
        request,
        "admin/login_locked_out.html",
        {
            **admin.site.each_context(request),
            "title": "Too many failed logins",
            "failure_limit": settings.LOGIN_FAILURE_LIMIT,
            "minutes": f"{minutes:g}",
        },
        status=429,
    )
    # Each further try while locked out starts the wait again.
    response["Retry-After"] = str(int(minutes * 60))
    return response
