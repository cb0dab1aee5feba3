"""Who is mailed about failures, and how; how long their records are kept.

Exceptions escaping async work are stored as FailureRecords and mailed to
ADMINS (orders/operations/mailer.py) per failure group: a new group at once,
then at most one digest per FAILURE_DIGEST_WINDOW_SECONDS while it keeps
failing; a resolved group that fails again at once.
"""

from email.utils import getaddresses
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.base import DEBUG, PORT
from orderproj.settings.environment import env


def env_addresses(name: str, default: str = "") -> list[tuple[str, str]]:
    """ADMINS="Ana <ana@example.com>,ops@example.com" as Django's (name, address)
    pairs; an address without a name is its own name."""
    pairs = getaddresses([env.str(name, default=default)])
    for _person, address in pairs:
        if "@" not in address:
            raise ImproperlyConfigured(f"{name}: {address!r} is not an email address")
    return [(person or address, address) for person, address in pairs if address]


def email_settings(url: str) -> dict:
    """EMAIL_URL as Django's EMAIL_ settings. Its schemes are this project's,
    not django-environ's (whose smtps:// means STARTTLS):

        console://                     print mails to stdout (the default)
        smtp://user:password@host:587  SMTP with STARTTLS (smtps://... for TLS
                                       from the start, smtp+plain://... for none)
        dummy://                       drop mails
        file:///var/tmp/mails          write each mail to a file in that
                                       directory (for tests and staging)
    """
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
            f"EMAIL_URL={url!r} is not a mail URL: its scheme {parts.scheme!r} is "
            "not one of console, dummy, file, smtp, smtps, smtp+plain"
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


# In DEBUG a local address, so the console shows what would be sent.
ADMINS = env_addresses(
    "ADMINS", default="Operators <operators@localhost>" if DEBUG else ""
)
EMAIL_URL = env.str("EMAIL_URL", default="console://")
_transport = email_settings(EMAIL_URL)
# Django's defaults where the transport leaves one unset (console, dummy, file).
EMAIL_BACKEND = _transport["EMAIL_BACKEND"]
EMAIL_FILE_PATH = _transport.get("EMAIL_FILE_PATH")
EMAIL_HOST = _transport.get("EMAIL_HOST", "localhost")
EMAIL_PORT = _transport.get("EMAIL_PORT", 25)
EMAIL_HOST_USER = _transport.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = _transport.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _transport.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _transport.get("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = _transport.get("EMAIL_TIMEOUT")
SERVER_EMAIL = env.str("SERVER_EMAIL", default="orderproj@localhost")
EMAIL_SUBJECT_PREFIX = env.str("EMAIL_SUBJECT_PREFIX", default="[orderproj] ")
FAILURE_DIGEST_WINDOW_SECONDS = env.float(
    "FAILURE_DIGEST_WINDOW_SECONDS", default=900.0, minimum=1
)
# Resolved failure records go once resolved longer than this many days ago, or
# beyond the newest FAILURE_RETENTION_COUNT resolved ones (hourly, by the
# dispatcher; orders/services/failures.py, failures_trim); 0 turns either off.
# Unresolved records are kept whatever their age or number.
FAILURE_RETENTION_DAYS = env.float("FAILURE_RETENTION_DAYS", default=30.0, minimum=0)
FAILURE_RETENTION_COUNT = env.int("FAILURE_RETENTION_COUNT", default=10_000, minimum=0)

# Customers' mails: one when their order completes, one when it fails for good
# (orders/services/customer_mail.py), in the order's language, with a link to
# the order's page on this site.
ORDER_NOTIFY_CUSTOMERS = env.bool("ORDER_NOTIFY_CUSTOMERS", default=True)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default=SERVER_EMAIL)


def site_url(url: str) -> str:
    """ORDER_SITE_URL: where customers reach this site, for the links in
    their mails (a mail has no request to take the host from)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ImproperlyConfigured(
            f"ORDER_SITE_URL={url!r} is not an http(s) URL such as "
            "https://shop.example.com"
        )
    return url.rstrip("/")


# Unset: the address `make run` serves on, right on a developer's machine only.
ORDER_SITE_URL = site_url(env.str("ORDER_SITE_URL", default=f"http://localhost:{PORT}"))
