"""The customer's mail when it matters: one when the order completes, one when
it fails for good; never one per retry.

Sent by a receiver of the timeline's signals (orders/signals.py), so a worker
sends it after the event commits, retries it with backoff when the mail server
refuses, and records its failure like any other async work
(orders/services/receivers.py); the order never waits for it. The mail is
written in the order's language (the one it was placed in), in the customer's
words (orders/customer_texts.py), plain text and HTML from templates, with a
link to the order's page. ORDER_NOTIFY_CUSTOMERS=0 turns it off.
"""

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from orders import customer_texts
from orders.models import Order
from orders.signals import order_completed, order_failed

logger = logging.getLogger(__name__)

Status = Order.Status
TEMPLATE = "orders/mail/order_outcome"


def connect_receivers() -> None:
    """At start-up (orders/apps.py): with ORDER_NOTIFY_CUSTOMERS off, nothing
    is connected, so no receiver call is made for any order."""
    if not settings.ORDER_NOTIFY_CUSTOMERS:
        return
    for signal in (order_completed, order_failed):
        signal.connect(order_outcome_mail_send, dispatch_uid="customer_outcome_mail")


def order_outcome_mail_send(sender, order: Order, event: dict, **kwargs) -> None:
    """The receiver of order.completed and order.failed. The mail goes after
    this receiver's transaction commits: on SQLite a transaction holds the
    database's one write lock from its start (BEGIN IMMEDIATE), and a mail
    server may take its whole timeout to answer. A send that raises still
    raises out of the receiver's call, which records and retries it."""
    if not settings.ORDER_NOTIFY_CUSTOMERS:
        return
    if order.status != event["status"]:
        # An operator retried the failed order before its mail went: the
        # failure was not final, and the retry's outcome gets its own mail.
        logger.info(
            "order %s is %s now: no mail for its %s",
            order.order_id,
            order.status,
            event["type"],
        )
        return
    message = order_outcome_mail(order=order)
    transaction.on_commit(message.send)


def order_outcome_mail(*, order: Order) -> EmailMultiAlternatives:
    """The mail about a COMPLETED or FAILED order, in the order's language."""
    if order.status not in {Status.COMPLETED, Status.FAILED}:
        raise ValueError(f"{order.order_id} is {order.status}: it has no outcome yet")
    language = order.language or settings.LANGUAGE_CODE
    with translation.override(language):
        context = {
            "order": order,
            "language": language,
            "failed": order.status == Status.FAILED,
            "message": customer_texts.order_text(order),
            "what_to_do": customer_texts.what_to_do_after_failure(),
            "page_url": settings.ORDER_SITE_URL
            + reverse("order-page", args=[order.order_id]),
            "items": list(order.lines.all()),
        }
        subject = customer_texts.mail_subject(order)
        text = render_to_string(f"{TEMPLATE}.txt", context)
        html = render_to_string(f"{TEMPLATE}.html", context)
    mail = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[order.customer_email],
        headers={"Content-Language": language},
    )
    mail.attach_alternative(html, "text/html")
    return mail
