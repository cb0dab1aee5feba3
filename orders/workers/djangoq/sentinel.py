"""The cluster watch: django-q2's sentinel, told what a dead process leaves behind.

The sentinel already notices every dead child within a guard cycle and starts a
replacement. With the queues of orders/workers/djangoq/queues.py no dead process
holds a lock, so a replacement is all a death needs, except one: a process that
died in the middle of a message left the queue's byte stream unreadable. Only
then, and only on that evidence (the queue's own record names the dead process),
does this sentinel SIGKILL the cluster's processes and start them again on new
queues; orders they held come back through their leases and the dispatcher.

Stands in for django_q 1.11.1's `cluster.Sentinel` (a subclass: its queues,
`spawn_pusher`, `spawn_worker` and `reincarnate`) and `cluster.Cluster.start`
(which forks this sentinel instead of django-q2's).
"""

import logging

from django_q import cluster as django_q_cluster
from django_q.conf import Conf
from django_q.pusher import pusher
from django_q.worker import worker

from orders.workers.djangoq import taken_along as takenalong
from orders.workers.djangoq.queues import ClusterQueue, robust_value

logger = logging.getLogger(__name__)

RESTART_MESSAGE = "restarting every process of the cluster on new queues"
DROPPED_MESSAGE = "a batch took the order along while its row held this task's stamp"
# How long a worker that django-q2 terminated for overrunning its timeout gets
# to die before its queues are checked.
TERMINATED_WORKER_WAIT_SECONDS = 5


def new_queues() -> tuple[ClusterQueue, ClusterQueue]:
    """The task queue (pusher -> workers) and the result queue (workers ->
    monitor), bounded as django-q2 bounds them.

    Stands in for the two `Queue`s built in django_q.cluster.Sentinel.__init__."""
    return (
        ClusterQueue(maxsize=Conf.QUEUE_LIMIT or 0, name="task"),
        ClusterQueue(name="result"),
    )


class Sentinel(django_q_cluster.Sentinel):
    """django_q.cluster.Sentinel on ClusterQueues, with the taken-along table
    installed before the fork and a restart when a queue's stream broke."""

    def __init__(
        self, stop_event, start_event, cluster_id, broker=None, timeout=None, start=True
    ):
        super().__init__(
            stop_event, start_event, cluster_id, broker, timeout, start=False
        )
        self.task_queue, self.result_queue = new_queues()
        # Before any worker is forked: they all share it
        # (orders/workers/djangoq/taken_along.py).
        takenalong.install(takenalong.TakenAlong())
        if start:
            self.start()

    def spawn_pusher(self):
        # Stands in for django_q.cluster.Sentinel.spawn_pusher. The pusher
        # drops the tasks a batch left with nothing to do before they cost a
        # worker and the monitor their run (orders/workers/djangoq/taken_along.py).
        return self.spawn_process(
            pusher,
            TakenAlongFilter(self.task_queue, self.broker),
            self.event_out,
            self.broker,
        )

    def spawn_worker(self):
        # Stands in for django_q.cluster.Sentinel.spawn_worker. The guard takes
        # each worker's timer lock every cycle: a plain one held by a dead
        # worker would stop the guard for good.
        self.spawn_process(
            worker,
            self.task_queue,
            self.result_queue,
            robust_value("f", -1),
            self.timeout,
        )

    def reincarnate(self, process):
        # Wraps django_q.cluster.Sentinel.reincarnate.
        if (
            process not in self.pool
            and process is not self.monitor
            and process is not self.pusher
        ):
            return  # of the generation a restart has replaced
        timed_out = process.is_alive()
        if not timed_out and self.restart_if_broken(process):
            return
        super().reincarnate(process)
        if timed_out:
            # django-q2 has just sent it SIGTERM; it may die mid-message too.
            process.join(TERMINATED_WORKER_WAIT_SECONDS)
            if not process.is_alive():
                self.restart_if_broken(process)

    def restart_if_broken(self, dead) -> bool:
        for queue in (self.task_queue, self.result_queue):
            if queue.died_mid_transfer(dead.pid):
                logger.error(
                    "process %d died in the middle of a message on the %s queue, "
                    "which may now be misread: %s",
                    dead.pid,
                    queue.name,
                    RESTART_MESSAGE,
                )
                self.restart()
                return True
        return False

    def restart(self) -> None:
        """Every process of the cluster anew, on new queues (django-q2 has no
        counterpart: it only ever replaces one process)."""
        processes = [*self.pool, self.monitor, self.pusher]
        for process in processes:
            process.kill()
        for process in processes:
            process.join()
        self.task_queue, self.result_queue = new_queues()
        self.reincarnations += 1
        self.spawn_cluster()


class TakenAlongFilter:
    """The task queue as django-q2's pusher sees it: a task whose order a batch
    of this cluster took along while the order's row held the task's stamp is
    acknowledged to the broker instead of being handed to a worker. It would
    only have found its order claimed (orders/workers/djangoq/taken_along.py).

    Wraps the task queue that django_q.pusher.pusher puts each task into."""

    def __init__(self, task_queue: ClusterQueue, broker):
        self.task_queue = task_queue
        self.broker = broker

    def put(self, task: dict, *args, **kwargs) -> None:
        if takenalong.task_was_taken_along(task):
            logger.info(
                "dropped task %s of order %s: %s",
                task.get("id"),
                task["args"][0],
                DROPPED_MESSAGE,
            )
            self.broker.acknowledge(task["ack_id"])
            return
        self.task_queue.put(task, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.task_queue, name)


class Cluster(django_q_cluster.Cluster):
    def start(self) -> int:
        # Wraps django_q.cluster.Cluster.start, which forks `Sentinel`, looked
        # up in django_q.cluster at that moment, and has no parameter for it;
        # swapping the module global for the call is the alternative to
        # copying its 40 lines.
        original = django_q_cluster.Sentinel
        django_q_cluster.Sentinel = Sentinel
        try:
            return super().start()
        finally:
            django_q_cluster.Sentinel = original
