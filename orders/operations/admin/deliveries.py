from django.contrib import admin

from orders.models import Delivery
from orders.operations.admin.base import ViewOnlyRecordAdmin, count
from orders.operations.admin.display import order_link
from orders.services.deliveries import delivery_complete


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

    @admin.display(description="order", ordering="order__order_id")
    def order_link(self, obj):
        return order_link(obj.order)

    @admin.action(description="Complete selected deliveries", permissions=["change"])
    def complete_deliveries(self, request, queryset):
        completed = 0
        for delivery in queryset:
            _, completed_now = delivery_complete(code=delivery.code)
            if completed_now:
                completed += 1
                self.log_change(request, delivery, "Completed from the admin.")
        self.message_user(
            request,
            f"{count(completed, 'delivery', 'deliveries')} completed; the others "
            "were complete already.",
        )
