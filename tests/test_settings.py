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
