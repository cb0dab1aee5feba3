"""The rate limit on placing orders: ORDER_PLACE_RATE_LIMIT per client address,
counted by django-ratelimit in the "ratelimit" cache (orderproj/settings/security.py).

The address is the service's own idea of the client (orders/api/client_address.py,
TRUSTED_PROXY_HOPS), never django-ratelimit's "ip" key: that reads REMOTE_ADDR,
which daphne's --proxy-headers would set to the leftmost X-Forwarded-For entry,
the one the client writes, and which raises for a value that is not an address.

Every web process must count in the same place, or n processes allow n times
the limit. With REDIS_URL that is Redis (Django's RedisCache: INCR is atomic and
keeps the key's expiry). Without it, the embedded default, it is a directory of
files (LockedFileBasedCache below), which every process on the machine shares.
The database cache would be shared too, but on SQLite every write of every web
and worker process waits for the one write lock, and counting would add a write
to every order placed; and Django's database and file caches both increment by
reading and then writing, so concurrent requests would be lost from the count.
"""

import contextlib
import fcntl
import ipaddress
import logging
import os
import pickle
import time
import zlib

from django.conf import settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError

from orders.api.client_address import request_client_address

logger = logging.getLogger("orders.ratelimit")

# Named by the URL, not its path: orders/urls.py, "api-orders".
PLACE_URL_NAME = "api-orders"
PLACE_GROUP = "orders.place"

# A counter that cannot be read or written lets the order through (and says so
# in the log): an outage of the cache must not stop the shop taking orders.
CACHE_UNAVAILABLE = (OSError, RedisError)


def place_retry_after(request) -> int | None:
    """Count this order placement against its client address; the seconds to
    wait before the next one when it is over the limit, else None."""
    rate = settings.ORDER_PLACE_RATE_LIMIT
    if rate == "0":
        return None
    try:
        usage = get_usage(
            request, group=PLACE_GROUP, key=client_key, rate=rate, increment=True
        )
    except CACHE_UNAVAILABLE:
        logger.warning(
            "the rate-limit cache cannot count; order placement is not limited",
            exc_info=True,
        )
        return None
    if usage is None or not usage["should_limit"]:
        return None
    logger.info(
        "order placement from %s refused: over ORDER_PLACE_RATE_LIMIT %s",
        request_client_address(request),
        rate,
    )
    return max(1, int(usage["time_left"]))


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


class LockedFileBasedCache(FileBasedCache):
    """Django's file cache with add() and incr() atomic across processes, and an
    incr() that keeps the entry's expiry (Django's reads, adds and writes the
    value back with the default timeout, unlocked).

    One lock file for the directory: a rate-limit check holds it for the time
    of a read and a rename.
    """

    @contextlib.contextmanager
    def _locked(self):
        self._createdir()
        fd = os.open(os.path.join(self._dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        with self._locked():
            return super().add(key, value, timeout, version)

    def incr(self, key, delta=1, version=None):
        with self._locked():
            try:
                with open(self._key_to_file(key, version), "rb") as file:
                    # FileBasedCache's format: the pickled expiry, then the value.
                    expiry = pickle.load(file)
                    value = pickle.loads(zlib.decompress(file.read()))
            except FileNotFoundError:
                raise ValueError(f"Key {key!r} not found") from None
            now = time.time()
            if expiry is not None and expiry <= now:
                raise ValueError(f"Key {key!r} not found")
            value += delta
            self.set(key, value, None if expiry is None else expiry - now, version)
            return value
