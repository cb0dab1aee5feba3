"""The orders in the console: the list with its filters and bulk actions, and
an order's page with the buttons that apply to it now. Nothing is edited by
hand: every change is an action or a button that calls a service."""

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from orders import exceptions, selectors
from orders.exceptions import InvalidTransition
from orders.models import FailureRecord, Order
from orders.operations.admin.base import ViewOnlyRecordAdmin, count, report_retries
from orders.operations.admin.inlines import (
    DeliveryInline,
    FailureRecordInline,
    OrderEventInline,
    OrderLineInline,
)
from orders.operations.admin.webhooks import WebhookAttemptInline
from orders.permissions import CHANGE_DELIVERY, CHANGE_FAILURE_RECORD, CHANGE_ORDER
from orders.services import orders as services
from orders.services.deliveries import delivery_complete
from orders.services.failure_actions import failure_rerun, failure_rerun_refusal
from orders.workers import dispatcher


class FailuresFilter(admin.SimpleListFilter):
    """Orders by their FailureRecords: the ones an operator still has to look at."""

    title = "failures"
    parameter_name = "failures"

    def lookups(self, request, model_admin):
        return [
            ("any", "Has failures"),
            ("unresolved", "Has unresolved failures"),
            ("none", "No failures"),
        ]

    def queryset(self, request, queryset):
        records = FailureRecord.objects.filter(order=OuterRef("pk"))
        if self.value() == "any":
            return queryset.filter(Exists(records))
        if self.value() == "unresolved":
            return queryset.filter(Exists(records.filter(resolved=False)))
        if self.value() == "none":
            return queryset.filter(~Exists(records))
        return queryset


class OrderActionRefused(Exception):
    """An order page's button whose action no longer applies (the order moved on
    since the page was shown): answered with `http_status` and the reason, and
    nothing is changed. (`http_status`, as OrderInputError names it: the answer's
    code, never an order's status.)"""

    def __init__(self, message: str, http_status: int = 409):
        self.http_status = http_status
        super().__init__(message)


