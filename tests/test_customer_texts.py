"""Two audiences, two texts (orders/customer_texts.py): what anyone with an
order's id reads (the status document, the per-order stream) is the customer's
short sentence, made from the event's facts; operators keep the precise
detail and failure_reason."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import gateways
from orders.models import FailureRecord, Order, OrderEvent
from orders.selectors import event_document, order_document
from orders.workers.dispatcher import sweep
from tests.expected import engineer_words
from tests.factories import claim, process, process_until_terminal

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("immediate_retries")]

Status = Order.Status
Cause = OrderEvent.Cause


def customer_words(document: dict) -> str:
    """Every sentence of a status document that a person reads."""
    texts = [document["message"], document["failure_reason"] or ""]
    for event in document["events"]:
        texts += [event["detail"], event["message"]]
    return "\n".join(texts)


def broken_step(self, order, *, attempt, idempotency_key):
    open("/nonexistent/orderproj/card-token")  # noqa: SIM115


def test_a_failed_orders_public_document_carries_no_engineer_words(place_order):
    order = process_until_terminal(place_order(simulate={"fail_times": 9}))

    document = order_document(order)

    assert order.status == Status.FAILED
    assert engineer_words(customer_words(document)) == []
    assert document["failure_reason"] == (
        "We couldn't reach the payment provider after 3 tries, so we couldn't "
        "complete your order. You have not been charged."
    )
    assert document["message"] == document["failure_reason"]
    # The operators keep the precise words.
    assert "ORDER_MAX_ATTEMPTS" in order.failure_reason
    assert "(transient)" in order.events.get(type="order.failed").detail


def test_an_unexpected_error_reaches_the_customer_as_our_fault_not_its_text(
    place_order, monkeypatch
):
    monkeypatch.setattr(gateways.SimulatedStep, "run", broken_step)
    order = process_until_terminal(place_order())

    document = order_document(order)

    words = customer_words(document)
    assert engineer_words(words) == []
    assert "nonexistent" not in words
    assert document["failure_reason"] == (
        "Something went wrong on our side, so we couldn't complete your order. "
        "You have not been charged."
    )
    assert "FileNotFoundError" in order.failure_reason
    assert FailureRecord.objects.filter(exception_type="FileNotFoundError").exists()


def test_a_retry_is_one_calm_sentence_saying_which_try_comes(place_order):
    order = process(place_order(simulate={"fail_times": 1}).order_id)

    document = order_document(order)

    retry = [e for e in document["events"] if e["type"] == "order.retry_scheduled"]
    expected = "Having trouble reaching the payment provider — trying again (2 of 3)."
    assert [e["message"] for e in retry] == [expected]
    assert document["status"] == Status.RETRYING
    assert document["message"] == expected
    assert (order.failure_step, order.failure_cause) == ("payment", Cause.TRANSIENT)


def test_a_declined_payment_says_the_customer_was_not_charged(place_order):
    order = process_until_terminal(place_order(simulate={"failure": "permanent"}))

    assert order_document(order)["failure_reason"] == (
        "Your payment was declined, so we couldn't complete your order. "
        "You have not been charged."
    )


def test_items_out_of_stock_after_payment_say_the_payment_is_refunded(place_order):
    order = process_until_terminal(
        place_order(simulate={"failure": "permanent", "step": "stock"})
    )

    assert order_document(order)["failure_reason"] == (
        "Some of your items are out of stock, so we couldn't complete your "
        "order. Your payment went through, so we will refund it."
    )


def test_a_lost_attempt_is_told_as_taking_too_long(place_order):
    order = claim(place_order())
    Order.objects.filter(pk=order.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    sweep()
    order.refresh_from_db()

    document = order_document(order)

    assert document["message"] == (
        "That took longer than it should have — trying again (2 of 3)."
    )
    lost = order.events.get(type="order.attempt_failed")
    assert (lost.step, lost.cause) == ("payment", Cause.LOST)
    assert "lease expired" in lost.detail


def test_a_completed_order_clears_the_facts_of_its_failed_attempts(place_order):
    order = process_until_terminal(place_order(simulate={"fail_times": 2}))

    document = order_document(order)

    assert (order.failure_step, order.failure_cause) == ("", "")
    assert document["failure_reason"] is None
    assert document["message"] == (
        "Your order is complete: your payment went through and your items are reserved."
    )
    assert engineer_words(customer_words(document)) == []


def test_the_staff_documents_keep_the_operators_detail(place_order):
    order = process(place_order(simulate={"fail_times": 1}).order_id)
    failed = order.events.get(type="order.attempt_failed")

    staff = event_document(failed)
    public = event_document(failed, public=True)

    assert staff["detail"] == "payment: payment gateway timed out (transient)"
    assert public["detail"] == "We couldn't reach the payment provider."
    assert staff["message"] == public["message"] == public["detail"]
    assert staff["step"] == "payment"
