from orders.api.errors import send_error
from orders.live import flow

# What a 503 asks the client to wait before trying again.
RETRY_AFTER_SECONDS = 2

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamResponse:
    """One stream's response: whether it has started, how to end it in each
    case, and (under daphne) its connection's send window."""

    def __init__(self, send):
        self.send = send
        self.started = False
        self.ended = False
        self.window = None

    async def start(self, subscriber) -> None:
        self.window = flow.watch(self.send, subscriber.stall)
        self.started = True
        await self.send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}
        )

    async def body(self, body: bytes) -> None:
        await self.send({"type": "http.response.body", "body": body, "more_body": True})

    async def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.release()
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def abort(self) -> None:
        """Drop the connection and what waits in it (a client that stopped
        reading); without daphne's window, end the response instead."""
        if self.window is None:
            await self.end()
            return
        self.ended = True
        self.release()
        self.window.abort()

    async def refuse(self, status: int, error: str, detail: str) -> None:
        if self.started:
            await self.end()
        else:
            self.ended = True
            await send_error(self.send, status, error, detail)

    async def unavailable(self, detail: str) -> None:
        if self.started:
            await self.end()
            return
        self.ended = True
        await send_error(
            self.send,
            503,
            "stream_unavailable",
            detail,
            [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
        )

    async def fail(self) -> None:
        if self.started:
            await self.end()
        else:
            self.ended = True
            await send_error(
                self.send, 500, "internal_error", "The stream failed; it was logged."
            )

    def release(self) -> None:
        if self.window is not None:
            self.window.release()
