"""Feeds django-eventstream the events our streams send: a thread in its web
process reads new OrderEvent rows on the wake-up of our pump on the embedded
default (orders/live/wakers.py): at once after a commit of this process
that wrote events (orders.state.notify), within ORDER_STREAM_WAL_CHECK_SECONDS of
any process's commit (the SQLite file's -wal), and every
ORDER_STREAM_POLL_SECONDS. It calls `send_event()` for the order's channel and
the staff channel, with the same JSON document as ours (orders/selectors.py,
event_document)."""

import json
import logging
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http import JsonResponse
from django_eventstream import send_event

from orders.bench.eventstream.channels import STAFF_CHANNEL, order_channel
from orders.live.wakers import sqlite_wal_path, wal_signature
from orders.models import OrderEvent
from orders.selectors import event_document
from orders.state import notify

logger = logging.getLogger(__name__)

READ_BATCH = 500


class Relay(threading.Thread):
    def __init__(self):
        super().__init__(name="eventstream-relay", daemon=True)
        self.wake = threading.Event()
        self.polls = 0
        self.queries = 0
        self.sent = 0
        self.cursor: int | None = None
        self.wal_seen: tuple[int, int] | None = None

    def run(self) -> None:
        self.queries += 1
        newest = OrderEvent.objects.order_by("-pk").values_list("pk", flat=True)
        self.cursor = newest.first() or 0
        poll = float(settings.ORDER_STREAM_POLL_SECONDS)
        notify.listen(self.wake.set)
        while True:
            self._wait(poll)
            self.wake.clear()
            self.polls += 1
            self.queries += 1
            try:
                close_old_connections()
                rows = list(
                    OrderEvent.objects.filter(pk__gt=self.cursor)
                    .select_related("order")
                    .order_by("pk")[:READ_BATCH]
                )
            except DatabaseError:
                # As our pump: the database restarting must not end the relay.
                logger.exception("relay: reading events failed; retrying")
                continue
            for event in rows:
                data = json.dumps(
                    event_document(event, event.order.order_id), separators=(",", ":")
                )
                send_event(
                    order_channel(event.order.order_id),
                    event.type,
                    data,
                    json_encode=False,
                )
                send_event(STAFF_CHANNEL, event.type, data, json_encode=False)
                self.sent += 1
                self.cursor = event.pk

    def _wait(self, poll: float) -> None:
        """Our pump's wake-up on the embedded default (orders/live/wakers.py,
        SQLiteWalWaker): this process's own commits at once, every process's
        within ORDER_STREAM_WAL_CHECK_SECONDS through the SQLite file's -wal,
        and a poll every ORDER_STREAM_POLL_SECONDS."""
        wal_path = sqlite_wal_path(settings.DATABASES["default"])
        if wal_path is None:
            self.wake.wait(poll)
            return
        every = float(settings.ORDER_STREAM_WAL_CHECK_SECONDS)
        deadline = time.monotonic() + poll
        while not self.wake.wait(min(every, max(0.0, deadline - time.monotonic()))):
            seen = wal_signature(wal_path)
            if seen != self.wal_seen:
                self.wal_seen = seen
                return
            if time.monotonic() >= deadline:
                return


_relay: Relay | None = None


def start_relay() -> None:
    global _relay
    _relay = Relay()
    _relay.start()


def relay_stats(request) -> JsonResponse:
    """The relay's counters, as GET /api/streams gives our pump's."""
    return JsonResponse(
        {
            "polls": _relay.polls,
            "queries": _relay.queries,
            "delivered": _relay.sent,
            "cursor": _relay.cursor,
            "relay_alive": _relay.is_alive(),
        }
    )
