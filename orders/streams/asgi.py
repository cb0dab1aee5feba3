"""The streams' ASGI transport: the endpoints orderproj/asgi.py routes ahead of
Django, the SSE frames, and each stream's disconnect watcher."""

import asyncio
import json
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

from ..errors import error_document, send_error
from .events import READ_BATCH, StreamEvent, read_replay
from .opening import (
    Refusal,
    check_staff,
    find_order_pk,
    parse_last_event_id,
    plan_opening,
)
from .pump import get_pump

logger = logging.getLogger(__name__)


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
            await send_error(
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
            await send_error(send, refusal.status, refusal.error, refusal.detail)
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
        await send_error(
            send, 405, "method_not_allowed", "Use GET.", [(b"allow", b"GET")]
        )
        return
    try:
        await sync_to_async(check_staff)(scope)
    except Refusal as refusal:
        await send_error(send, refusal.status, refusal.error, refusal.detail)
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
