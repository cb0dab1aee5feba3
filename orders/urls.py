from django.urls import path

from . import api, views

urlpatterns = [
    path("api/orders", api.orders_collection, name="api-orders"),
    path("api/orders/<str:order_id>", api.order_detail, name="api-order"),
    path("api/orders/<str:order_id>/retry", api.order_retry, name="api-order-retry"),
    path("orders/<str:order_id>", views.order_page, name="order-page"),
    path("healthz", api.healthz, name="healthz"),
]

# The delivery scenario (issue 4).
from . import api_deliveries  # noqa: E402 - kept apart from the routes above

urlpatterns += [
    path(
        "api/deliveries/<str:code>/complete",
        api_deliveries.delivery_complete,
        name="api-delivery-complete",
    ),
]

# Pages and the dashboard's numbers (issue 3). The SSE streams are not Django
# views: orderproj/asgi.py routes them to orders/streams.py.
urlpatterns += [
    path("", views.storefront, name="storefront"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("api/dashboard/stats", views.dashboard_stats, name="api-dashboard-stats"),
]
