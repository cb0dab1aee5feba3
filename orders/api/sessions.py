"""The session engine: Django's database sessions, refusing a key Django never
issues before it reaches a query.

Django checks only a key's length. PostgreSQL refuses a NUL in text, so a
session cookie carrying one (a quoted cookie value may spell it as \\000) made
every page that reads the session answer 500. Django's keys are 32 lowercase
letters and digits; anything else (a NUL, non-ASCII, longer than the column)
is no session, as an unknown key is.
"""

from django.contrib.sessions.backends import db


class SessionStore(db.SessionStore):
    def _validate_session_key(self, key):
        column = self.get_model_class()._meta.get_field("session_key")
        return (
            super()._validate_session_key(key)
            and len(key) <= column.max_length
            and key.isascii()
            and key.isalnum()
        )
