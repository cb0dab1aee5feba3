"""Telling the web processes that events were committed, so their stream pumps
read at once instead of at their next poll.

The writer's side of the streams' wake-up, kept with the writes: the workers
import it, and it imports nothing of orders.live (the web process's side,
orders/live/wakers.py, listens).

- With a channels layer (REDIS_URL set): one message to the group
  EVENTS_GROUP per committed transaction that wrote events, however many
  events it wrote and however many clients are connected (fewer in a burst:
  commits made while a send is under way share the next one, see _Sender). The
  message only says "read": the pump reads what is new from the table, so a
  lost message costs at most the slow poll (ORDER_STREAM_PUSH_FALLBACK_SECONDS),
  never an event.
- In this process: the callbacks registered with `listen()`. Without a layer,
  the web process's own pump listens, so an order placed through the API shows
  at once on that process's streams.

The send happens on one background event loop thread per process: from the
workers' sync code, async_to_sync(layer.group_send) per write would make a new
event loop and, with channels_redis, a new Redis connection pool per call.
"""

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction

logger = logging.getLogger(__name__)

# The channels-layer group every web process's waker joins.
EVENTS_GROUP = "orderproj.events"
# The message: the consumer only wakes up, the content is never read.
MESSAGE = {"type": "events.committed"}
# A send costs its process more CPU than the commit it announces, and a worker
# commits about three times per order: at most one send per gap bounds that
# cost, for at most this much more latency (docs/benchmarks/results.md).
SEND_GAP_SECONDS = 0.025
# While sends fail, at most one log line this often says how many did.
FAILURE_REPORT_SECONDS = 10.0

_listeners: list[Callable[[], None]] = []
_listeners_lock = threading.Lock()


def events_written(using: str = DEFAULT_DB_ALIAS) -> None:
    """Call after writing OrderEvent rows on the connection `using`: once the
    transaction commits, the listeners and the web processes hear of it, once
    per transaction. Nothing is sent for a transaction that rolls back."""
    if not _listeners and not settings.CHANNEL_LAYERS:
        return
    connection = connections[using]
    shared = None
    if connection.in_atomic_block:
        # A notice registered where every savepoint that could discard it
        # also discards this write covers it. One registered in a savepoint
        # released since does not (rolling back the enclosing savepoint drops
        # it): the new one shares its flag, so the commit still sends once.
        current = set(connection.savepoint_ids)
        for savepoints, callback, _robust in connection.run_on_commit:
            if isinstance(callback, _Notice):
                if savepoints <= current:
                    return
                shared = callback.shared
    transaction.on_commit(_Notice(shared), using=using)


class _Notice:
    """The on-commit callback: sends once for all the notices of one commit."""

    __slots__ = ("shared",)

    def __init__(self, shared: list[bool] | None = None):
        self.shared = shared if shared is not None else [False]

    def __call__(self) -> None:
        if self.shared[0]:
            return
        self.shared[0] = True
        publish()


def publish() -> None:
    """Tell the listeners in this process and, through the channels layer, every
    web process, that new events are committed. Does not wait for the send."""
    for listener in list(_listeners):
        listener()
    if settings.CHANNEL_LAYERS:
        _sender().send()


def listen(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` (from the writing thread; it must be quick and thread-safe)
    after each commit that wrote events in this process. Returns the function
    that stops it."""
    with _listeners_lock:
        _listeners.append(callback)

    def stop() -> None:
        with _listeners_lock:
            if callback in _listeners:
                _listeners.remove(callback)

    return stop


class _Sender:
    """One event loop thread per process that sends the layer's messages.

    A commit after a quiet spell is sent at once. Sends start at least
    SEND_GAP_SECONDS apart: the commits of the gap after a send share the next
    one, sent when the gap ends. Every commit is still followed by a message
    sent after it, which is all a pump needs to read it; a burst costs a send
    per gap, not one per commit, and one Redis connection."""

    def __init__(self, layer=None):
        self.pid = os.getpid()
        if layer is None:
            from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers

            # Its own instance: its Redis connections belong to this loop.
            layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.layer = layer
        self.sent = 0
        self._lock = threading.Lock()
        self._in_flight = False
        self._again = False
        self._failures = 0
        self._reported_at: float | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="orders-notify", daemon=True
        )
        self.thread.start()

    def send(self) -> None:
        """Ask for a message after this moment; returns at once."""
        with self._lock:
            if self._in_flight:
                self._again = True
                return
            self._in_flight = True
        asyncio.run_coroutine_threadsafe(self._send(), self.loop)

    async def _send(self) -> None:
        while True:
            with self._lock:
                self._again = False
            started = self.loop.time()
            try:
                await self.layer.group_send(EVENTS_GROUP, dict(MESSAGE))
                self.sent += 1
            except Exception as error:  # noqa: BLE001 - logged, with its traceback
                self._report(error)
            await asyncio.sleep(started + SEND_GAP_SECONDS - self.loop.time())
            with self._lock:
                if not self._again:
                    self._in_flight = False
                    return

    def _report(self, error: Exception) -> None:
        # Redis down: the streams still get the events, at the poll rate. Every
        # failure is counted; the log gets one line per FAILURE_REPORT_SECONDS.
        self._failures += 1
        now = time.monotonic()
        if (
            self._reported_at is not None
            and now - self._reported_at < FAILURE_REPORT_SECONDS
        ):
            return
        logger.error(
            "could not tell the web processes about new events (%s failed "
            "sends since the last report; they poll meanwhile)",
            self._failures,
            exc_info=error,
        )
        self._failures = 0
        self._reported_at = now


_sender_instance: _Sender | None = None
_sender_lock = threading.Lock()


def _forget_sender_in_child() -> None:
    # A lock another thread held at the fork stays held in the child.
    global _sender_instance, _sender_lock
    _sender_instance = None
    _sender_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_sender_in_child)


def _sender() -> _Sender:
    """This process's sender, made at first use and again in a forked child
    (django-q2 forks its workers; a thread does not survive a fork)."""
    global _sender_instance
    sender = _sender_instance
    if sender is None or sender.pid != os.getpid():
        with _sender_lock:
            sender = _sender_instance
            if sender is None or sender.pid != os.getpid():
                sender = _sender_instance = _Sender()
    return sender
