"""The SSE endpoint and its event pump, in-process: the ASGI application is called
directly on an event loop, so tests can look inside the pump (queries per poll,
subscribers) and shrink the clock (keep-alive, settle window). The same
behaviour over real HTTP from daphne is in tests/e2e/test_streams_e2e.py."""

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission
from django.db import DatabaseError, connection
from django.utils import timezone

from orderproj.asgi import application
from orders.live import asgi as stream_asgi
from orders.live import pump as pump_module
from orders.live import recheck as stream_recheck
from orders.live import threads as stream_threads
from orders.live.events import StreamEvent, read_after
from orders.live.opening import (
    Refusal,
    could_be_order_id,
    parse_last_event_id,
    plan_opening,
    session_key,
)
from orders.live.pump import EventPump, Subscriber, get_pump
from orders.live.threads import Saturated
from orders.live.wakers import PollWaker
from orders.models import OrderEvent
from orders.permissions import VIEW_OPERATIONS
from orders.services.events import events_trim
from orders.state.transitions import append_event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fast_streams(settings):
    settings.ORDER_STREAM_POLL_SECONDS = 0.05
    settings.ORDER_STREAM_KEEPALIVE_SECONDS = 15
    settings.ORDER_STREAM_SETTLE_SECONDS = 0.5


class StreamClient:
    """One HTTP request to the ASGI application, read as it arrives."""

    def __init__(self, path: str, *, headers=(), query: str = ""):
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        self.messages: asyncio.Queue = asyncio.Queue()
        self.gone = asyncio.Event()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.buffer = ""
        self.finished = False

    async def start(self) -> "StreamClient":
        self.task = asyncio.ensure_future(
            application(self.scope, self._receive, self.messages.put)
        )
        start = await asyncio.wait_for(self.messages.get(), 5)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return self

    async def _receive(self):
        if not hasattr(self, "_requested"):
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def body(self) -> bytes:
        message = await asyncio.wait_for(self.messages.get(), 5)
        return message["body"]

    async def frames(self, count: int, *, timeout: float = 5.0) -> list[dict]:
        """The next `count` frames (events, or comments as {"comment": ...})."""
        found: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            while "\n\n" in self.buffer and len(found) < count:
                block, self.buffer = self.buffer.split("\n\n", 1)
                parsed = parse_block(block)
                if parsed:
                    found.append(parsed)
            if len(found) >= count:
                break
            left = deadline - time.monotonic()
            assert left > 0, f"got only {found} before the timeout"
            message = await asyncio.wait_for(self.messages.get(), left)
            self.buffer += message.get("body", b"").decode()
            if not message.get("more_body", False):
                self.finished = True
        return found

    async def events(self, count: int, **kwargs) -> list[dict]:
        found: list[dict] = []
        while len(found) < count:
            for item in await self.frames(1, **kwargs):
                if "event" in item:
                    found.append(item)
        return found

    async def close(self) -> None:
        self.gone.set()
        await asyncio.wait_for(self.task, 2)


def parse_block(block: str) -> dict | None:
    item: dict = {}
    for line in block.split("\n"):
        if line.startswith(":"):
            item.setdefault("comment", line[1:].strip())
            continue
        name, _, value = line.partition(":")
        item[name] = value[1:] if value.startswith(" ") else value
    if "data" in item:
        item["data"] = json.loads(item["data"])
    return item or None


