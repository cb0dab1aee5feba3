"""The streams' ASGI transport: the endpoints orderproj/asgi.py routes ahead of
Django, the SSE frames, and each stream's disconnect watcher."""

import asyncio
import json
import logging

from django.conf import settings
from django.db import DatabaseError

from orders.api.errors import error_document, send_error
from orders.api.methods import send_refusal
from orders.live import flow, threads
from orders.live.caps import CapReached, stream_slots
from orders.live.events import READ_BATCH, StreamEvent, read_replay
from orders.live.gc_freeze import frozen_survivors
from orders.live.opening import (
    Refusal,
    check_staff,
    could_be_order_id,
    open_stream,
    parse_last_event_id,
    stream_language,
)
from orders.live.pump import PumpUnavailable, get_pump
from orders.live.recheck import SessionRecheck
from orders.live.response import RETRY_AFTER_SECONDS, StreamResponse
from orders.live.threads import Saturated, with_connection
from orders.services.failures import record_failure

logger = logging.getLogger(__name__)

# How long an opening waits for the pump to find the end of the event table (it
# retries while the database fails) before it is answered 503.
PUMP_WAIT_SECONDS = 5.0
# A stream writes at most about this much at once: what the connection's send
# buffer (64 KiB in daphne) holds before it says it is full.
BODY_BYTES = 64 * 1024
# The methods of every endpoint here (orders/api/methods.py answers the others).
ALLOWED = ("GET",)
# How much of a path a failure record keeps (the path is the client's choice).
REQUEST_PATH_CHARS = 200


def frame(event: StreamEvent, language: str | None = None) -> bytes:
    """An event's SSE frame: the staff stream's data, or with a `language`
    the per-order stream's (the customer's words in that language)."""
    data = event.data if language is None else event.public_data(language)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


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


