"""What wakes the event pump: the read and the wake-up are apart, so how the pump
learns of new events (a timer, a message) never touches the read."""

import asyncio
import contextlib
import logging

from django.conf import settings

from orders import notify

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
        placing an order): orders.notify calls from the writer's thread."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            if loop.is_closed():
                stop()
            else:
                loop.call_soon_threadsafe(self.nudge)

        stop = notify.listen(wake)


class LayerWaker(PollWaker):
    """Wakes the pump on every message the writers send through the channels
    layer (orders.notify), one per committed transaction. Meanwhile it still
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


def make_waker() -> PollWaker:
    """The waker this process's settings call for, on the running loop."""
    if settings.CHANNEL_LAYERS:
        from channels.layers import get_channel_layer

        return LayerWaker(
            get_channel_layer(),
            interval=settings.ORDER_STREAM_POLL_SECONDS,
            fallback=settings.ORDER_STREAM_PUSH_FALLBACK_SECONDS,
        )
    # Without a layer only this process's own writes can be heard of at once;
    # with one they arrive as messages like everyone else's.
    waker = PollWaker(settings.ORDER_STREAM_POLL_SECONDS)
    waker.listen_to_local_writers()
    return waker
