"""The project's URLs plus a view that raises: for tests of what a 500 does.
Used only through @pytest.mark.urls; production never routes it."""

from django.urls import path

from orderproj.urls import handler404, handler500
from orderproj.urls import urlpatterns as project_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


def crash(request, order_id):
    raise RuntimeError(f"a bug in a view, for {order_id}")


urlpatterns = [
    *project_urlpatterns,
    path("test/crash/<str:order_id>", crash, name="test-crash"),
    path("test/crash-too/<str:order_id>", crash, name="test-crash-too"),
]
