from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path

from orders.api import api_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("orders.urls")),
]


def handler404(request, exception=None):
    if request.path.startswith("/api/"):
        return api_not_found(request, exception)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def handler500(request):
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "server_error", "detail": "Something went wrong on our side."},
            status=500,
        )
    from django.views.defaults import server_error

    return server_error(request)
