from django.http import Http404
from django.shortcuts import render

from . import selectors


def order_page(request, order_id: str):
    """The customer's page for one order: its status and timeline."""
    order = selectors.order_get(order_id)
    if order is None:
        raise Http404("No such order")
    return render(
        request,
        "orders/order_page.html",
        {"order": order, "document": selectors.order_document(order)},
    )
