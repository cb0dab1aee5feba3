"""Server-Sent Events: the per-process event pump, fan-out and Last-Event-ID replay.

Why a plain ASGI endpoint rather than a Django view or a channels consumer
(docs/decisions/0002-streams-outside-the-request-cycle.md): Django's async
StreamingHttpResponse keeps one idle OS thread per open stream and pins the
request's DB connection, and a loop inside channels' AsyncHttpConsumer.handle()
never sees `http.disconnect`. So each stream here is a coroutine with its own
disconnect watcher: a closed client is forgotten at once, and an open one costs a
deque and a future, no thread and no connection.

One module per job:
- `events`: the reads. Every event after a cursor in one query, a replay page,
  and where a pump that starts now can begin.
- `wakers`: when the pump reads. On SQLite (the embedded default) the -wal file
  tells of any process's commit; with Redis, a message through the channels
  layer; a timer besides, and alone on PostgreSQL without Redis.
- `threads`: where the database work runs: a thread for the pump, one for the
  staff streams' session checks, a few for the openings, with a bounded wait
  (beyond it a fast 503), never asgiref's one process-wide thread.
- `flow`: backpressure under daphne: a stream whose client does not read stops
  writing, and is cut off past ORDER_STREAM_MAX_UNSENT_BYTES.
- `pump`: `EventPump`, one per process (per event loop). It waits for a wake-up,
  reads every OrderEvent after its cursor in one query and hands each event to
  the subscribers of its order and the staff subscribers. The cost of a poll
  does not depend on how many browsers are connected.
- `opening`: what a stream checks and sends before it goes live: the
  Last-Event-ID, who may read it (the order exists; a staff session with the
  permission to view operations), and the replay. An order stream authorizes
  and reads its replay in one trip to the database when it opens; the staff
  stream checks its session before it subscribes. After that every event a
  stream sends comes from the pump.
- `recheck`: the staff stream's session, looked at again while it is open.
- `caps`: how many streams a client address and the process may hold open,
  and the process's file-descriptor limit, raised at start-up.
- `asgi`: the transport. The endpoints orderproj/asgi.py routes, the SSE frames
  and each stream's disconnect watcher; `response`: one stream's response, from
  its start to each way it ends.
- `gc_freeze`: short full garbage collections in the web process, by freezing
  what survives them.

Old events are deleted by the workers (orders.services.events.events_trim), not here.

Ids are never skipped: the pump hands out events in contiguous id order only. A
missing id (a transaction that took its id from a PostgreSQL sequence and has not
committed yet) holds back every later event until the row shows up or until it has
been missing for ORDER_STREAM_SETTLE_SECONDS, after which it is taken to be a
rolled-back transaction's hole. On SQLite writes are serialized, so there are no
holes and the window is never waited on.
"""
