"""Opening a stream: the resume id (Last-Event-ID), who may read the stream, and
what it replays before going live. One trip to the database."""

from dataclasses import dataclass
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from django.conf import settings
from django.http.cookie import parse_cookie
from django.utils import translation

from orders.api.shapes import LAST_EVENT_ID_PATTERN, matches
from orders.live.events import (
    StreamEvent,
    newest_event_id,
    oldest_event_id,
    read_order_opening,
    read_replay,
)
from orders.models import Order
from orders.permissions import VIEW_OPERATIONS


class Refusal(Exception):
    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def parse_last_event_id(scope: dict) -> int | None:
    """The resume id from the Last-Event-ID header (what a browser's own reconnect
    sends) or else the ?lastEventId= query; None when neither gives one (empty
    is none). Each that is sent must have the shape the document gives it
    (orders/api/shapes.py), even when the other one wins."""
    header = None
    for name, value in scope.get("headers", ()):
        if name.lower() == b"last-event-id":
            header = value.decode("latin-1")
    query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(
        "lastEventId", []
    )
    given = [raw for raw in [header, *query[-1:]] if raw is not None]
    if not all(matches(LAST_EVENT_ID_PATTERN, raw) for raw in given):
        raise Refusal(
            400,
            "invalid_last_event_id",
            "Last-Event-ID must be the id of an event (a non-negative integer).",
        )
    return next((int(raw) for raw in given if raw), None)


def could_be_order_id(order_id: str) -> bool:
    """Whether `order_id` has the shape of a stored one: printable ASCII that fits
    the column. Anything else is no order of ours, and is not sent to the
    database (PostgreSQL refuses a NUL, for one)."""
    limit = Order._meta.get_field("order_id").max_length
    return len(order_id) <= limit and order_id.isascii() and order_id.isprintable()


def stream_language(scope: dict) -> str:
    """The language of the pages this client reads, as Django's LocaleMiddleware
    picks it for a view: the language cookie (the switch on the pages), else
    Accept-Language (an EventSource sends both), else LANGUAGE_CODE."""
    headers = {}
    cookies = []
    for name, value in scope.get("headers", ()):
        if name.lower() == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name.lower() == b"accept-language":
            headers["HTTP_ACCEPT_LANGUAGE"] = value.decode("latin-1")
    request = SimpleNamespace(COOKIES=parse_cookie("; ".join(cookies)), META=headers)
    return translation.get_language_from_request(request)


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
    """The staff stream (and GET /api/streams) needs a staff session whose
    account holds VIEW_OPERATIONS, the permission the operations views ask:
    403 without a login, for other accounts, and for staff without it (the
    same answers as the staff JSON endpoints). Django's get_user() also ends
    a session whose user was deactivated or changed password since logging
    in."""
    from django.contrib.auth import get_user

    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key(scope))
    user = get_user(SimpleNamespace(session=session))
    if not user.is_authenticated:
        raise Refusal(403, "not_authenticated", "Log in as staff to use this stream.")
    if not user.is_staff:
        raise Refusal(403, "forbidden", "This stream is for staff accounts only.")
    if not user.has_perm(VIEW_OPERATIONS):
        raise Refusal(
            403,
            "forbidden",
            f"This stream needs the {VIEW_OPERATIONS} permission; "
            "ask an administrator for it.",
        )


@dataclass
class Opening:
    replay: list[StreamEvent]  # the first page; more follow if it is full
    reset: bool
    resume_from: int  # the client has every event up to here
    through: int  # the pump's cursor when the stream subscribed
    last_id: int | None  # the resume id the client asked for
    order_pk: int | None  # the order whose events to replay; None: all


def open_stream(*, order_id: str | None, last_id: int | None, through: int) -> Opening:
    """Whether the order exists, and what the stream replays up to `through`:
    the one trip to the database an order stream's opening makes (on the
    openings' threads). Raises Refusal for an unknown order. The staff stream
    (`order_id` None) has had its session checked before it subscribed
    (check_staff): this plans its replay only."""
    if order_id is None:
        return plan_opening(last_id=last_id, through=through, order_pk=None)
    if last_id is None:
        # A page that opens: the order and its history in one statement.
        order_pk, replay = read_order_opening(order_id, through=through)
        if order_pk is None:
            raise Refusal(404, "order_not_found", f"No order with id {order_id!r}.")
        return Opening(
            replay=replay,
            reset=False,
            resume_from=0,
            through=through,
            last_id=None,
            order_pk=order_pk,
        )
    order_pk = find_order_pk(order_id)
    return plan_opening(last_id=last_id, through=through, order_pk=order_pk)


def plan_opening(*, last_id: int | None, through: int, order_pk: int | None) -> Opening:
    """What a new stream sends before going live.

    An order stream without an id replays the order's whole history; the staff
    stream without one starts live. A resume id older than the oldest kept event
    gets stream.reset, then the stream continues as if opened without an id; so
    does an id newer than any event (not one of this database's: it was
    reset, or the id is made up), which would otherwise hold back every event
    up to it.
    """
    asked, reset = last_id, False
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
            return Opening(
                replay=[],
                reset=reset,
                resume_from=max(through, newest),
                through=through,
                last_id=asked,
                order_pk=None,
            )
        last_id = 0
    replay = read_replay(after=last_id, through=through, order_pk=order_pk)
    return Opening(
        replay=replay,
        reset=reset,
        resume_from=last_id,
        through=through,
        last_id=asked,
        order_pk=order_pk,
    )
