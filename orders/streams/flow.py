"""How much a stream has sent that its client has not taken yet.

ASGI gives no backpressure of its own, and daphne's `send()` never waits: what a
client does not read piles up in the web process without bound (measured: five
staff streams whose clients never read fell 8,054 events behind). Under daphne a
stream registers a push producer on its connection (Twisted's producer API):
Twisted pauses it when the connection's send buffer passes its 64 KiB and
resumes it once the buffer has drained. What the stream writes while paused is
what its client has not taken beyond that buffer; past
ORDER_STREAM_MAX_UNSENT_BYTES the connection is dropped, which frees what it
held at once, and the client resumes from its last id when it reads again.
"""

import functools

from daphne.http_protocol import WebRequest
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class SendWindow:
    """A stream's view of its connection's send buffer."""

    def __init__(self, request, limit: int):
        self.request = request
        self.limit = limit
        self.paused = False
        self.unsent = 0  # bytes written since the connection's buffer filled up

    # Twisted's IPushProducer: the connection calls these.
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.unsent = 0

    def stopProducing(self) -> None:  # the connection is going away
        self.paused = True

    # The stream calls these.
    def wrote(self, size: int) -> bool:
        """Count what was just written; False once the client is too far
        behind, after dropping its connection."""
        if not self.paused:
            return True
        self.unsent += size
        if self.unsent <= self.limit:
            return True
        self.release()
        channel = getattr(self.request, "channel", None)
        if channel is not None and channel.transport is not None:
            channel.transport.abortConnection()
        return False

    def release(self) -> None:
        """Unregister before the response ends (Twisted logs a producer left
        registered on a finished request)."""
        channel = getattr(self.request, "channel", None)
        if self.request.producer is self and channel is not None:
            self.request.unregisterProducer()


def watch(send, limit: int) -> SendWindow | None:
    """A SendWindow on the connection behind `send`, or None where the server
    gives no way to see its buffer (not daphne, or the in-process tests): there
    only the subscriber's queue limit bounds a stream."""
    request = _daphne_request(send)
    if request is None:
        return None
    window = SendWindow(request, limit)
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
