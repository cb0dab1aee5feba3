"""SSE streams read over real HTTP from a real daphne, with real workers writing
the events (tests/stack.py)."""

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.expected import FAIL_TWICE_EVENTS
from tests.sse import read_sse
from tests.stack import wait_until

pytestmark = pytest.mark.e2e

TERMINAL = {"order.completed", "order.failed"}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def read_events(
    client, url, *, headers=None, stop_after=None, until=TERMINAL, within=30.0
):
    """(id, type, data, received_at) of each event until a terminal one, or until
    `stop_after` events, within `within` seconds; the stream is then closed by
    the client."""
    found = []
    what = f"{stop_after or 'a terminal'} event(s) from {url}"
    with read_sse(client, url, headers=headers, within=within, what=what) as source:
        assert source.response.status_code == 200
        for sse in source.events():
            if not sse.event or not sse.data or sse.event == "message":
                continue
            found.append(
                (int(sse.id), sse.event, json.loads(sse.data), datetime.now(UTC))
            )
            if sse.event in until or (stop_after and len(found) == stop_after):
                break
    return found


def stream_stats(staff) -> dict:
    response = staff.get("/api/streams")
    assert response.status_code == 200, response.text
    return response.json()


def open_raw_stream(port: int, path: str, *, within: float = 10) -> socket.socket:
    """An SSE request on a bare socket: 200 streams cost the test no threads.
    Returns once the response's head is in, within `within` seconds."""
    deadline = time.monotonic() + within
    sock = socket.create_connection(("127.0.0.1", port), timeout=within)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream"
    sock.sendall(f"{request}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        left = deadline - time.monotonic()
        assert left > 0, f"no response head for {path} within {within} s: {head!r}"
        sock.settimeout(left)
        chunk = sock.recv(4096)
        assert chunk, "the server closed the stream"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def process_counts(pid: int) -> tuple[int, int]:
    """(open file descriptors, OS threads) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(
        next(
            line for line in status.splitlines() if line.startswith("Threads:")
        ).split()[1]
    )
    return fds, threads


def open_sockets(pid: int) -> int:
    """The sockets among a process's file descriptors (not its files: the
    streams' database threads keep a connection each, three files on SQLite,
    from their first opening on)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except FileNotFoundError:
            continue  # closed while listed
    return count


@pytest.fixture(scope="module")
def staff(stack):
    client = stack.staff_client()
    yield client
    client.close()


def test_an_order_failing_twice_streams_exactly_its_nine_events(stack):
    placed = stack.place(fail_times=2)
    opened_at = datetime.now(UTC)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        events = read_events(client, placed["events_url"])
    assert [event_type for _, event_type, _, _ in events] == FAIL_TWICE_EVENTS
    ids = [event_id for event_id, *_ in events]
    assert ids == sorted(set(ids))
    assert ids == [
        event["event_id"] for event in stack.status(placed["order_id"])["events"]
    ]
    for event_id, event_type, data, _ in events:
        assert data["event_id"] == event_id
        assert data["type"] == event_type
        assert data["order_id"] == placed["order_id"]
    # Events written after the stream opened reached it live, not as a replay.
    # How fast is the benchmark's to say (`manage.py bench service`: event
    # latency), not a timed test's.
    live = [data for _, _, data, _ in events if parse_time(data["at"]) > opened_at]
    assert len(live) >= 4


def test_a_stream_resumed_with_last_event_id_continues_with_no_gap_or_duplicate(stack):
    placed = stack.place(fail_times=2)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        first = read_events(client, placed["events_url"], stop_after=2)
        last_id = first[-1][0]
        rest = read_events(
            client, placed["events_url"], headers={"Last-Event-ID": str(last_id)}
        )
    events = first + rest
    assert [event_type for _, event_type, _, _ in events] == FAIL_TWICE_EVENTS
    ids = [event_id for event_id, *_ in events]
    assert ids == sorted(set(ids))
    assert ids == [
        event["event_id"] for event in stack.status(placed["order_id"])["events"]
    ]


def test_the_query_resume_id_works_like_the_header(stack):
    placed = stack.place()
    document = stack.wait_for_terminal(placed["order_id"])
    first_id = document["events"][0]["event_id"]
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        events = read_events(client, f"{placed['events_url']}?lastEventId={first_id}")
    assert [event_id for event_id, *_ in events] == [
        event["event_id"] for event in document["events"][1:]
    ]


def test_staff_stream_sees_the_events_of_every_order_and_skips_no_id(stack):
    order_ids, seen = stack.watch_staff_stream_while_placing(6, threads=6)
    ours = sorted(event_id for event_id, order_id in seen if order_id in order_ids)
    assert ours == stack.event_ids_of(order_ids)
    assert [event_id for event_id, _ in seen] == sorted({i for i, _ in seen})


