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
