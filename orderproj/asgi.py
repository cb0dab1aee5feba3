"""ASGI entry point: `daphne orderproj.asgi:application`.

The SSE streams are plain ASGI endpoints routed before Django (see
orders/streams/__init__.py for why); every other request goes to Django.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderproj.settings")
# This is the web process: a pool of PostgreSQL connections shared by the
# request threads (see DATABASE_POOL in settings.py).
os.environ.setdefault("DATABASE_POOL", "1")

# Sets Django up, so it comes before anything that imports models.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from orders.streams.asgi import order_events, staff_events, stream_stats  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("api/orders/<str:order_id>/events", order_events),
                path("api/events", staff_events),
                path("api/streams", stream_stats),
                re_path(r"", django_application),
            ]
        ),
    }
)
