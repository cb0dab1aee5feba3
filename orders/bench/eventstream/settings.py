"""orderproj's settings, plus django-eventstream (bench only)."""

import os

from orderproj.settings import *  # noqa: F403
from orderproj.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "django_eventstream"]
ROOT_URLCONF = "orders.bench.eventstream.urls"
ASGI_APPLICATION = "orders.bench.eventstream.asgi.application"
# Who may read which channel: the staff channel is for staff, as /api/events is.
EVENTSTREAM_CHANNELMANAGER_CLASS = "orders.bench.eventstream.channels.OrderChannels"
# EVENTSTREAM_STORAGE=1: its documented persistence (a row per event and
# channel), which a listener that falls more than 10 events behind needs so as
# not to lose events, and Last-Event-ID needs to resume.
if os.environ.get("EVENTSTREAM_STORAGE") == "1":
    EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"
