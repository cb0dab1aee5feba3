"""The SSE endpoints against hostile input and ending sessions, over real HTTP
from a real daphne (tests/stack.py): every bad request is a 4xx in the JSON
error shape and nothing crashes; the staff stream reads its session cookie as
Django does and closes once the session ends."""

import json
import re
import secrets
import socket
import time

import httpx
import pytest

from orders.permissions import VIEW_OPERATIONS
from tests.sse import StreamDeadlinePassed, read_sse
from tests.stack import make_stack

pytestmark = pytest.mark.e2e

# Short, so a stream whose session ended is closed within seconds.
KEEPALIVE_SECONDS = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = make_stack(
        tmp_path_factory.mktemp("stack"),
        ORDER_STREAM_KEEPALIVE_SECONDS=str(KEEPALIVE_SECONDS),
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def order(stack):
    placed = stack.place()
    stack.wait_for_terminal(placed["order_id"])
    return placed


def assert_json_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str)
    assert body["detail"]


def raw_request(port: int, request: bytes, *, within: float = 10) -> bytes:
    """Send bytes no HTTP client would send; the whole answer, read until the
    server closes or `within` seconds pass."""
    deadline = time.monotonic() + within
    with socket.create_connection(("127.0.0.1", port), timeout=within) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            left = deadline - time.monotonic()
            assert left > 0, f"no whole answer within {within} s: {answer!r}"
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def assert_no_crash_logged(stack) -> None:
    log = stack.web_log.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert not re.search(r'" 5\d\d ', log), log[-4000:]


# --- resume ids ---------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        b"9" * 5000,  # thousands of characters
        b"99999999999999999999999999",  # past any integer column
        b"-1",
        b"1e9",
        b"0x10",
        b"12abc",
        "١٢".encode(),  # Arabic-Indic digits: str.isdigit() says yes
        b"\xff\xfe\xfa",  # not UTF-8
        b"\xe9",  # latin-1
        b"1\t2",
    ],
)
def test_an_absurd_last_event_id_header_is_a_json_400(stack, order, value):
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        response = client.get(order["events_url"], headers={"Last-Event-ID": value})
    assert_json_error(response, 400, "invalid_last_event_id")
    assert_no_crash_logged(stack)


@pytest.mark.parametrize(
    "query",
    [
        "lastEventId=%FF%FE",
        "lastEventId=%00",
        "lastEventId=" + "1" * 3000,
        "lastEventId=-5",
        "lastEventId=%E2%82%AC",
        "lastEventId=1&lastEventId=nope",
    ],
)
def test_a_malformed_resume_id_in_the_query_is_a_json_400(stack, order, query):
    response = httpx.get(f"{stack.base_url}{order['events_url']}?{query}", timeout=10)
    assert_json_error(response, 400, "invalid_last_event_id")
    assert_no_crash_logged(stack)


def test_a_query_string_without_a_resume_id_opens_the_stream(stack, order):
    with (
        httpx.Client(base_url=stack.base_url, timeout=10) as client,
        read_sse(
            client,
            f"{order['events_url']}?%%%&=&lastEventId&x=%FF",
            within=10,
            what="the order's first event",
        ) as source,
    ):
        assert source.response.status_code == 200
        first = next(source.named_events())
    assert first.event == "order.created"


def test_a_resume_id_newer_than_any_event_resets_rather_than_starving(stack, order):
    """An id past every event cannot be one this database handed out: left
    alone it would hold back every event up to it."""
    with (
        httpx.Client(base_url=stack.base_url, timeout=10) as client,
        read_sse(
            client,
            order["events_url"],
            headers={"Last-Event-ID": "9" * 18},
            within=10,
            what="stream.reset and the order's first event",
        ) as source,
    ):
        assert source.response.status_code == 200
        events = source.named_events()
        reset, first = next(events), next(events)
    assert reset.event == "stream.reset"
    assert json.loads(reset.data)["last_event_id"] == int("9" * 18)
    assert first.event == "order.created"


