from django.contrib import admin
from django.urls import include, path

from orders.api.errors import error_response
from orders.api.views import api_not_found

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
        return error_response(500, "server_error", "Something went wrong on our side.")
    from django.views.defaults import server_error

    return server_error(request)
