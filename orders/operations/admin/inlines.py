"""What an order's page shows of the rows that hang off it."""

from django.contrib import admin

from orders.models import Delivery, FailureRecord, OrderEvent, OrderLine
from orders.operations.admin.base import ViewOnlyInline
from orders.operations.admin.display import group_link, record_link


class OrderLineInline(ViewOnlyInline, admin.TabularInline):
    model = OrderLine
    readonly_fields = ["sku", "quantity", "unit_price"]


class OrderEventInline(ViewOnlyInline, admin.TabularInline):
    """The order's timeline: every attempt, its outcome and how long it took."""

    model = OrderEvent
    fields = ["at", "type", "status", "attempt", "detail", "duration_ms"]
    readonly_fields = fields
    ordering = ["id"]
    verbose_name_plural = "Timeline"


class DeliveryInline(ViewOnlyInline, admin.StackedInline):
    model = Delivery
    fields = ["code", "created_at", "completed_at"]
    readonly_fields = fields


class FailureRecordInline(ViewOnlyInline, admin.TabularInline):
    model = FailureRecord
    fields = [
        "record",
        "occurred_at",
        "task",
        "exception_type",
        "message",
        "failure_group",
        "resolved",
    ]
    readonly_fields = fields
    verbose_name_plural = "Failures recorded for this order"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("group")

    @admin.display(description="record")
    def record(self, obj):
        return record_link(obj)

    @admin.display(description="group")
    def failure_group(self, obj):
        """Its group: how often this has happened, to which other orders."""
        return group_link(obj.group)
