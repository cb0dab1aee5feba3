from django.contrib import admin

from .models import Order, OrderEvent, OrderLine


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


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "order_id",
        "status",
        "customer_email",
        "amount",
        "attempts",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status"]
    search_fields = ["order_id", "customer_email"]
    date_hierarchy = "created_at"
    inlines = [OrderLineInline, OrderEventInline]
    # Status moves only through the state machine, never by hand.
    readonly_fields = [
        "order_id",
        "status",
        "version",
        "attempts",
        "max_attempts",
        "next_attempt_at",
        "lease_expires_at",
        "dispatch_due_at",
        "failure_reason",
        "amount",
        "currency",
        "simulate",
        "idempotency_key",
        "request_fingerprint",
        "delivered_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False
