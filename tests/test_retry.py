import pytest

from orders.services.backoff import backoff_delay

POLICY = {"base": 1.0, "multiplier": 2.0, "max_delay": 60.0}


@pytest.mark.parametrize(
    ("failed_attempt", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (50, 60.0)],
)
def test_delay_without_jitter_follows_min_of_cap_and_exponential(
    failed_attempt, expected
):
    assert backoff_delay(failed_attempt, **POLICY) == expected


def test_jitter_only_shortens_the_delay_within_its_fraction():
    delays = [
        backoff_delay(3, **POLICY, jitter=0.2, rand=lambda value=value: value)
        for value in (0.0, 0.5, 0.999)
    ]
    assert delays[0] == 4.0
    assert delays[1] == pytest.approx(3.6)
    assert 3.2 < delays[2] < 3.21


def test_jittered_delays_stay_between_floor_and_cap_and_differ():
    delays = {backoff_delay(10, **POLICY, jitter=0.2) for _ in range(200)}
    assert all(48.0 <= delay <= 60.0 for delay in delays)
    assert len(delays) > 100


def test_huge_attempt_numbers_do_not_overflow_past_the_cap():
    assert backoff_delay(10_000, **POLICY) == 60.0


def test_attempt_numbers_count_from_one():
    with pytest.raises(ValueError):
        backoff_delay(0, **POLICY)