def event_ids(order) -> list[int]:
    return list(
        OrderEvent.objects.filter(order=order)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def write(order, event_type=OrderEvent.Type.DELIVERY_COMPLETED, detail=""):
    return append_event(order, event_type, detail=detail)


async def awrite(order, **kwargs):
    return await sync_to_async(write, thread_sensitive=False)(order, **kwargs)


async def next_event(subscriber, within: float = 3.0):
    if not subscriber.pending:
        await subscriber.take(asyncio.get_running_loop().time() + within, 0)
    assert subscriber.pending, f"no event within {within} s"
    return subscriber.pending.popleft()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


# Resume ids ---------------------------------------------------------------------
def test_resume_id_is_taken_from_the_header_before_the_query():
    scope = {"headers": [(b"last-event-id", b"12")], "query_string": b"lastEventId=7"}
    assert parse_last_event_id(scope) == 12
    assert parse_last_event_id({"query_string": b"lastEventId=7"}) == 7
    assert parse_last_event_id({"query_string": b""}) is None


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "12 3", "9" * 19, "١٢"])
def test_a_malformed_resume_id_is_refused_with_400(raw):
    scope = {"headers": [(b"last-event-id", raw.encode())], "query_string": b""}
    with pytest.raises(Refusal) as refused:
        parse_last_event_id(scope)
    assert refused.value.status == 400


def test_a_malformed_resume_id_is_a_json_400_on_the_stream(place_order):
    order = place_order()

    async def scenario():
        client = await StreamClient(
            f"/api/orders/{order.order_id}/events", query="lastEventId=nope"
        ).start()
        return client.status, client.headers, json.loads(await client.body())

    status, headers, body = run(scenario())
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert body["error"] == "invalid_last_event_id"
    assert body["detail"]


# The pump -----------------------------------------------------------------------
def fake_event(event_id: int, order_id: str = "ord_1") -> StreamEvent:
    return StreamEvent(id=event_id, order_id=order_id, type="order.created", data="{}")


def test_pump_holds_events_behind_a_missing_id_until_it_commits_or_settles():
    async def scenario():
        pump = EventPump(settle=0.2)
        pump.cursor = 10
        subscriber = Subscriber(order_id=None)
        pump.add(subscriber)
        assert pump.deliver([fake_event(11), fake_event(13)]) == 1
        assert pump.cursor == 11  # 12 may still be committing
        # 12 commits: both go out, in order.
        assert pump.deliver([fake_event(12), fake_event(13)]) == 2
        assert pump.deliver([fake_event(15)]) == 0
        await asyncio.sleep(0.25)
        # 14 never came: a rolled-back transaction's hole, passed after the window.
        assert pump.deliver([fake_event(15)]) == 1
        return [subscriber.pending.popleft().id for _ in range(4)]

    assert run(scenario()) == [11, 12, 13, 15]


def test_pump_hands_each_subscriber_only_the_orders_it_asked_for():
    async def scenario():
        pump = EventPump(settle=0)
        pump.cursor = 0
        one, everything = Subscriber(order_id="ord_1"), Subscriber(None)
        pump.add(one)
        pump.add(everything)
        pump.deliver(
            [fake_event(1, "ord_1"), fake_event(2, "ord_2"), fake_event(3, "ord_1")]
        )
        return len(one.pending), len(everything.pending)

    assert run(scenario()) == (2, 3)


def test_a_subscriber_that_falls_too_far_behind_is_cut_off_not_buffered(
    monkeypatch,
):
    monkeypatch.setattr(pump_module, "QUEUE_LIMIT", 3)

    async def scenario():
        subscriber = Subscriber(order_id=None)
        for event_id in range(1, 6):
            subscriber.offer(fake_event(event_id))
        return subscriber.overflowed, len(subscriber.pending)

    # Cut off, and what waited is dropped: the client resumes from its last id.
    assert run(scenario()) == (True, 0)


def test_a_stalled_subscriber_keeps_its_events_until_the_limit_then_is_cut_off():
    async def scenario():
        loop = asyncio.get_running_loop()
        subscriber = Subscriber(order_id=None, unsent_limit=5)
        subscriber.stall(True)
        subscriber.offer(fake_event(1))  # 2 bytes of data
        subscriber.offer(fake_event(2))
        # Nothing is taken while the connection takes nothing.
        taken_while_stalled = await subscriber.take(loop.time() + 0.05, 1024)
        subscriber.stall(False)
        taken = await subscriber.take(loop.time() + 1, 1024)
        subscriber.stall(True)
        for event_id in range(3, 6):  # 6 bytes wait: past the limit
            subscriber.offer(fake_event(event_id))
        return (
            taken_while_stalled,
            [event.id for event in taken],
            subscriber.overflowed,
            len(subscriber.pending),
        )

    assert run(scenario()) == ([], [1, 2], True, 0)


