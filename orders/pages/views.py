"""Server-rendered pages. Each renders its state up front (so it reads without
JavaScript) and a small module in static/orders/ keeps it live over SSE."""

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from orders import selectors
from orders.api.views import json_errors, staff_required
from orders.models import Order

STATUS_LABELS = {
    Order.Status.PENDING: "Waiting for a worker",
    Order.Status.PROCESSING: "Processing",
    Order.Status.RETRYING: "Retrying soon",
    Order.Status.COMPLETED: "Completed",
    Order.Status.FAILED: "Failed",
}

# static/orders/live.js reads both tables from the page (ui_labels below), so a
# label is written once.
EVENT_LABELS = {
    "order.created": "Order placed",
    "order.processing": "Attempt started",
    "order.step_completed": "Step completed",
    "order.attempt_failed": "Attempt failed",
    "order.retry_scheduled": "Retry scheduled",
    "order.completed": "Completed",
    "order.failed": "Failed",
    "order.retry_requested": "Retry requested by an operator",
    "delivery.completed": "Delivered",
    "listener.failed": "Delivery listener failed",
}


def ui_labels(request) -> dict:
    """Context processor: the labels the pages' scripts show, rendered into every
    page as JSON by base.html."""
    return {"ui_labels": {"statuses": STATUS_LABELS, "events": EVENT_LABELS}}


def labelled(events: list[dict]) -> list[dict]:
    return [
        {**event, "label": EVENT_LABELS.get(event["type"], event["type"])}
        for event in events
    ]


# The chart's drawing box (SVG user units); static/orders/dashboard.js draws the
# same way when the numbers change.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 600, 160, 4


@require_http_methods(["GET", "HEAD"])
def storefront(request):
    """Place an order through the JSON API, then watch it on its page."""
    return render(
        request,
        "orders/storefront.html",
        {
            "simulation_enabled": settings.ORDER_SIMULATION_ENABLED,
            "max_attempts": settings.ORDER_MAX_ATTEMPTS,
        },
    )


@require_http_methods(["GET", "HEAD"])
def order_page(request, order_id: str):
    """The customer's page for one order: its status and timeline, live."""
    order = selectors.order_get(order_id)
    if order is None:
        raise Http404("No such order")
    document = selectors.order_document(order)
    events = labelled(document["events"])
    return render(
        request,
        "orders/order_page.html",
        {
            "order": order,
            "document": document,
            "events": events,
            "last_event_id": events[-1]["event_id"] if events else 0,
            "status_labels": STATUS_LABELS,
            "status_label": STATUS_LABELS.get(order.status, order.status),
        },
    )


@ensure_csrf_cookie
@staff_member_required
@require_http_methods(["GET", "HEAD"])
def dashboard(request):
    """Operators' live view: counts, throughput, failures to retry."""
    stats = selectors.dashboard_stats()
    return render(
        request,
        "orders/dashboard.html",
        {
            "stats": stats,
            "counts": [
                (status, STATUS_LABELS[status], stats["counts"][status])
                for status in Order.Status.values
            ],
            "chart": chart_geometry(stats["series"]),
            "recent_events": labelled(selectors.dashboard_recent_events()),
        },
    )


@staff_required
@json_errors
@require_http_methods(["GET"])
def dashboard_stats(request):
    """The dashboard's numbers as JSON (staff), refetched when events arrive."""
    response = JsonResponse(selectors.dashboard_stats())
    patch_cache_control(response, no_cache=True)
    return response


def chart_geometry(series: dict) -> dict:
    """Polyline points for each series of the per-minute chart."""
    minutes = series["minutes"]
    names = list(selectors.CHART_SERIES)
    peak = max([1, *(max(series[name], default=0) for name in names)])
    step = (CHART_WIDTH - 2 * CHART_PAD) / max(1, minutes - 1)
    usable = CHART_HEIGHT - 2 * CHART_PAD

    def points(values):
        return " ".join(
            f"{CHART_PAD + i * step:.1f},"
            f"{CHART_HEIGHT - CHART_PAD - value / peak * usable:.1f}"
            for i, value in enumerate(values)
        )

    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "peak": peak,
        "lines": [
            {"name": name, "points": points(series[name]), "total": sum(series[name])}
            for name in names
        ],
    }
