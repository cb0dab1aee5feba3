"""The event pump: one per process (per event loop), it reads every new event in
one query per wake-up and hands each to the subscribers that want it. How ids stay
contiguous: orders/live/__init__.py."""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from orders.live import threads
from orders.live.events import StreamEvent, read_after, read_high_water
from orders.live.wakers import make_waker

logger = logging.getLogger(__name__)

# A subscriber that falls this far behind is cut off; its client reconnects with
# its last id and catches up from the table.
QUEUE_LIMIT = 2000
# A pump with no subscribers for this long stops polling until the next one.
IDLE_SECONDS = 30.0


@dataclass(eq=False)
class Subscriber:
    """One open stream, as the pump sees it: the events it has not sent yet,
    and the future its stream waits on (no queue object, no task per wait:
    2,000 idle streams are 2,000 deques and futures).

    While its client's connection takes no more (`stalled`, told by the
    connection: orders/live/flow.py) the stream sends nothing and events
    wait here; once more than `unsent_limit` bytes wait, or QUEUE_LIMIT events
    at any time, the subscriber is cut off (`overflowed`), what waited is
    dropped, and the client resumes from its last id when it reads again.
    """

    order_id: str | None  # None: every order (the staff stream)
    unsent_limit: int | None = None  # bytes; None: only QUEUE_LIMIT applies
    pending: deque = field(default_factory=deque)
    pending_bytes: int = 0
    stalled: bool = False
    overflowed: bool = False
    _waiter: asyncio.Future | None = None
    _timer: asyncio.TimerHandle | None = None

    def offer(self, event: StreamEvent) -> None:
        if self.overflowed:
            return
        self.pending.append(event)
        self.pending_bytes += len(event.data)
        self._check_limits()
        self._wake()

    def stall(self, stalled: bool) -> None:
        """The connection's send buffer filled up (True) or drained (False)."""
        self.stalled = stalled
        self._check_limits()
        self._wake()

    def _check_limits(self) -> None:
        if len(self.pending) > QUEUE_LIMIT or (
            self.stalled
            and self.unsent_limit is not None
            and self.pending_bytes > self.unsent_limit
        ):
            self.overflowed = True
            self.pending.clear()
            self.pending_bytes = 0

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def writable(self) -> None:
        """Once the connection takes more (or the subscriber was cut off)."""
        while self.stalled and not self.overflowed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def take(self, deadline: float, max_bytes: int) -> list[StreamEvent]:
        """The waiting events, oldest first, about `max_bytes` of them at the
        most, once there are some and the connection takes them; [] once cut
        off, or by `deadline` (loop time; it may come back earlier with [],
        and the caller looks at the time)."""
        if not self.overflowed and (self.stalled or not self.pending):
            loop = asyncio.get_running_loop()
            # One timer per stream, moved only to an earlier deadline: a timer
            # per wait (and its timeout object), cancelled by the next event,
            # lingered in the loop's heap for the whole keep-alive interval.
            if self._timer is None or self._timer.when() > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(deadline, self._timer_fired)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.overflowed or self.stalled:
            return []
        batch, size = [], 0
        while self.pending and size < max_bytes:
            event = self.pending.popleft()
            size += len(event.data)
            batch.append(event)
        self.pending_bytes -= size
        return batch

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake()

    def close(self) -> None:
        """The stream is over: its timer goes with it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass
class PumpStats:
    polls: int = 0
    queries: int = 0
    delivered: int = 0
    open_streams: int = 0
    opened_total: int = 0
    # Streams ended because their client stopped reading (or fell QUEUE_LIMIT
    # events behind), and openings refused because the database failed or too
    # many were waiting.
    cut_off: int = 0
    refused_openings: int = 0


class PumpUnavailable(Exception):
    """The pump has not found the end of the event table (the database fails)."""


class EventPump:
    """One per event loop: polls the event table and fans out to subscribers."""

    def __init__(
        self,
        *,
        waker=None,
        read_after: Callable[[int], list[StreamEvent]] = read_after,
        read_high_water: Callable[[float], int] = read_high_water,
        settle: float | None = None,
        idle_seconds: float = IDLE_SECONDS,
    ):
        self.loop = asyncio.get_running_loop()
        self.thread = threads.for_loop().pump
        self.waker = waker or make_waker()
        self._read_after = read_after
        self._read_high_water = read_high_water
        self.settle = settings.ORDER_STREAM_SETTLE_SECONDS if settle is None else settle
        self.idle_seconds = idle_seconds
        # Every event with an id up to here has been handed out (or was never
        # written); None until the pump has found where the table ends.
        self.cursor: int | None = None
        self.subscribers: set[Subscriber] = set()
        # Who wants what, so handing out an event looks at its own order's
        # streams and the staff streams, not at every stream (2,000 streams
        # and a poll of 500 events were a million checks on the loop).
        self._by_order: dict[str, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self.stats = PumpStats()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._gap_seen_at: float | None = None

    # Subscribing ---------------------------------------------------------------
    async def subscribe(
        self, order_id: str | None, *, timeout: float | None = None
    ) -> tuple[Subscriber, int]:
        """Register a subscriber; returns it and the cursor at that moment.

        Every event after the returned cursor reaches the subscriber;
        every event up to it is in the table for the caller to replay. Nothing
        awaits between reading the cursor and registering, so no event falls
        between the two. Raises PumpUnavailable when the pump cannot start
        within `timeout` (its database fails).
        """
        self._start()
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise PumpUnavailable("the event pump cannot read the events") from None
        subscriber = Subscriber(order_id=order_id)
        self.add(subscriber)
        return subscriber, self.cursor

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if subscriber.order_id is None:
            self._everything.add(subscriber)
        else:
            self._by_order.setdefault(subscriber.order_id, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.close()
        self.subscribers.discard(subscriber)
        self._everything.discard(subscriber)
        wanting = self._by_order.get(subscriber.order_id)
        if wanting is not None:
            wanting.discard(subscriber)
            if not wanting:
                del self._by_order[subscriber.order_id]

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run(), name="order-event-pump")

    # The loop ------------------------------------------------------------------
    async def _run(self) -> None:
        idle_since: float | None = None
        failures = 0
        while True:
            try:
                if self.cursor is None:
                    self.stats.queries += 1
                    self.cursor = await self.thread.run(
                        self._read_high_water, self.settle
                    )
                    self._ready.set()
                else:
                    await self.waker.wait()
                    await self.poll()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database restarting, most likely: every stream depends on
                # this loop, so it keeps going, with backoff.
                failures += 1
                logger.exception("event pump: reading events failed; retrying")
                await asyncio.sleep(min(5.0, 0.25 * 2**failures))
            if self.subscribers:
                idle_since = None
            elif idle_since is None:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.idle_seconds:
                # Nobody listens: stop polling. The next subscriber restarts the
                # pump, which first finds the end of the table again.
                self.cursor = None
                self._ready.clear()
                self._task = None
                return

    async def poll(self) -> int:
        """Read once and hand out what is settled; returns how many were sent."""
        self.stats.polls += 1
        self.stats.queries += 1
        events = await self.thread.run(self._read_after, self.cursor)
        return self.deliver(events)

    def deliver(self, events: list[StreamEvent]) -> int:
        """Hand out the contiguous run of `events` after the cursor.

        Runs on the loop with no await, so a subscriber registering meanwhile sees
        either the cursor before the run or after it, never half.
        """
        sent = 0
        for event in events:
            if event.id <= self.cursor:
                continue
            if event.id != self.cursor + 1:
                now = time.monotonic()
                if self._gap_seen_at is None:
                    self._gap_seen_at = now
                if now - self._gap_seen_at < self.settle:
                    break  # wait for the missing id to commit
            self._gap_seen_at = None
            self.cursor = event.id
            for subscriber in self._everything:
                subscriber.offer(event)
            for subscriber in self._by_order.get(event.order_id, ()):
                subscriber.offer(event)
            sent += 1
        self.stats.delivered += sent
        return sent


_pumps: dict[asyncio.AbstractEventLoop, EventPump] = {}


def get_pump() -> EventPump:
    """The pump of the running event loop (daphne runs one loop per process)."""
    loop = asyncio.get_running_loop()
    pump = _pumps.get(loop)
    if pump is None:
        for old_loop in [known for known in _pumps if known.is_closed()]:
            del _pumps[old_loop]
        pump = _pumps[loop] = EventPump()
    return pump


@dataclass
class ProcessStreamStats:
    """The streams of every pump in this process, summed, and the cursors of
    the pumps that are running (one loop under daphne)."""

    open_streams: int = 0
    opened_total: int = 0
    cut_off: int = 0
    refused_openings: int = 0
    cursors: list[int] = field(default_factory=list)


def process_stats() -> ProcessStreamStats:
    """This process's stream figures, for GET /metrics, which runs in a request
    thread, not on the loop: it only reads integers the loop writes."""
    totals = ProcessStreamStats()
    for loop, event_pump in list(_pumps.items()):
        if loop.is_closed():
            continue
        stats = event_pump.stats
        totals.open_streams += stats.open_streams
        totals.opened_total += stats.opened_total
        totals.cut_off += stats.cut_off
        totals.refused_openings += stats.refused_openings
        if event_pump.cursor is not None:
            totals.cursors.append(event_pump.cursor)
    return totals
