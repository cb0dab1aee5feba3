from django.conf import settings
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from . import api, api_deliveries, views

# The SSE streams are not Django views: orderproj/asgi.py routes them to
# orders/streams.py ahead of Django.
urlpatterns = [
    path("", views.storefront, name="storefront"),
    path("orders/<str:order_id>", views.order_page, name="order-page"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("api/orders", api.orders_collection, name="api-orders"),
    path("api/orders/<str:order_id>", api.order_detail, name="api-order"),
    path("api/orders/<str:order_id>/retry", api.order_retry, name="api-order-retry"),
    path(
        "api/deliveries/<str:code>/complete",
        api_deliveries.delivery_complete,
        name="api-delivery-complete",
    ),
    path("api/dashboard/stats", views.dashboard_stats, name="api-dashboard-stats"),
    path("healthz", api.healthz, name="healthz"),
    # Browsers ask for it on every page, the admin's included.
    path("favicon.ico", RedirectView.as_view(url=static("orders/favicon.svg"))),
]

if settings.ORDER_BENCH_BASELINE:
    from .bench.views import baseline_place

    urlpatterns.append(path("api/bench/baseline", baseline_place))
