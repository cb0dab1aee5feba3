"""How many streams a web process holds open: per client address and in all.

The streams are routed ahead of Django (orderproj/asgi.py), so nothing else
limits how many one client opens, and each holds a file descriptor for as long
as its client likes: one anonymous client could open streams until daphne had
no descriptor left, and then nothing was answered, `/healthz` included. Here a
stream takes a slot before any database work and gives it back when it ends.
Past ORDER_STREAMS_PER_CLIENT for its client's address it is answered 429,
past ORDER_STREAMS_PER_PROCESS 503, both with Retry-After, in the JSON error
shape.

ORDER_STREAMS_PER_PROCESS defaults to what the file-descriptor limit leaves
once a reserve is set aside for everything else the process holds (requests,
database connections, files); the web process raises its soft limit to the hard
limit at start-up (raise_file_limit) so that this is as high as the machine
allows.
"""

import logging
import resource
from collections import Counter

from django.conf import settings

from orders.api.client_address import scope_client_address

logger = logging.getLogger(__name__)

# Descriptors kept for everything but streams: an eighth of the limit, and at
# least this many.
RESERVED_DESCRIPTORS = 100
# What each refusal asks the client to wait: one of its own streams to close,
# or some of the process's.
CLIENT_RETRY_AFTER_SECONDS = 10
PROCESS_RETRY_AFTER_SECONDS = 5


class CapReached(Exception):
    """A stream refused for a cap: its answer, in the JSON error shape."""

    def __init__(self, status: int, error: str, detail: str, retry_after: int):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers = [(b"retry-after", str(retry_after).encode())]


def streams_allowed_by(descriptors: int) -> int:
    """The streams a file-descriptor limit leaves room for; 0 (no cap) for no
    limit."""
    if descriptors == resource.RLIM_INFINITY:
        return 0
    return max(1, descriptors - max(RESERVED_DESCRIPTORS, descriptors // 8))


def process_cap() -> int:
    """ORDER_STREAMS_PER_PROCESS, or (unset) what the file-descriptor limit
    leaves room for; 0: no cap."""
    configured = settings.ORDER_STREAMS_PER_PROCESS
    if configured is not None:
        return configured
    return streams_allowed_by(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


class StreamSlots:
    """The open streams of this process, by client address. Used from the
    event loop only (daphne runs one), so it takes no lock."""

    def __init__(self):
        self.open = 0
        self.by_client: Counter[str] = Counter()
        self.refused_per_client = 0
        self.refused_per_process = 0

    def take(self, scope: dict) -> "Slot":
        """A slot for a stream of this connection's client; raises CapReached
        when the client or the process holds as many as it may."""
        address = scope_client_address(scope)
        per_client = settings.ORDER_STREAMS_PER_CLIENT
        if per_client and self.by_client[address] >= per_client:
            self.refused_per_client += 1
            raise CapReached(
                429,
                "too_many_streams",
                f"This client has {per_client} streams open, as many as one "
                "client may; close one before opening another.",
                CLIENT_RETRY_AFTER_SECONDS,
            )
        per_process = process_cap()
        if per_process and self.open >= per_process:
            self.refused_per_process += 1
            raise CapReached(
                503,
                "stream_unavailable",
                "This server holds as many streams as it can; try again shortly.",
                PROCESS_RETRY_AFTER_SECONDS,
            )
        self.open += 1
        self.by_client[address] += 1
        return Slot(self, address)

    def give_back(self, address: str) -> None:
        self.open -= 1
        self.by_client[address] -= 1
        if not self.by_client[address]:
            del self.by_client[address]

    def as_dict(self) -> dict:
        return {
            "open": self.open,
            "clients": len(self.by_client),
            "per_client": settings.ORDER_STREAMS_PER_CLIENT,
            "per_process": process_cap(),
            "refused_per_client": self.refused_per_client,
            "refused_per_process": self.refused_per_process,
        }


class Slot:
    def __init__(self, slots: StreamSlots, address: str):
        self.slots, self.address = slots, address
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.give_back(self.address)


stream_slots = StreamSlots()


def raise_file_limit() -> None:
    """Raise this process's soft limit of file descriptors to its hard limit
    (each stream holds one; the soft limit is often 1,024 where the hard one
    is far higher), and say in the log how many streams that allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as error:
            # A hard limit the kernel will not give as a soft one (macOS's
            # unlimited, say): the soft limit stays, and is what is logged.
            logger.warning(
                "file descriptors: cannot raise the soft limit %s to %s: %s",
                soft,
                hard,
                error,
            )
    raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    configured = settings.ORDER_STREAMS_PER_PROCESS
    room = streams_allowed_by(raised)
    if configured and room and configured > room:
        logger.warning(
            "ORDER_STREAMS_PER_PROCESS=%s is more than %s file descriptors leave "
            "room for (%s): past that, the process runs out of descriptors",
            configured,
            raised,
            room,
        )
    if configured == 0:
        allows = "no cap on streams (ORDER_STREAMS_PER_PROCESS=0)"
    elif configured is None:
        allows = f"up to {process_cap()} streams in this process"
    else:
        allows = f"up to {configured} streams (ORDER_STREAMS_PER_PROCESS)"
    logger.info(
        "file descriptors: soft limit %s (was %s, hard limit %s): %s, "
        "%s per client address (ORDER_STREAMS_PER_CLIENT)",
        raised,
        soft,
        hard,
        allows,
        settings.ORDER_STREAMS_PER_CLIENT or "no cap",
    )
