"""A throwaway place for each benchmark run: the benchmark never writes to the
database or queue the service uses.

Without DATABASE_URL/REDIS_URL (or with a SQLite DATABASE_URL) it is a SQLite file
in a temporary folder and django-q2's ORM broker: the embedded default. With a
PostgreSQL DATABASE_URL it is a new database on that server, dropped afterwards;
with REDIS_URL, a queue name of its own in that Redis (Q_CLUSTER_NAME), so no
other cluster reads its tasks.
"""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from orders.workers.processes import local_env

POSTGRES_SCHEMES = {"postgres", "postgresql", "pgsql"}


@contextlib.contextmanager
def bench_environment(workdir: Path, **overrides: str) -> Iterator[dict]:
    """The environment of the processes a benchmark run starts."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    name = f"orderproj_bench_{secrets.token_hex(4)}"
    # The benchmark places orders and opens streams from one address far faster
    # and far more than a customer would: the rate limit and the stream caps
    # would measure themselves.
    limits_off = {
        "ORDER_PLACE_RATE_LIMIT": "0",
        "ORDER_STREAMS_PER_CLIENT": "0",
        "ORDER_STREAMS_PER_PROCESS": "0",
        # The pipeline's figures are the orders' own: the customers' mails are
        # the customer mailer's work beside them (and its buyers are made up).
        "ORDER_NOTIFY_CUSTOMERS": "0",
    }
    env = local_env(workdir, **{**limits_off, **overrides})
    postgres = urlsplit(database_url).scheme in POSTGRES_SCHEMES
    if postgres:
        _create_database(database_url, name)
        server = urlsplit(database_url)
        env["DATABASE_URL"] = urlunsplit(server._replace(path=f"/{name}"))
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["Q_CLUSTER_NAME"] = name
    try:
        yield env
    finally:
        if postgres:
            _drop_database(database_url, name)


def describe(env: dict) -> str:
    database = urlsplit(env["DATABASE_URL"])
    where = (
        f"PostgreSQL database {database.path.lstrip('/')}"
        if database.scheme in POSTGRES_SCHEMES
        else f"SQLite /{database.path.lstrip('/')}"
    )
    queue = (
        f"Redis queue {env['Q_CLUSTER_NAME']}" if env.get("REDIS_URL") else "ORM broker"
    )
    return f"{where}, {queue}"


def _postgres_url(url: str) -> str:
    # psycopg knows postgres:// and postgresql://, not dj-database-url's pgsql://.
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql"))


def _create_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_postgres_url(server_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')


def _drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(_postgres_url(server_url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
