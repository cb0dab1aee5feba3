"""/healthz says what is down, and nothing about where or why."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

# Asks /healthz through Django's test client in a process of its own, whose
# settings come from the environment as a server's would.
ASK = """
import json
import django
django.setup()
from django.test import Client
response = Client(headers={"host": "localhost"}).get("/healthz")
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def ask_healthz(**environment: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
    }
    env.update(DJANGO_SETTINGS_MODULE="orderproj.settings", DEBUG="1", **environment)
    result = subprocess.run(
        [sys.executable, "-c", ASK],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The log keeps the errors for the operator.
    assert "healthz: the database is unavailable" in result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("database_url", "redis_url", "secrets"),
    [
        pytest.param(
            "postgres://leaky_user:leaky-pw@127.0.0.1:1/leaky_db",
            "redis://:leaky-pw@127.0.0.1:1/0",
            ["leaky", "127.0.0.1", ":1", "refused", "Error"],
            id="postgres-and-redis-unreachable",
        ),
        pytest.param(
            "sqlite:////nonexistent-dir-for-healthz/leaky.sqlite3",
            None,
            ["nonexistent", "leaky", "sqlite", "unable"],
            id="sqlite-file-unopenable",
        ),
    ],
)
def test_health_names_what_is_down_without_hosts_users_paths_or_errors(
    database_url, redis_url, secrets
):
    environment = {"DATABASE_URL": database_url}
    if redis_url:
        environment["REDIS_URL"] = redis_url

    answer = ask_healthz(**environment)

    assert answer["status"] == 503
    assert answer["body"] == {
        "status": "unavailable",
        "database": "unavailable",
        # Redis, or the ORM broker's table in the same database.
        "queue": "unavailable",
    }
    text = json.dumps(answer["body"])
    for secret in secrets:
        assert secret not in text
