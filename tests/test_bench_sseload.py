"""The lean SSE client of `bench streams` (orders/bench/sseload.py): its parsing
(orders/bench/sseparse.py), fed the way a socket delivers bytes, in arbitrary
fragments."""

import asyncio
import json
import random
import time
from datetime import UTC, datetime

import pytest

from orders.bench.sseload import StreamClient
from orders.bench.sseparse import (
    ChunkedDecoder,
    SSEEvent,
    StreamParser,
    parse_head,
    retry_after,
    written_at,
)

AT = "2026-12-05T20:00:00.250000Z"
DATA = json.dumps({"event_id": 41, "at": AT})
FRAMES = (
    b": stream open\nretry: 2000\n\n"
    b"id: 41\nevent: order.created\ndata: " + DATA.encode() + b"\n\n"
    b": keep-alive\n\n"
    b"event: stream-open\ndata:\n\n"
    b"id: 42\r\nevent: order.processing\r\n"
    b"data: line one\r\ndata: line tw\xc3\xb8\r\n\r\n"
)
EXPECTED = [
    SSEEvent("41", "order.created", DATA),
    # An empty `data:` line still makes an event; the last id carries over.
    SSEEvent("41", "stream-open", ""),
    SSEEvent("42", "order.processing", "line one\nline twø"),
]


def chunked(body: bytes, sizes: list[int]) -> bytes:
    """`body` in chunks of these sizes (the rest in one more), then the last
    chunk, as daphne frames a streamed response."""
    out, position = [], 0
    for size in [*sizes, len(body)]:
        piece = body[position : position + size]
        position += len(piece)
        if piece:
            out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


def fragments(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), k=min(40, len(data) - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def feed_all(parser: StreamParser, pieces: list[bytes]) -> list[SSEEvent]:
    return [event for piece in pieces for event in parser.feed(piece)]


def test_whole_chunked_body_gives_every_event_and_skips_comments():
    parser = StreamParser(chunked=True)
    events = parser.feed(chunked(FRAMES, [30, 7, 100]))
    assert events == EXPECTED
    assert parser.sse.comments == 2
    assert parser.finished


@pytest.mark.parametrize("seed", range(20))
def test_body_split_anywhere_gives_the_same_events(seed):
    """Cuts inside chunk-size lines, inside the CRLF after a chunk, inside
    field names and inside a two-byte UTF-8 character alike."""
    body = chunked(FRAMES, [1, 2, 3, 50, 5])
    parser = StreamParser(chunked=True)
    assert feed_all(parser, fragments(body, seed)) == EXPECTED
    assert parser.finished


def test_body_fed_one_byte_at_a_time_gives_the_same_events():
    body = chunked(FRAMES, [13, 13, 13])
    parser = StreamParser(chunked=True)
    assert feed_all(parser, [body[i : i + 1] for i in range(len(body))]) == EXPECTED


def test_a_body_without_chunked_encoding_is_parsed_as_sse_alone():
    parser = StreamParser(chunked=False)
    assert feed_all(parser, fragments(FRAMES, 7)) == EXPECTED
    assert not parser.finished


def test_an_event_is_dispatched_only_by_its_blank_line():
    parser = StreamParser(chunked=False)
    assert parser.feed(b"id: 1\nevent: a\ndata: x\n") == []
    assert parser.feed(b"\n") == [SSEEvent("1", "a", "x")]


def test_chunk_extensions_are_ignored_and_a_bad_chunk_end_is_refused():
    decoder = ChunkedDecoder()
    assert decoder.feed(b"3;name=value\r\nabc\r\n") == b"abc"
    with pytest.raises(ValueError, match="CRLF"):
        ChunkedDecoder().feed(b"3\r\nabcXY")


def test_a_response_head_gives_its_status_and_lower_case_headers():
    status, headers = parse_head(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n"
        b"Content-Type: application/json\r\n\r\n"
    )
    assert status == 503
    assert headers == {"retry-after": "2", "content-type": "application/json"}


@pytest.mark.parametrize(
    ("value", "wait"), [("2", 2.0), ("0.5", 0.5), ("", 1.0), ("Wed, 21 Oct 2015", 1.0)]
)
def test_retry_after_in_seconds_or_the_default_wait(value, wait):
    assert retry_after({"retry-after": value} if value else {}) == wait


def test_written_at_reads_the_at_field_of_compact_or_spaced_json():
    expected = datetime(2026, 12, 5, 20, 0, 0, 250000, tzinfo=UTC).timestamp()
    assert written_at('{"at":"2026-12-05T20:00:00.250000Z"}') == expected
    assert written_at('{"type": "x", "at": "2026-12-05T20:00:00.250000Z"}') == expected
    assert written_at("") is None


def test_a_stream_answered_503_waits_its_retry_after_then_opens_and_measures():
    """A fake server on 127.0.0.1 sheds the first request with a JSON 503 and
    Retry-After, then streams one event written after the stream opened and
    one written before it (replayed history, not measured)."""

    async def scenario():
        requests = []

        async def serve(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            requests.append((time.monotonic(), head))
            if len(requests) == 1:
                body = b'{"error": "busy"}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0.2\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body
                )
                writer.close()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            await asyncio.sleep(0.05)
            now = datetime.now(UTC)
            old = datetime(2026, 1, 1, tzinfo=UTC)
            frames = b"".join(
                b"id: %d\nevent: order.processing\ndata: %s\n\n"
                % (n, json.dumps({"event_id": n, "at": at.isoformat()}).encode())
                for n, at in ((1, old), (2, now))
            )
            writer.write(chunked(frames, [10]).removesuffix(b"0\r\n\r\n"))
            await writer.drain()
            await asyncio.sleep(5)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = StreamClient(
            {
                "port": port,
                "targets": [{"path": "/api/events", "cookie": "sessionid=x"}],
                "start_at": time.time(),
                "deadline": time.time() + 10,
            }
        )
        stop = asyncio.Event()
        running = asyncio.create_task(client.run(stop))
        await asyncio.wait_for(client.all_settled.wait(), 5)
        while client.figures.staff_events < 2:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(running, 5)
        server.close()
        return client.figures, requests

    figures, requests = asyncio.run(scenario())
    assert (figures.shed, figures.opened, figures.staff_opened) == (1, 1, 1)
    assert requests[1][0] - requests[0][0] >= 0.2
    assert b"Cookie: sessionid=x" in requests[1][1]
    assert b"Accept: text/event-stream" in requests[1][1]
    assert figures.staff_events == 2
    assert len(figures.staff_latencies) == 1
    assert 0 <= figures.staff_latencies[0] < 5
    assert figures.refused == {}
