"""Settings derived from others: pure functions of the environment's values."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from orderproj.settings import attempt_timeout


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


def test_django_q2_logs_through_the_configured_console_handler_at_log_level():
    """LOGGING configures django-q2's own logger ("django-q"): with a wrong name,
    django-q2 adds a handler of its own and LOG_LEVEL does not reach it."""
    import logging

    from django.conf import settings

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
