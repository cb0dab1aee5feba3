from orderproj.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.e2e.receivers.apps.ReceiversConfig"]  # noqa: F405
