"""What Django's error reports (the debug page, the text traceback) may show.

Django's SafeExceptionReporterFilter masks settings by name (PASSWORD, SECRET,
KEY, ...), which misses a URL that carries its password: DATABASE_URL,
REDIS_URL, EMAIL_URL, and the values parsed from them (CACHES' LOCATION,
CHANNEL_LAYERS' hosts, Q_CLUSTER's redis). Here any value whose text holds a
URL with a password, or one of the configured passwords (in a driver's
connection string, say), is masked whole: in the settings, in request.META, in
every frame's local variables and in the exception's message.
"""

import functools
import re
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.template.defaultfilters import pprint
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

# scheme://user:password@ (the user may be empty: redis://:password@host).
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@:]*:[^\s@]*@", re.I)
# Settings (and keys inside them) whose value is itself a secret. Narrower than
# Django's hidden_settings, which also matches AUTH_USER_MODEL, PASSWORD_HASHERS
# and the like: every value found here is masked wherever it appears.
SECRET_NAMES = re.compile(
    r"(^|_)(PASSWORD|SECRET_KEY|SECRET_KEY_FALLBACKS|TOKEN)$", re.I
)
# Shorter secrets would mask half the page; in a URL they are caught anyway.
MIN_SECRET_LENGTH = 4


class CredentialMaskingFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str) and self.carries_credential(cleansed):
            return self.cleansed_substitute
        return cleansed

    def cleanse_special_types(self, request, value):
        value = super().cleanse_special_types(request, value)
        if isinstance(value, dict | list | tuple):
            value = self.cleanse_setting("", value)
        # Anything else is judged by what the page would print of it.
        if self.carries_credential(pprint(value)):
            return self.cleansed_substitute
        return value

    def carries_credential(self, text: str) -> bool:
        if URL_WITH_PASSWORD.search(text):
            return True
        return any(secret in text for secret in self.secrets)

    def mask_text(self, text: str) -> str:
        """The text with every credential in it replaced."""
        text = URL_WITH_PASSWORD.sub(
            lambda match: (
                match.group(0).split("://", 1)[0] + f"://{self.cleansed_substitute}@"
            ),
            text,
        )
        for secret in self.secrets:
            text = text.replace(secret, self.cleansed_substitute)
        return text

    @functools.cached_property
    def secrets(self) -> frozenset[str]:
        """The passwords and keys in the settings, as written and URL-quoted."""
        found: set[str] = set()
        for name in dir(settings):
            if name.isupper():
                _collect_secrets(name, getattr(settings, name), found)
        found |= {quote(secret, safe="") for secret in found}
        return frozenset(secret for secret in found if len(secret) >= MIN_SECRET_LENGTH)


def _collect_secrets(key, value, found: set[str]) -> None:
    if isinstance(value, str):
        if SECRET_NAMES.search(str(key)):
            found.add(value)
        for match in URL_WITH_PASSWORD.finditer(value):
            password = urlsplit(match.group(0) + "host").password
            if password:
                found.add(unquote(password))
                found.add(password)
    elif isinstance(value, dict):
        for inner_key, inner in value.items():
            _collect_secrets(inner_key, inner, found)
    elif isinstance(value, list | tuple):
        for inner in value:
            _collect_secrets(key, inner, found)


class CredentialMaskingReporter(ExceptionReporter):
    """The exception's message (and its causes') through the same mask: a
    driver's error may quote the URL it was given."""

    def get_traceback_data(self):
        data = super().get_traceback_data()
        if data.get("exception_value"):
            data["exception_value"] = self.filter.mask_text(data["exception_value"])
        for frame in data.get("frames", []):
            if frame.get("exc_cause") is not None:
                frame["exc_cause"] = self.filter.mask_text(str(frame["exc_cause"]))
        return data
