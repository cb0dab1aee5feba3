"""The failed logins django-axes counts (orderproj/settings/login.py), in the
console: who is locked out, and the way to lift a lock, deleting the pair's
row. axes' own registrations are off (AXES_ENABLE_ADMIN): its pages of
successful logins and of every failure would stay empty here."""

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin

admin.site.register(AccessAttempt, AccessAttemptAdmin)
