"""The rate limit on placing orders: ORDER_PLACE_RATE_LIMIT per client address,
counted by django-ratelimit in the "ratelimit" cache (orderproj/settings/security.py).

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
            request, group=PLACE_GROUP, key="ip", rate=rate, increment=True
        )
    except CACHE_UNAVAILABLE:
        logger.warning(
            "the rate-limit cache cannot count; order placement is not limited",
            exc_info=True,
        )
        return None
    if usage is None or not usage["should_limit"]:
        return None
    return max(1, int(usage["time_left"]))


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
