"""Settings for orderproj: every knob is an environment variable with a default.

The defaults are the embedded configuration (SQLite in WAL mode, django-q2's ORM
broker, polled streams) so that `make run` needs nothing installed. README.md lists
every variable.
"""

import os
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


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY") or (
    "django-insecure-development-key-only-for-local-runs" if DEBUG else ""
)
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = [
    host.strip()
    for host in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if host.strip()
]
PORT = env_number("PORT", 8000, cast=int, minimum=1)

INSTALLED_APPS = [
    # orders first so that its `qcluster` command (cluster + dispatcher) wins.
    "orders",
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

LOGIN_URL = "/admin/login/"

# Queue (django-q2) --------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
Q_WORKERS = env_number("Q_WORKERS", 2, cast=int, minimum=1)
Q_CLUSTER = {
    "name": "orderproj",
    "workers": Q_WORKERS,
    # Order tasks are short; the guard kills anything slower than this.
    "timeout": 90,
    # The ORM broker redelivers an unacknowledged task after `retry` seconds; it
    # must exceed `timeout` or a merely slow task is run twice.
    "retry": 120,
    "poll": 0.1,
    "guard_cycle": 0.5,
    # Tasks of this project catch their own errors; a task that still raises is
    # recorded by the global failure handler, so it is acknowledged, not looped.
    "ack_failures": True,
    "max_attempts": 3,
    "save_limit": 250,
    "label": "Task queue",
    "catch_up": False,
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

CHANNEL_LAYERS = (
    {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
    if REDIS_URL
    else {}
)

# Orders -------------------------------------------------------------------------
ORDER_MAX_ATTEMPTS = env_number("ORDER_MAX_ATTEMPTS", 3, cast=int, minimum=1)
ORDER_RETRY_BASE_SECONDS = env_number("ORDER_RETRY_BASE_SECONDS", 1, minimum=0)
ORDER_RETRY_MULTIPLIER = env_number("ORDER_RETRY_MULTIPLIER", 2, minimum=1)
ORDER_RETRY_MAX_SECONDS = env_number("ORDER_RETRY_MAX_SECONDS", 60, minimum=0)
# Fraction of each delay that is randomised (0.2: a delay lands in [80%, 100%]).
ORDER_RETRY_JITTER = env_number("ORDER_RETRY_JITTER", 0.2, minimum=0)
ORDER_LEASE_SECONDS = env_number("ORDER_LEASE_SECONDS", 60, minimum=1)
# A PENDING or due RETRYING order that no worker has claimed this long after it was
# handed to the queue is handed over again (the queue may have lost the task).
ORDER_REDISPATCH_SECONDS = env_number("ORDER_REDISPATCH_SECONDS", 15, minimum=1)
# How often the dispatcher inside each qcluster looks for due work.
ORDER_DISPATCH_INTERVAL_SECONDS = env_number(
    "ORDER_DISPATCH_INTERVAL_SECONDS", 0.2, minimum=0.01
)
ORDER_FAILURE_RATE = env_number("ORDER_FAILURE_RATE", 0, minimum=0)
ORDER_SIMULATION_ENABLED = env_bool("ORDER_SIMULATION_ENABLED", DEBUG)
ORDER_CURRENCY = env_str("ORDER_CURRENCY", "USD")
if ORDER_FAILURE_RATE > 1:
    raise ImproperlyConfigured("ORDER_FAILURE_RATE must be between 0 and 1")
if ORDER_RETRY_JITTER > 1:
    raise ImproperlyConfigured("ORDER_RETRY_JITTER must be between 0 and 1")

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
        "django_q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}

CSRF_FAILURE_VIEW = "orders.api.csrf_failure"
