"""Our streams' URLs, served by django-eventstream; everything else is
orderproj's (the admin's login form, the retry endpoint the bench uses)."""

import django_eventstream
from django.urls import include, path

from orderproj.urls import handler404, handler500  # noqa: F401
from orderproj.urls import urlpatterns as orderproj_urlpatterns
from orders.bench.eventstream import relay
from orders.bench.eventstream.channels import STAFF_CHANNEL

urlpatterns = [
    path(
        "api/orders/<str:order_id>/events",
        include(django_eventstream.urls),
        {"format-channels": ["order-{order_id}"]},
    ),
    path("api/events", include(django_eventstream.urls), {"channels": [STAFF_CHANNEL]}),
    path("bench/relay", relay.relay_stats),
    *orderproj_urlpatterns,
]
