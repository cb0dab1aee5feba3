"""Settings for orderproj: every knob is an environment variable with a default.

The defaults are the embedded configuration (SQLite in WAL mode, django-q2's ORM
broker, polled streams) so that `make run` needs nothing installed. README.md lists
every variable.
"""

import math
import os
import sys
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_number(name: str, default: float, cast=float, minimum: float | None = None):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return cast(default)
    try:
        value = cast(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}")
    return value


# DEBUG is on by default only where SECRET_KEY is unset: a deployment must set a
# key of its own (DEBUG off refuses to start without one), so setting it is what
# makes a machine a server, and a server that forgets DEBUG=0 still runs with it
# off. `make run`, `manage.py` by hand and the tests set neither and get the
# development settings. README.md, "Deploying".
SECRET_KEY = env_str("SECRET_KEY")
DEBUG = env_bool("DEBUG", not SECRET_KEY)
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "django-insecure-development-key-only-for-local-runs"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
PORT = env_number("PORT", 8000, cast=int, minimum=1)

INSTALLED_APPS = [
    # orders first so that its `qcluster` command (cluster + dispatcher) wins.
    "orders",
    "daphne",
    # django.contrib.admin, with the operators' console
    # (orders/operations/admin_site.py).
    "orders.apps.OperationsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "csp",
    "django_ratelimit",
]

MIDDLEWARE = [
    # First: it sees every other middleware's answer (its docstring).
    "orders.api.middleware.ApiErrorShape",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY below).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "orders.api.middleware.OrderPlaceRateLimit",
    # Last on purpose: see its docstring.
    "orders.api.middleware.SyncChainBoundary",
]

ROOT_URLCONF = "orderproj.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "orders.pages.views.ui_labels",
            ],
        },
    },
]

ASGI_APPLICATION = "orderproj.asgi.application"
WSGI_APPLICATION = "orderproj.wsgi.application"

# Database ---------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=600, conn_health_checks=True
    )
}
# PostgreSQL only. Django's ASGI handler runs each request in a thread of its own,
# so a persistent per-thread connection is never reused there: the web process
# would connect once per request (measured: 8 ms) and leave the connections of
# finished threads open until garbage collection (33 open after 100 requests at
# concurrency 10). orderproj/asgi.py turns the pool on for the web process; the
# workers (one thread each, forked by django-q2) keep persistent connections.
# So a web process holds at most DATABASE_POOL_MAX_SIZE sessions (README.md,
# "Scale-out": the bound for N web and M worker processes).
#
# The web process is the one that loads orderproj/asgi.py, as daphne does before
# Django's setup. It is told from the modules loaded, not from a variable
# asgi.py puts in the environment: every process started from one that imported
# asgi.py inherited that, and a qcluster started so (by a test run that had
# imported it) gave each of its processes a pool of at least two sessions.
WEB_PROCESS = "orderproj.asgi" in sys.modules
DATABASE_POOL = env_bool("DATABASE_POOL", WEB_PROCESS)


def default_application_name(argv: list[str], *, web: bool) -> str:
    """The name this process's PostgreSQL sessions carry in pg_stat_activity, so
    whoever counts them can tell the processes apart."""
    if web:
        return "orderproj-web"
    if len(argv) > 1 and Path(argv[0]).name == "manage.py":
        return "orderproj-worker" if argv[1] == "qcluster" else f"orderproj-{argv[1]}"
    return "orderproj"


