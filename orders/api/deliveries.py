"""POST /api/deliveries/<code>/complete: the delivery scenario for staff."""

from django.http import HttpRequest, JsonResponse

from orders import exceptions, selectors
from orders.api.access import operator_required
from orders.api.errors import error_response
from orders.api.methods import allow_methods
from orders.api.views import json_errors
from orders.permissions import CHANGE_DELIVERY
from orders.services import deliveries as deliveries_services


@operator_required(CHANGE_DELIVERY)
@json_errors
@allow_methods("POST")
def delivery_complete(request: HttpRequest, code: str) -> JsonResponse:
    try:
        delivery, completed_now = deliveries_services.delivery_complete(code=code)
    except exceptions.DeliveryNotFound as exc:
        return error_response(404, "delivery_not_found", str(exc))
    order = delivery.order
    return JsonResponse(
        {
            "code": delivery.code,
            "completed_at": selectors.iso(delivery.completed_at),
            # False when it was completed before: nothing changed this time.
            "completed_now": completed_now,
            "order_id": order.order_id,
            "status_url": selectors.order_links(order)["status_url"],
        }
    )
