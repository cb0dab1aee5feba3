"""The placing baseline: what a minimal Django view under the same daphne does
per request (parse the JSON body, insert one row, enqueue one task), so placing
can be measured against it in the same run. Routed only by the bench's URLconf
(orders/bench/urls.py), never by the product's."""

import json
from decimal import Decimal

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from django_q.tasks import async_task

from orders.bench.pipeline import NOOP_TASK
from orders.models import Order


@csrf_exempt
@require_http_methods(["POST"])
def baseline_place(request: HttpRequest) -> JsonResponse:
    payload = json.loads(request.body)
    # A row of the orders table (same indexes as placing writes to), left
    # PENDING with no dispatch time: no worker or dispatcher ever picks it up.
    order = Order.objects.create(
        customer_email=payload["customer_email"],
        amount=Decimal(0),
        currency=settings.ORDER_CURRENCY,
        max_attempts=settings.ORDER_MAX_ATTEMPTS,
    )
    async_task(NOOP_TASK, order.pk, save=False)
    return JsonResponse({"order_id": order.order_id}, status=202)
