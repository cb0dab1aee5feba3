"""The benchmark behind `manage.py bench`: `service` measures the service over real
HTTP (placing, completing, retries), `streams` holds many SSE streams against one
daphne, ours beside django-eventstream's (`eventstream/`, bench only) and a bare
daphne (`floor`), read by the lean client of `sseload`, `plot` draws its sweep,
`pipeline` measures the workers against django-q2's own speed, `environment`
gives each run a throwaway database and queue."""
