"""The customer's mail when it matters: one when the order completes, one when
it fails for good; never one per retry.

The move to COMPLETED or FAILED marks the mail due, in its own transaction
(customer_mail_owed); the customer mailer, a thread of each qcluster
(orders/workers/customer_mailer.py), takes each due mail by a conditional
UPDATE, so it is sent after the order committed and by one process, writes it
from templates in the order's language and the customer's words
(orders/customer_texts.py), plain text and HTML with a link to the order's
page, and sends it. A mail server that refuses is recorded as a failure like
any other async work and tried again with backoff; one that hangs holds up that
thread only, never a worker or an order (docs/decisions/
0015-customer-texts-made-at-read-time.md). ORDER_NOTIFY_CUSTOMERS=0 marks no
mail due.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import F
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from orders import customer_texts
from orders.models import Order
from orders.services.backoff import backoff_delay
from orders.services.failures import record_failure

logger = logging.getLogger(__name__)

Status = Order.Status
TEMPLATE = "orders/mail/order_outcome"
# What a failure of a customer's mail is recorded as: a group of its own.
CUSTOMER_MAIL_TASK = "orders.services.customer_mail.customer_mail_send"
# A mail server that keeps refusing is tried again after 2 s, 8 s, 32 s, ... up
# to an hour apart, this many times in all; then its failure records are what is
# left to act on.
CUSTOMER_MAIL_MAX_ATTEMPTS = 10
RETRY_BASE_SECONDS = 2
RETRY_MULTIPLIER = 4
RETRY_MAX_SECONDS = 3600
# How long a mailer holds a mail it took: longer than a send may take (an SMTP
# timeout), so that only a mailer that died gives it up to another.
LEASE_SECONDS = 120
BATCH = 50


def customer_mail_owed(now: datetime | None = None) -> dict:
    """The order's changes, in a move to COMPLETED or FAILED, that mark its
    customer's mail due (none with ORDER_NOTIFY_CUSTOMERS off)."""
    if not settings.ORDER_NOTIFY_CUSTOMERS:
        return {"customer_mail_due_at": None}
    return {
        "customer_mail_due_at": now or timezone.now(),
        "customer_mail_attempts": 0,
    }


# The changes of an operator's retry: a failure retried is not final, and its
# mail, not sent yet, is owed no more.
CUSTOMER_MAIL_NOT_OWED = {"customer_mail_due_at": None, "customer_mail_attempts": 0}


def customer_mails_send_due(*, now: datetime | None = None) -> int:
    """Send every customer mail due now, oldest first; returns how many were
    tried."""
    now = now or timezone.now()
    due = list(
        Order.objects.filter(customer_mail_due_at__lte=now)
        .order_by("customer_mail_due_at")
        .values_list("pk", "customer_mail_due_at")[:BATCH]
    )
    tried = 0
    for pk, due_at in due:
        if customer_mail_send(order_pk=pk, due_at=due_at, now=now) is not None:
            tried += 1
    return tried


def customer_mail_send(*, order_pk: int, due_at: datetime, now=None) -> bool | None:
    """Take the order's due mail (unless another mailer took it first: None)
    and send it. True when it went; False when the mail server refused, which
    is recorded and tried again later."""
    now = now or timezone.now()
    leased = now + timedelta(seconds=LEASE_SECONDS)
    taken = Order.objects.filter(pk=order_pk, customer_mail_due_at=due_at).update(
        customer_mail_due_at=leased,
        customer_mail_attempts=F("customer_mail_attempts") + 1,
    )
    if not taken:
        return None
    order = Order.objects.get(pk=order_pk)
    mine = Order.objects.filter(pk=order_pk, customer_mail_due_at=leased)
    if order.status not in {Status.COMPLETED, Status.FAILED}:
        # Retried by an operator since: the failure was not final.
        mine.update(customer_mail_due_at=None)
        return None
    try:
        order_outcome_mail(order=order).send()
    except Exception as error:  # noqa: BLE001 - recorded and tried again, never lost
        record_failure(
            task=CUSTOMER_MAIL_TASK, args=[order.order_id], error=error, order=order
        )
        mine.update(customer_mail_due_at=_next_try(order.customer_mail_attempts))
        return False
    mine.update(customer_mail_due_at=None, customer_mailed_at=timezone.now())
    logger.info("mailed %s about order %s", order.customer_email, order.order_id)
    return True


def _next_try(attempts: int) -> datetime | None:
    if attempts >= CUSTOMER_MAIL_MAX_ATTEMPTS:
        return None
    delay = backoff_delay(
        attempts,
        base=RETRY_BASE_SECONDS,
        multiplier=RETRY_MULTIPLIER,
        max_delay=RETRY_MAX_SECONDS,
    )
    return timezone.now() + timedelta(seconds=delay)


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
