"""Production settings: DEBUG off with a key and hosts of its own passes Django's
deploy check, and each protection can be set for a TLS proxy in front."""

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from orderproj.settings.security import proxy_ssl_header, rate_limit


def production_environment(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SECURE_", "SESSION_", "CSRF_"))
        and key not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "ALLOWED_HOSTS"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="orderproj.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="orders.example.com",
    )
    env.update(overrides)
    return env


def deploy_check(**overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "manage.py",
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
        ],
        cwd=settings.BASE_DIR,
        env=production_environment(**overrides),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_check_at_warning_level():
    result = deploy_check()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_deploy_check_passes_with_redis_and_behind_a_tls_proxy():
    result = deploy_check(
        REDIS_URL="redis://127.0.0.1:6379/0",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
        CSRF_TRUSTED_ORIGINS="https://orders.example.com",
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "warning"),
    [
        ("SESSION_COOKIE_SECURE", "security.W012"),
        ("CSRF_COOKIE_SECURE", "security.W016"),
        ("SECURE_SSL_REDIRECT", "security.W008"),
    ],
)
def test_each_protection_turned_off_by_its_variable_fails_the_check(variable, warning):
    result = deploy_check(**{variable: "0"})

    assert result.returncode != 0
    assert warning in result.stdout + result.stderr


def test_debug_is_off_once_a_secret_key_is_set():
    result = deploy_check(DEBUG="")

    assert result.returncode == 0, result.stdout + result.stderr


# What a client sees of the production settings, through Django's test client.
REQUESTS = """
import json
import django
django.setup()
from django.test import Client
client = Client(headers={"host": "orders.example.com"})
answers = {}
for name, path, headers in [
    ("http", "/", {}),
    ("healthz over http", "/healthz", {}),
    ("https via the proxy", "/", {"x-forwarded-proto": "https"}),
]:
    response = client.get(path, headers=headers)
    answers[name] = {
        "status": response.status_code,
        "location": response.get("Location"),
        "hsts": response.get("Strict-Transport-Security"),
    }
print(json.dumps(answers))
"""


def test_plain_http_is_redirected_except_the_health_check_and_https_gets_hsts(
    tmp_path,
):
    result = subprocess.run(
        [sys.executable, "-c", REQUESTS],
        cwd=settings.BASE_DIR,
        env=production_environment(
            SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO,https",
            DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout.splitlines()[-1])

    assert answers["http"]["status"] == 301
    assert answers["http"]["location"] == "https://orders.example.com/"
    assert answers["healthz over http"]["status"] in {200, 503}
    assert answers["https via the proxy"]["status"] == 200
    assert answers["https via the proxy"]["hsts"] == (
        "max-age=31536000; includeSubDomains; preload"
    )


@pytest.mark.parametrize(
    "parts",
    [
        ["X-Forwarded-Proto: https"],
        ["HTTP_X_FORWARDED_PROTO"],
        ["HTTP_X", "https", "x"],
    ],
)
def test_a_malformed_proxy_ssl_header_is_refused_at_start(parts):
    with pytest.raises(ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER"):
        proxy_ssl_header(parts)


def test_the_proxy_ssl_header_names_the_header_and_the_value_meaning_https():
    assert proxy_ssl_header(["HTTP_X_FORWARDED_PROTO", "https"]) == (
        "HTTP_X_FORWARDED_PROTO",
        "https",
    )
    assert proxy_ssl_header([]) is None


# What decides development mode, left out of the environment these tests start
# a process with (the tests themselves run with DEBUG=1, pyproject.toml).
MODE_VARIABLES = {"DEBUG", "SECRET_KEY", "ORDER_SIMULATION_ENABLED"}


def environment_without_a_mode(**environment: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in MODE_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="orderproj.settings", **environment)
    return env


def debug_in(**environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.DEBUG, settings.SESSION_COOKIE_SECURE, "
            "settings.ORDER_SIMULATION_ENABLED)",
        ],
        cwd=settings.BASE_DIR,
        env=environment_without_a_mode(**environment),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["-c", "import django; django.setup()"], id="django-setup"),
        pytest.param(["manage.py", "check"], id="manage-check"),
    ],
)
@pytest.mark.parametrize("debug", [None, ""], ids=["unset", "empty"])
def test_a_machine_with_neither_debug_nor_a_secret_key_refuses_to_start(command, debug):
    environment = {} if debug is None else {"DEBUG": debug}
    result = subprocess.run(
        [sys.executable, *command],
        cwd=settings.BASE_DIR,
        env=environment_without_a_mode(**environment),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
    assert "set DEBUG=1" in result.stderr


def test_debug_on_without_a_secret_key_gets_the_development_settings():
    result = debug_in(DEBUG="1")

    assert result.returncode == 0, result.stderr
    # DEBUG on, cookies over plain HTTP, and no failure simulation: that is
    # turned on by itself (`make run` and the tests do).
    assert result.stdout.split() == ["True", "False", "False"]


def test_a_secret_key_alone_gets_the_production_settings():
    result = debug_in(SECRET_KEY=secrets.token_urlsafe(50))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "False"]


def test_debug_off_without_a_secret_key_refuses_to_start():
    result = debug_in(DEBUG="0")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


# Set, but empty: as unset.
UNSET_MODE = {"DEBUG": "", "SECRET_KEY": ""}


def test_make_run_starts_on_a_machine_with_neither_variable_set():
    """The README's `make run`, on a machine without DEBUG or SECRET_KEY (or
    with them empty): the environment its serve line gives manage.py passes
    Django's checks in development mode."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry_run = subprocess.run(
        ["make", "-n", "run"],
        cwd=settings.BASE_DIR,
        env=environment_without_a_mode(**UNSET_MODE),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    (serve,) = [
        shlex.split(line)
        for line in dry_run.stdout.splitlines()
        if line.endswith("manage.py serve")
    ]
    *assignments, python, _manage, _serve = serve
    environment = dict(assignment.split("=", 1) for assignment in assignments)
    assert environment["DEBUG"] == "1"

    result = subprocess.run(
        [python, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=environment_without_a_mode(**{**UNSET_MODE, **environment}),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize("raw", ["120", "120/minute", "-1/m", "0/m", "ten/m"])
def test_a_malformed_rate_limit_is_refused_at_start(raw):
    with pytest.raises(ImproperlyConfigured, match="ORDER_PLACE_RATE_LIMIT"):
        rate_limit(raw)
