from django.urls import path

from . import api, views

urlpatterns = [
    path("api/orders", api.orders_collection, name="api-orders"),
    path("api/orders/<str:order_id>", api.order_detail, name="api-order"),
    path("api/orders/<str:order_id>/retry", api.order_retry, name="api-order-retry"),
    path("orders/<str:order_id>", views.order_page, name="order-page"),
    path("healthz", api.healthz, name="healthz"),
]
