"""Server-Sent Events (orders/live/): how the web processes read and send
order events, and how the workers wake them (the channels layer)."""

from orderproj.settings.environment import env
from orderproj.settings.queue import Q_CLUSTER_NAME, REDIS_URL

# Each web process polls the event table this often while any client is
# connected; one poll serves every client.
ORDER_STREAM_POLL_SECONDS = env.float(
    "ORDER_STREAM_POLL_SECONDS", default=0.2, minimum=0.01
)
# On SQLite (the embedded default) each web process also looks at the
# database's -wal file this often while a stream is open, and reads at once when
# another process (a worker) has committed: a stat(), not a query.
ORDER_STREAM_WAL_CHECK_SECONDS = env.float(
    "ORDER_STREAM_WAL_CHECK_SECONDS", default=0.005, minimum=0.001
)
# With REDIS_URL the writers' messages wake the pump at once
# (orders/state/notify.py); it still polls this often in case one is lost, and
# every ORDER_STREAM_POLL_SECONDS while Redis cannot be reached.
ORDER_STREAM_PUSH_FALLBACK_SECONDS = env.float(
    "ORDER_STREAM_PUSH_FALLBACK_SECONDS", default=5.0, minimum=0.01
)
# A comment line at least this often keeps proxies from closing an idle stream.
ORDER_STREAM_KEEPALIVE_SECONDS = env.float(
    "ORDER_STREAM_KEEPALIVE_SECONDS", default=15.0, minimum=0.1
)
# How long a missing event id holds back later ones before it is taken to be a
# rolled-back transaction's hole (PostgreSQL sequences commit out of order).
ORDER_STREAM_SETTLE_SECONDS = env.float(
    "ORDER_STREAM_SETTLE_SECONDS", default=2.0, minimum=0
)
# The `retry:` a stream sends: how long a browser waits before reconnecting.
ORDER_STREAM_RETRY_MS = env.int("ORDER_STREAM_RETRY_MS", default=2000, minimum=0)
# Opening a stream (authorization and replay) runs on this many threads of the
# web process's own (orders/live/threads.py); the pump reads on one more.
ORDER_STREAM_OPEN_THREADS = env.int("ORDER_STREAM_OPEN_THREADS", default=2, minimum=1)
# An opening is refused at once with a 503 and Retry-After, rather than waiting
# behind others, when the last one to start had waited longer than this for a
# thread (the database is slow, or a burst is more than it serves soon), or when
# ORDER_STREAM_OPEN_BACKLOG are waiting already.
ORDER_STREAM_OPEN_MAX_WAIT_SECONDS = env.float(
    "ORDER_STREAM_OPEN_MAX_WAIT_SECONDS", default=2.0, minimum=0
)
ORDER_STREAM_OPEN_BACKLOG = env.int(
    "ORDER_STREAM_OPEN_BACKLOG", default=5000, minimum=1
)
# A stream whose client does not take what it is sent (its connection's send
# buffer, 64 KiB in daphne, full) writes nothing more; once this much waits for
# it, it is cut off and its client resumes from its last id when it reads again.
ORDER_STREAM_MAX_UNSENT_BYTES = env.int(
    "ORDER_STREAM_MAX_UNSENT_BYTES", default=1024 * 1024, minimum=1024
)
# How many streams one client address (worked out with TRUSTED_PROXY_HOPS) may
# hold open in a web process; more are answered 429. 0: no cap.
ORDER_STREAMS_PER_CLIENT = env.int("ORDER_STREAMS_PER_CLIENT", default=20, minimum=0)
# How many streams a web process holds open; more are answered 503. Unset: what
# its file-descriptor limit leaves after a reserve (orders/live/caps.py). 0: no cap.
ORDER_STREAMS_PER_PROCESS = env.int(
    "ORDER_STREAMS_PER_PROCESS", default=None, minimum=0
)
# Events older than this are deleted (hourly, by the dispatcher); 0 keeps them all.
ORDER_EVENT_RETENTION_DAYS = env.float(
    "ORDER_EVENT_RETENTION_DAYS", default=7.0, minimum=0
)

CHANNEL_LAYERS = (
    {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, which
                # cuts channels_redis's 5 s blocking receive on a healthy Redis
                # (django/channels_redis#422): reads get longer than that.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 10,
                        "socket_connect_timeout": 2,
                    }
                ],
                # Each web process renews its membership of the events group
                # every minute (orders/live/wakers.py): one that died
                # leaves it soon.
                "group_expiry": 300,
                # One deployment's writers wake its own web processes only,
                # as Q_CLUSTER_NAME gives it its own queue.
                "prefix": f"asgi:{Q_CLUSTER_NAME}",
            },
        }
    }
    if REDIS_URL
    else {}
)