DATABASE_APPLICATION_NAME = env_str(
    "DATABASE_APPLICATION_NAME", default_application_name(sys.argv, web=WEB_PROCESS)
)
DATABASE_POOL_MAX_SIZE = env_number("DATABASE_POOL_MAX_SIZE", 10, cast=int, minimum=1)
DATABASE_POOL_TIMEOUT = env_number("DATABASE_POOL_TIMEOUT", 10, minimum=0.1)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django turns psycopg's prepared statements off (None); its own cursors bind
    # on the client and never prepare, so this is for the order moves, which
    # bind on the server and ask to be prepared (orders/state/transitions.py,
    # _bound_cursor): parsed and planned once per connection. Behind PgBouncer
    # in transaction mode, it needs max_prepared_statements (PgBouncer 1.21+).
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 5
    DATABASES["default"]["OPTIONS"]["application_name"] = DATABASE_APPLICATION_NAME
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and DATABASE_POOL:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        # A request (or a stream's opening) that cannot have a connection this
        # soon fails (a 500, a stream's 503) instead of hanging psycopg's 30 s.
        "timeout": DATABASE_POOL_TIMEOUT,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Without these, concurrent writers (web + several workers) hit
    # "database is locked" and django-q2 acknowledges tasks whose results failed to
    # save. IMMEDIATE takes the write lock at BEGIN, so the busy timeout applies
    # instead of a deadlock-style failure on lock upgrade.
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
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # One test database per test run here too (`make test` runs the database
    # tests on PostgreSQL as well when TEST_POSTGRES_URL is set).
    DATABASES["default"]["TEST"] = {"NAME": f"test_orderproj_{os.getpid()}"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the app folders as well, so a styled admin needs no
# collectstatic run in development.
WHITENOISE_USE_FINDERS = True
# WhiteNoise rescans the file system on every request when this is on (its
# default under DEBUG): measured here, 8-15 ms added to every response, the API's
# included. Static files are indexed once at start instead.
WHITENOISE_AUTOREFRESH = False

LOGIN_URL = "/admin/login/"

# Security (README.md, "Deploying") ------------------------------------------------
# Each of these is on when DEBUG is off, and each can be set either way: a TLS
# proxy in front tells Django the request was HTTPS with SECURE_PROXY_SSL_HEADER
# (or daphne's --proxy-headers), and CSRF_TRUSTED_ORIGINS lists the origins that
# may POST when the proxy's host differs from the one Django sees.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# A load balancer's health check often comes over plain HTTP and takes a
# redirect for a failure.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
# Database sessions that refuse a key Django never issues (orders/api/sessions.py).
SESSION_ENGINE = "orders.api.sessions"
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_number(
    "SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600, cast=int, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# Only consent: a domain is preloaded once its owner submits it to the list.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)


def proxy_ssl_header(raw: str) -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https": the request META
    key the proxy sets, and the value that means HTTPS."""
    if not raw.strip():
        return None
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 2 or not parts[0].startswith("HTTP_") or not parts[1]:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={raw!r} is not 'HTTP_<HEADER>,<value>' "
            "(e.g. HTTP_X_FORWARDED_PROTO,https)"
        )
    return parts[0], parts[1]


SECURE_PROXY_SSL_HEADER = proxy_ssl_header(env_str("SECURE_PROXY_SSL_HEADER"))
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SECURE_REFERRER_POLICY = env_str("SECURE_REFERRER_POLICY", "same-origin")
SECURE_CONTENT_TYPE_NOSNIFF = True
# The debug page masks every setting and variable that carries a URL with a
# password (DATABASE_URL, REDIS_URL, EMAIL_URL and what is parsed from them).
DEFAULT_EXCEPTION_REPORTER_FILTER = "orders.credentials.CredentialMaskingFilter"
DEFAULT_EXCEPTION_REPORTER = "orders.credentials.CredentialMaskingReporter"

# No inline script or style anywhere: the pages load their scripts and styles
# from static/, pass data in data- attributes and json_script blocks (not run),
# and Django's admin needs no inline code either (tests/e2e/test_browser.py
# visits it under this policy). django-csp leaves the policy off Django's own
# debug pages (404, 500 while DEBUG is on), which are inline.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        # fetch() and the EventSource streams.
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Orders -------------------------------------------------------------------------
ORDER_MAX_ATTEMPTS = env_number("ORDER_MAX_ATTEMPTS", 3, cast=int, minimum=1)
ORDER_RETRY_BASE_SECONDS = env_number("ORDER_RETRY_BASE_SECONDS", 1, minimum=0)
ORDER_RETRY_MULTIPLIER = env_number("ORDER_RETRY_MULTIPLIER", 2, minimum=1)
ORDER_RETRY_MAX_SECONDS = env_number("ORDER_RETRY_MAX_SECONDS", 60, minimum=0)
# Fraction of each delay that is randomised (0.2: a delay lands in [80%, 100%]).
ORDER_RETRY_JITTER = env_number("ORDER_RETRY_JITTER", 0.2, minimum=0)
ORDER_LEASE_SECONDS = env_number("ORDER_LEASE_SECONDS", 60, minimum=1)


def attempt_timeout(lease: float) -> int:
    """The longest a django-q2 task may run (Q_CLUSTER "timeout"): short enough
    that a worker is gone before the lease of the order it holds runs out.

    Once a lease has expired the dispatcher counts the attempt as lost and a
    retry may start, so the worker must be stopped before then. django-q2 stops
    it twice over (django_q/worker.py, django_q/cluster.py): at `timeout` an
    alarm (SIGALRM) raises in the task, which ends it at once in Python code.
    Code the alarm cannot interrupt (blocked in a C extension) is killed by the
    sentinel's guard, which acts only when the worker's timer, set to `timeout`
    + 3 s, has been counted down by 0.5 s per guard cycle; every cycle that runs
    late makes the kill later. Measured on a loaded 2-core machine the countdown
    ran 15 % slow (7 s took 8.0 s), so `timeout` + 3 s is kept within 80 % of the
    lease: the guard may run a quarter slow and still kill the worker in time. A
    lease of 60 s gives an attempt 45 s. Checking the lease before each step
    would add nothing: no step starts after the alarm, so each starts with at
    least this margin left.
    """
    timeout = math.floor(lease * 0.8 - 3)
    if timeout < 1:
        raise ImproperlyConfigured(
            f"ORDER_LEASE_SECONDS={lease:g} leaves an attempt no time: it must be "
            "at least 5 (an attempt may run 80 % of its lease less 3 s)"
        )
    return timeout


ORDER_ATTEMPT_TIMEOUT_SECONDS = attempt_timeout(ORDER_LEASE_SECONDS)
# How long after an order was handed to the queue the dispatcher first checks on
# it: a task still waiting in the broker is left alone; one that left the broker
# without a worker claiming the order is taken for lost and handed over again.
ORDER_REDISPATCH_SECONDS = env_number("ORDER_REDISPATCH_SECONDS", 15, minimum=1)
# A worker whose task's order has others waiting behind it takes up to
# ORDER_BATCH_SIZE orders in all (its own included) and runs them as one batch,
# sharing the claim, checkpoint and completion writes; as many as it runs in about
# ORDER_BATCH_SECONDS, judged by the orders it ran last (orders/services/orders.py,
# BatchSizer). 1 turns batches off.
ORDER_BATCH_SIZE = env_number("ORDER_BATCH_SIZE", 50, cast=int, minimum=1)
ORDER_BATCH_SECONDS = env_number("ORDER_BATCH_SECONDS", 0.1, minimum=0)
# How often the dispatcher inside each qcluster looks for due work.
ORDER_DISPATCH_INTERVAL_SECONDS = env_number(
    "ORDER_DISPATCH_INTERVAL_SECONDS", 0.2, minimum=0.01
)
ORDER_FAILURE_RATE = env_number("ORDER_FAILURE_RATE", 0, minimum=0)
ORDER_SIMULATION_ENABLED = env_bool("ORDER_SIMULATION_ENABLED", DEBUG)
ORDER_CURRENCY = env_str("ORDER_CURRENCY", "USD")
# Where the simulated payment and stock gateways keep what they did, by
# idempotency key (orders/gateways.py). Workers on several machines share it only
# if it is a shared directory.
ORDER_SIMULATED_GATEWAY_DIR = Path(
    env_str("ORDER_SIMULATED_GATEWAY_DIR", str(BASE_DIR / "var" / "simulated-gateway"))
)
# Routes POST /api/bench/baseline, the minimal view `manage.py bench placing`
# compares placing with (orders/bench/views.py). Off: it writes rows no worker
# processes.
ORDER_BENCH_BASELINE = env_bool("ORDER_BENCH_BASELINE", False)
if ORDER_FAILURE_RATE > 1:
    raise ImproperlyConfigured("ORDER_FAILURE_RATE must be between 0 and 1")
if ORDER_RETRY_JITTER > 1:
    raise ImproperlyConfigured("ORDER_RETRY_JITTER must be between 0 and 1")

# Queue (django-q2) --------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
Q_WORKERS = env_number("Q_WORKERS", 2, cast=int, minimum=1)
# A worker exits after this many tasks and the sentinel starts a fresh one
# (django-q2's default, 500), which bounds what a leaking task can hold.
Q_RECYCLE = env_number("Q_RECYCLE", 500, cast=int, minimum=1)
Q_CLUSTER = {
    "name": "orderproj",
    "workers": Q_WORKERS,
    "recycle": Q_RECYCLE,
    # Shorter than the lease by a margin (see attempt_timeout): a worker that
    # overruns is gone before its lease expires and a retry can be claimed, so
    # two attempts of one order never run side by side.
    "timeout": ORDER_ATTEMPT_TIMEOUT_SECONDS,
    # The ORM broker redelivers an unacknowledged task after `retry` seconds; it
    # must exceed `timeout` or a merely slow task is run twice.
    "retry": max(1, int(ORDER_LEASE_SECONDS)) + 60,
    # How long the ORM broker's pusher sleeps when the queue is empty: an order
    # placed into an idle cluster waits half of it on average (bench pipeline:
    # pickup p50 55 ms at 0.1, 31 ms at 0.05), for 1.2 % more of a core while idle.
    "poll": 0.05,
    "guard_cycle": 0.5,
    # Tasks of this project catch their own errors; a task that still raises is
    # recorded by the global failure handler, so it is acknowledged, not looped.
    "ack_failures": True,
    "max_attempts": 3,
    "save_limit": 250,
    "label": "Task queue",
    "catch_up": False,
    # Lets django-q2's own Q_CLUSTER_NAME env var name a separate queue (one
    # Redis, several deployments) without further configuration.
    "ALT_CLUSTERS": {},
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Order placement rate limit ---------------------------------------------------
# POST /api/orders per client address (orders/api/middleware.py): "<count>/<period>"
# with a period of s, m, h or d (optionally a multiple: "100/5m"); "0" turns it
# off. Counted in the "ratelimit" cache, which every web process shares: Redis
# when REDIS_URL is set, else files in ORDER_RATE_LIMIT_DIR (every process on
# the machine; see orders/api/ratelimit.py for why not the database).
ORDER_PLACE_RATE_LIMIT = env_str("ORDER_PLACE_RATE_LIMIT", "120/m").strip()


def rate_limit(raw: str) -> str:
    import re

    if raw == "0" or re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", raw):
        return raw
    raise ImproperlyConfigured(
        f"ORDER_PLACE_RATE_LIMIT={raw!r} is not '<count>/<period>' (e.g. 120/m, "
        "1000/h) or 0"
    )


ORDER_PLACE_RATE_LIMIT = rate_limit(ORDER_PLACE_RATE_LIMIT)
ORDER_RATE_LIMIT_DIR = Path(
    env_str("ORDER_RATE_LIMIT_DIR", str(BASE_DIR / "var" / "ratelimit"))
)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "ratelimit": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "orderproj",
            # A Redis that hangs delays an order by this much, not forever.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
        if REDIS_URL
        else {
            "BACKEND": "orders.api.ratelimit.LockedFileBasedCache",
            "LOCATION": str(ORDER_RATE_LIMIT_DIR),
            "OPTIONS": {"MAX_ENTRIES": 10000},
        }
    ),
}
RATELIMIT_USE_CACHE = "ratelimit"
# A count the cache could not keep lets the order through (orders/api/ratelimit.py).
RATELIMIT_FAIL_OPEN = True
# django_ratelimit.W001 says a backend is "not officially supported" when it is
# not memcached or django-redis by name. Both used here count atomically: Django's
# RedisCache increments with INCR, LockedFileBasedCache under a file lock.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]

CHANNEL_LAYERS = (
    {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, which
                # cuts channels_redis's 5 s blocking receive on a healthy Redis
                # (django/channels_redis#422): reads get longer than that.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 10,
                        "socket_connect_timeout": 2,
                    }
                ],
                # Each web process renews its membership of the events group
                # every minute (orders/live/wakers.py): one that died
                # leaves it soon.
                "group_expiry": 300,
                # One deployment's writers wake its own web processes only,
                # as Q_CLUSTER_NAME gives it its own queue.
                "prefix": f"asgi:{os.environ.get('Q_CLUSTER_NAME', 'orderproj')}",
            },
        }
    }
    if REDIS_URL
    else {}
)

# Logging ------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own config mails the admins on every 500 (its mail_admins
        # handler); here the root's console logs them, and the failure handler
        # mails them per failure group (orders/operations/failures.py).
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # django-q2's logger is named "django-q" (django_q/conf.py).
        "django-q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Until a web process that died leaves the events group (group_expiry),
        # channels_redis logs every message sent to it at INFO.
        "channels_redis": {"level": "WARNING"},
    },
}

CSRF_FAILURE_VIEW = "orders.api.views.csrf_failure"

# Failures and notifications -------------------------------------------------------
# Exceptions escaping async work are stored as FailureRecords and mailed to ADMINS
# (orders/operations/failures.py). ADMINS="Ana <ana@example.com>,ops@example.com"; in
# DEBUG
# it defaults to a local address so the console shows what would be sent.
# EMAIL_URL picks the mail transport:
#   console://                          print mails to stdout (the default)
#   smtp://user:password@host:587       SMTP with STARTTLS (smtps://... for TLS
#                                       from the start, smtp+plain://... for none)
#   dummy://                            drop mails
#   file:///var/tmp/mails               write each mail to a file in that
#                                       directory (for tests and staging)
# Mails go per failure group: a new group at once, then at most one digest per
# FAILURE_DIGEST_WINDOW_SECONDS while it keeps failing; a resolved group that
# fails again at once.


def env_addresses(name: str, default: str = "") -> list[tuple[str, str]]:
    from email.utils import getaddresses

    pairs = getaddresses([env_str(name, default)])
    for _name, address in pairs:
        if "@" not in address:
            raise ImproperlyConfigured(f"{name}: {address!r} is not an email address")
    return [(person or address, address) for person, address in pairs if address]


def email_settings(url: str) -> dict:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme in {"", "console"}:
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    if parts.scheme == "dummy":
        return {"EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend"}
    if parts.scheme == "file":
        if not parts.path:
            raise ImproperlyConfigured("EMAIL_URL file:// needs a directory path")
        return {
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": unquote(parts.path),
        }
    if parts.scheme not in {"smtp", "smtps", "smtp+plain"}:
        raise ImproperlyConfigured(
            f"EMAIL_URL scheme {parts.scheme!r} is not one of console, dummy, file, "
            "smtp, smtps, smtp+plain"
        )
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": parts.hostname or "localhost",
        "EMAIL_PORT": parts.port or (465 if parts.scheme == "smtps" else 587),
        "EMAIL_HOST_USER": unquote(parts.username or ""),
        "EMAIL_HOST_PASSWORD": unquote(parts.password or ""),
        "EMAIL_USE_TLS": parts.scheme == "smtp",
        "EMAIL_USE_SSL": parts.scheme == "smtps",
        "EMAIL_TIMEOUT": 10,
    }


ADMINS = env_addresses("ADMINS", "Operators <operators@localhost>" if DEBUG else "")
EMAIL_URL = env_str("EMAIL_URL", "console://")
globals().update(email_settings(EMAIL_URL))
SERVER_EMAIL = env_str("SERVER_EMAIL", "orderproj@localhost")
EMAIL_SUBJECT_PREFIX = env_str("EMAIL_SUBJECT_PREFIX", "[orderproj] ")
FAILURE_DIGEST_WINDOW_SECONDS = env_number(
    "FAILURE_DIGEST_WINDOW_SECONDS", 900, minimum=1
)

# Streams ------------------------------------------------------------------------
# Server-Sent Events (orders/live/). Each web process polls the event table
# this often while any client is connected; one poll serves every client.
ORDER_STREAM_POLL_SECONDS = env_number("ORDER_STREAM_POLL_SECONDS", 0.2, minimum=0.01)
# On SQLite (the embedded default) each web process also looks at the
# database's -wal file this often while a stream is open, and reads at once when
# another process (a worker) has committed: a stat(), not a query.
ORDER_STREAM_WAL_CHECK_SECONDS = env_number(
    "ORDER_STREAM_WAL_CHECK_SECONDS", 0.005, minimum=0.001
)
# With REDIS_URL the writers' messages wake the pump at once (orders/state/notify.py);
# it still polls this often in case one is lost, and every
# ORDER_STREAM_POLL_SECONDS while Redis cannot be reached.
ORDER_STREAM_PUSH_FALLBACK_SECONDS = env_number(
    "ORDER_STREAM_PUSH_FALLBACK_SECONDS", 5, minimum=0.01
)
# A comment line at least this often keeps proxies from closing an idle stream.
ORDER_STREAM_KEEPALIVE_SECONDS = env_number(
    "ORDER_STREAM_KEEPALIVE_SECONDS", 15, minimum=0.1
)
# How long a missing event id holds back later ones before it is taken to be a
# rolled-back transaction's hole (PostgreSQL sequences commit out of order).
ORDER_STREAM_SETTLE_SECONDS = env_number("ORDER_STREAM_SETTLE_SECONDS", 2, minimum=0)
# The `retry:` a stream sends: how long a browser waits before reconnecting.
ORDER_STREAM_RETRY_MS = env_number("ORDER_STREAM_RETRY_MS", 2000, cast=int, minimum=0)
# Opening a stream (authorization and replay) runs on this many threads of the
# web process's own (orders/live/threads.py); the pump reads on one more.
ORDER_STREAM_OPEN_THREADS = env_number(
    "ORDER_STREAM_OPEN_THREADS", 2, cast=int, minimum=1
)
# An opening is refused at once with a 503 and Retry-After, rather than waiting
# behind others, when the last one to start had waited longer than this for a
# thread (the database is slow, or a burst is more than it serves soon), or when
# ORDER_STREAM_OPEN_BACKLOG are waiting already.
ORDER_STREAM_OPEN_MAX_WAIT_SECONDS = env_number(
    "ORDER_STREAM_OPEN_MAX_WAIT_SECONDS", 2, minimum=0
)
ORDER_STREAM_OPEN_BACKLOG = env_number(
    "ORDER_STREAM_OPEN_BACKLOG", 5000, cast=int, minimum=1
)
# A stream whose client does not take what it is sent (its connection's send
# buffer, 64 KiB in daphne, full) writes nothing more; once this much waits for
# it, it is cut off and its client resumes from its last id when it reads again.
ORDER_STREAM_MAX_UNSENT_BYTES = env_number(
    "ORDER_STREAM_MAX_UNSENT_BYTES", 1024 * 1024, cast=int, minimum=1024
)
# Events older than this are deleted (hourly, by the dispatcher); 0 keeps them all.
ORDER_EVENT_RETENTION_DAYS = env_number("ORDER_EVENT_RETENTION_DAYS", 7, minimum=0)

# Monitoring -----------------------------------------------------------------------
# GET /metrics (Prometheus) answers staff sessions and `Authorization: Bearer
# <METRICS_TOKEN>`; unset, only staff sessions. README.md, "Metrics".
METRICS_TOKEN = env_str("METRICS_TOKEN")
