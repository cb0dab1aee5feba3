import contextlib
import logging
import os
import signal
import threading
import time

from django.conf import settings
from django.db import connections
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from orders.dispatcher import run_dispatcher
from orders.failures import run_failure_mailer
from orders.watchdog import (
    ClusterWatch,
    can_watch,
    descendants_of,
    orders_waiting,
    worker_states,
)

logger = logging.getLogger("orders.watchdog")
WATCH_INTERVAL_SECONDS = 0.5


class Command(QClusterCommand):
    help = (
        "Starts a django-q2 cluster and, in the same process, the order dispatcher "
        "that hands due retries to the queue and takes back orders whose worker "
        "died, and the failure mailer. Stop it with SIGTERM or SIGINT to this "
        "process only."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--no-dispatcher",
            action="store_true",
            help="Run only the workers (another process runs the dispatcher and "
            "the failure mailer).",
        )

    def handle(self, *args, **options):
        if options["run_once"] or options["no_dispatcher"]:
            return super().handle(*args, **options)
        settings.SECRET_KEY  # noqa: B018 - fail early, as django-q2's command does
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        # The sentinel is forked from this process: hand it no open connection.
        connections.close_all()
        cluster = Cluster()
        cluster.start()
        # Started after the fork, so no worker inherits the thread or its locks.
        stop = threading.Event()
        dispatcher = threading.Thread(
            target=self._dispatch, args=(stop,), name="order-dispatcher", daemon=True
        )
        dispatcher.start()
        # The admins' failure mails, apart from the workers and the dispatcher:
        # a mail server that hangs holds up nothing else (orders/failures.py).
        mailer = threading.Thread(
            target=self._mail, args=(stop,), name="failure-mailer", daemon=True
        )
        mailer.start()
        watch = ClusterWatch() if can_watch() else None
        if watch is None:
            logger.warning(
                "cluster watch off: it needs Linux /proc and setproctitle to see "
                "what each worker is doing"
            )
        try:
            # Cluster's SIGTERM/SIGINT handler runs here, on the main thread, and
            # returns once the sentinel has stopped the workers.
            while cluster.sentinel is not None and cluster.sentinel.is_alive():
                time.sleep(WATCH_INTERVAL_SECONDS)
                if watch and self._needs_restart(cluster, watch):
                    cluster = self._restart(cluster)
                    watch = ClusterWatch()
        finally:
            stop.set()
            dispatcher.join(timeout=10)
            mailer.join(timeout=10)

    @staticmethod
    def _needs_restart(cluster: Cluster, watch: ClusterWatch) -> bool:
        if cluster.stop_event is None or cluster.stop_event.is_set():
            return False
        try:
            return watch.observe(
                worker_states(os.getpid()), time.monotonic(), orders_waiting
            )
        except Exception:
            logger.exception("cluster watch failed; trying again")
            return False

    @staticmethod
    def _restart(cluster: Cluster) -> Cluster:
        """Replace a wedged cluster. A graceful stop would wait forever on the
        dead lock, so every process below this one is killed; orders they held
        come back through their leases and the dispatcher."""
        logger.error(
            "an idle worker died holding the task queue's lock and orders are "
            "waiting: restarting the cluster"
        )
        for pid in descendants_of(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cluster.sentinel.join(timeout=10)
        connections.close_all()
        fresh = Cluster()
        fresh.start()
        return fresh

    @staticmethod
    def _dispatch(stop: threading.Event) -> None:
        try:
            run_dispatcher(stop)
        finally:
            connections.close_all()

    @staticmethod
    def _mail(stop: threading.Event) -> None:
        try:
            run_failure_mailer(stop)
        finally:
            connections.close_all()
