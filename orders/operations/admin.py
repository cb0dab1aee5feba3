"""The operators' console. Nothing here writes a field by hand: every change goes
through an action that calls a service, and failure records are never deleted."""

import re

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from orders import exceptions, selectors
from orders.exceptions import InvalidTransition
from orders.models import (
    Delivery,
    FailureGroup,
    FailureRecord,
    Order,
    OrderEvent,
    OrderLine,
)
from orders.services import orders as services
from orders.services.deliveries import delivery_complete
from orders.services.failure_actions import (
    failure_group_rerun,
    failure_group_resolve,
    failure_group_retry_orders,
    failure_rerun,
    failure_rerun_refusal,
    failure_resolve,
    failure_retry_order,
)
from orders.workers import dispatcher


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

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="record")
    def record(self, obj):
        url = reverse("admin:orders_failurerecord_change", args=[obj.pk])
        return format_html('<a href="{}">#{}</a>', url, obj.pk)

    @admin.display(description="group")
    def failure_group(self, obj):
        """Its group: how often this has happened, to which other orders."""
        return group_link(obj.group)


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


def report_reruns(model_admin, request, rerun: int, refused: list, what_stays: str):
    model_admin.message_user(
        request, f"{count(rerun, 'task')} handed to the queue again; {what_stays}."
    )
    for reason in refused:
        model_admin.message_user(request, reason, messages.WARNING)


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
    inlines = [OrderLineInline, OrderEventInline, DeliveryInline, FailureRecordInline]
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

    def has_add_permission(self, request):
        return False

    # Orders carry money and history: they leave the system by no admin page
    # (README, "Retention").
    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="steps")
    def step_table(self, order):
        rows = format_html_join(
            "",
            '<tr data-step="{}" data-state="{}"><th scope="row">{}</th>'
            '<td class="step-{}">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            (
                (
                    step["name"],
                    step["state"],
                    step["name"],
                    step["state"],
                    step["state"],
                    step["reference"] or "-",
                    step["attempt"] or "-",
                    step["completed_at"] or "-",
                )
                for step in selectors.order_steps_document(order)
            ),
        )
        return format_html(
            '<table class="order-steps" data-role="steps"><thead><tr>'
            '<th scope="col">step</th><th scope="col">state</th>'
            '<th scope="col">reference</th><th scope="col">attempt</th>'
            '<th scope="col">done at</th></tr></thead><tbody>{}</tbody></table>',
            rows,
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
        """The buttons that apply to this order now, for a user who may use them."""
        if not self.has_change_permission(request):
            return []

        def url(name, *args):
            return reverse(
                f"admin:orders_order_{name}",
                args=[order.pk, *args],
                current_app=self.admin_site.name,
            )

        actions = []
        if order.status == Order.Status.FAILED:
            actions.append(
                {
                    "name": "retry",
                    "label": "Retry this order",
                    "help": "Back to PENDING with its attempts reset.",
                    "url": url("retry"),
                }
            )
        delivery = getattr(order, "delivery", None)
        if delivery is not None and not delivery.is_completed:
            actions.append(
                {
                    "name": "complete-delivery",
                    "label": "Complete the delivery",
                    "help": f"Marks {delivery.code} delivered and runs the "
                    "delivery listener.",
                    "url": url("complete_delivery"),
                }
            )
        for failure in order.failures.filter(resolved=False).order_by("id"):
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

        return self.run_order_action(request, object_id, retry)

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

        return self.run_order_action(request, object_id, complete)

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

        return self.run_order_action(request, object_id, rerun)

    def run_order_action(self, request, object_id, act):
        """One button's POST: the change permission, the order as it is now, the
        service (through `act`, which returns what to tell the operator), a
        LogEntry, and back to the order's page; or the reason nothing was done."""
        if not self.has_change_permission(request):
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


FAILURES_CSS = {"all": ["orders/admin-failures.css"]}


def shorten(text: str, chars: int):
    """The text cut to `chars`, the whole of it in a tooltip: the failure lists
    fit a laptop screen without hiding a column."""
    if len(text) <= chars:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: chars - 1])


# Where a name may wrap: after "_" or ".", and between the words of CamelCase.
NAME_BREAKS = re.compile(r"(?<=[_.])|(?<=[a-z])(?=[A-Z])")