@admin.register(Order)
class OrderAdmin(ViewOnlyRecordAdmin):
    list_display = [
        "order_id",
        "status",
        "customer_email",
        "amount",
        "attempts",
        "created_at",
        "updated_at",
        "delivered_at",
    ]
    list_filter = ["status", "created_at", FailuresFilter]
    search_fields = ["order_id", "customer_email", "lines__sku"]
    date_hierarchy = "created_at"
    inlines = [
        OrderLineInline,
        OrderEventInline,
        DeliveryInline,
        FailureRecordInline,
        WebhookAttemptInline,
    ]
    actions = ["retry_failed_orders", "reap_stuck_orders"]
    change_form_template = "admin/orders/order/change_form.html"
    # Nothing is edited by hand (see ViewOnlyRecordAdmin): status moves only
    # through the state machine, and the page's buttons call services.
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "order_id",
                    "status",
                    "customer_email",
                    "amount",
                    "currency",
                    "failure_reason",
                    "delivered_at",
                    "created_at",
                    "updated_at",
                ]
            },
        ),
        ("Steps", {"fields": ["step_table"]}),
        (
            # What the customer is told and in which language: their words
            # are made from the failure's step and cause (orders/customer_texts.py).
            "Customer",
            {
                "fields": [
                    "language",
                    "failure_step",
                    "failure_cause",
                    "customer_mailed_at",
                    "customer_mail_due_at",
                    "customer_mail_attempts",
                ]
            },
        ),
        (
            "Processing",
            {
                "fields": [
                    "version",
                    "attempts",
                    "max_attempts",
                    "next_attempt_at",
                    "lease_expires_at",
                    "dispatch_due_at",
                    "queued_at",
                    "simulate",
                    "idempotency_key",
                    "request_fingerprint",
                ]
            },
        ),
    ]
    readonly_fields = [field for _, options in fieldsets for field in options["fields"]]

    class Media:
        css = {"all": ["orders/admin.css"]}

    @admin.display(description="steps")
    def step_table(self, order):
        return render_to_string(
            "admin/orders/order/steps.html",
            {"steps": selectors.order_steps_document(order)},
        )

    # The order page's buttons -----------------------------------------------------
    def get_urls(self):
        def order_action(view, route, name):
            return path(
                f"<path:object_id>/{route}",
                self.admin_site.admin_view(require_POST(view)),
                name=f"orders_order_{name}",
            )

        # Ahead of the admin's own, whose "<path:object_id>/" would take them.
        return [
            order_action(self.retry_view, "retry/", "retry"),
            order_action(
                self.complete_delivery_view,
                "complete-delivery/",
                "complete_delivery",
            ),
            order_action(
                self.rerun_failure_view,
                "failures/<int:failure_id>/rerun/",
                "rerun_failure",
            ),
        ] + super().get_urls()

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        if obj is not None:
            context["order_actions"] = self.order_actions(request, obj)
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)

    def order_actions(self, request, order: Order) -> list[dict]:
        """The buttons that apply to this order now, each for a user holding the
        permission that the same change asks for elsewhere (a retry the order's,
        completing the delivery the delivery's, a re-run the failure's)."""
        may = request.user.has_perm

        def url(name, *args):
            return reverse(
                f"admin:orders_order_{name}",
                args=[order.pk, *args],
                current_app=self.admin_site.name,
            )

        actions = []
        if order.status == Order.Status.FAILED and may(CHANGE_ORDER):
            actions.append(
                {
                    "name": "retry",
                    "label": "Retry this order",
                    "help": "Back to PENDING with its attempts reset.",
                    "url": url("retry"),
                }
            )
        delivery = getattr(order, "delivery", None)
        if delivery is not None and not delivery.is_completed and may(CHANGE_DELIVERY):
            actions.append(
                {
                    "name": "complete-delivery",
                    "label": "Complete the delivery",
                    "help": f"Marks {delivery.code} delivered and runs the "
                    "delivery listener.",
                    "url": url("complete_delivery"),
                }
            )
        open_failures = order.failures.filter(resolved=False).order_by("id")
        if not may(CHANGE_FAILURE_RECORD):
            open_failures = open_failures.none()
        for failure in open_failures:
            if failure_rerun_refusal(failure) is None:
                actions.append(
                    {
                        "name": "rerun",
                        "label": f"Re-run {failure.task.rsplit('.', 1)[-1]} "
                        f"(failure #{failure.pk})",
                        "help": f"{failure.exception_type}: {failure.message}",
                        "url": url("rerun_failure", failure.pk),
                    }
                )
        return actions

    def retry_view(self, request, object_id):
        def retry(order):
            try:
                services.order_retry(order=order)
            except InvalidTransition as refused:
                raise OrderActionRefused(
                    f"{order.order_id} is {order.status}, not FAILED: there is "
                    "nothing to retry."
                ) from refused
            return f"Retried {order.order_id}: back to PENDING, attempts reset."

        return self.run_order_action(request, object_id, retry, CHANGE_ORDER)

    def complete_delivery_view(self, request, object_id):
        def complete(order):
            delivery = getattr(order, "delivery", None)
            if delivery is None:
                raise OrderActionRefused(
                    f"{order.order_id} has no delivery to complete (it is "
                    f"{order.status})."
                )
            _, completed_now = delivery_complete(code=delivery.code)
            if not completed_now:
                raise OrderActionRefused(
                    f"The delivery {delivery.code} was completed already; "
                    "nothing changed."
                )
            return (
                f"Completed the delivery {delivery.code}; the delivery listener "
                "marks the order delivered."
            )

        return self.run_order_action(request, object_id, complete, CHANGE_DELIVERY)

    def rerun_failure_view(self, request, object_id, failure_id):
        def rerun(order):
            failure = order.failures.filter(pk=failure_id).first()
            if failure is None:
                raise OrderActionRefused(
                    f"{order.order_id} has no failure #{failure_id}.", http_status=404
                )
            if failure.resolved:
                raise OrderActionRefused(
                    f"Failure #{failure.pk} was resolved; nothing was re-run."
                )
            try:
                failure_rerun(failure=failure)
            except exceptions.FailureNotRerunnable as refused:
                raise OrderActionRefused(str(refused)) from refused
            return (
                f"Re-ran {failure.task} from failure #{failure.pk}; the record "
                "stays until marked resolved."
            )

        return self.run_order_action(request, object_id, rerun, CHANGE_FAILURE_RECORD)

    def run_order_action(self, request, object_id, act, permission: str):
        """One button's POST: the change permission of what it changes, the order
        as it is now, the service (through `act`, which returns what to tell
        the operator), a LogEntry, and back to the order's page; or the reason
        nothing was done."""
        if not request.user.has_perm(permission):
            raise PermissionDenied
        order = self.get_object(request, unquote(object_id))
        try:
            if order is None:
                raise OrderActionRefused(
                    f"No order with id {object_id}.", http_status=404
                )
            done = act(order)
        except OrderActionRefused as refused:
            return TemplateResponse(
                request,
                "admin/orders/order/action_refused.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Nothing was done",
                    "opts": self.opts,
                    "order": order,
                    "reason": str(refused),
                },
                status=refused.http_status,
            )
        self.log_change(request, order, done)
        self.message_user(request, done, messages.SUCCESS)
        return redirect(
            reverse(
                "admin:orders_order_change",
                args=[order.pk],
                current_app=self.admin_site.name,
            )
        )

    @admin.action(description="Retry selected failed orders", permissions=["change"])
    def retry_failed_orders(self, request, queryset):
        retried, skipped = 0, []
        for order in queryset:
            try:
                services.order_retry(order=order)
            except InvalidTransition:
                skipped.append(f"{order.order_id} ({order.status})")
                continue
            retried += 1
            self.log_change(request, order, "Retried from the admin.")
        report_retries(self, request, retried, skipped, "sent back to PENDING")

    @admin.action(
        description="Reap stuck orders (all of them, not only the selected)",
        permissions=["change"],
    )
    def reap_stuck_orders(self, request, queryset):
        result = dispatcher.sweep()
        self.message_user(
            request,
            f"Sweep done: {count(len(result.dispatched), 'order')} handed to the "
            f"queue again, {count(len(result.expired), 'expired lease')} counted "
            "as failed attempts.",
        )

    def changelist_view(self, request, extra_context=None):
        # Reaping acts on every order, so it must not need a selection.
        wants_reap = (
            request.method == "POST"
            and request.POST.get("action") == "reap_stuck_orders"
            and not request.POST.getlist(ACTION_CHECKBOX_NAME)
        )
        if wants_reap and self.has_change_permission(request):
            post = request.POST.copy()
            post.setlist(ACTION_CHECKBOX_NAME, [""])
            post["select_across"] = "1"
            request.POST = post
        return super().changelist_view(request, extra_context)