# --- paths, methods and bytes no client sends ---------------------------------
@pytest.mark.parametrize(
    "order_id",
    [
        "%00",
        "ord_%00",
        "%FF%FE",
        "x" * 41,
        "y" * 5000,
        "ord_%E2%80%AE",
        "%20",
        "%2E%2E",
    ],
)
def test_a_bad_order_id_is_a_json_404(stack, order_id):
    response = httpx.get(f"{stack.base_url}/api/orders/{order_id}/events", timeout=10)
    assert_json_error(response, 404, "order_not_found")
    assert len(response.content) < 500  # the id is not echoed back at length
    assert_no_crash_logged(stack)


@pytest.mark.parametrize("path", ["/api/events", "/api/streams"])
def test_a_cookie_header_that_is_not_utf8_is_no_session(stack, path):
    response = httpx.get(
        f"{stack.base_url}{path}",
        headers={"Cookie": b"sessionid=\xff\xfe\x80abcdefgh; csrftoken=\xc3("},
        timeout=10,
    )
    assert_json_error(response, 403, "not_authenticated")
    assert_no_crash_logged(stack)


def test_a_session_cookie_with_control_characters_is_no_session(stack):
    response = httpx.get(
        f"{stack.base_url}/api/events",
        headers={"Cookie": b"sessionid=abc\x01\x7fdefghijk"},
        timeout=10,
    )
    assert_json_error(response, 403, "not_authenticated")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD", "BREW"])
def test_a_stream_answers_another_method_with_a_json_405(stack, order, method):
    response = httpx.request(
        method, f"{stack.base_url}{order['events_url']}", timeout=10
    )
    assert response.status_code == 405
    # GET, and OPTIONS (answered 204 with Allow): orders/api/methods.py.
    assert response.headers["allow"] == "GET, OPTIONS"
    if method != "HEAD":
        assert response.json()["error"] == "method_not_allowed"


def test_raw_bytes_in_a_resume_header_are_a_json_400(stack, order):
    answer = raw_request(
        stack.port,
        b"GET " + order["events_url"].encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nLast-Event-ID: \x80\x81\xc0\xaf\xed\xa0\x80\r\n"
        b"Connection: close\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert json.loads(body)["error"] == "invalid_last_event_id"


def test_the_server_still_streams_after_all_of_that(stack, order):
    with (
        httpx.Client(base_url=stack.base_url, timeout=10) as client,
        read_sse(client, order["events_url"], within=10, what="an event") as source,
    ):
        assert source.response.status_code == 200
        assert next(source.named_events()).event == "order.created"
    assert_no_crash_logged(stack)


# --- the staff session ----------------------------------------------------------
def new_staff_account(stack, *, permitted: bool = True) -> tuple[str, str]:
    """A staff account of this test's own (tests change it), with the
    permission the staff stream asks (orders.permissions.VIEW_OPERATIONS) or
    without."""
    username, password = f"staff-{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    app_label, codename = VIEW_OPERATIONS.split(".")
    grant = (
        "; from django.contrib.auth.models import Permission; "
        "user.user_permissions.add(Permission.objects.get("
        f"content_type__app_label={app_label!r}, codename={codename!r}))"
        if permitted
        else ""
    )
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"user = User.objects.create_user({username!r}, password={password!r}, "
        f"is_staff=True){grant}",
    )
    return username, password


def test_staff_without_the_permission_to_view_operations_is_refused(stack):
    client = stack.log_in(*new_staff_account(stack, permitted=False))
    for path in ("/api/events", "/api/streams"):
        assert_json_error(client.get(path), 403, "forbidden")
    client.close()


def change_account(stack, username: str, change: str) -> None:
    stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        f"user = User.objects.get(username={username!r}); {change}; user.save()",
    )