def test_a_subscriber_that_is_not_stalled_is_never_cut_off_for_its_bytes():
    async def scenario():
        subscriber = Subscriber(order_id=None, unsent_limit=5)
        for event_id in range(1, 11):
            subscriber.offer(fake_event(event_id))
        taken = await subscriber.take(asyncio.get_running_loop().time() + 1, 8)
        return subscriber.overflowed, [event.id for event in taken]

    # And a batch stops once it holds about max_bytes.
    assert run(scenario()) == (False, [1, 2, 3, 4])


def test_pump_keeps_going_after_the_database_fails_a_read():
    reads = []

    def flaky_read_after(cursor):
        reads.append(cursor)
        if len(reads) == 1:
            raise DatabaseError("database is restarting")
        return [fake_event(cursor + 1)] if len(reads) == 2 else []

    async def scenario():
        pump = EventPump(
            waker=PollWaker(0.01),
            read_after=flaky_read_after,
            read_high_water=lambda settle: 7,
            settle=0,
        )
        subscriber, cursor = await pump.subscribe(None)
        event = await next_event(subscriber)
        return cursor, event.id

    assert run(scenario()) == (7, 8)


class SteppedWaker:
    """Wakes the pump only when the test says so, so a test counts the queries
    of a known number of polls instead of polls over a stretch of wall clock."""

    def __init__(self):
        self._go = asyncio.Event()
        self._waiting = asyncio.Event()

    async def wait(self) -> None:
        self._waiting.set()
        await self._go.wait()
        self._go.clear()

    def nudge(self) -> None:
        self._go.set()

    async def step(self) -> None:
        """Let the pump poll once; returns when that poll is over."""
        await asyncio.wait_for(self._waiting.wait(), 5)
        self._waiting.clear()
        self._go.set()
        await asyncio.wait_for(self._waiting.wait(), 5)  # back to waiting: done


def test_each_poll_is_one_query_whether_one_client_listens_or_fifty(place_order):
    order = place_order()
    queries: list[str] = []
    polls = 5

    def counted_read_after(cursor):
        def count(execute, sql, params, many, context):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            return read_after(cursor)

    async def measure(clients: int) -> tuple[int, int]:
        waker = SteppedWaker()
        pump = EventPump(waker=waker, read_after=counted_read_after, settle=0)
        subscribers = [
            (await pump.subscribe(order.order_id))[0] for _ in range(clients)
        ]
        queries.clear()
        polls_before = pump.stats.polls
        written = await awrite(order)
        for _ in range(polls):
            await waker.step()
        for subscriber in subscribers:  # each got the new event
            got = [subscriber.pending.popleft() for _ in range(len(subscriber.pending))]
            assert got[-1].id == written.pk
        return len(queries), pump.stats.polls - polls_before

    assert asyncio.run(measure(1)) == (polls, polls)
    assert asyncio.run(measure(50)) == (polls, polls)


