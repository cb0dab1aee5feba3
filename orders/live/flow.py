"""Backpressure for the streams under daphne.

ASGI gives none of its own, and daphne's `send()` never waits: what a client did
not read piled up in the web process without bound (measured: five staff
streams whose clients never read fell 8,054 events behind and were never cut
off). Here a stream registers a push producer on its connection (Twisted's
producer API): Twisted pauses it when the connection's send buffer passes its
64 KiB and resumes it once the buffer has drained. While paused, the stream
writes nothing and its events wait in its Subscriber, which cuts it off past
ORDER_STREAM_MAX_UNSENT_BYTES; the connection is then dropped, which frees what
it held at once, and the client resumes from its last id when it reads again.
A client that reads slowly is served at its own pace.
"""

import functools
from collections.abc import Callable

from daphne.http_protocol import WebRequest
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


class ConnectionGone(Exception):
    """The client's connection closed before its stream could start: a client
    that hung up as it opened, an ordinary end and no failure."""


@implementer(IPushProducer)
class SendWindow:
    """Tells `on_change` when the connection's send buffer fills up (True) and
    drains (False)."""

    def __init__(self, request, on_change: Callable[[bool], None]):
        self.request = request
        self.on_change = on_change

    # Twisted's IPushProducer: the connection calls these.
    def pauseProducing(self) -> None:
        self.on_change(True)

    def resumeProducing(self) -> None:
        self.on_change(False)

    def stopProducing(self) -> None:  # the connection is going away
        self.on_change(True)

    def release(self) -> None:
        """Unregister before the response ends (Twisted logs a producer left
        registered on a finished request)."""
        channel = getattr(self.request, "channel", None)
        if self.request.producer is self and channel is not None:
            self.request.unregisterProducer()

    def abort(self) -> None:
        """Drop the connection, and what waits in its send buffer."""
        self.release()
        channel = getattr(self.request, "channel", None)
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()


def watch(send, on_change: Callable[[bool], None]) -> SendWindow | None:
    """A SendWindow on the connection behind `send`, or None where the server
    gives no way to see its buffer (not daphne, or the in-process tests): there
    only the subscriber's QUEUE_LIMIT bounds a stream.

    Raises ConnectionGone when the connection has closed already: Twisted
    drops a request's channel when its connection is lost, and the client's
    http.disconnect may still be on its way to the stream's watcher.
    """
    request = _daphne_request(send)
    if request is None:
        return None
    if request.channel is None:
        raise ConnectionGone("the client closed its connection as the stream opened")
    window = SendWindow(request, on_change)
    request.registerProducer(window, True)
    return window


def _daphne_request(send):
    """daphne hands each application `partial(server.handle_reply, protocol)`,
    the protocol being the connection's current request."""
    if not isinstance(send, functools.partial):
        return None
    request = send.args[0] if send.args else None
    if isinstance(request, WebRequest) and request.producer is None:
        return request
    return None
