"""The customer mailer: a thread of each qcluster that sends the customers'
mails as they fall due (orders/services/customer_mail.py). A thread of its own,
like the failure mailer: a mail server that hangs (SMTP waits up to
EMAIL_TIMEOUT) delays only other customers' mails, never a worker, an order or
the admins' mails."""

import logging
import threading

from django.db import close_old_connections

from orders.services.customer_mail import customer_mails_send_due

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5


def run_customer_mailer(stop: threading.Event, *, interval: float = POLL_SECONDS):
    """Send due customer mails every `interval` seconds until `stop` is set."""
    logger.info("customer mailer started (every %.1f s)", interval)
    while not stop.is_set():
        try:
            customer_mails_send_due()
        except Exception:
            # The database went away, most likely: the mails stay due.
            logger.exception("sending customer mails failed; trying again")
            close_old_connections()
        stop.wait(interval)
    logger.info("customer mailer stopped")
