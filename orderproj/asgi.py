"""ASGI entry point: `daphne orderproj.asgi:application`.

The SSE streams are plain ASGI endpoints routed before Django (see
orders/live/__init__.py for why); every other request goes to Django.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orderproj.settings")

# Sets Django up, so it comes before anything that imports models. Whoever
# starts daphne says it is the web process (ORDERPROJ_PROCESS=web: the
# Procfile, orders/workers/processes.py), which gives it a pool of PostgreSQL
# connections shared by the request threads (orderproj/settings/database.py).
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.db import connections  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from orders.live.asgi import order_events, staff_events, stream_stats  # noqa: E402
from orders.live.caps import raise_file_limit  # noqa: E402
from orders.live.gc_freeze import frozen_survivors  # noqa: E402

# Each open stream holds a file descriptor: the process takes all the hard
# limit allows, and says how many streams that makes (orders/live/caps.py).
raise_file_limit()


def close_request_connections(**kwargs) -> None:
    """No connection outlives its request here. Django runs each request in a
    thread of its own (ThreadSensitiveContext), so a persistent connection
    (CONN_MAX_AGE) is never reused, and the finished threads' connections stayed
    open until garbage collection: on SQLite, 68 open after 200 requests at
    concurrency 10. This runs in the request's thread as its response closes. On
    PostgreSQL the connection goes back to the pool. The streams' database work
    is not a Django request and keeps its connection. A connection inside a
    transaction is left alone: only a test's (a request never ends in one)."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


request_finished.connect(close_request_connections)

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

# Everything loaded so far (Django, the apps, the URL patterns) lives as long as
# the process: frozen, out of the collector's sight, and so are the survivors of
# every later full collection (orders/live/gc_freeze.py), so a full collection
# does not walk every open stream's objects, a stop of every stream
# (docs/decisions/0005-freezing-gc-survivors.md).
frozen_survivors.install()
