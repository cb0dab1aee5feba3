"""The settings: read from the environment through django-environ, refused with
the variable's name when a value is wrong, and the same whatever was imported
first."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.database import default_application_name
from orderproj.settings.environment import Env
from orders.workers.processes import cluster_env, local_env, web_env
from orders.workers.timeouts import attempt_timeout


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` run in a new Python process with the settings module and `env`,
    but none of this environment's DATABASE_ variables nor ORDERPROJ_PROCESS."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "DJANGO_SETTINGS"))
        and key != "ORDERPROJ_PROCESS"
    }
    environment.update(DJANGO_SETTINGS_MODULE="orderproj.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def output_of(code: str, **env: str):
    """What `code` prints last, as JSON (see run_python)."""
    result = run_python(code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def settings_error(**env: str) -> str:
    """The error that stops the settings from loading with `env`."""
    result = run_python("import orderproj.settings", **env)
    assert result.returncode != 0, "the settings loaded"
    return result.stderr.strip().splitlines()[-1]


# Reading values ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variable", "value", "kind"),
    [
        ("DEBUG", "maybe", "a boolean"),
        ("SECURE_SSL_REDIRECT", "flase", "a boolean"),
        ("PORT", "eighty", "a whole number"),
        ("Q_WORKERS", "2.5", "a whole number"),
        ("ORDER_LEASE_SECONDS", "60s", "a number"),
        ("DATABASE_URL", "db.internal/shop", "a database URL"),
        ("REDIS_URL", "localhost:6379", "a redis://, rediss:// or unix:// URL"),
        ("EMAIL_URL", "smtpx://mail", "a mail URL"),
        ("ORDER_PLACE_RATE_LIMIT", "120", "'<count>/<period>'"),
        ("ORDERPROJ_PROCESS", "worker", "'web'"),
    ],
)
def test_a_wrong_value_stops_the_settings_naming_its_variable(variable, value, kind):
    error = settings_error(**{variable: value})

    assert error.startswith("django.core.exceptions.ImproperlyConfigured: ")
    assert f"{variable}={value!r} is not {kind}" in error


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("PORT", "0", "PORT=0 must be at least 1"),
        ("ORDER_STREAM_MAX_UNSENT_BYTES", "100", "must be at least 1024"),
        ("ORDER_FAILURE_RATE", "1.5", "ORDER_FAILURE_RATE must be between 0 and 1"),
        ("ORDER_RETRY_JITTER", "2", "ORDER_RETRY_JITTER must be between 0 and 1"),
        ("ORDER_LEASE_SECONDS", "4", "ORDER_LEASE_SECONDS=4 leaves an attempt no time"),
    ],
)
def test_a_value_out_of_its_range_stops_the_settings(variable, value, says):
    assert says in settings_error(**{variable: value})


@pytest.mark.parametrize(
    ("raw", "read"),
    [("1", True), ("true", True), ("On", True), (" yes ", True), ("0", False)]
    + [("false", False), ("off", False), ("NO", False), ("", "default")],
)
def test_a_boolean_reads_the_usual_spellings_and_empty_as_unset(monkeypatch, raw, read):
    monkeypatch.setenv("ORDERPROJ_SOME_FLAG", raw)

    assert Env().bool("ORDERPROJ_SOME_FLAG", default="default") == read


def test_a_number_is_read_as_python_reads_it(monkeypatch):
    """django-environ's own float drops every character but digits, "," "." and
    "-" first: it read "1e-3" as 13.0."""
    monkeypatch.setenv("ORDERPROJ_SOME_SECONDS", "1e-3")

    assert Env().float("ORDERPROJ_SOME_SECONDS", default=1.0) == 0.001


def test_a_value_starting_with_a_dollar_is_itself_not_another_variable(monkeypatch):
    """django-environ reads "$NAME" as the value of NAME; a generated
    SECRET_KEY may start with "$"."""
    monkeypatch.setenv("ORDERPROJ_SOME_KEY", "$ecret-0123")

    assert Env().str("ORDERPROJ_SOME_KEY", default="") == "$ecret-0123"


def test_a_list_is_stripped_and_skips_empty_items(monkeypatch):
    monkeypatch.setenv("ORDERPROJ_SOME_HOSTS", " a.example.com, b.example.com,, ")

    assert Env().words("ORDERPROJ_SOME_HOSTS", default=[]) == [
        "a.example.com",
        "b.example.com",
    ]


def test_a_variable_without_a_default_must_be_set(monkeypatch):
    monkeypatch.delenv("ORDERPROJ_SOME_NAME", raising=False)

    with pytest.raises(ImproperlyConfigured, match="Set the ORDERPROJ_SOME_NAME"):
        Env().str("ORDERPROJ_SOME_NAME")


# Derived values ------------------------------------------------------------------
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


def test_the_queue_stops_a_task_at_the_attempt_timeout_of_the_lease():
    assert settings.Q_CLUSTER["timeout"] == attempt_timeout(
        settings.ORDER_LEASE_SECONDS
    )
    assert settings.Q_CLUSTER["retry"] > settings.Q_CLUSTER["timeout"]


def test_django_q2_logs_through_the_configured_console_handler_at_log_level():
    """LOGGING configures django-q2's own logger ("django-q"): with a wrong name,
    django-q2 adds a handler of its own and LOG_LEVEL does not reach it."""
    import logging

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


# The web process and its database pool ----------------------------------------------
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
DAPHNE = "import orderproj.asgi"  # what daphne does first
MANAGE = "import django; django.setup()"  # what manage.py qcluster does
WEB = {"ORDERPROJ_PROCESS": "web"}  # what the Procfile and `serve` give daphne


def test_the_web_process_on_postgresql_shares_a_pool_and_keeps_no_connection():
    assert database_settings_of(DAPHNE, DATABASE_URL=POSTGRES, **WEB) == {
        "conn_max_age": 0,
        "pool": {"min_size": 2, "max_size": 10, "timeout": 10.0},
        "application_name": "orderproj-web",
    }


def test_the_pool_size_is_the_web_process_bound_and_can_be_set():
    found = database_settings_of(
        DAPHNE, DATABASE_URL=POSTGRES, DATABASE_POOL_MAX_SIZE="4", **WEB
    )
    assert found["pool"] == {"min_size": 2, "max_size": 4, "timeout": 10.0}
    found = database_settings_of(
        DAPHNE, DATABASE_URL=POSTGRES, DATABASE_POOL_MAX_SIZE="1", **WEB
    )
    assert found["pool"] == {"min_size": 1, "max_size": 1, "timeout": 10.0}


def test_a_request_waits_for_a_pool_connection_as_long_as_it_is_told():
    found = database_settings_of(
        DAPHNE, DATABASE_URL=POSTGRES, DATABASE_POOL_TIMEOUT="2", **WEB
    )
    assert found["pool"]["timeout"] == 2.0


def test_workers_on_postgresql_keep_one_persistent_connection_each():
    """A qcluster's processes have one thread each, which reuses its
    connection."""
    assert database_settings_of(MANAGE, DATABASE_URL=POSTGRES) == {
        "conn_max_age": 600,
        "pool": None,
        "application_name": "orderproj",
    }


def test_loading_the_asgi_module_first_does_not_make_a_web_process():
    """The web process is the one started as such, not the one that happened
    to import orderproj.asgi before the settings (a test run does)."""
    assert database_settings_of(DAPHNE, DATABASE_URL=POSTGRES)["pool"] is None


def test_the_asgi_module_leaves_the_environment_as_it_found_it():
    """What it put there, every process started from one that imported it would
    inherit: a qcluster started from a test run had a pool in each process."""
    changed = output_of(
        "import json, os\n"
        "before = dict(os.environ)\n"
        "import orderproj.asgi\n"
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))",
        DATABASE_URL=POSTGRES,
    )
    assert changed == []


def test_only_daphne_is_started_as_the_web_process(tmp_path, monkeypatch):
    """`manage.py serve` and the test stacks start daphne with web_env and a
    qcluster with cluster_env, which leaves out what a web process's own
    environment would pass on."""
    monkeypatch.setenv("ORDERPROJ_PROCESS", "web")

    assert web_env({"PATH": "/bin"}) == {"PATH": "/bin", "ORDERPROJ_PROCESS": "web"}
    assert "ORDERPROJ_PROCESS" not in cluster_env()
    assert "ORDERPROJ_PROCESS" not in cluster_env(web_env())
    assert "ORDERPROJ_PROCESS" not in local_env(tmp_path)


def test_the_procfile_starts_its_web_line_as_the_web_process():
    lines = (settings.BASE_DIR / "Procfile").read_text().splitlines()
    web = next(line for line in lines if line.startswith("web: "))
    worker = next(line for line in lines if line.startswith("worker: "))

    assert web.startswith("web: ORDERPROJ_PROCESS=web daphne ")
    assert "ORDERPROJ_PROCESS" not in worker


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
    assert default_application_name(argv, web=web) == name


def test_the_database_sessions_name_can_be_set():
    found = database_settings_of(
        DAPHNE, DATABASE_URL=POSTGRES, DATABASE_APPLICATION_NAME="shop-web-3", **WEB
    )
    assert found["application_name"] == "shop-web-3"
