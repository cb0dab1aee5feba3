"""A webhook receiver on 127.0.0.1 for the tests: a threaded http.server that
records every request it gets and answers as the test tells it (a status per
request, then a default; an optional delay, long enough to hang)."""

import contextlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orders.workers.processes import wait_until


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int


class Receiver:
    def __init__(
        self,
        *,
        answers: list[int] | None = None,
        default: int = 200,
        delay: float = 0.0,
        port: int = 0,
        reply: bytes = b"ok",
        headers: dict[str, str] | None = None,
    ):
        self.answers = list(answers or [])
        self.default = default
        self.delay = delay
        self.reply = reply
        self.headers = headers or {}
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._port = port
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hook"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver._lock:
                    status = (
                        receiver.answers.pop(0)
                        if receiver.answers
                        else receiver.default
                    )
                    receiver.requests.append(
                        Received(
                            headers={k.lower(): v for k, v in self.headers.items()},
                            body=body,
                            at=time.time(),
                            answered=status,
                        )
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)
                # A sender that gave up (its timeout, or killed) has gone.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    self.send_header("content-length", str(len(receiver.reply)))
                    for name, value in receiver.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(receiver.reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self._port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def accepted(self) -> list[Received]:
        return [r for r in self.received() if 200 <= r.answered < 300]

    def wait_for(self, count: int, *, timeout: float = 30, accepted=True) -> list:
        def enough():
            got = self.accepted() if accepted else self.received()
            return got if len(got) >= count else None

        return wait_until(enough, timeout=timeout, what=f"{count} webhook requests")
