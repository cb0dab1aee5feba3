"""Clients that hang up at every moment of a stream's life, against a real
daphne (tests/stack.py): a client that goes away is a normal event, never a
failure record, a failure group or a mail (issue 18, section 2)."""

import random
import socket
import sqlite3
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.test_streams_e2e import stream_stats
from tests.stack import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.alone]

ORDERS = 20
# Connect, send the request, hang up: this many times in all, over the order
# streams and the staff stream, from this many threads at once.
HANGUPS = 4000
THREADS = 8
# How long a client waits before it hangs up (milliseconds): from before the
# request is read to after the first frames, so every step of an opening
# (subscribing, authorizing, the first write, the replay, the first events)
# meets a client that has just left.
DELAYS_MS = (0, 0, 0.2, 0.5, 1, 2, 3, 5, 8, 12, 20, 30)


def failure_records(stack) -> list[tuple]:
    """Every failure record and failure group of the stack: what the mailer
    would mail about."""
    path = stack.workdir / "db.sqlite3"  # tests/stack.py: local_env
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as database:
        return (
            database.execute(
                "SELECT task, exception_type, message FROM orders_failurerecord"
            ).fetchall()
            + database.execute("SELECT fingerprint FROM orders_failuregroup").fetchall()
        )


def hang_up(
    port: int, request: bytes, delay_ms: float, *, reset: bool, streaming: bool
) -> None:
    """Send `request`, wait `delay_ms` (after the response's first bytes, if
    `streaming`), and close: with a FIN, or with a reset (SO_LINGER 0), as a
    browser tab that is killed does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        if reset:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
        sock.sendall(request)
        if streaming:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        if delay_ms:
            time.sleep(delay_ms / 1000)
    finally:
        sock.close()


def test_thousands_of_clients_hanging_up_leave_no_failure_record(stack):
    staff = stack.staff_client()
    orders = [stack.place()["order_id"] for _ in range(ORDERS)]
    session = staff.cookies["sessionid"]
    requests = [
        f"GET /api/orders/{order_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
        for order_id in orders
    ]
    requests.append(
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Accept: text/event-stream\r\nCookie: sessionid={session}\r\n\r\n".encode()
    )
    randomness = random.Random(18)
    plan = [
        (
            requests[n % len(requests)],
            randomness.choice(DELAYS_MS),
            randomness.random() < 0.5,
            randomness.random() < 0.25,
        )
        for n in range(HANGUPS)
    ]
    assert failure_records(stack) == []
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(
            pool.map(
                lambda step: hang_up(
                    stack.port, step[0], step[1], reset=step[2], streaming=step[3]
                ),
                plan,
            )
        )
    wait_until(
        lambda: stream_stats(staff)["open_streams"] == 0,
        timeout=30,
        what="every stream of a client that hung up to end",
    )
    stats = stream_stats(staff)
    staff.close()
    # The hang-ups reached every step: a quarter of them after the response began.
    assert stats["opened_total"] >= HANGUPS // 5, stats
    assert failure_records(stack) == []
    log = stack.web_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
