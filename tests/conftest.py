import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from django.utils import translation

from orders.api.validation import parse_order_request
from orders.catalogs import catalogs, compile_catalog, is_stale
from orders.services.orders import order_place

ORDER_BODY = {
    "customer_email": "buyer@example.com",
    "items": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
}


# Turns between xdist workers: a test marked `alone` (it bounds a time or the
# memory of a process) waits until the other workers are between tests and
# keeps them there while it runs, so their load cannot make it fail.
TURNS = "ORDERPROJ_TEST_TURNS"


def pytest_configure(config):
    # The Korean pages and mails need their compiled catalog, as `make test`
    # makes it: a run of pytest alone makes it too.
    for po in catalogs([HERE.parent / "locale"]):
        if is_stale(po):
            compile_catalog(po)
    if getattr(config, "workerinput", None) is None and getattr(
        config.option, "numprocesses", None
    ):
        # Made by the controller, before it starts the workers, which inherit
        # the variable: one directory per run, as other runs may share /tmp.
        turns = tempfile.mkdtemp(prefix="orderproj-turns-")
        os.environ[TURNS] = turns
        config.add_cleanup(lambda: shutil.rmtree(turns, ignore_errors=True))


# The order in which xdist hands out whole files (--dist loadfile
# --no-loadscope-reorder): first the files with a test of most of a minute or
# more (`make test` lists the slowest), then the rest of tests/e2e/, then the
# others, so that short files fill in at the end instead of one worker running
# a long test alone. None of these files has a test marked alone: it would wait
# for the long test on the other worker.
HERE = Path(__file__).parent
LONG_FILES = {
    HERE / "e2e" / name
    for name in (
        "test_backlog.py",
        "test_bench.py",
        "test_cluster_watch.py",
        "test_failure_groups_e2e.py",
        "test_scale_out.py",
        "test_scale_out_multi.py",
    )
}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """A stable sort, after pytest-randomly's shuffle: the order within each
    group stays random. Only in xdist workers, whose collection is the queue."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return

    def turn(item) -> int:
        if item.path in LONG_FILES:
            return 0
        return 1 if item.path.is_relative_to(HERE / "e2e") else 2

    items.sort(key=turn)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown (a module's stack starting or stopping too)
    inside the turn; tryfirst, so a wait for it is outside the test's timeout."""
    turns = os.environ.get(TURNS)
    if turns is None or os.environ.get("PYTEST_XDIST_WORKER") is None:
        return (yield)
    asked = time.monotonic()
    with taking_turns(Path(turns), alone=item.get_closest_marker("alone") is not None):
        waited = time.monotonic() - asked
        if waited >= WAIT_WORTH_NOTING:
            with (Path(turns) / "waits").open("a") as waits:
                waits.write(f"{waited:.1f}\t{item.nodeid}\n")
        return (yield)


# A wait for a turn this long is listed at the end of the run: the time a
# worker stood idle, the price of the tests marked alone.
WAIT_WORTH_NOTING = 0.5


def pytest_terminal_summary(terminalreporter, config):
    turns = os.environ.get(TURNS)
    if turns is None or getattr(config, "workerinput", None) is not None:
        return
    waits_file = Path(turns) / "waits"
    if not waits_file.exists():
        return
    waits = [
        (float(seconds), nodeid)
        for seconds, nodeid in (
            line.split("\t", 1) for line in waits_file.read_text().splitlines()
        )
    ]
    terminalreporter.section("waits for a turn (tests marked alone)")
    terminalreporter.write_line(
        f"{sum(seconds for seconds, _ in waits):.0f} s idle in {len(waits)} waits; "
        "the longest:"
    )
    for seconds, nodeid in sorted(waits, reverse=True)[:10]:
        terminalreporter.write_line(f"{seconds:7.1f} s  {nodeid}")


@contextlib.contextmanager
def taking_turns(turns: Path, *, alone: bool):
    """A readers-writer lock over two flock files: every test shares `running`,
    a test alone holds it exclusively. Each waiter passes the `door` first,
    and a test alone keeps the door shut while it waits, so the other workers'
    next tests cannot keep it waiting for ever."""
    with (turns / "door").open("a") as door, (turns / "running").open("a") as running:
        fcntl.flock(door, fcntl.LOCK_EX)
        try:
            fcntl.flock(running, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(door, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(running, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(door, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def default_language():
    """Each test starts in the default language: a test client's request
    leaves its language (LocaleMiddleware's choice) active in the thread."""
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def simulated_gateway_dir(settings, tmp_path):
    """Each test's simulated gateways start with an empty ledger of their own."""
    settings.ORDER_SIMULATED_GATEWAY_DIR = tmp_path / "simulated-gateway"
    return settings.ORDER_SIMULATED_GATEWAY_DIR


@pytest.fixture(autouse=True)
def no_rate_limit(settings):
    """Tests place orders from one address faster than any customer; the rate
    limit's own tests turn it on (tests/test_rate_limit.py)."""
    settings.ORDER_PLACE_RATE_LIMIT = "0"


@pytest.fixture(autouse=True)
def fresh_worker_batch_sizer(monkeypatch):
    """Each test's tasks run as in a worker process just started: its batch
    sizer has timed no order yet, so whatever ran in earlier tests does not
    decide how many orders a task takes along."""
    from orders import tasks
    from orders.services.attempts import BatchSizer

    monkeypatch.setattr(tasks, "_batch_sizer", BatchSizer())


@pytest.fixture
def immediate_retries(settings):
    """Retries due at once, three attempts: a test processes an order to its end
    by calling the worker's service in a loop."""
    settings.ORDER_RETRY_BASE_SECONDS = 0
    settings.ORDER_RETRY_JITTER = 0
    settings.ORDER_MAX_ATTEMPTS = 3


@pytest.fixture
def place_order():
    """Place an order through the service, as the API would."""
    import json

    def place(simulate: dict | None = None, **overrides):
        body = {**ORDER_BODY, **overrides}
        if simulate is not None:
            body["simulate"] = simulate
        data = parse_order_request(json.dumps(body).encode(), simulation_enabled=True)
        order, _created = order_place(data=data)
        return order

    return place


@pytest.fixture
def staff_user(django_user_model):
    """An operator: staff, with every permission on the orders app's models
    (orders/permissions.py says which action needs which)."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(
        "operator", "ops@example.com", "pw-for-tests", is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="orders")
    )
    return user


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def staff_in_role(django_user_model):
    """`staff_in_role("Support")`: a client logged in as a new staff account in
    that operator role (the groups `manage.py roles` makes), or in no group at
    all with None: staff with no permission."""
    import itertools

    from django.contrib.auth.models import Group
    from django.test import Client

    from orders.services.roles import roles_apply

    roles_apply()
    numbers = itertools.count()

    def log_in(role: str | None) -> Client:
        user = django_user_model.objects.create_user(
            f"staff-{role or 'none'}-{next(numbers)}", is_staff=True
        )
        if role is not None:
            user.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(user)
        return client

    return log_in