def test_a_malformed_unrelated_cookie_does_not_log_staff_out(stack):
    client = stack.log_in(*new_staff_account(stack))
    session = client.cookies["sessionid"]
    # Cookies another script on the site may set: not RFC 6265, but Django
    # skips them and reads the rest.
    cookie = f'theme={{"dark":true}}; a"b=c; sessionid={session}; x=y\\z'
    with (
        httpx.Client(base_url=stack.base_url, timeout=10) as bare,
        read_sse(
            bare,
            "/api/events",
            headers={"Cookie": cookie},
            within=10,
            what="the staff stream",
        ) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
    stats = httpx.get(
        f"{stack.base_url}/api/streams", headers={"Cookie": cookie}, timeout=10
    )
    assert stats.status_code == 200, stats.text
    client.close()


def read_until_closed(client: httpx.Client, end_session) -> tuple[dict, float]:
    """Open the staff stream, end its session with `end_session()`, and read
    until the stream closes; returns the stream.closed data and how long after
    the session ended the stream closed."""
    within = KEEPALIVE_SECONDS * 3 + 30  # the setup (a manage.py run) included
    with read_sse(
        client, "/api/events", within=within, what="the stream to close"
    ) as source:
        assert source.response.status_code == 200
        events = source.named_events()
        end_session()
        ended_at = time.monotonic()
        closed = [sse for sse in events if sse.event == "stream.closed"]
        closed_after = time.monotonic() - ended_at
    assert len(closed) == 1
    return json.loads(closed[0].data), closed_after


@pytest.mark.alone
@pytest.mark.parametrize(
    ("ending", "error"),
    [
        ("logout", "not_authenticated"),
        ("deactivated", "not_authenticated"),
        ("password changed", "not_authenticated"),
        ("staff status removed", "forbidden"),
        ("permission removed", "forbidden"),
    ],
)
def test_a_staff_stream_whose_session_ends_is_closed_within_the_keepalive(
    stack, ending, error
):
    username, password = new_staff_account(stack)
    client = stack.log_in(username, password)

    def end_session():
        if ending == "logout":  # in another tab, say
            client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
            assert client.post("/admin/logout/").status_code in {200, 302}
        elif ending == "deactivated":
            change_account(stack, username, "user.is_active = False")
        elif ending == "password changed":
            change_account(stack, username, "user.set_password('another-one')")
        elif ending == "permission removed":
            change_account(stack, username, "user.user_permissions.clear()")
        else:
            change_account(stack, username, "user.is_staff = False")

    data, closed_after = read_until_closed(client, end_session)
    assert data["type"] == "stream.closed"
    assert data["error"] == error
    assert data["detail"]
    # Within the keep-alive interval, with slack for a loaded machine.
    assert closed_after < KEEPALIVE_SECONDS + 2, closed_after
    reopened = client.get("/api/events")
    assert_json_error(reopened, 403, error)
    client.close()


def test_a_staff_stream_whose_session_lives_stays_open(stack):
    client = stack.log_in(*new_staff_account(stack))
    with read_sse(
        client, "/api/events", within=KEEPALIVE_SECONDS * 4, what="keep-alives"
    ) as source:
        assert source.response.status_code == 200
        comments = 0
        for line in source.lines():
            assert not line.startswith("event: stream.closed")
            comments += line == ": keep-alive"
            if comments == 3:  # three keep-alive intervals: six session checks
                break
    client.close()


def test_a_read_that_only_gets_keepalives_still_ends_at_its_deadline(stack, order):
    """The tests' own SSE reader (tests/sse.py): keep-alives restart httpx's read
    timeout, so the overall deadline is what ends a wait for an event that
    never comes."""
    started = time.monotonic()
    with (
        httpx.Client(base_url=stack.base_url, timeout=30) as client,
        pytest.raises(StreamDeadlinePassed, match="an event that never comes"),
        read_sse(
            client,
            order["events_url"],
            within=KEEPALIVE_SECONDS * 2.5,
            what="an event that never comes",
        ) as source,
    ):
        keepalives = 0
        for line in source.lines():
            keepalives += line == ": keep-alive"
    assert keepalives >= 1  # the stream was alive all along
    assert time.monotonic() - started < KEEPALIVE_SECONDS * 2.5 + 5
