from pathlib import Path

import pytest

from tests.stack import make_stack

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Every test here starts a server, a cluster or a browser: the fast lane
    (`-m "not e2e"`) leaves out the whole folder, marked or not."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One real orderproj (daphne + qcluster on a temporary SQLite file) shared by
    the tests of a module."""
    running = make_stack(tmp_path_factory.mktemp("stack")).start()
    yield running
    running.stop()


@pytest.fixture
def fresh_stack(tmp_path):
    """A stack of its own, for tests that kill or restart processes."""
    started = []

    def start(**overrides):
        running = make_stack(tmp_path, **overrides).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
