"""Webhook endpoints and their messages in the console. An endpoint's URL,
description, event types and enabled flag are edited here, through the
services (the URL is checked as `webhooks add` checks it); its secret is shown
once, on the page after adding or rotating it, and never in a form. Its page
lists its latest attempts; a message is redelivered from the messages' list,
and a time range replayed from the endpoint's page."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from orders.exceptions import WebhookTargetRefused
from orders.models import WebhookAttempt, WebhookEndpoint, WebhookMessage
from orders.operations.admin.base import ViewOnlyInline, ViewOnlyRecordAdmin, count
from orders.operations.admin.display import order_link
from orders.services import webhooks as services
from orders.signals import EVENT_TYPES

# The attempts an endpoint's page lists, newest first.
ENDPOINT_ATTEMPTS_SHOWN = 50


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in EVENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every event type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "description", "event_types", "enabled"]

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            services.webhook_url_check(url)
        except WebhookTargetRefused as refused:
            raise forms.ValidationError(str(refused)) from refused
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ["id", "url", "description", "types", "enabled", "disabled_reason"]
    list_filter = ["enabled"]
    search_fields = ["url", "description"]
    readonly_fields = [
        "created_at",
        "failing_since",
        "disabled_at",
        "disabled_reason",
        "secret_rotation",
        "latest_attempts",
    ]
    change_form_template = "admin/orders/webhookendpoint/change_form.html"

    class Media:
        css = {"all": ["orders/admin.css"]}

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["url", "description", "event_types", "enabled"]
        return ["url", "description", "event_types", "enabled", *self.readonly_fields]

    def has_delete_permission(self, request, obj=None):
        # Its messages and attempts are the record of what was sent.
        return False

    @admin.display(description="event types")
    def types(self, obj):
        return ", ".join(obj.event_types) or "all"

    @admin.display(description="previous secret signs until")
    def secret_rotation(self, obj):
        return obj.previous_secret_expires_at or "-"

    @admin.display(description="latest attempts")
    def latest_attempts(self, obj):
        attempts = (
            WebhookAttempt.objects.filter(endpoint=obj)
            .select_related("message", "order")
            .order_by("-id")[:ENDPOINT_ATTEMPTS_SHOWN]
        )
        return render_to_string(
            "admin/orders/webhookendpoint/attempts.html", {"attempts": attempts}
        )

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if not change:
            endpoint, secret = services.webhook_endpoint_add(
                url=data["url"],
                event_types=data["event_types"],
                description=data["description"],
            )
            if not data["enabled"]:
                services.webhook_endpoint_disable(endpoint_id=endpoint.pk)
            obj.pk = endpoint.pk
            request.webhook_secret = secret
            return
        services.webhook_endpoint_update(
            endpoint=obj,
            url=data["url"],
            event_types=data["event_types"],
            description=data["description"],
        )
        if "enabled" in form.changed_data:
            if data["enabled"]:
                services.webhook_endpoint_enable(endpoint_id=obj.pk)
            else:
                services.webhook_endpoint_disable(endpoint_id=obj.pk)

    def response_add(self, request, obj, post_url_continue=None):
        return self._secret_page(request, obj, request.webhook_secret, "added")

    def _secret_page(self, request, endpoint, secret, what):
        return TemplateResponse(
            request,
            "admin/orders/webhookendpoint/secret.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Endpoint #{endpoint.pk} {what}",
                "opts": self.opts,
                "endpoint": endpoint,
                "secret": secret,
                "what": what,
            },
        )

    # The endpoint page's buttons ----------------------------------------------------
    def get_urls(self):
        def endpoint_action(view, route, name):
            return path(
                f"<path:object_id>/{route}",
                self.admin_site.admin_view(require_POST(view)),
                name=f"orders_webhookendpoint_{name}",
            )

        return [
            endpoint_action(self.rotate_view, "rotate-secret/", "rotate"),
            endpoint_action(self.replay_view, "replay/", "replay"),
        ] + super().get_urls()

    def _endpoint_for_action(self, request, object_id) -> WebhookEndpoint:
        if not self.has_change_permission(request):
            raise PermissionDenied
        endpoint = self.get_object(request, unquote(object_id))
        if endpoint is None:
            raise PermissionDenied
        return endpoint

    def rotate_view(self, request, object_id):
        endpoint = self._endpoint_for_action(request, object_id)
        endpoint, secret = services.webhook_endpoint_rotate_secret(
            endpoint_id=endpoint.pk
        )
        self.log_change(request, endpoint, "Rotated its signing secret.")
        return self._secret_page(request, endpoint, secret, "has a new secret")

    def replay_view(self, request, object_id):
        endpoint = self._endpoint_for_action(request, object_id)
        since = forms.DateTimeField().clean
        try:
            since_time = since(request.POST.get("since", ""))
        except forms.ValidationError:
            self.message_user(
                request,
                "Give the time to replay from, e.g. 2026-12-01 09:00.",
                messages.ERROR,
            )
        else:
            replayed = services.webhook_endpoint_replay(
                endpoint_id=endpoint.pk, since=since_time
            )
            done = f"Replaying {count(replayed, 'message')} since {since_time}."
            self.log_change(request, endpoint, done)
            self.message_user(request, done, messages.SUCCESS)
        return redirect(
            reverse(
                "admin:orders_webhookendpoint_change",
                args=[endpoint.pk],
                current_app=self.admin_site.name,
            )
        )


class WebhookAttemptInline(ViewOnlyInline, admin.TabularInline):
    """A message's attempts, or an order's: what each receiver answered."""

    model = WebhookAttempt
    fields = [
        "started_at",
        "endpoint",
        "message",
        "number",
        "status_code",
        "duration_ms",
        "error",
        "response_head",
    ]
    readonly_fields = fields
    ordering = ["id"]
    verbose_name_plural = "Webhook attempts"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("endpoint", "message")


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ViewOnlyRecordAdmin):
    list_display = [
        "msg_id",
        "endpoint",
        "order_link",
        "event_type",
        "state",
        "attempts",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["state", "event_type", "endpoint"]
    search_fields = ["msg_id", "order__order_id"]
    list_select_related = ["endpoint", "order"]
    fields = [
        "msg_id",
        "endpoint",
        "order_link",
        "event_number",
        "event_type",
        "state",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "created_at",
        "body",
    ]
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["redeliver_messages"]

    @admin.display(description="order", ordering="order__order_id")
    def order_link(self, obj):
        return order_link(obj.order)

    @admin.action(description="Redeliver selected messages", permissions=["change"])
    def redeliver_messages(self, request, queryset):
        for message in queryset:
            services.webhook_message_redeliver(message_id=message.pk)
            self.log_change(request, message, "Redelivered from the admin.")
        self.message_user(
            request,
            f"{count(queryset.count(), 'message')} will be sent again, each with its "
            "webhook-id (one already waiting or being sent is left as it is).",
        )