def breakable(name: str):
    """The name with line-break opportunities (<wbr>) between its words: a table
    column is never narrower than its longest word."""
    return format_html_join(
        mark_safe("<wbr>"), "{}", ((part,) for part in NAME_BREAKS.split(name))
    )


def last_name(dotted: str):
    """The last part of a dotted name ("process_order" of
    "orders.tasks.process_order"), the whole in a tooltip."""
    tail = dotted.rsplit(".", 1)[-1]
    return format_html('<span title="{}">{}</span>', dotted, breakable(tail))


def compact_time(moment, *, title: str):
    """ "2026-12-05 23:30:12", which wraps between date and time: the admin's long
    form ("Dec. 5, 2026, 11:30 p.m.") takes a sixth of a laptop's list."""
    local = timezone.localtime(moment)
    return format_html(
        '<span title="{}">{}</span>', title, f"{local:%Y-%m-%d %H:%M:%S}"
    )


def short_order_link(order: Order | None):
    """The order's link with its id cut after 8 hex digits (the whole in a
    tooltip): a full id is one unbreakable 36-character word."""
    if order is None:
        return "-"
    url = reverse("admin:orders_order_change", args=[order.pk])
    return format_html(
        '<a href="{}" title="{}">{}…</a>', url, order.order_id, order.order_id[:10]
    )


def group_link(group: FailureGroup | None):
    if group is None:
        return "-"
    url = reverse("admin:orders_failuregroup_change", args=[group.pk])
    return format_html('<a href="{}">#{}</a>', url, group.pk)


def record_link(record: FailureRecord | None):
    if record is None:
        return "-"
    url = reverse("admin:orders_failurerecord_change", args=[record.pk])
    return format_html('<a href="{}">#{}</a>', url, record.pk)


def sparkline(counts: list[int]):
    """Records per hour as an inline SVG bar chart: no script, no inline style,
    so the admin's Content-Security-Policy lets it show."""
    bar, gap, height = 2, 1, 20
    peak = max(counts) or 1
    bars = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"></rect>',
        (
            (
                index * (bar + gap),
                height - max(1, round(n / peak * height)) if n else height - 1,
                bar,
                max(1, round(n / peak * height)) if n else 1,
            )
            for index, n in enumerate(counts)
        ),
    )
    width = len(counts) * (bar + gap)
    label = f"{sum(counts)} in the last {len(counts)} h, at most {max(counts)} an hour"
    return format_html(
        '<svg class="failure-sparkline" role="img" aria-label="{}" width="{}" '
        'height="{}" viewBox="0 0 {} {}"><title>{}</title>{}</svg>',
        label,
        width,
        height,
        width,
        height,
        label,
        bars,
    )


@admin.register(FailureGroup)
class FailureGroupAdmin(ViewOnlyRecordAdmin):
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

    class Media:
        css = FAILURES_CSS

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="task", ordering="task")
    def short_task(self, obj):
        return last_name(obj.task)

    @admin.display(description="exception", ordering="exception_type")
    def short_exception(self, obj):
        return last_name(obj.exception_type)

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
            '<a href="{}?group__id__exact={}">all {} records of this group</a>',
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
        return format_html(
            '<pre class="failure-traceback">{}</pre>', obj.latest_record.traceback
        )

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
        permissions=["change"],
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
class FailureRecordAdmin(ViewOnlyRecordAdmin):
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

    class Media:
        css = FAILURES_CSS

    def has_add_permission(self, request):
        return False

    # The history of what failed is kept; resolving is how a record is closed.
    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="when", ordering="occurred_at")
    def when(self, obj):
        return compact_time(obj.occurred_at, title=f"#{obj.pk}")

    @admin.display(description="task", ordering="task")
    def short_task(self, obj):
        return last_name(obj.task)

    @admin.display(description="exception", ordering="exception_type")
    def short_exception(self, obj):
        return last_name(obj.exception_type)

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
        return format_html('<pre class="failure-traceback">{}</pre>', obj.traceback)

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
            _, completed_now = delivery_complete(code=delivery.code)
            if completed_now:
                completed += 1
                self.log_change(request, delivery, "Completed from the admin.")
        self.message_user(
            request,
            f"{count(completed, 'delivery', 'deliveries')} completed; the others "
            "were complete already.",
        )
