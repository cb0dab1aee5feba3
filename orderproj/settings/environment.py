"""The environment, read through django-environ with every value checked.

django-environ reads leniently: a boolean outside its true spellings is false
(DEBUG=flase would be DEBUG off), its float drops every character but digits,
",", "." and "-" before converting ("1e-3" becomes 13.0), and a value starting
with "$" names another variable to read instead (a generated SECRET_KEY may
start with one). A wrong value must stop the process with the variable's name,
so this reads the variable itself and leaves the typing to environ.
"""

import environ
from django.core.exceptions import ImproperlyConfigured

# Spelled as environ spells its true values; any whole number reads too
# (0 is false, the rest true).
TRUE_STRINGS = environ.Env.BOOLEAN_TRUE_STRINGS
FALSE_STRINGS = ("false", "off", "no", "n", "0")

# What a value of each type must be, as the error says it.
KINDS = (
    (bool, "a boolean (use 1/0, true/false)"),
    (int, "a whole number"),
    (float, "a number"),
)


class Env(environ.Env):
    """environ.Env that refuses what it cannot read and records what it read.

    An empty boolean or number means unset (`DEBUG=` in a unit file keeps the
    default); an empty string stays empty. `names` lists every variable read,
    in order, for the configuration page's test (tests/test_settings_docs.py).
    """

    def __init__(self, **scheme):
        super().__init__(**scheme)
        self.names: dict[str, None] = {}

    def get_value(
        self, var, cast=None, default=environ.Env.NOTSET, parse_default=False
    ):
        self.names[var] = None
        raw = self.ENVIRON.get(var)
        if raw is None or (_typed(cast) and not raw.strip()):
            if default is self.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable")
            if not parse_default or default is None:
                return default
            raw = default
        if cast is bool and not _is_boolean(raw):
            raise ImproperlyConfigured(f"{var}={raw!r} is not {_kind(bool)}")
        try:
            return self.parse_value(raw, cast)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{var}={raw!r} is not {_kind(cast)}") from exc

    @classmethod
    def parse_value(cls, value, cast):
        if cast is float:
            return float(value)  # Python's own reading (see the module docstring)
        return super().parse_value(value, cast)

    def int(self, var, default=environ.Env.NOTSET, *, minimum=None):
        return _at_least(var, super().int(var, default), minimum)

    def float(self, var, default=environ.Env.NOTSET, *, minimum=None, maximum=None):
        value = _at_least(var, super().float(var, default), minimum)
        if maximum is not None and value > maximum:
            raise ImproperlyConfigured(f"{var} must be between {minimum} and {maximum}")
        return value

    def words(self, var, default=environ.Env.NOTSET) -> list[str]:
        """A comma-separated list, each item stripped, empty items left out."""
        items = self.list(var, cast=str.strip, default=default)
        return [item for item in items if item]


def _typed(cast) -> bool:
    return any(cast is kind for kind, _ in KINDS)


def _kind(cast) -> str:
    return next((words for kind, words in KINDS if cast is kind), "valid")


def _is_boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE_STRINGS or value in FALSE_STRINGS:
        return True
    try:
        int(value)
    except ValueError:
        return False
    return True


def _at_least(var: str, value, minimum):
    # None: unset, with a default of None (the setting is worked out at run time).
    if minimum is not None and value is not None and value < minimum:
        raise ImproperlyConfigured(f"{var}={value!r} must be at least {minimum}")
    return value


env = Env()
