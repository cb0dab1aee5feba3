"""The relay thread of each qcluster: hands new events to their subscribers
(orders/services/relay.py) and sends the webhook messages that are due, on a
pool of threads of its own.

Webhook requests are not django-q2 tasks: a receiver that hangs would hold a
worker for the whole timeout, and with it the orders waiting for that worker.
Here a request holds one of WEBHOOK_SENDER_THREADS threads, and an endpoint at
most WEBHOOK_ENDPOINT_CONCURRENCY of them, so a slow or dead endpoint delays
neither the orders, the streams nor the other endpoints. The database is the
truth: nothing is queued in memory beyond what the pool is sending, and a
message whose sender dies is taken back when its claim expires
(docs/decisions/0014-webhooks-sent-beside-the-workers.md).
"""

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections, connection

from orders.services.failures import record_failure
from orders.services.relay import events_relay, subscribers_trim
from orders.services.webhook_delivery import (
    Outgoing,
    webhook_endpoints_due,
    webhook_message_send,
    webhook_messages_claim,
    webhook_messages_expire,
    webhook_messages_wake,
)

logger = logging.getLogger(__name__)

# How often the slower look-ups run: expired claims, stranded messages.
HOUSEKEEPING_SECONDS = 5.0
# How often finished messages and calls past the retention are deleted.
TRIM_EVERY_SECONDS = 3600


class WebhookSender:
    """The pool and what it is sending now, by endpoint."""

    def __init__(self, *, threads: int | None = None, per_endpoint: int | None = None):
        self.threads = threads or settings.WEBHOOK_SENDER_THREADS
        self.per_endpoint = per_endpoint or settings.WEBHOOK_ENDPOINT_CONCURRENCY
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._in_flight: Counter[int] = Counter()
        # Set when a request ends: its thread is free for the next message
        # at once, not at the next relay pass.
        self.freed = threading.Event()

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    def send_due(self) -> int:
        """Claim what the free threads can send now, endpoint by endpoint, and
        hand it to the pool. Returns how many were handed over."""
        handed = 0
        for endpoint_id in webhook_endpoints_due():
            with self._lock:
                free = self.threads - sum(self._in_flight.values())
                room = min(free, self.per_endpoint - self._in_flight[endpoint_id])
            if free <= 0:
                break
            for outgoing in webhook_messages_claim(endpoint_id=endpoint_id, limit=room):
                with self._lock:
                    self._in_flight[endpoint_id] += 1
                self.pool.submit(self._send, outgoing)
                handed += 1
        return handed

    def _send(self, outgoing: Outgoing) -> None:
        try:
            webhook_message_send(outgoing)
        except Exception as error:  # noqa: BLE001 - recorded; the claim expires
            record_failure(
                task="orders.workers.relay.send",
                args=[outgoing.msg_id],
                error=error,
            )
            close_old_connections()
        finally:
            with self._lock:
                self._in_flight[outgoing.endpoint_pk] -= 1
                if self._in_flight[outgoing.endpoint_pk] <= 0:
                    del self._in_flight[outgoing.endpoint_pk]
            self.freed.set()

    def shutdown(self) -> None:
        """Wait for the requests under way (each ends within its timeout)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def relay_once(*, housekeeping: bool, trim: bool = False) -> None:
    events_relay()
    if housekeeping:
        webhook_messages_expire()
        webhook_messages_wake()
    if trim:
        trimmed = subscribers_trim()
        if trimmed:
            logger.info("trimmed %d old webhook message(s) and call(s)", trimmed)


def run_relay(stop: threading.Event, *, interval: float | None = None) -> None:
    """Relay every `interval` seconds until `stop` is set, and send what is due
    then and whenever a sender thread comes free (a burst is sent at the pace
    of the receivers, not at a claim per endpoint per pass)."""
    interval = interval or settings.ORDER_DISPATCH_INTERVAL_SECONDS
    sender = WebhookSender()
    logger.info("relay started (every %.2f s, %d senders)", interval, sender.threads)
    next_pass = next_housekeeping = next_trim = time.monotonic()
    try:
        while not stop.is_set():
            try:
                if time.monotonic() >= next_pass:
                    housekeeping = time.monotonic() >= next_housekeeping
                    if housekeeping:
                        next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
                    trim = time.monotonic() >= next_trim
                    if trim:
                        next_trim = time.monotonic() + TRIM_EVERY_SECONDS
                    next_pass = time.monotonic() + interval
                    relay_once(housekeeping=housekeeping, trim=trim)
                sender.freed.clear()
                sender.send_due()
            except Exception:
                logger.exception("relay pass failed; trying again")
                close_old_connections()
            sender.freed.wait(max(0.0, next_pass - time.monotonic()))
    finally:
        sender.shutdown()
        connection.close()
        logger.info("relay stopped")
