"""Steps are checkpointed: a step that completed is never run again, and every
step call carries an idempotency key that the gateway honours."""

import multiprocessing
import os
import sqlite3
from decimal import Decimal

import pytest

from orders import gateways
from orders.gateways import SimulatedLedger, simulated_ledger, step_idempotency_key
from orders.models import Order, OrderEvent
from orders.selectors import order_document
from orders.services.attempts import _step_checkpoint
from orders.services.orders import order_retry
from orders.state.transitions import record_step
from orders.workers.dispatcher import expire_leases
from tests.expected import STOCK_FAILS_ONCE_EVENTS
from tests.factories import claim, process_until_terminal

Status = Order.Status


pytestmark = pytest.mark.usefixtures("immediate_retries")


def events(order, event_type=None) -> list[OrderEvent]:
    found = OrderEvent.objects.filter(order=order).order_by("id")
    return list(found.filter(type=event_type) if event_type else found)


def count_gateway_calls(monkeypatch) -> list[tuple[str, int]]:
    """Every call the steps make, as (step, attempt)."""
    calls = []
    real_run = gateways.SimulatedStep.run

    def run(self, order, *, attempt, idempotency_key):
        calls.append((self.name, attempt))
        return real_run(self, order, attempt=attempt, idempotency_key=idempotency_key)

    monkeypatch.setattr(gateways.SimulatedStep, "run", run)
    return calls


@pytest.mark.django_db
def test_stock_failing_once_charges_the_payment_exactly_once(place_order, monkeypatch):
    calls = count_gateway_calls(monkeypatch)
    order = process_until_terminal(
        place_order(simulate={"step": "stock", "fail_times": 1})
    )
    assert (order.status, order.attempts) == (Status.COMPLETED, 2)
    assert [event.type for event in events(order)] == STOCK_FAILS_ONCE_EVENTS
    payment = [e for e in events(order, "order.step_completed") if e.step == "payment"]
    assert len(payment) == 1
    assert calls == [("payment", 1), ("stock", 1), ("stock", 2)]
    charges = simulated_ledger().references(order.order_id + ":payment")
    assert list(charges.values()) == [order.steps["payment"]["reference"]]


@pytest.mark.django_db
def test_the_attempt_after_a_completed_step_says_where_it_resumes(place_order):
    order = process_until_terminal(
        place_order(simulate={"step": "stock", "fail_times": 1})
    )
    first, second = events(order, "order.processing")
    assert first.detail == "attempt 1 of 3"
    assert second.detail == "attempt 2 of 3; resuming at stock (payment done)"


@pytest.mark.django_db
def test_a_step_checkpoint_names_the_step_and_what_it_produced(place_order):
    order = process_until_terminal(place_order())
    payment, stock = events(order, "order.step_completed")
    assert (payment.step, stock.step) == ("payment", "stock")
    assert payment.detail == f"payment done: {order.steps['payment']['reference']}"
    assert order.steps["payment"]["reference"].startswith("pay_")
    assert order.steps["stock"]["reference"].startswith("rsv_")
    assert payment.status == Status.PROCESSING
    assert stock.status == Status.COMPLETED  # written with the completion


@pytest.mark.django_db
def test_a_step_is_told_the_order_in_plain_values_and_its_own_key(
    place_order, monkeypatch
):
    told = []
    real_run = gateways.SimulatedStep.run

    def run(self, order, *, attempt, idempotency_key):
        told.append((self.name, order, idempotency_key))
        return real_run(self, order, attempt=attempt, idempotency_key=idempotency_key)

    monkeypatch.setattr(gateways.SimulatedStep, "run", run)
    order = place_order(
        items=[
            {"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"},
            {"sku": "TEA-9", "quantity": 1, "unit_price": "4.00"},
        ]
    )
    process_until_terminal(order)
    expected = gateways.StepOrder(
        order_id=order.order_id,
        amount=Decimal("29.00"),
        currency=order.currency,
        lines=(
            gateways.Line(sku="MUG-1", quantity=2, unit_price=Decimal("12.50")),
            gateways.Line(sku="TEA-9", quantity=1, unit_price=Decimal("4.00")),
        ),
    )
    assert told == [
        ("payment", expected, f"{order.order_id}:payment"),
        ("stock", expected, f"{order.order_id}:stock"),
    ]


@pytest.mark.django_db
def test_the_status_document_lists_each_step_done_or_pending(place_order):
    order = process_until_terminal(
        place_order(simulate={"step": "stock", "failure": "permanent"})
    )
    assert order.status == Status.FAILED
    steps = order_document(order)["steps"]
    assert [(step["name"], step["state"]) for step in steps] == [
        ("payment", "done"),
        ("stock", "pending"),
    ]
    assert steps[0]["reference"] == order.steps["payment"]["reference"]
    assert steps[0]["attempt"] == 1
    assert steps[0]["completed_at"].endswith("Z")
    assert steps[1]["reference"] is None
    step_events = [
        e
        for e in order_document(order)["events"]
        if e["type"] == "order.step_completed"
    ]
    assert [e["step"] for e in step_events] == ["payment"]


