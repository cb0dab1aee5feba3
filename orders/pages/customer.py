"""What the customers' pages hand their scripts, and the order page's
timeline as a customer reads it."""

from django.utils.translation import gettext, pgettext

from orders import customer_texts
from orders.models import Order, OrderEvent

EventType = OrderEvent.Type


def script_texts() -> dict:
    """The sentences the storefront's and the order page's scripts write
    (static/orders/), translated here and rendered into the page as JSON
    (json_script: the Content-Security-Policy allows no inline script).
    %(name)s placeholders are filled in by the scripts."""
    return {
        "statuses": {
            status: customer_texts.status_label(status) for status in Order.Status
        },
        "step_states": {
            "done": pgettext("order step", "done"),
            "pending": pgettext("order step", "waiting"),
        },
        "live": gettext("Live: this page updates by itself."),
        "polling": gettext(
            "Live updates are unavailable; checking for changes every 3 s."
        ),
        "next_try_in": gettext("in %(seconds)s s"),
        "next_try_now": gettext("any moment now"),
        "placing": gettext("Placing the order…"),
        "placed": gettext("Placed. Opening its page…"),
        "no_answer": gettext(
            "Could not reach the server. Check the connection and try again."
        ),
        "refused": gettext("The order was not placed: %(reason)s"),
        "server_answered": gettext("The server answered %(status)s."),
    }


def shown_on_the_page(event: dict) -> bool:
    """Whether the order page lists this event. A failed attempt is told by
    what comes of it (a retry, or the failure), a retry's start by the retry:
    the customer reads one line per retry, not three."""
    if not event["message"]:
        return False
    if event["type"] == EventType.ATTEMPT_FAILED:
        return False
    return not (event["type"] == EventType.PROCESSING and event["attempt"] > 1)


def customer_timeline(events: list[dict]) -> list[dict]:
    """The events the order page lists, retries in a row as one line (the
    latest): "Having trouble reaching the payment provider — trying again (3
    of 3)". static/orders/order.js applies the same rule to live events."""
    shown: list[dict] = []
    for event in events:
        if not shown_on_the_page(event):
            continue
        if (
            event["type"] == EventType.RETRY_SCHEDULED
            and shown
            and shown[-1]["type"] == EventType.RETRY_SCHEDULED
        ):
            shown[-1] = event
        else:
            shown.append(event)
    return shown
