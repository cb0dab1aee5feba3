"""Where the streams' database work runs: threads of their own.

`sync_to_async` outside a Django request runs every call on asgiref's one
process-wide thread, so a poll of the pump queued behind every opening in a
burst, and one slow query froze every live stream. Here the pump reads on a
thread of its own, and openings share `ORDER_STREAM_OPEN_THREADS` others with a
bounded backlog: an opening that finds `ORDER_STREAM_OPEN_BACKLOG` others
waiting is refused at once (a 503 with Retry-After) instead of waiting behind
them, and never delays the live streams.
"""

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections


class Saturated(Exception):
    """Too many openings are waiting already: come back later."""


class DatabaseThreads:
    """A few threads for one kind of database work, with a bounded backlog."""

    def __init__(self, name: str, threads: int, backlog: int | None = None):
        self.name = name
        self.threads = threads
        self.backlog = backlog
        self.pending = 0  # submitted and not finished: running or waiting
        self.refused = 0
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function, /, *args, **kwargs):
        """`function(*args, **kwargs)` on one of the threads; raises Saturated,
        without running it, when the backlog is full."""
        if self.backlog is not None and self.pending >= self.backlog:
            self.refused += 1
            raise Saturated(f"{self.pending} {self.name} waiting")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix=self.name
            )
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor,
                functools.partial(with_connection, function, *args, **kwargs),
            )
        finally:
            self.pending -= 1

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
            ),
        )
    return pair
