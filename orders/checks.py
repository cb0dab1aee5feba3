"""System checks: what the code needs of its environment, said at start-up."""

import sqlite3

from django.conf import settings
from django.core import checks

# orders/state/transitions_sql*.py write with UPDATE/INSERT ... RETURNING.
SQLITE_RETURNING = (3, 35, 0)


@checks.register()
def sqlite_has_returning(app_configs, **kwargs):
    engine = settings.DATABASES["default"]["ENGINE"]
    if "sqlite3" not in engine or sqlite3.sqlite_version_info >= SQLITE_RETURNING:
        return []
    return [
        checks.Error(
            f"SQLite {sqlite3.sqlite_version} has no RETURNING clause; orderproj "
            "needs SQLite 3.35 or later.",
            hint="Use a Python built with a newer SQLite, or PostgreSQL.",
            id="orders.E001",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def proxy_says_the_scheme(app_configs, **kwargs):
    """Behind a proxy (TRUSTED_PROXY_HOPS) daphne sees plain HTTP: without
    SECURE_PROXY_SSL_HEADER every request looks insecure, and with
    SECURE_SSL_REDIRECT on each is redirected to itself, for ever. daphne's
    --proxy-headers used to say the scheme; the Procfile no longer passes it
    (docs/deployers/proxy.md)."""
    if (
        settings.TRUSTED_PROXY_HOPS
        and settings.SECURE_SSL_REDIRECT
        and not settings.SECURE_PROXY_SSL_HEADER
    ):
        return [
            checks.Warning(
                "TRUSTED_PROXY_HOPS says a proxy is in front, SECURE_SSL_REDIRECT "
                "is on and SECURE_PROXY_SSL_HEADER is unset: every request would "
                "be redirected to HTTPS, again and again.",
                hint="Set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https and "
                "have the proxy set X-Forwarded-Proto.",
                id="orders.W001",
            )
        ]
    return []


@checks.register()
def translations_compiled(app_configs, **kwargs):
    """The .mo files are build output (not committed): a deployment that
    skipped `manage.py compilemessages` would show every page and send every
    mail in English, silently."""
    from orders.catalogs import catalogs, compiled, is_stale

    stale = [po for po in catalogs(settings.LOCALE_PATHS) if is_stale(po)]
    return [
        checks.Warning(
            f"{compiled(po)} is missing or older than {po.name}: the pages and "
            f"mails in {po.parent.parent.name!r} fall back to English.",
            hint="Run `manage.py compilemessages` (make run does; a deployment "
            "runs it when it builds, beside collectstatic).",
            id="orders.W002",
        )
        for po in stale
    ]
