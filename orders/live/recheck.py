"""The staff stream's session, looked at again while the stream is open.

Every order's events are for operators only, and a session can end while its
stream stays open for hours: a logout in another tab, an account deactivated,
its password changed, its staff status or its permission taken away. So a staff
stream checks its session again every `interval` seconds, between its frames
and between the pages of its replay, and ends with a stream.closed frame once
the check refuses.

The checks run on a thread of their own (orders/live/threads.py), which never
refuses a call: on the openings' threads a burst of openings made the check
put off, and a stream whose session had ended stayed open for as long as the
burst lasted. A check that cannot be made (the database fails) ends the stream
too (the caller's DatabaseError).
"""

import asyncio

from orders.live import threads
from orders.live.opening import Refusal, check_staff


class SessionRecheck:
    def __init__(self, scope: dict, interval: float):
        self.scope = scope
        self.interval = interval
        self.due = asyncio.get_running_loop().time() + interval
        # Why the session no longer holds, once a check has refused.
        self.ended: Refusal | None = None

    async def holds(self) -> bool:
        """Whether the stream may go on: checks the session when a check is
        due, and says False from the first check that refuses on."""
        loop = asyncio.get_running_loop()
        if self.ended is None and loop.time() >= self.due:
            try:
                await threads.for_loop().sessions.run(check_staff, self.scope)
            except Refusal as refusal:
                self.ended = refusal
            self.due = loop.time() + self.interval
        return self.ended is None
