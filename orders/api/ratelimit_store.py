"""The rate limit's embedded store: counters in a SQLite file of their own,
shared by every process on the machine, holding at most MAX_ENTRIES live ones.

Rotating addresses must not flush other clients' counts. Django's file cache,
once full, deleted a random third of its entries, live counters among them, and
listed its whole directory on every write. Here a new counter first deletes the
expired ones (an indexed DELETE), and when MAX_ENTRIES live ones remain it is
refused with CounterStoreFull: no live counter is ever deleted, and the caller
(orders/api/ratelimit.py) counts that client under one counter shared by every
client that has none. docs/decisions/0011-a-rate-limit-store-that-never-forgets.md
says why SQLite and what it costs.

This is a separate file from the service's database, so counting takes no
lock of the main SQLite database. The store holds integers only: it is a
Django cache backend because django-ratelimit counts through one.
"""

import contextlib
import contextvars
import os
import sqlite3
import threading
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

FILE_NAME = "counters.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires REAL  -- time.time() after which the counter is gone; NULL: never
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counter_expires ON counter (expires);
"""

# What a SQLite error that is not about the SQL says: the file cannot be
# opened, read or written, or another process held the lock too long. Each is
# an outage of the store (OSError), which the rate limit lets orders through.
# SQLITE_ERROR (a mistake in the SQL) stays what it is.
UNAVAILABLE = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_FULL"}
UNAVAILABLE_PREFIXES = ("SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CORRUPT")

# A new key may go past MAX_ENTRIES in this context: for the one counter that
# the clients without a counter share.
_beyond_the_bound = contextvars.ContextVar("beyond_the_bound", default=False)


class CounterStoreFull(Exception):
    """The store holds MAX_ENTRIES live counters: no counter can be added."""


class CounterStoreUnavailable(OSError):
    """The store's file cannot be used now."""


class SQLiteCounterCache(BaseCache):
    """LOCATION is a directory; the counters live in FILE_NAME inside it."""

    def __init__(self, location, params):
        super().__init__(params)
        self._dir = location
        self._path = os.path.join(location, FILE_NAME)
        # One connection per thread: Django may hand one cache object to
        # several of a request's threads.
        self._local = threading.local()

    @staticmethod
    @contextlib.contextmanager
    def beyond_the_bound():
        """add() creates a key even when the store is full (at most one a window:
        the counter shared by the clients that have none)."""
        token = _beyond_the_bound.set(True)
        try:
            yield
        finally:
            _beyond_the_bound.reset(token)

    # The cache API ---------------------------------------------------------------
    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version)
        with self._transaction() as db:
            if _live_value(db, key) is not None:
                return False
            self._make_room(db)
            db.execute(
                "INSERT OR REPLACE INTO counter VALUES (?, ?, ?)",
                (key, _integer(value), self.get_backend_timeout(timeout)),
            )
            return True

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version)
        with self._transaction() as db:
            if _live_value(db, key) is None:
                self._make_room(db)
            db.execute(
                "INSERT OR REPLACE INTO counter VALUES (?, ?, ?)",
                (key, _integer(value), self.get_backend_timeout(timeout)),
            )

    def get(self, key, default=None, version=None):
        key = self.make_and_validate_key(key, version)
        with self._transaction(write=False) as db:
            value = _live_value(db, key)
        return default if value is None else value

    def incr(self, key, delta=1, version=None):
        """Atomic, and the counter keeps its expiry."""
        key = self.make_and_validate_key(key, version)
        with self._transaction() as db:
            row = db.execute(
                "UPDATE counter SET value = value + ? WHERE key = ? AND "
                "(expires IS NULL OR expires > ?) RETURNING value",
                (_integer(delta), key, time.time()),
            ).fetchone()
        if row is None:
            raise ValueError(f"Key {key!r} not found")
        return row[0]

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_and_validate_key(key, version)
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE counter SET expires = ? WHERE key = ? AND "
                "(expires IS NULL OR expires > ?)",
                (self.get_backend_timeout(timeout), key, time.time()),
            ).rowcount
        return changed == 1

    def delete(self, key, version=None):
        key = self.make_and_validate_key(key, version)
        with self._transaction() as db:
            return db.execute("DELETE FROM counter WHERE key = ?", (key,)).rowcount == 1

    def has_key(self, key, version=None):
        key = self.make_and_validate_key(key, version)
        with self._transaction(write=False) as db:
            return _live_value(db, key) is not None

    def clear(self):
        with self._transaction() as db:
            db.execute("DELETE FROM counter")

    # The bound -----------------------------------------------------------------
    def _make_room(self, db) -> None:
        """Called in the write transaction, before a new key: the expired
        counters go; raises CounterStoreFull when MAX_ENTRIES live ones stay."""
        db.execute("DELETE FROM counter WHERE expires <= ?", (time.time(),))
        if _beyond_the_bound.get():
            return
        (count,) = db.execute("SELECT count(*) FROM counter").fetchone()
        if count >= self._max_entries:
            raise CounterStoreFull(
                f"{self._path} holds {self._max_entries} live counters"
            )

    # The file --------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True):
        """One transaction on this thread's connection; a write one takes the
        file's write lock at its start, so a read and the write after it are
        one step for every process."""
        try:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            if _is_an_outage(error):
                raise CounterStoreUnavailable(f"{self._path}: {error}") from error
            raise

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
            # Autocommit mode: the transactions are the explicit BEGINs above.
            db = sqlite3.connect(self._path, timeout=2, isolation_level=None)
            # Counters need no durability: a machine that loses power loses a
            # window's counts, not orders. WAL lets reads go on beside a write.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = OFF")
            db.executescript(SCHEMA)
            self._local.db = db
        return db


def _live_value(db, key: str) -> int | None:
    row = db.execute(
        "SELECT value FROM counter WHERE key = ? AND (expires IS NULL OR expires > ?)",
        (key, time.time()),
    ).fetchone()
    return None if row is None else row[0]


def _integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"the counter store holds integers, not {value!r}")
    return value


def _is_an_outage(error: sqlite3.OperationalError) -> bool:
    name = getattr(error, "sqlite_errorname", "")
    return name in UNAVAILABLE or name.startswith(UNAVAILABLE_PREFIXES)
