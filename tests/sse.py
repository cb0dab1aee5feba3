"""Server-Sent Events read by the end-to-end tests, each read bounded by an
overall deadline.

httpx's read timeout bounds one read, and a stream's keep-alive comments
restart it, so a stream that never sends what a test waits for would keep the
test waiting forever. Here a timer shuts the connection's socket down when the
deadline passes, which ends any read in progress, and the reader then fails
the test saying what it waited for."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder


class StreamDeadlinePassed(AssertionError):
    pass


class DeadlineStream:
    def __init__(self, response: httpx.Response, *, within: float, what: str):
        self.response = response
        self.within, self.what = within, what
        self.deadline = time.monotonic() + within
        self._expired = threading.Event()
        stream = response.extensions["network_stream"]
        self._timer = threading.Timer(
            within, self._expire, args=(stream.get_extra_info("socket"),)
        )
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, sock: socket.socket) -> None:
        self._expired.set()
        # The socket may be closed already (the test is done with it).
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def _check(self) -> None:
        if self._expired.is_set() or time.monotonic() > self.deadline:
            raise StreamDeadlinePassed(
                f"{self.what}: not seen within {self.within} s "
                f"(the stream stayed open, keep-alives perhaps, but not that)"
            )

    def text(self) -> Iterator[str]:
        """The body as it arrives, in chunks."""
        try:
            for chunk in self.response.iter_text():
                self._check()
                yield chunk
        except httpx.HTTPError:
            self._check()  # the timer cut the connection: say so
            raise
        self._check()

    def lines(self) -> Iterator[str]:
        """The body's lines, keep-alive comments included."""
        try:
            for line in self.response.iter_lines():
                self._check()
                yield line
        except httpx.HTTPError:
            self._check()
            raise
        self._check()

    def events(self) -> Iterator[ServerSentEvent]:
        """Each event (keep-alive comments are read, and count against the
        deadline, but are not yielded)."""
        decoder = SSEDecoder()
        for line in self.lines():
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                yield sse

    def named_events(self) -> Iterator[ServerSentEvent]:
        """Each event with an `event:` name (not the opening `retry:` block)."""
        return (sse for sse in self.events() if sse.event != "message")

    def close(self) -> None:
        self._timer.cancel()


@contextlib.contextmanager
def read_sse(
    client: httpx.Client,
    url: str,
    *,
    within: float,
    what: str,
    headers: dict | None = None,
) -> Iterator[DeadlineStream]:
    """GET an SSE stream; every read from it ends by `within` seconds from now."""
    headers = {
        "Accept": "text/event-stream",
        "Cache-Control": "no-store",
        **(headers or {}),
    }
    with client.stream(
        "GET", url, headers=headers, timeout=httpx.Timeout(min(within, 30.0))
    ) as response:
        stream = DeadlineStream(response, within=within, what=what)
        try:
            yield stream
        finally:
            stream.close()
