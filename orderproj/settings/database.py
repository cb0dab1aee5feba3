"""The database: SQLite in WAL mode by default, PostgreSQL for scale-out, and
for the web process a pool of PostgreSQL connections."""

import os
import sys
import tempfile
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.base import BASE_DIR
from orderproj.settings.environment import env

# The kind of process, said by whoever starts it: the Procfile's web line and
# `manage.py serve` (orders/workers/processes.py, web_env) start daphne with
# ORDERPROJ_PROCESS=web. Unset in every other process.
ORDERPROJ_PROCESS = env.str("ORDERPROJ_PROCESS", default="")
if ORDERPROJ_PROCESS not in {"", "web"}:
    raise ImproperlyConfigured(
        f"ORDERPROJ_PROCESS={ORDERPROJ_PROCESS!r} is not 'web' (or unset, for "
        "every other process)"
    )
WEB_PROCESS = ORDERPROJ_PROCESS == "web"

DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
_database = env.db_url_config(DATABASE_URL)
# environ names an engine for every scheme it knows, and passes an unknown one
# through as the engine's name.
if _database.get("ENGINE") not in environ.Env.DB_SCHEMES.values():
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r} is not a database URL (e.g. "
        "postgres://user@host/db or sqlite:////path/to/db.sqlite3)"
    )
DATABASES = {"default": {**_database, "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True}}
_engine = DATABASES["default"]["ENGINE"]

# PostgreSQL only. Django's ASGI handler runs each request in a thread of its own,
# so a persistent per-thread connection is never reused there: the web process
# would connect once per request and leave the connections of finished threads
# open until garbage collection. So the web process shares a pool and holds at
# most DATABASE_POOL_MAX_SIZE sessions (docs/deployers/configuration.md); the
# workers (one thread each, forked by django-q2) keep persistent connections.
DATABASE_POOL = env.bool("DATABASE_POOL", default=WEB_PROCESS)


def default_application_name(argv: list[str], *, web: bool) -> str:
    """The name this process's PostgreSQL sessions carry in pg_stat_activity, so
    whoever counts them can tell the processes apart."""
    if web:
        return "orderproj-web"
    if len(argv) > 1 and Path(argv[0]).name == "manage.py":
        return "orderproj-worker" if argv[1] == "qcluster" else f"orderproj-{argv[1]}"
    return "orderproj"


DATABASE_APPLICATION_NAME = env.str(
    "DATABASE_APPLICATION_NAME",
    default=default_application_name(sys.argv, web=WEB_PROCESS),
)
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=10, minimum=1)
DATABASE_POOL_TIMEOUT = env.float("DATABASE_POOL_TIMEOUT", default=10.0, minimum=0.1)

if _engine == "django.db.backends.postgresql":
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    # Django turns psycopg's prepared statements off (None); its own cursors bind
    # on the client and never prepare, so this is for the order moves, which
    # bind on the server and ask to be prepared (orders/state/transitions_sql.py,
    # bound_cursor): parsed and planned once per connection. Behind PgBouncer
    # in transaction mode, it needs max_prepared_statements (PgBouncer 1.21+).
    _options["prepare_threshold"] = 5
    _options["application_name"] = DATABASE_APPLICATION_NAME
    if DATABASE_POOL:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        _options["pool"] = {
            "min_size": min(2, DATABASE_POOL_MAX_SIZE),
            "max_size": DATABASE_POOL_MAX_SIZE,
            # A request (or a stream's opening) that cannot have a connection
            # this soon fails (a 500, a stream's 503) instead of hanging
            # psycopg's 30 s.
            "timeout": DATABASE_POOL_TIMEOUT,
        }
    # One test database per test run (`make test` runs the database tests on
    # PostgreSQL as well when TEST_POSTGRES_URL is set).
    DATABASES["default"]["TEST"] = {"NAME": f"test_orderproj_{os.getpid()}"}
elif _engine == "django.db.backends.sqlite3":
    # Without these, concurrent writers (web + several workers) hit
    # "database is locked" and django-q2 acknowledges tasks whose results failed
    # to save. IMMEDIATE takes the write lock at BEGIN, so the busy timeout
    # applies instead of a deadlock-style failure on lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": (
            "PRAGMA journal_mode=WAL;"
            "PRAGMA synchronous=NORMAL;"
            "PRAGMA busy_timeout=30000;"
        ),
    }
    # A file, not :memory:, so tests see the same locking (WAL, IMMEDIATE) as
    # production and threads in a test can race on real connections.
    # One file per test run, so concurrent runs do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": str(Path(tempfile.gettempdir()) / f"orderproj-test-{os.getpid()}.db")
    }
