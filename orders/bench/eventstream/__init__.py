"""The comparison server of `manage.py bench streams`: this project with
django-eventstream (requirements-bench.txt, never the app's requirements)
serving the same URLs and the same events, in a daphne of its own on the bench's
database. Set up as django-eventstream documents it: its app in INSTALLED_APPS,
`include(django_eventstream.urls)` with the channels as view keywords, a plain
Django ASGI application under daphne, `send_event()` called inside the web
process (here by the relay, `relay.py`), no Redis or GRIP proxy: one process,
as ours is measured. Without a storage class by default (its default: no replay,
and a listener more than 10 events behind loses events); EVENTSTREAM_STORAGE=1
(`bench streams --servers ...,eventstream-storage`) adds its DjangoModelStorage."""
