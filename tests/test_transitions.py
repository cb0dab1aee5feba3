import pytest

from orders.exceptions import InvalidTransition
from orders.models import Order, OrderEvent
from orders.state.transitions import (
    TRANSITIONS,
    PrecedingEvent,
    append_event,
    apply,
    is_allowed,
    plan_transition,
    transition,
)

Status = Order.Status

ALLOWED = {
    ("PENDING", "PROCESSING"),
    ("PROCESSING", "COMPLETED"),
    ("PROCESSING", "RETRYING"),
    ("PROCESSING", "FAILED"),
    ("RETRYING", "PROCESSING"),
    ("RETRYING", "FAILED"),
    ("FAILED", "PENDING"),
}


@pytest.mark.parametrize("from_status", Status.values)
@pytest.mark.parametrize("to_status", Status.values)
def test_only_the_designed_moves_are_allowed(from_status, to_status):
    assert is_allowed(from_status, to_status) == ((from_status, to_status) in ALLOWED)


def test_every_status_has_a_row_in_the_table():
    assert set(TRANSITIONS) == set(Status.values)


def make_order(**fields) -> Order:
    defaults = {
        "customer_email": "a@example.com",
        "amount": "10.00",
        "currency": "USD",
        "max_attempts": 3,
    }
    return Order.objects.create(**{**defaults, **fields})


@pytest.mark.django_db
def test_a_move_bumps_the_version_and_writes_its_event_in_the_same_call():
    order = make_order()
    assert transition(order, Status.PROCESSING, detail="attempt 1 of 3")
    order.refresh_from_db()
    assert order.status == Status.PROCESSING
    assert order.version == 2
    event = OrderEvent.objects.get(order=order)
    assert (event.type, event.status, event.detail) == (
        "order.processing",
        "PROCESSING",
        "attempt 1 of 3",
    )


@pytest.mark.django_db
def test_running_the_same_move_twice_changes_nothing_the_second_time():
    order = make_order()
    stale_copy = Order.objects.get(pk=order.pk)
    assert transition(order, Status.PROCESSING)
    assert not transition(stale_copy, Status.PROCESSING)
    assert OrderEvent.objects.filter(order=order).count() == 1
    assert Order.objects.get(pk=order.pk).version == 2


@pytest.mark.django_db
def test_a_forbidden_move_raises_and_writes_nothing():
    order = make_order()
    with pytest.raises(InvalidTransition, match="PENDING to COMPLETED"):
        transition(order, Status.COMPLETED)
    order.refresh_from_db()
    assert order.status == Status.PENDING
    assert not OrderEvent.objects.exists()


@pytest.mark.django_db
def test_preceding_events_are_written_before_the_move_event():
    order = make_order()
    transition(order, Status.PROCESSING, changes={"attempts": 1})
    transition(
        order,
        Status.RETRYING,
        preceding=[PrecedingEvent("order.attempt_failed", "boom", 12)],
    )
    types = list(OrderEvent.objects.order_by("id").values_list("type", flat=True))
    assert types == [
        "order.processing",
        "order.attempt_failed",
        "order.retry_scheduled",
    ]
    failed = OrderEvent.objects.get(type="order.attempt_failed")
    assert (failed.attempt, failed.duration_ms) == (1, 12)


@pytest.mark.django_db
def test_an_event_appended_through_a_stale_copy_reads_the_order_as_its_row_is():
    order = make_order()
    stale_copy = Order.objects.get(pk=order.pk)
    transition(order, Status.PROCESSING, changes={"attempts": 1})
    event = append_event(stale_copy, "delivery.completed", detail="late news")
    assert (event.status, event.attempt) == ("PROCESSING", 1)
    assert (stale_copy.status, stale_copy.attempts, stale_copy.version) == (
        "PROCESSING",
        1,
        3,
    )
    assert OrderEvent.objects.get(pk=event.pk).detail == "late news"


@pytest.mark.django_db
def test_events_written_by_a_move_carry_their_row_ids_in_order():
    order = make_order()
    transition(order, Status.PROCESSING, changes={"attempts": 1})
    transition(
        order,
        Status.RETRYING,
        preceding=[PrecedingEvent("order.attempt_failed", "boom")],
        changes={"next_attempt_at": order.created_at},
    )
    rows = list(OrderEvent.objects.filter(order=order).order_by("id"))
    assert [row.type for row in rows][-2:] == [
        "order.attempt_failed",
        "order.retry_scheduled",
    ]
    assert rows[-1].next_attempt_at == order.created_at
    assert Order.objects.get(pk=order.pk).next_attempt_at == order.created_at


# Text that an array literal must quote or escape, and what a careless one would
# take for NULL: the moves of a batch send their values as arrays (on
# PostgreSQL, in binary; transitions_sql._array_slot).
AWKWARD_TEXTS = [
    'a "quoted", {braced} reason\\ with a backslash',
    "NULL",
    "",
    "ünïcødé ✓ and a\ttab\nand a newline",
]


@pytest.mark.django_db
def test_a_batch_of_moves_writes_every_text_exactly_as_given():
    orders = [make_order(status=Status.PROCESSING) for _ in AWKWARD_TEXTS]
    moves = [
        plan_transition(
            order,
            Status.FAILED,
            detail=text,
            changes={"failure_reason": text, "steps": {"payment": {"note": text}}},
            preceding=[PrecedingEvent("order.attempt_failed", text)],
        )
        for order, text in zip(orders, AWKWARD_TEXTS, strict=True)
    ]
    assert apply(moves) == [True] * len(moves)
    for order, text in zip(orders, AWKWARD_TEXTS, strict=True):
        row = Order.objects.get(pk=order.pk)
        assert (row.status, row.failure_reason) == (Status.FAILED, text)
        assert row.steps == {"payment": {"note": text}}
        details = OrderEvent.objects.filter(order=order).order_by("id")
        assert list(details.values_list("detail", flat=True)) == [text, text]
