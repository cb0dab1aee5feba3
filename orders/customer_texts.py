"""What customers are told, in their words and language: one place that makes
a short sentence from an order's or an event's facts (its type, the step it
stopped at, the cause of a failure, attempt n of m).

Operators keep the precise `detail` and `failure_reason` (a setting's name, an
exception, a path); customers never see those. A customer text is made at read
time, in the language active then (the reader's, or the order's for its
mails), so every sentence here is translated (locale/ko/LC_MESSAGES) and none
can carry an engineer's word. See
docs/decisions/0015-customer-texts-made-at-read-time.md.
"""

from django.utils.translation import gettext, ngettext, pgettext, pgettext_lazy

from orders.gateways import STEPS
from orders.models import Order, OrderEvent

Status = Order.Status
EventType = OrderEvent.Type
Cause = OrderEvent.Cause

# What the badge on the order page says: the customer's labels, not the
# operators' (those are on the choices).
STATUS_LABELS = {
    Status.PENDING: pgettext_lazy("order status", "Received"),
    Status.PROCESSING: pgettext_lazy("order status", "Processing"),
    Status.RETRYING: pgettext_lazy("order status", "Trying again"),
    Status.COMPLETED: pgettext_lazy("order status", "Complete"),
    Status.FAILED: pgettext_lazy("order status", "Not completed"),
}

STEP_NAMES = {
    "payment": pgettext_lazy("order step", "Payment"),
    "stock": pgettext_lazy("order step", "Reserving your items"),
}


def status_label(status: str) -> str:
    return str(STATUS_LABELS[status])


def step_name(step: str) -> str:
    return str(STEP_NAMES[step])


def _attempts(attempt: int, max_attempts: int) -> dict:
    # Events written before max_attempts was recorded have 0 there.
    return {"attempt": attempt, "max": max(attempt, max_attempts)}


def _retrying(step: str, cause: str, attempt: int, max_attempts: int) -> str:
    """Attempt `attempt` of `max_attempts` is coming after a failed one."""
    values = _attempts(attempt, max_attempts)
    if cause == Cause.TRANSIENT and step == "payment":
        text = gettext(
            "Having trouble reaching the payment provider — trying again "
            "(%(attempt)s of %(max)s)."
        )
    elif cause == Cause.TRANSIENT and step == "stock":
        text = gettext(
            "Having trouble reaching our stock system — trying again "
            "(%(attempt)s of %(max)s)."
        )
    elif cause == Cause.LOST:
        text = gettext(
            "That took longer than it should have — trying again "
            "(%(attempt)s of %(max)s)."
        )
    else:
        text = gettext(
            "Something went wrong on our side — trying again (%(attempt)s of %(max)s)."
        )
    return text % values


def _attempt_failed(step: str, cause: str) -> str:
    if cause == Cause.TRANSIENT and step == "payment":
        return gettext("We couldn't reach the payment provider.")
    if cause == Cause.TRANSIENT and step == "stock":
        return gettext("We couldn't reach our stock system.")
    if cause == Cause.PERMANENT and step == "payment":
        return gettext("Your payment was declined.")
    if cause == Cause.PERMANENT and step == "stock":
        return gettext("Some of your items are not available.")
    if cause == Cause.LOST:
        return gettext("That took longer than it should have.")
    return gettext("Something went wrong on our side.")


def _charged(step: str) -> str:
    """Whether the customer paid, as far as the step a failure stopped at
    tells: the steps run in order, and payment is not taken twice."""
    if step not in STEPS:
        return ""
    if STEPS.index(step) > STEPS.index("payment"):
        return gettext("Your payment went through, so we will refund it.")
    return gettext("You have not been charged.")


def failure_text(*, step: str, cause: str, attempts: int) -> str:
    """Why an order failed for good, and whether the customer paid."""
    if cause == Cause.PERMANENT and step == "payment":
        why = gettext("Your payment was declined, so we couldn't complete your order.")
    elif cause == Cause.PERMANENT and step == "stock":
        why = gettext(
            "Some of your items are out of stock, so we couldn't complete your order."
        )
    elif cause == Cause.TRANSIENT and step == "payment":
        why = ngettext(
            "We couldn't reach the payment provider after %(count)s try, so we "
            "couldn't complete your order.",
            "We couldn't reach the payment provider after %(count)s tries, so we "
            "couldn't complete your order.",
            attempts,
        ) % {"count": attempts}
    elif cause == Cause.TRANSIENT and step == "stock":
        why = ngettext(
            "We couldn't reach our stock system after %(count)s try, so we "
            "couldn't complete your order.",
            "We couldn't reach our stock system after %(count)s tries, so we "
            "couldn't complete your order.",
            attempts,
        ) % {"count": attempts}
    else:
        why = gettext(
            "Something went wrong on our side, so we couldn't complete your order."
        )
    charged = _charged(step)
    return f"{why} {charged}" if charged else why


def what_to_do_after_failure() -> str:
    return gettext("You can place the same order again.")


def event_text(
    *, type: str, step: str, cause: str, attempt: int, max_attempts: int
) -> str:
    """The customer's sentence for one event of the timeline; empty for an
    event that means nothing to them (the delivery listener's own failure)."""
    if type == EventType.CREATED:
        return gettext("We've received your order.")
    if type == EventType.PROCESSING:
        if attempt > 1:
            return gettext("Trying again (%(attempt)s of %(max)s).") % _attempts(
                attempt, max_attempts
            )
        return gettext("We're working on your order.")
    if type == EventType.STEP_COMPLETED:
        if step == "payment":
            return gettext("Your payment went through.")
        return gettext("Your items are reserved.")
    if type == EventType.ATTEMPT_FAILED:
        return _attempt_failed(step, cause)
    if type == EventType.RETRY_SCHEDULED:
        return _retrying(step, cause, attempt + 1, max_attempts)
    if type == EventType.COMPLETED:
        return completed_text()
    if type == EventType.FAILED:
        return failure_text(step=step, cause=cause, attempts=attempt)
    if type == EventType.RETRY_REQUESTED:
        return gettext("Our team is trying your order again.")
    if type == EventType.DELIVERY_COMPLETED:
        return gettext("Your order has been delivered.")
    return ""


def completed_text() -> str:
    return gettext(
        "Your order is complete: your payment went through and your items are reserved."
    )


def order_text(order: Order) -> str:
    """The customer's sentence for where the order is now."""
    if order.status == Status.PENDING:
        return gettext("We've received your order and will start on it in a moment.")
    if order.status == Status.PROCESSING:
        if order.attempts > 1:
            return gettext("Trying again (%(attempt)s of %(max)s).") % _attempts(
                order.attempts, order.max_attempts
            )
        return gettext("We're working on your order.")
    if order.status == Status.RETRYING:
        return _retrying(
            order.failure_step,
            order.failure_cause,
            order.attempts + 1,
            order.max_attempts,
        )
    if order.status == Status.COMPLETED:
        if order.delivered_at is not None:
            return gettext("Your order has been delivered.")
        return completed_text()
    return order_failure_text(order)


def order_failure_text(order: Order) -> str:
    """What the public `failure_reason` says of a FAILED order."""
    return failure_text(
        step=order.failure_step, cause=order.failure_cause, attempts=order.attempts
    )


def mail_subject(order: Order) -> str:
    if order.status == Status.COMPLETED:
        return pgettext("mail subject", "Your order is complete")
    return pgettext("mail subject", "We couldn't complete your order")
