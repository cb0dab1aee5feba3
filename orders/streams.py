"""Server-Sent Events: the per-process event pump, fan-out and Last-Event-ID replay.

Why a plain ASGI endpoint rather than a Django view or a channels consumer
(measured on this stack, DESIGN.md §2): Django's async StreamingHttpResponse keeps
one idle OS thread per open stream and pins the request's DB connection, and a loop
inside channels' AsyncHttpConsumer.handle() never sees `http.disconnect`. So each
stream here is a coroutine with its own disconnect watcher: a closed client is
forgotten at once, and an open one costs a queue and a task, no thread and no
connection.

The shape:
- `EventPump`: one per process (per event loop). It waits for a wake-up, reads
  every OrderEvent after its cursor in one query and hands each event to every
  subscriber whose filter matches. The cost of a poll does not depend on how many
  browsers are connected.
- The wake-up and the read are apart: `PollWaker` wakes the pump on a timer (the
  embedded default); a channels-layer waker can replace it without touching the
  read (`EventPump.read_after` / `read_replay`).
- A stream authorizes and reads its replay in one trip to the database when it
  opens; after that every event it sends comes from the pump.

Ids are never skipped: the pump hands out events in contiguous id order only. A
missing id (a transaction that took its id from a PostgreSQL sequence and has not
committed yet) holds back every later event until the row shows up or until it has
been missing for ORDER_STREAM_SETTLE_SECONDS, after which it is taken to be a
rolled-back transaction's hole. On SQLite writes are serialized, so there are no
holes and the window is never waited on.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Max
from django.http.cookie import parse_cookie
from django.utils import timezone

from .api import error_document
from .models import Order, OrderEvent
from .selectors import event_document

logger = logging.getLogger(__name__)

# A resume id is a positive integer; anything longer than this is not an id of ours.
MAX_ID_DIGITS = 18
# Events read by one poll or one replay page.
READ_BATCH = 500
# A subscriber that falls this far behind is cut off; its client reconnects with
# its last id and catches up from the table.
QUEUE_LIMIT = 2000
# A pump with no subscribers for this long stops polling until the next one.
IDLE_SECONDS = 30.0


# --- the read ---------------------------------------------------------------------
@dataclass(frozen=True)
class StreamEvent:
    id: int
    order_pk: int
    type: str
    data: str  # the JSON of event_document(), encoded once for every subscriber


def _stream_event(event: OrderEvent) -> StreamEvent:
    document = event_document(event, event.order.order_id)
    return StreamEvent(
        id=event.pk,
        order_pk=event.order_id,
        type=event.type,
        data=json.dumps(document, separators=(",", ":")),
    )


def read_after(cursor: int, limit: int = READ_BATCH) -> list[StreamEvent]:
    """Every event after `cursor`, oldest first: the pump's one query per poll."""
    rows = (
        OrderEvent.objects.filter(pk__gt=cursor)
        .select_related("order")
        .only(*EVENT_FIELDS)
        .order_by("pk")[:limit]
    )
    return [_stream_event(row) for row in rows]


EVENT_FIELDS = (
    "id",
    "type",
    "status",
    "attempt",
    "detail",
    "next_attempt_at",
    "duration_ms",
    "step",
    "at",
    "order__order_id",
)


def read_high_water(settle: float) -> int:
    """Where a pump that starts now can begin: the newest id old enough that no
    transaction still holding an older id can be open (see the module docstring)."""
    cutoff = timezone.now() - timedelta(seconds=settle)
    newest_settled = (
        OrderEvent.objects.filter(at__lt=cutoff)
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return newest_settled or 0


def read_replay(
    *, after: int, through: int, order_pk: int | None, limit: int = READ_BATCH
) -> list[StreamEvent]:
    """Events in (after, through] of one order (or of all), oldest first."""
    rows = OrderEvent.objects.filter(pk__gt=after, pk__lte=through)
    if order_pk is not None:
        rows = rows.filter(order_id=order_pk)
    rows = rows.select_related("order").only(*EVENT_FIELDS).order_by("pk")[:limit]
    return [_stream_event(row) for row in rows]


def oldest_event_id() -> int | None:
    return OrderEvent.objects.order_by("pk").values_list("pk", flat=True).first()


def newest_event_id() -> int:
    return OrderEvent.objects.aggregate(newest=Max("pk"))["newest"] or 0


# --- trimming ---------------------------------------------------------------------
TRIM_BATCH = 1000


def events_trim(*, now=None, retention_days: float | None = None) -> int:
    """Delete events older than ORDER_EVENT_RETENTION_DAYS (0 keeps them all);
    returns how many. In batches, so SQLite's write lock is held only briefly.

    A client resuming from a deleted id gets stream.reset (see plan_opening)."""
    days = (
        settings.ORDER_EVENT_RETENTION_DAYS
        if retention_days is None
        else retention_days
    )
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(
            OrderEvent.objects.filter(at__lt=cutoff)
            .order_by("pk")
            .values_list("pk", flat=True)[:TRIM_BATCH]
        )
        if not ids:
            return deleted
        deleted += OrderEvent.objects.filter(pk__in=ids).delete()[0]


# --- the wake-up ------------------------------------------------------------------
class PollWaker:
    """Wakes the pump every `interval` seconds: the embedded default, where other
    processes (the workers) write events without telling anyone."""

    def __init__(self, interval: float):
        self.interval = interval
        self._nudged = asyncio.Event()

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudged.wait(), self.interval)
        self._nudged.clear()

    def nudge(self) -> None:
        """Wake at once (a writer in this process, or a notification)."""
        self._nudged.set()


