"""Server-rendered pages. Each renders its state up front (so it reads without
JavaScript) and a small module in static/orders/ keeps it live over SSE."""

from django.conf import settings
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.utils.cache import patch_cache_control
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from orders import customer_texts, selectors
from orders.api.access import operator_page, operator_required
from orders.api.methods import allow_methods
from orders.api.validation import delay_limit_ms
from orders.api.views import json_errors
from orders.models import Order, OrderEvent
from orders.pages.customer import customer_timeline, script_texts
from orders.permissions import CHANGE_ORDER, VIEW_OPERATIONS


def ui_labels(request) -> dict:
    """Context processor: the labels the pages' scripts show (static/orders/
    live.js), rendered into every page as JSON by base.html, so a label is
    written once: on the choices."""
    return {
        "ui_labels": {
            "statuses": dict(Order.Status.choices),
            "events": dict(OrderEvent.Type.choices),
        }
    }


def labelled(events: list[dict]) -> list[dict]:
    labels = dict(OrderEvent.Type.choices)
    return [
        {**event, "label": labels.get(event["type"], event["type"])} for event in events
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
            "delay_limit_ms": delay_limit_ms(),
            "max_attempts": settings.ORDER_MAX_ATTEMPTS,
            "script_texts": script_texts(),
        },
    )


@require_http_methods(["GET", "HEAD"])
def order_page(request, order_id: str):
    """The customer's page for one order: where it is, in their words and
    language, and its timeline, live; a failed order offers to place the same
    items again."""
    order = selectors.order_get(order_id)
    if order is None:
        raise Http404("No such order")
    document = selectors.order_document(order)
    events = document["events"]
    return render(
        request,
        "orders/order_page.html",
        {
            "order": order,
            "document": document,
            "timeline": customer_timeline(events),
            "last_event_id": events[-1]["event_id"] if events else 0,
            "status_label": customer_texts.status_label(order.status),
            "steps": [
                {**step, "label": customer_texts.step_name(step["name"])}
                for step in document["steps"]
            ],
            "what_to_do": customer_texts.what_to_do_after_failure(),
            # What the "place the same order again" button sends.
            "same_order": {
                "customer_email": document["customer_email"],
                "items": document["items"],
            },
            "script_texts": script_texts(),
        },
    )


@ensure_csrf_cookie
@operator_page(VIEW_OPERATIONS)
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
                (status, label, stats["counts"][status])
                for status, label in Order.Status.choices
            ],
            "chart": chart_geometry(stats["series"]),
            "recent_events": labelled(selectors.dashboard_recent_events()),
            # Support (view only) sees the failed orders without a Retry button.
            "may_retry": request.user.has_perm(CHANGE_ORDER),
        },
    )


@operator_required(VIEW_OPERATIONS)
@json_errors
@allow_methods("GET")
def dashboard_stats(request):
    """The dashboard's numbers as JSON (staff who may view orders), refetched
    when events arrive."""
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
