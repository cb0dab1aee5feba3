"""Settings derived from others: pure functions of the environment's values."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from orderproj.settings import attempt_timeout


@pytest.mark.parametrize("lease", [5, 6, 8, 10, 15, 60, 61.5, 300, 3600])
def test_an_attempt_is_stopped_with_time_to_spare_before_its_lease_ends(lease):
    timeout = attempt_timeout(lease)

    assert timeout >= 1
    # The guard kills at timeout + 3 s of its countdown, which may run 25 % slow.
    assert (timeout + 3) * 1.25 <= lease


@pytest.mark.parametrize("lease", [1, 3, 4.9])
def test_a_lease_too_short_for_any_attempt_is_refused(lease):
    with pytest.raises(ImproperlyConfigured, match="ORDER_LEASE_SECONDS"):
        attempt_timeout(lease)


def test_django_q2_logs_through_the_configured_console_handler_at_log_level():
    """LOGGING configures django-q2's own logger ("django-q"): with a wrong name,
    django-q2 adds a handler of its own and LOG_LEVEL does not reach it."""
    import logging

    from django.conf import settings

    logger = logging.getLogger("django-q")
    assert logger.level == logging.getLevelName(settings.LOG_LEVEL)
    # (pytest adds capturing handlers of its own; these are the console ones.)
    consoles = [
        handler for handler in logger.handlers if type(handler) is logging.StreamHandler
    ]
    assert [handler.formatter._fmt for handler in consoles] == [
        settings.LOGGING["formatters"]["plain"]["format"]
    ]
    assert logger.propagate is False


def output_of(code: str, **env: str):
    """What `code`, run in a new Python process with the settings module and
    `env` but none of this environment's DATABASE_ variables, prints last, as
    JSON."""
    import json
    import os
    import subprocess
    import sys

    from django.conf import settings

    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_SETTINGS"))
    }
    environment.update(DJANGO_SETTINGS_MODULE="orderproj.settings", **env)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def database_settings_of(setup: str, **env: str) -> dict:
    """DATABASES["default"] as a process that starts with `setup` sees it."""
    return output_of(
        f"{setup}\n"
        "import json\n"
        "from django.conf import settings\n"
        "db = settings.DATABASES['default']\n"
        "print(json.dumps({'conn_max_age': db['CONN_MAX_AGE'],"
        " 'pool': db.get('OPTIONS', {}).get('pool'),"
        " 'application_name': db.get('OPTIONS', {}).get('application_name')}))",
        **env,
    )


POSTGRES = "postgres://someone@127.0.0.1:1/nowhere"
WEB = "import orderproj.asgi"  # what daphne does first
MANAGE = "import django; django.setup()"  # what manage.py qcluster does
POOL_OF_A_QCLUSTER = (
    f"{MANAGE}\n"
    "import json\n"
    "from django.conf import settings\n"
    "print(json.dumps(settings.DATABASES['default']['OPTIONS'].get('pool')))"
)


def test_the_web_process_on_postgresql_shares_a_pool_and_keeps_no_connection():
    """daphne loads orderproj.asgi (manage.py serve and the Procfile's web line do
    too), which turns DATABASE_POOL on: no connection outlives its request."""
    assert database_settings_of(WEB, DATABASE_URL=POSTGRES) == {
        "conn_max_age": 0,
        "pool": {"min_size": 2, "max_size": 10, "timeout": 10.0},
        "application_name": "orderproj-web",
    }


def test_the_pool_size_is_the_web_process_bound_and_can_be_set():
    found = database_settings_of(WEB, DATABASE_URL=POSTGRES, DATABASE_POOL_MAX_SIZE="4")
    assert found["pool"] == {"min_size": 2, "max_size": 4, "timeout": 10.0}
    found = database_settings_of(WEB, DATABASE_URL=POSTGRES, DATABASE_POOL_MAX_SIZE="1")
    assert found["pool"] == {"min_size": 1, "max_size": 1, "timeout": 10.0}


def test_a_request_waits_for_a_pool_connection_as_long_as_it_is_told():
    found = database_settings_of(WEB, DATABASE_URL=POSTGRES, DATABASE_POOL_TIMEOUT="2")
    assert found["pool"]["timeout"] == 2.0


def test_workers_on_postgresql_keep_one_persistent_connection_each():
    """A qcluster (manage.py) does not load orderproj.asgi: each worker process
    has one thread and reuses its connection."""
    assert database_settings_of(MANAGE, DATABASE_URL=POSTGRES) == {
        "conn_max_age": 600,
        "pool": None,
        "application_name": "orderproj",
    }


def test_the_web_process_leaves_the_processes_it_starts_no_pool_in_their_environment():
    """A process inherits its parent's environment: when orderproj/asgi.py set
    DATABASE_POOL there, a qcluster started from a process that had imported it
    (a test run does) gave each of its processes a pool of at least two
    sessions, 34 to 36 on the database against the bound of 32 (README,
    "Database connections")."""
    changed = output_of(
        "import json, os\n"
        "before = dict(os.environ)\n"
        "import orderproj.asgi\n"
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))",
        DATABASE_URL=POSTGRES,
    )
    assert changed == []
    # A process the web process starts (what a test run that imported
    # orderproj.asgi does with its qclusters): no pool.
    started_after_it = (
        "import subprocess, sys\n"
        "import orderproj.asgi\n"
        f"child = subprocess.run([sys.executable, '-c', {POOL_OF_A_QCLUSTER!r}],"
        " capture_output=True, text=True, check=True, timeout=60)\n"
        "print(child.stdout.splitlines()[-1])"
    )
    assert output_of(started_after_it, DATABASE_URL=POSTGRES) is None


@pytest.mark.parametrize(
    ("argv", "web", "name"),
    [
        (["-m", "daphne", "orderproj.asgi:application"], True, "orderproj-web"),
        (["manage.py", "qcluster"], False, "orderproj-worker"),
        (["/srv/orderproj/manage.py", "qcluster"], False, "orderproj-worker"),
        (["manage.py", "migrate", "--noinput"], False, "orderproj-migrate"),
        (["manage.py"], False, "orderproj"),
        (["-c"], False, "orderproj"),
    ],
)
def test_each_kind_of_process_names_its_database_sessions(argv, web, name):
    from orderproj.settings import default_application_name

    assert default_application_name(argv, web=web) == name


def test_the_database_sessions_name_can_be_set():
    found = database_settings_of(
        WEB, DATABASE_URL=POSTGRES, DATABASE_APPLICATION_NAME="shop-web-3"
    )
    assert found["application_name"] == "shop-web-3"