def test_pump_stops_polling_when_nobody_listens_and_resumes_for_the_next_client(
    place_order,
):
    order = place_order()
    newest = event_ids(order)[-1]

    async def scenario():
        pump = EventPump(waker=PollWaker(0.02), idle_seconds=0.1)
        subscriber, _ = await pump.subscribe(order.order_id)
        running = pump._task
        pump.unsubscribe(subscriber)
        await asyncio.wait_for(running, 5)  # the loop ends by itself
        assert pump._task is None
        polls = pump.stats.polls
        await asyncio.sleep(0.2)
        assert pump.stats.polls == polls  # idle: no queries at all
        subscriber, cursor = await pump.subscribe(order.order_id)
        assert cursor <= newest  # found the end of the table again
        written = await awrite(order)
        # The restarted pump may hand out the order's first event too (it was
        # not settled yet when the pump found the end of the table).
        event = await next_event(subscriber)
        if event.id != written.pk:
            assert event.id < written.pk
            event = await next_event(subscriber)
        assert event.id == written.pk
        return event.type

    assert run(scenario()) == OrderEvent.Type.DELIVERY_COMPLETED


def test_concurrent_writers_lose_no_event_and_repeat_none(place_order):
    orders = [place_order() for _ in range(4)]
    staff_cookie = staff_session_header()

    async def scenario():
        client = await StreamClient("/api/events", headers=staff_cookie).start()
        await client.frames(1)  # the opening comment: subscribed

        def writer(order):
            for n in range(15):
                write(order, detail=f"write {n}")

        threads = [threading.Thread(target=writer, args=(o,)) for o in orders]
        for thread in threads:
            thread.start()
        await sync_to_async(lambda: [t.join() for t in threads])()
        received = await client.events(60, timeout=10)
        await client.close()
        assert {item["event"] for item in received} == {"delivery.completed"}
        return [int(item["id"]) for item in received]

    received = run(scenario())
    written = list(
        OrderEvent.objects.filter(type=OrderEvent.Type.DELIVERY_COMPLETED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert received == written


# The order stream ---------------------------------------------------------------
def test_order_stream_replays_the_whole_history_then_goes_live(place_order):
    order = place_order()
    write(order, detail="before the client came")

    async def scenario():
        client = await StreamClient(f"/api/orders/{order.order_id}/events").start()
        opening = (await client.frames(1))[0]
        replayed = await client.events(2)
        await awrite(order, detail="while the client watches")
        live = await client.events(1)
        await client.close()
        return client.headers, opening, replayed, live

    headers, opening, replayed, live = run(scenario())
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert opening["retry"] == "2000"
    ids = event_ids(order)
    assert [int(item["id"]) for item in replayed + live] == ids
    assert [item["event"] for item in replayed + live] == [
        "order.created",
        "delivery.completed",
        "delivery.completed",
    ]
    data = live[0]["data"]
    assert data == {
        "event_id": ids[-1],
        "order_id": order.order_id,
        "type": "delivery.completed",
        "status": "PENDING",
        "attempt": 0,
        "at": data["at"],
        # Anyone with the id reads it: the customer's words, not the
        # operators' detail.
        "detail": "Your order has been delivered.",
        "message": "Your order has been delivered.",
        "next_attempt_at": None,
        "duration_ms": None,
        "step": None,
    }
    assert data["at"].endswith("Z")


def test_the_order_stream_speaks_the_readers_language_and_the_staff_stream_keeps_detail(
    place_order,
):
    order = place_order()
    staff_cookie = staff_session_header()

    async def scenario():
        korean = await StreamClient(
            f"/api/orders/{order.order_id}/events",
            headers=[(b"accept-language", b"ko-KR,ko;q=0.9")],
        ).start()
        staff = await StreamClient("/api/events", headers=staff_cookie).start()
        await korean.events(1)  # order.created, replayed
        await staff.frames(1)  # the opening comment: subscribed
        await awrite(order, detail="delivery listener: dlv_123 completed")
        (public,) = await korean.events(1)
        (operators,) = await staff.events(1)
        await korean.close()
        await staff.close()
        return public["data"], operators["data"]

    public, operators = run(scenario())
    assert public["message"] == public["detail"] == "주문하신 상품이 배송되었습니다."
    assert operators["detail"] == "delivery listener: dlv_123 completed"
    assert operators["message"] == "Your order has been delivered."


def test_order_stream_resumes_after_the_last_event_id_with_no_gap_or_duplicate(
    place_order,
):
    order = place_order()
    for n in range(3):
        write(order, detail=f"event {n}")
    first, second, *rest = event_ids(order)

    async def scenario():
        client = await StreamClient(
            f"/api/orders/{order.order_id}/events",
            headers=[(b"last-event-id", str(second).encode())],
        ).start()
        replayed = await client.events(len(rest))
        await awrite(order, detail="live")
        live = await client.events(1)
        await client.close()
        return [int(item["id"]) for item in replayed + live]

    assert run(scenario()) == event_ids(order)[2:]


def test_order_stream_of_an_unknown_order_is_a_json_404():
    async def scenario():
        client = await StreamClient("/api/orders/ord_nope/events").start()
        return client.status, json.loads(await client.body())

    status, body = run(scenario())
    assert status == 404
    assert body["error"] == "order_not_found"


def trim_all_but_the_last(order, keep: int) -> list[int]:
    """Age every event of `order` but the last `keep` past the retention, trim
    them, and return the ids trimmed: the ids come from the rows, so the test
    does not depend on where the table's id counter stands."""
    ids = event_ids(order)
    old, kept = ids[:-keep], ids[-keep:]
    OrderEvent.objects.filter(pk__in=old).update(at=timezone.now() - timedelta(days=8))
    assert events_trim() == len(old)
    assert event_ids(order) == kept
    return old


def open_order_stream_from(order, last_id: int, count: int) -> list[dict]:
    async def scenario():
        client = await StreamClient(
            f"/api/orders/{order.order_id}/events", query=f"lastEventId={last_id}"
        ).start()
        frames = await client.frames(count)
        await client.close()
        return frames

    return run(scenario())


def test_a_resume_id_whose_successors_were_trimmed_gets_stream_reset(place_order):
    order = place_order()
    write(order, detail="old")
    write(order, detail="kept")
    created, old = trim_all_but_the_last(order, keep=1)
    (kept,) = event_ids(order)

    # The client has `created`; `old`, which came after it, is gone.
    opening, reset, replayed = open_order_stream_from(order, created, 3)
    assert reset["event"] == "stream.reset"
    assert reset["data"] == {
        "type": "stream.reset",
        "last_event_id": created,
        "detail": reset["data"]["detail"],
    }
    assert "id" not in reset
    assert int(replayed["id"]) == kept  # then what is kept, from the start


def test_a_resume_id_with_nothing_trimmed_after_it_resumes_without_reset(
    place_order,
):
    order = place_order()
    write(order, detail="old")
    write(order, detail="kept")
    _created, old = trim_all_but_the_last(order, keep=1)
    (kept,) = event_ids(order)

    # The client has `old`, the newest trimmed event: it has missed nothing.
    opening, replayed = open_order_stream_from(order, old, 2)
    assert "retry" in opening
    assert replayed["event"] == "delivery.completed"
    assert int(replayed["id"]) == kept


def test_idle_streams_send_a_keepalive_comment(place_order, settings):
    settings.ORDER_STREAM_KEEPALIVE_SECONDS = 0.2
    order = place_order()

    async def scenario():
        client = await StreamClient(f"/api/orders/{order.order_id}/events").start()
        # opening, the replayed event, keep-alive: within a deadline far
        # shorter than the default interval (15 s), so the setting is obeyed.
        frames = await asyncio.wait_for(client.frames(3), timeout=5)
        await client.close()
        return frames

    frames = run(scenario())
    assert frames[2] == {"comment": "keep-alive"}


def test_a_client_that_goes_away_is_forgotten_at_once(place_order):
    order = place_order()

    async def scenario():
        pump = get_pump()
        clients = [
            await StreamClient(f"/api/orders/{order.order_id}/events").start()
            for _ in range(20)
        ]
        assert len(pump.subscribers) == 20
        assert pump.stats.open_streams == 20
        for client in clients:
            client.gone.set()
        # Each stream ends when its client goes, not at the next keep-alive.
        await asyncio.gather(*(asyncio.wait_for(c.task, 5) for c in clients))
        return len(pump.subscribers), pump.stats.open_streams

    assert run(scenario()) == (0, 0)


# The staff stream ---------------------------------------------------------------
def staff_session(*, is_staff: bool = True, permitted: bool = True):
    """A new account's session cookie header, and the account: staff (or not),
    with the permission the staff stream asks (or without)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client

    user = get_user_model().objects.create_user(
        f"user{time.monotonic_ns()}", "", "pw", is_staff=is_staff
    )
    if permitted:
        app_label, codename = VIEW_OPERATIONS.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    return user, [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session}".encode())]


def staff_session_header(**kwargs):
    return staff_session(**kwargs)[1]


@pytest.mark.parametrize(
    ("who", "status", "error"),
    [
        ("anonymous", 403, "not_authenticated"),
        ("customer", 403, "forbidden"),
        ("staff without the permission", 403, "forbidden"),
    ],
)
def test_staff_stream_refuses_anyone_but_permitted_staff_and_never_subscribes(
    who, status, error
):
    """Refused before it subscribes: the caller is never handed an event, and
    does not even start the pump."""
    headers = {
        "anonymous": [],
        "customer": staff_session_header(is_staff=False),
        "staff without the permission": staff_session_header(permitted=False),
    }[who]

    async def scenario():
        client = await StreamClient("/api/events", headers=headers).start()
        body = json.loads(await client.body())
        await asyncio.wait_for(client.task, 5)
        pump = get_pump()
        return client.status, client.headers, body, pump._task, pump.stats.polls

    answered, headers, body, pump_task, polls = run(scenario())
    assert answered == status
    assert headers["content-type"] == "application/json"
    assert body["error"] == error
    assert body["detail"]
    assert (pump_task, polls) == (None, 0)


async def frames_until_the_end(client, within: float) -> list[dict]:
    """Every frame the stream sends until its response ends, within `within`
    seconds."""
    deadline = time.monotonic() + within
    while not client.finished:
        try:
            message = await asyncio.wait_for(
                client.messages.get(), deadline - time.monotonic()
            )
        except TimeoutError:
            raise AssertionError(
                f"the stream stayed open {within} s after {client.buffer!r}"
            ) from None
        client.buffer += message.get("body", b"").decode()
        client.finished = not message.get("more_body", False)
    return [parse_block(block) for block in client.buffer.split("\n\n") if block]


def remove_view_permission(user) -> None:
    app_label, codename = VIEW_OPERATIONS.split(".")
    user.user_permissions.remove(
        Permission.objects.get(content_type__app_label=app_label, codename=codename)
    )


def test_a_staff_stream_whose_permission_is_taken_away_is_closed(settings):
    settings.ORDER_STREAM_KEEPALIVE_SECONDS = 0.4  # a check every 0.2 s
    user, headers = staff_session()

    async def scenario():
        client = await StreamClient("/api/events", headers=headers).start()
        await client.frames(1)
        await sync_to_async(remove_view_permission, thread_sensitive=False)(user)
        removed_at = time.monotonic()
        frames = await frames_until_the_end(client, within=5)
        return frames, time.monotonic() - removed_at

    frames, closed_after = run(scenario())
    closed = [frame for frame in frames if frame.get("event") == "stream.closed"]
    assert len(closed) == 1
    assert closed[0]["data"]["error"] == "forbidden"
    assert closed_after < 0.2 + 1  # one check period, and slack for a busy machine


def test_a_burst_of_openings_does_not_put_off_the_staff_session_check(settings):
    """While every opening thread is taken and the backlog is full (so every
    new opening is refused), the staff streams still check their sessions:
    put off, the check let a stream outlive its session for as long as the
    burst lasted."""
    settings.ORDER_STREAM_KEEPALIVE_SECONDS = 0.4
    settings.ORDER_STREAM_OPEN_THREADS = 1
    settings.ORDER_STREAM_OPEN_BACKLOG = 2
    user, headers = staff_session()
    release = threading.Event()

    async def scenario():
        client = await StreamClient("/api/events", headers=headers).start()
        await client.frames(1)
        openings = stream_threads.for_loop().openings
        burst = [
            asyncio.ensure_future(openings.run(release.wait, 10)) for _ in range(2)
        ]
        await asyncio.sleep(0.05)
        try:
            with pytest.raises(Saturated):
                await openings.run(lambda: None)
            await sync_to_async(remove_view_permission, thread_sensitive=False)(user)
            frames = await frames_until_the_end(client, within=5)
        finally:
            release.set()
            await asyncio.gather(*burst)
        return frames

    closed = [f for f in run(scenario()) if f.get("event") == "stream.closed"]
    assert [frame["data"]["error"] for frame in closed] == ["forbidden"]


def test_staff_stream_without_an_id_starts_live_and_sees_every_order(place_order):
    before = place_order()
    headers = staff_session_header()

    async def scenario():
        client = await StreamClient("/api/events", headers=headers).start()
        await client.frames(1)
        other = await sync_to_async(place_order, thread_sensitive=False)()
        await awrite(before, detail="old order, new event")
        received = await client.events(2)
        await client.close()
        return other, received

    other, received = run(scenario())
    assert [(item["event"], item["data"]["order_id"]) for item in received] == [
        ("order.created", other.order_id),
        ("delivery.completed", before.order_id),
    ]


# Trimming -----------------------------------------------------------------------
def test_events_older_than_the_retention_are_trimmed_and_newer_ones_kept(
    place_order, settings
):
    order = place_order()
    old = write(order)
    OrderEvent.objects.filter(pk=old.pk).update(at=timezone.now() - timedelta(days=8))
    settings.ORDER_EVENT_RETENTION_DAYS = 0
    assert events_trim() == 0  # 0 keeps everything
    settings.ORDER_EVENT_RETENTION_DAYS = 7
    assert events_trim() == 1
    assert OrderEvent.objects.filter(order=order).count() == 1


# Hostile input ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (b'theme={"dark":true}; sessionid=abcdefgh12345678', "abcdefgh12345678"),
        (b'a"b=c; sessionid=abcdefgh12345678; x=y\\z', "abcdefgh12345678"),
        (b"sessionid=abc\x00defghijk", None),  # PostgreSQL refuses a NUL
        (b"sessionid=\xff\xfeabcdefgh", None),
        (b"other=1", None),
    ],
)
def test_the_session_cookie_is_read_as_django_reads_it(cookie, expected):
    scope = {"headers": [(b"cookie", cookie)]}
    assert session_key(scope) == expected


@pytest.mark.parametrize(
    ("order_id", "plausible"),
    [
        ("ord_" + "a" * 32, True),
        ("ord_\x00", False),
        ("x" * 41, False),
        ("ord_\u202e", False),
        ("ord_\ufffd", False),
    ],
)
def test_only_an_id_shaped_like_an_order_id_is_looked_up(order_id, plausible):
    assert could_be_order_id(order_id) is plausible


def test_a_resume_id_past_every_event_is_reset_not_waited_for(place_order):
    order = place_order()
    newest = event_ids(order)[-1]
    opening = plan_opening(last_id=newest + 1000, through=newest, order_pk=order.pk)
    assert opening.reset
    assert [event.id for event in opening.replay] == event_ids(order)
    # An id the pump has not reached yet, but the table has, is no reset.
    opening = plan_opening(last_id=newest, through=newest - 1, order_pk=None)
    assert not opening.reset


# Failures while opening or streaming ---------------------------------------------
def failing_pump() -> EventPump:
    """The pump of the running loop, made to find the database down for good."""

    def database_down(settle):
        raise DatabaseError("the database is restarting")

    pump = EventPump(waker=PollWaker(0.01), read_high_water=database_down)
    pump_module._pumps[asyncio.get_running_loop()] = pump
    return pump


def test_an_opening_whose_pump_cannot_read_the_database_is_a_json_503(
    place_order, monkeypatch
):
    order = place_order()
    monkeypatch.setattr(stream_asgi, "PUMP_WAIT_SECONDS", 0.3)

    async def scenario():
        failing_pump()
        client = await StreamClient(f"/api/orders/{order.order_id}/events").start()
        body = json.loads(await client.body())
        await asyncio.wait_for(client.task, 2)
        return client.status, client.headers, body

    status, headers, body = run(scenario())
    assert status == 503
    assert int(headers["retry-after"]) > 0
    assert body["error"] == "stream_unavailable"


def test_a_client_that_leaves_while_its_opening_waits_is_forgotten_at_once(
    place_order, monkeypatch
):
    order = place_order()
    monkeypatch.setattr(stream_asgi, "PUMP_WAIT_SECONDS", 30)

    async def scenario():
        pump = failing_pump()
        client = StreamClient(f"/api/orders/{order.order_id}/events")
        client.task = asyncio.ensure_future(
            application(client.scope, client._receive, client.messages.put)
        )
        await asyncio.sleep(0.2)
        assert not client.task.done()  # waiting for the pump
        client.gone.set()
        await asyncio.wait_for(client.task, 1)
        return client.messages.qsize(), len(pump.subscribers)

    assert run(scenario()) == (0, 0)


def test_a_programming_error_while_opening_is_a_json_500_and_a_failure_record(
    place_order, monkeypatch
):
    from orders.models import FailureRecord

    order = place_order()

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(stream_asgi, "open_stream", broken)

    async def scenario():
        client = await StreamClient(f"/api/orders/{order.order_id}/events").start()
        return client.status, json.loads(await client.body())

    status, body = run(scenario())
    assert (status, body["error"]) == (500, "internal_error")
    record = FailureRecord.objects.get()
    assert record.task == "stream order_events"
    assert record.args == ["GET", f"/api/orders/{order.order_id}/events"]
    assert record.exception_type == "KeyError"


def test_one_bug_in_the_streams_of_many_orders_is_one_failure_group(
    place_order, monkeypatch
):
    """The task of a stream's failure names the endpoint, never the order: with
    the path in it, every order made a failure group (and a mail) of its own."""
    from orders.models import FailureGroup, FailureRecord

    orders = [place_order() for _ in range(3)]

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(stream_asgi, "open_stream", broken)

    async def scenario():
        for order in orders:
            client = await StreamClient(f"/api/orders/{order.order_id}/events").start()
            assert client.status == 500
            await asyncio.wait_for(client.task, 5)

    run(scenario())
    tasks = set(FailureRecord.objects.values_list("task", flat=True))
    assert tasks == {"stream order_events"}
    assert not any(order.order_id in task for order in orders for task in tasks)
    assert FailureRecord.objects.count() == 3
    assert FailureGroup.objects.count() == 1


def test_a_staff_stream_that_cannot_check_its_session_ends_its_response(
    place_order, settings, monkeypatch
):
    settings.ORDER_STREAM_KEEPALIVE_SECONDS = 0.2
    headers = staff_session_header()

    def database_down(scope):
        raise DatabaseError("the database is restarting")

    async def scenario():
        client = await StreamClient("/api/events", headers=headers).start()
        monkeypatch.setattr(stream_recheck, "check_staff", database_down)
        ended = False
        while not ended:  # keep-alives, until the last body message
            message = await asyncio.wait_for(client.messages.get(), 3)
            ended = not message.get("more_body", False)
        await asyncio.wait_for(client.task, 2)
        return client.status

    assert run(scenario()) == 200
