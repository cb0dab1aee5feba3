"""Failures in the console: the groups (failures of one kind together) and the
records in them. Resolving closes them (a resolved record is deleted after the
retention, failures_trim; a group is kept for good), and the list actions retry
the orders or re-run the tasks through services."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from orders import exceptions, selectors
from orders.exceptions import InvalidTransition
from orders.models import FailureGroup, FailureRecord
from orders.operations.admin.base import (
    RetriesOrders,
    ViewOnlyRecordAdmin,
    count,
    report_reruns,
    report_retries,
)
from orders.operations.admin.display import (
    compact_time,
    group_link,
    last_name,
    order_link,
    record_link,
    short_order_link,
    shorten,
    sparkline,
    traceback_block,
)
from orders.services.failure_actions import (
    failure_group_rerun,
    failure_group_resolve,
    failure_group_retry_orders,
    failure_rerun,
    failure_resolve,
    failure_retry_order,
)

FAILURES_CSS = {"all": ["orders/admin-failures.css"]}


class FailureColumns:
    """What the groups' and the records' lists show alike: their style sheet,
    and a task and an exception by their last names."""

    class Media:
        css = FAILURES_CSS

    @admin.display(description="task", ordering="task")
    def short_task(self, obj):
        return last_name(obj.task)

    @admin.display(description="exception", ordering="exception_type")
    def short_exception(self, obj):
        return last_name(obj.exception_type)


@admin.register(FailureGroup)
class FailureGroupAdmin(FailureColumns, RetriesOrders, ViewOnlyRecordAdmin):
    """Failures of one kind together (orders/services/fingerprints.py), most recently
    seen first. Resolving a group resolves its open records; it reopens, and
    mails, if it fails again."""

    list_display = [
        "short_task",
        "short_exception",
        "count",
        "last_24_hours",
        "seen",
        "state",
    ]
    list_display_links = ["short_task"]
    list_filter = ["resolved", "task", "exception_type"]
    search_fields = ["records__order__order_id"]
    search_help_text = "Search by order id (ord_…)."
    date_hierarchy = "last_seen"
    actions = ["resolve_groups", "retry_failed_orders", "rerun_tasks"]
    fields = [
        "state",
        "task",
        "exception_type",
        "location",
        "count",
        "first_seen",
        "last_seen",
        "last_24_hours",
        "latest_record_link",
        "all_records",
        "orders_touched",
        "resolved_by",
        "resolved_at",
        "reopened_at",
        "reopened_times",
        "mailed_at",
        "mailed_count",
        "fingerprint",
        "latest_traceback",
    ]
    readonly_fields = fields
    list_per_page = 50

    @admin.display(description="last seen", ordering="last_seen")
    def seen(self, obj):
        return compact_time(obj.last_seen, title=f"group #{obj.pk}")

    @admin.display(description="last 24 h")
    def last_24_hours(self, obj):
        return sparkline(selectors.failure_group_hourly_counts(group=obj))

    @admin.display(description="state", ordering="resolved")
    def state(self, obj):
        if obj.resolved:
            return "resolved"
        if obj.is_regression:
            return format_html(
                '<strong class="failure-regression">regression</strong> (reopened {}×)',
                obj.reopened_times,
            )
        return "open"

    @admin.display(description="latest record")
    def latest_record_link(self, obj):
        return record_link(obj.latest_record)

    @admin.display(description="records")
    def all_records(self, obj):
        url = reverse("admin:orders_failurerecord_changelist")
        return format_html(
            '<a href="{}?group__id__exact={}">its records</a> ({} failures in all)',
            url,
            obj.pk,
            obj.count,
        )

    @admin.display(description="orders it touched")
    def orders_touched(self, obj):
        orders = selectors.failure_group_orders(group=obj)
        shown = list(orders[: self.ORDERS_SHOWN])
        if not shown:
            return "-"
        links = format_html_join(", ", "{}", ((order_link(order),) for order in shown))
        total = orders.count()
        if total > len(shown):
            return format_html("{} … and {} more", links, total - len(shown))
        return links

    ORDERS_SHOWN = 20

    @admin.display(description="latest traceback")
    def latest_traceback(self, obj):
        if obj.latest_record is None:
            return "-"
        return traceback_block(obj.latest_record.traceback)

    @admin.action(description="Resolve the selected groups", permissions=["change"])
    def resolve_groups(self, request, queryset):
        resolved = 0
        for group in queryset:
            if failure_group_resolve(group=group, user=request.user):
                resolved += 1
                self.log_change(request, group, "Resolved, with its open records.")
        self.message_user(
            request,
            f"{count(resolved, 'group')} resolved, with their open records.",
        )

    @admin.action(
        description="Retry every FAILED order of the selected groups",
        permissions=["retry_orders"],
    )
    def retry_failed_orders(self, request, queryset):
        retried, skipped = 0, []
        for group in queryset:
            done, passed = failure_group_retry_orders(group=group)
            retried += len(done)
            skipped += [f"{order.order_id} ({order.status})" for order in passed]
            if done:
                self.log_change(
                    request, group, f"Retried {count(len(done), 'FAILED order')}."
                )
        report_retries(self, request, retried, skipped, "sent back to PENDING")

    @admin.action(
        description="Re-run every failed task of the selected groups",
        permissions=["change"],
    )
    def rerun_tasks(self, request, queryset):
        rerun, refused = 0, []
        for group in queryset:
            try:
                handed = failure_group_rerun(group=group)
            except exceptions.FailureNotRerunnable as exc:
                refused.append(f"Group #{group.pk}: {exc}")
                continue
            rerun += handed
            self.log_change(request, group, f"Re-ran {count(handed, 'task')}.")
        report_reruns(
            self, request, rerun, refused, "the groups stay open until resolved"
        )


@admin.register(FailureRecord)
class FailureRecordAdmin(FailureColumns, RetriesOrders, ViewOnlyRecordAdmin):
    # Short columns, the whole text in tooltips: the list fits a 1280 px screen
    # beside the admin's menu and filters without hiding exception or message.
    list_display = [
        "when",
        "short_task",
        "short_exception",
        "short_message",
        "short_order",
        "group_link",
        "resolved",
    ]
    list_display_links = ["when"]
    list_filter = ["resolved", "task", "exception_type"]
    search_fields = ["message", "order__order_id", "task", "exception_type"]
    date_hierarchy = "occurred_at"
    list_select_related = ["order", "group"]
    actions = ["mark_resolved", "retry_related_orders", "rerun_tasks"]
    fields = [
        "occurred_at",
        "group_link",
        "task",
        "args",
        "kwargs",
        "order_link",
        "exception_type",
        "message",
        "formatted_traceback",
        "resolved",
        "resolved_by",
        "resolved_at",
    ]
    readonly_fields = fields

    @admin.display(description="when", ordering="occurred_at")
    def when(self, obj):
        return compact_time(obj.occurred_at, title=f"#{obj.pk}")

    @admin.display(description="message")
    def short_message(self, obj):
        return shorten(obj.message, 60)

    @admin.display(description="order", ordering="order__order_id")
    def order_link(self, obj):
        return order_link(obj.order)

    @admin.display(description="order", ordering="order__order_id")
    def short_order(self, obj):
        return short_order_link(obj.order)

    @admin.display(description="group", ordering="group")
    def group_link(self, obj):
        return group_link(obj.group)

    @admin.display(description="traceback")
    def formatted_traceback(self, obj):
        return traceback_block(obj.traceback)

    @admin.action(description="Mark resolved", permissions=["change"])
    def mark_resolved(self, request, queryset):
        resolved = 0
        for failure in queryset:
            if failure_resolve(failure=failure, user=request.user):
                resolved += 1
                self.log_change(request, failure, "Marked resolved.")
        self.message_user(
            request,
            f"{count(resolved, 'failure')} marked resolved (a group whose last "
            "open record this was is resolved with it).",
        )

    @admin.action(description="Retry the related orders", permissions=["retry_orders"])
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
                failure_retry_order(failure=failure)
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
                failure_rerun(failure=failure)
            except exceptions.FailureNotRerunnable as exc:
                refused.append(str(exc))
                continue
            rerun += 1
            self.log_change(request, failure, f"Re-ran {failure.task}.")
        report_reruns(
            self, request, rerun, refused, "the records stay until marked resolved"
        )
