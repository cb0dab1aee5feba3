"""orderproj's settings, plus django-eventstream (bench only)."""

from orderproj.settings import *  # noqa: F403
from orderproj.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_eventstream"]
ROOT_URLCONF = "orders.bench.eventstream.urls"
ASGI_APPLICATION = "orders.bench.eventstream.asgi.application"
# Who may read which channel: the staff channel is for staff, as /api/events is.
EVENTSTREAM_CHANNELMANAGER_CLASS = "orders.bench.eventstream.channels.OrderChannels"
