"""What every process needs: the key, DEBUG, hosts, apps, pages, static files
and logging."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.environment import env

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Development mode is asked for, never assumed: a server that forgot its key
# must not start as a debug server (DEBUG on, a public key, the failure
# simulation on, cookies over plain HTTP). With neither variable set the
# process refuses to start; `make run` and the tests set DEBUG=1, a deployment
# sets SECRET_KEY, and DEBUG is then off unless said otherwise
# (docs/deployers/configuration.md).
SECRET_KEY = env.str("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: a server needs a key of its own (50 or more "
            "random characters). For development on this machine, set DEBUG=1 "
            "instead, as `make run` does."
        )
    SECRET_KEY = "django-insecure-development-key-only-for-local-runs"
ALLOWED_HOSTS = env.words("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
PORT = env.int("PORT", default=8000, minimum=1)

INSTALLED_APPS = [
    # orders first so that its `qcluster` (cluster + dispatcher) and
    # `compilemessages` (Babel, no GNU gettext) commands win.
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
    # Login throttling on /admin/login/ (orderproj/settings/login.py).
    "axes",
]

MIDDLEWARE = [
    # First: it sees every other middleware's answer (its docstring).
    "orders.api.middleware.ApiErrorShape",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response (CONTENT_SECURITY_POLICY in
    # security.py).
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language of each request, for the customers' pages and documents.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before the CSRF check: an API view's undeclared method is a 405, whoever
    # asks (orders/api/methods.py).
    "orders.api.middleware.DeclaredMethods",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "orders.api.middleware.OrderPlaceRateLimit",
    # Turns a locked-out login into the lockout page (orderproj/settings/login.py).
    "axes.middleware.AxesMiddleware",
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

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# The customers' languages: their pages, texts and mails (docs/developers/
# translations.md). Each request's language is the switch's cookie, else
# Accept-Language, else LANGUAGE_CODE (LocaleMiddleware); an order keeps the one
# it was placed in for its mails.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ko", "한국어")]
# Compiled by `manage.py compilemessages` (make run, make test), not committed.
LOCALE_PATHS = [BASE_DIR / "locale"]
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
# default under DEBUG), which adds milliseconds to every response, the API's
# included. Static files are indexed once at start instead.
WHITENOISE_AUTOREFRESH = False

LOGIN_URL = "/admin/login/"
CSRF_FAILURE_VIEW = "orders.api.views.csrf_failure"

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
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
        # mails them per failure group (orders/operations/mailer.py).
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        # django-q2's logger is named "django-q" (django_q/conf.py).
        "django-q": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # Until a web process that died leaves the events group (group_expiry),
        # channels_redis logs every message sent to it at INFO.
        "channels_redis": {"level": "WARNING"},
        # django-axes names its configuration at INFO in every process's start,
        # every manage.py command's included (its failures log elsewhere).
        "axes.apps": {"level": "WARNING"},
    },
}
