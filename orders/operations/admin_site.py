"""The admin site as the operators' console: branded, and its index opens with
the orders per status and the way to the live dashboard."""

from django.contrib import admin
from django.urls import reverse

from orders import selectors
from orders.models import Order
from orders.permissions import VIEW_OPERATIONS


class OperationsAdminSite(admin.AdminSite):
    site_header = "orderproj operations"
    site_title = "orderproj operations"
    index_title = "Operations console"
    index_template = "admin/operations_index.html"

    def index(self, request, extra_context=None):
        # The figures are the dashboard's: shown to whom the dashboard is.
        if not request.user.has_perm(VIEW_OPERATIONS):
            return super().index(request, extra_context)
        # The dashboard's own count (one grouped query), so the two never differ.
        counts = selectors.dashboard_status_counts()
        orders = reverse("admin:orders_order_changelist", current_app=self.name)
        context = {
            "status_counts": [
                {
                    "status": status,
                    "label": Order.Status(status).label,
                    "count": count,
                    "url": f"{orders}?status__exact={status}",
                }
                for status, count in counts.items()
            ],
            "dashboard_url": reverse("dashboard"),
            "unresolved_failures_url": f"{orders}?failures=unresolved",
        }
        return super().index(request, {**context, **(extra_context or {})})
