"""orderproj's URLs plus POST /api/bench/baseline, the minimal view `bench
placing` compares placing with (orders/bench/views.py); selected by
orders/bench/settings.py."""

from django.urls import path

from orderproj.urls import handler404, handler500  # noqa: F401
from orderproj.urls import urlpatterns as orderproj_urlpatterns
from orders.bench.views import baseline_place

urlpatterns = [
    # Ahead of orderproj's /api/ catch-all.
    path("api/bench/baseline", baseline_place),
    *orderproj_urlpatterns,
]
