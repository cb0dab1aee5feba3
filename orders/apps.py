from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps
from django.db.models.signals import pre_delete


class OrdersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "orders"
    verbose_name = "Orders"

    def ready(self):
        # Wiring, not logic: any django-q2 task that raises reaches the global
        # failure handler, whether or not the task catches its own errors.
        from django.core.signals import got_request_exception
        from django_q.signals import post_execute, post_execute_in_worker, pre_execute

        from orders import checks  # noqa: F401 (registers the system checks)
        from orders.operations import (
            admin,  # noqa: F401 (registers the console)
            hooks,
        )

        pre_execute.connect(
            hooks.on_task_started, dispatch_uid="orders.operations.hooks.started"
        )
        post_execute_in_worker.connect(
            hooks.on_task_executed, dispatch_uid="orders.operations.hooks.executed"
        )
        post_execute.connect(
            hooks.on_task_saved, dispatch_uid="orders.operations.hooks.saved"
        )
        # And a request that raises: its mail goes through the same limit.
        got_request_exception.connect(
            hooks.on_request_failed, dispatch_uid="orders.operations.hooks.request"
        )
        # Deleting an order deletes its events: GET /metrics keeps what they
        # counted (services.events_tally), in the deleting transaction.
        pre_delete.connect(
            on_order_deleting,
            sender="orders.Order",
            dispatch_uid="orders.operations.metrics.order_deleting",
        )


class OperationsAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the operators' console as its default site, so
    admin.site and @admin.register are that site (in INSTALLED_APPS in place of
    django.contrib.admin)."""

    # Not the config of the `orders` app: that is OrdersConfig.
    default = False
    default_site = "orders.operations.admin_site.OperationsAdminSite"


def on_order_deleting(sender, instance, **kwargs) -> None:
    from orders.services.events import order_deleting

    order_deleting(order=instance)
