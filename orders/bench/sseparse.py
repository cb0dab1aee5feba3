"""What the SSE load client (orders/bench/sseload.py) reads off its sockets: a
response head, a chunked body fed in arbitrary fragments, the SSE frames in it,
and the `"at"` and `"event_id"` in an event's JSON data. Standard library only:
a client process imports no Django."""

import re
from dataclasses import dataclass
from datetime import datetime

# A 503 without a usable Retry-After waits this long.
DEFAULT_RETRY_AFTER = 1.0
AT = re.compile(r'"at"\s*:\s*"([^"]+)"')
EVENT_ID = re.compile(r'"event_id"\s*:\s*(\d+)')


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 chunked body: feed it bytes as they
    arrive, in any fragments, and it returns the body bytes they complete."""

    def __init__(self):
        self.buffer = b""
        self.remaining = 0  # bytes left in the current chunk
        self.after_chunk = False  # the CRLF after a chunk's data is due
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while not self.finished:
            if self.remaining:
                piece = self.buffer[: self.remaining]
                out.append(piece)
                self.buffer = self.buffer[len(piece) :]
                self.remaining -= len(piece)
                if self.remaining:
                    break
                self.after_chunk = True
            if self.after_chunk:
                if len(self.buffer) < 2:
                    break
                if self.buffer[:2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                self.buffer = self.buffer[2:]
                self.after_chunk = False
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            size_line = self.buffer[:end].split(b";", 1)[0].strip()
            self.buffer = self.buffer[end + 2 :]
            size = int(size_line, 16)
            if size == 0:
                self.finished = True  # trailers, if any, are not read
                break
            self.remaining = size
        return b"".join(out)


@dataclass
class SSEEvent:
    id: str | None
    event: str
    data: str


class SSEParser:
    """Incremental parser of an event stream (text/event-stream): lines end in
    LF or CRLF; `id:`, `event:` and `data:` fields; lines starting with `:` are
    comments; a blank line dispatches the event if it has data."""

    def __init__(self):
        self.pending = b""
        self.id: str | None = None
        self.event = ""
        self.data: list[str] = []
        self.comments = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        events = []
        for raw in lines:
            line = raw.removesuffix(b"\r").decode()
            if not line:
                if self.data:
                    events.append(SSEEvent(self.id, self.event, "\n".join(self.data)))
                self.event, self.data = "", []
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self.data.append(value)
            elif name == "event":
                self.event = value
            elif name == "id":
                self.id = value
        return events


class StreamParser:
    """The body of one response: chunked or not, then SSE."""

    def __init__(self, *, chunked: bool):
        self.chunks = ChunkedDecoder() if chunked else None
        self.sse = SSEParser()

    @property
    def finished(self) -> bool:
        return self.chunks is not None and self.chunks.finished

    def feed(self, data: bytes) -> list[SSEEvent]:
        if self.chunks is not None:
            data = self.chunks.feed(data)
        return self.sse.feed(data)


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and headers (names in lower case) of a response head."""
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def written_at(data: str) -> float | None:
    """The `"at"` of an event's JSON data as a POSIX timestamp, or None."""
    match = AT.search(data)
    if match is None:
        return None
    return datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()


def retry_after(headers: dict[str, str]) -> float:
    try:
        return max(0.0, float(headers.get("retry-after", "")))
    except ValueError:  # absent or an HTTP date: the default wait
        return DEFAULT_RETRY_AFTER