# --- the pump ---------------------------------------------------------------------
@dataclass(eq=False)
class Subscriber:
    order_pk: int | None  # None: every order (the staff stream)
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False

    def wants(self, event: StreamEvent) -> bool:
        return self.order_pk is None or self.order_pk == event.order_pk

    def offer(self, event: StreamEvent) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Cut off rather than buffer without bound; the stream ends and its
            # client resumes from its last id.
            self.overflowed = True


@dataclass
class PumpStats:
    polls: int = 0
    queries: int = 0
    delivered: int = 0
    open_streams: int = 0
    opened_total: int = 0


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
        self.waker = waker or PollWaker(settings.ORDER_STREAM_POLL_SECONDS)
        self._read_after = read_after
        self._read_high_water = read_high_water
        self.settle = settings.ORDER_STREAM_SETTLE_SECONDS if settle is None else settle
        self.idle_seconds = idle_seconds
        # Every event with an id up to here has been handed out (or was never
        # written); None until the pump has found where the table ends.
        self.cursor: int | None = None
        self.subscribers: set[Subscriber] = set()
        self.stats = PumpStats()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._gap_seen_at: float | None = None

    # Subscribing ---------------------------------------------------------------
    async def subscribe(self, order_pk: int | None) -> tuple[Subscriber, int]:
        """Register a subscriber; returns it and the cursor at that moment.

        Every event after the returned cursor reaches the subscriber's queue;
        every event up to it is in the table for the caller to replay. Nothing
        awaits between reading the cursor and registering, so no event falls
        between the two.
        """
        self._start()
        await self._ready.wait()
        subscriber = Subscriber(order_pk=order_pk)
        self.subscribers.add(subscriber)
        return subscriber, self.cursor

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

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
                    self.cursor = await sync_to_async(self._read_high_water)(
                        self.settle
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
                with contextlib.suppress(DatabaseError):
                    await sync_to_async(close_old_connections)()
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
        events = await sync_to_async(self._read_after)(self.cursor)
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
            for subscriber in self.subscribers:
                if subscriber.wants(event):
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


# --- opening a stream: the one trip to the database -------------------------------
class Refusal(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def parse_last_event_id(scope: dict) -> int | None:
    """The resume id from the Last-Event-ID header (what a browser's own reconnect
    sends) or else the ?lastEventId= query; None when neither is given."""
    raw = None
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            raw = value.decode("latin-1")
    if raw is None:
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(
            "lastEventId"
        )
        raw = values[-1] if values else None
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_ID_DIGITS:
        raise Refusal(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an event (a non-negative integer).",
        )
    return int(raw)


def could_be_order_id(order_id: str) -> bool:
    """Whether `order_id` has the shape of a stored one: printable ASCII that fits
    the column. Anything else is no order of ours, and is not sent to the
    database (PostgreSQL refuses a NUL, for one)."""
    limit = Order._meta.get_field("order_id").max_length
    return len(order_id) <= limit and order_id.isascii() and order_id.isprintable()


def find_order_pk(order_id: str) -> int:
    if not could_be_order_id(order_id):
        raise Refusal(404, "order_not_found", "No order has that id.")
    pk = Order.objects.filter(order_id=order_id).values_list("pk", flat=True).first()
    if pk is None:
        raise Refusal(404, "order_not_found", f"No order with id {order_id!r}.")
    return pk


def session_key(scope: dict) -> str | None:
    """The session cookie's value, read as Django reads it for a view: the Cookie
    headers decoded as latin-1 and joined (django.core.handlers.asgi), then
    django.http.cookie.parse_cookie, which skips a malformed cookie instead of
    giving up on all of them. A value no session engine issues (a control
    character, say) is no session."""
    values = [
        value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name.lower() == b"cookie"
    ]
    key = parse_cookie(",".join(values)).get(settings.SESSION_COOKIE_NAME)
    if key is None or not (key.isascii() and key.isprintable()):
        return None
    return key


def check_staff(scope: dict) -> None:
    """The staff stream needs a staff session: 403 without a login or for
    other accounts (the same answers as the staff JSON endpoints). Django's
    get_user() also ends a session whose user was deactivated or changed
    password since logging in."""
    from django.contrib.auth import get_user

    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key(scope))
    user = get_user(SimpleNamespace(session=session))
    if not user.is_authenticated:
        raise Refusal(403, "not_authenticated", "Log in as staff to use this stream.")
    if not user.is_staff:
        raise Refusal(403, "forbidden", "This stream is for staff accounts only.")


@dataclass
class Opening:
    replay: list[StreamEvent]  # the first page; more follow if it is full
    reset: bool
    resume_from: int  # the client has every event up to here


def plan_opening(*, last_id: int | None, through: int, order_pk: int | None) -> Opening:
    """What a new stream sends before going live.

    An order stream without an id replays the order's whole history; the staff
    stream without one starts live. A resume id older than the oldest kept event
    gets stream.reset, then the stream continues as if opened without an id; so
    does an id newer than any event (not one of this database's: it was
    reset, or the id is made up), which would otherwise hold back every event
    up to it.
    """
    reset = False
    if last_id is not None:
        oldest = oldest_event_id()
        trimmed_through = through if oldest is None else oldest - 1
        if last_id < trimmed_through or (
            last_id > through and last_id > newest_event_id()
        ):
            reset, last_id = True, None
    if last_id is None:
        if order_pk is None:
            # Live from now: a pump that has just started trails the newest rows
            # by the settle window, and those rows are not news to this client.
            newest = newest_event_id()
            return Opening(replay=[], reset=reset, resume_from=max(through, newest))
        last_id = 0
    replay = read_replay(after=last_id, through=through, order_pk=order_pk)
    return Opening(replay=replay, reset=reset, resume_from=last_id)


# --- the ASGI endpoint ------------------------------------------------------------
def _json_response_parts(status: int, error: str, detail: str):
    body = json.dumps(error_document(error, detail)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
    ]
    return status, headers, body


async def send_json_error(send, status: int, error: str, detail: str, extra=None):
    status, headers, body = _json_response_parts(status, error, detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers + list(extra or ()),
        }
    )
    await send({"type": "http.response.body", "body": body})


