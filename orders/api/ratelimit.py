"""The rate limit on placing orders: ORDER_PLACE_RATE_LIMIT per client address,
counted by django-ratelimit in the "ratelimit" cache (orderproj/settings/security.py).

The address is the service's own idea of the client (orders/api/client_address.py,
TRUSTED_PROXY_HOPS), never django-ratelimit's "ip" key: that reads REMOTE_ADDR,
which daphne's --proxy-headers would set to the leftmost X-Forwarded-For entry,
the one the client writes, and which raises for a value that is not an address.

Every web process must count in the same place, or n processes allow n times
the limit. With REDIS_URL that is Redis (Django's RedisCache: INCR is atomic and
keeps the key's expiry; its counters expire with their window and are never
culled, so long as Redis runs with maxmemory-policy noeviction, as the queue
needs anyway). Without it, the embedded default, it is a SQLite file of its own
(orders/api/ratelimit_store.py), which every process on the machine shares and
which never deletes a live counter: while it is full, the clients without a
counter are counted under one counter between them.
"""

import ipaddress
import logging
import time

from django.conf import settings
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

from orders.api.client_address import request_client_address
from orders.api.ratelimit_store import CounterStoreFull, SQLiteCounterCache

logger = logging.getLogger("orders.ratelimit")

# Named by the URL, not its path: orders/urls.py, "api-orders".
PLACE_URL_NAME = "api-orders"
PLACE_GROUP = "orders.place"

# A counter that cannot be read or written lets the order through (and says so
# in the log): an outage of the cache must not stop the shop taking orders. The
# embedded store raises an OSError (ratelimit_store.CounterStoreUnavailable).
CACHE_UNAVAILABLE = (OSError, RedisError)

# What every client without a counter of its own is counted under while the
# embedded store is full of live counters.
OVERFLOW_KEY = "(every client without a counter: the store is full)"

# While the store stays full, one warning a minute per process, not one per order.
FULL_WARNING_SECONDS = 60.0
_full_warned_at: list[float] = []


def place_retry_after(request) -> int | None:
    """Count this order placement against its client address; the seconds to
    wait before the next one when it is over the limit, else None."""
    rate = settings.ORDER_PLACE_RATE_LIMIT
    if rate == "0":
        return None
    key = client_key
    try:
        try:
            usage = _count(request, key, rate)
        except CounterStoreFull as full:
            _warn_of_a_full_store(full)
            key = overflow_key
            with SQLiteCounterCache.beyond_the_bound():
                usage = _count(request, key, rate)
    except CACHE_UNAVAILABLE:
        logger.warning(
            "the rate-limit cache cannot count; order placement is not limited",
            exc_info=True,
        )
        return None
    if usage is None or not usage["should_limit"]:
        return None
    logger.info(
        "order placement from %s refused: %s is over ORDER_PLACE_RATE_LIMIT %s",
        request_client_address(request),
        key(PLACE_GROUP, request),
        rate,
    )
    return max(1, int(usage["time_left"]))


def _warn_of_a_full_store(full: CounterStoreFull) -> None:
    now = time.monotonic()
    if _full_warned_at and now - _full_warned_at[-1] < FULL_WARNING_SECONDS:
        return
    _full_warned_at[:] = [now]
    logger.warning(
        "%s: clients without a counter share one until counters expire", full
    )


def _count(request, key, rate: str):
    return get_usage(request, group=PLACE_GROUP, key=key, rate=rate, increment=True)


def client_key(group: str, request) -> str:
    """What a client is counted under: its address, an IPv6 client by its /64
    (one subscriber's network, as django-ratelimit's "ip" key does it: a host
    picks any address in it) and an IPv4 client seen over IPv6 as itself."""
    address = ipaddress.ip_address(request_client_address(request))
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)


def overflow_key(group: str, request) -> str:
    return OVERFLOW_KEY
