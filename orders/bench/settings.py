"""orderproj's settings with the bench's URLconf, which adds the placing
baseline (orders/bench/urls.py) so that the product never routes or imports it.

`manage.py bench` starts its service with DJANGO_SETTINGS_MODULE set to this
module; a service started by hand with it
(`DJANGO_SETTINGS_MODULE=orders.bench.settings manage.py serve`) gives
`bench --url` the baseline too.
"""

from orderproj.settings import *  # noqa: F403

ROOT_URLCONF = "orders.bench.urls"
