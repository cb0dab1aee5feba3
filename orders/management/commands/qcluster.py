"""`manage.py qcluster`: stands in for django_q 1.11.1's qcluster command
(management/commands/qcluster.py, a subclass: `handle` replaced) to start the
cluster of orders/workers/djangoq/sentinel.py and, beside it, the dispatcher, the
relay, the failure mailer and the customer mailer."""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import connections
from django_q import cluster as django_q_cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from orders.operations.mailer import run_failure_mailer
from orders.workers.customer_mailer import run_customer_mailer
from orders.workers.dispatcher import run_dispatcher
from orders.workers.djangoq import queues, sentinel
from orders.workers.relay import run_relay

logger = logging.getLogger(sentinel.__name__)
SENTINEL_CHECK_SECONDS = 0.5


class Command(QClusterCommand):
    help = (
        "Starts a django-q2 cluster whose sentinel recovers from the death of "
        "any of its processes (orders/workers/djangoq/sentinel.py) and, in the "
        "same process, the "
        "order dispatcher that hands due retries to the queue and takes back "
        "orders whose worker died, the relay that sends webhooks and hands "
        "signal receivers to the workers, the failure mailer and the customer "
        "mailer. Stop it with SIGTERM "
        "or SIGINT to this process only."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--no-dispatcher",
            action="store_true",
            help="Run only the workers (another process runs the dispatcher).",
        )

    def handle(self, *args, **options):
        settings.SECRET_KEY  # noqa: B018 - fail early, as django-q2's command does
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        if queues.supported():
            cluster_class = sentinel.Cluster
        else:
            cluster_class = django_q_cluster.Cluster
            logger.warning(
                "cluster watch off: its locks need Linux's /proc/self/fd; a "
                "worker killed while idle can stall this cluster"
            )
        # The sentinel is forked from this process: hand it no open connection.
        connections.close_all()
        cluster = cluster_class()
        cluster.start()
        if options["run_once"]:
            cluster.stop()
            return
        stop = threading.Event()
        dispatcher = relay = None
        if not options["no_dispatcher"]:
            # Started after the fork, so no worker inherits the thread or its locks.
            dispatcher = threading.Thread(
                target=self._dispatch,
                args=(stop,),
                name="order-dispatcher",
                daemon=True,
            )
            dispatcher.start()
            # The timeline's subscribers beyond the browser: webhooks sent on
            # threads of its own, signal receivers handed to the workers.
            relay = threading.Thread(
                target=self._relay, args=(stop,), name="order-relay", daemon=True
            )
            relay.start()
        # The admins' failure mails, apart from the workers and the dispatcher:
        # a mail server that hangs holds up nothing else
        # (orders/operations/mailer.py).
        mailer = threading.Thread(
            target=self._mail, args=(stop,), name="failure-mailer", daemon=True
        )
        mailer.start()
        # The customers' mails about their orders' outcomes, on a thread of
        # their own for the same reason (orders/workers/customer_mailer.py).
        customer_mailer = threading.Thread(
            target=self._mail_customers,
            args=(stop,),
            name="customer-mailer",
            daemon=True,
        )
        customer_mailer.start()
        try:
            # Cluster's SIGTERM/SIGINT handler runs here, on the main thread, and
            # returns once the sentinel has stopped the workers.
            while cluster.sentinel is not None and cluster.sentinel.is_alive():
                time.sleep(SENTINEL_CHECK_SECONDS)
        finally:
            stop.set()
            if dispatcher is not None:
                dispatcher.join(timeout=10)
            if relay is not None:
                relay.join(timeout=settings.WEBHOOK_TIMEOUT_SECONDS + 5)
            mailer.join(timeout=10)
            customer_mailer.join(timeout=10)

    @staticmethod
    def _dispatch(stop: threading.Event) -> None:
        try:
            run_dispatcher(stop)
        finally:
            connections.close_all()

    @staticmethod
    def _relay(stop: threading.Event) -> None:
        try:
            run_relay(stop)
        finally:
            connections.close_all()

    @staticmethod
    def _mail_customers(stop: threading.Event) -> None:
        try:
            run_customer_mailer(stop)
        finally:
            connections.close_all()

    @staticmethod
    def _mail(stop: threading.Event) -> None:
        try:
            run_failure_mailer(stop)
        finally:
            connections.close_all()
