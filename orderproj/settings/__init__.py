"""Settings for orderproj: every knob is an environment variable with a default,
read through django-environ (environment.py), one module per concern.

The defaults are the embedded configuration (SQLite in WAL mode, django-q2's ORM
broker, polled streams) so that `make run` needs nothing installed.
docs/deployers/configuration.md lists every variable.
"""

from orderproj.settings.base import *  # noqa: F403
from orderproj.settings.database import *  # noqa: F403
from orderproj.settings.login import *  # noqa: F403
from orderproj.settings.mail import *  # noqa: F403
from orderproj.settings.orders import *  # noqa: F403
from orderproj.settings.queue import *  # noqa: F403
from orderproj.settings.security import *  # noqa: F403
from orderproj.settings.streams import *  # noqa: F403
from orderproj.settings.webhooks import *  # noqa: F403
