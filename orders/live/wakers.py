"""What wakes the event pump: the read and the wake-up are apart, so how the pump
learns of new events (a timer, a message) never touches the read."""

import asyncio
import contextlib
import logging
import os

from django.conf import settings

from orders.state import notify

logger = logging.getLogger(__name__)


class PollWaker:
    """Wakes the pump every `interval` seconds: the embedded default, where other
    processes (the workers) write events without telling anyone."""

    def __init__(self, interval: float):
        self.interval = interval
        self._nudged = asyncio.Event()

    def current_interval(self) -> float:
        return self.interval

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudged.wait(), self.current_interval())
        self._nudged.clear()

    def nudge(self) -> None:
        """Wake at once (a writer in this process, or a notification)."""
        self._nudged.set()

    def listen_to_local_writers(self) -> None:
        """Wake at once when a writer in this process commits events (the API
        placing an order): orders.state.notify calls from the writer's thread."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            if loop.is_closed():
                stop()
            else:
                loop.call_soon_threadsafe(self.nudge)

        stop = notify.listen(wake)


def wal_signature(path: str) -> tuple[int, int] | None:
    """What changes when any process commits to a SQLite database in WAL mode:
    its -wal file's modification time and size (a commit appends to it; a
    checkpoint rewinds it). None when there is no such file."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


class SQLiteWalWaker(PollWaker):
    """The embedded default: wakes the pump within `every` seconds of any
    process's commit to the SQLite file (the workers' included), by looking at
    the -wal file from the event loop, a stat() of a few microseconds and no
    query; it still polls every `interval` seconds, and at once for this
    process's own writers. Polling alone made an event wait half a poll
    interval on average (100 ms) and up to a whole one."""

    def __init__(self, interval: float, wal_path: str, every: float):
        super().__init__(interval)
        self.wal_path = wal_path
        self.every = every
        self._seen = wal_signature(wal_path)

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.current_interval()
        while not self._nudged.is_set():
            seen = wal_signature(self.wal_path)
            if seen != self._seen:
                self._seen = seen
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.every, left)):
                    await self._nudged.wait()
        self._nudged.clear()


class LayerWaker(PollWaker):
    """Wakes the pump on every message the writers send through the channels
    layer (orders.state.notify), one per committed transaction. Meanwhile it still
    polls, every `fallback` seconds, a safety net for a lost message; while the
    layer fails (Redis down) it polls every `interval` seconds, the normal rate,
    and subscribes again with backoff until the layer works."""

    def __init__(
        self,
        layer,
        *,
        interval: float,
        fallback: float,
        refresh: float = 60.0,
        backoff: tuple[float, float] = (0.25, 10.0),
    ):
        super().__init__(interval)
        self.layer = layer
        self.fallback = fallback
        # Membership of the group expires (channels_redis's group_expiry): it is
        # renewed this often.
        self.refresh = refresh
        self.backoff = backoff
        # True while subscribed: the last subscription or receive worked.
        self.pushing = False
        self.failures = 0
        self.channel: str | None = None
        self._listener: asyncio.Task | None = None

    def current_interval(self) -> float:
        return self.fallback if self.pushing else self.interval

    async def wait(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="order-event-push"
            )
        await super().wait()

    async def _listen(self) -> None:
        while True:
            try:
                await self._subscribed()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.pushing = False
                self.failures += 1
                delay = min(self.backoff[1], self.backoff[0] * 2 ** (self.failures - 1))
                # Logged every time, with its traceback: a programming error
                # here shows, and Redis down shows how long it lasted.
                logger.exception(
                    "event push: the channels layer failed; polling every %ss, "
                    "subscribing again in %.2fs",
                    self.interval,
                    delay,
                )
                self.nudge()  # the poll's rate changes now, not after the slow one
                await asyncio.sleep(delay)

    async def _subscribed(self) -> None:
        loop = asyncio.get_running_loop()
        if self.channel is None:
            # One name for the process's life: subscribing again after a
            # failure leaves no second member in the group.
            self.channel = await self.layer.new_channel()
        channel = self.channel
        await self.layer.group_add(notify.EVENTS_GROUP, channel)
        renewed = loop.time()
        if self.failures:
            logger.warning(
                "event push: subscribed again after %s failures", self.failures
            )
        self.pushing = True
        self.failures = 0
        # Whatever was written while not subscribed.
        self.nudge()
        while True:
            remaining = self.refresh - (loop.time() - renewed)
            if remaining <= 0:
                await self.layer.group_add(notify.EVENTS_GROUP, channel)
                renewed = loop.time()
                continue
            try:
                await asyncio.wait_for(self.layer.receive(channel), remaining)
            except TimeoutError:
                continue
            self.nudge()


def sqlite_wal_path(database: dict) -> str | None:
    """The -wal file of a SQLite database kept in a file (not in memory)."""
    name = str(database["NAME"])
    if database["ENGINE"] != "django.db.backends.sqlite3" or not name.startswith("/"):
        return None
    return f"{name}-wal"


def make_waker() -> PollWaker:
    """The waker this process's settings call for, on the running loop."""
    if settings.CHANNEL_LAYERS:
        from channels.layers import get_channel_layer

        return LayerWaker(
            get_channel_layer(),
            interval=settings.ORDER_STREAM_POLL_SECONDS,
            fallback=settings.ORDER_STREAM_PUSH_FALLBACK_SECONDS,
        )
    # Without a layer only this process's own writes can be heard of at once,
    # and on SQLite every process's through its -wal file; with a layer they
    # arrive as messages like everyone else's.
    wal_path = sqlite_wal_path(settings.DATABASES["default"])
    if wal_path is not None:
        waker = SQLiteWalWaker(
            settings.ORDER_STREAM_POLL_SECONDS,
            wal_path,
            every=settings.ORDER_STREAM_WAL_CHECK_SECONDS,
        )
    else:
        waker = PollWaker(settings.ORDER_STREAM_POLL_SECONDS)
    waker.listen_to_local_writers()
    return waker
