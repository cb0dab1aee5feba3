"""Login throttling on /admin/login/ (django-axes): after LOGIN_FAILURE_LIMIT
wrong passwords for one username from one client address, that pair is refused
for LOGIN_LOCKOUT_MINUTES, with a page that says so.

Per address *and* username: a client guessing passwords is stopped, and nobody
elsewhere can lock an operator out by failing on purpose under their name. The
address is the service's own (orders/api/client_address.py, TRUSTED_PROXY_HOPS),
so a client cannot pick a new one per attempt. The attempts are rows in the
service's database, which every web process shares; those older than the
lockout are deleted as new failures come (docs/operators/admin.md).
"""

from datetime import timedelta

from orderproj.settings.environment import env

LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5, minimum=1)
LOGIN_LOCKOUT_MINUTES = env.float("LOGIN_LOCKOUT_MINUTES", default=15, minimum=1)

AUTHENTICATION_BACKENDS = [
    # First: it refuses a locked-out pair before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["ip_address", "username"]]
# Named, not left to axes' default: a lazy object, which the error reports'
# masking of settings (orders/credentials.py) cannot read as text.
AXES_USERNAME_FORM_FIELD = "username"
AXES_CLIENT_IP_CALLABLE = "orders.api.client_address.request_client_address"
# The refusal page, in the console's look (orders/operations/login_lockout.py).
AXES_LOCKOUT_CALLABLE = "orders.operations.login_lockout.login_locked_out"
# A successful login forgets the pair's earlier failures.
AXES_RESET_ON_SUCCESS = True
# No row per successful login: a table nothing would ever trim.
AXES_DISABLE_ACCESS_LOG = True
# The console shows the failed logins only (orders/operations/admin/login_attempts.py).
AXES_ENABLE_ADMIN = False
# The log names the client's address; usernames stay out of it (a password is
# sometimes typed into the username field).
AXES_SENSITIVE_PARAMETERS = ["username"]
