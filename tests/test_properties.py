"""Property tests (Hypothesis): the order state machine against its table, and
the backoff policy's bounds."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from orders.exceptions import InvalidTransition
from orders.models import Order, OrderEvent
from orders.services.backoff import backoff_delay
from orders.state import transitions
from orders.state.transitions import (
    EVENT_FOR_STATUS,
    TRANSITIONS,
    claim,
    is_allowed,
    transition,
)

Status = Order.Status
STATUSES = st.sampled_from(Status.values)


# The table -----------------------------------------------------------------------
def test_every_status_is_reachable_from_pending_and_only_through_the_table():
    reached, frontier = {Status.PENDING}, [Status.PENDING]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            assert target in TRANSITIONS, "a move leads to a status with no row"
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(Status.values)


@given(st.lists(STATUSES, max_size=30))
def test_a_walk_of_requested_moves_follows_only_allowed_edges(requests):
    """Whatever is asked, the status only ever moves along an edge of the table;
    COMPLETED never moves again."""
    status = Status.PENDING
    for target in requests:
        if is_allowed(status, target):
            assert target in TRANSITIONS[status]
            assert status != Status.COMPLETED
            status = target
    assert status in Status.values


# The transition function on the database ---------------------------------------
class OrderLifecycle(RuleBasedStateMachine):
    """One real order, moved by transition() and claim() in any order, beside a
    model that knows only the table. They must agree after every step."""

    def __init__(self):
        super().__init__()
        self.order = Order.objects.create(
            customer_email="prop@example.com",
            amount="10.00",
            currency="USD",
            max_attempts=3,
        )
        self.status = Status.PENDING
        self.version = self.order.version
        self.events = 0
        self.completed = False

    def _events(self) -> list[str]:
        return list(
            OrderEvent.objects.filter(order=self.order)
            .order_by("id")
            .values_list("type", flat=True)
        )

    @rule(to=STATUSES)
    def move(self, to):
        if not is_allowed(self.status, to):
            with pytest.raises(InvalidTransition):
                transition(self.order, to)
            return
        assert transition(self.order, to, detail="property test")
        self.status, self.version = to, self.version + 1
        self.events += 1
        assert self._events()[-1] == EVENT_FOR_STATUS[to]
        self.completed |= to == Status.COMPLETED

    @rule(to=STATUSES)
    def a_stale_copy_moves_nothing(self, to):
        """A writer that read the order before the last move (a duplicate
        delivery, a racing worker) changes nothing."""
        stale = Order.objects.get(pk=self.order.pk)
        stale.version -= 1
        if is_allowed(stale.status, to):
            assert transition(stale, to) is False
        else:
            with pytest.raises(InvalidTransition):
                transition(stale, to)

    @rule()
    def claim_it(self):
        claimed = claim(
            self.order.order_id,
            lease_seconds=60,
            describe=lambda order: "claimed by a property test",
        )
        if is_allowed(self.status, Status.PROCESSING):
            assert claimed is not None and claimed.status == Status.PROCESSING
            self.order = claimed
            self.status, self.version = Status.PROCESSING, self.version + 1
            self.events += 1
        else:
            assert claimed is None

    @precondition(lambda self: self.completed)
    @rule(to=STATUSES)
    def completed_absorbs(self, to):
        with pytest.raises(InvalidTransition):
            transition(self.order, to)

    @invariant()
    def the_database_agrees_with_the_table(self):
        row = Order.objects.get(pk=self.order.pk)
        assert (row.status, row.version) == (self.status, self.version)
        assert len(self._events()) == self.events
        if self.completed:
            assert row.status == Status.COMPLETED


@pytest.mark.django_db
@pytest.mark.parametrize("writer", sorted(transitions.IMPLEMENTATIONS))
def test_no_sequence_of_moves_and_claims_leaves_the_table(writer):
    """Whichever implementation writes the moves (the raw SQL or its ORM
    reference)."""
    with transitions.written_by(writer):
        run_state_machine_as_test(
            OrderLifecycle,
            settings=settings(
                max_examples=40,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )


# The backoff ----------------------------------------------------------------------
POLICIES = st.fixed_dictionaries(
    {
        "base": st.floats(0, 600, allow_nan=False),
        "multiplier": st.floats(1, 10, allow_nan=False),
        "max_delay": st.floats(0, 3600, allow_nan=False),
    }
)
ATTEMPTS = st.integers(1, 10_000)


@given(POLICIES, st.integers(1, 200))
def test_delays_without_jitter_grow_monotonically_up_to_the_cap_and_stay_there(
    policy, attempts
):
    delays = [backoff_delay(n, **policy) for n in range(1, attempts + 1)]
    assert all(0 <= delay <= policy["max_delay"] for delay in delays)
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    capped = [n for n, delay in enumerate(delays) if delay == policy["max_delay"]]
    if capped:
        assert all(delay == policy["max_delay"] for delay in delays[capped[0] :])


@given(
    POLICIES,
    ATTEMPTS,
    st.floats(0, 1),
    st.floats(0, 1, exclude_max=True),
)
def test_a_jittered_delay_is_shortened_by_at_most_the_jitter_and_never_exceeds_the_cap(
    policy, attempt, jitter, draw
):
    plain = backoff_delay(attempt, **policy)
    delay = backoff_delay(attempt, **policy, jitter=jitter, rand=lambda: draw)
    assert delay <= plain <= policy["max_delay"]
    assert delay >= plain * (1 - jitter) - 1e-9 * max(1.0, plain)
    assert math.isfinite(delay)


@given(
    st.floats(0.001, 600),
    st.floats(1.5, 10),
    st.floats(0, 3600),
    st.integers(10_000, 10**9),
)
def test_huge_attempt_numbers_give_the_cap_without_overflowing(
    base, multiplier, max_delay, attempt
):
    delay = backoff_delay(
        attempt, base=base, multiplier=multiplier, max_delay=max_delay
    )
    assert delay == max_delay
