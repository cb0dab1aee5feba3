"""What protects the service: HTTPS and its cookies, the proxy in front, the
Content-Security-Policy, credentials kept out of error reports, the metrics
token and the order placement rate limit.

Each HTTPS protection is on when DEBUG is off, and each can be set either way: a
TLS proxy in front tells Django the request was HTTPS with SECURE_PROXY_SSL_HEADER
(daphne runs without --proxy-headers: Procfile), and CSRF_TRUSTED_ORIGINS lists
the origins that may POST when the proxy's host differs from the one Django sees.
"""

import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.base import BASE_DIR, DEBUG
from orderproj.settings.environment import env
from orderproj.settings.queue import REDIS_URL

SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# A load balancer's health check often comes over plain HTTP and takes a
# redirect for a failure.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
# Database sessions that refuse a key Django never issues (orders/api/sessions.py).
SESSION_ENGINE = "orders.api.sessions"
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int(
    "SECURE_HSTS_SECONDS", default=0 if DEBUG else 365 * 24 * 3600, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG
)
# Only consent: a domain is preloaded once its owner submits it to the list.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)


def proxy_ssl_header(parts: list[str]) -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https": the request META
    key the proxy sets, and the value that means HTTPS."""
    if not parts:
        return None
    if len(parts) != 2 or not parts[0].startswith("HTTP_") or not parts[1]:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={','.join(parts)!r} is not "
            "'HTTP_<HEADER>,<value>' (e.g. HTTP_X_FORWARDED_PROTO,https)"
        )
    return parts[0], parts[1]


SECURE_PROXY_SSL_HEADER = proxy_ssl_header(
    env.words("SECURE_PROXY_SSL_HEADER", default=[])
)
CSRF_TRUSTED_ORIGINS = env.words("CSRF_TRUSTED_ORIGINS", default=[])
SECURE_REFERRER_POLICY = env.str("SECURE_REFERRER_POLICY", default="same-origin")
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

# How many proxies in front append to X-Forwarded-For (orders/api/client_address.py):
# 0, the default, ignores the header (the connection's address is the client's);
# 1 takes the rightmost entry, the one the proxy appended; N the N-th from the right.
TRUSTED_PROXY_HOPS = env.int("TRUSTED_PROXY_HOPS", default=0, minimum=0)

# GET /metrics (Prometheus) answers staff sessions and `Authorization: Bearer
# <METRICS_TOKEN>`; unset, only staff sessions.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")


def rate_limit(raw: str) -> str:
    """ORDER_PLACE_RATE_LIMIT as django-ratelimit's rate, checked at start."""
    if raw == "0" or re.fullmatch(r"[1-9][0-9]*/[0-9]*[smhd]", raw):
        return raw
    raise ImproperlyConfigured(
        f"ORDER_PLACE_RATE_LIMIT={raw!r} is not '<count>/<period>' (e.g. 120/m, "
        "1000/h) or 0"
    )


# POST /api/orders per client address (orders/api/middleware.py): "<count>/<period>"
# with a period of s, m, h or d (optionally a multiple: "100/5m"); "0" turns it
# off. Counted in the "ratelimit" cache, which every web process shares: Redis
# when REDIS_URL is set, else a SQLite file of its own in ORDER_RATE_LIMIT_DIR
# (every process on the machine; orders/api/ratelimit_store.py), holding at
# most MAX_ENTRIES live counters and never deleting one.
ORDER_PLACE_RATE_LIMIT = rate_limit(
    env.str("ORDER_PLACE_RATE_LIMIT", default="120/m").strip()
)
ORDER_RATE_LIMIT_DIR = Path(
    env.str("ORDER_RATE_LIMIT_DIR", default=str(BASE_DIR / "var" / "ratelimit"))
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
            "BACKEND": "orders.api.ratelimit_store.SQLiteCounterCache",
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
# RedisCache increments with INCR, SQLiteCounterCache in one UPDATE.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
