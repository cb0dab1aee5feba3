"""What wakes the event pump: the read and the wake-up are apart, so a
channels-layer waker can replace the timer without touching the read."""

import asyncio
import contextlib


class PollWaker:
    """Wakes the pump every `interval` seconds: the embedded default, where other
    processes (the workers) write events without telling anyone."""

    def __init__(self, interval: float):
        self.interval = interval
        self._nudged = asyncio.Event()

    async def wait(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudged.wait(), self.interval)
        self._nudged.clear()

    def nudge(self) -> None:
        """Wake at once (a writer in this process, or a notification)."""
        self._nudged.set()
