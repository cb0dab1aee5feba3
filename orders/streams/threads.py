"""Where the streams' database work runs: threads of their own.

`sync_to_async` outside a Django request runs every call on asgiref's one
process-wide thread, so a poll of the pump queued behind every opening in a
burst, and one slow query froze every live stream. Here the pump reads on a
thread of its own, and openings share `ORDER_STREAM_OPEN_THREADS` others. An
opening is refused at once (a 503 with Retry-After) instead of waiting behind
the others when the last one to start had waited more than
`ORDER_STREAM_OPEN_MAX_WAIT_SECONDS` for a thread (the database is slow, or a
burst is larger than it can serve soon), or when `ORDER_STREAM_OPEN_BACKLOG`
are waiting already; either way the live streams are never delayed.
"""

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections


class Saturated(Exception):
    """Too many openings are waiting already: come back later."""


class DatabaseThreads:
    """A few threads for one kind of database work, with a bounded backlog."""

    def __init__(
        self,
        name: str,
        threads: int,
        backlog: int | None = None,
        max_wait: float | None = None,
    ):
        self.name = name
        self.threads = threads
        self.backlog = backlog
        self.max_wait = max_wait
        self.pending = 0  # submitted and not finished: running or waiting
        # How long the last call to start had waited for a thread (seconds).
        self.last_wait = 0.0
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function, /, *args, **kwargs):
        """`function(*args, **kwargs)` on one of the threads; raises Saturated,
        without running it, when too many wait or the wait has grown too long."""
        if self.backlog is not None and self.pending >= self.backlog:
            raise Saturated(f"{self.pending} {self.name} calls waiting")
        if (
            self.max_wait is not None
            and self.pending >= self.threads
            and self.last_wait > self.max_wait
        ):
            raise Saturated(
                f"{self.name} calls wait {self.last_wait:.2f}s for a thread"
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix=self.name
            )
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor,
                functools.partial(
                    self._timed, time.monotonic(), function, *args, **kwargs
                ),
            )
        finally:
            self.pending -= 1

    def _timed(self, submitted: float, function, /, *args, **kwargs):
        self.last_wait = time.monotonic() - submitted
        return with_connection(function, *args, **kwargs)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)


def with_connection(function, *args, **kwargs):
    """As Django does around a request: a connection that failed or outlived
    CONN_MAX_AGE is dropped before and after, so a database restart costs one
    error, and with the PostgreSQL pool (CONN_MAX_AGE 0) the connection goes
    back to the pool between calls."""
    close_old_connections()
    try:
        return function(*args, **kwargs)
    finally:
        close_old_connections()


_threads: dict[asyncio.AbstractEventLoop, tuple[DatabaseThreads, DatabaseThreads]] = {}


def for_loop() -> tuple[DatabaseThreads, DatabaseThreads]:
    """(the pump's thread, the openings' threads) of the running event loop."""
    loop = asyncio.get_running_loop()
    pair = _threads.get(loop)
    if pair is None:
        for old_loop in [known for known in _threads if known.is_closed()]:
            for old in _threads.pop(old_loop):
                old.close()
        pair = _threads[loop] = (
            DatabaseThreads("stream-pump", 1),
            DatabaseThreads(
                "stream-open",
                settings.ORDER_STREAM_OPEN_THREADS,
                settings.ORDER_STREAM_OPEN_BACKLOG,
                settings.ORDER_STREAM_OPEN_MAX_WAIT_SECONDS,
            ),
        )
    return pair