def frame(event: StreamEvent) -> bytes:
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.data}\n\n".encode()


def reset_frame(last_id: int) -> bytes:
    data = json.dumps(
        {
            "type": "stream.reset",
            "last_event_id": last_id,
            "detail": "Events after that id are no longer kept; refetch the status.",
        }
    )
    return f"event: stream.reset\ndata: {data}\n\n".encode()


def closed_frame(refusal: Refusal) -> bytes:
    """The last frame of a staff stream whose session ended: why, in the error
    shape. A browser's reconnect then gets the 403 itself."""
    data = json.dumps(
        {"type": "stream.closed", **error_document(refusal.error, refusal.detail)}
    )
    return f"event: stream.closed\ndata: {data}\n\n".encode()


SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class EventStream:
    """ASGI app: `per_order=True` serves /api/orders/<order_id>/events, else the
    staff stream /api/events."""

    def __init__(self, *, per_order: bool):
        self.per_order = per_order

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # pragma: no cover - routed for http only
            raise ValueError("EventStream serves HTTP only")
        if scope["method"] != "GET":
            await send_json_error(
                send,
                405,
                "method_not_allowed",
                f"{scope['method']} is not allowed here; use GET.",
                [(b"allow", b"GET")],
            )
            return
        pump = get_pump()
        order_id = scope.get("url_route", {}).get("kwargs", {}).get("order_id")
        try:
            last_id = parse_last_event_id(scope)
            order_pk = await sync_to_async(self._authorize)(scope, order_id)
        except Refusal as refusal:
            await send_json_error(send, refusal.status, refusal.error, refusal.detail)
            return
        subscriber, through = await pump.subscribe(order_pk)
        pump.stats.open_streams += 1
        pump.stats.opened_total += 1
        body = asyncio.ensure_future(
            self._send_events(send, pump, subscriber, last_id, through, order_pk, scope)
        )
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({body, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.unsubscribe(subscriber)
            pump.stats.open_streams -= 1
            for task in (body, watcher):
                task.cancel()
            await asyncio.gather(body, watcher, return_exceptions=True)
        if body.done() and not body.cancelled() and body.exception():
            logger.error("event stream failed", exc_info=body.exception())

    def _authorize(self, scope, order_id: str | None) -> int | None:
        close_old_connections()
        if self.per_order:
            return find_order_pk(order_id)
        check_staff(scope)
        return None

    async def _send_events(
        self, send, pump, subscriber, last_id, through, order_pk, scope
    ):
        retry_ms = int(settings.ORDER_STREAM_RETRY_MS)
        keepalive = float(settings.ORDER_STREAM_KEEPALIVE_SECONDS)
        loop = asyncio.get_running_loop()
        opening = await sync_to_async(plan_opening)(
            last_id=last_id, through=through, order_pk=order_pk
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )
        # From this first line on, the client misses nothing that is written.
        await _send_body(send, f": stream open\nretry: {retry_ms}\n\n".encode())
        sent = await self._replay(send, opening, last_id, through, order_pk)
        # The staff stream looks at its session again twice per keep-alive
        # interval, so one that ended (logout, account deactivated, password
        # changed, staff status taken away) is closed within that interval.
        recheck = None if self.per_order else keepalive / 2
        quiet_since = loop.time()
        next_check = quiet_since + recheck if recheck else None
        while not subscriber.overflowed or not subscriber.queue.empty():
            if next_check is not None and loop.time() >= next_check:
                try:
                    await sync_to_async(self._authorize)(scope, None)
                except Refusal as refusal:
                    await _send_body(send, closed_frame(refusal))
                    break
                next_check = loop.time() + recheck
            wake = quiet_since + keepalive
            if next_check is not None:
                wake = min(wake, next_check)
            try:
                event = await asyncio.wait_for(
                    subscriber.queue.get(), max(0.0, wake - loop.time())
                )
            except TimeoutError:
                if loop.time() >= quiet_since + keepalive:
                    await _send_body(send, b": keep-alive\n\n")
                    quiet_since = loop.time()
                continue
            if event.id <= sent:
                continue  # the client had it already (it resumed from a later id)
            sent = event.id
            await _send_body(send, frame(event))
            quiet_since = loop.time()
        # Fell too far behind (the client resumes from `sent`), or the session
        # ended: end the response.
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _replay(self, send, opening, last_id, through, order_pk) -> int:
        """Send what the client missed up to `through`; returns the id after which
        live events are new to the client."""
        if opening.reset:
            await _send_body(send, reset_frame(last_id))
        batch = opening.replay
        while batch:
            await _send_body(send, b"".join(frame(event) for event in batch))
            if len(batch) < READ_BATCH:
                break
            batch = await sync_to_async(read_replay)(
                after=batch[-1].id, through=through, order_pk=order_pk
            )
        # Live events all come after `through`; a client that resumed from a later
        # id (it came from another process whose pump was ahead) has those up to
        # its id already.
        return max(through, opening.resume_from)


async def _send_body(send, body: bytes) -> None:
    await send({"type": "http.response.body", "body": body, "more_body": True})


async def _wait_for_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


order_events = EventStream(per_order=True)
staff_events = EventStream(per_order=False)


async def stream_stats(scope, receive, send):
    """GET /api/streams (staff): this process's open streams and pump counters, so
    an operator (and the tests) can see that closed clients are freed and that
    polling does not grow with the number of clients."""
    if scope["method"] != "GET":
        await send_json_error(
            send, 405, "method_not_allowed", "Use GET.", [(b"allow", b"GET")]
        )
        return
    try:
        await sync_to_async(check_staff)(scope)
    except Refusal as refusal:
        await send_json_error(send, refusal.status, refusal.error, refusal.detail)
        return
    pump = get_pump()
    body = json.dumps(
        {
            "open_streams": pump.stats.open_streams,
            "opened_total": pump.stats.opened_total,
            "subscribers": len(pump.subscribers),
            "pump_running": pump._task is not None and not pump._task.done(),
            "polls": pump.stats.polls,
            "queries": pump.stats.queries,
            "delivered": pump.stats.delivered,
            "cursor": pump.cursor,
            "tasks": len(asyncio.all_tasks()),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