class EventStream:
    """ASGI app: `per_order=True` serves /api/orders/<order_id>/events, else the
    staff stream /api/events.

    Every way a stream can fail ends its response properly, so a browser falls
    back to polling instead of showing "connecting" or "Live" forever: before
    the headers, a JSON 503 with Retry-After (the database fails, the pump cannot
    start, too many openings are waiting) or 500 (a programming error, also
    recorded as a failure); after them, the end of the body. The disconnect
    watcher runs from the start, so a client that leaves while its opening
    waits is forgotten at once, and one that leaves at any other moment is an
    ordinary end, never a failure.

    `name` is the endpoint's, for a failure record's task: one bug in a
    stream is one failure group whatever order it was for (the path goes
    into the record's arguments).
    """

    def __init__(self, name: str, *, per_order: bool):
        self.name = name
        self.per_order = per_order

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # pragma: no cover - routed for http only
            raise ValueError("EventStream serves HTTP only")
        if await send_refusal(scope, send, ALLOWED):
            return
        order_id = None
        if self.per_order:
            order_id = scope["url_route"]["kwargs"]["order_id"]
        try:
            last_id = parse_last_event_id(scope)
            if order_id is not None and not could_be_order_id(order_id):
                raise Refusal(404, "order_not_found", "No order has that id.")
        except Refusal as refusal:
            await send_error(send, refusal.status, refusal.error, refusal.detail)
            return
        # Counted before any database work, so a client that opens streams
        # without end is refused before it costs a query (orders/live/caps.py).
        try:
            slot = stream_slots.take(scope)
        except CapReached as refusal:
            await send_error(
                send, refusal.status, refusal.error, refusal.detail, refusal.headers
            )
            return
        response = StreamResponse(send)
        # The stream runs in this task; the watcher cancels it when the client
        # leaves, whatever it is waiting for (the pump, a thread, an event).
        watcher = asyncio.ensure_future(
            _cancel_on_disconnect(receive, asyncio.current_task())
        )
        try:
            await self._stream(scope, response, order_id, last_id)
        except asyncio.CancelledError:
            if not watcher.done():
                raise  # cancelled by the server, not by the client leaving
        finally:
            watcher.cancel()
            slot.release()

    async def _stream(self, scope, response, order_id, last_id) -> None:
        pump = get_pump()
        subscriber = None
        try:
            subscriber, opening = await self._open(scope, pump, order_id, last_id)
            pump.stats.open_streams += 1
            pump.stats.opened_total += 1
            try:
                await self._send_events(scope, response, pump, subscriber, opening)
            finally:
                pump.stats.open_streams -= 1
        except Refusal as refusal:
            await response.refuse(refusal.status, refusal.error, refusal.detail)
        except flow.ConnectionGone:
            # The client hung up as its stream started; its watcher has the
            # http.disconnect on the way. No one to answer, nothing to record.
            logger.debug("event stream: the client left as it opened")
        except Saturated as error:
            pump.stats.refused_openings += not response.started
            logger.warning("event stream refused: %s", error)
            await response.unavailable(
                "Too many streams are opening at once; try again shortly."
            )
        except (DatabaseError, PumpUnavailable) as error:
            pump.stats.refused_openings += not response.started
            logger.warning("event stream: the database failed: %s", error)
            await response.unavailable(
                "The events cannot be read right now; try again shortly."
            )
        except Exception as error:
            logger.exception("event stream failed")
            await asyncio.to_thread(
                with_connection,
                record_failure,
                task=f"stream {self.name}",
                args=[scope["method"], scope["path"][:REQUEST_PATH_CHARS]],
                error=error,
            )
            await response.fail()
        finally:
            if subscriber is not None:
                pump.unsubscribe(subscriber)
            response.release()

    async def _open(self, scope, pump, order_id, last_id):
        """Authorize, subscribe, then plan the replay; returns the subscriber
        and the Opening. An order stream is authorized (the order exists) in
        the same trip to the database as its replay. The staff stream's
        session is checked before it subscribes: a caller who may not read
        every order's events is never subscribed to them, nor starts the
        pump."""
        openings = threads.for_loop().openings
        if order_id is None:
            await openings.run(check_staff, scope)
        subscriber, through = await pump.subscribe(order_id, timeout=PUMP_WAIT_SECONDS)
        try:
            opening = await openings.run(
                open_stream, order_id=order_id, last_id=last_id, through=through
            )
        except BaseException:
            pump.unsubscribe(subscriber)
            raise
        return subscriber, opening

    async def _send_events(self, scope, response, pump, subscriber, opening):
        retry_ms = int(settings.ORDER_STREAM_RETRY_MS)
        keepalive = float(settings.ORDER_STREAM_KEEPALIVE_SECONDS)
        loop = asyncio.get_running_loop()
        subscriber.unsent_limit = settings.ORDER_STREAM_MAX_UNSENT_BYTES
        # The staff stream looks at its session again twice per keep-alive
        # interval, so one that ended (logout, account deactivated, password
        # changed, staff status or permission taken away) is closed within
        # that interval.
        recheck = None if self.per_order else SessionRecheck(scope, keepalive / 2)
        # A customer's stream speaks the language their pages do.
        language = stream_language(scope) if self.per_order else None
        await response.start(subscriber)
        # From this first line on, the client misses nothing that is written.
        await response.body(f": stream open\nretry: {retry_ms}\n\n".encode())
        sent = await self._replay(response, opening, subscriber, recheck, language)
        quiet_since = loop.time()
        while not subscriber.overflowed:
            if recheck is not None and not await recheck.holds():
                break
            wake = quiet_since + keepalive
            if recheck is not None:
                wake = min(wake, recheck.due)
            batch = [
                event
                # the client had those up to `sent` already (it resumed from a
                # later id)
                for event in await subscriber.take(wake, BODY_BYTES)
                if event.id > sent
            ]
            if batch:
                sent = batch[-1].id
                await response.body(b"".join(frame(event, language) for event in batch))
                quiet_since = loop.time()
            elif loop.time() >= quiet_since + keepalive and not subscriber.stalled:
                await response.body(b": keep-alive\n\n")
                quiet_since = loop.time()
        if recheck is not None and recheck.ended is not None:
            await response.body(closed_frame(recheck.ended))
            await response.end()
        elif subscriber.overflowed:
            # The client resumes from the last id it read. What waited in its
            # connection is dropped with it.
            pump.stats.cut_off += 1
            await response.abort()
        else:
            await response.end()

    async def _replay(self, response, opening, subscriber, recheck, language) -> int:
        """Send what the client missed up to the pump's cursor at subscription
        (the staff stream's session checked between pages, as between frames);
        returns the id after which live events are new to the client."""
        through = opening.through
        if opening.reset:
            await response.body(reset_frame(opening.last_id))
        batch = opening.replay
        while batch:
            await response.body(b"".join(frame(event, language) for event in batch))
            if len(batch) < READ_BATCH:
                break
            await subscriber.writable()
            if subscriber.overflowed:
                break
            if recheck is not None and not await recheck.holds():
                break
            batch = await threads.for_loop().openings.run(
                read_replay,
                after=batch[-1].id,
                through=through,
                order_pk=opening.order_pk,
            )
        # Sent: the stream holds no copy of its history while it is open.
        opening.replay = []
        # Live events all come after `through`; a client that resumed from a later
        # id (it came from another process whose pump was ahead) has those up to
        # its id already.
        return max(through, opening.resume_from)


async def _cancel_on_disconnect(receive, stream: asyncio.Task) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.cancel()
            return


order_events = EventStream("order_events", per_order=True)
staff_events = EventStream("staff_events", per_order=False)


async def stream_stats(scope, receive, send):
    """GET /api/streams (staff): this process's open streams and pump counters, so
    an operator (and the tests) can see that closed clients are freed and that
    polling does not grow with the number of clients."""
    if await send_refusal(scope, send, ALLOWED):
        return
    try:
        await threads.for_loop().openings.run(check_staff, scope)
    except Refusal as refusal:
        await send_error(send, refusal.status, refusal.error, refusal.detail)
        return
    except (Saturated, DatabaseError) as error:
        await send_error(
            send,
            503,
            "stream_unavailable",
            f"Cannot check the session right now ({type(error).__name__}).",
            [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
        )
        return
    pump = get_pump()
    opening_threads = threads.for_loop().openings
    body = json.dumps(
        {
            "open_streams": pump.stats.open_streams,
            "opened_total": pump.stats.opened_total,
            "subscribers": len(pump.subscribers),
            "pump_running": pump._task is not None and not pump._task.done(),
            "polls": pump.stats.polls,
            "queries": pump.stats.queries,
            "delivered": pump.stats.delivered,
            "cut_off": pump.stats.cut_off,
            "refused_openings": pump.stats.refused_openings,
            "openings_waiting": opening_threads.pending,
            "cursor": pump.cursor,
            "tasks": len(asyncio.all_tasks()),
            "caps": stream_slots.as_dict(),
            "collector": frozen_survivors.as_dict(),
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
