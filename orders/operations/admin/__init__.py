"""The operators' console, one module per kind of record. Nothing here writes a
field by hand: every change goes through an action that calls a service, and
no record is added or deleted from the console (base.ViewOnlyRecordAdmin), but
for the failed-login rows that lift a lockout (login_attempts).

Imported by OrdersConfig.ready, so its modules register their admins."""

from orders.operations.admin import (  # noqa: F401
    deliveries,
    failures,
    login_attempts,
    orders,
    webhooks,
)