def test_staff_stream_refuses_anonymous_callers_with_json(stack):
    response = httpx.get(f"{stack.base_url}/api/events", timeout=10)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not_authenticated"
    assert httpx.get(f"{stack.base_url}/api/streams", timeout=10).status_code == 403


@pytest.mark.parametrize(
    ("headers", "query"), [({"Last-Event-ID": "12abc"}, ""), ({}, "?lastEventId=-5")]
)
def test_a_malformed_resume_id_is_a_json_400(stack, headers, query):
    placed = stack.place()
    response = httpx.get(
        f"{stack.base_url}{placed['events_url']}{query}", headers=headers, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_last_event_id"


def test_a_stream_of_an_unknown_order_is_a_json_404(stack):
    response = httpx.get(f"{stack.base_url}/api/orders/ord_unknown/events", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"] == "order_not_found"


def test_stream_answers_with_the_sse_headers(stack):
    placed = stack.place()
    with (
        httpx.Client(base_url=stack.base_url, timeout=10) as client,
        read_sse(
            client, placed["events_url"], within=10, what="the stream's first bytes"
        ) as source,
    ):
        response = source.response
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = next(source.text())
    assert "retry: " in first


def test_poll_queries_do_not_grow_from_one_client_to_fifty(stack, staff):
    """Each poll of the web process's pump is one query, whether one stream is
    open or fifty (counted per poll, not per second: the machine's speed
    does not enter into it)."""
    placed = stack.place()
    path = placed["events_url"]
    sockets = [open_raw_stream(stack.port, path)]
    try:
        wait_until(
            lambda: stream_stats(staff)["open_streams"] == 1,
            timeout=5,
            what="one stream",
        )

        def polls_and_queries() -> tuple[int, int]:
            before = stream_stats(staff)
            wait_until(
                lambda: stream_stats(staff)["polls"] >= before["polls"] + 5,
                timeout=30,
                what="five polls",
            )
            after = stream_stats(staff)
            return (
                after["polls"] - before["polls"],
                after["queries"] - before["queries"],
            )

        one_polls, one_queries = polls_and_queries()
        sockets += [open_raw_stream(stack.port, path) for _ in range(49)]
        wait_until(
            lambda: stream_stats(staff)["open_streams"] == 50,
            timeout=5,
            what="fifty streams",
        )
        fifty_polls, fifty_queries = polls_and_queries()
    finally:
        for sock in sockets:
            sock.close()
    print(
        f"queries per poll: {one_queries / one_polls:.2f} with 1 client, "
        f"{fifty_queries / fifty_polls:.2f} with 50"
    )
    assert one_queries == one_polls
    assert fifty_queries == fifty_polls


def test_two_hundred_dropped_streams_leave_nothing_behind(stack, staff):
    placed = stack.place()
    wait_until(
        lambda: stream_stats(staff)["open_streams"] == 0, timeout=5, what="no streams"
    )
    baseline = stream_stats(staff)
    # The web process keeps its long-lived objects out of the collector's sight
    # (orders/live/gc_freeze.py): Django and the apps alone are tens of thousands.
    assert baseline["collector"]["frozen_objects"] > 10_000
    _fds, threads_before = process_counts(stack.web.pid)
    sockets_before = open_sockets(stack.web.pid)
    started = time.monotonic()
    sockets = [open_raw_stream(stack.port, placed["events_url"]) for _ in range(200)]
    opened_in = time.monotonic() - started
    try:
        wait_until(
            lambda: stream_stats(staff)["open_streams"] == 200,
            timeout=10,
            what="200 streams",
        )
        _fds_open, threads_open = process_counts(stack.web.pid)
        assert threads_open <= threads_before + 4  # no thread per stream
    finally:
        for sock in sockets:
            sock.close()
    wait_until(
        lambda: stream_stats(staff)["open_streams"] == 0,
        timeout=5,
        interval=0.05,
        what="streams to close",
    )
    after = stream_stats(staff)
    assert after["subscribers"] == baseline["subscribers"] == 0
    assert after["tasks"] <= baseline["tasks"] + 2
    wait_until(
        lambda: open_sockets(stack.web.pid) <= sockets_before + 2,
        timeout=5,
        what="sockets to close",
    )
    print(f"200 streams opened in {opened_in:.2f} s")


def test_pages_are_served_by_daphne_with_their_scripts(stack):
    placed = stack.place()
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        assert 'data-role="order-form"' in client.get("/").text
        page = client.get(placed["page_url"])
        assert page.status_code == 200
        assert f'data-order-id="{placed["order_id"]}"' in page.text
        for script in ("live.js", "order.js", "dashboard.js", "storefront.js"):
            response = client.get(f"/static/orders/{script}")
            assert response.status_code == 200, script
            assert "javascript" in response.headers["content-type"]
        assert client.get("/dashboard/").status_code == 302
