"""The benchmark behind `manage.py bench`: `service` measures the service over real
HTTP (placing, completing, retries, streams), `pipeline` the workers against
django-q2's own speed, `environment` gives each run a throwaway database and
queue."""
