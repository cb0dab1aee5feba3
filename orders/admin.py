"""The operators' console. Nothing here writes a field by hand: every change goes
through an action that calls a service, and failure records are never deleted."""

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from django.utils.html import format_html

from . import dispatcher, exceptions, services
from .exceptions import InvalidTransition
from .models import Delivery, FailureRecord, Order, OrderEvent, OrderLine


def order_link(order: Order | None):
    if order is None:
        return "-"
    url = reverse("admin:orders_order_change", args=[order.pk])
    return format_html('<a href="{}">{}</a>', url, order.order_id)


def count(number: int, noun: str, plural: str = "") -> str:
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    can_delete = False
    readonly_fields = ["sku", "quantity", "unit_price"]

    def has_add_permission(self, request, obj=None):
        return False


class OrderEventInline(admin.TabularInline):
    """The order's timeline: every attempt, its outcome and how long it took."""

    model = OrderEvent
    extra = 0
    can_delete = False
    fields = ["at", "type", "status", "attempt", "detail", "duration_ms"]
    readonly_fields = fields
    ordering = ["id"]
    verbose_name_plural = "Timeline"

    def has_add_permission(self, request, obj=None):
        return False


class FailureRecordInline(admin.TabularInline):
    model = FailureRecord
    extra = 0
    can_delete = False
    fields = ["record", "occurred_at", "task", "exception_type", "message", "resolved"]
    readonly_fields = fields
    verbose_name_plural = "Failures recorded for this order"

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="record")
    def record(self, obj):
        url = reverse("admin:orders_failurerecord_change", args=[obj.pk])
        return format_html('<a href="{}">#{}</a>', url, obj.pk)


class DeliveryInline(admin.StackedInline):
    model = Delivery
    extra = 0
    can_delete = False
    fields = ["code", "created_at", "completed_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class ViewOnlyRecordAdmin(admin.ModelAdmin):
    """A record's page shows it and offers no form: every field is read-only and
    posting the page is refused (403) before anything is saved.

    The admin's save writes back every column as that request read it, so a
    change committed in between (a worker's transition, a delivery's completion,
    a failure's mail being sent) would be undone without an event. Changes are
    the list's actions, which call services. The change permission itself stays:
    the actions need it.
    """

    def has_change_permission(self, request, obj=None):
        if obj is not None:
            return False
        return super().has_change_permission(request)


def report_retries(model_admin, request, retried: int, skipped: list, outcome: str):
    model_admin.message_user(request, f"{count(retried, 'order')} {outcome}.")
    if skipped:
        model_admin.message_user(
            request,
            "Only FAILED orders can be retried; skipped: " + ", ".join(skipped),
            messages.WARNING,
        )


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
    list_filter = ["status"]
    search_fields = ["order_id", "customer_email"]
    date_hierarchy = "created_at"
    inlines = [OrderLineInline, OrderEventInline, DeliveryInline, FailureRecordInline]
    actions = ["retry_failed_orders", "reap_stuck_orders"]
    # Shown in this order; nothing is edited by hand (see ViewOnlyRecordAdmin):
    # status moves only through the state machine.
    fields = [
        "order_id",
        "status",
        "customer_email",
        "amount",
        "currency",
        "version",
        "attempts",
        "max_attempts",
        "next_attempt_at",
        "lease_expires_at",
        "dispatch_due_at",
        "queued_at",
        "failure_reason",
        "simulate",
        "idempotency_key",
        "request_fingerprint",
        "delivered_at",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

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


@admin.register(FailureRecord)
class FailureRecordAdmin(ViewOnlyRecordAdmin):
    list_display = [
        "id",
        "occurred_at",
        "task",
        "exception_type",
        "short_message",
        "order_link",
        "notified",
        "resolved",
    ]
    list_filter = ["resolved", "task", "exception_type", "notified"]
    search_fields = ["message", "order__order_id", "task", "exception_type"]
    date_hierarchy = "occurred_at"
    list_select_related = ["order"]
    actions = ["mark_resolved", "retry_related_orders", "rerun_tasks"]
    fields = [
        "occurred_at",
        "task",
        "args",
        "kwargs",
        "order_link",
        "exception_type",
        "message",
        "formatted_traceback",
        "notified",
        "mailed_at",
        "resolved",
        "resolved_by",
        "resolved_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    # The history of what failed is kept; resolving is how a record is closed.
    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="message")
    def short_message(self, obj):
        return obj.message if len(obj.message) <= 80 else obj.message[:79] + "…"

    @admin.display(description="order", ordering="order__order_id")
    def order_link(self, obj):
        return order_link(obj.order)

    @admin.display(description="traceback")
    def formatted_traceback(self, obj):
        return format_html(
            '<pre style="white-space: pre-wrap; font-size: 12px">{}</pre>',
            obj.traceback,
        )

    @admin.action(description="Mark resolved", permissions=["change"])
    def mark_resolved(self, request, queryset):
        resolved = 0
        for failure in queryset:
            if services.failure_resolve(failure=failure, user=request.user):
                resolved += 1
                self.log_change(request, failure, "Marked resolved.")
        self.message_user(request, f"{count(resolved, 'failure')} marked resolved.")

    @admin.action(description="Retry the related orders", permissions=["change"])
    def retry_related_orders(self, request, queryset):
        retried, skipped = set(), []
        for failure in queryset.select_related("order"):
            order = failure.order
            if order is None:
                skipped.append(f"#{failure.pk} (no order)")
                continue
            if order.pk in retried:
                continue
            try:
                services.failure_retry_order(failure=failure)
            except InvalidTransition:
                skipped.append(f"#{failure.pk} ({order.order_id} is {order.status})")
                continue
            retried.add(order.pk)
            self.log_change(
                request, failure, f"Retried order {order.order_id} from this failure."
            )
        report_retries(self, request, len(retried), skipped, "retried")

    @admin.action(
        description="Re-run the failed task (e.g. the delivery listener)",
        permissions=["change"],
    )
    def rerun_tasks(self, request, queryset):
        rerun, refused = 0, []
        for failure in queryset:
            try:
                services.failure_rerun(failure=failure)
            except exceptions.FailureNotRerunnable as exc:
                refused.append(str(exc))
                continue
            rerun += 1
            self.log_change(request, failure, f"Re-ran {failure.task}.")
        self.message_user(
            request,
            f"{count(rerun, 'task')} handed to the queue again; the records stay "
            "until marked resolved.",
        )
        for reason in refused:
            self.message_user(request, reason, messages.WARNING)


@admin.register(Delivery)
class DeliveryAdmin(ViewOnlyRecordAdmin):
    list_display = ["code", "order_link", "created_at", "completed_at"]
    list_filter = [("completed_at", admin.EmptyFieldListFilter)]
    search_fields = ["code", "order__order_id"]
    date_hierarchy = "created_at"
    list_select_related = ["order"]
    fields = ["code", "order_link", "created_at", "completed_at"]
    readonly_fields = fields
    actions = ["complete_deliveries"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="order", ordering="order__order_id")
    def order_link(self, obj):
        return order_link(obj.order)

    @admin.action(description="Complete selected deliveries", permissions=["change"])
    def complete_deliveries(self, request, queryset):
        completed = 0
        for delivery in queryset:
            _, completed_now = services.delivery_complete(code=delivery.code)
            if completed_now:
                completed += 1
                self.log_change(request, delivery, "Completed from the admin.")
        self.message_user(
            request,
            f"{count(completed, 'delivery', 'deliveries')} completed; the others "
            "were complete already.",
        )
