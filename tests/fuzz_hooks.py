"""schemathesis extensions for the fuzz runs (tests/fuzz.py), loaded through
their configuration's `hooks`: a check that a refused request writes nothing.

The runs' stack has no worker running and schemathesis sends one request at a
time, so the row counts move only with the request just sent.
"""

import contextlib
import os
import sqlite3

import schemathesis

TABLES = [
    "orders_order",
    "orders_orderline",
    "orders_orderevent",
    "orders_delivery",
    "orders_failurerecord",
    "django_q_ormq",
]
# Counts before each request, by case; read by the check after it.
_before: dict[str, dict[str, int]] = {}


def row_counts() -> dict[str, int]:
    url = os.environ["FUZZ_DATABASE_URL"]
    queries = [f"SELECT COUNT(*) FROM {table}" for table in TABLES]
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        uri = f"file:{path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            counts = [db.execute(query).fetchone()[0] for query in queries]
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            counts = [db.execute(query).fetchone()[0] for query in queries]
    return dict(zip(TABLES, counts, strict=True))


@schemathesis.hook
def before_call(context, case, **kwargs):
    _before[case.id] = row_counts()


@schemathesis.check
def refused_request_writes_nothing(ctx, response, case):
    # Every request sent for a case passes before_call first: a missing count
    # would make this check pass without looking.
    before = _before.pop(case.id)
    if not 400 <= response.status_code < 500:
        return None
    after = row_counts()
    if after != before:
        changed = {table: (before[table], after[table]) for table in TABLES}
        raise AssertionError(
            f"Answered {response.status_code} and wrote rows: "
            + ", ".join(f"{t} {a} -> {b}" for t, (a, b) in changed.items() if a != b)
        )
    return None
