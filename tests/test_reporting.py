"""The debug page and the text traceback never show a credential."""

import json
import subprocess
import sys

from django.conf import settings

from orders.credentials import CredentialMaskingFilter

DB_PASSWORD = "db-pw-4711"
REDIS_PASSWORD = "redis-pw-0815"
MAIL_PASSWORD = "mail/pw@4242"  # URL-quoted in EMAIL_URL
ENVIRONMENT = {
    "DEBUG": "1",
    "DATABASE_URL": f"postgres://shop:{DB_PASSWORD}@db.internal:5432/shop",
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@cache.internal:6379/0",
    "EMAIL_URL": "smtp://mailer:mail%2Fpw%404242@smtp.internal:587",
}

# Renders Django's technical 500 response, as the debug page and as text, for
# an error raised in a frame holding the credentials the way drivers do.
RENDER = """
import json, sys
import django
django.setup()
from django.test import RequestFactory
from django.views.debug import technical_500_response
from django.conf import settings

def connect(url, conninfo, options):
    raise ConnectionError(f"could not connect with {url}")

def render(accept):
    request = RequestFactory().get(
        "/api/orders", HTTP_ACCEPT=accept, HTTP_X_UPSTREAM=settings.REDIS_URL
    )
    try:
        database = settings.DATABASES["default"]
        connect(
            settings.DATABASE_URL,
            f"host=db.internal user=shop password={database['PASSWORD']}",
            {"password": database["PASSWORD"], "sslmode": "require"},
        )
    except ConnectionError:
        return technical_500_response(request, *sys.exc_info()).content.decode()

print(json.dumps({"html": render("text/html"), "text": render("text/plain")}))
"""


def render_error_pages() -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", RENDER],
        cwd=settings.BASE_DIR,
        env={
            **subprocess_environment(),
            **ENVIRONMENT,
            "DJANGO_SETTINGS_MODULE": "orderproj.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def subprocess_environment() -> dict[str, str]:
    import os

    return {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "EMAIL_URL", "SECRET_KEY"}
    }


def test_the_debug_page_shows_no_password_from_any_setting_frame_or_message():
    pages = render_error_pages()

    for kind, page in pages.items():
        for password in (DB_PASSWORD, REDIS_PASSWORD, "mail/pw@4242", "mail%2Fpw"):
            assert password not in page, f"{password!r} on the {kind} page"
        # The page was rendered in full: the settings and the frames are there.
        assert "DATABASE_URL" in page and "CHANNEL_LAYERS" in page, kind
        assert "could not connect with" in page, kind
    assert "conninfo" in pages["html"]  # the frame's local variables


def test_a_url_without_a_password_is_shown_as_it_is():
    report_filter = CredentialMaskingFilter()

    assert report_filter.cleanse_setting("REDIS_URL", "redis://cache:6379/0") == (
        "redis://cache:6379/0"
    )
    assert report_filter.cleanse_setting("EMAIL_URL", "smtp://u:p@host:587") == (
        report_filter.cleansed_substitute
    )


def test_a_message_keeps_its_text_around_a_masked_url():
    report_filter = CredentialMaskingFilter()

    masked = report_filter.mask_text("refused: redis://:hunter22@cache:6379/0 (111)")

    assert masked == (
        f"refused: redis://{report_filter.cleansed_substitute}@cache:6379/0 (111)"
    )
