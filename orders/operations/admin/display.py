"""Small pieces of HTML the console's lists and pages show: links between the
records, and names, times and texts cut to fit a laptop screen with the whole
in a tooltip."""

import re

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from orders.models import FailureGroup, FailureRecord, Order


def order_link(order: Order | None):
    if order is None:
        return "-"
    url = reverse("admin:orders_order_change", args=[order.pk])
    return format_html('<a href="{}">{}</a>', url, order.order_id)


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


def traceback_block(text: str):
    return format_html('<pre class="failure-traceback">{}</pre>', text)


# A sparkline's bars, in SVG user units.
BAR_WIDTH, BAR_GAP, SPARKLINE_HEIGHT = 2, 1, 20


def sparkline(counts: list[int]):
    """Records per hour as an inline SVG bar chart: no script, no inline style,
    so the admin's Content-Security-Policy lets it show. An empty hour is a
    one-unit stub, so the chart's time axis stays readable."""
    peak = max(counts) or 1
    bars = []
    for index, n in enumerate(counts):
        height = max(1, round(n / peak * SPARKLINE_HEIGHT)) if n else 1
        bars.append(
            {
                "x": index * (BAR_WIDTH + BAR_GAP),
                "y": SPARKLINE_HEIGHT - height,
                "height": height,
            }
        )
    return render_to_string(
        "admin/orders/failuregroup/sparkline.svg",
        {
            "bars": bars,
            "bar_width": BAR_WIDTH,
            "width": len(counts) * (BAR_WIDTH + BAR_GAP),
            "height": SPARKLINE_HEIGHT,
            "label": f"{sum(counts)} in the last {len(counts)} h, "
            f"at most {max(counts)} an hour",
        },
    )
