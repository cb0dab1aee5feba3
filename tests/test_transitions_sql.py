"""The raw SQL of the moves (orders/state/transitions_sql*.py) leaves exactly the
rows its ORM reference (transitions_orm.py) leaves: the same sequence of moves,
made once by each from the same rows at the same instant, gives the same
orders, events and deliveries, and the same answers to its callers."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from orders.models import Delivery, Order, OrderEvent
from orders.state import transitions
from orders.state.transitions import (
    PrecedingEvent,
    append_event,
    apply,
    claim,
    claim_batch,
    plan_step,
    plan_transition,
    transition,
)

Status = Order.Status
EventType = OrderEvent.Type

NOW = timezone.now().replace(microsecond=0)
LEASE_SECONDS = 300
LATER = NOW + timedelta(minutes=5)
FIRST_ATTEMPT = {"attempts": 0, "max_attempts": 3, "steps": {}}


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every timestamp a move writes (updated_at, an event's `at`, a
    delivery's created_at) is NOW, so that two runs can be compared."""
    monkeypatch.setattr(timezone, "now", lambda: NOW)


def place(count: int, **fields) -> list[Order]:
    return [
        Order.objects.create(
            customer_email="a@example.com",
            amount="10.00",
            currency="USD",
            max_attempts=3,
            **fields,
        )
        for _ in range(count)
    ]


def describe(order: Order) -> str:
    return f"attempt {order.attempts} of {order.max_attempts}"


def rows() -> dict:
    """Every row the moves write, without what differs between runs by design
    (an event's and a delivery's id, which a rolled-back sequence on PostgreSQL
    does not give back, a delivery's random code, and when a lease ends, which
    the database's clock decides: test_a_claim_leases_by_the_databases_clock)."""
    return {
        "orders": [
            {**order, "lease_expires_at": order["lease_expires_at"] is not None}
            for order in Order.objects.order_by("pk").values()
        ],
        "events": list(
            OrderEvent.objects.order_by("pk").values(
                *[f.attname for f in OrderEvent._meta.concrete_fields if f.name != "id"]
            )
        ),
        "deliveries": list(
            Delivery.objects.order_by("order_id").values(
                *[
                    f.attname
                    for f in Delivery._meta.concrete_fields
                    if f.name not in {"id", "code"}
                ]
            )
        ),
    }


def run_both(sequence) -> tuple[tuple, tuple]:
    """Run `sequence` (a function of no arguments returning what its moves
    answered) with each implementation, from the same rows: each run is rolled
    back after its rows are read. Returns (answers, rows) of the SQL and of
    the ORM."""
    results = []
    for name in ("sql", "orm"):
        with transaction.atomic(), transitions.written_by(name):
            answers = sequence()
            results.append((answers, rows()))
            transaction.set_rollback(True)
    return results[0], results[1]


def ids(orders) -> list[str]:
    return [order.order_id for order in orders]


@pytest.mark.django_db
def test_a_batch_claimed_checkpointed_and_completed_leaves_the_same_rows(
    frozen_clock,
):
    placed = place(4) + place(1, simulate={"payment": "fail"})

    def sequence():
        claimed = claim_batch(
            placed[1].order_id,
            like=FIRST_ATTEMPT,
            companions=5,
            companions_like={"simulate": {}},
            lease_seconds=LEASE_SECONDS,
            describe=describe,
            now=NOW,
        )
        orders = claimed.orders
        steps = {"payment": {"reference": "p-1"}}
        checkpoints = apply(
            [
                plan_step(
                    order, step="payment", detail="paid", changes={"steps": steps}
                )
                for order in orders
            ]
        )
        completions = apply(
            [
                plan_transition(
                    order,
                    Status.COMPLETED,
                    detail="payment, stock done",
                    changes={"lease_expires_at": None, "steps": {**steps, "stock": {}}},
                    preceding=[
                        PrecedingEvent(EventType.STEP_COMPLETED, "stock", step="stock")
                    ],
                    duration_ms=7,
                    creates=[Delivery(order=order)],
                )
                for order in orders
            ]
        )
        return ids(orders), claimed.asked, checkpoints, completions

    (sql_answers, sql_rows), (orm_answers, orm_rows) = run_both(sequence)
    # The asked-for order and the two placed after it that are no simulation:
    # not the one placed before it, not the one with a plan.
    assert sql_answers == (ids(placed[1:4]), None, [True] * 3, [True] * 3)
    assert orm_answers == sql_answers
    assert orm_rows == sql_rows


