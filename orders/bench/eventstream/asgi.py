"""`daphne orders.bench.eventstream.asgi:application`: the plain Django ASGI
application (django-eventstream's documented deployment) and the relay that
feeds it our events."""

import os

from django.core.asgi import get_asgi_application

os.environ["DJANGO_SETTINGS_MODULE"] = "orders.bench.eventstream.settings"
# As orderproj/asgi.py: the web process shares a pool of PostgreSQL connections.
os.environ.setdefault("DATABASE_POOL", "1")

application = get_asgi_application()

from django.core.signals import request_finished  # noqa: E402

from orderproj.asgi import close_request_connections  # noqa: E402
from orders.bench.eventstream.relay import start_relay  # noqa: E402

# The same connection handling as orderproj's web process (orderproj/asgi.py).
request_finished.connect(close_request_connections)
start_relay()
