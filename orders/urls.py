from django.templatetags.static import static
from django.urls import path, re_path, register_converter
from django.views.generic import RedirectView
from django.views.i18n import set_language

from orders.api import deliveries as api_deliveries
from orders.api import docs as api_docs
from orders.api import metrics as api_metrics
from orders.api import views as api
from orders.pages import views


class PublicIdConverter:
    """An order id or delivery code as a URL segment: at most 40 characters (the
    column's length) and no control characters, so a lookup never sends the
    database what it refuses (PostgreSQL: a NUL in text). Anything else is a
    404 before any view runs."""

    regex = r"[^/\x00-\x1f\x7f]{1,40}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(PublicIdConverter, "public_id")

# The SSE streams are not Django views: orderproj/asgi.py routes them to
# orders/live/asgi.py ahead of Django.
urlpatterns = [
    path("", views.storefront, name="storefront"),
    path("orders/<public_id:order_id>", views.order_page, name="order-page"),
    path("dashboard/", views.dashboard, name="dashboard"),
    # The language switch on the pages (a form; it sets the language cookie).
    path("i18n/setlang/", set_language, name="set_language"),
    path("api/openapi.json", api_docs.openapi_json, name="api-openapi"),
    path("api/docs", api_docs.api_docs, name="api-docs"),
    path("api/orders", api.orders_collection, name="api-orders"),
    path("api/orders/<public_id:order_id>", api.order_detail, name="api-order"),
    path(
        "api/orders/<public_id:order_id>/retry", api.order_retry, name="api-order-retry"
    ),
    path(
        "api/deliveries/<public_id:code>/complete",
        api_deliveries.delivery_complete,
        name="api-delivery-complete",
    ),
    path("api/dashboard/stats", views.dashboard_stats, name="api-dashboard-stats"),
    path("healthz", api.healthz, name="healthz"),
    path("metrics", api_metrics.metrics_scrape, name="metrics"),
    # Any other /api/ URL: a JSON 404 (handler404 is not used while DEBUG is on).
    re_path(r"^api/", api.api_not_found, name="api-not-found"),
    # Browsers ask for it on every page, the admin's included.
    path("favicon.ico", RedirectView.as_view(url=static("orders/favicon.svg"))),
]