@pytest.mark.django_db
def test_an_order_retried_failed_and_retried_by_hand_leaves_the_same_rows(
    frozen_clock,
):
    (order,) = place(1)

    def sequence():
        answers = []
        claimed = claim(order.order_id, lease_seconds=LEASE_SECONDS, describe=describe)
        stale = Order.objects.get(pk=claimed.pk)
        answers.append(
            transition(
                claimed,
                Status.RETRYING,
                detail="declined; attempt 2 of 3 in 1.0 s",
                changes={
                    "next_attempt_at": NOW,
                    "dispatch_due_at": NOW,
                    "lease_expires_at": None,
                },
                preceding=[PrecedingEvent(EventType.ATTEMPT_FAILED, "declined", 3)],
            )
        )
        # A racing worker's move from what it read before: nothing written.
        answers.append(transition(stale, Status.FAILED, detail="too late"))
        # Not due yet: a claim changes nothing.
        answers.append(
            claim(
                order.order_id,
                lease_seconds=LEASE_SECONDS,
                describe=describe,
                now=NOW - timedelta(seconds=1),
            )
        )
        again = claim(order.order_id, lease_seconds=LEASE_SECONDS, describe=describe)
        answers.append((again.attempts, again.version, again.status))
        answers.append(
            transition(
                again,
                Status.FAILED,
                detail="out of stock",
                changes={"failure_reason": "out of stock", "lease_expires_at": None},
            )
        )
        answers.append(
            transition(
                again, Status.PENDING, detail="retry requested", changes={"attempts": 0}
            )
        )
        event = append_event(
            stale,
            EventType.DELIVERY_COMPLETED,
            detail="late",
            changes={"queued_at": NOW},
        )
        answers.append((event.status, event.attempt, stale.version, stale.status))
        return answers

    (sql_answers, sql_rows), (orm_answers, orm_rows) = run_both(sequence)
    assert sql_answers == [
        True,
        False,
        None,
        (2, 4, Status.PROCESSING),
        True,
        True,
        # The event reads the order as its row is, not as the stale copy was.
        (Status.PENDING, 0, 7, Status.PENDING),
    ]
    assert orm_answers == sql_answers
    assert orm_rows == sql_rows


@pytest.mark.django_db
def test_a_batch_whose_asked_for_order_is_a_retry_reads_it_and_leaves_the_same_rows(
    frozen_clock,
):
    (retrying,) = place(1, status=Status.RETRYING, attempts=1, next_attempt_at=NOW)
    behind = place(2)

    def sequence():
        claimed = claim_batch(
            retrying.order_id,
            like=FIRST_ATTEMPT,
            companions=5,
            companions_like={"simulate": {}},
            lease_seconds=LEASE_SECONDS,
            describe=describe,
            now=NOW,
        )
        return ids(claimed.orders), claimed.asked.order_id, claimed.asked.version

    (sql_answers, sql_rows), (orm_answers, orm_rows) = run_both(sequence)
    # A retry holds no `like`: it is read, for its caller to claim, and the
    # orders behind it are taken along.
    assert sql_answers == (ids(behind), retrying.order_id, 1)
    assert orm_answers == sql_answers
    assert orm_rows == sql_rows


@pytest.mark.django_db
def test_moves_that_write_different_fields_in_one_apply_leave_the_same_rows(
    frozen_clock,
):
    placed = place(3, status=Status.PROCESSING, attempts=1)

    def sequence():
        orders = [Order.objects.get(pk=order.pk) for order in placed]
        stale = Order.objects.get(pk=orders[2].pk)
        append_event(orders[2], EventType.DELIVERY_COMPLETED)
        return apply(
            [
                plan_transition(
                    orders[0], Status.FAILED, changes={"failure_reason": "x"}
                ),
                plan_transition(
                    orders[1], Status.RETRYING, changes={"next_attempt_at": LATER}
                ),
                # Read before the event above bumped its version: not written.
                plan_transition(
                    stale, Status.COMPLETED, creates=[Delivery(order=stale)]
                ),
            ]
        )

    (sql_answers, sql_rows), (orm_answers, orm_rows) = run_both(sequence)
    assert sql_answers == [True, True, False]
    assert orm_answers == sql_answers
    assert orm_rows == sql_rows
    assert not sql_rows["deliveries"]


@pytest.mark.django_db
def test_the_moves_bench_times_every_phase_with_each_writer():
    """`manage.py bench moves`, which decides where the raw SQL stays, runs
    every phase with both writers (here in this process, at a tiny size)."""
    from orders.bench.moves import PHASES, MovesPlan, format_moves, measure

    report = measure(MovesPlan(moves=4, batch=2, rounds=2), progress=lambda line: None)
    assert set(report["phases"]) == set(PHASES)
    for figures in report["phases"].values():
        assert figures["sql_us"] > 0 and figures["orm_us"] > 0
        assert len(figures["ratios"]) == 2
    assert len(format_moves(report)) == 2 + len(PHASES)


def database_now(order: Order):
    """What the database's clock says now (Django's Now()), read with a row."""
    rows = Order.objects.filter(pk=order.pk).annotate(now=Now())
    return rows.values_list("now", flat=True).get()


@pytest.mark.parametrize("skew", [-12, 12])
@pytest.mark.parametrize("writer", ["sql", "orm"])
@pytest.mark.django_db
def test_a_claim_leases_by_the_databases_clock_whatever_the_workers(
    monkeypatch, writer, skew
):
    """The lease ends LEASE_SECONDS after the database's now, the clock the
    dispatcher expires leases by, with the worker's own clock 12 s off."""
    (order,) = place(1)
    right = timezone.now
    lease = timedelta(seconds=LEASE_SECONDS)
    # SQLite's clock reads to the millisecond.
    slack = timedelta(milliseconds=2)

    with transitions.written_by(writer):
        before = database_now(order)
        monkeypatch.setattr(timezone, "now", lambda: right() + timedelta(seconds=skew))
        claimed = claim(order.order_id, lease_seconds=LEASE_SECONDS, describe=describe)
        monkeypatch.setattr(timezone, "now", right)
        after = database_now(order)

    assert claimed.status == Status.PROCESSING
    assert before + lease - slack <= claimed.lease_expires_at <= after + lease + slack
    assert Order.objects.get(pk=order.pk).lease_expires_at == claimed.lease_expires_at
