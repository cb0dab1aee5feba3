"""Where the streams' database work runs: threads of their own.

`sync_to_async` outside a Django request runs every call on asgiref's one
process-wide thread, so a poll of the pump queued behind every opening in a
burst, and one slow query froze every live stream. Here the pump reads on a
thread of its own, the staff streams look at their sessions again on another
(never refused: a check put off is a stream that outlives its session), and
openings share `ORDER_STREAM_OPEN_THREADS` others. An
opening is refused at once (a 503 with Retry-After) instead of waiting behind
the others when the last one to start had waited more than
`ORDER_STREAM_OPEN_MAX_WAIT_SECONDS` for a thread (the database is slow, or a
burst is larger than it can serve soon), or when `ORDER_STREAM_OPEN_BACKLOG`
are waiting already; either way the live streams are never delayed.
"""

import asyncio
import functools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from django.conf import settings
from django.db import close_old_connections


class Saturated(Exception):
    """Too many openings are waiting already: come back later."""


class DatabaseThreads:
    """A few threads for one kind of database work, with a bounded backlog.

    Calls wait in one queue and each thread runs them in turns of up to
    BATCH, handing the results back to the event loop together: a burst of
    2,000 openings is some 60 hand-offs between the loop and the threads, not
    2,000. Each hand-off made the loop wait for the GIL behind a thread
    (profiled with py-spy: a third of the loop's time went to submitting calls
    one by one).
    """

    BATCH = 32

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
        self._calls: deque = deque()
        self._turns = 0  # threads taking a turn now
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
        loop = asyncio.get_running_loop()
        result = loop.create_future()
        self._calls.append(
            (functools.partial(function, *args, **kwargs), result, time.monotonic())
        )
        self.pending += 1
        try:
            self._start_turns(loop)
            return await result
        finally:
            self.pending -= 1

    def _start_turns(self, loop) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix=self.name
            )
        while self._calls and self._turns < min(self.threads, len(self._calls)):
            self._turns += 1
            turn = loop.run_in_executor(self._executor, self._take_turn)
            turn.add_done_callback(functools.partial(self._turn_done, loop))

    def _take_turn(self) -> list:
        """In a thread: up to BATCH waiting calls, each with what it returned
        or raised (raised again where it was awaited)."""
        done = []
        while len(done) < self.BATCH:
            try:
                call, result, submitted = self._calls.popleft()
            except IndexError:
                break
            if result.done():  # its caller is gone (a client that left)
                continue
            self.last_wait = time.monotonic() - submitted
            try:
                done.append((result, True, with_connection(call)))
            except Exception as error:  # noqa: BLE001 - raised in the caller
                done.append((result, False, error))
        return done

    def _turn_done(self, loop, turn: asyncio.Future) -> None:
        self._turns -= 1
        for result, returned, value in turn.result():
            if result.done():
                continue
            if returned:
                result.set_result(value)
            else:
                result.set_exception(value)
        self._start_turns(loop)

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


class LoopThreads(NamedTuple):
    pump: DatabaseThreads  # the pump's reads
    openings: DatabaseThreads  # openings and replays: refused when saturated
    sessions: DatabaseThreads  # the staff streams' session checks: never refused


_threads: dict[asyncio.AbstractEventLoop, LoopThreads] = {}


def for_loop() -> LoopThreads:
    """The database threads of the running event loop."""
    loop = asyncio.get_running_loop()
    threads = _threads.get(loop)
    if threads is None:
        for old_loop in [known for known in _threads if known.is_closed()]:
            for old in _threads.pop(old_loop):
                old.close()
        threads = _threads[loop] = LoopThreads(
            pump=DatabaseThreads("stream-pump", 1),
            openings=DatabaseThreads(
                "stream-open",
                settings.ORDER_STREAM_OPEN_THREADS,
                settings.ORDER_STREAM_OPEN_BACKLOG,
                settings.ORDER_STREAM_OPEN_MAX_WAIT_SECONDS,
            ),
            sessions=DatabaseThreads("stream-session", 1),
        )
    return threads
