"""The benchmark behind `manage.py bench`: `service` measures the service over real
HTTP (placing, completing, retries) beside the minimal view of `views`, which
only the bench's `settings` and `urls` route; `streams` holds many SSE streams
against one daphne, ours beside django-eventstream's (`eventstream/`, bench only)
and a bare daphne (`floor`), started by `streams_servers`, read by the lean
client of `sseload` (its parsing in `sseparse`) and printed by `streams_report`;
`plot` draws its sweep, `pipeline` measures the workers against django-q2's own
speed, `environment` gives each run a throwaway database and queue.

The product never imports this package."""
