"""The stream caps against a real daphne (tests/stack.py): past its client's cap a
stream is a 429, past the process's a 503, and `/healthz` is answered all the
while; unset, the process cap follows the file-descriptor limit, which the web
process raises to its hard limit at start-up."""

import contextlib
import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest

from orders.live.caps import streams_allowed_by
from orders.workers import processes
from tests.stack import make_stack, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.alone]


def open_stream(port: int, path: str, *, headers: str = "", within: float = 10):
    """An SSE request on a bare socket; returns the socket and the response's
    status and head, once the head is in."""
    deadline = time.monotonic() + within
    sock = socket.create_connection(("127.0.0.1", port), timeout=within)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        left = deadline - time.monotonic()
        assert left > 0, f"no response head for {path} within {within} s: {head!r}"
        sock.settimeout(left)
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection: {head!r}"
        head += chunk
    return sock, int(head.split(b" ", 2)[1]), head


def refused_body(sock: socket.socket, head: bytes) -> dict:
    """The JSON body of a refusal whose head `head` has come in."""
    length = int(re.search(rb"content-length: (\d+)", head, re.I)[1])
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += sock.recv(4096)
    return json.loads(body)


def healthy(stack) -> bool:
    return httpx.get(f"{stack.base_url}/healthz", timeout=10).status_code == 200


@pytest.fixture
def capped_stack(tmp_path):
    running = make_stack(
        tmp_path,
        ORDER_STREAMS_PER_CLIENT="2",
        ORDER_STREAMS_PER_PROCESS="5",
        TRUSTED_PROXY_HOPS="1",
    ).start()
    yield running
    running.stop()


def test_streams_past_a_cap_are_refused_and_healthz_still_answers(capped_stack):
    stack = capped_stack
    path = stack.place()["events_url"]
    held = []

    def from_client(address: str):
        return open_stream(stack.port, path, headers=f"X-Forwarded-For: {address}\r\n")

    try:
        for _ in range(2):
            sock, status, _head = from_client("203.0.113.7")
            held.append(sock)
            assert status == 200
        sock, status, head = from_client("203.0.113.7")
        with contextlib.closing(sock):
            assert status == 429
            assert re.search(rb"retry-after: \d+", head, re.I), head
            assert refused_body(sock, head)["error"] == "too_many_streams"
        assert healthy(stack)
        for address in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
            sock, status, _head = from_client(address)
            held.append(sock)
            assert status == 200
        sock, status, head = from_client("198.51.100.9")
        with contextlib.closing(sock):
            assert status == 503
            assert re.search(rb"retry-after: \d+", head, re.I), head
            assert refused_body(sock, head)["error"] == "stream_unavailable"
        assert healthy(stack)
        # A stream that ends gives its place back.
        held.pop().close()

        def reopened():
            sock, status, _head = from_client("198.51.100.9")
            if status == 200:
                held.append(sock)
                return True
            sock.close()
            return False

        wait_until(reopened, timeout=10, what="a place for a new stream")
    finally:
        for sock in held:
            sock.close()


def with_file_limit(monkeypatch, soft: int, hard: int) -> None:
    """Start the stack's daphne with this limit of file descriptors, as a
    service manager would (prlimit execs daphne: same pid)."""
    web_command = processes.web_command
    monkeypatch.setattr(
        processes,
        "web_command",
        lambda host, port: [
            "prlimit",
            f"--nofile={soft}:{hard}",
            *web_command(host, port),
        ],
    )


def open_files_limit(pid: int) -> tuple[int, int]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_the_web_process_raises_its_descriptor_limit_at_start(tmp_path, monkeypatch):
    with_file_limit(monkeypatch, 256, 4096)
    stack = make_stack(tmp_path)
    stack.migrate()
    stack.start_web()
    try:
        assert open_files_limit(stack.web.pid) == (4096, 4096)
        log = stack.web_log.read_text()
        assert (
            "file descriptors: soft limit 4096 (was 256, hard limit 4096): "
            f"up to {streams_allowed_by(4096)} streams in this process"
        ) in log, log
    finally:
        stack.stop()


def test_the_descriptor_limit_caps_streams_before_it_runs_out(tmp_path, monkeypatch):
    """One client opens streams until they are refused: daphne keeps the
    descriptors it needs to answer anything else. Without the cap it ran out,
    and /healthz was reset."""
    limit = 250
    cap = streams_allowed_by(limit)
    with_file_limit(monkeypatch, limit, limit)
    stack = make_stack(tmp_path)
    stack.migrate()
    stack.start_web()
    held = []
    try:
        path = stack.place()["events_url"]
        statuses = []
        for _ in range(cap + 20):
            sock, status, _head = open_stream(stack.port, path)
            statuses.append(status)
            if status == 200:
                held.append(sock)
            else:
                sock.close()
        assert statuses == [200] * cap + [503] * 20
        assert healthy(stack)
        assert stack.place()["order_id"]
    finally:
        for sock in held:
            sock.close()
        stack.stop()