@pytest.mark.django_db
def test_an_operator_retry_keeps_the_steps_already_done(place_order, monkeypatch):
    order = process_until_terminal(
        place_order(simulate={"step": "stock", "failure": "permanent"})
    )
    calls = count_gateway_calls(monkeypatch)
    order_retry(order=order)
    order = process_until_terminal(order)
    # The plan fails stock on attempt 1 of every run; payment is not run again.
    assert calls == [("stock", 1)]
    assert order.steps.keys() == {"payment"}


@pytest.mark.django_db
def test_a_worker_that_died_after_a_checkpoint_resumes_at_the_next_step(
    place_order, monkeypatch
):
    """The lease of a worker killed between the payment checkpoint and the stock
    step expires; the next attempt starts at stock."""
    order = place_order()
    order = claim(order)
    told = gateways.StepOrder(
        order_id=order.order_id, amount=order.amount, currency=order.currency
    )
    result = gateways.SimulatedStep("payment").run(
        told, attempt=1, idempotency_key=step_idempotency_key(order.order_id, "payment")
    )
    assert record_step(order, **_step_checkpoint(order, "payment", result))
    Order.objects.filter(pk=order.pk).update(lease_expires_at="2000-01-01T00:00Z")
    assert expire_leases() == [order.order_id]
    calls = count_gateway_calls(monkeypatch)
    order = process_until_terminal(order)
    assert order.status == Status.COMPLETED
    assert calls == [("stock", 2)]


@pytest.mark.django_db
def test_a_step_interrupted_after_the_gateway_acted_is_not_done_twice(place_order):
    """The worker died inside the payment call: the gateway charged, the
    checkpoint was never written. The next attempt calls payment again with the
    same key, and the gateway answers with the first charge."""
    order = place_order()
    key = step_idempotency_key(order.order_id, "payment")
    first = simulated_ledger().record(key, "pay_first")
    assert not first.replayed
    order = process_until_terminal(order)
    assert order.status == Status.COMPLETED
    assert order.steps["payment"]["reference"] == "pay_first"
    (payment,) = [
        e for e in events(order, "order.step_completed") if e.step == "payment"
    ]
    assert "already done it for this key" in payment.detail
    assert simulated_ledger().references(key) == {key: "pay_first"}


@pytest.mark.django_db
def test_a_checkpoint_of_a_worker_whose_lease_was_taken_over_records_nothing(
    place_order,
):
    order = place_order()
    order = claim(order)
    stale = Order.objects.get(pk=order.pk)
    Order.objects.filter(pk=order.pk).update(lease_expires_at="2000-01-01T00:00Z")
    expire_leases()
    result = gateways.StepResult(reference="pay_late")
    assert not record_step(stale, **_step_checkpoint(stale, "payment", result))
    assert not events(order, "order.step_completed")
    assert Order.objects.get(pk=order.pk).steps == {}


def test_the_ledger_keeps_the_first_reference_for_a_key(tmp_path):
    ledger = SimulatedLedger(tmp_path / "ledger")
    assert ledger.record("ord_1:payment", "pay_a") == gateways.StepResult("pay_a")
    again = ledger.record("ord_1:payment", "pay_b")
    assert again == gateways.StepResult("pay_a", replayed=True)
    assert ledger.record("ord_1:stock", "rsv_c").reference == "rsv_c"
    assert ledger.references("ord_1:") == {
        "ord_1:payment": "pay_a",
        "ord_1:stock": "rsv_c",
    }


def test_the_idempotency_key_is_the_same_on_every_attempt():
    assert step_idempotency_key("ord_abc", "payment") == "ord_abc:payment"
    assert step_idempotency_key("ord_abc", "stock") != step_idempotency_key(
        "ord_abc", "payment"
    )


def test_the_ledger_keeps_every_key_in_one_file_not_a_file_per_key(tmp_path):
    ledger = SimulatedLedger(tmp_path / "ledger")
    for index in range(50):
        ledger.record(f"ord_{index}:payment", f"pay_{index}")
    names = {path.name for path in (tmp_path / "ledger").iterdir()}
    assert names <= {
        "ledger.sqlite3",
        "ledger.sqlite3-wal",
        "ledger.sqlite3-shm",
        "ledger.lock",
    }
    assert len(ledger.references("ord_")) == 50


def _record_at_once(directory, barrier, failures):
    barrier.wait()
    try:
        SimulatedLedger(directory).record(f"ord_{os.getpid()}:payment", "pay_x")
    except sqlite3.OperationalError as error:
        failures.put(str(error))


def test_workers_that_start_at_once_on_a_new_ledger_all_record(tmp_path):
    """Setting up the file takes SQLite's exclusive lock, for which it does not
    wait: two workers starting together once got "database is locked"."""
    context = multiprocessing.get_context("fork")
    failures = context.Queue()
    for round_ in range(15):
        directory = tmp_path / f"ledger-{round_}"
        barrier = context.Barrier(4)
        processes = [
            context.Process(target=_record_at_once, args=(directory, barrier, failures))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=60)
        assert [process.exitcode for process in processes] == [0] * 4
        assert len(SimulatedLedger(directory).references("ord_")) == 4
    assert failures.empty()
