"""The django-q2 internals this project replaces or wraps, in one room, each
written against django-q2 WRITTEN_FOR (tests/test_djangoq_version.py fails on
any other version, so an upgrade starts by reading these against the new code):

- `sentinel.Sentinel` subclasses django_q.cluster.Sentinel: its queues
  (`new_queues`, for the two built in `Sentinel.__init__`), `spawn_pusher`,
  `spawn_worker` and `reincarnate`; `sentinel.Cluster` wraps
  django_q.cluster.Cluster.start so that it forks this sentinel.
- `sentinel.TakenAlongFilter`, the pusher filter, wraps the task queue that
  django_q.pusher.pusher puts each task into.
- `queues.ClusterQueue` subclasses django_q.queues.Queue (its `get` stands in
  for multiprocessing's); `queues.RobustLock` and `queues.robust_value` stand in
  for the multiprocessing locks and Values of that queue, its SharedCounter and
  the worker timer of django_q.cluster.Sentinel.spawn_worker.
- `taken_along`, the shared-memory table, replaces nothing: the pusher filter
  consults it, and `task_was_taken_along` reads the task dict that
  django_q.pusher.pusher builds.
- `manage.py qcluster` (orders/management/commands/qcluster.py) subclasses
  django_q's qcluster command and replaces its `handle`.

Why flock locks in place of django-q2's, and the taken-along table: docs/decisions/.
"""

WRITTEN_FOR = "1.11.1"
